//! Secrets never reach a log line: [`scan`] looks through a log text for JWTs (by shape),
//! personal access tokens (`glpat-`), HTTP Basic credentials (by shape: `Basic <base64 of
//! user:password>`) and any literal secret it is given (the shared secret, the Gitaly token, LFS
//! tokens, base64 credentials, …), and returns one [`Finding`] per offending line with the
//! secrets masked, so a report never repeats what it found.
//!
//! [`crate::Sandbox`] runs it over every log in its root when dropped; tests may call
//! [`assert_clean`] on any other text.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// Secrets shorter than this are not searched for literally: a 3-character "secret" would
/// match ordinary words and numbers. Real secrets of the suite are far longer.
pub const MIN_SECRET_LEN: usize = 6;

/// One log line holding secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// 1-based line number in the scanned text.
    pub line: usize,
    /// What was found, e.g. `JWT`, `glpat- token`, `Basic credential`, or the label given to
    /// [`scan`] for a literal secret (`shared secret`, `Gitaly token`, …); no duplicates.
    pub kinds: Vec<String>,
    /// The line with every finding replaced by `<kind>`.
    pub masked: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}: {}: {}",
            self.line,
            self.kinds.join(", "),
            self.masked
        )
    }
}

/// The findings in `log`: each line holding a JWT, a `glpat-` token, a Basic credential, or
/// one of `secrets` (`(label, value)` pairs; values shorter than [`MIN_SECRET_LEN`] are
/// ignored). Empty when the log is clean.
pub fn scan(log: &str, secrets: &[(&str, &str)]) -> Vec<Finding> {
    log.lines()
        .enumerate()
        .filter_map(|(n, line)| scan_line(line, secrets).map(|(kinds, masked)| (n, kinds, masked)))
        .map(|(n, kinds, masked)| Finding {
            line: n + 1,
            kinds,
            masked,
        })
        .collect()
}

/// Panics, listing each offending line (masked) under `what` (e.g. the log's path), when
/// [`scan`] finds anything in `log`.
#[track_caller]
pub fn assert_clean(what: &str, log: &str, secrets: &[(&str, &str)]) {
    let findings = scan(log, secrets);
    if !findings.is_empty() {
        panic!("{}", report(what, &findings));
    }
}

/// The text [`assert_clean`] panics with: `secrets in the log <what>:` then one finding a line.
pub fn report(what: &str, findings: &[Finding]) -> String {
    let mut out = format!("secrets in the log {what}:");
    for f in findings {
        out.push_str("\n  ");
        out.push_str(&f.to_string());
    }
    out
}

/// The base64 forms (padded and unpadded) of a Basic credential `user:password`, as they
/// would appear after `Authorization: Basic `.
pub fn basic_credential(user: &str, password: &str) -> [String; 2] {
    let plain = format!("{user}:{password}");
    [STANDARD.encode(&plain), STANDARD_NO_PAD.encode(&plain)]
}

/// A span `[start, end)` of a line and what it holds.
type Span = (usize, usize, String);

