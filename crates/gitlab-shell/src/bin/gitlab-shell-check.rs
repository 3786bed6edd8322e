//! `gitlab-shell-check`: operators' health check of the internal API. Start-up, then
//! [`gitlab_shell::command::healthcheck::run`].

use std::process::ExitCode;

use gitlab_shell::command::healthcheck;
use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::Check, |s| {
        healthcheck::run(s.config, s.correlation_id, s.io)
    })
}
