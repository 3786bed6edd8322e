//! The internal-API base client (GitLab Shell's `client/gitlabnet.go` + `httpclient.go`,
//! behaviour §2.4 and §3): URL schemes (`http://`, `https://`, `http+unix://`), the
//! `/api/v4/internal` prefix, the `Gitlab-Shell-Api-Request` JWT, basic auth, user agent,
//! correlation id, timeouts, retries, and error parsing. One small module per endpoint sits on
//! top of it; commands never build URLs or JSON themselves.

pub mod allowed;
pub mod authorized_certs;
pub mod authorized_keys;
pub mod check;
pub mod discover;
pub mod geo;
pub mod geo_git;
pub mod git_audit_event;
pub mod http1;
#[cfg(test)]
mod https_tests;
pub mod lfs_authenticate;
pub mod lfs_transfer;
pub mod personal_access_token;
#[cfg(test)]
mod transport_tests;
pub mod two_factor_manual_otp_check;
pub mod two_factor_push_otp_check;
pub mod two_factor_recovery_codes;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::blocking::Client as HttpClient;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::messages;

/// Prefix of every internal API path.
pub const INTERNAL_API_PATH: &str = "/api/v4/internal";
const USER_AGENT: &str = "GitLab-Shell";
const JWT_HEADER: &str = "Gitlab-Shell-Api-Request";
const JWT_ISSUER: &str = "gitlab-shell";
const JWT_TTL_SECS: u64 = 60;
const ATTEMPTS: usize = 3;

/// Internal API failures; `Display` is GitLab Shell's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 4xx/5xx (not retried) with a JSON body: its `message` (possibly empty).
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The body's `message`.
        message: String,
    },
    /// 4xx/5xx with an empty or non-JSON body.
    #[error("Internal API error ({0})")]
    Status(u16),
    /// Transport failure, or 429/5xx after every attempt.
    #[error("{}", messages::INTERNAL_API_UNREACHABLE)]
    Unreachable,
    /// 2xx/3xx whose body is not the expected JSON (or could not be read).
    #[error("{}", messages::PARSING_FAILED)]
    Parse,
    /// 301/302/303/307/308: never followed (docs/api-json.md, "Redirects").
    #[error("Internal API returned redirect ({status}) to {}", go_quote(.location))]
    Redirect {
        /// HTTP status.
        status: u16,
        /// The `Location` header (empty when absent).
        location: String,
    },
    /// The client could not be created (unknown scheme, missing CA file, TLS set-up).
    #[error("error creating http client: {0}")]
    Client(String),
    /// A `success: false` answer or a client-side refusal; the text as is.
    #[error("{0}")]
    Message(String),
}

/// A decoded answer with its HTTP status (300 matters for `/allowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T> {
    /// HTTP status (200–399).
    pub status: u16,
    /// Decoded body (`null` decodes to the default value).
    pub body: T,
}

/// The scheme-specific part of the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `http://` or `https://`: the URL with its trailing `/` trimmed.
    Tcp(String),
    /// `http+unix://<path>` (+ relative URL root): socket path and `http://unix[/<root>]`.
    Unix {
        /// Socket path (a relative one resolves against the cwd).
        socket: String,
        /// `http://unix[/<root>]`.
        host: String,
    },
}

impl Target {
    /// Parses `gitlab_url` (already unescaped) and `gitlab_relative_url_root`.
    pub fn parse(gitlab_url: &str, relative_root: &str) -> Result<Target, Error> {
        if let Some(socket) = gitlab_url.strip_prefix("http+unix://") {
            let root = relative_root.trim_matches('/');
            let host = if root.is_empty() {
                "http://unix".to_owned()
            } else {
                format!("http://unix/{root}")
            };
            Ok(Target::Unix {
                socket: socket.to_owned(),
                host,
            })
        } else if gitlab_url.starts_with("http://") || gitlab_url.starts_with("https://") {
            Ok(Target::Tcp(gitlab_url.trim_end_matches('/').to_owned()))
        } else {
            Err(Error::Client("unknown GitLab URL prefix".into()))
        }
    }

