//! The SSH server (docs/gitlab-sshd.md): listener, per-connection task (PROXY header, login
//! grace, limits), russh handler (auth, channels, requests) and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use gitlab_shell::config::{Config, SshdConfig};
use russh::keys::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::metrics::{ConnErrors, METRICS, SessionObserver};
use crate::outflow::Metered;
use crate::proxy;
use crate::session::{self, SessionCtx};

/// Readiness states (`/start`).
pub const STARTING: u8 = 0;
/// Accepting connections.
pub const READY: u8 = 1;
/// Shutting down.
pub const SHUTTING_DOWN: u8 = 2;

/// How long an auth callback may wait for the internal API (upstream's 10 s).
const AUTH_API_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start; the text is logged with upstream's line.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No host key could be loaded.
    #[error("no host keys could be loaded, aborting")]
    NoHostKeys,
    /// A configuration value is wrong.
    #[error("{0}")]
    Config(String),
    /// The listen address could not be bound.
    #[error("failed to listen for connection: {0}")]
    Listen(String),
}

/// Switches that come from the environment rather than `config.yml`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Features {
    /// `FF_GITLAB_SHELL_SSH_CERTIFICATES=1`: certificates signed by a group's CA are looked up
    /// through `/authorized_certs`.
    pub group_certificates: bool,
}

/// State shared by every connection.
pub struct Shared {
    /// The loaded configuration.
    pub config: Arc<Config>,
    russh: Arc<russh::server::Config>,
    proxy: Option<proxy::Settings>,
    trusted_cas: crate::certs::TrustedCas,
    features: Features,
    /// Readiness ([`STARTING`], [`READY`], [`SHUTTING_DOWN`]).
    pub status: AtomicU8,
    unauthenticated: Option<Arc<Semaphore>>,
    /// Connections in flight per client address (`max_connections_per_source`).
    per_source: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, u64>>>,
    /// Cancelled at the end of the grace period: every connection is cut.
    pub cut: CancellationToken,
    /// Gitaly connections shared by every session (per address and token).
    gitaly_pool: gitaly_client::Pool,
    tracker: TaskTracker,
}

/// Loads the host certificates of `host_cert_files` (OpenSSH `-cert.pub` files), logging and
/// skipping the unusable ones with the Go server's lines and `filename` field: `failed to read
/// host certificate` (the file), `failed to parse host certificate` (its contents), `failed to
/// decode host certificate` (not a host certificate) and `no matching private key for
/// certificate <file>` (docs/gitlab-sshd.md, "Configuration"). russh then offers each
/// certificate for the host key it certifies.
pub fn load_host_certs(files: &[String], keys: &[PrivateKey]) -> Vec<russh::keys::Certificate> {
    let mut certs = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(filename = %f, error = %e, "failed to read host certificate");
                continue;
            }
        };
        let cert = match russh::keys::Certificate::from_openssh(text.trim()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(filename = %f, error = %e, "failed to parse host certificate");
                continue;
            }
        };
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::Host {
            tracing::error!(filename = %f, error = "not a host certificate", "failed to decode host certificate");
            continue;
        }
        if !keys
            .iter()
            .any(|k| k.public_key().key_data() == cert.public_key())
        {
            tracing::error!(filename = %f, "no matching private key for certificate {f}");
            continue;
        }
        certs.push(cert);
    }
    certs
}

/// Loads the host keys of `host_key_files`, logging and skipping the unusable ones with the Go
/// server's lines: `Failed to read host key` (the file) or `Failed to parse host key` (its
/// contents), with `filename` and `error` (docs/gitlab-sshd.md, "Configuration").
pub fn load_host_keys(files: &[String]) -> Vec<PrivateKey> {
    let mut keys = Vec::new();
    for f in files {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(filename = %f, error = %e, "Failed to read host key");
                continue;
            }
        };
        match russh::keys::decode_secret_key(&text, None) {
            Ok(k) => keys.push(k),
            Err(e) => {
                tracing::error!(filename = %f, error = %e, "Failed to parse host key");
            }
        }
    }
    keys
}

