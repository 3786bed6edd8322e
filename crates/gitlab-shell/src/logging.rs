//! Logging to `log_file` (behaviour §8.1, GitLab Shell v14.45.0 with labkit/logrus): one line per
//! event, JSON (default; `""` and `combined` too) or logrus-style text, UTC whole-second `time`,
//! `level`, `msg`, the event's fields and `correlation_id`, keys sorted as logrus sorts them.
//!
//! A log file that cannot be opened never breaks the command and never writes to the user's
//! stderr: one line goes to syslog (`/dev/log`, when there is one) and events are then
//! discarded (docs/operating.md, "Logging"). A new log file is created with mode 0644 whatever
//! the umask allows more of. Secrets, JWTs and the Gitaly token are never passed to `tracing`
//! anywhere in this crate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;

use crate::config::Config;

/// Keeps logging alive until `main` returns (writes are unbuffered, so nothing to flush).
#[must_use]
pub struct LogGuard {
    /// Whether events go to a file.
    pub active: bool,
}

/// Log line layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// logrus JSON formatter.
    Json,
    /// logrus text formatter (`key=value`).
    Text,
}

impl Format {
    /// `log_format` as GitLab Shell maps it.
    pub fn from_config(s: &str) -> Format {
        if s.eq_ignore_ascii_case("text") {
            Format::Text
        } else {
            Format::Json
        }
    }
}

/// logrus level names, case-insensitive; unknown names keep the default `info`.
pub fn parse_level(s: &str) -> Level {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Level::TRACE,
        "debug" => Level::DEBUG,
        "warn" | "warning" => Level::WARN,
        "error" | "fatal" | "panic" => Level::ERROR,
        _ => Level::INFO,
    }
}

/// Which events reach the log file: this project's own at `level`; those of the libraries
/// underneath (hyper, h2, tonic, reqwest, …) only from `warn` up. At debug level the libraries
/// narrate every HTTP/2 frame, lines GitLab Shell never writes.
pub fn event_filter(level: Level) -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_default(level.min(Level::WARN))
        // A prefix: also the binaries (`gitlab_shell_check`, …).
        .with_target("gitlab_shell", level)
        .with_target("gitaly_client", level)
        .with_target("pktline", level)
}

/// Where the one syslog message about an unusable log file goes.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// Permissions of a new log file (GitLab Shell's 0644), before the umask.
pub const LOG_FILE_MODE: u32 = 0o644;

/// `GITLAB_LOG_FORMAT` and `GITLAB_LOG_LEVEL` (GitLab Shell 14.46+, every binary): when set and
/// not empty they replace `log_format` and `log_level` of config.yml (behaviour §12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvOverrides {
    /// `GITLAB_LOG_FORMAT`.
    pub format: Option<String>,
    /// `GITLAB_LOG_LEVEL`.
    pub level: Option<String>,
}

impl EnvOverrides {
    /// Reads the two variables.
    #[expect(
        clippy::disallowed_methods,
        reason = "GitLab Shell's documented logging overrides, read in this one place"
    )]
    pub fn from_env() -> Self {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        EnvOverrides {
            format: get("GITLAB_LOG_FORMAT"),
            level: get("GITLAB_LOG_LEVEL"),
        }
    }

    /// Applies them to `config`.
    pub fn apply(&self, config: &mut Config) {
        if let Some(f) = &self.format {
            config.log_format = f.clone();
        }
        if let Some(l) = &self.level {
            config.log_level = l.clone();
        }
    }
}

/// Installs the process-wide logger for `config`. `correlation_id` goes on every line.
pub fn configure(config: &Config, correlation_id: &str) -> LogGuard {
    configure_with_syslog(config, correlation_id, Path::new(SYSLOG_SOCKET))
}

/// [`configure`] reporting an unusable log file to the syslog socket at `syslog` (tests point
/// it at a socket of their own).
pub fn configure_with_syslog(config: &Config, correlation_id: &str, syslog: &Path) -> LogGuard {
    let opened = if config.log_file.as_os_str().is_empty() {
        Err("no logfile specified".to_owned())
    } else {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(LOG_FILE_MODE)
            .open(&config.log_file)
            .map_err(|e| crate::config::go_io_error("open", &config.log_file, &e))
    };
    let file = match opened {
        Ok(f) => f,
        Err(reason) => {
            report_to_syslog(syslog, &reason);
            return LogGuard { active: false };
        }
    };
    let formatter = LogrusFormat {
        format: Format::from_config(&config.log_format),
        correlation_id: correlation_id.to_owned(),
    };
    let level = parse_level(&config.log_level);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(Arc::new(file))
        .event_format(formatter)
        .finish()
        .with(event_filter(level));
    let active = tracing::subscriber::set_global_default(subscriber).is_ok();
    LogGuard { active }
}

