//! The GitLab backend of `git-lfs-transfer` (GitLab Shell
//! `internal/command/lfstransfer/gitlab_backend.go`): maps protocol calls onto the project's LFS
//! API.
//!
//! A batch answer gives the client, per object, an opaque `id` (base64 of the JSON
//! `{"operation","oid","href","headers"}` the LFS API returned) and a `token` (base64 of
//! HMAC-SHA256 of that JSON keyed with the GitLab Shell secret). `get-object`/`put-object`
//! bring both back, so the transfer URL and its headers never have to be trusted from the client.
//!
//! Deliberate difference from GitLab Shell: git-lfs clients before 3.4 (Debian bookworm ships
//! 3.3.0) drop `id` and `token` between the batch and the transfer (their `tq.newTransfer` copies
//! only href/header/expiry). GitLab Shell answers those requests `400 error: missing id`, so
//! pure-SSH LFS never works with such clients. When *both* are absent we instead resolve the
//! object with a one-object batch request under the session's own LFS credential, which grants
//! nothing the client could not already get; any other id/token problem is refused as GitLab
//! Shell refuses it.

use std::collections::BTreeMap;
use std::io::Read as _;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::protocol::{
    Args, Backend, BatchItem, Download, Error, Lock, LockCreated, Operation, Owner, Pointer,
};
use crate::api::lfs_transfer::{self as lfs, BatchObject, Client};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// What the `id` argument carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
struct IdData {
    operation: String,
    oid: String,
    href: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
}

/// The backend: an LFS API client plus the secret that signs batch ids.
#[derive(Debug)]
pub struct GitlabBackend {
    client: Client,
    secret: Vec<u8>,
}

impl GitlabBackend {
    /// A backend over `client`, signing ids with `secret`.
    pub fn new(client: Client, secret: &[u8]) -> GitlabBackend {
        GitlabBackend {
            client,
            secret: secret.to_vec(),
        }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
    }

    fn issue_args(&self, data: &IdData) -> Result<Args, Error> {
        let json = serde_json::to_vec(data).map_err(|e| Error::Internal(e.to_string()))?;
        let mut mac = self.mac();
        mac.update(&json);
        let token = mac.finalize().into_bytes();
        let mut args = Args::new();
        args.insert("id".into(), B64.encode(&json));
        args.insert("token".into(), B64.encode(token));
        Ok(args)
    }

    /// The transfer target for `oid`: from `id`/`token` when the client sent them (checked as
    /// GitLab Shell checks them), else from a fresh one-object batch (`Ok(None)`: the LFS API
    /// offers no such action, i.e. nothing to upload or nothing to download).
    fn target(&self, op: Operation, oid: &str, args: &Args) -> Result<Option<IdData>, Error> {
        if args.contains_key("id") || args.contains_key("token") {
            return self.check_args(op, oid, args).map(Some);
        }
        let size = args.get("size").and_then(|s| s.parse().ok()).unwrap_or(0);
        let object = BatchObject {
            oid: oid.to_owned(),
            size,
            ..Default::default()
        };
        let response = self
            .client
            .batch(op.as_str(), &[object], "", "")
            .map_err(internal)?;
        Ok(response
            .objects
            .into_iter()
            .find(|o| o.oid == oid)
            .and_then(|o| o.actions.get(op.as_str()).cloned())
            .map(|action| IdData {
                operation: op.as_str().into(),
                oid: oid.to_owned(),
                href: action.href,
                headers: action.header,
            }))
    }

    /// Checks `id`/`token` and returns the href and headers they carry.
    fn check_args(&self, op: Operation, oid: &str, args: &Args) -> Result<IdData, Error> {
        let id = args.get("id").map(String::as_str).unwrap_or_default();
        let token = args.get("token").map(String::as_str).unwrap_or_default();
        if id.is_empty() {
            return Err(Error::BadRequest("missing id".into()));
        }
        if token.is_empty() {
            return Err(Error::Unauthorized("missing token".into()));
        }
        let id_bytes = B64
            .decode(id)
            .map_err(|_| Error::BadRequest("invalid id".into()))?;
        let token_bytes = B64
            .decode(token)
            .map_err(|_| Error::BadRequest("invalid token".into()))?;
        let mut mac = self.mac();
        mac.update(&id_bytes);
        if mac.verify_slice(&token_bytes).is_err() {
            return Err(Error::Forbidden("token hash mismatch".into()));
        }
        let data: IdData = serde_json::from_slice(&id_bytes)
            .map_err(|_| Error::BadRequest("invalid id".into()))?;
        if data.operation != op.as_str() {
            return Err(Error::Forbidden("invalid operation".into()));
        }
        if data.oid != oid {
            return Err(Error::Forbidden("invalid oid".into()));
        }
        Ok(data)
    }
}

