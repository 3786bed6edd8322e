//! The `/allowed` step shared by the git and LFS commands (GitLab Shell
//! `internal/command/shared/accessverifier`): ask, print the console messages, refuse on
//! `status: false`.

use crate::api::{self, allowed};
use crate::command::Context;
use crate::console;
use crate::error::Error;
use crate::io::Io;

/// Verifies `action` on `repo`; the returned access may be a 300 custom action.
pub fn verify(
    ctx: &Context<'_>,
    client: &api::Client,
    action: &str,
    repo: &str,
    io: &mut Io,
) -> Result<allowed::Access, Error> {
    let identity = &ctx.identity;
    let mut request = allowed::Request::new(action, repo, identity, &ctx.env.remote_addr);
    request.namespace_path = ctx.env.namespace_path.clone();
    let access = allowed::verify(client, &request, identity)?;
    console::display_info(&mut io.stderr, &access.response.gl_console_messages)?;
    if !access.response.status {
        return Err(Error::Message(access.response.message.clone()));
    }
    ctx.observer.access_granted(&access.response);
    Ok(access)
}
