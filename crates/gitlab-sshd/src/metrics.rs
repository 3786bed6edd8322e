//! The Prometheus metrics gitlab-sshd exposes on `web_listen` `/metrics` (docs/gitlab-sshd.md,
//! "Metrics"): upstream's names, types and buckets, plus ours for the limits upstream lacks.
//! Plain atomics and a hand-written text exposition (format 0.0.4): no registry crate.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
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
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics {
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
};

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
        let _ = writeln!(
            out,
            "# HELP gitlab_build_info Current build info for this GitLab Service\n# TYPE gitlab_build_info gauge\ngitlab_build_info{{built=\"{built}\",version=\"{version}\"}} 1"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
