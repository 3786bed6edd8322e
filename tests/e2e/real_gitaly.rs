//! The end-to-end Git tests again, against GitLab's own Gitaly 16.11.6 instead of the dev Gitaly
//! (built from Debian packages by `support/real-gitaly.sh` on first use, then cached; see
//! docs/real-gitaly.md). Same bodies, same assertions: where the two Gitalys differ, the dev
//! Gitaly is fixed, so the fast default stays faithful.
//!
//! Covered: clone (protocol v0 and v2), fetch, ls-remote, push accepted with the post-receive
//! messages, push refused by `/allowed` in Gitaly's pre-receive hook, console messages,
//! `git archive --remote`, a repository missing in the storage, Gitaly down and the wrong or a
//! missing token, a Gitaly restarting at the first dial (reached with `retry_config`), the Gitaly connection reset mid-clone and mid-push, pushes cut or killed
//! mid-stream (refs unchanged, nothing left running), and git-lfs next to Gitaly's clone/push.

use test_support::GitalyKind::{self, Real};
use test_support::{Commit, Sandbox};

use crate::{faults, git_over_ssh as g, gitaly_retry, lfs_transfer};

#[test]
fn clone_with_protocol_v2() {
    g::clone_with_protocol("2", Real);
}

#[test]
fn clone_with_protocol_v0() {
    g::clone_with_protocol("0", Real);
}

#[test]
fn fetch_gets_new_commits() {
    g::fetch_gets_new_commits_on(Real);
}

#[test]
fn ls_remote_lists_the_server_refs() {
    g::ls_remote_lists_the_server_refs_on(Real);
}

#[test]
fn push_new_commits_and_a_new_branch() {
    g::push_new_commits_and_a_new_branch_on(Real);
}

#[test]
fn push_to_a_protected_branch_is_refused_by_the_hook() {
    g::push_to_a_protected_branch_is_refused_by_the_hook_on(Real);
}

#[test]
fn console_messages_are_shown_as_remote_lines() {
    g::console_messages_are_shown_as_remote_lines_on(Real);
}

#[test]
fn archive_remote_matches_the_server() {
    g::archive_remote_matches_the_server_on(Real);
}

#[test]
fn missing_repository_shows_gitalys_not_found() {
    g::missing_repository_shows_gitalys_not_found_on(Real);
}

#[test]
fn push_cut_off_mid_stream_changes_nothing_and_leaves_no_git_behind() {
    g::push_cut_off_mid_stream_changes_nothing_and_leaves_no_git_behind_on(Real);
}

#[test]
fn gitaly_down_and_wrong_token() {
    faults::gitaly_down_and_wrong_token_on(Real);
}

#[test]
fn a_gitaly_restarting_at_the_first_dial_is_reached_with_retry_config() {
    gitaly_retry::a_gitaly_restarting_at_the_first_dial_on(Real);
}

#[test]
fn gitaly_connection_reset_mid_clone_and_mid_push() {
    faults::gitaly_connection_reset_mid_clone_and_mid_push_on(Real);
}

#[test]
fn push_killed_in_client_gitlab_shell_or_gitaly_git_loses_nothing() {
    faults::push_killed_in_client_gitlab_shell_or_gitaly_git_loses_nothing_on(Real);
}

#[test]
fn git_lfs_push_and_clone_over_sshd() {
    lfs_transfer::git_lfs_push_and_clone_over_sshd_on(Real);
}

/// A pkt-line (`text` with its 4-hex-digit length prefix).
fn pkt(text: &str) -> String {
    format!("{:04x}{text}", text.len() + 4)
}

