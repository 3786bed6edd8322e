//! User certificates (docs/gitlab-sshd.md, "Authentication"). Signed by an instance-level CA
//! (`trusted_user_ca_keys`): the certificate's KeyId is the GitLab username, no API call is made,
//! and the session runs as `username-<KeyId>`. Signed by any other CA (group level, behind
//! `FF_GITLAB_SHELL_SSH_CERTIFICATES=1`): the server asks `/authorized_certs` which user and group
//! the CA and KeyId stand for. Either way the certificate itself must pass [`validate`].

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

/// The CA's SHA-256 fingerprint as `/authorized_certs` takes it: base64 without `SHA256:`.
pub fn api_fingerprint(cert: &Certificate) -> String {
    let fp = cert
        .signature_key()
        .fingerprint(HashAlg::Sha256)
        .to_string();
    fp.strip_prefix("SHA256:").unwrap_or(&fp).to_owned()
}

/// Whether `cert` was signed by one of the instance-level CAs.
pub fn is_instance_ca(cert: &Certificate, trusted: &TrustedCas) -> bool {
    trusted
        .0
        .contains(&cert.signature_key().fingerprint(HashAlg::Sha256))
}

/// What every certificate must satisfy, whoever trusts its CA (x/crypto's `CertChecker`): a user
/// certificate whose signature by its own CA key verifies, valid at `now` (Unix seconds),
/// listing `user` among its principals (or none), and carrying no critical option but
/// `source-address`, which must contain `client_ip` (the PROXY header's address when there is
/// one).
pub fn validate(cert: &Certificate, user: &str, client_ip: IpAddr, now: u64) -> Result<(), String> {
    if cert.cert_type() != CertType::User {
        return Err("certificate rejected: not a user certificate".into());
    }
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    cert.validate_at(now, &[ca])
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
    Ok(())
}

/// The current Unix time in seconds.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// Checks a certificate signed by an instance-level CA, presented by `user` from `client_ip`
/// (its signature over the auth request was verified by russh); the GitLab username on
/// success.
pub fn check(
    cert: &Certificate,
    user: &str,
    client_ip: IpAddr,
    trusted: &TrustedCas,
) -> Result<String, String> {
    if !is_instance_ca(cert, trusted) {
        return Err("certificate rejected: signed by an untrusted CA".into());
    }
    validate(cert, user, client_ip, now())?;
    validate_key_id(cert.key_id()).map_err(|e| format!("certificate rejected: {e}"))?;
    Ok(cert.key_id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use russh::keys::ssh_key::certificate::Builder;
    use russh::keys::{Algorithm, PrivateKey};

    fn key() -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).expect("key")
    }

    /// A user certificate for `principals`, valid 1000..2000, signed by `ca`.
    fn cert(ca: &PrivateKey, principals: &[&str], options: &[(&str, &str)]) -> Certificate {
        let user = key();
        let mut b = Builder::new_with_random_nonce(&mut rand::rng(), user.public_key(), 1000, 2000)
            .expect("builder");
        b.cert_type(CertType::User).expect("type");
        b.key_id("alice").expect("key id");
        if principals.is_empty() {
            b.all_principals_valid().expect("all principals");
        }
        for p in principals {
            b.valid_principal(*p).expect("principal");
        }
        for (k, v) in options {
            b.critical_option(*k, *v).expect("option");
        }
        b.sign(ca).expect("sign")
    }

    #[test]
    fn validate_checks_validity_principals_and_source_address() {
        let ca = key();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let c = cert(&ca, &["git"], &[]);
        assert_eq!(validate(&c, "git", ip, 1500), Ok(()));
        assert!(validate(&c, "git", ip, 999).is_err(), "not yet valid");
        assert!(validate(&c, "git", ip, 2001).is_err(), "expired");
        let e = validate(&c, "root", ip, 1500).unwrap_err();
        assert!(e.contains("principal \"root\" not in the set"), "{e}");
        assert_eq!(validate(&cert(&ca, &[], &[]), "root", ip, 1500), Ok(()));
        let c = cert(&ca, &[], &[("source-address", "10.0.0.0/8,192.0.2.0/24")]);
        assert_eq!(validate(&c, "git", ip, 1500), Ok(()));
        let e = validate(&c, "git", "198.51.100.1".parse().expect("ip"), 1500).unwrap_err();
        assert!(e.contains("source address 198.51.100.1 not allowed"), "{e}");
        let c = cert(&ca, &[], &[("force-command", "ls")]);
        assert!(
            validate(&c, "git", ip, 1500)
                .unwrap_err()
                .contains("unsupported critical option")
        );
    }

    #[test]
    fn fingerprint_for_the_api_has_no_prefix_and_instance_cas_are_told_apart() {
        let (ca, other) = (key(), key());
        let c = cert(&ca, &[], &[]);
        let fp = api_fingerprint(&c);
        assert!(!fp.starts_with("SHA256:") && !fp.is_empty(), "{fp}");
        assert_eq!(
            format!("SHA256:{fp}"),
            ca.public_key().fingerprint(HashAlg::Sha256).to_string()
        );
        let trusted = TrustedCas(vec![ca.public_key().fingerprint(HashAlg::Sha256)]);
        assert!(is_instance_ca(&c, &trusted));
        assert!(!is_instance_ca(&cert(&other, &[], &[]), &trusted));
    }

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
