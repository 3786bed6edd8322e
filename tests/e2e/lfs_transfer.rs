//! `git-lfs-transfer` (pure-SSH Git LFS, behaviour §7.7): the protocol transcript as
//! `gitlab-shell` speaks it on stdin/stdout, and a real `git lfs` client pushing and cloning LFS
//! objects through a real sshd, GitLab Shell and the stub's LFS server.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::path::Path;

use test_support::{ClientKey, Commit, GitalyKind, Run, Sandbox, Sshd, random_bytes};

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/lfs
    id: 1
    members: { alice: admin }
  - path: group/nolfs
    id: 2
    members: { alice: admin }
    lfs_enabled: false
"#;

const PURE_SSH: &str = "lfs:\n  pure_ssh_protocol: true\n";

fn framed(message: &str) -> String {
    let ruler = "=".repeat(72);
    format!(
        "remote: \nremote: {ruler}\nremote: \nremote: {message}\nremote: \nremote: {ruler}\nremote: \n"
    )
}

fn pkt(text: &str) -> Vec<u8> {
    let mut out = format!("{:04x}", text.len() + 5).into_bytes();
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
    out
}

/// Wire bytes of a transcript: `0000`/`0001` as is, anything else as a text packet.
fn wire(items: &[&str]) -> String {
    let mut out = Vec::new();
    for item in items {
        match *item {
            "0000" | "0001" => out.extend_from_slice(item.as_bytes()),
            text => out.extend(pkt(text)),
        }
    }
    String::from_utf8(out).unwrap()
}

/// A sandbox with pure-SSH LFS on, whose LFS hrefs point at the stub API over TCP.
fn sandbox(name: &str, extra: &str) -> (Sandbox, ClientKey) {
    sandbox_with(name, extra, GitalyKind::from_env())
}

fn sandbox_with(name: &str, extra: &str, kind: GitalyKind) -> (Sandbox, ClientKey) {
    let mut builder = Sandbox::builder(name)
        .gitaly_kind(kind)
        .fixture_yaml(FIXTURE)
        .config_extra(extra);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder
        .seed(
            "group/lfs",
            vec![Commit::new("main", "Initial\n", "README.md", "# LFS\n")],
        )
        .build();
    let url = sandbox.api().tcp_url();
    sandbox.api().update_fixture(|f| f.external_url = url);
    (sandbox, alice)
}

fn transfer(sandbox: &Sandbox, command: &str, stdin: &[u8]) -> Run {
    sandbox.shell(&["key-1"], Some(command)).stdin(stdin).run()
}

#[test]
fn disabled_by_default_and_arity_is_checked() {
    let (sandbox, _) = sandbox("lfs-transfer-off", "");
    transfer(&sandbox, "git-lfs-transfer group/lfs download", b"")
        .assert_failure()
        .assert_stdout("")
        .assert_stderr("Disallowed command\n");

    let (sandbox, _) = sandbox_on("lfs-transfer-arity");
    for cmd in [
        "git-lfs-transfer group/lfs",
        "git-lfs-transfer group/lfs download extra",
        "git-lfs-transfer group/lfs lock",
    ] {
        transfer(&sandbox, cmd, b"")
            .assert_failure()
            .assert_stdout("")
            .assert_stderr(framed("Disallowed command"));
    }
    assert!(sandbox.api().requests_to("/allowed").is_empty());
}

fn sandbox_on(name: &str) -> (Sandbox, ClientKey) {
    sandbox(name, PURE_SSH)
}

#[test]
fn access_and_authentication_errors_are_framed() {
    let (sandbox, _) = sandbox_on("lfs-transfer-denied");
    let run = transfer(&sandbox, "git-lfs-transfer group/unknown download", b"");
    run.assert_failure().assert_stdout("");
    assert!(
        run.stderr_str().starts_with("remote: \nremote: ====="),
        "{run}"
    );
    // /allowed passes but the project has LFS off: /lfs_authenticate answers 404.
    let run = transfer(&sandbox, "git-lfs-transfer group/nolfs upload", b"");
    run.assert_failure().assert_stdout("");
    let allowed = sandbox.api().requests_to("/allowed");
    assert_eq!(allowed.last().unwrap().body["action"], "git-receive-pack");
    assert_eq!(sandbox.api().requests_to("/lfs_authenticate").len(), 1);
}

