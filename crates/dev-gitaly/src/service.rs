//! The `gitaly.SSHService` implementation (Gitaly `internal/gitaly/service/ssh/`): validation,
//! the real git programs, stdout/stderr streaming, exit statuses and error codes as gitaly.md §2.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures::{FutureExt, Stream};
use gitaly_proto::ssh_service_server::SshService;
use gitaly_proto::{
    ExitStatus, Repository, SshReceivePackRequest, SshReceivePackResponse, SshUploadArchiveRequest,
    SshUploadArchiveResponse, SshUploadPackRequest, SshUploadPackResponse,
    SshUploadPackWithSidechannelRequest, SshUploadPackWithSidechannelResponse,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::git::{self, GitChild, GitSpec};
use crate::hooks::env as henv;
use crate::listener::ConnInfo;
use crate::pktline::{self, Frame, NegotiationParser};
use crate::repo::Storage;
use crate::sidechannel;

/// Size of one stdout/stderr read from git (each read becomes one message or side-band packet
/// group; Gitaly's limit per message is 128 KiB).
const READ_BUF: usize = 64 * 1024;
/// How many bytes of queued side-band packets the sidechannel writer gathers into one write.
const WRITE_COALESCE: usize = 128 * 1024;

/// What the server stays configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The served storage.
    pub storage: Storage,
    /// Folder with the hook wrappers (`core.hooksPath`).
    pub hooks_dir: PathBuf,
    /// Internal API base for the hooks.
    pub gitlab_url: Option<String>,
    /// Secret file for the hooks' JWT.
    pub secret_file: Option<PathBuf>,
    /// Upload-pack negotiation deadline.
    pub upload_pack_negotiation_timeout: Duration,
    /// Upload-archive negotiation deadline.
    pub upload_archive_negotiation_timeout: Duration,
    /// One line per RPC on stderr.
    pub log_requests: bool,
}

/// The service; cheap to clone.
#[derive(Debug, Clone)]
pub struct DevSshService {
    settings: Arc<Settings>,
}

impl DevSshService {
    /// Creates the service.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings: Arc::new(settings),
        }
    }
}

/// Aborts the task when dropped, so a cancelled RPC leaves no task behind.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// Reads git's output into messages built by `make`, sent in order on `tx`.
fn output_pump<R, O>(
    r: R,
    keep: bool,
    tx: mpsc::Sender<Result<O, Status>>,
    make: fn(Vec<u8>) -> O,
) -> AbortOnDrop<Vec<u8>>
where
    R: AsyncRead + Unpin + Send + 'static,
    O: Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut r = r;
        let mut kept = Vec::new();
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if keep {
                        kept.extend_from_slice(&buf[..n]);
                    }
                    if tx.send(Ok(make(buf[..n].to_vec()))).await.is_err() {
                        break;
                    }
                }
            }
        }
        kept
    }))
}

/// Messages of the three streaming RPCs.
trait OutMsg: Send + 'static {
    fn stdout(b: Vec<u8>) -> Self;
    fn stderr(b: Vec<u8>) -> Self;
    fn exit(v: i32) -> Self;
}

/// Requests of the three streaming RPCs.
trait InMsg: Send + 'static {
    fn take_stdin(self) -> Vec<u8>;
}

macro_rules! std_messages {
    ($req:ty, $resp:ty) => {
        impl OutMsg for $resp {
            fn stdout(b: Vec<u8>) -> Self {
                Self {
                    stdout: b,
                    ..Default::default()
                }
            }
            fn stderr(b: Vec<u8>) -> Self {
                Self {
                    stderr: b,
                    ..Default::default()
                }
            }
            fn exit(v: i32) -> Self {
                Self {
                    exit_status: Some(ExitStatus { value: v }),
                    ..Default::default()
                }
            }
        }
        impl InMsg for $req {
            fn take_stdin(self) -> Vec<u8> {
                self.stdin
            }
        }
    };
}

