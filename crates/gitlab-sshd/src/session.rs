//! One SSH `session` channel (docs/gitlab-sshd.md, "Sessions"): `env` (only `GIT_PROTOCOL`),
//! then one `exec` or `shell`, run by the very same command code as the classic
//! `gitlab-shell key-N` ([`gitlab_shell::command::execute`]) on a blocking thread, with the
//! channel as its stdin/stdout/stderr; then EOF, `exit-status` and close.
//!
//! Flow control both ways: the command's stdin is a bounded queue fed from the channel (when it
//! is full, russh stops reading the connection); its stdout/stderr writes wait for the client's
//! SSH window. When the channel or the connection goes away, writes fail with `BrokenPipe`, so
//! the command ends like a classic one whose sshd went away.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use gitlab_shell::config::Config;
use gitlab_shell::io::Io;
use gitlab_shell::sshenv::SshEnv;
use russh::ChannelMsg;
use russh::server::Msg;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::metrics::{ConnErrors, METRICS, SessionObserver};

/// Chunks of client input queued for the command before russh stops reading the connection.
const STDIN_QUEUE: usize = 4;

/// What a session needs from its connection.
#[derive(Clone)]
pub struct SessionCtx {
    /// The loaded configuration.
    pub config: Arc<Config>,
    /// `key-<id>` of the verified key, or `username-<name>` of a verified certificate.
    pub identity: String,
    /// The group of a group-CA certificate (empty otherwise): the session may only run git
    /// commands, and `/allowed` and audit events carry it as `namespace_path`.
    pub namespace: String,
    /// The connection's server-side error flag (`gitlab_sli:shell_sshd_connections:errors_total`).
    pub conn_errors: Arc<ConnErrors>,
    /// The server's Gitaly connection cache.
    pub gitaly_pool: gitaly_client::Pool,
    /// Client address (from the PROXY header when there is one).
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The connection's correlation id.
    pub correlation_id: String,
    /// Cancelled when the connection ends (or is cut at the end of the grace period).
    pub conn_token: CancellationToken,
    /// Open session channels of the connection (for `concurrent_sessions_limit`).
    pub open_sessions: Arc<AtomicUsize>,
    /// The connection's span.
    pub span: tracing::Span,
    /// The outcome of the connection's last session, for its `access: finish` line.
    pub access: Arc<crate::access::Last>,
    /// The connection's output in the SSH layer, which writes wait on.
    pub outflow: Arc<crate::outflow::Outflow>,
}

