//! Running a program and collecting what it did: [`Cmd`] (a builder), [`Spawned`] (a running
//! child in its own process group) and [`Run`] (exit code, stdout, stderr).
//!
//! Every run has a deadline. A child that outlives it is killed together with everything it
//! started (the whole process group: `git` leaves `ssh` and `git-upload-pack` children behind,
//! which would otherwise keep our pipes open) and the test fails with the full picture: command,
//! environment, working directory, stdout and stderr. A spawn failure panics; a non-zero exit is
//! data for the test to assert on.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline of one run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// What a finished program did.
#[derive(Clone)]
pub struct Run {
    /// Exit code; `128 + signal` when the program was killed by a signal (as a shell reports it).
    pub code: i32,
    /// Everything the program wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything the program wrote on stderr.
    pub stderr: Vec<u8>,
    /// The command line, environment and working directory, for failure messages.
    pub desc: String,
}

impl Run {
    /// stdout as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) UTF-8.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Fails the test unless the exit code is `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        if self.code != code {
            panic!("expected exit code {code}\n{self}");
        }
        self
    }

    /// Fails the test unless the exit code is 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        self.assert_code(0)
    }

    /// Fails the test unless the exit code is not 0.
    #[track_caller]
    pub fn assert_failure(&self) -> &Self {
        if self.code == 0 {
            panic!("expected a non-zero exit code\n{self}");
        }
        self
    }

    /// Fails the test unless stdout is exactly `expected`.
    #[track_caller]
    pub fn assert_stdout(&self, expected: impl AsRef<[u8]>) -> &Self {
        let expected = expected.as_ref();
        if self.stdout != expected {
            panic!("stdout differs; expected:\n{}\n{self}", show(expected));
        }
        self
    }

    /// Fails the test unless stderr is exactly `expected`.
    #[track_caller]
    pub fn assert_stderr(&self, expected: impl AsRef<[u8]>) -> &Self {
        let expected = expected.as_ref();
        if self.stderr != expected {
            panic!("stderr differs; expected:\n{}\n{self}", show(expected));
        }
        self
    }

    /// Fails the test unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: impl AsRef<[u8]>) -> &Self {
        let needle = needle.as_ref();
        if !contains(&self.stdout, needle) {
            panic!("stdout lacks:\n{}\n{self}", show(needle));
        }
        self
    }

    /// Fails the test unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: impl AsRef<[u8]>) -> &Self {
        let needle = needle.as_ref();
        if !contains(&self.stderr, needle) {
            panic!("stderr lacks:\n{}\n{self}", show(needle));
        }
        self
    }

    /// Fails the test if stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_lacks(&self, needle: impl AsRef<[u8]>) -> &Self {
        let needle = needle.as_ref();
        if contains(&self.stderr, needle) {
            panic!("stderr unexpectedly contains:\n{}\n{self}", show(needle));
        }
        self
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.desc)?;
        writeln!(f, "exit code: {}", self.code)?;
        writeln!(
            f,
            "--- stdout ({} bytes) ---\n{}",
            self.stdout.len(),
            show(&self.stdout)
        )?;
        write!(
            f,
            "--- stderr ({} bytes) ---\n{}",
            self.stderr.len(),
            show(&self.stderr)
        )
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Whether `haystack` contains `needle` as a byte substring.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Printable form of output: UTF-8 text as is, with the size instead when it is huge.
fn show(bytes: &[u8]) -> String {
    const MAX: usize = 64 * 1024;
    if bytes.len() > MAX {
        let head = String::from_utf8_lossy(&bytes[..MAX]);
        format!("{head}\n[... {} more bytes]", bytes.len() - MAX)
    } else {
        format!("{:?}", String::from_utf8_lossy(bytes))
            .trim_matches('"')
            .replace("\\n", "\n")
    }
}

/// A command to run with a deadline, in its own process group.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: PathBuf,
    args: Vec<OsString>,
    clear_env: bool,
    env: Vec<(OsString, OsString)>,
    cwd: Option<PathBuf>,
    stdin: Vec<u8>,
    timeout: Duration,
}

impl Cmd {
    /// A command that inherits the test's environment (see [`Cmd::env_clear`]).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: PathBuf::from(program.as_ref()),
            args: Vec::new(),
            clear_env: false,
            env: Vec::new(),
            cwd: None,
            stdin: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Starts from an empty environment: only the variables set with [`Cmd::env`] are passed.
    pub fn env_clear(mut self) -> Self {
        self.clear_env = true;
        self
    }