std_messages!(SshReceivePackRequest, SshReceivePackResponse);
std_messages!(SshUploadArchiveRequest, SshUploadArchiveResponse);
std_messages!(SshUploadPackRequest, SshUploadPackResponse);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    ReceivePack,
    UploadArchive,
    UploadPack,
}

/// Detects the end of negotiation for the deadline.
enum Negotiation {
    None,
    Archive(pktline::FlushDetector),
    Pack(NegotiationParser),
}

impl Negotiation {
    fn feed(&mut self, d: &[u8]) -> bool {
        match self {
            Negotiation::None => true,
            Negotiation::Archive(f) => f.feed(d),
            Negotiation::Pack(p) => p.feed(d),
        }
    }
}

/// Drives one streaming RPC: client stdin → git, git stdout/stderr → messages, then the
/// exit-status/error epilogue of `kind`.
async fn drive_stream<I: InMsg, O: OutMsg>(
    mut child: GitChild,
    mut inbound: Streaming<I>,
    tx: mpsc::Sender<Result<O, Status>>,
    kind: Kind,
    timeout: Option<Duration>,
) {
    let (neg_tx, neg_rx) = watch::channel(timeout.is_none());
    let mut negotiation = match kind {
        Kind::ReceivePack => Negotiation::None,
        Kind::UploadArchive => Negotiation::Archive(Default::default()),
        Kind::UploadPack => Negotiation::Pack(NegotiationParser::new()),
    };
    let mut git_stdin = child.child.stdin.take();
    let stdin_task = AbortOnDrop(tokio::spawn(async move {
        loop {
            match inbound.message().await {
                Ok(Some(m)) => {
                    let data = m.take_stdin();
                    if negotiation.feed(&data) {
                        let _ = neg_tx.send(true);
                    }
                    if let Some(s) = git_stdin.as_mut()
                        && s.write_all(&data).await.is_err()
                    {
                        git_stdin = None;
                    }
                }
                Ok(None) => {
                    drop(git_stdin.take());
                    let _ = neg_tx.send(true);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    }));
    let Some(stdout) = child.child.stdout.take() else {
        return;
    };
    let Some(stderr) = child.child.stderr.take() else {
        return;
    };
    let mut out_task = output_pump(stdout, false, tx.clone(), O::stdout);
    let mut err_task = output_pump(stderr, true, tx.clone(), O::stderr);

    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(deadline);
    let mut deadline_active = timeout.is_some();
    let mut stdin_task = stdin_task;
    let mut stdin_done = false;
    let name = match kind {
        Kind::ReceivePack => "receive-pack",
        Kind::UploadArchive => "upload-archive",
        Kind::UploadPack => "upload-pack",
    };
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            () = tx.closed() => {
                // The client went away: kill git (and its hooks) before anything else happens.
                child.kill_group();
                return;
            }
            r = &mut stdin_task.0, if !stdin_done => {
                stdin_done = true;
                if !matches!(r, Ok(Ok(()))) {
                    child.kill_group();
                    let _ = child.wait().await;
                    let _ = tx.send(Err(Status::cancelled("client stream was cancelled"))).await;
                    return;
                }
            }
            () = &mut deadline, if deadline_active => {
                deadline_active = false;
                if !*neg_rx.borrow() {
                    child.kill_group();
                    let st = child.wait().await;
                    drop(out_task);
                    drop(err_task);
                    if let Ok(st) = st {
                        let _ = tx.send(Ok(O::exit(git::exit_value(&st)))).await;
                    }
                    let _ = tx
                        .send(Err(Status::deadline_exceeded(format!(
                            "running {name}: waiting for negotiation: context canceled"
                        ))))
                        .await;
                    return;
                }
            }
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(internal(format!("cmd wait: {e}")))).await;
            return;
        }
    };
    let _ = (&mut out_task.0).await;
    let stderr_bytes = (&mut err_task.0).await.unwrap_or_default();
    drop(stdin_task);
    if status.success() {
        if kind == Kind::UploadArchive {
            let _ = tx.send(Ok(O::exit(0))).await;
        }
        return;
    }
    let _ = tx.send(Ok(O::exit(git::exit_value(&status)))).await;
    let err = if kind == Kind::ReceivePack
        && stderr_bytes == b"fatal: the remote end hung up unexpectedly\n"
    {
        Status::cancelled("user canceled the push")
    } else {
        Status::internal(format!("cmd wait: {}", git::exit_text(&status)))
    };
    let _ = tx.send(Err(err)).await;
}

