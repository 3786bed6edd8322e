//! `git-lfs-transfer <repo> <download|upload>`: pure-SSH Git LFS (GitLab Shell
//! `internal/command/lfstransfer`, behaviour §7.7). Enabled by `lfs.pure_ssh_protocol`.
//!
//! Steps: `/allowed` (download → `git-upload-pack`, upload → `git-receive-pack`), then
//! `/lfs_authenticate` for a Basic credential on `<repository_http_path>/info/lfs` (both fatal,
//! framed, on failure), then the pkt-line protocol of [`protocol`] on stdin/stdout backed by the
//! project's LFS API ([`backend`]).

pub mod backend;
pub mod protocol;

use base64::Engine as _;

use crate::api::lfs_authenticate;
use crate::api::lfs_transfer::Client as LfsClient;
use crate::command::{Context, access};
use crate::error::Error;
use crate::io::Io;
use protocol::{Operation, Processor};

/// The LFS API location and credential for this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    /// `<repository_http_path>/info/lfs`.
    pub href: String,
    /// `Basic <base64(username:lfs_token)>` (never logged).
    pub authorization: String,
}

impl Authentication {
    /// Builds the credential from an `/lfs_authenticate` answer.
    pub fn from_response(r: &lfs_authenticate::Response) -> Authentication {
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", r.username, r.lfs_token));
        Authentication {
            href: format!("{}/info/lfs", r.repository_http_path),
            authorization: format!("Basic {basic}"),
        }
    }
}

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let words = &ctx.words;
    if words.len() != 3 {
        return Err(Error::DisallowedCommand);
    }
    let (repo, operation) = (&words[1], &words[2]);
    let Some(op) = Operation::parse(operation) else {
        return Err(Error::DisallowedCommand);
    };
    let action = match op {
        Operation::Download => "git-upload-pack",
        Operation::Upload => "git-receive-pack",
    };
    let client = ctx.api()?;
    let access = access::verify(ctx, &client, action, repo, io)?;
    tracing::info!(action, "processing action");

    let request =
        super::lfs_authenticate::token_request(ctx, operation, repo, &access.response.gl_id);
    let auth = Authentication::from_response(&lfs_authenticate::authenticate(&client, &request)?);
    let lfs = LfsClient::new(&auth.href, &auth.authorization, &ctx.config.system_trust())
        .map_err(|e| Error::Message(e.to_string()))?;
    let mut backend = backend::GitlabBackend::new(lfs, &ctx.config.secret);

    let stdin = io.take_stdin();
    let mut processor = Processor::new(stdin, &mut io.stdout, &mut backend, op);
    processor.send_capabilities()?;
    let result = processor.process();
    tracing::info!(action, "done processing commands");
    result.map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, build};
    use crate::config::Config;
    use crate::sshenv::SshEnv;

    fn shell(cmd: &str) -> Vec<String> {
        let env = SshEnv::from_values("127.0.0.1 1 127.0.0.1 22", cmd.into(), "");
        crate::args::shell::split_command(&env).unwrap()
    }

    #[test]
    fn only_built_when_pure_ssh_protocol_is_on() {
        let yaml = "secret: x\nlfs:\n  pure_ssh_protocol: true\n";
        let on = Config::from_yaml(std::path::Path::new("/"), yaml.as_bytes()).unwrap();
        let off = Config::from_yaml(std::path::Path::new("/"), b"secret: x\n").unwrap();
        let args = shell("git-lfs-transfer group/repo download");
        assert_eq!(build(&args, &on).unwrap(), Command::LfsTransfer);
        let e = build(&args, &off).unwrap_err();
        assert!(e.is_unframed() && e.to_string() == "Disallowed command");
    }

    #[test]
    fn authentication_from_response() {
        let r = lfs_authenticate::Response {
            username: "alice".into(),
            lfs_token: "tok".into(),
            repository_http_path: "http://gitlab.example.com/group/repo.git".into(),
            expires_in: 7200,
        };
        let a = Authentication::from_response(&r);
        assert_eq!(a.href, "http://gitlab.example.com/group/repo.git/info/lfs");
        assert_eq!(a.authorization, "Basic YWxpY2U6dG9r");
    }
}

#[cfg(test)]
mod command_tests {
    use crate::command::testkit::{Kit, alice};

    #[test]
    fn refused_unless_enabled_then_speaks_the_protocol() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "git-lfs-transfer group/repo.git download", b"");
        assert_eq!(
            (run.status, run.stderr.as_str()),
            (1, "Disallowed command\n")
        );

        let kit = Kit::new("lfs:\n  pure_ssh_protocol: true\n");
        // The client says nothing and hangs up: the server's capability advertisement is all.
        let run = kit.run(alice(), "git-lfs-transfer group/repo.git download", b"");
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert!(run.out().starts_with("000eversion=1\n"), "{:?}", run.out());
        assert_eq!(kit.api.requests_to("/allowed").len(), 1);
    }
}
