//! `gitlab-shell-authorized-keys-check` as sshd's `AuthorizedKeysCommand` runs it (behaviour
//! §1.1, §1.3, §3.1): exact stdout, stderr and exit code for every case, over `http://` and
//! `http+unix://`, plus the request it makes.

use test_support::sandbox::ApiTransport;
use test_support::stub_api::Fault;
use test_support::{ClientKey, Cmd, Sandbox};

use crate::shell_commands::framed;

const BIN: &str = "gitlab-shell-authorized-keys-check";

fn sandbox(transport: ApiTransport) -> (Sandbox, ClientKey) {
    let mut b = Sandbox::builder("keys-check")
        .fixture_yaml("users:\n  - { id: 1, username: alice }\n")
        .api_transport(transport)
        .gitaly(false);
    let key = b.client_key("alice", 42, Some("alice"));
    (b.build(), key)
}

fn expected_line(s: &Sandbox, id: u64, key: &ClientKey) -> String {
    format!(
        "command=\"{}/bin/gitlab-shell key-{id}\",no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty {}\n",
        s.root().display(),
        key.public_line
    )
}

#[test]
fn prints_the_key_line_over_tcp_and_unix() {
    for transport in [ApiTransport::Tcp, ApiTransport::Unix] {
        let (s, key) = sandbox(transport);
        let run = s.run(BIN, &["git", "git", &key.blob], &[], b"");
        run.assert_success()
            .assert_stdout(expected_line(&s, 42, &key))
            .assert_stderr("");
        let reqs = s.api().requests_to("/authorized_keys");
        assert_eq!(reqs.len(), 1, "{transport:?}");
        assert_eq!(reqs[0].method, "GET");
        assert_eq!(
            reqs[0].query_param("key").as_deref(),
            Some(key.blob.as_str())
        );
        assert_eq!(reqs[0].header("user-agent"), Some("GitLab-Shell"));
        assert_eq!(reqs[0].header("content-type"), Some("application/json"));
        assert!(reqs[0].header("gitlab-shell-api-request").is_some());
        let request_id = reqs[0].header("x-request-id").unwrap_or_default();
        assert_eq!(
            request_id.len(),
            26,
            "generated correlation id: {request_id}"
        );
        if transport == ApiTransport::Unix {
            assert_eq!(reqs[0].header("host"), Some("unix"));
        }
    }
}

#[test]
fn query_is_percent_encoded_like_go() {
    let (s, _) = sandbox(ApiTransport::Tcp);
    let run = s.run(BIN, &["git", "git", "AAAA+b/c=="], &[], b"");
    run.assert_success()
        .assert_stdout("# No key was found for AAAA+b/c==\n");
    let reqs = s.api().requests_to("/authorized_keys");
    assert_eq!(reqs[0].query, "key=AAAA%2Bb%2Fc%3D%3D");
}

#[test]
fn correlation_id_comes_from_the_environment() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    s.run(
        BIN,
        &["git", "git", &key.blob],
        &[("CORRELATION_ID", "corr-123")],
        b"",
    )
    .assert_success();
    let reqs = s.api().requests_to("/authorized_keys");
    assert_eq!(reqs[0].header("x-request-id"), Some("corr-123"));
    let log = s.log();
    assert!(log.contains("\"correlation_id\":\"corr-123\""), "{log}");
}

#[test]
fn unknown_key_prints_no_key_found_and_exits_0() {
    let (s, _) = sandbox(ApiTransport::Unix);
    s.run(BIN, &["git", "git", "AAAAnotregistered"], &[], b"")
        .assert_success()
        .assert_stdout("# No key was found for AAAAnotregistered\n")
        .assert_stderr("");
}

#[test]
fn any_api_failure_prints_no_key_found() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    for fault in [
        Fault::Status(403, r#"{"message":"Forbidden"}"#.into()),
        Fault::Body(b"not json".to_vec()),
        Fault::Status(501, String::new()),
    ] {
        s.api().clear_faults();
        s.api().set_fault("/authorized_keys", fault.clone());
        s.run(BIN, &["git", "git", &key.blob], &[], b"")
            .assert_success()
            .assert_stdout(format!("# No key was found for {}\n", key.blob))
            .assert_stderr("");
    }
}

