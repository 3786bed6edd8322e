//! Errors of a Gitaly call, displayed exactly as GitLab Shell prints them
//! (`processGitalyError` in gitlab-shell `internal/handler/exec.go`, Go `status.Error()`).

use prost::Message;

/// Description GitLab Shell substitutes for every `Unavailable` status.
pub const UNAVAILABLE_MESSAGE: &str =
    "The git server, Gitaly, is not available at this time. Please contact your administrator.";
/// Description for an `Unavailable` status carrying a `gitaly.LimitError` detail.
pub const LIMIT_MESSAGE: &str = "GitLab is currently unable to handle this request due to load.";
/// Type URL of the `gitaly.LimitError` status detail.
pub const LIMIT_ERROR_TYPE_URL: &str = "type.googleapis.com/gitaly.LimitError";

/// Why a Gitaly call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `gitaly.address` was empty.
    #[error("no gitaly_address given")]
    NoAddress,
    /// `gitaly.address` had an unknown scheme.
    #[error("invalid connection string: \"{0}\"")]
    InvalidAddress(String),
    /// A gRPC status (already reworded for `Unavailable`); displayed like Go's `status.Error()`.
    #[error("rpc error: code = {} desc = {message}", go_code_name(*.code))]
    Rpc {
        /// The gRPC code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// Reading local stdin failed (Gitaly's `stdin send error: %w`).
    #[error("stdin send error: {0}")]
    Stdin(String),
    /// The sidechannel failed (bad framing, unexpected band, handshake, I/O); shown as is.
    #[error("{0}")]
    Sidechannel(String),
    /// A local failure outside gRPC (runtime start-up, writing to stdout/stderr); shown as is.
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// `true` for gRPC `Internal`: git already relayed its own stderr, GitLab Shell prints nothing
    /// and exits 1.
    #[must_use]
    pub fn is_silent(&self) -> bool {
        matches!(
            self,
            Error::Rpc {
                code: tonic::Code::Internal,
                ..
            }
        )
    }

    /// The gRPC code, when this is an RPC error.
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Converts a tonic status, applying GitLab Shell's `Unavailable` rewording.
    #[must_use]
    pub fn from_status(status: &tonic::Status) -> Self {
        if status.code() == tonic::Code::Unavailable {
            return Self::unavailable(has_limit_error(status.details()));
        }
        if is_transport_failure(status) {
            return Self::unavailable(false);
        }
        Error::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }

    /// The error of a call cancelled through [`crate::Stdio::cancel`]: what Go's gRPC client
    /// says for a cancelled context.
    #[must_use]
    pub fn cancelled() -> Self {
        Error::Rpc {
            code: tonic::Code::Cancelled,
            message: "context canceled".to_owned(),
        }
    }

    /// The reworded `Unavailable` error (connection failures end up here too, as grpc-go's
    /// non-blocking dial reports them as `Unavailable`).
    #[must_use]
    pub fn unavailable(limit: bool) -> Self {
        let message = if limit {
            LIMIT_MESSAGE
        } else {
            UNAVAILABLE_MESSAGE
        };
        Error::Rpc {
            code: tonic::Code::Unavailable,
            message: message.to_owned(),
        }
    }
}

/// A status tonic made up locally from a broken connection (it carries the transport error as
/// its source; statuses sent by Gitaly never do). grpc-go reports a lost connection as
/// `Unavailable`, while tonic says `Unknown`/`Internal` ("h2 protocol error: …") or, for a
/// connection closed under a pending call, `Cancelled` ("operation was canceled"); `Internal`
/// would otherwise be silent. (A call cancelled on purpose is [`Error::cancelled`], never a
/// converted status.)
fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Internal | tonic::Code::Cancelled
    ) && std::error::Error::source(status).is_some()
}

/// grpc-go's `codes.Code.String()` names (tonic's differ: `Ok`, `Cancelled`).
#[must_use]
pub fn go_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// `google.rpc.Status` as carried in `grpc-status-details-bin` (only what we read).
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// Whether encoded status details contain a `gitaly.LimitError` (any type URL prefix, like
/// anypb's resolution by full message name).
fn has_limit_error(details: &[u8]) -> bool {
    if details.is_empty() {
        return false;
    }
    RpcStatus::decode(details).is_ok_and(|status| {
        status.details.iter().any(|any| {
            any.type_url == LIMIT_ERROR_TYPE_URL || any.type_url.ends_with("/gitaly.LimitError")
        })
    })
}

