//! The Prometheus metrics gitlab-sshd exposes on `web_listen` `/metrics` (docs/gitlab-sshd.md,
//! "Metrics"): upstream's names, types and buckets, plus ours for the limits upstream lacks.
//! Plain atomics and a hand-written text exposition (format 0.0.4): no registry crate (the
//! crates we looked at either add `_total` to counter names, which upstream's
//! `gitlab_sli:…:total` names cannot take, or bring a global registry; a dozen series do not need
//! one). [`SessionObserver`] is how the shared command layer reports into them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    const fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            inner: Mutex::new((Vec::new(), 0.0, 0)),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let v = d.as_secs_f64();
        if let Ok(mut g) = self.inner.lock() {
            if g.0.len() != self.bounds.len() {
                g.0 = vec![0; self.bounds.len()];
            }
            for (i, b) in self.bounds.iter().enumerate() {
                if v <= *b {
                    g.0[i] += 1;
                }
            }
            g.1 += v;
            g.2 += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let (buckets, sum, count) = match self.inner.lock() {
            Ok(g) => (g.0.clone(), g.1, g.2),
            Err(_) => (Vec::new(), 0.0, 0),
        };
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                buckets.get(i).copied().unwrap_or(0)
            );
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// `"` `\\` and newlines escaped, as the text format wants label values.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String]) -> String {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// A counter family: one series per set of label values, shown once touched (as a Go
/// `CounterVec`).
pub struct CounterVec {
    labels: &'static [&'static str],
    inner: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    const fn new(labels: &'static [&'static str]) -> Self {
        CounterVec {
            labels,
            inner: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds one to the series of `values` (in the order of the label names).
    pub fn inc(&self, values: &[&str]) {
        if let Ok(mut g) = self.inner.lock() {
            *g.entry(values.iter().map(|v| (*v).to_owned()).collect())
                .or_insert(0) += 1;
        }
    }

    /// The value of one series (0 when never touched).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| (*v).to_owned()).collect();
        self.inner
            .lock()
            .map(|g| g.get(&key).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        if let Ok(g) = self.inner.lock() {
            for (values, n) in g.iter() {
                let _ = writeln!(out, "{name}{{{}}} {n}", label_text(self.labels, values));
            }
        }
    }
}

/// One histogram's state: cumulative bucket counts, sum, count.
type HistogramState = (Vec<u64>, f64, u64);

/// A histogram family: one histogram per set of label values.
pub struct HistogramVec {
    labels: &'static [&'static str],
    bounds: &'static [f64],
    inner: Mutex<BTreeMap<Vec<String>, HistogramState>>,
}