    fn host(&self) -> &str {
        match self {
            Target::Tcp(h) => h,
            Target::Unix { host, .. } => host,
        }
    }

    /// The full URL for an endpoint path (`/allowed` → `<host>/api/v4/internal/allowed`).
    pub fn url(&self, path: &str) -> String {
        let mut p = String::with_capacity(path.len() + INTERNAL_API_PATH.len() + 1);
        if !path.starts_with('/') {
            p.push('/');
        }
        p.push_str(path);
        if !p.starts_with(INTERNAL_API_PATH) {
            p.insert_str(0, INTERNAL_API_PATH);
        }
        format!(
            "{}/{}",
            self.host().trim_end_matches('/'),
            p.trim_start_matches('/')
        )
    }
}

/// `{"iss":"gitlab-shell","exp":…,"iat":…}`, in jwt-go's field order.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Always `gitlab-shell`.
    pub iss: String,
    /// `iat` + 60 s.
    pub exp: u64,
    /// Issue time (Unix seconds).
    pub iat: u64,
}

/// Go's `strings.TrimSpace` on the secret bytes.
pub fn trim_secret(secret: &[u8]) -> &[u8] {
    match std::str::from_utf8(secret) {
        Ok(s) => s.trim().as_bytes(),
        Err(_) => secret.trim_ascii(),
    }
}

/// The JWT for one logical request, HS256 with the trimmed secret.
pub fn sign_jwt(secret: &[u8], now: u64) -> Result<String, Error> {
    let claims = Claims {
        iss: JWT_ISSUER.into(),
        exp: now + JWT_TTL_SECS,
        iat: now,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(trim_secret(secret)),
    )
    .map_err(|e| Error::Client(format!("failed to sign JWT: {e}")))
}

/// How requests travel: hyper's HTTP/1.1 client connection (`http1`) for `http://` and
/// `http+unix://`, reqwest with rustls for `https://` (so TLS is only ever set up for https).
enum Transport {
    Plain(http1::Endpoint),
    Https(HttpClient),
}

/// A transport failure: its text (for logs) and whether a retry may help.
struct TransportError {
    text: String,
    retryable: bool,
}

/// One answer: status, `Retry-After` seconds, `Location`, and the body or why it could not be
/// read after the headers arrived.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    location: String,
    body: Result<Vec<u8>, String>,
}

/// The statuses Go's client would follow as redirects; refused instead (300 is no redirect).
/// The answers GitLab Shell 14.56 logs at info as `Internal API returned a client error`: the
/// user's own request was refused (not a failure of the system).
fn is_client_error(status: u16) -> bool {
    matches!(status, 401 | 403 | 404 | 422 | 429)
}

fn is_redirect(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// Go's `%q` of a string: double quotes, with `"`, `\` and non-printable characters escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct Inner {
    transport: Transport,
    timeout: Duration,
    target: Target,
    secret: Vec<u8>,
    /// Ready `Authorization` value.
    basic: Option<String>,
    correlation_id: String,
    retry_waits: [Duration; 2],
    /// Told about every attempt (gitlab-sshd's HTTP metrics); `None` for the classic binaries.
    observer: Option<Arc<dyn crate::observe::Observer>>,
}

/// The internal API client; cheap to clone (threads of `2fa_verify` share it).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn https_tls(config: &Config) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_roots();
    for cert in native {
        let _ = roots.add(cert);
    }
    let mut add_pem_file = |path: &std::path::Path| -> bool {
        match std::fs::read(path) {
            Ok(bytes) => {
                for cert in pem_certs(&bytes) {
                    let _ = roots.add(cert);
                }
                true
            }
            Err(_) => false,
        }
    };
    let hs = &config.http_settings;
    if !hs.ca_file.is_empty() && !add_pem_file(std::path::Path::new(&hs.ca_file)) {
        return Err(Error::Client(format!(
            "cannot find cafile '{}': cafile not found",
            hs.ca_file
        )));
    }
    for dir in [&hs.ca_path, &config.ssl_cert_dir] {
        if dir.is_empty() {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    add_pem_file(&e.path());
                }
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Client(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}

/// PEM `CERTIFICATE` blocks of a bundle, decoded to DER.
fn pem_certs(bytes: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(bytes);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let body = &rest[start + 27..];
        let Some(end) = body.find("-----END CERTIFICATE-----") else {
            break;
        };
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(rustls::pki_types::CertificateDer::from(der));
        }
        rest = &body[end..];
    }
    out
}

