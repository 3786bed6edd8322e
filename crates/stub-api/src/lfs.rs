//! A small Git LFS server for tests: the batch API, basic object transfers and the lock API
//! under `<project>.git/info/lfs/`, backed by memory, the way GitLab Rails serves them
//! (`LfsRequest`, `Repositories::LfsApiController`, `LfsLocksApiController`).
//!
//! It is what `git-lfs-transfer` talks to after `/lfs_authenticate`: requests must carry
//! `Authorization: Basic <username>:<lfs.token from the fixture>`; object hrefs handed out by
//! the batch API point back at this server (taken from the request's `Host`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use axum::body::Body;
use base64::Engine as _;
use hyper::Response;
use serde_json::{Value, json};

use crate::fixture::Fixture;

const LFS_JSON: &str = "application/vnd.git-lfs+json";

/// A stored lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLock {
    /// Lock id (decimal).
    pub id: String,
    /// Project path.
    pub project: String,
    /// Locked file.
    pub path: String,
    /// Username of the owner.
    pub owner: String,
    /// Creation time (fixed, so tests can compare bytes).
    pub locked_at: String,
}

/// Objects (by project and oid) and locks.
#[derive(Debug, Default)]
pub struct Store {
    objects: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    locks: Mutex<Vec<StoredLock>>,
    next_lock: Mutex<u64>,
}

impl Store {
    /// The bytes of an object, if stored.
    pub fn object(&self, project: &str, oid: &str) -> Option<Vec<u8>> {
        let objects = self.objects.lock().unwrap_or_else(PoisonError::into_inner);
        objects.get(&(project.to_owned(), oid.to_owned())).cloned()
    }

