//! Synchronous client for Gitaly's `SSHService`, the three RPCs GitLab Shell runs for git over
//! SSH (gitlab-shell `internal/command/{uploadpack,receivepack,uploadarchive}/gitalycall.go`).
//!
//! Each call parses `gitaly.address` ([`address`]), builds a current-thread tokio runtime,
//! dials with Gitaly's backchannel handshake ([`connection`]: yamux, sidechannel accept),
//! attaches the metadata of gitaly.md §3.2 ([`metadata`], [`auth`]) and maps a failing status
//! to GitLab Shell's message ([`Error`]). A long-running caller reuses connections across calls
//! through a [`Pool`] ([`pool`]). Callers stay synchronous: the runtime runs on a
//! scoped helper thread (a pooled upload-pack runs on the pool's runtime instead) while the
//! calling thread writes git's output, so the calls must not be made from inside an async
//! runtime.

pub use gitaly_proto as proto;
pub use observe::{Rpc, RpcObserver, RpcType};
pub use pool::Pool;
pub use retry::{REPLAY_LIMIT, RetryPolicy};
pub use tls_trust::Trust;
pub use tokio_util::sync::CancellationToken;

pub mod address;
pub mod auth;
mod calls;
pub mod connection;
mod error;
pub mod metadata;
pub mod observe;
mod output;
pub mod pool;
mod retry;
pub mod sidechannel;
mod socket;
mod stdin;
mod tls;

pub use error::{
    Error, LIMIT_ERROR_TYPE_URL, LIMIT_MESSAGE, UNAVAILABLE_MESSAGE, encode_status_details,
    go_code_name,
};

/// Where Gitaly is: `/allowed` `gitaly.address` and `gitaly.token`, and `retry_config`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// `unix:/path`, `tcp://host:port`, `tls://host:port` or `dns:[//authority/]host:port`.
    pub address: String,
    /// Shared secret for the v2 token; empty means no `authorization` header.
    pub token: String,
    /// How a failed call is retried ([`RetryPolicy`]); `None`: never.
    pub retry: Option<RetryPolicy>,
    /// Whom a `tls://` address is checked against: the system roots plus GitLab Shell's
    /// `ssl_cert_dir` (`Trust::system`); unused for the other schemes.
    pub trust: tls_trust::Trust,
}

/// Per-call metadata GitLab Shell sends (gitaly.md §3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeta {
    /// All of `/allowed` `gitaly.features`; only `gitaly-feature-*` entries are sent.
    pub features: Vec<(String, String)>,
    /// Decimal `gl_key_id` (`"0"` when absent).
    pub key_id: String,
    /// `gl_key_type`, e.g. `key`.
    pub key_type: String,
    /// `/allowed` `gl_id`, e.g. `user-1`.
    pub user_id: String,
    /// `gl_username`.
    pub username: String,
    /// First field of `SSH_CONNECTION`.
    pub remote_ip: String,
    /// Correlation id (`x-gitlab-correlation-id`; not sent when empty).
    pub correlation_id: String,
    /// `gitlab-shell`; the client appends `-git-upload-pack` etc. for `x-gitlab-client-name`.
    pub client_name: String,
}

/// The local ends of git's standard streams, and the handle that cancels the call.
pub struct Stdio<'a> {
    /// Read on a separate thread until EOF (never joined: the call may end first).
    pub stdin: Box<dyn std::io::Read + Send + 'static>,
    /// git's stdout; written on the calling thread in arrival order, flushed whenever no more
    /// output is queued.
    pub stdout: &'a mut (dyn std::io::Write + Send),
    /// git's stderr; within one message it is written before stdout.
    pub stderr: &'a mut (dyn std::io::Write + Send),
    /// Cancels the call: the RPC is abandoned (its HTTP/2 stream reset and the Gitaly connection
    /// closed, so Gitaly cancels the RPC and kills git), and the call returns at once with
    /// [`Error::cancelled`]. The call cancels it itself when writing stdout or stderr fails
    /// (the client went away); an in-process SSH server cancels it when the channel closes.
    /// `CancellationToken::new()` when nobody else needs to cancel.
    pub cancel: CancellationToken,
}

/// `git-upload-pack` via `SSHUploadPackWithSidechannel`: git data flows over the sidechannel.
/// Returns the negotiation statistics from the response.
///
/// # Errors
/// See [`Error`]; its `Display` is what GitLab Shell prints.
pub fn upload_pack(
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadPackWithSidechannelRequest,
    io: Stdio,
) -> Result<Option<proto::PackfileNegotiationStatistics>, Error> {
    calls::upload_pack(t, m, r, io)
}

/// `git-receive-pack` via the bidi `SSHReceivePack`. `r` is the first message (without stdin).
/// Returns the exit status if the server sent one.
///
/// # Errors
/// See [`Error`].
pub fn receive_pack(
    t: &Target,
    m: &CallMeta,
    r: proto::SshReceivePackRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    calls::receive_pack(t, m, r, io)
}

/// `git-upload-archive` via the bidi `SSHUploadArchive`. `r` is the first message (repository
/// only). Returns the exit status if the server sent one.
///
/// # Errors
/// See [`Error`].
pub fn upload_archive(
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadArchiveRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    calls::upload_archive(t, m, r, io)
}
