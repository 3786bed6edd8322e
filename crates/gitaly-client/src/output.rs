//! Relaying git's stdout/stderr off the runtime thread.
//!
//! Writes to the caller's stdout/stderr block (a slow `git clone` client fills sshd's pipe). Done
//! on the runtime thread they would stall the whole connection, including HTTP/2 keepalive
//! pings, long enough to look like a dead peer. So the call runs its runtime on a scoped thread
//! and hands output to the calling thread through a small bounded channel (bounded memory,
//! arrival order kept across both streams).
//!
//! A failed write means the client is gone (sshd closed our pipes: EPIPE). The writer then
//! cancels the call's token before it waits for the call thread, so the call abandons the RPC
//! instead of waiting for a status Gitaly can never send (its git is blocked on a full
//! sidechannel window nobody reads). See docs/architecture.md, "Cancellation".

use crate::Error;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Output chunks queued between the runtime and the writing thread: one queued while another
/// is written is enough to keep both busy; a deeper queue only holds more memory while a slow
/// client reads (measured: same CPU per byte with 1 as with 4, ~0.4 MB less peak RSS).
const DEPTH: usize = 1;

enum Chunk {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// The runtime side: queues bytes for the caller's stdout/stderr.
#[derive(Clone)]
pub(crate) struct Output {
    tx: mpsc::Sender<Chunk>,
    /// Set with the first byte queued: from then on the call may not be retried.
    started: Arc<AtomicBool>,
}

impl Output {
    /// Queues git's stdout bytes (never empty ones).
    pub(crate) fn stdout(
        &self,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.send(Chunk::Stdout(data))
    }

    /// Queues git's stderr bytes (never empty ones).
    pub(crate) fn stderr(
        &self,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        self.send(Chunk::Stderr(data))
    }

    /// Whether any byte has been queued for the user (it may already have been written).
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Acquire)
    }

    /// The returned future does not borrow `self`: futures that hold it across an await stay
    /// `Send` for any lifetime, which a call spawned on gitlab-sshd's runtime needs.
    fn send(&self, chunk: Chunk) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let empty = match &chunk {
            Chunk::Stdout(d) | Chunk::Stderr(d) => d.is_empty(),
        };
        let tx = (!empty).then(|| {
            self.started.store(true, Ordering::Release);
            self.tx.clone()
        });
        async move {
            let Some(tx) = tx else {
                return Ok(());
            };
            // The writer only goes away after a write error, which the caller reports instead.
            tx.send(chunk)
                .await
                .map_err(|_| Error::Local("output closed".to_owned()))
        }
    }
}

/// Runs `call` (given the [`Output`]) on a scoped thread while this thread writes what it
/// produces. A write error cancels `cancel` (the call must watch it) and wins over the call's
/// own result (as in Gitaly's stream handler, which returns as soon as a write fails).
pub(crate) fn relay<T, F>(
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
    cancel: &CancellationToken,
    call: F,
) -> Result<T, Error>
where
    T: Send,
    F: FnOnce(Output) -> Result<T, Error> + Send,
{
    let (tx, mut rx) = mpsc::channel(DEPTH);
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("gitaly-call".into())
            .spawn_scoped(scope, move || {
                call(Output {
                    tx,
                    started: Arc::default(),
                })
            })
            .map_err(|e| Error::Local(format!("failed to start the Gitaly call thread: {e}")))?;
        let write_error = pump(&mut rx, stdout, stderr, cancel);
        drop(rx);
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(Error::Local("the Gitaly call thread panicked".to_owned())));
        match write_error {
            Some(e) => Err(Error::Local(e.to_string())),
            None => result,
        }
    })
}

