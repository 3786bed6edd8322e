//! One authorized_keys line in GitLab Shell's forced-command form, and the reverse: picking the key
//! id and the public key back out of a line already in the file.
//!
//! Format (behaviour §1.3 and §10, identical to what `gitlab-shell-authorized-keys-check` prints):
//! `command="<root>/bin/gitlab-shell <key-id>",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty <public key>`

use std::path::Path;

use gitlab_shell::{keyline, messages};

/// A key id or key that cannot go into a line; the text is GitLab Shell's (`invalid key_id: <id>`,
/// `invalid value: <key>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LineError(pub String);

/// The sshd options that follow the forced command, exactly as GitLab Shell writes them.
pub const SSH_OPTIONS: &str = gitlab_shell::keyline::SSH_OPTIONS;

/// Builds the line for `key_id` (`key-N`, or `username-X` for certificate principals) and
/// `public_key` (`ssh-ed25519 AAAA… [comment]`) for the GitLab Shell installed at `root`, with
/// `gitlab_shell::keyline` (the code the check binaries print with). One trailing LF of the key is
/// dropped, as `gitlab-keys` did; an LF inside it is an error. The result has no LF.
pub fn format_line(root: &Path, key_id: &str, public_key: &str) -> Result<String, LineError> {
    let key = public_key.strip_suffix('\n').unwrap_or(public_key);
    let key = key.strip_suffix('\r').unwrap_or(key);
    let line = if let Some(id) = key_id.strip_prefix("key-") {
        keyline::public_key_line(root, id, key)
    } else if let Some(name) = key_id.strip_prefix("username-") {
        keyline::principal_line(root, name, key)
    } else {
        return Err(LineError(messages::invalid_key_id(key_id)));
    };
    let line = line.map_err(|e| match (e, key_id) {
        // keyline quotes the id without its prefix; quote what the operator typed.
        (_, id) if !valid_key_id(id) => LineError(messages::invalid_key_id(id)),
        (e, _) => LineError(e.to_string()),
    })?;
    if key.trim().is_empty() {
        return Err(LineError(messages::invalid_value(public_key)));
    }
    Ok(line)
}

/// Checks a key id: `key-` or `username-`, then GitLab Shell's `[a-zA-Z0-9._-]+`.
pub fn validate_key_id(key_id: &str) -> Result<(), LineError> {
    if valid_key_id(key_id) {
        Ok(())
    } else {
        Err(LineError(messages::invalid_key_id(key_id)))
    }
}

fn valid_key_id(key_id: &str) -> bool {
    let rest = key_id
        .strip_prefix("key-")
        .or_else(|| key_id.strip_prefix("username-"));
    rest.is_some_and(|r| {
        !r.is_empty()
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    })
}

/// The parts of a forced-command line already in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    /// The whole forced command (`/home/git/gitlab-shell/bin/gitlab-shell key-7`).
    pub command: &'a str,
    /// Its last word (`key-7`).
    pub key_id: &'a str,
    /// Everything after the options: `<type> <base64> [comment]`.
    pub public_key: &'a str,
}

impl ParsedLine<'_> {
    /// The base64 blob of the public key (its second word), as `gitlab-keys list-keys` printed it.
    pub fn key_blob(&self) -> &str {
        self.public_key
            .split_ascii_whitespace()
            .nth(1)
            .unwrap_or(self.public_key)
    }

    /// `<type> <base64>` without the comment, for comparing keys.
    pub fn key_material(&self) -> (Option<&str>, Option<&str>) {
        key_material(self.public_key)
    }
}

/// Splits `<type> <base64> [comment]` into its first two words.
pub fn key_material(public_key: &str) -> (Option<&str>, Option<&str>) {
    let mut words = public_key.split_ascii_whitespace();
    (words.next(), words.next())
}

/// Parses a `command="…",<options> <key>` line; `None` for comments, blank lines and lines in
/// any other form (they are kept in the file untouched).
pub fn parse_line(line: &str) -> Option<ParsedLine<'_>> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let rest = line.strip_prefix("command=\"")?;
    let end = rest.find('"')?;
    let command = &rest[..end];
    let key_id = command.rsplit(' ').next().filter(|id| !id.is_empty())?;
    let after = &rest[end + 1..];
    let space = after.find(' ')?;
    let public_key = after[space + 1..].trim();
    if public_key.is_empty() {
        return None;
    }
    Some(ParsedLine {
        command,
        key_id,
        public_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq alice@example";

    #[test]
    fn formats_the_exact_line_the_keys_check_prints() {
        assert_eq!(
            format_line(Path::new("/home/git/gitlab-shell"), "key-42", KEY).unwrap(),
            "command=\"/home/git/gitlab-shell/bin/gitlab-shell key-42\",no-port-forwarding,\
             no-X11-forwarding,no-agent-forwarding,no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq \
             alice@example"
        );
    }

    #[test]
    fn chomps_one_trailing_newline_but_rejects_inner_ones() {
        let line = format_line(Path::new("/r"), "key-1", "ssh-rsa AAAA\n").unwrap();
        assert!(line.ends_with(" ssh-rsa AAAA"));
        assert_eq!(
            format_line(Path::new("/r"), "key-1", "ssh-rsa AAAA\nssh-rsa BBBB"),
            Err(LineError(
                "invalid value: ssh-rsa AAAA\nssh-rsa BBBB".to_owned()
            ))
        );
        assert!(format_line(Path::new("/r"), "key-1", "").is_err());
    }

    #[test]
    fn key_ids_follow_gitlab_shells_pattern() {
        for ok in ["key-1", "username-alice.smith_2", "key-A9"] {
            validate_key_id(ok).unwrap();
        }
        for bad in [
            "",
            "key-",
            "KEY-9",
            "deploy-1",
            "key 1",
            "key-1\"",
            "key-1,no-pty",
            "käy",
        ] {
            assert_eq!(
                validate_key_id(bad).unwrap_err().to_string(),
                format!("invalid key_id: {bad}")
            );
            let err = format_line(Path::new("/r"), bad, "ssh-rsa A").unwrap_err();
            assert_eq!(err.to_string(), format!("invalid key_id: {bad}"));
        }
    }

    #[test]
    fn principal_lines_use_the_username_form() {
        assert_eq!(
            format_line(Path::new("/r/"), "username-alice", "sshUsers").unwrap(),
            format!("command=\"/r/bin/gitlab-shell username-alice\",{SSH_OPTIONS} sshUsers")
        );
    }

    #[test]
    fn parses_back_what_it_formats() {
        let line = format_line(Path::new("/r"), "key-7", KEY).unwrap();
        let parsed = parse_line(&line).unwrap();
        assert_eq!(parsed.command, "/r/bin/gitlab-shell key-7");
        assert_eq!(parsed.key_id, "key-7");
        assert_eq!(parsed.public_key, KEY);
        assert_eq!(parsed.key_blob(), "AAAAC3NzaC1lZDI1NTE5AAAAIFq");
    }

    #[test]
    fn other_lines_are_not_parsed() {
        assert_eq!(parse_line("# Managed by gitlab-shell"), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("ssh-rsa AAAA plain@key"), None);
    }
}
