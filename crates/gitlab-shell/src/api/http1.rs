//! A small blocking HTTP/1.1 client for the internal API over `http://` and `http+unix://`
//! (the transport seam of style §6.9). One request per connection (`Connection: close`, as
//! GitLab Shell sets `request.Close`), no TLS, no threads, no async runtime: the
//! authorized-keys check runs on every SSH connection, and reqwest's blocking client costs a
//! runtime thread and ~2 MB RSS per run. `https://` keeps using reqwest with rustls.
//!
//! Handles what GitLab's API and Workhorse send: `Content-Length`, `chunked`, or a body up to
//! EOF; interim 1xx answers; redirects 301/302/303/307/308 (v14.45.0's Go client follows them,
//! at most 10; 300 is not a redirect).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

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
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
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

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Splits `http://authority/path?query` into authority and path (with query).
fn split_url(url: &str) -> io::Result<(&str, &str)> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "unsupported protocol scheme")
    })?;
    Ok(match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    })
}

fn connect(endpoint: &Endpoint, authority: &str, deadline: Instant) -> io::Result<Box<dyn Stream>> {
    let remaining = remaining(deadline)?;
    match endpoint {
        Endpoint::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(remaining))?;
            s.set_write_timeout(Some(remaining))?;
            Ok(Box::new(s))
        }
        Endpoint::Tcp => {
            let with_port = if authority
                .rsplit_once(':')
                .is_some_and(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                && !authority.ends_with(']')
            {
                authority.to_owned()
            } else {
                format!("{authority}:80")
            };
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in with_port.to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, remaining) {
                    Ok(s) => {
                        s.set_read_timeout(Some(remaining))?;
                        s.set_write_timeout(Some(remaining))?;
                        s.set_nodelay(true)?;
                        return Ok(Box::new(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "Client.Timeout exceeded",
        )),
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_owned())
}

fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    if r.read_until(b'\n', buf)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "unexpected EOF",
        ));
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    Ok(())
}

/// Reads one response from `r` (status line, headers, body).
pub fn read_response(r: &mut impl BufRead) -> io::Result<Response> {
    let mut line = Vec::with_capacity(128);
    loop {
        read_line(r, &mut line)?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut parts = text.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        if !version.starts_with("HTTP/1.") {
            return Err(bad("malformed HTTP response"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed HTTP status code"))?;
        let mut headers = Vec::new();
        loop {
            read_line(r, &mut line)?;
            if line.is_empty() {
                break;
            }
            let h = String::from_utf8_lossy(&line);
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| bad("malformed MIME header line"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue; // interim answer (100 Continue, 103 Early Hints)
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if status == 204 || status == 304 {
        } else if chunked {
            read_chunked(r, &mut response.body)?;
        } else if let Some(len) = response.header("content-length") {
            let len: u64 = len.parse().map_err(|_| bad("bad Content-Length"))?;
            r.take(len).read_to_end(&mut response.body)?;
            if (response.body.len() as u64) < len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "unexpected EOF",
                ));
            }
        } else {
            r.read_to_end(&mut response.body)?;
        }
        return Ok(response);
    }
}

fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        read_line(r, &mut line)?;
        let text = String::from_utf8_lossy(&line);
        let size = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| bad("malformed chunked encoding"))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                read_line(r, &mut line)?;
                if line.is_empty() {
                    return Ok(());
                }
            }
        }
        let before = out.len() as u64;
        r.take(size).read_to_end(out)?;
        if out.len() as u64 - before < size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "unexpected EOF",
            ));
        }
        read_line(r, &mut line)?;
    }
}

/// The request head and body bytes.
pub fn encode_request(
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = Vec::with_capacity(512 + body.map_or(0, <[u8]>::len));
    let _ = write!(req, "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for (name, value) in headers {
        let _ = write!(req, "{name}: {value}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(req, "Content-Length: {}\r\n", b.len());
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    req
}

/// Sends one request (following redirects) within `timeout`.
pub fn send(
    endpoint: &Endpoint,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let (mut method, mut url, mut body) = (method.to_owned(), url.to_owned(), body);
    for _ in 0..=10 {
        let (authority, path) = split_url(&url)?;
        let mut stream = connect(endpoint, authority, deadline)?;
        stream.write_all(&encode_request(&method, authority, path, headers, body))?;
        stream.flush()?;
        let response = read_response(&mut BufReader::new(stream))?;
        let Some(location) = response
            .header("location")
            .filter(|_| matches!(response.status, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok(response);
        };
        url = if location.starts_with('/') {
            format!("http://{authority}{location}")
        } else {
            location.to_owned()
        };
        // As Go's client: 301/302/303 turn a POST into a body-less GET.
        if matches!(response.status, 301..=303) && method != "GET" && method != "HEAD" {
            method = "GET".to_owned();
            body = None;
        }
    }
    Err(io::Error::other("stopped after 10 redirects"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn parse(raw: &[u8]) -> io::Result<Response> {
        read_response(&mut BufReader::new(raw))
    }

    #[test]
    fn content_length_chunked_and_eof_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}trailing").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-a")),
            (200, &b"{}"[..], Some("b"))
        );
        let r = parse(b"HTTP/1.1 300 Multiple Choices\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (300, &b"abcde"[..]));
        let r = parse(b"HTTP/1.0 404 Not Found\r\n\r\nnot json").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"not json"[..]));
        let r = parse(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(r.status, 204);
    }

    #[test]
    fn malformed_and_truncated_responses_are_errors() {
        for raw in [
            &b""[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nbadheader\r\n\r\n",
        ] {
            assert!(parse(raw).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn request_bytes() {
        let req = encode_request(
            "POST",
            "unix",
            "/api/v4/internal/allowed",
            &[("User-Agent", "GitLab-Shell")],
            Some(b"{}"),
        );
        assert_eq!(
            req,
            b"POST /api/v4/internal/allowed HTTP/1.1\r\nHost: unix\r\nUser-Agent: GitLab-Shell\r\nContent-Length: 2\r\n\r\n{}"
        );
        let req = encode_request("GET", "h:1", "/x?k=v", &[], None);
        assert_eq!(req, b"GET /x?k=v HTTP/1.1\r\nHost: h:1\r\n\r\n");
    }

    fn serve(answers: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                seen.push(buf[..n].to_vec());
                s.write_all(answer).unwrap();
            }
            seen
        });
        (format!("http://{addr}"), handle)
    }

    #[test]
    fn follows_redirects_turning_post_into_get() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 302 Found\r\nLocation: /moved\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnull",
        ]);
        let r = send(
            &Endpoint::Tcp,
            "POST",
            &format!("{base}/start"),
            &[],
            Some(b"{}"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"null"[..]));
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with(b"POST /start HTTP/1.1\r\n"));
        assert!(seen[1].starts_with(b"GET /moved HTTP/1.1\r\n"));
        assert!(!String::from_utf8_lossy(&seen[1]).contains("Content-Length"));
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
        assert_eq!(r.status, 300);
        server.join().unwrap();
    }

    #[test]
    fn unix_socket_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            let (_stalled, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            buf[..n].to_vec()
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
        let err = send(
            &ep,
            "GET",
            "http://unix/x",
            &[],
            None,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(450), "{err}");
        let seen = server.join().unwrap();
        assert!(seen.starts_with(b"GET /api/v4/internal/check HTTP/1.1\r\nHost: unix\r\n"));
    }
}
