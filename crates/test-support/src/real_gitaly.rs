//! GitLab's own Gitaly (16.11.6, built from Debian trixie packages by `support/real-gitaly.sh`,
//! see `docs/real-gitaly.md`) as a child process, as an alternative to the in-process dev Gitaly.
//!
//! Which Gitaly a [`crate::Sandbox`] starts is chosen per test
//! ([`crate::SandboxBuilder::gitaly_kind`]) or for a whole run by [`GITALY_ENV`]
//! (`GITLAB_SHELL_TEST_GITALY=real|dev`, default `dev`).
//!
//! [`RealGitaly::start`] writes a `config.toml` (one storage, `bin_dir` with `gitaly-hooks` & co.,
//! a runtime folder, the internal API's URL and secret file for the hooks, the optional token,
//! a TCP listener on 127.0.0.1 and a unix socket), runs `gitaly serve` under a small watchdog
//! shell (as [`crate::Sshd`] does: if the test process dies, Gitaly is killed by its PID) and
//! returns once both listeners accept connections.

use std::fs;
use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::paths::{make_dir, workspace_root};
use crate::sshd::free_port;

/// Environment variable choosing the Gitaly of every sandbox that does not choose itself:
/// `real` (GitLab's Gitaly) or `dev` (the default, the in-process dev Gitaly).
pub const GITALY_ENV: &str = "GITLAB_SHELL_TEST_GITALY";

/// Environment variable naming the real Gitaly's cache folder (as for `support/real-gitaly.sh`);
/// default `<workspace>/target/real-gitaly`. The binaries are in its `bin/`.
pub const REAL_GITALY_DIR_ENV: &str = "GITLAB_SHELL_REAL_GITALY_DIR";

/// Which Gitaly serves a sandbox's repositories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GitalyKind {
    /// The project's dev Gitaly (`crates/dev-gitaly`), in-process.
    Dev,
    /// GitLab's Gitaly 16.11.6, a child process.
    Real,
}

impl GitalyKind {
    /// [`GITALY_ENV`]: `real` → [`GitalyKind::Real`]; unset, empty or `dev` → [`GitalyKind::Dev`].
    /// Panics on any other value (a typo must not silently test the other Gitaly).
    #[track_caller]
    pub fn from_env() -> GitalyKind {
        #[expect(
            clippy::disallowed_methods,
            reason = "test support, not the product: which Gitaly the suite runs against"
        )]
        let value = std::env::var(GITALY_ENV).unwrap_or_default();
        match GitalyKind::parse(&value) {
            Some(kind) => kind,
            None => panic!("{GITALY_ENV}={value:?}: expected `real` or `dev`"),
        }
    }

    /// `real` → [`GitalyKind::Real`]; empty or `dev` → [`GitalyKind::Dev`]; else `None`.
    pub fn parse(value: &str) -> Option<GitalyKind> {
        match value {
            "" | "dev" => Some(GitalyKind::Dev),
            "real" => Some(GitalyKind::Real),
            _ => None,
        }
    }
}

/// The folder holding `gitaly`, `gitaly-hooks`, `gitaly-ssh`, `gitaly-lfs-smudge`, `gitaly-gpg`.
pub fn real_gitaly_bin_dir() -> PathBuf {
    #[expect(
        clippy::disallowed_methods,
        reason = "test support, not the product: where the real Gitaly was built"
    )]
    let dir = std::env::var_os(REAL_GITALY_DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target").join("real-gitaly"));
    dir.join("bin")
}

/// Makes sure the real Gitaly is built: runs `support/real-gitaly.sh` once per test process
/// (under a second when the build is cached; the first build takes a few minutes). Panics with
/// the script's output when it fails.
#[track_caller]
pub fn ensure_built() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let script = workspace_root().join("support").join("real-gitaly.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let dir = real_gitaly_bin_dir();
        if dir.join("gitaly").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{} succeeded but {} has no gitaly",
                script.display(),
                dir.display()
            ))
        }
    });
    match result {
        Ok(dir) => dir.clone(),
        Err(e) => panic!("the real Gitaly is not available: {e}"),
    }
}

/// Start-up options of [`RealGitaly::start`].
#[derive(Clone, Debug)]
pub struct RealOptions {
    /// Folder for `config.toml`, `gitaly.log` and the `gitlab-shell` folder Gitaly wants.
    pub dir: PathBuf,
    /// The storage `default`.
    pub storage: PathBuf,
    /// The unix socket to listen on (keep the path short, e.g. under `/tmp`).
    pub socket: PathBuf,
    /// Gitaly's runtime folder (its internal socket lives there: keep it short as well).
    pub runtime_dir: PathBuf,
    /// The internal API base URL the hooks call (`http://127.0.0.1:<port>`).
    pub gitlab_url: String,
    /// The shared secret file the hooks sign their JWT with.
    pub secret_file: PathBuf,
    /// `[auth] token`; `None` = no authentication.
    pub token: Option<String>,
}

