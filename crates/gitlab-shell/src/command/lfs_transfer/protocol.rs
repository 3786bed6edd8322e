//! The server side of the Git LFS pure-SSH transfer protocol (git-lfs
//! `docs/proposals/ssh_adapter.md`), as GitLab Shell runs it through
//! `github.com/charmbracelet/git-lfs-transfer/transfer` (`Processor.ProcessCommands`).
//!
//! [`Processor`] reads commands in pkt-lines, calls a [`Backend`] and writes `status` replies. It
//! knows nothing about HTTP: the GitLab backend (`super::backend`) maps the calls onto the LFS
//! API of the project, and unit tests use an in-memory backend. Reply shapes and error texts
//! follow the Go library so that a `git lfs` client sees the same bytes.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use pktline::{Packet, Reader, Writer};
use sha2::{Digest, Sha256};

/// The capabilities advertised before the first command.
pub const CAPABILITIES: [&str; 2] = ["version=1", "locking"];

/// Most lines one request (a batch's pointers, a command's arguments) may carry, and most
/// bytes in them: what the processor holds in memory for one request (docs/lfs-limits.md).
/// git-lfs sends batches of 100 objects (`lfs.transfer.batchSize`), about 100 bytes each.
pub const MAX_REQUEST_LINES: usize = 20_000;
/// See [`MAX_REQUEST_LINES`].
pub const MAX_REQUEST_BYTES: usize = 8 << 20;

/// Default and largest `limit` of `list-lock`.
const DEFAULT_LOCK_LIMIT: usize = 20;
const MAX_LOCK_LIMIT: usize = 100;

/// `key=value` arguments of a command, keyed by name.
pub type Args = BTreeMap<String, String>;

/// The transfer direction given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `upload` (push).
    Upload,
    /// `download` (fetch).
    Download,
}

impl Operation {
    /// Parses `upload` / `download`.
    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "upload" => Some(Operation::Upload),
            "download" => Some(Operation::Download),
            _ => None,
        }
    }

    /// `upload` / `download`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Upload => "upload",
            Operation::Download => "download",
        }
    }
}

/// An object named in a `batch` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pointer {
    /// SHA-256 object id (hex).
    pub oid: String,
    /// Size in bytes.
    pub size: i64,
}

/// One object of a `batch` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// The object.
    pub pointer: Pointer,
    /// Whether the backend has an action for it (the action line then names the operation).
    pub has_action: bool,
    /// Extra `key=value` items (`id`, `token`, ...), written sorted by key.
    pub args: Args,
}

/// Whose lock it is, from the point of view of the caller (`list-lock` on upload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The caller's.
    Ours,
    /// Someone else's.
    Theirs,
}

/// A file lock as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    /// Server id.
    pub id: String,
    /// Locked path.
    pub path: String,
    /// RFC 3339 time, already formatted.
    pub locked_at: String,
    /// Owner's display name.
    pub owner_name: String,
    /// Ours or theirs, when known.
    pub owner: Option<Owner>,
}

impl Lock {
    fn as_arguments(&self) -> Vec<String> {
        vec![
            format!("id={}", self.id),
            format!("path={}", self.path),
            format!("locked-at={}", self.locked_at),
            format!("ownername={}", self.owner_name),
        ]
    }

    fn as_lock_spec(&self, with_owner: bool) -> Vec<String> {
        let id = &self.id;
        let mut spec = vec![
            format!("lock {id}"),
            format!("path {id} {}", self.path),
            format!("locked-at {id} {}", self.locked_at),
            format!("ownername {id} {}", self.owner_name),
        ];
        if with_owner {
            let who = match self.owner {
                Some(Owner::Ours) => "ours",
                Some(Owner::Theirs) => "theirs",
                None => "",
            };
            spec.push(format!("owner {id} {who}"));
        }
        spec
    }
}

/// The result of creating a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockCreated {
    /// The new lock.
    Created(Lock),
    /// The path is already locked; the existing lock when the server said which.
    Conflict(Option<Lock>),
}

