//! `git-upload-archive <repo>` (GitLab Shell `internal/command/uploadarchive`, behaviour §7.2):
//! `git archive --remote` through Gitaly's bidi `SSHUploadArchive`. Never audited. The flow is
//! [`super::git::run`].

use gitaly_client::{Stdio, proto};

use crate::api::git_audit_event::PackfileStats;
use crate::command::git::{GitService, GitalyCall};

/// The `git-upload-archive` command.
pub struct UploadArchive;

impl GitService for UploadArchive {
    const ACTION: &'static str = "git-upload-archive";
    const AUDITED: bool = false;

    fn call(
        call: &GitalyCall<'_>,
        stdio: Stdio<'_>,
    ) -> Result<Option<PackfileStats>, gitaly_client::Error> {
        let request = proto::SshUploadArchiveRequest {
            repository: Some(call.repository.clone()),
            ..Default::default()
        };
        match call.pool {
            Some(pool) => pool.upload_archive(&call.target, &call.meta, request, stdio)?,
            None => gitaly_client::upload_archive(&call.target, &call.meta, request, stdio)?,
        };
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice, framed};

    #[test]
    fn streams_an_archive() {
        let kit = Kit::new("").with_gitaly();
        // `git archive --remote` sends its arguments as pkt-lines, then a flush.
        let stdin = b"0012argument HEAD\n0000";
        let run = kit.run(alice(), "git-upload-archive group/repo.git", stdin);
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(run.stdout.starts_with(b"0008ACK\n"), "{:?}", run.out());
        assert!(run.out().contains("README"), "the tar carries the file");
    }

    #[test]
    fn unknown_project_is_refused() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "git-upload-archive nope/nope.git", b"0000");
        assert_eq!(run.status, 1);
        assert_eq!(
            run.stderr,
            framed(
                "The project you were looking for could not be found or you don't have permission to view it."
            )
        );
    }
}
