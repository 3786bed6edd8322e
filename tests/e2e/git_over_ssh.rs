//! Real `git` through a real `sshd` (private config from `support/sshd_config.tmpl`), our
//! `gitlab-shell-authorized-keys-check` and `gitlab-shell`, the stub internal API and the dev
//! Gitaly running real `git` on a storage folder: what a GitLab user sees for clone, fetch, push
//! (accepted, refused by the pre-receive hook, post-receive messages), archive, ls-remote, the
//! welcome message and the error messages.
//!
//! Each test builds its own sandbox and sshd (cheap: ~100 ms) so tests can run in parallel and
//! no server outlives the test binary.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use test_support::{ApiTransport, ClientKey, Cmd, Commit, GitalyKind, Run, Sandbox, Sshd};

/// The framed block GitLab Shell prints for an error (behaviour §1.6).
fn framed(message: &str) -> String {
    let ruler = "=".repeat(72);
    format!(
        "remote: \nremote: {ruler}\nremote: \nremote: {message}\nremote: \nremote: {ruler}\nremote: \n"
    )
}

const NOT_FOUND: &str =
    "The project you were looking for could not be found or you don't have permission to view it.";

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
  - { id: 2, username: bob, name: Bob Reader }
projects:
  - path: group/open
    id: 1
    members: { alice: admin, bob: read }
    protected_branches: [main]
  - path: group/guarded
    id: 2
    members: { alice: write }
    protected_branches: [main]
  - path: group/private
    id: 3
  - path: group/hello
    id: 4
    members: { alice: admin }
    console_messages: ["Hello from the GitLab console", "Second line"]
"#;

/// `text` with trailing spaces removed from every line.
fn trim_line_ends(text: &str) -> String {
    text.lines()
        .map(|l| format!("{}\n", l.trim_end_matches(' ')))
        .collect()
}

/// One test's world: sandbox, sshd and three client keys (alice and bob registered, stranger not).
struct World {
    sandbox: Sandbox,
    sshd: Sshd,
    alice: ClientKey,
    bob: ClientKey,
    stranger: ClientKey,
}

fn seed_commits() -> Vec<Commit> {
    vec![
        Commit::new("main", "Initial commit\n", "README.md", "# Hello\n"),
        Commit::new(
            "main",
            "Add a file\n",
            "src/lib.rs",
            "pub fn answer() -> u32 { 42 }\n",
        ),
        Commit::new("topic", "Topic work\n", "topic.txt", "topic\n"),
    ]
}

fn world(name: &str) -> World {
    world_on(name, GitalyKind::from_env())
}

/// A world whose repositories are served by the `kind` Gitaly.
fn world_on(name: &str, kind: GitalyKind) -> World {
    world_with(name, ApiTransport::Tcp, kind)
}

fn world_with(name: &str, transport: ApiTransport, kind: GitalyKind) -> World {
    let mut builder = Sandbox::builder(name)
        .fixture_yaml(FIXTURE)
        .api_transport(transport)
        .gitaly_kind(kind);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let bob = builder.client_key("bob", 2, Some("bob"));
    let stranger = {
        let dir = builder_keys_dir(&alice);
        ClientKey::generate(&dir, "stranger")
    };
    let sandbox = builder
        .seed("group/open", seed_commits())
        .seed("group/guarded", seed_commits())
        .seed("group/hello", seed_commits())
        .build();
    let sshd = sandbox.sshd();
    World {
        sandbox,
        sshd,
        alice,
        bob,
        stranger,
    }
}

