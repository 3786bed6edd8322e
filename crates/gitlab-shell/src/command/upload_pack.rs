//! `git-upload-pack <repo>` (GitLab Shell `internal/command/uploadpack`, behaviour §7.2): clone
//! and fetch through Gitaly's `SSHUploadPackWithSidechannel`. Audited (with the packfile
//! negotiation statistics) when `/allowed` asks for it. The flow is [`super::git::run`].

use gitaly_client::{Stdio, proto};

use crate::api::git_audit_event::PackfileStats;
use crate::command::git::{GitService, GitalyCall};

/// The `git-upload-pack` command.
pub struct UploadPack;

impl GitService for UploadPack {
    const ACTION: &'static str = "git-upload-pack";
    const AUDITED: bool = true;

    fn call(
        call: &GitalyCall<'_>,
        stdio: Stdio<'_>,
    ) -> Result<Option<PackfileStats>, gitaly_client::Error> {
        let request = proto::SshUploadPackWithSidechannelRequest {
            repository: Some(call.repository.clone()),
            git_config_options: call.access.response.git_config_options.clone(),
            git_protocol: call.git_protocol.to_owned(),
        };
        let stats = gitaly_client::upload_pack(&call.target, &call.meta, request, stdio)?;
        Ok(stats.map(|s| PackfileStats {
            payload_size: s.payload_size,
            packets: s.packets,
            caps: s.caps,
            wants: s.wants,
            haves: s.haves,
            shallows: s.shallows,
            deepen: s.deepen,
            filter: s.filter,
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice, bob, framed};

    /// A protocol v0 client that wants nothing: it reads the advertisement and sends a flush.
    const NO_WANTS: &[u8] = b"0000";

    #[test]
    fn advertises_the_repository_through_gitaly_and_audits() {
        let kit = Kit::new("").with_gitaly();
        for who in [alice(), bob()] {
            let run = kit.run(who, "git-upload-pack 'group/repo.git'", NO_WANTS);
            assert_eq!(run.status, 0, "{}", run.stderr);
            let out = run.out();
            assert!(
                out.contains(" HEAD\0") && out.contains("refs/heads/main"),
                "{out}"
            );
            assert!(out.ends_with("0000"), "{out}");
        }
        let allowed = kit.api.requests_to("/allowed");
        assert_eq!(allowed.len(), 2);
        let body = &allowed[0].body;
        assert_eq!(body["action"], "git-upload-pack");
        assert_eq!(body["project"], "group/repo.git");
        assert_eq!(body["key_id"], "1");
        assert_eq!(body["check_ip"], "192.0.2.10");
    }

    #[test]
    fn unknown_project_is_refused_before_gitaly() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "git-upload-pack nope/nope.git", NO_WANTS);
        assert_eq!((run.status, run.out()), (1, String::new()));
        assert_eq!(
            run.stderr,
            framed(
                "The project you were looking for could not be found or you don't have permission to view it."
            )
        );
    }

    #[test]
    fn gitaly_down_is_framed_unavailable() {
        let kit = Kit::new("");
        kit.api.set_gitaly("tcp://127.0.0.1:1", "");
        let run = kit.run(alice(), "git-upload-pack group/repo.git", NO_WANTS);
        assert_eq!(run.status, 1);
        assert!(
            run.stderr.starts_with("remote: \nremote: ====="),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("rpc error: code = Unavailable"),
            "{}",
            run.stderr
        );
    }
}
