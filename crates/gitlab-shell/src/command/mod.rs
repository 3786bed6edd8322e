//! The command layer both front doors run (docs/architecture.md, "The request path"): one
//! module per SSH command (GitLab Shell `internal/command/*`), the [`Command`] enum, the one
//! [`build`] `match` that turns the command's words into a command (applying the feature
//! gates), and [`execute`], the single entry point for a whole SSH session.
//!
//! A front door — `gitlab-shell key-N` run by sshd, or an in-process SSH server — hands over a
//! [`Session`] (config, identity, SSH environment, correlation id) and an [`Io`] it owns, and
//! gets back the exit status. Nothing on this path reads the process environment or the
//! process's stdio. The companion binaries' commands ([`authorized_keys`],
//! [`authorized_principals`], [`healthcheck`]) live here too, as in GitLab Shell.

pub mod access;
pub mod authorized_keys;
pub mod authorized_principals;
pub mod discover;
pub mod geo;
pub mod git;
pub mod healthcheck;
pub mod lfs_authenticate;
pub mod lfs_transfer;
pub mod personal_access_token;
pub mod receive_pack;
pub mod two_factor_recover;
pub mod two_factor_verify;
pub mod upload_archive;
pub mod upload_pack;

#[cfg(test)]
pub mod testkit;

use crate::api;
use crate::args;
use crate::config::Config;
use crate::error::{self, Error};
use crate::identity::Identity;
use crate::io::Io;
use crate::observe::Observer;
use crate::sshenv::SshEnv;

/// One SSH session as a front door hands it to the command layer.
#[derive(Debug, Clone)]
pub struct Session<'a> {
    /// Loaded config.
    pub config: &'a Config,
    /// Who the user is (`key-N` / `username-X`, or the key an SSH server verified).
    pub identity: Identity,
    /// The SSH command, `GIT_PROTOCOL` and the client address.
    pub env: SshEnv,
    /// The session's correlation id (log lines, API and Gitaly calls).
    pub correlation_id: &'a str,
    /// Told what the session does (API requests, the command chosen, its failure);
    /// [`crate::observe::noop`] when nobody watches.
    pub observer: std::sync::Arc<dyn Observer>,
    /// Gitaly connections shared with the front door's other sessions (gitlab-sshd); `None`
    /// dials a connection per call (the classic one-session process).
    pub gitaly_pool: Option<gitaly_client::Pool>,
}

/// What a running command needs besides its I/O.
pub struct Context<'a> {
    /// Loaded config.
    pub config: &'a Config,
    /// Who the user is.
    pub identity: &'a Identity,
    /// The session environment (`GIT_PROTOCOL`, client address).
    pub env: &'a SshEnv,
    /// The split SSH command; word 0 names the command.
    pub words: &'a [String],
    /// The session's correlation id.
    pub correlation_id: &'a str,
    /// The session's observer.
    pub observer: &'a std::sync::Arc<dyn Observer>,
    /// The session's Gitaly connection cache, if any.
    pub gitaly_pool: Option<&'a gitaly_client::Pool>,
}

impl Context<'_> {
    /// A fresh internal API client (created only by commands that call the API), reporting its
    /// requests to the session's observer.
    pub fn api(&self) -> Result<api::Client, api::Error> {
        api::Client::new(self.config, self.correlation_id)
            .map(|c| c.with_observer(std::sync::Arc::clone(self.observer)))
    }
}

/// A runnable SSH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Empty command: the welcome.
    Discover,
    /// `git-upload-pack`.
    UploadPack,
    /// `git-receive-pack`.
    ReceivePack,
    /// `git-upload-archive`.
    UploadArchive,
    /// `git-lfs-authenticate`.
    LfsAuthenticate,
    /// `git-lfs-transfer` (only with `lfs.pure_ssh_protocol`).
    LfsTransfer,
    /// `2fa_recovery_codes`.
    TwoFactorRecover,
    /// `2fa_verify`.
    TwoFactorVerify,
    /// `personal_access_token` (date computed at build time, see the module).
    PersonalAccessToken(personal_access_token::Plan),
}

impl Command {
    /// Name used in logs (GitLab Shell logs the Go type).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Discover => "*discover.Command",
            Command::UploadPack => "*uploadpack.Command",
            Command::ReceivePack => "*receivepack.Command",
            Command::UploadArchive => "*uploadarchive.Command",
            Command::LfsAuthenticate => "*lfsauthenticate.Command",
            Command::LfsTransfer => "*lfstransfer.Command",
            Command::TwoFactorRecover => "*twofactorrecover.Command",
            Command::TwoFactorVerify => "*twofactorverify.Command",
            Command::PersonalAccessToken(_) => "*personalaccesstoken.Command",
        }
    }

    /// GitLab Shell's `GitCommands`: the only commands a session authenticated by a group SSH
    /// certificate may run (docs/gitlab-sshd.md, "Authentication").
    pub fn is_git(&self) -> bool {
        matches!(
            self,
            Command::LfsAuthenticate
                | Command::UploadPack
                | Command::ReceivePack
                | Command::UploadArchive
        )
    }
}

