//! The command line of `gitlab-shell-authorized-keys`, modelled on the historic `gitlab-keys`
//! (behaviour §10): one function per subcommand, a dispatcher, injected stdio.
//!
//! ```text
//! gitlab-shell-authorized-keys add-key <key-id> <public key>
//! gitlab-shell-authorized-keys batch-add-keys          < lines of "<key-id>\t<public key>"
//! gitlab-shell-authorized-keys rm-key <key-id> [<public key>]
//! gitlab-shell-authorized-keys clear
//! gitlab-shell-authorized-keys list-keys
//! gitlab-shell-authorized-keys list-key-ids
//! gitlab-shell-authorized-keys check-permissions
//! ```
//!
//! Exit status 0 on success, 1 on any failure; an unknown command prints `not allowed` on stdout
//! and exits 1, as `gitlab-keys` did.

use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::keys_file::{AuthorizedKeysFile, NewKey};
use crate::lock::{BATCH_TIMEOUT, DEFAULT_TIMEOUT};
use crate::{line, pubkey};

/// The binary's name, used as the prefix of its error lines.
pub const PROGRAM: &str = "gitlab-shell-authorized-keys";

/// What `gitlab-keys` printed (on stdout) for an unknown command.
pub const NOT_ALLOWED: &str = "not allowed";

/// Usage text, printed on stderr when a subcommand lacks arguments.
pub const USAGE: &str = "Usage: gitlab-shell-authorized-keys <command> [args]
  add-key <key-id> <public key>     add one forced-command line
  batch-add-keys                    add \"<key-id>\\t<public key>\" lines read from stdin
  rm-key <key-id> [<public key>]    remove the lines of key-id (only that key, if given)
  clear                             empty the file (leaves \"# Managed by gitlab-shell\")
  list-keys                         print \"<key-id> <base64 key>\" per line
  list-key-ids                      print N of every key-N
  check-permissions                 open the file read-write (creating it) or explain why not
";

/// The process's standard streams, injected so commands can be tested in-process.
pub struct Io<'a> {
    /// Standard input (read by `batch-add-keys`).
    pub stdin: &'a mut dyn Read,
    /// Standard output.
    pub stdout: &'a mut dyn Write,
    /// Standard error.
    pub stderr: &'a mut dyn Write,
}