fn pick<T: Clone>(
    wanted: &[String],
    all: &[T],
    name: impl Fn(&T) -> String,
    what: &str,
) -> Result<Vec<T>, StartError> {
    wanted
        .iter()
        .map(|w| {
            all.iter()
                .find(|a| name(a) == *w)
                .cloned()
                .ok_or_else(|| StartError::Config(format!("unsupported {what} {w:?}")))
        })
        .collect()
}

/// The russh configuration for `sshd` and `keys` (docs/gitlab-sshd.md, "SSH settings").
pub fn russh_config(
    sshd: &SshdConfig,
    keys: Vec<PrivateKey>,
    certificates: Vec<russh::keys::Certificate>,
) -> Result<russh::server::Config, StartError> {
    let mut preferred = russh::Preferred::default();
    if !sshd.kex_algorithms.is_empty() {
        let all: Vec<russh::kex::Name> =
            russh::kex::ALL_KEX_ALGORITHMS.iter().map(|n| **n).collect();
        preferred.kex = pick(&sshd.kex_algorithms, &all, |n| n.as_ref().to_owned(), "kex")?.into();
    }
    if !sshd.ciphers.is_empty() {
        let all: Vec<russh::cipher::Name> =
            russh::cipher::ALL_CIPHERS.iter().map(|n| **n).collect();
        preferred.cipher = pick(&sshd.ciphers, &all, |n| n.as_ref().to_owned(), "cipher")?.into();
    }
    if !sshd.macs.is_empty() {
        let all: Vec<russh::mac::Name> =
            russh::mac::ALL_MAC_ALGORITHMS.iter().map(|n| **n).collect();
        preferred.mac = pick(&sshd.macs, &all, |n| n.as_ref().to_owned(), "mac")?.into();
    }
    if !sshd.public_key_algorithms.is_empty() {
        let algos = sshd
            .public_key_algorithms
            .iter()
            .map(|a| {
                Algorithm::new(a).map_err(|_| {
                    StartError::Config(format!("unsupported public key algorithm {a:?}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        preferred.key = algos.into();
    }
    let keepalive = (!sshd.client_alive_interval.is_zero()).then_some(sshd.client_alive_interval);
    Ok(russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-GitLab-SSHD".into()),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Rejections are fast: a user whose agent offers several keys pays this per key.
        auth_rejection_time: Duration::from_millis(10),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys,
        certificates,
        preferred,
        // No idle cut of a silent but alive session (a long pack-objects phase): keepalives
        // detect dead peers instead.
        inactivity_timeout: None,
        keepalive_interval: keepalive,
        keepalive_max: 3,
        nodelay: true,
        max_auth_attempts: 6,
        ..Default::default()
    })
}

impl Shared {
    /// Builds the shared state; fails when no host key is usable or a setting is invalid.
    pub fn new(config: Config, features: Features) -> Result<Arc<Shared>, StartError> {
        let sshd = &config.sshd;
        let keys = load_host_keys(&sshd.host_key_files);
        if keys.is_empty() {
            return Err(StartError::NoHostKeys);
        }
        let certs = load_host_certs(&sshd.host_cert_files, &keys);
        let russh = russh_config(sshd, keys, certs)?;
        let trusted_cas = crate::certs::TrustedCas::load(&sshd.trusted_user_ca_keys)
            .map_err(StartError::Config)?;
        let proxy = if sshd.proxy_protocol {
            let allowed = sshd
                .proxy_allowed
                .iter()
                .map(|s| proxy::Cidr::parse(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(StartError::Config)?;
            Some(proxy::Settings {
                policy: proxy::Policy::parse(&sshd.proxy_policy),
                allowed,
                timeout: sshd.proxy_header_timeout,
            })
        } else {
            None
        };
        let unauthenticated = match sshd.max_unauthenticated_connections {
            0 => None,
            n => Some(Arc::new(Semaphore::new(
                usize::try_from(n)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ))),
        };
        Ok(Arc::new(Shared {
            config: Arc::new(config),
            russh: Arc::new(russh),
            proxy,
            trusted_cas,
            features,
            status: AtomicU8::new(STARTING),
            unauthenticated,
            per_source: Arc::default(),
            cut: CancellationToken::new(),
            // Connections live on the server's runtime (this runs inside it).
            gitaly_pool: gitaly_client::Pool::observed(
                tokio::runtime::Handle::current(),
                Box::new(|ok| {
                    METRICS
                        .gitaly_connections
                        .inc(&[if ok { "ok" } else { "fail" }]);
                }),
                Arc::new(crate::metrics::GrpcMetrics::new()),
            ),
            tracker: TaskTracker::new(),
        }))
    }

    /// Accepts connections until `stop` is cancelled, then shuts down gracefully: readiness
    /// goes 503, the listener closes, connections in flight get `grace_period`, then the rest
    /// are cut. Returns when no connection is left.
    pub async fn serve(self: &Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        self.status.store(READY, Ordering::SeqCst);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, peer)) => {
                        let shared = Arc::clone(self);
                        self.tracker.spawn(async move { shared.handle_conn(stream, peer).await });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "server: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        // The listener closes before readiness turns 503, so a probe that sees 503 also finds
        // new connections refused (the other order left a window a test could see).
        drop(listener);
        self.status.store(SHUTTING_DOWN, Ordering::SeqCst);
        self.tracker.close();
        let grace = self.config.sshd.grace_period;
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("server: grace period over, closing the remaining connections");
            self.cut.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
    }

    async fn handle_conn(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        METRICS
            .in_flight_connections
            .fetch_add(1, Ordering::Relaxed);
        crate::alloc::activity();
        let _in_flight = scopeguard(|| {
            METRICS
                .in_flight_connections
                .fetch_sub(1, Ordering::Relaxed);
            crate::alloc::activity();
        });
        let permit = match &self.unauthenticated {
            None => None,
            Some(s) => match Arc::clone(s).try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    METRICS
                        .unauthenticated_limited
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(remote_addr = %peer, "server: too many unauthenticated connections, closing");
                    return;
                }
            },
        };
        METRICS
            .unauthenticated_connections
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let deadline = match self.config.sshd.login_grace_time {
            d if d.is_zero() => None,
            d => Some(tokio::time::Instant::now() + d),
        };
        let (remote, leftover) = match &self.proxy {
            None => (peer, Vec::new()),
            Some(p) => {
                match Box::pin(proxy::read_header(
                    &mut stream,
                    p.policy_for(peer.ip()),
                    p.timeout,
                ))
                .await
                {
                    Ok(o) => (o.source.unwrap_or(peer), o.leftover),
                    Err(e) => {
                        METRICS.proxy_rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(remote_addr = %peer, error = %e, "server: PROXY protocol refused the connection");
                        METRICS
                            .unauthenticated_connections
                            .fetch_sub(1, Ordering::Relaxed);
                        return;
                    }
                }
            }
        };
        let _source_slot = match self.take_source_slot(remote.ip()) {
            Some(slot) => slot,
            None => {
                METRICS.per_source_limited.fetch_add(1, Ordering::Relaxed);
                METRICS
                    .unauthenticated_connections
                    .fetch_sub(1, Ordering::Relaxed);
                tracing::warn!(remote_addr = %remote, "server: too many connections from this address, closing");
                return;
            }
        };
        let correlation_id = gitlab_shell::correlation::generate();
        let span =
            tracing::info_span!("conn", correlation_id = %correlation_id, remote_addr = %remote);
        let conn_token = self.cut.child_token();
        let access = Arc::new(crate::access::Last::default());
        let outflow = Arc::new(crate::outflow::Outflow::default());
        let (auth_tx, auth_rx) = oneshot::channel();
        let handler = Conn(Box::new(ConnState {
            shared: Arc::clone(&self),
            remote,
            local,
            correlation_id,
            span: span.clone(),
            identity: None,
            namespace: String::new(),
            offered: HashMap::new(),
            auth_tx: Some(auth_tx),
            permit,
            open_sessions: Arc::new(AtomicUsize::new(0)),
            conn_token: conn_token.clone(),
            counted: false,
            conn_errors: ConnErrors::new(),
            access: Arc::clone(&access),
            outflow: Arc::clone(&outflow),
        }));
        let stream = Metered::new(proxy::Prefixed::new(leftover, stream), outflow);
        let started = Instant::now();
        async move {
            tracing::info!("server: handleConn: start");
            let result = run_connection(&self, stream, handler, auth_rx, deadline, &conn_token).await;
            conn_token.cancel();
            tracing::info!(duration_s = started.elapsed().as_secs_f64(), "connection: handleRequests: done");
            match result {
                Ok(()) => tracing::info!(duration_s = started.elapsed().as_secs_f64(), "server: handleConn: done"),
                Err(reason) => tracing::info!(duration_s = started.elapsed().as_secs_f64(), error_message = %reason, "server: handleConn: done"),
            }
            crate::access::log_finish(started.elapsed(), &access.get());
        }
        .instrument(span)
        .await;
    }
}

impl Shared {
    /// Counts a connection from `ip`; `None` when `max_connections_per_source` is reached. The
    /// returned guard gives the slot back on drop.
    fn take_source_slot(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<impl Drop + use<>> {
        let limit = self.config.sshd.max_connections_per_source;
        let map = Arc::clone(&self.per_source);
        if limit > 0 {
            let mut m = map.lock().ok()?;
            let n = m.entry(ip).or_insert(0);
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        Some(scopeguard(move || {
            if limit == 0 {
                return;
            }
            if let Ok(mut m) = map.lock()
                && let Some(n) = m.get_mut(&ip)
            {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }))
    }
}

async fn run_connection(
    shared: &Arc<Shared>,
    stream: Metered<proxy::Prefixed<TcpStream>>,
    handler: Conn,
    mut auth_rx: oneshot::Receiver<()>,
    deadline: Option<tokio::time::Instant>,
    conn_token: &CancellationToken,
) -> Result<(), String> {
    let grace = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(grace);
    // Boxed: the handshake future (stream, handler, buffers) is large and would otherwise size
    // this task, which lives as long as the connection, for good (docs/gitlab-sshd.md,
    // "Memory"); boxed, it is freed once the handshake is done.
    let start = Box::pin(russh::server::run_stream(
        Arc::clone(&shared.russh),
        stream,
        handler,
    ));
    let running = tokio::select! {
        r = start => r.map_err(|e| format!("failed to initialize SSH connection: {e}"))?,
        () = &mut grace => return Err("login grace time exceeded".into()),
        () = conn_token.cancelled() => return Err("server shutting down".into()),
    };
    let handle = running.handle();
    tokio::pin!(running);
    let mut authed = false;
    loop {
        tokio::select! {
            r = &mut running => {
                return r.map_err(|e| e.to_string());
            }
            r = &mut auth_rx, if !authed => {
                authed = true;
                if r.is_err() {
                    continue;
                }
            }
            () = &mut grace, if !authed => {
                Box::pin(disconnect(&handle, &mut running, "login grace time exceeded")).await;
                return Err("login grace time exceeded".into());
            }
            () = conn_token.cancelled() => {
                Box::pin(disconnect(&handle, &mut running, "server shutting down")).await;
                return Err("server shutting down".into());
            }
        }
    }
}

/// Sends russh's disconnect with `reason` and gives the session a second to end. Called
/// through a box: these rare paths (russh's message is large) would otherwise size the
/// connection task for as long as the connection lives.
async fn disconnect(
    handle: &russh::server::Handle,
    running: &mut std::pin::Pin<&mut russh::server::RunningSession<Conn>>,
    reason: &str,
) {
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            reason.into(),
            String::new(),
        )
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), running.as_mut()).await;
}

/// An API lookup of the auth phase, as a boxed future.
type Lookup<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = Option<T>> + Send + 'a>>;

/// Runs `f` on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop + use<F> {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

/// One connection's russh handler: its state lives on the heap, behind one pointer, because
/// russh keeps the handler inside its session task's future in several places (the future
/// holds it as argument and as local, and russh's spawn wraps that future once more), so every
/// byte of an inline handler was paid four times per connection (docs/gitlab-sshd.md,
/// "Memory").
pub struct Conn(Box<ConnState>);

impl std::ops::Deref for Conn {
    type Target = ConnState;
    fn deref(&self) -> &ConnState {
        &self.0
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut ConnState {
        &mut self.0
    }
}

/// What a connection's handler knows.
pub struct ConnState {
    shared: Arc<Shared>,
    remote: SocketAddr,
    local: SocketAddr,
    correlation_id: String,
    span: tracing::Span,
    /// `key-<id>` of the key whose signature was verified, or `username-<KeyId>` of a verified
    /// certificate.
    identity: Option<String>,
    /// The group of a verified group-CA certificate (`namespace_path` on `/allowed`).
    namespace: String,
    /// Lookups of offered keys (wire-format blob → key id), so the verified key is looked up
    /// once; identity is only ever taken for the verified key.
    offered: HashMap<Vec<u8>, Option<i64>>,
    auth_tx: Option<oneshot::Sender<()>>,
    permit: Option<OwnedSemaphorePermit>,
    open_sessions: Arc<AtomicUsize>,
    conn_token: CancellationToken,
    counted: bool,
    /// Server-side errors of this connection (auth or session), counted once.
    conn_errors: Arc<ConnErrors>,
    /// The outcome of its last session, for the `access: finish` line.
    access: Arc<crate::access::Last>,
    /// Its output in the SSH layer, bounded (docs/gitlab-sshd.md, "Memory").
    outflow: Arc<crate::outflow::Outflow>,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        if self.permit.take().is_some() {
            METRICS
                .unauthenticated_connections
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Conn {
    fn count_attempt(&mut self) {
        if !self.counted {
            self.counted = true;
            METRICS.connections_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count_error(&mut self) {
        self.conn_errors.mark();
    }

    /// Login done: the unauthenticated slot is given back, the connection task told, and what
    /// only the auth phase needed (the lookups of offered keys) freed, as the connection may
    /// now stay idle for hours (docs/gitlab-sshd.md, "Memory").
    fn authenticated(&mut self) {
        if self.permit.take().is_some() {
            METRICS
                .unauthenticated_connections
                .fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(tx) = self.auth_tx.take() {
            let _ = tx.send(());
        }
        self.offered = HashMap::new();
    }

    /// An internal-API client for an auth callback, its requests counted in the HTTP metrics.
    fn api_client(
        config: &Config,
        correlation_id: &str,
        conn_errors: &Arc<ConnErrors>,
    ) -> Result<gitlab_shell::api::Client, gitlab_shell::api::Error> {
        gitlab_shell::api::Client::new(config, correlation_id)
            .map(|c| c.with_observer(Arc::new(SessionObserver::new(Arc::clone(conn_errors)))))
    }

    /// Whether an API failure is the server side's (counted), not an unknown key or user.
    fn is_server_side(e: &gitlab_shell::api::Error) -> bool {
        !matches!(
            e,
            gitlab_shell::api::Error::Api {
                status: 400..=499,
                ..
            } | gitlab_shell::api::Error::Status(400..=499)
        )
    }

    /// Runs one internal-API call of the authentication phase on a blocking thread, with this
    /// connection's client and span, bounded by [`AUTH_API_TIMEOUT`]. `Err(None)`: it timed
    /// out (or its thread died).
    async fn api_call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&gitlab_shell::api::Client) -> Result<T, gitlab_shell::api::Error>
        + Send
        + 'static,
    ) -> Result<T, Option<gitlab_shell::api::Error>> {
        let config = Arc::clone(&self.shared.config);
        let cid = self.correlation_id.clone();
        let span = self.span.clone();
        let errors = Arc::clone(&self.conn_errors);
        let task = tokio::task::spawn_blocking(move || {
            span.in_scope(|| Self::api_client(&config, &cid, &errors).and_then(|c| call(&c)))
        });
        match tokio::time::timeout(AUTH_API_TIMEOUT, task).await {
            Ok(Ok(answer)) => answer.map_err(Some),
            _ => Err(None),
        }
    }

    /// `GET /authorized_certs` for a certificate signed by a group's CA: the GitLab username
    /// and the group's path. A boxed future, as [`Conn::lookup`].
    fn lookup_cert(
        &mut self,
        fingerprint: String,
        key_id: String,
    ) -> Lookup<'_, gitlab_shell::api::authorized_certs::Response> {
        Box::pin(async move {
            let found = self
                .api_call(move |c| {
                    gitlab_shell::api::authorized_certs::get(c, &fingerprint, &key_id)
                })
                .await;
            match found {
                Ok(r) => Some(r),
                Err(Some(e)) => {
                    if Self::is_server_side(&e) {
                        self.count_error();
                    }
                    tracing::info!(parent: &self.span, error = %e, "certificate rejected: lookup failed");
                    None
                }
                Err(None) => {
                    self.count_error();
                    tracing::warn!(parent: &self.span, "certificate rejected: lookup timed out");
                    None
                }
            }
        })
    }

    fn user_ok(&self, user: &str) -> bool {
        user == self.shared.config.user
    }

    /// `GET /authorized_keys?key=<base64 of the wire-format key>` through the shared client.
    /// A boxed future: russh runs the auth callbacks' futures inline in its session task, whose
    /// size (its largest state) is paid for as long as the connection lives
    /// (docs/gitlab-sshd.md, "Memory").
    fn lookup<'a>(&'a mut self, key: &'a PublicKey) -> Lookup<'a, i64> {
        Box::pin(async move {
            let blob = key.to_bytes().ok()?;
            if let Some(found) = self.offered.get(&blob) {
                return *found;
            }
            let b64 = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&blob);
            let answer = self
                .api_call(move |c| gitlab_shell::api::authorized_keys::get_by_key(c, &b64))
                .await;
            let found = match answer {
                Ok(r) => Some(r.id),
                Err(Some(e)) => {
                    // An unknown key is the client's problem; anything else is a server-side
                    // auth error (SLI).
                    let unknown_key = matches!(
                        e,
                        gitlab_shell::api::Error::Api { status: 404, .. }
                            | gitlab_shell::api::Error::Status(404)
                    );
                    if !unknown_key {
                        self.count_error();
                    }
                    tracing::info!(parent: &self.span, error = %e, "public key authentication: key lookup failed");
                    None
                }
                Err(None) => {
                    self.count_error();
                    tracing::warn!(parent: &self.span, "public key authentication: key lookup timed out");
                    None
                }
            };
            self.offered.insert(blob, found);
            found
        })
    }

    fn reject() -> Auth {
        Auth::Reject {
            proceed_with_methods: Some(MethodSet::from(&[MethodKind::PublicKey][..])),
            partial_success: false,
        }
    }
}

fn is_dsa(key: &PublicKey) -> bool {
    matches!(key.algorithm(), Algorithm::Dsa)
}

impl russh::server::Handler for Conn {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        self.count_attempt();
        Ok(Self::reject())
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.count_attempt();
        if !self.user_ok(user) {
            tracing::info!(parent: &self.span, ssh_user = user, "public key authentication: unknown user");
            return Ok(Self::reject());
        }
        if is_dsa(offer.public_key) {
            tracing::info!(parent: &self.span, "public key authentication: DSA is prohibited");
            return Ok(Self::reject());
        }
        Ok(match self.lookup(offer.public_key).await {
            Some(_) => Auth::Accept,
            // russh offers a certificate's inner key here too: with trusted CAs, let the client
            // sign, and decide in auth_publickey / auth_openssh_certificate.
            None if !self.shared.trusted_cas.is_empty()
                || self.shared.features.group_certificates =>
            {
                Auth::Accept
            }
            None => Self::reject(),
        })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.count_attempt();
        if !self.user_ok(user) || is_dsa(key.public_key) {
            return Ok(Self::reject());
        }
        // The identity comes from the key whose signature russh verified, never from an
        // earlier offer.
        match self.lookup(key.public_key).await {
            Some(id) => {
                tracing::info!(parent: &self.span, ssh_key_type = %key.public_key.algorithm(), "public key authentication");
                self.identity = Some(format!("key-{id}"));
                Ok(Auth::Accept)
            }
            None => Ok(Self::reject()),
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        self.count_attempt();
        if !self.user_ok(user) {
            return Ok(Self::reject());
        }
        let ca = certificate
            .signature_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string();
        let key = certificate
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string();
        let fields = (user.to_owned(), key, ca, certificate.key_id().to_owned());
        let log_rejection = |span: &tracing::Span, e: &str| {
            let (user, key, ca, id) = &fields;
            tracing::info!(parent: span, ssh_user = %user, public_key_fingerprint = %key, signing_ca_fingerprint = %ca, certificate_identity = %id, "{e}");
        };
        if crate::certs::is_instance_ca(certificate, &self.shared.trusted_cas) {
            return match crate::certs::check(
                certificate,
                user,
                self.remote.ip(),
                &self.shared.trusted_cas,
            ) {
                Ok(username) => {
                    let (user, key, ca, _) = &fields;
                    tracing::info!(parent: &self.span, ssh_user = %user, public_key_fingerprint = %key, signing_ca_fingerprint = %ca, certificate_identity = %username, "user certificate is signed by a locally trusted CA (instance-level)");
                    self.identity = Some(format!("username-{username}"));
                    Ok(Auth::Accept)
                }
                Err(e) => {
                    log_rejection(&self.span, &e);
                    Ok(Self::reject())
                }
            };
        }
        // Group-level CAs: behind upstream's feature switch, and only for a certificate that
        // is itself valid for this user and address.
        if !self.shared.features.group_certificates {
            log_rejection(&self.span, "handleUserCertificate: feature is disabled");
            return Ok(Self::reject());
        }
        if let Err(e) =
            crate::certs::validate(certificate, user, self.remote.ip(), crate::certs::now())
        {
            log_rejection(&self.span, &e);
            return Ok(Self::reject());
        }
        let fingerprint = crate::certs::api_fingerprint(certificate);
        match self
            .lookup_cert(fingerprint, certificate.key_id().to_owned())
            .await
        {
            Some(found) if !found.username.is_empty() => {
                let (user, key, ca, _) = &fields;
                tracing::info!(parent: &self.span, ssh_user = %user, public_key_fingerprint = %key, signing_ca_fingerprint = %ca, certificate_identity = %found.username, namespace = %found.namespace, "user certificate is signed by a trusted CA (group-level)");
                self.identity = Some(format!("username-{}", found.username));
                self.namespace = found.namespace;
                Ok(Auth::Accept)
            }
            _ => Ok(Self::reject()),
        }
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated();
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        tracing::info!(parent: &self.span, channel_type = "session", "connection: handle: new channel requested");
        let Some(identity) = self.identity.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let limit = usize::try_from(self.shared.config.sshd.concurrent_sessions_limit).unwrap_or(0);
        if self.open_sessions.load(Ordering::Acquire) >= limit {
            METRICS
                .concurrent_limited_sessions
                .fetch_add(1, Ordering::Relaxed);
            reply
                .reject(ChannelOpenFailure::Other {
                    code: 4,
                    reason: "too many concurrent sessions".into(),
                })
                .await;
            return Ok(());
        }
        self.open_sessions.fetch_add(1, Ordering::AcqRel);
        reply.accept().await;
        let ctx = SessionCtx {
            config: Arc::clone(&self.shared.config),
            identity,
            namespace: self.namespace.clone(),
            conn_errors: Arc::clone(&self.conn_errors),
            gitaly_pool: self.shared.gitaly_pool.clone(),
            remote: self.remote,
            local: self.local,
            correlation_id: self.correlation_id.clone(),
            conn_token: self.conn_token.clone(),
            open_sessions: Arc::clone(&self.open_sessions),
            span: self.span.clone(),
            access: Arc::clone(&self.access),
            outflow: Arc::clone(&self.outflow),
        };
        tokio::spawn(session::serve(channel, ctx));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<Msg>,
        _host: &str,
        _port: u32,
        _orig: &str,
        _orig_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(ChannelOpenFailure::UnknownChannelType).await;
        Ok(())
    }

    async fn channel_open_x11(
        &mut self,
        _channel: Channel<Msg>,
        _addr: &str,
        _port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.reject(ChannelOpenFailure::UnknownChannelType).await;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == "GIT_PROTOCOL" {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _w: u32,
        _h: u32,
        _pw: u32,
        _ph: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_shared() -> Arc<Shared> {
        let config = Config::from_yaml(std::path::Path::new("."), b"secret: x").unwrap();
        Arc::new(Shared {
            config: Arc::new(config),
            russh: Arc::new(russh::server::Config::default()),
            proxy: None,
            trusted_cas: crate::certs::TrustedCas::default(),
            features: Features::default(),
            status: AtomicU8::new(READY),
            unauthenticated: None,
            per_source: Arc::default(),
            cut: CancellationToken::new(),
            gitaly_pool: gitaly_client::Pool::new(
                tokio::runtime::Handle::current(),
                Box::new(|_| {}),
            ),
            tracker: TaskTracker::new(),
        })
    }

    fn test_conn(shared: &Arc<Shared>) -> Conn {
        let (auth_tx, _auth_rx) = oneshot::channel();
        Conn(Box::new(ConnState {
            shared: Arc::clone(shared),
            remote: SocketAddr::from(([127, 0, 0, 1], 2222)),
            local: SocketAddr::from(([127, 0, 0, 1], 22)),
            correlation_id: "cid".into(),
            span: tracing::Span::none(),
            identity: None,
            namespace: String::new(),
            offered: HashMap::new(),
            auth_tx: Some(auth_tx),
            permit: None,
            open_sessions: Arc::new(AtomicUsize::new(0)),
            conn_token: CancellationToken::new(),
            counted: false,
            conn_errors: ConnErrors::new(),
            access: Arc::default(),
            outflow: Arc::default(),
        }))
    }

    /// A connection's own task (around russh's session task) lives as long as the connection,
    /// so its size is paid per idle connection: the handshake future, which is large, is boxed
    /// and freed once the handshake is done, and so are the rare disconnect paths
    /// (docs/gitlab-sshd.md, "Memory").
    #[tokio::test]
    async fn the_connection_task_is_small() {
        let shared = test_shared();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let task = Arc::clone(&shared).handle_conn(stream, peer);
        let size = std::mem::size_of_val(&task);
        // Unboxed it was 2720 bytes; 2080 with the handshake boxed; 1120 since the handler is
        // one pointer and the disconnect paths are boxed too.
        assert!(size <= 1216, "the connection task is {size} bytes");
    }

    /// russh keeps the handler in its session task's future four times over (argument and
    /// local of its session loop, and its spawn wraps that future once more): the handler is
    /// one pointer (docs/gitlab-sshd.md, "Memory").
    #[test]
    fn the_handler_is_one_pointer() {
        assert_eq!(std::mem::size_of::<Conn>(), std::mem::size_of::<usize>());
    }

    /// russh runs the handler's futures inline in its session task, whose size (its largest
    /// state, twice) is paid for as long as a connection lives: the API lookups, the only
    /// waits of the auth callbacks, are boxed futures (docs/gitlab-sshd.md, "Memory").
    #[tokio::test]
    async fn the_auth_lookups_are_boxed() {
        let shared = test_shared();
        let mut conn = test_conn(&shared);
        let key = russh::keys::PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .unwrap()
            .public_key()
            .clone();
        let boxed = std::mem::size_of::<Lookup<'_, i64>>();
        assert_eq!(std::mem::size_of_val(&conn.lookup(&key)), boxed);
        let cert = conn.lookup_cert(String::new(), String::new());
        assert_eq!(std::mem::size_of_val(&cert), boxed);
    }

    /// Once logged in, the lookups of offered keys are freed: an idle connection keeps no
    /// auth-phase state (docs/gitlab-sshd.md, "Memory").
    #[tokio::test]
    async fn login_frees_the_auth_phase_state() {
        let shared = test_shared();
        let mut conn = test_conn(&shared);
        conn.offered.insert(vec![7; 51], Some(1));
        conn.offered.insert(vec![8; 535], None);
        conn.authenticated();
        assert!(conn.auth_tx.is_none());
        assert_eq!(conn.offered.capacity(), 0);
    }
}