/// Chooses the command from the SSH command's words (behaviour §1.2 table). Unknown and
/// disabled commands are the unframed `Disallowed command`; arity problems are left to the
/// command (framed).
pub fn build(words: &[String], config: &Config) -> Result<Command, Error> {
    Ok(match words.first().map(String::as_str) {
        None => Command::Discover,
        Some("git-upload-pack") => Command::UploadPack,
        Some("git-receive-pack") => Command::ReceivePack,
        Some("git-upload-archive") => Command::UploadArchive,
        Some("git-lfs-authenticate") => Command::LfsAuthenticate,
        // Pure-SSH LFS without `lfs.pure_ssh_protocol` is refused like an unknown command.
        Some("git-lfs-transfer") if config.lfs_pure_ssh_protocol => Command::LfsTransfer,
        Some("2fa_recovery_codes") => Command::TwoFactorRecover,
        Some("2fa_verify") => Command::TwoFactorVerify,
        Some("personal_access_token") if config.pat_enabled => {
            Command::PersonalAccessToken(personal_access_token::Plan::today())
        }
        Some(_) => return Err(Error::UnknownCommand),
    })
}

/// [`build`] for a session: a session authenticated by a group SSH certificate (its
/// environment carries the certificate's namespace) may only run git commands; anything else is
/// refused as an unknown command (GitLab Shell's `GitCommands` rule).
pub fn build_for(words: &[String], session: &Session<'_>) -> Result<Command, Error> {
    let cmd = build(words, session.config)?;
    if !session.env.namespace_path.is_empty() && !cmd.is_git() {
        return Err(Error::UnknownCommand);
    }
    Ok(cmd)
}

/// Runs `cmd`.
pub fn run(cmd: &Command, ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    match cmd {
        Command::Discover => discover::run(ctx, io),
        Command::UploadPack => git::run::<upload_pack::UploadPack>(ctx, io),
        Command::ReceivePack => git::run::<receive_pack::ReceivePack>(ctx, io),
        Command::UploadArchive => git::run::<upload_archive::UploadArchive>(ctx, io),
        Command::LfsAuthenticate => lfs_authenticate::run(ctx, io),
        Command::LfsTransfer => lfs_transfer::run(ctx, io),
        Command::TwoFactorRecover => two_factor_recover::run(ctx, io),
        Command::TwoFactorVerify => two_factor_verify::run(ctx, io),
        Command::PersonalAccessToken(plan) => personal_access_token::run(ctx, plan, io),
    }
}

/// Runs a whole SSH session (behaviour §1.2): split the command, choose it, run it, and map any
/// error to what the user sees. Returns the exit status (0 or 1).
pub fn execute(session: &Session<'_>, io: &mut Io) -> u8 {
    execute_with(session, io, error::report_status)
}

/// [`execute`] with the display of a failed command chosen by the front door: gitlab-sshd
/// frames it as `ERROR: <message>` (`error::report_status_sshd`). Refusals before a command
/// runs are shown as [`execute`] shows them.
pub fn execute_with(session: &Session<'_>, io: &mut Io, report: fn(&Error, &mut Io) -> u8) -> u8 {
    let words = match args::shell::split_command(&session.env) {
        Ok(words) => words,
        Err(e) => return error::report_status(&e.into(), io),
    };
    let cmd = match build_for(&words, session) {
        Ok(cmd) => cmd,
        Err(e) => return error::report_status(&e, io),
    };
    session.observer.command_built(&cmd);
    tracing::info!(command = cmd.name(), env = %logged_env(&session.env), "gitlab-shell: main: executing command");
    let ctx = Context {
        config: session.config,
        identity: &session.identity,
        env: &session.env,
        words: &words,
        correlation_id: session.correlation_id,
        observer: &session.observer,
        gitaly_pool: session.gitaly_pool.as_ref(),
    };
    match run(&cmd, &ctx, io) {
        Ok(()) => {
            tracing::info!(
                command = cmd.name(),
                "gitlab-shell: main: command executed successfully"
            );
            0
        }
        Err(e) => {
            tracing::warn!(command = cmd.name(), error_message = %e, "gitlab-shell: main: command execution failed");
            session.observer.command_failed(&e);
            report(&e, io)
        }
    }
}

