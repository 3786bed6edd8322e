//! End-to-end tests of the client against a tiny Gitaly-like server written here with plain
//! tokio + tokio-yamux + tonic (deliberately independent of the `dev-gitaly` crate and of the
//! client's own framing helpers, so both sides cannot be wrong in the same way).
//!
//! The server speaks the backchannel handshake, opens a reverse stream that is not a
//! sidechannel (like Gitaly's reverse gRPC dial), opens sidechannels with the 8-byte big-endian
//! id, checks the v2 token and records every RPC's metadata.

#![expect(clippy::unwrap_used, reason = "test code")]

use futures::StreamExt;
use gitaly_client::proto::ssh_service_server::{SshService, SshServiceServer};
use gitaly_client::proto::{self, ExitStatus, PackfileNegotiationStatistics, Repository};
use gitaly_client::{CallMeta, Error, Stdio, Target};
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use std::io::{self, Cursor, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_yamux::{Control, Session, StreamHandle};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

const TOKEN: &str = "the secret token";
const UNAVAILABLE: &str = "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.";

// ---------------------------------------------------------------------------------------------
// The test server
// ---------------------------------------------------------------------------------------------

/// One RPC as the server saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    rpc: &'static str,
    metadata: Vec<(String, String)>,
    relative_path: String,
    gl_id: String,
    gl_repository: String,
    gl_username: String,
    git_protocol: String,
    /// Sizes of the stdin messages / sidechannel frames received.
    chunks: Vec<usize>,
    /// Whether the sidechannel ended with a flush packet.
    saw_flush: bool,
    /// Whether the handler is over (returned, or dropped because the client cancelled).
    ended: bool,
}

/// Marks a [`Seen`] entry `ended` when the handler that holds it is dropped.
struct MarkEnded {
    seen: Arc<Mutex<Vec<Seen>>>,
    index: usize,
}

impl Drop for MarkEnded {
    fn drop(&mut self) {
        if let Ok(mut all) = self.seen.lock() {
            all[self.index].ended = true;
        }
    }
}

impl Seen {
    fn values(&self, key: &str) -> Vec<&str> {
        self.metadata
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Clone)]
struct Svc {
    token: Option<String>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn metadata_pairs(map: &tonic::metadata::MetadataMap) -> Vec<(String, String)> {
    map.iter()
        .filter_map(|kv| match kv {
            tonic::metadata::KeyAndValueRef::Ascii(k, v) => Some((
                k.as_str().to_owned(),
                v.to_str().unwrap_or("<non-ascii>").to_owned(),
            )),
            tonic::metadata::KeyAndValueRef::Binary(..) => None,
        })
        .collect()
}

impl Svc {
    fn check_auth(&self, map: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let value = map
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("authentication required"))?;
        let parts: Vec<&str> = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authentication required"))?
            .split('.')
            .collect();
        let [version, sig, ts] = parts[..] else {
            return Err(Status::unauthenticated("authentication required"));
        };
        if version != "v2" {
            return Err(Status::permission_denied(
                "permission denied: invalid token version",
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(token.as_bytes()).unwrap();
        mac.update(ts.as_bytes());
        if hex::encode(mac.finalize().into_bytes()) != sig {
            return Err(Status::permission_denied(
                "permission denied: wrong hmac signature",
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let ts: u64 = ts
            .parse()
            .map_err(|_| Status::unauthenticated("authentication required"))?;
        if now.abs_diff(ts) > 30 {
            return Err(Status::permission_denied(
                "permission denied: token has expired",
            ));
        }
        Ok(())
    }

    fn record(&self, seen: Seen) -> usize {
        let mut all = self.seen.lock().unwrap();
        all.push(seen);
        all.len() - 1
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap()[index]);
    }

    /// `flaky:<mode>` is `<mode>` on every call but the first with that path, which fails
    /// UNAVAILABLE before any response (a Gitaly restarting or shedding load). Returns the mode
    /// to serve and whether this call must fail.
    fn flaky(&self, relative_path: &str) -> (String, bool) {
        match relative_path.strip_prefix("flaky:") {
            Some(mode) => {
                let calls = self
                    .seen
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.relative_path == relative_path)
                    .count();
                (mode.to_owned(), calls <= 1)
            }
            None => (relative_path.to_owned(), false),
        }
    }
}

/// Reads client → server sidechannel frames until the flush; returns the data and frame sizes.
async fn read_client_frames(stream: &mut StreamHandle) -> io::Result<(Vec<u8>, Vec<usize>, bool)> {
    let mut data = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let mut header = [0u8; 4];
        if let Err(e) = stream.read_exact(&mut header).await {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                return Ok((data, sizes, false));
            }
            return Err(e);
        }
        let len = u16::from_str_radix(std::str::from_utf8(&header).unwrap(), 16).unwrap() as usize;
        if len == 0 {
            return Ok((data, sizes, true));
        }
        assert!(len > 4, "the client sent a {len}-byte packet");
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await?;
        sizes.push(body.len());
        data.extend_from_slice(&body);
    }
}

/// Writes `data` as side-band-64k packets on `band`.
async fn write_band<W: AsyncWrite + Unpin>(
    stream: &mut W,
    band: u8,
    data: &[u8],
) -> io::Result<()> {
    for chunk in data.chunks(65515) {
        let header = format!("{:04x}", chunk.len() + 5);
        stream.write_all(header.as_bytes()).await?;
        stream.write_all(&[band]).await?;
        stream.write_all(chunk).await?;
    }
    Ok(())
}

#[tonic::async_trait]
impl SshService for Svc {
    async fn ssh_upload_pack_with_sidechannel(
        &self,
        request: Request<proto::SshUploadPackWithSidechannelRequest>,
    ) -> Result<Response<proto::SshUploadPackWithSidechannelResponse>, Status> {
        let mut seen = Seen {
            rpc: "upload-pack",
            metadata: metadata_pairs(request.metadata()),
            ..Seen::default()
        };
        self.check_auth(request.metadata())?;
        let id: i64 = request
            .metadata()
            .get_all("gitaly-sidechannel-id")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .ok_or_else(|| Status::invalid_argument("no sidechannel id"))?;
        let mut control = request.extensions().get::<Control>().cloned().unwrap();
        let message = request.into_inner();
        let mode = message.repository.unwrap_or_default().relative_path;
        seen.relative_path = mode.clone();
        seen.git_protocol = message.git_protocol;
        let index = self.record(seen);
        let _ended = MarkEnded {
            seen: self.seen.clone(),
            index,
        };
        let (mode, fail) = self.flaky(&mode);
        if fail {
            return Err(Status::unavailable("restarting"));
        }

        match mode.as_str() {
            "unavailable" => return Err(Status::unavailable("connection refused by a test")),
            "limit" => {
                let limit = proto::LimitError {
                    error_message: "busy".into(),
                    retry_after: None,
                };
                let details = gitaly_client::encode_status_details(
                    tonic::Code::Unavailable,
                    "busy",
                    &[(
                        "type.googleapis.com/gitaly.LimitError",
                        limit.encode_to_vec(),
                    )],
                );
                return Err(Status::with_details(
                    tonic::Code::Unavailable,
                    "busy",
                    details.into(),
                ));
            }
            "nosidechannel" => {
                return Ok(Response::new(
                    proto::SshUploadPackWithSidechannelResponse::default(),
                ));
            }
            _ => {}
        }

        let mut stream = control
            .open_stream()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut header = b"sidechannel".to_vec();
        header.extend_from_slice(&id.to_be_bytes());
        stream
            .write_all(&header)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut ok = [0u8; 2];
        stream
            .read_exact(&mut ok)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        if &ok != b"ok" {
            return Err(Status::internal("bad sidechannel handshake answer"));
        }

        let io_err = |e: io::Error| Status::internal(e.to_string());
        let mut stats = PackfileNegotiationStatistics {
            wants: 1,
            ..Default::default()
        };
        let result = match mode.as_str() {
            "hello" => {
                stream
                    .write_all(b"0010\x01hello world")
                    .await
                    .map_err(io_err)?;
                Ok(())
            }
            "badband" => {
                stream.write_all(b"0006\x03x").await.map_err(io_err)?;
                Ok(())
            }
            // Output first, then UNAVAILABLE (a Gitaly going away mid-clone).
            "partial" => {
                write_band(&mut stream, 1, b"0032partial ref advertisement\n")
                    .await
                    .map_err(io_err)?;
                Err(Status::unavailable("shutting down"))
            }
            // Like pack-objects on a big repository: output without end; blocks once the
            // client stops reading (its window is full), until the client cancels.
            "flood" => loop {
                write_band(&mut stream, 1, &[b'x'; 60_000])
                    .await
                    .map_err(io_err)?;
            },
            // Like git computing for a long while: nothing at all until the client cancels.
            "silent" => std::future::pending().await,
            "internal" => {
                read_client_frames(&mut stream).await.map_err(io_err)?;
                write_band(&mut stream, 2, b"fatal: git upload-pack: not our ref\n")
                    .await
                    .map_err(io_err)?;
                Err(Status::internal(
                    "running upload-pack: cmd wait: exit status 128",
                ))
            }
            _ => {
                let (data, sizes, flush) = read_client_frames(&mut stream).await.map_err(io_err)?;
                stats.packets = sizes.len() as i64;
                stats.payload_size = data.len() as i64;
                self.update(index, |s| {
                    s.chunks = sizes;
                    s.saw_flush = flush;
                });
                write_band(&mut stream, 2, b"Enumerating objects: 3, done.\n")
                    .await
                    .map_err(io_err)?;
                // Keep reading while writing, as Gitaly does: tokio-yamux only takes in the
                // client's window updates while the stream is being read, and the client's
                // bounded receive window needs them after 256 KiB.
                let (mut rd, mut wr) = tokio::io::split(stream);
                let drain = async {
                    let mut sink = [0u8; 1024];
                    while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
                    std::future::pending::<()>().await;
                };
                let written = tokio::select! {
                    written = write_band(&mut wr, 1, &data) => written,
                    () = drain => unreachable!("the drain never ends"),
                };
                stream = rd.unsplit(wr);
                written.map_err(io_err)?;
                Ok(())
            }
        };
        stream.shutdown().await.map_err(io_err)?;
        result?;
        Ok(Response::new(proto::SshUploadPackWithSidechannelResponse {
            packfile_negotiation_statistics: Some(stats),
        }))
    }

