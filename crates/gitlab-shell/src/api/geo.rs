//! The payload of a Geo custom action (behaviour §6.2): on a Geo secondary, `/allowed` answers
//! HTTP 300 and `payload.data` tells GitLab Shell where the primary's repository is and which
//! headers to send it. Since GitLab Shell 14.45.3 the only flow is direct to the primary
//! ([`crate::api::geo_git`]); `api_endpoints` and the older direct-to-primary switches are still
//! decoded but no longer read.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// `payload.data` of a 300 answer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Data {
    /// The former API-endpoints flow's endpoints (decoded, unused since 14.45.3).
    #[serde(deserialize_with = "lenient")]
    pub api_endpoints: Option<Vec<String>>,
    /// Username on the secondary.
    #[serde(deserialize_with = "lenient")]
    pub gl_username: String,
    /// Repository URL on the primary.
    #[serde(deserialize_with = "lenient")]
    pub primary_repo: String,
    /// Headers for every request to the primary (Rails always sends them; absent means none).
    #[serde(deserialize_with = "lenient")]
    pub request_headers: Option<BTreeMap<String, String>>,
    /// Fetch through the primary's `ssh-upload-pack` endpoint instead of smart HTTP.
    #[serde(deserialize_with = "lenient")]
    pub geo_proxy_fetch_ssh_direct_to_primary: bool,
    /// Push through the primary's `ssh-receive-pack` endpoint instead of smart HTTP.
    #[serde(deserialize_with = "lenient")]
    pub geo_proxy_push_ssh_direct_to_primary: bool,
}

/// A field of the wrong type, or `null`, is the field's zero value, as Go's decoder leaves it.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned + Default>(
    d: D,
) -> Result<T, D::Error> {
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

impl Data {
    /// Decodes `payload.data`; anything that is not an object gives the zero value.
    pub fn from_payload(data: &Value) -> Data {
        serde_json::from_value(data.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_payload_leniently() {
        let data = Data::from_payload(&serde_json::json!({
            "request_headers": { "Authorization": "Bearer x" },
            "primary_repo": "http://primary/group/repo.git",
            "gl_username": "alice",
            "gl_id": "user-1",
            "extra_field": 1,
            "api_endpoints": ["/a", "/b"],
            "geo_proxy_fetch_ssh_direct_to_primary": true,
        }));
        assert_eq!(data.primary_repo, "http://primary/group/repo.git");
        assert_eq!(data.request_headers.unwrap()["Authorization"], "Bearer x");
        assert!(data.geo_proxy_fetch_ssh_direct_to_primary);
        assert!(!data.geo_proxy_push_ssh_direct_to_primary);
        let data = Data::from_payload(&serde_json::json!({
            "primary_repo": null, "gl_username": 5, "request_headers": null,
            "geo_proxy_push_ssh_direct_to_primary": "yes",
        }));
        assert_eq!(data, Data::default());
        assert_eq!(
            Data::from_payload(&serde_json::json!([1, 2])),
            Data::default()
        );
    }
}
