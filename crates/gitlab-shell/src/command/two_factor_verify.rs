//! `2fa_verify` (GitLab Shell `internal/command/twofactorverify`, behaviour §7.5): prompt, then
//! race a push approval against a typed OTP for at most 30 s. Always exits 0 once the client is
//! created. The stdin reader thread is never joined: the process exits as soon as a result is
//! in, even while the read is still blocked.

use std::io::Write as _;
use std::sync::mpsc;
use std::time::Duration;

use crate::api::{discover, two_factor_manual_otp_check, two_factor_push_otp_check};
use crate::command::{Context, read_token};
use crate::error::Error;
use crate::io::Io;
use crate::messages;

const TIMEOUT: Duration = Duration::from_secs(30);
const OTP_LIMIT: usize = 64;

fn failed(e: impl std::fmt::Display) -> String {
    format!("{}: {e}", messages::OTP_FAILED)
}

/// Runs the command with the standard 30 s deadline.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    run_with_timeout(ctx, io, TIMEOUT)
}

/// Runs the command with `timeout` (tests use a short one).
pub fn run_with_timeout(ctx: &Context<'_>, io: &mut Io, timeout: Duration) -> Result<(), Error> {
    let client = ctx.api()?;
    io.stdout.write_all(messages::OTP_PROMPT.as_bytes())?;
    io.stdout.flush()?;
    let (tx, rx) = mpsc::channel::<String>();

    let (push_client, push_tx, identity) = (client.clone(), tx.clone(), ctx.identity.clone());
    std::thread::spawn(move || {
        let ok = discover::user_ref(&push_client, &identity)
            .and_then(|user| two_factor_push_otp_check::verify(&push_client, &user));
        // A push failure is silent: only the typed OTP or the deadline can answer then.
        if ok.is_ok() {
            let _ = push_tx.send(messages::OTP_PUSH_SUCCESS.to_owned());
        }
    });

    let mut stdin = io.take_stdin();
    let identity = ctx.identity.clone();
    std::thread::spawn(move || {
        let otp = read_token(&mut stdin, OTP_LIMIT);
        let message = if otp.is_empty() {
            failed(messages::OTP_BLANK)
        } else {
            match discover::user_ref(&client, &identity)
                .and_then(|user| two_factor_manual_otp_check::verify(&client, &user, &otp))
            {
                Ok(()) => messages::OTP_SUCCESS.to_owned(),
                Err(e) => failed(e),
            }
        };
        let _ = tx.send(message);
    });

    let message = rx
        .recv_timeout(timeout)
        .unwrap_or_else(|_| failed(messages::DEADLINE_EXCEEDED));
    tracing::info!(message = %message, "Two factor verify command finished");
    io.stdout.write_all(format!("\n{message}\n").as_bytes())?;
    io.stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice, bob};
    use crate::messages;

    #[test]
    fn typed_otp_is_checked() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "2fa_verify", b"123456\n");
        assert_eq!(run.status, 0);
        assert_eq!(run.out(), format!("OTP: \n{}\n", messages::OTP_SUCCESS));
        let run = kit.run(alice(), "2fa_verify", b"\n");
        assert_eq!(
            run.out(),
            format!("OTP: \nOTP validation failed: {}\n", messages::OTP_BLANK)
        );
        let run = kit.run(bob(), "2fa_verify", b"123456\n");
        assert_eq!(run.status, 0);
        assert!(
            run.out().starts_with("OTP: \nOTP validation failed: "),
            "{}",
            run.out()
        );
    }
}
