//! The SSH session's environment as sshd passes it to the forced command
//! (`internal/sshenv`): `SSH_CONNECTION`, `SSH_ORIGINAL_COMMAND`, `GIT_PROTOCOL`, plus
//! `CORRELATION_ID`. With [`crate::executable`], the only place that reads the environment.

use std::ffi::OsString;

/// What sshd told us about the session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshEnv {
    /// `SSH_CONNECTION` was set and non-empty.
    pub is_ssh_connection: bool,
    /// First whitespace-separated field of `SSH_CONNECTION` (the client address).
    pub remote_addr: String,
    /// `SSH_ORIGINAL_COMMAND`, raw (it may not be UTF-8).
    pub original_command: OsString,
    /// `GIT_PROTOCOL`, verbatim.
    pub git_protocol: String,
    /// The namespace a group SSH certificate was issued for (GitLab Shell's
    /// `sshenv.Env.NamespacePath`): set only by an SSH server that verified such a certificate;
    /// always empty for the classic forced command.
    pub namespace_path: String,
}

impl SshEnv {
    /// Reads the three variables from the process environment.
    #[expect(
        clippy::disallowed_methods,
        reason = "the one reader of the SSH environment"
    )]
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var_os(k).unwrap_or_default();
        Self::from_values(
            &get("SSH_CONNECTION").to_string_lossy(),
            get("SSH_ORIGINAL_COMMAND"),
            &get("GIT_PROTOCOL").to_string_lossy(),
        )
    }

    /// Builds the environment from explicit values (tests, and [`Self::from_env`]).
    pub fn from_values(connection: &str, original_command: OsString, git_protocol: &str) -> Self {
        SshEnv {
            is_ssh_connection: !connection.is_empty(),
            remote_addr: connection
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_owned(),
            original_command,
            git_protocol: git_protocol.to_owned(),
            namespace_path: String::new(),
        }
    }
}

/// `CORRELATION_ID` from the environment, if set and non-empty.
#[expect(
    clippy::disallowed_methods,
    reason = "labkit reads CORRELATION_ID from the env"
)]
pub fn correlation_id_from_env() -> Option<String> {
    std::env::var("CORRELATION_ID")
        .ok()
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_addr_is_first_field() {
        let e = SshEnv::from_values("127.0.0.1 5555 127.0.0.2 22", OsString::new(), "");
        assert!(e.is_ssh_connection);
        assert_eq!(e.remote_addr, "127.0.0.1");
        let e = SshEnv::from_values("", OsString::new(), "");
        assert!(!e.is_ssh_connection);
        assert_eq!(e.remote_addr, "");
    }
}