/// The system trust store: the usual bundle files, as Go's crypto/x509 looks for them.
fn rustls_native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    for f in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(bytes) = std::fs::read(f) {
            return pem_certs(&bytes);
        }
    }
    Vec::new()
}

impl Client {
    /// Creates the client for `config`'s `gitlab_url`.
    pub fn new(config: &Config, correlation_id: &str) -> Result<Client, Error> {
        let target = Target::parse(&config.gitlab_url, &config.gitlab_relative_url_root)?;
        let timeout = config.http_settings.read_timeout();
        let transport = match &target {
            Target::Unix { socket, .. } => Transport::Plain(http1::Endpoint::Unix(socket.clone())),
            Target::Tcp(url) if url.starts_with("https://") => {
                let http = HttpClient::builder()
                    .timeout(timeout)
                    .user_agent(USER_AGENT)
                    .tls_built_in_root_certs(false)
                    .use_preconfigured_tls(https_tls(config)?)
                    .http1_only()
                    .redirect(reqwest::redirect::Policy::none())
                    .pool_max_idle_per_host(0)
                    .no_proxy()
                    .build()
                    .map_err(|e| Error::Client(e.to_string()))?;
                Transport::Https(http)
            }
            Target::Tcp(_) => Transport::Plain(http1::Endpoint::Tcp),
        };
        let hs = &config.http_settings;
        let basic = (!hs.user.is_empty() && !hs.password.is_empty()).then(|| {
            use base64::Engine as _;
            let raw = format!("{}:{}", hs.user, hs.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        });
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                timeout,
                target,
                secret: config.secret.clone(),
                basic,
                correlation_id: correlation_id.to_owned(),
                retry_waits: [Duration::from_secs(1), Duration::from_secs(2)],
                observer: None,
            }),
        })
    }

    /// Same client, reporting every request attempt to `observer` (as GitLab Shell's promhttp
    /// round-trippers see each attempt of its retrying client).
    pub fn with_observer(self, observer: Arc<dyn crate::observe::Observer>) -> Client {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.observer = Some(observer);
                Client {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Client { inner },
        }
    }

    /// Same client with other retry waits (tests keep retries fast).
    pub fn with_retry_waits(self, waits: [Duration; 2]) -> Client {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.retry_waits = waits;
                Client {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Client { inner },
        }
    }

    /// `GET <path>` decoded as `T`.
    pub fn get<T: DeserializeOwned + Default>(&self, path: &str) -> Result<Reply<T>, Error> {
        let (status, body) = self.execute(Method::GET, path, None)?;
        decode(status, &body)
    }

    /// `POST <path>` with a JSON body, decoded as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned + Default>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Reply<T>, Error> {
        let json = serde_json::to_vec(body).map_err(|e| Error::Client(e.to_string()))?;
        let (status, body) = self.execute(Method::POST, path, Some(json))?;
        decode(status, &body)
    }

    fn execute(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), Error> {
        self.execute_url(method, self.inner.target.url(path), body)
    }

    /// Sends with retries (behaviour §3.2) and maps statuses (behaviour §3.3); returns a 2xx/3xx
    /// status and body.
    fn execute_url(
        &self,
        method: Method,
        url: String,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Vec<u8>), Error> {
        let inner = &self.inner;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let jwt = sign_jwt(&inner.secret, now)?;
        let mut headers: Vec<(&str, &str)> = vec![
            ("User-Agent", USER_AGENT),
            ("Content-Type", "application/json"),
            (JWT_HEADER, &jwt),
            ("X-Request-ID", &inner.correlation_id),
            ("Connection", "close"),
        ];
        if let Some(basic) = &inner.basic {
            headers.push(("Authorization", basic));
        }
        for attempt in 0..ATTEMPTS {
            let started = Instant::now();
            let last = attempt + 1 == ATTEMPTS;
            let wait = inner.retry_waits[attempt.min(1)];
            if let Some(o) = &inner.observer {
                o.http_request_started();
            }
            let outcome = self.send_once(&method, &url, &headers, body.as_deref());
            if let Some(o) = &inner.observer {
                let status = outcome.as_ref().ok().map(|a| a.status);
                o.http_request_finished(method.as_str(), status, started.elapsed());
            }
            // 14.56.1's field names (labkit v2): `duration_s` in seconds, `error_message`.
            let duration_s = started.elapsed().as_secs_f64();
            match outcome {
                Ok(Answer {
                    status,
                    retry_after,
                    location,
                    body,
                }) => {
                    let content_length_bytes = body.as_ref().map_or(0, |b| b.len() as u64);
                    if is_client_error(status) {
                        tracing::info!(method = %method, url = %url, duration_s, status, content_length_bytes, "Internal API returned a client error");
                    } else if status >= 400 || is_redirect(status) {
                        tracing::error!(method = %method, url = %url, duration_s, status, content_length_bytes, "Internal API error");
                    } else {
                        tracing::info!(method = %method, url = %url, duration_s, status, content_length_bytes, "Finished HTTP request");
                    }
                    if retryable_status(status) {
                        if last {
                            return Err(Error::Unreachable);
                        }
                        let wait = match (status, retry_after) {
                            (429 | 503, Some(s)) => Duration::from_secs(s),
                            _ => wait,
                        };
                        std::thread::sleep(wait);
                        continue;
                    }
                    if is_redirect(status) {
                        return Err(Error::Redirect { status, location });
                    }
                    // Headers arrived but the body did not: read once, never retried, and
                    // decoded as what arrived (nothing), like Go's decoder on a failed read.
                    let bytes = body.unwrap_or_else(|e| {
                        tracing::error!(method = %method, url = %url, duration_s, status, error_message = %e, "Internal API response body could not be read");
                        Vec::new()
                    });
                    if status >= 400 {
                        return Err(error_from_body(status, &bytes));
                    }
                    return Ok((status, bytes));
                }
                Err(e) => {
                    tracing::error!(method = %method, url = %url, duration_s, error_message = %e.text, "Internal API unreachable");
                    if last || !e.retryable {
                        return Err(Error::Unreachable);
                    }
                    std::thread::sleep(wait);
                }
            }
        }
        Err(Error::Unreachable)
    }
}

