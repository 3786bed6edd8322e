//! Gitaly connections reused across calls (GitLab Shell's `internal/gitaly` connection cache):
//! one connection per Gitaly address and token, kept open on a long-lived runtime so that the
//! sessions of a long-running server (gitlab-sshd) share it instead of dialling per call. The
//! classic one-call-per-process binaries do not need it and use the plain functions of the
//! crate root.
//!
//! The connection — the yamux session, its HTTP/2 connection and the sidechannel acceptor —
//! lives on the pool's runtime, and so does an upload-pack call made through the pool (no
//! thread or runtime per call; pushes and archives still run on their own, see
//! [`crate::output`]). A call that ends early drops its RPC (its tasks are aborted, the HTTP/2
//! stream is reset, so Gitaly cancels it) and leaves the connection to the next one. A connection whose session has ended (Gitaly
//! restarted, the socket broke) is dropped from the cache and the next call dials afresh; so is
//! one whose call failed as `Unavailable`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::address::Address;
use crate::connection::Connection;
use crate::observe::RpcObserver;
use crate::{CallMeta, Error, Stdio, Target, proto};

/// Told about every dial the pool makes: `true` when it connected (GitLab Shell's
/// `gitlab_shell_gitaly_connections_total{status="ok"|"fail"}`).
pub type DialHook = Box<dyn Fn(bool) + Send + Sync>;

/// A cached connection, with an id so that only this one is evicted after a failure.
struct Entry {
    id: u64,
    conn: Connection,
}

struct Inner {
    runtime: tokio::runtime::Handle,
    conns: Mutex<HashMap<(String, String), Arc<Entry>>>,
    next_id: AtomicU64,
    on_dial: DialHook,
    observer: Option<Arc<dyn RpcObserver>>,
}

/// The connection cache; cheap to clone (clones share the cache).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self.inner.conns.lock().map(|c| c.len()).unwrap_or_default();
        f.debug_struct("Pool")
            .field("cached", &cached)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool whose connections live on `runtime` (which must outlive every call, e.g. the
    /// server's own multi-threaded runtime); `on_dial` is told about every dial.
    pub fn new(runtime: tokio::runtime::Handle, on_dial: DialHook) -> Pool {
        Self::build(runtime, on_dial, None)
    }

    /// [`Pool::new`] whose calls are reported to `observer` ([`crate::observe`]).
    pub fn observed(
        runtime: tokio::runtime::Handle,
        on_dial: DialHook,
        observer: Arc<dyn RpcObserver>,
    ) -> Pool {
        Self::build(runtime, on_dial, Some(observer))
    }

    fn build(
        runtime: tokio::runtime::Handle,
        on_dial: DialHook,
        observer: Option<Arc<dyn RpcObserver>>,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                runtime,
                conns: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(0),
                on_dial,
                observer,
            }),
        }
    }

    /// The observer of this pool's calls, if any.
    pub(crate) fn observer(&self) -> Option<Arc<dyn RpcObserver>> {
        self.inner.observer.clone()
    }

    /// The runtime the pool's connections, and gitlab-sshd's calls, run on.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.inner.runtime
    }

    /// Connections currently cached (tests, diagnostics).
    pub fn cached(&self) -> usize {
        self.lock().len()
    }

    /// Cached connections whose session is still up.
    pub fn live(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| !e.conn.closed.is_cancelled())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Entry>>> {
        self.inner
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection for `t`'s address and token, dialled on the pool's runtime when
    /// there is none (or the cached one has closed). Returns the connection, its cache id and
    /// whether it came from the cache. One dial, no retries: the call's attempts loop retries a
    /// failed dial as `retry_config` says (docs/gitaly.md §8).
    pub(crate) async fn connection(
        &self,
        t: &Target,
        address: &Address,
    ) -> Result<(u64, Connection, bool), Error> {
        let key = (t.address.clone(), t.token.clone());
        // Bound first: the guard must be gone before `forget` locks again.
        let cached = self.lock().get(&key).cloned();
        if let Some(entry) = cached {
            if !entry.conn.closed.is_cancelled() {
                return Ok((entry.id, entry.conn.clone(), true));
            }
            tracing::debug!("cached Gitaly connection closed; dialling again");
            self.forget(&key, entry.id);
        }
        // Two calls may dial at once for one key; the last one cached wins and the other
        // connection closes when its call is over, as in GitLab Shell's cache.
        let address = address.clone();
        let trust = t.trust.clone();
        let dialled = self
            .inner
            .runtime
            .spawn(async move { crate::connection::connect(&address, &trust).await })
            .await
            .map_err(|e| Error::Local(format!("gitaly dial task failed: {e}")))?;
        (self.inner.on_dial)(dialled.is_ok());
        let conn = dialled?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Arc::new(Entry {
                id,
                conn: conn.clone(),
            }),
        );
        Ok((id, conn, false))
    }

    /// Drops the cached connection for `t` if it is still the one with `id` (after a call on it
    /// failed as `Unavailable`).
    pub(crate) fn forget_target(&self, t: &Target, id: u64) {
        self.forget(&(t.address.clone(), t.token.clone()), id);
    }

    fn forget(&self, key: &(String, String), id: u64) {
        let mut conns = self.lock();
        if conns.get(key).is_some_and(|e| e.id == id) {
            conns.remove(key);
        }
    }

    /// [`crate::upload_pack`] on a cached connection.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn upload_pack(
        &self,
        t: &Target,
        m: &CallMeta,
        r: proto::SshUploadPackWithSidechannelRequest,
        io: Stdio,
    ) -> Result<Option<proto::PackfileNegotiationStatistics>, Error> {
        crate::calls::upload_pack_via(Some(self), t, m, r, io)
    }

    /// [`crate::receive_pack`] on a cached connection.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn receive_pack(
        &self,
        t: &Target,
        m: &CallMeta,
        r: proto::SshReceivePackRequest,
        io: Stdio,
    ) -> Result<Option<i32>, Error> {
        crate::calls::receive_pack_via(Some(self), t, m, r, io)
    }

    /// [`crate::upload_archive`] on a cached connection.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn upload_archive(
        &self,
        t: &Target,
        m: &CallMeta,
        r: proto::SshUploadArchiveRequest,
        io: Stdio,
    ) -> Result<Option<i32>, Error> {
        crate::calls::upload_archive_via(Some(self), t, m, r, io)
    }
}