fn scan_line(line: &str, secrets: &[(&str, &str)]) -> Option<(Vec<String>, String)> {
    let mut spans: Vec<Span> = Vec::new();
    for (label, value) in secrets {
        if value.len() < MIN_SECRET_LEN {
            continue;
        }
        for (i, _) in line.match_indices(value) {
            spans.push((i, i + value.len(), (*label).to_owned()));
        }
    }
    for (i, _) in line.match_indices("eyJ") {
        let end = i + token_len(&line[i..], true);
        let segments = line[i..end].split('.').filter(|s| !s.is_empty()).count();
        if segments >= 2 {
            spans.push((i, end, "JWT".to_owned()));
        }
    }
    for (i, _) in line.match_indices("glpat-") {
        let end = i + "glpat-".len() + token_len(&line[i + "glpat-".len()..], false);
        spans.push((i, end, "glpat- token".to_owned()));
    }
    for (i, _) in line.match_indices("Basic ") {
        let start = i + "Basic ".len();
        let end = start
            + line[start..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
                .count();
        let decoded = STANDARD
            .decode(&line[start..end])
            .or_else(|_| STANDARD_NO_PAD.decode(line[start..end].trim_end_matches('=')));
        if decoded.is_ok_and(|d| d.contains(&b':')) {
            spans.push((start, end, "Basic credential".to_owned()));
        }
    }
    if spans.is_empty() {
        return None;
    }
    spans.sort();
    let mut kinds: Vec<String> = Vec::new();
    for (_, _, kind) in &spans {
        if !kinds.contains(kind) {
            kinds.push(kind.clone());
        }
    }
    let mut masked = String::new();
    let mut at = 0;
    let mut spans = spans.into_iter().peekable();
    while let Some((start, mut end, kind)) = spans.next() {
        // Overlapping findings are masked as one, named after the first.
        while let Some((s, e, _)) = spans.peek() {
            if *s >= end {
                break;
            }
            end = end.max(*e);
            spans.next();
        }
        if start >= at {
            masked.push_str(&line[at..start]);
            masked.push('<');
            masked.push_str(&kind);
            masked.push('>');
            at = end;
        } else {
            at = at.max(end);
        }
    }
    masked.push_str(&line[at..]);
    Some((kinds, masked))
}

/// Length of the base64url token at the start of `s` (with `.` separators when `dots`).
fn token_len(s: &str, dots: bool) -> usize {
    s.bytes()
        .take_while(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (dots && *b == b'.')
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRsYWItc2hlbGwifQ.c2lnbmF0dXJl";

    #[test]
    fn clean_logs_have_no_findings() {
        let log = concat!(
            r#"{"level":"info","msg":"gitlab-shell: main: executing command","correlation_id":"01HX","command":"git-upload-pack"}"#,
            "\n",
            r#"{"level":"debug","msg":"eyJ alone, no dots; Basic auth is configured; done."}"#,
            "\n",
            r#"{"duration_ms":987654,"status":200,"url":"http://127.0.0.1:8080/api/v4/internal/allowed"}"#,
            "\n"
        );
        assert_eq!(scan(log, &[("shared secret", "e2e-shared-secret")]), []);
        assert_eq!(scan("", &[]), []);
    }

    #[test]
    fn finds_a_jwt_by_shape_and_masks_it() {
        let log = format!("first line\n{{\"msg\":\"request\",\"h\":\"{JWT}\"}}\n");
        assert_eq!(
            scan(&log, &[]),
            [Finding {
                line: 2,
                kinds: vec!["JWT".into()],
                masked: r#"{"msg":"request","h":"<JWT>"}"#.into(),
            }]
        );
        // An unsigned token (header.payload.) is still a JWT.
        assert_eq!(scan("x eyJhbGciOiJub25lIn0.eyJhIjoxfQ. y", &[]).len(), 1);
    }

    #[test]
    fn finds_personal_access_tokens() {
        let f = scan("token created: glpat-abcDEF_123-xyz, scopes api", &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kinds, ["glpat- token"]);
        assert_eq!(f[0].masked, "token created: <glpat- token>, scopes api");
    }

    #[test]
    fn finds_literal_secrets_by_label() {
        let secrets = [
            ("shared secret", "e2e-shared-secret-0123456789abcdef"),
            ("Gitaly token", "e2e-gitaly-token"),
            ("LFS token", "stub-lfs-token"),
        ];
        let log = "a\nsecret=e2e-shared-secret-0123456789abcdef\nb\nauth e2e-gitaly-token and stub-lfs-token\n";
        let f = scan(log, &secrets);
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].line, f[0].kinds.clone()),
            (2, vec!["shared secret".into()])
        );
        assert_eq!(f[0].masked, "secret=<shared secret>");
        assert_eq!(f[1].line, 4);
        assert_eq!(f[1].kinds, ["Gitaly token", "LFS token"]);
        assert_eq!(f[1].masked, "auth <Gitaly token> and <LFS token>");
        // Too short to search for: would match ordinary text.
        assert_eq!(scan("abc", &[("short", "abc")]), []);
    }

    #[test]
    fn finds_basic_credentials_by_shape_and_by_value() {
        let [padded, unpadded] = basic_credential("alice", "stub-lfs-token");
        assert_eq!(padded, "YWxpY2U6c3R1Yi1sZnMtdG9rZW4=");
        assert_eq!(unpadded, "YWxpY2U6c3R1Yi1sZnMtdG9rZW4");
        let f = scan(&format!("Authorization: Basic {padded}"), &[]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kinds, ["Basic credential"]);
        assert_eq!(f[0].masked, "Authorization: Basic <Basic credential>");
        // Without the `Basic ` prefix only the given value finds it.
        let f = scan(
            &format!("{{\"header\":\"{unpadded}\"}}"),
            &[("LFS credential", &unpadded)],
        );
        assert_eq!(f[0].kinds, ["LFS credential"]);
        assert_eq!(f[0].masked, r#"{"header":"<LFS credential>"}"#);
        // Base64 that is not user:password is not a credential.
        assert_eq!(scan("Basic aGVsbG8=", &[]), []);
    }

    #[test]
    fn overlapping_findings_are_masked_once_and_reports_name_the_line() {
        let secrets = [("JWT value", JWT)];
        let f = scan(&format!("h={JWT}"), &secrets);
        assert_eq!(f[0].kinds, ["JWT", "JWT value"]);
        assert!(!f[0].masked.contains("eyJ"), "{}", f[0].masked);
        let text = report("/x/gitlab-shell.log", &f);
        assert!(
            text.starts_with("secrets in the log /x/gitlab-shell.log:\n  line 1: "),
            "{text}"
        );
        assert!(!text.contains(JWT));
    }

    #[test]
    #[should_panic(expected = "secrets in the log test:\n  line 1: glpat- token: <glpat- token>")]
    fn assert_clean_panics_on_a_finding() {
        assert_clean("test", "glpat-0123456789", &[]);
    }
}
