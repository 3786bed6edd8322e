//! Hostile input against the BUILT `gitlab-shell` (issue 5 §2): a table of well over 200 argv /
//! environment / `SSH_ORIGINAL_COMMAND` cases — shell metacharacters, command substitution,
//! option injection (`--upload-pack=…`, `--help`), `..` and absolute repository paths, invalid
//! UTF-8, 100 KiB commands and a 1 MiB argv. Each case must give exactly GitLab Shell's message
//! (behaviour §1.2, §1.6) and exit code, never panic, never execute anything (a canary file is
//! never created, Gitaly is not even configured) and send `/allowed` the repository path exactly
//! as typed (GitLab Shell does not validate it; the API refuses it).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::Duration;

use test_support::Sandbox;

use crate::shell_commands::framed;

const NOT_FOUND: &str =
    "The project you were looking for could not be found or you don't have permission to view it.";

pub(crate) const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice }
keys:
  - { id: 1, user: alice, key: "ssh-ed25519 AAAAalice alice@example" }
projects:
  - { path: group/repo, id: 1, members: { alice: admin } }
"#;

/// What a case must print.
#[derive(Clone, Debug)]
enum Want {
    /// Unframed `Only SSH allowed`.
    OnlySsh,
    /// Unframed shellwords failure.
    Invalid,
    /// Unframed `Disallowed command`.
    Disallowed,
    /// Framed `Disallowed command` (known command, wrong arity or operation).
    DisallowedFramed,
    /// `/allowed` is called with exactly this project and refuses it (framed API message).
    Refused(Vec<u8>),
    /// Framed arbitrary message, no `/allowed` call.
    Framed(String),
    /// The welcome (exit 0): parsing stopped at a metacharacter before any word.
    Welcome,
}

struct Case {
    argv: Vec<OsString>,
    /// `SSH_CONNECTION`; `None` leaves it unset.
    connection: Option<&'static str>,
    /// `SSH_ORIGINAL_COMMAND`; `None` leaves it unset.
    command: Option<Vec<u8>>,
    want: Want,
}

fn case(command: impl Into<Vec<u8>>, want: Want) -> Case {
    Case {
        argv: vec!["key-1".into()],
        connection: Some(test_support::sandbox::SSH_CONNECTION),
        command: Some(command.into()),
        want,
    }
}

