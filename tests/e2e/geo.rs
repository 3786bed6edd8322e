//! Geo custom action, v14.45.0 API-endpoints flow (behaviour §6.1): `/allowed` answers 300 and
//! `gitlab-shell` relays the git conversation through the endpoints in the payload instead of
//! Gitaly. The stub API plays both the secondary's `/allowed` and the primary's
//! `proxy_git_ssh` endpoints, and records what it received.

use serde_json::json;
use test_support::stub_api::Fault;
use test_support::{Run, Sandbox};

const GEO_MESSAGE: &str =
    "This request to a Geo secondary node will be forwarded to the Geo primary node";

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/geo
    id: 1
    members: { alice: admin }
    console_messages: ["This request to a Geo secondary node will be forwarded to the Geo primary node"]
    geo:
      actions: [git-receive-pack]
      payload:
        action: geo_proxy_to_primary
        data:
          api_endpoints:
            - /api/v4/geo/proxy_git_ssh/info_refs_receive_pack
            - /api/v4/geo/proxy_git_ssh/receive_pack
          gl_username: alice
          gl_id: user-1
          primary_repo: http://primary.example.com/group/geo.git
          request_headers: { Authorization: "Bearer primary-token" }
  - path: group/geo-pull
    id: 2
    members: { alice: admin }
    geo:
      actions: [git-upload-pack]
      payload:
        action: geo_proxy_to_primary
        data:
          api_endpoints:
            - /api/v4/geo/proxy_git_ssh/info_refs_upload_pack
            - /api/v4/geo/proxy_git_ssh/upload_pack
          gl_username: alice
          gl_id: user-1
          primary_repo: http://primary.example.com/group/geo-pull.git
  - path: group/geo-empty
    id: 3
    members: { alice: admin }
    geo:
      payload: { action: geo_proxy_to_primary, data: { api_endpoints: [] } }
geo_responses:
  info_refs_receive_pack: { result: "<refs for receive-pack>" }
  receive_pack: { result: "<report-status>" }
  info_refs_upload_pack: { result: "<refs for upload-pack>" }
  upload_pack: { result: "<packfile>" }
"#;

fn sandbox(name: &str) -> Sandbox {
    let mut builder = Sandbox::builder(name).fixture_yaml(FIXTURE).gitaly(false);
    let _alice = builder.client_key("alice", 1, Some("alice"));
    builder.build()
}

fn pkt(payload: &str) -> String {
    format!("{:04x}{payload}", payload.len() + 4)
}

/// Standard base64 with padding (what Go's `encoding/json` does to `[]byte`).
fn b64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn info_block(message: &str) -> String {
    format!("remote: \nremote: {message}\nremote: \n")
}

fn framed(message: &str) -> String {
    let ruler = "=".repeat(72);
    format!(
        "remote: \nremote: {ruler}\nremote: \nremote: {message}\nremote: \nremote: {ruler}\nremote: \n"
    )
}

fn run(s: &Sandbox, identity: &str, command: &str, stdin: &[u8]) -> Run {
    s.shell(&[identity], Some(command)).stdin(stdin).run()
}

fn data_for(project: &str, endpoints: [&str; 2], gl_id: Option<&str>) -> serde_json::Value {
    let mut data = json!({
        "api_endpoints": endpoints,
        "gl_username": "alice",
        "primary_repo": format!("http://primary.example.com/{project}.git"),
        "request_headers": null,
        "geo_proxy_direct_to_primary": false,
        "geo_proxy_fetch_direct_to_primary": false,
        "geo_proxy_fetch_direct_to_primary_with_options": false,
        "geo_proxy_fetch_ssh_direct_to_primary": false,
        "geo_proxy_push_ssh_direct_to_primary": false,
    });
    if let Some(id) = gl_id {
        data["gl_id"] = json!(id);
    }
    data
}

