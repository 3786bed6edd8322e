//! `config.yml` and the shared secret (`internal/config`, behaviour §2): defaults mirroring
//! GitLab Shell's `DefaultConfig`, paths resolved against the root folder at load, `gitlab_url`
//! path-unescaped as a whole. Nothing else in the crate reads YAML.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod topology;
pub use topology::{CellEndpoint, TopologyService, TopologyTls};

/// Default `http_settings.read_timeout` (seconds) when the key is absent or 0.
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 300;

/// The loaded configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Folder holding `config.yml`: the GitLab Shell root.
    pub root_dir: PathBuf,
    /// `user` (gitlab-sshd only; kept for completeness).
    pub user: String,
    /// `gitlab_url`, already path-unescaped.
    pub gitlab_url: String,
    /// `gitlab_relative_url_root` (used only with `http+unix://`).
    pub gitlab_relative_url_root: String,
    /// `gitlab_tracing` (accepted, tracing is not exported).
    pub gitlab_tracing: String,
    /// Resolved secret file path (empty when `secret` was given inline).
    pub secret_file: PathBuf,
    /// The shared secret, untrimmed.
    pub secret: Vec<u8>,
    /// `ssl_cert_dir`: extra trust anchors for the whole process (https and Gitaly `tls://`).
    pub ssl_cert_dir: String,
    /// `http_settings`.
    pub http_settings: HttpSettings,
    /// Resolved `log_file`.
    pub log_file: PathBuf,
    /// `log_format` (`json` or `text`).
    pub log_format: String,
    /// `log_level`.
    pub log_level: String,
    /// `lfs.pure_ssh_protocol`.
    pub lfs_pure_ssh_protocol: bool,
    /// `pat.enabled`.
    pub pat_enabled: bool,
    /// `pat.allowed_scopes` (empty: any scope).
    pub pat_allowed_scopes: Vec<String>,
    /// `topology_service` (Cells routing; parsed and validated, routing stays off: see
    /// [`TopologyService`]).
    pub topology_service: TopologyService,
    /// `sshd:` (gitlab-sshd only; docs/gitlab-sshd.md).
    pub sshd: SshdConfig,
}

