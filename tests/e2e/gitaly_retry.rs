//! `retry_config` from `/allowed` (GitLab Shell 14.46+, docs/gitaly.md §8) through real `git`
//! and a real `sshd`: a clone succeeds because of the policy when Gitaly answers UNAVAILABLE
//! once or drops the first connection (restarting), and fails with GitLab Shell's Unavailable
//! message without it. (A Gitaly not listening yet at the first dial: the command-level test
//! `upload_pack::tests::retry_config_retries_a_gitaly_that_is_down_at_first`.) That
//! nothing is retried once output reached the user is proven in-process
//! (`crates/gitaly-client/tests/integration.rs`: a Gitaly that fails after output sees one call).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use test_support::dev_gitaly::{DevGitaly, Listen, Options};
use test_support::sandbox::DEFAULT_GITALY_TOKEN;
use test_support::{ClientKey, Commit, GitalyKind, Run, Sandbox, Sshd};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/repo
    id: 1
    members: { alice: admin }
"#;

const UNAVAILABLE: &str = "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.";

/// GitLab's policy shape, with backoffs short enough for a test: 0.2 s, 0.4 s, 0.5 s, 0.5 s.
fn policy() -> serde_json::Value {
    serde_json::json!({
        "maxAttempts": 5, "initialBackoff": "0.2s", "maxBackoff": "0.5s",
        "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"],
    })
}

struct World {
    sandbox: Sandbox,
    sshd: Sshd,
    alice: ClientKey,
}

fn world(name: &str, kind: GitalyKind) -> World {
    let mut builder = Sandbox::builder(name)
        .fixture_yaml(FIXTURE)
        .gitaly_kind(kind);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder
        .seed(
            "group/repo",
            vec![Commit::new("main", "first\n", "README.md", "hello\n")],
        )
        .build();
    let sshd = sandbox.sshd();
    World {
        sandbox,
        sshd,
        alice,
    }
}

impl World {
    fn set_policy(&self, policy: Option<serde_json::Value>) {
        self.sandbox.api().update_fixture(|f| {
            for p in &mut f.projects {
                p.retry_config = policy.clone();
            }
        });
    }

    /// `git clone` of `group/repo` through sshd into a fresh folder.
    fn clone(&self, dir: &str) -> Run {
        let work = self.sandbox.work_dir("clones");
        self.sandbox
            .git_via(&self.sshd, &self.alice)
            .current_dir(&work)
            .args(["clone", &self.sshd.git_url("group/repo.git"), dir])
            .timeout(Duration::from_secs(60))
            .run()
    }

    fn clone_ok(&self, dir: &str) {
        let run = self.clone(dir);
        run.assert_success();
        let readme = self.sandbox.work_dir("clones").join(dir).join("README.md");
        assert_eq!(
            std::fs::read_to_string(&readme).unwrap_or_default(),
            "hello\n",
            "{run}"
        );
    }

    /// A clone that fails with GitLab Shell's framed Unavailable message.
    fn clone_unavailable(&self, dir: &str) {
        let run = self.clone(dir);
        run.assert_code(128)
            .assert_stderr_contains(format!("remote: {UNAVAILABLE}\n"))
            .assert_stderr_contains("fatal: Could not read from remote repository.");
    }

    /// A dev Gitaly on the sandbox's storage that answers its first `n` calls UNAVAILABLE;
    /// `/allowed` points at it.
    fn flaky_gitaly(&self, n: u32, socket_dir: &Path) -> DevGitaly {
        let mut options = Options::new(self.sandbox.storage());
        options.listen = Listen::Unix(socket_dir.join(format!("flaky-{n}.sock")));
        // Clones only: the push hooks never run.
        options.hook_binary = Some(PathBuf::from("/bin/true"));
        options.unavailable_first = n;
        let gitaly = DevGitaly::start(options).unwrap();
        self.sandbox.api().set_gitaly(gitaly.address(), "");
        gitaly
    }
}

#[test]
fn a_gitaly_answering_unavailable_once_is_retried_with_retry_config() {
    let w = world("retry-unavailable", GitalyKind::Dev);
    let sockets = tempfile::Builder::new()
        .prefix("gsr")
        .tempdir_in("/tmp")
        .unwrap();

    w.set_policy(Some(policy()));
    let _gitaly = w.flaky_gitaly(1, sockets.path());
    w.clone_ok("with-policy");
    let log = w.sandbox.log();
    assert!(
        log.contains("Gitaly call failed; retrying as retry_config says"),
        "{log}"
    );

    // Without the policy the first answer is the user's: the framed Unavailable message.
    w.set_policy(None);
    let _gitaly = w.flaky_gitaly(1, sockets.path());
    w.clone_unavailable("without-policy");

    // A malformed policy is logged and ignored.
    w.set_policy(Some(serde_json::json!({"maxAttempts": "many"})));
    let _gitaly = w.flaky_gitaly(1, sockets.path());
    w.clone_unavailable("malformed-policy");
    let log = w.sandbox.log();
    let line = log
        .lines()
        .find(|l| l.contains("failed to unmarshal retry policy"))
        .unwrap_or_else(|| panic!("no log line for the malformed policy in {log}"));
    assert!(line.contains(r#""level":"error""#), "{line}");
}

#[test]
fn a_gitaly_restarting_at_the_first_dial_is_reached_with_retry_config() {
    a_gitaly_restarting_at_the_first_dial_on(GitalyKind::from_env());
}

pub(crate) fn a_gitaly_restarting_at_the_first_dial_on(kind: GitalyKind) {
    let w = world("retry-restart", kind);
    let gitaly_socket = w
        .sandbox
        .gitaly()
        .map(|g| g.address())
        .unwrap_or_default()
        .trim_start_matches("unix:")
        .to_owned();

    w.set_policy(Some(policy()));
    let restarting = Restarting::start(PathBuf::from(&gitaly_socket));
    w.sandbox
        .api()
        .set_gitaly(restarting.address(), DEFAULT_GITALY_TOKEN);
    w.clone_ok("with-policy");

    w.set_policy(None);
    let restarting = Restarting::start(PathBuf::from(&gitaly_socket));
    w.sandbox
        .api()
        .set_gitaly(restarting.address(), DEFAULT_GITALY_TOKEN);
    w.clone_unavailable("without-policy");
}

/// A TCP front for the Gitaly socket that closes its first connection at once (a Gitaly going
/// through a restart), then forwards every further connection to the Gitaly.
struct Restarting {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Restarting {
    fn start(target: PathBuf) -> Restarting {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let mut first = true;
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) if std::mem::take(&mut first) => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = UnixStream::connect(&target) {
                            forward(client, server);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Restarting { port, stop }
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Copies both ways until either side closes, then closes both.
fn forward(client: TcpStream, server: UnixStream) {
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let close = move |c: &TcpStream, s: &UnixStream| {
        let _ = c.shutdown(Shutdown::Both);
        let _ = s.shutdown(Shutdown::Both);
    };
    std::thread::spawn(move || {
        copy(&client, &server);
        close(&client, &server);
    });
    std::thread::spawn(move || {
        copy(&server2, &client2);
        close(&client2, &server2);
    });
}

fn copy(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}
