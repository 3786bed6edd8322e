//! `POST /api/v4/internal/shellhorse/git_audit_event` (GitLab Shell
//! `internal/gitlabnet/gitauditevent`): sent after a successful upload-pack or receive-pack when
//! `/allowed` said `need_audit`. Failures are only logged. Since GitLab Shell 14.49/14.51 the body
//! also carries the key's id and, for a certificate issued by a group's CA, the namespace
//! (behaviour §3.4).

use serde::Serialize;

use super::{Client, Error};

/// Packfile negotiation statistics (upload-pack only), as Gitaly reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackfileStats {
    /// Bytes sent.
    pub payload_size: i64,
    /// pkt-lines received.
    pub packets: i64,
    /// Capabilities requested.
    pub caps: Vec<String>,
    /// `want` lines.
    pub wants: i64,
    /// `have` lines.
    pub haves: i64,
    /// `shallow` lines.
    pub shallows: i64,
    /// `deepen` argument.
    pub deepen: String,
    /// `filter` argument.
    pub filter: String,
}

/// Request body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Request {
    /// `git-upload-pack` or `git-receive-pack`.
    pub action: String,
    /// Always `ssh`.
    pub protocol: String,
    /// `project-N`.
    pub gl_repository: String,
    /// Username.
    pub username: String,
    /// Upload-pack statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packfile_stats: Option<PackfileStats>,
    /// Client IP.
    pub check_ip: String,
    /// Always `_any`.
    pub changes: String,
    /// `gl_key_id` of `/allowed`; left out when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub key_id: i64,
    /// The namespace of a group SSH certificate; left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace_path: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// Sends the event; the response body is ignored.
pub fn audit(client: &Client, request: &Request) -> Result<(), Error> {
    client
        .post::<_, serde_json::Value>("/api/v4/internal/shellhorse/git_audit_event", request)
        .map(|_| ())
}
