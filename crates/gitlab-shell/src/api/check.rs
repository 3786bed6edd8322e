//! `GET /api/v4/internal/check` (GitLab Shell `internal/gitlabnet/healthcheck`), for
//! `gitlab-shell-check`.

use serde::Deserialize;

use super::{Client, Error};

/// The health report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// API version.
    pub api_version: String,
    /// GitLab version.
    pub gitlab_version: String,
    /// GitLab revision.
    pub gitlab_rev: String,
    /// Whether Rails reaches Redis.
    pub redis: bool,
}

/// Asks the API for its health.
pub fn check(client: &Client) -> Result<Response, Error> {
    Ok(client.get("/check")?.body)
}
