//! Where the authorized_keys file is and which forced command its lines run: `auth_file` from
//! `<root>/config.yml` (default `~/.ssh/authorized_keys`, as GitLab Shell's
//! `support/make_necessary_dirs` and `gitlab-keys` had it) and `<root>/bin/gitlab-shell`.

use std::path::{Path, PathBuf};

/// The config key naming the authorized_keys file.
pub const AUTH_FILE_KEY: &str = "auth_file";

/// Resolved settings for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The GitLab Shell root (the parent of `bin/`).
    pub root: PathBuf,
    /// The authorized_keys file to manage.
    pub auth_file: PathBuf,
}

impl Settings {
    /// The forced command's program: `<root>/bin/gitlab-shell`, path-cleaned like Go's `path.Join`.
    pub fn gitlab_shell(&self) -> String {
        clean(&self.root.join("bin").join("gitlab-shell"))
    }
}

/// Resolves `auth_file` as configured (`None` or empty: `<home>/.ssh/authorized_keys`). A leading
/// `~/` is expanded with `home`; another relative path is taken relative to `root`, like
/// GitLab Shell's other path settings.
pub fn resolve_auth_file(configured: Option<&str>, root: &Path, home: Option<&Path>) -> PathBuf {
    let home = home.unwrap_or(Path::new("/"));
    match configured.map(str::trim).filter(|s| !s.is_empty()) {
        None => home.join(".ssh").join("authorized_keys"),
        Some("~") => home.to_path_buf(),
        Some(p) => match p.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => root.join(p),
        },
    }
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The root folder could not be determined.
    #[error("failed to determine executable: {0}")]
    Root(String),
    /// `config.yml` could not be read or parsed.
    #[error("failed to read config: {0}")]
    Config(String),
}

/// Loads the settings of this process: the root from `GITLAB_SHELL_DIR` or the executable's
/// location, `auth_file` from `<root>/config.yml`, `HOME` for the default.
pub fn load() -> Result<Settings, SettingsError> {
    let root = root_dir()?;
    load_from(&root, home_dir().as_deref())
}

/// [`load`] for an explicit root and home folder.
pub fn load_from(root: &Path, home: Option<&Path>) -> Result<Settings, SettingsError> {
    let configured = read_auth_file_setting(&root.join("config.yml"))?;
    Ok(Settings {
        root: root.to_path_buf(),
        auth_file: resolve_auth_file(configured.as_deref(), root, home),
    })
}

/// The `auth_file` value of a config.yml; the rest of the file is GitLab Shell's business.
fn read_auth_file_setting(config: &Path) -> Result<Option<String>, SettingsError> {
    #[derive(serde::Deserialize)]
    struct AuthFileOnly {
        auth_file: Option<String>,
    }
    let text = std::fs::read_to_string(config)
        .map_err(|e| SettingsError::Config(format!("{}: {e}", config.display())))?;
    let parsed: Option<AuthFileOnly> =
        serde_yaml::from_str(&text).map_err(|e| SettingsError::Config(e.to_string()))?;
    Ok(parsed.and_then(|c| c.auth_file))
}

/// The root: `GITLAB_SHELL_DIR`, else the parent of the folder holding the resolved executable.
fn root_dir() -> Result<PathBuf, SettingsError> {
    #[expect(
        clippy::disallowed_methods,
        reason = "GITLAB_SHELL_DIR overrides the root, as in GitLab Shell"
    )]
    let from_env = std::env::var_os("GITLAB_SHELL_DIR").filter(|v| !v.is_empty());
    if let Some(dir) = from_env {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| SettingsError::Root(e.to_string()))?;
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .ok_or_else(|| SettingsError::Root(format!("no root above {}", exe.display())))
}

/// `$HOME`, the base of the default `~/.ssh/authorized_keys`.
fn home_dir() -> Option<PathBuf> {
    #[expect(
        clippy::disallowed_methods,
        reason = "HOME locates the default auth_file, as in gitlab-keys"
    )]
    let home = std::env::var_os("HOME");
    home.filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Lexically cleans an absolute or relative path (`.` and `..` components, repeated slashes).
fn clean(path: &Path) -> String {
    use std::path::Component;
    let mut parts: Vec<String> = Vec::new();
    let absolute = path.is_absolute();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                if parts.last().is_some_and(|p| p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..".to_owned());
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_home_ssh_authorized_keys() {
        let f = resolve_auth_file(None, Path::new("/srv/gls"), Some(Path::new("/home/git")));
        assert_eq!(f, PathBuf::from("/home/git/.ssh/authorized_keys"));
        let f = resolve_auth_file(
            Some(""),
            Path::new("/srv/gls"),
            Some(Path::new("/home/git")),
        );
        assert_eq!(f, PathBuf::from("/home/git/.ssh/authorized_keys"));
    }

    #[test]
    fn absolute_tilde_and_relative_paths() {
        let root = Path::new("/srv/gls");
        let home = Some(Path::new("/home/git"));
        assert_eq!(
            resolve_auth_file(Some("/var/keys"), root, home),
            PathBuf::from("/var/keys")
        );
        assert_eq!(
            resolve_auth_file(Some("~/k/a"), root, home),
            PathBuf::from("/home/git/k/a")
        );
        assert_eq!(
            resolve_auth_file(Some("keys/a"), root, home),
            PathBuf::from("/srv/gls/keys/a")
        );
    }

    #[test]
    fn gitlab_shell_path_is_cleaned() {
        let s = Settings {
            root: PathBuf::from("/srv/./gls/../gls/"),
            auth_file: PathBuf::new(),
        };
        assert_eq!(s.gitlab_shell(), "/srv/gls/bin/gitlab-shell");
    }
}
