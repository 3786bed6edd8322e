//! The built `gitlab-shell-authorized-keys` binary as an operator runs it: settings from
//! `GITLAB_SHELL_DIR/config.yml`, and many writers at once.

#![expect(clippy::unwrap_used, reason = "test helpers panic on setup failures")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;

const BIN: &str = env!("CARGO_BIN_EXE_gitlab-shell-authorized-keys");
const OPTIONS: &str = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty";

struct Root {
    dir: tempfile::TempDir,
    auth_file: PathBuf,
}

fn root() -> Root {
    let dir = tempfile::tempdir().unwrap();
    let auth_file = dir.path().join("ssh").join("authorized_keys");
    fs::write(dir.path().join(".gitlab_shell_secret"), "secret").unwrap();
    fs::write(
        dir.path().join("config.yml"),
        format!(
            "gitlab_url: \"http://127.0.0.1:1\"\nauth_file: \"{}\"\n",
            auth_file.display()
        ),
    )
    .unwrap();
    Root { dir, auth_file }
}

fn run(root: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .env("GITLAB_SHELL_DIR", root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A distinct, well-formed ed25519 public key for `tag` (the tool refuses what is not a key): the
/// SSH wire blob `string "ssh-ed25519", string <32 bytes>`, base64-encoded.
fn key(tag: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    let mut material = [0u8; 32];
    for (i, b) in tag.bytes().enumerate() {
        material[i % 32] ^= b;
    }
    blob.extend_from_slice(&material);
    let mut text = String::new();
    for chunk in blob.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                text.push('=');
            }
        }
    }
    format!("ssh-ed25519 {text}")
}

fn line(root: &Path, id: &str, key: &str) -> String {
    format!(
        "command=\"{}/bin/gitlab-shell {id}\",{OPTIONS} {key}",
        root.display()
    )
}

#[test]
fn uses_auth_file_from_config_and_the_roots_gitlab_shell() {
    let r = root();
    let out = run(
        r.dir.path(),
        &["add-key", "key-1", &format!("{} c@d", key("one"))],
        "",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        fs::read_to_string(&r.auth_file).unwrap(),
        line(r.dir.path(), "key-1", &format!("{} c@d", key("one"))) + "\n"
    );
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&r.auth_file), 0o600);
    assert_eq!(mode(r.auth_file.parent().unwrap()), 0o700);
    let out = run(r.dir.path(), &["list-keys"], "");
    let blob = key("one").split_once(' ').unwrap().1.to_owned();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("key-1 {blob}\n")
    );
    // What is not a key is refused and nothing is written.
    let out = run(r.dir.path(), &["add-key", "key-5", "not a key"], "");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "gitlab-shell-authorized-keys: invalid public key \"not a key\": unknown key type \"not\"\n"
    );
    assert_eq!(
        fs::read_to_string(&r.auth_file).unwrap(),
        line(r.dir.path(), "key-1", &format!("{} c@d", key("one"))) + "\n"
    );
}

#[test]
fn missing_config_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["list-keys"], "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Failed to read config, exiting: open "),
        "{stderr}"
    );
}

/// 20 writer processes at once, each adding its own keys one `add-key` at a time (and one batch):
/// every line must end up in the file exactly once, with the foreign line kept.
#[test]
fn twenty_concurrent_writers_never_lose_or_duplicate_a_line() {
    const WRITERS: usize = 20;
    const KEYS_EACH: usize = 5;
    let r = root();
    fs::create_dir_all(r.auth_file.parent().unwrap()).unwrap();
    fs::write(&r.auth_file, "# operator's own line\n").unwrap();
    let root_dir = r.dir.path().to_path_buf();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let root_dir = root_dir.clone();
            thread::spawn(move || {
                for k in 0..KEYS_EACH {
                    let id = format!("key-{}", w * 100 + k);
                    let key = key(&format!("w{w}k{k}"));
                    let out = run(&root_dir, &["add-key", &id, &key], "");
                    assert!(out.status.success(), "{out:?}");
                }
                let batch = format!("key-{}\t{}\n", w * 100 + 99, key(&format!("batch{w}")));
                let out = run(&root_dir, &["batch-add-keys"], &batch);
                assert!(out.status.success(), "{out:?}");
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let text = fs::read_to_string(&r.auth_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + WRITERS * (KEYS_EACH + 1), "{text}");
    assert_eq!(lines[0], "# operator's own line");
    for w in 0..WRITERS {
        for k in 0..KEYS_EACH {
            let want = line(
                &root_dir,
                &format!("key-{}", w * 100 + k),
                &key(&format!("w{w}k{k}")),
            );
            assert_eq!(lines.iter().filter(|l| **l == want).count(), 1, "{want}");
        }
        let want = line(
            &root_dir,
            &format!("key-{}", w * 100 + 99),
            &key(&format!("batch{w}")),
        );
        assert_eq!(lines.iter().filter(|l| **l == want).count(), 1, "{want}");
    }
    assert_eq!(
        fs::metadata(&r.auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // No temporary file is left behind next to it.
    let mut names: Vec<String> = fs::read_dir(r.auth_file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["authorized_keys", "authorized_keys.lock"]);
}

/// Removers and adders racing: the removed ids are gone, the others all present.
#[test]
fn concurrent_removals_and_additions_stay_consistent() {
    let r = root();
    let batch: String = (0..20)
        .map(|i| format!("key-{i}\t{}\n", key(&format!("k{i}"))))
        .collect();
    assert!(
        run(r.dir.path(), &["batch-add-keys"], &batch)
            .status
            .success()
    );
    let root_dir = r.dir.path().to_path_buf();
    let jobs: Vec<_> = (0..20)
        .map(|i| {
            let root_dir = root_dir.clone();
            thread::spawn(move || {
                let out = if i % 2 == 0 {
                    run(&root_dir, &["rm-key", &format!("key-{i}")], "")
                } else {
                    run(
                        &root_dir,
                        &["add-key", &format!("key-{}", 100 + i), &key("new")],
                        "",
                    )
                };
                assert!(out.status.success(), "{out:?}");
            })
        })
        .collect();
    for j in jobs {
        j.join().unwrap();
    }
    let out = run(r.dir.path(), &["list-key-ids"], "");
    let mut ids: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ids.sort();
    let mut want: Vec<u64> = (0..20)
        .filter(|i| i % 2 == 1)
        .chain((0..20).filter(|i| i % 2 == 1).map(|i| 100 + i))
        .collect();
    want.sort();
    assert_eq!(ids, want);
}