/// Runs `"$0" "$@"` (gitaly) in the background and kills it by PID when stdin reaches EOF.
const WATCHDOG: &str = r#"exec 3<&0
"$0" "$@" &
pid=$!
(read -r _ <&3; kill -KILL "$pid" 2>/dev/null) &
wait "$pid""#;

/// A running real Gitaly; killed (by PID, through the watchdog) on drop.
pub struct RealGitaly {
    child: Child,
    lifeline: Option<ChildStdin>,
    socket: PathBuf,
    tcp_port: u16,
    log: PathBuf,
    config: PathBuf,
}

impl std::fmt::Debug for RealGitaly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealGitaly")
            .field("socket", &self.socket)
            .field("tcp_port", &self.tcp_port)
            .finish_non_exhaustive()
    }
}

/// `config.toml` for the real Gitaly.
pub fn render_config(o: &RealOptions, bin_dir: &Path, git: &Path, tcp_port: u16) -> String {
    let q = |p: &Path| toml_string(&p.display().to_string());
    let mut config = format!(
        "# Written by test-support's RealGitaly.\n\
         listen_addr = {listen}\n\
         socket_path = {socket}\n\
         bin_dir = {bin_dir}\n\
         runtime_dir = {runtime}\n\
         \n\
         [git]\n\
         bin_path = {git}\n\
         use_bundled_binaries = false\n\
         \n\
         [[storage]]\n\
         name = \"default\"\n\
         path = {storage}\n\
         \n\
         [logging]\n\
         level = \"info\"\n\
         format = \"json\"\n\
         \n\
         [gitlab]\n\
         url = {url}\n\
         secret_file = {secret}\n\
         \n\
         [gitlab-shell]\n\
         dir = {gls}\n\
         \n\
         [hooks]\n\
         custom_hooks_dir = {custom}\n",
        listen = toml_string(&format!("127.0.0.1:{tcp_port}")),
        socket = q(&o.socket),
        bin_dir = q(bin_dir),
        runtime = q(&o.runtime_dir),
        git = q(git),
        storage = q(&o.storage),
        url = toml_string(&o.gitlab_url),
        secret = q(&o.secret_file),
        gls = q(&o.dir.join("gitlab-shell")),
        custom = q(&o.dir.join("custom_hooks")),
    );
    if let Some(token) = o.token.as_deref().filter(|t| !t.is_empty()) {
        config.push_str(&format!("\n[auth]\ntoken = {}\n", toml_string(token)));
    }
    config
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `git` Gitaly runs: the first in `PATH` (Gitaly 16.11 needs git ≥ 2.42).
fn git_binary() -> PathBuf {
    #[expect(
        clippy::disallowed_methods,
        reason = "test support, not the product: the git the tests use"
    )]
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("git"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/git"))
}

impl RealGitaly {
    /// Builds the real Gitaly if needed ([`ensure_built`]), writes its config and starts it;
    /// returns once its TCP and unix listeners accept connections.
    pub fn start(options: &RealOptions) -> anyhow::Result<RealGitaly> {
        let bin_dir = ensure_built();
        for dir in [
            &options.dir,
            &options.runtime_dir,
            &options.dir.join("gitlab-shell"),
            &options.dir.join("custom_hooks"),
        ] {
            make_dir(dir);
        }
        let log = options.dir.join("gitaly.log");
        let config = options.dir.join("config.toml");
        let mut last_error = String::new();
        for _ in 0..3 {
            let tcp_port = free_port();
            fs::write(
                &config,
                render_config(options, &bin_dir, &git_binary(), tcp_port),
            )?;
            let log_file = fs::File::create(&log)?;
            let mut child = Command::new("/bin/sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg(bin_dir.join("gitaly"))
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::piped())
                .stdout(log_file.try_clone()?)
                .stderr(log_file)
                .spawn()?;
            let lifeline = child.stdin.take();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("gitaly exited ({status}):\n{}", read_lossy(&log));
                    break;
                }
                if TcpStream::connect(("127.0.0.1", tcp_port)).is_ok()
                    && UnixStream::connect(&options.socket).is_ok()
                {
                    return Ok(RealGitaly {
                        child,
                        lifeline,
                        socket: options.socket.clone(),
                        tcp_port,
                        log,
                        config,
                    });
                }
                if Instant::now() > deadline {
                    drop(lifeline);
                    let _ = child.wait();
                    last_error = format!("gitaly not listening after 30s:\n{}", read_lossy(&log));
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        anyhow::bail!("cannot start the real Gitaly: {last_error}")
    }

    /// The unix socket address in Gitaly's form, `unix:<path>`.
    pub fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// The TCP address in Gitaly's form, `tcp://127.0.0.1:<port>`.
    pub fn tcp_address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.tcp_port)
    }

    /// What Gitaly logged so far (JSON lines).
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// The `config.toml` it runs with.
    pub fn config_path(&self) -> &Path {
        &self.config
    }
}

