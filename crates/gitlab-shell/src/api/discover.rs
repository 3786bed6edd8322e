//! `GET /api/v4/internal/discover` (GitLab Shell `internal/gitlabnet/discover`): who the SSH user
//! is, by `key_id` or `username`. Also resolves the user for the 2FA and PAT endpoints.

use serde::Deserialize;

use super::{Client, Error, UserRef, query_escape};
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