    type SSHUploadPackStream = ReceiverStream<Result<proto::SshUploadPackResponse, Status>>;

    async fn ssh_upload_pack(
        &self,
        _request: Request<Streaming<proto::SshUploadPackRequest>>,
    ) -> Result<Response<Self::SSHUploadPackStream>, Status> {
        Err(Status::unimplemented("not in current Gitaly"))
    }

    type SSHReceivePackStream = ReceiverStream<Result<proto::SshReceivePackResponse, Status>>;

    async fn ssh_receive_pack(
        &self,
        request: Request<Streaming<proto::SshReceivePackRequest>>,
    ) -> Result<Response<Self::SSHReceivePackStream>, Status> {
        let metadata = metadata_pairs(request.metadata());
        self.check_auth(request.metadata())?;
        let mut control = request.extensions().get::<Control>().cloned().unwrap();
        let mut incoming = request.into_inner();
        // Like Gitaly: nothing is sent before the first message has been read.
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no request"))?;
        if !first.stdin.is_empty() {
            return Err(Status::invalid_argument("non-empty data in first request"));
        }
        if first.gl_id.is_empty() {
            return Err(Status::invalid_argument("empty GlId"));
        }
        let path = first.repository.clone().unwrap_or_default().relative_path;
        let index = self.record(Seen {
            rpc: "receive-pack",
            metadata,
            relative_path: path.clone(),
            gl_id: first.gl_id,
            gl_repository: first.gl_repository,
            gl_username: first.gl_username,
            git_protocol: first.git_protocol,
            ..Seen::default()
        });
        let (mode, fail) = self.flaky(&path);
        if fail {
            // Reads all the client sends, then fails before any response: trailers only.
            let mut sizes = Vec::new();
            while let Some(Ok(message)) = incoming.next().await {
                sizes.push(message.stdin.len());
            }
            self.update(index, |s| s.chunks = sizes);
            return Err(Status::unavailable("restarting"));
        }
        let (tx, rx) = mpsc::channel(4);
        if mode == "silent" {
            // Reads stdin, then says nothing; the response stream is dropped only when the
            // client resets the call or the connection closes.
            let ended = MarkEnded {
                seen: self.seen.clone(),
                index,
            };
            tokio::spawn(async move {
                while let Some(Ok(_)) = incoming.next().await {}
                tx.closed().await;
                drop(ended);
            });
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        if mode == "crash" {
            // The connection dies mid-call (Gitaly restarted, network cut).
            tokio::spawn(async move {
                let out = proto::SshReceivePackResponse {
                    stdout: b"partial".to_vec(),
                    ..Default::default()
                };
                let _ = tx.send(Ok(out)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                control.close().await;
                drop(tx);
            });
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        let svc = self.clone();
        tokio::spawn(async move {
            let mut sizes = Vec::new();
            while let Some(message) = incoming.next().await {
                let Ok(message) = message else { return };
                sizes.push(message.stdin.len());
                // `firstecho` answers the first chunk right away, then only reads.
                if mode == "echo" || (mode == "firstecho" && sizes.len() == 1) {
                    let out = proto::SshReceivePackResponse {
                        stdout: message.stdin,
                        ..Default::default()
                    };
                    if tx.send(Ok(out)).await.is_err() {
                        return;
                    }
                }
            }
            svc.update(index, |s| s.chunks = sizes);
            let reply = |stderr: &[u8], exit: Option<i32>| proto::SshReceivePackResponse {
                stderr: stderr.to_vec(),
                exit_status: exit.map(|value| ExitStatus { value }),
                ..Default::default()
            };
            let _ = match mode.as_str() {
                "fail" => {
                    let _ = tx
                        .send(Ok(reply(b"fatal: protocol error: bad line\n", None)))
                        .await;
                    let _ = tx.send(Ok(reply(b"", Some(128)))).await;
                    tx.send(Err(Status::internal("cmd wait: exit status 128")))
                        .await
                }
                "cancel" => {
                    tx.send(Err(Status::cancelled("user canceled the push")))
                        .await
                }
                _ => tx.send(Ok(reply(b"remote: done\n", None))).await,
            };
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type SSHUploadArchiveStream = ReceiverStream<Result<proto::SshUploadArchiveResponse, Status>>;

    async fn ssh_upload_archive(
        &self,
        request: Request<Streaming<proto::SshUploadArchiveRequest>>,
    ) -> Result<Response<Self::SSHUploadArchiveStream>, Status> {
        let metadata = metadata_pairs(request.metadata());
        self.check_auth(request.metadata())?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("no request"))?;
        if !first.stdin.is_empty() {
            return Err(Status::invalid_argument("non-empty stdin in first request"));
        }
        self.record(Seen {
            rpc: "upload-archive",
            metadata,
            relative_path: first.repository.unwrap_or_default().relative_path,
            ..Seen::default()
        });
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut input = Vec::new();
            while let Some(Ok(message)) = incoming.next().await {
                input.extend_from_slice(&message.stdin);
            }
            let mut stdout = b"archive of: ".to_vec();
            stdout.extend_from_slice(&input);
            let message = proto::SshUploadArchiveResponse {
                stdout,
                stderr: b"remote: Compressing\n".to_vec(),
                exit_status: None,
            };
            let _ = tx.send(Ok(message)).await;
            let done = proto::SshUploadArchiveResponse {
                exit_status: Some(ExitStatus { value: 0 }),
                ..Default::default()
            };
            let _ = tx.send(Ok(done)).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The first yamux stream of a backchannel session, as tonic's server sees it; its connect info
/// is the session's control handle so handlers can open sidechannels.
struct Conn {
    stream: StreamHandle,
    control: Control,
}

impl Connected for Conn {
    type ConnectInfo = Control;
    fn connect_info(&self) -> Control {
        self.control.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

async fn serve_socket<S>(mut socket: S, conns: mpsc::Sender<Result<Conn, io::Error>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut magic = [0u8; 11];
    if socket.read_exact(&mut magic).await.is_err() || &magic != b"backchannel" {
        return; // this test server only speaks the multiplexed protocol
    }
    let mut session = Session::new_server(socket, tokio_yamux::Config::default());
    let mut control = session.control();
    let handoff = conns.clone();
    let driver = tokio::spawn(async move {
        let mut first = true;
        while let Some(Ok(stream)) = session.next().await {
            if first {
                first = false;
                let control = session.control();
                let _ = handoff.send(Ok(Conn { stream, control })).await;
            }
        }
    });
    // Like Gitaly's reverse gRPC dial: a server-opened stream that is not a sidechannel.
    if let Ok(mut reverse) = control.open_stream().await {
        let _ = reverse.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = reverse.read_to_end(&mut sink).await;
        });
    }
    let _ = driver.await;
}

struct TestGitaly {
    address: String,
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

enum Listen {
    Tcp,
    Unix,
}

impl TestGitaly {
    fn start(listen: Listen, token: Option<&str>) -> Self {
        Self::start_in(listen, token, None)
    }

    /// [`Self::start`], listening on the unix socket `at` when given (a restart at the same
    /// address).
    fn start_in(listen: Listen, token: Option<&str>, at: Option<std::path::PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket_path = at.unwrap_or_else(|| dir.path().join("gitaly.sock"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let svc = Svc {
            token: token.map(str::to_owned),
            seen: seen.clone(),
        };
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let path = socket_path.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let (conn_tx, conn_rx) = mpsc::channel(16);
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(SshServiceServer::new(svc))
                        .serve_with_incoming(ReceiverStream::new(conn_rx)),
                );
                let accept = async move {
                    match listen {
                        Listen::Tcp => {
                            let listener =
                                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                            ready_tx
                                .send(listener.local_addr().unwrap().port())
                                .unwrap();
                            while let Ok((socket, _)) = listener.accept().await {
                                tokio::spawn(serve_socket(socket, conn_tx.clone()));
                            }
                        }
                        Listen::Unix => {
                            let listener = tokio::net::UnixListener::bind(&path).unwrap();
                            ready_tx.send(0).unwrap();
                            while let Ok((socket, _)) = listener.accept().await {
                                tokio::spawn(serve_socket(socket, conn_tx.clone()));
                            }
                        }
                    }
                };
                tokio::select! {
                    () = accept => {}
                    _ = stop_rx => {}
                }
            });
        });
        let port = ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let address = match port {
            0 => format!("unix:{}", socket_path.display()),
            port => format!("tcp://127.0.0.1:{port}"),
        };
        TestGitaly {
            address,
            port,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn target(&self) -> Target {
        Target {
            address: self.address.clone(),
            token: TOKEN.to_owned(),
            retry: None,
            trust: Default::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestGitaly {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn call_meta() -> CallMeta {
    CallMeta {
        features: vec![
            ("gitaly-feature-cache_invalidator".into(), "true".into()),
            (
                "gitaly-feature-inforef_uploadpack_cache".into(),
                "false".into(),
            ),
            ("some-other-feature".into(), "true".into()),
        ],
        key_id: "123".into(),
        key_type: "key".into(),
        user_id: "user-1".into(),
        username: "alex-doe".into(),
        remote_ip: "127.0.0.1".into(),
        correlation_id: "corr-123".into(),
        client_name: "gitlab-shell".into(),
    }
}

fn repo(relative_path: &str) -> Option<Repository> {
    Some(Repository {
        storage_name: "default".into(),
        relative_path: relative_path.into(),
        gl_repository: "project-1".into(),
        ..Default::default()
    })
}

struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn upload_pack(
    t: &Target,
    mode: &str,
    stdin: Box<dyn io::Read + Send>,
) -> (Result<Option<PackfileNegotiationStatistics>, Error>, Output) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let request = proto::SshUploadPackWithSidechannelRequest {
        repository: repo(mode),
        git_protocol: "version=2".into(),
        git_config_options: vec![],
    };
    let io = Stdio {
        stdin,
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let result = gitaly_client::upload_pack(t, &call_meta(), request, io);
    (result, Output { stdout, stderr })
}

fn receive_pack(t: &Target, mode: &str, stdin: Vec<u8>) -> (Result<Option<i32>, Error>, Output) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let request = proto::SshReceivePackRequest {
        repository: repo(mode),
        gl_id: "key-123".into(),
        gl_repository: "project-1".into(),
        gl_username: "alex-doe".into(),
        git_protocol: "version=2".into(),
        ..Default::default()
    };
    let io = Stdio {
        stdin: Box::new(Cursor::new(stdin)),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let result = gitaly_client::receive_pack(t, &call_meta(), request, io);
    (result, Output { stdout, stderr })
}

/// Deterministic incompressible-looking bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn assert_shell_metadata(seen: &Seen, git_command: &str) {
    for (key, want) in [
        ("gitaly-feature-cache_invalidator", "true"),
        ("gitaly-feature-inforef_uploadpack_cache", "false"),
        ("key_id", "123"),
        ("key_type", "key"),
        ("user_id", "user-1"),
        ("username", "alex-doe"),
        ("remote_ip", "127.0.0.1"),
        ("x-gitlab-correlation-id", "corr-123"),
    ] {
        assert_eq!(seen.values(key), [want], "{key} in {:?}", seen.metadata);
    }
    assert_eq!(
        seen.values("x-gitlab-client-name"),
        [format!("gitlab-shell-{git_command}").as_str()]
    );
    assert!(seen.values("some-other-feature").is_empty());
    assert_eq!(seen.values("authorization").len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn upload_pack_round_trip_over_tcp_unix_and_dns_with_metadata_once() {
    let tcp = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let unix = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let dns = Target {
        address: format!("dns:///127.0.0.1:{}", tcp.port),
        token: TOKEN.into(),
        retry: None,
        trust: Default::default(),
    };
    let unix_triple_slash = Target {
        address: unix.address.replacen("unix:", "unix://", 1),
        token: TOKEN.into(),
        retry: None,
        trust: Default::default(),
    };
    for (server, target) in [
        (&tcp, tcp.target()),
        (&unix, unix.target()),
        (&tcp, dns),
        (&unix, unix_triple_slash),
    ] {
        let before = server.seen().len();
        let stdin = b"0032want 0123456789012345678901234567890123456789\n00000009done\n".to_vec();
        let (result, out) = upload_pack(&target, "echo", Box::new(Cursor::new(stdin.clone())));
        let stats = result.unwrap().unwrap();
        assert_eq!(out.stdout, stdin, "{}", target.address);
        assert_eq!(out.stderr, b"Enumerating objects: 3, done.\n");
        assert_eq!(
            (stats.packets, stats.wants, stats.payload_size),
            (1, 1, stdin.len() as i64)
        );
        let seen = server.seen();
        assert_eq!(seen.len(), before + 1);
        let call = &seen[before];
        assert_eq!(call.rpc, "upload-pack");
        assert_shell_metadata(call, "git-upload-pack");
        assert_eq!(call.values("gitaly-sidechannel-id").len(), 1);
        assert_eq!(call.git_protocol, "version=2");
        assert!(call.saw_flush, "stdin EOF must be sent as a 0000 flush");
    }
}

#[test]
fn sidechannel_ids_differ_per_call() {
    let server = TestGitaly::start(Listen::Tcp, None);
    let target = Target {
        address: server.address.clone(),
        token: String::new(),
        retry: None,
        trust: Default::default(),
    };
    for _ in 0..2 {
        let (result, _) = upload_pack(&target, "echo", Box::new(Cursor::new(Vec::new())));
        result.unwrap();
    }
    let ids: Vec<String> = server
        .seen()
        .iter()
        .map(|s| s.values("gitaly-sidechannel-id")[0].to_owned())
        .collect();
    assert_ne!(ids[0], ids[1]);
    // Without a token there is no authorization header at all.
    assert!(server.seen()[0].values("authorization").is_empty());
}

#[test]
fn one_sideband_packet_is_exactly_stdout_and_open_stdin_is_not_awaited() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    // A stdin that never reaches EOF during the call: the proxy must end at the server's EOF.
    let (stdin, keep_open) = std::os::unix::net::UnixStream::pair().unwrap();
    let (result, out) = upload_pack(&server.target(), "hello", Box::new(stdin));
    result.unwrap();
    assert_eq!(out.stdout, b"hello world");
    assert!(out.stderr.is_empty());
    drop(keep_open);
}

#[test]
fn large_upload_pack_streams_in_bounded_frames() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let data = noise(6 * 1024 * 1024 + 123);
    let (result, out) = upload_pack(
        &server.target(),
        "echo",
        Box::new(Cursor::new(data.clone())),
    );
    result.unwrap();
    assert!(
        out.stdout == data,
        "echoed pack differs ({} vs {} bytes)",
        out.stdout.len(),
        data.len()
    );
    let seen = &server.seen()[0];
    assert!(
        seen.chunks.iter().all(|&n| n > 0 && n <= 65516),
        "frame sizes {:?}",
        seen.chunks
    );
    assert_eq!(seen.chunks.iter().sum::<usize>(), data.len());
    assert!(seen.saw_flush);
}

#[test]
fn receive_pack_streams_stdin_and_output() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let data = noise(3 * 1024 * 1024 + 7);
    let (result, out) = receive_pack(&server.target(), "echo", data.clone());
    assert_eq!(result, Ok(None), "no exit status on success");
    assert!(out.stdout == data, "echoed data differs");
    assert_eq!(out.stderr, b"remote: done\n");
    let seen = &server.seen()[0];
    assert_shell_metadata(seen, "git-receive-pack");
    assert!(seen.values("gitaly-sidechannel-id").is_empty());
    assert_eq!(
        (
            seen.gl_id.as_str(),
            seen.gl_repository.as_str(),
            seen.gl_username.as_str(),
            seen.git_protocol.as_str()
        ),
        ("key-123", "project-1", "alex-doe", "version=2")
    );
    assert!(
        seen.chunks.iter().all(|&n| n > 0 && n <= 32 * 1024),
        "no empty or oversized stdin chunks"
    );
    assert_eq!(seen.chunks.iter().sum::<usize>(), data.len());
}

#[test]
fn receive_pack_with_empty_stdin_still_sends_the_first_message() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let (result, out) = receive_pack(&server.target(), "echo", Vec::new());
    assert_eq!(result, Ok(None));
    assert!(out.stdout.is_empty());
    assert_eq!(server.seen()[0].chunks, Vec::<usize>::new());
}

#[test]
fn receive_pack_git_failure_is_internal_and_silent() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (result, out) = receive_pack(&server.target(), "fail", b"garbage".to_vec());
    let err = result.unwrap_err();
    assert!(err.is_silent());
    assert_eq!(
        err.to_string(),
        "rpc error: code = Internal desc = cmd wait: exit status 128"
    );
    assert_eq!(out.stderr, b"fatal: protocol error: bad line\n");

    let (result, _) = receive_pack(&server.target(), "cancel", b"x".to_vec());
    let err = result.unwrap_err();
    assert!(!err.is_silent());
    assert_eq!(
        err.to_string(),
        "rpc error: code = Canceled desc = user canceled the push"
    );
}

/// Writes in order, tagged `out`/`err`.
type WriteLog = Arc<Mutex<Vec<(&'static str, Vec<u8>)>>>;

/// Records writes to stdout and stderr in one shared log, to check their relative order.
struct Tagged {
    tag: &'static str,
    log: WriteLog,
}

impl Write for Tagged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.log.lock().unwrap().push((self.tag, buf.to_vec()));
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn upload_archive_writes_stderr_before_stdout_and_returns_exit_status() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = Tagged {
        tag: "out",
        log: log.clone(),
    };
    let mut stderr = Tagged {
        tag: "err",
        log: log.clone(),
    };
    let io = Stdio {
        stdin: Box::new(Cursor::new(b"argument HEAD\n0000".to_vec())),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let request = proto::SshUploadArchiveRequest {
        repository: repo("archive"),
        stdin: Vec::new(),
    };
    let result = gitaly_client::upload_archive(&server.target(), &call_meta(), request, io);
    assert_eq!(result, Ok(Some(0)));
    assert_eq!(
        *log.lock().unwrap(),
        [
            ("err", b"remote: Compressing\n".to_vec()),
            ("out", b"archive of: argument HEAD\n0000".to_vec())
        ]
    );
    assert_shell_metadata(&server.seen()[0], "git-upload-archive");
}

#[test]
fn unavailable_is_reworded_and_limit_error_detected() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (result, _) = upload_pack(
        &server.target(),
        "unavailable",
        Box::new(Cursor::new(Vec::new())),
    );
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    let (result, _) = upload_pack(&server.target(), "limit", Box::new(Cursor::new(Vec::new())));
    assert_eq!(
        result.unwrap_err().to_string(),
        "rpc error: code = Unavailable desc = GitLab is currently unable to handle this request due to load."
    );
}

#[test]
fn upload_pack_internal_error_is_silent_after_relaying_stderr() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (result, out) = upload_pack(
        &server.target(),
        "internal",
        Box::new(Cursor::new(b"0000".to_vec())),
    );
    let err = result.unwrap_err();
    assert!(err.is_silent(), "{err}");
    assert_eq!(out.stderr, b"fatal: git upload-pack: not our ref\n");
}

#[test]
fn unexpected_band_and_missing_sidechannel_are_errors() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (result, _) = upload_pack(
        &server.target(),
        "badband",
        Box::new(Cursor::new(Vec::new())),
    );
    assert_eq!(result.unwrap_err().to_string(), "unexpected band: 3");
    let (result, _) = upload_pack(
        &server.target(),
        "nosidechannel",
        Box::new(Cursor::new(Vec::new())),
    );
    assert_eq!(
        result.unwrap_err().to_string(),
        "callback de-registered without having run"
    );
}

#[test]
fn wrong_token_is_rejected_by_the_server() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = Target {
        address: server.address.clone(),
        token: "wrong".into(),
        retry: None,
        trust: Default::default(),
    };
    let (result, _) = receive_pack(&target, "echo", b"x".to_vec());
    assert_eq!(
        result.unwrap_err().to_string(),
        "rpc error: code = PermissionDenied desc = permission denied: wrong hmac signature"
    );
}

#[test]
fn connection_lost_mid_call_is_the_unavailable_message_not_silence() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (result, out) = receive_pack(&server.target(), "crash", Vec::new());
    let err = result.unwrap_err();
    assert!(!err.is_silent());
    assert_eq!(err.to_string(), UNAVAILABLE);
    assert_eq!(out.stdout, b"partial");
}

#[test]
fn connection_refused_is_the_unavailable_message() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target {
        address: format!("tcp://127.0.0.1:{port}"),
        token: String::new(),
        retry: None,
        trust: Default::default(),
    };
    let (result, _) = receive_pack(&target, "echo", Vec::new());
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    let missing = Target {
        address: "unix:/nonexistent/gitaly.sock".into(),
        token: String::new(),
        retry: None,
        trust: Default::default(),
    };
    let (result, _) = upload_pack(&missing, "echo", Box::new(Cursor::new(Vec::new())));
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
}

#[test]
fn address_errors_come_before_any_dial() {
    let (result, _) = receive_pack(&Target::default(), "echo", Vec::new());
    assert_eq!(result.unwrap_err().to_string(), "no gitaly_address given");
    let bad = Target {
        address: "localhost:8075".into(),
        token: String::new(),
        retry: None,
        trust: Default::default(),
    };
    let (result, _) = receive_pack(&bad, "echo", Vec::new());
    assert_eq!(
        result.unwrap_err().to_string(),
        "invalid connection string: \"localhost:8075\""
    );
}

/// Yields some bytes, then fails like a broken local pipe.
struct FailingStdin(bool);

impl io::Read for FailingStdin {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if std::mem::replace(&mut self.0, true) {
            return Err(io::Error::other("disk on fire"));
        }
        buf[..4].copy_from_slice(b"0000");
        Ok(4)
    }
}

#[test]
fn stdin_read_failure_is_a_stdin_send_error() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = Stdio {
        stdin: Box::new(FailingStdin(false)),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let request = proto::SshReceivePackRequest {
        repository: repo("echo"),
        gl_id: "key-123".into(),
        ..Default::default()
    };
    let result = gitaly_client::receive_pack(&server.target(), &call_meta(), request, io);
    assert_eq!(
        result.unwrap_err().to_string(),
        "stdin send error: disk on fire"
    );
    assert_eq!(
        stdout, b"0000",
        "what was read before the failure still went through"
    );
}

/// A stdout that blocks on its first write until the server has seen the whole of stdin.
struct WaitsForServer {
    seen: Arc<Mutex<Vec<Seen>>>,
    data: Vec<u8>,
}

impl Write for WaitsForServer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self
            .seen
            .lock()
            .unwrap()
            .first()
            .is_none_or(|s| s.chunks.is_empty())
        {
            if std::time::Instant::now() > deadline {
                return Err(io::Error::other(
                    "the call made no progress while stdout was blocked",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Waits up to 5 s for the server's first handler to be over.
fn server_handler_ends(server: &TestGitaly) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if server.seen().first().is_some_and(|s| s.ended) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs `call` on its own thread; `None` when it has not returned after 10 s.
fn within_10s<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    rx.recv_timeout(Duration::from_secs(10)).ok()
}

/// A stdout whose reader is gone (sshd closed the pipe: EPIPE).
struct ClosedPipe;

impl Write for ClosedPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_client_gone_mid_clone_cancels_the_rpc_instead_of_waiting_forever() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = server.target();
    let started = std::time::Instant::now();
    let result = within_10s(move || {
        let mut stderr = Vec::new();
        let io = Stdio {
            stdin: Box::new(io::empty()),
            stdout: &mut ClosedPipe,
            stderr: &mut stderr,
            cancel: gitaly_client::CancellationToken::new(),
        };
        let request = proto::SshUploadPackWithSidechannelRequest {
            repository: repo("flood"),
            ..Default::default()
        };
        gitaly_client::upload_pack(&target, &call_meta(), request, io)
    });
    let Some(result) = result else {
        panic!("upload-pack still waits for Gitaly 10 s after the client went away");
    };
    assert_eq!(
        result.map_err(|e| e.to_string()),
        Err(io::Error::from(io::ErrorKind::BrokenPipe).to_string())
    );
    assert!(
        server_handler_ends(&server),
        "the server's RPC was not cancelled"
    );
    eprintln!("returned and cancelled after {:?}", started.elapsed());
}

#[test]
fn cancelling_from_outside_ends_a_silent_upload_pack() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let target = server.target();
    let cancel = gitaly_client::CancellationToken::new();
    let trigger = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        trigger.cancel();
    });
    let result = within_10s(move || {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        // stdin stays open, like a client that sent its wants and waits.
        let (_keep, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let io = Stdio {
            stdin: Box::new(reader),
            stdout: &mut stdout,
            stderr: &mut stderr,
            cancel,
        };
        let request = proto::SshUploadPackWithSidechannelRequest {
            repository: repo("silent"),
            ..Default::default()
        };
        let result = gitaly_client::upload_pack(&target, &call_meta(), request, io);
        drop(_keep);
        result
    });
    assert_eq!(result, Some(Err(Error::cancelled())));
    assert_eq!(
        Error::cancelled().to_string(),
        "rpc error: code = Canceled desc = context canceled"
    );
    assert!(
        server_handler_ends(&server),
        "the server's RPC was not cancelled"
    );
}

#[test]
fn cancelling_from_outside_ends_a_silent_receive_pack() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = server.target();
    let cancel = gitaly_client::CancellationToken::new();
    let trigger = cancel.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        trigger.cancel();
    });
    let result = within_10s(move || {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let io = Stdio {
            stdin: Box::new(Cursor::new(b"0000".to_vec())),
            stdout: &mut stdout,
            stderr: &mut stderr,
            cancel,
        };
        let request = proto::SshReceivePackRequest {
            repository: repo("silent"),
            gl_id: "key-123".into(),
            ..Default::default()
        };
        gitaly_client::receive_pack(&target, &call_meta(), request, io)
    });
    assert_eq!(result, Some(Err(Error::cancelled())));
    assert!(
        server_handler_ends(&server),
        "the server's RPC was not cancelled"
    );
}