    /// Number of stored objects.
    pub fn object_count(&self) -> usize {
        self.objects
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Current locks.
    pub fn locks(&self) -> Vec<StoredLock> {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Answers a request under `/info/lfs/`, or `None` when the path is not an LFS path.
pub fn respond(
    store: &Store,
    fixture: &Fixture,
    method: &str,
    path: &str,
    headers: &hyper::HeaderMap,
    body: &[u8],
) -> Option<Response<Body>> {
    let at = path.find(".git/info/lfs/")?;
    let project = path[..at].trim_start_matches('/').to_owned();
    let base = &path[..at + ".git/info/lfs".len()];
    let rest = &path[at + ".git/info/lfs/".len()..];
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(user) = header("authorization").and_then(|a| basic_user(a, &fixture.lfs.token)) else {
        return Some(reply(
            401,
            json!({ "message": "Access forbidden. Check your access level." }),
        ));
    };
    let host = header("host").unwrap_or("127.0.0.1");
    let href_base = format!("http://{host}{base}");
    let auth = header("authorization").unwrap_or_default().to_owned();
    let body_json: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    Some(match (method, rest) {
        ("POST", "objects/batch") => batch(store, &project, &href_base, &auth, &body_json),
        ("GET", r) if r.starts_with("objects/") => {
            match store.object(&project, &r["objects/".len()..]) {
                Some(bytes) => {
                    let mut resp = Response::new(Body::from(bytes));
                    set_type(&mut resp, "application/octet-stream");
                    resp
                }
                None => reply(404, json!({ "message": "Not found" })),
            }
        }
        ("PUT", r) if r.starts_with("objects/") => {
            let oid = r["objects/".len()..].to_owned();
            store
                .objects
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert((project, oid), body.to_vec());
            reply(200, json!({}))
        }
        ("POST", "locks") => create_lock(store, &project, &user, &body_json),
        ("POST", "locks/verify") => verify_locks(store, &project, &user),
        ("POST", r) if r.starts_with("locks/") && r.ends_with("/unlock") => {
            let id = &r["locks/".len()..r.len() - "/unlock".len()];
            unlock(store, &project, &user, id, &body_json)
        }
        _ => reply(404, json!({ "message": "Not found" })),
    })
}

/// The username of a `Basic` credential whose password is `token`.
fn basic_user(authorization: &str, token: &str) -> Option<String> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    (password == token).then(|| user.to_owned())
}

fn batch(
    store: &Store,
    project: &str,
    href_base: &str,
    auth: &str,
    body: &Value,
) -> Response<Body> {
    let operation = body["operation"].as_str().unwrap_or_default();
    let mut out = Vec::new();
    for object in body["objects"].as_array().into_iter().flatten() {
        let oid = object["oid"].as_str().unwrap_or_default();
        let size = object["size"].as_i64().unwrap_or_default();
        let stored = store.object(project, oid).is_some();
        let action = json!({
            "href": format!("{href_base}/objects/{oid}"),
            "header": { "Authorization": auth },
            "expires_in": 3600,
        });
        out.push(match (operation, stored) {
            ("download", true) => {
                json!({ "oid": oid, "size": size, "authenticated": true, "actions": { "download": action } })
            }
            ("download", false) => json!({
                "oid": oid, "size": size,
                "error": { "code": 404, "message": "Object does not exist on the server or you don't have permissions to access it" },
            }),
            ("upload", true) => json!({ "oid": oid, "size": size }),
            _ => json!({ "oid": oid, "size": size, "actions": { "upload": action } }),
        });
    }
    reply(200, json!({ "objects": out }))
}

fn lock_json(lock: &StoredLock) -> Value {
    json!({ "id": lock.id, "path": lock.path, "locked_at": lock.locked_at, "owner": { "name": lock.owner } })
}

fn create_lock(store: &Store, project: &str, user: &str, body: &Value) -> Response<Body> {
    let path = body["path"].as_str().unwrap_or_default();
    let mut locks = store.locks.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(existing) = locks
        .iter()
        .find(|l| l.project == project && l.path == path)
    {
        return reply(
            409,
            json!({ "lock": lock_json(existing), "message": "already created lock" }),
        );
    }
    let mut next = store
        .next_lock
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *next += 1;
    let lock = StoredLock {
        id: next.to_string(),
        project: project.to_owned(),
        path: path.to_owned(),
        owner: user.to_owned(),
        locked_at: "2024-01-02T03:04:05.000Z".to_owned(),
    };
    locks.push(lock.clone());
    reply(201, json!({ "lock": lock_json(&lock) }))
}

fn verify_locks(store: &Store, project: &str, user: &str) -> Response<Body> {
    let locks = store.locks();
    let mine = |l: &&StoredLock| l.project == project && l.owner == user;
    let theirs = |l: &&StoredLock| l.project == project && l.owner != user;
    let ours: Vec<Value> = locks.iter().filter(mine).map(lock_json).collect();
    let others: Vec<Value> = locks.iter().filter(theirs).map(lock_json).collect();
    reply(
        200,
        json!({ "ours": ours, "theirs": others, "next_cursor": "" }),
    )
}

fn unlock(store: &Store, project: &str, user: &str, id: &str, body: &Value) -> Response<Body> {
    let force = body["force"].as_bool().unwrap_or(false);
    let mut locks = store.locks.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(at) = locks
        .iter()
        .position(|l| l.project == project && l.id == id)
    else {
        return reply(404, json!({ "message": "Not found" }));
    };
    if locks[at].owner != user && !force {
        return reply(
            403,
            json!({ "message": format!("{} is locked by GitLab User {}", locks[at].path, locks[at].owner) }),
        );
    }
    let lock = locks.remove(at);
    reply(200, json!({ "lock": lock_json(&lock) }))
}

fn reply(status: u16, body: Value) -> Response<Body> {
    let mut resp = Response::new(Body::from(serde_json::to_vec(&body).unwrap_or_default()));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    set_type(&mut resp, LFS_JSON);
    resp
}

fn set_type(resp: &mut Response<Body>, content_type: &'static str) {
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, token: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
        )
    }

