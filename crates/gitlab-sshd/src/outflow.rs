//! A bound on a connection's output that has been handed to the SSH layer but not yet written
//! to its socket (docs/gitlab-sshd.md, "Memory").
//!
//! russh encrypts every queued channel message into one per-connection buffer before it
//! writes that buffer to the socket, taking up to 64 messages per round, and it keeps the
//! buffer's capacity for the rest of the connection. A command that produces faster than the
//! socket drains (every clone: Gitaly is local and fast) keeps the queue full, so each round
//! grew the buffer to up to 64 × 32 KiB, and the connection then held it until it closed: 16 of
//! the 47 MB of 64 concurrent clones. Nothing in russh's configuration sizes that round.
//!
//! So the sessions of a connection account for what they hand over ([`Outflow::handed`]), the
//! connection's socket counts what it writes ([`Metered`]), and a session's write waits while
//! the difference exceeds [`LIMIT`]. The socket's own buffer (the kernel's, outside our
//! memory) keeps the link busy; only our side of it is bounded.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Output bytes a connection may have in the SSH layer (queued or encrypted, not yet on the
/// socket) before its sessions' writes wait: two of OpenSSH's 32 KiB packets, so one is
/// encrypted while the next is queued. Measured with `make bench`'s 64 concurrent clones
/// (peak RSS of the server): 46.8 MB unbounded, 40.2 MB at 128 KiB, 33.7–38.3 MB at 64 KiB,
/// 37.2 MB at 32 KiB; the 100 MB clone took the same time at 64 KiB as unbounded.
pub const LIMIT: u64 = 64 * 1024;

/// The least an SSH data packet adds to its data on the wire: packet length (4), padding
/// length (1), message type (1), channel (4), data length (4), padding (at least 4) and a MAC
/// or tag (at least 8, umac-64's; the AEAD ciphers' is 16).
pub const MIN_PACKET_OVERHEAD: u64 = 4 + 1 + 1 + 4 + 4 + 4 + 8;

/// One connection's output accounting.
#[derive(Debug, Default)]
pub struct Outflow {
    /// Channel data bytes the sessions handed to the SSH layer.
    handed: AtomicU64,
    /// Bytes written to the socket (packets: data plus SSH framing and every other message).
    written: AtomicU64,
    /// Woken whenever the socket took bytes.
    drained: Notify,
}

impl Outflow {
    /// Bytes handed over and not yet matched by bytes written. Each handed message counts with
    /// the least framing an SSH packet can have ([`MIN_PACKET_OVERHEAD`]) and the socket also
    /// carries other messages, so this errs on the low side (the bound loosens by a few bytes
    /// per packet), never on the high one, which could leave a writer waiting for bytes that
    /// were already written.
    pub fn in_flight(&self) -> u64 {
        let written = self.written.load(Ordering::Acquire);
        self.handed.load(Ordering::Acquire).saturating_sub(written)
    }

    /// Waits until at most [`LIMIT`] bytes are in flight.
    pub async fn room(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a write between the check and the wait is seen.
            drained.as_mut().enable();
            if self.in_flight() <= LIMIT {
                return;
            }
            drained.await;
        }
    }

    /// `n` data bytes were handed to the SSH layer as one channel message (russh's channel
    /// writer makes one message, one packet, per write).
    pub fn handed(&self, n: usize) {
        self.handed
            .fetch_add(n as u64 + MIN_PACKET_OVERHEAD, Ordering::AcqRel);
    }

    fn wrote(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::AcqRel);
        self.drained.notify_waiters();
    }
}

/// The connection's socket, counting what it writes into an [`Outflow`].
pub struct Metered<S> {
    inner: S,
    outflow: Arc<Outflow>,
}

impl<S> Metered<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, outflow: Arc<Outflow>) -> Self {
        Metered { inner, outflow }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.outflow.wrote(*n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r {
            self.outflow.wrote(*n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_write_waits_while_too_much_is_in_flight_and_goes_once_the_socket_took_it() {
        let outflow = Arc::new(Outflow::default());
        let (ours, mut peer) = tokio::io::duplex(1 << 20);
        let mut socket = Metered::new(ours, Arc::clone(&outflow));

        outflow.handed(LIMIT as usize - MIN_PACKET_OVERHEAD as usize);
        // At the limit: room at once.
        tokio::time::timeout(Duration::from_secs(1), outflow.room())
            .await
            .expect("room at the limit");
        outflow.handed(0);
        assert_eq!(outflow.in_flight(), LIMIT + MIN_PACKET_OVERHEAD);
        let waiting = tokio::spawn({
            let outflow = Arc::clone(&outflow);
            async move { outflow.room().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "over the limit, a writer waits");

        // The socket writes the second message's worth: back at the limit, the waiter goes.
        socket
            .write_all(&[b'x'; MIN_PACKET_OVERHEAD as usize])
            .await
            .expect("write");
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the socket write")
            .expect("join");
        assert_eq!(outflow.in_flight(), LIMIT);
        let mut got = [0u8; MIN_PACKET_OVERHEAD as usize];
        peer.read_exact(&mut got).await.expect("peer reads");
        assert!(got.iter().all(|b| *b == b'x'));
    }

    #[test]
    fn framing_and_other_messages_never_count_as_data_in_flight() {
        let outflow = Outflow::default();
        outflow.wrote(4096);
        outflow.handed(1000);
        assert_eq!(outflow.in_flight(), 0);
        outflow.handed(4096);
        assert_eq!(outflow.in_flight(), 1000 + 2 * MIN_PACKET_OVERHEAD);
    }
}
