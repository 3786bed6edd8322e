//! Geo through a real web server (behaviour §6.2, GitLab Shell 14.56.1 with the 14.57 fixes):
//! real `git` → real sshd → `gitlab-shell` on a "secondary" whose `/allowed` answers 300 →
//! nginx on 127.0.0.1 as the primary. nginx serves smart HTTP with `git http-backend` (through
//! fcgiwrap) and proxies the SSH-over-HTTP endpoints, unbuffered, to a small full-duplex stand-in
//! for Workhorse (`fixtures/ssh_http_backend.py`). nginx's access log records the headers the
//! primary received; its `client_body_timeout` is 3 s, so a request body left open during a long
//! transfer would be cut (what GitLab Shell 14.57.2 fixed).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use test_support::sshd::{WATCHDOG, free_port};
use test_support::{ClientKey, Commit, Run, Sandbox, Sshd, random_bytes};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/geo
    id: 1
    members: { alice: admin }
    console_messages: ["This request to a Geo secondary node will be forwarded to the Geo primary node"]
"#;

/// The token the secondary tells GitLab Shell to send to the primary.
const PRIMARY_AUTH: &str = "Bearer geo-primary-token";

/// A server process under the watchdog, stopped by PID on drop.
struct Server {
    child: Child,
    lifeline: Option<ChildStdin>,
}

impl Server {
    fn start(program: &str, args: &[&str], log: &Path) -> Server {
        let log = fs::File::create(log).unwrap();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (run `make deps`)"));
        let lifeline = child.stdin.take();
        Server { child, lifeline }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// The primary: nginx + fcgiwrap + git http-backend, and the SSH-over-HTTP backend.
struct Primary {
    dir: PathBuf,
    repos: PathBuf,
    port: u16,
    _servers: Vec<Server>,
}

fn wait_for_port(port: u16, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} is not listening:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Primary {
    fn start(dir: &Path) -> Primary {
        let repos = dir.join("repos");
        fs::create_dir_all(repos.join("group")).unwrap();
        for sub in [
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let backend_port = free_port();
        let backend_log = dir.join("backend.log");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures/ssh_http_backend.py");
        let backend = Server::start(
            "python3",
            &[
                script.to_str().unwrap(),
                &backend_port.to_string(),
                repos.to_str().unwrap(),
                dir.join("backend-requests.log").to_str().unwrap(),
            ],
            &backend_log,
        );
        wait_for_port(backend_port, "the SSH-over-HTTP backend", &backend_log);
        let socket = dir.join("fcgiwrap.sock");
        let fcgiwrap = Server::start(
            "fcgiwrap",
            &["-s", &format!("unix:{}", socket.display())],
            &dir.join("fcgiwrap.log"),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "fcgiwrap did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            r#"daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  log_format geo '$request_method $uri $status auth="$http_authorization" git-protocol="$http_git_protocol"';
  access_log {d}/access.log geo;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  client_max_body_size 0;
  client_body_timeout 3s;
  server {{
    listen 127.0.0.1:{port};
    location ~ ^/refused/ {{
      return 403 "Geo primary refused the request";
    }}
    location ~ /ssh-(upload|receive)-pack$ {{
      proxy_pass http://127.0.0.1:{backend_port};
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
    }}
    location / {{
      include /etc/nginx/fastcgi_params;
      fastcgi_pass unix:{socket};
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {repos};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $uri;
      fastcgi_param GIT_PROTOCOL $http_git_protocol;
    }}
  }}
}}
"#,
            socket = socket.display(),
            repos = repos.display(),
        );
        let conf_path = dir.join("nginx.conf");
        fs::write(&conf_path, conf).unwrap();
        let nginx_log = dir.join("nginx.stderr");
        let nginx = Server::start(
            "nginx",
            &[
                "-c",
                conf_path.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
            ],
            &nginx_log,
        );
        wait_for_port(port, "nginx", &nginx_log);
        Primary {
            dir: dir.to_owned(),
            repos,
            port,
            _servers: vec![nginx, fcgiwrap, backend],
        }
    }

    fn repo(&self) -> PathBuf {
        self.repos.join("group/geo.git")
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/group/geo.git", self.port)
    }

    /// nginx's access log: one line per request with the headers that matter.
    fn access_log(&self) -> String {
        fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }
}

/// A secondary (sandbox + sshd) whose `group/geo` answers 300 for `primary_repo` with `flags`,
/// and a primary holding `group/geo.git` seeded with `commits`.
struct World {
    sandbox: Sandbox,
    sshd: Sshd,
    alice: ClientKey,
    primary: Primary,
}

fn world(name: &str, flags: serde_json::Value, commits: &[Commit]) -> World {
    world_with(name, flags, commits, None)
}

fn world_with(
    name: &str,
    flags: serde_json::Value,
    commits: &[Commit],
    primary_repo: Option<String>,
) -> World {
    let mut builder = Sandbox::builder(name).fixture_yaml(FIXTURE).gitaly(false);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder.build();
    let primary = Primary::start(&sandbox.work_dir("primary"));
    let git = sandbox.git();
    git.init_bare(&primary.repo());
    git.seed(&primary.repo(), commits);
    // git http-backend serves pushes only to authenticated users or when the repository says so.
    git.at(&primary.repo())
        .args(["config", "http.receivepack", "true"])
        .run()
        .assert_success();
    let mut data = flags;
    data["primary_repo"] = json!(primary_repo.unwrap_or_else(|| primary.url()));
    data["request_headers"] = json!({ "Authorization": PRIMARY_AUTH });
    data["gl_username"] = json!("alice");
    sandbox.api().update_fixture(|f| {
        if let Some(p) = f.projects.iter_mut().find(|p| p.path == "group/geo") {
            p.geo = Some(test_support::stub_api::fixture::GeoCustomAction {
                actions: Vec::new(),
                payload: json!({ "action": "geo_proxy_to_primary", "data": data }),
            });
        }
    });
    let sshd = sandbox.sshd();
    World {
        sandbox,
        sshd,
        alice,
        primary,
    }
}

fn seed() -> Vec<Commit> {
    vec![
        Commit::new("main", "Initial\n", "README.md", "# Geo\n"),
        Commit::new("main", "Second\n", "src/lib.rs", "pub fn f() {}\n"),
    ]
}

const SSH_FLAGS: fn() -> serde_json::Value = || json!({ "geo_proxy_fetch_ssh_direct_to_primary": true, "geo_proxy_push_ssh_direct_to_primary": true });

impl World {
    fn git(&self, dir: &Path) -> test_support::Cmd {
        self.sandbox
            .git_via(&self.sshd, &self.alice)
            .current_dir(dir)
    }