    fn header_map(pairs: &[(&'static str, String)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    fn call(store: &Store, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let fixture = Fixture::default();
        let headers = header_map(&[
            ("host", "127.0.0.1:9".to_owned()),
            ("authorization", basic("alice", &fixture.lfs.token)),
        ]);
        let resp = respond(store, &fixture, method, path, &headers, body).unwrap();
        let status = resp.status().as_u16();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .unwrap();
        (status, bytes.to_vec())
    }

    #[test]
    fn only_lfs_paths_are_answered_and_auth_is_checked() {
        let store = Store::default();
        let fixture = Fixture::default();
        assert!(
            respond(
                &store,
                &fixture,
                "GET",
                "/api/v4/internal/check",
                &header_map(&[]),
                b""
            )
            .is_none()
        );
        let none = header_map(&[]);
        let resp = respond(
            &store,
            &fixture,
            "POST",
            "/g/r.git/info/lfs/objects/batch",
            &none,
            b"{}",
        );
        assert_eq!(resp.unwrap().status().as_u16(), 401);
        let wrong = header_map(&[("authorization", basic("alice", "nope"))]);
        let resp = respond(
            &store,
            &fixture,
            "POST",
            "/g/r.git/info/lfs/objects/batch",
            &wrong,
            b"{}",
        );
        assert_eq!(resp.unwrap().status().as_u16(), 401);
    }

    #[test]
    fn upload_then_download() {
        let store = Store::default();
        let req = br#"{"operation":"upload","objects":[{"oid":"abc","size":2}]}"#;
        let (status, body) = call(&store, "POST", "/g/r.git/info/lfs/objects/batch", req);
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["objects"][0]["actions"]["upload"]["href"],
            "http://127.0.0.1:9/g/r.git/info/lfs/objects/abc"
        );
        assert_eq!(
            call(&store, "PUT", "/g/r.git/info/lfs/objects/abc", b"hi").0,
            200
        );
        assert_eq!(store.object("g/r", "abc").as_deref(), Some(&b"hi"[..]));
        let (_, body) = call(&store, "POST", "/g/r.git/info/lfs/objects/batch", req);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["objects"][0].get("actions").is_none());
        let req = br#"{"operation":"download","objects":[{"oid":"abc","size":2},{"oid":"zzz","size":1}]}"#;
        let (_, body) = call(&store, "POST", "/g/r.git/info/lfs/objects/batch", req);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["objects"][0]["actions"]["download"]["href"].is_string());
        assert_eq!(v["objects"][1]["error"]["code"], 404);
        assert_eq!(
            call(&store, "GET", "/g/r.git/info/lfs/objects/abc", b""),
            (200, b"hi".to_vec())
        );
        assert_eq!(
            call(&store, "GET", "/g/r.git/info/lfs/objects/zzz", b"").0,
            404
        );
    }

    #[test]
    fn locks_lifecycle() {
        let store = Store::default();
        let (status, body) = call(
            &store,
            "POST",
            "/g/r.git/info/lfs/locks",
            br#"{"path":"a.bin"}"#,
        );
        assert_eq!(status, 201);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"lock":{"id":"1","locked_at":"2024-01-02T03:04:05.000Z","owner":{"name":"alice"},"path":"a.bin"}}"#
        );
        assert_eq!(
            call(
                &store,
                "POST",
                "/g/r.git/info/lfs/locks",
                br#"{"path":"a.bin"}"#
            )
            .0,
            409
        );
        let (_, body) = call(
            &store,
            "POST",
            "/g/r.git/info/lfs/locks/verify",
            br#"{"limit":1}"#,
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["ours"][0]["path"], "a.bin");
        assert_eq!(
            call(&store, "POST", "/g/r.git/info/lfs/locks/9/unlock", b"{}").0,
            404
        );
        assert_eq!(
            call(&store, "POST", "/g/r.git/info/lfs/locks/1/unlock", b"{}").0,
            200
        );
        assert!(store.locks().is_empty());
    }
}
