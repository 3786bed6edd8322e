//! The internal-API transport for `http://` and `http+unix://` (one of the two behind
//! `api/client.rs`'s `Transport`): hyper's HTTP/1.1 client connection over a tokio `TcpStream` or
//! `UnixStream`, driven by a current-thread runtime built in the calling thread for each request.
//! One request per connection (`Connection: close`, as GitLab Shell sets `request.Close`), no
//! TLS, no extra threads (reqwest's blocking client starts a runtime thread, which the
//! authorized-keys check, run on every SSH connection, cannot afford). `https://` keeps using
//! reqwest.
//!
//! What is ours on top of hyper: the `Host` header (`unix` for sockets), address resolution in
//! the calling thread (tokio's would start a blocking-pool thread), and one timeout covering
//! connect, headers and body. Redirects are never followed (docs/api-json.md, "Redirects"): a
//! 3xx is returned as is and the caller refuses it, so no request (and no `Authorization`)
//! ever goes to a host the answer names. A body that fails after the headers arrived (a stall
//! past the deadline, a cut connection) is reported in [`Response::body_error`], not as a
//! transport error: the caller decodes it as Go does (once, `parsing failed`).

use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::task::Poll;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP to the URL's host and port.
    Tcp,
    /// Every request goes to this unix socket, whatever the URL's host (`unix`).
    Unix(String),
}

/// One response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body bytes (transfer coding removed); empty when `body_error` is set.
    pub body: Vec<u8>,
    /// Why reading the body failed after the headers had arrived.
    pub body_error: Option<String>,
}

impl Response {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_io_events_per_tick(16)
        .build()
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "Client.Timeout exceeded")
}

/// A hyper error with its causes, `: `-separated (hyper's own text hides the cause).
fn hyper_error(e: hyper::Error) -> io::Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else if e.is_incomplete_message() {
        io::ErrorKind::UnexpectedEof
    } else if e.is_parse() {
        io::ErrorKind::InvalidData
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, text)
}

/// A connection of any kind, so that hyper's client is instantiated once.
trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// One exchange on a fresh connection: writes `request`, reads the whole response by
/// `deadline`. A failure after the headers is the response's `body_error`.
async fn exchange(
    io: Box<dyn Io>,
    request: Request<Full<Bytes>>,
    deadline: tokio::time::Instant,
) -> io::Result<Response> {
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(hyper_error)?;
    // The connection is driven right here, next to the exchange (no spawned task): its
    // failures reach `send_request` or the body; with `Connection: close` it ends with them.
    let exchange = async move {
        let response = tokio::time::timeout_at(deadline, sender.send_request(request))
            .await
            .map_err(|_| timed_out())?
            .map_err(hyper_error)?;
        let (parts, body) = response.into_parts();
        let body = match tokio::time::timeout_at(deadline, body.collect()).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(e)) => Err(hyper_error(e).to_string()),
            Err(_) => Err(format!("{} while reading body", timed_out())),
        };
        Ok::<_, io::Error>((parts, body))
    };
    let mut exchange = std::pin::pin!(exchange);
    let mut conn = Some(Box::pin(conn));
    let mut conn_result = None;
    let outcome = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = exchange.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if let Some(c) = conn.as_mut()
            && let Poll::Ready(r) = c.as_mut().poll(cx)
        {
            conn_result = Some(r);
            // Dropping the finished connection closes its channels, which settles the
            // exchange: poll it once more.
            conn = None;
            return exchange.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await;
    let (parts, body) = match (outcome, conn_result) {
        (Ok(done), _) => done,
        // The connection's own error says more than "connection closed".
        (Err(_), Some(Err(e))) => return Err(hyper_error(e)),
        (Err(e), _) => return Err(e),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).trim().to_owned(),
            )
        })
        .collect();
    let (body, body_error) = match body {
        Ok(bytes) => (bytes.to_vec(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Ok(Response {
        status: parts.status.as_u16(),
        headers,
        body,
        body_error,
    })
}

/// The TCP addresses for an authority (port 80 by default), resolved in this thread.
fn tcp_addrs(uri: &Uri) -> io::Result<Vec<SocketAddr>> {
    let host = uri.host().unwrap_or_default();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = uri.port_u16().unwrap_or(80);
    Ok((host, port).to_socket_addrs()?.collect())
}

async fn connect_and_exchange(
    endpoint: &Endpoint,
    uri: &Uri,
    request: Request<Full<Bytes>>,
    deadline: tokio::time::Instant,
) -> io::Result<Response> {
    match endpoint {
        Endpoint::Unix(path) => {
            exchange(
                Box::new(tokio::net::UnixStream::connect(path).await?),
                request,
                deadline,
            )
            .await
        }
        Endpoint::Tcp => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no such host");
            for addr in tcp_addrs(uri)? {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream.set_nodelay(true)?;
                        return exchange(Box::new(stream), request, deadline).await;
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn parse_http_url(url: &str) -> io::Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("parse {url:?}: {e}")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "unsupported protocol scheme",
        ));
    }
    Ok(uri)
}

fn build_request(
    method: &str,
    uri: &Uri,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> io::Result<Request<Full<Bytes>>> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("Host", uri.authority().map_or("", |a| a.as_str()));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = Full::new(body.map_or_else(Bytes::new, Bytes::copy_from_slice));
    builder
        .body(body)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// Sends one request (a 3xx answer is returned, never followed); `timeout` covers connect,
/// headers and body.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let uri = parse_http_url(url)?;
    let request = build_request(method, &uri, headers, body)?;
    runtime()?.block_on(async {
        let deadline = tokio::time::Instant::now() + timeout;
        tokio::time::timeout_at(
            deadline,
            connect_and_exchange(endpoint, &uri, request, deadline),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out()))
    })
}

