//! GitLab Shell (classic mode) in Rust: the library behind the four OpenSSH companion binaries.
//!
//! Map (one module per concern, after GitLab Shell's Go layout):
//! - start-up: [`startup`] (version/help flags, start-up messages), [`executable`] (root
//!   folder), [`config`] (config.yml + secret), [`logging`], [`correlation`];
//! - input: [`sshenv`] (the SSH environment), [`args`] (argv and `SSH_ORIGINAL_COMMAND`);
//! - output: [`io`], [`console`] (`remote: ` framing), [`messages`], [`error`] (the one
//!   error → output + exit code mapping), [`keyline`];
//! - work: [`api`] (internal API, one module per endpoint), [`command`] (one module per SSH
//!   command; git data goes through the `gitaly-client` crate).
//!
//! Each binary's `main` runs the start-up steps and then one `run_*` function below.

pub mod api;
pub mod args;
pub mod command;
pub mod config;
pub mod console;
pub mod correlation;
pub mod error;
pub mod executable;
pub mod io;
pub mod keyline;
pub mod logging;
pub mod messages;
pub mod sshenv;
pub mod startup;

use std::ffi::OsString;
use std::process::ExitCode;

use crate::config::Config;
use crate::io::Io;
use crate::sshenv::SshEnv;

/// `gitlab-shell key-N|username-X` (behaviour §1.2). `args` is `argv[1..]`.
pub fn run_shell(
    args: &[OsString],
    env: SshEnv,
    config: &Config,
    correlation_id: &str,
    io: &mut Io,
) -> ExitCode {
    ExitCode::from(run_shell_status(args, env, config, correlation_id, io))
}

/// [`run_shell`] returning the plain exit status (0 or 1), for callers that are not a process
/// of their own, such as an SSH server sending `exit-status` for a session running in-process.
pub fn run_shell_status(
    args: &[OsString],
    env: SshEnv,
    config: &Config,
    correlation_id: &str,
    io: &mut Io,
) -> u8 {
    run_shell_status_with(args, env, config, correlation_id, io, error::report_status)
}

/// [`run_shell_status`] with the error display chosen by the caller: gitlab-sshd shows a failed
/// command as `ERROR: <message>` ([`error::report_status_sshd`]).
pub fn run_shell_status_with(
    args: &[OsString],
    env: SshEnv,
    config: &Config,
    correlation_id: &str,
    io: &mut Io,
    report: fn(&error::Error, &mut Io) -> u8,
) -> u8 {
    let parsed = match args::shell::parse(args, env) {
        Ok(p) => p,
        Err(e) => return error::report_status(&e, io),
    };
    let cmd = match command::build(&parsed, config) {
        Ok(c) => c,
        Err(e) => return error::report_status(&e, io),
    };
    let env = &parsed.env;
    // Logged as the object logrus makes of GitLab Shell's `sshenv.Env` struct.
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct LoggedEnv<'a> {
        git_protocol_version: &'a str,
        #[serde(rename = "IsSSHConnection")]
        is_ssh_connection: bool,
        original_command: &'a str,
        remote_addr: &'a str,
        namespace_path: &'a str,
    }
    let original_command = env.original_command.to_string_lossy();
    let env_json = serde_json::to_string(&LoggedEnv {
        git_protocol_version: &env.git_protocol,
        is_ssh_connection: env.is_ssh_connection,
        original_command: &original_command,
        remote_addr: &env.remote_addr,
        namespace_path: "",
    })
    .unwrap_or_default();
    tracing::info!(command = cmd.name(), env = %env_json, "gitlab-shell: main: executing command");
    let ctx = command::Context {
        config,
        args: &parsed,
        correlation_id,
    };
    match command::run(&cmd, &ctx, io) {
        Ok(()) => {
            tracing::info!(
                command = cmd.name(),
                "gitlab-shell: main: command executed successfully"
            );
            0
        }
        Err(e) => {
            tracing::warn!(command = cmd.name(), error = %e, "gitlab-shell: main: command execution failed");
            report(&e, io)
        }
    }
}

/// `gitlab-shell-authorized-keys-check <expected> <actual> <key>` (behaviour §1.3).
pub fn run_authorized_keys_check(
    args: &[OsString],
    config: &Config,
    correlation_id: &str,
    io: &mut Io,
) -> ExitCode {
    let a = match args::authorized_keys::parse(args) {
        Ok(a) => a,
        Err(msg) => {
            io.err_line(&msg);
            return ExitCode::FAILURE;
        }
    };
    if a.expected_user != a.actual_user {
        tracing::warn!(expected_user = %a.expected_user, actual_user = %a.actual_user, "authorized_keys: user mismatch, denying access");
        return ExitCode::SUCCESS;
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
            Err(e) => return error::report(&error::Error::Message(e.to_string()), io),
        },
    };
    match io.out_line(&line) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

/// `gitlab-shell-authorized-principals-check <key-id> <principal>…` (behaviour §1.4). Makes no
/// API call.
pub fn run_authorized_principals_check(
    args: &[OsString],
    config: &Config,
    io: &mut Io,
) -> ExitCode {
    let a = match args::authorized_principals::parse(args) {
        Ok(a) => a,
        Err(msg) => {
            io.err_line(&msg);
            return ExitCode::FAILURE;
        }
    };
    for principal in &a.principals {
        // Checked line by line: earlier lines may already be out when a later one fails.
        let line = match keyline::principal_line(&config.root_dir, &a.key_id, principal) {
            Ok(line) => line,
            Err(e) => return error::report(&error::Error::Message(e.to_string()), io),
        };
        if io.out_line(&line).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// `gitlab-shell-check` (behaviour §1.5). Arguments are ignored.
pub fn run_check(config: &Config, correlation_id: &str, io: &mut Io) -> ExitCode {
    let result =
        api::Client::new(config, correlation_id).and_then(|client| api::check::check(&client));
    let report = match result {
        Err(e) => {
            io.err_line(&format!("{}: FAILED - {e}", messages::CHECK_API));
            return ExitCode::FAILURE;
        }
        Ok(r) => r,
    };
    if io
        .out_line(&format!("{}: OK", messages::CHECK_API))
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    if !report.redis {
        io.err_line(&format!("{}: FAILED", messages::CHECK_REDIS));
        return ExitCode::FAILURE;
    }
    match io.out_line(&format!("{}: OK", messages::CHECK_REDIS)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
