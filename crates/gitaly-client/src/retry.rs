//! The retry policy `/allowed` may send as `retry_config` (GitLab Shell 14.46+): a gRPC service
//! config `retryPolicy` in JSON, e.g.
//! `{"maxAttempts":4,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,
//! "retryableStatusCodes":["UNAVAILABLE"]}`. GitLab Shell hands it to grpc-go; tonic has no
//! service-config retries, so this client applies it itself, to the one failure it can retry
//! without risk: dialling Gitaly (UNAVAILABLE). Once the RPC has started, the client may have
//! seen output or sent input, so nothing is retried (docs/gitaly-deadlines.md).

use std::time::Duration;

use serde::Deserialize;

/// A validated retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 to 5, as grpc-go caps it).
    pub max_attempts: u32,
    /// Backoff before the first retry.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Growth of the backoff per retry.
    pub backoff_multiplier: f64,
    /// Upper-case gRPC code names that may be retried.
    pub retryable_status_codes: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    max_attempts: Option<f64>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    backoff_multiplier: Option<f64>,
    retryable_status_codes: Option<Vec<serde_json::Value>>,
}

/// gRPC code names by number, for policies that list codes as integers.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// A protobuf JSON duration: decimal seconds with an `s` suffix (`"0.1s"`, `"2s"`).
fn proto_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.strip_suffix('s')?.parse().ok()?;
    (secs > 0.0 && secs.is_finite())
        .then(|| Duration::try_from_secs_f64(secs).ok())
        .flatten()
}

impl RetryPolicy {
    /// Parses and validates the policy with grpc-go's rules; the error says what is wrong.
    pub fn from_json(json: &str) -> Result<RetryPolicy, String> {
        let raw: Raw = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let max_attempts = raw.max_attempts.ok_or("maxAttempts is required")?;
        if max_attempts.fract() != 0.0 || max_attempts < 2.0 {
            return Err("maxAttempts must be an integer greater than 1".into());
        }
        let duration = |name: &str, v: Option<String>| {
            v.as_deref()
                .and_then(proto_duration)
                .ok_or_else(|| format!("{name} must be a positive duration such as \"0.1s\""))
        };
        let initial_backoff = duration("initialBackoff", raw.initial_backoff)?;
        let max_backoff = duration("maxBackoff", raw.max_backoff)?;
        let backoff_multiplier = raw
            .backoff_multiplier
            .filter(|m| *m > 0.0 && m.is_finite())
            .ok_or("backoffMultiplier must be greater than 0")?;
        let mut codes = Vec::new();
        for code in raw.retryable_status_codes.unwrap_or_default() {
            let name = match &code {
                serde_json::Value::String(s) => s.to_ascii_uppercase(),
                serde_json::Value::Number(n) => n
                    .as_u64()
                    .and_then(|i| CODE_NAMES.get(i as usize))
                    .map(|s| (*s).to_owned())
                    .ok_or_else(|| format!("unknown status code {n}"))?,
                other => return Err(format!("unknown status code {other}")),
            };
            if !CODE_NAMES.contains(&name.as_str()) {
                return Err(format!("unknown status code {name}"));
            }
            codes.push(name);
        }
        if codes.is_empty() {
            return Err("retryableStatusCodes must not be empty".into());
        }
        Ok(RetryPolicy {
            max_attempts: (max_attempts as u32).min(5),
            initial_backoff,
            max_backoff,
            backoff_multiplier,
            retryable_status_codes: codes,
        })
    }

    /// Whether a failed dial (UNAVAILABLE) may be tried again.
    pub fn retries_unavailable(&self) -> bool {
        self.retryable_status_codes
            .iter()
            .any(|c| c == "UNAVAILABLE")
    }

    /// The wait before retry number `retry` (1 for the first retry): the exponential backoff,
    /// capped. grpc-go waits a random time up to it; this client waits all of it, so a test can
    /// rely on the schedule.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self.backoff_multiplier.powi(retry.saturating_sub(1) as i32);
        self.initial_backoff.mul_f64(factor).min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gitlabs_policy() {
        let p = RetryPolicy::from_json(
            r#"{"maxAttempts":4,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
        )
        .unwrap();
        assert_eq!(p.max_attempts, 4);
        assert!(p.retries_unavailable());
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(5), Duration::from_secs(1));
        let p = RetryPolicy::from_json(
            r#"{"maxAttempts":9,"initialBackoff":"1s","maxBackoff":"2s","backoffMultiplier":1.5,"retryableStatusCodes":[14,"aborted"]}"#,
        )
        .unwrap();
        assert_eq!(p.max_attempts, 5, "capped as grpc-go caps it");
        assert_eq!(p.retryable_status_codes, ["UNAVAILABLE", "ABORTED"]);
    }

    #[test]
    fn refuses_malformed_policies() {
        for bad in [
            "not json",
            "[]",
            r#"{"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
            r#"{"maxAttempts":1,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
            r#"{"maxAttempts":3,"initialBackoff":"100ms","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}"#,
            r#"{"maxAttempts":3,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":0,"retryableStatusCodes":["UNAVAILABLE"]}"#,
            r#"{"maxAttempts":3,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[]}"#,
            r#"{"maxAttempts":3,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":["SOMETIMES"]}"#,
        ] {
            assert!(RetryPolicy::from_json(bad).is_err(), "{bad}");
        }
    }
}