/// Every case of the table; `canary` is a path no case may create.
fn cases(canary: &Path) -> Vec<Case> {
    let c = canary.display().to_string();
    let mut v = Vec::new();

    // 1. No SSH_CONNECTION: refused before anything else, whatever the command.
    for cmd in [
        "git-upload-pack 'group/repo'",
        "",
        "'unterminated",
        "rm -rf /",
        "git-receive-pack group/repo",
    ] {
        let mut k = case(cmd, Want::OnlySsh);
        k.connection = None;
        v.push(k);
        let mut k = case(cmd, Want::OnlySsh);
        k.connection = Some("");
        v.push(k);
    }

    // 2. Shellwords errors (unframed).
    for cmd in [
        "git-upload-pack 'group/repo",
        "git-upload-pack \"group/repo",
        "git-upload-pack group/repo\\",
        "a (b",
        "(",
        "git-upload-pack (group/repo)",
        "echo `x",
        "'",
        "\"",
        "\\",
        "git-receive-pack 'a'\"b",
        "2fa_verify '",
    ] {
        v.push(case(cmd, Want::Invalid));
    }
    v.push(case(
        format!("git-upload-pack $(touch {c})'"),
        Want::Invalid,
    ));

    // 3. Unknown commands (unframed), including command injection attempts as word 0.
    let unknown: Vec<String> = vec![
        "sh".into(),
        "bash -c id".into(),
        "/bin/sh -c id".into(),
        format!("touch {c}"),
        format!("`touch {c}`"),
        format!("$(touch {c})"),
        format!("${{IFS}}touch${{IFS}}{c}"),
        "rm -rf /".into(),
        "scp -t /tmp".into(),
        "sftp".into(),
        "internal-sftp".into(),
        "git-shell -c id".into(),
        "git".into(),
        "git --version".into(),
        "git --upload-pack=id group/repo".into(),
        "git -c core.sshCommand=id upload-pack group/repo".into(),
        "git help".into(),
        "git-upload-pack2 group/repo".into(),
        "GIT-UPLOAD-PACK group/repo".into(),
        "Git-Upload-Pack group/repo".into(),
        " git-upload-packx group/repo".into(),
        "git-upload-pac group/repo".into(),
        "/usr/bin/git-upload-pack group/repo".into(),
        "./git-upload-pack group/repo".into(),
        "env git-upload-pack group/repo".into(),
        "GIT_DIR=/etc git-upload-pack group/repo".into(),
        "--help".into(),
        "-h".into(),
        "-version".into(),
        "--version".into(),
        "git-lfs-transfer group/repo download".into(),
        "git-lfs-transfer".into(),
        "2fa_recovery_codess".into(),
        "personal_access_token_".into(),
        "'git-upload-pack group/repo'".into(),
        "\"git-upload-pack\"x group/repo".into(),
        "..".into(),
        "/".into(),
        "git-upload-pack\\ group/repo".into(),
        "perl -e 'system(1)'".into(),
        "python3 -c 'import os'".into(),
        "exec sh".into(),
        "{git-upload-pack,group/repo}".into(),
        "*".into(),
        "~root".into(),
        "%s%s%s%n".into(),
        "\u{202e}kcap-daolpu-tig group/repo".into(),
        "git\u{2010}upload-pack group/repo".into(),
        "ｇit-upload-pack group/repo".into(),
    ];
    for cmd in unknown {
        v.push(case(cmd, Want::Disallowed));
    }
    for cmd in [
        &b"git-upload-pack\xff group/repo"[..],
        b"\xc0\xaf",
        b"\x1b[2J\x1b[H",
        b"\x7f",
        b"\x01\x02\x03",
        b"git-upload-pack\x0bgroup/repo",
        b"git-upload-pack\x0cgroup/repo",
        b"\xed\xa0\x80",
    ] {
        v.push(case(cmd, Want::Disallowed));
    }

    // 4. Known git commands with the wrong arity: framed, before any API call.
    for cmd in [
        "git-upload-pack".to_owned(),
        "git-receive-pack".into(),
        "git-upload-archive".into(),
        "git-upload-pack group/repo extra".into(),
        "git-upload-pack --upload-pack=id group/repo".into(),
        format!("git-upload-pack --upload-pack='touch {c}' group/repo"),
        "git-upload-pack -c core.sshCommand=id group/repo".into(),
        "git-receive-pack --receive-pack=id group/repo".into(),
        "git-receive-pack group/repo --exec=id".into(),
        "git-upload-archive --remote=x group/repo".into(),
        "git-upload-archive group/repo --format=tar".into(),
        "git upload-pack".into(),
        "git upload-pack a b".into(),
        "git-upload-pack '' ''".into(),
        "git-upload-pack group/repo \"\"".into(),
        "git-upload-pack group /repo".into(),
        "git-upload-pack\tgroup/repo\textra".into(),
        "git-upload-pack\ngroup/repo\nid".into(),
        "git-lfs-authenticate".into(),
        "git-lfs-authenticate group/repo".into(),
        "git-lfs-authenticate group/repo delete".into(),
        "git-lfs-authenticate group/repo DOWNLOAD".into(),
        "git-lfs-authenticate group/repo --upload".into(),
        "git-lfs-authenticate group/repo 'download '".into(),
        "git-lfs-authenticate group/repo $(id)".into(),
    ] {
        v.push(case(cmd, Want::DisallowedFramed));
    }

    // 5. Two-word git commands: the path goes to /allowed exactly as typed and is refused.
    let paths: Vec<(String, Vec<u8>)> = [
        "--help",
        "-h",
        "--version",
        "--upload-pack=id",
        "--receive-pack=id",
        "--advertise-refs",
        "--stateless-rpc",
        "--strict",
        "--timeout=1",
        "-c",
        "--",
        "-",
        "../../etc/passwd",
        "../../../../../../../../etc/shadow",
        "group/../../etc",
        "group/./../x",
        "group/../x",
        "..",
        ".",
        "/etc/passwd",
        "/",
        "//server/share",
        "/root/.ssh",
        "~/.ssh",
        "~root",
        "group/repo.git/../../other",
        "%2e%2e/%2e%2e/etc",
        "group/%00repo",
        "group/repo/objects/../../x",
        "file:///etc",
        "ssh://evil/x",
        "http://127.0.0.1:1/x",
        "$HOME",
        "${PATH}",
        "*",
        "group/*",
        "?",
        "{a,b}",
        "!",
        "#",
        "group/repo#frag",
        "group/repo?x=1",
    ]
    .iter()
    .map(|p| ((*p).to_owned(), p.as_bytes().to_vec()))
    .collect();
    for (typed, project) in &paths {
        v.push(case(
            format!("git-upload-pack {typed}"),
            Want::Refused(project.clone()),
        ));
    }
    // The same through the other git commands and the Git for Windows spelling, quoted.
    for (typed, project) in paths.iter().take(20) {
        let q = typed.replace('\'', "'\\''");
        for cmd in ["git-receive-pack", "git-upload-archive", "git upload-pack"] {
            v.push(case(format!("{cmd} '{q}'"), Want::Refused(project.clone())));
        }
    }
    // Shell syntax inside quotes is data; unquoted metacharacters end the command.
    for (cmd, project) in [
        (
            format!("git-upload-pack 'x; touch {c}'"),
            format!("x; touch {c}"),
        ),
        (
            format!("git-upload-pack 'x`touch {c}`'"),
            format!("x`touch {c}`"),
        ),
        (
            format!("git-upload-pack \"$(touch {c})\""),
            format!("$(touch {c})"),
        ),
        (
            format!("git-upload-pack x$(touch{c})"),
            format!("x$(touch{c})"),
        ),
        (format!("git-upload-pack x;touch {c}"), "x".into()),
        (format!("git-upload-pack x&&touch {c}"), "x".into()),
        (format!("git-upload-pack x||touch {c}"), "x".into()),
        (format!("git-upload-pack x|touch {c}"), "x".into()),
        (format!("git-upload-pack x>{c}"), "x".into()),
        (format!("git-upload-pack x<{c}"), "x".into()),
        (format!("git-upload-pack x&touch {c}"), "x".into()),
        (
            format!("git-receive-pack nope/x; touch {c}"),
            "nope/x".into(),
        ),
        ("git-upload-pack \\$HOME".into(), "$HOME".into()),
        ("git-upload-pack a\\ b".into(), "a b".into()),
        ("git-upload-pack \"a\"'b'c".into(), "abc".into()),
        ("git-upload-pack 'group/repo'x".into(), "group/repox".into()),
        (
            "git-upload-pack group\\..\\..\\etc".into(),
            "group....etc".into(),
        ),
        ("git-upload-pack ''".into(), String::new()),
        ("git-upload-pack \"\"".into(), String::new()),
        ("   git-upload-pack    nope/x   ".into(), "nope/x".into()),
        ("git-upload-pack\tnope/x".into(), "nope/x".into()),
        ("git-upload-pack\r\nnope/x\r\n".into(), "nope/x".into()),
        ("git-upload-pack 'nope\nx'".into(), "nope\nx".into()),
        (
            "git-upload-archive '/group/repo/../../x'".into(),
            "/group/repo/../../x".into(),
        ),
    ] {
        v.push(case(cmd, Want::Refused(project.into_bytes())));
    }
    // Invalid UTF-8 and control bytes in the path: sent as Go would (U+FFFD per bad byte).
    for raw in [
        &b"\xff"[..],
        b"group/\xfe\xferepo",
        b"\xc3\x28",
        b"group/repo\x01",
        b"\x1b]0;pwned\x07",
        b"\xef\xbf\xbd",
        b"grp/\xf0\x9f\x92\xa9",
    ] {
        let mut cmd = b"git-upload-pack '".to_vec();
        cmd.extend_from_slice(raw);
        cmd.push(b'\'');
        v.push(case(cmd, Want::Refused(go_lossy(raw).into_bytes())));
    }
    // git-lfs-authenticate: the /allowed refusal for hostile paths.
    for p in ["../../etc", "--help", "/etc/passwd", "nope/x"] {
        v.push(case(
            format!("git-lfs-authenticate {p} download"),
            Want::Refused(p.into()),
        ));
        v.push(case(
            format!("git-lfs-authenticate {p} upload ignored $(id) extra"),
            Want::Refused(p.into()),
        ));
    }

    // 6. Big inputs (Linux caps one environment string at 128 KiB; argv may total more).
    let long_path = "a/".repeat(50 * 1024);
    v.push(case(
        format!("git-upload-pack {long_path}"),
        Want::Refused(long_path.clone().into_bytes()),
    ));
    v.push(case("x".repeat(120 * 1024), Want::Disallowed));
    v.push(case(
        format!("git-upload-pack '{}", "q".repeat(100 * 1024)),
        Want::Invalid,
    ));
    v.push(case(
        format!("git-upload-pack {}", "a b ".repeat(25 * 1024)),
        Want::DisallowedFramed,
    ));
    v.push(case(";".repeat(100 * 1024), Want::Welcome));
    let mut big = case(
        "git-upload-pack nope/big",
        Want::Refused(b"nope/big".to_vec()),
    );
    big.argv = (0..10)
        .map(|i| OsString::from(format!("{i}").repeat(100 * 1024)))
        .chain(std::iter::once(OsString::from("key-1")))
        .collect();
    v.push(big);

    // 7. Metacharacters before any word: nothing to run, the welcome (as GitLab Shell does).
    for cmd in [
        "; rm -rf /".to_owned(),
        format!("&& touch {c}"),
        format!("| touch {c}"),
        format!("> {c}"),
        format!("< {c}"),
        "&".into(),
        "   ".into(),
        "\t\n".into(),
    ] {
        v.push(case(cmd, Want::Welcome));
    }

    // 8. Hostile argv (sshd's command= line), with and without a command.
    let argvs: Vec<Vec<&str>> = vec![
        vec![],
        vec!["key-abc"],
        vec!["key-"],
        vec!["key--1"],
        vec!["key-1 extra"],
        vec!["key-1\n"],
        vec!["key-١"],
        vec!["username-"],
        vec!["username-a b"],
        // (`--help` alone is answered with a usage text by design of this project.)
        vec!["-help", "x"],
        vec!["-c", "--"],
        vec!["key-0x10"],
        vec!["KEY-1"],
        vec!["user-1"],
    ];
    for a in &argvs {
        let mut k = case(
            Vec::new(),
            Want::Framed("Failed to get username: who='' is invalid".into()),
        );
        k.command = None;
        k.argv = a.iter().map(OsString::from).collect();
        v.push(k);
        let mut k = case(
            "git-upload-pack group/repo",
            Want::Refused(b"group/repo".to_vec()),
        );
        k.argv = a.iter().map(OsString::from).collect();
        v.push(k);
    }
    let mut k = case(
        Vec::new(),
        Want::Framed("Failed to get username: who='' is invalid".into()),
    );
    k.command = None;
    k.argv = vec![OsString::from_vec(b"key-\xff".to_vec())];
    v.push(k);
    let mut k = case(
        Vec::new(),
        Want::Framed("Failed to get username: who='' is invalid".into()),
    );
    k.command = None;
    k.argv = vec!["x".repeat(100 * 1024).into()];
    v.push(k);

    // 9. Personal access tokens: argument errors are framed before any API call.
    let usage = "Usage: personal_access_token <name> <scope1[,scope2,...]> [ttl_days]";
    for cmd in [
        "personal_access_token",
        "personal_access_token name",
        "personal_access_token a b 1 extra",
        "personal_access_token a b 1 $(id)",
    ] {
        v.push(case(cmd, Want::Framed(usage.into())));
    }
    for ttl in ["-3", "abc", "1.5", "1e3", "0x10", "' 1'", "+-1", "１"] {
        let raw = ttl.trim_matches('\'');
        v.push(case(
            format!("personal_access_token a api {ttl}"),
            Want::Framed(format!("Invalid value for days_ttl: '{raw}'")),
        ));
    }
    v
}

