//! `GET /api/v4/internal/authorized_certs?key=<fingerprint>&user_identifier=<id>` (GitLab Shell
//! `internal/gitlabnet/authorizedcerts`, behaviour §3.4 #2): which GitLab user a certificate
//! signed by a group's CA stands for, and that group's path. gitlab-sshd only.

use serde::Deserialize;

use super::go_escape::query_escape;
use super::{Client, Error};

/// The answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// The GitLab username the certificate stands for.
    pub username: String,
    /// Full path of the group whose CA signed the certificate.
    pub namespace: String,
}

/// Looks up the user `user_identifier` (the certificate's KeyId) for the CA whose SHA-256
/// fingerprint is `fingerprint` (base64, without the `SHA256:` prefix). The query is in Go's
/// `url.Values` order (sorted keys).
pub fn get(client: &Client, fingerprint: &str, user_identifier: &str) -> Result<Response, Error> {
    Ok(client
        .get(&format!(
            "/authorized_certs?key={}&user_identifier={}",
            query_escape(fingerprint),
            query_escape(user_identifier)
        ))?
        .body)
}
