//! Dialling Gitaly the way GitLab Shell does (Gitaly `client.DialSidechannel`): connect the
//! socket, write `backchannel`, run a yamux client session on it, carry HTTP/2 gRPC on the first
//! outbound yamux stream, and accept the streams Gitaly opens back (sidechannels; anything else
//! is held open and drained until it closes).

use crate::Error;
use crate::address::Address;
use crate::sidechannel::{self, InboundKind};
pub use crate::socket::IoDyn;
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tls_trust::Trust;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_yamux::{Config, Session, StreamHandle};
use tonic::transport::{Channel, Endpoint};

/// A yamux stream Gitaly opened for a sidechannel, after the `ok` answer.
pub type SidechannelStream = StreamHandle;

/// HTTP/2 keepalive like GitLab Shell's dial options (20 s; Gitaly's minimum is 10 s).
const KEEPALIVE: Duration = Duration::from_secs(20);
/// yamux receive window ceiling: how far Gitaly may send ahead of what we have consumed. It
/// bounds the memory a slow client can make us buffer per stream (Gitaly's own server side
/// allows 16 MiB; with that, a big clone buffered ~16 MiB here for no throughput gain). 256 KiB
/// is the yamux initial window and the smallest the library accepts.
pub const MAX_STREAM_WINDOW: u32 = 256 * 1024;
/// Socket read buffer under the yamux session: the session's own framing reads ~8 KiB at a
/// time; this lets one `read(2)` fetch up to this much.
const SOCKET_READ_BUF: usize = 32 * 1024;
/// How long Gitaly gives the client to answer a sidechannel handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial may take, TLS handshake included, and by when Gitaly must have sent its
/// first bytes: grpc-go's minimum connect timeout, after which GitLab Shell reports
/// `Unavailable` (docs/gitaly-deadlines.md).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Process-wide sidechannel ids: int64, counting from 0 (Gitaly's sidechannel registry).
static NEXT_SIDECHANNEL_ID: AtomicI64 = AtomicI64::new(0);

/// Waiters for sidechannels, keyed by id.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<i64, oneshot::Sender<SidechannelStream>>>>);

