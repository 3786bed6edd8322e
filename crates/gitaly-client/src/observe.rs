//! What a caller can watch of each Gitaly call: the counts GitLab Shell's go-grpc-prometheus
//! client interceptors keep (`grpc_client_started_total`, `…_handled_total`,
//! `…_msg_sent_total`, `…_msg_received_total`; docs/gitlab-sshd.md, "Probes and metrics").
//! A [`crate::Pool`] built with [`crate::Pool::observed`] reports its calls to an
//! [`RpcObserver`]; the plain functions of the crate root report nothing.
//!
//! The rules are the interceptors' as the Go gitlab-sshd 14.35 shows them: one call counts once,
//! whatever happens below it (a retry, a fresh dial), so `started` and `handled` come once per
//! call. A unary call counts one message sent when it starts, and one message received only
//! when it fails (the interceptor's long-standing quirk: a successful unary call shows none).
//! A streaming call counts every request message handed to the transport (once, even when an
//! attempt is made again) and every response message read. A call that cannot dial is
//! `Unavailable`, as with grpc-go's lazy dial; an address that does not parse is no call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Error;

/// The gRPC status code a call ended with (tonic's).
pub use tonic::Code;

/// gRPC's four kinds of method, with go-grpc-prometheus's `grpc_type` label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcType {
    /// One request, one response.
    Unary,
    /// A request stream, one response.
    ClientStream,
    /// One request, a response stream.
    ServerStream,
    /// Both streams.
    BidiStream,
}

impl RpcType {
    /// `unary`, `client_stream`, `server_stream` or `bidi_stream`.
    pub fn as_str(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::ClientStream => "client_stream",
            RpcType::ServerStream => "server_stream",
            RpcType::BidiStream => "bidi_stream",
        }
    }
}

/// One gRPC method: its kind, its service's full name and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rpc {
    /// The method's kind (`grpc_type`).
    pub kind: RpcType,
    /// e.g. `gitaly.SSHService` (`grpc_service`).
    pub service: &'static str,
    /// e.g. `SSHReceivePack` (`grpc_method`).
    pub method: &'static str,
}

/// `gitaly.SSHService/SSHUploadPackWithSidechannel` (unary; the pack goes over the
/// sidechannel, outside gRPC).
pub const UPLOAD_PACK: Rpc = Rpc {
    kind: RpcType::Unary,
    service: "gitaly.SSHService",
    method: "SSHUploadPackWithSidechannel",
};

/// `gitaly.SSHService/SSHReceivePack` (bidi).
pub const RECEIVE_PACK: Rpc = Rpc {
    kind: RpcType::BidiStream,
    service: "gitaly.SSHService",
    method: "SSHReceivePack",
};

/// `gitaly.SSHService/SSHUploadArchive` (bidi).
pub const UPLOAD_ARCHIVE: Rpc = Rpc {
    kind: RpcType::BidiStream,
    service: "gitaly.SSHService",
    method: "SSHUploadArchive",
};

/// Told about every Gitaly call of a [`crate::Pool`]. Every method has an empty default.
pub trait RpcObserver: Send + Sync {
    /// The call began.
    fn started(&self, _rpc: &Rpc) {}
    /// A request message went out.
    fn msg_sent(&self, _rpc: &Rpc) {}
    /// A response message came in.
    fn msg_received(&self, _rpc: &Rpc) {}
    /// The call ended with `code`.
    fn handled(&self, _rpc: &Rpc, _code: tonic::Code) {}
}

/// The code a call ended with: its gRPC status, `Unknown` for an error that is not one (as
/// grpc-go's `status.FromError`).
pub(crate) fn code_of<T>(result: &Result<T, Error>) -> tonic::Code {
    match result {
        Ok(_) => tonic::Code::Ok,
        Err(e) => e.code().unwrap_or(tonic::Code::Unknown),
    }
}

/// One call's counting, shared by its attempts.
#[derive(Clone)]
pub(crate) struct Tally {
    observer: Option<Arc<dyn RpcObserver>>,
    rpc: &'static Rpc,
    /// The most request messages any attempt has handed over so far.
    sent: Arc<AtomicU64>,
}

