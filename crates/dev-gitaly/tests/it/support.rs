//! Fixtures: temp storage with a repository made by real git, a started dev Gitaly, a recording
//! internal-API responder for the hooks, and runners for git with the `gitaly-ssh` example as
//! `GIT_SSH_COMMAND`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use dev_gitaly::{DevGitaly, Options};
use gitaly_proto::Repository;
use tempfile::TempDir;

pub const REPO: &str = "group/project.git";
pub const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// The `dev-gitaly` binary of this package (the hooks exec it).
pub fn dev_gitaly_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dev-gitaly"))
}

/// The `gitaly-ssh` example (cargo builds examples for `cargo test`).
pub fn gitaly_ssh_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/gitaly-ssh");
    assert!(
        p.is_file(),
        "{} missing: run `cargo test --release -p dev-gitaly`",
        p.display()
    );
    p
}

/// A `git` command with a clean, reproducible environment.
pub fn git(home: &Path) -> Command {
    let mut c = Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Dev")
        .env("GIT_AUTHOR_EMAIL", "dev@example.com")
        .env("GIT_COMMITTER_NAME", "Dev")
        .env("GIT_COMMITTER_EMAIL", "dev@example.com")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z");
    c
}

pub fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?} failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A temp storage holding `REPO` (one commit on `main`, files `README.md` and `big.bin`).
pub struct Fixture {
    pub tmp: TempDir,
    pub storage: PathBuf,
    pub head: String,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::Builder::new().prefix("dgt").tempdir().unwrap();
        let storage = tmp.path().join("storage");
        let work = tmp.path().join("seed");
        std::fs::create_dir_all(&storage).unwrap();
        run_ok({
            let mut c = git(tmp.path());
            c.args(["init", "-q", "-b", "main"]).arg(&work);
            c
        });
        std::fs::write(work.join("README.md"), "hello\n").unwrap();
        std::fs::write(work.join("big.bin"), vec![7u8; 4096]).unwrap();
        run_ok({
            let mut c = git(tmp.path());
            c.current_dir(&work).args(["add", "."]);
            c
        });
        run_ok({
            let mut c = git(tmp.path());
            c.current_dir(&work).args(["commit", "-q", "-m", "first"]);
            c
        });
        run_ok({
            let mut c = git(tmp.path());
            c.current_dir(&work).args(["tag", "v1"]);
            c
        });
        run_ok({
            let mut c = git(tmp.path());
            c.args(["clone", "-q", "--bare"])
                .arg(&work)
                .arg(storage.join(REPO));
            c
        });
        let head = run_ok({
            let mut c = git(tmp.path());
            c.current_dir(&work).args(["rev-parse", "HEAD"]);
            c
        });
        Self { tmp, storage, head }
    }

    pub fn home(&self) -> &Path {
        self.tmp.path()
    }

    pub fn repo_path(&self) -> PathBuf {
        self.storage.join(REPO)
    }

    pub fn options(&self) -> Options {
        let mut o = Options::new(&self.storage);
        o.hook_binary = Some(dev_gitaly_bin());
        o
    }

    pub fn start(&self, f: impl FnOnce(&mut Options)) -> DevGitaly {
        let mut o = self.options();
        f(&mut o);
        DevGitaly::start(o).unwrap()
    }

    /// `git rev-parse <rev>` in the served repository.
    pub fn remote_rev(&self, rev: &str) -> Option<String> {
        let out = git(self.home())
            .arg("-C")
            .arg(self.repo_path())
            .args(["rev-parse", "--verify", "-q", rev])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A git command going through the dev Gitaly via `gitaly-ssh`.
    pub fn git_via(&self, gitaly: &DevGitaly) -> Command {
        let mut c = git(self.home());
        c.env("GIT_SSH_COMMAND", gitaly_ssh_bin())
            .env("GIT_SSH_VARIANT", "ssh")
            .env("GITALY_ADDRESS", gitaly.address())
            .env("GITALY_GL_REPOSITORY", "project-1")
            .env("GITALY_GL_PROJECT_PATH", "group/project")
            .env("GITALY_GL_USERNAME", "root")
            .env("GITALY_GL_ID", "user-1");
        c
    }
}

pub fn repository() -> Repository {
    Repository {
        storage_name: "default".into(),
        relative_path: REPO.into(),
        gl_repository: "project-1".into(),
        gl_project_path: "group/project".into(),
        ..Default::default()
    }
}

pub fn output_text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// One request the hook API saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
}

type Responder = dyn Fn(&str, &serde_json::Value) -> (u16, String) + Send + Sync;

/// A hand-made HTTP/1.1 responder on 127.0.0.1 standing in for GitLab's internal API.
pub struct HookApi {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl HookApi {
    pub fn start(
        respond: impl Fn(&str, &serde_json::Value) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recs = Arc::clone(&requests);
        let respond: Arc<Responder> = Arc::new(respond);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let recs = Arc::clone(&recs);
                let respond = Arc::clone(&respond);
                std::thread::spawn(move || serve_one(&conn, &recs, &*respond));
            }
        });
        Self { url, requests }
    }

    /// The same on a unix socket; the URL is `http+unix://<percent-escaped path>`.
    pub fn start_unix(
        path: &Path,
        respond: impl Fn(&str, &serde_json::Value) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let url = format!(
            "http+unix://{}",
            path.display().to_string().replace('/', "%2F")
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recs = Arc::clone(&requests);
        let respond: Arc<Responder> = Arc::new(respond);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let recs = Arc::clone(&recs);
                let respond = Arc::clone(&respond);
                std::thread::spawn(move || serve_one(&conn, &recs, &*respond));
            }
        });
        Self { url, requests }
    }

    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.path.clone())
            .collect()
    }

    pub fn get(&self, path: &str) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.path == path)
            .cloned()
            .unwrap_or_else(|| panic!("no request to {path}"))
    }
}

fn serve_one<S>(conn: &S, recs: &Mutex<Vec<Recorded>>, respond: &Responder)
where
    for<'a> &'a S: Read + Write,
{
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let (status, text) = respond(&path, &body);
    recs.lock().unwrap().push(Recorded {
        path,
        headers,
        body,
    });
    let mut conn = conn;
    let _ = write!(
        &mut conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // Zombies (state Z) are already dead.
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}
