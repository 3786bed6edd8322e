//! The three RPCs: the generic bidi stdin/stdout/stderr loop (Gitaly `internal/stream/
//! std_stream.go`) for receive-pack and upload-archive, and the unary call + sidechannel proxy
//! (Gitaly `client/upload_pack.go`, `stream.ProxyPktLine`) for upload-pack.

use crate::connection::{self, Connection, SidechannelStream};
use crate::observe::{self, Rpc, Tally};
use crate::output::{self, Output};
use crate::pool::Pool;
use crate::retry::{AttemptStdin, Committed, Replay};
use crate::sidechannel::{self, Band, FramingError};
use crate::stdin;
use crate::{CallMeta, Error, Stdio, Target, address, metadata, proto};
use futures::stream::{self, BoxStream, StreamExt};
use proto::ssh_service_client::SshServiceClient;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Runs the call on a fresh current-thread runtime (on its own thread, see [`output`]) after
/// parsing the address; this thread writes the output. Each attempt dials afresh (or takes the
/// pool's connection) and runs `body`; a failed attempt is made again as the retry policy says,
/// while it is not committed (see [`crate::retry`]).
///
/// Cancellation (`io.cancel`, also set by a failed write) drops the dial or the body mid-way and
/// then the whole runtime: every task on it goes (the tonic call, whose HTTP/2 stream is reset,
/// the sidechannel, the yamux session), which closes the connection to Gitaly; Gitaly cancels
/// the RPC's context and kills git.
///
/// The call is counted once in `tally` ([`crate::observe`]), from after the address parsed to
/// its final result.
fn run<T, F, Fut>(
    t: &Target,
    pool: Option<&Pool>,
    io: Stdio<'_>,
    tally: &Tally,
    body: F,
) -> Result<T, Error>
where
    T: Send,
    F: Fn(Connection, AttemptStdin, Output, Committed) -> Fut + Send,
    Fut: Future<Output = Result<T, Error>>,
{
    let address = address::parse(&t.address)?;
    tally.started();
    let (stdout, stderr, cancel, replay, stdin_error) = prepare(io);
    let watched = cancel.clone();
    let result = output::relay(stdout, stderr, &cancel, move |out| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Local(format!("failed to start the Gitaly client runtime: {e}")))?;
        runtime.block_on(async {
            tokio::select! {
                biased;
                () = watched.cancelled() => Err(Error::cancelled()),
                result = attempts(&address, t, pool, &replay, &out, &body) => result,
            }
        })
    })
    .and_then(|value| stdin_checked(value, &stdin_error));
    tally.finish(&result);
    result
}

/// [`run`], except that with a pool (gitlab-sshd) the call is a task on the pool's runtime, the
/// server's own, instead of a thread and a runtime of its own per call (docs/gitlab-sshd.md,
/// "Memory"). Its pieces must then be owned and `Send`; the upload-pack call's are (tonic's
/// bidi call futures cannot be shown `Send`, so pushes and archives keep [`run`]).
fn run_spawnable<T, F, Fut>(
    t: &Target,
    pool: Option<&Pool>,
    io: Stdio<'_>,
    tally: &Tally,
    body: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: Fn(Connection, AttemptStdin, Output, Committed) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let Some(pool) = pool else {
        return run(t, None, io, tally, body);
    };
    let address = address::parse(&t.address)?;
    tally.started();
    let (stdout, stderr, cancel, replay, stdin_error) = prepare(io);
    let watched = cancel.clone();
    let (t, owned_pool) = (t.clone(), pool.clone());
    let call = move |out: Output| async move {
        tokio::select! {
            biased;
            () = watched.cancelled() => Err(Error::cancelled()),
            result = attempts(&address, &t, Some(&owned_pool), &replay, &out, &body) => result,
        }
    };
    let result = output::relay_spawned(stdout, stderr, &cancel, pool.runtime(), call)
        .and_then(|value| stdin_checked(value, &stdin_error));
    tally.finish(&result);
    result
}

type Prepared<'a> = (
    &'a mut (dyn std::io::Write + Send),
    &'a mut (dyn std::io::Write + Send),
    tokio_util::sync::CancellationToken,
    Replay,
    stdin::StdinError,
);