#[test]
fn a_blocked_stdout_does_not_stall_the_connection() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    // More than the HTTP/2 and yamux windows and socket buffers hold together: the rest only
    // moves while the runtime keeps running during the blocked write.
    let data = noise(16 * 1024 * 1024);
    let mut stdout = WaitsForServer {
        seen: server.seen.clone(),
        data: Vec::new(),
    };
    let mut stderr = Vec::new();
    let io = Stdio {
        stdin: Box::new(Cursor::new(data.clone())),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let request = proto::SshReceivePackRequest {
        repository: repo("firstecho"),
        gl_id: "key-123".into(),
        ..Default::default()
    };
    let result = gitaly_client::receive_pack(&server.target(), &call_meta(), request, io);
    assert_eq!(result, Ok(None));
    assert!(stdout.data == data[..32 * 1024]);
    assert_eq!(server.seen()[0].chunks.iter().sum::<usize>(), data.len());
}

/// A peer that accepts connections, reads whatever comes and never answers.
fn black_hole() -> (u16, std::thread::JoinHandle<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        // Two connections (one per test call), each drained until the client hangs up.
        for _ in 0..2 {
            let Ok((socket, _)) = listener.accept() else {
                return;
            };
            held.push(std::thread::spawn(move || {
                let mut socket = socket;
                let _ = io::copy(&mut socket, &mut io::sink());
            }));
        }
        for h in held {
            let _ = h.join();
        }
    });
    (port, handle)
}

