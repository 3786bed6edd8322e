//! Secrets never reach a log line (issue 5 §5). [`assert_log_clean`] scans a GitLab Shell log
//! for the shared secret, the Gitaly token, JWTs, personal access tokens, LFS tokens and Basic
//! credentials; every hostile/fault/load test of this suite calls it on its sandbox's log before
//! the sandbox is dropped, and [`every_command_and_failure_keeps_secrets_out_of_the_log`] drives
//! each command that handles a secret (welcome, PAT creation, LFS token, 2FA, clone, push, API
//! and Gitaly failures) at `log_level: debug` and scans what was written.

use test_support::sandbox::{DEFAULT_GITALY_TOKEN, DEFAULT_SECRET};
use test_support::stub_api::Fault;
use test_support::{Commit, Sandbox};

/// Secret values every sandbox of this suite uses (see the fixtures).
const ALWAYS: &[&str] = &[
    DEFAULT_SECRET,
    DEFAULT_GITALY_TOKEN,
    "glpat-",
    "stub-lfs-token",
    // base64("alice:stub-lfs-token"), the LFS Basic credential.
    "YWxpY2U6c3R1Yi1sZnMtdG9rZW4",
];

/// Panics (listing the offending lines, with the secret masked) if `log` holds a JWT, one of
/// the suite's known secrets, or one of `extra`.
#[track_caller]
pub(crate) fn assert_log_clean(log: &str, extra: &[&str]) {
    let mut bad = Vec::new();
    for (n, line) in log.lines().enumerate() {
        let mut hits: Vec<&str> = ALWAYS
            .iter()
            .chain(extra)
            .copied()
            .filter(|s| !s.is_empty() && line.contains(s))
            .collect();
        if has_jwt(line) {
            hits.push("<JWT>");
        }
        if !hits.is_empty() {
            let mut masked = line.to_owned();
            for h in &hits {
                masked = masked.replace(h, "<SECRET>");
            }
            bad.push(format!("line {}: {hits:?}: {masked}", n + 1));
        }
    }
    assert!(bad.is_empty(), "secrets in the log:\n{}", bad.join("\n"));
}

/// A JWT: three base64url segments, the first decoding to a JSON object (`eyJ` = `{"`).
fn has_jwt(line: &str) -> bool {
    line.match_indices("eyJ").any(|(i, _)| {
        let rest = &line[i..];
        let token: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        token.split('.').filter(|s| !s.is_empty()).count() >= 2
    })
}

#[test]
fn jwt_detector_finds_tokens_and_ignores_words() {
    assert!(has_jwt(
        r#"{"msg":"x","h":"eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRsYWItc2hlbGwifQ.c2ln"}"#
    ));
    assert!(!has_jwt("eyJ alone, no dots"));
    assert!(!has_jwt(r#"{"msg":"done"}"#));
}

#[test]
#[should_panic(expected = "secrets in the log")]
fn scanner_rejects_a_leaked_secret() {
    assert_log_clean(&format!("{{\"msg\":\"{DEFAULT_SECRET}\"}}\n"), &[]);
}

/// A pkt-line `batch` upload request for one object, then `quit`.
fn lfs_batch() -> Vec<u8> {
    let pkt = |t: &str| {
        let mut out = format!("{:04x}", t.len() + 5).into_bytes();
        out.extend_from_slice(t.as_bytes());
        out.push(b'\n');
        out
    };
    let mut input = pkt("version 1");
    input.extend_from_slice(b"0000");
    for line in [
        "batch",
        "transfer=ssh",
        "hash-algo=sha256",
        "refname=refs/heads/main",
    ] {
        input.extend(pkt(line));
    }
    input.extend_from_slice(b"0001");
    input.extend(pkt(
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824 5",
    ));
    input.extend_from_slice(b"0000");
    input.extend(pkt("quit"));
    input.extend_from_slice(b"0000");
    input
}

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice, two_factor: true, recovery_codes: [rc-secret-1111, rc-secret-2222], otp: "987654" }
keys:
  - { id: 1, user: alice, key: "ssh-ed25519 AAAAalice alice@example" }
projects:
  - { path: group/repo, id: 1, members: { alice: admin }, need_audit: true }
personal_access_token:
  token: glpat-leakcheck0000000000
"#;

#[test]
fn every_command_and_failure_keeps_secrets_out_of_the_log() {
    let s = Sandbox::builder("secrets")
        .fixture_yaml(FIXTURE)
        .config_extra(
            "http_settings:\n  user: basic-user\n  password: basic-pass-secret\n  read_timeout: 2\n\
             lfs:\n  pure_ssh_protocol: true\n",
        )
        .seed(
            "group/repo",
            vec![Commit::new("main", "first", "README.md", "hello\n")],
        )
        .build();
    let run = |cmd: &str, stdin: &[u8]| s.shell(&["key-1"], Some(cmd)).stdin(stdin).run();
    s.shell(&["key-1"], None).run().assert_success();
    s.shell(&["username-alice"], None).run().assert_success();
    run("personal_access_token leak api 3", b"")
        .assert_success()
        .assert_stdout_contains("glpat-leakcheck0000000000");
    run("git-lfs-authenticate group/repo download", b"")
        .assert_success()
        .assert_stdout_contains("YWxpY2U6c3R1Yi1sZnMtdG9rZW4");
    run("2fa_recovery_codes", b"yes\n")
        .assert_success()
        .assert_stdout_contains("rc-secret-1111");
    run("2fa_verify", b"987654\n").assert_success();
    run("git-upload-pack group/repo", b"0000").assert_success();
    run("git-receive-pack group/repo", b"0000").assert_success();
    // Pure-SSH LFS: the batch answer carries a signed `token=` per object.
    let url = s.api().tcp_url();
    s.api().update_fixture(|f| f.external_url = url);
    let batch = lfs_batch();
    let lfs = run("git-lfs-transfer group/repo upload", &batch);
    lfs.assert_success();
    let out = lfs.stdout_str();
    let token = out
        .split(['\n', ' '])
        .find_map(|w| w.strip_prefix("token="))
        .unwrap_or_default()
        .to_owned();
    assert!(token.len() > 20, "no batch token in {out}");
    run("git-upload-archive group/repo", b"0000");
    // Failures carry the request (with its JWT) and Gitaly's token through error paths.
    s.api().set_fault(
        "/api/v4/internal/allowed",
        Fault::Body(b"{not json".to_vec()),
    );
    run("git-upload-pack group/repo", b"0000").assert_code(1);
    s.api().set_fault(
        "/api/v4/internal/allowed",
        Fault::Status(403, r#"{"message":"denied"}"#.into()),
    );
    run("git-upload-pack group/repo", b"0000").assert_code(1);
    s.api().clear_faults();
    s.api().set_gitaly(
        s.gitaly().map(|g| g.address()).unwrap_or_default(),
        "wrong-gitaly-token-secret",
    );
    run("git-upload-pack group/repo", b"0000").assert_code(1);
    s.api()
        .set_gitaly("tcp://127.0.0.1:1", "unreachable-gitaly-token-secret");
    run("git-upload-pack group/repo", b"0000").assert_code(1);

    let log = s.log();
    assert!(log.lines().count() >= 10, "too little was logged:\n{log}");
    assert_log_clean(
        &log,
        &[
            "glpat-leakcheck0000000000",
            "rc-secret-1111",
            "basic-pass-secret",
            "YmFzaWMtdXNlcjpiYXNpYy1wYXNzLXNlY3JldA",
            "wrong-gitaly-token-secret",
            "unreachable-gitaly-token-secret",
            &token,
        ],
    );
}
