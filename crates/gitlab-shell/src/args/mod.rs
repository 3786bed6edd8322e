//! Command-line and `SSH_ORIGINAL_COMMAND` parsing for the three argument-taking binaries
//! (GitLab Shell `internal/command/commandargs`).

pub mod authorized_keys;
pub mod authorized_principals;
pub mod shell;
pub mod shellwords;

pub use shell::{CommandType, Identity, ShellArgs};
