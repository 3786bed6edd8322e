//! Clients that go away mid-transfer (issue 16, defect 1): through the real sshd, a `git clone`
//! (protocol v0 and v2), `git archive --remote` and `git push` of a large repository whose client
//! process group is killed while data flows. Within 10 s no `gitlab-shell` of the sandbox and no
//! git under its storage may remain (docs/architecture.md, "Cancellation").
//!
//! The client side is made slow on purpose: a `GIT_SSH_COMMAND` wrapper lets a little data
//! through and then stops reading (or writing), so sshd's pipes, the Gitaly sidechannel window
//! and `pack-objects` all fill up and block, which is where the leak used to happen.
//!
//! Only processes started by the test are looked at (`/proc` entries whose command line or
//! working directory is inside this sandbox) and only the client's own process group is killed.
//!
//! Parameterising for another Gitaly: everything Gitaly-specific is in [`world`] (the sandbox
//! builder starts the dev Gitaly); a sandbox started against the real Gitaly only has to give the
//! same `storage()` folder, under which its git children run, and the same checks apply.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use test_support::procs;
use test_support::real_gitaly::GitalyKind;
use test_support::{ClientKey, Commit, Sandbox, Spawned, Sshd};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/big
    id: 1
    members: { alice: admin }
"#;

/// Rounds per command (the issue asks for 5).
const ROUNDS: usize = 5;
/// What "promptly" means for the issue.
const GONE_WITHIN: Duration = Duration::from_secs(10);

struct World {
    sandbox: Sandbox,
    sshd: Sshd,
    alice: ClientKey,
}

/// A sandbox whose `group/big` holds ~54 MB of incompressible blobs.
fn world(name: &str, kind: GitalyKind) -> World {
    let mut builder = Sandbox::builder(name)
        .fixture_yaml(FIXTURE)
        .gitaly_kind(kind);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let mut commit = Commit::new("main", "Large content\n", "LARGE.md", "noise\n");
    for i in 0..3u64 {
        commit = commit.file(
            &format!("data/blob-{i}.bin"),
            test_support::random_bytes(0xD0_0000 + i, 18 << 20),
        );
    }
    let sandbox = builder.seed("group/big", vec![commit]).build();
    let sshd = sandbox.sshd();
    World {
        sandbox,
        sshd,
        alice,
    }
}

impl World {
    /// A `GIT_SSH_COMMAND` wrapper: `direction` is `read` (the client takes `limit` bytes of the
    /// server's output, then stops reading) or `write` (the client sends `limit` bytes, then
    /// stops sending).
    fn stalling_ssh(&self, direction: &str, limit: u64) -> PathBuf {
        let ssh = self.sshd.ssh_command(&self.alice);
        let body = match direction {
            // Not `head -c`: it waits for a full buffer, which stalls the ref advertisement.
            // dd passes every read on at once and stops after `limit` bytes' worth of reads.
            "read" => format!(
                "#!/bin/sh\n{ssh} \"$@\" | {{ dd bs=64k count={} status=none; sleep 600; }}\n",
                limit / 65536
            ),
            _ => format!("#!/bin/sh\n{{ head -c {limit}; sleep 600; }} | {ssh} \"$@\"\n"),
        };
        let script = self
            .sandbox
            .root()
            .join(format!("work/stalling-ssh-{direction}"));
        fs::create_dir_all(script.parent().unwrap()).unwrap();
        fs::write(&script, body).unwrap();
        let mut perms = fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        fs::set_permissions(&script, perms).unwrap();
        script
    }

    fn url(&self) -> String {
        self.sshd.git_url("group/big.git")
    }

    /// Starts `git args…` in `dir` through the stalling wrapper.
    fn spawn_git(&self, dir: &Path, wrapper: &Path, args: &[&str]) -> Spawned {
        self.sandbox
            .git()
            .git()
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", wrapper)
            // Not named `ssh`: without this git would probe the wrapper with `-G` first.
            .env("GIT_SSH_VARIANT", "ssh")
            .args(args)
            .timeout(Duration::from_secs(120))
            .spawn()
    }

    /// Waits until `server_process` runs under the storage (and gitlab-shell is up), lets the
    /// transfer run into the stall, kills the client's group and checks everything of the
    /// session is gone within [`GONE_WITHIN`]. Returns how long that took.
    #[track_caller]
    fn cut_off(&self, mut client: Spawned, server_process: &str) -> (Duration, Duration) {
        let storage = self.sandbox.storage().to_path_buf();
        let bin = self.sandbox.root().join("bin");
        let deadline = Instant::now() + Duration::from_secs(60);
        while procs::processes_under(&storage, server_process).is_empty()
            || procs::processes_under(&bin, "gitlab-shell").is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "{server_process} never started; running: {:#?}\n{}",
                procs::processes_under(self.sandbox.root(), ""),
                self.sshd.log()
            );
            assert!(client.is_running(), "the client ended before being cut off");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Long enough for every buffer between Gitaly's git and the client to fill up.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(client.is_running(), "the client ended before being cut off");
        assert!(
            !procs::processes_under(&storage, "git").is_empty(),
            "the server side finished before the client was cut off"
        );
        let killed = Instant::now();
        client.kill_group();
        let _ = client.wait();