/// Go's view of invalid UTF-8 (shellwords ranges over runes, `encoding/json` re-encodes): one
/// U+FFFD per invalid *byte*, also inside a truncated multi-byte sequence.
fn go_lossy(mut bytes: &[u8]) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                return out;
            }
            Err(e) => {
                let (ok, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                out.push('\u{fffd}');
                bytes = rest.get(1..).unwrap_or_default();
            }
        }
    }
}

#[test]
fn go_lossy_replaces_each_invalid_byte() {
    assert_eq!(go_lossy(b"a\xe2\x82b"), "a\u{fffd}\u{fffd}b");
    assert_eq!(go_lossy(b"\xf0\x9f\x92"), "\u{fffd}".repeat(3));
    assert_eq!(go_lossy("é\u{1F4A9}".as_bytes()), "é\u{1F4A9}");
}

/// Checked against Go GitLab Shell: `git-upload-pack '\xe2\x82'` sends `/allowed` the project
/// "\u{fffd}\u{fffd}" (one per byte); Rust's `to_string_lossy` folds a truncated sequence into one.
#[test]
fn truncated_utf8_sequences_reach_the_api_as_go_sends_them() {
    let s = Sandbox::builder("hostile-utf8")
        .fixture_yaml(FIXTURE)
        .gitaly(false)
        .build();
    for (i, raw) in [&b"\xe2\x82"[..], b"x\xf0\x9f\x92y", b"\xe1\x80"]
        .iter()
        .enumerate()
    {
        let mut cmd = b"git-upload-pack '".to_vec();
        cmd.extend_from_slice(raw);
        cmd.push(b'\'');
        if let Err(e) = run_case(&s, i, &case(cmd, Want::Refused(go_lossy(raw).into_bytes()))) {
            panic!("{e}");
        }
    }
}

