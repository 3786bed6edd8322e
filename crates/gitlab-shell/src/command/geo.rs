//! Geo custom action (GitLab Shell 14.56.1 `internal/command/githttp`, behaviour §6.2): on a Geo
//! secondary, `/allowed` answers 300 and GitLab Shell relays the git conversation straight to
//! the primary's repository (`data.primary_repo`, with `data.request_headers`) instead of
//! calling Gitaly.
//!
//! - Over the primary's SSH-over-HTTP endpoints (`geo_proxy_{fetch,push}_ssh_direct_to_primary`):
//!   `POST <primary_repo>/ssh-upload-pack` or `/ssh-receive-pack` with `Git-Protocol`; the
//!   response streams to stdout. A push streams all of stdin as the body. A fetch streams stdin
//!   only until the negotiation is over — up to and including `done`, then a flush (protocol v2
//!   needs it to end the request) — and closes the body, so a slow clone is not cut off by the
//!   primary's request-body timeout (GitLab Shell 14.57.2).
//! - Otherwise smart HTTP: `GET info/refs?service=…` (its service header checked and dropped),
//!   then `POST git-upload-pack` with the negotiation up to `done`, or `POST git-receive-pack`
//!   with the commands and, unless they only delete refs, the pack.
//!
//! The API-endpoints flow of v14.45.0 (`payload.data.api_endpoints`) is gone since 14.45.3.
//!
//! One difference, on purpose: GitLab Shell reads the pack with `io.Copy` from stdin after its
//! `bufio.Scanner` may already have buffered the start of it, losing those bytes; here the
//! scanner's read-ahead is part of the output.

use std::io::{self, Read, Write};

use pktline::RawScanner;

use crate::api::allowed::Access;
use crate::api::{geo, geo_git};
use crate::command::Context;
use crate::error::Error;
use crate::io::Io;

/// Smart HTTP `info/refs` prefixes that the SSH protocol does not have.
const RECEIVE_PACK_PREFIX: &[u8] = b"001f# service=git-receive-pack\n0000";
const UPLOAD_PACK_PREFIX: &[u8] = b"001e# service=git-upload-pack\n0000";

/// Relays `action` (`git-upload-pack` or `git-receive-pack`) to the primary.
pub fn run(ctx: &Context<'_>, access: &Access, action: &str, io: &mut Io) -> Result<(), Error> {
    let data = geo::Data::from_payload(&access.response.payload.data);
    let push = action == "git-receive-pack";
    let headers = data.request_headers.clone().unwrap_or_default();
    let client = geo_git::Client::new(
        &data.primary_repo,
        headers,
        ctx.correlation_id,
        &ctx.config.system_trust(),
    )
    .map_err(|e| Error::Message(e.to_string()))?;
    let (service, prefix) = if push {
        ("git-receive-pack", RECEIVE_PACK_PREFIX)
    } else {
        ("git-upload-pack", UPLOAD_PACK_PREFIX)
    };
    let ssh = if push {
        data.geo_proxy_push_ssh_direct_to_primary
    } else {
        data.geo_proxy_fetch_ssh_direct_to_primary
    };
    tracing::info!(primary_repo = %data.primary_repo, service, ssh, "geo: proxying directly to the primary");
    let failed = |e: geo_git::Error| Error::Message(e.0);
    if ssh {
        let stdin = io.take_stdin();
        let body: Box<dyn Read + Send> = if push {
            stdin
        } else {
            Box::new(FetchBody::new(stdin))
        };
        return client
            .ssh_pack(service, body, &ctx.env.git_protocol, &mut io.stdout)
            .map_err(failed);
    }
    let mut response = {
        let mut refs = client.info_refs(service).map_err(failed)?;
        let mut head = vec![0u8; prefix.len()];
        if refs.read_exact(&mut head).is_err() || head != prefix {
            return Err(Error::Message(format!("unexpected {service} response")));
        }
        io::copy(&mut refs, &mut io.stdout)?;
        io.stdout.flush()?;
        let mut stdin = RawScanner::new(io.take_stdin());
        if push {
            client
                .receive_pack(read_push(&mut stdin)?)
                .map_err(failed)?
        } else {
            client.upload_pack(read_fetch(&mut stdin)).map_err(failed)?
        }
    };
    io::copy(&mut response, &mut io.stdout)?;
    io.stdout.flush()?;
    Ok(())
}

