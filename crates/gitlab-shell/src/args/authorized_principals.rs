//! `gitlab-shell-authorized-principals-check <key-id> <principal>…` arguments (GitLab Shell
//! `commandargs/authorized_principals.go`, behaviour §1.4).

use std::ffi::OsString;

use crate::messages;

/// The certificate key id and the principals to print lines for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedPrincipalsArgs {
    /// Certificate key id (the GitLab username).
    pub key_id: String,
    /// Principals, in order.
    pub principals: Vec<String>,
}

/// Validates `argv[1..]`; the error is the exact unframed text.
pub fn parse(args: &[OsString]) -> Result<AuthorizedPrincipalsArgs, String> {
    if args.len() < 2 {
        return Err(messages::principals_check_usage(args.len()));
    }
    let key_id = args[0].to_string_lossy().into_owned();
    if key_id.is_empty() {
        return Err(messages::NO_KEY_ID_PROVIDED.into());
    }
    let principals: Vec<String> = args[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if principals.iter().any(String::is_empty) {
        return Err(messages::INVALID_PRINCIPAL.into());
    }
    Ok(AuthorizedPrincipalsArgs { key_id, principals })
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
                "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-principals-check <key-id> <principal1> [<principal2>...]"
            )
        };
        assert_eq!(parse(&os(&[])).unwrap_err(), usage(0));
        assert_eq!(parse(&os(&["key"])).unwrap_err(), usage(1));
        assert_eq!(parse(&os(&["", "p"])).unwrap_err(), "# No key_id provided");
        assert_eq!(
            parse(&os(&["k", "p", ""])).unwrap_err(),
            "# An invalid principal was provided"
        );
        assert_eq!(parse(&os(&["k", "a", "b"])).unwrap().principals, ["a", "b"]);
    }
}
