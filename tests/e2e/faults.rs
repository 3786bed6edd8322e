//! Fault injection (issue 5 §3, §4): broken neighbours give GitLab Shell's message within a
//! bounded time, never a hang, and a push cut at any point loses nothing.
//!
//! Internal API: down, refusing, slower than `read_timeout`, 500, garbage and truncated JSON,
//! a 100 MB body. Gitaly: down, wrong token, the connection reset mid-clone and mid-push (a
//! byte-counting TCP proxy in front of the dev Gitaly). Local: unwritable log file, unreadable
//! config. Pushes are killed on the client, in `gitlab-shell` and in the dev Gitaly's `git`;
//! each time the server's refs are exactly as before, `git fsck` is clean and no `git` or
//! `gitlab-shell` process is left.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use test_support::sandbox::DEFAULT_GITALY_TOKEN;
use test_support::stub_api::Fault;
use test_support::{Cmd, Commit, GitalyKind, Run, Sandbox, procs};

use crate::secrets_scan::assert_log_clean;
use crate::shell_commands::framed;

const UNREACHABLE: &str = "Internal API unreachable";
const GITALY_DOWN: &str = "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.";

fn sandbox(name: &str, extra: &str) -> Sandbox {
    sandbox_on(name, extra, GitalyKind::from_env())
}

/// [`sandbox`] with the `kind` Gitaly.
fn sandbox_on(name: &str, extra: &str, kind: GitalyKind) -> Sandbox {
    Sandbox::builder(name)
        .gitaly_kind(kind)
        .fixture_yaml(crate::hostile_inputs::FIXTURE)
        .config_extra(extra)
        .seed(
            "group/repo",
            vec![Commit::new("main", "first", "README.md", "hello\n")],
        )
        .build()
}

/// Runs `cmd` and asserts it ended within `bound`.
#[track_caller]
fn timed(cmd: Cmd, bound: Duration) -> Run {
    let start = Instant::now();
    let run = cmd.timeout(bound + Duration::from_secs(30)).run();
    let took = start.elapsed();
    assert!(took <= bound, "took {took:?} (bound {bound:?})\n{run}");
    run
}

fn upload_pack(s: &Sandbox) -> Cmd {
    s.shell(&["key-1"], Some("git-upload-pack group/repo"))
        .stdin(&b"0000"[..])
}

#[test]
fn internal_api_down_refusing_slow_500_garbage_and_huge() {
    // read_timeout 1 s: three attempts of ≤ 1 s plus the 1 s and 2 s retry waits.
    let s = sandbox("faults-api", "http_settings:\n  read_timeout: 1\n");
    let bound = Duration::from_secs(12);
    let api = s.api();

    // 500 on every attempt: retried three times, then unreachable (the message is lost).
    api.set_fault(
        "/api/v4/internal/allowed",
        Fault::Status(500, r#"{"message":"boom"}"#.into()),
    );
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed(UNREACHABLE));
    assert_eq!(api.requests_to("/allowed").len(), 3);
    api.clear_faults();
    api.clear_requests();

    // Slower than read_timeout on every attempt.
    api.set_fault(
        "/api/v4/internal/allowed",
        Fault::Delay(Duration::from_secs(20)),
    );
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed(UNREACHABLE));
    api.clear_faults();

    // Slow once, then fine: the retry succeeds.
    api.set_fault_times(
        "/api/v4/internal/discover",
        Fault::Delay(Duration::from_secs(20)),
        1,
    );
    timed(s.shell(&["key-1"], None), bound)
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n");
    api.clear_faults();

    // Connection closed without an answer.
    api.set_fault("/api/v4/internal/discover", Fault::CloseConnection);
    timed(s.shell(&["key-1"], None), bound)
        .assert_code(1)
        .assert_stderr(framed(&format!("Failed to get username: {UNREACHABLE}")));
    api.clear_faults();

    // Refusals are shown as the API words them, unframed bodies by status.
    api.set_fault(
        "/api/v4/internal/allowed",
        Fault::Status(401, r#"{"message":"Access denied by the API"}"#.into()),
    );
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed("Access denied by the API"));
    api.clear_faults();
    api.set_fault(
        "/api/v4/internal/allowed",
        Fault::Status(404, "not json".into()),
    );
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed("Internal API error (404)"));
    api.clear_faults();

    // Garbage, truncated and huge 200 bodies: parsing failed.
    for body in [
        b"<html>oops</html>".to_vec(),
        br#"{"status":true,"gl_repository":"project-1","gitaly":{"#.to_vec(),
        b"\xff\xfe\x00garbage".to_vec(),
        br#"{"status":"yes"}"#.to_vec(),
        vec![b'x'; 100 << 20],
    ] {
        api.set_fault("/api/v4/internal/allowed", Fault::Body(body));
        timed(upload_pack(&s), bound)
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed("parsing failed"));
    }
    api.clear_faults();
    // After all that, the same binary works.
    timed(upload_pack(&s), bound)
        .assert_success()
        .assert_stdout_contains("refs/heads/main");
    assert_log_clean(&s.log(), &[]);
}