impl Registry {
    /// Registers a waiter under a fresh id.
    pub fn register(&self) -> (i64, oneshot::Receiver<SidechannelStream>) {
        let id = NEXT_SIDECHANNEL_ID.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    /// Removes the waiter for `id` (after the call, whether or not it ran).
    pub fn remove(&self, id: i64) -> Option<oneshot::Sender<SidechannelStream>> {
        self.lock().remove(&id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, oneshot::Sender<SidechannelStream>>> {
        // A poisoned map only means another task panicked mid-insert; the map itself is fine.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A live connection: the gRPC channel and the sidechannel registry of its yamux session.
/// Clones share the connection (the [`crate::pool::Pool`] hands them to its calls).
#[derive(Clone)]
pub struct Connection {
    /// gRPC channel over the first yamux stream.
    pub channel: Channel,
    /// Where server-opened sidechannels are delivered.
    pub registry: Registry,
    /// Set once the server has sent anything at all.
    pub heard: Heard,
    /// Cancelled when the yamux session has ended (the connection is unusable).
    pub closed: tokio_util::sync::CancellationToken,
}

/// Whether the peer has sent any byte yet (a Gitaly that accepts and stays silent never does).
#[derive(Clone, Default)]
pub struct Heard(Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>);

impl Heard {
    fn mark(&self) {
        if !self.0.0.swap(true, Ordering::AcqRel) {
            self.0.1.notify_waiters();
        }
    }

    /// Whether a byte has arrived.
    #[must_use]
    pub fn yes(&self) -> bool {
        self.0.0.load(Ordering::Acquire)
    }

    /// Resolves once a byte has arrived.
    pub async fn wait(&self) {
        loop {
            let notified = self.0.1.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.yes() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves with the `Unavailable` error when nothing arrived by `deadline`; never
    /// otherwise.
    pub async fn unless_heard_by(&self, deadline: tokio::time::Instant) -> Error {
        if tokio::time::timeout_at(deadline, self.wait()).await.is_ok() {
            std::future::pending::<()>().await;
        }
        tracing::debug!("Gitaly sent nothing before the dial deadline");
        Error::unavailable(false)
    }
}

/// A socket that marks [`Heard`] on the first byte read.
struct Listening<S> {
    inner: S,
    heard: Heard,
}

impl<S: AsyncRead + Unpin> AsyncRead for Listening<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.mark();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Listening<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Dials `address` with the backchannel handshake. Must run inside a tokio runtime (it spawns
/// the yamux session driver).
///
/// # Errors
/// Every connect failure (refused, TLS handshake, HTTP/2 preface) is the reworded `Unavailable`
/// error, as with Go's non-blocking dial. Bounded by [`DIAL_TIMEOUT`]; the caller also bounds
/// the wait for the server's first bytes with [`Heard::unless_heard_by`].
pub async fn connect(address: &Address, trust: &Trust) -> Result<Connection, Error> {
    tokio::time::timeout(DIAL_TIMEOUT, dial(address, trust))
        .await
        .unwrap_or_else(|_| {
            tracing::debug!("dialling Gitaly timed out");
            Err(Error::unavailable(false))
        })
}

async fn dial(address: &Address, trust: &Trust) -> Result<Connection, Error> {
    let socket = match address {
        Address::Unix(path) => tokio::net::UnixStream::connect(path)
            .await
            .map(|s| Box::new(s) as Box<dyn IoDyn>),
        Address::Tcp(host_port) | Address::Dns(host_port) => tcp(host_port).await,
        Address::Tls(host_port) => crate::tls::connect(host_port, trust).await?,
    };
    let socket = socket.map_err(|e| {
        tracing::debug!(error = %e, "dialling Gitaly failed");
        Error::unavailable(false)
    })?;
    start_session(socket).await
}

/// TCP connect (`tokio` resolves names and understands `[::1]:port`).
pub(crate) async fn tcp(host_port: &str) -> io::Result<Box<dyn IoDyn>> {
    let stream = tokio::net::TcpStream::connect(host_port).await?;
    stream.set_nodelay(true)?;
    Ok(Box::new(stream))
}

async fn start_session(mut socket: Box<dyn IoDyn>) -> Result<Connection, Error> {
    let io_unavailable = |e: io::Error| {
        tracing::debug!(error = %e, "backchannel handshake with Gitaly failed");
        Error::unavailable(false)
    };
    socket
        .write_all(sidechannel::BACKCHANNEL_MAGIC)
        .await
        .map_err(io_unavailable)?;
    socket.flush().await.map_err(io_unavailable)?;

    let heard = Heard::default();
    let socket = Listening {
        inner: socket,
        heard: heard.clone(),
    };
    let socket = tokio::io::BufReader::with_capacity(SOCKET_READ_BUF, socket);
    let mut session = Session::new_client(socket, session_config());
    let mut control = session.control();
    let registry = Registry::default();
    let inbound_registry = registry.clone();
    let closed = tokio_util::sync::CancellationToken::new();
    let session_closed = closed.clone();
    tokio::spawn(async move {
        let _closed = session_closed.drop_guard();
        while let Some(next) = session.next().await {
            match next {
                Ok(stream) => {
                    tokio::spawn(serve_inbound(stream, inbound_registry.clone()));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "yamux session with Gitaly ended");
                    break;
                }
            }
        }
    });

    let grpc_stream = control.open_stream().await.map_err(|e| {
        tracing::debug!(error = %e, "opening the gRPC yamux stream failed");
        Error::unavailable(false)
    })?;
    let slot = Arc::new(Mutex::new(Some(grpc_stream)));
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let taken = slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        async move {
            // Gitaly's listenmux accepts exactly one client stream per session, so a reconnect
            // cannot reuse this session: the next call dials afresh.
            taken.map(TokioIo::new).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotConnected, "Gitaly connection closed")
            })
        }
    });
    let channel = Endpoint::from_static("http://gitaly")
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            tracing::debug!(error = %e, "HTTP/2 handshake with Gitaly failed");
            Error::unavailable(false)
        })?;
    Ok(Connection {
        channel,
        registry,
        heard,
        closed,
    })
}

/// The yamux settings of the client session: no yamux pings (HTTP/2 keepalive does that job, as
/// in GitLab Shell) and the bounded [`MAX_STREAM_WINDOW`].
#[must_use]
pub fn session_config() -> Config {
    Config {
        enable_keepalive: false,
        max_stream_window_size: MAX_STREAM_WINDOW,
        ..Config::default()
    }
}

/// Handles one stream Gitaly opened: a sidechannel is answered `ok` and handed to its waiter;
/// anything else is drained until it closes (the reverse gRPC dial only serves Praefect votes).
async fn serve_inbound(mut stream: StreamHandle, registry: Registry) {
    let mut magic = [0u8; 11];
    let header = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut magic)).await;
    if !matches!(header, Ok(Ok(_))) {
        return;
    }
    match sidechannel::classify_inbound(&magic) {
        InboundKind::Sidechannel => {
            let mut id = [0u8; 8];
            let read = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut id)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let id = sidechannel::decode_sidechannel_id(id);
            let Some(waiter) = registry.remove(id) else {
                tracing::debug!(id, "sidechannel for an unknown id; closing it");
                let _ = stream.shutdown().await;
                return;
            };
            if stream.write_all(sidechannel::HANDSHAKE_OK).await.is_err() {
                return;
            }
            // If the call already gave up, dropping the stream resets it.
            let _ = waiter.send(stream);
        }
        InboundKind::Other => {
            let _ = tokio::io::copy(&mut stream, &mut tokio::io::sink()).await;
            let _ = stream.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_deadline_is_grpc_gos_20_seconds() {
        assert_eq!(DIAL_TIMEOUT, Duration::from_secs(20));
    }

    #[test]
    fn receive_window_is_bounded() {
        let config = session_config();
        // The window is what Gitaly may push ahead of us: it bounds our memory per clone.
        assert_eq!(config.max_stream_window_size, 256 * 1024);
        assert!(config.max_stream_window_size >= tokio_yamux::config::INITIAL_STREAM_WINDOW);
        assert!(!config.enable_keepalive);
    }
}