#[test]
fn unreachable_api_prints_no_key_found_after_retries() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    s.write_config("gitlab_url: \"http://127.0.0.1:1\"\n");
    let started = std::time::Instant::now();
    s.run(BIN, &["git", "git", &key.blob], &[], b"")
        .assert_success()
        .assert_stdout(format!("# No key was found for {}\n", key.blob));
    // Three attempts with 1 s and 2 s waits between them.
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
}

#[test]
fn user_mismatch_prints_nothing_and_asks_nothing() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    s.run(BIN, &["git", "alice", &key.blob], &[], b"")
        .assert_success()
        .assert_stdout("")
        .assert_stderr("");
    assert!(s.api().requests_to("/authorized_keys").is_empty());
}

#[test]
fn argument_errors_are_unframed() {
    let (s, _) = sandbox(ApiTransport::Tcp);
    let usage = |n: usize| {
        format!(
            "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>\n"
        )
    };
    let cases: &[(&[&str], String)] = &[
        (&[], usage(0)),
        (&["git", "git"], usage(2)),
        (&["git", "git", "k", "extra"], usage(4)),
        (&["", "git", "k"], "# No username provided\n".into()),
        (&["git", "", "k"], "# No username provided\n".into()),
        (&["git", "git", ""], "# No key provided\n".into()),
    ];
    for (args, err) in cases {
        s.run(BIN, args, &[], b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(err);
    }
}

#[test]
fn key_with_newline_from_api_is_refused_framed() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    s.api().set_fault(
        "/authorized_keys",
        Fault::Body(br#"{"id":7,"key":"ssh-rsa AAAA\nevil"}"#.to_vec()),
    );
    s.run(BIN, &["git", "git", &key.blob], &[], b"")
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed("invalid value: ssh-rsa AAAA\nevil"));
}

#[test]
fn startup_errors_are_lower_case_without_detail() {
    let (s, key) = sandbox(ApiTransport::Tcp);
    s.run(
        BIN,
        &["git", "git", &key.blob],
        &[("GITLAB_SHELL_DIR", "/nonexistent/gls")],
        b"",
    )
    .assert_code(1)
    .assert_stdout("")
    .assert_stderr("failed to determine executable, exiting\n");
    std::fs::remove_file(s.root().join("config.yml")).unwrap();
    s.run(BIN, &["git", "git", &key.blob], &[], b"")
        .assert_code(1)
        .assert_stderr("failed to read config, exiting\n");
}

#[test]
fn version_and_help_need_no_config() {
    let (s, _) = sandbox(ApiTransport::Tcp);
    let env = [("GITLAB_SHELL_DIR", "/nonexistent/gls")];
    // GitLab Shell's `<basename> <version>-<build time>` (docs/packaging.md): the version is
    // `v<VERSION>`, plus `-g<commit>` in a Git checkout; the build time is a real UTC time
    // (`%Y%m%d.%H%M%S`), not the 19700101.000000 default.
    let head = format!("{BIN} v{}", include_str!("../../VERSION").trim());
    let commit = Cmd::new("git")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .args(["rev-parse", "--short", "HEAD"])
        .run();
    for flag in ["-version", "--version"] {
        let run = s.run(BIN, &[flag], &env, b"");
        run.assert_success().assert_stderr("");
        let out = run.stdout_str();
        let rest = out.strip_prefix(&head).unwrap_or_else(|| panic!("{out:?}"));
        let (middle, time) = rest
            .trim_end_matches('\n')
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("{out:?}"));
        if commit.code == 0 {
            // Built from this checkout (the binary may predate the last commit).
            let sha = middle
                .strip_prefix("-g")
                .unwrap_or_else(|| panic!("{out:?}"));
            let sha = sha.strip_suffix("-dirty").unwrap_or(sha);
            assert!(
                sha.len() >= 7 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
                "{out:?}"
            );
        }
        let (date, clock) = time.split_once('.').unwrap_or_else(|| panic!("{out:?}"));
        assert!(
            date.len() == 8
                && clock.len() == 6
                && (date.to_owned() + clock)
                    .bytes()
                    .all(|b| b.is_ascii_digit()),
            "{out:?}"
        );
        assert!(
            date.as_bytes() > b"20250101".as_slice(),
            "a real build time: {out:?}"
        );
    }
    let run = s.run(BIN, &["--help"], &env, b"");
    run.assert_success()
        .assert_stderr("")
        .assert_stdout_contains(
            "Usage: gitlab-shell-authorized-keys-check <expected-username> <actual-username> <key>",
        );
    assert!(s.api().requests().is_empty());
}