#[test]
fn a_silent_tcp_gitaly_and_a_tls_black_hole_give_up_after_20_seconds() {
    let (port, server) = black_hole();
    let calls: Vec<_> = ["tcp", "tls"]
        .into_iter()
        .map(|scheme| {
            let target = Target {
                address: format!("{scheme}://127.0.0.1:{port}"),
                token: TOKEN.to_owned(),
                retry: None,
                trust: Default::default(),
            };
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let (result, _) = upload_pack(&target, "hello", Box::new(io::empty()));
                (scheme, started.elapsed(), result.map_err(|e| e.to_string()))
            })
        })
        .collect();
    for call in calls {
        let (scheme, took, result) = call.join().unwrap();
        assert_eq!(result, Err(UNAVAILABLE.to_owned()), "{scheme}");
        assert!(
            took >= Duration::from_secs(19) && took < Duration::from_secs(26),
            "{scheme}: gave up after {took:?}"
        );
        eprintln!("{scheme}: gave up after {took:?}");
    }
    server.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// retry_config
// ---------------------------------------------------------------------------------------------

/// `target` with GitLab's usual retry policy (short backoffs) for the given codes.
fn with_policy(target: Target, codes: &str) -> Target {
    let json = format!(
        r#"{{"maxAttempts":3,"initialBackoff":"0.2s","maxBackoff":"1s","backoffMultiplier":2,"retryableStatusCodes":[{codes}]}}"#
    );
    Target {
        retry: Some(gitaly_client::RetryPolicy::from_json(&json).unwrap()),
        ..target
    }
}

