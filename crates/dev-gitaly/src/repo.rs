//! Repository validation and path resolution, with Gitaly's error codes and texts
//! (Gitaly `internal/gitaly/storage/locator.go`, `ValidateRepository` / `GetRepoPath`).

use std::path::{Component, Path, PathBuf};

use gitaly_proto::Repository;
use tonic::Status;

/// The one storage this dev server serves.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Storage name clients put in `Repository.storage_name`.
    pub name: String,
    /// Folder holding the repositories.
    pub dir: PathBuf,
}

impl Storage {
    /// Validates `repo` and returns the repository's absolute path.
    ///
    /// Errors: `InvalidArgument` "repository not set", "empty StorageName", "repository path not
    /// set", "storage name not found", a path escaping the storage; `NotFound` "repository not
    /// found" when the folder is not a git repository.
    pub fn locate(&self, repo: Option<&Repository>) -> Result<PathBuf, Status> {
        let repo = repo.ok_or_else(|| Status::invalid_argument("repository not set"))?;
        if repo.storage_name.trim().is_empty() {
            return Err(Status::invalid_argument("empty StorageName"));
        }
        if repo.relative_path.trim().is_empty() {
            return Err(Status::invalid_argument("repository path not set"));
        }
        if repo.storage_name != self.name {
            return Err(Status::invalid_argument("storage name not found"));
        }
        let rel = Path::new(&repo.relative_path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::RootDir))
        {
            return Err(Status::invalid_argument(
                "relative path escapes root directory",
            ));
        }
        let path = self.dir.join(rel);
        if !is_git_dir(&path) {
            return Err(Status::not_found("repository not found"));
        }
        Ok(path)
    }
}

/// Cheap check, as Gitaly's: a git directory has `objects/`, `refs/` and `HEAD`.
fn is_git_dir(path: &Path) -> bool {
    path.join("objects").is_dir() && path.join("refs").is_dir() && path.join("HEAD").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn repo(storage: &str, rel: &str) -> Repository {
        Repository {
            storage_name: storage.into(),
            relative_path: rel.into(),
            ..Default::default()
        }
    }

    #[test]
    fn validation_errors() {
        let s = Storage {
            name: "default".into(),
            dir: PathBuf::from("/nonexistent"),
        };
        let cases = [
            (None, Code::InvalidArgument, "repository not set"),
            (
                Some(repo("default", "")),
                Code::InvalidArgument,
                "repository path not set",
            ),
            (
                Some(repo("", "a.git")),
                Code::InvalidArgument,
                "empty StorageName",
            ),
            (
                Some(repo("fake", "a.git")),
                Code::InvalidArgument,
                "storage name not found",
            ),
            (
                Some(repo("default", "../a.git")),
                Code::InvalidArgument,
                "relative path escapes root directory",
            ),
            (
                Some(repo("default", "a.git")),
                Code::NotFound,
                "repository not found",
            ),
        ];
        for (r, code, msg) in cases {
            let e = s.locate(r.as_ref()).unwrap_err();
            assert_eq!((e.code(), e.message()), (code, msg));
        }
    }
}