fn expected(want: &Want) -> (i32, Vec<u8>, Vec<u8>) {
    let e = |s: &str| (1, Vec::new(), s.as_bytes().to_vec());
    match want {
        Want::OnlySsh => e("Only SSH allowed\n"),
        Want::Invalid => e("Invalid SSH command: invalid command line string\n"),
        Want::Disallowed => e("Disallowed command\n"),
        Want::DisallowedFramed => e(&framed("Disallowed command")),
        Want::Refused(_) => e(&framed(NOT_FOUND)),
        Want::Framed(m) => e(&framed(m)),
        Want::Welcome => (0, b"Welcome to GitLab, @alice!\n".to_vec(), Vec::new()),
    }
}

#[test]
fn hostile_table_gives_gitlab_shell_messages_and_executes_nothing() {
    let s = Sandbox::builder("hostile")
        .fixture_yaml(FIXTURE)
        .gitaly(false)
        .build();
    let canary = s.root().join("pwned");
    let table = cases(&canary);
    assert!(table.len() >= 200, "only {} cases", table.len());

    let failures = std::sync::Mutex::new(Vec::<String>::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..6 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(k) = table.get(i) else { break };
                    if let Err(msg) = run_case(&s, i, k)
                        && let Ok(mut f) = failures.lock()
                    {
                        f.push(msg);
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    assert!(!canary.exists(), "a hostile command was executed");
    crate::secrets_scan::assert_log_clean(&s.log(), &[]);
    // Only the internal API was ever talked to, and only through the two endpoints.
    for r in s.api().requests() {
        assert!(
            r.path == "/api/v4/internal/allowed" || r.path == "/api/v4/internal/discover",
            "unexpected request {r:?}"
        );
    }
}

fn run_case(s: &Sandbox, i: usize, k: &Case) -> Result<(), String> {
    let id = format!("hostile-case-{i}");
    let mut cmd = s
        .cmd("gitlab-shell")
        .args(&k.argv)
        .env("CORRELATION_ID", &id)
        .timeout(Duration::from_secs(30));
    if let Some(conn) = k.connection {
        cmd = cmd.env("SSH_CONNECTION", conn);
    }
    if let Some(c) = &k.command {
        cmd = cmd.env("SSH_ORIGINAL_COMMAND", OsString::from_vec(c.clone()));
    }
    let run = cmd.run();
    let (code, stdout, stderr) = expected(&k.want);
    let shown = |b: &[u8]| {
        let t = String::from_utf8_lossy(b);
        if t.len() > 300 {
            format!("{}…({} bytes)", &t[..t.floor_char_boundary(300)], b.len())
        } else {
            format!("{t:?}")
        }
    };
    let what = format!(
        "case {i} argv={} cmd={}",
        shown(
            &k.argv
                .iter()
                .map(|a| a.as_encoded_bytes())
                .collect::<Vec<_>>()
                .join(&b' ')
        ),
        shown(k.command.as_deref().unwrap_or(b"<unset>"))
    );
    if run.code != code || run.stdout != stdout || run.stderr != stderr {
        return Err(format!(
            "{what}: got exit {} stdout {} stderr {}; want exit {code} stdout {} stderr {}",
            run.code,
            shown(&run.stdout),
            shown(&run.stderr),
            shown(&stdout),
            shown(&stderr)
        ));
    }
    let mine: Vec<_> = s
        .api()
        .requests_to("/allowed")
        .into_iter()
        .filter(|r| r.header("x-request-id") == Some(id.as_str()))
        .collect();
    match &k.want {
        Want::Refused(project) => {
            let want = String::from_utf8_lossy(project);
            let sent: Vec<_> = mine
                .iter()
                .map(|r| r.body["project"].as_str().unwrap_or("<none>").to_owned())
                .collect();
            if sent != [want.as_ref()] {
                return Err(format!(
                    "{what}: /allowed got projects {sent:?}, want [{want:?}]"
                ));
            }
        }
        _ if !mine.is_empty() => return Err(format!("{what}: unexpected /allowed call")),
        _ => {}
    }
    Ok(())
}

/// Hostile values in the rest of the session environment are inert: `GIT_PROTOCOL` goes to
/// Gitaly verbatim without breaking the session, `SSH_CONNECTION` junk is only an address,
/// `CORRELATION_ID` cannot forge log lines, `GITLAB_SHELL_DIR` only ever picks the root.
#[test]
fn hostile_environment_is_inert() {
    let s = Sandbox::builder("hostile-env")
        .fixture_yaml(FIXTURE)
        .seed(
            "group/repo",
            vec![test_support::Commit::new(
                "main",
                "first",
                "README.md",
                "hi\n",
            )],
        )
        .build();
    let welcome = "Welcome to GitLab, @alice!\n";
    let upload = |env: &[(&str, OsString)]| {
        s.shell(&["key-1"], Some("git-upload-pack group/repo"))
            .envs(env.iter().map(|(k, v)| (*k, v.clone())))
            .stdin(&b"0000"[..])
            .timeout(Duration::from_secs(30))
            .run()
    };
    for proto in [
        OsString::from("version=2"),
        "version=999".into(),
        "version=2:object-format=sha1:x=y".into(),
        "version=0\nversion=2".into(),
        "$(touch pwned)".into(),
        "v".repeat(100 * 1024).into(),
    ] {
        let run = upload(&[("GIT_PROTOCOL", proto)]);
        run.assert_success();
        assert!(!run.stdout.is_empty(), "{run}");
    }
    // Whitespace only: Go v14 indexes the first field and panics (exit 2); here it is a
    // session with an empty address. Skipped when the suite runs against other binaries.
    let blank = test_support::paths::bin_dir_override().is_none();
    for conn in [
        OsString::from(if blank { "   " } else { "x" }),
        "x".into(),
        "::1 1 ::1 22".into(),
        "1.2.3.4:5678 1 2 3".into(),
        "' OR 1=1 --".into(),
        "a".repeat(100 * 1024).into(),
        OsString::from_vec(b"\xff\xfe 1 2 3".to_vec()),
    ] {
        s.shell(&["key-1"], None)
            .env("SSH_CONNECTION", conn)
            .run()
            .assert_success()
            .assert_stdout(welcome);
    }
    // A correlation id that is not a valid header value fails every attempt, as in Go
    // (checked against the Go binaries): the request is never sent with a split header.
    s.shell(&["key-1"], None)
        .env("CORRELATION_ID", "\"quoted\" <id>")
        .run()
        .assert_success()
        .assert_stdout(welcome);
    for id in [
        "x\n{\"level\":\"fatal\",\"msg\":\"forged\"}",
        "\r\nInjected: header",
    ] {
        s.shell(&["key-1"], None)
            .env("CORRELATION_ID", id)
            .timeout(Duration::from_secs(30))
            .run()
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed("Failed to get username: Internal API unreachable"));
    }
    // The API never saw a header split by the correlation id.
    for r in s.api().requests() {
        assert!(r.header("injected").is_none(), "header injection: {r:?}");
    }
    // Every log line is one JSON object: nothing was forged.
    let log = s.log();
    for line in log.lines() {
        let v: serde_json::Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => panic!("log line is not JSON ({e}): {line:?}"),
        };
        assert_ne!(v["msg"], "forged", "{line}");
    }
    assert!(!s.root().join("home/pwned").exists());
    crate::secrets_scan::assert_log_clean(&log, &[]);

    if !blank {
        return; // other binaries run through a wrapper that pins GITLAB_SHELL_DIR
    }
    s.shell(&["key-1"], None)
        .env("GITLAB_SHELL_DIR", "/nonexistent/gls")
        .run()
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr("Failed to determine executable, exiting\n");
    let empty = s.work_dir("empty-root");
    s.shell(&["key-1"], None)
        .env("GITLAB_SHELL_DIR", &empty)
        .run()
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(format!(
            "Failed to read config, exiting: open {}/config.yml: no such file or directory\n",
            empty.display()
        ));
}