impl DevSshService {
    fn receive_pack_env(
        &self,
        first: &SshReceivePackRequest,
        repo_path: &std::path::Path,
    ) -> Vec<(String, String)> {
        let s = &self.settings;
        let repo = first.repository.clone().unwrap_or_default();
        let gl_repository = if repo.gl_repository.is_empty() {
            first.gl_repository.clone()
        } else {
            repo.gl_repository.clone()
        };
        let payload = serde_json::json!({
            "repository": {
                "storageName": repo.storage_name,
                "relativePath": repo.relative_path,
                "glRepository": gl_repository,
                "glProjectPath": repo.gl_project_path,
            },
            "object_format": "sha1",
            "runtime_dir": s.hooks_dir.parent().map(|p| p.display().to_string()).unwrap_or_default(),
            "user_details": {
                "username": first.gl_username,
                "userid": first.gl_id,
                "protocol": "ssh",
            },
            "requested_hooks": 15,
        });
        let mut env = vec![
            (henv::GL_ID.to_owned(), first.gl_id.clone()),
            (henv::GL_USERNAME.to_owned(), first.gl_username.clone()),
            (henv::GL_REPOSITORY.to_owned(), gl_repository),
            (
                henv::GL_PROJECT_PATH.to_owned(),
                repo.gl_project_path.clone(),
            ),
            (henv::GL_PROTOCOL.to_owned(), "ssh".to_owned()),
            (henv::RELATIVE_PATH.to_owned(), repo.relative_path.clone()),
            (henv::REPO_PATH.to_owned(), repo_path.display().to_string()),
            (
                henv::HOOKS_PAYLOAD.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(payload.to_string()),
            ),
        ];
        if let Some(url) = &s.gitlab_url {
            env.push((henv::GITLAB_URL.to_owned(), url.clone()));
        }
        if let Some(f) = &s.secret_file {
            env.push((henv::SECRET_FILE.to_owned(), f.display().to_string()));
        }
        env
    }
}

/// The first message of a streaming RPC (the one carrying the repository and options).
async fn first_request<I>(inbound: &mut Streaming<I>) -> Result<I, Status> {
    inbound
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty request"))
}

/// Starts git and answers a streaming RPC with its output, while [`drive_stream`] feeds it the
/// rest of `inbound`.
fn stream_git<I: InMsg, O: OutMsg>(
    spec: &GitSpec<'_>,
    inbound: Streaming<I>,
    kind: Kind,
    timeout: Option<Duration>,
) -> Result<Response<BoxStream<O>>, Status> {
    let child = git::spawn(spec).map_err(|e| internal(format!("start cmd: {e}")))?;
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(drive_stream(child, inbound, tx, kind, timeout));
    Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
}

/// Upload-pack's config as Gitaly sets it for every SSH fetch, before the request's options.
const UPLOAD_PACK_CONFIG: &[&str] = &[
    "uploadpack.allowFilter=true",
    "uploadpack.allowAnySHA1InWant=true",
];