fn builder_keys_dir(key: &ClientKey) -> PathBuf {
    key.private_key
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

impl World {
    /// `git` reaching our sshd with `key`, in `dir`.
    fn git(&self, key: &ClientKey, dir: &Path) -> Cmd {
        self.sandbox.git_via(&self.sshd, key).current_dir(dir)
    }

    fn url(&self, project: &str) -> String {
        self.sshd.git_url(&format!("{project}.git"))
    }

    /// Clones `project` into `<work>/<dir>` as `key`; asserts success.
    fn clone(&self, key: &ClientKey, project: &str, dir: &str) -> PathBuf {
        let work = self.sandbox.work_dir("clones");
        let run = self
            .git(key, &work)
            .args(["clone", &self.url(project), dir])
            .run();
        self.ok(&run);
        work.join(dir)
    }

    fn server_rev(&self, project: &str, rev: &str) -> Option<String> {
        self.sandbox
            .git()
            .rev_parse(&self.sandbox.repo_path(project), rev)
    }

    fn server_refs(&self, project: &str) -> Vec<(String, String)> {
        self.sandbox.git().refs(&self.sandbox.repo_path(project))
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

    /// Commits `files` in the clone at `dir`.
    fn commit(&self, dir: &Path, message: &str, files: &[(&str, &[u8])]) {
        for (path, content) in files {
            let file = dir.join(path);
            if let Some(parent) = file.parent() {
                fs::create_dir_all(parent).unwrap();
            }
            fs::write(&file, content).unwrap();
        }
        let git = self.sandbox.git();
        self.ok(&git.git().current_dir(dir).args(["add", "--all"]).run());
        self.ok(&git
            .git()
            .current_dir(dir)
            .args(["commit", "--quiet", "-m", message])
            .run());
    }

    /// Fails with the run, sshd's log and GitLab Shell's log unless the run succeeded.
    #[track_caller]
    fn ok(&self, run: &Run) {
        if run.code != 0 {
            panic!(
                "expected success\n{run}\n--- sshd log ---\n{}\n--- gitlab-shell log ---\n{}",
                self.sshd.log(),
                self.sandbox.log()
            );
        }
    }
}

pub(crate) fn clone_with_protocol(version: &str, kind: GitalyKind) {
    let w = world_on(&format!("clone-v{version}"), kind);
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.alice, &work)
        .args(["-c", &format!("protocol.version={version}"), "clone"])
        .args([&w.url("group/open"), "open"])
        .env("GIT_TRACE_PACKET", "1")
        .run();
    w.ok(&run);
    let dir = work.join("open");
    assert_eq!(
        Some(w.local_rev(&dir, "HEAD")),
        w.server_rev("group/open", "main")
    );
    assert_eq!(
        Some(w.local_rev(&dir, "origin/topic")),
        w.server_rev("group/open", "topic")
    );
    assert_eq!(
        fs::read(dir.join("src/lib.rs")).unwrap(),
        b"pub fn answer() -> u32 { 42 }\n"
    );
    // GIT_PROTOCOL travels through sshd (AcceptEnv) and GitLab Shell to Gitaly's git.
    if version == "2" {
        run.assert_stderr_contains("clone< version 2\n");
    } else {
        run.assert_stderr_lacks("clone< version 2\n");
    }
}

#[test]
fn clone_with_protocol_v2() {
    clone_with_protocol("2", GitalyKind::from_env());
}

#[test]
fn clone_with_protocol_v0() {
    clone_with_protocol("0", GitalyKind::from_env());
}

/// `gitlab_url: http+unix://…` (the default of an Omnibus install: Workhorse's socket).
#[test]
fn clone_and_push_with_the_api_on_a_unix_socket() {
    let w = world_with("unix-api", ApiTransport::Unix, GitalyKind::from_env());
    let config = fs::read_to_string(w.sandbox.root().join("config.yml")).unwrap();
    assert!(
        config.contains("gitlab_url: \"http+unix://%2Ftmp%2F"),
        "{config}"
    );
    let dir = w.clone(&w.alice, "group/open", "open");
    w.commit(&dir, "Over a socket", &[("sock.txt", b"unix\n")]);
    let run = w
        .git(&w.alice, &dir)
        .args(["push", "origin", "HEAD:refs/heads/sock"])
        .run();
    w.ok(&run);
    assert_eq!(
        w.server_rev("group/open", "sock"),
        Some(w.local_rev(&dir, "HEAD"))
    );
    let allowed = w.sandbox.api().requests_to("/allowed");
    assert!(
        allowed.iter().any(|r| r.header("host") == Some("unix")),
        "{allowed:#?}"
    );
}

#[test]
fn fetch_gets_new_commits() {
    fetch_gets_new_commits_on(GitalyKind::from_env());
}

pub(crate) fn fetch_gets_new_commits_on(kind: GitalyKind) {
    let w = world_on("fetch", kind);
    let dir = w.clone(&w.alice, "group/open", "open");
    let tips = w.sandbox.git().seed(
        &w.sandbox.repo_path("group/open"),
        &[Commit::new("main", "Server side\n", "server.txt", "new\n")],
    );
    let run = w.git(&w.alice, &dir).args(["fetch", "origin"]).run();
    w.ok(&run);
    assert_eq!(w.local_rev(&dir, "origin/main"), tips[0]);
}

#[test]
fn push_new_commits_and_a_new_branch() {
    push_new_commits_and_a_new_branch_on(GitalyKind::from_env());
}

pub(crate) fn push_new_commits_and_a_new_branch_on(kind: GitalyKind) {
    let w = world_on("push", kind);
    let dir = w.clone(&w.alice, "group/open", "open");
    w.commit(&dir, "Change the readme", &[("README.md", b"# Changed\n")]);
    let run = w.git(&w.alice, &dir).args(["push", "origin", "main"]).run();
    w.ok(&run);
    assert_eq!(
        w.server_rev("group/open", "main"),
        Some(w.local_rev(&dir, "HEAD"))
    );

    w.ok(&w
        .sandbox
        .git()
        .git()
        .current_dir(&dir)
        .args(["checkout", "-q", "-b", "feature/x"])
        .run());
    w.commit(&dir, "Feature", &[("feature.txt", b"feature\n")]);
    let run = w
        .git(&w.alice, &dir)
        .args(["push", "origin", "feature/x"])
        .run();
    w.ok(&run);
    assert_eq!(
        w.server_rev("group/open", "refs/heads/feature/x"),
        Some(w.local_rev(&dir, "HEAD"))
    );
    // post-receive messages from the internal API, relayed by Gitaly's hook as `remote:` lines
    // (git pads side-band lines with spaces when stderr is not a terminal; drop the padding).
    let shown = trim_line_ends(&run.stderr_str());
    let expected = "remote: To create a merge request for feature/x, visit:\n\
         remote:   http://gitlab.example.com/group/open/-/merge_requests/new?merge_request%5Bsource_branch%5D=feature%2Fx\n";
    assert!(shown.contains(expected), "{run}");
}

#[test]
fn push_to_a_protected_branch_is_refused_by_the_hook() {
    push_to_a_protected_branch_is_refused_by_the_hook_on(GitalyKind::from_env());
}

pub(crate) fn push_to_a_protected_branch_is_refused_by_the_hook_on(kind: GitalyKind) {
    let w = world_on("protected", kind);
    let before = w.server_refs("group/guarded");
    let dir = w.clone(&w.alice, "group/guarded", "guarded");
    w.commit(&dir, "Not allowed", &[("README.md", b"# Nope\n")]);
    let run = w.git(&w.alice, &dir).args(["push", "origin", "main"]).run();
    run.assert_failure()
        .assert_stderr_contains(
            "remote: GitLab: You are not allowed to push code to protected branches on this project.\n",
        )
        .assert_stderr_contains("(pre-receive hook declined)");
    assert_eq!(w.server_refs("group/guarded"), before);
    let new = w.local_rev(&dir, "HEAD");
    let exists = w
        .sandbox
        .git()
        .at(&w.sandbox.repo_path("group/guarded"))
        .args(["cat-file", "-e", &new])
        .run();
    exists.assert_failure();
}

#[test]
fn push_without_write_access_is_refused() {
    let w = world("readonly");
    let before = w.server_refs("group/open");
    let dir = w.clone(&w.bob, "group/open", "open");
    w.commit(&dir, "Reader tries", &[("x.txt", b"x\n")]);
    let run = w.git(&w.bob, &dir).args(["push", "origin", "main"]).run();
    run.assert_failure()
        .assert_stderr_contains(framed("You are not allowed to push code to this project."));
    assert_eq!(w.server_refs("group/open"), before);
}

#[test]
fn archive_remote_matches_the_server() {
    archive_remote_matches_the_server_on(GitalyKind::from_env());
}

pub(crate) fn archive_remote_matches_the_server_on(kind: GitalyKind) {
    let w = world_on("archive", kind);
    let work = w.sandbox.work_dir("archive");
    let run = w
        .git(&w.alice, &work)
        .args([
            "archive",
            "--format=tar",
            &format!("--remote={}", w.url("group/open")),
            "main",
        ])
        .run();
    w.ok(&run);
    let expected = w
        .sandbox
        .git()
        .at(&w.sandbox.repo_path("group/open"))
        .args(["archive", "--format=tar", "main"])
        .run();
    expected.assert_success();
    assert!(run.stdout.len() > 1024, "{run}");
    assert!(
        run.stdout == expected.stdout,
        "archive differs from the server's own archive"
    );
}

#[test]
fn ls_remote_lists_the_server_refs() {
    ls_remote_lists_the_server_refs_on(GitalyKind::from_env());
}

pub(crate) fn ls_remote_lists_the_server_refs_on(kind: GitalyKind) {
    let w = world_on("ls-remote", kind);
    let work = w.sandbox.work_dir("ls");
    let run = w
        .git(&w.alice, &work)
        .args(["ls-remote", &w.url("group/open")])
        .run();
    w.ok(&run);
    let main = w.server_rev("group/open", "main").unwrap();
    let topic = w.server_rev("group/open", "topic").unwrap();
    run.assert_stdout(format!(
        "{main}\tHEAD\n{main}\trefs/heads/main\n{topic}\trefs/heads/topic\n"
    ));
}

#[test]
fn unknown_project_shows_the_framed_message() {
    let w = world("unknown");
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.alice, &work)
        .args(["clone", &w.url("group/nope"), "nope"])
        .run();
    run.assert_failure()
        .assert_stderr_contains(framed(NOT_FOUND))
        .assert_stderr_contains("fatal: Could not read from remote repository.");
    assert!(!work.join("nope").exists());
}

