//! Gitaly's v2 token check (Gitaly `auth/token.go`; the answers as Gitaly 16.11 gives them, see
//! docs/real-gitaly.md).
//!
//! The client sends `authorization: Bearer v2.<hex HMAC-SHA256(token, ts)>.<ts>`; the server
//! accepts timestamps up to 30 s away from its own clock in either direction.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::{Request, Status};

/// How far a token's timestamp may be from the server clock, in seconds.
pub const TIMESTAMP_THRESHOLD_SECS: i64 = 30;

/// Checks the `authorization` header value against `token` at Unix time `now`.
/// `header` is the raw metadata value (`None` when absent).
///
/// As GitLab's Gitaly 16.11 answers (docs/real-gitaly.md, "Where the dev Gitaly differed"): a
/// missing header, another scheme than `Bearer`, a value that is not `<version>.<hex>.<message>`
/// or a signature that is not hex → `Unauthenticated "authentication required"`; any other
/// refusal (version not `v2`, wrong HMAC, unparsable or out-of-window timestamp) → the one
/// `PermissionDenied "permission denied"`, whatever the reason.
pub fn check(token: &str, header: Option<&str>, now: i64) -> Result<(), Status> {
    let unauthenticated = || Status::unauthenticated("authentication required");
    let denied = || Status::permission_denied("permission denied");
    let header = header.ok_or_else(unauthenticated)?;
    let (scheme, value) = header.split_once(' ').ok_or_else(unauthenticated)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated());
    }
    let parts: Vec<&str> = value.trim().splitn(3, '.').collect();
    let [version, sig_hex, ts] = parts[..] else {
        return Err(unauthenticated());
    };
    let sig = hex::decode(sig_hex).map_err(|_| unauthenticated())?;
    if version != "v2" {
        return Err(denied());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).map_err(|_| denied())?;
    mac.update(ts.as_bytes());
    mac.verify_slice(&sig).map_err(|_| denied())?;
    let issued: i64 = ts.parse().map_err(|_| denied())?;
    if issued < now - TIMESTAMP_THRESHOLD_SECS || issued > now + TIMESTAMP_THRESHOLD_SECS {
        return Err(denied());
    }
    Ok(())
}

/// Builds the `authorization` value a v2 client would send at Unix time `ts` (used by tests
/// and handy for manual checks).
pub fn v2_header(token: &str, ts: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    let ts = ts.to_string();
    mac.update(ts.as_bytes());
    format!(
        "Bearer v2.{}.{ts}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A tonic interceptor enforcing the token when one is configured.
#[derive(Clone)]
pub struct Interceptor {
    /// The configured token; `None` allows everything (as Gitaly without `auth.token`).
    pub token: Option<String>,
    /// Log each refused request on stderr.
    pub log_refusals: bool,
    /// How many more RPCs are answered UNAVAILABLE before anything else is looked at
    /// ([`crate::Options::unavailable_first`]); shared by every connection.
    pub unavailable_left: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl tonic::service::Interceptor for Interceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        use std::sync::atomic::Ordering;
        let refuse = self
            .unavailable_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return Err(Status::unavailable("dev-gitaly: not ready yet"));
        }
        let Some(token) = self.token.as_deref().filter(|t| !t.is_empty()) else {
            return Ok(req);
        };
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if let Err(status) = check(token, header, now()) {
            if self.log_refusals {
                #[expect(clippy::print_stderr, reason = "the stand-in server's request log")]
                {
                    eprintln!("dev-gitaly: refused: {}", status.message());
                }
            }
            return Err(status);
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const NOW: i64 = 1_732_440_000;

    #[test]
    fn the_first_n_calls_are_unavailable() {
        use tonic::service::Interceptor as _;
        let mut interceptor = Interceptor {
            token: None,
            log_refusals: false,
            unavailable_left: std::sync::Arc::new(2.into()),
        };
        let codes: Vec<Code> = (0..3)
            .map(|_| match interceptor.call(Request::new(())) {
                Ok(_) => Code::Ok,
                Err(status) => status.code(),
            })
            .collect();
        assert_eq!(codes, [Code::Unavailable, Code::Unavailable, Code::Ok]);
    }

    #[test]
    fn accepts_within_29_seconds() {
        for d in [-29, 0, 29, -30, 30] {
            assert!(check("secret", Some(&v2_header("secret", NOW + d)), NOW).is_ok());
        }
    }

    #[test]
    fn rejects_31_seconds_off() {
        let e = check("secret", Some(&v2_header("secret", NOW - 31)), NOW).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied");
        let e = check("secret", Some(&v2_header("secret", NOW + 31)), NOW).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied");
    }

    #[test]
    fn wrong_token_missing_header_and_version() {
        let e = check("secret", Some(&v2_header("other", NOW)), NOW).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied");
        let e = check("secret", None, NOW).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), "authentication required");
        let v1 = v2_header("secret", NOW).replacen("v2.", "v1.", 1);
        let e = check("secret", Some(&v1), NOW).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        assert_eq!(e.message(), "permission denied");
        let e = check("secret", Some("Bearer garbage"), NOW).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        // A signature that is not hex is a malformed header, not a wrong signature.
        let e = check("secret", Some("Bearer v2.zz.1"), NOW).unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        assert_eq!(e.message(), "authentication required");
        let e = check("secret", Some("Bearer v2.00.notatime"), NOW).unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
    }
}