impl HistogramVec {
    const fn new(labels: &'static [&'static str], bounds: &'static [f64]) -> Self {
        HistogramVec {
            labels,
            bounds,
            inner: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records one observation in the series of `values`.
    pub fn observe(&self, values: &[&str], d: Duration) {
        let v = d.as_secs_f64();
        if let Ok(mut g) = self.inner.lock() {
            let e = g
                .entry(values.iter().map(|v| (*v).to_owned()).collect())
                .or_insert_with(|| (vec![0; self.bounds.len()], 0.0, 0));
            for (i, b) in self.bounds.iter().enumerate() {
                if v <= *b {
                    e.0[i] += 1;
                }
            }
            e.1 += v;
            e.2 += 1;
        }
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let Ok(g) = self.inner.lock() else {
            return;
        };
        for (values, (buckets, sum, count)) in g.iter() {
            let labels = label_text(self.labels, values);
            for (i, b) in self.bounds.iter().enumerate() {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {}", buckets[i]);
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            let _ = writeln!(
                out,
                "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
            );
        }
    }
}

/// Every metric of the process.
pub struct Metrics {
    /// `gitlab_shell_sshd_in_flight_connections`.
    pub in_flight_connections: AtomicI64,
    /// `gitlab_shell_sshd_concurrent_limited_sessions_total`.
    pub concurrent_limited_sessions: AtomicU64,
    /// `gitlab_shell_sshd_session_duration_seconds`.
    pub session_duration: Histogram,
    /// `gitlab_shell_sshd_session_established_duration_seconds`.
    pub session_established_duration: Histogram,
    /// `gitlab_sli:shell_sshd_sessions:total`.
    pub sessions_total: AtomicU64,
    /// `gitlab_sli:shell_sshd_sessions:errors_total`.
    pub session_errors_total: AtomicU64,
    /// `gitlab_sli:shell_sshd_connections:total`.
    pub connections_total: AtomicU64,
    /// `gitlab_sli:shell_sshd_connections:errors_total`.
    pub connection_errors_total: AtomicU64,
    /// Ours: `gitlab_shell_sshd_unauthenticated_connections` (gauge).
    pub unauthenticated_connections: AtomicI64,
    /// Ours: `gitlab_shell_sshd_unauthenticated_limited_connections_total`.
    pub unauthenticated_limited: AtomicU64,
    /// Ours: `gitlab_shell_sshd_proxy_rejected_connections_total`.
    pub proxy_rejected: AtomicU64,
    /// Ours: `gitlab_shell_sshd_per_source_limited_connections_total`.
    pub per_source_limited: AtomicU64,
    /// `gitlab_shell_gitaly_connections_total{status}` (`ok`, `fail`): new Gitaly connections.
    pub gitaly_connections: CounterVec,
    /// `gitlab_shell_http_requests_total{code,method}`: internal-API answers.
    pub http_requests: CounterVec,
    /// `gitlab_shell_http_request_duration_seconds{code,method}`.
    pub http_request_duration: HistogramVec,
    /// `gitlab_shell_http_in_flight_requests`.
    pub http_in_flight: AtomicI64,
    /// `lfs_http_connections_total`: `git-lfs-authenticate` commands.
    pub lfs_http_connections: AtomicU64,
    /// `lfs_ssh_connections_total`: `git-lfs-transfer` commands (pure SSH LFS).
    pub lfs_ssh_connections: AtomicU64,
    /// `gitlab_shell_topology_request_duration_seconds`: never observed (Topology Service
    /// routing is not implemented); shown at zero as upstream's unlabelled histogram is.
    pub topology_request_duration: Histogram,
    /// `grpc_client_started_total{grpc_method,grpc_service,grpc_type}`: Gitaly calls begun.
    pub grpc_started: CounterVec,
    /// `grpc_client_handled_total{grpc_code,grpc_method,grpc_service,grpc_type}`: calls ended.
    pub grpc_handled: CounterVec,
    /// `grpc_client_msg_sent_total{grpc_method,grpc_service,grpc_type}`.
    pub grpc_msg_sent: CounterVec,
    /// `grpc_client_msg_received_total{grpc_method,grpc_service,grpc_type}`.
    pub grpc_msg_received: CounterVec,
}

/// The labels of the `grpc_client_*` families but `handled` (alphabetical, as Go renders them).
const GRPC_LABELS: &[&str] = &["grpc_method", "grpc_service", "grpc_type"];

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

impl Metrics {
    /// All zero, with upstream's buckets (the static above; fresh ones in tests).
    const fn new() -> Metrics {
        Metrics {
            in_flight_connections: AtomicI64::new(0),
            concurrent_limited_sessions: AtomicU64::new(0),
            session_duration: Histogram::new(&[5.0, 30.0, 60.0]),
            session_established_duration: Histogram::new(&[0.5, 1.0, 5.0]),
            sessions_total: AtomicU64::new(0),
            session_errors_total: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connection_errors_total: AtomicU64::new(0),
            unauthenticated_connections: AtomicI64::new(0),
            unauthenticated_limited: AtomicU64::new(0),
            proxy_rejected: AtomicU64::new(0),
            per_source_limited: AtomicU64::new(0),
            gitaly_connections: CounterVec::new(&["status"]),
            http_requests: CounterVec::new(&["code", "method"]),
            http_request_duration: HistogramVec::new(
                &["code", "method"],
                &[0.005, 0.025, 0.1, 0.5, 1.0, 10.0, 30.0, 60.0, 300.0],
            ),
            http_in_flight: AtomicI64::new(0),
            lfs_http_connections: AtomicU64::new(0),
            lfs_ssh_connections: AtomicU64::new(0),
            topology_request_duration: Histogram::new(&[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            grpc_started: CounterVec::new(GRPC_LABELS),
            grpc_handled: CounterVec::new(&[
                "grpc_code",
                "grpc_method",
                "grpc_service",
                "grpc_type",
            ]),
            grpc_msg_sent: CounterVec::new(GRPC_LABELS),
            grpc_msg_received: CounterVec::new(GRPC_LABELS),
        }
    }
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

impl Metrics {
    /// The text exposition of every metric.
    pub fn render(&self, version: &str, built: &str) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        simple(
            &mut out,
            "gitlab_shell_sshd_in_flight_connections",
            "gauge",
            "A gauge of connections currently being served by the sshd server",
            self.in_flight_connections.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "gitlab_shell_sshd_concurrent_limited_sessions_total",
            "counter",
            "The number of times the concurrent sessions limit was hit in gitlab-shell",
            get(&self.concurrent_limited_sessions),
        );
        self.session_duration.render(
            &mut out,
            "gitlab_shell_sshd_session_duration_seconds",
            "A histogram of latencies for connections to gitlab-shell sshd.",
        );
        self.session_established_duration.render(
            &mut out,
            "gitlab_shell_sshd_session_established_duration_seconds",
            "A histogram of latencies until session established to gitlab-shell sshd.",
        );
        simple(
            &mut out,
            "gitlab_sli:shell_sshd_sessions:total",
            "counter",
            "The number of SSH sessions that have been established",
            get(&self.sessions_total),
        );
        simple(
            &mut out,
            "gitlab_sli:shell_sshd_sessions:errors_total",
            "counter",
            "The number of SSH sessions that have failed",
            get(&self.session_errors_total),
        );
        simple(
            &mut out,
            "gitlab_sli:shell_sshd_connections:total",
            "counter",
            "The number of SSH connections that attempted authentication",
            get(&self.connections_total),
        );
        simple(
            &mut out,
            "gitlab_sli:shell_sshd_connections:errors_total",
            "counter",
            "The number of SSH connections with a server-side error",
            get(&self.connection_errors_total),
        );
        simple(
            &mut out,
            "gitlab_shell_sshd_unauthenticated_connections",
            "gauge",
            "Connections in flight that have not authenticated yet",
            self.unauthenticated_connections.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "gitlab_shell_sshd_unauthenticated_limited_connections_total",
            "counter",
            "Connections closed because max_unauthenticated_connections was reached",
            get(&self.unauthenticated_limited),
        );
        simple(
            &mut out,
            "gitlab_shell_sshd_proxy_rejected_connections_total",
            "counter",
            "Connections closed by the PROXY protocol policy",
            get(&self.proxy_rejected),
        );
        simple(
            &mut out,
            "gitlab_shell_sshd_per_source_limited_connections_total",
            "counter",
            "Connections closed because max_connections_per_source was reached",
            get(&self.per_source_limited),
        );
        self.gitaly_connections.render(
            &mut out,
            "gitlab_shell_gitaly_connections_total",
            "Number of Gitaly connections that have been established",
        );
        self.http_requests.render(
            &mut out,
            "gitlab_shell_http_requests_total",
            "A counter for http requests.",
        );
        self.http_request_duration.render(
            &mut out,
            "gitlab_shell_http_request_duration_seconds",
            "A histogram of latencies for http requests.",
        );
        simple(
            &mut out,
            "gitlab_shell_http_in_flight_requests",
            "gauge",
            "A gauge of in-flight http requests.",
            self.http_in_flight.load(Ordering::Relaxed),
        );
        simple(
            &mut out,
            "lfs_http_connections_total",
            "counter",
            "Number of LFS over HTTP connections that have been established",
            get(&self.lfs_http_connections),
        );
        simple(
            &mut out,
            "lfs_ssh_connections_total",
            "counter",
            "Number of LFS over SSH connections that have been established",
            get(&self.lfs_ssh_connections),
        );
        self.topology_request_duration.render(
            &mut out,
            "gitlab_shell_topology_request_duration_seconds",
            "Latency of Topology Service Classify requests.",
        );
        self.grpc_handled.render(
            &mut out,
            "grpc_client_handled_total",
            "Total number of RPCs completed by the client, regardless of success or failure.",
        );
        self.grpc_msg_received.render(
            &mut out,
            "grpc_client_msg_received_total",
            "Total number of RPC stream messages received by the client.",
        );
        self.grpc_msg_sent.render(
            &mut out,
            "grpc_client_msg_sent_total",
            "Total number of gRPC stream messages sent by the client.",
        );
        self.grpc_started.render(
            &mut out,
            "grpc_client_started_total",
            "Total number of RPCs started on the client.",
        );
        let _ = writeln!(
            out,
            "# HELP gitlab_build_info Current build info for this GitLab Service\n# TYPE gitlab_build_info gauge\ngitlab_build_info{{built=\"{built}\",version=\"{version}\"}} 1"
        );
        out
    }
}

/// Whether a connection had a server-side error; the first one counts the connection in
/// `gitlab_sli:shell_sshd_connections:errors_total` (once per connection, as upstream).
#[derive(Debug, Default)]
pub struct ConnErrors {
    marked: AtomicBool,
    counter: Option<&'static AtomicU64>,
}

impl ConnErrors {
    /// A flag counting into [`METRICS`].
    pub fn new() -> Arc<ConnErrors> {
        Arc::new(ConnErrors {
            marked: AtomicBool::new(false),
            counter: Some(&METRICS.connection_errors_total),
        })
    }

    /// Marks the connection; counts it the first time.
    pub fn mark(&self) {
        if !self.marked.swap(true, Ordering::AcqRel)
            && let Some(c) = self.counter
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the shared command layer reports, counted into [`METRICS`] (one per session): the
/// internal-API requests (as GitLab Shell's promhttp round-trippers: the in-flight gauge around
/// every attempt, the counter and histogram only for attempts that got an answer), the LFS
/// commands, and session errors by GitLab Shell's rules
/// ([`gitlab_shell::error::Error::is_session_error`]).
pub struct SessionObserver {
    metrics: &'static Metrics,
    conn: Arc<ConnErrors>,
    /// What `/allowed` granted the session's command, for the `access: finish` line.
    granted: Mutex<Option<crate::access::Meta>>,
}

impl std::fmt::Debug for SessionObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionObserver")
            .field("conn", &self.conn)
            .finish_non_exhaustive()
    }
}

impl SessionObserver {
    /// An observer for one session of the connection whose error flag is `conn`.
    pub fn new(conn: Arc<ConnErrors>) -> SessionObserver {
        SessionObserver {
            metrics: &METRICS,
            conn,
            granted: Mutex::new(None),
        }
    }

    /// The project `/allowed` granted the session's command, if it got that far.
    pub fn granted(&self) -> Option<crate::access::Meta> {
        self.granted.lock().ok().and_then(|g| g.clone())
    }
}

/// promhttp's label values: the status as digits, the method in lower case.
fn http_labels(method: &str, status: u16) -> (String, String) {
    (status.to_string(), method.to_ascii_lowercase())
}

impl gitlab_shell::observe::Observer for SessionObserver {
    fn http_request_started(&self) {
        self.metrics.http_in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn http_request_finished(&self, method: &str, status: Option<u16>, elapsed: Duration) {
        self.metrics.http_in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(status) = status {
            let (code, method) = http_labels(method, status);
            self.metrics.http_requests.inc(&[&code, &method]);
            self.metrics
                .http_request_duration
                .observe(&[&code, &method], elapsed);
        }
    }

    fn command_built(&self, command: &gitlab_shell::command::Command) {
        use gitlab_shell::command::Command;
        match command {
            Command::LfsAuthenticate => {
                self.metrics
                    .lfs_http_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            Command::LfsTransfer => {
                self.metrics
                    .lfs_ssh_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    fn access_granted(&self, response: &gitlab_shell::api::allowed::Response) {
        if let Ok(mut g) = self.granted.lock() {
            *g = Some(crate::access::Meta::from_response(response));
        }
    }

    fn command_failed(&self, error: &gitlab_shell::error::Error) {
        if error.is_session_error() {
            tracing::warn!(error = %error, "connection: session error");
            self.metrics
                .session_errors_total
                .fetch_add(1, Ordering::Relaxed);
            self.conn.mark();
        }
    }
}

/// Gitaly calls counted into [`METRICS`] as go-grpc-prometheus's client interceptors count
/// them (the rules are in `gitaly_client::observe`); the Gitaly connection pool reports to it.
pub struct GrpcMetrics {
    metrics: &'static Metrics,
}

impl GrpcMetrics {
    /// Counting into [`METRICS`].
    pub fn new() -> GrpcMetrics {
        GrpcMetrics { metrics: &METRICS }
    }
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `grpc_method`, `grpc_service`, `grpc_type` of `rpc`.
fn grpc_values(rpc: &gitaly_client::Rpc) -> [&'static str; 3] {
    [rpc.method, rpc.service, rpc.kind.as_str()]
}

impl gitaly_client::RpcObserver for GrpcMetrics {
    fn started(&self, rpc: &gitaly_client::Rpc) {
        self.metrics.grpc_started.inc(&grpc_values(rpc));
    }

    fn msg_sent(&self, rpc: &gitaly_client::Rpc) {
        self.metrics.grpc_msg_sent.inc(&grpc_values(rpc));
    }

    fn msg_received(&self, rpc: &gitaly_client::Rpc) {
        self.metrics.grpc_msg_received.inc(&grpc_values(rpc));
    }

    fn handled(&self, rpc: &gitaly_client::Rpc, code: gitaly_client::observe::Code) {
        let [method, service, kind] = grpc_values(rpc);
        self.metrics
            .grpc_handled
            .inc(&[gitaly_client::go_code_name(code), method, service, kind]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gitlab_shell::observe::Observer as _;

    fn fresh() -> &'static Metrics {
        Box::leak(Box::new(Metrics::new()))
    }

    fn observer(m: &'static Metrics) -> (SessionObserver, Arc<ConnErrors>) {
        let conn = Arc::new(ConnErrors {
            marked: AtomicBool::new(false),
            counter: Some(&m.connection_errors_total),
        });
        (
            SessionObserver {
                metrics: m,
                conn: Arc::clone(&conn),
                granted: Mutex::new(None),
            },
            conn,
        )
    }

    #[test]
    fn http_attempts_count_like_promhttp() {
        let m = fresh();
        let (o, _) = observer(m);
        o.http_request_started();
        assert_eq!(m.http_in_flight.load(Ordering::Relaxed), 1);
        o.http_request_finished("POST", Some(200), Duration::from_millis(2));
        o.http_request_started();
        o.http_request_finished("GET", Some(404), Duration::from_millis(2));
        o.http_request_started();
        // A transport failure: in flight again 0, no series (promhttp counts answers only).
        o.http_request_finished("GET", None, Duration::from_secs(1));
        assert_eq!(m.http_in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(m.http_requests.get(&["200", "post"]), 1);
        assert_eq!(m.http_requests.get(&["404", "get"]), 1);
        let text = m.render("v", "b");
        assert!(
            text.contains("gitlab_shell_http_requests_total{code=\"200\",method=\"post\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("gitlab_shell_http_request_duration_seconds_bucket{code=\"200\",method=\"post\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "gitlab_shell_http_request_duration_seconds_count{code=\"404\",method=\"get\"} 1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn session_errors_count_by_the_rules_and_mark_the_connection_once() {
        use gitlab_shell::error::Error;
        let m = fresh();
        let (o, _) = observer(m);
        o.command_failed(&Error::DisallowedCommand);
        o.command_failed(&Error::Api(gitlab_shell::api::Error::Status(403)));
        assert_eq!(m.session_errors_total.load(Ordering::Relaxed), 0);
        assert_eq!(m.connection_errors_total.load(Ordering::Relaxed), 0);
        o.command_failed(&Error::Api(gitlab_shell::api::Error::Unreachable));
        o.command_failed(&Error::Api(gitlab_shell::api::Error::Status(502)));
        assert_eq!(m.session_errors_total.load(Ordering::Relaxed), 2);
        assert_eq!(m.connection_errors_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn lfs_commands_are_counted() {
        use gitlab_shell::command::Command;
        let m = fresh();
        let (o, _) = observer(m);
        o.command_built(&Command::LfsAuthenticate);
        o.command_built(&Command::LfsTransfer);
        o.command_built(&Command::UploadPack);
        let text = m.render("v", "b");
        assert!(text.contains("\nlfs_http_connections_total 1\n"), "{text}");
        assert!(text.contains("\nlfs_ssh_connections_total 1\n"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[0.5, 1.0, 5.0]);
        h.observe(Duration::from_millis(100));
        h.observe(Duration::from_secs(2));
        h.observe(Duration::from_secs(9));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"5\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn gitaly_calls_are_counted_with_go_grpc_prometheus_names_and_labels() {
        use gitaly_client::RpcObserver as _;
        use gitaly_client::observe::{RECEIVE_PACK, UPLOAD_PACK};
        let m = fresh();
        let g = GrpcMetrics { metrics: m };
        g.started(&UPLOAD_PACK);
        g.msg_sent(&UPLOAD_PACK);
        g.handled(&UPLOAD_PACK, gitaly_client::observe::Code::Ok);
        g.started(&RECEIVE_PACK);
        g.msg_sent(&RECEIVE_PACK);
        g.msg_received(&RECEIVE_PACK);
        g.msg_received(&RECEIVE_PACK);
        g.handled(
            &RECEIVE_PACK,
            gitaly_client::observe::Code::PermissionDenied,
        );
        let text = m.render("v", "b");
        let up = "grpc_method=\"SSHUploadPackWithSidechannel\",grpc_service=\"gitaly.SSHService\",grpc_type=\"unary\"";
        let rp = "grpc_method=\"SSHReceivePack\",grpc_service=\"gitaly.SSHService\",grpc_type=\"bidi_stream\"";
        for line in [
            format!("grpc_client_started_total{{{up}}} 1\n"),
            format!("grpc_client_msg_sent_total{{{up}}} 1\n"),
            format!("grpc_client_handled_total{{grpc_code=\"OK\",{up}}} 1\n"),
            format!("grpc_client_handled_total{{grpc_code=\"PermissionDenied\",{rp}}} 1\n"),
            format!("grpc_client_msg_received_total{{{rp}}} 2\n"),
            "# HELP grpc_client_handled_total Total number of RPCs completed by the client, regardless of success or failure.\n".to_owned(),
            "# TYPE grpc_client_started_total counter\n".to_owned(),
        ] {
            assert!(text.contains(&line), "{line}\n{text}");
        }
        assert!(
            !text.contains("grpc_client_msg_received_total{grpc_method=\"SSHUploadPack"),
            "{text}"
        );
        // Routing is off: the topology histogram is there, at zero.
        assert!(
            text.contains("gitlab_shell_topology_request_duration_seconds_count 0\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "gitlab_shell_topology_request_duration_seconds_bucket{le=\"0.005\"} 0\n"
            ),
            "{text}"
        );
    }
}
