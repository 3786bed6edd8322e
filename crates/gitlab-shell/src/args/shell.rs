//! `gitlab-shell` arguments (GitLab Shell `commandargs/shell.go`, behaviour §1.2): the identity
//! from argv (`key-N` / `username-X`) and the SSH command from `SSH_ORIGINAL_COMMAND`.

use std::ffi::OsString;

use super::shellwords;
use crate::error::Error;
use crate::sshenv::SshEnv;

/// Who sshd says the user is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// `key-N`: the digits.
    KeyId(String),
    /// `username-X`.
    Username(String),
    /// Neither (fails later, per command).
    #[default]
    None,
}

/// The SSH command (word 0 after the `git upload-pack` join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandType {
    /// Empty command: welcome.
    Discover,
    /// `git-upload-pack`.
    UploadPack,
    /// `git-receive-pack`.
    ReceivePack,
    /// `git-upload-archive`.
    UploadArchive,
    /// `git-lfs-authenticate`.
    LfsAuthenticate,
    /// `git-lfs-transfer`.
    LfsTransfer,
    /// `2fa_recovery_codes`.
    TwoFactorRecover,
    /// `2fa_verify`.
    TwoFactorVerify,
    /// `personal_access_token`.
    PersonalAccessToken,
    /// Anything else.
    Unknown(String),
}

impl CommandType {
    fn from_word(w: &str) -> CommandType {
        match w {
            "git-upload-pack" => CommandType::UploadPack,
            "git-receive-pack" => CommandType::ReceivePack,
            "git-upload-archive" => CommandType::UploadArchive,
            "git-lfs-authenticate" => CommandType::LfsAuthenticate,
            "git-lfs-transfer" => CommandType::LfsTransfer,
            "2fa_recovery_codes" => CommandType::TwoFactorRecover,
            "2fa_verify" => CommandType::TwoFactorVerify,
            "personal_access_token" => CommandType::PersonalAccessToken,
            other => CommandType::Unknown(other.to_owned()),
        }
    }
}

/// Parsed `gitlab-shell` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellArgs {
    /// From argv.
    pub identity: Identity,
    /// The split SSH command (`git upload-pack` already joined).
    pub words: Vec<String>,
    /// Word 0, classified.
    pub command: CommandType,
    /// The session environment.
    pub env: SshEnv,
}

