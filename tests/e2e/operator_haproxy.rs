//! Several GitLab Shell nodes behind HAProxy: `support/haproxy.cfg.example` rendered for
//! 127.0.0.1, Debian's `/usr/sbin/haproxy` in TCP mode in front of two private sshd nodes (same
//! GitLab Shell root, hence the same stub API and dev Gitaly, and the same host key). Clones and
//! pushes go through HAProxy and land on both nodes; with one node stopped mid-test, new sessions
//! still succeed and the health check marks the node down.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use test_support::paths::current_user;
use test_support::sshd::free_port;
use test_support::{ClientKey, Cmd, Commit, Run, Sandbox, Spawned};

const HAPROXY: &str = "/usr/sbin/haproxy";
const TEMPLATE: &str = include_str!("../../support/haproxy.cfg.example");

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/open
    id: 1
    members: { alice: admin }
"#;

/// A running HAProxy (killed on drop) and its admin socket.
struct Haproxy {
    _process: Spawned,
    port: u16,
    stats_socket: PathBuf,
    config: String,
}

impl Haproxy {
    fn start(dir: &Path, nodes: [u16; 2]) -> Haproxy {
        let port = free_port();
        let stats_socket = dir.join("haproxy.sock");
        let config = TEMPLATE
            .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
            .replace("@NODE1@", &format!("127.0.0.1:{}", nodes[0]))
            .replace("@NODE2@", &format!("127.0.0.1:{}", nodes[1]))
            .replace("@STATS_SOCKET@", &stats_socket.display().to_string());
        for placeholder in ["@LISTEN@", "@NODE1@", "@NODE2@", "@STATS_SOCKET@"] {
            assert!(
                !config.contains(placeholder),
                "{placeholder} left:\n{config}"
            );
        }
        let path = dir.join("haproxy.cfg");
        fs::write(&path, &config).unwrap();
        Cmd::new(HAPROXY)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .run()
            .assert_success();
        let process = Cmd::new(HAPROXY)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .timeout(Duration::from_secs(600))
            .spawn();
        let haproxy = Haproxy {
            _process: process,
            port,
            stats_socket,
            config,
        };
        haproxy.wait_for("listening", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        haproxy
    }

    /// `(status, total sessions)` of `server` in the backend, from `show stat`.
    fn server(&self, server: &str) -> Option<(String, u64)> {
        let mut stream = UnixStream::connect(&self.stats_socket).ok()?;
        stream.write_all(b"show stat\n").ok()?;
        let mut csv = String::new();
        stream.read_to_string(&mut csv).ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (sv, status, stot) = (col("svname")?, col("status")?, col("stot")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.first() == Some(&"gitlab_shell_nodes") && f.get(sv) == Some(&server))
            .and_then(|f| Some((f.get(status)?.to_string(), f.get(stot)?.parse().ok()?)))
    }

    fn status(&self, server: &str) -> String {
        self.server(server).map(|s| s.0).unwrap_or_default()
    }

    fn sessions(&self, server: &str) -> u64 {
        self.server(server).map(|s| s.1).unwrap_or_default()
    }

    #[track_caller]
    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(
                Instant::now() < deadline,
                "haproxy: not {what} after 20s\n{}",
                self.config
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GIT_SSH_COMMAND` reaching the nodes through HAProxy with `key`.
    fn ssh_command(&self, key: &ClientKey) -> String {
        format!(
            "ssh -F /dev/null -i {} -p {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            key.private_key.display(),
            self.port
        )
    }
}

#[track_caller]
fn ok(run: &Run, sandbox: &Sandbox) {
    assert_eq!(
        run.code,
        0,
        "{run}\n--- gitlab-shell log ---\n{}",
        sandbox.log()
    );
}

#[test]
fn clones_and_pushes_through_haproxy_survive_a_node_going_down() {
    let mut builder = Sandbox::builder("op-haproxy").fixture_yaml(FIXTURE);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder
        .seed(
            "group/open",
            vec![Commit::new("main", "Initial\n", "README.md", "# hi\n")],
        )
        .build();
    // Two nodes: two sshd processes for the same GitLab Shell root (same host key, same API and
    // Gitaly), as two machines sharing one install would be.
    let node1 = sandbox.sshd();
    let node2 = sandbox.sshd();
    let dir = sandbox.work_dir("haproxy");
    let haproxy = Haproxy::start(&dir, [node1.port(), node2.port()]);
    haproxy.wait_for("seeing both nodes up", || {
        haproxy.status("node1") == "UP" && haproxy.status("node2") == "UP"
    });

    let url = format!("{}@127.0.0.1:group/open.git", current_user());
    let git = |cwd: &Path| {
        sandbox
            .git()
            .git()
            .env("GIT_SSH_COMMAND", haproxy.ssh_command(&alice))
            .current_dir(cwd)
    };
    let work = sandbox.work_dir("clones");
    for i in 0..4 {
        ok(
            &git(&work).args(["clone", &url, &format!("c{i}")]).run(),
            &sandbox,
        );
    }
    // Round robin: both nodes served sessions.
    assert!(
        haproxy.sessions("node1") >= 1,
        "{}",
        haproxy.sessions("node1")
    );
    assert!(
        haproxy.sessions("node2") >= 1,
        "{}",
        haproxy.sessions("node2")
    );

    let push = |clone: &Path, n: u32| {
        fs::write(clone.join(format!("f{n}.txt")), format!("{n}\n")).unwrap();
        ok(&git(clone).args(["add", "--all"]).run(), &sandbox);
        ok(
            &git(clone)
                .args(["commit", "--quiet", "-m", &format!("change {n}")])
                .run(),
            &sandbox,
        );
        ok(&git(clone).args(["push", "origin", "main"]).run(), &sandbox);
        let local = git(clone).args(["rev-parse", "HEAD"]).run();
        let server = sandbox
            .git()
            .rev_parse(&sandbox.repo_path("group/open"), "refs/heads/main");
        assert_eq!(
            Some(local.stdout_str().trim().to_owned()),
            server,
            "push {n}"
        );
    };
    let clone = work.join("c0");
    push(&clone, 1);
    push(&clone, 2);

    // Node 1 goes away mid-test: new sessions succeed at once (redispatch), before and after the
    // health check marks it down.
    drop(node1);
    for i in 3..6 {
        ok(
            &git(&clone).args(["pull", "--quiet", "--ff-only"]).run(),
            &sandbox,
        );
        push(&clone, i);
    }
    haproxy.wait_for("marking node1 down", || {
        haproxy.status("node1").starts_with("DOWN")
    });
    assert_eq!(haproxy.status("node2"), "UP");
    let before = haproxy.sessions("node2");
    ok(&git(&work).args(["clone", &url, "after"]).run(), &sandbox);
    push(&work.join("after"), 6);
    assert!(haproxy.sessions("node2") >= before + 2);
    drop(node2);
}