#[test]
fn base64_helper() {
    assert_eq!(b64(b"0000"), "MDAwMA==");
    assert_eq!(b64(b"ab"), "YWI=");
    assert_eq!(b64(b"abc"), "YWJj");
}

#[test]
fn push_through_the_primary_with_a_key() {
    let s = sandbox("geo-push-key");
    let command = pkt(&format!(
        "{} {} refs/heads/main\0report-status side-band-64k",
        "a".repeat(40),
        "b".repeat(40)
    ));
    let mut stdin = format!("{command}0000").into_bytes();
    stdin.extend_from_slice(b"PACK\x00\x00\x00\x02pack bytes \xff\xfe");
    let r = run(&s, "key-1", "git-receive-pack group/geo", &stdin);
    r.assert_success()
        .assert_stdout("<refs for receive-pack><report-status>")
        .assert_stderr(info_block(GEO_MESSAGE));

    let calls = s.api().requests_to("receive_pack");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (info, push) = (&calls[0], &calls[1]);
    assert_eq!(
        info.path,
        "/api/v4/geo/proxy_git_ssh/info_refs_receive_pack"
    );
    assert_eq!(push.path, "/api/v4/geo/proxy_git_ssh/receive_pack");
    let endpoints = [
        "/api/v4/geo/proxy_git_ssh/info_refs_receive_pack",
        "/api/v4/geo/proxy_git_ssh/receive_pack",
    ];
    let mut data = data_for("group/geo", endpoints, Some("key-1"));
    data["request_headers"] = json!({ "Authorization": "Bearer primary-token" });
    assert_eq!(
        info.body,
        json!({ "secret_token": null, "data": data, "output": null })
    );
    assert_eq!(
        push.body,
        json!({ "secret_token": null, "data": data, "output": b64(&stdin) })
    );
    for call in [info, push] {
        assert_eq!(call.method, "POST");
        assert_eq!(call.header("content-type"), Some("application/json"));
        assert_eq!(call.header("user-agent"), Some("GitLab-Shell"));
        assert!(call.header("gitlab-shell-api-request").is_some());
    }
}

#[test]
fn push_of_deletions_only_sends_no_pack() {
    let s = sandbox("geo-push-delete");
    let command = pkt(&format!(
        "{} {} refs/heads/gone\0report-status",
        "a".repeat(40),
        "0".repeat(40)
    ));
    let stdin = format!("{command}0000");
    run(&s, "key-1", "git-receive-pack group/geo", stdin.as_bytes()).assert_success();
    let push = s.api().requests_to("/proxy_git_ssh/receive_pack");
    assert_eq!(push[0].body["output"], json!(b64(stdin.as_bytes())));
}

#[test]
fn pull_through_the_primary_with_a_username() {
    let s = sandbox("geo-pull-username");
    let negotiation = format!(
        "{}{}0000{}",
        pkt(&format!(
            "want {} multi_ack side-band-64k\n",
            "c".repeat(40)
        )),
        pkt(&format!("want {}\n", "d".repeat(40))),
        pkt(&format!("have {}\n", "e".repeat(40))),
    );
    let sent = format!("{negotiation}0009done\n");
    // Bytes after `done` are not part of the request.
    let stdin = format!("{sent}0000");
    let r = run(
        &s,
        "username-alice",
        "git-upload-pack group/geo-pull",
        stdin.as_bytes(),
    );
    r.assert_success()
        .assert_stdout("<refs for upload-pack><packfile>")
        .assert_stderr("");
    let calls = s.api().requests_to("upload_pack");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let endpoints = [
        "/api/v4/geo/proxy_git_ssh/info_refs_upload_pack",
        "/api/v4/geo/proxy_git_ssh/upload_pack",
    ];
    // `who` for a username is /allowed's top-level gl_id, which a Geo 300 answer does not carry:
    // GitLab Shell then drops `gl_id` from the data (omitempty) even though the payload had one.
    let data = data_for("group/geo-pull", endpoints, None);
    assert_eq!(
        calls[0].body,
        json!({ "secret_token": null, "data": data, "output": null })
    );
    assert_eq!(
        calls[1].body,
        json!({ "secret_token": null, "data": data, "output": b64(sent.as_bytes()) })
    );
    let allowed = s.api().requests_to("/allowed");
    assert_eq!(allowed[0].body["username"], "alice");
    assert_eq!(allowed[0].body["action"], "git-upload-pack");
}