/// Starts the stdin reader of a call: its output ends, its cancel token, the replayable stdin
/// and the reader's error cell.
fn prepare(io: Stdio<'_>) -> Prepared<'_> {
    let Stdio {
        stdin,
        stdout,
        stderr,
        cancel,
    } = io;
    let (tx, rx) = mpsc::channel(stdin::CHANNEL_DEPTH);
    let stdin_error = stdin::spawn(stdin, tx, |chunk| chunk);
    let replay = Replay::new(rx, stdin_error.clone());
    (stdout, stderr, cancel, replay, stdin_error)
}

/// A call that succeeded still fails if reading its stdin did.
fn stdin_checked<T>(value: T, stdin_error: &stdin::StdinError) -> Result<T, Error> {
    match stdin_error.get() {
        Some(e) => Err(Error::Stdin(e)),
        None => Ok(value),
    }
}

/// Makes the call's attempts: dial, `body`, and on a failure the policy retries, the backoff
/// and the next attempt, unless output already went out, Gitaly began its response or the
/// consumed stdin cannot be replayed.
async fn attempts<T, F, Fut>(
    address: &address::Address,
    t: &Target,
    pool: Option<&Pool>,
    replay: &Replay,
    out: &Output,
    body: &F,
) -> Result<T, Error>
where
    F: Fn(Connection, AttemptStdin, Output, Committed) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let policy = t.retry.as_ref();
    let mut attempt = 1;
    // A cached connection may have died unnoticed since its last call (Gitaly restarted): one
    // fresh dial is allowed for that, policy or not, while the call is not committed.
    let mut stale_redial = pool.is_some();
    loop {
        let committed = Committed::default();
        let mut reused = None;
        let result = async {
            let dialled = tokio::time::Instant::now();
            let conn = match pool {
                Some(p) => {
                    let (id, conn, was_cached) = p.connection(t, address).await?;
                    reused = Some((id, was_cached));
                    conn
                }
                None => connection::connect(address, &t.trust).await?,
            };
            // A Gitaly that accepted and stays silent fails like a dial timeout.
            let heard = conn.heard.clone();
            let stdin = replay.attempt().await;
            tokio::select! {
                result = body(conn, stdin, out.clone(), committed.clone()) => result,
                e = heard.unless_heard_by(dialled + connection::DIAL_TIMEOUT) => Err(e),
            }
        }
        .await;
        let error = match result {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        let unavailable = error.code() == Some(tonic::Code::Unavailable);
        if let (Some(p), Some((id, was_cached))) = (pool, reused)
            && unavailable
        {
            p.forget_target(t, id);
            if was_cached
                && std::mem::take(&mut stale_redial)
                && !out.started()
                && !committed.get()
                && replay.replayable().await
            {
                tracing::debug!(
                    error_message = %error,
                    "cached Gitaly connection failed before the call began; dialling again"
                );
                continue;
            }
        }
        let Some(policy) = policy.filter(|p| attempt < p.max_attempts && p.retries(&error)) else {
            return Err(error);
        };
        if out.started() || committed.get() || !replay.replayable().await {
            tracing::debug!(
                attempt,
                error_message = %error,
                "Gitaly call failed after it began answering; not retried"
            );
            return Err(error);
        }
        let wait = policy.backoff(attempt);
        tracing::info!(
            attempt,
            wait_ms = wait.as_millis() as u64,
            error_message = %error,
            "Gitaly call failed; retrying as retry_config says"
        );
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// The counting of one call of `rpc`, reported to the pool's observer (none without a pool).
fn tally_for(pool: Option<&Pool>, rpc: &'static Rpc) -> Tally {
    Tally::new(pool.and_then(Pool::observer), rpc)
}

fn request_with_meta<T>(
    message: T,
    t: &Target,
    m: &CallMeta,
    git_command: &str,
    sidechannel_id: Option<i64>,
) -> Request<T> {
    let mut request = Request::new(message);
    let pairs = metadata::assemble(
        m,
        git_command,
        metadata::authorization(&t.token),
        sidechannel_id,
    );
    metadata::apply(pairs, request.metadata_mut());
    request
}

/// What the bidi responses have in common (Gitaly's `ExitStatuser`).
trait StdResponse {
    fn into_parts(self) -> (Vec<u8>, Vec<u8>, Option<i32>);
}

impl StdResponse for proto::SshReceivePackResponse {
    fn into_parts(self) -> (Vec<u8>, Vec<u8>, Option<i32>) {
        (self.stdout, self.stderr, self.exit_status.map(|s| s.value))
    }
}

impl StdResponse for proto::SshUploadArchiveResponse {
    fn into_parts(self) -> (Vec<u8>, Vec<u8>, Option<i32>) {
        (self.stdout, self.stderr, self.exit_status.map(|s| s.value))
    }
}

/// What one attempt of a bidi call works with.
struct BidiAttempt {
    stdin: AttemptStdin,
    out: Output,
    committed: Committed,
    tally: Tally,
}

/// The bidi loop: the first message, then stdin chunks, then CloseSend; responses relayed
/// until the stream ends. The attempt is committed once Gitaly sends response headers (it
/// has begun answering; grpc-go's rule).
async fn bidi<Req, Resp, Call, Fut>(
    conn: Connection,
    request: Request<Req>,
    wrap: fn(Vec<u8>) -> Req,
    attempt: BidiAttempt,
    call: Call,
) -> Result<Option<i32>, Error>
where
    Req: Send + 'static,
    Resp: StdResponse,
    Call: FnOnce(SshServiceClient<Channel>, Request<BoxStream<'static, Req>>) -> Fut,
    Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>>,
{
    let BidiAttempt {
        stdin,
        out,
        committed,
        tally,
    } = attempt;
    let (metadata, extensions, first) = request.into_parts();
    // tonic resolves the call only once response headers arrive, and Gitaly sends none before it
    // has read the first message: it must be ready before awaiting (gitaly.md §2.5).
    let chunks = stream::unfold(stdin, move |mut stdin| async move {
        stdin.next().await.map(|chunk| (wrap(chunk), stdin))
    });
    let sent = tally.clone();
    let messages = stream::once(std::future::ready(first))
        .chain(chunks)
        .enumerate()
        .map(move |(i, message)| {
            sent.sent(i as u64 + 1);
            message
        })
        .boxed();
    let request = Request::from_parts(metadata, extensions, messages);

    let client = SshServiceClient::new(conn.channel);
    let mut responses = call(client, request)
        .await
        .map_err(|s| Error::from_status(&s))?
        .into_inner();
    committed.set();
    let mut exit_status = None;
    loop {
        match responses.message().await {
            Ok(Some(message)) => {
                tally.received();
                let (stdout, stderr, status) = message.into_parts();
                if status.is_some() {
                    exit_status = status;
                }
                out.stderr(stderr).await?;
                out.stdout(stdout).await?;
            }
            Ok(None) => break,
            Err(status) => return Err(Error::from_status(&status)),
        }
    }
    Ok(exit_status)
}

pub(crate) fn receive_pack(
    t: &Target,
    m: &CallMeta,
    r: proto::SshReceivePackRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    receive_pack_via(None, t, m, r, io)
}

pub(crate) fn receive_pack_via(
    pool: Option<&Pool>,
    t: &Target,
    m: &CallMeta,
    r: proto::SshReceivePackRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    bidi_via(
        pool,
        (t, m, r, io),
        (&observe::RECEIVE_PACK, "git-receive-pack"),
        |stdin| proto::SshReceivePackRequest {
            stdin,
            ..Default::default()
        },
        |mut client, req| async move { client.ssh_receive_pack(req).await },
    )
}

pub(crate) fn upload_archive(
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadArchiveRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    upload_archive_via(None, t, m, r, io)
}

pub(crate) fn upload_archive_via(
    pool: Option<&Pool>,
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadArchiveRequest,
    io: Stdio,
) -> Result<Option<i32>, Error> {
    bidi_via(
        pool,
        (t, m, r, io),
        (&observe::UPLOAD_ARCHIVE, "git-upload-archive"),
        |stdin| proto::SshUploadArchiveRequest {
            stdin,
            ..Default::default()
        },
        |mut client, req| async move { client.ssh_upload_archive(req).await },
    )
}

/// A bidi call (push or archive) through [`run`]: each attempt sends `r` with GitLab Shell's
/// metadata for `git_command`, then its stdin chunks wrapped by `wrap`, over `call`.
fn bidi_via<Req, Resp, Call, Fut>(
    pool: Option<&Pool>,
    (t, m, r, io): (&Target, &CallMeta, Req, Stdio<'_>),
    (rpc, git_command): (&'static Rpc, &str),
    wrap: fn(Vec<u8>) -> Req,
    call: Call,
) -> Result<Option<i32>, Error>
where
    Req: Clone + Send + Sync + 'static,
    Resp: StdResponse,
    Call:
        Fn(SshServiceClient<Channel>, Request<BoxStream<'static, Req>>) -> Fut + Copy + Send + Sync,
    Fut: Future<Output = Result<Response<Streaming<Resp>>, Status>>,
{
    let tally = tally_for(pool, rpc);
    run(t, pool, io, &tally, |conn, stdin, out, committed| {
        bidi(
            conn,
            request_with_meta(r.clone(), t, m, git_command, None),
            wrap,
            BidiAttempt {
                stdin,
                out,
                committed,
                tally: tally.clone(),
            },
            call,
        )
    })
}

/// Gitaly's message when the RPC ended without ever opening the sidechannel.
const CALLBACK_DID_NOT_RUN: &str = "callback de-registered without having run";

pub(crate) fn upload_pack(
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadPackWithSidechannelRequest,
    io: Stdio,
) -> Result<Option<proto::PackfileNegotiationStatistics>, Error> {
    upload_pack_via(None, t, m, r, io)
}

pub(crate) fn upload_pack_via(
    pool: Option<&Pool>,
    t: &Target,
    m: &CallMeta,
    r: proto::SshUploadPackWithSidechannelRequest,
    io: Stdio,
) -> Result<Option<proto::PackfileNegotiationStatistics>, Error> {
    // The sidechannel is outside gRPC: the attempt is committed by the output it carries.
    let tally = tally_for(pool, &observe::UPLOAD_PACK);
    let (owned_t, owned_m) = (t.clone(), m.clone());
    run_spawnable(t, pool, io, &tally, move |conn, stdin, out, _committed| {
        let (id, mut waiter) = conn.registry.register();
        let request = request_with_meta(r.clone(), &owned_t, &owned_m, "git-upload-pack", Some(id));
        async move {
            let mut client = SshServiceClient::new(conn.channel);
            // Aborted if the call is dropped (cancelled): on gitlab-sshd's shared runtime a
            // detached task would keep the RPC open.
            let mut rpc = AbortOnDropHandle::new(tokio::spawn(async move {
                client.ssh_upload_pack_with_sidechannel(request).await
            }));
            let rpc_result = |joined: Result<
                Result<Response<proto::SshUploadPackWithSidechannelResponse>, Status>,
                tokio::task::JoinError,
            >| match joined {
                Ok(Ok(response)) => Ok(response.into_inner().packfile_negotiation_statistics),
                Ok(Err(status)) => Err(Error::from_status(&status)),
                Err(e) => Err(Error::Local(format!("gitaly call task failed: {e}"))),
            };

            let stream = tokio::select! {
                biased;
                stream = &mut waiter => stream.ok(),
                joined = &mut rpc => {
                    conn.registry.remove(id);
                    // A sidechannel accepted just before the response still counts.
                    let outcome = rpc_result(joined);
                    return match waiter.try_recv() {
                        Ok(stream) => finish_proxy(proxy(stream, stdin, out), outcome).await,
                        Err(_) => outcome.and(Err(Error::Sidechannel(CALLBACK_DID_NOT_RUN.to_owned()))),
                    };
                }
            };
            conn.registry.remove(id);
            let Some(stream) = stream else {
                return rpc_result(rpc.await)
                    .and(Err(Error::Sidechannel(CALLBACK_DID_NOT_RUN.to_owned())));
            };

            let proxy = proxy(stream, stdin, out);
            tokio::pin!(proxy);
            tokio::select! {
                proxied = &mut proxy => {
                    // Gitaly answers after closing the sidechannel; its status takes precedence.
                    let stats = rpc_result(rpc.await)?;
                    proxied.map(|()| stats)
                }
                joined = &mut rpc => finish_proxy(proxy, rpc_result(joined)).await,
            }
        }
    })
}

/// How long a failed call still relays what the sidechannel carries (git's stderr, sent before
/// the status) when the server has not closed it yet.
const DRAIN_AFTER_ERROR: Duration = Duration::from_secs(5);

/// Lets the proxy finish after the RPC ended, like Gitaly's `Waiter.Close` which waits for the
/// sidechannel callback. The RPC's error takes precedence over the proxy's.
async fn finish_proxy<T>(
    proxy: impl Future<Output = Result<(), Error>>,
    outcome: Result<T, Error>,
) -> Result<T, Error> {
    match outcome {
        Ok(value) => proxy.await.map(|()| value),
        Err(e) => {
            let _ = tokio::time::timeout(DRAIN_AFTER_ERROR, proxy).await;
            Err(e)
        }
    }
}

/// Copies local stdin into frames (then `0000`) and demultiplexes the server's side-band
/// packets into stdout/stderr until the server closes the stream. Does not wait for local stdin.
async fn proxy(
    stream: SidechannelStream,
    mut stdin: AttemptStdin,
    out: Output,
) -> Result<(), Error> {
    let stdin_error = stdin.error();
    let (mut reader, mut writer) = tokio::io::split(stream);
    let writer_error = stdin_error.clone();
    let mut writer_task = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut frames = Vec::with_capacity(stdin::STDIN_CHUNK + 16);
        while let Some(chunk) = stdin.next().await {
            frames.clear();
            sidechannel::encode_frames(&chunk, &mut frames);
            writer.write_all(&frames).await?;
        }
        if writer_error.get().is_none() {
            // yamux has no half-close: end of stdin travels in-band. Don't shut the stream down
            // here; that would send FIN (or RST) before the server is done.
            writer.write_all(sidechannel::FLUSH).await?;
            writer.flush().await?;
        }
        Ok::<_, std::io::Error>(writer)
    }));

    let demuxed = demux_stream(&mut reader, &out).await;

    // Server side is at EOF: close our side cleanly if the writer is done, else abandon it.
    if writer_task.is_finished() {
        if let Ok(Ok(writer)) = (&mut writer_task).await {
            let mut stream = reader.unsplit(writer);
            let _ = stream.shutdown().await;
        }
    } else {
        writer_task.abort();
    }
    demuxed?;
    match stdin_error.get() {
        Some(e) => Err(Error::Stdin(e)),
        None => Ok(()),
    }
}

/// Bytes asked of the sidechannel per read (it hands over whatever yamux has buffered). Below
/// the allocator's mmap threshold (gitlab-sshd's `alloc`), so each read's output chunk comes
/// from, and goes back to, the heap.
const DEMUX_READ: usize = 32 * 1024;

/// Reads side-band packets until a clean EOF between packets. Each read's stdout data goes out
/// as one chunk, so the writing thread sees few, big writes; stderr data first sends the stdout
/// before it, so the order across both streams is kept. Packets may span reads
/// ([`sidechannel::Demuxer`]): memory per call is one read buffer, not the largest packet.
async fn demux_stream<R: AsyncRead + Unpin>(reader: &mut R, out: &Output) -> Result<(), Error> {
    let io_error = |e: std::io::Error| Error::Sidechannel(format!("sidechannel: {e}"));
    let framing = |e: FramingError| Error::Sidechannel(e.to_string());
    let mut buf = vec![0u8; DEMUX_READ];
    let mut demuxer = sidechannel::Demuxer::default();
    loop {
        let n = reader.read(&mut buf).await.map_err(io_error)?;
        if n == 0 {
            return if demuxer.at_boundary() {
                Ok(())
            } else {
                Err(Error::Sidechannel(FramingError::Truncated.to_string()))
            };
        }
        let mut input = &buf[..n];
        let mut stdout = Vec::new();
        let mut failed = None;
        while !input.is_empty() {
            let (used, piece) = match demuxer.feed(input) {
                Ok(fed) => fed,
                Err(e) => {
                    failed = Some(framing(e));
                    break;
                }
            };
            input = &input[used..];
            match piece {
                Some(Band::Stdout(data)) => {
                    if stdout.capacity() == 0 {
                        stdout.reserve_exact(n);
                    }
                    stdout.extend_from_slice(data);
                }
                Some(Band::Stderr(data)) => {
                    if !stdout.is_empty() {
                        out.stdout(std::mem::take(&mut stdout)).await?;
                    }
                    out.stderr(data.to_vec()).await?;
                }
                None => {}
            }
        }
        // What came before a framing error still reaches the user, as git would show it.
        if !stdout.is_empty() {
            out.stdout(stdout).await?;
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
}
