//! `gitlab-shell-authorized-keys-check <expected> <actual> <key>` (GitLab Shell
//! `internal/command/authorizedkeys`, behaviour §1.3): sshd's `AuthorizedKeysCommand`. Prints the
//! forced-command `authorized_keys` line for a key GitLab knows, or a comment line when it does
//! not (exit 0 either way, so sshd simply finds no usable key).

use std::ffi::OsString;

use crate::api;
use crate::args;
use crate::config::Config;
use crate::error::{self, Error};
use crate::io::Io;
use crate::{keyline, messages};

/// Runs the check; `argv` is `argv[1..]`. Returns the exit status.
pub fn run(argv: &[OsString], config: &Config, correlation_id: &str, io: &mut Io) -> u8 {
    let a = match args::authorized_keys::parse(argv) {
        Ok(a) => a,
        Err(msg) => {
            io.err_line(&msg);
            return 1;
        }
    };
    if a.expected_user != a.actual_user {
        tracing::warn!(expected_user = %a.expected_user, actual_user = %a.actual_user, "authorized_keys: user mismatch, denying access");
        return 0;
    }
    let found = api::Client::new(config, correlation_id)
        .and_then(|client| api::authorized_keys::get_by_key(&client, &a.key));
    let line = match found {
        Err(e) => {
            tracing::info!(error = %e, "authorized_keys: key lookup failed");
            messages::no_key_found(&a.key)
        }
        Ok(r) => match keyline::public_key_line(&config.root_dir, &r.id.to_string(), &r.key) {
            Ok(line) => line,
            Err(e) => return error::report_status(&Error::Message(e.to_string()), io),
        },
    };
    match io.out_line(&line) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::testkit::Kit;
    use crate::io::Io;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFndHzcKPTK+ErPd+bVlQYRX6IWC5m9rbGX0AM9fruB/";

    fn check(kit: &Kit, argv: &[&str]) -> (u8, String, String) {
        let argv: Vec<OsString> = argv.iter().map(OsString::from).collect();
        let (mut io, out, err) = Io::memory(b"");
        let status = run(&argv, &kit.config, "c", &mut io);
        (status, out.text(), err.text())
    }

    #[test]
    fn prints_the_forced_command_line_for_a_known_key() {
        let kit = Kit::new("");
        let (status, out, err) = check(&kit, &["git", "git", KEY]);
        assert_eq!((status, err.as_str()), (0, ""));
        let root = kit.config.root_dir.display();
        assert_eq!(
            out,
            format!(
                "command=\"{root}/bin/gitlab-shell key-1\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-ed25519 {KEY} a\n"
            )
        );
        let seen = kit.api.requests_to("/authorized_keys");
        assert_eq!(seen[0].query_param("key").as_deref(), Some(KEY));
    }

    #[test]
    fn unknown_key_mismatch_and_usage() {
        let kit = Kit::new("");
        assert_eq!(
            check(&kit, &["git", "git", "AAAAunknown"]),
            (
                0,
                "# No key was found for AAAAunknown\n".into(),
                String::new()
            )
        );
        assert_eq!(
            check(&kit, &["git", "root", KEY]),
            (0, String::new(), String::new())
        );
        assert!(
            kit.api.requests_to("/authorized_keys").len() == 1,
            "a user mismatch asks nothing"
        );
        let (status, _, err) = check(&kit, &["git"]);
        assert_eq!(status, 1);
        assert_eq!(err, format!("{}\n", crate::messages::keys_check_usage(1)));
    }
}