        let shells = procs::wait_until_gone(&bin, "gitlab-shell", GONE_WITHIN);
        let shell_took = killed.elapsed();
        let left = procs::wait_until_gone(&storage, "git", GONE_WITHIN);
        let took = killed.elapsed();
        assert!(
            shells.is_empty(),
            "gitlab-shell left behind {took:?} after the client was killed: {shells:#?}"
        );
        assert!(
            left.is_empty(),
            "git left behind {took:?} after the client was killed: {left:#?}"
        );
        (shell_took, took)
    }
}

fn clone_cut_off(version: &str, kind: GitalyKind) -> Vec<(Duration, Duration)> {
    let w = world(&format!("drop-clone-v{version}"), kind);
    let wrapper = w.stalling_ssh("read", 1 << 20);
    let work = w.sandbox.work_dir("clones");
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let dir = format!("big-{round}");
        let protocol = format!("protocol.version={version}");
        let client = w.spawn_git(
            &work,
            &wrapper,
            &["-c", &protocol, "clone", "--bare", &w.url(), &dir],
        );
        times.push(w.cut_off(client, "pack-objects"));
    }
    times
}

#[test]
fn clone_v0_cut_off_leaves_nothing_behind() {
    let times = clone_cut_off("0", GitalyKind::Dev);
    eprintln!("clone v0: (gitlab-shell gone, all gone) after {times:?}");
}

#[test]
fn clone_v2_cut_off_leaves_nothing_behind() {
    let times = clone_cut_off("2", GitalyKind::Dev);
    eprintln!("clone v2: (gitlab-shell gone, all gone) after {times:?}");
}

#[test]
fn archive_cut_off_leaves_nothing_behind() {
    let times = archive_cut_off(GitalyKind::Dev);
    eprintln!("archive: (gitlab-shell gone, all gone) after {times:?}");
}

fn archive_cut_off(kind: GitalyKind) -> Vec<(Duration, Duration)> {
    let w = world("drop-archive", kind);
    let wrapper = w.stalling_ssh("read", 1 << 20);
    let work = w.sandbox.work_dir("archive");
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let out = format!("out-{round}.tar");
        let client = w.spawn_git(
            &work,
            &wrapper,
            &[
                "archive",
                "--remote",
                &w.url(),
                "--format=tar",
                "-o",
                &out,
                "main",
            ],
        );
        times.push(w.cut_off(client, "upload-archive"));
    }
    times
}

#[test]
fn push_cut_off_leaves_nothing_behind() {
    let times = push_cut_off(GitalyKind::Dev);
    eprintln!("push: (gitlab-shell gone, all gone) after {times:?}");
}

fn push_cut_off(kind: GitalyKind) -> Vec<(Duration, Duration)> {
    let w = world("drop-push", kind);
    let git = w.sandbox.git();
    let work = w.sandbox.work_dir("push");
    let local = work.join("local.git");
    git.init_bare(&local);
    let mut commit = Commit::new("main", "Push me\n", "README.md", "push\n");
    commit = commit.file("big.bin", test_support::random_bytes(0xD0_1000, 24 << 20));
    git.seed(&local, &[commit]);
    let before = git.refs(&w.sandbox.repo_path("group/big"));
    let wrapper = w.stalling_ssh("write", 4 << 20);
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let target = format!("HEAD:refs/heads/pushed-{round}");
        let client = w.spawn_git(&local, &wrapper, &["push", &w.url(), &target]);
        times.push(w.cut_off(client, "receive-pack"));
    }
    assert_eq!(git.refs(&w.sandbox.repo_path("group/big")), before);
    times
}

// The same on GitLab's Gitaly 16.11.6 (support/real-gitaly.sh): its git children run under the
// sandbox's storage too, so the same checks apply.

#[test]
fn clone_v2_cut_off_leaves_nothing_behind_on_the_real_gitaly() {
    let times = clone_cut_off("2", GitalyKind::Real);
    eprintln!("real Gitaly, clone v2: (gitlab-shell gone, all gone) after {times:?}");
}

#[test]
fn archive_cut_off_leaves_nothing_behind_on_the_real_gitaly() {
    let times = archive_cut_off(GitalyKind::Real);
    eprintln!("real Gitaly, archive: (gitlab-shell gone, all gone) after {times:?}");
}

#[test]
fn push_cut_off_leaves_nothing_behind_on_the_real_gitaly() {
    let times = push_cut_off(GitalyKind::Real);
    eprintln!("real Gitaly, push: (gitlab-shell gone, all gone) after {times:?}");
}
