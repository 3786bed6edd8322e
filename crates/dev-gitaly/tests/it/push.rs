//! Real `git push` and `git archive --remote` through `gitaly-ssh` (the gitaly-client crate),
//! with the push hooks calling a recording internal-API responder (gitaly.md §5.1).

use std::path::PathBuf;

use crate::support::{Fixture, HookApi, SECRET, git, output_text, run_ok};

/// A work clone of the served repository with one new commit on `main`; returns its path and
/// the new commit id.
fn work_clone_with_commit(f: &Fixture) -> (PathBuf, String) {
    let work = f.home().join("work");
    let mut c = git(f.home());
    c.args(["clone", "-q"]).arg(f.repo_path()).arg(&work);
    run_ok(c);
    std::fs::write(work.join("new.txt"), "new\n").unwrap();
    let mut c = git(f.home());
    c.current_dir(&work).args(["add", "."]);
    run_ok(c);
    let mut c = git(f.home());
    c.current_dir(&work).args(["commit", "-q", "-m", "second"]);
    run_ok(c);
    let mut c = git(f.home());
    c.current_dir(&work).args(["rev-parse", "HEAD"]);
    let new = run_ok(c);
    (work, new)
}

fn secret_file(f: &Fixture) -> PathBuf {
    let p = f.home().join(".gitlab_shell_secret");
    std::fs::write(&p, format!("{SECRET}\n")).unwrap();
    p
}

