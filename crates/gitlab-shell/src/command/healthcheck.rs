//! `gitlab-shell-check` (GitLab Shell `internal/command/healthcheck`, behaviour §1.5): is the
//! internal API reachable with this configuration, and is GitLab's Redis up?

use crate::api;
use crate::config::Config;
use crate::io::Io;
use crate::messages;

/// Runs the check (arguments are ignored). Returns the exit status.
pub fn run(config: &Config, correlation_id: &str, io: &mut Io) -> u8 {
    let result =
        api::Client::new(config, correlation_id).and_then(|client| api::check::check(&client));
    let report = match result {
        Err(e) => {
            io.err_line(&format!("{}: FAILED - {e}", messages::CHECK_API));
            return 1;
        }
        Ok(r) => r,
    };
    if io
        .out_line(&format!("{}: OK", messages::CHECK_API))
        .is_err()
    {
        return 1;
    }
    if !report.redis {
        io.err_line(&format!("{}: FAILED", messages::CHECK_REDIS));
        return 1;
    }
    match io.out_line(&format!("{}: OK", messages::CHECK_REDIS)) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::testkit::Kit;

    #[test]
    fn reports_api_and_redis() {
        let kit = Kit::new("");
        let (mut io, out, err) = Io::memory(b"");
        assert_eq!(run(&kit.config, "c", &mut io), 0);
        assert_eq!(
            out.text(),
            "Internal API available: OK\nRedis available via internal API: OK\n"
        );
        assert_eq!(err.text(), "");
        kit.api.update_fixture(|f| f.check.redis = false);
        let (mut io, out, err) = Io::memory(b"");
        assert_eq!(run(&kit.config, "c", &mut io), 1);
        assert_eq!(out.text(), "Internal API available: OK\n");
        assert_eq!(err.text(), "Redis available via internal API: FAILED\n");
    }
}
