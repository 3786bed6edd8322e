//! `gitlab-shell` run as sshd runs the forced command (behaviour §1.1, §1.2, §1.6, §3, §7):
//! argv identity, `SSH_CONNECTION`, `SSH_ORIGINAL_COMMAND` parsing, the unframed and framed
//! errors, and every command (welcome, 2FA, PAT, LFS token, git via the dev Gitaly) with exact
//! stdout, stderr and exit code, over `http://` and `http+unix://`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use test_support::sandbox::{ApiTransport, DEFAULT_SECRET};
use test_support::stub_api::Fault;
use test_support::{Commit, Run, Sandbox};

/// The framed warning block of behaviour §1.6 (shared by the other modules of this suite).
pub(crate) fn framed(message: &str) -> String {
    let ruler = "=".repeat(72);
    format!(
        "remote: \nremote: {ruler}\nremote: \nremote: {message}\nremote: \nremote: {ruler}\nremote: \n"
    )
}

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice, two_factor: true, recovery_codes: [aaaa-1111, bbbb-2222], otp: "123456" }
  - { id: 2, username: bob, name: Bob, two_factor: true, push_otp_success: true }
  - { id: 3, username: carol, name: Carol }
keys:
  - { id: 1, user: alice, key: "ssh-ed25519 AAAAalice alice@example" }
  - { id: 2, user: bob, key: "ssh-ed25519 AAAAbob bob@example" }
  - { id: 3, user: carol, key: "ssh-ed25519 AAAAcarol carol@example" }
  - { id: 9, key: "ssh-ed25519 AAAAorphan orphan" }
projects:
  - path: group/repo
    id: 1
    members: { alice: admin }
    console_messages: ["Hello from the console", "Second line"]
  - path: group/audited
    id: 2
    members: { alice: admin }
    need_audit: true
  - path: group/geo
    id: 3
    members: { alice: admin }
    geo: { payload: { action: geo_proxy_to_primary, data: { api_endpoints: [] } } }
personal_access_token:
  token: glpat-stubtoken0000000000
"#;

const NOT_FOUND: &str =
    "The project you were looking for could not be found or you don't have permission to view it.";

fn sandbox_with(transport: ApiTransport, gitaly: bool, extra: &str) -> Sandbox {
    let mut b = Sandbox::builder("shell")
        .fixture_yaml(FIXTURE)
        .api_transport(transport)
        .gitaly(gitaly);
    if !extra.is_empty() {
        b = b.config_extra(extra);
    }
    if gitaly {
        b = b.seed(
            "group/repo",
            vec![Commit::new("main", "first", "README.md", "hello\n")],
        );
        b = b.seed(
            "group/audited",
            vec![Commit::new("main", "first", "README.md", "hello\n")],
        );
    }
    b.build()
}

fn sandbox() -> Sandbox {
    sandbox_with(ApiTransport::Tcp, false, "")
}

fn shell(s: &Sandbox, args: &[&str], command: Option<&str>, stdin: &[u8]) -> Run {
    s.shell(args, command).stdin(stdin).run()
}

// ---- start-up and parsing (unframed) ----

#[test]
fn only_ssh_allowed_without_ssh_connection() {
    let s = sandbox();
    s.cmd("gitlab-shell")
        .arg("key-1")
        .run()
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr("Only SSH allowed\n");
    s.cmd("gitlab-shell")
        .arg("key-1")
        .env("SSH_CONNECTION", "")
        .run()
        .assert_code(1)
        .assert_stderr("Only SSH allowed\n");
    assert!(s.api().requests().is_empty());
}

