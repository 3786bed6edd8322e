//! gitlab-sshd's log lines (docs/gitlab-sshd.md, "Logs"): one JSON object per line (or
//! logrus-style `key=value` text with `log_format: text`), to `log_file`, or to stderr when
//! `log_file` is empty. Unlike the classic binaries, one process serves many connections, so the
//! per-connection fields (`correlation_id`, `remote_addr`) come from the `tracing` span the
//! connection runs in: every event inside the span — including those the shared command code in
//! `gitlab_shell` emits — carries them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::Mutex;

use gitlab_shell::logging::{Fields, level_name};
use serde_json::Value;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

/// Where lines go.
pub enum Sink {
    /// The process's stderr (`log_file: ""`).
    Stderr,
    /// An append-mode file.
    File(std::fs::File),
    /// A shared buffer (tests).
    Memory(gitlab_shell::io::SharedBuf),
}

/// A span's fields as kept for the span's life: a connection's span lives as long as the
/// connection, so its two fields are kept in a boxed slice rather than the map they are
/// recorded into (a map node is ~600 bytes per idle connection; docs/gitlab-sshd.md, "Memory").
struct SpanFields(Box<[(String, Value)]>);

impl SpanFields {
    fn new(fields: Fields) -> SpanFields {
        SpanFields(fields.0.into_iter().collect())
    }

    /// Fields recorded later replace those of the same name.
    fn update(&mut self, fields: Fields) {
        let mut all: BTreeMap<String, Value> =
            std::mem::take(&mut self.0).into_vec().into_iter().collect();
        all.extend(fields.0);
        self.0 = all.into_iter().collect();
    }
}

/// The layer that renders events with their spans' fields.
pub struct JsonLayer {
    sink: Mutex<Sink>,
    text: bool,
    max: Level,
}

fn now_utc() -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

/// Fields whose JSON object text is spliced in as an object (the Go server logs them as
/// objects).
const OBJECT_FIELDS: [&str; 2] = ["env", "meta"];

