//! `gitlab-shell-authorized-principals-check <key-id> <principal>…`: sshd's
//! `AuthorizedPrincipalsCommand` for SSH certificates. Start-up, then
//! [`gitlab_shell::run_authorized_principals_check`].

use std::process::ExitCode;

use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::AuthorizedPrincipalsCheck, |s| {
        gitlab_shell::run_authorized_principals_check(s.args, s.config, s.io)
    })
}
