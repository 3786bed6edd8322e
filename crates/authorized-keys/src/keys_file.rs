//! The operations of `gitlab-shell-authorized-keys` on one authorized_keys file.
//!
//! Every change is a read-modify-write under [`FileLock`] (`<auth_file>.lock`) finished by an
//! atomic [`replace`](crate::atomic::replace), so concurrent writers serialise and none can lose
//! another's line. Adding a line that is already present is a no-op, so a retried command never
//! duplicates a line. Lines this tool does not recognise (comments, keys for other purposes) are
//! kept as they are.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::atomic::{self, FILE_MODE};
use crate::line::{self, LineError, parse_line};
use crate::lock::{FileLock, LockError, lock_path_for};

/// The first line `clear` leaves in the file (as `gitlab-keys clear` did).
pub const MANAGED_HEADER: &str = "# Managed by gitlab-shell";

/// Failures of a keys-file operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key id or key failed validation; nothing was written.
    #[error(transparent)]
    Line(#[from] LineError),
    /// The lock could not be taken; nothing was written.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// An authorized_keys file managed for one GitLab Shell root.
#[derive(Debug, Clone)]
pub struct AuthorizedKeysFile {
    path: PathBuf,
    root: PathBuf,
}

/// One key to add: `key_id` (`key-N`) and the OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKey {
    /// `key-N` (or `username-X`).
    pub key_id: String,
    /// `<type> <base64> [comment]`.
    pub public_key: String,
}

impl AuthorizedKeysFile {
    /// Manages `path`, writing forced commands that run `<root>/bin/gitlab-shell <key-id>`.
    pub fn new(path: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Self {
        AuthorizedKeysFile {
            path: path.into(),
            root: root.into(),
        }
    }

    /// The authorized_keys file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds one line per key, in order, skipping lines already present. All lines are validated
    /// before anything is written; either all are added or none. Returns how many were added.
    pub fn add(&self, keys: &[NewKey], timeout: Duration) -> Result<usize, Error> {
        let lines = keys
            .iter()
            .map(|k| line::format_line(&self.root, &k.key_id, &k.public_key))
            .collect::<Result<Vec<_>, _>>()?;
        self.modify(timeout, |current| {
            let mut out = current.to_owned();
            let mut present: std::collections::HashSet<String> =
                current.lines().map(str::to_owned).collect();
            let mut added = 0;
            for line in lines {
                if present.contains(&line) {
                    continue;
                }
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&line);
                out.push('\n');
                present.insert(line);
                added += 1;
            }
            (out, added)
        })
    }

    /// Removes every line whose forced command ends in `key_id`. With `public_key`, only the lines
    /// whose key has the same type and base64 blob (the comment is not compared). Returns how many
    /// lines were removed.
    pub fn remove(
        &self,
        key_id: &str,
        public_key: Option<&str>,
        timeout: Duration,
    ) -> Result<usize, Error> {
        line::validate_key_id(key_id)?;
        let wanted = public_key.map(line::key_material);
        self.modify(timeout, |current| {
            let mut out = String::with_capacity(current.len());
            let mut removed = 0;
            for raw in current.split_inclusive('\n') {
                let text = raw.strip_suffix('\n').unwrap_or(raw);
                let matches = parse_line(text).is_some_and(|p| {
                    p.key_id == key_id && wanted.is_none_or(|w| w == p.key_material())
                });
                if matches {
                    removed += 1;
                } else {
                    out.push_str(raw);
                }
            }
            (out, removed)
        })
    }

    /// Empties the file, leaving only [`MANAGED_HEADER`].
    pub fn clear(&self, timeout: Duration) -> Result<(), Error> {
        self.modify(timeout, |_| (format!("{MANAGED_HEADER}\n"), ()))
    }

    /// `(key-id, base64 blob)` of every forced-command line, in file order.
    pub fn list_keys(&self) -> Result<Vec<(String, String)>, Error> {
        let text = self.read()?;
        Ok(text
            .lines()
            .filter_map(parse_line)
            .map(|p| (p.key_id.to_owned(), p.key_blob().to_owned()))
            .collect())
    }

    /// The number N of every `key-N` line, in file order.
    pub fn list_key_ids(&self) -> Result<Vec<u64>, Error> {
        let text = self.read()?;
        Ok(text
            .lines()
            .filter_map(parse_line)
            .filter_map(|p| p.key_id.strip_prefix("key-")?.parse().ok())
            .collect())
    }