/// The `sshd:` section (gitlab-sshd only): every key with gitlab-sshd's default
/// (docs/gitlab-sshd.md, "Configuration"). Durations are integer seconds or Go duration strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct SshdConfig {
    /// `listen`: the SSH listen address.
    #[serde(deserialize_with = "nullable")]
    pub listen: String,
    /// `proxy_protocol`: read a PROXY v1/v2 header before SSH.
    #[serde(deserialize_with = "nullable")]
    pub proxy_protocol: bool,
    /// `proxy_policy`: `use` (default; anything unknown), `require`, `reject`, `ignore`.
    #[serde(deserialize_with = "nullable")]
    pub proxy_policy: String,
    /// `proxy_allowed`: IPs/CIDRs allowed to send a header (others: reject).
    #[serde(deserialize_with = "nullable")]
    pub proxy_allowed: Vec<String>,
    /// `proxy_header_timeout` (default 500ms).
    #[serde(deserialize_with = "duration")]
    pub proxy_header_timeout: Duration,
    /// `web_listen`: monitoring HTTP address; empty: none.
    #[serde(deserialize_with = "nullable")]
    pub web_listen: String,
    /// `readiness_probe` path.
    #[serde(deserialize_with = "nullable")]
    pub readiness_probe: String,
    /// `liveness_probe` path.
    #[serde(deserialize_with = "nullable")]
    pub liveness_probe: String,
    /// `concurrent_sessions_limit`: session channels per connection.
    #[serde(deserialize_with = "nullable")]
    pub concurrent_sessions_limit: i64,
    /// `client_alive_interval` (0: no keepalives).
    #[serde(deserialize_with = "duration")]
    pub client_alive_interval: Duration,
    /// `grace_period` for shutdown.
    #[serde(deserialize_with = "duration")]
    pub grace_period: Duration,
    /// `login_grace_time`: handshake + auth deadline (0: none).
    #[serde(deserialize_with = "duration")]
    pub login_grace_time: Duration,
    /// `host_key_files`.
    #[serde(deserialize_with = "nullable")]
    pub host_key_files: Vec<String>,
    /// `host_cert_files`.
    #[serde(deserialize_with = "nullable")]
    pub host_cert_files: Vec<String>,
    /// `trusted_user_ca_keys`.
    #[serde(deserialize_with = "nullable")]
    pub trusted_user_ca_keys: Vec<String>,
    /// `macs` (empty: the default set).
    #[serde(deserialize_with = "nullable")]
    pub macs: Vec<String>,
    /// `kex_algorithms` (empty: the default set).
    #[serde(deserialize_with = "nullable")]
    pub kex_algorithms: Vec<String>,
    /// `ciphers` (empty: the default set).
    #[serde(deserialize_with = "nullable")]
    pub ciphers: Vec<String>,
    /// `public_key_algorithms` (empty: the default set).
    #[serde(deserialize_with = "nullable")]
    pub public_key_algorithms: Vec<String>,
    /// `max_unauthenticated_connections` (ours, beyond upstream: OpenSSH's `MaxStartups` idea):
    /// connections not yet authenticated, in flight at once; more are closed at once. 0: no limit.
    #[serde(deserialize_with = "nullable")]
    pub max_unauthenticated_connections: u64,
    /// `max_connections_per_source` (ours, beyond upstream): connections in flight from one
    /// client address (the PROXY header's when there is one); more are closed at once. 0: no
    /// limit.
    #[serde(deserialize_with = "nullable")]
    pub max_connections_per_source: u64,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            listen: "[::]:22".into(),
            proxy_protocol: false,
            proxy_policy: "use".into(),
            proxy_allowed: Vec::new(),
            proxy_header_timeout: Duration::from_millis(500),
            web_listen: "localhost:9122".into(),
            readiness_probe: "/start".into(),
            liveness_probe: "/health".into(),
            concurrent_sessions_limit: 10,
            client_alive_interval: Duration::from_secs(15),
            grace_period: Duration::from_secs(10),
            login_grace_time: Duration::from_secs(60),
            host_key_files: [
                "/run/secrets/ssh-hostkeys/ssh_host_rsa_key",
                "/run/secrets/ssh-hostkeys/ssh_host_ecdsa_key",
                "/run/secrets/ssh-hostkeys/ssh_host_ed25519_key",
            ]
            .map(String::from)
            .to_vec(),
            host_cert_files: Vec::new(),
            trusted_user_ca_keys: Vec::new(),
            macs: Vec::new(),
            kex_algorithms: Vec::new(),
            ciphers: Vec::new(),
            public_key_algorithms: Vec::new(),
            max_unauthenticated_connections: 256,
            max_connections_per_source: 0,
        }
    }
}

/// A duration given as integer seconds or a Go duration string (`500ms`, `1m30s`).
fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Text(String),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(Duration::ZERO),
        Some(Raw::Secs(s)) => Ok(Duration::from_secs(s)),
        Some(Raw::Text(t)) => parse_go_duration(&t).map_err(serde::de::Error::custom),
    }
}

/// Go's `time.ParseDuration` for non-negative values: a sequence of decimal numbers with units
/// `ns`, `us`/`µs`, `ms`, `s`, `m`, `h` (`"0"` alone is allowed).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("time: invalid duration \"{text}\"");
    let s = text.strip_prefix('+').unwrap_or(text);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad());
        }
        let value: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// `http_settings` of config.yml.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Basic-auth user (sent only together with a password).
    #[serde(deserialize_with = "nullable")]
    pub user: String,
    /// Basic-auth password.
    #[serde(deserialize_with = "nullable")]
    pub password: String,
    /// Seconds per attempt; 0 means [`DEFAULT_READ_TIMEOUT_SECS`].
    #[serde(deserialize_with = "nullable")]
    pub read_timeout: u64,
    /// Extra CA bundle for https (must exist when set).
    #[serde(deserialize_with = "nullable")]
    pub ca_file: String,
    /// Folder of extra CA files for https.
    #[serde(deserialize_with = "nullable")]
    pub ca_path: String,
}

