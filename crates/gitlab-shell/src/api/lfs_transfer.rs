//! The Git LFS HTTP API of one project, as `git-lfs-transfer` uses it (GitLab Shell
//! `internal/gitlabnet/lfstransfer`, behaviour §3.4 #14, §3.5 and §7.7): `<href>/objects/batch`,
//! object GET/PUT on the hrefs the batch returns, and the lock endpoints.
//!
//! This is not the internal API: requests carry `Authorization: Basic <username:lfs_token>` and
//! `Content-Type: application/vnd.git-lfs+json` (no JWT), and go-retryablehttp's defaults apply
//! (`RetryMax=3`, waits from 1 s doubling up to 30 s).

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client as HttpClient, RequestBuilder, Response};
use serde::{Deserialize, Serialize};

/// Media type of LFS API requests.
pub const LFS_CONTENT_TYPE: &str = "application/vnd.git-lfs+json";
const ATTEMPTS: usize = 4;

/// LFS API failures, as the transfer backend distinguishes them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Batch answered ≥ 400.
    #[error("response failed with status code: {0}")]
    BatchStatus(u16),
    /// 403 on a lock endpoint.
    #[error("forbidden")]
    Forbidden,
    /// 404 on a lock endpoint or an object upload.
    #[error("not found")]
    NotFound,
    /// 409 on lock creation: the existing lock, when the server sent it.
    #[error("conflict")]
    Conflict(Option<Box<Lock>>),
    /// Any other unexpected status (`internal error` / `internal error (<code>)`).
    #[error("internal error{}", .0.map(|c| format!(" ({c})")).unwrap_or_default())]
    Internal(Option<u16>),
    /// The body is not the expected JSON.
    #[error("parsing failed")]
    Parse,
    /// Transport failure after every attempt.
    #[error("{0}")]
    Transport(String),
}

/// One object of a batch request or response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchObject {
    /// Object id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub oid: String,
    /// Size in bytes.
    pub size: i64,
    /// Set by the server.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub authenticated: bool,
    /// `upload` / `download` / `verify` actions.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub actions: BTreeMap<String, BatchAction>,
}

/// Where and how to transfer one object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchAction {
    /// Object URL.
    pub href: String,
    /// Headers to send with it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct Ref<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
}

#[derive(Debug, Serialize)]
struct BatchRequest<'a> {
    operation: &'a str,
    objects: &'a [BatchObject],
    #[serde(rename = "ref")]
    reference: Ref<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    hash_algo: &'a str,
}

/// The batch answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BatchResponse {
    /// Objects with their actions.
    pub objects: Vec<BatchObject>,
    /// Hash algorithm, when given.
    pub hash_algo: String,
}

/// Lock owner.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LockOwner {
    /// Display name.
    pub name: String,
}

/// A lock as the LFS API returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Lock {
    /// Lock id.
    pub id: String,
    /// Locked path.
    pub path: String,
    /// RFC 3339 time.
    pub locked_at: String,
    /// Owner.
    pub owner: Option<LockOwner>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct LockResponse {
    lock: Option<Lock>,
}

#[derive(Debug, Serialize)]
struct LockRequest<'a> {
    path: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<Ref<'a>>,
}

#[derive(Debug, Serialize)]
struct UnlockRequest<'a> {
    force: bool,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<Ref<'a>>,
}

#[derive(Debug, Serialize)]
struct VerifyRequest<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    cursor: &'a str,
    limit: usize,
    #[serde(rename = "ref")]
    reference: Ref<'a>,
}

/// The `locks/verify` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct VerifyResponse {
    /// Locks held by the caller.
    pub ours: Vec<Lock>,
    /// Locks held by others.
    pub theirs: Vec<Lock>,
    /// Cursor of the next page (empty at the end).
    pub next_cursor: String,
}

/// A downloaded object's body.
pub struct ObjectBody {
    /// The bytes, streamed from the response.
    pub reader: Box<dyn Read>,
    /// `Content-Length`, when the server sent one.
    pub size: Option<u64>,
}

impl std::fmt::Debug for ObjectBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBody")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A client for one project's LFS API.
#[derive(Debug, Clone)]
pub struct Client {
    http: HttpClient,
    href: String,
    authorization: String,
    waits: Vec<Duration>,
}

