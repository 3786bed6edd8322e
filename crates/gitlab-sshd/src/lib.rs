//! gitlab-sshd: GitLab Shell's own SSH server (docs/gitlab-sshd.md). One process serves every
//! SSH connection with russh; each `exec`/`shell` runs the same command code as the classic
//! `gitlab-shell key-N` (`gitlab_shell::command::execute`), in-process.
//!
//! Map: [`access`] (the `access: finish` line), [`alloc`] (malloc settings), [`env`] (environment overrides), [`logging`] (JSON lines
//! with per-connection fields),
//! [`proxy`] (PROXY protocol), [`server`] (listener, connections, auth, shutdown), [`session`]
//! (one session channel), [`monitoring`] + [`metrics`] (probes and Prometheus), [`cli`] (the
//! binary's start-up).

pub mod access;
pub mod alloc;
pub mod certs;
pub mod cli;
pub mod env;
pub mod logging;
pub mod metrics;
pub mod monitoring;
pub mod outflow;
pub mod proxy;
pub mod server;
pub mod session;
