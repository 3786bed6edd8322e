//! Secrets never reach a log line (issue 5 §5). Every [`Sandbox`] scans its logs for the shared
//! secret, the Gitaly token, JWTs, personal access tokens, LFS tokens and Basic credentials when
//! it is dropped ([`test_support::secrets`]), so every test of this suite checks its own logs;
//! [`drop_time_scan_fails_the_test_on_a_leak`] proves that scan fires. [`assert_log_clean`] runs
//! the same scan on demand, and [`every_command_and_failure_keeps_secrets_out_of_the_log`] drives
//! each command that handles a secret (welcome, PAT creation, LFS token, 2FA, clone, push, API
//! and Gitaly failures) at `log_level: debug` and scans what was written.

use std::panic::{AssertUnwindSafe, catch_unwind};

use test_support::sandbox::{DEFAULT_GITALY_TOKEN, DEFAULT_SECRET};
use test_support::secrets;
use test_support::stub_api::Fault;
use test_support::{Commit, Sandbox};

/// Secret values every sandbox of this suite uses (see the fixtures).
const ALWAYS: &[(&str, &str)] = &[
    ("shared secret", DEFAULT_SECRET),
    ("Gitaly token", DEFAULT_GITALY_TOKEN),
    ("LFS token", "stub-lfs-token"),
    // base64("alice:stub-lfs-token"), the LFS Basic credential.
    ("LFS Basic credential", "YWxpY2U6c3R1Yi1sZnMtdG9rZW4"),
];

/// Panics (listing the offending lines, with the secret masked) if `log` holds a JWT, a
/// `glpat-` token, a Basic credential, one of the suite's known secrets, or one of `extra`.
#[track_caller]
pub(crate) fn assert_log_clean(log: &str, extra: &[&str]) {
    let mut all = ALWAYS.to_vec();
    all.extend(extra.iter().map(|e| ("extra secret", *e)));
    secrets::assert_clean("text", log, &all);
}

#[test]
#[should_panic(expected = "secrets in the log")]
fn scanner_rejects_a_leaked_secret() {
    assert_log_clean(&format!("{{\"msg\":\"{DEFAULT_SECRET}\"}}\n"), &[]);
}

#[test]
fn scanner_rejects_jwts_and_tokens_and_passes_clean_logs() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRsYWItc2hlbGwifQ.c2ln";
    for leaked in [
        jwt,
        "glpat-abcdef0123456789",
        "stub-lfs-token",
        "my-extra-token",
    ] {
        let log = format!("{{\"msg\":\"ok\"}}\n{{\"h\":\"{leaked}\"}}\n");
        let caught = catch_unwind(|| assert_log_clean(&log, &["my-extra-token"]));
        assert!(caught.is_err(), "{leaked} was not caught");
    }
    assert_log_clean(
        "{\"msg\":\"done\"}\neyJ alone, no dots\n",
        &["my-extra-token"],
    );
}

/// A sandbox whose log gets a JWT (or its own secret) written into it fails on drop, naming
/// the log and the line; a clean one does not.
#[test]
fn drop_time_scan_fails_the_test_on_a_leak() {
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJnaXRsYWItc2hlbGwifQ.c2lnbmF0dXJl";
    let leaks = [
        (
            "JWT",
            format!("{{\"level\":\"debug\",\"header\":\"{jwt}\"}}"),
        ),
        ("shared secret", format!("secret {}", "drop-test-secret-42")),
        ("Gitaly token", "token drop-test-gitaly-token".to_owned()),
        ("glpat- token", "glpat-droptest000000".to_owned()),
        ("watched", "password watched-secret-value".to_owned()),
    ];
    for (kind, leak) in leaks {
        let s = Sandbox::builder("secrets-drop")
            .gitaly(false)
            .secret("drop-test-secret-42\n")
            .gitaly_token("drop-test-gitaly-token")
            .build();
        s.watch_secret("watched", "watched-secret-value");
        let root = s.root().to_owned();
        let log = root.join("gitlab-shell.log");
        std::fs::write(&log, format!("{{\"msg\":\"clean\"}}\n{leak}\n")).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(move || drop(s)));
        let message = match caught {
            Ok(()) => panic!("{kind}: the drop-time scan did not fire"),
            Err(e) => e
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "<non-string panic>".into()),
        };
        assert!(
            message.starts_with(&format!(
                "secrets in the log {}:\n  line 2: ",
                log.display()
            )),
            "{kind}: {message}"
        );
        assert!(message.contains(kind), "{kind}: {message}");
        assert!(
            !message.contains(jwt) && !message.contains("drop-test-secret-42"),
            "{message}"
        );
        assert!(root.exists(), "a leaking sandbox is kept for inspection");
        std::fs::remove_dir_all(&root).unwrap();
    }

    // Logs elsewhere in the root (e.g. sshd's, with the keys check's stderr) are scanned too.
    let s = Sandbox::builder("secrets-drop").gitaly(false).build();
    let root = s.root().to_owned();
    std::fs::create_dir_all(root.join("sshd")).unwrap();
    std::fs::write(root.join("sshd/sshd.log"), format!("{jwt}\n")).unwrap();
    let caught = catch_unwind(AssertUnwindSafe(move || drop(s)));
    assert!(caught.is_err(), "sshd.log was not scanned");
    std::fs::remove_dir_all(&root).unwrap();

    // A clean log passes and the root is removed.
    let s = Sandbox::builder("secrets-drop").gitaly(false).build();
    let root = s.root().to_owned();
    std::fs::write(root.join("gitlab-shell.log"), "{\"msg\":\"clean\"}\n").unwrap();
    drop(s);
    assert!(!root.exists());
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
    for (label, value) in [
        ("recovery code", "rc-secret-2222"),
        ("http_settings password", "basic-pass-secret"),
        (
            "http_settings credential",
            "YmFzaWMtdXNlcjpiYXNpYy1wYXNzLXNlY3JldA",
        ),
        ("Gitaly token", "wrong-gitaly-token-secret"),
        ("Gitaly token", "unreachable-gitaly-token-secret"),
    ] {
        s.watch_secret(label, value);
    }
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
    s.watch_secret("LFS batch token", &token);
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