/// The internal API knows the project but Gitaly has no repository for it: Gitaly's NotFound
/// reaches the user in the framed block (docs/real-gitaly.md), for clone v2, clone v0 and push.
#[test]
fn missing_repository_shows_gitalys_not_found() {
    missing_repository_shows_gitalys_not_found_on(GitalyKind::from_env());
}

pub(crate) fn missing_repository_shows_gitalys_not_found_on(kind: GitalyKind) {
    let w = world_on("missing-repo", kind);
    let dir = w.clone(&w.alice, "group/open", "open");
    fs::remove_dir_all(w.sandbox.repo_path("group/open")).unwrap();
    let expected = framed("rpc error: code = NotFound desc = repository not found");
    let work = w.sandbox.work_dir("clones");
    for version in ["2", "0"] {
        let run = w
            .git(&w.alice, &work)
            .args(["-c", &format!("protocol.version={version}"), "clone"])
            .args([&w.url("group/open"), &format!("v{version}")])
            .run();
        run.assert_code(128)
            .assert_stderr_contains(&expected)
            .assert_stderr_contains("fatal: Could not read from remote repository.");
    }
    let run = w.git(&w.alice, &dir).args(["push", "origin", "main"]).run();
    run.assert_code(128).assert_stderr_contains(&expected);
    // Run directly (as sshd would), gitlab-shell exits 1 and writes nothing on stdout.
    let direct = w
        .sandbox
        .shell(&["key-1"], Some("git-upload-pack 'group/open.git'"))
        .stdin(&b"0000"[..])
        .run();
    direct
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(&expected);
}