impl Tally {
    pub(crate) fn new(observer: Option<Arc<dyn RpcObserver>>, rpc: &'static Rpc) -> Tally {
        Tally {
            observer,
            rpc,
            sent: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The call begins (a unary call's one request counts as sent here).
    pub(crate) fn started(&self) {
        if let Some(o) = &self.observer {
            o.started(self.rpc);
            if self.rpc.kind == RpcType::Unary {
                o.msg_sent(self.rpc);
            }
        }
    }

    /// An attempt handed over its `n`th request message (1-based); counts each `n` once per
    /// call, so a replayed attempt adds nothing until it goes further than the earlier ones.
    pub(crate) fn sent(&self, n: u64) {
        if self.sent.fetch_max(n, Ordering::AcqRel) < n
            && let Some(o) = &self.observer
        {
            o.msg_sent(self.rpc);
        }
    }

    /// A response message was read.
    pub(crate) fn received(&self) {
        if let Some(o) = &self.observer {
            o.msg_received(self.rpc);
        }
    }

    /// The call ended with `result`.
    pub(crate) fn finish<T>(&self, result: &Result<T, Error>) {
        let Some(o) = &self.observer else { return };
        if self.rpc.kind == RpcType::Unary && result.is_err() {
            o.msg_received(self.rpc);
        }
        o.handled(self.rpc, code_of(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl RpcObserver for Log {
        fn started(&self, rpc: &Rpc) {
            self.push(format!("started {}", rpc.method));
        }
        fn msg_sent(&self, rpc: &Rpc) {
            self.push(format!("sent {}", rpc.method));
        }
        fn msg_received(&self, rpc: &Rpc) {
            self.push(format!("received {}", rpc.method));
        }
        fn handled(&self, rpc: &Rpc, code: tonic::Code) {
            self.push(format!(
                "handled {} {}",
                rpc.method,
                crate::go_code_name(code)
            ));
        }
    }

    impl Log {
        fn push(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut self.0.lock().unwrap())
        }
    }

    #[test]
    fn a_unary_call_counts_one_sent_and_a_received_only_when_it_fails() {
        let log = Arc::new(Log::default());
        let tally = Tally::new(Some(log.clone()), &UPLOAD_PACK);
        tally.started();
        tally.finish(&Ok::<(), Error>(()));
        let m = "SSHUploadPackWithSidechannel";
        assert_eq!(
            log.take(),
            [
                format!("started {m}"),
                format!("sent {m}"),
                format!("handled {m} OK")
            ]
        );
        let tally = Tally::new(Some(log.clone()), &UPLOAD_PACK);
        tally.started();
        tally.finish(&Err::<(), _>(Error::unavailable(false)));
        assert_eq!(
            log.take(),
            [
                format!("started {m}"),
                format!("sent {m}"),
                format!("received {m}"),
                format!("handled {m} Unavailable")
            ]
        );
    }

    #[test]
    fn a_streaming_call_counts_each_message_once_across_attempts() {
        let log = Arc::new(Log::default());
        let tally = Tally::new(Some(log.clone()), &RECEIVE_PACK);
        tally.started();
        // First attempt: two messages out, then it fails; the second replays them and sends a
        // third.
        tally.sent(1);
        tally.sent(2);
        tally.sent(1);
        tally.sent(2);
        tally.sent(3);
        tally.received();
        tally.received();
        tally.finish(&Err::<(), _>(Error::cancelled()));
        let m = "SSHReceivePack";
        assert_eq!(
            log.take(),
            [
                format!("started {m}"),
                format!("sent {m}"),
                format!("sent {m}"),
                format!("sent {m}"),
                format!("received {m}"),
                format!("received {m}"),
                format!("handled {m} Canceled")
            ]
        );
    }

    #[test]
    fn errors_without_a_grpc_status_are_unknown() {
        assert_eq!(
            code_of(&Err::<(), _>(Error::Local("x".into()))),
            tonic::Code::Unknown
        );
        assert_eq!(code_of(&Ok::<(), Error>(())), tonic::Code::Ok);
    }

    #[test]
    fn type_labels_are_go_grpc_prometheus_ones() {
        assert_eq!(RpcType::Unary.as_str(), "unary");
        assert_eq!(RpcType::ClientStream.as_str(), "client_stream");
        assert_eq!(RpcType::ServerStream.as_str(), "server_stream");
        assert_eq!(RpcType::BidiStream.as_str(), "bidi_stream");
    }
}