#[test]
fn primary_api_error_is_framed() {
    let s = sandbox("geo-api-error");
    s.api().set_fault(
        "/api/v4/geo/proxy_git_ssh/receive_pack",
        Fault::Status(403, String::new()),
    );
    let stdin = format!(
        "{}0000",
        pkt(&format!(
            "{} {} refs/heads/main\0",
            "a".repeat(40),
            "b".repeat(40)
        ))
    );
    let r = run(&s, "key-1", "git-receive-pack group/geo", stdin.as_bytes());
    r.assert_code(1)
        .assert_stdout("<refs for receive-pack>")
        .assert_stderr(format!(
            "{}{}",
            info_block(GEO_MESSAGE),
            framed("Internal API error (403)")
        ));
}

#[test]
fn empty_api_endpoints_is_an_error() {
    let s = sandbox("geo-empty");
    run(&s, "key-1", "git-upload-pack group/geo-empty", b"")
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed("custom action error: Empty API endpoints"));
}

// --- Direct-to-primary flow (behaviour §6.2) --------------------------------------------------

/// A sandbox whose `group/geo` answers 300 with `data` (for every action); `primary_repo` is
/// set to `<stub>/primary/<primary_path>`.
fn direct_sandbox(name: &str, primary_path: &str, mut data: serde_json::Value) -> Sandbox {
    let s = sandbox(name);
    let primary = if primary_path.starts_with("http") {
        primary_path.to_owned()
    } else {
        format!("{}/primary/{primary_path}", s.api().tcp_url())
    };
    data["primary_repo"] = json!(primary);
    s.api().update_fixture(|f| {
        let project = f.projects.iter_mut().find(|p| p.path == "group/geo");
        if let Some(p) = project {
            p.geo = Some(test_support::stub_api::fixture::GeoCustomAction {
                actions: Vec::new(),
                payload: json!({ "action": "geo_proxy_to_primary", "data": data }),
            });
        }
    });
    s
}

#[test]
fn direct_push_over_smart_http() {
    let s = direct_sandbox(
        "geo-direct-push",
        "group/geo.git",
        json!({
            "geo_proxy_direct_to_primary": true,
            "request_headers": { "Authorization": "Bearer primary-token" },
        }),
    );
    let command = pkt(&format!(
        "{} {} refs/heads/main\0report-status",
        "a".repeat(40),
        "b".repeat(40)
    ));
    let stdin = format!("{command}0000PACK-DATA");
    run(&s, "key-1", "git-receive-pack group/geo", stdin.as_bytes())
        .assert_success()
        .assert_stdout("<git-receive-pack refs><git-receive-pack result>")
        .assert_stderr(info_block(GEO_MESSAGE));
    let refs = s.api().requests_to("/primary/group/geo.git/info/refs");
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].method, "GET");
    assert_eq!(refs[0].query, "service=git-receive-pack");
    let push = s
        .api()
        .requests_to("/primary/group/geo.git/git-receive-pack");
    assert_eq!(push.len(), 1);
    assert_eq!(push[0].body, json!(stdin));
    for (req, content_type) in [
        (&refs[0], None),
        (&push[0], Some("application/x-git-receive-pack-request")),
    ] {
        assert_eq!(req.header("authorization"), Some("Bearer primary-token"));
        assert_eq!(req.header("user-agent"), Some("GitLab-Shell"));
        assert!(req.header("x-request-id").is_some());
        assert!(
            req.header("gitlab-shell-api-request").is_none(),
            "no JWT for the primary"
        );
        assert_eq!(req.header("content-type"), content_type);
    }
    assert_eq!(
        push[0].header("accept"),
        Some("application/x-git-receive-pack-result")
    );
    assert!(s.api().requests_to("proxy_git_ssh/receive_pack").is_empty());
}

