//! `POST /api/v4/internal/two_factor_manual_otp_check` (GitLab Shell
//! `internal/gitlabnet/twofactorverify`): check an OTP the user typed.

use serde::{Deserialize, Serialize};

use super::discover::UserRef;
use super::{Client, Error};

#[derive(Serialize)]
struct Request<'a> {
    #[serde(flatten)]
    user: &'a UserRef,
    #[serde(skip_serializing_if = "str::is_empty")]
    otp_attempt: &'a str,
}

/// Response body (shared with the push check).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Whether the OTP was accepted.
    pub success: bool,
    /// Refusal text.
    pub message: String,
}

/// Checks `otp`; `success: false` is an error carrying `message`.
pub fn verify(client: &Client, user: &UserRef, otp: &str) -> Result<(), Error> {
    let r: Response = client
        .post(
            "/two_factor_manual_otp_check",
            &Request {
                user,
                otp_attempt: otp,
            },
        )?
        .body;
    if r.success {
        Ok(())
    } else {
        Err(Error::Message(r.message))
    }
}
