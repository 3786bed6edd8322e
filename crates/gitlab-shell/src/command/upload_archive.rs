//! `git-upload-archive <repo>` (GitLab Shell `internal/command/uploadarchive`, behaviour §7.2):
//! `git archive --remote` through Gitaly's bidi `SSHUploadArchive`. Never audited.

use gitaly_client::{Stdio, proto};

use crate::command::{Context, git};
use crate::error::Error;
use crate::io::Io;

const ACTION: &str = "git-upload-archive";

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let Some(prepared) = git::prepare(ctx, ACTION, io)? else {
        return Ok(());
    };
    let access = &prepared.access;
    let request = proto::SshUploadArchiveRequest {
        repository: Some(git::repository(access)),
        ..Default::default()
    };
    let stdio = Stdio {
        stdin: io.take_stdin(),
        stdout: &mut *io.stdout,
        stderr: &mut *io.stderr,
        cancel: io.cancel.clone(),
    };
    gitaly_client::upload_archive(
        &git::target(access),
        &git::call_meta(ctx, access),
        request,
        stdio,
    )
    .inspect_err(git::log_failure)?;
    Ok(())
}
