//! `topology_service:` of config.yml (GitLab Shell 14.56.1, behaviour §2.3 and §3.6): the
//! Topology Service that routes requests between GitLab Cells. We parse every key with
//! GitLab Shell's defaults and refuse the same invalid settings at start-up, with the same
//! texts (the binaries then print `Failed to read config, exiting: <text>`). Routing itself is
//! not implemented: with `enabled: true` every request still goes to `gitlab_url`, which is
//! what GitLab Shell does whenever the Topology Service cannot be asked (docs/operating.md).

use std::time::Duration;

use serde::Deserialize;

use super::{duration, nullable};

/// Prefix of every validation failure.
const INVALID: &str = "invalid topology_service config";

/// GitLab Shell's default Classify timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// `topology_service`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TopologyService {
    /// `enabled` (default false).
    #[serde(deserialize_with = "nullable")]
    pub enabled: bool,
    /// `address`: the service's `host:port`.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// `timeout` (default 5 s; seconds or a Go duration string).
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// `tls`.
    #[serde(deserialize_with = "nullable")]
    pub tls: TopologyTls,
    /// `cell_endpoint`: how another cell's internal API is reached.
    #[serde(deserialize_with = "nullable")]
    pub cell_endpoint: CellEndpoint,
}

impl Default for TopologyService {
    fn default() -> Self {
        TopologyService {
            enabled: false,
            address: String::new(),
            timeout: DEFAULT_TIMEOUT,
            tls: TopologyTls::default(),
            cell_endpoint: CellEndpoint::default(),
        }
    }
}

/// `topology_service.tls`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TopologyTls {
    /// `enabled`.
    #[serde(deserialize_with = "nullable")]
    pub enabled: bool,
    /// `ca_file` (empty: the system's roots).
    #[serde(deserialize_with = "nullable")]
    pub ca_file: String,
    /// `cert_file` (mTLS; needs `key_file`).
    #[serde(deserialize_with = "nullable")]
    pub cert_file: String,
    /// `key_file` (mTLS; needs `cert_file`).
    #[serde(deserialize_with = "nullable")]
    pub key_file: String,
    /// `server_name`.
    #[serde(deserialize_with = "nullable")]
    pub server_name: String,
    /// `insecure_skip_verify`.
    #[serde(deserialize_with = "nullable")]
    pub insecure_skip_verify: bool,
}

/// `topology_service.cell_endpoint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct CellEndpoint {
    /// `scheme`: `http` or `https`.
    #[serde(deserialize_with = "nullable")]
    pub scheme: String,
    /// `port`: 1 to 65535.
    #[serde(deserialize_with = "nullable")]
    pub port: i64,
}

impl TopologyService {
    /// GitLab Shell's start-up checks; a disabled service is always valid.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let fail = |what: &str| Err(format!("{INVALID}: {what}"));
        if self.address.is_empty() {
            return fail("topology_service.address is required when enabled");
        }
        if !self.address.contains(':') {
            return fail("topology_service.address must be in host:port format");
        }
        let tls = &self.tls;
        if tls.enabled && tls.cert_file.is_empty() != tls.key_file.is_empty() {
            return fail(
                "topology_service.tls: both cert_file and key_file must be provided for mTLS",
            );
        }
        if !matches!(self.cell_endpoint.scheme.as_str(), "http" | "https") {
            return fail(
                "topology_service.cell_endpoint: scheme is required and must be \"http\" or \"https\"",
            );
        }
        if !(1..=65535).contains(&self.cell_endpoint.port) {
            return fail(
                "topology_service.cell_endpoint: port is required and must be between 1 and 65535",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(yaml: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        Config::from_yaml(dir.path(), format!("secret: s\n{yaml}").as_bytes())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_a_full_section() {
        let c = load("").unwrap();
        assert!(!c.topology_service.enabled);
        assert_eq!(c.topology_service.timeout, super::DEFAULT_TIMEOUT);
        let c = load(
            "topology_service:\n  enabled: true\n  address: topology.internal:443\n  timeout: 1500ms\n  tls:\n    enabled: true\n    ca_file: /ca.pem\n    cert_file: /c.pem\n    key_file: /k.pem\n    server_name: topo\n    insecure_skip_verify: false\n  cell_endpoint:\n    scheme: https\n    port: 8443\n  unknown_key: ignored\n",
        )
        .unwrap();
        let t = &c.topology_service;
        assert_eq!(t.address, "topology.internal:443");
        assert_eq!(t.timeout, std::time::Duration::from_millis(1500));
        assert_eq!(
            (t.tls.server_name.as_str(), t.cell_endpoint.port),
            ("topo", 8443)
        );
        // A disabled section is never checked.
        assert!(load("topology_service:\n  enabled: false\n  address: nonsense\n").is_ok());
    }

    #[test]
    fn invalid_settings_fail_start_up_with_gitlab_shell_text() {
        let ok_endpoint = "  cell_endpoint: { scheme: http, port: 80 }\n";
        let cases = [
            ("  enabled: true\n".to_owned(), "topology_service.address is required when enabled"),
            ("  enabled: true\n  address: localhost\n".to_owned(), "topology_service.address must be in host:port format"),
            (
                format!("  enabled: true\n  address: t:1\n  tls: {{ enabled: true, cert_file: /c }}\n{ok_endpoint}"),
                "topology_service.tls: both cert_file and key_file must be provided for mTLS",
            ),
            (
                "  enabled: true\n  address: t:1\n  cell_endpoint: { scheme: ftp, port: 80 }\n".to_owned(),
                "topology_service.cell_endpoint: scheme is required and must be \"http\" or \"https\"",
            ),
            (
                "  enabled: true\n  address: t:1\n  cell_endpoint: { scheme: https }\n".to_owned(),
                "topology_service.cell_endpoint: port is required and must be between 1 and 65535",
            ),
            (
                "  enabled: true\n  address: t:1\n  cell_endpoint: { scheme: https, port: 70000 }\n".to_owned(),
                "topology_service.cell_endpoint: port is required and must be between 1 and 65535",
            ),
        ];
        for (section, want) in cases {
            let err = load(&format!("topology_service:\n{section}")).unwrap_err();
            assert_eq!(
                err,
                format!("invalid topology_service config: {want}"),
                "{section}"
            );
        }
        assert!(
            load(&format!(
                "topology_service:\n  enabled: true\n  address: t:1\n{ok_endpoint}"
            ))
            .is_ok()
        );
    }
}
