//! The `Gitlab-Shell-Api-Request` header (GitLab Shell `client/gitlabnet.go`, behaviour §3.1):
//! an HS256 JWT signed with the trimmed shared secret, valid for 60 seconds.
//!
//! `jsonwebtoken` signs it. Its 10.x releases need a crypto backend feature (`rust_crypto` or
//! `aws_lc_rs`, each of which brings every algorithm: RSA, P-256/P-384, Ed25519) or else a
//! process-wide provider installed at start-up; there is no HMAC-only feature. We keep
//! `rust_crypto` (pure Rust, no C build) rather than a process-global install or hand-written
//! JWT code; the unused algorithms cost compile time only (docs/architecture.md).

use serde::Serialize;

use super::Error;

const JWT_ISSUER: &str = "gitlab-shell";
const JWT_TTL_SECS: u64 = 60;

/// `{"iss":"gitlab-shell","exp":…,"iat":…}`, in jwt-go's field order.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Always `gitlab-shell`.
    pub iss: String,
    /// `iat` + 60 s.
    pub exp: u64,
    /// Issue time (Unix seconds).
    pub iat: u64,
}

/// Go's `strings.TrimSpace` on the secret bytes.
pub fn trim_secret(secret: &[u8]) -> &[u8] {
    match std::str::from_utf8(secret) {
        Ok(s) => s.trim().as_bytes(),
        Err(_) => secret.trim_ascii(),
    }
}

/// The JWT for one logical request, HS256 with the trimmed secret.
pub fn sign_jwt(secret: &[u8], now: u64) -> Result<String, Error> {
    let claims = Claims {
        iss: JWT_ISSUER.into(),
        exp: now + JWT_TTL_SECS,
        iat: now,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(trim_secret(secret)),
    )
    .map_err(|e| Error::Client(format!("failed to sign JWT: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_claims_and_key() {
        use base64::Engine as _;
        let token = sign_jwt(b"  secret\n", 1_000).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header: serde_json::Value =
            serde_json::from_slice(&b64.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["typ"], "JWT");
        let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims, r#"{"iss":"gitlab-shell","exp":1060,"iat":1000}"#);
        // Signed with the trimmed secret: the same token as with "secret".
        assert_eq!(token, sign_jwt(b"secret", 1_000).unwrap());
        assert_ne!(token, sign_jwt(b"other", 1_000).unwrap());
        // An empty secret is allowed.
        assert!(sign_jwt(b"", 1_000).is_ok());
    }
}