/// Garbage pkt-line streams on stdin (hostile clients after authentication): `git-lfs-transfer`
/// (parsed by GitLab Shell itself) and the Gitaly-relayed upload/receive-pack end within a
/// bounded time, never panic, and a garbage push changes no ref.
#[test]
fn garbage_pkt_line_streams_end_cleanly() {
    let s = Sandbox::builder("hostile-pkt")
        .fixture_yaml(FIXTURE)
        .config_extra("lfs:\n  pure_ssh_protocol: true\n")
        .seed(
            "group/repo",
            vec![test_support::Commit::new(
                "main",
                "first",
                "README.md",
                "hi\n",
            )],
        )
        .build();
    let url = s.api().tcp_url();
    s.api().update_fixture(|f| f.external_url = url);
    let refs_before = s.git().refs(&s.repo_path("group/repo"));
    let mut inputs: Vec<Vec<u8>> = vec![
        b"ffff".to_vec(),
        b"0003".to_vec(),
        b"zzzz".to_vec(),
        b"fff0short".to_vec(),
        b"000".to_vec(),
        b"0001000200010002".to_vec(),
        b"000eversion 1\n0000zzzz".to_vec(),
        b"000eversion 1\n00000009batch0000".to_vec(),
        b"000eversion 2\n0000".to_vec(),
        b"0004".repeat(256 * 1024),
        b"0000".repeat(64 * 1024),
        test_support::random_bytes(1, 64 * 1024),
        test_support::random_bytes(2, 1 << 20),
    ];
    let mut pkt = b"fff4".to_vec();
    pkt.extend(std::iter::repeat_n(b'a', 0xfff0));
    inputs.push(pkt.repeat(16));
    for command in [
        "git-lfs-transfer group/repo download",
        "git-lfs-transfer group/repo upload",
        "git-upload-pack group/repo",
        "git-receive-pack group/repo",
    ] {
        for (i, input) in inputs.iter().enumerate() {
            let start = std::time::Instant::now();
            let run = s
                .shell(&["key-1"], Some(command))
                .stdin(input.clone())
                .timeout(Duration::from_secs(60))
                .run();
            let what = format!("{command} input {i}: {run}");
            assert!(start.elapsed() < Duration::from_secs(30), "slow: {what}");
            assert!(run.code == 0 || run.code == 1, "{what}");
            assert!(!run.stderr_str().contains("panicked"), "{what}");
            if command.starts_with("git-lfs-transfer") {
                assert!(
                    run.stdout.starts_with(b"000eversion=1\n000clocking\n0000"),
                    "{what}"
                );
            }
        }
    }
    assert_eq!(s.git().refs(&s.repo_path("group/repo")), refs_before);
    let left = test_support::procs::wait_until_gone(s.storage(), "git", Duration::from_secs(20));
    assert!(left.is_empty(), "git left behind: {left:#?}");
    crate::secrets_scan::assert_log_clean(&s.log(), &[]);
}

