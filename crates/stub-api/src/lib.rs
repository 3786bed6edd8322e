//! A stub of GitLab's internal API (`/api/v4/internal/*` and the Geo `proxy_git_ssh`
//! endpoints) for tests, the demo and the benchmark.
//!
//! It answers from a YAML [`Fixture`] the way GitLab Rails' `lib/api/internal/base.rb` does
//! (same JSON fields, status codes and messages), listens on TCP (`127.0.0.1`) and/or a unix
//! socket, optionally checks the `Gitlab-Shell-Api-Request` JWT, records every request so tests
//! can assert on what GitLab Shell or a Gitaly hook sent, and can inject faults.
//!
//! ```no_run
//! use stub_api::{Fixture, StartOptions, StubApi};
//!
//! let fixture = Fixture::from_file("crates/stub-api/fixtures/demo.yml")?;
//! let api = StubApi::start(fixture, StartOptions::default())?;
//! let gitlab_url = api.tcp_url(); // http://127.0.0.1:<port>
//! // ... run gitlab-shell ...
//! assert!(api.requests().iter().any(|r| r.path == "/api/v4/internal/allowed"));
//! # let _ = gitlab_url;
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Modules: [`fixture`] (the YAML schema), [`api`] (the endpoint logic, pure), `server`
//! (listeners, JWT check, recording, faults).

pub mod api;
pub mod fixture;
pub mod lfs;
pub mod primary;
mod server;

pub use fixture::Fixture;
pub use server::{Fault, RecordedRequest, StartOptions, StubApi, gitlab_url_for_socket};