/// `gitlab-shell key-N|username-X` (behaviour §1.2): the classic front door. `argv` is
/// `argv[1..]`; the identity is the first `key-N` / `username-X` in it.
pub fn shell(
    argv: &[std::ffi::OsString],
    env: SshEnv,
    config: &Config,
    correlation_id: &str,
    io: &mut Io,
) -> u8 {
    let session = Session {
        config,
        identity: args::shell::parse_identity(argv),
        env,
        correlation_id,
        observer: crate::observe::noop(),
        gitaly_pool: None,
    };
    execute(&session, io)
}

/// The environment as GitLab Shell logs it: the object logrus makes of its `sshenv.Env` struct.
fn logged_env(env: &SshEnv) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct LoggedEnv<'a> {
        git_protocol_version: &'a str,
        #[serde(rename = "IsSSHConnection")]
        is_ssh_connection: bool,
        original_command: &'a str,
        remote_addr: &'a str,
        namespace_path: &'a str,
    }
    let original_command = env.original_command.to_string_lossy();
    serde_json::to_string(&LoggedEnv {
        git_protocol_version: &env.git_protocol,
        is_ssh_connection: env.is_ssh_connection,
        original_command: &original_command,
        remote_addr: &env.remote_addr,
        namespace_path: &env.namespace_path,
    })
    .unwrap_or_default()
}

