//! The start-up steps every binary shares (behaviour §1.1): `-version`, `--version` and `--help`
//! (answered without reading config or the network), and each binary's own wording for root and
//! config failures.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::executable::RootDirError;
use crate::io::Io;
use crate::{correlation, executable, logging, messages, sshenv};

/// Product version, `v` + the `VERSION` file.
pub const VERSION: &str = env!("GITLAB_SHELL_VERSION");
/// Build time (`%Y%m%d.%H%M%S`, default `19700101.000000`).
pub const BUILD_TIME: &str = env!("GITLAB_SHELL_BUILD_TIME");

/// The four binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `gitlab-shell`.
    Shell,
    /// `gitlab-shell-authorized-keys-check`.
    AuthorizedKeysCheck,
    /// `gitlab-shell-authorized-principals-check`.
    AuthorizedPrincipalsCheck,
    /// `gitlab-shell-check`.
    Check,
}

impl Binary {
    fn usage(self) -> &'static str {
        match self {
            Binary::Shell => {
                "Usage: gitlab-shell key-<id>|username-<name>\n\nThe forced command of GitLab's authorized_keys lines. sshd runs it with\nSSH_CONNECTION, SSH_ORIGINAL_COMMAND and GIT_PROTOCOL set; it serves git over SSH\nand the GitLab SSH commands. Configuration: <root>/config.yml.\n\nOptions:\n  -version, --version  print the version and exit\n  --help               print this help and exit\n"
            }
            Binary::AuthorizedKeysCheck => {
                "Usage: gitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>\n\nsshd AuthorizedKeysCommand: prints the authorized_keys line for <key> when\n<actual-username> is <expected-username>. Configuration: <root>/config.yml.\n\nOptions:\n  -version, --version  print the version and exit\n  --help               print this help and exit\n"
            }
            Binary::AuthorizedPrincipalsCheck => {
                "Usage: gitlab-shell-authorized-principals-check <key-id> <principal1> [<principal2>...]\n\nsshd AuthorizedPrincipalsCommand: prints one authorized_keys line per principal\nfor certificate <key-id>. Configuration: <root>/config.yml.\n\nOptions:\n  -version, --version  print the version and exit\n  --help               print this help and exit\n"
            }
            Binary::Check => {
                "Usage: gitlab-shell-check\n\nChecks that GitLab's internal API and its Redis are reachable with this\nGitLab Shell's configuration (<root>/config.yml).\n\nOptions:\n  -version, --version  print the version and exit\n  --help               print this help and exit\n"
            }
        }
    }
}

/// `<basename(argv0)> <version>-<build time>`.
pub fn version_line(argv0: &OsString) -> String {
    let name = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{name} {VERSION}-{BUILD_TIME}")
}

/// Answers `-version`, `--version` and `--help` when they are the only argument.
pub fn handle_flags(binary: Binary, argv: &[OsString], io: &mut Io) -> Option<ExitCode> {
    let [argv0, flag] = argv else { return None };
    let text = match flag.to_str()? {
        "-version" | "--version" => format!("{}\n", version_line(argv0)),
        "--help" => binary.usage().to_owned(),
        _ => return None,
    };
    Some(
        match io
            .stdout
            .write_all(text.as_bytes())
            .and_then(|()| io.stdout.flush())
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
    )
}

/// Prints the binary's root-folder failure and returns exit 1.
pub fn root_failed(binary: Binary, err: &RootDirError, io: &mut Io) -> ExitCode {
    let line = match binary {
        Binary::AuthorizedKeysCheck => messages::KEYS_FAILED_TO_DETERMINE_EXECUTABLE.to_owned(),
        Binary::Check => format!("{}: {err}", messages::FAILED_TO_DETERMINE_EXECUTABLE),
        Binary::Shell | Binary::AuthorizedPrincipalsCheck => {
            messages::FAILED_TO_DETERMINE_EXECUTABLE.to_owned()
        }
    };
    io.err_line(&line);
    ExitCode::FAILURE
}

/// Prints the binary's config failure and returns exit 1.
pub fn config_failed(binary: Binary, err: &ConfigError, io: &mut Io) -> ExitCode {
    let line = match binary {
        Binary::AuthorizedKeysCheck => messages::KEYS_FAILED_TO_READ_CONFIG.to_owned(),
        _ => format!("{}: {err}", messages::FAILED_TO_READ_CONFIG),
    };
    io.err_line(&line);
    ExitCode::FAILURE
}

use std::io::Write as _;

/// What the shared start-up hands to a binary's own entry point.
pub struct Started<'a> {
    /// `argv[1..]`.
    pub args: &'a [OsString],
    /// The loaded `config.yml` (and secret).
    pub config: &'a Config,
    /// This process's correlation id (from `CORRELATION_ID` or generated once).
    pub correlation_id: &'a str,
    /// The process's standard streams.
    pub io: &'a mut Io,
}

/// The whole start-up of behaviour §1.1 in its fixed order — flags, streams, root folder,
/// config, correlation id, logging — then `run`. Every binary's `main` is this one call, so the
/// order and each binary's failure wording live here only. The log guard lives until `run`
/// returns, and `main` returns the exit code (never `process::exit`), so logs are flushed.
/// `run` returns the exit status.
pub fn main(binary: Binary, run: impl FnOnce(Started<'_>) -> u8) -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut io = Io::from_stdio();
    if let Some(code) = handle_flags(binary, &argv, &mut io) {
        return code;
    }
    let root = match executable::root_dir() {
        Ok(root) => root,
        Err(e) => return root_failed(binary, &e, &mut io),
    };
    let mut config = match Config::load(&root) {
        Ok(config) => config,
        Err(e) => return config_failed(binary, &e, &mut io),
    };
    logging::EnvOverrides::from_env().apply(&mut config);
    let correlation_id = correlation::correlation_id(sshenv::correlation_id_from_env());
    let _log = logging::configure(&config, &correlation_id);
    ExitCode::from(run(Started {
        args: argv.get(1..).unwrap_or_default(),
        config: &config,
        correlation_id: &correlation_id,
        io: &mut io,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let (mut io, out, _) = Io::memory(b"");
        assert_eq!(
            handle_flags(
                Binary::Shell,
                &argv(&["/x/bin/gitlab-shell", "-version"]),
                &mut io
            ),
            Some(ExitCode::SUCCESS)
        );
        assert_eq!(out.text(), format!("gitlab-shell {VERSION}-{BUILD_TIME}\n"));
        assert!(VERSION.starts_with('v'));
        let (mut io, out, _) = Io::memory(b"");
        assert!(
            handle_flags(
                Binary::Check,
                &argv(&["gitlab-shell-check", "--help"]),
                &mut io
            )
            .is_some()
        );
        assert!(out.text().starts_with("Usage: gitlab-shell-check"));
        let (mut io, _, _) = Io::memory(b"");
        assert!(handle_flags(Binary::Shell, &argv(&["gitlab-shell", "key-1"]), &mut io).is_none());
        assert!(
            handle_flags(
                Binary::Shell,
                &argv(&["gitlab-shell", "-version", "x"]),
                &mut io
            )
            .is_none()
        );
    }
}
