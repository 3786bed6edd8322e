//! `dev-gitaly`: run the dev Gitaly from the command line, or act as one of its push hooks.
//!
//! ```text
//! dev-gitaly serve --storage DIR [--storage-name default] [--listen tcp://127.0.0.1:0|unix:/path]
//!                  [--token T] [--gitlab-url URL] [--secret-file F]
//!                  [--upload-pack-negotiation-timeout SECS] [--upload-archive-negotiation-timeout SECS]
//! dev-gitaly hook <pre-receive|update|post-receive> [args...]
//! ```
//! `serve` prints the address (`tcp://127.0.0.1:<port>` or `unix:<path>`) as the first stdout
//! line, logs one line per RPC on stderr (`--quiet`: none) and runs until SIGTERM or SIGINT.
//! `--help` prints [`HELP`]. How it stands in for Gitaly in a trial: docs/trial.md.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use dev_gitaly::{DevGitaly, Listen, Options, hooks};

const USAGE: &str = "usage: dev-gitaly serve --storage DIR [--storage-name NAME] [--listen ADDR] [--token T] [--gitlab-url URL] [--secret-file F] [--quiet]\n       dev-gitaly hook <pre-receive|update|post-receive> [args...]";

/// What `dev-gitaly --help` prints (stdout, exit 0).
const HELP: &str = "dev-gitaly: a stand-in for Gitaly's SSHService (SSHUploadPackWithSidechannel,
SSHUploadPack, SSHReceivePack, SSHUploadArchive) running real git on bare repositories, for
trying GitLab Shell without GitLab (docs/trial.md). Not for production.

usage: dev-gitaly serve --storage DIR [options]
       dev-gitaly hook <pre-receive|update|post-receive> [args...]   (run by git during a push)

serve options:
  --storage DIR          folder of the bare repositories: <DIR>/<relative_path>
  --storage-name NAME    storage name clients send (default: default)
  --listen ADDR          tcp://127.0.0.1:PORT or unix:/path/gitaly.sock (default tcp://127.0.0.1:0)
  --token T              require Gitaly's v2 HMAC token T (the fixture's gitaly.token)
  --gitlab-url URL       internal API the push hooks call (/allowed is GitLab Shell's job;
                         the hooks call pre_receive and post_receive)
  --secret-file F        shared secret the hooks sign their JWT with
  --upload-pack-negotiation-timeout SECS, --upload-archive-negotiation-timeout SECS
  --quiet                do not log each RPC on stderr

It prints the address it listens on as the first line of stdout, then one line per RPC on
stderr (`dev-gitaly: <RPC> <storage>:<relative path>`, `dev-gitaly: refused: <reason>`).
";

fn parse_serve(args: &[String]) -> anyhow::Result<Options> {
    let mut storage = None;
    let mut opts = Options::new("");
    opts.log_requests = true;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--storage" => storage = Some(PathBuf::from(value()?)),
            "--storage-name" => opts.storage_name = value()?,
            "--quiet" => opts.log_requests = false,
            "--listen" => opts.listen = Listen::parse(&value()?)?,
            "--token" => opts.token = Some(value()?),
            "--gitlab-url" => opts.gitlab_url = Some(value()?),
            "--secret-file" => opts.secret_file = Some(PathBuf::from(value()?)),
            "--upload-pack-negotiation-timeout" => {
                opts.upload_pack_negotiation_timeout =
                    Duration::from_secs(value()?.parse().context("seconds")?);
            }
            "--upload-archive-negotiation-timeout" => {
                opts.upload_archive_negotiation_timeout =
                    Duration::from_secs(value()?.parse().context("seconds")?);
            }
            other => bail!("unknown flag {other:?}\n{USAGE}"),
        }
    }
    opts.storage_dir = storage.with_context(|| format!("--storage is required\n{USAGE}"))?;
    Ok(opts)
}

fn serve(args: &[String]) -> anyhow::Result<()> {
    let opts = parse_serve(args)?;
    let gitaly = DevGitaly::start(opts)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", gitaly.address())?;
    out.flush()?;
    drop(out);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(gitaly);
    Ok(())
}

#[expect(
    clippy::print_stderr,
    clippy::print_stdout,
    reason = "a CLI prints its help on stdout and its errors on stderr"
)]
fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--help" | "-h" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("serve") if args.get(1).is_some_and(|a| a == "--help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("serve") => match serve(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dev-gitaly: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("hook") if args.len() >= 2 => {
            let env = hooks::HookEnv::from_process();
            let code = hooks::run(
                &args[1],
                &args[2..],
                &env,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