/// `out` with side-band packets taken apart, so that git's timing does not count: the band-1
/// (pack data) payloads joined and put last, band 2 (messages) joined without the progress
/// redraws, everything else (pkt-lines as they are, and whatever follows a part that is not a
/// pkt-line) kept byte for byte.
fn demux(out: &[u8]) -> Vec<u8> {
    let (mut kept, mut pack, mut progress) = (Vec::new(), Vec::new(), Vec::new());
    let mut rest = out;
    while rest.len() >= 4 {
        let len = std::str::from_utf8(&rest[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(len) = len.filter(|&l| l < 4 || l <= rest.len()) else {
            break;
        };
        let (packet, tail) = rest.split_at(len.max(4));
        match packet.get(4) {
            Some(1) => pack.extend_from_slice(&packet[5..]),
            Some(2) => progress.extend_from_slice(&packet[5..]),
            _ => kept.extend_from_slice(packet),
        }
        rest = tail;
    }
    kept.extend_from_slice(rest);
    kept.extend_from_slice(b"\n[band 2]\n");
    // git redraws progress lines (ending in \r) as often as time allows: keep only the lines
    // that end in \n (messages, hook output, the final "…, done.").
    for line in progress.split_inclusive(|&b| b == b'\r' || b == b'\n') {
        if line.ends_with(b"\n") {
            kept.extend_from_slice(line);
        }
    }
    kept.extend_from_slice(b"\n[band 1]\n");
    kept.extend_from_slice(&pack);
    kept
}

/// alice may write to group/repo, but not to its protected branch `guarded`.
const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice }
keys:
  - { id: 1, user: alice, key: "ssh-ed25519 AAAAalice alice@example" }
projects:
  - { path: group/repo, id: 1, members: { alice: write }, protected_branches: [guarded] }
"#;

/// The same requests, run as sshd runs `gitlab-shell`, against a sandbox on the dev Gitaly and
/// one on the real Gitaly holding the same (deterministic) repository: exit code, stdout and
/// stderr must be byte-identical (side-band output compared band by band: [`demux`]). This is
/// where the two Gitalys are compared wholesale: ref and capability advertisements (v0 and v2),
/// `ls-refs`, fetches, archives, broken input, and pushes whose hooks call the internal API.
#[test]
fn direct_runs_match_the_dev_gitaly_byte_for_byte() {
    let commits = vec![
        Commit::new("main", "first\n", "README.md", "hello\n"),
        Commit::new("main", "second\n", "src/a.txt", "a\n"),
        Commit::new("topic", "topic\n", "t.txt", "t\n"),
        Commit::new("other", "other\n", "o.txt", "o\n"),
        Commit::new("guarded", "guarded\n", "g.txt", "g\n"),
    ];
    let make = |kind| {
        Sandbox::builder("real-vs-dev")
            .gitaly_kind(kind)
            .fixture_yaml(FIXTURE)
            .seed("group/repo", commits.clone())
            .build()
    };
    let dev = make(GitalyKind::Dev);
    let real = make(Real);
    let main = dev
        .git()
        .rev_parse(&dev.repo_path("group/repo"), "main")
        .unwrap_or_default();
    assert_eq!(
        real.git().rev_parse(&real.repo_path("group/repo"), "main"),
        Some(main.clone()),
        "the two repositories must be identical"
    );
    let topic = dev
        .git()
        .rev_parse(&dev.repo_path("group/repo"), "topic")
        .unwrap_or_default();
    let other = dev
        .git()
        .rev_parse(&dev.repo_path("group/repo"), "other")
        .unwrap_or_default();
    let guarded = dev
        .git()
        .rev_parse(&dev.repo_path("group/repo"), "guarded")
        .unwrap_or_default();
    let want_main = format!(
        "{}{}0009done\n",
        pkt(&format!("want {main} ofs-delta no-progress\n")),
        "0000"
    );
    let ls_refs = format!(
        "{}0001{}{}{}0000",
        pkt("command=ls-refs\n"),
        pkt("peel\n"),
        pkt("symrefs\n"),
        pkt("ref-prefix refs/heads/\n")
    );
    let fetch_v2 = format!(
        "{}0001{}{}{}{}0000",
        pkt("command=fetch\n"),
        pkt("thin-pack\n"),
        pkt("ofs-delta\n"),
        pkt(&format!("want {main}\n")),
        pkt("done\n")
    );
    let archive = format!(
        "{}{}0000",
        pkt("argument --format=tar\n"),
        pkt("argument main\n")
    );
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "v0 advertisement",
            "git-upload-pack group/repo",
            "",
            "0000".into(),
        ),
        ("v0 fetch", "git-upload-pack group/repo", "", want_main),
        (
            "v2 capabilities",
            "git-upload-pack group/repo",
            "version=2",
            "0000".into(),
        ),
        (
            "v2 ls-refs",
            "git-upload-pack group/repo",
            "version=2",
            ls_refs,
        ),
        (
            "v2 fetch",
            "git-upload-pack group/repo",
            "version=2",
            fetch_v2,
        ),
        (
            "receive-pack advertisement",
            "git-receive-pack group/repo",
            "",
            "0000".into(),
        ),
        ("archive", "git-upload-archive group/repo", "", archive),
        (
            "archive of an unknown ref",
            "git-upload-archive group/repo",
            "",
            format!(
                "{}{}0000",
                pkt("argument --format=tar\n"),
                pkt("argument nope\n")
            ),
        ),
        (
            "upload-pack garbage",
            "git-upload-pack group/repo",
            "",
            "garbage".into(),
        ),
        (
            "upload-pack unknown want",
            "git-upload-pack group/repo",
            "",
            format!(
                "{}00000009done\n",
                pkt(&format!("want {} ofs-delta\n", "1".repeat(40)))
            ),
        ),
        (
            "receive-pack garbage",
            "git-receive-pack group/repo",
            "",
            "garbage".into(),
        ),
        (
            "push refused by the hook",
            "git-receive-pack group/repo",
            "",
            format!(
                "{}0000",
                pkt(&format!(
                    "{guarded} {zero} refs/heads/guarded\0report-status side-band-64k \
                     delete-refs\n",
                    zero = "0".repeat(40)
                ))
            ),
        ),
        // last: it changes the repositories (a deletion needs no pack; the hooks run)
        (
            "push deleting a branch",
            "git-receive-pack group/repo",
            "",
            format!(
                "{}0000",
                pkt(&format!(
                    "{topic} {zero} refs/heads/topic\0report-status side-band-64k delete-refs\n",
                    zero = "0".repeat(40)
                ))
            ),
        ),
        (
            "push with push options",
            "git-receive-pack group/repo",
            "",
            format!(
                "{}0000{}{}0000",
                pkt(&format!(
                    "{other} {zero} refs/heads/other\0report-status side-band-64k delete-refs \
                     push-options\n",
                    zero = "0".repeat(40)
                )),
                pkt("ci.skip\n"),
                pkt("merge_request.create\n")
            ),
        ),
    ];
    let mut differences = Vec::new();
    for (label, command, protocol, stdin) in &cases {
        let run = |s: &Sandbox| {
            let mut cmd = s
                .shell(&["key-1"], Some(command))
                .stdin(stdin.clone().into_bytes());
            if !protocol.is_empty() {
                cmd = cmd.env("GIT_PROTOCOL", *protocol);
            }
            cmd.run()
        };
        let (d, r) = (run(&dev), run(&real));
        if *label == "push refused by the hook" {
            let shown = String::from_utf8_lossy(&r.stdout).into_owned();
            assert!(
                shown.contains("GitLab: You are not allowed")
                    && shown.contains("ng refs/heads/guarded pre-receive hook declined"),
                "{r}"
            );
        }
        if (d.code, demux(&d.stdout), &d.stderr) != (r.code, demux(&r.stdout), &r.stderr) {
            differences.push(format!(
                "== {label} ==\n-- dev Gitaly --\n{d}\n-- real Gitaly --\n{r}"
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    for s in [&dev, &real] {
        assert_eq!(s.git().rev_parse(&s.repo_path("group/repo"), "topic"), None);
        assert_eq!(s.git().rev_parse(&s.repo_path("group/repo"), "other"), None);
        assert_eq!(
            s.git().rev_parse(&s.repo_path("group/repo"), "guarded"),
            Some(guarded.clone())
        );
    }
    // The internal API calls of the push's hooks: same order, same bodies and headers.
    let calls = |s: &Sandbox| -> Vec<String> {
        let storage = s.storage().display().to_string();
        let mut out = Vec::new();
        for path in ["/allowed", "/pre_receive", "/post_receive"] {
            for r in s.api().requests_to(path) {
                if r.header("user-agent") == Some("GitLab-Shell") {
                    continue; // gitlab-shell's own /allowed calls, not the hooks'
                }
                let mut body = r.body.to_string().replace(&storage, "<storage>");
                if let Some(start) = body.find("tmp_objdir-incoming-") {
                    let end = body[start..]
                        .find(['\\', '"'])
                        .map_or(body.len(), |e| start + e);
                    body.replace_range(start..end, "tmp_objdir-incoming-<random>");
                }
                // Not compared: `Accept` (reqwest in the dev Gitaly always sends `*/*`, Go's
                // client sends none; GitLab ignores it, see docs/real-gitaly.md).
                let headers: Vec<String> = ["content-type", "user-agent", "content-length"]
                    .iter()
                    .map(|h| format!("{h}={:?}", r.header(h)))
                    .collect();
                let jwt = r.header("gitlab-shell-api-request").is_some();
                out.push(format!(
                    "{} {} jwt={jwt} {} {body}",
                    r.method,
                    r.path,
                    headers.join(" ")
                ));
            }
        }
        out
    };
    let (d, r) = (calls(&dev), calls(&real));
    assert!(d.len() >= 7, "{d:#?}");
    assert!(
        d.iter().any(|c| c.contains("merge_request.create")),
        "{d:#?}"
    );
    assert!(
        d == r,
        "hooks' API calls differ\n-- dev --\n{d:#?}\n-- real --\n{r:#?}"
    );
}

/// `support/real-gitaly.sh` with a finished build: prints the bin folder at once (the cached
/// path `make test` takes every time).
#[test]
fn the_build_script_reuses_a_finished_build_at_once() {
    let bin = test_support::real_gitaly::ensure_built();
    let script = test_support::paths::workspace_root().join("support/real-gitaly.sh");
    let started = std::time::Instant::now();
    let run = test_support::Cmd::new(&script).run();
    let took = started.elapsed();
    run.assert_success()
        .assert_stdout(format!("{}\n", bin.display()));
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    for b in [
        "gitaly",
        "gitaly-hooks",
        "gitaly-ssh",
        "gitaly-lfs-smudge",
        "gitaly-gpg",
    ] {
        assert!(bin.join(b).is_file(), "{b} missing in {}", bin.display());
    }
}

/// A mirror that does not answer (127.0.0.1, nothing listening) gives a clear error, not a
/// misleading "package not found", and leaves no "updated" mark behind.
#[test]
fn the_build_script_says_when_the_mirror_gives_no_package_lists() {
    let dir = tempfile::tempdir().unwrap();
    let script = test_support::paths::workspace_root().join("support/real-gitaly.sh");
    let port = test_support::sshd::free_port();
    let mirror = format!("http://127.0.0.1:{port}/debian");
    let run = test_support::Cmd::new(&script)
        .env("GITLAB_SHELL_REAL_GITALY_DIR", dir.path())
        .env("REAL_GITALY_MIRROR", &mirror)
        .run();
    run.assert_code(1)
        .assert_stdout("")
        .assert_stderr_contains(format!(
            "real-gitaly: error: could not fetch trixie's package lists from {mirror}"
        ));
    assert!(!dir.path().join("apt/updated").exists());
}
