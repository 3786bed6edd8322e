//! Geo custom action (behaviour §6.2, GitLab Shell 14.56.1): `/allowed` answers 300 and
//! `gitlab-shell` relays the git conversation straight to the primary's repository instead of
//! Gitaly, over smart HTTP or the primary's SSH-over-HTTP endpoints. The stub API plays both the
//! secondary's `/allowed` and a canned primary under `/primary/`, and records what it received.
//! The API-endpoints flow of v14.45.0 is gone: `api_endpoints` in the payload is ignored.

use serde_json::json;
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
"#;

fn sandbox(name: &str) -> Sandbox {
    let mut builder = Sandbox::builder(name).fixture_yaml(FIXTURE).gitaly(false);
    let _alice = builder.client_key("alice", 1, Some("alice"));
    builder.build()
}

fn pkt(payload: &str) -> String {
    format!("{:04x}{payload}", payload.len() + 4)
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
        // The v14.45.0 switches and endpoints no longer matter: a 300 always goes direct.
        json!({
            "api_endpoints": ["/api/v4/geo/proxy_git_ssh/info_refs_receive_pack"],
            "geo_proxy_direct_to_primary": false,
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
    assert!(s.api().requests_to("proxy_git_ssh").is_empty());
}

#[test]
fn direct_fetch_over_smart_http_ends_the_request_at_done() {
    let s = direct_sandbox("geo-direct-fetch", "group/geo.git", json!({}));
    let want = pkt(&format!("want {} side-band-64k\n", "c".repeat(40)));
    let stdin = format!(
        "{want}0000{}0009done\n{}",
        pkt("have x\n"),
        pkt("after done\n")
    );
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
    assert_eq!(
        fetch[0].body,
        json!(format!("{want}0000{}0009done\n", pkt("have x\n")))
    );
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
fn ssh_fetch_closes_the_body_after_done_with_a_flush() {
    // GitLab Shell 14.57.2: the body ends once the negotiation is over, so the primary's
    // request-body timeout cannot cut a long transfer; protocol v2 needs the added flush.
    let s = direct_sandbox(
        "geo-direct-ssh-done",
        "group/geo.git",
        json!({ "geo_proxy_fetch_ssh_direct_to_primary": true }),
    );
    let negotiation = format!(
        "{}{}0001{}0009done\n",
        pkt("command=fetch\n"),
        pkt("agent=git/2\n"),
        pkt(&format!("want {}\n", "d".repeat(40)))
    );
    let stdin = format!("{negotiation}0000{}", pkt("never sent\n"));
    s.shell(&["key-1"], Some("git-upload-pack group/geo"))
        .env("GIT_PROTOCOL", "version=2")
        .stdin(stdin.as_bytes())
        .run()
        .assert_success()
        .assert_stdout("<ssh-upload-pack result>");
    let calls = s
        .api()
        .requests_to("/primary/group/geo.git/ssh-upload-pack");
    assert_eq!(calls[0].body, json!(format!("{negotiation}0000")));
}

#[test]
fn direct_push_over_ssh_http() {
    let s = direct_sandbox(
        "geo-direct-ssh-push",
        "group/geo.git",
        json!({ "geo_proxy_push_ssh_direct_to_primary": true }),
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
        let s = direct_sandbox(&format!("geo-direct-error-{i}"), primary, json!({}));
        run(&s, "key-1", "git-upload-pack group/geo", b"0000")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(format!("{}{}", info_block(GEO_MESSAGE), framed(message)));
    }
}
