//! The Geo direct-to-primary git client (GitLab Shell `internal/gitlabnet/git`, behaviour §3.4
//! #13, §3.5 and §6.2): smart HTTP (`info/refs`, `git-upload-pack`, `git-receive-pack`) and
//! SSH-over-HTTP (`ssh-upload-pack`, `ssh-receive-pack`) against `data.primary_repo`.
//!
//! Not the internal API: no JWT, no retries, no timeout; the headers are the payload's
//! `request_headers` plus `User-Agent: GitLab-Shell`, `X-Request-ID` and `Connection: close`.
//! A transport failure is `Remote repository is unavailable`; an answer ≥ 400 is its body text,
//! or that same message when the body is empty.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use reqwest::blocking::{Client as HttpClient, RequestBuilder, Response};

/// Text shown when the primary cannot be reached or fails without a body.
pub const REPO_UNAVAILABLE: &str = "Remote repository is unavailable";

/// A failed call; `Display` is the text shown (framed) to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// A client for one primary repository URL.
#[derive(Debug, Clone)]
pub struct Client {
    http: HttpClient,
    /// The TLS set-up of both reqwest clients (the blocking one and `ssh_pack`'s async one).
    tls: std::sync::Arc<rustls::ClientConfig>,
    url: String,
    headers: BTreeMap<String, String>,
    correlation_id: String,
}

impl Client {
    /// A client for `primary_repo` sending `headers` on every request.
    /// https to the primary is checked against `trust` (the process's system roots with
    /// `ssl_cert_dir`, as Go's default client sees them).
    pub fn new(
        primary_repo: &str,
        headers: BTreeMap<String, String>,
        correlation_id: &str,
        trust: &tls_trust::Trust,
    ) -> Result<Client, Error> {
        let tls = trust.client_config(&[]).map_err(|e| Error(e.to_string()))?;
        let http = HttpClient::builder()
            .timeout(None)
            .no_proxy()
            .use_preconfigured_tls(rustls::ClientConfig::clone(&tls))
            .build()
            .map_err(|e| Error(e.to_string()))?;
        Ok(Client {
            http,
            tls,
            url: primary_repo.to_owned(),
            headers,
            correlation_id: correlation_id.to_owned(),
        })
    }

    /// `GET <repo>/info/refs?service=<service>`.
    pub fn info_refs(&self, service: &str) -> Result<Response, Error> {
        let url = format!("{}/info/refs?service={service}", self.url);
        self.send(self.http.get(url))
    }

    /// `POST <repo>/git-receive-pack` (smart HTTP).
    pub fn receive_pack(&self, body: Vec<u8>) -> Result<Response, Error> {
        self.smart_http("git-receive-pack", body)
    }

    /// `POST <repo>/git-upload-pack` (smart HTTP).
    pub fn upload_pack(&self, body: Vec<u8>) -> Result<Response, Error> {
        self.smart_http("git-upload-pack", body)
    }

    /// `POST <repo>/ssh-receive-pack` or `/ssh-upload-pack` with `Git-Protocol`: `body` (the
    /// client's input) is streamed as the request body while the response streams to `out`, at
    /// the same time — the primary answers the upload-pack advertisement before the client has
    /// said anything. An error answer ends the call at once, even while the client's input is
    /// still open (GitLab Shell !1569); the thread reading `body` then ends with that input.
    pub fn ssh_pack(
        &self,
        service: &str,
        body: Box<dyn Read + Send>,
        git_protocol: &str,
        out: &mut dyn Write,
    ) -> Result<(), Error> {
        let url = format!("{}/ssh-{}", self.url, service.trim_start_matches("git-"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error(e.to_string()))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .use_preconfigured_tls(rustls::ClientConfig::clone(&self.tls))
            .build()
            .map_err(|e| Error(e.to_string()))?;
        let mut req = http
            .post(url)
            .header("Git-Protocol", git_protocol)
            .body(reqwest::Body::wrap_stream(stream_of(body)));
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        let resp = runtime.block_on(req.send()).map_err(|e| {
            tracing::error!(error = %e, "geo: primary unreachable");
            Error(REPO_UNAVAILABLE.to_owned())
        })?;
        if resp.status().as_u16() >= 400 {
            return Err(match runtime.block_on(resp.bytes()) {
                Ok(body) if !body.is_empty() => Error(String::from_utf8_lossy(&body).into_owned()),
                _ => Error(REPO_UNAVAILABLE.to_owned()),
            });
        }
        let mut resp = resp;
        loop {
            let chunk = runtime.block_on(resp.chunk()).map_err(|e| {
                tracing::error!(error = %e, "geo: primary response cut off");
                Error(REPO_UNAVAILABLE.to_owned())
            })?;
            let Some(chunk) = chunk else { break };
            out.write_all(&chunk)
                .and_then(|()| out.flush())
                .map_err(|e| Error(e.to_string()))?;
        }
        Ok(())
    }

    /// The headers every request carries: the payload's, then ours.
    fn headers(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.push(("User-Agent".into(), "GitLab-Shell".into()));
        all.push(("X-Request-ID".into(), self.correlation_id.clone()));
        all.push(("Connection".into(), "close".into()));
        all
    }

    fn smart_http(&self, service: &str, body: Vec<u8>) -> Result<Response, Error> {
        let req = self
            .http
            .post(format!("{}/{service}", self.url))
            .header("Content-Type", format!("application/x-{service}-request"))
            .header("Accept", format!("application/x-{service}-result"))
            .body(body);
        self.send(req)
    }

    fn send(&self, mut req: RequestBuilder) -> Result<Response, Error> {
        for (k, v) in self.headers() {
            req = req.header(k, v);
        }
        let resp = req.send().map_err(|e| {
            tracing::error!(error = %e, "geo: primary unreachable");
            Error(REPO_UNAVAILABLE.to_owned())
        })?;
        if resp.status().as_u16() < 400 {
            return Ok(resp);
        }
        match resp.bytes() {
            Ok(body) if !body.is_empty() => Err(Error(String::from_utf8_lossy(&body).into_owned())),
            _ => Err(Error(REPO_UNAVAILABLE.to_owned())),
        }
    }
}

/// Bytes asked of the client per read while streaming a request body.
const BODY_CHUNK: usize = 32 * 1024;

/// A request body fed by a thread that reads `input` (blocking) and hands each chunk over
/// through a small bounded channel; the thread stops at end of input or once the request is gone.
fn stream_of(
    mut input: Box<dyn Read + Send>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<bytes::Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; BODY_CHUNK];
        loop {
            let chunk = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => Ok(bytes::Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.blocking_send(chunk).is_err() || failed {
                break;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
