//! `POST /api/v4/internal/personal_access_token` (GitLab Shell
//! `internal/gitlabnet/personalaccesstoken`): create a PAT over SSH.

use serde::{Deserialize, Serialize};

use super::discover::UserRef;
use super::{Client, Error};

/// Request body, in GitLab Shell's field order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Request {
    /// Who.
    #[serde(flatten)]
    pub user: UserRef,
    /// Token name.
    pub name: String,
    /// Scopes; `null` when filtering left none.
    pub scopes: Option<Vec<String>>,
    /// `YYYY-MM-DD`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub expires_at: String,
}

/// Response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Created or not.
    pub success: bool,
    /// The token (shown once to the user, never logged).
    pub token: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Expiry date.
    pub expires_at: Option<String>,
    /// Refusal text.
    pub message: String,
}

/// Creates the token; `success: false` is an error carrying `message`.
pub fn create(client: &Client, request: &Request) -> Result<Response, Error> {
    let r: Response = client.post("/personal_access_token", request)?.body;
    if r.success {
        Ok(r)
    } else {
        Err(Error::Message(r.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json() {
        let r = Request {
            user: UserRef {
                key_id: "1".into(),
                user_id: 0,
            },
            name: "n".into(),
            scopes: None,
            expires_at: "2026-01-01".into(),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"key_id":"1","name":"n","scopes":null,"expires_at":"2026-01-01"}"#
        );
    }
}