    fn url(&self) -> String {
        self.sshd.git_url("group/geo.git")
    }

    #[track_caller]
    fn ok(&self, run: &Run) {
        if run.code != 0 {
            panic!(
                "expected success\n{run}\n--- gitlab-shell log ---\n{}\n--- nginx access ---\n{}\n--- nginx error ---\n{}",
                self.sandbox.log(),
                self.primary.access_log(),
                fs::read_to_string(self.primary.dir.join("error.log")).unwrap_or_default()
            );
        }
    }

    fn clone(&self, version: &str, dir: &str) -> PathBuf {
        let work = self.sandbox.work_dir("clones");
        let run = self
            .git(&work)
            .args([
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &self.url(),
                dir,
            ])
            .timeout(Duration::from_secs(120))
            .run();
        self.ok(&run);
        work.join(dir)
    }

    fn primary_rev(&self, rev: &str) -> Option<String> {
        self.sandbox.git().rev_parse(&self.primary.repo(), rev)
    }

    fn local_rev(&self, dir: &Path, rev: &str) -> String {
        let run = self
            .sandbox
            .git()
            .git()
            .current_dir(dir)
            .args(["rev-parse", rev])
            .run();
        self.ok(&run);
        run.stdout_str().trim().to_owned()
    }

    /// Commits one file in the clone at `dir` and pushes `main`.
    fn commit_and_push(&self, dir: &Path, file: &str) -> Run {
        fs::write(dir.join(file), format!("{file}\n")).unwrap();
        let git = self.sandbox.git();
        self.ok(&git.git().current_dir(dir).args(["add", "--all"]).run());
        self.ok(&git
            .git()
            .current_dir(dir)
            .args(["commit", "-q", "-m", file])
            .run());
        self.git(dir)
            .args(["push", "origin", "main"])
            .timeout(Duration::from_secs(60))
            .run()
    }
}

#[test]
fn smart_http_clone_and_push_go_to_the_primary_with_its_headers() {
    let w = world("geo-real-smart-http", json!({}), &seed());
    for version in ["0", "2"] {
        // Over smart HTTP the primary answers protocol v0, which a v2 client accepts.
        let clone = w.clone(version, &format!("v{version}"));
        assert_eq!(
            w.local_rev(&clone, "HEAD"),
            w.primary_rev("refs/heads/main").unwrap()
        );
        assert_eq!(
            fs::read_to_string(clone.join("README.md")).unwrap(),
            "# Geo\n"
        );
    }
    let clone = w.sandbox.work_dir("clones").join("v0");
    let run = w.commit_and_push(&clone, "pushed.txt");
    w.ok(&run);
    assert!(
        run.stderr_str()
            .contains("forwarded to the Geo primary node"),
        "{run}"
    );
    assert_eq!(
        w.primary_rev("refs/heads/main").unwrap(),
        w.local_rev(&clone, "HEAD")
    );
    let log = w.primary.access_log();
    for line in [
        "GET /group/geo.git/info/refs 200",
        "POST /group/geo.git/git-upload-pack 200",
        "POST /group/geo.git/git-receive-pack 200",
    ] {
        let seen = log
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} not in\n{log}"));
        assert!(seen.contains(&format!("auth=\"{PRIMARY_AUTH}\"")), "{seen}");
    }
    assert!(!log.contains("ssh-upload-pack"), "{log}");
}

