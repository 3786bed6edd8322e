//! `GET /api/v4/internal/authorized_keys?key=<key>` (GitLab Shell `internal/gitlabnet/authorizedkeys`):
//! the GitLab key record for a public key blob, used by `gitlab-shell-authorized-keys-check`.

use serde::Deserialize;

use super::go_escape::query_escape;
use super::{Client, Error};

/// The key record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// GitLab key id.
    pub id: i64,
    /// The full public key line (`ssh-rsa AAAA… comment`).
    pub key: String,
}

/// Looks up `key` (the base64 blob sshd passes as `%k`).
pub fn get_by_key(client: &Client, key: &str) -> Result<Response, Error> {
    Ok(client
        .get(&format!("/authorized_keys?key={}", query_escape(key)))?
        .body)
}
