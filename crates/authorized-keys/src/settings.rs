//! Where the authorized_keys file is: `auth_file` from `<root>/config.yml` (default
//! `~/.ssh/authorized_keys`, as GitLab Shell's `support/make_necessary_dirs` and `gitlab-keys` had
//! it). The rest of the configuration is GitLab Shell's own ([`gitlab_shell::config::Config`]),
//! loaded the same way the four product binaries load it.
//!
//! `auth_file` is read here rather than in `gitlab_shell::config` because the Go binaries ignore
//! it (behaviour §2.3); only this tool and `support/setup.sh` use it.

use std::path::{Path, PathBuf};

use gitlab_shell::config::{Config, ConfigError};
use gitlab_shell::{executable, messages};

/// The config key naming the authorized_keys file.
pub const AUTH_FILE_KEY: &str = "auth_file";

/// Resolved settings for one run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// GitLab Shell's configuration (root folder, log settings).
    pub config: Config,
    /// The authorized_keys file to manage.
    pub auth_file: PathBuf,
}

/// Why the settings could not be loaded; the texts are `gitlab-shell-check`'s.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The root folder could not be determined.
    #[error("{prefix}: {0}", prefix = messages::FAILED_TO_DETERMINE_EXECUTABLE)]
    Root(String),
    /// `config.yml` (or the secret) could not be read or parsed.
    #[error("{prefix}: {0}", prefix = messages::FAILED_TO_READ_CONFIG)]
    Config(String),
}

/// Loads the settings of this process: the root from `GITLAB_SHELL_DIR` or the executable's
/// location, the config and `auth_file` from `<root>/config.yml`, `HOME` for the default.
pub fn load() -> Result<Settings, SettingsError> {
    let root = executable::root_dir().map_err(|e| SettingsError::Root(e.to_string()))?;
    load_from(&root, home_dir().as_deref())
}

/// [`load`] for an explicit root and home folder.
pub fn load_from(root: &Path, home: Option<&Path>) -> Result<Settings, SettingsError> {
    let config = Config::load(root).map_err(|ConfigError(e)| SettingsError::Config(e))?;
    let configured = read_auth_file_setting(&root.join("config.yml"))?;
    Ok(Settings {
        config,
        auth_file: resolve_auth_file(configured.as_deref(), root, home),
    })
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

/// The `auth_file` value of a config.yml (already known to be valid YAML).
fn read_auth_file_setting(config: &Path) -> Result<Option<String>, SettingsError> {
    #[derive(serde::Deserialize)]
    struct AuthFileOnly {
        auth_file: Option<String>,
    }
    let text = std::fs::read_to_string(config)
        .map_err(|e| SettingsError::Config(format!("{}: {e}", config.display())))?;
    match serde_yaml::from_str::<Option<AuthFileOnly>>(&text) {
        Ok(parsed) => Ok(parsed.and_then(|c| c.auth_file)),
        Err(e) => Err(SettingsError::Config(format!("yaml: {e}"))),
    }
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
    fn loads_auth_file_next_to_gitlab_shells_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitlab_shell_secret"), "s").unwrap();
        std::fs::write(
            dir.path().join("config.yml"),
            "auth_file: \"/x/authorized_keys\"\n",
        )
        .unwrap();
        let s = load_from(dir.path(), None).unwrap();
        assert_eq!(s.auth_file, PathBuf::from("/x/authorized_keys"));
        assert_eq!(s.config.root_dir, dir.path());
        std::fs::write(dir.path().join("config.yml"), "user: git\n").unwrap();
        let s = load_from(dir.path(), Some(Path::new("/home/g"))).unwrap();
        assert_eq!(s.auth_file, PathBuf::from("/home/g/.ssh/authorized_keys"));
    }

    #[test]
    fn config_errors_use_gitlab_shells_wording() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_from(dir.path(), None).unwrap_err().to_string();
        assert!(
            err.starts_with("Failed to read config, exiting: open "),
            "{err}"
        );
    }
}
