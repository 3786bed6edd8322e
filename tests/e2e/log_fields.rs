//! The log lines of a push and of an internal-API error, read back from the log file after real
//! `git` went through a real `sshd`, checked field by field against GitLab Shell 14.56.1's names
//! (docs/behaviour.md §8.1, §12); an internal API answering with a redirect (refused, with
//! GitLab Shell 14.55's message); and the git audit event of a real clone as the internal API
//! receives it (docs/behaviour.md §3.4).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::time::Duration;

use serde_json::Value;
use test_support::{ClientKey, Commit, Run, Sandbox, Sshd};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/repo
    id: 1
    members: { alice: admin }
  - path: group/audited
    id: 2
    members: { alice: admin }
    need_audit: true
  - path: group/private
    id: 3
"#;

struct World {
    sandbox: Sandbox,
    sshd: Sshd,
    alice: ClientKey,
}

fn world(name: &str) -> World {
    let mut builder = Sandbox::builder(name).fixture_yaml(FIXTURE);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let seed = || vec![Commit::new("main", "first\n", "README.md", "hello\n")];
    let sandbox = builder
        .seed("group/repo", seed())
        .seed("group/audited", seed())
        .build();
    let sshd = sandbox.sshd();
    World {
        sandbox,
        sshd,
        alice,
    }
}

impl World {
    fn git(&self, dir: &std::path::Path, args: &[&str]) -> Run {
        self.sandbox
            .git_via(&self.sshd, &self.alice)
            .current_dir(dir)
            .args(args)
            .timeout(Duration::from_secs(60))
            .run()
    }

    fn url(&self, project: &str) -> String {
        self.sshd.git_url(&format!("{project}.git"))
    }

    /// Every JSON line of the log file.
    fn log_lines(&self) -> Vec<Value> {
        self.sandbox
            .log()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// The lines of the one process that wrote `msg` with `field` = `value` (same correlation id).
fn lines_of_process(lines: &[Value], msg: &str, field: &str, value: Value) -> Vec<Value> {
    let anchor = lines
        .iter()
        .find(|l| l["msg"] == msg && l[field] == value)
        .unwrap_or_else(|| panic!("no {msg:?} with {field}={value} in {lines:#?}"));
    let id = anchor["correlation_id"].clone();
    assert!(id.as_str().is_some_and(|s| s.len() == 26), "{anchor}");
    lines
        .iter()
        .filter(|l| l["correlation_id"] == id)
        .cloned()
        .collect()
}

fn line<'a>(lines: &'a [Value], msg: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["msg"] == msg)
        .unwrap_or_else(|| panic!("no {msg:?} in {lines:#?}"))
}

/// `line` has exactly these keys (besides `correlation_id`, `level`, `msg`, `time`), the level
/// and the time format GitLab Shell writes.
#[track_caller]
fn assert_keys(line: &Value, level: &str, keys: &[&str]) {
    let mut got: Vec<&str> = line
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|k| !["correlation_id", "level", "msg", "time"].contains(k))
        .collect();
    got.sort_unstable();
    let mut want = keys.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "{line}");
    assert_eq!(line["level"], level, "{line}");
    let time = line["time"].as_str().unwrap_or_default();
    assert!(time.len() == 20 && time.ends_with('Z'), "{line}");
}

/// The internal-API line of a request: `method`, `url`, `duration_s` (float seconds), `status`,
/// `content_length_bytes`.
#[track_caller]
fn assert_http_line(line: &Value, level: &str, path: &str, status: u16) {
    assert_keys(
        line,
        level,
        &[
            "content_length_bytes",
            "duration_s",
            "method",
            "status",
            "url",
        ],
    );
    assert_eq!(line["method"], "POST", "{line}");
    assert!(
        line["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:") && u.ends_with(path)),
        "{line}"
    );
    assert_eq!(line["status"], status, "{line}");
    assert!(line["duration_s"].is_f64(), "{line}");
    assert!(line["content_length_bytes"].is_i64(), "{line}");
}