// ---------------------------------------------------------------------------------------------
// Hostile peers (issue 16): what the internal API, Gitaly and a git-lfs-transfer client may do.
//
// | peer                                                   | expected (test)                         |
// |--------------------------------------------------------|-----------------------------------------|
// | `/allowed` with every field `null` (personal snippet)  | clone works (`peer_api_nulls_…`)        |
// | `/personal_access_token` with `message: null`          | the token is printed                    |
// | `/discover` with `name: null`                          | the welcome                             |
// | `/two_factor_recovery_codes` with `message: null`      | the codes                               |
// | `/authorized_keys` answering a JSON array              | `# No key was found`                    |
// | a body that stalls after the headers                   | `parsing failed`, read once (`…_stall…`)|
// | 301/302/303/307/308 to another host, Basic auth set    | refused, nothing reaches the other host |
// | a `tcp://` Gitaly that accepts and stays silent        | Unavailable after 20 s (`…_gitaly…`)    |
// | a `tls://` Gitaly that never finishes the handshake    | Unavailable after 20 s                  |
// | an LFS `batch` followed by endless lines, no flush     | status 400, RSS bounded (`…_lfs…`)      |
// | log file created under umask 000                       | mode 0644 (`…_log_file…`)               |
// | log file that cannot be opened                         | nothing on the SSH client's terminal    |
// ---------------------------------------------------------------------------------------------

const PEER_FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice }
projects:
  - { path: group/repo, id: 1, members: { alice: admin } }
"#;

const GITALY_DOWN: &str = "rpc error: code = Unavailable desc = The git server, Gitaly, is not available at this time. Please contact your administrator.";

fn peer_sandbox(name: &str, extra: &str) -> (Sandbox, test_support::ClientKey) {
    let mut builder = Sandbox::builder(name)
        .fixture_yaml(PEER_FIXTURE)
        .gitaly_token("")
        .config_extra(extra);
    let alice = builder.client_key("alice", 1, Some("alice"));
    let s = builder
        .seed(
            "group/repo",
            vec![test_support::Commit::new(
                "main",
                "first",
                "README.md",
                "hello\n",
            )],
        )
        .build();
    (s, alice)
}

fn json_body(v: &serde_json::Value) -> test_support::stub_api::Fault {
    test_support::stub_api::Fault::Body(serde_json::to_vec(v).unwrap_or_default())
}

/// Sets every member of `v` to `null` except those named in `keep` (recursing into `nested`).
fn null_all(v: &mut serde_json::Value, keep: &[&str]) {
    if let Some(map) = v.as_object_mut() {
        for (k, value) in map.iter_mut() {
            if !keep.contains(&k.as_str()) {
                *value = serde_json::Value::Null;
            }
        }
    }
}

