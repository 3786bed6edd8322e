//! The internal-API client against hostile or odd HTTP peers (issue 16): redirects are refused
//! and no credential reaches the host a redirect names; a body that stalls after the headers is
//! read once and is `parsing failed`; GitLab's `null`s and non-object bodies decode as Go's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Client, Error, allowed, authorized_keys, discover, personal_access_token};
use crate::config::Config;

/// One request as text (the reader is shared with `http1`'s tests).
fn read_request(s: &mut impl Read) -> String {
    String::from_utf8_lossy(&super::http1::tests::read_request(s)).into_owned()
}

/// A server on 127.0.0.1 answering every connection with `answer(port)`; the requests it saw
/// arrive on the returned channel.
fn serve(answer: impl Fn(u16) -> Vec<u8> + Send + 'static) -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            let seen = read_request(&mut s);
            let _ = s.write_all(&answer(port));
            let _ = s.flush();
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

fn client(port: u16, extra: &str) -> Client {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!("secret: s\ngitlab_url: http://127.0.0.1:{port}\n{extra}");
    let config = Config::from_yaml(dir.path(), yaml.as_bytes()).unwrap();
    Client::new(&config, "cid")
        .unwrap()
        .with_retry_waits([Duration::from_millis(10); 2])
}

fn json_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn redirects_are_refused_and_no_credential_reaches_the_other_host() {
    // The other host: `localhost` is not `127.0.0.1` for Go's redirect rules, and it is where
    // a followed redirect would carry `Authorization`.
    let (other, other_seen) = serve(|_| json_answer(r#"{"id":1,"key":"ssh-ed25519 AAAA"}"#));
    for status in [301u16, 302, 303, 307, 308] {
        let location = format!("http://localhost:{other}/api/v4/internal/discover?key_id=1");
        let redirect = location.clone();
        let (port, seen) = serve(move |_| {
            format!("HTTP/1.1 {status} Moved\r\nLocation: {redirect}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes()
        });
        let c = client(
            port,
            "http_settings:\n  user: apiuser\n  password: hunter2\n",
        );
        let err =
            discover::get_by_identity(&c, &crate::args::Identity::KeyId("1".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Internal API returned redirect ({status}) to \"{location}\"")
        );
        let first = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(first.contains("Authorization: Basic "), "{first}");
        assert!(
            seen.recv_timeout(Duration::from_millis(200)).is_err(),
            "a redirect is not retried"
        );
    }
    // Nothing at all went to the other host, so no credential either.
    assert!(other_seen.recv_timeout(Duration::from_millis(300)).is_err());
}

#[test]
fn status_300_is_still_an_answer() {
    let (port, _seen) = serve(|_| {
        let body = r#"{"status":true,"payload":{"action":"geo_proxy_to_primary"}}"#;
        format!(
            "HTTP/1.1 300 Multiple Choices\r\nLocation: /x\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    let c = client(port, "");
    let reply = c
        .post::<_, allowed::Response>("/allowed", &serde_json::json!({}))
        .unwrap();
    assert_eq!(reply.status, 300);
    assert_eq!(reply.body.payload.action, "geo_proxy_to_primary");
}

#[test]
fn a_stalled_body_is_read_once_and_is_parsing_failed() {
    // Headers at once, then a body that never comes while the connection stays open.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { return };
            read_request(&mut s);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"id\":");
            let _ = tx.send(());
            // Hold the connection open without sending the rest.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(10));
                drop(s);
            });
        }
    });
    let c = client(port, "http_settings:\n  read_timeout: 1\n");
    let started = Instant::now();
    let err = authorized_keys::get_by_key(&c, "AAAA").unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, Error::Parse);
    assert_eq!(err.to_string(), "parsing failed");
    assert!(rx.recv_timeout(Duration::from_secs(1)).is_ok());
    assert!(
        rx.recv_timeout(Duration::from_millis(300)).is_err(),
        "the request was retried"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
}

#[test]
fn allowed_with_every_field_null_decodes_to_zero_values() {
    let body = r#"{"status":true,"message":null,"gl_repository":null,"gl_project_path":null,
        "gl_id":null,"gl_key_type":null,"gl_key_id":null,"gl_project_id":null,
        "gl_root_namespace_id":null,"gl_username":null,"git_config_options":null,
        "gitaly":{"repository":{"storage_name":"default","relative_path":"x.git",
        "git_object_directory":null,"git_alternate_object_directories":null,
        "gl_repository":null,"gl_project_path":null},"address":"unix:/g.sock","token":null,
        "features":null},"git_protocol":null,"payload":null,"gl_console_messages":null,
        "need_audit":null}"#;
    let body = body.replace('\n', "");
    let (port, _seen) = serve(move |_| json_answer(&body));
    let reply = client(port, "")
        .post::<_, allowed::Response>("/allowed", &serde_json::json!({}))
        .unwrap();
    let r = reply.body;
    assert!(r.status);
    assert_eq!(
        (r.gl_key_id, r.gl_project_id, r.gl_root_namespace_id),
        (0, 0, 0)
    );
    assert_eq!(r.gitaly.repository.relative_path, "x.git");
    assert_eq!(r.gitaly.address, "unix:/g.sock");
    assert!(r.gitaly.token.is_empty() && r.gl_console_messages.is_empty());
}

#[test]
fn pat_discover_and_recovery_code_nulls() {
    let (port, _seen) = serve(|_| {
        json_answer(
            r#"{"success":true,"token":"glpat-x","scopes":["api"],"expires_at":null,"message":null}"#,
        )
    });
    let request = personal_access_token::Request {
        user: super::discover::UserRef {
            key_id: "1".into(),
            user_id: 0,
        },
        name: "n".into(),
        scopes: Some(vec!["api".into()]),
        expires_at: String::new(),
    };
    let r = personal_access_token::create(&client(port, ""), &request).unwrap();
    assert_eq!((r.token.as_str(), r.expires_at), ("glpat-x", None));

    let (port, _seen) = serve(|_| json_answer(r#"{"id":1,"name":null,"username":"alice"}"#));
    let who =
        discover::get_by_identity(&client(port, ""), &crate::args::Identity::KeyId("1".into()))
            .unwrap();
    assert_eq!(
        (who.id, who.name.as_str(), who.username.as_str()),
        (1, "", "alice")
    );

    let (port, _seen) =
        serve(|_| json_answer(r#"{"success":true,"recovery_codes":["a","b"],"message":null}"#));
    let codes = super::two_factor_recovery_codes::generate(
        &client(port, ""),
        &super::discover::UserRef {
            key_id: "1".into(),
            user_id: 0,
        },
    )
    .unwrap();
    assert_eq!(codes, ["a", "b"]);
}

#[test]
fn an_array_body_is_no_key() {
    let (port, _seen) = serve(|_| json_answer(r#"[7,"ssh-ed25519 AAAA"]"#));
    assert_eq!(
        authorized_keys::get_by_key(&client(port, ""), "AAAA"),
        Err(Error::Parse)
    );
}
