//! The base client every endpoint module uses (GitLab Shell `client/gitlabnet.go` +
//! `httpclient.go`, behaviour §2.4 and §3): `gitlab_url`'s scheme picks the transport
//! (hyper's HTTP/1.1 connection for `http://` and `http+unix://`, reqwest with rustls for
//! `https://`, trusting `ssl_cert_dir`, `ca_file` and `ca_path` through the `tls-trust` crate),
//! then each request carries the JWT, basic auth, user agent and correlation id, is retried as
//! go-retryablehttp does, and its status is mapped to [`Error`].

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use reqwest::blocking::Client as HttpClient;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::json::{decode, error_from_body};
use super::jwt::sign_jwt;
use super::{Error, Reply, http1};
use crate::config::Config;

/// Prefix of every internal API path.
pub const INTERNAL_API_PATH: &str = "/api/v4/internal";
const USER_AGENT: &str = "GitLab-Shell";
const JWT_HEADER: &str = "Gitlab-Shell-Api-Request";
const ATTEMPTS: usize = 3;

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

/// rustls for `https://`: the system roots plus `ssl_cert_dir`, `ca_file` and `ca_path`
/// (behaviour §2.4), no ALPN (HTTP/1.1 only).
fn https_tls(config: &Config) -> Result<rustls::ClientConfig, Error> {
    let tls = config
        .internal_api_trust()
        .client_config(&[])
        .map_err(|e| Error::Client(e.to_string()))?;
    Ok(Arc::unwrap_or_clone(tls))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages;

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
    fn retry_policy() {
        for s in [429, 500, 502, 503, 599] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 300, 400, 404, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
