//! One module per SSH command (GitLab Shell `internal/command/*`), the [`Command`] enum, the one
//! [`build`] `match` that applies feature gates, and [`run`]. Each command has
//! `run(ctx, io) -> Result<()>`; output and errors go through [`Io`] and [`crate::error`].

pub mod access;
pub mod custom_action;
pub mod discover;
pub mod geo;
pub mod git;
pub mod lfs_authenticate;
pub mod lfs_transfer;
pub mod personal_access_token;
pub mod receive_pack;
pub mod two_factor_recover;
pub mod two_factor_verify;
pub mod upload_archive;
pub mod upload_pack;

use crate::api;
use crate::args::{CommandType, ShellArgs};
use crate::config::Config;
use crate::error::Error;
use crate::io::Io;

/// What a command needs besides its I/O.
pub struct Context<'a> {
    /// Loaded config.
    pub config: &'a Config,
    /// Parsed argv and SSH environment.
    pub args: &'a ShellArgs,
    /// This process's correlation id.
    pub correlation_id: &'a str,
}

impl Context<'_> {
    /// A fresh internal API client (created only by commands that call the API).
    pub fn api(&self) -> Result<api::Client, api::Error> {
        api::Client::new(self.config, self.correlation_id)
    }
}

/// A runnable SSH command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Welcome.
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
}

/// Chooses the command (behaviour §1.2 table). Unknown and disabled commands are the unframed
/// `Disallowed command`; arity problems are left to the command (framed).
pub fn build(args: &ShellArgs, config: &Config) -> Result<Command, Error> {
    Ok(match &args.command {
        CommandType::Discover => Command::Discover,
        CommandType::UploadPack => Command::UploadPack,
        CommandType::ReceivePack => Command::ReceivePack,
        CommandType::UploadArchive => Command::UploadArchive,
        CommandType::LfsAuthenticate => Command::LfsAuthenticate,
        CommandType::LfsTransfer if config.lfs_pure_ssh_protocol => Command::LfsTransfer,
        CommandType::TwoFactorRecover => Command::TwoFactorRecover,
        CommandType::TwoFactorVerify => Command::TwoFactorVerify,
        CommandType::PersonalAccessToken if config.pat_enabled => {
            Command::PersonalAccessToken(personal_access_token::Plan::today())
        }
        // Pure-SSH LFS without `lfs.pure_ssh_protocol` is refused like a disabled command.
        CommandType::PersonalAccessToken | CommandType::LfsTransfer | CommandType::Unknown(_) => {
            return Err(Error::UnknownCommand);
        }
    })
}

/// Runs `cmd`.
pub fn run(cmd: &Command, ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    match cmd {
        Command::Discover => discover::run(ctx, io),
        Command::UploadPack => upload_pack::run(ctx, io),
        Command::ReceivePack => receive_pack::run(ctx, io),
        Command::UploadArchive => upload_archive::run(ctx, io),
        Command::LfsAuthenticate => lfs_authenticate::run(ctx, io),
        Command::LfsTransfer => lfs_transfer::run(ctx, io),
        Command::TwoFactorRecover => two_factor_recover::run(ctx, io),
        Command::TwoFactorVerify => two_factor_verify::run(ctx, io),
        Command::PersonalAccessToken(plan) => personal_access_token::run(ctx, plan, io),
    }
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
    use crate::sshenv::SshEnv;

    fn shell(cmd: &str) -> ShellArgs {
        crate::args::shell::parse(
            &["key-1".into()],
            SshEnv::from_values("127.0.0.1 1 127.0.0.1 22", cmd.into(), ""),
        )
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
        for cmd in [
            "ls",
            "git-lfs-transfer r download",
            "git",
            "bash -c id",
            "rm -rf /",
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
