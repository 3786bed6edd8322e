//! Local stdin → channel pump. Reading stdin blocks, so it runs on its own std thread and feeds a
//! bounded tokio channel (bounded memory: a few 32 KiB chunks in flight). The thread is detached:
//! a call may finish while stdin is still open, and the process exits soon after.

use std::io::{ErrorKind, Read};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Read size per chunk; Go's `io.Copy` buffer, and well under Gitaly's 4 MiB message limit.
pub const STDIN_CHUNK: usize = 32 * 1024;
/// Chunks buffered between the reader thread and the RPC.
pub const CHANNEL_DEPTH: usize = 4;

/// The stdin read error, if one happened (set before the sender is dropped).
#[derive(Clone, Default)]
pub struct StdinError(Arc<Mutex<Option<String>>>);

impl StdinError {
    /// The recorded error message.
    pub fn get(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, message: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(message);
    }
}

/// Starts the reader thread: each non-empty read becomes `wrap(chunk)` on `tx`; EOF or a read
/// error drops `tx` (which ends the request stream, i.e. CloseSend).
pub fn spawn<T, F>(mut stdin: Box<dyn Read + Send>, tx: mpsc::Sender<T>, wrap: F) -> StdinError
where
    T: Send + 'static,
    F: Fn(Vec<u8>) -> T + Send + 'static,
{
    let error = StdinError::default();
    let thread_error = error.clone();
    let spawned = std::thread::Builder::new()
        .name("gitaly-stdin".into())
        .spawn(move || {
            let mut buf = vec![0u8; STDIN_CHUNK];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.blocking_send(wrap(buf[..n].to_vec())).is_err() {
                            break; // the call is over
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        thread_error.set(e.to_string());
                        break;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        error.set(e.to_string());
    }
    error
}