#[test]
fn project_without_access_shows_the_framed_message() {
    let w = world("no-access");
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.alice, &work)
        .args(["clone", &w.url("group/private"), "p"])
        .run();
    run.assert_failure()
        .assert_stderr_contains(framed(NOT_FOUND));
}

#[test]
fn unknown_key_is_rejected_by_sshd() {
    let w = world("stranger");
    let run = w.sshd.ssh(&w.stranger).arg("-T").run();
    run.assert_code(255)
        .assert_stderr_contains("Permission denied (publickey)");
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.stranger, &work)
        .args(["clone", &w.url("group/open"), "x"])
        .run();
    run.assert_failure()
        .assert_stderr_contains("Permission denied (publickey)");
    // sshd asked our keys check, which asked the internal API about the key's blob.
    let asked = w.sandbox.api().requests_to("/authorized_keys");
    assert!(
        asked
            .iter()
            .any(|r| r.query_param("key").as_deref() == Some(w.stranger.blob.as_str())),
        "{asked:?}"
    );
}

#[test]
fn ssh_without_a_command_prints_the_welcome_message() {
    let w = world("welcome");
    let run = w.sshd.ssh(&w.alice).arg("-T").run();
    w.ok(&run);
    run.assert_stdout("Welcome to GitLab, @alice!\n");
    let run = w.sshd.ssh(&w.bob).arg("-T").run();
    run.assert_success()
        .assert_stdout("Welcome to GitLab, @bob!\n");
}