impl Backend for GitlabBackend {
    fn batch(
        &mut self,
        op: Operation,
        objects: &[Pointer],
        args: &Args,
    ) -> Result<Vec<BatchItem>, Error> {
        let request: Vec<BatchObject> = objects
            .iter()
            .map(|p| BatchObject {
                oid: p.oid.clone(),
                size: p.size,
                ..Default::default()
            })
            .collect();
        let arg = |k: &str| args.get(k).map(String::as_str).unwrap_or_default();
        let response = self
            .client
            .batch(op.as_str(), &request, arg("refname"), arg("hash-algo"))
            .map_err(internal)?;
        let mut items = Vec::with_capacity(response.objects.len());
        for object in response.objects {
            let (has_action, item_args) = match object.actions.get(op.as_str()) {
                Some(action) => {
                    let data = IdData {
                        operation: op.as_str().into(),
                        oid: object.oid.clone(),
                        href: action.href.clone(),
                        headers: action.header.clone(),
                    };
                    (true, self.issue_args(&data)?)
                }
                None => (false, Args::new()),
            };
            items.push(BatchItem {
                pointer: Pointer {
                    oid: object.oid,
                    size: object.size,
                },
                has_action,
                args: item_args,
            });
        }
        Ok(items)
    }

    fn upload(&mut self, oid: &str, data: Vec<u8>, args: &Args) -> Result<(), Error> {
        let Some(target) = self.target(Operation::Upload, oid, args)? else {
            // The server already has it.
            return Ok(());
        };
        match self.client.put_object(&target.href, &target.headers, data) {
            Ok(()) => Ok(()),
            Err(lfs::Error::NotFound) => Err(Error::NotFound("not found".into())),
            Err(e) => Err(internal(e)),
        }
    }

    fn verify(&mut self, _oid: &str, _args: &Args) -> Result<(), Error> {
        // GitLab checks objects while they are uploaded; nothing more to do.
        Ok(())
    }

    fn download(&mut self, oid: &str, args: &Args) -> Result<Option<Download>, Error> {
        let Some(target) = self.target(Operation::Download, oid, args)? else {
            return Ok(None);
        };
        match self
            .client
            .get_object(&target.href, &target.headers)
            .map_err(internal)?
        {
            None => Ok(None),
            Some(lfs::ObjectBody {
                reader,
                size: Some(size),
            }) => Ok(Some(Download { reader, size })),
            Some(lfs::ObjectBody {
                mut reader,
                size: None,
            }) => {
                // No Content-Length: buffer to learn the size the protocol needs up front.
                let mut data = Vec::new();
                reader
                    .read_to_end(&mut data)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                Ok(Some(Download {
                    size: data.len() as u64,
                    reader: Box::new(std::io::Cursor::new(data)),
                }))
            }
        }
    }

    fn create_lock(&mut self, path: &str, refname: &str) -> Result<LockCreated, Error> {
        match self.client.lock(path, refname) {
            Ok(lock) => Ok(LockCreated::Created(convert(lock, None))),
            Err(lfs::Error::Conflict(existing)) => {
                Ok(LockCreated::Conflict(existing.map(|l| convert(*l, None))))
            }
            Err(e) => Err(lock_error(e)),
        }
    }

    fn lock_for_path(&mut self, path: &str) -> Result<Option<Lock>, Error> {
        let page = self
            .client
            .list_locks_verify(path, "", "", 1, "")
            .map_err(internal)?;
        match (page.ours.len(), page.theirs.len()) {
            (0, 0) => Ok(None),
            (1, 0) => Ok(page
                .ours
                .into_iter()
                .next()
                .map(|l| convert(l, Some(Owner::Ours)))),
            (0, 1) => Ok(page
                .theirs
                .into_iter()
                .next()
                .map(|l| convert(l, Some(Owner::Theirs)))),
            _ => Err(Error::Internal("internal error".into())),
        }
    }

    fn list_locks(
        &mut self,
        cursor: &str,
        limit: usize,
        args: &Args,
    ) -> Result<(Vec<Lock>, String), Error> {
        let arg = |k: &str| args.get(k).map(String::as_str).unwrap_or_default();
        let page = self
            .client
            .list_locks_verify(arg("path"), arg("id"), cursor, limit, arg("refname"))
            .map_err(internal)?;
        let locks = page
            .ours
            .into_iter()
            .map(|l| convert(l, Some(Owner::Ours)))
            .chain(
                page.theirs
                    .into_iter()
                    .map(|l| convert(l, Some(Owner::Theirs))),
            )
            .collect();
        Ok((locks, page.next_cursor))
    }

