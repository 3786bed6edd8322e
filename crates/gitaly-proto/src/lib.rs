//! Generated protobuf messages and tonic client/server for Gitaly's `SSHService`.
//!
//! The `.proto` files under `proto/` are a hand-written, trimmed subset of Gitaly's (package
//! `gitaly`, same field numbers), compiled at build time with `protox` so no system `protoc` is
//! needed. Shared by the gitlab-shell client and the dev Gitaly in `test-support`.

#![allow(clippy::all, clippy::pedantic, reason = "generated code")]
#![allow(missing_docs)]

tonic::include_proto!("gitaly");
