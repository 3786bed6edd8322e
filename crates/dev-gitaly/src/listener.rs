//! Gitaly's listenmux (gitaly.md §4.1 items 1–3): every accepted connection's first 11 bytes
//! decide whether it is a backchannel connection (`backchannel` → yamux server session whose
//! first client-opened stream carries HTTP/2 gRPC) or plain HTTP/2 (the bytes are replayed).
//!
//! Connections are handed to tonic as [`ServerIo`], whose [`ConnInfo`] carries the yamux
//! [`Control`] so the upload-pack handler can open the sidechannel stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio_yamux::{Config, Control, Session, StreamHandle};
use tonic::transport::server::Connected;

/// The magic a multiplexing client writes first.
pub const BACKCHANNEL_MAGIC: &[u8; 11] = b"backchannel";

/// Any byte stream the listener accepts (TCP or unix).
pub trait RawIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> RawIo for T {}

/// Per-connection information visible to handlers through request extensions.
#[derive(Clone)]
pub struct ConnInfo {
    /// The yamux session control when the client used the backchannel handshake.
    pub control: Option<Control>,
}

/// A connection served by tonic.
pub enum ServerIo {
    /// Plain HTTP/2: the peeked bytes are replayed before the socket's own.
    Plain {
        /// Bytes already read while peeking.
        prefix: Vec<u8>,
        /// How many of them were replayed.
        pos: usize,
        /// The socket.
        io: Box<dyn RawIo>,
    },
    /// The first client-opened yamux stream of a backchannel session.
    Yamux {
        /// The stream.
        stream: Box<StreamHandle>,
        /// Control of its session.
        control: Control,
    },
}

impl Connected for ServerIo {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            ServerIo::Plain { .. } => ConnInfo { control: None },
            ServerIo::Yamux { control, .. } => ConnInfo {
                control: Some(control.clone()),
            },
        }
    }
}

impl AsyncRead for ServerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain { prefix, pos, io } => {
                if *pos < prefix.len() {
                    let n = (prefix.len() - *pos).min(buf.remaining());
                    buf.put_slice(&prefix[*pos..*pos + n]);
                    *pos += n;
                    return Poll::Ready(Ok(()));
                }
                Pin::new(io).poll_read(cx, buf)
            }
            ServerIo::Yamux { stream, .. } => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerIo::Plain { io, .. } => Pin::new(io).poll_write(cx, buf),
            ServerIo::Yamux { stream, .. } => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain { io, .. } => Pin::new(io).poll_flush(cx),
            ServerIo::Yamux { stream, .. } => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerIo::Plain { io, .. } => Pin::new(io).poll_shutdown(cx),
            ServerIo::Yamux { stream, .. } => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// yamux settings as Gitaly's server: large stream window, no keepalive pings.
fn yamux_config() -> Config {
    Config {
        enable_keepalive: false,
        max_stream_window_size: 16 * 1024 * 1024,
        connection_write_timeout: Duration::from_secs(30),
        ..Config::default()
    }
}

/// Sorts one accepted socket: peeks 11 bytes and forwards the resulting [`ServerIo`] to tonic.
pub async fn handle_accepted(mut io: Box<dyn RawIo>, out: mpsc::Sender<ServerIo>) {
    let mut prefix = vec![0u8; BACKCHANNEL_MAGIC.len()];
    let mut got = 0;
    // A client that connects and says nothing for long is not worth a task.
    let peek = tokio::time::timeout(Duration::from_secs(30), async {
        while got < prefix.len() {
            match io.read(&mut prefix[got..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    })
    .await;
    if peek.is_err() || got == 0 {
        return;
    }
    prefix.truncate(got);
    if prefix.as_slice() != BACKCHANNEL_MAGIC {
        let _ = out.send(ServerIo::Plain { prefix, pos: 0, io }).await;
        return;
    }
    let mut session = Session::new_server(io, yamux_config());
    let control = session.control();
    let mut first = true;
    // The session only makes progress while polled; it also yields client-opened streams.
    while let Some(item) = session.next().await {
        match item {
            Ok(stream) if first => {
                first = false;
                let io = ServerIo::Yamux {
                    stream: Box::new(stream),
                    control: control.clone(),
                };
                if out.send(io).await.is_err() {
                    break;
                }
            }
            // Further client-opened streams are not part of the protocol; dropping resets them.
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "yamux session ended");
                break;
            }
        }
    }
}