    /// Opens the file read-write, creating it (mode 0600) if missing: the check `gitlab-keys
    /// check-permissions` made before GitLab started writing keys.
    pub fn check_permissions(&self) -> Result<(), Error> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(&self.path)
            .map(drop)
            .map_err(|source| self.io_error(source))
    }

    fn read(&self) -> Result<String, Error> {
        let bytes = atomic::read_or_empty(&self.path).map_err(|e| self.io_error(e))?;
        String::from_utf8(bytes)
            .map_err(|e| self.io_error(io::Error::new(io::ErrorKind::InvalidData, e.utf8_error())))
    }

    /// Read-modify-write under the lock; the file is rewritten only when `change` altered it.
    fn modify<T>(
        &self,
        timeout: Duration,
        change: impl FnOnce(&str) -> (String, T),
    ) -> Result<T, Error> {
        atomic::ensure_parent_dir(&self.path).map_err(|e| self.io_error(e))?;
        let _lock = FileLock::acquire(&lock_path_for(&self.path), timeout)?;
        let current = self.read()?;
        let (next, result) = change(&current);
        if next != current || !self.path.exists() {
            atomic::replace(&self.path, next.as_bytes()).map_err(|e| self.io_error(e))?;
        }
        Ok(result)
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::DEFAULT_TIMEOUT;
    use std::fs;

    const ROOT: &str = "/srv/gitlab-shell";
    const SHELL: &str = "/srv/gitlab-shell/bin/gitlab-shell";

    fn key(id: &str, public_key: &str) -> NewKey {
        NewKey {
            key_id: id.to_owned(),
            public_key: public_key.to_owned(),
        }
    }

    fn file() -> (tempfile::TempDir, AuthorizedKeysFile) {
        let dir = tempfile::tempdir().unwrap();
        let f = AuthorizedKeysFile::new(dir.path().join("authorized_keys"), ROOT);
        (dir, f)
    }

    fn line(id: &str, k: &str) -> String {
        format!(
            "command=\"{SHELL} {id}\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty {k}\n"
        )
    }

    #[test]
    fn add_appends_exact_lines_and_ignores_duplicates() {
        let (_d, f) = file();
        let added = f
            .add(
                &[
                    key("key-1", "ssh-rsa AAA1 a@b"),
                    key("key-2", "ssh-ed25519 AAA2"),
                ],
                DEFAULT_TIMEOUT,
            )
            .unwrap();
        assert_eq!(added, 2);
        assert_eq!(
            f.add(&[key("key-1", "ssh-rsa AAA1 a@b")], DEFAULT_TIMEOUT)
                .unwrap(),
            0
        );
        let text = fs::read_to_string(f.path()).unwrap();
        assert_eq!(
            text,
            line("key-1", "ssh-rsa AAA1 a@b") + &line("key-2", "ssh-ed25519 AAA2")
        );
    }

    #[test]
    fn add_keeps_foreign_lines_and_adds_a_missing_final_newline() {
        let (_d, f) = file();
        fs::write(f.path(), "# mine\nssh-rsa OWN admin").unwrap();
        f.add(&[key("key-3", "ssh-rsa AAA3")], DEFAULT_TIMEOUT)
            .unwrap();
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            "# mine\nssh-rsa OWN admin\n".to_owned() + &line("key-3", "ssh-rsa AAA3")
        );
    }

    #[test]
    fn an_invalid_key_in_a_batch_writes_nothing() {
        let (_d, f) = file();
        let err = f
            .add(
                &[key("key-1", "ssh-rsa A"), key("key 2", "ssh-rsa B")],
                DEFAULT_TIMEOUT,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid key_id: key 2");
        assert!(!f.path().exists());
    }

    #[test]
    fn remove_drops_only_the_matching_lines() {
        let (_d, f) = file();
        f.add(
            &[
                key("key-1", "ssh-rsa AAA1 one"),
                key("key-11", "ssh-rsa AAA11"),
                key("key-1", "ssh-ed25519 OTHER"),
            ],
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            f.remove(
                "key-1",
                Some("ssh-rsa AAA1 different-comment"),
                DEFAULT_TIMEOUT
            )
            .unwrap(),
            1
        );
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            line("key-11", "ssh-rsa AAA11") + &line("key-1", "ssh-ed25519 OTHER")
        );
        assert_eq!(f.remove("key-1", None, DEFAULT_TIMEOUT).unwrap(), 1);
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            line("key-11", "ssh-rsa AAA11")
        );
        assert_eq!(f.remove("key-404", None, DEFAULT_TIMEOUT).unwrap(), 0);
    }

    #[test]
    fn clear_leaves_the_header() {
        let (_d, f) = file();
        f.add(&[key("key-1", "ssh-rsa A")], DEFAULT_TIMEOUT)
            .unwrap();
        f.clear(DEFAULT_TIMEOUT).unwrap();
        assert_eq!(
            fs::read_to_string(f.path()).unwrap(),
            "# Managed by gitlab-shell\n"
        );
    }

    #[test]
    fn lists_keys_and_ids() {
        let (_d, f) = file();
        fs::write(f.path(), "# Managed by gitlab-shell\n").unwrap();
        f.add(
            &[
                key("key-741", "ssh-rsa AAAAB3NzaDAxx2E trailing garbage"),
                key("username-bob", "ssh-ed25519 AAAAC3"),
                key("key-9", "ecdsa-sha2-nistp256 AAAAE2"),
            ],
            DEFAULT_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            f.list_keys().unwrap(),
            vec![
                ("key-741".to_owned(), "AAAAB3NzaDAxx2E".to_owned()),
                ("username-bob".to_owned(), "AAAAC3".to_owned()),
                ("key-9".to_owned(), "AAAAE2".to_owned()),
            ]
        );
        assert_eq!(f.list_key_ids().unwrap(), vec![741, 9]);
    }

    #[test]
    fn check_permissions_creates_the_file_or_reports_the_error() {
        let (d, f) = file();
        f.check_permissions().unwrap();
        assert!(f.path().exists());
        let missing = AuthorizedKeysFile::new(d.path().join("no/such/dir/keys"), ROOT);
        assert!(missing.check_permissions().is_err());
    }
}
