//! The exclusive lock every writer of the authorized_keys file takes first: `flock(LOCK_EX)` on
//! `<auth_file>.lock`, as the historic `gitlab-keys` did (`lib/gitlab_keys.rb` `lock`), but with a
//! deadline instead of Ruby's `Timeout.timeout` around a blocking `flock`.
//!
//! The lock lives on a separate file, never on the authorized_keys file itself: writers replace
//! that file by `rename(2)`, so a lock held on the old inode would not exclude a writer that opened
//! the new one.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline for single-key commands (`gitlab-keys` used 10 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Deadline for `batch-add-keys` (`gitlab-keys` used 300 s).
pub const BATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// How long to sleep between two non-blocking attempts. Short, because holders only keep the lock
/// for one read-modify-rename cycle.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or created.
    #[error("could not open lock file {path}: {source}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Another process held the lock for the whole deadline.
    #[error("timed out after {seconds}s waiting for the lock on {path}")]
    Timeout {
        /// The lock file.
        path: PathBuf,
        /// The deadline, in whole seconds.
        seconds: u64,
    },
    /// `flock` itself failed (not because the lock was held).
    #[error("could not lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A held exclusive lock; released when dropped (closing the descriptor releases the `flock`).
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    /// Takes the exclusive lock on `path` (created with mode 0600 if missing), retrying until
    /// `timeout` has passed.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<FileLock, LockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| LockError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        // A lock file created by root must stay usable by the folder's owner (git).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(like) = std::fs::metadata(dir)
        {
            crate::atomic::match_owner(&file, &like);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(FileLock { file }),
                Err(TryLockError::WouldBlock) => {
                    if Instant::now() >= deadline {
                        return Err(LockError::Timeout {
                            path: path.to_path_buf(),
                            seconds: timeout.as_secs(),
                        });
                    }
                    thread::sleep(POLL_INTERVAL);
                }
                Err(TryLockError::Error(source)) => {
                    return Err(LockError::Lock {
                        path: path.to_path_buf(),
                        source,
                    });
                }
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing would release it too; unlocking explicitly documents the intent. An error here
        // cannot be acted upon.
        let _ = self.file.unlock();
    }
}

/// The lock file that guards `auth_file`: `<auth_file>.lock`.
pub fn lock_path_for(auth_file: &Path) -> PathBuf {
    let mut name = auth_file.as_os_str().to_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_appends_dot_lock() {
        assert_eq!(
            lock_path_for(Path::new("/home/git/.ssh/authorized_keys")),
            PathBuf::from("/home/git/.ssh/authorized_keys.lock")
        );
    }

    #[test]
    fn second_holder_times_out_while_first_holds_it_and_succeeds_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys.lock");
        let first = FileLock::acquire(&path, DEFAULT_TIMEOUT).unwrap();
        let started = Instant::now();
        let err = FileLock::acquire(&path, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, LockError::Timeout { .. }), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        drop(first);
        FileLock::acquire(&path, Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn waiter_gets_the_lock_once_the_holder_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let first = FileLock::acquire(&path, DEFAULT_TIMEOUT).unwrap();
        let waiter_path = path.clone();
        let waiter =
            thread::spawn(move || FileLock::acquire(&waiter_path, Duration::from_secs(5)).is_ok());
        thread::sleep(Duration::from_millis(50));
        drop(first);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn lock_file_belongs_to_the_owner_of_its_folder() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        if std::fs::metadata(dir.path()).unwrap().uid() != 0 {
            return; // only root can hand files to another user
        }
        std::os::unix::fs::chown(dir.path(), Some(4242), Some(4343)).unwrap();
        let path = dir.path().join("k.lock");
        let _lock = FileLock::acquire(&path, DEFAULT_TIMEOUT).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    }

    #[test]
    fn lock_file_is_created_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.lock");
        let _lock = FileLock::acquire(&path, DEFAULT_TIMEOUT).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }
}
