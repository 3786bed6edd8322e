//! One authorized_keys line in GitLab Shell's forced-command form, and the reverse: picking the key
//! id and the public key back out of a line already in the file.
//!
//! Format (behaviour §1.3 and §10, identical to what `gitlab-shell-authorized-keys-check` prints):
//! `command="<root>/bin/gitlab-shell <key-id>",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty <public key>`

/// Validation failures for a new line (texts as GitLab Shell's `keyline` package prints them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The key id is empty or has a character outside `[a-zA-Z0-9._-]`.
    #[error("invalid key_id: {0}")]
    InvalidKeyId(String),
    /// The public key is empty or contains a line feed.
    #[error("invalid value: {0}")]
    InvalidKey(String),
}

/// The sshd options that follow the forced command, exactly as GitLab Shell writes them.
pub const SSH_OPTIONS: &str = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty";

/// Builds the line for `key_id` (`key-N` or `username-X`) and `public_key` (`ssh-ed25519 AAAA… [comment]`),
/// where `gitlab_shell` is the forced command's program (`<root>/bin/gitlab-shell`). One trailing LF
/// of the key is dropped, as `gitlab-keys` did; an LF inside it is an error. The result has no LF.
pub fn format_line(
    gitlab_shell: &str,
    key_id: &str,
    public_key: &str,
) -> Result<String, LineError> {
    validate_key_id(key_id)?;
    let key = public_key.strip_suffix('\n').unwrap_or(public_key);
    let key = key.strip_suffix('\r').unwrap_or(key);
    if key.trim().is_empty() || key.contains('\n') {
        return Err(LineError::InvalidKey(public_key.to_owned()));
    }
    Ok(format!(
        "command=\"{gitlab_shell} {key_id}\",{SSH_OPTIONS} {key}"
    ))
}

/// Checks a key id against GitLab Shell's `\A[a-zA-Z0-9._-]+\z`.
pub fn validate_key_id(key_id: &str) -> Result<(), LineError> {
    let ok = !key_id.is_empty()
        && key_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LineError::InvalidKeyId(key_id.to_owned()))
    }
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
            format_line("/home/git/gitlab-shell/bin/gitlab-shell", "key-42", KEY).unwrap(),
            "command=\"/home/git/gitlab-shell/bin/gitlab-shell key-42\",no-port-forwarding,\
             no-X11-forwarding,no-agent-forwarding,no-pty ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFq \
             alice@example"
        );
    }

    #[test]
    fn chomps_one_trailing_newline_but_rejects_inner_ones() {
        let line = format_line("/r/bin/gitlab-shell", "key-1", "ssh-rsa AAAA\n").unwrap();
        assert!(line.ends_with(" ssh-rsa AAAA"));
        assert_eq!(
            format_line("/r/bin/gitlab-shell", "key-1", "ssh-rsa AAAA\nssh-rsa BBBB"),
            Err(LineError::InvalidKey(
                "ssh-rsa AAAA\nssh-rsa BBBB".to_owned()
            ))
        );
        assert!(format_line("/r/bin/gitlab-shell", "key-1", "").is_err());
    }

    #[test]
    fn key_ids_follow_gitlab_shells_pattern() {
        for ok in ["key-1", "username-alice.smith_2", "KEY-9"] {
            validate_key_id(ok).unwrap();
        }
        for bad in ["", "key 1", "key-1\"", "key-1,no-pty", "käy"] {
            assert_eq!(
                validate_key_id(bad).unwrap_err().to_string(),
                format!("invalid key_id: {bad}")
            );
        }
    }

    #[test]
    fn parses_back_what_it_formats() {
        let line = format_line("/r/bin/gitlab-shell", "key-7", KEY).unwrap();
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
