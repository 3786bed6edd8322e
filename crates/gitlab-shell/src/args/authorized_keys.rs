//! `gitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>` arguments
//! (GitLab Shell `commandargs/authorized_keys.go`, behaviour §1.3).

use std::ffi::OsString;

use crate::messages;

/// The three arguments sshd passes (`git %u %k`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKeysArgs {
    /// The configured git user.
    pub expected_user: String,
    /// The user sshd is authenticating.
    pub actual_user: String,
    /// Base64 key blob.
    pub key: String,
}

/// Validates `argv[1..]`; the error is the exact unframed text.
pub fn parse(args: &[OsString]) -> Result<AuthorizedKeysArgs, String> {
    if args.len() != 3 {
        return Err(messages::keys_check_usage(args.len()));
    }
    let s = |i: usize| args[i].to_string_lossy().into_owned();
    let (expected_user, actual_user, key) = (s(0), s(1), s(2));
    if expected_user.is_empty() || actual_user.is_empty() {
        return Err(messages::NO_USERNAME_PROVIDED.into());
    }
    if key.is_empty() {
        return Err(messages::NO_KEY_PROVIDED.into());
    }
    Ok(AuthorizedKeysArgs {
        expected_user,
        actual_user,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn table() {
        let usage = |n| {
            format!(
                "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>"
            )
        };
        assert_eq!(parse(&os(&[])).unwrap_err(), usage(0));
        assert_eq!(parse(&os(&["git", "git"])).unwrap_err(), usage(2));
        assert_eq!(parse(&os(&["a", "b", "c", "d"])).unwrap_err(), usage(4));
        assert_eq!(
            parse(&os(&["", "git", "k"])).unwrap_err(),
            "# No username provided"
        );
        assert_eq!(
            parse(&os(&["git", "", "k"])).unwrap_err(),
            "# No username provided"
        );
        assert_eq!(
            parse(&os(&["git", "git", ""])).unwrap_err(),
            "# No key provided"
        );
        assert_eq!(
            parse(&os(&["git", "alice", "AAAA"])).unwrap(),
            AuthorizedKeysArgs {
                expected_user: "git".into(),
                actual_user: "alice".into(),
                key: "AAAA".into()
            }
        );
    }
}
