//! `gitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>`: sshd's
//! `AuthorizedKeysCommand`. Start-up, then [`gitlab_shell::run_authorized_keys_check`].

use std::process::ExitCode;

use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::AuthorizedKeysCheck, |s| {
        gitlab_shell::run_authorized_keys_check(s.args, s.config, s.correlation_id, s.io)
    })
}