impl Client {
    /// One attempt.
    fn send_once(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Answer, TransportError> {
        let retry_after = |v: Option<&str>| v.and_then(|v| v.trim().parse::<u64>().ok());
        match &self.inner.transport {
            Transport::Plain(endpoint) => http1::send(
                endpoint,
                method.as_str(),
                url,
                headers,
                body,
                self.inner.timeout,
            )
            .map(|r| Answer {
                status: r.status,
                retry_after: retry_after(r.header("retry-after")),
                location: r.header("location").unwrap_or_default().to_owned(),
                body: match r.body_error {
                    Some(e) => Err(e),
                    None => Ok(r.body),
                },
            })
            .map_err(|e| TransportError {
                text: e.to_string(),
                retryable: true,
            }),
            Transport::Https(http) => {
                let mut req = http.request(method.clone(), url);
                for (name, value) in headers {
                    if *name != "User-Agent" {
                        req = req.header(*name, *value);
                    }
                }
                if let Some(b) = body {
                    req = req.body(b.to_vec());
                }
                req.send()
                    .map(|resp| {
                        let header = |name: &str| {
                            resp.headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        let status = resp.status().as_u16();
                        let retry_after = retry_after(header("Retry-After").as_deref());
                        let location = header("Location").unwrap_or_default();
                        let body = resp
                            .bytes()
                            .map(|b| b.to_vec())
                            .map_err(|e| error_chain(&e));
                        Answer {
                            status,
                            retry_after,
                            location,
                            body,
                        }
                    })
                    .map_err(|e| TransportError {
                        text: error_chain(&e),
                        retryable: retryable_error(&e),
                    })
            }
        }
    }
}

/// An error and its sources, `: `-separated (reqwest's own text hides the cause).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// go-retryablehttp's `DefaultRetryPolicy` on a response.
pub fn retryable_status(status: u16) -> bool {
    status == 0 || status == 429 || (status >= 500 && status != 501)
}

/// Transport errors are retried, except certificate verification failures.
fn retryable_error(e: &reqwest::Error) -> bool {
    let mut node: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = node {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return false;
        }
        // io::Error's `source()` skips the error it wraps (tokio-rustls wraps rustls errors in
        // io::Error, sometimes twice), so step into it explicitly.
        node = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    !e.is_builder()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    message: String,
}

/// behaviour §3.3: the JSON `message` (even empty, or `null`), else `Internal API error (<status>)`.
pub fn error_from_body(status: u16, body: &[u8]) -> Error {
    match go_json::<ErrorBody>(body) {
        Ok(parsed) => Error::Api {
            status,
            message: parsed.message,
        },
        Err(()) => Error::Status(status),
    }
}

/// Decodes a 2xx/3xx body as Go's `encoding/json` decodes it into a struct
/// (docs/api-json.md): `null` gives the default value, a `null` field its zero value, a body
/// that is not a JSON object (an array, a string…) `parsing failed`.
pub fn decode<T: DeserializeOwned + Default>(status: u16, body: &[u8]) -> Result<Reply<T>, Error> {
    go_json(body)
        .map(|body| Reply { status, body })
        .map_err(|()| Error::Parse)
}

/// The first JSON value of `body` (like Go's `json.Decoder.Decode`) decoded into a struct `T`
/// with Go's rules: only an object (or `null`: the zero value) decodes into a struct, and an
/// object member that is `null` leaves its field at its zero value. The nulls are removed
/// before serde sees the value, so every response struct gets this without per-field
/// attributes; all of them are `#[serde(default)]`.
pub(crate) fn go_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ()> {
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<serde_json::Value>();
    match stream.next() {
        Some(Ok(serde_json::Value::Null)) => Ok(T::default()),
        Some(Ok(mut value @ serde_json::Value::Object(_))) => {
            strip_nulls(&mut value);
            T::deserialize(value).map_err(|_| ())
        }
        _ => Err(()),
    }
}

/// Removes every object member whose value is `null`, at any depth (Go leaves such a field
/// untouched, i.e. at its zero value; serde would reject `null` for a `String` or `i64`).
fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Go's `url.QueryEscape`: unreserved `A-Za-z0-9-_.~` kept, space → `+`, the rest `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
            }
        }
    }
    out
}

