//! `gitlab-shell-check` (behaviour §1.5): the operator's health check, exact lines and exit
//! codes, over `http://` and `http+unix://`.

use test_support::Sandbox;
use test_support::sandbox::ApiTransport;
use test_support::stub_api::Fault;

const BIN: &str = "gitlab-shell-check";

fn sandbox(transport: ApiTransport, fixture: &str) -> Sandbox {
    Sandbox::builder("check")
        .fixture_yaml(fixture)
        .api_transport(transport)
        .gitaly(false)
        .build()
}

#[test]
fn ok_over_tcp_and_unix() {
    for transport in [ApiTransport::Tcp, ApiTransport::Unix] {
        let s = sandbox(transport, "");
        s.run(BIN, &["ignored", "args"], &[], b"")
            .assert_success()
            .assert_stdout("Internal API available: OK\nRedis available via internal API: OK\n")
            .assert_stderr("");
        let reqs = s.api().requests_to("/check");
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].path, "/api/v4/internal/check");
    }
}

#[test]
fn basic_auth_only_with_user_and_password() {
    let s = Sandbox::builder("check")
        .gitaly(false)
        .config_extra("http_settings:\n  user: u\n  password: p\n")
        .build();
    s.run(BIN, &[], &[], b"").assert_success();
    let reqs = s.api().requests_to("/check");
    assert_eq!(reqs[0].header("authorization"), Some("Basic dTpw"));
    assert_eq!(reqs[0].header("connection"), Some("close"));

    let s = Sandbox::builder("check")
        .gitaly(false)
        .config_extra("http_settings:\n  user: u\n")
        .build();
    s.run(BIN, &[], &[], b"").assert_success();
    assert_eq!(
        s.api().requests_to("/check")[0].header("authorization"),
        None
    );
}

#[test]
fn relative_url_root_applies_to_unix_sockets() {
    let s = Sandbox::builder("check")
        .gitaly(false)
        .api_transport(ApiTransport::Unix)
        .config_extra("gitlab_relative_url_root: /gitlab/\n")
        .build();
    s.run(BIN, &[], &[], b"").assert_success();
    let reqs = s.api().requests();
    assert_eq!(reqs[0].path, "/gitlab/api/v4/internal/check");
    assert_eq!(reqs[0].header("host"), Some("unix"));
}

#[test]
fn redis_down() {
    let s = sandbox(ApiTransport::Tcp, "check: { redis: false }\n");
    s.run(BIN, &[], &[], b"")
        .assert_code(1)
        .assert_stdout("Internal API available: OK\n")
        .assert_stderr("Redis available via internal API: FAILED\n");
}

#[test]
fn api_failures() {
    let s = sandbox(ApiTransport::Tcp, "");
    let cases = [
        (
            Fault::Status(403, r#"{"message":"Forbidden"}"#.into()),
            "Forbidden",
        ),
        (
            Fault::Status(404, String::new()),
            "Internal API error (404)",
        ),
        (Fault::Body(b"<html>".to_vec()), "parsing failed"),
    ];
    for (fault, text) in cases {
        s.api().clear_faults();
        s.api().set_fault("/check", fault);
        s.run(BIN, &[], &[], b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(format!("Internal API available: FAILED - {text}\n"));
    }
}

#[test]
fn persistent_500_is_unreachable_after_three_attempts() {
    let s = sandbox(ApiTransport::Tcp, "");
    s.api()
        .set_fault("/check", Fault::Status(500, r#"{"message":"boom"}"#.into()));
    s.run(BIN, &[], &[], b"")
        .assert_code(1)
        .assert_stderr("Internal API available: FAILED - Internal API unreachable\n");
    assert_eq!(s.api().requests_to("/check").len(), 3);
}

#[test]
fn retry_after_then_success() {
    let s = sandbox(ApiTransport::Tcp, "");
    let fault = Fault::Response {
        status: 429,
        headers: vec![("Retry-After".into(), "0".into())],
        body: Vec::new(),
    };
    s.api().set_fault_times("/check", fault, 2);
    let started = std::time::Instant::now();
    s.run(BIN, &[], &[], b"").assert_success();
    assert_eq!(s.api().requests_to("/check").len(), 3);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "Retry-After: 0 replaces the 1 s/2 s waits"
    );
}

#[test]
fn bad_gitlab_url_and_missing_cafile() {
    let s = sandbox(ApiTransport::Tcp, "");
    s.write_config("gitlab_url: \"ftp://example.com\"\n");
    s.run(BIN, &[], &[], b"").assert_code(1).assert_stderr(
        "Internal API available: FAILED - error creating http client: unknown GitLab URL prefix\n",
    );
    s.write_config(
        "gitlab_url: \"https://127.0.0.1:1\"\nhttp_settings:\n  ca_file: /nonexistent/ca.pem\n",
    );
    s.run(BIN, &[], &[], b"").assert_code(1).assert_stderr(
        "Internal API available: FAILED - error creating http client: cannot find cafile '/nonexistent/ca.pem': cafile not found\n",
    );
}

#[test]
fn startup_errors_carry_detail() {
    let s = sandbox(ApiTransport::Tcp, "");
    s.run(BIN, &[], &[("GITLAB_SHELL_DIR", "/nonexistent/gls")], b"")
        .assert_code(1)
        .assert_stderr("Failed to determine executable, exiting: stat /nonexistent/gls: no such file or directory\n");
    s.write_config("gitlab_url: [\n");
    let run = s.run(BIN, &[], &[], b"");
    run.assert_code(1).assert_stdout("");
    assert!(
        run.stderr_str()
            .starts_with("Failed to read config, exiting: yaml: "),
        "{}",
        run.stderr_str()
    );
}

#[test]
fn an_invalid_topology_service_stops_start_up_with_gitlab_shells_text() {
    // GitLab Shell 14.56.1 validates an enabled `topology_service` at config load (behaviour §2.3).
    let s = sandbox(ApiTransport::Tcp, "");
    s.write_config("topology_service:\n  enabled: true\n  address: localhost\n");
    s.run(BIN, &[], &[], b"")
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr("Failed to read config, exiting: invalid topology_service config: topology_service.address must be in host:port format\n");
    s.write_config("topology_service:\n  enabled: false\n  address: localhost\n");
    s.run(BIN, &[], &[], b"")
        .assert_stderr_lacks("topology_service");
}