#[test]
fn invalid_ssh_command() {
    let s = sandbox();
    for cmd in [
        "git-upload-pack 'group/repo",
        "git-upload-pack \"x",
        "a (b",
        "trailing\\",
        "echo `x",
    ] {
        shell(&s, &["key-1"], Some(cmd), b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr("Invalid SSH command: invalid command line string\n");
    }
}

#[test]
fn unknown_commands_are_disallowed_unframed() {
    let s = sandbox();
    // Linux caps one environment string at 128 KiB (MAX_ARG_STRLEN), so sshd cannot pass more.
    let huge = "x".repeat(120 * 1024);
    for cmd in [
        "ls",
        "bash -c id",
        "`id`",
        "$(id)",
        "rm -rf /",
        "git",
        "git-lfs-transfer group/repo download",
        huge.as_str(),
    ] {
        shell(&s, &["key-1"], Some(cmd), b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr("Disallowed command\n");
    }
    let bad_utf8 = OsString::from_vec(b"\xff\xfe".to_vec());
    s.shell(&["key-1"], None)
        .env("SSH_ORIGINAL_COMMAND", bad_utf8)
        .run()
        .assert_code(1)
        .assert_stderr("Disallowed command\n");
    assert!(s.api().requests().is_empty());
}

#[test]
fn known_commands_with_bad_arity_are_disallowed_framed() {
    let s = sandbox();
    for cmd in [
        "git-upload-pack",
        "git-receive-pack a b",
        "git-upload-archive",
        "git-lfs-authenticate group/repo",
        "git-lfs-authenticate group/repo bogus",
    ] {
        shell(&s, &["key-1"], Some(cmd), b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed("Disallowed command"));
    }
    assert!(s.api().requests_to("/allowed").is_empty());
}

#[test]
fn shell_metacharacters_end_the_command() {
    let s = sandbox();
    // `; rm -rf /` is dropped by the parser: what is left is the empty command, i.e. welcome.
    shell(&s, &["key-1"], Some("; rm -rf /"), b"")
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n");
    shell(
        &s,
        &["key-1"],
        Some("git-upload-pack group/nope; rm -rf /"),
        b"",
    )
    .assert_code(1)
    .assert_stderr(framed(NOT_FOUND));
    let allowed = s.api().requests_to("/allowed");
    assert_eq!(allowed[0].body["project"], "group/nope");
}

#[test]
fn startup_errors() {
    let s = sandbox();
    s.shell(&["key-1"], None)
        .env("GITLAB_SHELL_DIR", "/nonexistent/gls")
        .run()
        .assert_code(1)
        .assert_stderr("Failed to determine executable, exiting\n");
    std::fs::remove_file(s.root().join("config.yml")).unwrap();
    shell(&s, &["key-1"], None, b"")
        .assert_code(1)
        .assert_stderr(format!(
            "Failed to read config, exiting: open {}/config.yml: no such file or directory\n",
            s.root().display()
        ));
}

#[test]
fn help_and_version_answer_without_config() {
    let s = sandbox();
    std::fs::remove_file(s.root().join("config.yml")).unwrap();
    let run = s.cmd("gitlab-shell").arg("--help").run();
    run.assert_success()
        .assert_stderr("")
        .assert_stdout_contains("Usage: gitlab-shell key-<id>|username-<name>");
    let run = s.cmd("gitlab-shell").arg("-version").run();
    run.assert_success().assert_stderr("");
    assert!(run.stdout_str().starts_with(&format!(
        "gitlab-shell v{}-",
        include_str!("../../VERSION").trim()
    )));
}

// ---- discover ----

#[test]
fn welcome_by_key_and_username_over_tcp_and_unix() {
    for transport in [ApiTransport::Tcp, ApiTransport::Unix] {
        let s = sandbox_with(transport, false, "");
        shell(&s, &["key-1"], None, b"")
            .assert_success()
            .assert_stdout("Welcome to GitLab, @alice!\n")
            .assert_stderr("");
        shell(&s, &["username-bob"], None, b"")
            .assert_success()
            .assert_stdout("Welcome to GitLab, @bob!\n");
        shell(
            &s,
            &["-c/x/bin/gitlab-shell", "key-2", "2foo"],
            Some(""),
            b"",
        )
        .assert_success()
        .assert_stdout("Welcome to GitLab, @bob!\n");
        shell(&s, &["key-9"], None, b"")
            .assert_success()
            .assert_stdout("Welcome to GitLab, Anonymous!\n");
        let reqs = s.api().requests_to("/discover");
        assert_eq!(reqs[0].query, "key_id=1");
        assert_eq!(reqs[1].query, "username=bob");
    }
}

#[test]
fn welcome_errors_are_framed() {
    let s = sandbox();
    for args in [&["key-abc"][..], &["whatever"][..], &[][..]] {
        shell(&s, args, None, b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed("Failed to get username: who='' is invalid"));
    }
    s.api().set_fault(
        "/discover",
        Fault::Status(401, r#"{"message":"Forbidden!"}"#.into()),
    );
    shell(&s, &["key-1"], None, b"")
        .assert_code(1)
        .assert_stderr(framed("Failed to get username: Forbidden!"));
    s.api().clear_faults();
    s.api()
        .set_fault("/discover", Fault::Status(403, "{}".into()));
    shell(&s, &["key-1"], None, b"")
        .assert_code(1)
        .assert_stderr(framed("Failed to get username: "));
    s.api().clear_faults();
    s.api()
        .set_fault("/discover", Fault::Status(500, String::new()));
    shell(&s, &["key-1"], None, b"")
        .assert_code(1)
        .assert_stderr(framed("Failed to get username: Internal API unreachable"));
}

#[test]
fn jwt_is_checked_by_the_api() {
    // The stub refuses requests whose JWT is not signed with the sandbox secret.
    let s = sandbox();
    std::fs::write(
        s.root().join(".gitlab_shell_secret"),
        format!("  {DEFAULT_SECRET}\n"),
    )
    .unwrap();
    shell(&s, &["key-1"], None, b"")
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n");
    std::fs::write(s.root().join(".gitlab_shell_secret"), "wrong").unwrap();
    shell(&s, &["key-1"], None, b"")
        .assert_code(1)
        .assert_stderr(framed("Failed to get username: 401 Unauthorized"));
}

#[test]
fn log_file_has_correlation_id_and_no_secret() {
    let s = sandbox();
    shell(&s, &["key-1"], None, b"").assert_success();
    let log = s.log();
    assert!(
        log.contains("\"msg\":\"gitlab-shell: main: executing command\""),
        "{log}"
    );
    assert!(log.contains("\"msg\":\"Finished HTTP request\""), "{log}");
    // `env` is the object logrus makes of GitLab Shell's sshenv.Env, in struct order.
    let env = r#""env":{"GitProtocolVersion":"","IsSSHConnection":true,"OriginalCommand":"","RemoteAddr":"127.0.0.1","NamespacePath":""}"#;
    assert!(log.contains(env), "{log}");
    assert!(log.contains("\"correlation_id\":"), "{log}");
    assert!(!log.contains(DEFAULT_SECRET), "{log}");
    assert!(!log.contains("eyJ"), "no JWT in the log: {log}");
}

#[test]
fn unwritable_log_file_does_not_break_the_command() {
    let s = sandbox();
    let url = s.api().tcp_url();
    s.write_config(&format!(
        "gitlab_url: \"{url}\"\nlog_file: /nonexistent/dir/gls.log\n"
    ));
    shell(&s, &["key-1"], None, b"")
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n")
        .assert_stderr("");
}

// ---- 2FA ----

#[test]
fn two_factor_recovery_codes() {
    let s = sandbox();
    let question = "Are you sure you want to generate new two-factor recovery codes?\nAny existing recovery codes you saved will be invalidated. (yes/no)\n";
    shell(&s, &["key-1"], Some("2fa_recovery_codes"), b"yes\n").assert_success().assert_stdout(format!(
        "{question}\nYour two-factor authentication recovery codes are:\n\naaaa-1111\nbbbb-2222\n\nDuring sign in, use one of the codes above when prompted for\nyour two-factor code. Then, visit your Profile Settings and add\na new device so you do not lose access to your account again.\n"
    ));
    for answer in [&b"no\n"[..], b"", b"yess\n"] {
        shell(&s, &["key-1"], Some("2fa_recovery_codes"), answer).assert_success().assert_stdout(format!(
            "{question}\nNew recovery codes have *not* been generated. Existing codes will remain valid.\n"
        ));
    }
    shell(&s, &["key-3"], Some("2fa_recovery_codes"), b"yes\n").assert_success().assert_stdout(format!(
        "{question}\nAn error occurred while trying to generate new recovery codes.\nTwo-factor authentication is not enabled for this user\n"
    ));
    shell(&s, &[], Some("2fa_recovery_codes"), b"yes\n").assert_success().assert_stdout(format!(
        "{question}\nAn error occurred while trying to generate new recovery codes.\nwho='' is invalid\n"
    ));
    // Username identity: /discover first, then user_id as a number.
    shell(
        &s,
        &["username-alice"],
        Some("2fa_recovery_codes"),
        b"yes\n",
    )
    .assert_success();
    let reqs = s.api().requests_to("/two_factor_recovery_codes");
    assert_eq!(reqs[0].body, serde_json::json!({"key_id": "1"}));
    assert_eq!(reqs.last().unwrap().body, serde_json::json!({"user_id": 1}));
}

#[test]
fn two_factor_verify() {
    let s = sandbox();
    let ok = "OTP: \nOTP validation successful. Git operations are now allowed.\n";
    shell(&s, &["key-1"], Some("2fa_verify"), b"123456\n")
        .assert_success()
        .assert_stdout(ok);
    shell(&s, &["key-1"], Some("2fa_verify"), b"000000\n")
        .assert_success()
        .assert_stdout("OTP: \nOTP validation failed: Invalid OTP\n");
    shell(&s, &["key-1"], Some("2fa_verify"), b"\n")
        .assert_success()
        .assert_stdout("OTP: \nOTP validation failed: OTP cannot be blank.\n");
    // Push approval wins even while stdin stays open and unanswered.
    let mut child = std::process::Command::new(s.bin("gitlab-shell"))
        .arg("key-2")
        .env_clear()
        .env("SSH_CONNECTION", test_support::sandbox::SSH_CONNECTION)
        .env("SSH_ORIGINAL_COMMAND", "2fa_verify")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let open_stdin = child.stdin.take();
    let started = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    drop(open_stdin);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "OTP: \nOTP has been validated by Push Authentication. Git operations are now allowed.\n"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let manual = s.api().requests_to("/two_factor_manual_otp_check");
    assert_eq!(
        manual[0].body,
        serde_json::json!({"key_id": "1", "otp_attempt": "123456"})
    );
}

// ---- personal access tokens ----

#[test]
fn personal_access_token() {
    let s = sandbox();
    let run = shell(
        &s,
        &["key-1"],
        Some("personal_access_token mytoken api,read_user 7"),
        b"",
    );
    run.assert_success().assert_stderr("");
    let req = &s.api().requests_to("/personal_access_token")[0];
    let expires = req.body["expires_at"].as_str().unwrap().to_owned();
    assert_eq!(expires.len(), 10);
    assert_eq!(req.body["key_id"], "1");
    assert_eq!(req.body["name"], "mytoken");
    assert_eq!(req.body["scopes"], serde_json::json!(["api", "read_user"]));
    run.assert_stdout(format!(
        "Token:   glpat-stubtoken0000000000\nScopes:  api,read_user\nExpires: {expires}\n"
    ));

    let usage = framed("Usage: personal_access_token <name> <scope1[,scope2,...]> [ttl_days]");
    shell(&s, &["key-1"], Some("personal_access_token"), b"")
        .assert_code(1)
        .assert_stderr(&usage);
    shell(&s, &["key-1"], Some("personal_access_token a b 1 2"), b"")
        .assert_code(1)
        .assert_stderr(&usage);
    shell(&s, &["key-1"], Some("personal_access_token a api -3"), b"")
        .assert_code(1)
        .assert_stderr(framed("Invalid value for days_ttl: '-3'"));
    let run = shell(&s, &["key-1"], Some("personal_access_token a nope"), b"");
    run.assert_code(1)
        .assert_stderr_contains("remote: Invalid scope: 'nope'. Valid scopes are: [");
    shell(&s, &[], Some("personal_access_token a api"), b"")
        .assert_code(1)
        .assert_stderr(framed("who='' is invalid"));
}

#[test]
fn personal_access_token_scope_filter_and_disable() {
    let s = sandbox_with(
        ApiTransport::Tcp,
        false,
        "pat:\n  allowed_scopes: [read_api]\n",
    );
    shell(
        &s,
        &["key-1"],
        Some("personal_access_token t api,read_api"),
        b"",
    )
    .assert_success();
    let req = &s.api().requests_to("/personal_access_token")[0];
    assert_eq!(req.body["scopes"], serde_json::json!(["read_api"]));
    let s = sandbox_with(ApiTransport::Tcp, false, "pat:\n  enabled: false\n");
    shell(&s, &["key-1"], Some("personal_access_token t api"), b"")
        .assert_code(1)
        .assert_stderr("Disallowed command\n");
}

// ---- LFS ----

#[test]
fn lfs_authenticate() {
    let s = sandbox();
    let run = shell(
        &s,
        &["key-1"],
        Some("git-lfs-authenticate group/repo download"),
        b"",
    );
    run.assert_success().assert_stdout(
        "{\"header\":{\"Authorization\":\"Basic YWxpY2U6c3R1Yi1sZnMtdG9rZW4=\"},\"href\":\"http://gitlab.example.com/group/repo.git/info/lfs\",\"expires_in\":7200}\n",
    );
    // Console messages from /allowed come first, on stderr.
    run.assert_stderr("remote: \nremote: Hello from the console\nremote: Second line\nremote: \n");
    let allowed = &s.api().requests_to("/allowed")[0];
    assert_eq!(allowed.body["action"], "git-upload-pack");
    let lfs = &s.api().requests_to("/lfs_authenticate")[0];
    assert_eq!(
        lfs.body,
        serde_json::json!({"operation": "download", "project": "group/repo", "key_id": "1"})
    );

    shell(
        &s,
        &["key-1"],
        Some("git-lfs-authenticate group/nope upload"),
        b"",
    )
    .assert_code(1)
    .assert_stderr(framed(NOT_FOUND));
    s.api()
        .set_fault("/lfs_authenticate", Fault::Status(500, String::new()));
    shell(
        &s,
        &["key-1"],
        Some("git-lfs-authenticate group/repo upload"),
        b"",
    )
    .assert_success()
    .assert_stdout("");
}

// ---- git commands ----

#[test]
fn allowed_refusal_is_framed_after_console_messages() {
    let s = sandbox();
    let run = shell(&s, &["key-3"], Some("git-upload-pack group/repo"), b"");
    run.assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed(NOT_FOUND));
    let req = &s.api().requests_to("/allowed")[0];
    assert_eq!(
        req.body,
        serde_json::json!({"action": "git-upload-pack", "project": "group/repo", "changes": "_any", "protocol": "ssh", "key_id": "3", "check_ip": "127.0.0.1"})
    );
    shell(
        &s,
        &["username-alice"],
        Some("git receive-pack 'group/nope'"),
        b"",
    )
    .assert_code(1);
    let req = &s.api().requests_to("/allowed")[1];
    assert_eq!(req.body["username"], "alice");
    assert_eq!(req.body["action"], "git-receive-pack");
}

#[test]
fn empty_api_message_prints_nothing_but_fails() {
    let s = sandbox();
    s.api()
        .set_fault("/allowed", Fault::Status(403, "{}".into()));
    shell(&s, &["key-1"], Some("git-upload-pack group/repo"), b"")
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr("");
    s.api().clear_faults();
    s.api()
        .set_fault("/allowed", Fault::Status(403, "<html>".into()));
    shell(&s, &["key-1"], Some("git-upload-pack group/repo"), b"")
        .assert_code(1)
        .assert_stderr(framed("Internal API error (403)"));
}

#[test]
fn geo_custom_action_without_a_primary_is_unavailable() {
    // 14.56.1: a 300 always goes to `primary_repo`; the old `api_endpoints` are not read.
    let s = sandbox();
    shell(&s, &["key-1"], Some("git-upload-pack group/geo"), b"")
        .assert_code(1)
        .assert_stderr(framed("Remote repository is unavailable"));
}

#[test]
fn upload_pack_advertises_refs_over_tcp_and_unix() {
    for transport in [ApiTransport::Tcp, ApiTransport::Unix] {
        let s = sandbox_with(transport, true, "");
        // A v0 client that only lists refs answers the advertisement with a flush packet.
        let run = shell(
            &s,
            &["key-1"],
            Some("git-upload-pack 'group/repo'"),
            b"0000",
        );
        run.assert_success()
            .assert_stderr(
                "remote: \nremote: Hello from the console\nremote: Second line\nremote: \n",
            )
            .assert_stdout_contains("refs/heads/main");
        assert!(run.stdout.ends_with(b"0000"), "{}", run.stdout_str());
    }
}

#[test]
fn receive_pack_and_audit_event() {
    let s = sandbox_with(ApiTransport::Tcp, true, "");
    let run = shell(
        &s,
        &["key-1"],
        Some("git-receive-pack group/audited"),
        b"0000",
    );
    run.assert_success()
        .assert_stdout_contains("refs/heads/main")
        .assert_stderr("");
    let audits = s.api().requests_to("/shellhorse/git_audit_event");
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].body["action"], "git-receive-pack");
    assert_eq!(audits[0].body["gl_repository"], "project-2");
    assert_eq!(audits[0].body["username"], "alice");
    assert!(audits[0].body.get("packfile_stats").is_none());

    s.api().clear_requests();
    shell(
        &s,
        &["key-1"],
        Some("git-upload-pack group/audited"),
        b"0000",
    )
    .assert_success();
    let audits = s.api().requests_to("/shellhorse/git_audit_event");
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].body["action"], "git-upload-pack");
    assert_eq!(audits[0].body["check_ip"], "127.0.0.1");

    s.api().clear_requests();
    shell(&s, &["key-1"], Some("git-upload-pack group/repo"), b"0000").assert_success();
    assert!(
        s.api()
            .requests_to("/shellhorse/git_audit_event")
            .is_empty(),
        "need_audit false"
    );
}