/// Reads one response to a `GET /` from `r`'s bytes with the same HTTP machinery as [`send`]
/// (the fuzz targets feed it hostile input): an in-memory peer reads the request, then answers
/// with the bytes and hangs up.
pub fn read_response(r: &mut impl Read) -> io::Result<Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut input = Vec::new();
    r.read_to_end(&mut input)?;
    let (client, mut peer) = tokio::io::duplex(64 * 1024);
    let request = build_request("GET", &Uri::from_static("http://fuzz/"), &[], None)?;
    runtime()?.block_on(async move {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = peer.write_all(&input).await;
            let _ = peer.shutdown().await;
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        exchange(Box::new(client), request, deadline).await
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    /// Reads one request (head and `Content-Length` body) from a test connection; what arrived
    /// so far when the connection ends or fails. Shared with `api::transport_tests`.
    pub(crate) fn read_request(s: &mut impl Read) -> Vec<u8> {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if seen.len() >= end + 4 + len {
                    return seen;
                }
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return seen,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// A TCP server answering one connection per answer with the given raw bytes, then
    /// closing it; returns the requests it saw.
    fn serve(answers: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                seen.push(read_request(&mut s));
                s.write_all(answer).unwrap();
            }
            seen
        });
        (format!("http://{addr}"), handle)
    }

    fn get(url: &str) -> io::Result<Response> {
        send(
            &Endpoint::Tcp,
            "GET",
            url,
            &[],
            None,
            Duration::from_secs(5),
        )
    }

    #[test]
    fn request_bytes() {
        let (base, server) = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"]);
        let authority = base.trim_start_matches("http://").to_owned();
        send(
            &Endpoint::Tcp,
            "POST",
            &format!("{base}/api/v4/internal/allowed?a=b%2B"),
            &[
                ("User-Agent", "GitLab-Shell"),
                ("X-Request-ID", "c1"),
                ("Connection", "close"),
            ],
            Some(b"{}"),
            Duration::from_secs(5),
        )
        .unwrap();
        let seen = server.join().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&seen[0]),
            format!(
                "POST /api/v4/internal/allowed?a=b%2B HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: GitLab-Shell\r\nX-Request-Id: c1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
            )
        );
    }

    #[test]
    fn bodies_of_every_framing() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A:  b \r\n\r\n{}trailing",
            b"HTTP/1.1 300 Multiple Choices\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n\r\nnot json",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ]);
        let r = get(&format!("{base}/1")).unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("X-A")),
            (200, &b"{}"[..], Some("b"))
        );
        let r = get(&format!("{base}/2")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (300, &b"abcde"[..]));
        let r = get(&format!("{base}/3")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"not json"[..]));
        let r = get(&format!("{base}/4")).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (204, &b""[..]));
        server.join().unwrap();
    }

    #[test]
    fn malformed_and_truncated_responses_are_errors() {
        let answers: Vec<&'static [u8]> = vec![
            b"",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nbadheader\r\n\r\n",
        ];
        let n = answers.len();
        let (base, server) = serve(answers.clone());
        for answer in answers.iter().take(n) {
            // Broken heads are errors; broken bodies come with the head and a `body_error`.
            assert!(
                get(&format!("{base}/x")).map_or(true, |r| r.body_error.is_some()),
                "{:?}",
                String::from_utf8_lossy(answer)
            );
        }
        server.join().unwrap();
    }

    #[test]
    fn redirects_are_returned_never_followed() {
        for status in [301u16, 302, 303, 307, 308] {
            let answer = format!(
                "HTTP/1.1 {status} Moved\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n"
            );
            let answer: &'static [u8] = Box::leak(answer.into_bytes().into_boxed_slice());
            let (base, server) = serve(vec![answer]);
            let r = send(
                &Endpoint::Tcp,
                "POST",
                &format!("{base}/start"),
                &[("Authorization", "Basic dTpw")],
                Some(b"{}"),
                Duration::from_secs(5),
            )
            .unwrap();
            assert_eq!(
                (r.status, r.header("location")),
                (status, Some("http://127.0.0.1:1/elsewhere"))
            );
            assert_eq!(server.join().unwrap().len(), 1);
        }
    }

    #[test]
    fn status_300_is_not_followed() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 300 Multiple Choices\r\nLocation: /x\r\nContent-Length: 2\r\n\r\n{}",
        ]);
        let r = send(
            &Endpoint::Tcp,
            "POST",
            &format!("{base}/allowed"),
            &[],
            Some(b"{}"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (300, &b"{}"[..]));
        server.join().unwrap();
    }

    #[test]
    fn unsupported_scheme_and_refused_connection() {
        let err = get("https://127.0.0.1:1/x").unwrap_err();
        assert_eq!(err.to_string(), "unsupported protocol scheme");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = get(&format!("http://127.0.0.1:{port}/x")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    }

    #[test]
    fn unix_socket_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let seen = read_request(&mut s);
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            // Headers, then a body that never comes: the timeout covers the body too.
            let (mut slow, _) = listener.accept().unwrap();
            read_request(&mut slow);
            slow.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            seen
        });
        let ep = Endpoint::Unix(path.display().to_string());
        let r = send(
            &ep,
            "GET",
            "http://unix/api/v4/internal/check",
            &[],
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.body, b"{}");
        let started = Instant::now();
        let r = send(
            &ep,
            "GET",
            "http://unix/x",
            &[],
            None,
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_millis(450), "{r:?}");
        // The headers came: the stalled body is the response's error, not a transport one.
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body_error.as_deref(),
            Some("Client.Timeout exceeded while reading body")
        );
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            b"GET /api/v4/internal/check HTTP/1.1\r\nHost: unix\r\n\r\n"
        );
    }

    #[test]
    fn timeout_covers_connect_and_headers() {
        // A listener that never accepts: the connection is made (backlog) but no answer comes.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        let started = Instant::now();
        let err = send(
            &Endpoint::Tcp,
            "GET",
            &url,
            &[],
            None,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(450), "{err}");
        assert_eq!(err.to_string(), "Client.Timeout exceeded");
        drop(listener);
    }

    #[test]
    fn read_response_parses_raw_bytes() {
        let mut raw: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let r = read_response(&mut raw).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let mut raw: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort";
        let r = read_response(&mut raw).unwrap();
        assert!(r.body_error.is_some() && r.body.is_empty(), "{r:?}");
    }
}
