//! `gitlab-shell-check`: operators' health check of the internal API. Start-up, then
//! [`gitlab_shell::run_check`].

use std::process::ExitCode;

use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::Check, |s| {
        gitlab_shell::run_check(s.config, s.correlation_id, s.io)
    })
}
