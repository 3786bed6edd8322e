//! `git-receive-pack <repo>` (GitLab Shell `internal/command/receivepack`, behaviour §7.2): push
//! through Gitaly's bidi `SSHReceivePack`. Gitaly's hooks call `/allowed` again with the real
//! changes, `/pre_receive` and `/post_receive`.

use gitaly_client::{Stdio, proto};

use crate::command::{Context, git};
use crate::error::Error;
use crate::io::Io;

const ACTION: &str = "git-receive-pack";

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let Some(prepared) = git::prepare(ctx, ACTION, io)? else {
        return Ok(());
    };
    let access = &prepared.access;
    let r = &access.response;
    let request = proto::SshReceivePackRequest {
        repository: Some(git::repository(access)),
        gl_id: access.who.clone(),
        gl_repository: r.gl_repository.clone(),
        gl_username: r.gl_username.clone(),
        git_protocol: ctx.args.env.git_protocol.clone(),
        git_config_options: r.git_config_options.clone(),
        ..Default::default()
    };
    let stdio = Stdio {
        stdin: io.take_stdin(),
        stdout: &mut *io.stdout,
        stderr: &mut *io.stderr,
        cancel: io.cancel.clone(),
    };
    gitaly_client::receive_pack(
        &git::target(access),
        &git::call_meta(ctx, access),
        request,
        stdio,
    )
    .inspect_err(git::log_failure)?;
    git::audit(ctx, &prepared, ACTION, None);
    Ok(())
}