#[test]
fn direct_fetch_over_smart_http_with_options() {
    let s = direct_sandbox(
        "geo-direct-fetch",
        "group/geo.git",
        json!({
            "geo_proxy_fetch_direct_to_primary": true,
            "geo_proxy_fetch_direct_to_primary_with_options": true,
        }),
    );
    let want = pkt(&format!("want {} side-band-64k\n", "c".repeat(40)));
    let stdin = format!("{want}0000{}", pkt("have x\n"));
    run(
        &s,
        "username-alice",
        "git-upload-pack group/geo",
        stdin.as_bytes(),
    )
    .assert_success()
    .assert_stdout("<git-upload-pack refs><git-upload-pack result>");
    let fetch = s
        .api()
        .requests_to("/primary/group/geo.git/git-upload-pack");
    assert_eq!(fetch[0].body, json!(format!("{want}00000009done\n")));
    assert_eq!(
        fetch[0].header("content-type"),
        Some("application/x-git-upload-pack-request")
    );
}

#[test]
fn direct_fetch_over_ssh_http_sends_git_protocol() {
    let s = direct_sandbox(
        "geo-direct-ssh",
        "group/geo.git",
        json!({
            "geo_proxy_fetch_direct_to_primary": true,
            "geo_proxy_fetch_ssh_direct_to_primary": true,
            "request_headers": { "Authorization": "Bearer t" },
        }),
    );
    let stdin = format!("{}0000", pkt("command=ls-refs\n"));
    s.shell(&["key-1"], Some("git-upload-pack group/geo"))
        .env("GIT_PROTOCOL", "version=2")
        .stdin(stdin.as_bytes())
        .run()
        .assert_success()
        .assert_stdout("<ssh-upload-pack result>");
    let calls = s
        .api()
        .requests_to("/primary/group/geo.git/ssh-upload-pack");
    assert_eq!(calls[0].body, json!(stdin));
    assert_eq!(calls[0].header("git-protocol"), Some("version=2"));
    assert_eq!(calls[0].header("authorization"), Some("Bearer t"));
    assert!(s.api().requests_to("/info/refs").is_empty());
}

#[test]
fn direct_push_over_ssh_http() {
    let s = direct_sandbox(
        "geo-direct-ssh-push",
        "group/geo.git",
        json!({ "geo_proxy_direct_to_primary": true, "geo_proxy_push_ssh_direct_to_primary": true }),
    );
    run(&s, "key-1", "git-receive-pack group/geo", b"0000")
        .assert_success()
        .assert_stdout("<ssh-receive-pack result>");
    let calls = s
        .api()
        .requests_to("/primary/group/geo.git/ssh-receive-pack");
    assert_eq!(calls[0].body, json!("0000"));
}

#[test]
fn direct_flow_errors_are_framed() {
    let cases = [
        ("fail-with-body/group/geo.git", "Primary says no"),
        (
            "fail-empty/group/geo.git",
            "Remote repository is unavailable",
        ),
        (
            "bad-prefix/group/geo.git",
            "unexpected git-upload-pack response",
        ),
        (
            "http://127.0.0.1:1/group/geo.git",
            "Remote repository is unavailable",
        ),
    ];
    for (i, (primary, message)) in cases.into_iter().enumerate() {
        let s = direct_sandbox(
            &format!("geo-direct-error-{i}"),
            primary,
            json!({ "geo_proxy_fetch_direct_to_primary": true }),
        );
        run(&s, "key-1", "git-upload-pack group/geo", b"0000")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(format!("{}{}", info_block(GEO_MESSAGE), framed(message)));
    }
}
