//! Geo custom action, v14.45.0 "API endpoints" flow (GitLab Shell
//! `internal/command/shared/customaction`, behaviour §6.1): on a Geo secondary, `/allowed`
//! answers 300 and GitLab Shell relays the git conversation to the primary through Rails'
//! `api_endpoints` instead of calling Gitaly.
//!
//! For each endpoint in order: POST it (with the client's bytes read so far, base64, as
//! `output`), write the decoded `result` to stdout, then read the client's next request from
//! stdin — for `git-receive-pack` the commands up to the flush plus, unless every command deletes
//! a ref, the pack after it; for `git-upload-pack` the negotiation up to `0009done\n`. The read
//! after the last endpoint still happens and is discarded, as in GitLab Shell.
//!
//! When the payload sets the direct-to-primary flag for the action
//! (`geo_proxy_direct_to_primary` for pushes, `geo_proxy_fetch_direct_to_primary` for fetches),
//! the behaviour §6.2 flow runs instead ([`run_direct`]): smart HTTP against
//! `data.primary_repo`, or SSH-over-HTTP when the matching `*_ssh_direct_to_primary` flag is
//! also set.
//!
//! One difference, on purpose: GitLab Shell reads the pack with `io.Copy` from stdin after its
//! `bufio.Scanner` may already have buffered the start of it, losing those bytes; here the
//! scanner's read-ahead is part of the output.

use std::io::{self, Read, Write};

use pktline::RawScanner;

use crate::api::geo_git;
use crate::api::{self, allowed::Access, geo};
use crate::command::Context;
use crate::error::Error;
use crate::io::Io;

/// Runs the API-endpoints flow for `action` (`git-receive-pack` or `git-upload-pack`).
pub fn run(
    ctx: &Context<'_>,
    client: &api::Client,
    access: &Access,
    action: &str,
    io: &mut Io,
) -> Result<(), Error> {
    let data = geo::Data::from_payload(&access.response.payload.data, &access.who);
    let eof_sent = action == "git-receive-pack";
    let direct = if eof_sent {
        data.geo_proxy_direct_to_primary
    } else {
        data.geo_proxy_fetch_direct_to_primary
    };
    if direct {
        return run_direct(ctx, &data, eof_sent, io);
    }
    let mut stdin = RawScanner::new(io.take_stdin());
    let mut output = Vec::new();
    for endpoint in data.endpoints() {
        tracing::info!(
            primary_repo = %data.primary_repo,
            endpoint = %endpoint,
            "customaction: processApiEndpoints: Performing custom action"
        );
        let result = geo::call(client, endpoint, &geo::Request::new(&data, &output))?;
        io.stdout.write_all(&result)?;
        io.stdout.flush()?;
        output = if eof_sent {
            read_push(&mut stdin)?
        } else {
            read_fetch(&mut stdin)
        };
        tracing::debug!(
            eof_sent,
            stdin_bytes = output.len(),
            "customaction: processApiEndpoints: stdin buffered"
        );
    }
    Ok(())
}

/// Smart HTTP `info/refs` prefixes that the SSH protocol does not have.
const RECEIVE_PACK_PREFIX: &[u8] = b"001f# service=git-receive-pack\n0000";
const UPLOAD_PACK_PREFIX: &[u8] = b"001e# service=git-upload-pack\n0000";

/// The direct-to-primary flow (behaviour §6.2, GitLab Shell `internal/command/githttp`).
pub fn run_direct(
    ctx: &Context<'_>,
    data: &geo::Data,
    push: bool,
    io: &mut Io,
) -> Result<(), Error> {
    let headers = data.request_headers.clone().unwrap_or_default();
    let client = geo_git::Client::new(&data.primary_repo, headers, ctx.correlation_id)
        .map_err(|e| Error::Message(e.to_string()))?;
    let (service, prefix) = if push {
        ("git-receive-pack", RECEIVE_PACK_PREFIX)
    } else {
        ("git-upload-pack", UPLOAD_PACK_PREFIX)
    };
    tracing::info!(primary_repo = %data.primary_repo, service, "geo: proxying directly to the primary");
    let ssh = if push {
        data.geo_proxy_push_ssh_direct_to_primary
    } else {
        data.geo_proxy_fetch_ssh_direct_to_primary
    };
    let failed = |e: geo_git::Error| Error::Message(e.0);
    let response = if ssh {
        let stdin = io.take_stdin();
        client
            .ssh_pack(service, stdin, &ctx.env.git_protocol)
            .map_err(failed)?
    } else {
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
            let body = if data.geo_proxy_fetch_direct_to_primary_with_options {
                read_fetch_until_flush(&mut stdin)
            } else {
                read_fetch(&mut stdin)
            };
            client.upload_pack(body).map_err(failed)?
        }
    };
    let mut response = response;
    io::copy(&mut response, &mut io.stdout)?;
    io.stdout.flush()?;
    Ok(())
}

/// v14.45.0 `geo_proxy_fetch_direct_to_primary_with_options`: the request ends at `done`, or
/// at the first flush, after which `0009done\n` is appended.
pub fn read_fetch_until_flush<R: Read>(stdin: &mut RawScanner<R>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(frame) = stdin.next_frame().unwrap_or(None) {
        out.extend_from_slice(frame);
        if pktline::is_done(frame) {
            break;
        }
        if pktline::is_flush(frame) {
            out.extend_from_slice(pktline::DONE);
            break;
        }
    }
    out
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
    fn fetch_with_options_ends_at_the_flush_and_adds_done() {
        let want = pkt(&format!("want {}\n", "c".repeat(40)));
        let input = format!("{want}0000{}", pkt("have x\n"));
        let mut s = RawScanner::new(input.as_bytes());
        assert_eq!(
            read_fetch_until_flush(&mut s),
            format!("{want}00000009done\n").as_bytes()
        );
        let mut s = RawScanner::new(&b"0009done\n0000"[..]);
        assert_eq!(read_fetch_until_flush(&mut s), b"0009done\n");
        let mut s = RawScanner::new(&b"0008abcd"[..]);
        assert_eq!(
            read_fetch_until_flush(&mut s),
            b"0008abcd",
            "no done appended at EOF"
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
