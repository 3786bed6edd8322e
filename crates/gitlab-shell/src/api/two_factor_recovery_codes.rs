//! `POST /api/v4/internal/two_factor_recovery_codes` (GitLab Shell
//! `internal/gitlabnet/twofactorrecover`): regenerate the user's 2FA recovery codes.

use serde::Deserialize;

use super::discover::UserRef;
use super::{Client, Error};

/// Response body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Whether codes were generated.
    pub success: bool,
    /// The new codes.
    pub recovery_codes: Vec<String>,
    /// Refusal text.
    pub message: String,
}

/// Regenerates the codes; `success: false` is an error carrying `message`.
pub fn generate(client: &Client, user: &UserRef) -> Result<Vec<String>, Error> {
    let r: Response = client.post("/two_factor_recovery_codes", user)?.body;
    if r.success {
        Ok(r.recovery_codes)
    } else {
        Err(Error::Message(r.message))
    }
}
