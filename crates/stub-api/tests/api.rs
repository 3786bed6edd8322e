//! Integration tests of the stub internal API: every endpoint over real HTTP (TCP and the unix
//! socket), the JWT check, request recording, faults and the `stub-api` binary.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions panic on a broken set-up"
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use stub_api::{Fault, Fixture, StartOptions, StubApi};

const DEMO_BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFndHzcKPTK+ErPd+bVlQYRX6IWC5m9rbGX0AM9fruB/";
const DEMO_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFndHzcKPTK+ErPd+bVlQYRX6IWC5m9rbGX0AM9fruB/ demo@example.com";
const NOT_FOUND: &str =
    "The project you were looking for could not be found or you don't have permission to view it.";

const FIXTURE: &str = r#"
external_url: http://gitlab.test
check: { gitlab_version: 18.3.1, gitlab_rev: abc123 }
gitaly: { address: "tcp://127.0.0.1:9999", token: gitaly-secret, features: { gitaly-feature-x: "true" } }
users:
  - { id: 1, username: alice, name: Alice A, two_factor: true, recovery_codes: [c1, c2], otp: "123456" }
  - { id: 2, username: bob }
  - { id: 3, username: carol, blocked: true }
  - { id: 4, username: dave, two_factor: true, push_otp_success: true, push_otp_delay_ms: 300 }
