//! `2fa_recovery_codes` (GitLab Shell `internal/command/twofactorrecover`, behaviour §7.4):
//! ask, read one answer line, regenerate the codes on `yes`. Always exits 0.

use std::io::Write as _;

use crate::api::{discover, two_factor_recovery_codes};
use crate::command::{Context, read_token};
use crate::error::Error;
use crate::io::Io;
use crate::messages;

/// Go reads the answer through a 1024-byte `LimitReader`.
const ANSWER_LIMIT: usize = 1024;

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    io.stdout
        .write_all(messages::RECOVERY_QUESTION.as_bytes())?;
    io.stdout.flush()?;
    if read_token(&mut io.stdin, ANSWER_LIMIT) != "yes" {
        io.stdout
            .write_all(messages::RECOVERY_DECLINED.as_bytes())?;
        return Ok(());
    }
    let codes = ctx.api().and_then(|client| {
        let user = discover::user_ref(&client, &ctx.args.identity)?;
        two_factor_recovery_codes::generate(&client, &user)
    });
    let text = match codes {
        Ok(codes) => format!(
            "{}{}{}",
            messages::RECOVERY_CODES_HEAD,
            codes.join("\n"),
            messages::RECOVERY_CODES_TAIL
        ),
        Err(e) => format!("{}{e}\n", messages::RECOVERY_ERROR),
    };
    io.stdout.write_all(text.as_bytes())?;
    io.stdout.flush()?;
    Ok(())
}
