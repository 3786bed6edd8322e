//! The HTTP side of the stub: listeners (TCP on 127.0.0.1 and/or a unix socket), the
//! `Gitlab-Shell-Api-Request` JWT check, request recording and fault injection.
//!
//! The server runs a small tokio runtime on its own thread so synchronous tests can use it; the
//! [`StubApi`] handle stops it on `Drop`. Connections are served with hyper directly (not
//! `axum::serve`) so that [`Fault::CloseConnection`] can drop a connection without an answer.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::api;
use crate::fixture::Fixture;

/// Largest request body the stub reads (Geo proxy bodies carry pack data).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Characters escaped in the socket path of an `http+unix://` URL: everything but RFC 3986
/// unreserved characters, so GitLab Shell's whole-URL path-unescape gives the path back.
const SOCKET_PATH_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How to start a [`StubApi`].
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// When set, every request must carry a `Gitlab-Shell-Api-Request` HS256 JWT with issuer
    /// `gitlab-shell` signed with this secret (surrounding whitespace trimmed, as GitLab Shell
    /// trims the secret file); otherwise the answer is 401 `{"message":"401 Unauthorized"}`.
    pub secret: Option<Vec<u8>>,
    /// Also listen on this unix socket (a stale file at the path is replaced).
    pub unix_socket: Option<PathBuf>,
    /// Listen on `127.0.0.1:<ephemeral port>`.
    pub tcp: bool,
}

impl Default for StartOptions {
    /// TCP only, no JWT check.
    fn default() -> Self {
        Self {
            secret: None,
            unix_socket: None,
            tcp: true,
        }
    }
}

/// One request as the stub received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path as sent (including any relative URL root), without the query.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Headers in arrival order; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// The body as JSON: `Null` when empty, a JSON string holding the text when not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// A misbehaviour to inject for requests whose path starts with a prefix.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer with this status and body (sent as `application/json`).
    Status(u16, String),
    /// Wait this long, then answer normally (or apply the next matching fault).
    Delay(Duration),
    /// Answer 200 with these raw bytes (e.g. invalid JSON).
    Body(Vec<u8>),
    /// Answer with full control over status, extra headers (e.g. `Retry-After`) and body.
    Response {
        /// HTTP status.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
        /// Body bytes.
        body: Vec<u8>,
    },
    /// Close the connection without answering.
    CloseConnection,
}

#[derive(Debug)]
struct FaultRule {
    prefix: String,
    fault: Fault,
    /// How many more requests it applies to; `None` = forever.
    remaining: Option<usize>,
}

impl FaultRule {
    /// Matches the full path, or the path below `/api/v4/internal` (so `/allowed` works).
    fn matches(&self, path: &str, route: &str) -> bool {
        path.starts_with(&self.prefix)
            || route.starts_with(&self.prefix)
            || route
                .strip_prefix("/api/v4/internal")
                .is_some_and(|short| short.starts_with(&self.prefix))
    }
}

struct Shared {
    fixture: RwLock<Fixture>,
    requests: Mutex<Vec<RecordedRequest>>,
    faults: Mutex<Vec<FaultRule>>,
    secret: Option<Vec<u8>>,
    recording: AtomicBool,
    log_requests: AtomicBool,
    lfs: crate::lfs::Store,
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        if self.recording.load(Ordering::Relaxed) {
            lock(&self.requests).push(request);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running stub internal API; stops when dropped.
pub struct StubApi {
    shared: Arc<Shared>,
    tcp_addr: Option<SocketAddr>,
    unix_socket: Option<PathBuf>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StubApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StubApi")
            .field("tcp_addr", &self.tcp_addr)
            .field("unix_socket", &self.unix_socket)
            .finish_non_exhaustive()
    }
}

impl StubApi {
    /// Starts the server on `127.0.0.1:0` (when `options.tcp`) and/or a unix socket.
    pub fn start(fixture: Fixture, options: StartOptions) -> anyhow::Result<StubApi> {
        let tcp = if options.tcp {
            Some(SocketAddr::from(([127, 0, 0, 1], 0)))
        } else {
            None
        };
        Self::start_inner(fixture, options, tcp)
    }