#[test]
fn protocol_transcript_upload_then_download() {
    let (sandbox, _) = sandbox_on("lfs-transfer-transcript");
    let data = b"hello";
    let oid = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    // Upload: version, batch, then quit (the object upload needs the id/token from the batch).
    let mut input = pkt("version 1");
    input.extend_from_slice(b"0000");
    for line in [
        "batch",
        "transfer=ssh",
        "hash-algo=sha256",
        "refname=refs/heads/main",
    ] {
        input.extend(pkt(line));
    }
    input.extend_from_slice(b"0001");
    input.extend(pkt(&format!("{oid} 5")));
    input.extend_from_slice(b"0000");
    input.extend(pkt("quit"));
    input.extend_from_slice(b"0000");
    let run = transfer(&sandbox, "git-lfs-transfer group/lfs upload", &input);
    run.assert_success().assert_stderr("");
    let out = run.stdout_str();
    assert!(
        out.starts_with("000eversion=1\n000clocking\n0000000fstatus 200\n0000000fstatus 200\n0001"),
        "{out}"
    );
    assert!(out.ends_with("0000000fstatus 200\n0000"), "{out}");
    let line_start = out.find(oid).unwrap();
    let line = &out[line_start..out[line_start..].find('\n').unwrap() + line_start];
    let mut words = line.split(' ');
    assert_eq!(words.next(), Some(oid));
    assert_eq!(words.next(), Some("5"));
    assert_eq!(words.next(), Some("upload"));
    let id = words
        .next()
        .unwrap()
        .strip_prefix("id=")
        .unwrap()
        .to_owned();
    let token = words
        .next()
        .unwrap()
        .strip_prefix("token=")
        .unwrap()
        .to_owned();

    // A second session uploads with the id/token the first one issued (they are stateless).
    let mut input = pkt(&format!("put-object {oid}"));
    input.extend(pkt("size=5"));
    input.extend(pkt(&format!("id={id}")));
    input.extend(pkt(&format!("token={token}")));
    input.extend_from_slice(b"0001");
    input.extend_from_slice(format!("{:04x}", data.len() + 4).as_bytes());
    input.extend_from_slice(data);
    input.extend_from_slice(b"0000");
    input.extend(pkt(&format!("verify-object {oid}")));
    input.extend(pkt("size=5"));
    input.extend(pkt(&format!("id={id}")));
    input.extend(pkt(&format!("token={token}")));
    input.extend_from_slice(b"0000");
    // A forged token is refused.
    input.extend(pkt(&format!("put-object {oid}")));
    input.extend(pkt("size=5"));
    input.extend(pkt(&format!("id={id}")));
    input.extend(pkt("token=Zm9yZ2Vk"));
    input.extend_from_slice(b"0001");
    input.extend_from_slice(b"0009hello0000");
    let run = transfer(&sandbox, "git-lfs-transfer group/lfs upload", &input);
    run.assert_success().assert_stdout(wire(&[
        "version=1",
        "locking",
        "0000",
        "status 200",
        "0000",
        "status 200",
        "0000",
        "status 403",
        "0001",
        "error: token hash mismatch",
        "0000",
    ]));
    assert_eq!(
        sandbox.api().lfs().object("group/lfs", oid).as_deref(),
        Some(&data[..])
    );

    // Download it back.
    let mut input = pkt("batch");
    input.extend_from_slice(b"0001");
    input.extend(pkt(&format!("{oid} 5")));
    input.extend_from_slice(b"0000");
    let run = transfer(&sandbox, "git-lfs-transfer group/lfs download", &input);
    run.assert_success();
    let out = run.stdout_str();
    let line_start = out.find(oid).unwrap();
    let line = &out[line_start..out[line_start..].find('\n').unwrap() + line_start];
    assert!(line.starts_with(&format!("{oid} 5 download id=")), "{line}");
    let args: Vec<&str> = line.split(' ').skip(3).collect();
    let mut input = pkt(&format!("get-object {oid}"));
    for a in &args {
        input.extend(pkt(a));
    }
    input.extend_from_slice(b"0000");
    let run = transfer(&sandbox, "git-lfs-transfer group/lfs download", &input);
    run.assert_success().assert_stdout(
        "000eversion=1\n000clocking\n0000000fstatus 200\n000bsize=5\n00010009hello0000",
    );

    // The LFS API saw Basic auth for alice with the fixture's token and the LFS media type.
    let batch = sandbox.api().requests_to("/info/lfs/objects/batch");
    let first = &batch[0];
    assert_eq!(
        first.header("content-type"),
        Some("application/vnd.git-lfs+json")
    );
    assert_eq!(
        first.body,
        serde_json::json!({
            "operation": "upload",
            "objects": [{ "oid": oid, "size": 5 }],
            "ref": { "name": "refs/heads/main" },
            "hash_algo": "sha256",
        })
    );
    assert!(first.header("authorization").unwrap().starts_with("Basic "));
    assert!(first.header("gitlab-shell-api-request").is_none());
    let auth = sandbox.api().requests_to("/lfs_authenticate");
    assert_eq!(
        auth[0].body,
        serde_json::json!({ "operation": "upload", "project": "group/lfs", "key_id": "1" })
    );
}

