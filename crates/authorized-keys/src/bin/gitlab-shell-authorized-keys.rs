//! `gitlab-shell-authorized-keys`: manage GitLab Shell's forced-command authorized_keys file
//! (`add-key`, `batch-add-keys`, `rm-key`, `clear`, `list-keys`, `list-key-ids`,
//! `check-permissions`). See `docs/operating.md`.

use std::io::{self, Write};
use std::process::ExitCode;

use gitlab_shell_authorized_keys::cli::{self, Io, PROGRAM};
use gitlab_shell_authorized_keys::keys_file::AuthorizedKeysFile;
use gitlab_shell_authorized_keys::settings;

fn main() -> ExitCode {
    let mut argv = std::env::args();
    let program = argv.next().unwrap_or_else(|| PROGRAM.to_owned());
    let args: Vec<String> = argv.collect();
    let (stdin, stdout, stderr) = (io::stdin(), io::stdout(), io::stderr());
    let (mut stdin, mut stdout, mut stderr) = (stdin.lock(), stdout.lock(), stderr.lock());
    if args.len() == 1 && args[0] == "-version" {
        let _ = writeln!(stdout, "{PROGRAM} v{}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let settings = match settings::load() {
        Ok(s) => s,
        Err(err) => {
            let _ = writeln!(stderr, "{PROGRAM}: {err}");
            return ExitCode::FAILURE;
        }
    };
    let file = AuthorizedKeysFile::new(&settings.auth_file, settings.gitlab_shell());
    let mut io = Io {
        stdin: &mut stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
    };
    cli::run(&program, &args, &file, &mut io)
}
