//! The Geo direct-to-primary git client (GitLab Shell `internal/gitlabnet/git`, behaviour §3.4
//! #13, §3.5 and §6.2): smart HTTP (`info/refs`, `git-upload-pack`, `git-receive-pack`) and
//! SSH-over-HTTP (`ssh-upload-pack`, `ssh-receive-pack`) against `data.primary_repo`.
//!
//! Not the internal API: no JWT, no retries, no timeout; the headers are the payload's
//! `request_headers` plus `User-Agent: GitLab-Shell`, `X-Request-ID` and `Connection: close`.
//! A transport failure is `Remote repository is unavailable`; an answer ≥ 400 is its body text,
//! or that same message when the body is empty.

use std::collections::BTreeMap;
use std::io::Read;

use reqwest::blocking::{Body, Client as HttpClient, RequestBuilder, Response};

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
    url: String,
    headers: BTreeMap<String, String>,
    correlation_id: String,
}

impl Client {
    /// A client for `primary_repo` sending `headers` on every request.
    pub fn new(
        primary_repo: &str,
        headers: BTreeMap<String, String>,
        correlation_id: &str,
    ) -> Result<Client, Error> {
        // reqwest is built without a default crypto provider; install ring once per process.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = HttpClient::builder()
            .timeout(None)
            .no_proxy()
            .build()
            .map_err(|e| Error(e.to_string()))?;
        Ok(Client {
            http,
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

    /// `POST <repo>/ssh-receive-pack` or `/ssh-upload-pack` with the client's raw stdin as the
    /// (streamed) body and `Git-Protocol`.
    pub fn ssh_pack(
        &self,
        service: &str,
        stdin: Box<dyn Read + Send>,
        git_protocol: &str,
    ) -> Result<Response, Error> {
        let url = format!("{}/ssh-{}", self.url, service.trim_start_matches("git-"));
        let req = self
            .http
            .post(url)
            .header("Git-Protocol", git_protocol)
            .body(Body::new(stdin));
        self.send(req)
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
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req
            .header("User-Agent", "GitLab-Shell")
            .header("X-Request-ID", &self.correlation_id)
            .header("Connection", "close");
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
