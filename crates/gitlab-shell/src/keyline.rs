//! authorized_keys lines printed by the two check binaries (GitLab Shell `internal/keyline`):
//! `command="<root>/bin/gitlab-shell key-N",<options> <key>` and the `username-X` variant for
//! certificate principals.

use std::path::Path;

use crate::config::clean_join;
use crate::messages;

/// sshd options that keep the forced command from being anything but GitLab Shell.
pub const SSH_OPTIONS: &str = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty";

/// A validation failure; the text is shown framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeylineError(pub String);

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn line(root: &Path, prefix: &str, id: &str, value: &str) -> Result<String, KeylineError> {
    if !valid_id(id) {
        return Err(KeylineError(messages::invalid_key_id(id)));
    }
    if value.contains('\n') {
        return Err(KeylineError(messages::invalid_value(value)));
    }
    let command = clean_join(root, "bin/gitlab-shell");
    Ok(format!(
        "command=\"{} {prefix}-{id}\",{SSH_OPTIONS} {value}",
        command.display()
    ))
}

/// The line for GitLab key `id` with public key `key`.
pub fn public_key_line(root: &Path, id: &str, key: &str) -> Result<String, KeylineError> {
    line(root, "key", id, key)
}

/// The line for certificate key id `key_id` and one `principal`.
pub fn principal_line(root: &Path, key_id: &str, principal: &str) -> Result<String, KeylineError> {
    line(root, "username", key_id, principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            public_key_line(Path::new("/srv/gls/"), "1", "ssh-rsa AAAA x@y").unwrap(),
            "command=\"/srv/gls/bin/gitlab-shell key-1\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-rsa AAAA x@y"
        );
        assert_eq!(
            principal_line(Path::new("/r"), "alice.b_c-d", "sshUsers").unwrap(),
            "command=\"/r/bin/gitlab-shell username-alice.b_c-d\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty sshUsers"
        );
    }

    #[test]
    fn validation() {
        assert_eq!(
            principal_line(Path::new("/r"), "a b", "p")
                .unwrap_err()
                .to_string(),
            "invalid key_id: a b"
        );
        assert_eq!(
            principal_line(Path::new("/r"), "a\"", "p")
                .unwrap_err()
                .to_string(),
            "invalid key_id: a\""
        );
        assert_eq!(
            public_key_line(Path::new("/r"), "1", "a\nb")
                .unwrap_err()
                .to_string(),
            "invalid value: a\nb"
        );
    }
}
