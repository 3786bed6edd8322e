//! `GET /api/v4/internal/discover` (GitLab Shell `internal/gitlabnet/discover`): who the SSH user
//! is, by `key_id` or `username`. Also resolves the user for the 2FA and PAT endpoints.

use serde::{Deserialize, Serialize};

use super::go_escape::query_escape;
use super::{Client, Error};
use crate::identity::Identity;
use crate::messages;

/// The user, or anonymous (`id < 1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// User id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Username.
    pub username: String,
}

impl Response {
    /// `id < 1` (also a JSON `null` answer).
    pub fn is_anonymous(&self) -> bool {
        self.id < 1
    }
}

/// Asks who `identity` is; no identity is `who='' is invalid` without a request.
pub fn get_by_identity(client: &Client, identity: &Identity) -> Result<Response, Error> {
    let query = match identity {
        Identity::Username(u) => format!("username={}", query_escape(u)),
        Identity::KeyId(k) => format!("key_id={}", query_escape(k)),
        Identity::None => return Err(Error::Message(messages::WHO_INVALID.into())),
    };
    Ok(client.get(&format!("/discover?{query}"))?.body)
}

/// The `key_id`/`user_id` pair the 2FA and PAT endpoints take: the key id when the session came
/// from `key-N`, otherwise the id `/discover` returns for the username.
pub fn user_ref(client: &Client, identity: &Identity) -> Result<UserRef, Error> {
    match identity {
        Identity::KeyId(k) => Ok(UserRef {
            key_id: k.clone(),
            user_id: 0,
        }),
        other => {
            let user = get_by_identity(client, other)?;
            Ok(UserRef {
                key_id: String::new(),
                user_id: user.id,
            })
        }
    }
}

/// Who a 2FA/PAT request is about: the key id from argv, or the user id found by `/discover`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserRef {
    /// `key_id` (string), omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// `user_id` (number), omitted when 0.
    #[serde(skip_serializing_if = "is_zero")]
    pub user_id: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ref_json() {
        let k = UserRef {
            key_id: "1".into(),
            user_id: 0,
        };
        assert_eq!(serde_json::to_string(&k).unwrap(), r#"{"key_id":"1"}"#);
        let u = UserRef {
            key_id: String::new(),
            user_id: 7,
        };
        assert_eq!(serde_json::to_string(&u).unwrap(), r#"{"user_id":7}"#);
    }
}
