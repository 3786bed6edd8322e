//! `gitlab-shell-authorized-keys-check`: sshd's `AuthorizedKeysCommand`. Start-up, then
//! [`gitlab_shell::command::authorized_keys::run`].

use std::process::ExitCode;

use gitlab_shell::command::authorized_keys;
use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::AuthorizedKeysCheck, |s| {
        authorized_keys::run(s.args, s.config, s.correlation_id, s.io)
    })
}