/// `\Akey-(\d+)\z` (ASCII digits, as RE2's `\d`).
fn parse_key_id(s: &str) -> Option<&str> {
    s.strip_prefix("key-")
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `\Ausername-(\S+)\z` (RE2's `\s` is `[\t\n\f\r ]`).
fn parse_username(s: &str) -> Option<&str> {
    s.strip_prefix("username-").filter(|u| {
        !u.is_empty()
            && !u
                .chars()
                .any(|c| matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' '))
    })
}

/// Scans `argv[1..]`: only the last `" "`-separated piece of each argument is tested; the first
/// hit wins.
pub fn parse_identity(args: &[OsString]) -> Identity {
    for arg in args {
        let arg = super::go_lossy(arg);
        let last = arg.rsplit(' ').next().unwrap_or("");
        if let Some(k) = parse_key_id(last) {
            return Identity::KeyId(k.to_owned());
        }
        if let Some(u) = parse_username(last) {
            return Identity::Username(u.to_owned());
        }
    }
    Identity::None
}

/// Parses `argv[1..]` and the environment. Errors here are printed unframed.
pub fn parse(args: &[OsString], env: SshEnv) -> Result<ShellArgs, Error> {
    if !env.is_ssh_connection {
        return Err(Error::OnlySshAllowed);
    }
    // Go strings hold invalid UTF-8 bytes; shellwords then sees U+FFFD for each, as here.
    let line = super::go_lossy(&env.original_command);
    let mut words =
        shellwords::split(&line).map_err(|e| Error::InvalidSshCommand(e.to_string()))?;
    // Git for Windows 2.14 sends `git upload-pack`.
    if words.len() > 1 && words[0] == "git" {
        let sub = words.remove(1);
        words[0] = format!("git-{sub}");
    }
    let command = match words.first() {
        None => CommandType::Discover,
        Some(w) => CommandType::from_word(w),
    };
    Ok(ShellArgs {
        identity: parse_identity(args),
        words,
        command,
        env,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn env(cmd: &str) -> SshEnv {
        SshEnv::from_values("1.2.3.4 1 5.6.7.8 22", OsString::from(cmd), "")
    }

    #[test]
    fn identity_table() {
        let cases: &[(&[&str], Identity)] = &[
            (&["key-100"], Identity::KeyId("100".into())),
            (
                &[
                    "-c/usr/share/webapps/gitlab-shell/bin/gitlab-shell",
                    "key-100",
                    "2foo",
                ],
                Identity::KeyId("100".into()),
            ),
            (&["gitlab-shell -c key-123"], Identity::KeyId("123".into())),
            (&["username-key-123"], Identity::Username("key-123".into())),
            (&["username-alice"], Identity::Username("alice".into())),
            (&["key-abc"], Identity::None),
            (&["whatever"], Identity::None),
            (&[], Identity::None),
            (&["key-"], Identity::None),
            (&["key-12 extra"], Identity::None),
            (&["key-1", "key-2"], Identity::KeyId("1".into())),
            (&["username-bob", "key-2"], Identity::Username("bob".into())),
            (&["key-١٢"], Identity::None),
        ];
        for (argv, want) in cases {
            assert_eq!(parse_identity(&os(argv)), *want, "{argv:?}");
        }
    }

    #[test]
    fn only_ssh_allowed_comes_first() {
        let e = SshEnv::from_values("", OsString::from("'bad"), "");
        assert!(matches!(
            parse(&os(&["key-1"]), e),
            Err(Error::OnlySshAllowed)
        ));
    }

    #[test]
    fn commands() {
        let p = parse(&os(&["key-1"]), env("")).unwrap();
        assert_eq!(p.command, CommandType::Discover);
        assert!(p.words.is_empty());
        let p = parse(&os(&["key-1"]), env("git upload-pack 'g/r'")).unwrap();
        assert_eq!(p.words, ["git-upload-pack", "g/r"]);
        assert_eq!(p.command, CommandType::UploadPack);
        let p = parse(&os(&["key-1"]), env("git")).unwrap();
        assert_eq!(p.command, CommandType::Unknown("git".into()));
        let p = parse(&os(&["key-1"]), env("git-receive-pack g/r; rm -rf /")).unwrap();
        assert_eq!(p.words, ["git-receive-pack", "g/r"]);
        let p = parse(&os(&["key-1"]), env("; rm -rf /")).unwrap();
        assert_eq!(p.command, CommandType::Discover);
        let p = parse(&os(&["key-1"]), env("`rm -rf /`")).unwrap();
        assert_eq!(p.command, CommandType::Unknown("`rm -rf /`".into()));
        let p = parse(&os(&["key-1"]), env("$(id)")).unwrap();
        assert_eq!(p.command, CommandType::Unknown("$(id)".into()));
        let p = parse(&os(&["key-1"]), env(&"x".repeat(1 << 20))).unwrap();
        assert!(matches!(p.command, CommandType::Unknown(_)));
        for (w, c) in [
            ("git-upload-archive", CommandType::UploadArchive),
            ("git-lfs-authenticate", CommandType::LfsAuthenticate),
            ("git-lfs-transfer", CommandType::LfsTransfer),
            ("2fa_recovery_codes", CommandType::TwoFactorRecover),
            ("2fa_verify", CommandType::TwoFactorVerify),
            ("personal_access_token", CommandType::PersonalAccessToken),
        ] {
            assert_eq!(parse(&os(&[]), env(w)).unwrap().command, c);
        }
    }

    #[test]
    fn invalid_command_line() {
        let e = parse(&os(&["key-1"]), env("git-upload-pack 'x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid SSH command: invalid command line string"
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_chars() {
        let e = SshEnv::from_values(
            "1.1.1.1",
            OsString::from_vec(b"git-upload-pack \xff\xfe".to_vec()),
            "",
        );
        let p = parse(&os(&["key-1"]), e).unwrap();
        assert_eq!(p.words[1], "\u{fffd}\u{fffd}");
        let argv = vec![OsString::from_vec(b"key-\xff".to_vec())];
        assert_eq!(parse_identity(&argv), Identity::None);
    }
}
