//! `POST /api/v4/internal/two_factor_push_otp_check` (GitLab Shell
//! `internal/gitlabnet/twofactorverify`): ask the user's device to approve the login.

use super::discover::UserRef;
use super::two_factor_manual_otp_check::Response;
use super::{Client, Error};

/// Waits for the push approval; `success: false` is an error carrying `message`.
pub fn verify(client: &Client, user: &UserRef) -> Result<(), Error> {
    let r: Response = client.post("/two_factor_push_otp_check", user)?.body;
    if r.success {
        Ok(())
    } else {
        Err(Error::Message(r.message))
    }
}
