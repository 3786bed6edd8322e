//! `personal_access_token <name> <scope1[,scope2,...]> [ttl_days]` (GitLab Shell
//! `internal/command/personalaccesstoken`, behaviour §7.6).
//!
//! The expiry uses the *local* date. `time` can only read the local offset while the process
//! is single-threaded, so "today" is taken in [`Plan::today`] when the command is built, before
//! the HTTP client starts its thread.

use std::io::Write as _;

use time::{Date, Duration, OffsetDateTime};

use crate::api::{discover, personal_access_token};
use crate::command::Context;
use crate::error::Error;
use crate::io::Io;
use crate::messages;

/// Today's local date, captured early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Local date at start-up.
    pub today: Date,
}

impl Plan {
    /// Captures the local date (UTC if the offset cannot be determined).
    pub fn today() -> Plan {
        let now = OffsetDateTime::now_local().unwrap_or_else(|_| OffsetDateTime::now_utc());
        Plan { today: now.date() }
    }
}

/// Name, filtered scopes and expiry from the SSH words.
pub fn parse(
    words: &[String],
    allowed: &[String],
    today: Date,
) -> Result<personal_access_token::Request, Error> {
    if words.len() < 3 || words.len() > 4 {
        return Err(Error::Message(messages::PAT_USAGE.into()));
    }
    let requested = words[2].split(',').map(str::to_owned);
    let scopes: Vec<String> = if allowed.is_empty() {
        requested.collect()
    } else {
        requested.filter(|s| allowed.contains(s)).collect()
    };
    // Go keeps a nil slice (JSON null) when filtering dropped every scope.
    let scopes = if scopes.is_empty() && !allowed.is_empty() {
        None
    } else {
        Some(scopes)
    };
    let days = match words.get(3) {
        None => 30,
        Some(raw) => match raw.parse::<i64>() {
            Ok(ttl) if ttl >= 0 => ttl.saturating_add(1),
            _ => return Err(Error::Message(messages::pat_invalid_ttl(raw))),
        },
    };
    let expires = today
        .checked_add(Duration::days(days.min(3_000_000)))
        .ok_or_else(|| Error::Message(messages::pat_invalid_ttl(&words[3])))?;
    let f = time::macros::format_description!("[year]-[month]-[day]");
    Ok(personal_access_token::Request {
        user: Default::default(),
        name: words[1].clone(),
        scopes,
        expires_at: expires.format(&f).unwrap_or_default(),
    })
}

/// Runs the command.
pub fn run(ctx: &Context<'_>, plan: &Plan, io: &mut Io) -> Result<(), Error> {
    let mut request = parse(ctx.words, &ctx.config.pat_allowed_scopes, plan.today)?;
    tracing::info!(name = %request.name, scopes = ?request.scopes, expires_at = %request.expires_at, "personalaccesstoken: execute: requesting token");
    let client = ctx.api()?;
    request.user = discover::user_ref(&client, ctx.identity)?;
    let r = personal_access_token::create(&client, &request)?;
    let text = format!(
        "Token:   {}\nScopes:  {}\nExpires: {}\n",
        r.token,
        r.scopes.join(","),
        r.expires_at.unwrap_or_default()
    );
    io.stdout.write_all(text.as_bytes())?;
    io.stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn w(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parse_table() {
        let today = date!(2026 - 01 - 30);
        let r = parse(
            &w(&["personal_access_token", "n", "api,read_user"]),
            &[],
            today,
        )
        .unwrap();
        assert_eq!(r.expires_at, "2026-03-01");
        assert_eq!(r.scopes, Some(w(&["api", "read_user"])));
        let r = parse(&w(&["personal_access_token", "n", "api", "0"]), &[], today).unwrap();
        assert_eq!(r.expires_at, "2026-01-31");
        let r = parse(
            &w(&["personal_access_token", "n", "api,read_api", "2"]),
            &w(&["read_api"]),
            today,
        )
        .unwrap();
        assert_eq!(r.scopes, Some(w(&["read_api"])));
        assert_eq!(r.expires_at, "2026-02-02");
        let r = parse(
            &w(&["personal_access_token", "n", "api"]),
            &w(&["read_api"]),
            today,
        )
        .unwrap();
        assert_eq!(r.scopes, None);
        for bad in [
            &["personal_access_token", "n"][..],
            &["personal_access_token", "n", "s", "1", "x"][..],
        ] {
            assert_eq!(
                parse(&w(bad), &[], today).unwrap_err().to_string(),
                messages::PAT_USAGE
            );
        }
        for ttl in ["-1", "x", "1.5", "99999999999999999999"] {
            assert_eq!(
                parse(&w(&["personal_access_token", "n", "s", ttl]), &[], today)
                    .unwrap_err()
                    .to_string(),
                format!("Invalid value for days_ttl: '{ttl}'")
            );
        }
    }
}

#[cfg(test)]
mod command_tests {
    use crate::command::testkit::{Kit, alice, framed};

    #[test]
    fn creates_a_token_with_the_allowed_scopes() {
        let kit = Kit::new("");
        let run = kit.run(
            alice(),
            "personal_access_token mytoken api,read_repository 7",
            b"",
        );
        assert_eq!(run.status, 0, "{}", run.stderr);
        let out = run.out();
        assert!(
            out.starts_with(
                "Token:   glpat-stubtoken0000000000\nScopes:  api,read_repository\nExpires: "
            ),
            "{out}"
        );
        let sent = kit.api.requests_to("/personal_access_token");
        assert_eq!(sent[0].body["name"], "mytoken");
        assert_eq!(sent[0].body["key_id"], "1");
    }

    #[test]
    fn usage_and_disabled() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "personal_access_token onlyname", b"");
        assert_eq!(run.status, 1);
        assert_eq!(run.stderr, framed(crate::messages::PAT_USAGE));
        let kit = Kit::new("pat:\n  enabled: false\n");
        let run = kit.run(alice(), "personal_access_token n api", b"");
        assert_eq!(
            (run.status, run.stderr.as_str()),
            (1, "Disallowed command\n")
        );
    }
}