    fn unlock(&mut self, id: &str, force: bool, refname: &str) -> Result<Lock, Error> {
        self.client
            .unlock(id, force, refname)
            .map(|l| convert(l, None))
            .map_err(lock_error)
    }
}

fn internal(e: lfs::Error) -> Error {
    Error::Internal(e.to_string())
}

fn lock_error(e: lfs::Error) -> Error {
    match e {
        lfs::Error::Forbidden => Error::Forbidden("forbidden".into()),
        lfs::Error::NotFound => Error::NotFound("not found".into()),
        other => internal(other),
    }
}

fn convert(lock: lfs::Lock, owner: Option<Owner>) -> Lock {
    Lock {
        locked_at: rfc3339_seconds(&lock.locked_at),
        owner_name: lock.owner.map(|o| o.name).unwrap_or_default(),
        id: lock.id,
        path: lock.path,
        owner,
    }
}

/// Go formats lock times with `time.RFC3339`, which drops fractional seconds:
/// `2024-01-02T03:04:05.678Z` → `2024-01-02T03:04:05Z`.
fn rfc3339_seconds(t: &str) -> String {
    match t.find('.') {
        Some(dot) if dot >= 19 => {
            let rest = &t[dot + 1..];
            let zone = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            format!("{}{}", &t[..dot], zone)
        }
        _ => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> GitlabBackend {
        let client = Client::new(
            "http://127.0.0.1:1/x.git/info/lfs",
            "Basic eDp5",
            &Default::default(),
        )
        .unwrap();
        GitlabBackend::new(client, b"secret")
    }

    #[test]
    fn issued_ids_verify_and_carry_the_target() {
        let b = backend();
        let data = IdData {
            operation: "download".into(),
            oid: "abc".into(),
            href: "http://h/o".into(),
            headers: BTreeMap::from([("X-A".into(), "1".into())]),
        };
        let args = b.issue_args(&data).unwrap();
        let id = B64.decode(&args["id"]).unwrap();
        assert_eq!(
            id,
            br#"{"operation":"download","oid":"abc","href":"http://h/o","headers":{"X-A":"1"}}"#
        );
        assert_eq!(
            b.check_args(Operation::Download, "abc", &args).unwrap(),
            data
        );
        assert_eq!(
            b.check_args(Operation::Upload, "abc", &args),
            Err(Error::Forbidden("invalid operation".into()))
        );
        assert_eq!(
            b.check_args(Operation::Download, "abd", &args),
            Err(Error::Forbidden("invalid oid".into()))
        );
        let mut forged = args.clone();
        forged.insert("token".into(), B64.encode(b"nope"));
        assert_eq!(
            b.check_args(Operation::Download, "abc", &forged),
            Err(Error::Forbidden("token hash mismatch".into()))
        );
        let other = GitlabBackend::new(
            Client::new("http://x", "", &Default::default()).unwrap(),
            b"other",
        );
        assert!(other.check_args(Operation::Download, "abc", &args).is_err());
    }

    #[test]
    fn missing_or_garbled_arguments() {
        let b = backend();
        let mut args = Args::new();
        assert_eq!(
            b.check_args(Operation::Upload, "a", &args),
            Err(Error::BadRequest("missing id".into()))
        );
        args.insert("id".into(), "e30=".into());
        assert_eq!(
            b.check_args(Operation::Upload, "a", &args),
            Err(Error::Unauthorized("missing token".into()))
        );
        args.insert("token".into(), "***".into());
        assert_eq!(
            b.check_args(Operation::Upload, "a", &args),
            Err(Error::BadRequest("invalid token".into()))
        );
        args.insert("id".into(), "***".into());
        assert_eq!(
            b.check_args(Operation::Upload, "a", &args),
            Err(Error::BadRequest("invalid id".into()))
        );
    }

    #[test]
    fn a_lone_id_or_token_is_refused_like_gitlab_shell() {
        let b = backend();
        let args = Args::from([("token".to_owned(), "x".to_owned())]);
        assert_eq!(
            b.target(Operation::Upload, "a", &args),
            Err(Error::BadRequest("missing id".into()))
        );
        let args = Args::from([("id".to_owned(), "e30=".to_owned())]);
        assert_eq!(
            b.target(Operation::Download, "a", &args),
            Err(Error::Unauthorized("missing token".into()))
        );
    }

    #[test]
    fn lock_times_lose_fractions() {
        assert_eq!(
            rfc3339_seconds("2024-01-02T03:04:05.678Z"),
            "2024-01-02T03:04:05Z"
        );
        assert_eq!(
            rfc3339_seconds("2024-01-02T03:04:05.6+02:00"),
            "2024-01-02T03:04:05+02:00"
        );
        assert_eq!(
            rfc3339_seconds("2024-01-02T03:04:05Z"),
            "2024-01-02T03:04:05Z"
        );
    }
}
