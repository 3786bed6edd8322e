//! Gitaly's v2 token (Gitaly `auth/rpccredentials.go`): per RPC,
//! `authorization: Bearer v2.<hex HMAC-SHA256(token, ts)>.<ts>` with `ts` the Unix time in
//! decimal seconds. The header value is a secret: never log it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `authorization` metadata value for `token` at Unix time `timestamp` (seconds).
#[must_use]
pub fn bearer_v2(token: &str, timestamp: u64) -> String {
    let ts = timestamp.to_string();
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail for SHA-256.
    let signature = match Hmac::<Sha256>::new_from_slice(token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(ts.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    };
    format!("Bearer v2.{signature}.{ts}")
}

/// [`bearer_v2`] for the current time.
#[must_use]
pub fn bearer_v2_now(token: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    bearer_v2(token, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_header_matches_hand_computed_hmac() {
        // printf %s 1732440000 | openssl dgst -sha256 -hmac secret
        assert_eq!(
            bearer_v2("secret", 1_732_440_000),
            "Bearer v2.d19172dd92b4ab19e80d5b9e5511dbd068df3ca17f059bcb3199bfdb6baba8e0.1732440000"
        );
        // printf %s 1732440000 | openssl dgst -sha256 -hmac 'the token'
        assert_eq!(
            bearer_v2("the token", 1_732_440_000),
            "Bearer v2.12c4b3535fe4e4e4a2b71406a37146482c060a6c283ed8b4e04e05c393e159e9.1732440000"
        );
    }
}
