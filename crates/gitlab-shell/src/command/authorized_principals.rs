//! `gitlab-shell-authorized-principals-check <key-id> <principal>…` (GitLab Shell
//! `internal/command/authorizedprincipals`, behaviour §1.4): sshd's
//! `AuthorizedPrincipalsCommand` for SSH certificates. Makes no API call.

use std::ffi::OsString;

use crate::args;
use crate::config::Config;
use crate::error::{self, Error};
use crate::io::Io;
use crate::keyline;

/// Prints one `authorized_keys` line per principal; `argv` is `argv[1..]`. Returns the exit
/// status.
pub fn run(argv: &[OsString], config: &Config, io: &mut Io) -> u8 {
    let a = match args::authorized_principals::parse(argv) {
        Ok(a) => a,
        Err(msg) => {
            io.err_line(&msg);
            return 1;
        }
    };
    for principal in &a.principals {
        // Checked line by line: earlier lines may already be out when a later one fails.
        let line = match keyline::principal_line(&config.root_dir, &a.key_id, principal) {
            Ok(line) => line,
            Err(e) => return error::report_status(&Error::Message(e.to_string()), io),
        };
        if io.out_line(&line).is_err() {
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::testkit::Kit;
    use crate::io::Io;

    #[test]
    fn one_line_per_principal_and_usage() {
        let kit = Kit::new("");
        let argv: Vec<OsString> = ["key-9", "alice", "bob"]
            .iter()
            .map(OsString::from)
            .collect();
        let (mut io, out, _) = Io::memory(b"");
        assert_eq!(run(&argv, &kit.config, &mut io), 0);
        let root = kit.config.root_dir.display();
        let line = |p: &str| {
            format!(
                "command=\"{root}/bin/gitlab-shell username-key-9\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty {p}\n"
            )
        };
        assert_eq!(out.text(), format!("{}{}", line("alice"), line("bob")));
        assert!(kit.api.requests().is_empty(), "no API call");
        let (mut io, _, err) = Io::memory(b"");
        assert_eq!(run(&[OsString::from("key-9")], &kit.config, &mut io), 1);
        assert_eq!(
            err.text(),
            format!("{}\n", crate::messages::principals_check_usage(1))
        );
    }
}