#[test]
fn an_unavailable_answer_before_any_output_is_retried_with_retry_config() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let data = b"0032want 0000000000000000000000000000000000000000\n00000009done\n".to_vec();
    let started = std::time::Instant::now();
    let (result, out) = upload_pack(
        &with_policy(server.target(), r#""UNAVAILABLE""#),
        "flaky:echo",
        Box::new(Cursor::new(data.clone())),
    );
    result.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the backoff"
    );
    assert_eq!(out.stdout, data);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "one failed call and its retry");
    assert_eq!(seen[1].chunks.iter().sum::<usize>(), data.len());

    // Without a policy, or with one that does not list UNAVAILABLE: the first answer stands.
    for target in [
        server.target(),
        with_policy(server.target(), r#""ABORTED""#),
    ] {
        let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
        let target = Target {
            address: server.address.clone(),
            ..target
        };
        let (result, out) = upload_pack(&target, "flaky:echo", Box::new(Cursor::new(data.clone())));
        assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
        assert_eq!(server.seen().len(), 1);
    }
}

#[test]
fn a_retried_receive_pack_replays_the_stdin_the_failed_call_consumed() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let data = noise(100 * 1024);
    let target = with_policy(server.target(), r#""UNAVAILABLE""#);
    let (result, out) = receive_pack(&target, "flaky:echo", data.clone());
    assert_eq!(result, Ok(None));
    assert!(out.stdout == data, "the retry saw the whole stdin again");
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].chunks.iter().sum::<usize>(), data.len());
    assert_eq!(seen[1].chunks.iter().sum::<usize>(), data.len());
}

