//! Raw gRPC tests with tonic's generated client over plain HTTP/2 (no backchannel): validation,
//! token checks, receive-pack protocol edge cases, and killing git when the client vanishes.

use std::time::{Duration, Instant};

use dev_gitaly::auth;
use gitaly_proto::ssh_service_client::SshServiceClient;
use gitaly_proto::{
    Repository, SshReceivePackRequest, SshReceivePackResponse, SshUploadArchiveRequest,
    SshUploadPackWithSidechannelRequest,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use crate::support::{Fixture, processes_mentioning, repository};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn client(address: &str) -> SshServiceClient<Channel> {
    let url = address.replace("tcp://", "http://");
    SshServiceClient::connect(url).await.unwrap()
}

/// Everything a streaming receive-pack call produced.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_statuses: Vec<i32>,
    status: Option<Status>,
}

async fn receive_pack(
    c: &mut SshServiceClient<Channel>,
    first: SshReceivePackRequest,
    stdin: &[&[u8]],
) -> Collected {
    let mut msgs = vec![first];
    for s in stdin {
        msgs.push(SshReceivePackRequest {
            stdin: s.to_vec(),
            ..Default::default()
        });
    }
    let mut out = Collected::default();
    match c.ssh_receive_pack(tokio_stream::iter(msgs)).await {
        Err(s) => out.status = Some(s),
        Ok(resp) => {
            let mut stream = resp.into_inner();
            while let Some(m) = stream.next().await {
                match m {
                    Ok(SshReceivePackResponse {
                        stdout,
                        stderr,
                        exit_status,
                    }) => {
                        out.stdout.extend(stdout);
                        out.stderr.extend(stderr);
                        if let Some(e) = exit_status {
                            out.exit_statuses.push(e.value);
                        }
                    }
                    Err(s) => {
                        out.status = Some(s);
                        break;
                    }
                }
            }
        }
    }
    out
}

fn rp_first(repo: Option<Repository>, gl_id: &str) -> SshReceivePackRequest {
    SshReceivePackRequest {
        repository: repo,
        gl_id: gl_id.into(),
        gl_repository: "project-1".into(),
        gl_username: "root".into(),
        ..Default::default()
    }
}

fn code_msg(s: &Option<Status>) -> (Code, String) {
    let s = s.as_ref().expect("expected an error status");
    (s.code(), s.message().to_owned())
}

#[test]
fn receive_pack_validation_errors() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    rt().block_on(async {
        let mut c = client(&g.address()).await;
        let mut no_path = repository();
        no_path.relative_path.clear();
        let mut bad_storage = repository();
        bad_storage.storage_name = "fake".into();
        let mut missing = repository();
        missing.relative_path = "nope.git".into();
        let cases = [
            (
                rp_first(Some(repository()), ""),
                Code::InvalidArgument,
                "empty GlId",
            ),
            (
                rp_first(None, "user-1"),
                Code::InvalidArgument,
                "repository not set",
            ),
            (
                rp_first(Some(no_path), "user-1"),
                Code::InvalidArgument,
                "repository path not set",
            ),
            (
                rp_first(Some(bad_storage), "user-1"),
                Code::InvalidArgument,
                "storage name not found",
            ),
            (
                rp_first(Some(missing), "user-1"),
                Code::NotFound,
                "repository not found",
            ),
            (
                SshReceivePackRequest {
                    stdin: b"0000".to_vec(),
                    ..rp_first(Some(repository()), "user-1")
                },
                Code::InvalidArgument,
                "non-empty data in first request",
            ),
        ];
        for (first, code, msg) in cases {
            let out = receive_pack(&mut c, first, &[]).await;
            assert_eq!(code_msg(&out.status), (code, msg.to_owned()));
            assert!(out.stdout.is_empty());
        }
    });
}

