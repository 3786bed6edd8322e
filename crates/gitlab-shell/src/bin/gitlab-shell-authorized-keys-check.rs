//! `gitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>`: sshd's
//! `AuthorizedKeysCommand`. Start-up, then [`gitlab_shell::run_authorized_keys_check`].

use std::ffi::OsString;
use std::process::ExitCode;

use gitlab_shell::config::Config;
use gitlab_shell::io::Io;
use gitlab_shell::sshenv;
use gitlab_shell::startup::{self, Binary};
use gitlab_shell::{correlation, executable, logging};

const BINARY: Binary = Binary::AuthorizedKeysCheck;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut io = Io::from_stdio();
    if let Some(code) = startup::handle_flags(BINARY, &argv, &mut io) {
        return code;
    }
    let root = match executable::root_dir() {
        Ok(root) => root,
        Err(e) => return startup::root_failed(BINARY, &e, &mut io),
    };
    let config = match Config::load(&root) {
        Ok(config) => config,
        Err(e) => return startup::config_failed(BINARY, &e, &mut io),
    };
    let correlation_id = correlation::correlation_id(sshenv::correlation_id_from_env());
    let _log = logging::configure(&config, &correlation_id);
    gitlab_shell::run_authorized_keys_check(
        argv.get(1..).unwrap_or_default(),
        &config,
        &correlation_id,
        &mut io,
    )
}
