//! gitlab-sshd end to end: the built `gitlab-sshd` on 127.0.0.1 with the real OpenSSH client and
//! real `git`, the stub internal API and the dev Gitaly (docs/gitlab-sshd.md). The config is
//! upstream's acceptance-test shape: `log_file: ""`, JSON lines on stderr, `listen:
//! 127.0.0.1:0`, and the listen address scraped from the `tcp_address` log field.
//!
//! The same tests run against the Go `gitlab-sshd` where the behaviour is meant to match
//! (docs/gitlab-sshd.md, "Parity with the Go gitlab-sshd"):
//! `GITLAB_SHELL_E2E_BIN_DIR=/tmp/go-gls/x/usr/bin cargo test --release -p gitlab-shell-e2e
//! gitlab_sshd::`. Tests of what is ours only (limits, `require` from allowed peers, our own
//! metrics and log lines) and of what upstream added after 14.35 return early when
//! [`foreign`] is true; each says why.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use test_support::paths::{bin_dir_override, built_binary, current_user};
use test_support::{ClientKey, Cmd, Commit, Run, Sandbox};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/open
    id: 1
    members: { alice: admin }
"#;

fn seed() -> Vec<Commit> {
    vec![
        Commit::new("main", "Initial commit\n", "README.md", "# Hello\n"),
        Commit::new(
            "main",
            "Second\n",
            "src/lib.rs",
            "pub fn answer() -> u32 { 42 }\n",
        ),
    ]
}

/// A running gitlab-sshd, killed (by its pid) on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    web: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The JSON log lines so far.
    fn lines(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits for the process to exit; its status code.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.web.unwrap(), path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    // The monitoring listener may come up just after the SSH one (the Go server starts it on
    // its own goroutine).
    let started = Instant::now();
    let mut s = loop {
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("monitoring {addr}: {e}"),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_owned();
    (status, body)
}

/// Whether the tests run a `gitlab-sshd` other than ours (the Go one, named through
/// `GITLAB_SHELL_E2E_BIN_DIR`): then what is ours only is not checked.
fn foreign() -> bool {
    bin_dir_override().is_some()
}

/// The `gitlab-sshd` under test: `$GITLAB_SHELL_E2E_BIN_DIR/gitlab-sshd` or ours.
fn sshd_binary() -> PathBuf {
    match bin_dir_override() {
        Some(dir) => dir.join("gitlab-sshd"),
        None => built_binary("gitlab-sshd"),
    }
}

/// Starts `gitlab-sshd -config-dir <dir>`; returns the process and its stderr without waiting
/// for it to listen. `GITLAB_SHELL_DIR` names the same folder: the Go build (Debian's) finds
/// `config.yml` only through it.
fn spawn(dir: &Path) -> (Child, Arc<Mutex<String>>) {
    spawn_with_env(dir, &[])
}

/// [`spawn`] with extra environment variables.
fn spawn_with_env(dir: &Path, env: &[(&str, &str)]) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new(sshd_binary())
        .arg("-config-dir")
        .arg(dir)
        .env("GITLAB_SHELL_DIR", dir)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    (child, stderr)
}

fn field(log: &str, msg: &str, name: &str) -> Option<String> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == msg)
        .and_then(|v| v[name].as_str().map(str::to_owned))
}

fn start(dir: &Path) -> Server {
    start_with_env(dir, &[])
}

fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> Server {
    let (child, stderr) = spawn_with_env(dir, env);
    let started = Instant::now();
    loop {
        let log = stderr.lock().unwrap().clone();
        if let Some(a) = field(&log, "Listening for SSH connections", "tcp_address") {
            // The monitoring port is chosen by write_config (the Go server does not log it).
            let web = fs::read_to_string(dir.join("web_listen"))
                .ok()
                .and_then(|a| a.trim().parse().ok());
            return Server {
                child,
                addr: a.parse().unwrap(),
                web,
                stderr,
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "gitlab-sshd did not start:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `<root>/config.yml` for gitlab-sshd with a fresh ed25519 host key (plus a missing
/// one, which must be skipped) and `sshd_extra` lines inside `sshd:`.
fn write_config(sandbox: &Sandbox, sshd_extra: &str) {
    let root = sandbox.root();
    let key = root.join("ssh_host_ed25519_key");
    if !key.exists() {
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .run()
            .assert_success();
    }
    let web = format!("127.0.0.1:{}", test_support::sshd::free_port());
    fs::write(root.join("web_listen"), &web).unwrap();
    let yaml = format!(
        "user: {user}\ngitlab_url: \"{url}\"\nlog_file: \"\"\nlog_format: json\nlog_level: info\n\
         sshd:\n  listen: \"127.0.0.1:0\"\n  web_listen: \"{web}\"\n  host_key_files:\n    - {missing}\n    - {key}\n{sshd_extra}",
        user = current_user(),
        url = sandbox.api().tcp_url(),
        missing = root.join("no_such_host_key").display(),
        key = key.display(),
    );
    sandbox.write_config(&yaml);
}

struct World {
    sandbox: Sandbox,
    server: Server,
    alice: ClientKey,
}

fn world(name: &str, sshd_extra: &str) -> World {
    let mut builder = Sandbox::builder(name).fixture_yaml(FIXTURE);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder.seed("group/open", seed()).build();
    write_config(&sandbox, sshd_extra);
    let server = start(sandbox.root());
    World {
        sandbox,
        server,
        alice,
    }
}

fn ssh_options(port: u16, key: &Path) -> Vec<String> {
    [
        "-F",
        "/dev/null",
        "-i",
        &key.display().to_string(),
        "-p",
        &port.to_string(),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl World {
    fn ssh_as(&self, user: &str, key: &Path) -> Cmd {
        Cmd::new("ssh")
            .args(ssh_options(self.server.addr.port(), key))
            .arg(format!("{user}@127.0.0.1"))
            .timeout(Duration::from_secs(60))
    }

    fn ssh(&self) -> Cmd {
        self.ssh_as(&current_user(), &self.alice.private_key)
    }

    fn git(&self, dir: &Path) -> Cmd {
        self.git_with_key(dir, &self.alice.private_key)
    }

    /// `git` whose ssh offers `key` (and its `-cert.pub`, as OpenSSH does with `-i`).
    fn git_with_key(&self, dir: &Path, key: &Path) -> Cmd {
        let mut command = String::from("ssh");
        for o in ssh_options(self.server.addr.port(), key) {
            command.push(' ');
            command.push_str(&o);
        }
        self.sandbox
            .git()
            .git()
            .env("GIT_SSH_COMMAND", command)
            .current_dir(dir)
            .timeout(Duration::from_secs(120))
    }

    fn url(&self) -> String {
        format!("{}@127.0.0.1:group/open.git", current_user())
    }

    #[track_caller]
    fn ok(&self, run: &Run) {
        assert_eq!(
            run.code,
            0,
            "{run}\n--- gitlab-sshd ---\n{}",
            self.server.log()
        );
    }

    fn server_rev(&self, rev: &str) -> Option<String> {
        self.sandbox
            .git()
            .rev_parse(&self.sandbox.repo_path("group/open"), rev)
    }
}

#[test]
fn welcome_clone_push_archive_and_refusals() {
    let w = world("sshd-basic", "");
    // A missing host key is logged and skipped.
    assert!(
        w.server
            .log()
            .contains("\"msg\":\"Failed to read host key\""),
        "{}",
        w.server.log()
    );

    let run = w.ssh().run();
    w.ok(&run);
    run.assert_stdout_contains("Welcome to GitLab, @alice!\n");

    let work = w.sandbox.work_dir("clones");
    for version in ["2", "0"] {
        let dir = format!("open-v{version}");
        let run = w
            .git(&work)
            .args([
                "-c",
                &format!("protocol.version={version}"),
                "clone",
                &w.url(),
                &dir,
            ])
            .env("GIT_TRACE_PACKET", "1")
            .run();
        w.ok(&run);
        if version == "2" {
            run.assert_stderr_contains("clone< version 2\n");
        } else {
            run.assert_stderr_lacks("clone< version 2\n");
        }
        assert_eq!(
            fs::read(work.join(&dir).join("src/lib.rs")).unwrap(),
            b"pub fn answer() -> u32 { 42 }\n"
        );
    }

    let dir = work.join("open-v2");
    fs::write(dir.join("new.txt"), b"pushed through gitlab-sshd\n").unwrap();
    let g = w.sandbox.git();
    w.ok(&g.git().current_dir(&dir).args(["add", "new.txt"]).run());
    w.ok(&g
        .git()
        .current_dir(&dir)
        .args(["commit", "-qm", "via sshd"])
        .run());
    let run = w
        .git(&dir)
        .args(["push", "origin", "HEAD:refs/heads/via-sshd"])
        .run();
    w.ok(&run);
    let head = g.git().current_dir(&dir).args(["rev-parse", "HEAD"]).run();
    assert_eq!(
        w.server_rev("via-sshd"),
        Some(head.stdout_str().trim().to_owned())
    );

    let run = w
        .git(&work)
        .args([
            "archive",
            "--format=tar",
            &format!("--remote={}", w.url()),
            "main",
            "README.md",
        ])
        .run();
    w.ok(&run);
    assert!(run.stdout.windows(8).any(|x| x == b"# Hello\n"));

    // Refusals: gitlab-sshd's wording and exit status 128.
    let run = w.ssh().arg("rm -rf /").run();
    assert_eq!(run.code, 128, "{run}");
    // Byte for byte what the Go gitlab-sshd 14.35 prints (its message ends in a newline).
    let ruler = "=".repeat(72);
    run.assert_stderr(format!(
        "remote: \nremote: {ruler}\nremote: \nremote: ERROR: Unknown command: rm -rf /\n\nremote: \nremote: {ruler}\nremote: \n"
    ));
    let run = w.ssh().arg("git-upload-pack 'unterminated").run();
    assert_eq!(run.code, 128, "{run}");
    run.assert_stderr_contains(
        "remote: ERROR: Failed to parse command: Invalid SSH command: invalid command line string\n\n",
    );

    // A failing command: `ERROR: <message>` in the frame, exit status 1 (as the Go
    // gitlab-sshd prints it).
    let run = w.ssh().arg("git-upload-pack 'group/nope.git'").run();
    assert_eq!(run.code, 1, "{run}");
    run.assert_stderr(format!(
        "remote: \nremote: {ruler}\nremote: \nremote: ERROR: The project you were looking for could not be found or you don't have permission to view it.\n\nremote: \nremote: {ruler}\nremote: \n"
    ));

    if !foreign() {
        // Ours: one malloc arena for every thread (docs/gitlab-sshd.md, "Memory"); glibc's
        // default gives each new thread an arena of its own, a 64 MiB reservation that shows
        // as a large inaccessible mapping.
        let arenas = secondary_malloc_arenas(w.server.child.id());
        assert_eq!(arenas, 0, "secondary malloc arenas after the sessions");
    }
    // Each command is logged with the Go server's line, its correlation id and the client
    // address.
    let lines = w.server.lines();
    let exec: Vec<_> = lines
        .iter()
        .filter(|l| l["msg"] == "session: handleShell: executing command")
        .collect();
    assert!(!exec.is_empty(), "{}", w.server.log());
    for l in &exec {
        assert_eq!(
            l["env"]["RemoteAddr"].as_str().unwrap().split(':').next(),
            Some("127.0.0.1"),
            "{l}"
        );
        assert_eq!(l["correlation_id"].as_str().unwrap().len(), 26, "{l}");
    }
    assert!(
        exec.iter().any(
            |l| l["env"]["OriginalCommand"] == "git-upload-pack 'group/open.git'"
                && l["env"]["GitProtocolVersion"] == "version=2"
        ),
        "{}",
        w.server.log()
    );
    if !foreign() {
        // Ours: every line of a connection, the command code's own included, carries the
        // correlation id and the client address.
        let exec: Vec<_> = lines
            .iter()
            .filter(|l| l["msg"] == "gitlab-shell: main: executing command")
            .collect();
        assert!(!exec.is_empty(), "{}", w.server.log());
        for l in exec {
            assert_eq!(
                l["remote_addr"].as_str().unwrap().split(':').next(),
                Some("127.0.0.1")
            );
            assert_eq!(l["correlation_id"].as_str().unwrap().len(), 26, "{l}");
        }
    }
    // The key was looked up without base64 padding, as upstream sends it.
    let lookups = w.sandbox.api().requests_to("/authorized_keys");
    assert!(!lookups.is_empty());
    assert!(
        lookups
            .iter()
            .all(|r| !r.query_param("key").unwrap().ends_with('='))
    );
}

#[test]
fn wrong_user_and_unknown_key_are_refused() {
    let w = world("sshd-refuse", "");
    let run = w.ssh_as("somebody-else", &w.alice.private_key).run();
    assert_eq!(run.code, 255, "{run}");
    run.assert_stderr_contains("Permission denied (publickey)");
    let stranger = ClientKey::generate(&w.sandbox.work_dir("keys"), "stranger");
    let run = w.ssh_as(&current_user(), &stranger.private_key).run();
    assert_eq!(run.code, 255, "{run}");
    run.assert_stderr_contains("Permission denied (publickey)");
    if foreign() {
        // The connection SLI counters came with upstream 14.55 (not in the Go 14.35 we run).
        return;
    }
    // Unknown keys are not server errors; an internal API failing during auth is.
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_sli:shell_sshd_connections:errors_total 0\n"),
        "{metrics}"
    );
    w.sandbox.api().set_fault(
        "/api/v4/internal/authorized_keys",
        test_support::stub_api::Fault::Status(500, "{}".into()),
    );
    let run = w.ssh().run();
    assert_eq!(run.code, 255, "{run}");
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_sli:shell_sshd_connections:errors_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn rsa_ecdsa_and_ed25519_client_keys() {
    let keys_dir = tempfile::tempdir().unwrap();
    let kinds: [(&str, &[&str]); 5] = [
        ("rsa2048", &["-t", "rsa", "-b", "2048"]),
        ("ecdsa256", &["-t", "ecdsa", "-b", "256"]),
        ("ecdsa384", &["-t", "ecdsa", "-b", "384"]),
        ("ecdsa521", &["-t", "ecdsa", "-b", "521"]),
        ("ed25519", &["-t", "ed25519"]),
    ];
    let mut fixture = String::from(FIXTURE);
    fixture.push_str("keys:\n");
    let mut keys = Vec::new();
    for (i, (name, args)) in kinds.iter().enumerate() {
        let path = keys_dir.path().join(name);
        Cmd::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", name, "-f"])
            .arg(&path)
            .args(*args)
            .run()
            .assert_success();
        let line = fs::read_to_string(path.with_extension("pub")).unwrap();
        fixture.push_str(&format!(
            "  - {{ id: {}, user: alice, key: \"{}\" }}\n",
            i + 10,
            line.trim()
        ));
        keys.push(path);
    }
    let sandbox = Sandbox::builder("sshd-keys").fixture_yaml(&fixture).build();
    write_config(&sandbox, "");
    let server = start(sandbox.root());
    for key in keys {
        let run = Cmd::new("ssh")
            .args(ssh_options(server.addr.port(), &key))
            .arg(format!("{}@127.0.0.1", current_user()))
            .timeout(Duration::from_secs(60))
            .run();
        assert_eq!(run.code, 0, "{}: {run}\n{}", key.display(), server.log());
        run.assert_stdout_contains("Welcome to GitLab, @alice!\n");
    }
}

#[test]
fn several_sessions_on_one_connection_and_the_sessions_limit() {
    let w = world("sshd-mux", "  concurrent_sessions_limit: 2\n");
    let control = w.sandbox.work_dir("ctl").join("c");
    let master = |extra: &[&str]| {
        w.ssh()
            .args(["-o", "ControlMaster=auto"])
            .arg("-o")
            .arg(format!("ControlPath={}", control.display()))
            .args(["-o", "ControlPersist=30"])
            .args(extra)
    };
    for _ in 0..3 {
        let run = master(&[]).run();
        w.ok(&run);
        run.assert_stdout_contains("Welcome to GitLab, @alice!\n");
    }
    let starts = w
        .server
        .lines()
        .iter()
        .filter(|l| l["msg"] == "server: handleConn: start")
        .count();
    assert_eq!(
        starts,
        1,
        "three sessions over one connection\n{}",
        w.server.log()
    );

    // Two sessions held open (upload-pack waits for the client), a third is refused.
    let mut held: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("ssh")
                .args(ssh_options(w.server.addr.port(), &w.alice.private_key))
                .args(["-o", "ControlMaster=auto"])
                .arg("-o")
                .arg(format!("ControlPath={}", control.display()))
                .arg(format!("{}@127.0.0.1", current_user()))
                .arg("git-upload-pack 'group/open.git'")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    thread::sleep(Duration::from_millis(1500));
    // The third session on the same connection is refused (OpenSSH's mux client then falls
    // back to a connection of its own, which gets a session of its own).
    let run = master(&[]).run();
    run.assert_stderr_contains("Session open refused by peer");
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_concurrent_limited_sessions_total 1\n"),
        "{metrics}"
    );
    for c in &mut held {
        drop(c.stdin.take());
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = master(&["-O", "exit"]).run();
}

/// A TCP relay that sends a PROXY v2 header (source `src`) to `to`, then copies both ways.
fn proxy_v2_relay(to: SocketAddr, src: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let Ok(mut server) = TcpStream::connect(to) else {
                break;
            };
            let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            header.extend_from_slice(&[0x21, 0x11, 0, 12]);
            if let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, to) {
                header.extend_from_slice(&s.ip().octets());
                header.extend_from_slice(&d.ip().octets());
                header.extend_from_slice(&s.port().to_be_bytes());
                header.extend_from_slice(&d.port().to_be_bytes());
            }
            server.write_all(&header).unwrap();
            let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut s2);
                let _ = s2.shutdown(Shutdown::Write);
            });
            thread::spawn(move || {
                let (mut c, mut s) = (client, server);
                let _ = std::io::copy(&mut s, &mut c);
                let _ = c.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

#[test]
fn proxy_protocol_v2_address_reaches_check_ip_and_require_refuses_bare_connections() {
    let w = world(
        "sshd-proxy",
        "  proxy_protocol: true\n  proxy_policy: require\n",
    );
    let relay = proxy_v2_relay(w.server.addr, "10.1.1.1:1000".parse().unwrap());
    let work = w.sandbox.work_dir("clones");
    let mut command = String::from("ssh");
    for o in ssh_options(relay.port(), &w.alice.private_key) {
        command.push(' ');
        command.push_str(&o);
    }
    let run = w
        .sandbox
        .git()
        .git()
        .env("GIT_SSH_COMMAND", command)
        .current_dir(&work)
        .args(["clone", &w.url(), "via-proxy"])
        .timeout(Duration::from_secs(120))
        .run();
    w.ok(&run);
    let allowed = w.sandbox.api().requests_to("/allowed");
    assert!(
        allowed.iter().any(|r| r.body["check_ip"] == "10.1.1.1"),
        "{allowed:#?}"
    );
    assert!(
        w.server
            .lines()
            .iter()
            .any(|l| l["remote_addr"] == "10.1.1.1:1000")
    );
    // `require`: a connection without a header is refused.
    let run = w.ssh().run();
    assert_eq!(run.code, 255, "{run}");
    if foreign() {
        // The refusal counter is ours.
        return;
    }
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_proxy_rejected_connections_total 1\n"),
        "{metrics}"
    );
}

#[test]
fn probes_metrics_and_graceful_shutdown() {
    let mut w = world("sshd-ops", "  grace_period: 30\n");
    assert_eq!(w.server.get("/start").0, 200);
    assert_eq!(w.server.get("/health").0, 200);
    let (code, metrics) = w.server.get("/metrics");
    assert_eq!(code, 200);
    for name in [
        "# TYPE gitlab_shell_sshd_in_flight_connections gauge",
        "# TYPE gitlab_shell_sshd_session_duration_seconds histogram",
        "# TYPE gitlab_sli:shell_sshd_sessions:total counter",
        "gitlab_build_info{",
    ] {
        assert!(metrics.contains(name), "{name}\n{metrics}");
    }
    // A session in flight: upload-pack has advertised and waits for the client.
    let mut held = Command::new("ssh")
        .args(ssh_options(w.server.addr.port(), &w.alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("git-upload-pack 'group/open.git'")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 4];
    held.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_in_flight_connections 1\n"),
        "{metrics}"
    );
    w.server.signal("TERM");
    let started = Instant::now();
    while w.server.get("/start").0 != 503 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "readiness never went 503"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        TcpStream::connect(w.server.addr).is_err(),
        "listener still open"
    );
    assert!(
        w.server.wait_exit(Duration::from_millis(500)).is_none(),
        "exited with a session in flight"
    );
    // The client finishes its session (flush: no wants); the server exits long before the
    // 30 s grace period.
    held.stdin.as_mut().unwrap().write_all(b"0000").unwrap();
    drop(held.stdin.take());
    let status = held.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        w.server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        w.server.log()
    );
    // "Shutdown initiated with grace period: 30s" since upstream 14.4x; Go 14.35 logs
    // "Shutdown initiated" with `shutdown_timeout_s`.
    let wording = if foreign() {
        "Shutdown initiated"
    } else {
        "Shutdown initiated with grace period: 30s"
    };
    assert!(w.server.log().contains(wording), "{}", w.server.log());
}

#[test]
fn login_grace_time_and_unauthenticated_connection_cap() {
    if foreign() {
        eprintln!("skipped against a foreign gitlab-sshd: max_unauthenticated_connections is ours");
        return;
    }
    let w = world(
        "sshd-limits",
        "  login_grace_time: 1\n  max_unauthenticated_connections: 2\n",
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(w.server.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(200));
    // The third unauthenticated connection is closed at once, before any banner.
    let mut third = TcpStream::connect(w.server.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = third.read_to_end(&mut buf);
    assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_unauthenticated_limited_connections_total 1\n"),
        "{metrics}"
    );
    // The idle ones get the banner, then are cut by the login grace time (1 s).
    let started = Instant::now();
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(buf.starts_with(b"SSH-2.0-GitLab-SSHD\r\n"), "{buf:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    // Slots are free again: a real client logs in.
    let run = w.ssh().run();
    w.ok(&run);
}

#[test]
fn startup_failures_exit_1() {
    let sandbox = Sandbox::builder("sshd-startup").gitaly(false).build();
    sandbox.write_config("user: [unclosed\n");
    let (mut child, stderr) = spawn(sandbox.root());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    thread::sleep(Duration::from_millis(100));
    let log = stderr.lock().unwrap().clone();
    assert!(
        log.contains("failed to load configuration from specified directory"),
        "{log}"
    );
    assert!(!log.contains("panic"), "{log}");

    sandbox.write_config(&format!(
        // gitlab_url: the Go 14.35 server stops at its absence first (14.46+ only logs it).
        "gitlab_url: \"http://127.0.0.1:9\"\nlog_file: \"\"\nsshd:\n  listen: \"127.0.0.1:0\"\n  web_listen: \"\"\n  host_key_files: [{}]\n",
        sandbox.root().join("nope").display()
    ));
    let (mut child, stderr) = spawn(sandbox.root());
    assert_eq!(child.wait().unwrap().code(), Some(1));
    thread::sleep(Duration::from_millis(100));
    let log = stderr.lock().unwrap().clone();
    // Go 14.35 capitalises these ("GitLab", "No host keys"); 14.55 changed them.
    let log = if foreign() { log.to_lowercase() } else { log };
    let (started, keys) = if foreign() {
        (
            "failed to start gitlab built-in sshd",
            "no host keys could be loaded, aborting",
        )
    } else {
        (
            "Failed to start Gitlab built-in sshd",
            "no host keys could be loaded, aborting",
        )
    };
    assert!(log.contains(started), "{log}");
    assert!(log.contains(keys), "{log}");

    if foreign() {
        // Debian's Go build has no version stamped in ("(unknown version)").
        return;
    }
    let out = Command::new(built_binary("gitlab-sshd"))
        .arg("-version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("gitlab-sshd v"));
}

#[test]
fn user_certificates_signed_by_a_trusted_ca() {
    if foreign() {
        eprintln!("skipped against a foreign gitlab-sshd: trusted_user_ca_keys came with 14.48");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ca", "-f"])
        .arg(&ca)
        .run()
        .assert_success();
    let w = world(
        "sshd-certs",
        &format!(
            "  trusted_user_ca_keys: [{}]\n",
            ca.with_extension("pub").display()
        ),
    );
    // A key GitLab does not know: only its certificate can let it in.
    let sign = |name: &str, key_id: &str, principal: &str, extra: &[&str]| -> PathBuf {
        let key = ClientKey::generate(dir.path(), name).private_key;
        Cmd::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", key_id, "-n", principal, "-V", "-5m:+1h"])
            .args(extra)
            .arg(key.with_extension("pub"))
            .run()
            .assert_success();
        key
    };
    let user = current_user();
    let good = sign("good", "alice", &user, &[]);
    let run = w.ssh_as(&user, &good).run();
    w.ok(&run);
    run.assert_stdout_contains("Welcome to GitLab, @alice!\n");
    assert!(
        w.server
            .log()
            .contains("user certificate is signed by a locally trusted CA (instance-level)")
    );
    let here = sign(
        "here",
        "alice",
        &user,
        &["-O", "source-address=127.0.0.0/8"],
    );
    w.ok(&w.ssh_as(&user, &here).run());

    for (name, key_id, principal, extra) in [
        (
            "elsewhere",
            "alice",
            user.as_str(),
            &["-O", "source-address=10.9.9.9/32"][..],
        ),
        ("wrongprincipal", "alice", "somebody", &[][..]),
        ("badid", "al..ice", user.as_str(), &[][..]),
    ] {
        let key = sign(name, key_id, principal, extra);
        let run = w.ssh_as(&user, &key).run();
        assert_eq!(run.code, 255, "{name}: {run}");
    }
    let log = w.server.log();
    assert!(log.contains("not allowed by the certificate"), "{log}");
    assert!(
        log.contains("certificate KeyId contains consecutive special characters"),
        "{log}"
    );
}

/// Mappings of a process that are glibc malloc arena reservations: anonymous, inaccessible and
/// larger than 1 MiB (thread stack guards are one page).
fn secondary_malloc_arenas(pid: u32) -> usize {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines()
        .filter(|l| {
            let mut f = l.split_whitespace();
            let (Some(range), Some(perms)) = (f.next(), f.next()) else {
                return false;
            };
            let path = f.nth(3);
            let size = range
                .split_once('-')
                .and_then(|(a, b)| {
                    Some(u64::from_str_radix(b, 16).ok()? - u64::from_str_radix(a, 16).ok()?)
                })
                .unwrap_or(0);
            perms == "---p" && path.is_none() && size > 1 << 20
        })
        .count()
}

fn rss_kb(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A client that stops reading in the middle of a 24 MB pack: the server's memory stays
/// bounded (output waits for the SSH window), and when the client goes away the session and
/// connection end.
#[test]
fn a_client_that_stops_reading_mid_clone_costs_bounded_memory() {
    let mut builder = Sandbox::builder("sshd-stall").fixture_yaml(FIXTURE);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder
        .seed(
            "group/open",
            vec![Commit::new(
                "main",
                "Big\n",
                "big.bin",
                test_support::random_bytes(7, 24 << 20),
            )],
        )
        .build();
    write_config(&sandbox, "");
    let server = start(sandbox.root());
    let tip = sandbox
        .git()
        .rev_parse(&sandbox.repo_path("group/open"), "main")
        .unwrap();
    let before = rss_kb(server.child.id());
    let mut client = Command::new("ssh")
        .args(ssh_options(server.addr.port(), &alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("git-upload-pack 'group/open.git'")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let want = format!("want {tip}\n");
    let request = format!("{:04x}{want}00000009done\n", want.len() + 4);
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    // Read a little (the advertisement and the start of the pack), then stop reading.
    let mut first = vec![0u8; 64 << 10];
    client
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    thread::sleep(Duration::from_secs(3));
    let stalled = rss_kb(server.child.id());
    assert!(
        stalled < before + 12 * 1024,
        "server grew from {before} kB to {stalled} kB with a stalled client"
    );
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_in_flight_connections 1\n"),
        "{metrics}"
    );
    // The client goes away: the blocked command fails its writes, the session and the
    // connection end.
    let _ = client.kill();
    let _ = client.wait();
    let started = Instant::now();
    loop {
        let (_, metrics) = server.get("/metrics");
        if metrics.contains("gitlab_shell_sshd_in_flight_connections 0\n") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{metrics}\n{}",
            server.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// HAProxy (`send-proxy-v2`, connecting from 127.0.0.3) in front of gitlab-sshd with
/// `proxy_policy: require` and `proxy_allowed: [127.0.0.3]`: the client address from the header
/// (127.0.0.1) is the `check_ip` GitLab sees; another peer sending a header is refused.
#[test]
fn haproxy_send_proxy_v2_in_front() {
    let w = world(
        "sshd-haproxy",
        "  proxy_protocol: true\n  proxy_policy: require\n  proxy_allowed: [127.0.0.3]\n",
    );
    let port = test_support::sshd::free_port();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend ssh\n    bind 127.0.0.1:{port}\n    default_backend gitlab_sshd\n\
         backend gitlab_sshd\n    server node1 {} send-proxy-v2 source 127.0.0.3\n",
        w.server.addr
    );
    let path = w.sandbox.work_dir("haproxy").join("haproxy.cfg");
    fs::write(&path, cfg).unwrap();
    let haproxy = Cmd::new("/usr/sbin/haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .timeout(Duration::from_secs(120))
        .spawn();
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "haproxy did not start"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let run = Cmd::new("ssh")
        .args(ssh_options(port, &w.alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("git-upload-pack 'group/open.git'")
        .stdin(b"0000".to_vec())
        .timeout(Duration::from_secs(60))
        .run();
    w.ok(&run);
    let allowed = w.sandbox.api().requests_to("/allowed");
    assert!(
        allowed.iter().any(|r| r.body["check_ip"] == "127.0.0.1"),
        "{allowed:#?}"
    );
    // Without the header the TCP peer would be HAProxy's 127.0.0.3.
    assert!(
        !w.server.log().contains("\"remote_addr\":\"127.0.0.3"),
        "{}",
        w.server.log()
    );
    // A peer that is not the balancer may not send a header (a forged client address) ...
    let forger = proxy_v2_relay(w.server.addr, "10.6.6.6:1".parse().unwrap());
    let run = Cmd::new("ssh")
        .args(ssh_options(forger.port(), &w.alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .timeout(Duration::from_secs(60))
        .run();
    assert_eq!(run.code, 255, "{run}");
    // ... but may connect without one (upstream's proxy_allowed semantics).
    w.ok(&w.ssh().run());
    drop(haproxy);
}

/// Hostile input: 1,000 connections that never authenticate (at most
/// `max_unauthenticated_connections` are served, the rest are closed at once, memory stays
/// bounded), garbage instead of an SSH banner, and broken PROXY headers; a real client still
/// gets in afterwards.
#[test]
fn a_thousand_idle_connections_garbage_and_broken_proxy_headers() {
    if foreign() {
        eprintln!(
            "skipped against a foreign gitlab-sshd: max_unauthenticated_connections and the refusal counters are ours"
        );
        return;
    }
    let w = world(
        "sshd-hostile",
        "  max_unauthenticated_connections: 100\n  login_grace_time: 30\n  proxy_protocol: true\n",
    );
    let before = rss_kb(w.server.child.id());
    let mut conns = Vec::new();
    for _ in 0..1000 {
        match TcpStream::connect(w.server.addr) {
            Ok(c) => conns.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    thread::sleep(Duration::from_secs(2));
    let (_, metrics) = w.server.get("/metrics");
    let limited: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("gitlab_shell_sshd_unauthenticated_limited_connections_total ")
        })
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(limited >= 900, "{metrics}");
    assert!(
        metrics.contains("gitlab_shell_sshd_unauthenticated_connections 100\n"),
        "{metrics}"
    );
    let grown = rss_kb(w.server.child.id()).saturating_sub(before);
    assert!(grown < 32 * 1024, "grew by {grown} kB");
    drop(conns);

    // Garbage instead of a banner: the connection is closed, the server goes on.
    let mut g = TcpStream::connect(w.server.addr).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = g.read_to_end(&mut buf);
    // Broken PROXY headers: refused and counted.
    for bad in [
        &b"PROXY TCP4 bogus\r\n"[..],
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01",
    ] {
        let mut c = TcpStream::connect(w.server.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(bad).unwrap();
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(buf.is_empty(), "{:?}", String::from_utf8_lossy(&buf));
    }
    let started = Instant::now();
    loop {
        let (_, metrics) = w.server.get("/metrics");
        if metrics.contains("gitlab_shell_sshd_proxy_rejected_connections_total 2\n")
            && metrics.contains("gitlab_shell_sshd_unauthenticated_connections 0\n")
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{metrics}");
        thread::sleep(Duration::from_millis(100));
    }
    let run = w.ssh().run();
    w.ok(&run);
    run.assert_stdout_contains("Welcome to GitLab, @alice!\n");
}

/// The other GitLab commands through gitlab-sshd run the same code as classic: a personal
/// access token, 2FA recovery codes (answering a question on stdin), LFS authentication.
#[test]
fn personal_access_token_2fa_and_lfs_authenticate() {
    let fixture = r#"
users:
  - { id: 1, username: alice, name: Alice, two_factor: true, recovery_codes: [aaaa-1111, bbbb-2222] }
projects:
  - path: group/open
    id: 1
    members: { alice: admin }
personal_access_token:
  token: glpat-stubtoken0000000000
"#;
    let mut builder = Sandbox::builder("sshd-commands")
        .fixture_yaml(fixture)
        .gitaly(false);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder.build();
    write_config(&sandbox, "");
    let server = start(sandbox.root());
    let ssh = |command: &str, stdin: &[u8]| {
        Cmd::new("ssh")
            .args(ssh_options(server.addr.port(), &alice.private_key))
            .arg(format!("{}@127.0.0.1", current_user()))
            .arg(command)
            .stdin(stdin.to_vec())
            .timeout(Duration::from_secs(60))
            .run()
    };
    let run = ssh("personal_access_token mytoken api 7", b"");
    assert_eq!(run.code, 0, "{run}");
    run.assert_stdout_contains("Token:   glpat-stubtoken0000000000\nScopes:  api\nExpires: ");
    let run = ssh("2fa_recovery_codes", b"yes\n");
    assert_eq!(run.code, 0, "{run}");
    run.assert_stdout_contains(
        "Your two-factor authentication recovery codes are:\n\naaaa-1111\nbbbb-2222\n",
    );
    let run = ssh("git-lfs-authenticate group/open download", b"");
    assert_eq!(run.code, 0, "{run}");
    run.assert_stdout_contains("{\"header\":{\"Authorization\":\"Basic ");
}

/// After `grace_period` the sessions still in flight are cut and the process exits.
#[test]
fn sessions_are_cut_after_the_grace_period() {
    let mut w = world("sshd-cut", "  grace_period: 1\n");
    let mut held = Command::new("ssh")
        .args(ssh_options(w.server.addr.port(), &w.alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .arg("git-upload-pack 'group/open.git'")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = [0u8; 4];
    held.stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    let started = Instant::now();
    w.server.signal("TERM");
    assert_eq!(
        w.server.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        w.server.log()
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace period"
    );
    // The client sees its connection closed.
    let status = held.wait().unwrap();
    assert!(!status.success());
    if !foreign() {
        // Our log line.
        assert!(
            w.server.log().contains("grace period over"),
            "{}",
            w.server.log()
        );
    }
}

/// Ours: `max_connections_per_source` caps the connections in flight from one client address
/// (after PROXY, so per real client), counted in metrics; other addresses are not affected.
#[test]
fn connections_per_source_address_are_capped() {
    if foreign() {
        eprintln!("skipped against a foreign gitlab-sshd: max_connections_per_source is ours");
        return;
    }
    let w = world(
        "sshd-per-source",
        "  max_connections_per_source: 2\n  proxy_protocol: true\n",
    );
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(w.server.addr).unwrap())
        .collect();
    thread::sleep(Duration::from_millis(800));
    // A third from 127.0.0.1 is closed at once (after the PROXY header timeout).
    let run = w.ssh().run();
    assert_eq!(run.code, 255, "{run}");
    let (_, metrics) = w.server.get("/metrics");
    assert!(
        metrics.contains("gitlab_shell_sshd_per_source_limited_connections_total 1\n"),
        "{metrics}"
    );
    // Another client address (through a PROXY header) still gets in.
    let relay = proxy_v2_relay(w.server.addr, "10.1.1.1:1000".parse().unwrap());
    let run = Cmd::new("ssh")
        .args(ssh_options(relay.port(), &w.alice.private_key))
        .arg(format!("{}@127.0.0.1", current_user()))
        .timeout(Duration::from_secs(60))
        .run();
    w.ok(&run);
    // Once the idle ones are gone, 127.0.0.1 gets in again.
    drop(idle);
    thread::sleep(Duration::from_millis(300));
    w.ok(&w.ssh().run());
}

/// A fresh ed25519 key pair `<dir>/<name>` (CA or host key), made by ssh-keygen.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .run()
        .assert_success();
    key
}

/// The `SHA256:` fingerprint of a public key file, as `ssh-keygen -l` prints it.
fn sha256_fingerprint(public: &Path) -> String {
    let run = Cmd::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public)
        .run();
    run.assert_success();
    String::from_utf8_lossy(&run.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned()
}

/// A client key GitLab does not know, with a user certificate signed by `ca` for KeyId
/// `key_id` and the current user as principal.
fn certified_key(dir: &Path, ca: &Path, name: &str, key_id: &str) -> PathBuf {
    let key = ClientKey::generate(dir, name).private_key;
    Cmd::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args(["-I", key_id, "-n", &current_user(), "-V", "-5m:+1h"])
        .arg(key.with_extension("pub"))
        .run()
        .assert_success();
    key
}

/// A certificate signed by a group's CA: with `FF_GITLAB_SHELL_SSH_CERTIFICATES=1` gitlab-sshd
/// asks `/authorized_certs` (CA fingerprint without `SHA256:`, KeyId), runs the session as the
/// user it names, sends the group as `namespace_path` on `/allowed`, and refuses commands other
/// than git's; with the switch off the certificate is refused. Real `ssh-keygen -s`, `ssh`,
/// `git`. See: docs/gitlab-sshd.md, "Authentication".
#[test]
fn group_ca_certificates_through_authorized_certs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = keygen(dir.path(), "group-ca");
    let fingerprint = sha256_fingerprint(&ca.with_extension("pub"));
    let bare = fingerprint.strip_prefix("SHA256:").unwrap().to_owned();
    // An unrelated instance-level CA: with one configured, a certificate's key is let through
    // to the certificate check (without any, and the switch off, the certificate's bare key is
    // refused at once as unknown, before any certificate logic).
    let instance_ca = keygen(dir.path(), "instance-ca");
    let mut w = world(
        "sshd-group-ca",
        &format!(
            "  trusted_user_ca_keys: [{}]\n",
            instance_ca.with_extension("pub").display()
        ),
    );
    w.sandbox.api().update_fixture(|f| {
        f.group_cas = vec![stub_api_group_ca(&bare, "group")];
    });
    let key = certified_key(dir.path(), &ca, "member", "alice");

    // Switch off (the default): the certificate is refused, nothing is asked.
    let run = w.ssh_as(&current_user(), &key).run();
    assert_eq!(run.code, 255, "{run}");
    run.assert_stderr_contains("Permission denied (publickey)");
    assert!(w.sandbox.api().requests_to("/authorized_certs").is_empty());
    assert!(
        w.server
            .log()
            .contains("handleUserCertificate: feature is disabled"),
        "{}",
        w.server.log()
    );

    // Switch on (and no instance-level CA at all).
    write_config(&w.sandbox, "");
    drop(std::mem::replace(
        &mut w.server,
        start_with_env(
            w.sandbox.root(),
            &[("FF_GITLAB_SHELL_SSH_CERTIFICATES", "1")],
        ),
    ));
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git_with_key(&work, &key)
        .args(["clone", &w.url(), "via-group-cert"])
        .run();
    w.ok(&run);
    assert_eq!(
        fs::read(work.join("via-group-cert/README.md")).unwrap(),
        b"# Hello\n"
    );
    let certs = w.sandbox.api().requests_to("/authorized_certs");
    assert_eq!(certs.len(), 1, "{certs:?}");
    assert_eq!(
        certs[0].query,
        format!(
            "key={}&user_identifier=alice",
            bare.replace('+', "%2B").replace('/', "%2F")
        )
    );
    let allowed = w.sandbox.api().requests_to("/allowed");
    let last = allowed.last().unwrap();
    assert_eq!(last.body["username"], "alice", "{}", last.body);
    assert_eq!(last.body["namespace_path"], "group", "{}", last.body);
    assert!(last.body.get("key_id").is_none(), "{}", last.body);
    // Our log line; the Go server's wording differs (docs/gitlab-sshd.md, "Parity").
    assert!(
        foreign()
            || w.server
                .log()
                .contains("user certificate is signed by a trusted CA (group-level)")
    );

    // Only git commands: the welcome and 2FA are refused as unknown commands.
    for command in ["", "2fa_recovery_codes"] {
        let run = w
            .ssh_as(&current_user(), &key)
            .arg(command)
            .stdin(Vec::new())
            .run();
        assert_eq!(run.code, 128, "{command}: {run}");
        run.assert_stderr_contains(format!("ERROR: Unknown command: {command}\n"));
    }

    // A KeyId the group does not know, and a CA no group trusts, are refused.
    let stranger = certified_key(dir.path(), &ca, "stranger", "nobody");
    assert_eq!(w.ssh_as(&current_user(), &stranger).run().code, 255);
    let other_ca = keygen(dir.path(), "other-ca");
    let other = certified_key(dir.path(), &other_ca, "other", "alice");
    assert_eq!(w.ssh_as(&current_user(), &other).run().code, 255);
}

fn stub_api_group_ca(
    fingerprint: &str,
    namespace: &str,
) -> test_support::stub_api::fixture::GroupCa {
    test_support::stub_api::fixture::GroupCa {
        fingerprint: fingerprint.to_owned(),
        namespace: namespace.to_owned(),
    }
}

/// `host_cert_files`: gitlab-sshd presents the certificate of its host key, so an OpenSSH client
/// that trusts only the host CA (`@cert-authority` in known_hosts, StrictHostKeyChecking=yes)
/// connects; offered the bare key it refuses. An unreadable certificate file is logged and
/// skipped. See: docs/gitlab-sshd.md, "Configuration".
#[test]
fn host_certificate_is_accepted_by_a_client_trusting_the_host_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = keygen(dir.path(), "host-ca");
    let mut builder = Sandbox::builder("sshd-host-cert")
        .fixture_yaml(FIXTURE)
        .gitaly(false);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder.build();
    let host_key = keygen(sandbox.root(), "ssh_host_ed25519_key");
    Cmd::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args([
            "-I",
            "gitlab-sshd",
            "-h",
            "-n",
            "127.0.0.1",
            "-V",
            "-5m:+1h",
        ])
        .arg(host_key.with_extension("pub"))
        .run()
        .assert_success();
    let cert = sandbox.root().join("ssh_host_ed25519_key-cert.pub");
    assert!(cert.exists());
    write_config(
        &sandbox,
        &format!(
            "  host_cert_files:\n    - {}\n    - {}\n",
            sandbox.root().join("missing-cert.pub").display(),
            cert.display()
        ),
    );
    let server = start(sandbox.root());
    assert!(
        server.log().contains("failed to read host certificate"),
        "{}",
        server.log()
    );
    let known_hosts = dir.path().join("known_hosts");
    let ca_line = fs::read_to_string(ca.with_extension("pub")).unwrap();
    fs::write(&known_hosts, format!("@cert-authority * {ca_line}")).unwrap();
    let ssh = |extra: &[&str]| {
        Cmd::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&alice.private_key)
            .args(["-p", &server.addr.port().to_string()])
            .args(["-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(extra)
            .arg(format!("{}@127.0.0.1", current_user()))
            .timeout(Duration::from_secs(60))
            .run()
    };
    let run = ssh(&[]);
    assert_eq!(run.code, 0, "{run}\n{}", server.log());
    run.assert_stdout_contains("Welcome to GitLab, @alice!\n");
    // The same client, allowed only the bare key type: the CA cannot vouch for it. Ours still
    // offers the bare key (a client that knows it keeps connecting), so the client refuses
    // it; the Go server offers only the certificate, so nothing is negotiated.
    let run = ssh(&["-o", "HostKeyAlgorithms=ssh-ed25519"]);
    assert_eq!(run.code, 255, "{run}");
    run.assert_stderr_contains(if foreign() {
        "no matching host key type found"
    } else {
        "Host key verification failed"
    });
}

/// The value of the series `name` with exactly `labels`, read with a Prometheus text parser
/// (prometheus-parse). That parser only knows names made of `\\w` characters, so upstream's
/// recording-rule style names (`gitlab_sli:…`) are read by [`colon_sample`] instead.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// The value of an unlabelled series whose name has colons: the line `<name> <value>`.
fn colon_sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The internal-API, Gitaly, LFS and session-error metrics move: a clone counts its API
/// requests by code and method (promhttp's lower-case method), two clones dial Gitaly once (the
/// connection cache), the in-flight gauge returns to 0, LFS
/// authentication is counted, and a failing `/allowed` (500 after retries) counts a session
/// error and a connection error once. Parsed with a Prometheus text parser.
/// See: docs/gitlab-sshd.md, "Probes and metrics".
#[test]
fn metrics_count_api_requests_lfs_and_session_errors() {
    let w = world("sshd-metrics", "");
    let metrics = || w.server.get("/metrics").1;
    let before = metrics();
    assert_eq!(
        colon_sample(&before, "gitlab_sli:shell_sshd_sessions:errors_total"),
        Some(0.0)
    );
    let work = w.sandbox.work_dir("clones");
    w.ok(&w.git(&work).args(["clone", &w.url(), "one"]).run());
    let after = metrics();
    let get_200 = [("code", "200"), ("method", "get")];
    let post_200 = [("code", "200"), ("method", "post")];
    assert!(
        sample(&after, "gitlab_shell_http_requests_total", &get_200).unwrap_or(0.0) >= 1.0,
        "authorized_keys lookup: {after}"
    );
    assert!(
        sample(&after, "gitlab_shell_http_requests_total", &post_200).unwrap_or(0.0) >= 1.0,
        "/allowed: {after}"
    );
    assert!(
        sample(
            &after,
            "gitlab_shell_http_request_duration_seconds_count",
            &post_200
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "gitlab_shell_http_in_flight_requests", &[]),
        Some(0.0)
    );
    assert_eq!(
        colon_sample(&after, "gitlab_sli:shell_sshd_sessions:errors_total"),
        Some(0.0),
        "a successful clone is no error"
    );
    // A second clone, on a new SSH connection, reuses the Gitaly connection of the first.
    w.ok(&w.git(&work).args(["clone", &w.url(), "again"]).run());
    let again = metrics();
    assert_eq!(
        sample(
            &again,
            "gitlab_shell_gitaly_connections_total",
            &[("status", "ok")]
        ),
        Some(1.0),
        "one Gitaly dial for two clones: {again}"
    );
    grpc_client_metrics_move(&w, &work, &again);
    if foreign() {
        // `lfs_*_connections_total`, the connection SLI counters and the topology histogram
        // came after the Go 14.35 we run (upstream 14.4x, 14.55 and 14.48).
        return;
    }
    // Routing through the Topology Service is not implemented: its histogram stays at zero.
    let now = metrics();
    assert!(
        now.contains("\ngitlab_shell_topology_request_duration_seconds_count 0\n"),
        "{now}"
    );

    let run = w
        .ssh()
        .arg("git-lfs-authenticate group/open download")
        .run();
    w.ok(&run);
    assert_eq!(
        sample(&metrics(), "lfs_http_connections_total", &[]),
        Some(1.0)
    );

    w.sandbox.api().set_fault(
        "/api/v4/internal/allowed",
        test_support::stub_api::Fault::Status(500, "{}".into()),
    );
    let run = w.git(&work).args(["clone", &w.url(), "two"]).run();
    assert_ne!(run.code, 0, "{run}");
    let failed = metrics();
    assert_eq!(
        colon_sample(&failed, "gitlab_sli:shell_sshd_sessions:errors_total"),
        Some(1.0),
        "{failed}"
    );
    assert_eq!(
        colon_sample(&failed, "gitlab_sli:shell_sshd_connections:errors_total"),
        Some(1.0),
        "{failed}"
    );
    assert_eq!(
        sample(
            &failed,
            "gitlab_shell_http_requests_total",
            &[("code", "500"), ("method", "post")]
        ),
        Some(3.0),
        "three attempts: {failed}"
    );
    assert!(
        w.server.log().contains("connection: session error"),
        "{}",
        w.server.log()
    );
}

/// The `grpc_client_*` series after two clones (`again` is the scrape after them), then a push
/// and a clone whose Gitaly cannot be dialled, counted as go-grpc-prometheus's client
/// interceptors count them: once per call, a unary call with one message sent and none
/// received unless it fails, a bidi call per message, Go's code names.
/// See: docs/gitlab-sshd.md, "Probes and metrics".
fn grpc_client_metrics_move(w: &World, work: &Path, again: &str) {
    let upload = [
        ("grpc_method", "SSHUploadPackWithSidechannel"),
        ("grpc_service", "gitaly.SSHService"),
        ("grpc_type", "unary"),
    ];
    let with_code = |labels: &[(&'static str, &'static str)], code: &'static str| {
        let mut l = labels.to_vec();
        l.push(("grpc_code", code));
        l
    };
    assert_eq!(
        sample(again, "grpc_client_started_total", &upload),
        Some(2.0),
        "{again}"
    );
    assert_eq!(
        sample(
            again,
            "grpc_client_handled_total",
            &with_code(&upload, "OK")
        ),
        Some(2.0),
        "{again}"
    );
    assert_eq!(
        sample(again, "grpc_client_msg_sent_total", &upload),
        Some(2.0),
        "{again}"
    );
    assert_eq!(
        sample(again, "grpc_client_msg_received_total", &upload),
        None,
        "a successful unary call counts no message received: {again}"
    );

    let one = work.join("one");
    w.ok(&w
        .git(&one)
        .args(["commit", "--allow-empty", "-m", "grpc metrics"])
        .run());
    w.ok(&w.git(&one).args(["push", "origin", "HEAD:main"]).run());
    let pushed = w.server.get("/metrics").1;
    let receive = [
        ("grpc_method", "SSHReceivePack"),
        ("grpc_service", "gitaly.SSHService"),
        ("grpc_type", "bidi_stream"),
    ];
    assert_eq!(
        sample(&pushed, "grpc_client_started_total", &receive),
        Some(1.0),
        "{pushed}"
    );
    assert_eq!(
        sample(
            &pushed,
            "grpc_client_handled_total",
            &with_code(&receive, "OK")
        ),
        Some(1.0),
        "{pushed}"
    );
    for name in [
        "grpc_client_msg_sent_total",
        "grpc_client_msg_received_total",
    ] {
        assert!(
            sample(&pushed, name, &receive).unwrap_or(0.0) >= 2.0,
            "{name}: the first message and at least one more: {pushed}"
        );
    }

    // `/allowed` names a Gitaly nobody listens on: the call fails as Unavailable.
    let gone = format!(
        "unix:{}",
        w.sandbox.work_dir("nowhere").join("gitaly.sock").display()
    );
    let body = serde_json::json!({
        "status": true, "gl_repository": "project-1", "gl_project_path": "group/open",
        "gl_id": "user-1", "gl_username": "alice",
        "gitaly": {
            "repository": {"storage_name": "default", "relative_path": "group/open.git",
                "gl_repository": "project-1", "gl_project_path": "group/open"},
            "address": gone, "token": ""
        }
    });
    w.sandbox.api().set_fault_times(
        "/api/v4/internal/allowed",
        test_support::stub_api::Fault::Status(200, body.to_string()),
        1,
    );
    let run = w.git(work).args(["clone", &w.url(), "unavailable"]).run();
    assert_ne!(run.code, 0, "{run}");
    let failed = w.server.get("/metrics").1;
    assert_eq!(
        sample(
            &failed,
            "grpc_client_handled_total",
            &with_code(&upload, "Unavailable")
        ),
        Some(1.0),
        "{failed}"
    );
    assert_eq!(
        sample(&failed, "grpc_client_started_total", &upload),
        Some(3.0),
        "{failed}"
    );
    assert_eq!(
        sample(&failed, "grpc_client_msg_received_total", &upload),
        Some(1.0),
        "a failed unary call counts one message received: {failed}"
    );
}

/// The `access: finish` line: one per connection, after `server: handleConn: done`, with the
/// connection's `correlation_id` and `remote_addr`, `duration_s`, and the stdout bytes and
/// project (`meta`, from `/allowed`) of the connection's last session if it succeeded; `{}`
/// and 0 for a connection that never ran a command, one refused, and a failed login. Read from
/// the server's log (stderr, `log_file: ""`).
/// See: docs/gitlab-sshd.md, "Logs".
#[test]
fn access_finish_line_once_per_connection() {
    let fixture = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/open
    id: 1
    root_namespace_id: 9
    members: { alice: admin }
"#;
    let mut builder = Sandbox::builder("sshd-access").fixture_yaml(fixture);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder.seed("group/open", seed()).build();
    write_config(&sandbox, "");
    let server = start(sandbox.root());
    let w = World {
        sandbox,
        server,
        alice,
    };
    // The `access: finish` line of the connection that logged `server: handleConn: start`
    // after the first `skip` connections; waits for it (it comes after the client is gone).
    let finish_of = |skip: usize| -> serde_json::Value {
        let started = Instant::now();
        loop {
            let lines = w.server.lines();
            let ids: Vec<String> = lines
                .iter()
                .filter(|l| l["msg"] == "server: handleConn: start")
                .filter_map(|l| l["correlation_id"].as_str().map(str::to_owned))
                .collect();
            if let Some(id) = ids.get(skip) {
                let finishes: Vec<&serde_json::Value> = lines
                    .iter()
                    .filter(|l| l["msg"] == "access: finish" && l["correlation_id"] == *id)
                    .collect();
                assert!(
                    finishes.len() <= 1,
                    "one line per connection\n{}",
                    w.server.log()
                );
                if let Some(f) = finishes.first() {
                    let done = lines.iter().position(|l| {
                        l["msg"] == "server: handleConn: done" && l["correlation_id"] == *id
                    });
                    let at = lines.iter().position(|l| l == *f);
                    assert!(done < at, "after handleConn: done\n{}", w.server.log());
                    return (*f).clone();
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no access: finish for connection {skip}\n{}",
                w.server.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    };
    let empty = serde_json::json!({});
    let work = w.sandbox.work_dir("clones");

    // 0: a clone.
    w.ok(&w.git(&work).args(["clone", &w.url(), "one"]).run());
    let line = finish_of(0);
    let meta = if foreign() {
        // Go 14.35 logs no ids (`gl_project_id` and `gl_root_namespace_id` reach the line in
        // later versions; 14.56 logs them).
        serde_json::json!({"project": "group/open", "root_namespace": "group"})
    } else {
        serde_json::json!({"project": "group/open", "root_namespace": "group",
            "project_id": 1, "root_namespace_id": 9})
    };
    assert_eq!(line["meta"], meta, "{line}");
    assert!(line["written_bytes"].as_u64().unwrap_or(0) > 0, "{line}");
    assert!(line["duration_s"].as_f64().unwrap_or(0.0) > 0.0, "{line}");
    assert_eq!(line["level"], "info");
    assert!(
        line["remote_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{line}"
    );

    // 1: the welcome: its 27 bytes, no project.
    let run = w.ssh().run();
    w.ok(&run);
    let line = finish_of(1);
    assert_eq!(line["written_bytes"], 27, "{line}");
    assert_eq!(line["meta"], empty, "{line}");

    // 2: a refused command.
    let run = w.ssh().arg("nonsense").run();
    assert_eq!(run.code, 128, "{run}");
    let line = finish_of(2);
    assert_eq!(
        (&line["written_bytes"], &line["meta"]),
        (&0.into(), &empty),
        "{line}"
    );

    // 3: a connection that only authenticates.
    let mut idle = Command::new("ssh")
        .args(ssh_options(w.server.addr.port(), &w.alice.private_key))
        .arg("-N")
        .arg(format!("{}@127.0.0.1", current_user()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let authenticated = || {
        w.server
            .lines()
            .iter()
            .filter(|l| l["msg"] == "public key authentication")
            .count()
            >= 4
    };
    while !authenticated() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{}",
            w.server.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    // Let the signature round trip finish before the client goes.
    thread::sleep(Duration::from_millis(500));
    let _ = idle.kill();
    let _ = idle.wait();
    let line = finish_of(3);
    assert_eq!(
        (&line["written_bytes"], &line["meta"]),
        (&0.into(), &empty),
        "{line}"
    );

    // 4: an unknown key: refused, and still one line.
    let stranger = keygen(&w.sandbox.work_dir("keys"), "stranger");
    let run = w.ssh_as(&current_user(), &stranger).run();
    assert_eq!(run.code, 255, "{run}");
    let line = finish_of(4);
    assert_eq!(
        (&line["written_bytes"], &line["meta"]),
        (&0.into(), &empty),
        "{line}"
    );

    // 5: several sessions on one connection: the last to end decides (here the welcome after
    // a clone).
    let control = w.sandbox.work_dir("ctl").join("c");
    let mux = [
        "-o".to_owned(),
        "ControlMaster=auto".to_owned(),
        "-o".to_owned(),
        format!("ControlPath={}", control.display()),
        "-o".to_owned(),
        "ControlPersist=30".to_owned(),
    ];
    let mut ssh_command = String::from("ssh");
    for o in mux
        .iter()
        .cloned()
        .chain(ssh_options(w.server.addr.port(), &w.alice.private_key))
    {
        ssh_command.push(' ');
        ssh_command.push_str(&o);
    }
    w.ok(&w
        .git(&work)
        .env("GIT_SSH_COMMAND", &ssh_command)
        .args(["clone", &w.url(), "mux"])
        .run());
    w.ok(&w.ssh().args(&mux).run());
    let _ = w.ssh().args(&mux).args(["-O", "exit"]).run();
    let line = finish_of(5);
    assert_eq!(line["written_bytes"], 27, "{line}");
    assert_eq!(line["meta"], empty, "{line}");
}