#[test]
fn stdin_beyond_the_replay_buffer_commits_the_call() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let data = noise(gitaly_client::REPLAY_LIMIT + 1);
    let target = with_policy(server.target(), r#""UNAVAILABLE""#);
    let (result, out) = receive_pack(&target, "flaky:echo", data);
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert!(out.stdout.is_empty());
    assert_eq!(server.seen().len(), 1, "not retried: the stdin is gone");
}

#[test]
fn nothing_is_retried_once_output_reached_the_user() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = with_policy(server.target(), r#""UNAVAILABLE""#);
    let (result, out) = upload_pack(&target, "partial", Box::new(Cursor::new(Vec::new())));
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(out.stdout, b"0032partial ref advertisement\n");
    assert_eq!(server.seen().len(), 1, "the server saw exactly one call");

    // A connection lost after some output (UNAVAILABLE too): not retried either.
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = with_policy(server.target(), r#""UNAVAILABLE""#);
    let (result, out) = receive_pack(&target, "crash", Vec::new());
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(out.stdout, b"partial");
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn retries_stop_at_max_attempts() {
    let server = TestGitaly::start(Listen::Tcp, Some(TOKEN));
    let target = with_policy(server.target(), r#""UNAVAILABLE""#);
    let started = std::time::Instant::now();
    let (result, _) = upload_pack(&target, "unavailable", Box::new(Cursor::new(Vec::new())));
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(server.seen().len(), 3, "maxAttempts 3");
    // Backoffs of 0.2 s and 0.4 s.
    assert!(started.elapsed() >= Duration::from_millis(600));
}

// ---------------------------------------------------------------------------------------------
// The connection pool (gitlab-sshd's sessions share Gitaly connections)
// ---------------------------------------------------------------------------------------------

/// A long-lived runtime on its own thread, as a server's would be (the pool's connections live
/// on it); stopped on drop.
struct PoolRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PoolRuntime {
    fn start() -> PoolRuntime {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async {
                let _ = stopped.await;
            });
        });
        PoolRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for PoolRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn pooled_upload_pack(pool: &gitaly_client::Pool, t: &Target) -> (Result<(), Error>, Vec<u8>) {
    pooled_upload_pack_of(pool, t, "hello")
}

fn pooled_upload_pack_of(
    pool: &gitaly_client::Pool,
    t: &Target,
    path: &str,
) -> (Result<(), Error>, Vec<u8>) {
    let mut stdout = Vec::new();
    let cancel = gitaly_client::CancellationToken::new();
    let result = pooled_upload_pack_into(pool, t, path, &mut stdout, cancel);
    (result, stdout)
}

fn pooled_upload_pack_into(
    pool: &gitaly_client::Pool,
    t: &Target,
    path: &str,
    stdout: &mut (dyn Write + Send),
    cancel: gitaly_client::CancellationToken,
) -> Result<(), Error> {
    let mut stderr = Vec::new();
    let request = proto::SshUploadPackWithSidechannelRequest {
        repository: repo(path),
        git_protocol: "version=2".into(),
        git_config_options: vec![],
    };
    let io = Stdio {
        stdin: Box::new(Cursor::new(Vec::new())),
        stdout,
        stderr: &mut stderr,
        cancel,
    };
    pool.upload_pack(t, &call_meta(), request, io).map(|_| ())
}

/// Two calls through one pool share one connection; once that connection dies (Gitaly
/// restarted at the same address), it leaves the cache and the next call dials again.
/// See: docs/gitlab-sshd.md, "Gitaly connections".
#[test]
fn a_pool_dials_once_for_two_calls_and_again_after_the_connection_died() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("restarting.sock");
    let server = TestGitaly::start_in(Listen::Unix, Some(TOKEN), Some(path.clone()));
    let runtime = PoolRuntime::start();
    let dials = Arc::new(Mutex::new(Vec::new()));
    let seen_dials = Arc::clone(&dials);
    let pool = gitaly_client::Pool::new(
        runtime.handle.clone(),
        Box::new(move |ok| seen_dials.lock().unwrap().push(ok)),
    );
    let target = server.target();
    for _ in 0..2 {
        let (result, stdout) = pooled_upload_pack(&pool, &target);
        result.unwrap();
        assert_eq!(stdout, b"hello world");
    }
    assert_eq!(*dials.lock().unwrap(), [true], "one dial for two calls");
    assert_eq!(server.seen().len(), 2);
    assert_eq!(pool.cached(), 1);

    drop(server);
    let started = std::time::Instant::now();
    while pool.live() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the dead connection still looks alive"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&path);
    let server = TestGitaly::start_in(Listen::Unix, Some(TOKEN), Some(path.clone()));
    let (result, stdout) = pooled_upload_pack(&pool, &target);
    result.unwrap();
    assert_eq!(stdout, b"hello world");
    assert_eq!(*dials.lock().unwrap(), [true, true], "dialled again");
    assert_eq!(server.seen().len(), 1);
    // A failed dial is reported as such and caches nothing.
    drop(server);
    let _ = std::fs::remove_file(&path);
    while pool.live() != 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (result, _) = pooled_upload_pack(&pool, &target);
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(*dials.lock().unwrap(), [true, true, false]);
}

/// A cached connection that answers UNAVAILABLE before the call began (a Gitaly that went away
/// unnoticed) is dropped and the call dials once more, with no retry_config; a fresh connection
/// that answers UNAVAILABLE is not dialled again without one.
/// See: docs/gitlab-sshd.md, "Gitaly connections".
#[test]
fn a_cached_connection_failing_before_the_call_began_is_dialled_again_once() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let runtime = PoolRuntime::start();
    let dials = Arc::new(Mutex::new(Vec::new()));
    let seen_dials = Arc::clone(&dials);
    let pool = gitaly_client::Pool::new(
        runtime.handle.clone(),
        Box::new(move |ok| seen_dials.lock().unwrap().push(ok)),
    );
    let target = server.target();
    let (result, _) = pooled_upload_pack(&pool, &target);
    result.unwrap();
    // On the cached connection: UNAVAILABLE first, then served on a fresh dial.
    let (result, stdout) = pooled_upload_pack_of(&pool, &target, "flaky:hello");
    result.unwrap();
    assert_eq!(stdout, b"hello world");
    assert_eq!(*dials.lock().unwrap(), [true, true], "dialled again once");
    assert_eq!(server.seen().len(), 3);

    // On a fresh connection the first answer stands (only retry_config retries it).
    let other = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let (result, _) = pooled_upload_pack_of(&pool, &other.target(), "flaky:hello");
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(other.seen().len(), 1);
}