#[test]
fn console_messages_are_shown_as_remote_lines() {
    console_messages_are_shown_as_remote_lines_on(GitalyKind::from_env());
}

pub(crate) fn console_messages_are_shown_as_remote_lines_on(kind: GitalyKind) {
    let w = world_on("console", kind);
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.alice, &work)
        .args(["clone", &w.url("group/hello"), "hello"])
        .run();
    w.ok(&run);
    run.assert_stderr_contains(
        "remote: \nremote: Hello from the GitLab console\nremote: Second line\nremote: \n",
    );
}

/// A wrapper for `GIT_SSH_COMMAND` that lets `limit` bytes of the client's stream through and
/// then stalls, so a push is reliably cut off mid-pack when the test kills the client.
fn stalling_ssh(w: &World, key: &ClientKey, limit: u64) -> PathBuf {
    let script = w.sandbox.root().join("work/stalling-ssh");
    let body = format!(
        "#!/bin/sh\n{{ head -c {limit}; sleep 600; }} | {} \"$@\"\n",
        w.sshd.ssh_command(key)
    );
    fs::create_dir_all(script.parent().unwrap()).unwrap();
    fs::write(&script, body).unwrap();
    let mut perms = fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    fs::set_permissions(&script, perms).unwrap();
    script
}

#[test]
fn push_cut_off_mid_stream_changes_nothing_and_leaves_no_git_behind() {
    push_cut_off_mid_stream_changes_nothing_and_leaves_no_git_behind_on(GitalyKind::from_env());
}

