//! The Geo custom-action endpoints (GitLab Shell v14.45.0
//! `internal/command/shared/customaction`, behaviour §3.4 #12 and §6.1): a Geo secondary's
//! `/allowed` answers 300 with `payload.data.api_endpoints`, and GitLab Shell POSTs each of them
//! — the path used exactly as given, e.g. `/api/v4/geo/proxy_git_ssh/info_refs_receive_pack` —
//! with the internal API's headers and JWT.
//!
//! Request: `{"secret_token":null,"data":{…},"output":<base64 or null>}` where `data` is the
//! payload's data re-encoded through GitLab Shell's `CustomPayloadData` struct (its fields, in its
//! order, unknown fields dropped) with `gl_id` replaced by "who". Response:
//! `{"result":"<base64>","message":"…"}`.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Client, Error};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// `CustomPayloadData` of GitLab Shell v14.45.0, in its JSON field order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Data {
    /// Endpoints to call in order.
    pub api_endpoints: Option<Vec<String>>,
    /// Username on the secondary.
    pub gl_username: String,
    /// Repository URL on the primary.
    pub primary_repo: String,
    /// "who" (`key-N` or the `/allowed` `gl_id`); omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gl_id: String,
    /// Headers for direct-to-primary requests (`null` when absent).
    pub request_headers: Option<BTreeMap<String, String>>,
    /// Push straight to the primary over HTTP (behaviour §6.2).
    pub geo_proxy_direct_to_primary: bool,
    /// Fetch straight from the primary over HTTP (behaviour §6.2).
    pub geo_proxy_fetch_direct_to_primary: bool,
    /// v14.45.0 only: end the fetch request at a flush and append `done`.
    pub geo_proxy_fetch_direct_to_primary_with_options: bool,
    /// Fetch through the primary's `ssh-upload-pack` endpoint.
    pub geo_proxy_fetch_ssh_direct_to_primary: bool,
    /// Push through the primary's `ssh-receive-pack` endpoint.
    pub geo_proxy_push_ssh_direct_to_primary: bool,
}

impl Data {
    /// Decodes `payload.data` as GitLab Shell does (wrongly typed fields fall back to their zero
    /// value) and sets `gl_id` to `who`.
    pub fn from_payload(data: &Value, who: &str) -> Data {
        let mut out: Data = serde_json::from_value(data.clone()).unwrap_or_else(|_| Data {
            api_endpoints: data.get("api_endpoints").and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
            }),
            ..Data::default()
        });
        out.gl_id = who.to_owned();
        out
    }

    /// The endpoints (empty when absent).
    pub fn endpoints(&self) -> &[String] {
        self.api_endpoints.as_deref().unwrap_or_default()
    }
}

/// One custom-action request.
#[derive(Debug, Clone, Serialize)]
pub struct Request<'a> {
    /// Always `null` (the Ruby-era secret field GitLab Shell still declares).
    pub secret_token: Option<String>,
    /// The payload data.
    pub data: &'a Data,
    /// Base64 of the client bytes read after the previous answer; `null` on the first call or
    /// when nothing was read.
    pub output: Option<String>,
}

impl<'a> Request<'a> {
    /// A request carrying `output` (raw bytes, encoded here).
    pub fn new(data: &'a Data, output: &[u8]) -> Request<'a> {
        Request {
            secret_token: None,
            data,
            output: (!output.is_empty()).then(|| B64.encode(output)),
        }
    }
}

/// The answer; its `message` is never shown, so only `result` is decoded.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawResponse {
    result: Option<String>,
}

/// POSTs `request` to `endpoint` (verbatim path) and returns the decoded `result` bytes.
pub fn call(client: &Client, endpoint: &str, request: &Request<'_>) -> Result<Vec<u8>, Error> {
    let reply = client.post_verbatim::<_, RawResponse>(endpoint, request)?;
    match reply.body.result {
        None => Ok(Vec::new()),
        Some(b64) => B64.decode(b64).map_err(|_| Error::Parse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_reencoded_in_gitlab_shell_order() {
        let payload = serde_json::json!({
            "request_headers": { "Authorization": "Bearer x" },
            "primary_repo": "http://primary/group/repo.git",
            "gl_username": "alice",
            "gl_id": "user-1",
            "extra_field": 1,
            "api_endpoints": ["/a", "/b"],
        });
        let data = Data::from_payload(&payload, "key-7");
        assert_eq!(data.endpoints(), ["/a", "/b"]);
        let body = serde_json::to_string(&Request::new(&data, b"")).unwrap();
        assert_eq!(
            body,
            r#"{"secret_token":null,"data":{"api_endpoints":["/a","/b"],"gl_username":"alice","primary_repo":"http://primary/group/repo.git","gl_id":"key-7","request_headers":{"Authorization":"Bearer x"},"geo_proxy_direct_to_primary":false,"geo_proxy_fetch_direct_to_primary":false,"geo_proxy_fetch_direct_to_primary_with_options":false,"geo_proxy_fetch_ssh_direct_to_primary":false,"geo_proxy_push_ssh_direct_to_primary":false},"output":null}"#
        );
        let body = serde_json::to_value(Request::new(&data, b"0000")).unwrap();
        assert_eq!(body["output"], "MDAwMA==");
    }

    #[test]
    fn missing_fields_are_zero_values() {
        let data = Data::from_payload(&serde_json::json!({ "api_endpoints": [] }), "");
        let body = serde_json::to_string(&data).unwrap();
        assert!(
            body.starts_with(
                r#"{"api_endpoints":[],"gl_username":"","primary_repo":"","request_headers":null,"#
            ),
            "{body}"
        );
        let data = Data::from_payload(
            &serde_json::json!({ "api_endpoints": ["/x"], "gl_username": 5 }),
            "w",
        );
        assert_eq!(data.endpoints(), ["/x"]);
        assert_eq!(data.gl_id, "w");
    }
}
