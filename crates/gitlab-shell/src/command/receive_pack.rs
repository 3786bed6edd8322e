//! `git-receive-pack <repo>` (GitLab Shell `internal/command/receivepack`, behaviour §7.2): push
//! through Gitaly's bidi `SSHReceivePack`. Gitaly's hooks call `/allowed` again with the real
//! changes, `/pre_receive` and `/post_receive`. The flow is [`super::git::run`].

use gitaly_client::{Stdio, proto};

use crate::api::git_audit_event::PackfileStats;
use crate::command::git::{GitService, GitalyCall};

/// The `git-receive-pack` command.
pub struct ReceivePack;

impl GitService for ReceivePack {
    const ACTION: &'static str = "git-receive-pack";
    const AUDITED: bool = true;

    fn call(
        call: &GitalyCall<'_>,
        stdio: Stdio<'_>,
    ) -> Result<Option<PackfileStats>, gitaly_client::Error> {
        let r = &call.access.response;
        let request = proto::SshReceivePackRequest {
            repository: Some(call.repository.clone()),
            gl_id: call.access.who.clone(),
            gl_repository: r.gl_repository.clone(),
            gl_username: r.gl_username.clone(),
            git_protocol: call.git_protocol.to_owned(),
            git_config_options: r.git_config_options.clone(),
            ..Default::default()
        };
        match call.pool {
            Some(pool) => pool.receive_pack(&call.target, &call.meta, request, stdio)?,
            None => gitaly_client::receive_pack(&call.target, &call.meta, request, stdio)?,
        };
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice, bob, framed};

    #[test]
    fn advertises_refs_for_a_writer() {
        let kit = Kit::new("").with_gitaly();
        let run = kit.run(alice(), "git-receive-pack group/repo.git", b"0000");
        assert_eq!(run.status, 0, "{}", run.stderr);
        let out = run.out();
        assert!(
            out.contains("refs/heads/main") && out.contains("report-status"),
            "{out}"
        );
        let allowed = kit.api.requests_to("/allowed");
        let body = &allowed[0].body;
        assert_eq!(body["action"], "git-receive-pack");
    }

    #[test]
    fn a_reader_is_refused_with_gitlab_message() {
        let kit = Kit::new("").with_gitaly();
        let run = kit.run(bob(), "git-receive-pack group/repo.git", b"0000");
        assert_eq!((run.status, run.out()), (1, String::new()));
        assert_eq!(
            run.stderr,
            framed("You are not allowed to push code to this project.")
        );
    }
}
