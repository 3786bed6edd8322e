//! User certificates signed by an instance-level CA (`trusted_user_ca_keys`; docs/gitlab-sshd.md,
//! "User certificates"): the certificate's KeyId is the GitLab username, no API call is made,
//! and the session runs as `username-<KeyId>`.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use russh::keys::ssh_key::certificate::CertType;
use russh::keys::ssh_key::{AuthorizedKeys, Fingerprint};
use russh::keys::{Certificate, HashAlg};

use crate::proxy::Cidr;

/// The trusted CAs (SHA-256 fingerprints of their public keys).
#[derive(Debug, Clone, Default)]
pub struct TrustedCas(Vec<Fingerprint>);

impl TrustedCas {
    /// Reads every file (authorized_keys format, several keys per file); any error is fatal.
    pub fn load(files: &[String]) -> Result<TrustedCas, String> {
        let mut fps = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("failed to read trusted user CA keys {f}: {e}"))?;
            for entry in AuthorizedKeys::new(&text) {
                let entry =
                    entry.map_err(|e| format!("failed to parse trusted user CA keys {f}: {e}"))?;
                fps.push(entry.public_key().fingerprint(HashAlg::Sha256));
            }
        }
        Ok(TrustedCas(fps))
    }

    /// No CA configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// GitLab's username rules for a certificate KeyId; the errors are upstream's texts.
pub fn validate_key_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("certificate has empty KeyId".into());
    }
    let n = id.chars().count();
    if !(2..=255).contains(&n) {
        return Err(format!(
            "certificate KeyId length {n} is outside valid range [2, 255]"
        ));
    }
    let special = |c: char| matches!(c, '.' | '_' | '-');
    let ok_inner = id.chars().all(|c| c.is_ascii_alphanumeric() || special(c));
    let first_last = id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if !ok_inner || !first_last {
        return Err("certificate KeyId does not match GitLab username format".into());
    }
    let chars: Vec<char> = id.chars().collect();
    if chars.windows(2).any(|w| special(w[0]) && special(w[1])) {
        return Err("certificate KeyId contains consecutive special characters".into());
    }
    Ok(())
}

/// Checks a certificate presented by `user` from `client_ip` (its signature over the auth
/// request was verified by russh); the GitLab username on success.
pub fn check(
    cert: &Certificate,
    user: &str,
    client_ip: IpAddr,
    trusted: &TrustedCas,
) -> Result<String, String> {
    if cert.cert_type() != CertType::User {
        return Err("certificate rejected: not a user certificate".into());
    }
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    if !trusted.0.contains(&ca) {
        // Group-level CAs (`/authorized_certs`) are not supported yet.
        return Err("certificate rejected: signed by an untrusted CA".into());
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    cert.validate_at(now, &trusted.0)
        .map_err(|e| format!("certificate rejected: {e}"))?;
    if !cert.valid_principals().is_empty() && !cert.valid_principals().iter().any(|p| p == user) {
        return Err(format!(
            "certificate rejected: ssh: principal {user:?} not in the set of valid principals for given certificate"
        ));
    }
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "source-address" => {
                let allowed = value
                    .split(',')
                    .map(|s| Cidr::parse(s.trim()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("certificate rejected: {e}"))?;
                if !allowed.iter().any(|c| c.contains(client_ip)) {
                    return Err(format!(
                        "certificate rejected: source address {client_ip} not allowed by the certificate"
                    ));
                }
            }
            other => {
                return Err(format!(
                    "certificate rejected: unsupported critical option {other:?}"
                ));
            }
        }
    }
    validate_key_id(cert.key_id()).map_err(|e| format!("certificate rejected: {e}"))?;
    Ok(cert.key_id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_rules() {
        assert!(validate_key_id("alice").is_ok());
        assert!(validate_key_id("a.b_c-d9").is_ok());
        assert_eq!(
            validate_key_id("").unwrap_err(),
            "certificate has empty KeyId"
        );
        assert_eq!(
            validate_key_id("a").unwrap_err(),
            "certificate KeyId length 1 is outside valid range [2, 255]"
        );
        assert_eq!(
            validate_key_id(&"a".repeat(256)).unwrap_err(),
            "certificate KeyId length 256 is outside valid range [2, 255]"
        );
        assert_eq!(
            validate_key_id("-alice").unwrap_err(),
            "certificate KeyId does not match GitLab username format"
        );
        assert_eq!(
            validate_key_id("al ice").unwrap_err(),
            "certificate KeyId does not match GitLab username format"
        );
        assert_eq!(
            validate_key_id("al..ice").unwrap_err(),
            "certificate KeyId contains consecutive special characters"
        );
    }
}
