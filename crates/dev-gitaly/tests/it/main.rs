//! Integration tests of the dev Gitaly through real clients: tonic's generated client (plain
//! HTTP/2), a hand-written backchannel/sidechannel client, and real `git` via the
//! `gitaly-ssh` example built on the `gitaly-client` crate.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers panic on set-up failures, like the tests"
)]

mod push;
mod rpc;
mod sidechannel;
mod support;
