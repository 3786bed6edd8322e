//! Where GitLab Shell's root folder is (`internal/executable`): the parent of the folder that
//! holds the running, symlink-resolved executable (`<root>/bin/<binary>`), unless
//! `GITLAB_SHELL_DIR` overrides it. This and [`crate::sshenv`] are the only readers of the
//! environment.

use std::path::{Path, PathBuf};

/// Environment variable that overrides the root folder.
pub const ENV_ROOT_DIR: &str = "GITLAB_SHELL_DIR";

/// Why the root folder could not be determined; the text is Go's error text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RootDirError(pub String);

/// The GitLab Shell root folder of this process.
pub fn root_dir() -> Result<PathBuf, RootDirError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "the one reader of GITLAB_SHELL_DIR"
    )]
    let from_env = std::env::var_os(ENV_ROOT_DIR).filter(|v| !v.is_empty());
    let exe = std::env::current_exe().map_err(|e| {
        RootDirError(crate::config::go_io_error(
            "readlink",
            Path::new("/proc/self/exe"),
            &e,
        ))
    })?;
    resolve(&exe, from_env.map(PathBuf::from))
}

/// Pure part of [`root_dir`]: `exe` is the resolved executable path.
pub fn resolve(exe: &Path, from_env: Option<PathBuf>) -> Result<PathBuf, RootDirError> {
    let root = match from_env {
        Some(dir) => dir,
        None => {
            let exe = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
            exe.parent()
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"))
        }
    };
    match std::fs::metadata(&root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(RootDirError(crate::config::go_io_error("stat", &root, &e)))
        }
        _ => Ok(root),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_parent_of_bin() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        let exe = dir.path().join("bin/gitlab-shell");
        std::fs::write(&exe, b"").unwrap();
        let root = resolve(&exe, None).unwrap();
        assert_eq!(root, std::fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn symlinked_executable_resolves_to_its_real_root() {
        let real = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::create_dir(real.path().join("bin")).unwrap();
        std::fs::create_dir(other.path().join("bin")).unwrap();
        let exe = real.path().join("bin/gitlab-shell");
        std::fs::write(&exe, b"").unwrap();
        let link = other.path().join("bin/gitlab-shell");
        std::os::unix::fs::symlink(&exe, &link).unwrap();
        assert_eq!(
            resolve(&link, None).unwrap(),
            std::fs::canonicalize(real.path()).unwrap()
        );
    }

    #[test]
    fn env_override_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("bin/x");
        assert_eq!(
            resolve(&exe, Some(dir.path().to_path_buf())).unwrap(),
            dir.path()
        );
        let err = resolve(&exe, Some(PathBuf::from("/nonexistent/gls"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stat /nonexistent/gls: no such file or directory"
        );
    }
}