/// [`relay`] for a long-running server (gitlab-sshd): the call runs as a task on `runtime`,
/// the server's own, instead of on a thread and runtime of its own, which cost every session
/// a thread stack and a runtime's driver for as long as the call ran (docs/gitlab-sshd.md,
/// "Memory"). The calling thread must not be a runtime worker (gitlab-sshd runs commands on
/// its blocking threads). A write error cancels `cancel`, as in [`relay`]; the task is
/// aborted if it is still running when this returns.
pub(crate) fn relay_spawned<T, F, Fut>(
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
    cancel: &CancellationToken,
    runtime: &tokio::runtime::Handle,
    call: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(Output) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(DEPTH);
    let task = tokio_util::task::AbortOnDropHandle::new(runtime.spawn(call(Output {
        tx,
        started: Arc::default(),
    })));
    let write_error = pump(&mut rx, stdout, stderr, cancel);
    drop(rx);
    let result = runtime
        .block_on(task)
        .unwrap_or_else(|e| Err(Error::Local(format!("the Gitaly call task failed: {e}"))));
    match write_error {
        Some(e) => Err(Error::Local(e.to_string())),
        None => result,
    }
}

/// Writes the queued chunks in order until the call drops its [`Output`]; on a failed write,
/// cancels `cancel` and returns the error.
fn pump(
    rx: &mut mpsc::Receiver<Chunk>,
    stdout: &mut (dyn Write + Send),
    stderr: &mut (dyn Write + Send),
    cancel: &CancellationToken,
) -> Option<std::io::Error> {
    let (mut stdout_dirty, mut stderr_dirty) = (false, false);
    while let Some(chunk) = rx.blocking_recv() {
        let written = match chunk {
            Chunk::Stdout(data) => {
                stdout_dirty = true;
                stdout.write_all(&data)
            }
            Chunk::Stderr(data) => {
                stderr_dirty = true;
                stderr.write_all(&data)
            }
        };
        // Flush once the queue is drained, so interactive negotiation is never held back.
        let flushed = written.and_then(|()| {
            if !rx.is_empty() {
                return Ok(());
            }
            if std::mem::take(&mut stderr_dirty) {
                stderr.flush()?;
            }
            if std::mem::take(&mut stdout_dirty) {
                stdout.flush()?;
            }
            Ok(())
        });
        if let Err(e) = flushed {
            cancel.cancel();
            return Some(e);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that fails every write.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed pipe",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn relay_keeps_order_and_skips_empty_chunks() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = relay(&mut out, &mut err, &CancellationToken::new(), |o| {
            rt().block_on(async {
                o.stderr(b"e1".to_vec()).await?;
                o.stdout(b"o1".to_vec()).await?;
                o.stdout(Vec::new()).await?;
                o.stdout(b"o2".to_vec()).await?;
                Ok(7)
            })
        });
        assert_eq!(result, Ok(7));
        assert_eq!((out.as_slice(), err.as_slice()), (&b"o1o2"[..], &b"e1"[..]));
    }

    #[test]
    fn a_write_error_cancels_a_call_that_would_wait_forever() {
        let mut err = Vec::new();
        let cancel = CancellationToken::new();
        let watched = cancel.clone();
        let started = std::time::Instant::now();
        let result: Result<(), Error> = relay(&mut Broken, &mut err, &cancel, move |o| {
            rt().block_on(async {
                // The first chunk fails to be written; the call then waits for something
                // that never comes (Gitaly's status), unless cancelled.
                let _ = o.stdout(b"data".to_vec()).await;
                tokio::select! {
                    () = watched.cancelled() => Err(Error::cancelled()),
                    () = std::future::pending::<()>() => Ok(()),
                }
            })
        });
        assert_eq!(result, Err(Error::Local("closed pipe".to_owned())));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn a_write_error_wins_over_the_call_result() {
        let mut err = Vec::new();
        let cancel = CancellationToken::new();
        let result: Result<(), Error> = relay(&mut Broken, &mut err, &cancel, |o| {
            rt().block_on(async {
                for _ in 0..100 {
                    o.stdout(b"data".to_vec()).await?;
                }
                Ok(())
            })
        });
        assert_eq!(result, Err(Error::Local("closed pipe".to_owned())));
        assert!(cancel.is_cancelled(), "a write error cancels the call");
    }
}