keys:
  - { id: 10, user: alice, key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFndHzcKPTK+ErPd+bVlQYRX6IWC5m9rbGX0AM9fruB/ demo@example.com", title: laptop }
  - { id: 20, user: bob, key: "ssh-rsa AAAAB3Nzabob bob@x" }
  - { id: 30, key: "ssh-rsa AAAAB3Nzaorphan" }
projects:
  - path: group/private
    id: 26
    relative_path: "@hashed/5f/9c/5f9c.git"
    storage: store1
    members: { alice: admin, bob: write, carol: admin }
    protected_branches: [main, "release/*"]
    console_messages: [hello, world]
    need_audit: true
  - path: group/readonly
    id: 27
    members: { bob: read }
  - path: group/public
    id: 28
    public: true
    git_config_options: ["a=b"]
  - path: group/geo
    id: 29
    members: { alice: admin }
    geo:
      actions: [git-receive-pack]
      payload: { action: geo_proxy_to_primary, data: { api_endpoints: [/api/v4/geo/proxy_git_ssh/info_refs_receive_pack], primary_repo: "http://primary/group/geo.git" } }
  - path: group/nolfs
    id: 30
    members: { alice: admin }
    lfs_enabled: false
personal_access_token: { token: glpat-xyz }
lfs: { token: lfs-tok, expires_in: 1800 }
post_receive:
  messages:
    - { message: "basic note", type: basic }
    - { message: "Maintenance tonight", type: alert }
geo_responses:
  info_refs_receive_pack: { result: "001f# service=git-receive-pack\n0000", message: ok }
"#;

fn fixture() -> Fixture {
    Fixture::from_yaml_str(FIXTURE).unwrap()
}

/// A short, unique unix socket path (sun_path is limited to ~108 bytes).
fn socket_path(tag: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    PathBuf::from(format!(
        "/tmp/stub-api-{}-{tag}-{nanos}.sock",
        std::process::id()
    ))
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where to send requests.
#[derive(Clone)]
enum Target {
    Tcp(String),
    Unix(PathBuf),
}

impl Target {
    fn tcp(api: &StubApi) -> Self {
        Target::Tcp(api.tcp_addr().unwrap().to_string())
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole answer. Returns
/// `Err` when the server closes without a status line.
fn try_request(
    target: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> Result<Resp, String> {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nUser-Agent: GitLab-Shell\r\nConnection: close\r\nContent-Length: {}\r\n",
        match target {
            Target::Tcp(a) => a.as_str(),
            Target::Unix(_) => "unix",
        },
        body.len()
    );
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = Vec::new();
    match target {
        Target::Tcp(addr) => {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            let _ = s.read_to_end(&mut raw);
        }
        Target::Unix(path) => {
            let mut s = UnixStream::connect(path).unwrap();
            s.write_all(head.as_bytes()).unwrap();
            s.write_all(&body).unwrap();
            let _ = s.read_to_end(&mut raw);
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response: {:?}", String::from_utf8_lossy(&raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    Ok(Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

fn get(target: &Target, path: &str) -> Resp {
    try_request(target, "GET", path, None, &[]).unwrap()
}

fn post(target: &Target, path: &str, body: Value) -> Resp {
    try_request(target, "POST", path, Some(&body), &[]).unwrap()
}

fn start() -> (StubApi, Target) {
    let api = StubApi::start(fixture(), StartOptions::default()).unwrap();
    let target = Target::tcp(&api);
    (api, target)
}

fn allowed(target: &Target, body: Value) -> Resp {
    post(target, "/api/v4/internal/allowed", body)
}

// ---------------------------------------------------------------- /authorized_keys

#[test]
fn authorized_keys_finds_the_key_by_its_blob_over_tcp_and_unix() {
    let sock = socket_path("ak");
    let api = StubApi::start(
        fixture(),
        StartOptions {
            secret: None,
            unix_socket: Some(sock.clone()),
            tcp: true,
        },
    )
    .unwrap();
    let escaped = url::form_urlencoded::byte_serialize(DEMO_BLOB.as_bytes()).collect::<String>();
    for target in [Target::tcp(&api), Target::Unix(sock.clone())] {
        let resp = get(
            &target,
            &format!("/api/v4/internal/authorized_keys?key={escaped}"),
        );
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some("application/json"));
        assert_eq!(
            resp.json(),
            json!({"id": 10, "title": "laptop", "key": DEMO_KEY})
        );

        let resp = get(&target, "/api/v4/internal/authorized_keys?key=AAAAnope");
        assert_eq!(resp.status, 404);
        assert_eq!(resp.text(), r#"{"message":"404 Key Not Found"}"#);
    }
}

#[test]
fn unix_only_server_and_gitlab_url_form() {
    let sock = socket_path("u");
    let api = StubApi::start(
        fixture(),
        StartOptions {
            secret: None,
            unix_socket: Some(sock.clone()),
            tcp: false,
        },
    )
    .unwrap();
    assert!(api.tcp_addr().is_none());
    assert_eq!(api.unix_socket(), Some(sock.as_path()));
    let url = api.gitlab_url_unix().unwrap();
    assert_eq!(
        url,
        format!(
            "http+unix://{}",
            sock.display().to_string().replace('/', "%2F")
        )
    );
    let resp = get(&Target::Unix(sock.clone()), "/api/v4/internal/check");
    assert_eq!(resp.status, 200);
    drop(api);
    assert!(!sock.exists(), "socket file removed on drop");
}

// ---------------------------------------------------------------- /discover, /check

#[test]
fn discover_by_key_username_and_user_id() {
    let (_api, t) = start();
    let alice = json!({"id": 1, "name": "Alice A", "username": "alice"});
    assert_eq!(get(&t, "/api/v4/internal/discover?key_id=10").json(), alice);
    assert_eq!(
        get(&t, "/api/v4/internal/discover?username=alice").json(),
        alice
    );
    assert_eq!(get(&t, "/api/v4/internal/discover?user_id=1").json(), alice);
    // The name defaults to the username.
    assert_eq!(
        get(&t, "/api/v4/internal/discover?username=bob").json(),
        json!({"id": 2, "name": "bob", "username": "bob"})
    );
    for q in ["key_id=99", "key_id=30", "username=nobody", ""] {
        let resp = get(&t, &format!("/api/v4/internal/discover?{q}"));
        assert_eq!(resp.status, 200, "{q}");
        assert_eq!(resp.text(), "null", "{q}");
    }
}

#[test]
fn check_reports_versions_and_redis() {
    let (api, t) = start();
    assert_eq!(
        get(&t, "/api/v4/internal/check").json(),
        json!({"api_version": "v4", "gitlab_version": "18.3.1", "gitlab_rev": "abc123", "redis": true})
    );
    api.update_fixture(|f| f.check.redis = false);
    assert_eq!(
        get(&t, "/api/v4/internal/check").json()["redis"],
        json!(false)
    );
}

// ---------------------------------------------------------------- /allowed

#[test]
fn allowed_success_has_every_field_gitlab_shell_reads() {
    let (_api, t) = start();
    let resp = allowed(
        &t,
        json!({"action": "git-upload-pack", "project": "/group/private.git", "changes": "_any", "protocol": "ssh", "key_id": "10", "check_ip": "127.0.0.1"}),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({
            "status": true,
            "gl_repository": "project-26",
            "gl_project_path": "group/private",
            "gl_project_id": 26,
            "gl_id": "user-1",
            "gl_username": "alice",
            "gl_key_type": "key",
            "gl_key_id": 10,
            "git_config_options": ["uploadpack.allowFilter=true", "uploadpack.allowAnySHA1InWant=true"],
            "gitaly": {
                "repository": {
                    "storage_name": "store1",
                    "relative_path": "@hashed/5f/9c/5f9c.git",
                    "git_object_directory": "",
                    "git_alternate_object_directories": [],
                    "gl_repository": "project-26",
                    "gl_project_path": "group/private",
                },
                "address": "tcp://127.0.0.1:9999",
                "token": "gitaly-secret",
                "features": {"gitaly-feature-x": "true"},
            },
            "gl_console_messages": ["hello", "world"],
            "need_audit": true,
        })
    );
}

#[test]
fn allowed_by_username_has_no_key_fields() {
    let (_api, t) = start();
    let body = allowed(
        &t,
        json!({"action": "git-receive-pack", "project": "group/private", "changes": "_any", "username": "bob"}),
    )
    .json();
    assert_eq!(body["gl_id"], "user-2");
    assert_eq!(body["gl_username"], "bob");
    assert!(body.get("gl_key_id").is_none());
    assert!(body.get("gl_key_type").is_none());
}

#[test]
fn allowed_denials_use_rails_words_and_codes() {
    let (_api, t) = start();
    let cases: &[(&str, Value, u16, &str)] = &[
        (
            "unknown project",
            json!({"action": "git-upload-pack", "project": "group/nope", "key_id": "10"}),
            404,
            NOT_FOUND,
        ),
        (
            "a path that only ends like a project",
            json!({"action": "git-upload-pack", "project": "x/group/private", "key_id": "10"}),
            404,
            NOT_FOUND,
        ),
        (
            "private project, not a member",
            json!({"action": "git-upload-pack", "project": "group/readonly", "key_id": "10"}),
            404,
            NOT_FOUND,
        ),
        (
            "unknown key is anonymous",
            json!({"action": "git-upload-pack", "project": "group/private", "key_id": "999"}),
            404,
            NOT_FOUND,
        ),
        (
            "no identity at all",
            json!({"action": "git-upload-pack", "project": "group/private"}),
            404,
            NOT_FOUND,
        ),
        (
            "read-only member pushes",
            json!({"action": "git-receive-pack", "project": "group/readonly", "username": "bob"}),
            401,
            "You are not allowed to push code to this project.",
        ),
        (
            "anonymous push to a public project",
            json!({"action": "git-receive-pack", "project": "group/public"}),
            401,
            "You are not allowed to push code to this project.",
        ),
        (
            "developer pushes to a protected branch",
            json!({"action": "git-receive-pack", "project": "group/private", "username": "bob",
                   "changes": "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/feature\n1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/main\n"}),
            401,
            "You are not allowed to push code to protected branches on this project.",
        ),
        (
            "wildcard protection",
            json!({"action": "git-receive-pack", "project": "group/private", "username": "bob",
                   "changes": "1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/release/1.0"}),
            401,
            "You are not allowed to push code to protected branches on this project.",
        ),
        (
            "blocked user",
            json!({"action": "git-upload-pack", "project": "group/private", "username": "carol"}),
            401,
            "Your account has been blocked.",
        ),
        (
            "unknown action",
            json!({"action": "git-frobnicate", "project": "group/private", "key_id": "10"}),
            401,
            "The command you're trying to execute is not allowed.",
        ),
    ];
    for (desc, body, status, message) in cases {
        let resp = allowed(&t, body.clone());
        assert_eq!(resp.status, *status, "{desc}");
        assert_eq!(
            resp.json(),
            json!({"status": false, "message": message}),
            "{desc}"
        );
    }
}

#[test]
fn allowed_grants_what_access_levels_allow() {
    let (_api, t) = start();
    let cases: &[(&str, Value)] = &[
        (
            "admin pushes to protected",
            json!({"action": "git-receive-pack", "project": "group/private", "key_id": 10,
            "changes": "1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/main"}),
        ),
        (
            "developer pushes an unprotected branch and a tag",
            json!({"action": "git-receive-pack", "project": "group/private", "username": "bob",
            "changes": "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/feature\n0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/tags/main"}),
        ),
        (
            "_any changes",
            json!({"action": "git-receive-pack", "project": "group/private", "username": "bob", "changes": "_any"}),
        ),
        (
            "reader fetches",
            json!({"action": "git-upload-pack", "project": "group/readonly", "username": "bob"}),
        ),
        (
            "reader archives",
            json!({"action": "git-upload-archive", "project": "group/readonly", "username": "bob"}),
        ),
        (
            "anonymous reads a public project",
            json!({"action": "git-upload-pack", "project": "group/public"}),
        ),
        (
            "non-member reads a public project",
            json!({"action": "git-upload-pack", "project": "group/public", "key_id": "20"}),
        ),
    ];
    for (desc, body) in cases {
        let resp = allowed(&t, body.clone());
        assert_eq!(resp.status, 200, "{desc}: {}", resp.text());
        assert_eq!(resp.json()["status"], json!(true), "{desc}");
    }
    let anon = allowed(
        &t,
        json!({"action": "git-upload-pack", "project": "group/public"}),
    )
    .json();
    assert_eq!(anon["gl_id"], "");
    assert!(anon.get("gl_username").is_none());
    assert_eq!(anon["git_config_options"], json!(["a=b"]));
}

#[test]
fn allowed_from_a_gitaly_hook_finds_the_project_by_gl_repository() {
    let (_api, t) = start();
    // Gitaly's pre-receive hook sends the absolute path on disk, gl_repository and user_id.
    let hook = json!({
        "action": "git-receive-pack",
        "gl_repository": "project-26",
        "project": "/var/opt/gitlab/repositories/@hashed/5f/9c/5f9c.git",
        "changes": "1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/main\n",
        "protocol": "ssh",
        "relative_path": "@hashed/5f/9c/5f9c.git",
        "env": "{}",
        "user_id": "2",
    });
    let resp = allowed(&t, hook.clone());
    assert_eq!(resp.status, 401);
    assert_eq!(
        resp.json()["message"],
        "You are not allowed to push code to protected branches on this project."
    );
    let mut by_path = hook.clone();
    by_path.as_object_mut().unwrap().remove("gl_repository");
    assert_eq!(allowed(&t, by_path).status, 401);
    let mut ok = hook;
    ok["user_id"] = json!(1);
    assert_eq!(allowed(&t, ok).status, 200);
}

#[test]
fn allowed_answers_300_for_geo_projects() {
    let (_api, t) = start();
    let resp = allowed(
        &t,
        json!({"action": "git-receive-pack", "project": "group/geo", "key_id": "10"}),
    );
    assert_eq!(resp.status, 300);
    assert_eq!(
        resp.json(),
        json!({
            "status": true,
            "payload": {"action": "geo_proxy_to_primary", "data": {
                "api_endpoints": ["/api/v4/geo/proxy_git_ssh/info_refs_receive_pack"],
                "primary_repo": "http://primary/group/geo.git"}},
            "gl_console_messages": [],
        })
    );
    // The action filter: fetches are served locally.
    let resp = allowed(
        &t,
        json!({"action": "git-upload-pack", "project": "group/geo", "key_id": "10"}),
    );
    assert_eq!(resp.status, 200);
}

#[test]
fn set_gitaly_changes_the_allowed_answer() {
    let (api, t) = start();
    api.set_gitaly("unix:/tmp/g.sock", "tok2");
    let body = allowed(
        &t,
        json!({"action": "git-upload-pack", "project": "group/private", "key_id": "10"}),
    )
    .json();
    assert_eq!(body["gitaly"]["address"], "unix:/tmp/g.sock");
    assert_eq!(body["gitaly"]["token"], "tok2");
}

// ---------------------------------------------------------------- hooks

#[test]
fn pre_receive_increases_the_reference_counter() {
    let (_api, t) = start();
    let resp = post(
        &t,
        "/api/v4/internal/pre_receive",
        json!({"gl_repository": "project-26"}),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), r#"{"reference_counter_increased":true}"#);
}

#[test]
fn post_receive_returns_merge_request_links_and_fixture_messages() {
    let (_api, t) = start();
    let changes = "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/feature/x\n\
                   1111111111111111111111111111111111111111 2222222222222222222222222222222222222222 refs/heads/main\n\
                   1111111111111111111111111111111111111111 0000000000000000000000000000000000000000 refs/heads/gone\n\
                   0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/tags/v1\n";
    let resp = post(
        &t,
        "/api/v4/internal/post_receive",
        json!({"gl_repository": "project-26", "identifier": "key-10", "changes": changes, "push_options": []}),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({
            "reference_counter_decreased": true,
            "messages": [
                {"message": "Maintenance tonight", "type": "alert"},
                {"message": "To create a merge request for feature/x, visit:\n  http://gitlab.test/group/private/-/merge_requests/new?merge_request%5Bsource_branch%5D=feature%2Fx", "type": "basic"},
                {"message": "basic note", "type": "basic"},
            ],
        })
    );
}

// ---------------------------------------------------------------- LFS, 2FA, PAT, audit, Geo

#[test]
fn lfs_authenticate_returns_the_token_payload() {
    let (_api, t) = start();
    let resp = post(
        &t,
        "/api/v4/internal/lfs_authenticate",
        json!({"operation": "download", "project": "group/private", "key_id": "10"}),
    );
    assert_eq!(
        resp.json(),
        json!({"username": "alice", "lfs_token": "lfs-tok", "repository_http_path": "http://gitlab.test/group/private.git", "expires_in": 1800})
    );
    let by_user = post(
        &t,
        "/api/v4/internal/lfs_authenticate",
        json!({"operation": "upload", "project": "group/private", "user_id": "2"}),
    );
    assert_eq!(by_user.json()["username"], "bob");
    for body in [
        json!({"operation": "download", "project": "group/nolfs", "key_id": "10"}),
        json!({"operation": "download", "project": "group/nope", "key_id": "10"}),
        json!({"operation": "download", "project": "group/private", "key_id": "999"}),
    ] {
        assert_eq!(
            post(&t, "/api/v4/internal/lfs_authenticate", body.clone()).status,
            404,
            "{body}"
        );
    }
}

#[test]
fn two_factor_recovery_codes() {
    let (_api, t) = start();
    let path = "/api/v4/internal/two_factor_recovery_codes";
    assert_eq!(
        post(&t, path, json!({"key_id": "10"})).json(),
        json!({"success": true, "recovery_codes": ["c1", "c2"]})
    );
    assert_eq!(
        post(&t, path, json!({"user_id": 1})).json()["success"],
        json!(true)
    );
    let cases = [
        (json!({"key_id": "10000"}), "Could not find the given key"),
        (
            json!({"key_id": "30"}),
            "Could not find a user for the given key",
        ),
        (json!({"user_id": 77}), "Could not find the given user"),
        (
            json!({"key_id": "20"}),
            "Two-factor authentication is not enabled for this user",
        ),
    ];
    for (body, message) in cases {
        let resp = post(&t, path, body.clone());
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.json(),
            json!({"success": false, "message": message}),
            "{body}"
        );
    }
}

#[test]
fn two_factor_manual_and_push_otp_checks() {
    let (_api, t) = start();
    let manual = "/api/v4/internal/two_factor_manual_otp_check";
    assert_eq!(
        post(&t, manual, json!({"key_id": "10", "otp_attempt": "123456"})).json(),
        json!({"success": true})
    );
    assert_eq!(
        post(&t, manual, json!({"key_id": "10", "otp_attempt": "000000"})).json(),
        json!({"success": false, "message": "Invalid OTP"})
    );
    assert_eq!(
        post(&t, manual, json!({"key_id": "10"})).json()["success"],
        json!(false)
    );

    let push = "/api/v4/internal/two_factor_push_otp_check";
    assert_eq!(
        post(&t, push, json!({"key_id": "10"})).json(),
        json!({"success": false, "message": "Invalid OTP"})
    );
    let started = Instant::now();
    assert_eq!(
        post(&t, push, json!({"user_id": 4})).json(),
        json!({"success": true})
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "push OTP delay applied"
    );
}

#[test]
fn personal_access_token_validates_scopes_like_rails() {
    let (api, t) = start();
    let path = "/api/v4/internal/personal_access_token";
    assert_eq!(
        post(&t, path, json!({"key_id": "10", "name": "tok", "scopes": ["read_api", "read_repository"], "expires_at": "2026-12-24"})).json(),
        json!({"success": true, "token": "glpat-xyz", "scopes": ["read_api", "read_repository"], "expires_at": "2026-12-24"})
    );
    let resp = post(
        &t,
        path,
        json!({"key_id": "10", "name": "tok", "scopes": ["read_api", "bogus"]}),
    );
    assert_eq!(
        resp.json(),
        json!({"success": false, "message": "Invalid scope: 'bogus'. Valid scopes are: [\"ai_features\", \"api\", \"create_runner\", \"k8s_proxy\", \"manage_runner\", \"read_api\", \"read_registry\", \"read_repository\", \"read_user\", \"self_rotate\", \"write_registry\", \"write_repository\"]"})
    );
    assert_eq!(
        post(
            &t,
            path,
            json!({"key_id": "10", "name": "tok", "scopes": null})
        )
        .json(),
        json!({"success": false, "message": "No token scopes specified"})
    );
    assert_eq!(
        post(
            &t,
            path,
            json!({"key_id": "10", "name": "", "scopes": ["api"]})
        )
        .json(),
        json!({"success": false, "message": "No token name specified"})
    );
    assert_eq!(
        post(
            &t,
            path,
            json!({"user_id": 99, "name": "t", "scopes": ["api"]})
        )
        .json(),
        json!({"success": false, "message": "Could not find the given user"})
    );
    assert_eq!(
        post(
            &t,
            path,
            json!({"key_id": "10", "name": "t", "scopes": ["api"], "expires_at": "soon"})
        )
        .json(),
        json!({"success": false, "message": "Invalid token expiry date: 'soon'"})
    );
    api.update_fixture(|f| {
        f.personal_access_token.valid_scopes = Some(vec!["read_repository".into(), "api".into()])
    });
    assert_eq!(
        post(
            &t,
            path,
            json!({"key_id": "10", "name": "t", "scopes": ["read_api"]})
        )
        .json()["message"],
        "Invalid scope: 'read_api'. Valid scopes are: [\"api\", \"read_repository\"]"
    );
}

#[test]
fn audit_event_and_geo_proxy_endpoints_answer_and_are_recorded() {
    let (api, t) = start();
    let audit = json!({"action": "git-upload-pack", "protocol": "ssh", "gl_repository": "project-26", "username": "alice", "packfile_stats": {"wants": 1}, "check_ip": "1.2.3.4", "changes": "_any"});
    assert_eq!(
        post(
            &t,
            "/api/v4/internal/shellhorse/git_audit_event",
            audit.clone()
        )
        .status,
        200
    );
    let recorded = api.requests_to("/shellhorse/git_audit_event");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].body, audit);

    let resp = post(
        &t,
        "/api/v4/geo/proxy_git_ssh/info_refs_receive_pack",
        json!({"secret_token": null, "data": {"gl_id": "key-10"}, "output": null}),
    );
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.json(),
        json!({"result": "MDAxZiMgc2VydmljZT1naXQtcmVjZWl2ZS1wYWNrCjAwMDA=", "message": "ok"})
    );
    assert_eq!(
        post(&t, "/api/v4/geo/proxy_git_ssh/upload_pack", json!({})).status,
        404
    );
    assert_eq!(
        api.requests_to("/proxy_git_ssh/upload_pack")[0].body,
        json!({})
    );
}

#[test]
fn unknown_endpoints_are_404() {
    let (_api, t) = start();
    let resp = get(&t, "/api/v4/internal/nope");
    assert_eq!(resp.status, 404);
    assert_eq!(resp.text(), r#"{"message":"404 Not Found"}"#);
    assert_eq!(
        get(&t, "/api/v4/internal/allowed").status,
        404,
        "GET on a POST endpoint"
    );
}

#[test]
fn relative_url_roots_are_ignored_for_routing_but_recorded() {
    let (api, t) = start();
    let resp = get(&t, "/gitlab/api/v4/internal/discover?username=alice");
    assert_eq!(resp.json()["id"], 1);
    assert_eq!(api.requests()[0].path, "/gitlab/api/v4/internal/discover");
}

// ---------------------------------------------------------------- recording

#[test]
fn every_request_is_recorded_with_method_path_query_headers_and_body() {
    let (api, t) = start();
    get(&t, "/api/v4/internal/authorized_keys?key=AAAA%2Bx%2F%3D");
    post(
        &t,
        "/api/v4/internal/allowed",
        json!({"action": "git-upload-pack", "project": "group/private", "key_id": "10"}),
    );
    try_request(
        &t,
        "POST",
        "/api/v4/internal/pre_receive",
        None,
        &[("X-Request-ID", "corr-1")],
    )
    .unwrap();
    let requests = api.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api/v4/internal/authorized_keys");
    assert_eq!(requests[0].query, "key=AAAA%2Bx%2F%3D");
    assert_eq!(requests[0].query_param("key").as_deref(), Some("AAAA+x/="));
    assert_eq!(requests[0].body, Value::Null);
    assert_eq!(requests[0].header("user-agent"), Some("GitLab-Shell"));
    assert_eq!(requests[0].header("Content-Type"), Some("application/json"));
    assert_eq!(requests[1].body["key_id"], "10");
    assert_eq!(requests[2].header("x-request-id"), Some("corr-1"));
    assert_eq!(requests[2].body, Value::Null);
    api.clear_requests();
    assert!(api.requests().is_empty());
}

#[test]
fn non_json_bodies_are_recorded_as_text() {
    let (api, t) = start();
    let target = match &t {
        Target::Tcp(a) => a.clone(),
        Target::Unix(_) => unreachable!(),
    };
    let mut s = TcpStream::connect(target).unwrap();
    s.write_all(b"POST /api/v4/internal/allowed HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nnot j")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert_eq!(api.requests()[0].body, json!("not j"));
}

#[test]
fn recording_can_be_switched_off() {
    let (api, t) = start();
    api.set_recording(false);
    assert_eq!(get(&t, "/api/v4/internal/check").status, 200);
    assert!(api.requests().is_empty());
    api.set_recording(true);
    get(&t, "/api/v4/internal/check");
    assert_eq!(api.requests().len(), 1);
}

#[test]
fn wait_for_requests_sees_requests_made_from_another_thread() {
    let (api, t) = start();
    let t2 = t.clone();
    let handle = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        post(
            &t2,
            "/api/v4/internal/post_receive",
            json!({"gl_repository": "project-26"}),
        );
    });
    let found = api.wait_for_requests("/post_receive", 1, Duration::from_secs(5));
    assert_eq!(found.len(), 1);
    handle.join().unwrap();
    assert!(
        api.wait_for_requests("/pre_receive", 1, Duration::from_millis(50))
            .is_empty()
    );
}

// ---------------------------------------------------------------- JWT

fn jwt(secret: &[u8], iss: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = json!({"iss": iss, "iat": now, "exp": now + exp_offset});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn jwt_is_required_when_a_secret_is_configured() {
    let sock = socket_path("jwt");
    let api = StubApi::start(
        fixture(),
        StartOptions {
            secret: Some(b"  s3cret\n".to_vec()),
            unix_socket: Some(sock.clone()),
            tcp: true,
        },
    )
    .unwrap();
    for t in [Target::tcp(&api), Target::Unix(sock.clone())] {
        let path = "/api/v4/internal/check";
        let no_header = get(&t, path);
        assert_eq!(no_header.status, 401);
        assert_eq!(no_header.text(), r#"{"message":"401 Unauthorized"}"#);
        assert_eq!(no_header.header("content-type"), Some("application/json"));

        let good = jwt(b"s3cret", "gitlab-shell", 60);
        let resp = try_request(
            &t,
            "GET",
            path,
            None,
            &[("Gitlab-Shell-Api-Request", &good)],
        )
        .unwrap();
        assert_eq!(resp.status, 200);

        for (desc, token) in [
            ("untrimmed secret", jwt(b"  s3cret\n", "gitlab-shell", 60)),
            ("wrong secret", jwt(b"other", "gitlab-shell", 60)),
            ("wrong issuer", jwt(b"s3cret", "someone", 60)),
            ("expired", jwt(b"s3cret", "gitlab-shell", -3600)),
            ("garbage", "not.a.jwt".to_owned()),
        ] {
            let resp = try_request(
                &t,
                "GET",
                path,
                None,
                &[("Gitlab-Shell-Api-Request", &token)],
            )
            .unwrap();
            assert_eq!(resp.status, 401, "{desc}");
        }
    }
    // Rejected requests are recorded too.
    assert!(
        api.requests()
            .iter()
            .any(|r| r.header("gitlab-shell-api-request").is_none())
    );
}

#[test]
fn an_empty_secret_is_a_valid_hmac_key() {
    let api = StubApi::start(
        fixture(),
        StartOptions {
            secret: Some(Vec::new()),
            ..StartOptions::default()
        },
    )
    .unwrap();
    let t = Target::tcp(&api);
    let token = jwt(b"", "gitlab-shell", 60);
    let resp = try_request(
        &t,
        "GET",
        "/api/v4/internal/check",
        None,
        &[("Gitlab-Shell-Api-Request", &token)],
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(get(&t, "/api/v4/internal/check").status, 401);
}

// ---------------------------------------------------------------- faults

#[test]
fn status_body_and_response_faults() {
    let (api, t) = start();
    api.set_fault(
        "/allowed",
        Fault::Status(500, r#"{"message":"boom"}"#.to_owned()),
    );
    api.set_fault(
        "/api/v4/internal/discover",
        Fault::Body(b"{not json".to_vec()),
    );
    api.set_fault(
        "/check",
        Fault::Response {
            status: 429,
            headers: vec![("Retry-After".to_owned(), "1".to_owned())],
            body: Vec::new(),
        },
    );
    let resp = allowed(
        &t,
        json!({"action": "git-upload-pack", "project": "group/private", "key_id": "10"}),
    );
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (500, r#"{"message":"boom"}"#)
    );
    let resp = get(&t, "/api/v4/internal/discover?key_id=10");
    assert_eq!((resp.status, resp.text().as_str()), (200, "{not json"));
    let resp = get(&t, "/api/v4/internal/check");
    assert_eq!(resp.status, 429);
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(resp.body.is_empty());
    // Faulted requests are recorded (retry tests count them).
    assert_eq!(api.requests_to("/allowed").len(), 1);
    api.clear_faults();
    assert_eq!(get(&t, "/api/v4/internal/check").status, 200);
}

#[test]
fn a_fault_can_apply_a_limited_number_of_times() {
    let (api, t) = start();
    api.set_fault_times("/check", Fault::Status(502, String::new()), 2);
    let statuses: Vec<u16> = (0..3)
        .map(|_| get(&t, "/api/v4/internal/check").status)
        .collect();
    assert_eq!(statuses, [502, 502, 200]);
}

#[test]
fn delay_fault_then_normal_answer() {
    let (api, t) = start();
    api.set_fault_times("/check", Fault::Delay(Duration::from_millis(300)), 1);
    let started = Instant::now();
    let resp = get(&t, "/api/v4/internal/check");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(resp.status, 200);
    let started = Instant::now();
    get(&t, "/api/v4/internal/check");
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[test]
fn delayed_requests_are_recorded_on_arrival() {
    let (api, t) = start();
    api.set_fault("/allowed", Fault::Delay(Duration::from_secs(30)));
    let Target::Tcp(addr) = &t else {
        unreachable!()
    };
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"POST /api/v4/internal/allowed HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    let found = api.wait_for_requests("/allowed", 1, Duration::from_secs(5));
    assert_eq!(found.len(), 1, "recorded while the answer is still delayed");
    drop(s);
}

#[test]
fn delay_fault_followed_by_status_fault() {
    let (api, t) = start();
    api.set_fault("/check", Fault::Delay(Duration::from_millis(200)));
    api.set_fault("/check", Fault::Status(503, "{}".to_owned()));
    let started = Instant::now();
    assert_eq!(get(&t, "/api/v4/internal/check").status, 503);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[test]
fn close_connection_fault_sends_no_response() {
    let (api, t) = start();
    api.set_fault("/allowed", Fault::CloseConnection);
    let result = try_request(
        &t,
        "POST",
        "/api/v4/internal/allowed",
        Some(&json!({})),
        &[],
    );
    assert!(result.is_err(), "{result:?}");
    assert_eq!(api.requests_to("/allowed").len(), 1);
    // Other endpoints are unaffected.
    assert_eq!(get(&t, "/api/v4/internal/check").status, 200);
}

// ---------------------------------------------------------------- lifecycle and CLI

#[test]
fn dropping_the_handle_stops_the_server() {
    // Tests run in parallel and bind ephemeral ports: another test may take the freed port at
    // once, so one refused connection in three tries proves the server stopped.
    let stopped = (0..3).any(|_| {
        let (api, _t) = start();
        let addr = api.tcp_addr().unwrap();
        drop(api);
        TcpStream::connect(addr).is_err()
    });
    assert!(
        stopped,
        "the port still accepted connections after the handle was dropped"
    );
}

#[test]
fn options_without_any_listener_are_an_error() {
    let err = StubApi::start(
        fixture(),
        StartOptions {
            secret: None,
            unix_socket: None,
            tcp: false,
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("needs a TCP listener or a unix socket"),
        "{err}"
    );
}

fn demo_fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/demo.yml")
}

#[test]
fn cli_prints_urls_serves_and_stops_on_sigterm() {
    let sock = socket_path("cli");
    let dir = tempdir();
    let secret = dir.join("secret");
    std::fs::write(&secret, "clisecret\n").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stub-api"))
        .arg("--fixture")
        .arg(demo_fixture_path())
        .args(["--listen", "127.0.0.1:0", "--unix"])
        .arg(&sock)
        .arg("--secret-file")
        .arg(&secret)
        .args([
            "--gitaly-address",
            "unix:/tmp/cli-gitaly.sock",
            "--gitaly-token",
            "clitok",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let urls: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(urls.len(), 2, "{line}");
    assert!(urls[0].starts_with("http://127.0.0.1:"), "{line}");
    assert_eq!(urls[1], stub_api::gitlab_url_for_socket(&sock));

    let tcp = Target::Tcp(urls[0].trim_start_matches("http://").to_owned());
    let token = jwt(b"clisecret", "gitlab-shell", 60);
    let body = json!({"action": "git-upload-pack", "project": "demo/hello", "key_id": "1"});
    for t in [tcp.clone(), Target::Unix(sock.clone())] {
        let resp = try_request(
            &t,
            "POST",
            "/api/v4/internal/allowed",
            Some(&body),
            &[("Gitlab-Shell-Api-Request", &token)],
        )
        .unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.json()["gitaly"]["address"],
            "unix:/tmp/cli-gitaly.sock"
        );
        assert_eq!(resp.json()["gitaly"]["token"], "clitok");
        assert_eq!(
            try_request(&t, "POST", "/api/v4/internal/allowed", Some(&body), &[])
                .unwrap()
                .status,
            401
        );
    }
    let wrong = jwt(b"not-the-secret", "gitlab-shell", 60);
    let resp = try_request(
        &tcp,
        "GET",
        "/api/v4/internal/authorized_keys?key=AAAAsecretish",
        None,
        &[("Gitlab-Shell-Api-Request", &wrong)],
    )
    .unwrap();
    assert_eq!(resp.status, 401);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(!sock.exists());
    // One line per request on stderr (docs/trial.md), without the query string.
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(
        log,
        "stub-api: POST /api/v4/internal/allowed 200 jwt=ok\n\
         stub-api: POST /api/v4/internal/allowed 401 jwt=missing\n\
         stub-api: POST /api/v4/internal/allowed 200 jwt=ok\n\
         stub-api: POST /api/v4/internal/allowed 401 jwt=missing\n\
         stub-api: GET /api/v4/internal/authorized_keys 401 jwt=invalid\n"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn cli_reports_a_bad_fixture() {
    let dir = tempdir();
    let bad = dir.join("bad.yml");
    std::fs::write(&bad, "users: 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stub-api"))
        .arg("--fixture")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("stub-api: "), "{stderr}");
    assert!(stderr.contains("bad.yml"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn tempdir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("stub-api-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