#[test]
fn internal_api_not_listening() {
    let s = sandbox("faults-api-down", "");
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let config = std::fs::read_to_string(s.root().join("config.yml")).unwrap_or_default();
    let config = config
        .lines()
        .map(|l| {
            if l.starts_with("gitlab_url:") {
                format!("gitlab_url: \"http://127.0.0.1:{port}\"")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    s.write_config(&config);
    let bound = Duration::from_secs(8);
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed(UNREACHABLE));
    timed(s.shell(&["key-1"], None), bound)
        .assert_code(1)
        .assert_stderr(framed(&format!("Failed to get username: {UNREACHABLE}")));
    s.write_config(&config.replace(
        &format!("http://127.0.0.1:{port}"),
        "http+unix:///nonexistent/gitlab.socket",
    ));
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed(UNREACHABLE));
}

#[test]
fn gitaly_down_and_wrong_token() {
    gitaly_down_and_wrong_token_on(GitalyKind::from_env());
}

pub(crate) fn gitaly_down_and_wrong_token_on(kind: GitalyKind) {
    let s = sandbox_on("faults-gitaly", "", kind);
    let bound = Duration::from_secs(20);
    let real = s.gitaly().map(|g| g.address()).unwrap_or_default();
    s.api()
        .set_gitaly("unix:/nonexistent/gitaly.sock", DEFAULT_GITALY_TOKEN);
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed(GITALY_DOWN));
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    s.api()
        .set_gitaly(format!("tcp://127.0.0.1:{port}"), DEFAULT_GITALY_TOKEN);
    timed(
        s.shell(&["key-1"], Some("git-receive-pack group/repo"))
            .stdin(&b"0000"[..]),
        bound,
    )
    .assert_code(1)
    .assert_stderr(framed(GITALY_DOWN));

    s.api().set_gitaly(&real, "not-the-gitaly-token");
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed(
            "rpc error: code = PermissionDenied desc = permission denied",
        ));
    s.api().set_gitaly(&real, "");
    timed(upload_pack(&s), bound)
        .assert_code(1)
        .assert_stderr(framed(
            "rpc error: code = Unauthenticated desc = authentication required",
        ));
    assert_log_clean(&s.log(), &["not-the-gitaly-token"]);
}