    /// Working directory of the child.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    /// Bytes fed to the child's stdin (then stdin is closed).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = bytes.into();
        self
    }

    /// Deadline for the whole run (default [`DEFAULT_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line, environment and working directory, as printed on failure.
    pub fn describe(&self) -> String {
        let mut s = String::from("command: ");
        s.push_str(&shell_quote(self.program.as_os_str()));
        for a in &self.args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        s.push_str(if self.clear_env {
            "\nenv (cleared, then):"
        } else {
            "\nenv (inherited, plus):"
        });
        for (k, v) in &self.env {
            s.push_str(&format!("\n  {}={}", k.to_string_lossy(), shell_quote(v)));
        }
        if let Some(cwd) = &self.cwd {
            s.push_str(&format!("\ncwd: {}", cwd.display()));
        }
        if !self.stdin.is_empty() {
            s.push_str(&format!("\nstdin: {} bytes", self.stdin.len()));
        }
        s
    }

    /// Starts the program. Panics when it cannot be started.
    #[track_caller]
    pub fn spawn(&self) -> Spawned {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if self.clear_env {
            cmd.env_clear();
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &self.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => panic!("cannot start the program: {e}\n{}", self.describe()),
        };
        let (tx, rx) = mpsc::channel();
        if let Some(mut out) = child.stdout.take() {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = out.read_to_end(&mut buf);
                let _ = tx.send((1, buf));
            });
        }
        if let Some(mut err) = child.stderr.take() {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = err.read_to_end(&mut buf);
                let _ = tx.send((2, buf));
            });
        }
        if let Some(mut input) = child.stdin.take() {
            let bytes = self.stdin.clone();
            // The child may exit without reading its input; a broken pipe is not our business.
            thread::spawn(move || {
                let _ = input.write_all(&bytes);
            });
        }
        Spawned {
            pgid: child.id(),
            child,
            output: rx,
            started: Instant::now(),
            timeout: self.timeout,
            desc: self.describe(),
        }
    }

    /// Runs the program to completion (see [`Spawned::wait`]).
    #[track_caller]
    pub fn run(&self) -> Run {
        self.spawn().wait()
    }
}

/// A running child (leader of its own process group).
pub struct Spawned {
    child: Child,
    pgid: u32,
    output: mpsc::Receiver<(u8, Vec<u8>)>,
    started: Instant,
    timeout: Duration,
    desc: String,
}

impl Spawned {
    /// Process id of the child (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pgid
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGKILL to the child's whole process group.
    pub fn kill_group(&mut self) {
        kill_process_group(self.pgid, "KILL");
    }

    /// Waits for the child and its output. Past the deadline, kills the process group and fails
    /// the test, printing everything known about the run.
    #[track_caller]
    pub fn wait(mut self) -> Run {
        let deadline = self.started + self.timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
                Ok(None) => {
                    self.kill_group();
                    let _ = self.child.wait();
                    let (run, _) = self.collect(-1, Instant::now() + Duration::from_secs(2));
                    panic!(
                        "timed out after {:?}; process group killed\n{run}",
                        self.timeout
                    );
                }
                Err(e) => panic!("cannot wait for the child: {e}\n{}", self.desc),
            }
        };
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        // Grandchildren may still hold the pipes; give them until the deadline, then kill them.
        let (run, complete) =
            self.collect(code, deadline.max(Instant::now() + Duration::from_secs(1)));
        if !complete {
            panic!("a process left behind kept the output open past the deadline\n{run}");
        }
        run
    }

    /// Gathers stdout and stderr; `false` when a pipe was still open at `deadline`.
    fn collect(&mut self, code: i32, deadline: Instant) -> (Run, bool) {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut complete = true;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok((1, buf)) => stdout = buf,
                Ok((_, buf)) => stderr = buf,
                Err(_) => {
                    kill_process_group(self.pgid, "KILL");
                    complete = false;
                    break;
                }
            }
        }
        let desc = self.desc.clone();
        (
            Run {
                code,
                stdout,
                stderr,
                desc,
            },
            complete,
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
            let _ = self.child.wait();
        }
    }
}

/// Sends `signal` (a name such as `KILL` or `TERM`) to process group `pgid` with kill(1), which
/// keeps this crate free of `unsafe` libc calls.
pub fn kill_process_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Quotes a word for display the way a POSIX shell would need it.
pub fn shell_quote(word: &OsStr) -> String {
    let s = word.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_code_stdout_stderr_and_uses_only_the_given_env() {
        let run = Cmd::new("/bin/sh")
            .args(["-c", "echo out:$FOO:$HOME; echo err >&2; cat; exit 3"])
            .env_clear()
            .env("FOO", "bar")
            .stdin("in\n")
            .run();
        run.assert_code(3)
            .assert_stdout("out:bar:\nin\n")
            .assert_stderr("err\n");
    }

    #[test]
    fn a_signal_is_reported_like_a_shell_does() {
        let run = Cmd::new("/bin/sh").args(["-c", "kill -9 $$"]).run();
        run.assert_code(128 + 9);
    }

    #[test]
    fn the_deadline_kills_the_whole_process_group_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        let cmd = Cmd::new("/bin/sh")
            .arg("-c")
            .arg(format!("sleep 30 & echo $! > {}; wait", marker.display()))
            .timeout(Duration::from_millis(300));
        let failure = std::panic::catch_unwind(|| cmd.run()).unwrap_err();
        let text = failure
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(text.contains("timed out"), "{text}");
        assert!(text.contains("command: /bin/sh -c"), "{text}");
        let pid = fs_pid(&marker);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            assert!(Instant::now() < deadline, "grandchild {pid} survived");
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn fs_pid(path: &Path) -> u32 {
        std::fs::read_to_string(path)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true)
    }
}