/// Who a 2FA/PAT request is about: the key id from argv, or the user id found by `/discover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserRef {
    /// `key_id` (string), omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// `user_id` (number), omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub user_id: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_building() {
        let t = Target::parse("http://gitlab.example.com/prefix/", "").unwrap();
        assert_eq!(
            t.url("/allowed"),
            "http://gitlab.example.com/prefix/api/v4/internal/allowed"
        );
        assert_eq!(
            t.url("check"),
            "http://gitlab.example.com/prefix/api/v4/internal/check"
        );
        assert_eq!(
            t.url("/api/v4/internal/shellhorse/git_audit_event"),
            "http://gitlab.example.com/prefix/api/v4/internal/shellhorse/git_audit_event"
        );
        let t = Target::parse("http+unix:///run/gitlab.socket", "/gitlab/").unwrap();
        assert_eq!(
            t,
            Target::Unix {
                socket: "/run/gitlab.socket".into(),
                host: "http://unix/gitlab".into()
            }
        );
        assert_eq!(
            t.url("/discover?key_id=1"),
            "http://unix/gitlab/api/v4/internal/discover?key_id=1"
        );
        let t = Target::parse("http+unix://rel.sock", "").unwrap();
        assert_eq!(t.url("/check"), "http://unix/api/v4/internal/check");
        assert_eq!(
            Target::parse("https://h", "ignored").unwrap().url("/check"),
            "https://h/api/v4/internal/check"
        );
        assert_eq!(
            Target::parse("ftp://x", "").unwrap_err().to_string(),
            "error creating http client: unknown GitLab URL prefix"
        );
        assert_eq!(
            Target::parse("", "").unwrap_err().to_string(),
            messages::UNKNOWN_URL_PREFIX
        );
    }

    #[test]
    fn jwt_claims_and_key() {
        use base64::Engine as _;
        let token = sign_jwt(b"  secret\n", 1_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims, r#"{"iss":"gitlab-shell","exp":1060,"iat":1000}"#);
        // Signed with the trimmed secret: the same token as with "secret".
        assert_eq!(token, sign_jwt(b"secret", 1_000).unwrap());
        assert_ne!(token, sign_jwt(b"other", 1_000).unwrap());
        // An empty secret is allowed.
        assert!(sign_jwt(b"", 1_000).is_ok());
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_from_body(403, br#"{"message":"Forbidden!"}"#).to_string(),
            "Forbidden!"
        );
        assert_eq!(error_from_body(403, b"{}").to_string(), "");
        assert_eq!(
            error_from_body(404, b"").to_string(),
            "Internal API error (404)"
        );
        assert_eq!(
            error_from_body(404, b"<html>").to_string(),
            "Internal API error (404)"
        );
        assert_eq!(
            error_from_body(404, br#"{"message":3}"#).to_string(),
            "Internal API error (404)"
        );
    }

    #[test]
    fn decode_null_and_garbage() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct R {
            id: i64,
        }
        assert_eq!(decode::<R>(200, b"null").unwrap().body, R::default());
        assert_eq!(
            decode::<R>(200, br#"{"id":5,"x":1}"#).unwrap().body,
            R { id: 5 }
        );
        assert_eq!(decode::<R>(200, b"nope"), Err(Error::Parse));
        assert_eq!(decode::<R>(200, b""), Err(Error::Parse));
    }

    #[test]
    fn decode_is_go_about_nulls_and_non_objects() {
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct Inner {
            name: String,
        }
        #[derive(serde::Deserialize, Default, Debug, PartialEq)]
        #[serde(default)]
        struct R {
            id: i64,
            key: String,
            list: Vec<String>,
            inner: Inner,
            flag: bool,
        }
        let all_null = br#"{"id":null,"key":null,"list":null,"inner":null,"flag":null}"#;
        assert_eq!(decode::<R>(200, all_null).unwrap().body, R::default());
        let nested = br#"{"id":3,"inner":{"name":null},"key":"k"}"#;
        assert_eq!(
            decode::<R>(200, nested).unwrap().body,
            R {
                id: 3,
                key: "k".into(),
                ..R::default()
            }
        );
        // Go refuses to decode anything but an object into a struct.
        for body in [&br#"[7,"ssh-ed25519 AAAA"]"#[..], b"7", br#""x""#, b"true"] {
            assert_eq!(decode::<R>(200, body), Err(Error::Parse), "{body:?}");
        }
        // Error bodies: a null message is an empty one.
        assert_eq!(
            error_from_body(403, br#"{"message":null}"#),
            Error::Api {
                status: 403,
                message: String::new()
            }
        );
        assert_eq!(error_from_body(403, b"null").to_string(), "");
        assert_eq!(error_from_body(403, b"[1]"), Error::Status(403));
    }

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(query_escape("AAAA+b/c=="), "AAAA%2Bb%2Fc%3D%3D");
        assert_eq!(query_escape("a b~*"), "a+b~%2A");
    }

    #[test]
    fn retry_policy() {
        for s in [429, 500, 502, 503, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 300, 400, 404, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn user_ref_json() {
        let k = UserRef {
            key_id: "1".into(),
            user_id: 0,
        };
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"key_id":"1"}"#);
        let u = UserRef {
            key_id: String::new(),
            user_id: 7,
        };
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"user_id":7}"#);
    }
}