/// Reads what Go's `fmt.Fscanln(io.LimitReader(r, limit), &s)` would store in `s`: bytes are
/// read one at a time up to LF, EOF or `limit`, so nothing after the answer line is consumed;
/// the first whitespace-separated token is the answer.
pub fn read_token(r: &mut dyn std::io::Read, limit: usize) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < limit {
        match r.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&line)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(cmd: &str) -> Vec<String> {
        args::shell::split_command(&SshEnv::from_values(
            "127.0.0.1 1 127.0.0.1 22",
            cmd.into(),
            "",
        ))
        .unwrap()
    }

    fn config(yaml: &str) -> Config {
        Config::from_yaml(
            std::path::Path::new("/"),
            format!("secret: x\n{yaml}").as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn build_table() {
        let c = config("");
        assert_eq!(build(&shell(""), &c).unwrap(), Command::Discover);
        assert_eq!(
            build(&shell("git-upload-pack a b c"), &c).unwrap(),
            Command::UploadPack
        );
        assert!(matches!(
            build(&shell("personal_access_token"), &c).unwrap(),
            Command::PersonalAccessToken(_)
        ));
        for (cmd, want) in [
            ("git upload-pack 'g/r'", Command::UploadPack),
            ("git-receive-pack g/r; rm -rf /", Command::ReceivePack),
            ("git-upload-archive r", Command::UploadArchive),
            ("git-lfs-authenticate r download", Command::LfsAuthenticate),
            ("2fa_recovery_codes", Command::TwoFactorRecover),
            ("2fa_verify", Command::TwoFactorVerify),
            ("; rm -rf /", Command::Discover),
        ] {
            assert_eq!(build(&shell(cmd), &c).unwrap(), want, "{cmd}");
        }
        let lfs = config("lfs:\n  pure_ssh_protocol: true\n");
        assert_eq!(
            build(&shell("git-lfs-transfer r download"), &lfs).unwrap(),
            Command::LfsTransfer
        );
        for cmd in [
            "ls",
            "git-lfs-transfer r download",
            "git",
            "bash -c id",
            "rm -rf /",
            "`rm -rf /`",
            "$(id)",
            "git-upload-pack2 r",
        ] {
            let e = build(&shell(cmd), &c).unwrap_err();
            assert!(
                e.is_unframed() && e.to_string() == "Disallowed command",
                "{cmd}"
            );
        }
        let off = config("pat:\n  enabled: false\n");
        assert!(matches!(
            build(&shell("personal_access_token a b"), &off),
            Err(Error::UnknownCommand)
        ));
    }

    #[test]
    fn read_token_semantics() {
        let mut r: &[u8] = b"yes\nrest";
        assert_eq!(read_token(&mut r, 1024), "yes");
        assert_eq!(r, b"rest", "nothing after the line is consumed");
        let mut r: &[u8] = b"  yes please\n";
        assert_eq!(read_token(&mut r, 1024), "yes");
        let mut r: &[u8] = b"";
        assert_eq!(read_token(&mut r, 1024), "");
        let mut r: &[u8] = b"123456789";
        assert_eq!(read_token(&mut r, 4), "1234");
    }
}

#[cfg(test)]
mod command_tests {
    use super::testkit::{Kit, alice, framed};
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn execute_refuses_outside_ssh_and_bad_command_lines() {
        let kit = Kit::new("");
        let (mut io, out, err) = Io::memory(b"");
        let session = Session {
            config: &kit.config,
            identity: alice(),
            env: SshEnv::from_values("", "git-upload-pack r".into(), ""),
            correlation_id: "c",
            observer: crate::observe::noop(),
            gitaly_pool: None,
        };
        assert_eq!(execute(&session, &mut io), 1);
        assert_eq!(
            (out.text(), err.text()),
            (String::new(), "Only SSH allowed\n".to_owned())
        );

        let run = kit.run(alice(), "git-upload-pack 'unterminated", b"");
        assert_eq!(run.status, 1);
        assert_eq!(
            run.stderr,
            "Invalid SSH command: invalid command line string\n"
        );
        let run = kit.run(alice(), "rm -rf /", b"");
        assert_eq!(
            (run.status, run.stderr.as_str()),
            (1, "Disallowed command\n")
        );
        assert!(kit.api.requests().is_empty(), "nothing reached the API");
    }

    #[test]
    fn arity_errors_are_framed() {
        let kit = Kit::new("");
        for cmd in [
            "git-upload-pack",
            "git-receive-pack a b",
            "git-lfs-authenticate r",
            "git-lfs-authenticate r sideways",
        ] {
            let run = kit.run(alice(), cmd, b"");
            assert_eq!(run.status, 1, "{cmd}");
            assert_eq!(run.stderr, framed("Disallowed command"), "{cmd}");
        }
        let run = kit.run(Identity::None, "git-upload-pack group/repo", b"");
        assert_eq!(run.status, 1);
        assert!(run.stderr.starts_with("remote: "), "{}", run.stderr);
    }

    /// Records what the command layer reports.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl crate::observe::Observer for Recorder {
        fn http_request_started(&self) {
            self.0.lock().unwrap().push("started".into());
        }
        fn http_request_finished(
            &self,
            method: &str,
            status: Option<u16>,
            _elapsed: std::time::Duration,
        ) {
            self.0
                .lock()
                .unwrap()
                .push(format!("finished {method} {status:?}"));
        }
        fn command_built(&self, command: &Command) {
            self.0
                .lock()
                .unwrap()
                .push(format!("built {}", command.name()));
        }
        fn command_failed(&self, error: &Error) {
            self.0
                .lock()
                .unwrap()
                .push(format!("failed session_error={}", error.is_session_error()));
        }
        fn access_granted(&self, response: &crate::api::allowed::Response) {
            self.0.lock().unwrap().push(format!(
                "granted {}",
                response.gitaly.repository.gl_project_path
            ));
        }
    }

    fn observed(kit: &Kit, cmd: &str, namespace: &str) -> (u8, String, Vec<String>) {
        let recorder = std::sync::Arc::new(Recorder::default());
        let mut env = SshEnv::from_values("192.0.2.10 5555 127.0.0.1 22", cmd.into(), "");
        env.namespace_path = namespace.into();
        let session = Session {
            config: &kit.config,
            identity: alice(),
            env,
            correlation_id: "c",
            observer: recorder.clone(),
            gitaly_pool: None,
        };
        let (mut io, _out, err) = Io::memory(b"");
        let status = execute(&session, &mut io);
        let seen = recorder.0.lock().unwrap().clone();
        (status, err.text(), seen)
    }

    #[test]
    fn the_observer_sees_api_attempts_the_command_and_its_failure() {
        let kit = Kit::new("");
        let (status, _, seen) = observed(&kit, "git-upload-pack nope/nope.git", "");
        assert_eq!(status, 1);
        assert_eq!(
            seen,
            [
                "built *uploadpack.Command",
                "started",
                "finished POST Some(404)",
                "failed session_error=false",
            ]
        );
    }

    /// What `/allowed` granted reaches the observer before the command runs, even when the
    /// Gitaly call then fails (no Gitaly here); a refusal reports nothing.
    #[test]
    fn the_observer_sees_the_access_granted() {
        let kit = Kit::new("");
        let (status, _, seen) = observed(&kit, "git-upload-pack group/repo.git", "");
        assert_eq!(status, 1);
        assert!(seen.contains(&"granted group/repo".to_owned()), "{seen:?}");
        let (_, _, seen) = observed(&kit, "git-upload-pack nope/nope.git", "");
        assert!(!seen.iter().any(|s| s.starts_with("granted")), "{seen:?}");
    }

    #[test]
    fn a_group_certificate_session_runs_git_commands_only() {
        let kit = Kit::new("");
        for cmd in ["2fa_recovery_codes", "personal_access_token t api 1", ""] {
            let (status, stderr, seen) = observed(&kit, cmd, "group");
            assert_eq!(
                (status, stderr.as_str()),
                (1, "Disallowed command\n"),
                "{cmd}"
            );
            assert!(seen.is_empty(), "{cmd}: {seen:?}");
        }
        assert!(kit.api.requests().is_empty(), "nothing reached the API");
        let (_, _, seen) = observed(&kit, "git-upload-pack group/repo.git", "group");
        assert_eq!(
            seen.first().map(String::as_str),
            Some("built *uploadpack.Command")
        );
        let allowed = kit.api.requests_to("/allowed");
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].body["namespace_path"], "group");
    }
}
