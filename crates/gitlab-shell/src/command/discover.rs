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
    let user = discover::get_by_identity(&client, ctx.identity).map_err(Error::Discover)?;
    let line = if user.is_anonymous() {
        messages::WELCOME_ANONYMOUS.to_owned()
    } else {
        messages::welcome(&user.username)
    };
    io.out_line(&line)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::command::testkit::{Kit, alice, bob, framed};
    use crate::identity::Identity;

    #[test]
    fn welcomes_the_user_of_the_key() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "", b"");
        assert_eq!(
            (run.status, run.out(), run.stderr.as_str()),
            (0, "Welcome to GitLab, @alice!\n".into(), "")
        );
        let run = kit.run(bob(), "", b"");
        assert_eq!(run.out(), "Welcome to GitLab, @bob!\n");
        let run = kit.run(Identity::Username("alice".into()), "", b"");
        assert_eq!(run.out(), "Welcome to GitLab, @alice!\n");
        let seen = kit.api.requests_to("/discover");
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].query_param("key_id").as_deref(), Some("1"));
        assert_eq!(seen[2].query_param("username").as_deref(), Some("alice"));
    }

    #[test]
    fn unknown_key_is_anonymous_and_no_identity_fails() {
        let kit = Kit::new("");
        let run = kit.run(crate::identity::Identity::KeyId("99".into()), "", b"");
        assert_eq!(
            (run.status, run.out()),
            (0, "Welcome to GitLab, Anonymous!\n".into())
        );
        let run = kit.run(Identity::None, "", b"");
        assert_eq!(run.status, 1);
        assert_eq!(
            run.stderr,
            framed("Failed to get username: who='' is invalid")
        );
    }

    #[test]
    fn unreachable_api_is_framed() {
        let kit = Kit::new("");
        let mut config = kit.config.clone();
        config.gitlab_url = "http://127.0.0.1:1".into();
        let (mut io, _, err) = crate::io::Io::memory(b"");
        let session = crate::command::Session {
            config: &config,
            identity: alice(),
            env: crate::sshenv::SshEnv::from_values("1.1.1.1 1 2.2.2.2 22", "".into(), ""),
            correlation_id: "c",
            observer: crate::observe::noop(),
            gitaly_pool: None,
        };
        assert_eq!(crate::command::execute(&session, &mut io), 1);
        assert_eq!(
            err.text(),
            framed("Failed to get username: Internal API unreachable")
        );
    }
}
