//! Sidechannel tests with a hand-written backchannel client (independent of `gitaly-client`):
//! golden bytes of the server's handshake and side-band framing, negotiation statistics, and
//! the error cases of Gitaly's upload_pack_test.go.

use std::time::Duration;

use futures::StreamExt;
use gitaly_proto::ssh_service_client::SshServiceClient;
use gitaly_proto::{PackfileNegotiationStatistics, SshUploadPackWithSidechannelRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_yamux::{Config, Session, StreamHandle};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::support::{Fixture, git, repository, run_ok};

/// A backchannel connection: the gRPC channel plus the streams the server opens.
struct Backchannel {
    channel: Channel,
    inbound: tokio::sync::mpsc::Receiver<StreamHandle>,
}

async fn dial(address: &str) -> Backchannel {
    let addr = address.strip_prefix("tcp://").unwrap().to_owned();
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(b"backchannel").await.unwrap();
    let mut session = Session::new_client(sock, Config::default());
    let mut control = session.control();
    let (in_tx, inbound) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(Ok(s)) = session.next().await {
            if in_tx.send(s).await.is_err() {
                break;
            }
        }
    });
    let grpc = control.open_stream().await.unwrap();
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(grpc)));
    let channel = Endpoint::from_static("http://dev-gitaly")
        .connect_with_connector(tower::service_fn(move |_| {
            let s = slot.lock().unwrap().take();
            async move {
                s.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("already used"))
            }
        }))
        .await
        .unwrap();
    Backchannel { channel, inbound }
}

/// How the client ends its side of the sidechannel.
enum End {
    /// The `0000` end-of-stdin frame (the normal case).
    Flush,
    /// Close the yamux stream without a flush.
    Close,
}

struct CallResult {
    handshake: Vec<u8>,
    wire: Vec<u8>,
    result: Result<PackfileNegotiationStatistics, Status>,
}

/// Calls `SSHUploadPackWithSidechannel` with sidechannel id 7 and sends `frames` verbatim.
async fn call(address: &str, protocol: &str, frames: &[u8], end: End) -> CallResult {
    let mut bc = dial(address).await;
    let mut client = SshServiceClient::new(bc.channel.clone());
    let mut req = Request::new(SshUploadPackWithSidechannelRequest {
        repository: Some(repository()),
        git_config_options: Vec::new(),
        git_protocol: protocol.into(),
    });
    // Gitaly takes the last value.
    req.metadata_mut()
        .append("gitaly-sidechannel-id", "3".parse().unwrap());
    req.metadata_mut()
        .append("gitaly-sidechannel-id", "7".parse().unwrap());
    let rpc = tokio::spawn(async move { client.ssh_upload_pack_with_sidechannel(req).await });
    let mut stream = tokio::time::timeout(Duration::from_secs(10), bc.inbound.recv())
        .await
        .unwrap()
        .unwrap();
    let mut handshake = vec![0u8; 19];
    stream.read_exact(&mut handshake).await.unwrap();
    stream.write_all(b"ok").await.unwrap();
    stream.write_all(frames).await.unwrap();
    match end {
        End::Flush => stream.write_all(b"0000").await.unwrap(),
        End::Close => stream.shutdown().await.unwrap(),
    }
    let mut wire = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut wire)).await;
    let result = rpc.await.unwrap().map(|r| {
        r.into_inner()
            .packfile_negotiation_statistics
            .unwrap_or_default()
    });
    CallResult {
        handshake,
        wire,
        result,
    }
}

/// Splits side-band-64k bytes into (band, payload) and checks each header.
fn demux(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let len = usize::from_str_radix(std::str::from_utf8(&wire[..4]).unwrap(), 16).unwrap();
        assert!((5..=65520).contains(&len), "bad packet length {len}");
        assert_eq!(
            &wire[..4],
            format!("{len:04x}").as_bytes(),
            "lowercase 4-digit hex"
        );
        let band = wire[4];
        assert!(band == 1 || band == 2, "band {band}");
        out.push((band, wire[5..len].to_vec()));
        wire = &wire[len..];
    }
    out
}

fn band(packets: &[(u8, Vec<u8>)], b: u8) -> Vec<u8> {
    packets
        .iter()
        .filter(|(x, _)| *x == b)
        .flat_map(|(_, d)| d.clone())
        .collect()
}

