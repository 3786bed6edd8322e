//! `stub-api`: serve the stub internal API from the command line (demo, benchmark, manual runs).
//!
//! Prints the URL(s) it serves on the first line of stdout (space separated: the TCP URL
//! and/or the `http+unix://` URL), then serves until SIGTERM or SIGINT, logging one line per
//! request on stderr. The fixture format is documented in docs/trial.md.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use stub_api::{Fixture, StartOptions, StubApi};

/// Serve a stub of GitLab's internal API answering from a YAML fixture.
///
/// A stand-in for GitLab when trying GitLab Shell without it (docs/trial.md: the fixture format,
/// and how the secret, tokens and sockets must match config.yml and dev-gitaly). Prints the
/// URL(s) it serves on the first stdout line; one line per request on stderr
/// (`stub-api: <method> <path> <status> jwt=ok|invalid|missing|unchecked`).
#[derive(Debug, Parser)]
#[command(name = "stub-api")]
struct Cli {
    /// Fixture file: users, keys, projects (format: docs/trial.md).
    #[arg(long)]
    fixture: PathBuf,
    /// TCP address to listen on (default 127.0.0.1:0 unless only --unix is given).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Unix socket to listen on.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Require a Gitlab-Shell-Api-Request JWT signed with this file's (trimmed) contents.
    #[arg(long)]
    secret_file: Option<PathBuf>,
    /// Gitaly address to return from /allowed (overrides the fixture).
    #[arg(long)]
    gitaly_address: Option<String>,
    /// Gitaly token to return from /allowed (overrides the fixture).
    #[arg(long)]
    gitaly_token: Option<String>,
    /// Do not keep a record of the requests (long benchmark runs).
    #[arg(long)]
    no_record: bool,
    /// Do not log each request on stderr.
    #[arg(long)]
    quiet: bool,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut fixture = Fixture::from_file(&cli.fixture)?;
    if let Some(address) = cli.gitaly_address {
        fixture.gitaly.address = address;
    }
    if let Some(token) = cli.gitaly_token {
        fixture.gitaly.token = token;
    }
    let secret = match &cli.secret_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read secret file {}", path.display()))?,
        ),
        None => None,
    };
    let options = StartOptions {
        secret,
        tcp: cli.unix.is_none() || cli.listen.is_some(),
        unix_socket: cli.unix,
    };
    let api = match cli.listen {
        Some(addr) => StubApi::start_on(fixture, options, addr)?,
        None => StubApi::start(fixture, options)?,
    };
    api.set_recording(!cli.no_record);
    api.set_request_log(!cli.quiet);
    let mut urls = Vec::new();
    if api.tcp_addr().is_some() {
        urls.push(api.tcp_url());
    }
    urls.extend(api.gitlab_url_unix());
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", urls.join(" "))?;
    stdout.flush()?;
    drop(stdout);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        anyhow::Ok(())
    })?;
    drop(api);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            #[expect(clippy::print_stderr, reason = "the CLI reports its start-up error")]
            {
                eprintln!("stub-api: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
