//! Transcript tests of the LFS transfer processor against an in-memory backend.

use std::collections::BTreeMap;

use super::*;

#[derive(Default)]
struct MemBackend {
    objects: BTreeMap<String, Vec<u8>>,
    locks: Vec<Lock>,
    uploads: Vec<(String, Args)>,
    batches: Vec<(Operation, Vec<Pointer>, Args)>,
}

impl Backend for MemBackend {
    fn batch(
        &mut self,
        op: Operation,
        objects: &[Pointer],
        args: &Args,
    ) -> Result<Vec<BatchItem>, Error> {
        self.batches.push((op, objects.to_vec(), args.clone()));
        Ok(objects
            .iter()
            .map(|p| {
                let stored = self.objects.contains_key(&p.oid);
                let has_action = match op {
                    Operation::Upload => !stored,
                    Operation::Download => stored,
                };
                let mut args = Args::new();
                if has_action {
                    args.insert("token".into(), "t".into());
                    args.insert("id".into(), format!("id-{}", &p.oid[..4]));
                }
                BatchItem {
                    pointer: p.clone(),
                    has_action,
                    args,
                }
            })
            .collect())
    }

    fn upload(&mut self, oid: &str, data: Vec<u8>, args: &Args) -> Result<(), Error> {
        if args.get("token").map(String::as_str) != Some("t") {
            return Err(Error::Unauthorized("missing token".into()));
        }
        self.uploads.push((oid.to_owned(), args.clone()));
        self.objects.insert(oid.to_owned(), data);
        Ok(())
    }

    fn verify(&mut self, _oid: &str, _args: &Args) -> Result<(), Error> {
        Ok(())
    }

    fn download(&mut self, oid: &str, _args: &Args) -> Result<Option<Download>, Error> {
        Ok(self.objects.get(oid).map(|d| Download {
            size: d.len() as u64,
            reader: Box::new(std::io::Cursor::new(d.clone())),
        }))
    }

    fn create_lock(&mut self, path: &str, _refname: &str) -> Result<LockCreated, Error> {
        if let Some(l) = self.locks.iter().find(|l| l.path == path) {
            return Ok(LockCreated::Conflict(Some(l.clone())));
        }
        let lock = Lock {
            id: format!("{}", self.locks.len() + 1),
            path: path.to_owned(),
            locked_at: "2024-01-02T03:04:05Z".into(),
            owner_name: "Demo".into(),
            owner: Some(Owner::Ours),
        };
        self.locks.push(lock.clone());
        Ok(LockCreated::Created(lock))
    }

    fn lock_for_path(&mut self, path: &str) -> Result<Option<Lock>, Error> {
        Ok(self.locks.iter().find(|l| l.path == path).cloned())
    }

    fn list_locks(
        &mut self,
        _cursor: &str,
        limit: usize,
        _args: &Args,
    ) -> Result<(Vec<Lock>, String), Error> {
        let next = if self.locks.len() > limit {
            "more".to_owned()
        } else {
            String::new()
        };
        Ok((self.locks.clone(), next))
    }

    fn unlock(&mut self, id: &str, _force: bool, _refname: &str) -> Result<Lock, Error> {
        let Some(at) = self.locks.iter().position(|l| l.id == id) else {
            return Err(Error::NotFound("not found".into()));
        };
        Ok(self.locks.remove(at))
    }
}

fn pkt(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    pktline::encode::text(text.as_bytes(), &mut out).unwrap();
    out
}

/// Builds a client transcript: `Some(text)` is a text packet, `None` a flush, `Some("\x01")`
/// a delimiter.
fn transcript(items: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        match *item {
            "0000" => out.extend_from_slice(b"0000"),
            "0001" => out.extend_from_slice(b"0001"),
            text => out.extend_from_slice(&pkt(text)),
        }
    }
    out
}

fn run(op: Operation, backend: &mut MemBackend, input: &[u8]) -> String {
    let mut out = Vec::new();
    {
        let mut p = Processor::new(input, &mut out, backend, op);
        p.send_capabilities().unwrap();
        p.process().unwrap();
    }
    render(&out)
}

/// Renders output packets one per line: text without its LF, `0000`, `0001`, data as `<n bytes>`.
fn render(mut out: &[u8]) -> String {
    let mut lines = Vec::new();
    while !out.is_empty() {
        let pktline::Decoded::Packet { packet, consumed } = pktline::decode::decode(out).unwrap()
        else {
            panic!("truncated output");
        };
        lines.push(match packet {
            Packet::Flush => "0000".to_owned(),
            Packet::Delim => "0001".to_owned(),
            Packet::ResponseEnd => "0002".to_owned(),
            Packet::Data(d) => String::from_utf8_lossy(d).trim_end_matches('\n').to_owned(),
        });
        out = &out[consumed..];
    }
    lines.join("|")
}

const OID: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"; // sha256("hello")

#[test]
fn capabilities_version_and_quit() {
    let mut b = MemBackend::default();
    let input = transcript(&["version 1", "0000", "quit", "0000"]);
    assert_eq!(
        run(Operation::Download, &mut b, &input),
        "version=1|locking|0000|status 200|0000|status 200|0000"
    );
}

