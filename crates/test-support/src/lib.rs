//! Test support for GitLab Shell's end-to-end tests, the demo and the benchmark.
//!
//! - [`Sandbox`]: a temporary GitLab Shell root (copies of the built `bin/*`, `config.yml`,
//!   `.gitlab_shell_secret`) with the stub internal API and the dev Gitaly running in-process and
//!   bare repositories on a storage folder; runs binaries exactly as sshd runs them.
//! - [`RealGitaly`]: GitLab's own Gitaly (built by `support/real-gitaly.sh`), which a sandbox
//!   starts instead of the dev Gitaly when asked ([`GitalyKind`], `GITLAB_SHELL_TEST_GITALY`).
//! - [`Sshd`]: the real OpenSSH server on 127.0.0.1 with a private config rendered from
//!   `support/sshd_config.tmpl`.
//! - [`Cmd`] / [`Run`]: running programs with a deadline and asserting on exit code and output,
//!   printing command, environment, stdout and stderr on failure.
//! - [`secrets`]: the log scan for leaked secrets that every [`Sandbox`] runs when dropped.
//! - [`ClientKey`], [`GitEnv`], [`Commit`]: client keys, deterministic git and seeded repositories.

pub mod git;
pub mod keys;
pub mod paths;
pub mod procs;
pub mod real_gitaly;
pub mod run;
pub mod sandbox;
pub mod secrets;
pub mod sshd;
pub mod users;

pub use dev_gitaly;
pub use stub_api;

pub use git::{Commit, GitEnv, random_bytes};
pub use keys::ClientKey;
pub use real_gitaly::{GitalyKind, RealGitaly};
pub use run::{Cmd, Run, Spawned};
pub use sandbox::{ApiTransport, Gitaly, Sandbox, SandboxBuilder};
pub use sshd::Sshd;