impl DevSshService {
    /// The request log line: `dev-gitaly: <RPC> <storage>:<relative path>`.
    fn log_rpc(&self, rpc: &str, repo: Option<&Repository>) {
        if !self.settings.log_requests {
            return;
        }
        let (storage, path) = repo.map_or(("", ""), |r| {
            (r.storage_name.as_str(), r.relative_path.as_str())
        });
        #[expect(clippy::print_stderr, reason = "the stand-in server's request log")]
        {
            eprintln!("dev-gitaly: {rpc} {storage}:{path}");
        }
    }
}

#[tonic::async_trait]
impl SshService for DevSshService {
    async fn ssh_upload_pack_with_sidechannel(
        &self,
        request: Request<SshUploadPackWithSidechannelRequest>,
    ) -> Result<Response<SshUploadPackWithSidechannelResponse>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let id = sidechannel::id_from_metadata(request.metadata());
        let req = request.into_inner();
        self.log_rpc("SSHUploadPackWithSidechannel", req.repository.as_ref());
        let repo = self.settings.storage.locate(req.repository.as_ref())?;
        git::check_config_options(&req.git_config_options)?;
        let id = id?;
        let mut control = conn.and_then(|c| c.control).ok_or_else(|| {
            Status::unavailable("sidechannel: connection is not multiplexed (no backchannel)")
        })?;
        let stream = sidechannel::open(&mut control, id).await?;
        let mut config: Vec<String> = UPLOAD_PACK_CONFIG.iter().map(|s| (*s).to_owned()).collect();
        config.extend(req.git_config_options.iter().cloned());
        let child = git::spawn(&GitSpec {
            subcommand: "upload-pack",
            repo: &repo,
            config,
            git_protocol: &req.git_protocol,
            env: Vec::new(),
        })
        .map_err(|e| internal(format!("running upload-pack: start cmd: {e}")))?;
        let stats = run_sidechannel_upload_pack(
            child,
            stream,
            self.settings.upload_pack_negotiation_timeout,
        )
        .await?;
        Ok(Response::new(SshUploadPackWithSidechannelResponse {
            packfile_negotiation_statistics: Some(stats),
        }))
    }

    type SSHUploadPackStream = BoxStream<SshUploadPackResponse>;

    async fn ssh_upload_pack(
        &self,
        request: Request<Streaming<SshUploadPackRequest>>,
    ) -> Result<Response<Self::SSHUploadPackStream>, Status> {
        let mut inbound = request.into_inner();
        let first = first_request(&mut inbound).await?;
        self.log_rpc("SSHUploadPack", first.repository.as_ref());
        let repo = self.settings.storage.locate(first.repository.as_ref())?;
        if !first.stdin.is_empty() {
            return Err(Status::invalid_argument("non-empty stdin in first request"));
        }
        git::check_config_options(&first.git_config_options)?;
        let mut config: Vec<String> = UPLOAD_PACK_CONFIG.iter().map(|s| (*s).to_owned()).collect();
        config.extend(first.git_config_options.iter().cloned());
        let spec = GitSpec {
            subcommand: "upload-pack",
            repo: &repo,
            config,
            git_protocol: &first.git_protocol,
            env: Vec::new(),
        };
        let timeout = Some(self.settings.upload_pack_negotiation_timeout);
        stream_git(&spec, inbound, Kind::UploadPack, timeout)
    }

    type SSHReceivePackStream = BoxStream<SshReceivePackResponse>;

    async fn ssh_receive_pack(
        &self,
        request: Request<Streaming<SshReceivePackRequest>>,
    ) -> Result<Response<Self::SSHReceivePackStream>, Status> {
        let mut inbound = request.into_inner();
        let first = first_request(&mut inbound).await?;
        self.log_rpc("SSHReceivePack", first.repository.as_ref());
        if first.gl_id.is_empty() {
            return Err(Status::invalid_argument("empty GlId"));
        }
        if !first.stdin.is_empty() {
            return Err(Status::invalid_argument("non-empty data in first request"));
        }
        let repo = self.settings.storage.locate(first.repository.as_ref())?;
        git::check_config_options(&first.git_config_options)?;
        let mut config = vec![format!(
            "core.hooksPath={}",
            self.settings.hooks_dir.display()
        )];
        config.extend(git::RECEIVE_PACK_CONFIG.iter().map(|s| (*s).to_owned()));
        config.extend(first.git_config_options.iter().cloned());
        let env = self.receive_pack_env(&first, &repo);
        let spec = GitSpec {
            subcommand: "receive-pack",
            repo: &repo,
            config,
            git_protocol: &first.git_protocol,
            env,
        };
        stream_git(&spec, inbound, Kind::ReceivePack, None)
    }

    type SSHUploadArchiveStream = BoxStream<SshUploadArchiveResponse>;

    async fn ssh_upload_archive(
        &self,
        request: Request<Streaming<SshUploadArchiveRequest>>,
    ) -> Result<Response<Self::SSHUploadArchiveStream>, Status> {
        let mut inbound = request.into_inner();
        let first = first_request(&mut inbound).await?;
        self.log_rpc("SSHUploadArchive", first.repository.as_ref());
        let repo = self.settings.storage.locate(first.repository.as_ref())?;
        if !first.stdin.is_empty() {
            return Err(Status::invalid_argument("non-empty stdin in first request"));
        }
        let spec = GitSpec {
            subcommand: "upload-archive",
            repo: &repo,
            config: Vec::new(),
            git_protocol: "",
            env: Vec::new(),
        };
        let timeout = Some(self.settings.upload_archive_negotiation_timeout);
        stream_git(&spec, inbound, Kind::UploadArchive, timeout)
    }
}