impl Client {
    /// A client for `href` (`<repository_http_path>/info/lfs`) sending `authorization`
    /// (`Basic …`) on API calls; https is checked against `trust` (the process's system roots
    /// with `ssl_cert_dir`, as Go's default client sees them).
    pub fn new(href: &str, authorization: &str, trust: &tls_trust::Trust) -> Result<Client, Error> {
        let tls = trust
            .client_config(&[])
            .map_err(|e| Error::Transport(e.to_string()))?;
        // go-retryablehttp's client has no overall timeout; objects can be large.
        let http = HttpClient::builder()
            .timeout(None)
            .no_proxy()
            .use_preconfigured_tls(std::sync::Arc::unwrap_or_clone(tls))
            .build()
            .map_err(|e| Error::Transport(e.to_string()))?;
        Ok(Client {
            http,
            href: href.trim_end_matches('/').to_owned(),
            authorization: authorization.to_owned(),
            waits: (0..ATTEMPTS - 1)
                .map(|i| Duration::from_secs(1 << i))
                .collect(),
        })
    }

    /// Same client with other retry waits (tests keep them short).
    pub fn with_retry_waits(mut self, waits: Vec<Duration>) -> Client {
        self.waits = waits;
        self
    }

    /// `POST <href>/objects/batch`.
    pub fn batch(
        &self,
        operation: &str,
        objects: &[BatchObject],
        refname: &str,
        hash_algo: &str,
    ) -> Result<BatchResponse, Error> {
        let body = BatchRequest {
            operation,
            objects,
            reference: Ref { name: refname },
            hash_algo,
        };
        let url = format!("{}/objects/batch", self.href);
        let json = to_json(&body)?;
        let resp = self.send(|| self.api(Method::POST, &url).body(json.clone()))?;
        let status = resp.status().as_u16();
        if status > 399 {
            return Err(Error::BatchStatus(status));
        }
        parse(resp)
    }

    /// GETs an object; `Ok(None)` for any non-2xx answer. The size is the Content-Length.
    pub fn get_object(
        &self,
        href: &str,
        headers: &BTreeMap<String, String>,
    ) -> Result<Option<ObjectBody>, Error> {
        let resp = self.send(|| with_headers(self.http.get(href), headers))?;
        if !resp.status().is_success() {
            return Ok(None);
        }
        let size = resp.content_length();
        Ok(Some(ObjectBody {
            reader: Box::new(resp),
            size,
        }))
    }