#[test]
fn upload_archive_and_sidechannel_validation_errors() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    rt().block_on(async {
        let mut c = client(&g.address()).await;
        let first = SshUploadArchiveRequest {
            repository: Some(repository()),
            stdin: b"0000".to_vec(),
        };
        let e = c
            .ssh_upload_archive(tokio_stream::iter(vec![first]))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "non-empty stdin in first request")
        );
        let first = SshUploadArchiveRequest {
            repository: None,
            stdin: Vec::new(),
        };
        let e = c
            .ssh_upload_archive(tokio_stream::iter(vec![first]))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "repository not set")
        );

        // Validation comes before the sidechannel, so a plain connection sees it too.
        let mut bad = repository();
        bad.storage_name = "fake".into();
        let e = c
            .ssh_upload_pack_with_sidechannel(SshUploadPackWithSidechannelRequest {
                repository: Some(bad),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::InvalidArgument, "storage name not found")
        );
        // A valid request on a non-multiplexed connection cannot get a sidechannel.
        let mut req = Request::new(SshUploadPackWithSidechannelRequest {
            repository: Some(repository()),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("gitaly-sidechannel-id", "1".parse().unwrap());
        let e = c.ssh_upload_pack_with_sidechannel(req).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
    });
}

/// See: gitaly.md §3.1 — ±30 s window, exact denial texts.
#[test]
fn token_is_enforced_with_a_30_second_window() {
    let f = Fixture::new();
    let g = f.start(|o| o.token = Some("the-token".into()));
    rt().block_on(async {
        let mut c = client(&g.address()).await;
        let call = |header: Option<String>| {
            let mut c = c.clone();
            async move {
                // No repository: a request that passes auth fails validation instead.
                let mut req =
                    Request::new(tokio_stream::iter(vec![SshUploadArchiveRequest::default()]));
                if let Some(h) = header {
                    req.metadata_mut()
                        .insert("authorization", h.parse().unwrap());
                }
                c.ssh_upload_archive(req).await.unwrap_err()
            }
        };
        let now = auth::now();
        for d in [-29, 0, 29] {
            let e = call(Some(auth::v2_header("the-token", now + d))).await;
            assert_eq!(
                (e.code(), e.message()),
                (Code::InvalidArgument, "repository not set"),
                "offset {d}"
            );
        }
        let e = call(Some(auth::v2_header("the-token", now - 31))).await;
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, "permission denied")
        );
        let e = call(Some(auth::v2_header("the-token", now + 31))).await;
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, "permission denied")
        );
        let e = call(Some(auth::v2_header("wrong", now))).await;
        assert_eq!(
            (e.code(), e.message()),
            (Code::PermissionDenied, "permission denied")
        );
        let e = call(None).await;
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "authentication required")
        );
        // Receive-pack is guarded too.
        let out = receive_pack(&mut c, rp_first(Some(repository()), "user-1"), &[]).await;
        assert_eq!(code_msg(&out.status).0, Code::Unauthenticated);
    });
}

fn pkt(s: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", s.len() + 4).into_bytes();
    v.extend_from_slice(s.as_bytes());
    v
}

/// See: Gitaly receive_pack_test.go "raw protocol client" cases.
#[test]
fn receive_pack_raw_protocol_cases() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    rt().block_on(async {
        let mut c = client(&g.address()).await;
        // Just a flush: OK, advertisement on stdout, no exit status.
        let out = receive_pack(&mut c, rp_first(Some(repository()), "user-1"), &[b"0000"]).await;
        assert!(out.status.is_none(), "{out:?}");
        assert!(out.exit_statuses.is_empty());
        assert!(String::from_utf8_lossy(&out.stdout).contains("refs/heads/main"));

        // Garbage: git fails, one exit status, Internal.
        let mut garbage = pkt("garbage");
        garbage.extend_from_slice(b"0000");
        let out = receive_pack(&mut c, rp_first(Some(repository()), "user-1"), &[&garbage]).await;
        assert_eq!(
            code_msg(&out.status),
            (Code::Internal, "cmd wait: exit status 128".into())
        );
        assert_eq!(out.exit_statuses, vec![128]);
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("fatal: protocol error: expected old/new/ref, got 'garbage'"),
            "{out:?}"
        );

        // A command without its flush, then EOF: the push was cancelled by the user.
        let cmd = pkt(&format!(
            "{} {} refs/heads/other\0 report-status",
            "0".repeat(40),
            f.head
        ));
        let out = receive_pack(&mut c, rp_first(Some(repository()), "user-1"), &[&cmd]).await;
        assert_eq!(
            code_msg(&out.status),
            (Code::Cancelled, "user canceled the push".into())
        );
        assert_eq!(out.exit_statuses, vec![128]);
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "fatal: the remote end hung up unexpectedly\n"
        );
        assert_eq!(f.remote_rev("refs/heads/other"), None);
    });
}

