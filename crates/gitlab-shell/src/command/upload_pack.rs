//! `git-upload-pack <repo>` (GitLab Shell `internal/command/uploadpack`, behaviour §7.2): clone
//! and fetch through Gitaly's `SSHUploadPackWithSidechannel`.

use gitaly_client::{Stdio, proto};

use crate::api::git_audit_event::PackfileStats;
use crate::command::{Context, git};
use crate::error::Error;
use crate::io::Io;

const ACTION: &str = "git-upload-pack";

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let Some(prepared) = git::prepare(ctx, ACTION, io)? else {
        return Ok(());
    };
    let access = &prepared.access;
    let request = proto::SshUploadPackWithSidechannelRequest {
        repository: Some(git::repository(access)),
        git_config_options: access.response.git_config_options.clone(),
        git_protocol: ctx.args.env.git_protocol.clone(),
    };
    let stdio = Stdio {
        stdin: io.take_stdin(),
        stdout: &mut *io.stdout,
        stderr: &mut *io.stderr,
        cancel: io.cancel.clone(),
    };
    let stats = gitaly_client::upload_pack(
        &git::target(access),
        &git::call_meta(ctx, access),
        request,
        stdio,
    )
    .inspect_err(git::log_failure)?;
    let stats = stats.map(|s| PackfileStats {
        payload_size: s.payload_size,
        packets: s.packets,
        caps: s.caps,
        wants: s.wants,
        haves: s.haves,
        shallows: s.shallows,
        deepen: s.deepen,
        filter: s.filter,
    });
    git::audit(ctx, &prepared, ACTION, stats);
    Ok(())
}