/// A downloadable object.
pub struct Download {
    /// Object bytes.
    pub reader: Box<dyn Read>,
    /// Size in bytes (the `size=` argument).
    pub size: u64,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// A failed command. The variant picks the status code; `Display` is the text after `error: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 400: malformed request or data (`parse error`, `invalid packet`, `extra data`,
    /// `corrupt data`).
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("{0}")]
    NotAllowed(String),
    /// 500 `internal error`; the text is only logged.
    #[error("{0}")]
    Internal(String),
    /// 400, and the session ends: a request over [`MAX_REQUEST_LINES`]/[`MAX_REQUEST_BYTES`]
    /// (the rest of it is not read, so the stream cannot be resynchronised).
    #[error("request too large: {0}")]
    TooLarge(String),
}

impl Error {
    fn parse(detail: impl std::fmt::Display) -> Error {
        Error::BadRequest(format!("parse error: {detail}"))
    }

    fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::TooLarge(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::NotAllowed(_) => 405,
            Error::Internal(_) => 500,
        }
    }
}

/// What the processor needs from the storage side.
pub trait Backend {
    /// Resolves a batch request. `args` holds the batch arguments (`refname`, `hash-algo`, ...).
    fn batch(
        &mut self,
        op: Operation,
        objects: &[Pointer],
        args: &Args,
    ) -> Result<Vec<BatchItem>, Error>;
    /// Stores an uploaded object whose bytes were already read (and hashed) from the client.
    fn upload(&mut self, oid: &str, data: Vec<u8>, args: &Args) -> Result<(), Error>;
    /// Confirms an upload (`verify-object`).
    fn verify(&mut self, oid: &str, args: &Args) -> Result<(), Error>;
    /// Opens an object for download; `Ok(None)` when it does not exist.
    fn download(&mut self, oid: &str, args: &Args) -> Result<Option<Download>, Error>;
    /// Creates a lock on `path`.
    fn create_lock(&mut self, path: &str, refname: &str) -> Result<LockCreated, Error>;
    /// The lock on `path`, if any.
    fn lock_for_path(&mut self, path: &str) -> Result<Option<Lock>, Error>;
    /// A page of locks (ours first, then theirs) and the next cursor (empty at the end).
    /// `args` are the `list-lock` arguments (`path`, `id`, `refname`).
    fn list_locks(
        &mut self,
        cursor: &str,
        limit: usize,
        args: &Args,
    ) -> Result<(Vec<Lock>, String), Error>;
    /// Removes lock `id`.
    fn unlock(&mut self, id: &str, force: bool, refname: &str) -> Result<Lock, Error>;
}

/// A reply: status line, arguments, then either text lines or binary data after a delimiter.
struct Status {
    code: u16,
    args: Vec<String>,
    body: Body,
}

enum Body {
    None,
    Lines(Vec<String>),
    Data(Box<dyn Read>),
}

impl Status {
    fn ok() -> Status {
        Status {
            code: 200,
            args: Vec::new(),
            body: Body::None,
        }
    }

    fn with_lines(code: u16, args: Vec<String>, lines: Vec<String>) -> Status {
        Status {
            code,
            args,
            body: Body::Lines(lines),
        }
    }

    fn message(code: u16, message: impl Into<String>) -> Status {
        Status::with_lines(code, Vec::new(), vec![message.into()])
    }
}

/// Runs the protocol over one pair of streams.
pub struct Processor<'b, R, W, B> {
    reader: Reader<R>,
    writer: Writer<W>,
    backend: &'b mut B,
    op: Operation,
}

impl<'b, R: Read, W: Write, B: Backend> Processor<'b, R, W, B> {
    /// A processor for `op` reading commands from `input` and answering on `output`.
    pub fn new(input: R, output: W, backend: &'b mut B, op: Operation) -> Self {
        Processor {
            reader: Reader::new(input),
            writer: Writer::new(output),
            backend,
            op,
        }
    }

    /// Writes the capability advertisement (`version=1`, `locking`, flush).
    pub fn send_capabilities(&mut self) -> io::Result<()> {
        for cap in CAPABILITIES {
            self.writer.text(cap)?;
        }
        self.writer.flush_pkt()?;
        self.writer.flush_io()
    }

