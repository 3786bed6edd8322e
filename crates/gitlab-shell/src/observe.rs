//! Hooks a front door hands the command layer to watch what a session does, without any
//! process-global state in the command layer (docs/gitlab-sshd.md, "Probes and metrics").
//! gitlab-sshd counts them into its Prometheus metrics; the classic binaries pass [`noop`].
//! GitLab Shell counts the same things through promhttp round-trippers and counters in its
//! `internal/metrics` package.

use std::sync::Arc;
use std::time::Duration;

use crate::command::Command;
use crate::error::Error;

/// What the command layer reports. Every method has an empty default.
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// An internal-API request (one attempt) is about to be sent.
    fn http_request_started(&self) {}
    /// That attempt ended: `status` is the HTTP status when an answer arrived (`None` for a
    /// transport failure), `method` the request method (`GET`, `POST`).
    fn http_request_finished(&self, _method: &str, _status: Option<u16>, _elapsed: Duration) {}
    /// The session's command was chosen (after the feature gates), before it runs.
    fn command_built(&self, _command: &Command) {}
    /// The session's command failed with `error` (after it was chosen).
    fn command_failed(&self, _error: &Error) {}
    /// `/allowed` granted the session's git or LFS command access (`status: true`, before
    /// anything runs): gitlab-sshd shows the project of `response` on its `access: finish`
    /// line (docs/gitlab-sshd.md, "Logs").
    fn access_granted(&self, _response: &crate::api::allowed::Response) {}
}

/// The observer that ignores everything (the classic binaries, tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// A shared [`NoObserver`].
pub fn noop() -> Arc<dyn Observer> {
    Arc::new(NoObserver)
}
