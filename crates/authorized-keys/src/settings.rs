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
    /// A `~`-relative `auth_file` would land in another user's home (root running the tool with
    /// its own `HOME`).
    #[error("{0}")]
    ForeignHome(String),
}

/// Loads the settings of this process: the root from `GITLAB_SHELL_DIR` or the executable's
/// location, the config and `auth_file` from `<root>/config.yml`, `HOME` for the default.
pub fn load() -> Result<Settings, SettingsError> {
    let root = executable::root_dir().map_err(|e| SettingsError::Root(e.to_string()))?;
    let home = home_dir();
    let settings = load_from(&root, home.as_deref())?;
    let configured = read_auth_file_setting(&root.join("config.yml"))?;
    let user = settings.config.user.clone();
    let user_home = passwd_home(&user);
    check_home(&HomeCheck {
        configured: configured.as_deref(),
        auth_file: &settings.auth_file,
        running_as_root: running_as_root(),
        home: home.as_deref(),
        user: &user,
        user_home: user_home.as_deref(),
    })?;
    Ok(settings)
}

/// What [`check_home`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct HomeCheck<'a> {
    /// `auth_file` as configured (`None`: the default `~/.ssh/authorized_keys`).
    pub configured: Option<&'a str>,
    /// The resolved file.
    pub auth_file: &'a Path,
    /// Whether this process runs as root.
    pub running_as_root: bool,
    /// `$HOME`.
    pub home: Option<&'a Path>,
    /// The Git user (config.yml `user`, default `git`).
    pub user: &'a str,
    /// That user's home from the password database.
    pub user_home: Option<&'a Path>,
}

/// Refuses a `~`-relative `auth_file` when root runs the tool and `~` is not the Git user's home
/// (e.g. root's own `/root`): the historic tool then edited root's own authorized_keys. Run as
/// the Git user, or configure an absolute `auth_file` (docs/operating.md).
pub fn check_home(c: &HomeCheck) -> Result<(), SettingsError> {
    let tilde = match c.configured.map(str::trim).filter(|s| !s.is_empty()) {
        None => true,
        Some(p) => p == "~" || p.starts_with("~/"),
    };
    if !tilde || !c.running_as_root || c.user == "root" || c.home == c.user_home {
        return Ok(());
    }
    Err(SettingsError::ForeignHome(format!(
        "auth_file {} is under HOME={}, not in the home of {user} ({}): run as {user} \
         (runuser -u {user} -- gitlab-shell-authorized-keys ...) or set an absolute auth_file \
         in config.yml",
        c.auth_file.display(),
        c.home
            .map_or_else(|| "/".into(), |h| h.display().to_string()),
        c.user_home
            .map_or_else(|| "no such user".into(), |h| h.display().to_string()),
        user = c.user,
    )))
}

/// Whether the process runs as root: the owner of `/proc/self` is the effective uid.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The home folder of `user` in `/etc/passwd`.
fn passwd_home(user: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    home_in_passwd(&text, user)
}

/// The sixth field of `user`'s line of a passwd file.
pub fn home_in_passwd(passwd: &str, user: &str) -> Option<PathBuf> {
    passwd.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(':').collect();
        (fields.len() >= 7 && fields[0] == user).then(|| PathBuf::from(fields[5]))
    })
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
    fn root_with_its_own_home_is_refused_a_tilde_auth_file() {
        let file = PathBuf::from("/root/.ssh/authorized_keys");
        let base = HomeCheck {
            configured: None,
            auth_file: &file,
            running_as_root: true,
            home: Some(Path::new("/root")),
            user: "git",
            user_home: Some(Path::new("/home/git")),
        };
        let err = check_home(&base).unwrap_err().to_string();
        assert_eq!(
            err,
            "auth_file /root/.ssh/authorized_keys is under HOME=/root, not in the home of git \
             (/home/git): run as git (runuser -u git -- gitlab-shell-authorized-keys ...) or set \
             an absolute auth_file in config.yml"
        );
        assert!(
            check_home(&HomeCheck {
                configured: Some("~/keys"),
                ..base
            })
            .is_err()
        );
        // Allowed: an absolute or root-relative auth_file, a non-root user, root with the Git
        // user's HOME, or a Git user that is root.
        for ok in [
            HomeCheck {
                configured: Some("/home/git/.ssh/authorized_keys"),
                ..base
            },
            HomeCheck {
                configured: Some("keys/authorized_keys"),
                ..base
            },
            HomeCheck {
                running_as_root: false,
                ..base
            },
            HomeCheck {
                home: Some(Path::new("/home/git")),
                ..base
            },
            HomeCheck {
                user: "root",
                ..base
            },
        ] {
            check_home(&ok).unwrap();
        }
    }

    #[test]
    fn passwd_home_lookup() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\ngit:x:998:998::/var/opt/gitlab:/bin/sh\n";
        assert_eq!(
            home_in_passwd(passwd, "git"),
            Some(PathBuf::from("/var/opt/gitlab"))
        );
        assert_eq!(home_in_passwd(passwd, "gi"), None);
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