#[test]
fn unwritable_log_file_and_unreadable_config() {
    let s = sandbox("faults-local", "");
    let config = std::fs::read_to_string(s.root().join("config.yml")).unwrap_or_default();
    // The log path is a directory: the command still runs and says nothing about it.
    let log_dir = s.root().join("log-is-a-dir");
    std::fs::create_dir_all(&log_dir).unwrap_or_default();
    let with_log = |path: &str| {
        config
            .lines()
            .map(|l| {
                if l.starts_with("log_file:") {
                    format!("log_file: \"{path}\"")
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    for path in [
        log_dir.display().to_string(),
        "/nonexistent/dir/gitlab-shell.log".to_owned(),
        "/proc/version".to_owned(),
    ] {
        s.write_config(&with_log(&path));
        timed(s.shell(&["key-1"], None), Duration::from_secs(10))
            .assert_success()
            .assert_stdout("Welcome to GitLab, @alice!\n");
        timed(upload_pack(&s), Duration::from_secs(10))
            .assert_success()
            .assert_stdout_contains("refs/heads/main");
    }

    // Config that cannot be parsed: one unframed line, exit 1, nothing else.
    s.write_config("gitlab_url: [unclosed\n");
    let run = timed(s.shell(&["key-1"], None), Duration::from_secs(10));
    run.assert_code(1).assert_stdout("");
    assert!(
        run.stderr_str()
            .starts_with("Failed to read config, exiting: yaml: ")
            && run.stderr_str().ends_with('\n')
            && run.stderr_str().lines().count() == 1,
        "{run}"
    );
    s.write_config(&format!("{config}\nsecret_file: /nonexistent/secret\n"));
    timed(s.shell(&["key-1"], None), Duration::from_secs(10))
        .assert_code(1)
        .assert_stderr(
            "Failed to read config, exiting: open /nonexistent/secret: no such file or directory\n",
        );
}

/// Go reads the config with `os.ReadFile`: opening a directory succeeds, the read fails, and
/// the `*PathError` says `read <path>: is a directory`.
#[test]
fn config_that_is_a_directory_is_a_read_error() {
    let s = sandbox("faults-config-dir", "");
    let cfg = s.root().join("config.yml");
    let _ = std::fs::remove_file(&cfg);
    std::fs::create_dir_all(&cfg).unwrap_or_default();
    timed(s.shell(&["key-1"], None), Duration::from_secs(10))
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(format!(
            "Failed to read config, exiting: read {}: is a directory\n",
            cfg.display()
        ));
}

// ---- a Gitaly connection that dies mid-stream ----

/// A TCP proxy to a unix-socket Gitaly that resets every connection once `limit` bytes have
/// gone in the chosen direction (`upstream`: client → Gitaly).
struct CuttingProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    moved: Arc<AtomicU64>,
}

impl CuttingProxy {
    fn start(target: &Path, upstream: bool, limit: u64) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let moved = Arc::new(AtomicU64::new(0));
        let (stop2, moved2, target) = (stop.clone(), moved.clone(), target.to_path_buf());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = UnixStream::connect(&target) {
                            pump_pair(client, server, upstream, limit, moved2.clone());
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        CuttingProxy { port, stop, moved }
    }

    fn address(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn pump_pair(
    client: TcpStream,
    server: UnixStream,
    upstream: bool,
    limit: u64,
    moved: Arc<AtomicU64>,
) {
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let cut = Arc::new(AtomicBool::new(false));
    let kill = Arc::new((client.try_clone().ok(), server.try_clone().ok()));
    let kill2 = kill.clone();
    let (cut1, cut2, moved1) = (cut.clone(), cut.clone(), moved.clone());
    std::thread::spawn(move || {
        pump(
            client,
            s2,
            if upstream { Some(limit) } else { None },
            &moved1,
            &cut1,
        );
        shut(&kill);
    });
    std::thread::spawn(move || {
        pump(
            server,
            c2,
            if upstream { None } else { Some(limit) },
            &moved,
            &cut2,
        );
        shut(&kill2);
    });
}

fn shut(pair: &(Option<TcpStream>, Option<UnixStream>)) {
    if let Some(c) = &pair.0 {
        let _ = c.shutdown(Shutdown::Both);
    }
    if let Some(s) = &pair.1 {
        let _ = s.shutdown(Shutdown::Both);
    }
}

fn pump(
    mut from: impl Read,
    mut to: impl Write,
    limit: Option<u64>,
    moved: &AtomicU64,
    cut: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    loop {
        if cut.load(Ordering::SeqCst) {
            return;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n as u64 >= l => {
                let part = (l - sent) as usize;
                let _ = to.write_all(&buf[..part]);
                moved.fetch_add(part as u64, Ordering::SeqCst);
                cut.store(true, Ordering::SeqCst);
                return;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        sent += n as u64;
        moved.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// A `GIT_SSH_COMMAND` that runs `gitlab-shell key-1` exactly as sshd's forced command would.
fn direct_ssh(s: &Sandbox) -> PathBuf {
    let script = s.root().join("work/direct-ssh");
    let body = format!(
        "#!/bin/sh\n# git calls: <this> [options] host command\nfor last; do :; done\n\
         exec env SSH_CONNECTION='127.0.0.1 50000 127.0.0.1 22' SSH_ORIGINAL_COMMAND=\"$last\" '{}' key-1\n",
        s.bin("gitlab-shell").display()
    );
    let _ = std::fs::create_dir_all(s.root().join("work"));
    std::fs::write(&script, body).expect("write wrapper");
    let _ = std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    script
}

fn git_direct(s: &Sandbox, dir: &Path) -> Cmd {
    s.git()
        .git()
        .current_dir(dir)
        .env("GIT_SSH_COMMAND", direct_ssh(s))
        .env("GIT_SSH_VARIANT", "ssh")
}

const URL: &str = "ssh://git@localhost/group/repo.git";

/// The server repository is intact: same refs as `before`, `git fsck` clean, and no `git`
/// or `gitlab-shell` process of this sandbox left.
#[track_caller]
fn assert_intact(s: &Sandbox, before: &[(String, String)]) {
    let left = procs::wait_until_gone(s.storage(), "git", Duration::from_secs(20));
    assert!(left.is_empty(), "git processes left behind: {left:#?}");
    let shells = procs::wait_until_gone(
        &s.root().join("bin"),
        "gitlab-shell",
        Duration::from_secs(20),
    );
    assert!(shells.is_empty(), "gitlab-shell left behind: {shells:#?}");
    let repo = s.repo_path("group/repo");
    assert_eq!(s.git().refs(&repo), before, "refs changed");
    s.git()
        .at(&repo)
        .args(["fsck", "--no-progress", "--no-dangling"])
        .run()
        .assert_success();
}

/// A clone of group/repo with a fresh 8 MiB incompressible commit on main, ready to push.
fn prepared_push(s: &Sandbox, name: &str) -> PathBuf {
    let work = s.work_dir(name);
    git_direct(s, &work)
        .args(["clone", "--quiet", URL, "repo"])
        .run()
        .assert_success();
    let dir = work.join("repo");
    let seed = name
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    std::fs::write(
        dir.join("big.bin"),
        test_support::random_bytes(seed, 8 << 20),
    )
    .expect("write big file");
    s.git()
        .git()
        .current_dir(&dir)
        .args(["add", "big.bin"])
        .run()
        .assert_success();
    s.git()
        .git()
        .current_dir(&dir)
        .args(["commit", "--quiet", "-m", "big"])
        .run()
        .assert_success();
    dir
}

#[test]
fn gitaly_connection_reset_mid_clone_and_mid_push() {
    gitaly_connection_reset_mid_clone_and_mid_push_on(GitalyKind::from_env());
}

pub(crate) fn gitaly_connection_reset_mid_clone_and_mid_push_on(kind: GitalyKind) {
    let s = Sandbox::builder("faults-reset")
        .gitaly_kind(kind)
        .fixture_yaml(crate::hostile_inputs::FIXTURE)
        .seed(
            "group/repo",
            vec![Commit::new(
                "main",
                "big",
                "big.bin",
                test_support::random_bytes(7, 6 << 20),
            )],
        )
        .build();
    let real = s.gitaly().map(|g| g.address()).unwrap_or_default();
    let socket = PathBuf::from(real.trim_start_matches("unix:"));
    let before = s.git().refs(&s.repo_path("group/repo"));
    let bound = Duration::from_secs(60);

    // Mid-clone: Gitaly → client stream cut after 1 MiB.
    let proxy = CuttingProxy::start(&socket, false, 1 << 20);
    s.api().set_gitaly(proxy.address(), DEFAULT_GITALY_TOKEN);
    let work = s.work_dir("reset-clone");
    let run = timed(git_direct(&s, &work).args(["clone", URL, "c1"]), bound);
    run.assert_failure()
        .assert_stderr_contains(framed(GITALY_DOWN));
    assert!(!run.stderr_str().contains("panicked"), "{run}");
    assert!(proxy.moved.load(Ordering::SeqCst) >= 1 << 20);
    drop(proxy);
    assert_intact(&s, &before);

    // Mid-push: client → Gitaly stream cut after 2 MiB of the pack.
    s.api().set_gitaly(&real, DEFAULT_GITALY_TOKEN);
    let dir = prepared_push(&s, "reset-push");
    let proxy = CuttingProxy::start(&socket, true, 2 << 20);
    s.api().set_gitaly(proxy.address(), DEFAULT_GITALY_TOKEN);
    let run = timed(git_direct(&s, &dir).args(["push", "origin", "main"]), bound);
    run.assert_failure()
        .assert_stderr_contains(framed(GITALY_DOWN));
    assert!(!run.stderr_str().contains("panicked"), "{run}");
    drop(proxy);
    assert_intact(&s, &before);
    assert_log_clean(&s.log(), &[]);
}

/// A `GIT_SSH_COMMAND` like [`direct_ssh`] whose client → server stream stalls after `limit`
/// bytes, so a kill reliably lands mid-pack.
fn stalling_ssh(s: &Sandbox, limit: u64) -> PathBuf {
    let script = s.root().join(format!("work/stalling-ssh-{limit}"));
    let body = format!(
        "#!/bin/sh\nfor last; do :; done\n\
         {{ head -c {limit}; sleep 30; }} | env SSH_CONNECTION='127.0.0.1 50000 127.0.0.1 22' \
         SSH_ORIGINAL_COMMAND=\"$last\" '{}' key-1\n",
        s.bin("gitlab-shell").display()
    );
    let _ = std::fs::create_dir_all(s.root().join("work"));
    std::fs::write(&script, body).expect("write wrapper");
    let _ = std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755));
    script
}

/// Where a push is killed.
#[derive(Clone, Copy, Debug)]
enum Victim {
    /// The client (`git push` and its ssh command, gitlab-shell with them).
    Client,
    /// Only `gitlab-shell` (SIGKILL).
    Shell,
    /// The dev Gitaly's `git receive-pack` (SIGKILL).
    GitalyGit,
}

/// Pushes an 8 MiB commit whose stream stalls after `limit` bytes, kills `victim` while the
/// server is receiving, then checks the server is untouched and nothing is left running.
fn push_killed(s: &Sandbox, victim: Victim, limit: u64) {
    let before = s.git().refs(&s.repo_path("group/repo"));
    let dir = prepared_push(s, &format!("kill-{victim:?}-{limit}"));
    let mut push = s
        .git()
        .git()
        .current_dir(&dir)
        .env("GIT_SSH_COMMAND", stalling_ssh(s, limit))
        .env("GIT_SSH_VARIANT", "ssh")
        .args(["push", "origin", "main"])
        .timeout(Duration::from_secs(60))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while procs::processes_under(s.storage(), "receive-pack").is_empty() {
        assert!(Instant::now() < deadline, "receive-pack never started");
        assert!(push.is_running(), "the push ended before the kill");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the stream run up to the stall.
    std::thread::sleep(Duration::from_millis(300));
    let (name, dir_of) = match victim {
        Victim::Client => ("", PathBuf::new()),
        Victim::Shell => ("gitlab-shell", s.root().join("bin")),
        Victim::GitalyGit => ("receive-pack", s.storage().to_path_buf()),
    };
    if !name.is_empty() {
        let found = procs::processes_under(&dir_of, name);
        assert!(!found.is_empty(), "no {name} to kill");
        for p in found {
            let _ = Cmd::new("kill").args(["-KILL", &p.pid.to_string()]).run();
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    push.kill_group();
    let run = push.wait();
    assert!(!run.stderr_str().contains("panicked"), "{run}");
    assert_intact(s, &before);
    let new = s.git().rev_parse(&dir, "HEAD").unwrap_or_default();
    s.git()
        .at(&s.repo_path("group/repo"))
        .args(["cat-file", "-e", &new])
        .run()
        .assert_failure();
}

#[test]
fn push_killed_in_client_gitlab_shell_or_gitaly_git_loses_nothing() {
    push_killed_in_client_gitlab_shell_or_gitaly_git_loses_nothing_on(GitalyKind::from_env());
}

pub(crate) fn push_killed_in_client_gitlab_shell_or_gitaly_git_loses_nothing_on(kind: GitalyKind) {
    let s = sandbox_on("faults-kill", "", kind);
    push_killed(&s, Victim::Client, 1 << 20);
    push_killed(&s, Victim::Shell, 64 << 10);
    push_killed(&s, Victim::Shell, 4 << 20);
    push_killed(&s, Victim::GitalyGit, 2 << 20);
    assert_log_clean(&s.log(), &[]);
}