/// Different tokens for one address get different connections, as GitLab Shell keys its cache
/// by address and token.
#[test]
fn a_pool_keys_connections_by_address_and_token() {
    let server = TestGitaly::start(Listen::Tcp, None);
    let runtime = PoolRuntime::start();
    let pool = gitaly_client::Pool::new(runtime.handle.clone(), Box::new(|_| {}));
    let mut target = server.target();
    pooled_upload_pack(&pool, &target).0.unwrap();
    target.token = "another token".into();
    pooled_upload_pack(&pool, &target).0.unwrap();
    assert_eq!(pool.cached(), 2);
}

/// Counts what a pool reports of its calls, by `<method> <event>`.
#[derive(Default)]
struct RpcCounts(Mutex<std::collections::BTreeMap<String, u64>>);

impl RpcCounts {
    fn add(&self, key: String) {
        *self.0.lock().unwrap().entry(key).or_insert(0) += 1;
    }
    fn get(&self, key: &str) -> u64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

impl gitaly_client::RpcObserver for RpcCounts {
    fn started(&self, rpc: &gitaly_client::Rpc) {
        self.add(format!("{} started {}", rpc.method, rpc.kind.as_str()));
    }
    fn msg_sent(&self, rpc: &gitaly_client::Rpc) {
        self.add(format!("{} sent", rpc.method));
    }
    fn msg_received(&self, rpc: &gitaly_client::Rpc) {
        self.add(format!("{} received", rpc.method));
    }
    fn handled(&self, rpc: &gitaly_client::Rpc, code: tonic::Code) {
        self.add(format!(
            "{} handled {}",
            rpc.method,
            gitaly_client::go_code_name(code)
        ));
    }
}

/// A pool built with an observer reports its calls as go-grpc-prometheus's client
/// interceptors count them: a bidi call per message each way, a unary call one message sent
/// (and one received only when it fails), one `started` and one `handled` per call even when a
/// stale cached connection is dialled again, and a call whose Gitaly is gone as `Unavailable`.
/// See: docs/gitlab-sshd.md, "Probes and metrics".
#[test]
fn an_observed_pool_counts_calls_and_messages_like_the_go_interceptors() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let runtime = PoolRuntime::start();
    let counts = Arc::new(RpcCounts::default());
    let pool = gitaly_client::Pool::observed(
        runtime.handle.clone(),
        Box::new(|_| {}),
        Arc::clone(&counts) as Arc<dyn gitaly_client::RpcObserver>,
    );
    let target = server.target();