impl Drop for RealGitaly {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill gitaly; its sh then exits.
        drop(self.lifeline.take());
        let _ = self.child.wait();
        let _ = fs::remove_file(&self.socket);
    }
}

fn read_lossy(path: &Path) -> String {
    let mut out = Vec::new();
    if let Ok(mut f) = fs::File::open(path) {
        let _ = f.read_to_end(&mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_from_the_environment_value() {
        assert_eq!(GitalyKind::parse(""), Some(GitalyKind::Dev));
        assert_eq!(GitalyKind::parse("dev"), Some(GitalyKind::Dev));
        assert_eq!(GitalyKind::parse("real"), Some(GitalyKind::Real));
        assert_eq!(GitalyKind::parse("Real"), None);
    }

    /// A sandbox on the real Gitaly: the stub API points GitLab Shell at it (unix socket), it
    /// serves the seeded repository, and it is gone once the sandbox is dropped.
    #[test]
    fn a_sandbox_runs_on_the_real_gitaly() {
        let sandbox = crate::Sandbox::builder("real-gitaly-selftest")
            .gitaly_kind(GitalyKind::Real)
            .fixture_yaml(
                "users: [{ id: 1, username: alice }]\n\
                 keys: [{ id: 1, user: alice, key: \"ssh-ed25519 AAAAalice a@b\" }]\n\
                 projects: [{ path: group/project, id: 1, members: { alice: admin } }]\n",
            )
            .seed(
                "group/project",
                vec![crate::Commit::new("main", "m\n", "README", "hi\n")],
            )
            .build();
        let gitaly = sandbox.gitaly().unwrap();
        assert_eq!(gitaly.kind(), GitalyKind::Real);
        let address = gitaly.address();
        assert_eq!(sandbox.fixture().gitaly.address, address);
        let socket = PathBuf::from(address.strip_prefix("unix:").unwrap());
        let run = sandbox
            .shell(&["key-1"], Some("git-upload-pack group/project"))
            .stdin(&b"0000"[..])
            .run();
        run.assert_success();
        let main = sandbox
            .git()
            .rev_parse(&sandbox.repo_path("group/project"), "main")
            .unwrap();
        run.assert_stdout_contains(format!("{main} refs/heads/main"));
        assert!(gitaly.log().contains("Starting Gitaly"), "{}", gitaly.log());
        drop(sandbox);
        assert!(UnixStream::connect(&socket).is_err());
    }

    #[test]
    fn config_has_storage_bin_dir_api_token_and_both_listeners() {
        let o = RealOptions {
            dir: PathBuf::from("/r/gitaly"),
            storage: PathBuf::from("/r/storage"),
            socket: PathBuf::from("/tmp/s/gitaly.sock"),
            runtime_dir: PathBuf::from("/tmp/s/rt"),
            gitlab_url: "http://127.0.0.1:9".to_owned(),
            secret_file: PathBuf::from("/r/.gitlab_shell_secret"),
            token: Some("t\"k".to_owned()),
        };
        let c = render_config(&o, Path::new("/b"), Path::new("/usr/bin/git"), 1234);
        for line in [
            "listen_addr = \"127.0.0.1:1234\"\n",
            "socket_path = \"/tmp/s/gitaly.sock\"\n",
            "bin_dir = \"/b\"\n",
            "runtime_dir = \"/tmp/s/rt\"\n",
            "[[storage]]\nname = \"default\"\npath = \"/r/storage\"\n",
            "[gitlab]\nurl = \"http://127.0.0.1:9\"\nsecret_file = \"/r/.gitlab_shell_secret\"\n",
            "[gitlab-shell]\ndir = \"/r/gitaly/gitlab-shell\"\n",
            "[auth]\ntoken = \"t\\\"k\"\n",
        ] {
            assert!(c.contains(line), "{line:?} missing in\n{c}");
        }
        let no_token = render_config(
            &RealOptions {
                token: Some(String::new()),
                ..o
            },
            Path::new("/b"),
            Path::new("/usr/bin/git"),
            1,
        );
        assert!(!no_token.contains("[auth]"), "{no_token}");
    }
}