    /// Serves commands until `quit` or end of input. An I/O or framing error on the input ends
    /// the session with that error; command failures are answered with a status instead.
    pub fn process(&mut self) -> io::Result<()> {
        loop {
            let line = match self.reader.read_packet()? {
                None => return Ok(()),
                Some(p) => String::from_utf8_lossy(p.as_text().unwrap_or_default()).into_owned(),
            };
            let mut words = line.split(' ');
            let command = words.next().unwrap_or_default();
            let operand = words.next();
            let outcome: Result<Option<Status>, Error> = match (command, operand) {
                ("", _) => Ok(Some(Status::message(400, "unknown command"))),
                ("version", Some("1")) => self.version(),
                ("version", _) => Ok(Some(Status::message(400, "unknown version"))),
                ("batch", _) => self.batch(),
                ("put-object", Some(oid)) => self.put_object(oid),
                ("verify-object", Some(oid)) => self.verify_object(oid),
                ("get-object", Some(oid)) => self.get_object(oid),
                ("put-object" | "verify-object" | "get-object", None) => {
                    Ok(Some(Status::message(400, "bad request")))
                }
                ("lock", _) => self.lock(),
                ("list-lock" | "list-locks", _) => self.list_locks(),
                ("unlock", Some(id)) => self.unlock(id),
                ("quit", _) => {
                    self.send(Status::ok())?;
                    return Ok(());
                }
                _ => Ok(Some(Status::message(400, "unknown command"))),
            };
            match outcome {
                Ok(Some(status)) => self.send(status)?,
                Ok(None) => {}
                Err(Error::Internal(detail)) => {
                    tracing::error!(error = %detail, "lfs-transfer: failed to process command");
                    self.send(Status::message(500, "internal error"))?;
                }
                Err(e @ Error::TooLarge(_)) => {
                    tracing::error!(error = %e, "lfs-transfer: request over the limits, ending the session");
                    self.send(Status::message(e.status(), format!("error: {e}")))?;
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()));
                }
                Err(e) => {
                    let code = e.status();
                    self.send(Status::message(code, format!("error: {e}")))?;
                }
            }
        }
    }

    fn send(&mut self, status: Status) -> io::Result<()> {
        self.writer.text(&format!("status {:03}", status.code))?;
        for arg in &status.args {
            self.writer.text(arg)?;
        }
        match status.body {
            Body::None => {}
            Body::Lines(lines) => {
                self.writer.delim()?;
                for line in &lines {
                    self.writer.text(line)?;
                }
            }
            Body::Data(mut reader) => {
                self.writer.delim()?;
                io::copy(&mut reader, &mut self.writer.data_writer())?;
            }
        }
        self.writer.flush_pkt()?;
        self.writer.flush_io()
    }

    /// Reads `key=value` lines up to a delimiter (`to_delim`) or a flush.
    fn read_args(&mut self, to_delim: bool) -> Result<Args, Error> {
        let lines = if to_delim {
            self.read_list_to_delim()?
        } else {
            self.read_list_to_flush()?
        };
        parse_args(&lines)
    }

    fn read_list_to_flush(&mut self) -> Result<Vec<String>, Error> {
        self.read_list(false)
    }

    fn read_list_to_delim(&mut self) -> Result<Vec<String>, Error> {
        self.read_list(true)
    }

    /// Text lines up to a flush, or (`to_delim`) up to a delimiter, where any other packet
    /// counts as a line. Bounded by [`MAX_REQUEST_LINES`] and [`MAX_REQUEST_BYTES`].
    fn read_list(&mut self, to_delim: bool) -> Result<Vec<String>, Error> {
        let mut lines = Vec::new();
        let mut bytes = 0usize;
        loop {
            let line = match self.reader.read_packet() {
                Ok(Some(Packet::Delim)) if to_delim => return Ok(lines),
                Ok(Some(Packet::Flush)) if !to_delim => return Ok(lines),
                Ok(Some(p @ Packet::Data(_))) => {
                    String::from_utf8_lossy(p.as_text().unwrap_or_default()).into_owned()
                }
                Ok(Some(p)) if to_delim => {
                    String::from_utf8_lossy(p.as_text().unwrap_or_default()).into_owned()
                }
                Ok(Some(_)) => return Err(Error::parse("unexpected special packet")),
                Ok(None) if to_delim => return Err(Error::parse("EOF")),
                Ok(None) => return Err(Error::parse("end of input before flush packet")),
                Err(e) => return Err(Error::parse(e)),
            };
            bytes += line.len();
            if lines.len() == MAX_REQUEST_LINES {
                return Err(Error::TooLarge(format!(
                    "more than {MAX_REQUEST_LINES} lines"
                )));
            }
            if bytes > MAX_REQUEST_BYTES {
                return Err(Error::TooLarge(format!(
                    "more than {MAX_REQUEST_BYTES} bytes of lines"
                )));
            }
            lines.push(line);
        }
    }

    fn version(&mut self) -> Result<Option<Status>, Error> {
        self.read_list_to_flush()?;
        Ok(Some(Status::ok()))
    }

    fn batch(&mut self) -> Result<Option<Status>, Error> {
        let args = self.read_args(true)?;
        let lines = self.read_list_to_flush()?;
        match args.get("hash-algo").map(String::as_str) {
            None | Some("") | Some("sha256") => {}
            Some(other) => {
                return Err(Error::NotAllowed(format!(
                    "not allowed: unsupported hash algorithm: {other}"
                )));
            }
        }
        let mut pointers = Vec::with_capacity(lines.len());
        for line in &lines {
            if line.is_empty() {
                return Err(Error::BadRequest("invalid packet".into()));
            }
            let parts: Vec<&str> = line.split(' ').collect();
            if parts.len() < 2 || parts[1].is_empty() {
                return Err(Error::BadRequest("parse error".into()));
            }
            let size = parts[1]
                .parse::<i64>()
                .map_err(|_| Error::parse(format!("invalid integer, got: {:?}", parts[1])))?;
            if parts.len() > 2 {
                let extra: Vec<String> = parts[2..].iter().map(|s| (*s).to_owned()).collect();
                parse_args(&extra)?;
            }
            pointers.push(Pointer {
                oid: parts[0].to_owned(),
                size,
            });
        }
        let items = self.backend.batch(self.op, &pointers, &args)?;
        let (present, missing) = match self.op {
            Operation::Upload => ("noop", "upload"),
            Operation::Download => ("download", "noop"),
        };
        let lines = items
            .iter()
            .map(|item| {
                // For uploads an action means "missing on the server".
                let is_present = match self.op {
                    Operation::Upload => !item.has_action,
                    Operation::Download => item.has_action,
                };
                let action = if is_present { present } else { missing };
                let mut line = format!("{} {} {action}", item.pointer.oid, item.pointer.size);
                for (k, v) in &item.args {
                    line.push_str(&format!(" {k}={v}"));
                }
                line
            })
            .collect();
        Ok(Some(Status::with_lines(200, Vec::new(), lines)))
    }

    fn put_object(&mut self, oid: &str) -> Result<Option<Status>, Error> {
        let args = self.read_args(true)?;
        let expected: i64 = match args.get("size") {
            None => return Err(Error::Internal("missing required size header".into())),
            Some(s) => s
                .parse()
                .map_err(|e| Error::Internal(format!("invalid size: {e}")))?,
        };
        let mut data = Vec::new();
        self.reader
            .copy_data_until_flush(&mut data)
            .map_err(Error::parse)?;
        let actual_size = data.len() as i64;
        let actual_oid = hex_sha256(&data);
        self.backend.upload(oid, data, &args)?;
        if actual_size != expected {
            let detail = format!("invalid size, expected {expected}, got {actual_size}");
            if actual_size > expected {
                return Err(Error::BadRequest(format!("extra data: {detail}")));
            }
            return Err(Error::Internal(format!("missing data: {detail}")));
        }
        if actual_oid != oid {
            return Err(Error::BadRequest(format!(
                "corrupt data: invalid object ID, expected {oid}, got {actual_oid}"
            )));
        }
        Ok(Some(Status::ok()))
    }

    fn verify_object(&mut self, oid: &str) -> Result<Option<Status>, Error> {
        let args = self.read_args(false)?;
        self.backend.verify(oid, &args)?;
        Ok(Some(Status::ok()))
    }

    fn get_object(&mut self, oid: &str) -> Result<Option<Status>, Error> {
        let args = self.read_args(false)?;
        match self.backend.download(oid, &args)? {
            None => Ok(Some(Status::message(
                404,
                format!("object {oid} not found"),
            ))),
            Some(dl) => Ok(Some(Status {
                code: 200,
                args: vec![format!("size={}", dl.size)],
                body: Body::Data(dl.reader),
            })),
        }
    }

    fn lock(&mut self) -> Result<Option<Status>, Error> {
        let args = self.read_args(false)?;
        let path = args.get("path").map(String::as_str).unwrap_or_default();
        let refname = args.get("refname").map(String::as_str).unwrap_or_default();
        if path.is_empty() {
            return Err(Error::Internal(
                "missing data: path and refname are required".into(),
            ));
        }
        match self.backend.create_lock(path, refname)? {
            LockCreated::Created(lock) => Ok(Some(Status {
                code: 201,
                args: lock.as_arguments(),
                body: Body::None,
            })),
            LockCreated::Conflict(known) => {
                let lock = match known {
                    Some(lock) => lock,
                    None => self.backend.lock_for_path(path)?.ok_or_else(|| {
                        Error::Internal("lock conflict, but no lock found".into())
                    })?,
                };
                Ok(Some(Status::with_lines(
                    409,
                    lock.as_arguments(),
                    vec!["conflict".into()],
                )))
            }
        }
    }

    fn list_locks(&mut self) -> Result<Option<Status>, Error> {
        let args = self.read_args(false)?;
        let with_owner = self.op == Operation::Upload;
        let limit = match args
            .get("limit")
            .and_then(|l| l.parse::<i64>().ok())
            .unwrap_or(0)
        {
            n if n <= 0 => DEFAULT_LOCK_LIMIT,
            n if n > MAX_LOCK_LIMIT as i64 => MAX_LOCK_LIMIT,
            n => n as usize,
        };
        let cursor = args.get("cursor").cloned().unwrap_or_default();
        if let Some(path) = args.get("path").filter(|p| !p.is_empty()) {
            return match self.backend.lock_for_path(path)? {
                Some(lock) if lock.id.as_str() >= cursor.as_str() => Ok(Some(Status::with_lines(
                    200,
                    Vec::new(),
                    lock.as_lock_spec(with_owner),
                ))),
                _ => Ok(Some(Status::message(
                    404,
                    format!("lock for path {path} not found"),
                ))),
            };
        }
        let (locks, next_cursor) = self.backend.list_locks(&cursor, limit, &args)?;
        let lines = locks
            .iter()
            .take(limit)
            .flat_map(|l| l.as_lock_spec(with_owner))
            .collect();
        let mut status_args = Vec::new();
        if !next_cursor.is_empty() {
            status_args.push(format!("next-cursor={next_cursor}"));
        }
        Ok(Some(Status::with_lines(200, status_args, lines)))
    }

    fn unlock(&mut self, id: &str) -> Result<Option<Status>, Error> {
        let args = self.read_args(false)?;
        let force = args.get("force").is_some_and(|f| f == "true");
        let refname = args.get("refname").map(String::as_str).unwrap_or_default();
        let lock = self.backend.unlock(id, force, refname)?;
        Ok(Some(Status {
            code: 200,
            args: lock.as_arguments(),
            body: Body::None,
        }))
    }
}

/// Parses `key=value` lines; a line without `=` is a parse error.
pub fn parse_args(lines: &[String]) -> Result<Args, Error> {
    let mut args = Args::new();
    for line in lines {
        let Some((k, v)) = line.split_once('=') else {
            return Err(Error::parse(format!("invalid argument: {line:?}")));
        };
        args.insert(k.to_owned(), v.to_owned());
    }
    Ok(args)
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