#[test]
fn wrong_version_and_unknown_commands() {
    let mut b = MemBackend::default();
    let input = transcript(&["version 2", "frobnicate", "get-object", "quit"]);
    assert_eq!(
        run(Operation::Download, &mut b, &input),
        "version=1|locking|0000\
         |status 400|0001|unknown version|0000\
         |status 400|0001|unknown command|0000\
         |status 400|0001|bad request|0000\
         |status 200|0000"
    );
}

#[test]
fn end_of_input_without_quit_is_clean() {
    let mut b = MemBackend::default();
    assert_eq!(
        run(Operation::Upload, &mut b, b""),
        "version=1|locking|0000"
    );
}

#[test]
fn upload_batch_put_verify() {
    let mut b = MemBackend::default();
    b.objects.insert("aaaa".repeat(16), b"x".to_vec());
    let present = "aaaa".repeat(16);
    let batch_line = format!("{OID} 5");
    let present_line = format!("{present} 1");
    let mut input = transcript(&[
        "batch",
        "transfer=ssh",
        "hash-algo=sha256",
        "refname=refs/heads/main",
        "0001",
        &batch_line,
        &present_line,
        "0000",
        &format!("put-object {OID}"),
        "size=5",
        "id=id-2cf2",
        "token=t",
        "0001",
    ]);
    input.extend_from_slice(b"0009hello0000");
    input.extend(transcript(&[
        &format!("verify-object {OID}"),
        "size=5",
        "token=t",
        "0000",
    ]));
    input.extend(transcript(&["quit", "0000"]));
    let got = run(Operation::Upload, &mut b, &input);
    assert_eq!(
        got,
        format!(
            "version=1|locking|0000\
             |status 200|0001|{OID} 5 upload id=id-2cf2 token=t|{present} 1 noop|0000\
             |status 200|0000|status 200|0000|status 200|0000"
        )
    );
    assert_eq!(b.objects.get(OID).map(Vec::as_slice), Some(&b"hello"[..]));
    let (op, pointers, args) = &b.batches[0];
    assert_eq!(*op, Operation::Upload);
    assert_eq!(
        pointers[0],
        Pointer {
            oid: OID.into(),
            size: 5
        }
    );
    assert_eq!(
        args.get("refname").map(String::as_str),
        Some("refs/heads/main")
    );
    assert_eq!(
        b.uploads[0].1.get("id").map(String::as_str),
        Some("id-2cf2")
    );
}

#[test]
fn put_object_checks_size_hash_and_token() {
    let wrong_oid = "0".repeat(64);
    let cases: Vec<(String, &str, &[u8], String)> = vec![
        (
            wrong_oid.clone(),
            "token=t",
            b"0009hello0000",
            format!(
                "status 400|0001|error: corrupt data: invalid object ID, expected {wrong_oid}, got {OID}|0000"
            ),
        ),
        (
            OID.to_owned(),
            "token=t",
            b"0008hell0000",
            "status 500|0001|internal error|0000".to_owned(),
        ),
        (
            OID.to_owned(),
            "token=t",
            b"000ahello!0000",
            "status 400|0001|error: extra data: invalid size, expected 5, got 6|0000".to_owned(),
        ),
        (
            OID.to_owned(),
            "token=bad",
            b"0009hello0000",
            "status 401|0001|error: missing token|0000".to_owned(),
        ),
    ];
    for (oid, token, data, want) in cases {
        let mut b = MemBackend::default();
        let mut input = transcript(&[&format!("put-object {oid}"), "size=5", token, "0001"]);
        input.extend_from_slice(data);
        let got = run(Operation::Upload, &mut b, &input);
        assert_eq!(
            got,
            format!("version=1|locking|0000|{want}"),
            "case {token} {data:?}"
        );
    }
}

#[test]
fn batch_errors() {
    let mut b = MemBackend::default();
    let input = transcript(&[
        "batch",
        "hash-algo=sha1",
        "0001",
        "abc 1",
        "0000",
        "batch",
        "0001",
        "abc x",
        "0000",
        "batch",
        "0001",
        "abc",
        "0000",
        "batch",
        "oops",
        "0001",
        "0000",
    ]);
    assert_eq!(
        run(Operation::Download, &mut b, &input),
        "version=1|locking|0000\
         |status 405|0001|error: not allowed: unsupported hash algorithm: sha1|0000\
         |status 400|0001|error: parse error: invalid integer, got: \"x\"|0000\
         |status 400|0001|error: parse error|0000\
         |status 400|0001|error: parse error: invalid argument: \"oops\"|0000\
         |status 400|0001|unknown command|0000"
    );
}