#[test]
fn a_push_and_an_api_error_log_gitlab_shell_14_56_fields() {
    let w = world("log-fields-push");
    let work = w.sandbox.work_dir("push");
    w.git(&work, &["clone", &w.url("group/repo"), "repo"])
        .assert_success();
    let repo = work.join("repo");
    std::fs::write(repo.join("new.txt"), "new\n").unwrap();
    w.git(&repo, &["add", "new.txt"]).assert_success();
    w.git(&repo, &["commit", "-q", "-m", "second"])
        .assert_success();
    w.git(&repo, &["push", "origin", "HEAD:refs/heads/topic"])
        .assert_success();
    // A project alice may not see: /allowed answers 404.
    w.git(&work, &["clone", &w.url("group/private"), "private"])
        .assert_code(128);

    let all = w.log_lines();
    let push = lines_of_process(
        &all,
        "executing git command",
        "command",
        "git-receive-pack".into(),
    );
    let msgs: Vec<&str> = push.iter().filter_map(|l| l["msg"].as_str()).collect();
    assert_eq!(
        msgs,
        [
            "gitlab-shell: main: executing command",
            "Finished HTTP request",
            "executing git command",
            "gitlab-shell: main: command executed successfully",
        ],
        "{push:#?}"
    );

    let start = line(&push, "gitlab-shell: main: executing command");
    assert_keys(start, "info", &["command", "env"]);
    assert_eq!(start["command"], "*receivepack.Command");
    assert_eq!(
        start["env"],
        serde_json::json!({
            "GitProtocolVersion": "", "IsSSHConnection": true,
            "OriginalCommand": "git-receive-pack 'group/repo.git'",
            "RemoteAddr": "127.0.0.1", "NamespacePath": "",
        }),
        "{start}"
    );

    let http = line(&push, "Finished HTTP request");
    assert_http_line(http, "info", "/api/v4/internal/allowed", 200);

    let exec = line(&push, "executing git command");
    assert_keys(
        exec,
        "info",
        &[
            "command",
            "gl_key_id",
            "gl_key_type",
            "gl_project_path",
            "gl_repository",
            "gl_user_id",
            "gl_user_name",
            "git_protocol",
            "remote_ip",
        ],
    );
    for (key, want) in [
        ("command", serde_json::json!("git-receive-pack")),
        ("gl_key_id", serde_json::json!(1)),
        ("gl_key_type", serde_json::json!("key")),
        ("gl_project_path", serde_json::json!("group/repo")),
        ("gl_repository", serde_json::json!("project-1")),
        ("gl_user_id", serde_json::json!(1)),
        ("gl_user_name", serde_json::json!("alice")),
        // git pushes with protocol v0 (it never asks for v2 on receive-pack).
        ("git_protocol", serde_json::json!("")),
        ("remote_ip", serde_json::json!("127.0.0.1")),
    ] {
        assert_eq!(exec[key], want, "{key} in {exec}");
    }

    let done = line(&push, "gitlab-shell: main: command executed successfully");
    assert_keys(done, "info", &["command"]);
    assert_eq!(done["command"], "*receivepack.Command");

    // The API error: a client error at info, then the command's failure with error_message.
    let refused = lines_of_process(
        &all,
        "Internal API returned a client error",
        "status",
        404.into(),
    );
    let msgs: Vec<&str> = refused.iter().filter_map(|l| l["msg"].as_str()).collect();
    assert_eq!(
        msgs,
        [
            "gitlab-shell: main: executing command",
            "Internal API returned a client error",
            "gitlab-shell: main: command execution failed",
        ],
        "{refused:#?}"
    );
    let client = line(&refused, "Internal API returned a client error");
    assert_http_line(client, "info", "/api/v4/internal/allowed", 404);
    let failed = line(&refused, "gitlab-shell: main: command execution failed");
    assert_keys(failed, "warning", &["command", "error_message"]);
    assert_eq!(failed["command"], "*uploadpack.Command");
    assert_eq!(
        failed["error_message"],
        "The project you were looking for could not be found or you don't have permission to view it."
    );
    for l in &all {
        for old in ["duration_ms", "user_id", "username", "error"] {
            assert!(l.get(old).is_none(), "14.45 field {old} in {l}");
        }
    }
}

