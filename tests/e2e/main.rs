//! End-to-end tests: the built binaries from `bin/`, run as sshd runs them, against the stub
//! internal API and the dev Gitaly (the Git tests also against GitLab's own Gitaly: `real_gitaly`);
//! and real `git` through a real `sshd`.
//!
//! Build first with `make compile` (the Makefile's `test` target does it).

mod authorized_keys_check;
mod authorized_principals_check;
mod check;
mod dropped_clients;
mod faults;
mod geo;
mod geo_primary;
mod git_over_ssh;
mod gitaly_retry;
mod gitlab_sshd;
mod hostile_corpus;
mod hostile_inputs;
mod lfs_transfer;
mod load_sessions;
mod log_fields;
mod operator_docs;
mod operator_haproxy;
mod operator_install;
mod operator_packages;
mod operator_setup;
mod operator_sshd_modes;
mod real_gitaly;
mod secrets_scan;
mod shell_commands;