/// Runs one command line (`args` without the program name) against `file`. `program` is argv[0],
/// quoted in `batch-add-keys`' input errors as `gitlab-keys` quoted `$0`.
pub fn run(program: &str, args: &[String], file: &AuthorizedKeysFile, io: &mut Io) -> ExitCode {
    match dispatch(program, args, file, io) {
        Ok(code) => code,
        Err(err) => {
            let _ = writeln!(io.stderr, "{PROGRAM}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A failure to report as `gitlab-shell-authorized-keys: <text>` on stderr.
type CmdResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn dispatch(program: &str, args: &[String], file: &AuthorizedKeysFile, io: &mut Io) -> CmdResult {
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("", args),
    };
    match command {
        "add-key" => add_key(rest, file, io),
        "batch-add-keys" => batch_add_keys(program, file, io),
        "rm-key" => rm_key(rest, file, io),
        "clear" => {
            tracing::info!(auth_file = %file.path().display(), "Clearing authorized_keys file");
            file.clear(DEFAULT_TIMEOUT)?;
            Ok(ExitCode::SUCCESS)
        }
        "list-keys" => {
            for (id, blob) in file.list_keys()? {
                writeln!(io.stdout, "{id} {blob}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        "list-key-ids" => {
            for id in file.list_key_ids()? {
                writeln!(io.stdout, "{id}")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        "check-permissions" => check_permissions(file, io),
        "--help" | "help" => {
            io.stdout.write_all(USAGE.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            tracing::warn!(command, "Attempt to execute invalid gitlab-keys command");
            writeln!(io.stdout, "{NOT_ALLOWED}")?;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `add-key <key-id> <public key>`: the key may also be given unquoted, as several arguments.
fn add_key(args: &[String], file: &AuthorizedKeysFile, io: &mut Io) -> CmdResult {
    let Some((key_id, key_words)) = args.split_first().filter(|(_, k)| !k.is_empty()) else {
        return usage(io);
    };
    let key = NewKey {
        key_id: key_id.clone(),
        public_key: key_words.join(" "),
    };
    tracing::info!(key_id = %key.key_id, public_key = %key.public_key, "Adding key");
    check_new_key(&key)?;
    file.add(&[key], DEFAULT_TIMEOUT)?;
    Ok(ExitCode::SUCCESS)
}

/// `batch-add-keys`: all of stdin is validated first, then added in one locked rewrite.
fn batch_add_keys(program: &str, file: &AuthorizedKeysFile, io: &mut Io) -> CmdResult {
    let mut keys = Vec::new();
    for line in io::BufReader::new(&mut *io.stdin).lines() {
        let line = line?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let [key_id, public_key] = fields[..] else {
            writeln!(io.stderr, "{program}: invalid input {line:?}")?;
            return Ok(ExitCode::FAILURE);
        };
        let key = NewKey {
            key_id: key_id.to_owned(),
            public_key: public_key.to_owned(),
        };
        if let Err(err) = check_new_key(&key) {
            writeln!(io.stderr, "{program}: invalid input {line:?}: {err}")?;
            return Ok(ExitCode::FAILURE);
        }
        keys.push(key);
    }
    tracing::info!(count = keys.len(), "Adding keys");
    file.add(&keys, BATCH_TIMEOUT)?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses, before anything is written, a key id GitLab Shell would not accept and, for a
/// `key-N` line, a public key that is not one ([`pubkey::check`]); a `username-X` line carries a
/// certificate principal instead of a key.
fn check_new_key(key: &NewKey) -> Result<(), Box<dyn std::error::Error>> {
    line::validate_key_id(&key.key_id)?;
    if key.key_id.starts_with("key-") {
        let text = key.public_key.trim_end_matches(['\n', '\r']);
        if let Err(err) = pubkey::check(text) {
            return Err(format!("invalid public key {text:?}: {err}").into());
        }
    }
    Ok(())
}

/// `rm-key <key-id> [<public key>]`.
fn rm_key(args: &[String], file: &AuthorizedKeysFile, io: &mut Io) -> CmdResult {
    let Some((key_id, key_words)) = args.split_first() else {
        return usage(io);
    };
    let key = (!key_words.is_empty()).then(|| key_words.join(" "));
    tracing::info!(key_id = %key_id, "Removing key");
    let removed = file.remove(key_id, key.as_deref(), DEFAULT_TIMEOUT)?;
    tracing::info!(key_id = %key_id, removed, "Removed key lines");
    Ok(ExitCode::SUCCESS)
}

/// `check-permissions`: on failure, the `gitlab-keys` diagnosis: the error, then `ls -l` of the
/// file (or `ls -ld` of its directory when the file does not exist).
fn check_permissions(file: &AuthorizedKeysFile, io: &mut Io) -> CmdResult {
    let Err(err) = file.check_permissions() else {
        return Ok(ExitCode::SUCCESS);
    };
    let path = file.path();
    let reason = match &err {
        crate::keys_file::Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    writeln!(
        io.stdout,
        "error: could not open {}: {reason}",
        path.display()
    )?;
    let (flags, target) = if path.exists() {
        ("-l", path)
    } else {
        ("-ld", path.parent().unwrap_or(Path::new(".")))
    };
    if let Ok(out) = Command::new("ls")
        .arg(flags)
        .arg(target)
        .stdin(Stdio::null())
        .output()
    {
        io.stdout.write_all(&out.stdout)?;
        io.stderr.write_all(&out.stderr)?;
    }
    Ok(ExitCode::FAILURE)
}

fn usage(io: &mut Io) -> CmdResult {
    io.stderr.write_all(USAGE.as_bytes())?;
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const ROOT: &str = "/srv/gls";
    /// Blobs that pass [`pubkey::check`]: a real ed25519 key and the start of an RSA key.
    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIE3xNSBlv46kN5dGwLbAsYsQ/dJFA6xuLrxLp4mCI99v";
    const RSA: &str = "AAAAB3NzaC1yc2EAAAADAQAB";

    struct Out {
        code: ExitCode,
        stdout: String,
        stderr: String,
    }

    fn run_with(file: &AuthorizedKeysFile, args: &[&str], stdin: &str) -> Out {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut input = stdin.as_bytes();
        let code = run(
            "/srv/gls/bin/gitlab-shell-authorized-keys",
            &args,
            file,
            &mut Io {
                stdin: &mut input,
                stdout: &mut stdout,
                stderr: &mut stderr,
            },
        );
        Out {
            code,
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    fn setup() -> (tempfile::TempDir, AuthorizedKeysFile) {
        let dir = tempfile::tempdir().unwrap();
        let f = AuthorizedKeysFile::new(dir.path().join("authorized_keys"), ROOT);
        (dir, f)
    }

    #[test]
    fn add_key_then_list_then_remove() {
        let (_d, f) = setup();
        let out = run_with(
            &f,
            &["add-key", "key-5", &format!("ssh-ed25519 {ED} bob@host")],
            "",
        );
        assert_eq!(
            (out.code, out.stdout.as_str(), out.stderr.as_str()),
            (ExitCode::SUCCESS, "", "")
        );
        // Unquoted key words are joined back together.
        let out = run_with(&f, &["add-key", "key-6", "ssh-rsa", RSA], "");
        assert_eq!(out.code, ExitCode::SUCCESS);
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            format!(
                "command=\"/srv/gls/bin/gitlab-shell key-5\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-ed25519 {ED} bob@host\n\
                 command=\"/srv/gls/bin/gitlab-shell key-6\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty ssh-rsa {RSA}\n"
            )
        );
        assert_eq!(
            run_with(&f, &["list-keys"], "").stdout,
            format!("key-5 {ED}\nkey-6 {RSA}\n")
        );
        assert_eq!(run_with(&f, &["list-key-ids"], "").stdout, "5\n6\n");
        assert_eq!(
            run_with(&f, &["rm-key", "key-5"], "").code,
            ExitCode::SUCCESS
        );
        assert_eq!(run_with(&f, &["list-key-ids"], "").stdout, "6\n");
        assert_eq!(run_with(&f, &["clear"], "").code, ExitCode::SUCCESS);
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            "# Managed by gitlab-shell\n"
        );
    }

    #[test]
    fn batch_add_keys_reads_tab_separated_stdin() {
        let (_d, f) = setup();
        let out = run_with(
            &f,
            &["batch-add-keys"],
            &format!("key-1\tssh-rsa {RSA}\nkey-2\tssh-ed25519 {ED} c\n\n"),
        );
        assert_eq!(out.code, ExitCode::SUCCESS, "{}", out.stderr);
        assert_eq!(run_with(&f, &["list-key-ids"], "").stdout, "1\n2\n");
    }

    #[test]
    fn batch_add_keys_rejects_a_bad_line_and_writes_nothing() {
        let (_d, f) = setup();
        let out = run_with(
            &f,
            &["batch-add-keys"],
            &format!("key-1\tssh-rsa {RSA}\nkey-2 ssh-rsa {RSA}\n"),
        );
        assert_eq!(out.code, ExitCode::FAILURE);
        assert_eq!(
            out.stderr,
            format!(
                "/srv/gls/bin/gitlab-shell-authorized-keys: invalid input \"key-2 ssh-rsa {RSA}\"\n"
            )
        );
        assert!(!f.path().exists());
        // A line whose key is not a key: nothing is written either.
        let out = run_with(
            &f,
            &["batch-add-keys"],
            &format!("key-1\tssh-rsa {RSA}\nkey-2\tnot a key\n"),
        );
        assert_eq!(out.code, ExitCode::FAILURE);
        assert_eq!(
            out.stderr,
            "/srv/gls/bin/gitlab-shell-authorized-keys: invalid input \"key-2\\tnot a key\": \
             invalid public key \"not a key\": unknown key type \"not\"\n"
        );
        assert!(!f.path().exists());
    }

    #[test]
    fn add_key_refuses_what_is_not_a_key_and_writes_nothing() {
        let (_d, f) = setup();
        for (key, why) in [
            ("not a key", "unknown key type \"not\""),
            ("ssh-ed25519 AAAAC3Nza", "the key data is not valid base64"),
            (
                &format!("ssh-ed25519 {RSA} x") as &str,
                "the key data is not a ssh-ed25519 key",
            ),
        ] {
            let out = run_with(&f, &["add-key", "key-5", key], "");
            assert_eq!(out.code, ExitCode::FAILURE, "{key}");
            assert_eq!(
                out.stderr,
                format!("gitlab-shell-authorized-keys: invalid public key {key:?}: {why}\n")
            );
            assert!(!f.path().exists(), "{key}");
        }
        // A certificate principal (username-X) is not a key and is accepted as it is.
        let out = run_with(&f, &["add-key", "username-alice", "sshUsers"], "");
        assert_eq!(out.code, ExitCode::SUCCESS, "{}", out.stderr);
    }

    #[test]
    fn invalid_key_id_is_reported() {
        let (_d, f) = setup();
        let out = run_with(&f, &["add-key", "key\"1", "ssh-rsa AAA"], "");
        assert_eq!(out.code, ExitCode::FAILURE);
        assert_eq!(
            out.stderr,
            "gitlab-shell-authorized-keys: invalid key_id: key\"1\n"
        );
    }

    #[test]
    fn unknown_or_missing_command_is_not_allowed() {
        let (_d, f) = setup();
        for args in [&["frobnicate"][..], &[][..]] {
            let out = run_with(&f, args, "");
            assert_eq!(out.code, ExitCode::FAILURE);
            assert_eq!(out.stdout, "not allowed\n");
        }
    }

    #[test]
    fn help_prints_usage_on_stdout() {
        let (_d, f) = setup();
        let out = run_with(&f, &["--help"], "");
        assert_eq!((out.code, out.stdout.as_str()), (ExitCode::SUCCESS, USAGE));
    }

    #[test]
    fn missing_arguments_print_usage() {
        let (_d, f) = setup();
        for args in [&["add-key"][..], &["add-key", "key-1"][..], &["rm-key"][..]] {
            let out = run_with(&f, args, "");
            assert_eq!(out.code, ExitCode::FAILURE);
            assert_eq!(out.stderr, USAGE);
        }
    }

    #[test]
    fn check_permissions_explains_a_failure() {
        let (d, _) = setup();
        let f = AuthorizedKeysFile::new(d.path().join("missing/authorized_keys"), ROOT);
        let out = run_with(&f, &["check-permissions"], "");
        assert_eq!(out.code, ExitCode::FAILURE);
        let first = out.stdout.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "error: could not open {}: No such file or directory (os error 2)",
                f.path().display()
            )
        );
        let (_d2, ok) = setup();
        assert_eq!(
            run_with(&ok, &["check-permissions"], "").code,
            ExitCode::SUCCESS
        );
    }
}
