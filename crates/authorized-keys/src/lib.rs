//! `gitlab-shell-authorized-keys`: the operator's tool for GitLab Shell's forced-command
//! authorized_keys file, the successor of the historic `gitlab-keys` (behaviour §10).
//!
//! - [`line`]: the line format (the same bytes `gitlab-shell-authorized-keys-check` prints) and
//!   its parser;
//! - [`lock`]: the `flock` on `<auth_file>.lock`, with a deadline;
//! - [`atomic`]: temp file + `fsync` + `rename` replacement, mode 0600;
//! - [`keys_file`]: add / remove / clear / list on one file, built from the three above;
//! - [`settings`]: `auth_file` and `<root>/bin/gitlab-shell` from the GitLab Shell root;
//! - [`pubkey`]: is the text a public key (type, base64, embedded type)?
//! - [`cli`]: the `gitlab-keys`-style command line.

pub mod atomic;
pub mod cli;
pub mod keys_file;
pub mod line;
pub mod lock;
pub mod pubkey;
pub mod settings;
