//! Crash-safe replacement of a file's contents: write a temporary file in the same directory,
//! `fsync` it, `rename(2)` it over the target, then `fsync` the directory.
//!
//! sshd reads authorized_keys at every login; with a rename it sees either the old or the new file,
//! never a half-written one (the historic `gitlab-keys` appended and overwrote in place instead).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Mode of the authorized_keys file (and of its temporary siblings). sshd's `StrictModes` refuses
/// group- or world-writable files; `gitlab-keys` used 0600.
pub const FILE_MODE: u32 = 0o600;

/// Mode for a key directory this tool has to create (GitLab Shell's `make_necessary_dirs` uses 0700).
pub const DIR_MODE: u32 = 0o700;

/// Reads `path` whole; a missing file reads as empty.
pub fn read_or_empty(path: &Path) -> io::Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(err) => Err(err),
    }
}

/// Replaces the contents of `path` with `contents`, atomically, leaving it with mode
/// [`FILE_MODE`]. Creates the parent directory (mode [`DIR_MODE`]) when it is missing.
pub fn replace(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = ensure_parent_dir(path)?;
    let (tmp_path, mut tmp) = create_temp_sibling(path, &dir)?;
    let result = (|| {
        tmp.write_all(contents)?;
        // The umask may have narrowed the mode at creation; set it exactly.
        tmp.set_permissions(Permissions::from_mode(FILE_MODE))?;
        // Keep the owner: root editing git's file must not leave a root-owned 0600 file that
        // sshd (and the next run as git) can no longer read.
        let owner = match fs::metadata(path) {
            Ok(meta) => meta,
            Err(_) => fs::metadata(&dir)?,
        };
        match_owner(&tmp, &owner);
        tmp.sync_all()?;
        drop(tmp);
        fs::rename(&tmp_path, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result
}

/// Creates the directory that holds `path` (mode [`DIR_MODE`]) when it is missing, and returns it.
pub fn ensure_parent_dir(path: &Path) -> io::Result<PathBuf> {
    let dir = parent_dir(path);
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)?;
    }
    Ok(dir)
}

/// Gives `file` the owner and group of `like` when they differ. Only root may do so; for anyone
/// else the files are theirs already, so a failure is ignored.
pub fn match_owner(file: &File, like: &fs::Metadata) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else { return };
    if (meta.uid(), meta.gid()) != (like.uid(), like.gid()) {
        let _ = std::os::unix::fs::fchown(file, Some(like.uid()), Some(like.gid()));
    }
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates `.<name>.tmp-<pid>-<nanos>-<n>` next to `path`, exclusively (`O_EXCL`).
fn create_temp_sibling(path: &Path, dir: &Path) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "authorized_keys".to_owned());
    loop {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp_path = dir.join(format!(".{name}.tmp-{}-{nanos}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp_path)
        {
            Ok(file) => return Ok((tmp_path, file)),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_creates_file_with_mode_0600_and_no_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        replace(&path, b"one\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("authorized_keys")]);
    }

    #[test]
    fn replace_resets_a_loosened_mode_to_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        fs::write(&path, b"old\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o664)).unwrap();
        replace(&path, b"new\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn replace_creates_a_missing_parent_with_mode_0700() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh").join("authorized_keys");
        replace(&path, b"x\n").unwrap();
        let mode = fs::metadata(dir.path().join("ssh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn replace_keeps_the_owner_of_the_file_it_replaces() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authorized_keys");
        fs::write(&path, b"old\n").unwrap();
        if fs::metadata(&path).unwrap().uid() != 0 {
            return; // only root can hand files to another user
        }
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        replace(&path, b"new\n").unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
    }

    #[test]
    fn missing_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_or_empty(&dir.path().join("nope")).unwrap().is_empty());
    }
}
