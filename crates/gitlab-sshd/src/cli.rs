//! gitlab-sshd's start-up (docs/gitlab-sshd.md, "Running it"): flags, config, logging, host
//! keys, listeners, signals; start-up failures log upstream's line and exit 1.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use gitlab_shell::config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{alloc, env, logging, monitoring, server};

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Flags {
    /// `-version`.
    Version,
    /// Serve, with `-config-dir` when given.
    Serve(Option<PathBuf>),
    /// A usage error (Go's flag package: exit 2).
    Usage(String),
}

/// Parses Go-style flags: `-config-dir <dir>`, `-config-dir=<dir>`, `--config-dir …`,
/// `-version`.
pub fn parse_flags(args: &[String]) -> Flags {
    let mut dir = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let name = a.trim_start_matches('-');
        if name.len() == a.len() || a.len() - name.len() > 2 {
            // Go stops at the first non-flag argument; the rest is ignored.
            break;
        }
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (name, None),
        };
        match name {
            "version" => return Flags::Version,
            "config-dir" => {
                let v = match value {
                    Some(v) => v,
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => {
                                return Flags::Usage("flag needs an argument: -config-dir".into());
                            }
                        }
                    }
                };
                dir = Some(PathBuf::from(v));
            }
            other => return Flags::Usage(format!("flag provided but not defined: -{other}")),
        }
        i += 1;
    }
    Flags::Serve(dir)
}

/// A JSON log line on stderr for failures before logging is configured.
fn early_log(level: tracing::Level, msg: &str, error: &str) {
    let mut fields = BTreeMap::new();
    fields.insert("message".to_owned(), serde_json::Value::from(msg));
    if !error.is_empty() {
        fields.insert("error".to_owned(), serde_json::Value::from(error));
    }
    let line = logging::render(false, &level, fields);
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The config of `-config-dir`; without it, the empty config (upstream: no defaults, so no host
/// keys and a start-up failure).
fn load_config(dir: Option<PathBuf>) -> Result<Config, String> {
    match dir {
        Some(d) => Config::load(&d).map_err(|e| e.to_string()),
        None => {
            let mut c = Config::from_yaml(std::path::Path::new("."), b"secret: unset")
                .map_err(|e| e.to_string())?;
            c.secret = Vec::new();
            c.log_file = PathBuf::new();
            c.sshd = gitlab_shell::config::SshdConfig {
                listen: String::new(),
                web_listen: String::new(),
                host_key_files: Vec::new(),
                concurrent_sessions_limit: 0,
                ..Default::default()
            };
            Ok(c)
        }
    }
}

/// The whole program: returns the exit code.
pub fn main(args: &[String]) -> ExitCode {
    let dir = match parse_flags(args) {
        Flags::Version => {
            let _ = writeln!(
                std::io::stdout(),
                "gitlab-sshd {}-{}",
                gitlab_shell::startup::VERSION,
                gitlab_shell::startup::BUILD_TIME
            );
            return ExitCode::SUCCESS;
        }
        Flags::Usage(text) => {
            let _ = writeln!(
                std::io::stderr(),
                "{text}\nUsage of gitlab-sshd:\n  -config-dir string\n    \tThe directory the config is in\n  -version\n    \tPrints current version"
            );
            return ExitCode::from(2);
        }
        Flags::Serve(dir) => dir,
    };
    let mut config = match load_config(dir) {
        Ok(c) => c,
        Err(e) => {
            early_log(
                tracing::Level::ERROR,
                "failed to load configuration from specified directory",
                &e,
            );
            return ExitCode::FAILURE;
        }
    };
    let overrides = env::Overrides::from_env();
    overrides.apply(&mut config);
    let features = server::Features {
        group_certificates: overrides.group_certificates,
    };
    // Before the runtime starts any thread (docs/gitlab-sshd.md, "Memory").
    alloc::tune();
    logging::install(&config.log_file, &config.log_format, &config.log_level);
    tracing::info!("gitlab-sshd starting up...");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("gitlab-sshd")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "Failed to start Gitlab built-in sshd");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(config, features));
    // Blocking command threads still running after the grace period are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    code
}

async fn run(config: Config, features: server::Features) -> ExitCode {
    let listen = config.sshd.listen.clone();
    let web_listen = config.sshd.web_listen.clone();
    let shared = match server::Shared::new(config, features) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "Failed to start Gitlab built-in sshd");
            return ExitCode::FAILURE;
        }
    };
    let listener = match TcpListener::bind(listen.as_str()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %server::StartError::Listen(e.to_string()), "Failed to start Gitlab built-in sshd");
            return ExitCode::FAILURE;
        }
    };
    let stop = CancellationToken::new();
    let web_stop = CancellationToken::new();
    if !web_listen.is_empty() {
        match TcpListener::bind(web_listen.as_str()).await {
            Ok(l) => {
                tracing::info!(address = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "monitoring: listening");
                tokio::spawn(monitoring::serve(l, Arc::clone(&shared), web_stop.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "monitoring service raised an error");
                return ExitCode::FAILURE;
            }
        }
    }
    let sshd = &shared.config.sshd;
    if sshd.proxy_protocol {
        tracing::info!(proxy_policy = %sshd.proxy_policy, "Proxy protocol is enabled");
    }
    let tcp_address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(tcp_address = %tcp_address, "Listening for SSH connections");
    tokio::spawn(signals(stop.clone(), sshd.grace_period));
    // Free heap goes back to the system when the server turns quiet (docs/gitlab-sshd.md,
    // "Memory").
    tokio::spawn(alloc::trim_when_quiet());
    shared.serve(listener, stop).await;
    web_stop.cancel();
    tracing::info!("gitlab-sshd: shutdown complete");
    ExitCode::SUCCESS
}

/// SIGTERM/SIGINT start the graceful shutdown; a second one exits at once.
async fn signals(stop: CancellationToken, grace: std::time::Duration) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("signals: cannot install handlers");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "terminated",
        _ = int.recv() => "interrupt",
    };
    tracing::info!(
        signal = name,
        "Shutdown initiated with grace period: {}s",
        grace.as_secs_f64()
    );
    stop.cancel();
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    std::process::exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn flags() {
        assert_eq!(parse_flags(&s(&["-version"])), Flags::Version);
        assert_eq!(parse_flags(&s(&["--version"])), Flags::Version);
        assert_eq!(
            parse_flags(&s(&["-config-dir", "/x"])),
            Flags::Serve(Some("/x".into()))
        );
        assert_eq!(
            parse_flags(&s(&["--config-dir=/y"])),
            Flags::Serve(Some("/y".into()))
        );
        assert_eq!(parse_flags(&s(&[])), Flags::Serve(None));
        assert!(matches!(parse_flags(&s(&["-bogus"])), Flags::Usage(_)));
        assert!(matches!(parse_flags(&s(&["-config-dir"])), Flags::Usage(_)));
    }
}