/// The command's stdin: client data from the channel, EOF when the client sends EOF or closes.
struct ChannelStdin {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// The command's stdout or stderr: writes wait for room in the connection's output
/// ([`crate::outflow`]) and for the SSH window, and fail once the channel is gone.
struct ChannelOut {
    rt: tokio::runtime::Handle,
    inner: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    gone: CancellationToken,
    outflow: Arc<crate::outflow::Outflow>,
}

impl Write for ChannelOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let gone = self.gone.clone();
        let inner = &mut self.inner;
        let outflow = &self.outflow;
        self.rt.block_on(async move {
            tokio::select! {
                biased;
                () = gone.cancelled() => Err(io::Error::new(io::ErrorKind::BrokenPipe, "channel closed")),
                r = async {
                    outflow.room().await;
                    let n = inner.write(buf).await?;
                    outflow.handed(n);
                    Ok(n)
                } => r,
            }
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The exit status and stderr text for a command line the shared parser refuses, with
/// gitlab-sshd's wording and status 128 (docs/gitlab-sshd.md, "Exit statuses"); `None` when the
/// command is runnable.
pub fn refusal(env: &SshEnv, config: &Config) -> Option<String> {
    use gitlab_shell::error::Error;
    // Both texts end with a newline of their own inside the frame, as the Go gitlab-sshd
    // prints them (checked side by side).
    let words = match gitlab_shell::args::shell::split_command(env) {
        Ok(words) => words,
        Err(e @ gitlab_shell::args::shell::Error::InvalidSshCommand(_)) => {
            return Some(format!("ERROR: Failed to parse command: {e}\n"));
        }
        Err(_) => return None,
    };
    let built = gitlab_shell::command::build(&words, config).and_then(|cmd| {
        // A group certificate's session runs git commands only (command::build_for).
        if env.namespace_path.is_empty() || cmd.is_git() {
            Ok(cmd)
        } else {
            Err(Error::UnknownCommand)
        }
    });
    match built {
        Err(Error::UnknownCommand) => Some(format!(
            "ERROR: Unknown command: {}\n",
            env.original_command.to_string_lossy()
        )),
        _ => None,
    }
}

/// The command's stdout, counting what it writes (the `access: finish` line's `written_bytes`).
struct Counted<W> {
    inner: W,
    written: Arc<AtomicU64>,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Runs one command as `gitlab-shell key-N` would, on the calling (blocking) thread. Returns
/// its exit status and the project `/allowed` granted it, if any.
pub fn run_command(
    ctx: &SessionCtx,
    command: OsString,
    git_protocol: &str,
    io: &mut Io,
) -> (u8, Option<crate::access::Meta>) {
    let connection = format!(
        "{} {} {} {}",
        ctx.remote.ip(),
        ctx.remote.port(),
        ctx.local.ip(),
        ctx.local.port()
    );
    let mut env = SshEnv::from_values(&connection, command, git_protocol);
    env.namespace_path = ctx.namespace.clone();
    let args = [OsString::from(&ctx.identity)];
    if let Some(text) = refusal(&env, &ctx.config) {
        let _ = gitlab_shell::console::display_warning(&mut io.stderr, &text);
        return (128, None);
    }
    let observer = Arc::new(SessionObserver::new(Arc::clone(&ctx.conn_errors)));
    let session = gitlab_shell::command::Session {
        config: &ctx.config,
        identity: gitlab_shell::args::shell::parse_identity(&args),
        env,
        correlation_id: &ctx.correlation_id,
        observer: observer.clone(),
        gitaly_pool: Some(ctx.gitaly_pool.clone()),
    };
    let status =
        gitlab_shell::command::execute_with(&session, io, gitlab_shell::error::report_status_sshd);
    (status, observer.granted())
}

/// Serves one accepted session channel until it closes.
pub async fn serve(channel: russh::Channel<Msg>, ctx: SessionCtx) {
    let opened = Instant::now();
    METRICS.sessions_total.fetch_add(1, Ordering::Relaxed);
    let (mut read, write) = channel.split();
    let gone = ctx.conn_token.child_token();
    let mut git_protocol = String::new();
    let mut stdin_tx: Option<mpsc::Sender<Bytes>> = None;
    let mut job: Option<tokio::task::JoinHandle<Finished>> = None;
    let mut status: Option<u8> = None;
    let mut finished: Option<Finished> = None;
    loop {
        tokio::select! {
            msg = read.wait() => match msg {
                Some(ChannelMsg::SetEnv { variable_name, variable_value, .. })
                    if job.is_none() && variable_name == "GIT_PROTOCOL" =>
                {
                    git_protocol = variable_value;
                }
                Some(ChannelMsg::Exec { command, .. }) if job.is_none() => {
                    let (tx, h) = start(&ctx, &write, &gone, bytes_to_os(command), &git_protocol, opened);
                    stdin_tx = Some(tx);
                    job = Some(h);
                }
                Some(ChannelMsg::RequestShell { .. }) if job.is_none() => {
                    let (tx, h) = start(&ctx, &write, &gone, OsString::new(), &git_protocol, opened);
                    stdin_tx = Some(tx);
                    job = Some(h);
                }
                Some(ChannelMsg::Data { data }) => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                Some(ChannelMsg::Eof) => stdin_tx = None,
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            },
            r = async {
                match job.as_mut() {
                    Some(j) => j.await,
                    None => std::future::pending().await,
                }
            }, if job.is_some() => {
                job = None;
                stdin_tx = None;
                match r {
                    Ok(f) => {
                        status = Some(f.status);
                        finished = Some(f);
                    }
                    Err(e) => {
                        // A panic in the command: a session error, as upstream counts it.
                        tracing::warn!(parent: &ctx.span, error = %e, "panic handling session");
                        METRICS.session_errors_total.fetch_add(1, Ordering::Relaxed);
                        ctx.conn_errors.mark();
                        status = Some(1);
                    }
                }
                break;
            }
        }
    }
    // Recorded before the exit status goes out, so that it is there when the client then
    // disconnects. A session cut before its command finished leaves nothing.
    match finished {
        Some(f) => ctx
            .access
            .session_ended(Some(f.status), f.written, f.granted),
        None => ctx.access.session_ended(None, 0, None),
    }
    if let Some(code) = status {
        if code == 0 {
            tracing::info!(parent: &ctx.span, "session: handleShell: command executed successfully");
        }
        tracing::info!(parent: &ctx.span, exit_status = code, "session: exit: exiting");
        let _ = write.eof().await;
        let _ = write.exit_status(u32::from(code)).await;
        let _ = write.close().await;
    } else {
        // The client closed the channel (or the connection went away) first: make the
        // command's writes fail so it ends, and wait for it.
        gone.cancel();
        drop(stdin_tx);
        if let Some(j) = job {
            let _ = j.await;
        }
    }
    gone.cancel();
    ctx.open_sessions.fetch_sub(1, Ordering::AcqRel);
    METRICS.session_duration.observe(opened.elapsed());
}

/// What a command that ran to its end leaves.
struct Finished {
    status: u8,
    /// Bytes it wrote to the client's stdout.
    written: u64,
    /// The project `/allowed` granted it.
    granted: Option<crate::access::Meta>,
}

fn bytes_to_os(b: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(b)
}

fn start(
    ctx: &SessionCtx,
    write: &russh::ChannelWriteHalf<Msg>,
    gone: &CancellationToken,
    command: OsString,
    git_protocol: &str,
    opened: Instant,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<Finished>) {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE);
    let rt = tokio::runtime::Handle::current();
    let written = Arc::new(AtomicU64::new(0));
    let mut io = Io {
        stdin: Box::new(ChannelStdin {
            rx,
            current: Bytes::new(),
        }),
        stdout: Box::new(Counted {
            inner: ChannelOut {
                rt: rt.clone(),
                inner: Box::pin(write.make_writer()),
                gone: gone.clone(),
                outflow: Arc::clone(&ctx.outflow),
            },
            written: Arc::clone(&written),
        }),
        stderr: Box::new(ChannelOut {
            rt,
            inner: Box::pin(write.make_writer_ext(Some(1))),
            gone: gone.clone(),
            outflow: Arc::clone(&ctx.outflow),
        }),
        // The channel closing cancels a running Gitaly call (docs/architecture.md,
        // "Cancellation"), as a classic session ends when sshd closes its pipes.
        cancel: gone.clone(),
    };
    METRICS
        .session_established_duration
        .observe(opened.elapsed());
    // The Go server's line before it runs a command (its `command` field, a Go type name, has
    // no counterpart here).
    let env = serde_json::json!({
        "GitProtocolVersion": git_protocol,
        "IsSSHConnection": true,
        "OriginalCommand": command.to_string_lossy(),
        "RemoteAddr": ctx.remote.to_string(),
        "NamespacePath": "",
    });
    tracing::info!(
        parent: &ctx.span,
        env = %env,
        established_session_duration_s = opened.elapsed().as_secs_f64(),
        "session: handleShell: executing command"
    );
    let ctx = ctx.clone();
    let git_protocol = git_protocol.to_owned();
    let span = ctx.span.clone();
    let h = tokio::task::spawn_blocking(move || {
        let (status, granted) =
            span.in_scope(|| run_command(&ctx, command, &git_protocol, &mut io));
        Finished {
            status,
            written: written.load(Ordering::Relaxed),
            granted,
        }
    });
    (tx, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_certificate_session_may_run_git_commands_only() {
        let dir = tempfile::tempdir().expect("dir");
        let config = Config::from_yaml(dir.path(), b"secret: x\n").expect("config");
        let env = |cmd: &str, namespace: &str| {
            let mut e = SshEnv::from_values("192.0.2.1 1 127.0.0.1 22", cmd.into(), "");
            e.namespace_path = namespace.into();
            e
        };
        assert_eq!(
            refusal(&env("2fa_recovery_codes", "group"), &config).as_deref(),
            Some("ERROR: Unknown command: 2fa_recovery_codes\n")
        );
        assert_eq!(
            refusal(&env("", "group"), &config).as_deref(),
            Some("ERROR: Unknown command: \n")
        );
        for git in [
            "git-upload-pack group/repo",
            "git-receive-pack group/repo",
            "git-upload-archive group/repo",
            "git-lfs-authenticate group/repo download",
        ] {
            assert_eq!(refusal(&env(git, "group"), &config), None, "{git}");
        }
        assert_eq!(refusal(&env("2fa_recovery_codes", ""), &config), None);
    }

    #[test]
    fn stdout_bytes_are_counted() {
        let written = Arc::new(AtomicU64::new(0));
        let mut out = Counted {
            inner: Vec::new(),
            written: Arc::clone(&written),
        };
        out.write_all(b"Welcome to GitLab, @alice!\n")
            .expect("write");
        out.write_all(b"").expect("write");
        assert_eq!(written.load(Ordering::Relaxed), 27);
    }
}