fn pkt(s: &str) -> Vec<u8> {
    let mut v = format!("{:04x}", s.len() + 4).into_bytes();
    v.extend_from_slice(s.as_bytes());
    v
}

/// Wraps raw bytes for git's stdin in one client data frame.
fn frame(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:04x}", data.len() + 4).into_bytes();
    v.extend_from_slice(data);
    v
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// See: gitaly.md §4.1 items 6 and 8 (golden bytes of the server side).
#[test]
fn handshake_and_band_framing_golden_bytes() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    // What git itself writes for the same request (advertisement, then the client's flush).
    let expected_adv = {
        use std::io::Write;
        let mut c = git(f.home());
        c.args([
            "-c",
            "uploadpack.allowFilter=true",
            "-c",
            "uploadpack.allowAnySHA1InWant=true",
            "upload-pack",
        ])
        .arg(f.repo_path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"0000").unwrap();
        child.wait_with_output().unwrap().stdout
    };
    rt().block_on(async {
        // v0: git advertises refs, the client says "no wants" (a flush pkt inside a data frame).
        let r = call(&g.address(), "", &frame(b"0000"), End::Flush).await;
        assert_eq!(r.handshake, b"sidechannel\0\0\0\0\0\0\0\x07");
        let packets = demux(&r.wire);
        assert_eq!(band(&packets, 1), expected_adv);
        assert!(band(&packets, 2).is_empty());
        let stats = r.result.unwrap();
        assert_eq!(stats.packets, 1);
        assert_eq!(stats.wants, 0);
    });
}

/// See: Gitaly upload_pack_test.go v0/v2 sidechannel cases.
#[test]
fn negotiation_statistics_v0_and_v2() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    rt().block_on(async {
        let mut v0 = pkt(&format!("want {} multi_ack\n", f.head));
        v0.extend_from_slice(b"0000");
        v0.extend(pkt("done\n"));
        let r = call(&g.address(), "", &frame(&v0), End::Flush).await;
        let stats = r.result.unwrap();
        assert_eq!((stats.packets, stats.wants), (2, 1));
        assert_eq!(stats.caps, vec!["multi_ack".to_owned()]);
        let packets = demux(&r.wire);
        let out = band(&packets, 1);
        assert!(out.windows(4).any(|w| w == b"PACK"), "a pack was sent");

        let mut v2 = pkt("command=fetch\n");
        v2.extend(pkt("agent=git/2.39.0\n"));
        v2.extend(pkt("object-format=sha1\n"));
        v2.extend_from_slice(b"0001");
        v2.extend(pkt(&format!("want {}\n", f.head)));
        v2.extend(pkt("done\n"));
        v2.extend_from_slice(b"0000");
        let r = call(&g.address(), "version=2", &frame(&v2), End::Flush).await;
        let stats = r.result.unwrap();
        assert_eq!((stats.packets, stats.wants), (5, 1));
        assert!(stats.caps.is_empty());
    });
}

#[test]
fn sidechannel_error_cases() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    rt().block_on(async {
        // Unknown oid: git fails after relaying its stderr; Internal with Go-quoted stderr.
        let missing = "1".repeat(40);
        let mut input = pkt(&format!("want {missing} multi_ack\n"));
        input.extend_from_slice(b"0000");
        input.extend(pkt("done\n"));
        let r = call(&g.address(), "", &frame(&input), End::Flush).await;
        let e = r.result.unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        let stderr = String::from_utf8_lossy(&band(&demux(&r.wire), 2)).into_owned();
        assert!(
            stderr.contains(&format!("not our ref {missing}")),
            "{stderr}"
        );
        assert!(
            e.message()
                .starts_with("running upload-pack: cmd wait: exit status 128, stderr: \""),
            "{}",
            e.message()
        );
        assert!(e.message().contains(&format!("not our ref {missing}")));

        // v2 garbage.
        let r = call(
            &g.address(),
            "version=2",
            &frame(&pkt("foobar")),
            End::Flush,
        )
        .await;
        assert_eq!(r.result.unwrap_err().code(), Code::Internal);
        let stderr = String::from_utf8_lossy(&band(&demux(&r.wire), 2)).into_owned();
        assert!(stderr.contains("unknown capability 'foobar'"), "{stderr}");

        // Short write then close: the user cancelled.
        let r = call(&g.address(), "version=2", b"0011agent", End::Close).await;
        let e = r.result.unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::Cancelled,
                "running upload-pack: user canceled the request"
            )
        );

        // No input at all with v2: OK, empty statistics.
        let r = call(&g.address(), "version=2", b"", End::Flush).await;
        assert_eq!(r.result.unwrap(), PackfileNegotiationStatistics::default());

        // Reserved frame lengths are refused.
        let r = call(&g.address(), "", b"0002", End::Flush).await;
        assert_eq!(r.result.unwrap_err().code(), Code::Internal);
    });
}

