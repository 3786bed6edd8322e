//! The injected I/O of a command (GitLab Shell's `ReadWriter`): stdin, stdout and stderr as
//! boxed trait objects so tests can substitute buffers.
//!
//! In production the three are duplicates of fds 0/1/2 opened as plain `File`s: writes go
//! straight to `write(2)` with no line buffering, which matters for the Git protocol where a
//! pkt-line without a trailing newline must reach the client before we wait for its answer.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;

/// stdin/stdout/stderr of one command run.
pub struct Io {
    /// Input from the SSH client.
    pub stdin: Box<dyn Read + Send>,
    /// Output to the SSH client.
    pub stdout: Box<dyn Write + Send>,
    /// Diagnostics to the SSH client.
    pub stderr: Box<dyn Write + Send>,
    /// Cancels a running Gitaly call (docs/architecture.md, "Cancellation"): an in-process SSH
    /// server keeps a clone and cancels it when the channel closes. The Gitaly client also
    /// cancels it itself when writing to the client fails.
    pub cancel: gitaly_client::CancellationToken,
}

fn dup(fd: impl AsFd) -> Option<File> {
    fd.as_fd().try_clone_to_owned().ok().map(File::from)
}

impl Io {
    /// The process's standard streams, unbuffered.
    pub fn from_stdio() -> Self {
        let stdin: Box<dyn Read + Send> = match dup(io::stdin()) {
            Some(f) => Box::new(f),
            None => Box::new(io::empty()),
        };
        let stdout: Box<dyn Write + Send> = match dup(io::stdout()) {
            Some(f) => Box::new(f),
            None => Box::new(io::sink()),
        };
        let stderr: Box<dyn Write + Send> = match dup(io::stderr()) {
            Some(f) => Box::new(f),
            None => Box::new(io::sink()),
        };
        Io {
            stdin,
            stdout,
            stderr,
            cancel: gitaly_client::CancellationToken::new(),
        }
    }

    /// Writes `line` + LF to stderr, ignoring write errors (the client may be gone).
    pub fn err_line(&mut self, line: &str) {
        let _ = self.stderr.write_all(format!("{line}\n").as_bytes());
        let _ = self.stderr.flush();
    }

    /// Writes `line` + LF to stdout.
    pub fn out_line(&mut self, line: &str) -> io::Result<()> {
        self.stdout.write_all(format!("{line}\n").as_bytes())?;
        self.stdout.flush()
    }

    /// Takes stdin out of `self` (leaving an empty reader), for a reader thread.
    pub fn take_stdin(&mut self) -> Box<dyn Read + Send> {
        std::mem::replace(&mut self.stdin, Box::new(io::empty()))
    }
}

/// A cloneable in-memory writer for tests: every clone appends to the same buffer.
#[derive(Clone, Default)]
pub struct SharedBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The bytes written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().map(|b| b.clone()).unwrap_or_default()
    }
    /// The bytes written so far, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.contents()).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.lock() {
            Ok(mut b) => {
                b.extend_from_slice(buf);
                Ok(buf.len())
            }
            Err(_) => Err(io::Error::other("poisoned")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Io {
    /// An `Io` over in-memory buffers: `stdin` bytes in, and handles to what was written.
    pub fn memory(stdin: &[u8]) -> (Io, SharedBuf, SharedBuf) {
        let out = SharedBuf::default();
        let err = SharedBuf::default();
        let io = Io {
            stdin: Box::new(io::Cursor::new(stdin.to_vec())),
            stdout: Box::new(out.clone()),
            stderr: Box::new(err.clone()),
            cancel: gitaly_client::CancellationToken::new(),
        };
        (io, out, err)
    }
}