#[test]
fn locks_over_the_protocol() {
    let (sandbox, _) = sandbox_on("lfs-transfer-locks");
    let mut input = pkt("lock");
    input.extend(pkt("path=big.bin"));
    input.extend(pkt("refname=refs/heads/main"));
    input.extend_from_slice(b"0000");
    input.extend(pkt("lock"));
    input.extend(pkt("path=big.bin"));
    input.extend_from_slice(b"0000");
    input.extend(pkt("list-lock"));
    input.extend_from_slice(b"0000");
    input.extend(pkt("unlock 1"));
    input.extend_from_slice(b"0000");
    input.extend(pkt("unlock 1"));
    input.extend_from_slice(b"0000");
    let run = transfer(&sandbox, "git-lfs-transfer group/lfs upload", &input);
    let args = [
        "id=1",
        "path=big.bin",
        "locked-at=2024-01-02T03:04:05Z",
        "ownername=alice",
    ];
    let mut want = vec!["version=1", "locking", "0000", "status 201"];
    want.extend(args);
    want.extend(["0000", "status 409"]);
    want.extend(args);
    want.extend(["0001", "conflict", "0000", "status 200", "0001"]);
    want.extend([
        "lock 1",
        "path 1 big.bin",
        "locked-at 1 2024-01-02T03:04:05Z",
        "ownername 1 alice",
        "owner 1 ours",
        "0000",
        "status 200",
    ]);
    want.extend(args);
    want.extend(["0000", "status 404", "0001", "error: not found", "0000"]);
    run.assert_success().assert_stdout(wire(&want));
    assert!(sandbox.api().lfs().locks().is_empty());
}

/// Runs `git` through sshd as `key` in `dir`; panics with all the evidence on failure.
fn git_ok(sandbox: &Sandbox, sshd: &Sshd, key: &ClientKey, dir: &Path, args: &[&str]) -> Run {
    let run = sandbox
        .git_via(sshd, key)
        .current_dir(dir)
        .env("GIT_TRACE", "1")
        .args(args)
        .run();
    if run.code != 0 {
        panic!(
            "git {args:?} failed\n{run}\n--- sshd ---\n{}\n--- gitlab-shell ---\n{}",
            sshd.log(),
            sandbox.log()
        );
    }
    run
}

#[test]
fn git_lfs_push_and_clone_over_sshd() {
    git_lfs_push_and_clone_over_sshd_on(GitalyKind::from_env());
}

/// git-lfs over pure SSH next to `git push`/`git clone` through the `kind` Gitaly.
pub(crate) fn git_lfs_push_and_clone_over_sshd_on(kind: GitalyKind) {
    let (sandbox, alice) = sandbox_with("lfs-transfer-git", PURE_SSH, kind);
    let sshd = sandbox.sshd();
    let home = sandbox.git().home().to_owned();
    let work = sandbox.work_dir("lfs");
    git_ok(
        &sandbox,
        &sshd,
        &alice,
        &home,
        &["lfs", "install", "--skip-repo"],
    );
    git_ok(
        &sandbox,
        &sshd,
        &alice,
        &home,
        &["config", "--global", "lfs.ssh.automultiplex", "false"],
    );
    let url = sshd.git_url("group/lfs.git");

    git_ok(&sandbox, &sshd, &alice, &work, &["clone", &url, "a"]);
    let a = work.join("a");
    git_ok(&sandbox, &sshd, &alice, &a, &["lfs", "install", "--local"]);
    git_ok(&sandbox, &sshd, &alice, &a, &["lfs", "track", "*.bin"]);
    // Bigger than one pkt-line so data crosses packet boundaries both ways.
    let content = random_bytes(7, 200_000);
    fs::write(a.join("big.bin"), &content).unwrap();
    git_ok(
        &sandbox,
        &sshd,
        &alice,
        &a,
        &["add", ".gitattributes", "big.bin"],
    );
    git_ok(
        &sandbox,
        &sshd,
        &alice,
        &a,
        &["commit", "-q", "-m", "Add LFS object"],
    );
    // Upload the LFS objects alone first (no git push involved), then push the commits.
    let upload = git_ok(
        &sandbox,
        &sshd,
        &alice,
        &a,
        &["lfs", "push", "origin", "main"],
    );
    assert!(
        upload
            .stderr_str()
            .contains("git-lfs-transfer group/lfs.git upload"),
        "the client must use pure SSH transfer\n{upload}"
    );
    assert_eq!(sandbox.api().lfs().object_count(), 1);
    git_ok(&sandbox, &sshd, &alice, &a, &["push", "origin", "main"]);
    let pointer = git_ok(&sandbox, &sshd, &alice, &a, &["show", "HEAD:big.bin"]).stdout_str();
    let oid = pointer
        .lines()
        .find_map(|l| l.strip_prefix("oid sha256:"))
        .unwrap()
        .to_owned();
    assert_eq!(
        sandbox.api().lfs().object("group/lfs", &oid).as_deref(),
        Some(&content[..])
    );

    git_ok(&sandbox, &sshd, &alice, &work, &["clone", &url, "b"]);
    assert_eq!(fs::read(work.join("b/big.bin")).unwrap(), content);

    // Every LFS API call came from GitLab Shell (no git-lfs user agent: no HTTP fallback).
    let lfs_calls = sandbox.api().requests_to("/info/lfs/objects/batch");
    assert!(lfs_calls.len() >= 2, "{lfs_calls:?}");
    for call in &lfs_calls {
        assert!(
            !call
                .header("user-agent")
                .unwrap_or_default()
                .starts_with("git-lfs"),
            "{call:?}"
        );
    }
}