#[test]
fn peer_api_nulls_decode_as_zero_values_and_arrays_are_no_answer() {
    let (s, alice) = peer_sandbox("peer-nulls", "");
    let sshd = s.sshd();
    // The genuine answer, then every field null but what a clone needs.
    let reply = test_support::stub_api::api::respond(
        &s.fixture(),
        "POST",
        "/api/v4/internal/allowed",
        "",
        &serde_json::json!({"action": "git-upload-pack", "project": "group/repo",
            "key_id": "1", "protocol": "ssh", "changes": "_any"}),
    );
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut allowed = reply.body;
    null_all(&mut allowed, &["status", "gitaly"]);
    allowed["gl_project_id"] = serde_json::Value::Null;
    allowed["gl_root_namespace_id"] = serde_json::Value::Null;
    null_all(&mut allowed["gitaly"], &["repository", "address"]);
    null_all(
        &mut allowed["gitaly"]["repository"],
        &["storage_name", "relative_path"],
    );
    s.api()
        .set_fault("/api/v4/internal/allowed", json_body(&allowed));
    let work = s.work_dir("clones");
    let run = s
        .git_via(&sshd, &alice)
        .current_dir(&work)
        .args(["clone", &sshd.git_url("group/repo.git"), "repo"])
        .run();
    assert_eq!(run.code, 0, "{run}\n{}", s.log());
    assert_eq!(
        std::fs::read_to_string(work.join("repo/README.md")).unwrap_or_default(),
        "hello\n"
    );
    s.api().clear_faults();

    s.api().set_fault(
        "/api/v4/internal/personal_access_token",
        json_body(
            &serde_json::json!({"success": true, "token": "glpat-e2e-token",
            "scopes": ["api"], "expires_at": null, "message": null}),
        ),
    );
    s.shell(&["key-1"], Some("personal_access_token mytoken api"))
        .run()
        .assert_success()
        .assert_stdout_contains("Token:   glpat-e2e-token\n");

    s.api().set_fault(
        "/api/v4/internal/discover",
        json_body(&serde_json::json!({"id": 1, "name": null, "username": "alice"})),
    );
    s.shell(&["key-1"], None)
        .run()
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n");

    s.api().set_fault(
        "/api/v4/internal/two_factor_recovery_codes",
        json_body(&serde_json::json!({"success": true,
            "recovery_codes": ["code-one", "code-two"], "message": null})),
    );
    s.shell(&["key-1"], Some("2fa_recovery_codes"))
        .stdin(&b"yes\n"[..])
        .run()
        .assert_success()
        .assert_stdout_contains("code-one\ncode-two\n");

    s.api().set_fault(
        "/api/v4/internal/authorized_keys",
        test_support::stub_api::Fault::Body(br#"[7,"ssh-ed25519 AAAA"]"#.to_vec()),
    );
    let user = test_support::paths::current_user();
    s.run(
        "gitlab-shell-authorized-keys-check",
        &[&user, &user, "AAAAC3NzaC1lZDI1NTE5AAAAIHostile"],
        &[],
        b"",
    )
    .assert_success()
    .assert_stdout("# No key was found for AAAAC3NzaC1lZDI1NTE5AAAAIHostile\n");
}

/// A raw HTTP peer on 127.0.0.1: answers each connection with `answer`, then holds it open
/// for `hold`; counts connections.
struct RawPeer {
    port: u16,
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawPeer {
    fn start(answer: Vec<u8>, hold: Duration) -> RawPeer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot listen on 127.0.0.1: {e}"));
        let port = listener
            .local_addr()
            .map_or_else(|e| panic!("no local address: {e}"), |a| a.port());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, log) = (connections.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let answer = answer.clone();
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    if let Ok(mut l) = log.lock() {
                        l.push(String::from_utf8_lossy(&got).into_owned());
                    }
                    let _ = conn.write_all(&answer);
                    std::thread::sleep(hold);
                });
            }
        });
        RawPeer {
            port,
            connections,
            seen,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// `config` (a `config.yml`) with `gitlab_url` replaced and `extra` appended.
fn config_with_api(config: &str, gitlab_url: &str, extra: &str) -> String {
    let mut out: String = config
        .lines()
        .map(|l| {
            if l.starts_with("gitlab_url:") {
                format!("gitlab_url: \"{gitlab_url}\"\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    out.push_str(extra);
    out
}

#[test]
fn peer_api_stall_and_cross_host_redirects() {
    let (s, _) = peer_sandbox("peer-stall", "");
    let original = std::fs::read_to_string(s.root().join("config.yml")).unwrap_or_default();
    let upload_pack = || {
        s.shell(&["key-1"], Some("git-upload-pack group/repo"))
            .stdin(&b"0000"[..])
            .timeout(Duration::from_secs(60))
    };

    // Headers, then a body that never comes: read once within read_timeout, `parsing failed`.
    let stall = RawPeer::start(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"status\":"
            .to_vec(),
        Duration::from_secs(30),
    );
    s.write_config(&config_with_api(
        &original,
        &format!("http://127.0.0.1:{}", stall.port),
        "http_settings:\n  read_timeout: 2\n",
    ));
    let started = std::time::Instant::now();
    let run = upload_pack().run();
    let took = started.elapsed();
    run.assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed("parsing failed"));
    assert_eq!(stall.connections(), 1, "a stalled body is not retried");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Redirects to another host with Basic auth configured: refused, the other host never
    // hears from us (so neither the credential nor the JWT leaves).
    let other = RawPeer::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
        Duration::ZERO,
    );
    for status in [301u16, 302, 303, 307, 308] {
        let location = format!("http://localhost:{}/api/v4/internal/allowed", other.port);
        let redirect = RawPeer::start(
            format!("HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n")
                .into_bytes(),
            Duration::ZERO,
        );
        s.write_config(&config_with_api(
            &original,
            &format!("http://127.0.0.1:{}", redirect.port),
            "http_settings:\n  user: apiuser\n  password: hunter2-secret\n",
        ));
        upload_pack()
            .run()
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed(&format!(
                "Internal API returned redirect ({status}) to \"{location}\""
            )));
        assert_eq!(redirect.connections(), 1, "not retried");
        let seen = redirect.seen.lock().map(|v| v.join("")).unwrap_or_default();
        assert!(seen.contains("Authorization: Basic "), "{seen}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(other.connections(), 0, "a request reached the other host");
    s.write_config(&original);
}

#[test]
fn peer_gitaly_silent_or_tls_black_hole_gives_up_after_20_seconds() {
    let (s, _) = peer_sandbox("peer-gitaly", "");
    // Accepts, reads, never answers (neither TLS nor HTTP/2).
    let hole = RawPeer::start(Vec::new(), Duration::from_secs(60));
    let runs: Vec<_> = ["tcp", "tls"]
        .into_iter()
        .map(|scheme| {
            let port = hole.port;
            let cmd = s
                .shell(&["key-1"], Some("git-upload-pack group/repo"))
                .stdin(&b"0000"[..])
                .timeout(Duration::from_secs(60));
            let address = format!("{scheme}://127.0.0.1:{port}");
            (scheme, address, cmd)
        })
        .collect();
    // One after the other would double the wait: both run at once, each with its own address.
    let mut handles = Vec::new();
    for (scheme, address, cmd) in runs {
        s.api().set_gitaly(address, "");
        let started = std::time::Instant::now();
        let spawned = cmd.spawn();
        // Let it fetch /allowed (with this address) before the next one changes it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while s.api().requests_to("/allowed").len() < handles.len() + 1
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        handles.push((scheme, started, spawned));
    }
    for (scheme, started, spawned) in handles {
        let run = spawned.wait();
        let took = started.elapsed();
        run.assert_code(1)
            .assert_stdout("")
            .assert_stderr(framed(GITALY_DOWN));
        assert!(
            took >= Duration::from_secs(19) && took < Duration::from_secs(27),
            "{scheme}: {took:?}"
        );
    }
}

#[test]
fn peer_lfs_batch_flood_is_refused_with_bounded_memory() {
    let (s, _) = peer_sandbox("peer-lfs-flood", "lfs:\n  pure_ssh_protocol: true\n");
    let url = s.api().tcp_url();
    s.api().update_fixture(|f| f.external_url = url);
    // `batch`, a delimiter, then 64 MiB of pointer lines and no flush.
    let mut flood = b"000abatch\n0001".to_vec();
    let line = b"0011aaaaaaaaaa 1\n";
    while flood.len() < 64 << 20 {
        flood.extend_from_slice(line);
    }
    // GNU time reports the peak RSS (kB) of the process it runs as its last stderr line.
    let run = test_support::Cmd::new("/usr/bin/time")
        .args(["-f", "peak-rss-kb=%M"])
        .arg(s.bin("gitlab-shell"))
        .arg("key-1")
        .env("SSH_CONNECTION", test_support::sandbox::SSH_CONNECTION)
        .env(
            "SSH_ORIGINAL_COMMAND",
            "git-lfs-transfer group/repo download",
        )
        .stdin(flood)
        .timeout(Duration::from_secs(120))
        .run();
    run.assert_code(1)
        .assert_stdout_contains("status 400\n")
        .assert_stdout_contains("error: request too large: more than 20000 lines\n");
    let stderr = run.stderr_str();
    let peak: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kb="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    assert!(peak < 48 * 1024, "peak RSS {peak} kB");
    eprintln!("lfs flood: peak RSS {peak} kB");
}

#[test]
fn peer_log_file_is_0644_under_umask_000_and_an_unusable_one_stays_off_the_terminal() {
    let (s, alice) = peer_sandbox("peer-log", "");
    let log = s.root().join("fresh.log");
    let original = std::fs::read_to_string(s.root().join("config.yml")).unwrap_or_default();
    let with_log = |path: &str| {
        original
            .lines()
            .map(|l| {
                if l.starts_with("log_file:") {
                    format!("log_file: \"{path}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect::<String>()
    };
    s.write_config(&with_log(&log.display().to_string()));
    test_support::Cmd::new("sh")
        .args([
            "-c",
            "umask 000; exec \"$0\" \"$@\"",
            &s.bin("gitlab-shell").display().to_string(),
            "key-1",
        ])
        .env("SSH_CONNECTION", test_support::sandbox::SSH_CONNECTION)
        .run()
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&log).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);

    // A log file that cannot be opened: through the real sshd, the user sees only the welcome.
    s.write_config(&with_log("/nonexistent/dir/gitlab-shell.log"));
    let sshd = s.sshd();
    sshd.ssh(&alice)
        .run()
        .assert_success()
        .assert_stdout("Welcome to GitLab, @alice!\n")
        .assert_stderr("");
    s.write_config(&original);
}