/// Renders one line (no newline). `env` and `meta` given as JSON object text are spliced in
/// as objects.
pub fn render(text: bool, level: &Level, mut fields: BTreeMap<String, Value>) -> String {
    let msg = fields.remove("message").unwrap_or(Value::from(""));
    for name in OBJECT_FIELDS {
        if let Some(Value::String(raw)) = fields.get(name)
            && raw.starts_with('{')
            && let Ok(v) = serde_json::from_str::<Value>(raw)
        {
            fields.insert(name.into(), v);
        }
    }
    let time = now_utc();
    if text {
        let mut line = String::new();
        let _ = write!(line, "time={time} level={} msg={}", level_name(level), msg);
        for (k, v) in &fields {
            let _ = write!(line, " {k}={v}");
        }
        line
    } else {
        fields.insert("level".into(), Value::from(level_name(level)));
        fields.insert("msg".into(), msg);
        fields.insert("time".into(), Value::from(time));
        serde_json::to_string(&fields).unwrap_or_default()
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        !metadata.is_event() || *metadata.level() <= self.max
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields::new(fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(kept) = span.extensions_mut().get_mut::<SpanFields>()
        {
            let mut fields = Fields::default();
            values.record(&mut fields);
            kept.update(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if *event.metadata().level() > self.max {
            return;
        }
        let mut all = BTreeMap::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(f) = span.extensions().get::<SpanFields>() {
                    all.extend(f.0.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut own = Fields::default();
        event.record(&mut own);
        all.extend(own.0);
        let mut line = render(self.text, event.metadata().level(), all);
        line.push('\n');
        if let Ok(mut sink) = self.sink.lock() {
            let _ = match &mut *sink {
                Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
                Sink::File(f) => f.write_all(line.as_bytes()),
                Sink::Memory(m) => m.write_all(line.as_bytes()),
            };
        }
    }
}

/// The layer for `log_format`/`log_level` writing to `sink`.
pub fn layer(sink: Sink, format: &str, level: &str) -> JsonLayer {
    JsonLayer {
        sink: Mutex::new(sink),
        text: gitlab_shell::logging::Format::from_config(format)
            == gitlab_shell::logging::Format::Text,
        max: gitlab_shell::logging::parse_level(level),
    }
}

/// Installs the process-wide logger. A `log_file` that cannot be opened falls back to stderr
/// (an SSH server has no user terminal on its stderr).
pub fn install(log_file: &std::path::Path, format: &str, level: &str) {
    let sink = if log_file.as_os_str().is_empty() {
        Sink::Stderr
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
        {
            Ok(f) => Sink::File(f),
            Err(_) => Sink::Stderr,
        }
    };
    let _ = tracing_subscriber::registry()
        .with(layer(sink, format, level))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_fields_reach_every_line_inside_the_span() {
        let buf = gitlab_shell::io::SharedBuf::default();
        let subscriber =
            tracing_subscriber::registry().with(layer(Sink::Memory(buf.clone()), "json", "info"));
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("conn", correlation_id = "CID", remote_addr = "1.2.3.4:5");
            span.in_scope(|| tracing::info!(tcp_address = "127.0.0.1:22", "inside"));
            tracing::info!("outside");
            tracing::debug!("hidden");
        });
        let text = buf.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["msg"], "inside");
        assert_eq!(lines[0]["correlation_id"], "CID");
        assert_eq!(lines[0]["remote_addr"], "1.2.3.4:5");
        assert_eq!(lines[0]["tcp_address"], "127.0.0.1:22");
        assert_eq!(lines[0]["level"], "info");
        assert!(lines[1].get("correlation_id").is_none());
    }

    #[test]
    fn env_and_meta_are_objects() {
        let mut fields = BTreeMap::new();
        fields.insert("message".to_owned(), Value::from("access: finish"));
        fields.insert("meta".to_owned(), Value::from(r#"{"project":"g/p"}"#));
        fields.insert("env".to_owned(), Value::from(r#"{"IsSSHConnection":true}"#));
        fields.insert("other".to_owned(), Value::from(r#"{"x":1}"#));
        let line: Value = serde_json::from_str(&render(false, &Level::INFO, fields)).unwrap();
        assert_eq!(line["meta"]["project"], "g/p");
        assert_eq!(line["env"]["IsSSHConnection"], true);
        assert_eq!(line["other"], r#"{"x":1}"#);
    }

    /// A span's fields are kept as a slice of exactly their number, not a map (paid per idle
    /// connection), and a later `record` replaces a field of the same name.
    #[test]
    fn span_fields_are_kept_compact_and_can_be_recorded_later() {
        let mut fields = Fields::default();
        fields.0.insert("correlation_id".into(), Value::from("CID"));
        fields
            .0
            .insert("remote_addr".into(), Value::from("1.2.3.4:5"));
        let mut kept = SpanFields::new(fields);
        assert_eq!(kept.0.len(), 2);
        assert_eq!(
            std::mem::size_of_val(&*kept.0),
            2 * std::mem::size_of::<(String, Value)>()
        );
        let mut later = Fields::default();
        later
            .0
            .insert("remote_addr".into(), Value::from("5.6.7.8:9"));
        later.0.insert("extra".into(), Value::from(1));
        kept.update(later);
        let names: Vec<&str> = kept.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["correlation_id", "extra", "remote_addr"]);
        assert_eq!(kept.0[2].1, "5.6.7.8:9");
    }

    #[test]
    fn a_field_recorded_after_the_span_started_reaches_its_lines() {
        let buf = gitlab_shell::io::SharedBuf::default();
        let subscriber =
            tracing_subscriber::registry().with(layer(Sink::Memory(buf.clone()), "json", "info"));
        tracing::subscriber::with_default(subscriber, || {
            let span =
                tracing::info_span!("conn", correlation_id = "CID", user = tracing::field::Empty);
            span.record("user", "u1");
            span.in_scope(|| tracing::info!("inside"));
        });
        let text = buf.text();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["correlation_id"], "CID");
        assert_eq!(line["user"], "u1");
    }
}
