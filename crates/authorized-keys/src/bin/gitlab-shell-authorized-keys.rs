//! `gitlab-shell-authorized-keys`: manage GitLab Shell's forced-command authorized_keys file
//! (`add-key`, `batch-add-keys`, `rm-key`, `clear`, `list-keys`, `list-key-ids`,
//! `check-permissions`). Start-up as in the product binaries (version flag, root, config,
//! logging), then [`cli::run`]. See `docs/operating.md`.

use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use gitlab_shell::{correlation, logging, sshenv, startup};
use gitlab_shell_authorized_keys::cli::{self, Io, PROGRAM};
use gitlab_shell_authorized_keys::keys_file::AuthorizedKeysFile;
use gitlab_shell_authorized_keys::settings;

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    let (mut stdin, mut stdout, mut stderr) = (stdin.lock(), stdout.lock(), stderr.lock());
    let program = argv.first().cloned().unwrap_or_else(|| PROGRAM.into());
    if let [_, flag] = &argv[..]
        && (flag == "-version" || flag == "--version")
    {
        let _ = writeln!(stdout, "{}", startup::version_line(&program));
        return ExitCode::SUCCESS;
    }
    let args: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let settings = match settings::load() {
        Ok(s) => s,
        Err(err) => {
            let _ = writeln!(stderr, "{err}");
            return ExitCode::FAILURE;
        }
    };
    let correlation_id = correlation::correlation_id(sshenv::correlation_id_from_env());
    let _log = logging::configure(&settings.config, &correlation_id);
    let file = AuthorizedKeysFile::new(&settings.auth_file, &settings.config.root_dir);
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    cli::run(&program.to_string_lossy(), &args, &file, &mut io)
}
