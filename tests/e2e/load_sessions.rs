//! Load (issue 5 §6): 100 concurrent `gitlab-shell` sessions, as sshd runs them, against the
//! stub API (loopback TCP) and the dev Gitaly, for `GLS_LOAD_SECONDS` (5 s in the suite; `make
//! load` runs 60 s). Every session must succeed with the right output, no `git` or
//! `gitlab-shell` process may be left, and the test process (which hosts both servers) must
//! not leak file descriptors. Each session has a hard deadline, so the test always ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use test_support::{Commit, Sandbox, procs};

const SESSIONS: usize = 100;

#[expect(
    clippy::disallowed_methods,
    reason = "the duration knob of `make load`"
)]
fn seconds() -> u64 {
    std::env::var("GLS_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn load_100_concurrent_sessions() {
    let s = Sandbox::builder("load")
        .fixture_yaml(crate::hostile_inputs::FIXTURE)
        .seed(
            "group/repo",
            vec![Commit::new("main", "first", "README.md", "hello\n")],
        )
        .build();
    s.api().set_recording(false);
    let head = s
        .git()
        .rev_parse(&s.repo_path("group/repo"), "refs/heads/main")
        .unwrap_or_default();
    let fds_before = open_fds();
    let duration = Duration::from_secs(seconds());
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for worker in 0..SESSIONS {
            let (s, head, done, failures) = (&s, &head, &done, &failures);
            scope.spawn(move || {
                let mut round = 0usize;
                while start.elapsed() < duration {
                    let (command, stdin, want): (Option<&str>, &[u8], String) =
                        match (worker + round) % 3 {
                            0 => (None, b"", "Welcome to GitLab, @alice!\n".into()),
                            1 => (
                                Some("git-upload-pack group/repo"),
                                b"0000",
                                format!("{head} HEAD"),
                            ),
                            _ => (
                                Some("git-receive-pack group/repo"),
                                b"0000",
                                format!("{head} refs/heads/main"),
                            ),
                        };
                    let run = s
                        .shell(&["key-1"], command)
                        .stdin(stdin)
                        .timeout(Duration::from_secs(60))
                        .run();
                    if (run.code != 0 || !run.stdout_str().contains(&want))
                        && let Ok(mut f) = failures.lock()
                    {
                        f.push(format!("worker {worker} round {round}: {run}"));
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                    round += 1;
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let total = done.load(Ordering::SeqCst);
    let failures = failures.into_inner().unwrap_or_default();
    eprintln!(
        "load: {total} sessions by {SESSIONS} concurrent clients in {elapsed:.1?} ({:.0}/s), {} failures",
        total as f64 / elapsed.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} sessions failed; first: {}",
        failures.len(),
        failures.first().map(String::as_str).unwrap_or("")
    );
    assert!(total >= SESSIONS, "only {total} sessions ran");
    assert!(
        elapsed < duration + Duration::from_secs(90),
        "sessions ran {elapsed:?} past the {duration:?} window"
    );

    let left = procs::wait_until_gone(s.storage(), "git", Duration::from_secs(20));
    assert!(left.is_empty(), "git processes left: {left:#?}");
    let shells = procs::wait_until_gone(
        &s.root().join("bin"),
        "gitlab-shell",
        Duration::from_secs(20),
    );
    assert!(
        shells.is_empty(),
        "gitlab-shell processes left: {shells:#?}"
    );
    // The servers live in this process: their descriptors must come back (other tests of the
    // suite run in parallel, hence the margin; a per-session leak would be hundreds).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut fds_after = open_fds();
    while fds_after > fds_before + 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        fds_after = open_fds();
    }
    assert!(
        fds_after <= fds_before + 64,
        "descriptors grew from {fds_before} to {fds_after} over {total} sessions"
    );
    crate::secrets_scan::assert_log_clean(&s.log(), &[]);
}
