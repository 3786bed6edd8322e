//! `POST /api/v4/internal/lfs_authenticate` (GitLab Shell `internal/gitlabnet/lfsauthenticate`):
//! a short-lived LFS token for `git-lfs-authenticate`.

use serde::{Deserialize, Serialize};

use super::{Client, Error};

/// Request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Request {
    /// `download` or `upload`.
    pub operation: String,
    /// Repository argument.
    pub project: String,
    /// Digits of `key-N`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// `/allowed` gl_id without its `user-` prefix, as a string.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_id: String,
}

/// Response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Username for Basic auth.
    pub username: String,
    /// Token for Basic auth (never logged).
    pub lfs_token: String,
    /// HTTP path of the repository.
    pub repository_http_path: String,
    /// Seconds of validity.
    pub expires_in: i64,
}

/// Asks for the token.
pub fn authenticate(client: &Client, request: &Request) -> Result<Response, Error> {
    Ok(client.post("/lfs_authenticate", request)?.body)
}
