//! The crate's error type and the one mapping from an error to what the user sees and the exit
//! code ([`report`]), after `cmd/gitlab-shell/main.go`: pre-execute errors unframed, execute
//! errors in the framed warning block, gRPC `Internal` silent; always exit 1.

use std::process::ExitCode;

use crate::io::Io;
use crate::{api, console, messages};

/// Everything `gitlab-shell` can fail with; `Display` is the customer-facing text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SSH command line was refused before a command was chosen (unframed).
    #[error(transparent)]
    Args(#[from] crate::args::shell::Error),
    /// Unknown or disabled command (unframed).
    #[error("{}", messages::DISALLOWED_COMMAND)]
    UnknownCommand,
    /// Known command with bad arity or operation (framed).
    #[error("{}", messages::DISALLOWED_COMMAND)]
    DisallowedCommand,
    /// An internal API failure (framed).
    #[error(transparent)]
    Api(#[from] api::Error),
    /// `/discover` failed in the welcome command (framed).
    #[error("{prefix}: {0}", prefix = messages::FAILED_TO_GET_USERNAME)]
    Discover(api::Error),
    /// Any other framed text (refusals, usage).
    #[error("{0}")]
    Message(String),
    /// A Gitaly call failed (framed, or silent for gRPC `Internal`).
    #[error(transparent)]
    Gitaly(#[from] gitaly_client::Error),
    /// Writing to the client failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Printed as a plain stderr line rather than framed.
    pub fn is_unframed(&self) -> bool {
        matches!(self, Error::Args(_) | Error::UnknownCommand)
    }

    /// Nothing is printed (git's own stderr was already relayed by Gitaly).
    pub fn is_silent(&self) -> bool {
        matches!(self, Error::Gitaly(e) if e.is_silent())
    }

    /// Whether the failure is the server's side's (GitLab Shell 14.56's session-error rules,
    /// docs/gitlab-sshd.md, "Probes and metrics"): counted in
    /// `gitlab_sli:shell_sshd_sessions:errors_total`. Not counted: the internal API refusing the
    /// user (a 4xx answer, a `status`/`success: false` message), refused commands, the client
    /// going away, gRPC `Canceled` and `Unavailable`, and git's own refusals that Gitaly reports
    /// as `Internal` (`not our ref`, a broken pipe) or a response copy cut by EOF.
    pub fn is_session_error(&self) -> bool {
        match self {
            Error::Args(_) | Error::UnknownCommand | Error::DisallowedCommand => false,
            Error::Message(_) | Error::Io(_) => false,
            Error::Api(e) | Error::Discover(e) => is_system_api_error(e),
            Error::Gitaly(e) => {
                let text = e.to_string();
                if text.contains("copy response: EOF") {
                    return false;
                }
                match e.code() {
                    Some(tonic::Code::Cancelled) | Some(tonic::Code::Unavailable) => false,
                    Some(tonic::Code::Internal) => {
                        !(text.contains(
                            "exit status 128, stderr: \"fatal: git upload-pack: not our ref ",
                        ) || text.contains("signal: broken pipe"))
                    }
                    _ => true,
                }
            }
        }
    }
}

/// A failure of the internal API itself (GitLab Shell's `APIError.System`): unreachable, a 5xx,
/// an answer that cannot be read or a client that cannot be built; a 4xx is the user's.
fn is_system_api_error(e: &api::Error) -> bool {
    match e {
        api::Error::Api { status, .. } | api::Error::Status(status) => *status >= 500,
        api::Error::Message(_) => false,
        api::Error::Unreachable
        | api::Error::Parse
        | api::Error::Redirect { .. }
        | api::Error::Client(_) => true,
    }
}

/// Shows `err` the way GitLab Shell does and returns exit code 1.
pub fn report(err: &Error, io: &mut Io) -> ExitCode {
    ExitCode::from(report_status(err, io))
}

/// [`report`] as a plain exit status (for an SSH server's `exit-status`): always 1.
pub fn report_status(err: &Error, io: &mut Io) -> u8 {
    if err.is_silent() {
        // Nothing to show.
    } else if err.is_unframed() {
        io.err_line(&err.to_string());
    } else {
        let _ = console::display_warning(&mut io.stderr, &err.to_string());
    }
    1
}

/// How gitlab-sshd shows a command's failure (docs/gitlab-sshd.md, "Exit statuses"): the
/// framed warning block holding `ERROR: <message>` and a newline, nothing for gRPC `Internal`;
/// exit status 1.
pub fn report_status_sshd(err: &Error, io: &mut Io) -> u8 {
    if !err.is_silent() {
        let _ = console::display_warning(&mut io.stderr, &format!("ERROR: {err}\n"));
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_error_accounting_follows_gitlab_shell() {
        use tonic::Code as code;
        let status =
            |c, msg: &str| Error::Gitaly(gitaly_client::Error::from_status(&tonic_status(c, msg)));
        let counted = [
            Error::Api(api::Error::Unreachable),
            Error::Api(api::Error::Status(500)),
            Error::Api(api::Error::Api {
                status: 503,
                message: "down".into(),
            }),
            Error::Discover(api::Error::Parse),
            status(code::Internal, "pack-objects died"),
            status(code::Unknown, "boom"),
            status(code::NotFound, "repository not found"),
        ];
        for e in &counted {
            assert!(e.is_session_error(), "{e:?}");
        }
        let not_counted = [
            Error::UnknownCommand,
            Error::DisallowedCommand,
            Error::Message("You are not allowed".into()),
            Error::Api(api::Error::Api {
                status: 403,
                message: "no".into(),
            }),
            Error::Api(api::Error::Status(404)),
            Error::Io(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
            status(code::Cancelled, "context canceled"),
            status(code::Unavailable, "gone"),
            status(
                code::Internal,
                "exit status 128, stderr: \"fatal: git upload-pack: not our ref 0123\"",
            ),
            status(code::Internal, "signal: broken pipe"),
            status(code::Unknown, "copy response: EOF"),
        ];
        for e in &not_counted {
            assert!(!e.is_session_error(), "{e:?}");
        }
    }

    fn tonic_status(code: tonic::Code, msg: &str) -> tonic::Status {
        tonic::Status::new(code, msg)
    }

    #[test]
    fn sshd_display_prefixes_error_and_ends_in_a_newline() {
        let (mut io, _, err) = Io::memory(b"");
        assert_eq!(
            report_status_sshd(&Error::Message("No way".into()), &mut io),
            1
        );
        let ruler = "=".repeat(72);
        assert_eq!(
            err.text(),
            format!(
                "remote: \nremote: {ruler}\nremote: \nremote: ERROR: No way\n\nremote: \nremote: {ruler}\nremote: \n"
            )
        );
    }
}
