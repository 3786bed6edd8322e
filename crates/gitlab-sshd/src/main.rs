//! `gitlab-sshd [-config-dir <dir>] [-version]` (docs/gitlab-sshd.md).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    gitlab_sshd::cli::main(&args)
}