/// Sends `<exe>: Unable to configure logging: <reason>` to syslog (priority `LOG_ERR|LOG_USER`)
/// over the unix datagram socket `socket`. Without a syslog the message is dropped: stderr is
/// the Git user's terminal and never gets log lines.
pub fn report_to_syslog(socket: &Path, reason: &str) {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "gitlab-shell".to_owned());
    let line = syslog_line(
        &time::OffsetDateTime::now_utc(),
        std::process::id(),
        &format!("{exe}: Unable to configure logging: {reason}"),
    );
    let Ok(sender) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let _ = sender.send_to(line.as_bytes(), socket);
}

/// One RFC 3164-style line as the local syslog socket takes it:
/// `<11>Mmm dd hh:mm:ss gitlab-shell[pid]: message` (11 = `LOG_USER` × 8 + `LOG_ERR`).
pub fn syslog_line(now: &time::OffsetDateTime, pid: u32, message: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(u8::from(now.month())) - 1];
    format!(
        "<11>{month} {:>2} {:02}:{:02}:{:02} gitlab-shell[{pid}]: {}",
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        message.replace('\n', " ")
    )
}

/// Writes events the way logrus's formatters do.
pub struct LogrusFormat {
    /// Layout.
    pub format: Format,
    /// Added to every line.
    pub correlation_id: String,
}

/// Fields logged as nested JSON objects, as logrus logs Go structs (`env` of "executing
/// command"); the caller passes them as JSON text.
const OBJECT_FIELDS: [&str; 1] = ["env"];

/// The fields of one event (or span) as JSON values: numbers and booleans as such, everything
/// else as text. Shared with gitlab-sshd's logger.
#[derive(Default)]
pub struct Fields(pub BTreeMap<String, Value>);

impl Fields {
    fn text(&mut self, field: &Field, value: String) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// Splices the [`OBJECT_FIELDS`] back in as raw JSON (keeping the caller's key order, which a
/// `Value` round trip would sort).
fn splice_objects(mut line: String, fields: &BTreeMap<String, Value>) -> String {
    for name in OBJECT_FIELDS {
        let Some(Value::String(raw)) = fields.get(name) else {
            continue;
        };
        if serde_json::from_str::<serde::de::IgnoredAny>(raw).is_err() || !raw.starts_with('{') {
            continue;
        }
        let quoted = format!("\"{name}\":{}", Value::from(raw.as_str()));
        line = line.replacen(&quoted, &format!("\"{name}\":{raw}"), 1);
    }
    line
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.text(field, value.to_owned());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.text(field, format!("{value:?}"));
    }
}

/// logrus's name of a level (`warning`, not `warn`).
pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warning",
        Level::ERROR => "error",
    }
}

