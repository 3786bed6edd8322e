//! The environment overrides gitlab-sshd applies after reading `config.yml`
//! (docs/gitlab-sshd.md, "Configuration"): `GITLAB_URL`, `GITLAB_SHELL_SECRET`,
//! `GITLAB_LOG_FORMAT`, `GITLAB_LOG_LEVEL`, and the feature switch
//! `FF_GITLAB_SHELL_SSH_CERTIFICATES` (group SSH certificates). The only reader of the
//! environment in this crate.

use gitlab_shell::config::Config;

/// The overrides present in the environment (empty values are ignored, as upstream).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Overrides {
    /// `GITLAB_URL`.
    pub gitlab_url: Option<String>,
    /// `GITLAB_SHELL_SECRET`.
    pub secret: Option<String>,
    /// `GITLAB_LOG_FORMAT` and `GITLAB_LOG_LEVEL`, read as every binary reads them.
    pub log: gitlab_shell::logging::EnvOverrides,
    /// `FF_GITLAB_SHELL_SSH_CERTIFICATES=1`: certificates signed by a group's CA are looked up
    /// through `/authorized_certs` (upstream's switch; off otherwise).
    pub group_certificates: bool,
}

impl Overrides {
    /// Reads the four variables.
    #[expect(
        clippy::disallowed_methods,
        reason = "gitlab-sshd's documented env overrides, read in this one place"
    )]
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Overrides {
            gitlab_url: get("GITLAB_URL"),
            secret: get("GITLAB_SHELL_SECRET"),
            log: gitlab_shell::logging::EnvOverrides::from_env(),
            group_certificates: get("FF_GITLAB_SHELL_SSH_CERTIFICATES").as_deref() == Some("1"),
        }
    }

    /// Applies the overrides to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(u) = &self.gitlab_url {
            config.gitlab_url = u.clone();
        }
        if let Some(s) = &self.secret {
            config.secret = s.clone().into_bytes();
        }
        self.log.apply(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_file_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::from_yaml(dir.path(), b"secret: a\ngitlab_url: http://x\n").unwrap();
        Overrides {
            gitlab_url: Some("http://y".into()),
            secret: Some("b".into()),
            log: gitlab_shell::logging::EnvOverrides {
                format: Some("text".into()),
                level: None,
            },
            group_certificates: false,
        }
        .apply(&mut c);
        assert_eq!(c.gitlab_url, "http://y");
        assert_eq!(c.secret, b"b");
        assert_eq!(c.log_format, "text");
        assert_eq!(c.log_level, "info");
    }
}