#[test]
fn the_audit_event_of_a_real_clone_carries_the_key_id() {
    let w = world("audit-clone");
    let work = w.sandbox.work_dir("clones");
    w.git(&work, &["clone", &w.url("group/repo"), "plain"])
        .assert_success();
    assert!(
        w.sandbox
            .api()
            .requests_to("/shellhorse/git_audit_event")
            .is_empty(),
        "no audit without need_audit"
    );
    w.git(&work, &["clone", &w.url("group/audited"), "audited"])
        .assert_success();
    let events = w.sandbox.api().requests_to("/shellhorse/git_audit_event");
    assert_eq!(events.len(), 1);
    let event = &events[0].body;
    let mut keys: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    // namespace_path is left out: OpenSSH's classic path never knows a certificate namespace.
    assert_eq!(
        keys,
        [
            "action",
            "changes",
            "check_ip",
            "gl_repository",
            "key_id",
            "packfile_stats",
            "protocol",
            "username"
        ],
        "{event}"
    );
    for (key, want) in [
        ("action", serde_json::json!("git-upload-pack")),
        ("changes", serde_json::json!("_any")),
        ("check_ip", serde_json::json!("127.0.0.1")),
        ("gl_repository", serde_json::json!("project-2")),
        ("key_id", serde_json::json!(1)),
        ("protocol", serde_json::json!("ssh")),
        ("username", serde_json::json!("alice")),
    ] {
        assert_eq!(event[key], want, "{key} in {event}");
    }
    assert!(
        event["packfile_stats"]["wants"].as_i64().unwrap_or(0) >= 1,
        "{event}"
    );
    // The clone's own line: git asks for protocol v2 on fetches.
    let all = w.log_lines();
    let clone = lines_of_process(
        &all,
        "executing git command",
        "gl_project_path",
        "group/audited".into(),
    );
    let exec = line(&clone, "executing git command");
    assert_eq!(exec["git_protocol"], "version=2", "{exec}");
    assert_eq!(exec["command"], "git-upload-pack", "{exec}");
    assert_eq!(exec["gl_user_id"], 1, "{exec}");
    // The debug line GitLab Shell 14.56.1 writes before sending it.
    let sent = line(&all, "sending git audit event");
    assert_keys(
        sent,
        "debug",
        &[
            "command",
            "gl_key_id",
            "gl_key_type",
            "gl_repository",
            "gl_user_name",
        ],
    );
    assert_eq!(sent["gl_key_id"], 1);
    assert_eq!(sent["gl_key_type"], "key");
    assert_eq!(sent["gl_repository"], "project-2");
    assert_eq!(sent["gl_user_name"], "alice");
    assert_eq!(sent["command"], "git-upload-pack");
}

#[test]
fn a_redirecting_internal_api_is_refused_with_its_message_through_sshd() {
    let w = world("redirect-sshd");
    let work = w.sandbox.work_dir("clones");
    for status in [301u16, 302, 307, 308] {
        // Nothing listens there: a followed redirect would end as `Internal API unreachable`.
        let location = format!("http://127.0.0.1:9/elsewhere/{status}");
        w.sandbox.api().set_fault(
            "/api/v4/internal/allowed",
            test_support::stub_api::Fault::Response {
                status,
                headers: vec![("Location".into(), location.clone())],
                body: Vec::new(),
            },
        );
        let run = w.git(
            &work,
            &["clone", &w.url("group/repo"), &format!("r{status}")],
        );
        run.assert_code(128).assert_stderr_contains(format!(
            "remote: \nremote: {}\nremote: \nremote: Internal API returned redirect ({status}) to \"{location}\"\nremote: \n",
            "=".repeat(72)
        ));
        w.sandbox.api().clear_faults();
        // A redirect is a failure of the system, not the user's: `Internal API error`.
        let all = w.log_lines();
        let lines = lines_of_process(&all, "Internal API error", "status", status.into());
        let error = line(&lines, "Internal API error");
        assert_http_line(error, "error", "/api/v4/internal/allowed", status);
        assert_eq!(
            line(&lines, "gitlab-shell: main: command execution failed")["error_message"],
            format!("Internal API returned redirect ({status}) to \"{location}\"")
        );
    }
}
