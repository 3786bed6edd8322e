//! Dev Gitaly: a small Gitaly-compatible `gitaly.SSHService` server for tests, the demo and
//! the benchmark. It runs the real `git upload-pack`, `git receive-pack` and
//! `git upload-archive` on a storage folder, checks Gitaly's v2 token, speaks Gitaly's
//! backchannel/sidechannel protocol (yamux) for `SSHUploadPackWithSidechannel`, and runs push
//! hooks that call GitLab's internal API the way Gitaly does (see `docs/gitaly.md`).
//!
//! ```no_run
//! let gitaly = dev_gitaly::DevGitaly::start(dev_gitaly::Options::new("/srv/repos"))?;
//! println!("{}", gitaly.address()); // tcp://127.0.0.1:<port>
//! # anyhow::Ok(())
//! ```

pub mod auth;
pub mod git;
pub mod hooks;
pub mod listener;
pub mod pktline;
pub mod repo;
pub mod service;
pub mod sidechannel;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use crate::listener::{RawIo, ServerIo};

/// Where the server listens.
#[derive(Debug, Clone)]
pub enum Listen {
    /// A TCP address such as `127.0.0.1:0` (port 0 picks a free port).
    Tcp(String),
    /// A unix socket path (an existing socket file is replaced).
    Unix(PathBuf),
}

impl Listen {
    /// Parses Gitaly's address forms: `tcp://host:port`, `unix:/path`, `unix:///path`, or a
    /// bare `host:port`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(rest) = s.strip_prefix("tcp://") {
            Ok(Listen::Tcp(rest.to_owned()))
        } else if let Some(rest) = s.strip_prefix("unix://") {
            Ok(Listen::Unix(PathBuf::from(rest)))
        } else if let Some(rest) = s.strip_prefix("unix:") {
            Ok(Listen::Unix(PathBuf::from(rest)))
        } else if s.contains(':') && !s.contains('/') {
            Ok(Listen::Tcp(s.to_owned()))
        } else {
            bail!("unsupported listen address {s:?} (use tcp://host:port or unix:/path)")
        }
    }
}

/// Start-up options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Storage name clients use (`Repository.storage_name`); default `default`.
    pub storage_name: String,
    /// Folder holding the repositories (`<storage_dir>/<relative_path>`).
    pub storage_dir: PathBuf,
    /// Listen address; default `127.0.0.1:0`.
    pub listen: Listen,
    /// Gitaly token; `None` (or empty) disables authentication.
    pub token: Option<String>,
    /// Internal API base URL for the push hooks (`http://127.0.0.1:port` or
    /// `http+unix://<percent-escaped socket path>`); `None` = hooks make no API calls.
    pub gitlab_url: Option<String>,
    /// Shared secret file the hooks sign their JWT with.
    pub secret_file: Option<PathBuf>,
    /// Deadline for upload-pack's negotiation (`done`); default 10 min.
    pub upload_pack_negotiation_timeout: Duration,
    /// Deadline for upload-archive's negotiation (first flush); default 1 min.
    pub upload_archive_negotiation_timeout: Duration,
    /// The `dev-gitaly` executable the hook wrappers exec; default: found next to the
    /// current executable (or one folder up, for cargo's `deps/` test binaries).
    pub hook_binary: Option<PathBuf>,
    /// One line per RPC (and per refused token) on stderr; the `dev-gitaly serve` command turns
    /// it on (docs/trial.md).
    pub log_requests: bool,
    /// Answers the first this many RPCs with UNAVAILABLE (no response headers, trailers only),
    /// like a Gitaly that is restarting; default 0. Tests of `retry_config` use it.
    pub unavailable_first: u32,
}

impl Options {
    /// Defaults for a storage folder.
    pub fn new(storage_dir: impl Into<PathBuf>) -> Self {
        Self {
            storage_name: "default".to_owned(),
            storage_dir: storage_dir.into(),
            listen: Listen::Tcp("127.0.0.1:0".to_owned()),
            token: None,
            gitlab_url: None,
            secret_file: None,
            upload_pack_negotiation_timeout: Duration::from_secs(600),
            upload_archive_negotiation_timeout: Duration::from_secs(60),
            hook_binary: None,
            log_requests: false,
            unavailable_first: 0,
        }
    }
}

