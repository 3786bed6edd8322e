//! SSH client keys generated per test run with `ssh-keygen` (ed25519, no passphrase).
//!
//! sshd gives `gitlab-shell-authorized-keys-check` the key blob (`%k`, base64 without the type),
//! and the keys check asks the internal API about that blob; so a test registers
//! [`ClientKey::blob`] in the stub API fixture.

use std::fs;
use std::path::{Path, PathBuf};

use crate::run::Cmd;

/// A generated key pair.
#[derive(Clone, Debug)]
pub struct ClientKey {
    /// The private key file (mode 0600), for `ssh -i`.
    pub private_key: PathBuf,
    /// The public key line: `ssh-ed25519 AAAA… <comment>`.
    pub public_line: String,
    /// The key type: `ssh-ed25519`.
    pub key_type: String,
    /// The base64 blob, as sshd passes it in `%k`.
    pub blob: String,
}

impl ClientKey {
    /// Generates `<dir>/<name>` and `<dir>/<name>.pub`. Panics when ssh-keygen fails.
    #[track_caller]
    pub fn generate(dir: &Path, name: &str) -> ClientKey {
        let private_key = dir.join(name);
        let _ = fs::remove_file(&private_key);
        let _ = fs::remove_file(private_key.with_extension("pub"));
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
            .arg(&private_key)
            .run()
            .assert_success();
        let pub_path = dir.join(format!("{name}.pub"));
        let public_line = match fs::read_to_string(&pub_path) {
            Ok(s) => s.trim().to_owned(),
            Err(e) => panic!("cannot read {}: {e}", pub_path.display()),
        };
        let mut words = public_line.split_whitespace();
        let key_type = words.next().unwrap_or_default().to_owned();
        let blob = words.next().unwrap_or_default().to_owned();
        ClientKey {
            private_key,
            public_line,
            key_type,
            blob,
        }
    }

    /// `<type> <blob>` without the comment (what GitLab stores and returns as `key`).
    pub fn type_and_blob(&self) -> String {
        format!("{} {}", self.key_type, self.blob)
    }
}
