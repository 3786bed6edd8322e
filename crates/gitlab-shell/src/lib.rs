//! GitLab Shell (classic mode) in Rust: the library behind the four OpenSSH companion binaries.
//!
//! Map (one module per concern, after GitLab Shell's Go layout):
//! - start-up: [`startup`] (version/help flags, start-up messages), [`executable`] (root
//!   folder), [`config`] (config.yml + secret), [`logging`], [`correlation`];
//! - input: [`sshenv`] (the SSH environment), [`args`] (argv and `SSH_ORIGINAL_COMMAND`),
//!   [`identity`] (who the user is);
//! - output: [`io`], [`console`] (`remote: ` framing), [`messages`], [`error`] (the one
//!   error → output + exit code mapping), [`keyline`];
//! - watching: [`observe`] (hooks a front door passes in, e.g. for metrics);
//! - work: [`api`] (internal API, one module per endpoint), [`command`] (one module per SSH
//!   command; git data goes through the `gitaly-client` crate).
//!
//! Each binary's `main` runs the start-up steps ([`startup::main`]) and then one function of
//! [`command`]: [`command::shell`] (which builds a [`command::Session`] and calls
//! [`command::execute`], the entry point an in-process SSH server uses too),
//! [`command::authorized_keys::run`], [`command::authorized_principals::run`] or
//! [`command::healthcheck::run`].
//!
//! `behaviour §N` in comments refers to docs/behaviour.md, `gitaly.md §N` to docs/gitaly.md.

pub mod api;
pub mod args;
pub mod command;
pub mod config;
pub mod console;
pub mod correlation;
pub mod error;
pub mod executable;
pub mod identity;
pub mod io;
pub mod keyline;
pub mod logging;
pub mod messages;
pub mod observe;
pub mod sshenv;
pub mod startup;