fn allow_all(path: &str, _: &serde_json::Value) -> (u16, String) {
    match path {
        "/api/v4/internal/allowed" => (200, r#"{"status":true,"message":"ok"}"#.into()),
        "/api/v4/internal/pre_receive" => (200, r#"{"reference_counter_increased":true}"#.into()),
        "/api/v4/internal/post_receive" => (
            200,
            r#"{"reference_counter_decreased":true,"messages":[
                {"message":"To create a merge request for main, visit:\n  http://gitlab/mr","type":"basic"},
                {"message":"Broadcast banner","type":"alert"}]}"#
                .into(),
        ),
        _ => (404, r#"{"message":"404 Not Found"}"#.into()),
    }
}

/// See: gitaly.md §5.1 — /allowed, /pre_receive, /post_receive with Gitaly's JSON and headers.
#[test]
fn push_runs_hooks_against_the_internal_api() {
    let f = Fixture::new();
    let api = HookApi::start(allow_all);
    let secret = secret_file(&f);
    let g = f.start(|o| {
        o.gitlab_url = Some(api.url.clone());
        o.secret_file = Some(secret.clone());
    });
    let (work, new) = work_clone_with_commit(&f);
    let mut c = f.git_via(&g);
    c.current_dir(&work).args([
        "push",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/main",
    ]);
    let out = c.output().unwrap();
    let (_, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(f.remote_rev("refs/heads/main"), Some(new.clone()));
    assert_eq!(
        api.paths(),
        [
            "/api/v4/internal/allowed",
            "/api/v4/internal/pre_receive",
            "/api/v4/internal/post_receive"
        ]
    );

    let allowed = api.get("/api/v4/internal/allowed");
    let b = &allowed.body;
    assert_eq!(b["action"], "git-receive-pack");
    assert_eq!(b["gl_repository"], "project-1");
    assert_eq!(b["protocol"], "ssh");
    assert_eq!(b["user_id"], "1");
    assert!(b.get("key_id").is_none() && b.get("username").is_none());
    assert_eq!(b["relative_path"], "group/project.git");
    assert_eq!(
        b["project"],
        f.repo_path().canonicalize().unwrap().display().to_string()
    );
    assert_eq!(b["changes"], format!("{} {new} refs/heads/main\n", f.head));
    let env: serde_json::Value = serde_json::from_str(b["env"].as_str().unwrap()).unwrap();
    assert!(
        env["GIT_OBJECT_DIRECTORY_RELATIVE"]
            .as_str()
            .unwrap()
            .starts_with("objects/tmp_objdir-incoming-"),
        "{env}"
    );
    assert_eq!(
        env["GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE"],
        serde_json::json!(["objects"])
    );
    assert_eq!(allowed.headers["user-agent"], "gitaly/16.11.6");
    assert_eq!(allowed.headers["content-type"], "application/json");
    // The JWT verifies with the trimmed secret and carries Gitaly's claims.
    let jwt = &allowed.headers["gitlab-shell-api-request"];
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["gitlab-shell"]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(
        claims["exp"].as_u64().unwrap(),
        claims["iat"].as_u64().unwrap() + 60
    );

    assert_eq!(
        api.get("/api/v4/internal/pre_receive").body,
        serde_json::json!({"gl_repository": "project-1"})
    );
    let post = api.get("/api/v4/internal/post_receive").body;
    assert_eq!(post["identifier"], "user-1");
    // Gitaly 16.11 sends the field even without push options (docs/real-gitaly.md).
    assert_eq!(post.get("push_options"), Some(&serde_json::Value::Null));
    assert_eq!(post["gl_repository"], "project-1");
    assert_eq!(
        post["changes"],
        format!("{} {new} refs/heads/main\n", f.head)
    );

    // Messages as Gitaly prints them, relayed by git as `remote:` lines.
    let eq = "=".repeat(72);
    let expected = format!(
        "remote: \nremote: To create a merge request for main, visit:\nremote:   http://gitlab/mr\nremote: \nremote: \nremote: {eq}\nremote: \nremote: {}Broadcast banner\nremote: \nremote: {eq}\nremote: \n",
        " ".repeat(28)
    );
    // git pads non-empty `remote:` lines with spaces (its clear-to-end-of-line filler).
    let shown: String = stderr
        .lines()
        .map(|l| {
            let t = l.trim_end_matches(' ');
            if t == "remote:" {
                "remote: \n".to_owned()
            } else {
                format!("{t}\n")
            }
        })
        .collect();
    assert!(
        shown.contains(&expected),
        "stderr was:\n{stderr}\nexpected:\n{expected}"
    );
}

/// See: gitaly.md §7 "hook rejection end to end".
#[test]
fn rejected_push_keeps_refs_and_shows_the_message() {
    let f = Fixture::new();
    let api = HookApi::start(|path, _| match path {
        "/api/v4/internal/allowed" => (
            401,
            r#"{"status":false,"message":"You are not allowed to push code to this project."}"#
                .into(),
        ),
        _ => (500, "{}".into()),
    });
    let secret = secret_file(&f);
    let g = f.start(|o| {
        o.gitlab_url = Some(api.url.clone());
        o.secret_file = Some(secret.clone());
    });
    let (work, _new) = work_clone_with_commit(&f);
    let mut c = f.git_via(&g);
    c.env("GITALY_GL_ID", "key-42").current_dir(&work).args([
        "push",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/main",
    ]);
    let out = c.output().unwrap();
    let (_, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("remote: GitLab: You are not allowed to push code to this project."),
        "{stderr}"
    );
    assert!(stderr.contains("(pre-receive hook declined)"), "{stderr}");
    assert_eq!(f.remote_rev("refs/heads/main"), Some(f.head.clone()));
    assert_eq!(api.paths(), ["/api/v4/internal/allowed"]);
    assert_eq!(api.get("/api/v4/internal/allowed").body["key_id"], "42");
}

/// A custom pre-receive hook in the repository can reject a push (no API configured).
#[test]
fn custom_pre_receive_hook_rejects() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let hooks = f.repo_path().join("custom_hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("pre-receive");
    std::fs::write(&hook, "#!/bin/sh\necho 'this is wrong' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let g = f.start(|_| {});
    let (work, _new) = work_clone_with_commit(&f);
    let mut c = f.git_via(&g);
    c.current_dir(&work).args([
        "push",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/main",
    ]);
    let out = c.output().unwrap();
    let (stdout, stderr) = output_text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("remote: this is wrong"), "{stderr}");
    assert!(stderr.contains("(pre-receive hook declined)"), "{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(f.remote_rev("refs/heads/main"), Some(f.head.clone()));
}

/// Push with protocol v2 requested and no internal API: succeeds, hooks are no-ops.
#[test]
fn push_without_api_succeeds() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let (work, new) = work_clone_with_commit(&f);
    let mut c = f.git_via(&g);
    c.current_dir(&work).args([
        "-c",
        "protocol.version=2",
        "push",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/feature",
    ]);
    run_ok(c);
    assert_eq!(f.remote_rev("refs/heads/feature"), Some(new));
}

#[test]
fn git_archive_remote_through_upload_archive() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let mut c = f.git_via(&g);
    c.args([
        "archive",
        "--format=tar",
        "--remote=ssh://gitaly/group/project.git",
        "main",
        "README.md",
    ]);
    let out = c.output().unwrap();
    let (_, stderr) = output_text(&out);
    assert!(out.status.success(), "{stderr}");
    // A tar with README.md whose content is "hello\n".
    assert!(out.stdout.windows(9).any(|w| w == b"README.md"));
    assert!(out.stdout.windows(6).any(|w| w == b"hello\n"));

    // A bad tree-ish: git fails on the server and the client reports it.
    let mut c = f.git_via(&g);
    c.args(["archive", "--remote=ssh://gitaly/group/project.git", "nope"]);
    let out = c.output().unwrap();
    assert!(!out.status.success());
}

/// Unix sockets on both sides: the dev Gitaly listens on `unix:<path>` and its hooks reach the
/// internal API through `http+unix://`.
#[test]
fn unix_socket_gitaly_and_unix_socket_api() {
    let f = Fixture::new();
    let api = HookApi::start_unix(&f.home().join("api.sock"), allow_all);
    let sock = f.home().join("gitaly.sock");
    let g = f.start(|o| {
        o.listen = dev_gitaly::Listen::Unix(sock.clone());
        o.gitlab_url = Some(api.url.clone());
    });
    assert_eq!(g.address(), format!("unix:{}", sock.display()));
    let dest = f.home().join("clone");
    let mut c = f.git_via(&g);
    c.args(["clone", "-q", "ssh://gitaly/group/project.git"])
        .arg(&dest);
    run_ok(c);
    let (work, new) = work_clone_with_commit(&f);
    let mut c = f.git_via(&g);
    c.current_dir(&work).args([
        "push",
        "-q",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/main",
    ]);
    run_ok(c);
    assert_eq!(f.remote_rev("refs/heads/main"), Some(new));
    assert_eq!(api.paths().len(), 3);
    drop(g);
    assert!(!sock.exists(), "socket removed on drop");
}

/// `dev-gitaly serve` prints its address first and stops on SIGTERM.
#[test]
fn serve_binary_prints_address_and_stops_on_sigterm() {
    use std::io::BufRead;
    let f = Fixture::new();
    let mut child = std::process::Command::new(crate::support::dev_gitaly_bin())
        .args(["serve", "--storage"])
        .arg(&f.storage)
        .args(["--listen", "tcp://127.0.0.1:0", "--token", "secret-token"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().to_owned();
    assert!(addr.starts_with("tcp://127.0.0.1:"), "{addr}");
    let dest = f.home().join("clone");
    let mut c = git(f.home());
    c.env("GIT_SSH_COMMAND", crate::support::gitaly_ssh_bin())
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GITALY_ADDRESS", &addr)
        .env("GITALY_TOKEN", "secret-token")
        .args(["clone", "-q", "ssh://gitaly/group/project.git"])
        .arg(&dest);
    run_ok(c);
    // A wrong token is refused with Gitaly's message.
    let mut c = git(f.home());
    c.env("GIT_SSH_COMMAND", crate::support::gitaly_ssh_bin())
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GITALY_ADDRESS", &addr)
        .env("GITALY_TOKEN", "wrong")
        .args(["clone", "-q", "ssh://gitaly/group/project.git"])
        .arg(f.home().join("clone2"));
    let out = c.output().unwrap();
    assert!(!out.status.success());
    // Gitaly 16.11's one answer for every refused token: no reason after the text.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rpc error: code = PermissionDenied desc = permission denied")
            && !stderr.contains("permission denied:"),
        "{stderr}"
    );
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // One line per RPC and per refused token on stderr (docs/trial.md).
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].starts_with("dev-gitaly: SSHUploadPack")
            && lines[0].ends_with(" default:group/project.git"),
        "{log}"
    );
    assert_eq!(lines[1], "dev-gitaly: refused: permission denied");
}
