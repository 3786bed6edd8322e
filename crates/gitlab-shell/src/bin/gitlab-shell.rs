//! `gitlab-shell`: the forced command of every authorized_keys line (`key-N` / `username-X`).
//! Start-up in GitLab Shell's order, then [`gitlab_shell::command::shell`].

use std::process::ExitCode;

use gitlab_shell::command;
use gitlab_shell::sshenv::SshEnv;
use gitlab_shell::startup::{self, Binary};

fn main() -> ExitCode {
    startup::main(Binary::Shell, |s| {
        command::shell(s.args, SshEnv::from_env(), s.config, s.correlation_id, s.io)
    })
}
