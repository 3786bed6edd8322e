//! The seam for Geo "custom actions" (`/allowed` answering HTTP 300; behaviour §6, GitLab Shell
//! `internal/command/shared/customaction` and `internal/command/githttp`). The git commands
//! call [`run`] and stop there: it applies the v14.45.0 empty-endpoints check and hands over to
//! [`crate::command::geo`], which proxies to the primary (API-endpoints or direct-to-primary).

use crate::api::{self, allowed::Access};
use crate::command::Context;
use crate::error::Error;
use crate::io::Io;

/// Framed text for the `api_endpoints`-flow payload without endpoints (v14.45.0).
pub const EMPTY_API_ENDPOINTS: &str = "custom action error: Empty API endpoints";
/// Framed text for a Geo flow this GitLab Shell cannot run (kept for callers; unused by the
/// flows in `command::geo`).
pub const NOT_SUPPORTED: &str =
    "custom action error: Geo proxying is not supported by this GitLab Shell";

/// Handles a 300 answer for `action` (`git-upload-pack` or `git-receive-pack`).
pub fn run(
    _ctx: &Context<'_>,
    _client: &api::Client,
    access: &Access,
    action: &str,
    _io: &mut Io,
) -> Result<(), Error> {
    let data = &access.response.payload.data;
    let flag = |name: &str| {
        data.get(name)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    };
    let direct = match action {
        "git-receive-pack" => flag("geo_proxy_direct_to_primary"),
        _ => flag("geo_proxy_fetch_direct_to_primary"),
    };
    let endpoints_empty = data
        .get("api_endpoints")
        .and_then(serde_json::Value::as_array)
        .is_none_or(Vec::is_empty);
    tracing::info!(
        action,
        direct,
        "customaction: processApiEndpoints: Performing custom action"
    );
    if !direct && endpoints_empty {
        return Err(Error::Message(EMPTY_API_ENDPOINTS.into()));
    }
    crate::command::geo::run(_ctx, _client, access, action, _io)
}