#[test]
fn ssh_over_http_clone_v0_v2_fetch_and_push() {
    let w = world("geo-real-ssh-http", SSH_FLAGS(), &seed());
    let v2 = w.clone("2", "v2");
    let v0 = w.clone("0", "v0");
    let tip = w.primary_rev("refs/heads/main").unwrap();
    assert_eq!(
        (w.local_rev(&v2, "HEAD"), w.local_rev(&v0, "HEAD")),
        (tip.clone(), tip)
    );
    // A new commit on the primary, then a fetch from the v2 clone.
    w.sandbox.git().seed(
        &w.primary.repo(),
        &[Commit::new("main", "Third\n", "third.txt", "3\n")],
    );
    let run = w
        .git(&v2)
        .args(["-c", "protocol.version=2", "fetch", "origin"])
        .run();
    w.ok(&run);
    assert_eq!(
        w.local_rev(&v2, "origin/main"),
        w.primary_rev("refs/heads/main").unwrap()
    );
    // A push from the v0 clone (after catching up).
    w.ok(&w
        .git(&v0)
        .args(["pull", "-q", "--ff-only", "origin", "main"])
        .run());
    let run = w.commit_and_push(&v0, "from-secondary.txt");
    w.ok(&run);
    assert_eq!(
        w.primary_rev("refs/heads/main").unwrap(),
        w.local_rev(&v0, "HEAD")
    );
    let log = w.primary.access_log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("POST /group/geo.git/ssh-upload-pack 200")
                && l.contains("git-protocol=\"version=2\"")
                && l.contains(&format!("auth=\"{PRIMARY_AUTH}\""))),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("POST /group/geo.git/ssh-receive-pack 200")),
        "{log}"
    );
    assert!(!log.contains("info/refs"), "{log}");
}