#[test]
fn grpc_internal_is_silent_with_exit_1() {
    // upload-archive without a request: git fails, Gitaly relays git's stderr and ends the RPC
    // with code Internal; GitLab Shell adds nothing of its own.
    let s = sandbox_with(ApiTransport::Tcp, true, "");
    let run = shell(&s, &["key-1"], Some("git-upload-archive group/repo"), b"");
    run.assert_code(1)
        .assert_stderr_lacks("remote: ====")
        .assert_stderr_lacks("rpc error");
    assert!(
        s.log()
            .contains("\"msg\":\"Failed to execute Git command\"")
    );
}

#[test]
fn gitaly_unavailable_is_framed() {
    let s = sandbox_with(ApiTransport::Tcp, true, "");
    s.api().set_gitaly("tcp://127.0.0.1:1", "");
    shell(&s, &["key-1"], Some("git-upload-pack group/repo"), b"0000").assert_code(1).assert_stderr_contains(framed(
        "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.",
    ));
    s.api().set_gitaly("bogus://x", "");
    shell(&s, &["key-1"], Some("git-receive-pack group/repo"), b"0000")
        .assert_code(1)
        .assert_stderr_contains(framed("invalid connection string: \"bogus://x\""));
}

#[test]
fn log_format_and_level_follow_gitlab_log_env() {
    // GitLab Shell 14.46+: GITLAB_LOG_FORMAT / GITLAB_LOG_LEVEL override config.yml for every
    // binary (the sandbox's config says json and debug).
    let s = sandbox();
    s.shell(&["key-1"], Some(""))
        .env("GITLAB_LOG_FORMAT", "text")
        .env("GITLAB_LOG_LEVEL", "error")
        .run()
        .assert_success();
    assert_eq!(
        s.log(),
        "",
        "an info-level welcome logs nothing at error level"
    );
    s.shell(&["key-1"], Some(""))
        .env("GITLAB_LOG_FORMAT", "text")
        .run()
        .assert_success();
    let log = s.log();
    let line = log
        .lines()
        .find(|l| l.contains("executing command"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.starts_with("time="), "text format: {line}");
    assert!(
        line.contains("msg=\"gitlab-shell: main: executing command\""),
        "{line}"
    );
}