/// The request body of a fetch over `ssh-upload-pack`: the client's pkt-lines as they arrive,
/// up to and including `done`, then a flush, then the end of the body. Without `done` (an
/// `ls-remote`, a fetch with nothing to want) it ends with the client's input.
pub struct FetchBody<R> {
    scanner: RawScanner<R>,
    pending: Vec<u8>,
    offset: usize,
    finished: bool,
}

impl<R: Read> FetchBody<R> {
    /// Wraps the client's stdin.
    pub fn new(stdin: R) -> Self {
        FetchBody {
            scanner: RawScanner::new(stdin),
            pending: Vec::new(),
            offset: 0,
            finished: false,
        }
    }
}

impl<R: Read> Read for FetchBody<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.pending.len() {
            if self.finished {
                return Ok(0);
            }
            self.pending.clear();
            self.offset = 0;
            match self.scanner.next_frame() {
                Ok(Some(frame)) => {
                    self.pending.extend_from_slice(frame);
                    if pktline::is_done(frame) {
                        self.pending.extend_from_slice(b"0000");
                        self.finished = true;
                    }
                }
                // End of input, or a malformed frame: the body ends there.
                Ok(None) | Err(_) => self.finished = true,
            }
        }
        let n = buf.len().min(self.pending.len() - self.offset);
        buf[..n].copy_from_slice(&self.pending[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// A push request: pkt-lines up to and including the flush, then — when any command before it
/// is not a ref deletion — everything up to end of input (the pack).
pub fn read_push<R: Read>(stdin: &mut RawScanner<R>) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut needs_pack = false;
    while let Some(frame) = stdin.next_frame().unwrap_or(None) {
        out.extend_from_slice(frame);
        if pktline::is_flush(frame) {
            break;
        }
        if !pktline::is_ref_removal(frame) {
            needs_pack = true;
        }
    }
    if needs_pack {
        stdin.read_rest(&mut out)?;
    }
    Ok(out)
}

/// A fetch negotiation: pkt-lines up to and including `0009done\n`, or up to end of input or
/// the first malformed frame.
pub fn read_fetch<R: Read>(stdin: &mut RawScanner<R>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(frame) = stdin.next_frame().unwrap_or(None) {
        out.extend_from_slice(frame);
        if pktline::is_done(frame) {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeros() -> String {
        "0".repeat(40)
    }

    fn pkt(payload: &str) -> String {
        format!("{:04x}{payload}", payload.len() + 4)
    }

    #[test]
    fn push_with_an_update_reads_the_pack() {
        let cmd = pkt(&format!(
            "{} {} refs/heads/main\0report-status",
            "a".repeat(40),
            "b".repeat(40)
        ));
        let input = format!("{cmd}0000PACK\x00\x01rest");
        let mut s = RawScanner::new(input.as_bytes());
        assert_eq!(read_push(&mut s).unwrap(), input.as_bytes());
        assert!(read_push(&mut s).unwrap().is_empty());
    }

    #[test]
    fn push_of_deletions_only_stops_at_the_flush() {
        let del = pkt(&format!(
            "{} {} refs/heads/gone\0report-status",
            "a".repeat(40),
            zeros()
        ));
        let input = format!("{del}0000TRAILING");
        let mut s = RawScanner::new(input.as_bytes());
        assert_eq!(read_push(&mut s).unwrap(), format!("{del}0000").as_bytes());
    }

    #[test]
    fn fetch_body_ends_after_done_with_a_flush() {
        let want = pkt(&format!("want {}\n", "c".repeat(40)));
        // What comes after `done` (the v2 client's own flush, anything) is never read.
        let input = format!("{want}00000009done\n0000NEVER");
        let mut body = Vec::new();
        FetchBody::new(input.as_bytes())
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, format!("{want}00000009done\n0000").as_bytes());
        // v2: ls-refs then fetch in one stream; the body ends at fetch's `done`.
        let v2 = "0014command=ls-refs\n00010009peel\n00000012command=fetch\n0001000ddone\n0000";
        let v2 = v2.replace("000ddone\n", "0009done\n");
        let mut body = Vec::new();
        FetchBody::new(v2.as_bytes())
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(body, v2.as_bytes());
        // No done: the body is the whole input; a malformed tail ends it quietly.
        for (input, want) in [("0000", "0000"), ("0008abcd\n", "0008abcd")] {
            let mut body = Vec::new();
            FetchBody::new(input.as_bytes())
                .read_to_end(&mut body)
                .unwrap();
            assert_eq!(body, want.as_bytes(), "{input:?}");
        }
    }

    #[test]
    fn fetch_body_streams_before_the_client_is_done() {
        /// A reader that hands out one chunk per call, like a pipe from a waiting client.
        struct Chunks(Vec<&'static [u8]>);
        impl Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.first() {
                    None => Ok(0),
                    Some(c) => {
                        let n = c.len().min(buf.len());
                        buf[..n].copy_from_slice(&c[..n]);
                        if n == c.len() {
                            self.0.remove(0);
                        } else {
                            self.0[0] = &c[n..];
                        }
                        Ok(n)
                    }
                }
            }
        }
        let mut body = FetchBody::new(Chunks(vec![b"0008abc\n", b"0009done\n"]));
        let mut first = [0u8; 64];
        let n = body.read(&mut first).unwrap();
        assert_eq!(
            &first[..n],
            b"0008abc\n",
            "the first pkt-line goes out on its own"
        );
    }

    #[test]
    fn fetch_reads_up_to_done_and_stops_on_garbage() {
        let want = pkt(&format!("want {}\n", "c".repeat(40)));
        let input = format!("{want}00000009done\n0009more\n");
        let mut s = RawScanner::new(input.as_bytes());
        assert_eq!(
            read_fetch(&mut s),
            format!("{want}00000009done\n").as_bytes()
        );
        assert_eq!(read_fetch(&mut s), b"0009more\n");
        let mut s = RawScanner::new(&b"0008abcd\n"[..]);
        assert_eq!(
            read_fetch(&mut s),
            b"0008abcd",
            "a stray LF ends the read quietly"
        );
    }
}

#[cfg(test)]
mod command_tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use serde_json::json;

    use crate::command::testkit::{Kit, alice, framed};
    use crate::command::{Session, execute};
    use crate::io::Io;

    /// A kit whose `group/repo` answers every action with a 300 pointing at the stub's canned
    /// primary under `primary_path`.
    fn geo_kit(primary_path: &str, data: serde_json::Value) -> Kit {
        let kit = Kit::new("");
        let mut data = data;
        data["primary_repo"] = json!(format!("{}/primary/{primary_path}", kit.api.tcp_url()));
        kit.api.update_fixture(|f| {
            if let Some(p) = f.projects.iter_mut().find(|p| p.path == "group/repo") {
                p.geo = Some(stub_api::fixture::GeoCustomAction {
                    actions: Vec::new(),
                    payload: json!({ "action": "geo_proxy_to_primary", "data": data }),
                });
            }
        });
        kit
    }

    #[test]
    fn smart_http_fetch_goes_to_the_primary_with_its_headers() {
        let kit = geo_kit(
            "group/repo.git",
            json!({ "request_headers": { "Authorization": "Bearer p" } }),
        );
        let run = kit.run(alice(), "git-upload-pack group/repo.git", b"0009done\n");
        assert_eq!(run.status, 0, "{}", run.stderr);
        assert_eq!(run.out(), "<git-upload-pack refs><git-upload-pack result>");
        let refs = kit.api.requests_to("/primary/group/repo.git/info/refs");
        assert_eq!(refs[0].header("authorization"), Some("Bearer p"));
        assert_eq!(refs[0].query, "service=git-upload-pack");
    }

    #[test]
    fn a_refusing_primary_ends_the_command_while_the_client_still_sends() {
        // GitLab Shell !1569: an error from the primary must end the command even though the
        // request body (the client's stdin) is still open.
        for action in ["git-upload-pack", "git-receive-pack"] {
            let kit = geo_kit(
                "fail-with-body/group/repo.git",
                json!({
                    "geo_proxy_fetch_ssh_direct_to_primary": true,
                    "geo_proxy_push_ssh_direct_to_primary": true,
                }),
            );
            let (stdin, keep_open) = std::io::pipe().unwrap();
            let (tx, rx) = mpsc::channel();
            let config = kit.config.clone();
            let command = format!("{action} group/repo.git");
            std::thread::spawn(move || {
                let (mut io, _, err) = Io::memory(b"");
                io.stdin = Box::new(stdin);
                let session = Session {
                    config: &config,
                    identity: alice(),
                    env: Kit::env(&command),
                    correlation_id: "c",
                    observer: crate::observe::noop(),
                    gitaly_pool: None,
                };
                let status = execute(&session, &mut io);
                let _ = tx.send((status, err.text()));
            });
            let (status, stderr) = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{action}: the command hangs on a refusing primary"));
            drop(keep_open);
            assert_eq!(status, 1, "{action}");
            assert_eq!(stderr, framed("Primary says no"), "{action}");
        }
    }

    /// A primary that speaks first, as `git upload-pack` does: it answers the headers and the
    /// advertisement at once, then reads the negotiation, then sends the pack. Returns the
    /// primary's address and a channel with the request body it received.
    fn full_duplex_primary() -> (String, mpsc::Receiver<Vec<u8>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut writer = conn;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let chunk = |w: &mut std::net::TcpStream, data: &[u8]| {
                write!(w, "{:x}\r\n", data.len()).unwrap();
                w.write_all(data).unwrap();
                w.write_all(b"\r\n").unwrap();
                w.flush().unwrap();
            };
            writer
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
            chunk(&mut writer, b"ADVERTISEMENT;");
            // The request body, chunked: read until its last chunk.
            let mut body = Vec::new();
            loop {
                let mut size = String::new();
                reader.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut data = vec![0u8; n + 2];
                reader.read_exact(&mut data).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&data[..n]);
            }
            chunk(&mut writer, b"PACK");
            writer.write_all(b"0\r\n\r\n").unwrap();
            let _ = tx.send(body);
        });
        (addr, rx)
    }

    #[test]
    fn ssh_fetch_is_full_duplex_and_ends_its_body_at_done() {
        let (primary, body_rx) = full_duplex_primary();
        let kit = Kit::new("");
        let data = json!({
            "primary_repo": format!("http://{primary}/group/repo.git"),
            "geo_proxy_fetch_ssh_direct_to_primary": true,
        });
        kit.api.update_fixture(|f| {
            if let Some(p) = f.projects.iter_mut().find(|p| p.path == "group/repo") {
                p.geo = Some(stub_api::fixture::GeoCustomAction {
                    actions: Vec::new(),
                    payload: json!({ "action": "geo_proxy_to_primary", "data": data }),
                });
            }
        });
        let (stdin, mut client) = std::io::pipe().unwrap();
        let (mut io, out, _err) = Io::memory(b"");
        io.stdin = Box::new(stdin);
        let config = kit.config.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let session = Session {
                config: &config,
                identity: alice(),
                env: Kit::env("git-upload-pack group/repo.git"),
                correlation_id: "c",
                observer: crate::observe::noop(),
                gitaly_pool: None,
            };
            let _ = tx.send(execute(&session, &mut io));
        });
        // The client only speaks once it has seen the advertisement.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !out.text().contains("ADVERTISEMENT;") {
            assert!(
                std::time::Instant::now() < deadline,
                "no advertisement before the client spoke"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        use std::io::Write as _;
        client
            .write_all(b"0032want 0123456789012345678901234567890123456789\n00000009done\n")
            .unwrap();
        // The client keeps its input open (as ssh does); the body must end at `done` anyway.
        let status = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the fetch ends");
        drop(client);
        assert_eq!(status, 0);
        assert_eq!(out.text(), "ADVERTISEMENT;PACK");
        assert_eq!(
            body_rx.recv_timeout(Duration::from_secs(5)).unwrap(),
            b"0032want 0123456789012345678901234567890123456789\n00000009done\n0000"
        );
    }
}