impl HttpSettings {
    /// The per-attempt timeout.
    pub fn read_timeout(&self) -> Duration {
        match self.read_timeout {
            0 => Duration::from_secs(DEFAULT_READ_TIMEOUT_SECS),
            s => Duration::from_secs(s),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Raw {
    #[serde(deserialize_with = "nullable")]
    user: String,
    #[serde(deserialize_with = "nullable")]
    gitlab_url: String,
    #[serde(deserialize_with = "nullable")]
    gitlab_relative_url_root: String,
    #[serde(deserialize_with = "nullable")]
    gitlab_tracing: String,
    #[serde(deserialize_with = "nullable")]
    secret_file: String,
    #[serde(deserialize_with = "nullable")]
    secret: String,
    #[serde(deserialize_with = "nullable")]
    ssl_cert_dir: String,
    #[serde(deserialize_with = "nullable")]
    http_settings: HttpSettings,
    #[serde(deserialize_with = "nullable")]
    log_file: String,
    #[serde(deserialize_with = "nullable")]
    log_format: String,
    #[serde(deserialize_with = "nullable")]
    log_level: String,
    #[serde(deserialize_with = "nullable")]
    lfs: Lfs,
    pat: Pat,
    topology_service: TopologyService,
    sshd: SshdConfig,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Lfs {
    #[serde(deserialize_with = "nullable")]
    pure_ssh_protocol: bool,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct Pat {
    #[serde(deserialize_with = "nullable")]
    enabled: bool,
    #[serde(deserialize_with = "nullable")]
    allowed_scopes: Vec<String>,
}

impl Default for Pat {
    fn default() -> Self {
        Pat {
            enabled: true,
            allowed_scopes: Vec::new(),
        }
    }
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            user: "git".into(),
            gitlab_url: String::new(),
            gitlab_relative_url_root: String::new(),
            gitlab_tracing: String::new(),
            secret_file: ".gitlab_shell_secret".into(),
            secret: String::new(),
            ssl_cert_dir: String::new(),
            http_settings: HttpSettings::default(),
            log_file: "gitlab-shell.log".into(),
            log_format: "json".into(),
            log_level: "info".into(),
            lfs: Lfs::default(),
            pat: Pat::default(),
            topology_service: TopologyService::default(),
            sshd: SshdConfig::default(),
        }
    }
}

/// YAML null gives the type's zero value (only reachable inside sequences; mapping entries with
/// null values are dropped before deserializing, see [`drop_nulls`]).
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Removes null mapping entries, recursively. yaml.v3 leaves a non-pointer Go field untouched
/// when the YAML value is null, so `pat:` or `log_file:` with nothing after them keep their
/// defaults (checked against the Go binary); with the entries gone, serde's defaults apply.
fn drop_nulls(value: &mut serde_yaml::Value) {
    if let serde_yaml::Value::Mapping(map) = value {
        map.retain(|_, v| !v.is_null());
        for (_, v) in map.iter_mut() {
            drop_nulls(v);
        }
    }
}

/// A config loading failure; the text is what follows `Failed to read config, exiting: `.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Formats an I/O error the way Go's `*PathError` prints: `open /x: no such file or directory`.
pub fn go_io_error(op: &str, path: &Path, err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    let lowered = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{op} {}: {lowered}", path.display())
}

/// Reads a whole file as Go's `os.ReadFile` does, so a failure names the step that failed:
/// `open <path>: …` when the file cannot be opened, `read <path>: …` when it cannot be read
/// (a directory opens fine and then fails to read).
fn read_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(|e| ConfigError(go_io_error("open", path, &e)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| ConfigError(go_io_error("read", path, &e)))?;
    Ok(bytes)
}

/// Go's `path.Join` for our uses: joins and cleans (`.`, `..`, duplicate `/`).
pub fn clean_join(base: &Path, rel: &str) -> PathBuf {
    let joined = format!("{}/{}", base.display(), rel);
    let absolute = joined.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    PathBuf::from(match (absolute, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    })
}

/// Go's `url.PathUnescape`: `%XX` decoded; a bad escape is an error naming it.
pub fn path_unescape(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => {
                    let end = (i + 3).min(b.len());
                    return Err(format!(
                        "invalid URL escape \"{}\"",
                        String::from_utf8_lossy(&b[i..end])
                    ));
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Config {
    /// The trust of the whole process: the system roots plus `ssl_cert_dir`, which GitLab Shell
    /// exports as `SSL_CERT_DIR` (behaviour §2.3); Gitaly `tls://` uses it as it is.
    pub fn system_trust(&self) -> tls_trust::Trust {
        tls_trust::Trust::system(&self.ssl_cert_dir)
    }

    /// The internal API's `https://` trust: [`Config::system_trust`] plus
    /// `http_settings.ca_file` and `ca_path` (behaviour §2.4).
    pub fn internal_api_trust(&self) -> tls_trust::Trust {
        let hs = &self.http_settings;
        self.system_trust().with_ca(&hs.ca_file, &hs.ca_path)
    }

    /// Loads `<root>/config.yml` and the secret.
    pub fn load(root: &Path) -> Result<Config, ConfigError> {
        let path = root.join("config.yml");
        let text = read_file(&path)?;
        Self::from_yaml(root, &text)
    }

    /// Parses config text as if it were `<root>/config.yml`, then reads the secret file.
    pub fn from_yaml(root: &Path, text: &[u8]) -> Result<Config, ConfigError> {
        let raw: Raw = if text.iter().all(u8::is_ascii_whitespace) {
            Raw::default()
        } else {
            let mut value: serde_yaml::Value =
                serde_yaml::from_slice(text).map_err(|e| ConfigError(format!("yaml: {e}")))?;
            drop_nulls(&mut value);
            if value.is_null() {
                Raw::default()
            } else {
                serde_yaml::from_value::<Raw>(value)
                    .map_err(|e| ConfigError(format!("yaml: {e}")))?
            }
        };
        raw.topology_service.validate().map_err(ConfigError)?;
        let gitlab_url = if raw.gitlab_url.is_empty() {
            String::new()
        } else {
            path_unescape(&raw.gitlab_url).map_err(ConfigError)?
        };
        let (secret, secret_file) = if !raw.secret.is_empty() {
            (raw.secret.into_bytes(), PathBuf::new())
        } else {
            let file = if raw.secret_file.starts_with('/') {
                PathBuf::from(&raw.secret_file)
            } else {
                clean_join(root, &raw.secret_file)
            };
            (read_file(&file)?, file)
        };
        let log_file = if raw.log_file.starts_with('/') {
            PathBuf::from(&raw.log_file)
        } else if raw.log_file.is_empty() {
            PathBuf::new()
        } else {
            clean_join(root, &raw.log_file)
        };
        Ok(Config {
            root_dir: root.to_path_buf(),
            user: raw.user,
            gitlab_url,
            gitlab_relative_url_root: raw.gitlab_relative_url_root,
            gitlab_tracing: raw.gitlab_tracing,
            secret_file,
            secret,
            ssl_cert_dir: raw.ssl_cert_dir,
            http_settings: raw.http_settings,
            log_file,
            log_format: raw.log_format,
            log_level: raw.log_level,
            lfs_pure_ssh_protocol: raw.lfs.pure_ssh_protocol,
            pat_enabled: raw.pat.enabled,
            pat_allowed_scopes: raw.pat.allowed_scopes,
            topology_service: raw.topology_service,
            sshd: raw.sshd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_secret(secret: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitlab_shell_secret"), secret).unwrap();
        dir
    }

    #[test]
    fn defaults() {
        let dir = root_with_secret(b"s3cret\n");
        let c = Config::from_yaml(dir.path(), b"").unwrap();
        assert_eq!(c.user, "git");
        assert_eq!(c.gitlab_url, "");
        assert_eq!(c.secret, b"s3cret\n");
        assert_eq!(c.secret_file, dir.path().join(".gitlab_shell_secret"));
        assert_eq!(c.log_file, dir.path().join("gitlab-shell.log"));
        assert_eq!(c.log_format, "json");
        assert_eq!(c.log_level, "info");
        assert_eq!(c.http_settings.read_timeout(), Duration::from_secs(300));
        assert!(c.pat_enabled);
        assert!(!c.lfs_pure_ssh_protocol);
        assert!(c.pat_allowed_scopes.is_empty());
    }

    #[test]
    fn sshd_defaults_and_keys() {
        let dir = root_with_secret(b"s");
        let c = Config::from_yaml(dir.path(), b"").unwrap();
        assert_eq!(c.sshd, SshdConfig::default());
        assert_eq!(c.sshd.listen, "[::]:22");
        assert_eq!(c.sshd.web_listen, "localhost:9122");
        assert_eq!(c.sshd.proxy_header_timeout, Duration::from_millis(500));
        assert_eq!(c.sshd.concurrent_sessions_limit, 10);
        assert_eq!(c.sshd.login_grace_time, Duration::from_secs(60));
        assert_eq!(c.sshd.host_key_files.len(), 3);
        let yaml = br#"
sshd:
  listen: "127.0.0.1:0"
  proxy_protocol: true
  proxy_policy: require
  proxy_allowed: ["10.0.0.0/8"]
  proxy_header_timeout: 2s
  web_listen: ""
  concurrent_sessions_limit: 3
  client_alive_interval: 1m30s
  grace_period: 5
  login_grace_time: 0
  host_key_files: [/k]
  ciphers: [aes128-ctr]
"#;
        let c = Config::from_yaml(dir.path(), yaml).unwrap();
        assert_eq!(c.sshd.listen, "127.0.0.1:0");
        assert!(c.sshd.proxy_protocol);
        assert_eq!(c.sshd.proxy_policy, "require");
        assert_eq!(c.sshd.proxy_allowed, vec!["10.0.0.0/8".to_string()]);
        assert_eq!(c.sshd.proxy_header_timeout, Duration::from_secs(2));
        assert_eq!(c.sshd.web_listen, "");
        assert_eq!(c.sshd.readiness_probe, "/start");
        assert_eq!(c.sshd.concurrent_sessions_limit, 3);
        assert_eq!(c.sshd.client_alive_interval, Duration::from_secs(90));
        assert_eq!(c.sshd.grace_period, Duration::from_secs(5));
        assert_eq!(c.sshd.login_grace_time, Duration::ZERO);
        assert_eq!(c.sshd.host_key_files, vec!["/k".to_string()]);
        assert_eq!(c.sshd.ciphers, vec!["aes128-ctr".to_string()]);
        assert!(Config::from_yaml(dir.path(), b"sshd:\n  grace_period: soon\n").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(Duration::from_secs(3723)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_go_duration("10").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("3x").is_err());
    }

    #[test]
    fn every_key() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = br#"
user: gituser
gitlab_url: "http+unix://%2Fhome%2Fgit%2Fgitlab.socket"
gitlab_relative_url_root: /gitlab/
gitlab_tracing: opentracing://jaeger
secret: inline
ssl_cert_dir: /etc/certs
http_settings:
  user: u
  password: p
  read_timeout: 7
  ca_file: /ca.pem
  ca_path: /cas
log_file: /var/log/gls.log
log_format: text
log_level: DEBUG
unknown_key: ignored
lfs:
  pure_ssh_protocol: true
pat:
  enabled: false
  allowed_scopes: [read_api, read_repository]
sshd:
  listen: "[::]:22"
"#;
        let c = Config::from_yaml(dir.path(), yaml).unwrap();
        assert_eq!(c.user, "gituser");
        assert_eq!(c.gitlab_url, "http+unix:///home/git/gitlab.socket");
        assert_eq!(c.gitlab_relative_url_root, "/gitlab/");
        assert_eq!(c.secret, b"inline");
        assert_eq!(c.ssl_cert_dir, "/etc/certs");
        assert_eq!(c.http_settings.user, "u");
        assert_eq!(c.http_settings.password, "p");
        assert_eq!(c.http_settings.read_timeout(), Duration::from_secs(7));
        assert_eq!(c.http_settings.ca_file, "/ca.pem");
        assert_eq!(c.http_settings.ca_path, "/cas");
        // ssl_cert_dir is the whole process's; ca_file and ca_path only the internal API's.
        assert_eq!(c.system_trust(), tls_trust::Trust::system("/etc/certs"));
        assert_eq!(
            c.internal_api_trust(),
            tls_trust::Trust::system("/etc/certs").with_ca("/ca.pem", "/cas")
        );
        assert_eq!(c.log_file, PathBuf::from("/var/log/gls.log"));
        assert_eq!(c.log_format, "text");
        assert_eq!(c.log_level, "DEBUG");
        assert!(c.lfs_pure_ssh_protocol);
        assert!(!c.pat_enabled);
        assert_eq!(c.pat_allowed_scopes, ["read_api", "read_repository"]);
    }

    #[test]
    fn null_values_keep_defaults() {
        let dir = root_with_secret(b"");
        let c =
            Config::from_yaml(dir.path(), b"http_settings:\npat:\nuser:\nlog_file: ~\n").unwrap();
        assert_eq!(c.http_settings, HttpSettings::default());
        assert!(
            c.pat_enabled,
            "a null pat: section keeps pat.enabled (as the Go binary does)"
        );
        assert_eq!(c.user, "git");
        assert_eq!(c.log_file, dir.path().join("gitlab-shell.log"));
        let c = Config::from_yaml(dir.path(), b"pat:\n  allowed_scopes: [api]\n").unwrap();
        assert!(c.pat_enabled, "a partial section keeps the other defaults");
    }

    #[test]
    fn empty_secret_file_is_valid() {
        let dir = root_with_secret(b"");
        assert_eq!(Config::from_yaml(dir.path(), b"{}").unwrap().secret, b"");
    }

    #[test]
    fn relative_secret_and_log_paths_join_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/secret"), b"x").unwrap();
        let c = Config::from_yaml(
            dir.path(),
            b"secret_file: ./etc/../etc/secret\nlog_file: log/x.log\n",
        )
        .unwrap();
        assert_eq!(c.secret, b"x");
        assert_eq!(c.log_file, dir.path().join("log/x.log"));
    }

    #[test]
    fn errors_read_like_go() {
        let dir = tempfile::tempdir().unwrap();
        let err = Config::load(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "open {}/config.yml: no such file or directory",
                dir.path().display()
            )
        );
        let err = Config::from_yaml(dir.path(), b"gitlab_url: http://x\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "open {}/.gitlab_shell_secret: no such file or directory",
                dir.path().display()
            )
        );
        let err = Config::from_yaml(dir.path(), b"gitlab_url: [\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("yaml: "), "{err}");
        let err = Config::from_yaml(dir.path(), b"secret: x\ngitlab_url: http://a%zz\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "invalid URL escape \"%zz\"");
    }

    #[test]
    fn example_config_parses_to_the_documented_values() {
        let dir = root_with_secret(b"secret");
        let text = include_str!("../../../config.yml.example");
        let c = Config::from_yaml(dir.path(), text.as_bytes()).unwrap();
        assert_eq!(
            c.gitlab_url,
            "http+unix:///home/git/gitlab/tmp/sockets/gitlab-workhorse.socket"
        );
        assert_eq!(c.http_settings, HttpSettings::default());
        assert_eq!(c.log_level, "INFO");
        assert_eq!(c.log_format, "json");
        assert!(c.pat_enabled);
        assert!(!c.lfs_pure_ssh_protocol);
        assert_eq!(c.secret, b"secret");
    }

    #[test]
    fn clean_join_behaves_like_go_path_join() {
        assert_eq!(
            clean_join(Path::new("/a/b/"), "bin/gitlab-shell"),
            PathBuf::from("/a/b/bin/gitlab-shell")
        );
        assert_eq!(
            clean_join(Path::new("/a/./b/.."), "bin"),
            PathBuf::from("/a/bin")
        );
        assert_eq!(clean_join(Path::new("rel"), "../x"), PathBuf::from("x"));
    }
}