#[test]
fn a_push_the_primary_refuses_changes_nothing() {
    let w = world("geo-real-refused-push", SSH_FLAGS(), &seed());
    let hook = w.primary.repo().join("hooks/pre-receive");
    fs::write(
        &hook,
        "#!/bin/sh\necho 'GitLab: You are not allowed to push code to this project.' >&2\nexit 1\n",
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&hook)
        .status()
        .unwrap();
    let before = w.primary_rev("refs/heads/main");
    let clone = w.clone("2", "c");
    let run = w.commit_and_push(&clone, "refused.txt");
    assert_ne!(run.code, 0, "{run}");
    assert!(
        run.stderr_str()
            .contains("remote: GitLab: You are not allowed to push code to this project."),
        "{run}"
    );
    assert!(
        run.stderr_str().contains("pre-receive hook declined"),
        "{run}"
    );
    assert_eq!(w.primary_rev("refs/heads/main"), before);
}

#[test]
fn an_unreachable_or_refusing_primary_fails_fast_with_its_message() {
    let closed = format!("http://127.0.0.1:{}/group/geo.git", free_port());
    let cases = [
        (Some(closed), "Remote repository is unavailable"),
        (None, "Geo primary refused the request"),
    ];
    for (i, (repo, message)) in cases.into_iter().enumerate() {
        let w = world_with(&format!("geo-real-error-{i}"), SSH_FLAGS(), &seed(), repo);
        if message.contains("refused") {
            // Point the 300 at the primary's refusing location.
            let url = format!("http://127.0.0.1:{}/refused/group/geo.git", w.primary.port);
            w.sandbox.api().update_fixture(|f| {
                if let Some(geo) = f
                    .projects
                    .iter_mut()
                    .find(|p| p.path == "group/geo")
                    .and_then(|p| p.geo.as_mut())
                {
                    geo.payload["data"]["primary_repo"] = json!(url);
                }
            });
        }
        let work = w.sandbox.work_dir("clones");
        for command in [vec!["clone", &w.url(), "x"], vec!["ls-remote", &w.url()]] {
            let started = Instant::now();
            let run = w
                .git(&work)
                .args(&command)
                .timeout(Duration::from_secs(60))
                .run();
            assert_ne!(run.code, 0, "{run}");
            assert!(
                run.stderr_str().contains(&format!("remote: {message}")),
                "{run}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "took {:?}",
                started.elapsed()
            );
        }
    }
}

#[test]
fn a_throttled_clone_through_the_real_web_server_completes() {
    // 10 MB of incompressible data read at 800 KB/s: ~13 s through nginx, whose
    // client_body_timeout is 3 s. Real git closes its input once the negotiation is over, so
    // here the request body ends early either way; that gitlab-shell ends it at `done` for a
    // client that keeps its input open (GitLab Shell 14.57.2) is proven by the command test
    // `ssh_fetch_is_full_duplex_and_ends_its_body_at_done`.
    let big = Commit::new("main", "Big\n", "blob.bin", random_bytes(7, 10 << 20));
    let w = world("geo-real-slow", SSH_FLAGS(), &[big]);
    let wrapper = w.sandbox.work_dir("slow").join("slow-ssh");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n{} \"$@\" | pv -q -L 800k\n",
            w.sshd.ssh_command(&w.alice)
        ),
    )
    .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(&wrapper)
        .status()
        .unwrap();
    let work = w.sandbox.work_dir("clones");
    {
        let version = "2";
        let started = Instant::now();
        let run = w
            .sandbox
            .git()
            .git()
            .current_dir(&work)
            .env("GIT_SSH_COMMAND", &wrapper)
            .args([
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &w.url(),
                &format!("slow-v{version}"),
            ])
            .timeout(Duration::from_secs(120))
            .run();
        w.ok(&run);
        assert!(
            started.elapsed() > Duration::from_secs(8),
            "not throttled: {:?}",
            started.elapsed()
        );
        assert_eq!(
            fs::read(work.join(format!("slow-v{version}/blob.bin")))
                .unwrap()
                .len(),
            10 << 20
        );
    }
    let errors = fs::read_to_string(w.primary.dir.join("error.log")).unwrap_or_default();
    assert!(!errors.contains("client timed out"), "{errors}");
}
