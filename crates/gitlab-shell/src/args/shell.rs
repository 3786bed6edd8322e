//! `gitlab-shell` arguments (GitLab Shell `commandargs/shell.go`, behaviour §1.2): the identity
//! from argv (`key-N` / `username-X`) and the SSH command from `SSH_ORIGINAL_COMMAND`.

use std::ffi::OsString;

use super::shellwords;
pub use crate::identity::Identity;
use crate::messages;
use crate::sshenv::SshEnv;

/// Why the session's command line was refused before any command was chosen. Both are printed
/// as a plain stderr line (not framed), exit 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No `SSH_CONNECTION`: not run by sshd.
    #[error("{}", messages::ONLY_SSH_ALLOWED)]
    OnlySshAllowed,
    /// go-shellwords refused the command line.
    #[error("{prefix}: {0}", prefix = messages::INVALID_SSH_COMMAND)]
    InvalidSshCommand(String),
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

/// Splits the session's SSH command into words, as GitLab Shell does: only for an SSH session,
/// go-shellwords rules, and Git for Windows' `git upload-pack` joined to `git-upload-pack`.
/// An empty list is the welcome command.
pub fn split_command(env: &SshEnv) -> Result<Vec<String>, Error> {
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
    Ok(words)
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
        assert_eq!(split_command(&e), Err(Error::OnlySshAllowed));
    }

    #[test]
    fn words() {
        let split = |cmd: &str| split_command(&env(cmd)).unwrap();
        let empty: [&str; 0] = [];
        assert_eq!(split(""), empty);
        assert_eq!(split("git upload-pack 'g/r'"), ["git-upload-pack", "g/r"]);
        assert_eq!(split("git"), ["git"]);
        assert_eq!(
            split("git-receive-pack g/r; rm -rf /"),
            ["git-receive-pack", "g/r"]
        );
        assert_eq!(split("; rm -rf /"), empty);
        assert_eq!(split("`rm -rf /`"), ["`rm -rf /`"]);
        assert_eq!(split("$(id)"), ["$(id)"]);
        assert_eq!(split(&"x".repeat(1 << 20)).len(), 1);
    }

    #[test]
    fn invalid_command_line() {
        let e = split_command(&env("git-upload-pack 'x")).unwrap_err();
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
        let words = split_command(&e).unwrap();
        assert_eq!(words[1], "\u{fffd}\u{fffd}");
        let argv = vec![OsString::from_vec(b"key-\xff".to_vec())];
        assert_eq!(parse_identity(&argv), Identity::None);
    }
}