    // Bidi: the first message plus one per stdin chunk; one response per echoed chunk plus
    // the closing one.
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let data = noise(100 * 1024 + 3);
    let request = proto::SshReceivePackRequest {
        repository: repo("echo"),
        gl_id: "key-123".into(),
        ..Default::default()
    };
    let io = Stdio {
        stdin: Box::new(Cursor::new(data.clone())),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    pool.receive_pack(&target, &call_meta(), request, io)
        .unwrap();
    assert_eq!(stdout, data);
    let chunks = server.seen()[0].chunks.len() as u64;
    assert!(chunks >= 2, "{chunks}");
    assert_eq!(counts.get("SSHReceivePack started bidi_stream"), 1);
    assert_eq!(counts.get("SSHReceivePack sent"), 1 + chunks);
    assert_eq!(counts.get("SSHReceivePack received"), chunks + 1);
    assert_eq!(counts.get("SSHReceivePack handled OK"), 1);

    // Unary, successful: one sent, none received.
    let (result, _) = pooled_upload_pack(&pool, &target);
    result.unwrap();
    let up = "SSHUploadPackWithSidechannel";
    assert_eq!(counts.get(&format!("{up} started unary")), 1);
    assert_eq!(counts.get(&format!("{up} sent")), 1);
    assert_eq!(counts.get(&format!("{up} received")), 0);
    assert_eq!(counts.get(&format!("{up} handled OK")), 1);

    // UNAVAILABLE on the cached connection, then served on a fresh dial: still one call.
    let (result, _) = pooled_upload_pack_of(&pool, &target, "flaky:hello");
    result.unwrap();
    assert_eq!(counts.get(&format!("{up} started unary")), 2);
    assert_eq!(counts.get(&format!("{up} sent")), 2);
    assert_eq!(counts.get(&format!("{up} handled OK")), 2);

    // Nobody listening: Unavailable, and the unary call's one message received.
    let dir = tempfile::tempdir().unwrap();
    let gone = Target {
        address: format!("unix:{}", dir.path().join("gone.sock").display()),
        ..target.clone()
    };
    let (result, _) = pooled_upload_pack(&pool, &gone);
    assert_eq!(result.unwrap_err().to_string(), UNAVAILABLE);
    assert_eq!(counts.get(&format!("{up} started unary")), 3);
    assert_eq!(counts.get(&format!("{up} received")), 1);
    assert_eq!(counts.get(&format!("{up} handled Unavailable")), 1);

    // A bidi call that cannot dial sends nothing.
    let request = proto::SshReceivePackRequest {
        repository: repo("echo"),
        gl_id: "key-123".into(),
        ..Default::default()
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let io = Stdio {
        stdin: Box::new(Cursor::new(Vec::new())),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    assert!(pool.receive_pack(&gone, &call_meta(), request, io).is_err());
    assert_eq!(counts.get("SSHReceivePack sent"), 1 + chunks);
    assert_eq!(counts.get("SSHReceivePack handled Unavailable"), 1);
}

/// A writer that notes the pool runtime's live task count at its first write, then fails
/// like a client that went away.
struct NotingTasks {
    handle: tokio::runtime::Handle,
    seen: Option<usize>,
}

impl Write for NotingTasks {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        self.seen = Some(self.handle.metrics().num_alive_tasks());
        Err(io::Error::new(io::ErrorKind::BrokenPipe, "client gone"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// With a pool (gitlab-sshd), an upload-pack call runs as tasks on the pool's runtime — the
/// call, its RPC and its stdin writer — instead of on a thread and a runtime of its own; and
/// when the client goes away mid-clone, those tasks end with it (they are aborted, where the
/// end of a per-call runtime used to drop them).
/// See: docs/gitlab-sshd.md, "Memory".
#[test]
fn a_pooled_upload_pack_runs_on_the_pools_runtime() {
    let server = TestGitaly::start(Listen::Unix, Some(TOKEN));
    let runtime = PoolRuntime::start();
    let pool = gitaly_client::Pool::new(runtime.handle.clone(), Box::new(|_| {}));
    let target = server.target();
    // The first call dials; the connection's own tasks stay.
    let (result, _) = pooled_upload_pack(&pool, &target);
    result.unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let idle = runtime.handle.metrics().num_alive_tasks();

    // A Gitaly that sends without end: the call is running when its first output arrives.
    let mut stdout = NotingTasks {
        handle: runtime.handle.clone(),
        seen: None,
    };
    let cancel = gitaly_client::CancellationToken::new();
    let result = pooled_upload_pack_into(&pool, &target, "flood", &mut stdout, cancel);
    assert_eq!(result, Err(Error::Local("client gone".to_owned())));
    let during = stdout.seen.expect("written");
    assert!(
        during >= idle + 2,
        "the call's tasks run on the pool's runtime: {idle} tasks idle, {during} during the call"
    );
    let settled = |what: &str| {
        let started = std::time::Instant::now();
        while runtime.handle.metrics().num_alive_tasks() > idle {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: tasks left behind"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    settled("client gone mid-clone");

    // A Gitaly that says nothing until the client cancels: only the RPC task's abort resets
    // its HTTP/2 stream, so without it the RPC would wait for ever.
    let cancel = gitaly_client::CancellationToken::new();
    let trigger = cancel.clone();
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        trigger.cancel();
    });
    let result = pooled_upload_pack_into(&pool, &target, "silent", &mut Vec::new(), cancel);
    canceller.join().unwrap();
    assert!(result.is_err(), "a cancelled call fails");
    settled("cancelled while Gitaly was silent");
}