#[test]
fn download_get_object() {
    let mut b = MemBackend::default();
    b.objects.insert(OID.into(), b"hello".to_vec());
    let missing = "f".repeat(64);
    let input = transcript(&[
        "batch",
        "0001",
        &format!("{OID} 5"),
        &format!("{missing} 3"),
        "0000",
        &format!("get-object {OID}"),
        "size=5",
        "id=x",
        "token=t",
        "0000",
        &format!("get-object {missing}"),
        "0000",
    ]);
    assert_eq!(
        run(Operation::Download, &mut b, &input),
        format!(
            "version=1|locking|0000\
             |status 200|0001|{OID} 5 download id=id-2cf2 token=t|{missing} 3 noop|0000\
             |status 200|size=5|0001|hello|0000\
             |status 404|0001|object {missing} not found|0000"
        )
    );
}

#[test]
fn locks() {
    let mut b = MemBackend::default();
    let input = transcript(&[
        "lock",
        "path=a.bin",
        "refname=refs/heads/main",
        "0000",
        "lock",
        "path=a.bin",
        "0000",
        "lock",
        "0000",
        "list-lock",
        "limit=1",
        "0000",
        "list-lock",
        "path=a.bin",
        "0000",
        "list-lock",
        "path=b.bin",
        "0000",
        "unlock 1",
        "force=true",
        "0000",
        "unlock 1",
        "0000",
    ]);
    let spec = "lock 1|path 1 a.bin|locked-at 1 2024-01-02T03:04:05Z|ownername 1 Demo|owner 1 ours";
    let args = "id=1|path=a.bin|locked-at=2024-01-02T03:04:05Z|ownername=Demo";
    assert_eq!(
        run(Operation::Upload, &mut b, &input),
        format!(
            "version=1|locking|0000\
             |status 201|{args}|0000\
             |status 409|{args}|0001|conflict|0000\
             |status 500|0001|internal error|0000\
             |status 200|0001|{spec}|0000\
             |status 200|0001|{spec}|0000\
             |status 404|0001|lock for path b.bin not found|0000\
             |status 200|{args}|0000\
             |status 404|0001|error: not found|0000"
        )
    );
}

#[test]
fn download_list_lock_has_no_owner_lines_and_pages() {
    let mut b = MemBackend::default();
    for p in ["a", "b"] {
        b.create_lock(p, "").unwrap();
    }
    let input = transcript(&["list-lock", "limit=1", "0000"]);
    assert_eq!(
        run(Operation::Download, &mut b, &input),
        "version=1|locking|0000\
         |status 200|next-cursor=more|0001|lock 1|path 1 a|locked-at 1 2024-01-02T03:04:05Z|ownername 1 Demo|0000"
    );
}

#[test]
fn malformed_input_ends_the_session_with_an_error() {
    let mut b = MemBackend::default();
    let mut out = Vec::new();
    let mut p = Processor::new(&b"zzzz"[..], &mut out, &mut b, Operation::Download);
    assert!(p.process().is_err());
}

/// A client that sends `batch`, a delimiter, then `line` forever without a flush; counts the
/// bytes it handed out.
struct Flood {
    head: Vec<u8>,
    line: Vec<u8>,
    pos: usize,
    sent: usize,
}

impl Flood {
    fn new(line_len: usize) -> Flood {
        let line = format!("{} 1", "a".repeat(line_len.saturating_sub(2)));
        Flood {
            head: transcript(&["batch", "0001"]),
            line: pkt(&line),
            pos: 0,
            sent: 0,
        }
    }
}

impl Read for Flood {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            let src = if self.pos < self.head.len() {
                &self.head[self.pos..]
            } else {
                let at = (self.pos - self.head.len()) % self.line.len();
                &self.line[at..]
            };
            let k = src.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&src[..k]);
            n += k;
            self.pos += k;
        }
        self.sent += n;
        Ok(n)
    }
}

#[test]
fn a_batch_flood_without_flush_is_cut_off_at_the_line_limit() {
    for (line_len, expected) in [
        (10, "more than 20000 lines".to_owned()),
        (
            60_000,
            format!("more than {MAX_REQUEST_BYTES} bytes of lines"),
        ),
    ] {
        let mut b = MemBackend::default();
        let mut input = Flood::new(line_len);
        let mut out = Vec::new();
        let result = {
            let mut p = Processor::new(&mut input, &mut out, &mut b, Operation::Download);
            p.process()
        };
        let err = result.unwrap_err();
        assert_eq!(err.to_string(), format!("request too large: {expected}"));
        assert_eq!(
            render(&out),
            format!("status 400|0001|error: request too large: {expected}|0000")
        );
        // What was read (and at most held) stays near the limits.
        assert!(
            input.sent < MAX_REQUEST_BYTES + MAX_REQUEST_LINES * 16 + 256 * 1024,
            "read {} bytes",
            input.sent
        );
    }
}

#[test]
fn a_request_at_the_limits_is_still_served() {
    let mut b = MemBackend::default();
    let mut items = vec!["list-lock".to_owned()];
    items.extend((0..MAX_REQUEST_LINES - 1).map(|i| format!("x{i}=1")));
    items.push("limit=1".to_owned());
    items.push("0000".to_owned());
    let refs: Vec<&str> = items.iter().map(String::as_str).collect();
    let input = transcript(&refs);
    let out = run(Operation::Download, &mut b, &input);
    assert!(out.contains("status 200"), "{out}");
}