/// Finds the `dev-gitaly` binary for the hook wrappers.
fn find_hook_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the current executable")?;
    if exe.file_name().is_some_and(|n| n == "dev-gitaly") {
        return Ok(exe);
    }
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("dev-gitaly");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "cannot find the dev-gitaly binary next to {} (build it with `cargo build --release -p dev-gitaly` or set Options::hook_binary)",
        exe.display()
    )
}

/// A running dev Gitaly. Dropping it stops the server and kills every git it started.
pub struct DevGitaly {
    address: String,
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Option<oneshot::Sender<()>>,
    runtime_dir: PathBuf,
    unix_path: Option<PathBuf>,
}

impl std::fmt::Debug for DevGitaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevGitaly")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl DevGitaly {
    /// Starts the server on its own runtime and returns once it accepts connections.
    pub fn start(options: Options) -> anyhow::Result<DevGitaly> {
        let hook_binary = match &options.hook_binary {
            Some(p) => p.clone(),
            None => find_hook_binary()?,
        };
        let runtime_dir = make_runtime_dir()?;
        let hooks_dir = runtime_dir.join("hooks");
        hooks::write_hooks_dir(&hooks_dir, &hook_binary)
            .with_context(|| format!("writing hooks into {}", hooks_dir.display()))?;
        let storage_dir = std::fs::canonicalize(&options.storage_dir)
            .with_context(|| format!("storage folder {}", options.storage_dir.display()))?;
        let settings = service::Settings {
            storage: repo::Storage {
                name: options.storage_name.clone(),
                dir: storage_dir,
            },
            hooks_dir,
            gitlab_url: options.gitlab_url.clone(),
            secret_file: options.secret_file.clone(),
            upload_pack_negotiation_timeout: options.upload_pack_negotiation_timeout,
            upload_archive_negotiation_timeout: options.upload_archive_negotiation_timeout,
            log_requests: options.log_requests,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dev-gitaly")
            .enable_all()
            .build()
            .context("building the tokio runtime")?;
        let (accept_tx, accept_rx) = mpsc::channel::<ServerIo>(16);
        let (address, unix_path) = runtime.block_on(bind(&options.listen, accept_tx))?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let svc = service::DevSshService::new(settings);
        let interceptor = auth::Interceptor {
            token: options.token.clone(),
            log_refusals: options.log_requests,
            unavailable_left: std::sync::Arc::new(options.unavailable_first.into()),
        };
        runtime.spawn(async move {
            // No router: the generated server answers unknown methods with Unimplemented.
            let server = gitaly_proto::ssh_service_server::SshServiceServer::with_interceptor(
                svc,
                interceptor,
            );
            let incoming =
                futures::StreamExt::map(ReceiverStream::new(accept_rx), Ok::<_, std::io::Error>);
            let res = tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(server, incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = res {
                tracing::error!(error = %e, "dev gitaly server stopped");
            }
        });
        Ok(DevGitaly {
            address,
            runtime: Some(runtime),
            shutdown: Some(shutdown_tx),
            runtime_dir,
            unix_path,
        })
    }

    /// The address in Gitaly's form: `tcp://127.0.0.1:<port>` or `unix:<path>`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The folder holding the generated hook wrappers.
    pub fn hooks_dir(&self) -> PathBuf {
        self.runtime_dir.join("hooks")
    }
}

impl Drop for DevGitaly {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(rt) = self.runtime.take() {
            // Dropping every task drops every GitChild, which kills git's process group.
            // Waiting is not allowed inside another runtime (e.g. a `#[tokio::test]`).
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
        if let Some(p) = &self.unix_path {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

fn make_runtime_dir() -> anyhow::Result<PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dev-gitaly-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Binds the listener and spawns the accept loop; returns the Gitaly-form address.
async fn bind(
    listen: &Listen,
    out: mpsc::Sender<ServerIo>,
) -> anyhow::Result<(String, Option<PathBuf>)> {
    match listen {
        Listen::Tcp(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let local = l.local_addr()?;
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let _ = s.set_nodelay(true);
                    tokio::spawn(listener::handle_accepted(Box::new(s), out.clone()));
                }
            });
            Ok((format!("tcp://{local}"), None))
        }
        Listen::Unix(path) => {
            remove_stale_socket(path);
            let l = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("binding unix socket {}", path.display()))?;
            tokio::spawn(async move {
                while let Ok((s, _)) = l.accept().await {
                    let io: Box<dyn RawIo> = Box::new(s);
                    tokio::spawn(listener::handle_accepted(io, out.clone()));
                }
            });
            Ok((format!("unix:{}", path.display()), Some(path.clone())))
        }
    }
}

fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}