/// A client that disappears mid-push must not leave git running or refs changed.
#[test]
fn client_disconnect_mid_push_kills_git_and_keeps_refs() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let repo_path = f.repo_path().canonicalize().unwrap();
    let needle = repo_path.display().to_string();
    let runtime = rt();
    runtime.block_on(async {
        let mut c = client(&g.address()).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(rp_first(Some(repository()), "user-1"))
            .await
            .unwrap();
        let resp = c
            .ssh_receive_pack(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        let mut stream = resp.into_inner();
        // Wait for the ref advertisement: git is running.
        let first = stream.next().await.unwrap().unwrap();
        assert!(!first.stdout.is_empty());
        let mut stdin = pkt(&format!(
            "{} {} refs/heads/main\0 report-status",
            f.head,
            "1".repeat(40)
        ));
        stdin.extend_from_slice(b"0000PACK\0\0\0\x02\0\0\0\x05partial");
        tx.send(SshReceivePackRequest {
            stdin,
            ..Default::default()
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !processes_mentioning(&needle).is_empty(),
            "git should be running"
        );
        // Keep the sender and stream alive: only the connection going away ends the call.
        std::mem::forget(tx);
        std::mem::forget(stream);
    });
    // Dropping the runtime closes the TCP connection abruptly.
    drop(runtime);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "git still running: {:?}",
            processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(f.remote_rev("refs/heads/main"), Some(f.head.clone()));
    // (git's quarantine folder may remain after SIGKILL, as with Gitaly; housekeeping's job.)
}

#[test]
fn dropping_the_server_kills_running_git() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let needle = f.repo_path().canonicalize().unwrap().display().to_string();
    let runtime = rt();
    runtime.block_on(async {
        let mut c = client(&g.address()).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(rp_first(Some(repository()), "user-1"))
            .await
            .unwrap();
        let resp = c
            .ssh_receive_pack(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        let mut stream = resp.into_inner();
        let _ = stream.next().await.unwrap().unwrap();
        assert!(!processes_mentioning(&needle).is_empty());
        std::mem::forget(tx);
        std::mem::forget(stream);
    });
    drop(g);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(&needle).is_empty() {
        assert!(Instant::now() < deadline, "git survived the server");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(runtime);
}

/// See: Gitaly upload_archive_test.go negotiation timeout.
#[test]
fn upload_archive_negotiation_timeout() {
    let f = Fixture::new();
    let g = f.start(|o| o.upload_archive_negotiation_timeout = Duration::from_millis(300));
    rt().block_on(async {
        let mut c = client(&g.address()).await;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(SshUploadArchiveRequest {
            repository: Some(repository()),
            stdin: Vec::new(),
        })
        .await
        .unwrap();
        let resp = c
            .ssh_upload_archive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap();
        let mut stream = resp.into_inner();
        let mut exit = Vec::new();
        let status = loop {
            match stream.next().await {
                Some(Ok(m)) => exit.extend(m.exit_status.map(|e| e.value)),
                Some(Err(s)) => break s,
                None => panic!("stream ended without an error"),
            }
        };
        assert_eq!(
            (status.code(), status.message()),
            (
                Code::DeadlineExceeded,
                "running upload-archive: waiting for negotiation: context canceled"
            )
        );
        assert_eq!(exit.len(), 1);
        assert_ne!(exit[0], 0);
        drop(tx);
    });
}
