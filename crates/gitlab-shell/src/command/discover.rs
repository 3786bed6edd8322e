//! The welcome command (empty `SSH_ORIGINAL_COMMAND`; GitLab Shell `internal/command/discover`,
//! behaviour §7.1).

use crate::api::discover;
use crate::command::Context;
use crate::error::Error;
use crate::io::Io;
use crate::messages;

/// Prints `Welcome to GitLab, @user!` (or Anonymous).
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let client = ctx.api().map_err(Error::Discover)?;
    let user = discover::get_by_identity(&client, &ctx.args.identity).map_err(Error::Discover)?;
    let line = if user.is_anonymous() {
        messages::WELCOME_ANONYMOUS.to_owned()
    } else {
        messages::welcome(&user.username)
    };
    io.out_line(&line)?;
    Ok(())
}
