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
        let user = discover::user_ref(&client, ctx.identity)?;
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

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice};
    use crate::messages;

    #[test]
    fn yes_regenerates_codes_anything_else_does_not() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "2fa_recovery_codes", b"yes\n");
        assert_eq!(run.status, 0);
        assert_eq!(
            run.out(),
            format!(
                "{}{}aaaa-1111\nbbbb-2222{}",
                messages::RECOVERY_QUESTION,
                messages::RECOVERY_CODES_HEAD,
                messages::RECOVERY_CODES_TAIL
            )
        );
        let run = kit.run(alice(), "2fa_recovery_codes", b"no\n");
        assert_eq!(
            run.out(),
            format!(
                "{}{}",
                messages::RECOVERY_QUESTION,
                messages::RECOVERY_DECLINED
            )
        );
        assert_eq!(kit.api.requests_to("/two_factor_recovery_codes").len(), 1);
    }
}