    /// Like [`StubApi::start`], but listens on the given TCP address instead of an ephemeral
    /// port (`options.tcp` is ignored).
    pub fn start_on(
        fixture: Fixture,
        options: StartOptions,
        tcp_addr: SocketAddr,
    ) -> anyhow::Result<StubApi> {
        Self::start_inner(fixture, options, Some(tcp_addr))
    }

    fn start_inner(
        fixture: Fixture,
        options: StartOptions,
        tcp: Option<SocketAddr>,
    ) -> anyhow::Result<StubApi> {
        if tcp.is_none() && options.unix_socket.is_none() {
            anyhow::bail!("stub-api needs a TCP listener or a unix socket");
        }
        let tcp_listener = match tcp {
            Some(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("cannot listen on {addr}"))?;
                listener.set_nonblocking(true)?;
                Some(listener)
            }
            None => None,
        };
        let tcp_addr = match &tcp_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let unix_listener = match &options.unix_socket {
            Some(path) => Some(bind_unix(path)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            fixture: RwLock::new(fixture),
            requests: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            secret: options.secret,
            recording: AtomicBool::new(true),
            log_requests: AtomicBool::new(false),
            lfs: crate::lfs::Store::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stub-api")
            .enable_all()
            .build()
            .context("cannot build the stub-api runtime")?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stub-api".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let started = (|| {
                        if let Some(l) = tcp_listener {
                            let l = tokio::net::TcpListener::from_std(l)?;
                            tokio::spawn(accept_tcp(l, Arc::clone(&thread_shared)));
                        }
                        if let Some(l) = unix_listener {
                            let l = tokio::net::UnixListener::from_std(l)?;
                            tokio::spawn(accept_unix(l, Arc::clone(&thread_shared)));
                        }
                        Ok(())
                    })();
                    let ok = started.is_ok();
                    let _ = ready_tx.send(started);
                    if ok {
                        let _ = shutdown_rx.await;
                    }
                });
                runtime.shutdown_background();
            })
            .context("cannot spawn the stub-api thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(err)) => return Err(err).context("cannot start the stub-api listeners"),
            Err(_) => anyhow::bail!("the stub-api thread died during start-up"),
        }
        Ok(StubApi {
            shared,
            tcp_addr,
            unix_socket: options.unix_socket,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        })
    }

    /// The TCP address, if listening on TCP.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// `http://127.0.0.1:<port>` (usable as `gitlab_url`).
    ///
    /// # Panics
    /// When the stub was started without TCP.
    pub fn tcp_url(&self) -> String {
        let addr = self
            .tcp_addr
            .expect("stub-api was started without a TCP listener");
        format!("http://{addr}")
    }

    /// The unix socket path, if listening on one.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// `http+unix://<percent-escaped socket path>`, the `gitlab_url` form for config.yml.
    pub fn gitlab_url_unix(&self) -> Option<String> {
        self.unix_socket.as_deref().map(gitlab_url_for_socket)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The recorded requests whose path ends with `suffix` (e.g. `/allowed`).
    pub fn requests_to(&self, suffix: &str) -> Vec<RecordedRequest> {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.ends_with(suffix))
            .cloned()
            .collect()
    }

    /// Waits until at least `count` requests whose path ends with `suffix` arrived (hooks
    /// run asynchronously to the client), returning them; gives up after `timeout`.
    pub fn wait_for_requests(
        &self,
        suffix: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<RecordedRequest> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self.requests_to(suffix);
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Turns request recording on (the default) or off; long benchmark runs turn it off so
    /// memory stays flat.
    pub fn set_recording(&self, on: bool) {
        self.shared.recording.store(on, Ordering::Relaxed);
    }

    /// Turns the one-line-per-request log on stderr on or off (off by default; the `stub-api`
    /// command turns it on).
    pub fn set_request_log(&self, on: bool) {
        self.shared.log_requests.store(on, Ordering::Relaxed);
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Sets the Gitaly address and token returned by `/allowed`.
    pub fn set_gitaly(&self, address: impl Into<String>, token: impl Into<String>) {
        self.update_fixture(|f| {
            f.gitaly.address = address.into();
            f.gitaly.token = token.into();
        });
    }

    /// Changes the fixture while running.
    pub fn update_fixture(&self, change: impl FnOnce(&mut Fixture)) {
        let mut fixture = self
            .shared
            .fixture
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        change(&mut fixture);
    }

    /// The LFS objects and locks stored through `<project>.git/info/lfs/` (see [`crate::lfs`]).
    pub fn lfs(&self) -> &crate::lfs::Store {
        &self.shared.lfs
    }

    /// A copy of the current fixture.
    pub fn fixture(&self) -> Fixture {
        self.shared
            .fixture
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Injects `fault` for every later request whose path starts with `path_prefix` (either
    /// the full path, or the part after `/api/v4/internal`, e.g. `/allowed`). Rules are tried
    /// in the order they were added.
    pub fn set_fault(&self, path_prefix: &str, fault: Fault) {
        self.add_fault(path_prefix, fault, None);
    }

    /// Like [`StubApi::set_fault`], but only for the next `times` matching requests.
    pub fn set_fault_times(&self, path_prefix: &str, fault: Fault, times: usize) {
        self.add_fault(path_prefix, fault, Some(times));
    }

    fn add_fault(&self, prefix: &str, fault: Fault, remaining: Option<usize>) {
        lock(&self.shared.faults).push(FaultRule {
            prefix: prefix.to_owned(),
            fault,
            remaining,
        });
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }
}

impl Drop for StubApi {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Some(path) = &self.unix_socket {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `http+unix://` + the percent-escaped socket path.
pub fn gitlab_url_for_socket(path: &Path) -> String {
    let text = path.to_string_lossy();
    format!(
        "http+unix://{}",
        percent_encoding::utf8_percent_encode(&text, SOCKET_PATH_ESCAPES)
    )
}

fn bind_unix(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_socket()
    {
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on unix socket {}", path.display()))?;
    listener.set_nonblocking(true)?;
    // sshd may run the binaries as another user than the test; let them connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    Ok(listener)
}

async fn accept_tcp(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn accept_unix(listener: tokio::net::UnixListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| logged(Arc::clone(&shared), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The header carrying GitLab Shell's JWT.
const JWT_HEADER: &str = "gitlab-shell-api-request";

/// The error that makes hyper drop the connection without a response.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fault injected: close connection")
    }
}

impl std::error::Error for DropConnection {}

/// [`handle`], then one line per request on stderr when the request log is on
/// ([`StubApi::set_request_log`]): method, path (no query: it may carry a key or a token), status,
/// and whether the JWT was valid, e.g. `stub-api: POST /api/v4/internal/allowed 200 jwt=ok`.
async fn logged(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    if !shared.log_requests.load(Ordering::Relaxed) {
        return handle(shared, req).await;
    }
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let jwt = match (&shared.secret, req.headers().get(JWT_HEADER)) {
        (None, _) => "unchecked",
        (Some(_), None) => "missing",
        (Some(_), Some(_)) => "sent",
    };
    let result = handle(Arc::clone(&shared), req).await;
    let status = match &result {
        Ok(r) => r.status().as_u16().to_string(),
        Err(_) => "dropped".to_owned(),
    };
    let jwt = if jwt == "sent" && status == "401" {
        "invalid"
    } else if jwt == "sent" {
        "ok"
    } else {
        jwt
    };
    #[expect(
        clippy::print_stderr,
        reason = "the stand-in server's request log is its stderr"
    )]
    {
        eprintln!("stub-api: {method} {path} {status} jwt={jwt}");
    }
    result
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, incoming) = req.into_parts();
    // A primary that refuses answers before the request body is over, as a real one refusing
    // authentication does (the Geo relay must not wait for a client that is still sending).
    if parts.uri.path().starts_with("/primary/") && parts.uri.path().contains("/fail-with-body/") {
        shared.record(RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            headers: Vec::new(),
            body: Value::Null,
        });
        return Ok(
            crate::primary::respond(parts.method.as_str(), parts.uri.path(), "")
                .unwrap_or_else(|| json_response(500, Vec::new())),
        );
    }
    let bytes = axum::body::to_bytes(Body::new(incoming), MAX_BODY)
        .await
        .unwrap_or_default();
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = parts.method.as_str().to_owned();
    let recorded = RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers,
        body,
    };
    // A relative URL root (`gitlab_relative_url_root`, or a prefix in `gitlab_url`) comes
    // before `/api/v4/`; route on what follows it.
    let route = match path.find("/api/v4/") {
        Some(at) => path[at..].to_owned(),
        None => path.clone(),
    };

    let unauthorized = shared
        .secret
        .as_deref()
        .is_some_and(|secret| !jwt_valid(secret, &recorded));
    let body_json = recorded.body.clone();
    // Record on arrival, so a test whose client gave up during a delay still sees it.
    shared.record(recorded);

    // Faults first: delay rules add up, the first other matching rule answers.
    let (delay, answer) = take_faults(&shared, &path, &route);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(fault) = answer {
        return fault_response(fault);
    }
    // The project LFS API (Basic auth, no JWT) for git-lfs-transfer.
    let lfs_reply = {
        let fixture = shared
            .fixture
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        crate::lfs::respond(
            &shared.lfs,
            &fixture,
            &method,
            &path,
            &parts.headers,
            &bytes,
        )
    };
    if let Some(reply) = lfs_reply {
        return Ok(reply);
    }
    if let Some(reply) = crate::primary::respond(&method, &path, &query) {
        return Ok(reply);
    }
    if unauthorized {
        return Ok(json_response(
            401,
            br#"{"message":"401 Unauthorized"}"#.to_vec(),
        ));
    }
    let reply = {
        let fixture = shared
            .fixture
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        api::respond(&fixture, &method, &route, &query, &body_json)
    };
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    let bytes = serde_json::to_vec(&reply.body).unwrap_or_default();
    Ok(json_response(reply.status, bytes))
}

/// Consumes the fault rules matching a request: the sum of the delays of the matching
/// `Delay` rules up to the first other matching rule, and that rule's fault.
fn take_faults(shared: &Shared, path: &str, route: &str) -> (Duration, Option<Fault>) {
    let mut faults = lock(&shared.faults);
    let mut delay = Duration::ZERO;
    let mut answer = None;
    for rule in faults.iter_mut() {
        if !rule.matches(path, route) {
            continue;
        }
        if let Some(n) = rule.remaining.as_mut() {
            *n = n.saturating_sub(1);
        }
        match &rule.fault {
            Fault::Delay(d) => delay += *d,
            other => {
                answer = Some(other.clone());
                break;
            }
        }
    }
    faults.retain(|r| r.remaining != Some(0));
    (delay, answer)
}

fn json_response(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn fault_response(fault: Fault) -> Result<Response<Body>, DropConnection> {
    match fault {
        Fault::Status(status, body) => Ok(json_response(status, body.into_bytes())),
        Fault::Body(body) => Ok(json_response(200, body)),
        Fault::Response {
            status,
            headers,
            body,
        } => {
            let mut response = json_response(status, body);
            for (name, value) in headers {
                if let (Ok(name), Ok(value)) = (
                    hyper::header::HeaderName::from_bytes(name.as_bytes()),
                    hyper::header::HeaderValue::from_str(&value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            Ok(response)
        }
        // `take_faults` never returns a delay as the answer; treat one like a hang-up.
        Fault::CloseConnection | Fault::Delay(_) => Err(DropConnection),
    }
}

/// Checks the `Gitlab-Shell-Api-Request` JWT as Rails' `authenticate_by_gitlab_shell_token!`
/// does: HS256, issuer `gitlab-shell`, not expired, key = the trimmed secret.
fn jwt_valid(secret: &[u8], request: &RecordedRequest) -> bool {
    let Some(token) = request.header("gitlab-shell-api-request") else {
        return false;
    };
    let key = DecodingKey::from_secret(secret.trim_ascii());
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&["gitlab-shell"]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    jsonwebtoken::decode::<Value>(token, &key, &validation).is_ok()
}