/// Encodes `google.rpc.Status` details carrying the given `(type_url, value)` entries; lets tests
/// (here and in other crates) build a status with a `gitaly.LimitError` detail.
#[must_use]
pub fn encode_status_details(
    code: tonic::Code,
    message: &str,
    details: &[(&str, Vec<u8>)],
) -> Vec<u8> {
    RpcStatus {
        code: code as i32,
        message: message.to_owned(),
        details: details
            .iter()
            .map(|(type_url, value)| Any {
                type_url: (*type_url).to_owned(),
                value: value.clone(),
            })
            .collect(),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn shown(status: &Status) -> String {
        Error::from_status(status).to_string()
    }

    #[test]
    fn error_display_table() {
        let limit = gitaly_proto::LimitError {
            error_message: "too many".into(),
            retry_after: None,
        };
        let limit_details = encode_status_details(
            Code::Unavailable,
            "x",
            &[(LIMIT_ERROR_TYPE_URL, limit.encode_to_vec())],
        );
        let other_details = encode_status_details(
            Code::Unavailable,
            "x",
            &[("type.googleapis.com/google.rpc.RetryInfo", vec![])],
        );
        let table: Vec<(Status, &str)> = vec![
            (
                Status::unavailable("connection refused"),
                "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.",
            ),
            (
                Status::with_details(Code::Unavailable, "limit", limit_details.into()),
                "rpc error: code = Unavailable desc = GitLab is currently unable to handle this request due to load.",
            ),
            (
                Status::with_details(Code::Unavailable, "other", other_details.into()),
                "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.",
            ),
            (
                Status::with_details(Code::Unavailable, "garbage", vec![0xff, 0xff].into()),
                "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.",
            ),
            (
                Status::cancelled("user canceled the push"),
                "rpc error: code = Canceled desc = user canceled the push",
            ),
            (
                Status::invalid_argument("empty GlId"),
                "rpc error: code = InvalidArgument desc = empty GlId",
            ),
            (
                Status::permission_denied("permission denied: wrong hmac signature"),
                "rpc error: code = PermissionDenied desc = permission denied: wrong hmac signature",
            ),
            (
                Status::unauthenticated("authentication required"),
                "rpc error: code = Unauthenticated desc = authentication required",
            ),
            (
                Status::deadline_exceeded("slow"),
                "rpc error: code = DeadlineExceeded desc = slow",
            ),
            (Status::not_found(""), "rpc error: code = NotFound desc = "),
            (Status::ok("fine"), "rpc error: code = OK desc = fine"),
            (
                Status::internal("cmd wait: exit status 128"),
                "rpc error: code = Internal desc = cmd wait: exit status 128",
            ),
        ];
        for (status, want) in table {
            assert_eq!(shown(&status), want);
        }
        assert_eq!(Error::NoAddress.to_string(), "no gitaly_address given");
        assert_eq!(
            Error::InvalidAddress("x:y".into()).to_string(),
            "invalid connection string: \"x:y\""
        );
        assert_eq!(
            Error::Stdin("broken pipe".into()).to_string(),
            "stdin send error: broken pipe"
        );
        assert_eq!(
            Error::Sidechannel("unexpected band: 3".into()).to_string(),
            "unexpected band: 3"
        );
    }

    #[test]
    fn locally_made_transport_statuses_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let local = Status::from_error(Box::new(io));
        assert_eq!(local.code(), Code::Unknown);
        let err = Error::from_status(&local);
        assert_eq!(err, Error::unavailable(false));
        assert!(!err.is_silent());
        // The same codes sent by the server keep their text.
        assert_eq!(
            shown(&Status::unknown("boom")),
            "rpc error: code = Unknown desc = boom"
        );
        // hyper's "operation was canceled" for a connection closed under the call.
        let mut closed = Status::cancelled("operation was canceled");
        closed.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection closed",
        )));
        assert_eq!(Error::from_status(&closed), Error::unavailable(false));
        assert_eq!(
            shown(&Status::cancelled("user canceled the push")),
            "rpc error: code = Canceled desc = user canceled the push"
        );
    }

    #[test]
    fn only_internal_is_silent() {
        assert!(Error::from_status(&Status::internal("x")).is_silent());
        assert!(!Error::from_status(&Status::unavailable("x")).is_silent());
        assert!(!Error::from_status(&Status::cancelled("x")).is_silent());
        assert!(!Error::NoAddress.is_silent());
    }

    #[test]
    fn every_code_has_its_go_name() {
        let names: Vec<&str> = (0..=16).map(|i| go_code_name(Code::from_i32(i))).collect();
        assert_eq!(
            names.join(","),
            "OK,Canceled,Unknown,InvalidArgument,DeadlineExceeded,NotFound,AlreadyExists,PermissionDenied,\
             ResourceExhausted,FailedPrecondition,Aborted,OutOfRange,Unimplemented,Internal,Unavailable,\
             DataLoss,Unauthenticated"
        );
    }
}
