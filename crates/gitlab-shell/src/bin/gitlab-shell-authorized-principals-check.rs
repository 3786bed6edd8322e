//! `gitlab-shell-authorized-principals-check`: sshd's `AuthorizedPrincipalsCommand` for SSH
//! certificates. Start-up, then [`gitlab_shell::command::authorized_principals::run`].

use std::process::ExitCode;

use gitlab_shell::command::authorized_principals;
use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::AuthorizedPrincipalsCheck, |s| {
        authorized_principals::run(s.args, s.config, s.io)
    })
}
