//! The retry policy `/allowed` may send as `retry_config` (GitLab Shell 14.46+): a gRPC service
//! config `retryPolicy` in JSON, e.g.
//! `{"maxAttempts":4,"initialBackoff":"0.1s","maxBackoff":"1s","backoffMultiplier":2,
//! "retryableStatusCodes":["UNAVAILABLE"]}`. GitLab Shell hands it to grpc-go; tonic has no
//! service-config retries, so this client applies it itself (docs/gitaly.md §8): a call that
//! failed with one of the policy's codes is made again, after the backoff, as long as it is not
//! *committed* — no byte of its output has reached the user, Gitaly has not started a response
//! (sent response headers), and all the stdin it consumed is still held for replay
//! ([`Replay`], at most [`REPLAY_LIMIT`] bytes). That is grpc-go's rule for transparent
//! retries, with the sidechannel's output counted as a response.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{Mutex, mpsc};

use crate::Error;
use crate::stdin::StdinError;

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

    /// Whether a call that failed with `error` may be made again: its gRPC code is one of the
    /// policy's. A failed dial and a connection lost mid-call count as `UNAVAILABLE`, as in
    /// grpc-go; local failures (stdin, sidechannel framing, writing output) have no code and
    /// are never retried.
    pub fn retries(&self, error: &Error) -> bool {
        let Some(code) = error.code() else {
            return false;
        };
        let name = CODE_NAMES.get(code as usize).copied().unwrap_or_default();
        self.retryable_status_codes.iter().any(|c| c == name)
    }

    /// The wait before retry number `retry` (1 for the first retry): the exponential backoff,
    /// capped. grpc-go waits a random time up to it; this client waits all of it, so a test can
    /// rely on the schedule.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self.backoff_multiplier.powi(retry.saturating_sub(1) as i32);
        self.initial_backoff.mul_f64(factor).min(self.max_backoff)
    }
}

/// How much of the client's stdin a call keeps for replaying it to a retry. A call that has
/// consumed more is committed (grpc-go likewise replays from a bounded buffer).
pub const REPLAY_LIMIT: usize = 256 * 1024;

/// Set once a call attempt may no longer be retried because Gitaly began its response.
#[derive(Clone, Default)]
pub(crate) struct Committed(Arc<AtomicBool>);

impl Committed {
    pub(crate) fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The client's stdin for every attempt of one call: one reader (the chunks of
/// [`crate::stdin::spawn`]), and the chunks consumed so far, kept so that a retry sees the
/// same bytes from the start, up to [`REPLAY_LIMIT`].
#[derive(Clone)]
pub(crate) struct Replay(Arc<Mutex<ReplayState>>, StdinError);

struct ReplayState {
    rx: mpsc::Receiver<Vec<u8>>,
    kept: Vec<Vec<u8>>,
    kept_bytes: usize,
    /// More than the limit was consumed: the kept chunks are gone, no retry may happen.
    overflowed: bool,
    /// The attempt whose reads are live; an older attempt's stream (tonic may still poll a
    /// request body after its call failed) gets nothing more.
    attempt: u32,
}

impl Replay {
    /// Over the chunks of `rx`; `error` says whether reading stdin failed.
    pub(crate) fn new(rx: mpsc::Receiver<Vec<u8>>, error: StdinError) -> Replay {
        let state = ReplayState {
            rx,
            kept: Vec::new(),
            kept_bytes: 0,
            overflowed: false,
            attempt: 0,
        };
        Replay(Arc::new(Mutex::new(state)), error)
    }

    /// The stdin of a new attempt: the kept chunks first, then what the client sends next.
    /// Earlier attempts' streams end.
    pub(crate) async fn attempt(&self) -> AttemptStdin {
        let mut state = self.0.lock().await;
        state.attempt += 1;
        AttemptStdin {
            replay: self.clone(),
            attempt: state.attempt,
            next_kept: 0,
        }
    }

    /// Whether everything consumed so far can still be replayed.
    pub(crate) async fn replayable(&self) -> bool {
        !self.0.lock().await.overflowed
    }
}

/// One attempt's view of the client's stdin.
pub(crate) struct AttemptStdin {
    replay: Replay,
    attempt: u32,
    next_kept: usize,
}

impl AttemptStdin {
    /// The stdin read error, once the chunks have ended because of one.
    pub(crate) fn error(&self) -> StdinError {
        self.replay.1.clone()
    }

    /// The next chunk, or `None` at the end of stdin (or when a newer attempt took over).
    /// Cancel-safe: a chunk is kept before it is handed out.
    pub(crate) async fn next(&mut self) -> Option<Vec<u8>> {
        let mut state = self.replay.0.lock().await;
        if state.attempt != self.attempt {
            return None;
        }
        if let Some(chunk) = state.kept.get(self.next_kept) {
            self.next_kept += 1;
            return Some(chunk.clone());
        }
        let chunk = state.rx.recv().await?;
        if !state.overflowed {
            if state.kept_bytes + chunk.len() <= REPLAY_LIMIT {
                state.kept_bytes += chunk.len();
                state.kept.push(chunk.clone());
                self.next_kept += 1;
            } else {
                state.overflowed = true;
                state.kept = Vec::new();
            }
        }
        Some(chunk)
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

    #[test]
    fn retries_only_the_policys_codes() {
        let p = RetryPolicy::from_json(
            r#"{"maxAttempts":2,"initialBackoff":"1s","maxBackoff":"1s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE","ABORTED"]}"#,
        )
        .unwrap();
        assert!(p.retries(&Error::unavailable(false)));
        assert!(p.retries(&Error::Rpc {
            code: tonic::Code::Aborted,
            message: "x".into()
        }));
        assert!(!p.retries(&Error::Rpc {
            code: tonic::Code::Internal,
            message: "x".into()
        }));
        assert!(!p.retries(&Error::Stdin("broken pipe".into())));
        assert!(!p.retries(&Error::Sidechannel("unexpected band: 3".into())));
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    }

    #[test]
    fn a_retry_sees_the_consumed_stdin_again_then_the_rest() {
        rt().block_on(async {
            let (tx, rx) = mpsc::channel(8);
            let replay = Replay::new(rx, StdinError::default());
            tx.send(b"one".to_vec()).await.unwrap();
            tx.send(b"two".to_vec()).await.unwrap();
            let mut first = replay.attempt().await;
            assert_eq!(first.next().await.unwrap(), b"one");
            let mut second = replay.attempt().await;
            assert_eq!(first.next().await, None, "the old attempt is over");
            tx.send(b"three".to_vec()).await.unwrap();
            drop(tx);
            let mut got = Vec::new();
            while let Some(chunk) = second.next().await {
                got.push(String::from_utf8(chunk).unwrap());
            }
            assert_eq!(got, ["one", "two", "three"]);
            assert!(replay.replayable().await);
        });
    }

    #[test]
    fn more_stdin_than_the_limit_cannot_be_replayed() {
        rt().block_on(async {
            let (tx, rx) = mpsc::channel(8);
            let replay = Replay::new(rx, StdinError::default());
            tx.send(vec![0; REPLAY_LIMIT]).await.unwrap();
            tx.send(vec![1]).await.unwrap();
            let mut first = replay.attempt().await;
            assert_eq!(first.next().await.unwrap().len(), REPLAY_LIMIT);
            assert!(replay.replayable().await, "exactly the limit is still held");
            assert_eq!(first.next().await.unwrap(), [1]);
            assert!(!replay.replayable().await);
        });
    }
}