#[test]
fn negotiation_timeout_is_deadline_exceeded() {
    let f = Fixture::new();
    let g = f.start(|o| o.upload_pack_negotiation_timeout = Duration::from_millis(500));
    rt().block_on(async {
        let mut bc = dial(&g.address()).await;
        let mut client = SshServiceClient::new(bc.channel.clone());
        let mut req = Request::new(SshUploadPackWithSidechannelRequest {
            repository: Some(repository()),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("gitaly-sidechannel-id", "1".parse().unwrap());
        let rpc = tokio::spawn(async move { client.ssh_upload_pack_with_sidechannel(req).await });
        let mut stream = bc.inbound.recv().await.unwrap();
        let mut hs = [0u8; 19];
        stream.read_exact(&mut hs).await.unwrap();
        stream.write_all(b"ok").await.unwrap();
        // Say nothing.
        let e = rpc.await.unwrap().unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (
                Code::DeadlineExceeded,
                "running upload-pack: waiting for negotiation: context canceled"
            )
        );
        drop(stream);
    });
}

/// Real `git clone` through `gitaly-ssh` (the gitaly-client crate) with protocol v0 and v2,
/// plus a shallow and a partial clone.
#[test]
fn real_git_clone_v0_v2_shallow_partial() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    for (i, extra) in [
        vec!["-c", "protocol.version=0", "clone"],
        vec!["-c", "protocol.version=2", "clone"],
        vec!["clone", "--depth=1"],
        vec!["clone", "--filter=blob:limit=1024"],
    ]
    .into_iter()
    .enumerate()
    {
        let dest = f.home().join(format!("clone{i}"));
        let mut c = f.git_via(&g);
        c.args(&extra)
            .arg("ssh://gitaly/group/project.git")
            .arg(&dest);
        run_ok(c);
        let mut c = git(f.home());
        c.arg("-C").arg(&dest).args(["rev-parse", "HEAD"]);
        assert_eq!(run_ok(c), f.head, "{extra:?}");
        assert_eq!(
            std::fs::read_to_string(dest.join("README.md")).unwrap(),
            "hello\n"
        );
    }
}

/// `transfer.hideRefs` through `git_config_options` hides tags from a mirror clone.
#[test]
fn git_config_options_reach_upload_pack() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let dest = f.home().join("mirror");
    let mut c = f.git_via(&g);
    c.env("GITALY_CONFIG", "transfer.hideRefs=refs/tags")
        .args(["clone", "-q", "--mirror", "ssh://gitaly/group/project.git"])
        .arg(&dest);
    run_ok(c);
    let mut c = git(f.home());
    c.arg("-C").arg(&dest).args(["tag", "-l"]);
    assert_eq!(run_ok(c), "");
}

/// Tens of MiB of incompressible data through push (gRPC messages) and clone (sidechannel
/// frames, yamux and HTTP/2 flow control).
#[test]
fn large_push_and_clone() {
    let f = Fixture::new();
    let g = f.start(|_| {});
    let work = f.home().join("big-work");
    let mut c = git(f.home());
    c.args(["clone", "-q"]).arg(f.repo_path()).arg(&work);
    run_ok(c);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let data: Vec<u8> = (0..24 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    std::fs::write(work.join("random.bin"), &data).unwrap();
    let mut c = git(f.home());
    c.current_dir(&work).args(["add", "."]);
    run_ok(c);
    let mut c = git(f.home());
    c.current_dir(&work).args(["commit", "-q", "-m", "big"]);
    run_ok(c);
    let mut c = f.git_via(&g);
    c.current_dir(&work).args([
        "push",
        "-q",
        "ssh://gitaly/group/project.git",
        "HEAD:refs/heads/main",
    ]);
    run_ok(c);
    let dest = f.home().join("big-clone");
    let mut c = f.git_via(&g);
    c.args(["clone", "-q", "ssh://gitaly/group/project.git"])
        .arg(&dest);
    run_ok(c);
    assert!(std::fs::read(dest.join("random.bin")).unwrap() == data);
}
