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
        let stats = match call.pool {
            Some(pool) => pool.upload_pack(&call.target, &call.meta, request, stdio)?,
            None => gitaly_client::upload_pack(&call.target, &call.meta, request, stdio)?,
        };
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
    fn audit_event_carries_key_id_and_the_certificate_namespace() {
        let kit = Kit::new("").with_gitaly();
        let run = kit.run(alice(), "git-upload-pack group/audited.git", NO_WANTS);
        assert_eq!(run.status, 0, "{}", run.stderr);
        let mut env = Kit::env("git-upload-pack group/audited.git");
        env.namespace_path = "group".into();
        assert_eq!(kit.run_env(alice(), env, NO_WANTS).status, 0);
        let kit_no_audit = kit.run(alice(), "git-upload-pack group/repo.git", NO_WANTS);
        assert_eq!(kit_no_audit.status, 0);
        let events = kit.api.requests_to("/git_audit_event");
        assert_eq!(events.len(), 2, "only the audited project");
        let e = &events[0].body;
        assert_eq!(e["action"], "git-upload-pack");
        assert_eq!(e["protocol"], "ssh");
        assert_eq!(e["gl_repository"], "project-8");
        assert_eq!(e["username"], "alice");
        assert_eq!(e["check_ip"], "192.0.2.10");
        assert_eq!(e["changes"], "_any");
        assert_eq!(e["key_id"], 1);
        assert!(e.get("namespace_path").is_none(), "omitted when empty: {e}");
        assert_eq!(events[1].body["namespace_path"], "group");
    }

    #[test]
    fn a_tls_gitaly_is_trusted_through_ssl_cert_dir_and_refused_without_it() {
        // See: docs/behaviour.md §2.3, `ssl_cert_dir` is the whole process's trust.
        let trusted = Kit::new("").with_tls_gitaly(true);
        let run = trusted.run(alice(), "git-upload-pack 'group/repo.git'", NO_WANTS);
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(run.out().contains("refs/heads/main"), "{}", run.out());

        let untrusted = Kit::new("").with_tls_gitaly(false);
        let run = untrusted.run(alice(), "git-upload-pack 'group/repo.git'", NO_WANTS);
        assert_eq!((run.status, run.out()), (1, String::new()));
        assert!(
            run.stderr
                .contains(&gitaly_client::Error::unavailable(false).to_string()),
            "{}",
            run.stderr
        );
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
    fn retry_config_retries_a_gitaly_that_is_down_at_first() {
        let policy = serde_json::json!({
            "maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "0.5s",
            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
        });
        let with_policy = |policy: serde_json::Value| {
            let kit = Kit::new("").with_late_gitaly(std::time::Duration::from_millis(400));
            kit.api.update_fixture(|f| {
                for p in &mut f.projects {
                    p.retry_config = Some(policy.clone());
                }
            });
            kit
        };
        let kit = with_policy(policy);
        let run = kit.run(alice(), "git-upload-pack group/repo.git", NO_WANTS);
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(run.out().contains("refs/heads/main"), "{}", run.out());
        // Without a policy, or with a malformed one (logged and ignored), the first failed dial
        // is the answer.
        for policy in [
            serde_json::Value::Null,
            serde_json::json!({"maxAttempts": "many"}),
        ] {
            let kit = with_policy(policy.clone());
            let run = kit.run(alice(), "git-upload-pack group/repo.git", NO_WANTS);
            assert_eq!(run.status, 1, "{policy}");
            assert!(run.stderr.contains("code = Unavailable"), "{}", run.stderr);
        }
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