    /// PUTs an object's bytes.
    pub fn put_object(
        &self,
        href: &str,
        headers: &BTreeMap<String, String>,
        data: Vec<u8>,
    ) -> Result<(), Error> {
        let resp = self.send(|| with_headers(self.http.put(href), headers).body(data.clone()))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            404 => Err(Error::NotFound),
            code => Err(Error::Internal(Some(code))),
        }
    }

    /// `POST <href>/locks`.
    pub fn lock(&self, path: &str, refname: &str) -> Result<Lock, Error> {
        let body = LockRequest {
            path,
            reference: opt_ref(refname),
        };
        let url = format!("{}/locks", self.href);
        self.lock_call(&url, to_json(&body)?, true)
    }

    /// `POST <href>/locks/<id>/unlock`.
    pub fn unlock(&self, id: &str, force: bool, refname: &str) -> Result<Lock, Error> {
        let body = UnlockRequest {
            force,
            reference: opt_ref(refname),
        };
        let url = format!("{}/locks/{id}/unlock", self.href);
        self.lock_call(&url, to_json(&body)?, false)
    }

    /// POSTs `json` to a lock endpoint and reads its `{"lock": …}` answer. `409` carries the
    /// conflicting lock only when creating one (`conflict`); for unlock it is a plain failure.
    fn lock_call(&self, url: &str, json: Vec<u8>, conflict: bool) -> Result<Lock, Error> {
        let resp = self.send(|| self.api(Method::POST, url).body(json.clone()))?;
        match resp.status().as_u16() {
            200..=299 => Ok(parse::<LockResponse>(resp)?.lock.unwrap_or_default()),
            403 => Err(Error::Forbidden),
            404 => Err(Error::NotFound),
            409 if conflict => Err(Error::Conflict(
                parse::<LockResponse>(resp)?.lock.map(Box::new),
            )),
            _ => Err(Error::Internal(None)),
        }
    }

    /// `POST <href>/locks/verify?path=&id=`: a page of locks split into ours and theirs.
    pub fn list_locks_verify(
        &self,
        path: &str,
        id: &str,
        cursor: &str,
        limit: usize,
        refname: &str,
    ) -> Result<VerifyResponse, Error> {
        let mut url = format!("{}/locks/verify", self.href);
        let query: Vec<(&str, &str)> = [("path", path), ("id", id)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        if !query.is_empty() {
            let encoded: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", super::go_escape::query_escape(v)))
                .collect();
            url.push('?');
            url.push_str(&encoded.join("&"));
        }
        let body = VerifyRequest {
            cursor,
            limit,
            reference: Ref { name: refname },
        };
        let json = to_json(&body)?;
        let resp = self.send(|| self.api(Method::POST, &url).body(json.clone()))?;
        parse(resp)
    }

    fn api(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .header("Authorization", &self.authorization)
            .header("Content-Type", LFS_CONTENT_TYPE)
    }

    /// Sends with go-retryablehttp's default policy: retry transport errors, 429 and 5xx
    /// (except 501); the last answer is returned as is.
    fn send(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            let last = attempt >= self.waits.len();
            match build().send() {
                Ok(resp) => {
                    let s = resp.status().as_u16();
                    if last || !(s == 429 || (s >= 500 && s != 501)) {
                        return Ok(resp);
                    }
                }
                Err(e) if last => return Err(Error::Transport(e.to_string())),
                Err(_) => {}
            }
            std::thread::sleep(self.waits[attempt]);
            attempt += 1;
        }
    }
}

fn to_json<T: Serialize>(body: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(body).map_err(|e| Error::Transport(e.to_string()))
}

fn opt_ref(refname: &str) -> Option<Ref<'_>> {
    (!refname.is_empty()).then_some(Ref { name: refname })
}

fn with_headers(mut req: RequestBuilder, headers: &BTreeMap<String, String>) -> RequestBuilder {
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req
}

fn parse<T: serde::de::DeserializeOwned + Default>(resp: Response) -> Result<T, Error> {
    let bytes = resp.bytes().map_err(|_| Error::Parse)?;
    // Go's rules for nulls and non-objects, as for the internal API (docs/api-json.md).
    super::json::go_json(&bytes).map_err(|()| Error::Parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_request_json_matches_gitlab_shell() {
        let objects = [BatchObject {
            oid: "abc".into(),
            size: 5,
            ..Default::default()
        }];
        let body = BatchRequest {
            operation: "upload",
            objects: &objects,
            reference: Ref {
                name: "refs/heads/main",
            },
            hash_algo: "sha256",
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"operation":"upload","objects":[{"oid":"abc","size":5}],"ref":{"name":"refs/heads/main"},"hash_algo":"sha256"}"#
        );
        let body = BatchRequest {
            operation: "download",
            objects: &[],
            reference: Ref { name: "" },
            hash_algo: "",
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"operation":"download","objects":[],"ref":{}}"#
        );
    }

    #[test]
    fn lock_request_json() {
        let b = LockRequest {
            path: "a.bin",
            reference: opt_ref(""),
        };
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"path":"a.bin"}"#);
        let b = UnlockRequest {
            force: true,
            reference: opt_ref("refs/heads/x"),
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"force":true,"ref":{"name":"refs/heads/x"}}"#
        );
        let b = VerifyRequest {
            cursor: "",
            limit: 1,
            reference: Ref { name: "" },
        };
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"limit":1,"ref":{}}"#
        );
    }

    #[test]
    fn error_texts() {
        assert_eq!(
            Error::Internal(Some(502)).to_string(),
            "internal error (502)"
        );
        assert_eq!(Error::Internal(None).to_string(), "internal error");
        assert_eq!(
            Error::BatchStatus(401).to_string(),
            "response failed with status code: 401"
        );
    }
}