fn now_utc() -> String {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

impl LogrusFormat {
    /// Renders one event's already-collected fields into a line (no newline).
    fn render(&self, level: &Level, mut fields: BTreeMap<String, Value>) -> String {
        let msg = fields.remove("message").unwrap_or(Value::from(""));
        fields.insert(
            "correlation_id".into(),
            Value::from(self.correlation_id.as_str()),
        );
        let time = now_utc();
        match self.format {
            Format::Json => {
                fields.insert("level".into(), Value::from(level_name(level)));
                fields.insert("msg".into(), msg);
                fields.insert("time".into(), Value::from(time));
                splice_objects(serde_json::to_string(&fields).unwrap_or_default(), &fields)
            }
            Format::Text => {
                let mut line = String::new();
                let _ = write!(
                    line,
                    "time={} level={} msg={}",
                    text_value(&Value::from(time)),
                    level_name(level),
                    text_value(&msg)
                );
                for (k, v) in &fields {
                    let _ = write!(line, " {k}={}", text_value(v));
                }
                line
            }
        }
    }
}

/// logrus text quoting: bare when only "safe" characters, else a quoted string.
fn text_value(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if safe { s } else { Value::from(s).to_string() }
}

impl<S, N> FormatEvent<S, N> for LogrusFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        writeln!(
            writer,
            "{}",
            self.render(event.metadata().level(), fields.0)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_debug_lines_stay_out_of_the_log() {
        let debug = event_filter(Level::DEBUG);
        assert!(debug.would_enable("gitlab_shell::command::git", &Level::DEBUG));
        assert!(debug.would_enable("gitlab_shell_check", &Level::DEBUG));
        assert!(debug.would_enable("gitaly_client::calls", &Level::DEBUG));
        assert!(!debug.would_enable("h2::codec::framed_write", &Level::DEBUG));
        assert!(!debug.would_enable("hyper_util::client", &Level::INFO));
        assert!(debug.would_enable("h2::proto", &Level::WARN));
        let error = event_filter(Level::ERROR);
        assert!(!error.would_enable("h2::proto", &Level::WARN));
        assert!(!error.would_enable("gitlab_shell::api", &Level::INFO));
    }

    #[test]
    fn an_unusable_log_file_is_reported_to_syslog_only() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log.sock");
        let syslog = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        syslog
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let yaml = "secret: s\nlog_file: /nonexistent/dir/gitlab-shell.log\n";
        let config = Config::from_yaml(dir.path(), yaml.as_bytes()).unwrap();
        let guard = configure_with_syslog(&config, "cid", &socket);
        assert!(!guard.active);
        let mut buf = [0u8; 2048];
        let n = syslog.recv(&mut buf).unwrap();
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        let exe = std::env::current_exe().unwrap().display().to_string();
        let pid = std::process::id();
        assert!(line.starts_with("<11>"), "{line}");
        assert!(
            line.ends_with(&format!(
                " gitlab-shell[{pid}]: {exe}: Unable to configure logging: open /nonexistent/dir/gitlab-shell.log: no such file or directory"
            )),
            "{line}"
        );

        // An empty log_file is reported the same way.
        let config = Config::from_yaml(dir.path(), b"secret: s\nlog_file: \"\"\n").unwrap();
        assert!(!configure_with_syslog(&config, "cid", &socket).active);
        let n = syslog.recv(&mut buf).unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n])
                .ends_with("Unable to configure logging: no logfile specified")
        );

        // No syslog listening: nothing happens (and nothing is printed anywhere).
        let config = Config::from_yaml(dir.path(), yaml.as_bytes()).unwrap();
        assert!(!configure_with_syslog(&config, "cid", &dir.path().join("none.sock")).active);
    }

    #[test]
    fn syslog_line_is_rfc3164_style() {
        let t = time::macros::datetime!(2026-03-05 07:08:09 UTC);
        assert_eq!(
            syslog_line(&t, 42, "a\nb"),
            "<11>Mar  5 07:08:09 gitlab-shell[42]: a b"
        );
        assert_eq!(LOG_FILE_MODE, 0o644);
    }

    fn fields(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn json_line_has_sorted_logrus_keys() {
        let f = LogrusFormat {
            format: Format::Json,
            correlation_id: "CID".into(),
        };
        let line = f.render(
            &Level::INFO,
            fields(&[
                ("message", "executing command".into()),
                ("zeta", 1.into()),
                ("command", "x".into()),
            ]),
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "executing command");
        assert_eq!(v["level"], "info");
        assert_eq!(v["correlation_id"], "CID");
        let time = v["time"].as_str().unwrap();
        assert_eq!(time.len(), 20);
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        // Keys appear in sorted order in the text itself, as logrus writes them.
        let order: Vec<usize> = ["command", "correlation_id", "level", "msg", "time", "zeta"]
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{line}");
    }

    #[test]
    fn env_is_an_object_in_struct_order() {
        let f = LogrusFormat {
            format: Format::Json,
            correlation_id: "CID".into(),
        };
        let env = r#"{"GitProtocolVersion":"","IsSSHConnection":true,"OriginalCommand":"a \"b\"","RemoteAddr":"1.2.3.4","NamespacePath":""}"#;
        let line = f.render(
            &Level::INFO,
            fields(&[("message", "m".into()), ("env", env.into())]),
        );
        assert!(
            line.starts_with(&format!(
                "{{\"correlation_id\":\"CID\",\"env\":{env},\"level\""
            )),
            "{line}"
        );
    }

    #[test]
    fn text_line() {
        let f = LogrusFormat {
            format: Format::Text,
            correlation_id: "CID".into(),
        };
        let line = f.render(
            &Level::WARN,
            fields(&[("message", "a b".into()), ("status", 500.into())]),
        );
        assert!(line.starts_with("time="), "{line}");
        assert!(
            line.contains(" level=warning msg=\"a b\" correlation_id=CID status=500"),
            "{line}"
        );
    }

    #[test]
    fn levels_and_formats() {
        assert_eq!(parse_level("DEBUG"), Level::DEBUG);
        assert_eq!(parse_level("bogus"), Level::INFO);
        assert_eq!(Format::from_config("combined"), Format::Json);
        assert_eq!(Format::from_config(""), Format::Json);
        assert_eq!(Format::from_config("text"), Format::Text);
    }
}