/// Why the client side of the sidechannel stopped early.
enum StdinEnd {
    /// Stream ended without the final flush (short write or client gone).
    Eof,
    /// A frame the protocol forbids.
    Protocol(String),
}

/// Runs upload-pack over an open sidechannel stream; returns the negotiation statistics.
async fn run_sidechannel_upload_pack(
    mut child: GitChild,
    stream: tokio_yamux::StreamHandle,
    timeout: Duration,
) -> Result<gitaly_proto::PackfileNegotiationStatistics, Status> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(16);
    let (close_tx, close_rx) = oneshot::channel::<()>();
    // One writer keeps stdout and stderr packets whole and in arrival order. It closes the
    // stream only when told to, after git has exited: a client seeing our FIN may reset the
    // stream at once, which must not read as a cancellation while git is still running.
    let mut writer = AbortOnDrop(tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some((band, data)) = rx.recv().await {
            buf.clear();
            pktline::encode_sideband(band, &data, &mut buf);
            // Whatever else is already queued goes out in the same write (fewer yamux frames
            // and syscalls); order is the queue's order.
            while buf.len() < WRITE_COALESCE {
                let Ok((band, data)) = rx.try_recv() else {
                    break;
                };
                pktline::encode_sideband(band, &data, &mut buf);
            }
            if wr.write_all(&buf).await.is_err() {
                // Keep draining so the pumps never block.
                while rx.recv().await.is_some() {}
                return;
            }
        }
        let _ = wr.flush().await;
        let _ = close_rx.await;
        let _ = wr.shutdown().await;
    }));

    let parser = Arc::new(Mutex::new(NegotiationParser::new()));
    let (neg_tx, neg_rx) = watch::channel(false);
    let (end_tx, end_rx) = oneshot::channel::<Result<(), StdinEnd>>();
    let mut git_stdin = child.child.stdin.take();
    let parser2 = Arc::clone(&parser);
    // Reads client frames into git's stdin. After the final flush it keeps reading (and
    // discarding): tokio-yamux only processes the peer's window updates while the stream is
    // read, so a writer whose reader went idle stalls once 256 KiB are in flight.
    let stdin_task = AbortOnDrop(tokio::spawn(async move {
        let end = loop {
            match sidechannel::read_frame(&mut rd).await {
                Ok(Some(Frame::Data(d))) => {
                    let done = parser2.lock().map(|mut p| p.feed(&d)).unwrap_or(false);
                    if done {
                        let _ = neg_tx.send(true);
                    }
                    if let Some(s) = git_stdin.as_mut()
                        && s.write_all(&d).await.is_err()
                    {
                        git_stdin = None;
                    }
                }
                Ok(Some(Frame::Flush)) => {
                    drop(git_stdin.take());
                    let _ = neg_tx.send(true);
                    break Ok(());
                }
                Ok(None) => break Err(StdinEnd::Eof),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    break Err(StdinEnd::Protocol(e.to_string()));
                }
                Err(_) => break Err(StdinEnd::Eof),
            }
        };
        let clean = end.is_ok();
        let _ = end_tx.send(end);
        if clean {
            let mut sink = vec![0u8; 8192];
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        }
    }));

    let (Some(stdout), Some(stderr)) = (child.child.stdout.take(), child.child.stderr.take())
    else {
        return Err(internal("running upload-pack: missing pipes"));
    };
    let mut out_task = band_pump(stdout, tx.clone(), pktline::BAND_STDOUT, false);
    let mut err_task = band_pump(stderr, tx, pktline::BAND_STDERR, true);

    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut deadline_active = true;
    let mut end_rx = end_rx;
    let mut stdin_done = false;
    let status = loop {
        tokio::select! {
            // The client's end of stdin first: when it is already known to have cut the
            // stream short, a git that exited in the meantime must not turn that into success.
            biased;
            r = &mut end_rx, if !stdin_done => {
                stdin_done = true;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(StdinEnd::Protocol(m))) => {
                        child.kill_group();
                        return Err(internal(format!("running upload-pack: {m}")));
                    }
                    _ => {
                        child.kill_group();
                        return Err(Status::cancelled("running upload-pack: user canceled the request"));
                    }
                }
            }
            st = child.wait() => break st,
            () = &mut deadline, if deadline_active => {
                deadline_active = false;
                if !*neg_rx.borrow() {
                    child.kill_group();
                    return Err(Status::deadline_exceeded(
                        "running upload-pack: waiting for negotiation: context canceled",
                    ));
                }
            }
        }
    };
    let status = status.map_err(|e| internal(format!("running upload-pack: cmd wait: {e}")))?;
    let _ = (&mut out_task.0).await;
    let stderr_bytes = (&mut err_task.0).await.unwrap_or_default();
    // Both pumps are done and dropped their senders: the writer flushes and closes the stream.
    let _ = close_tx.send(());
    let _ = (&mut writer.0).await;
    drop(stdin_task);
    if !status.success() {
        return Err(internal(format!(
            "running upload-pack: cmd wait: {}, stderr: {}",
            git::exit_text(&status),
            pktline::go_quote(&String::from_utf8_lossy(&stderr_bytes))
        )));
    }
    let stats = parser.lock().map(|p| p.stats()).unwrap_or_default();
    Ok(stats)
}

/// Reads git's stdout or stderr and queues it for the sidechannel writer on `band`.
fn band_pump<R>(
    mut r: R,
    tx: mpsc::Sender<(u8, Vec<u8>)>,
    band: u8,
    keep: bool,
) -> AbortOnDrop<Vec<u8>>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut kept = Vec::new();
        // One read fills at most one side-band-64k packet.
        let mut buf = vec![0u8; pktline::MAX_SIDEBAND_DATA];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(mut n) => {
                    // Top the packet up with what the pipe already holds, without waiting.
                    while n < buf.len() {
                        match r.read(&mut buf[n..]).now_or_never() {
                            Some(Ok(more)) if more > 0 => n += more,
                            _ => break,
                        }
                    }
                    if keep {
                        kept.extend_from_slice(&buf[..n]);
                    }
                    if tx.send((band, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        kept
    }))
}