pub(crate) fn push_cut_off_mid_stream_changes_nothing_and_leaves_no_git_behind_on(
    kind: GitalyKind,
) {
    let w = world_on("cut-push", kind);
    let before = w.server_refs("group/open");
    let dir = w.clone(&w.alice, "group/open", "open");
    let big = test_support::random_bytes(0xC0FFEE, 20 << 20);
    w.commit(&dir, "Big file", &[("big.bin", &big)]);
    let new = w.local_rev(&dir, "HEAD");

    let wrapper = stalling_ssh(&w, &w.alice, 4 << 20);
    let mut push = w
        .sandbox
        .git()
        .git()
        .current_dir(&dir)
        .env("GIT_SSH_COMMAND", &wrapper)
        // Not named `ssh`: without this git would probe the wrapper with `-G` first.
        .env("GIT_SSH_VARIANT", "ssh")
        .args(["push", "origin", "main"])
        .spawn();
    // Wait until the server side is receiving the pack (git-receive-pack is running under the
    // storage folder), then cut the client off.
    let storage = w.sandbox.storage().to_path_buf();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while test_support::procs::processes_under(&storage, "receive-pack").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "receive-pack never started\n{}",
            w.sshd.log()
        );
        assert!(push.is_running(), "the push ended before being cut off");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    push.kill_group();
    let _ = push.wait();

    let left = test_support::procs::wait_until_gone(&storage, "git", Duration::from_secs(20));
    assert!(left.is_empty(), "git processes left behind: {left:#?}");
    let shells = test_support::procs::wait_until_gone(
        &w.sandbox.root().join("bin"),
        "gitlab-shell",
        Duration::from_secs(20),
    );
    assert!(
        shells.is_empty(),
        "gitlab-shell processes left behind: {shells:#?}"
    );
    assert_eq!(w.server_refs("group/open"), before);
    w.sandbox
        .git()
        .at(&w.sandbox.repo_path("group/open"))
        .args(["cat-file", "-e", &new])
        .run()
        .assert_failure();
}

/// Seeds ≥ 50 MB of incompressible content (fixed seeds) and checks a clone is byte-identical.
#[test]
fn large_repository_clones_byte_identical() {
    let w = world("large-clone");
    let files: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|i| {
            (
                format!("data/blob-{i}.bin"),
                test_support::random_bytes(i + 1, 18 << 20),
            )
        })
        .collect();
    let mut commit = Commit::new("main", "Large content\n", "LARGE.md", "54 MiB of noise\n");
    for (path, content) in &files {
        commit = commit.file(path, content.clone());
    }
    let tips = w
        .sandbox
        .git()
        .seed(&w.sandbox.repo_path("group/open"), &[commit]);
    let work = w.sandbox.work_dir("clones");
    let run = w
        .git(&w.alice, &work)
        .args(["clone", &w.url("group/open"), "large"])
        .timeout(Duration::from_secs(180))
        .run();
    w.ok(&run);
    let dir = work.join("large");
    assert_eq!(w.local_rev(&dir, "HEAD"), tips[0]);
    for (path, content) in &files {
        assert!(
            fs::read(dir.join(path)).unwrap() == *content,
            "{path} differs"
        );
    }
    let fsck = w
        .sandbox
        .git()
        .git()
        .current_dir(&dir)
        .args(["fsck", "--full", "--strict"])
        .run();
    w.ok(&fsck);
}

/// Pushes ≥ 50 MB of incompressible content and checks it landed whole.
#[test]
fn large_push_lands_whole() {
    let w = world("large-push");
    let dir = w.clone(&w.alice, "group/open", "open");
    let a = test_support::random_bytes(101, 28 << 20);
    let b = test_support::random_bytes(102, 28 << 20);
    w.commit(&dir, "Large push", &[("a.bin", &a), ("b.bin", &b)]);
    let run = w
        .git(&w.alice, &dir)
        .args(["push", "origin", "HEAD:refs/heads/large"])
        .timeout(Duration::from_secs(180))
        .run();
    w.ok(&run);
    let repo = w.sandbox.repo_path("group/open");
    assert_eq!(
        w.server_rev("group/open", "refs/heads/large"),
        Some(w.local_rev(&dir, "HEAD"))
    );
    let git = w.sandbox.git();
    for (path, content) in [("a.bin", &a), ("b.bin", &b)] {
        let blob = git
            .at(&repo)
            .args(["cat-file", "blob", &format!("large:{path}")])
            .run();
        blob.assert_success();
        assert!(blob.stdout == *content, "{path} differs on the server");
    }
    w.ok(&git.at(&repo).args(["fsck", "--full", "--strict"]).run());
}
