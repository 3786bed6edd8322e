//! `docs/install.md`, played on a scratch root like a node. The commands are the doc's own: every
//! ```` ```sh node ```` block is run line by line in document order (as root, with a `PATH`
//! without cargo), the ```` ```yaml ```` block is applied to `config.yml`, and the
//! ```` ```sshd_config ```` block with the `Match User` lines is appended to Debian's stock
//! `sshd_config` (`/usr/share/openssh/sshd_config`). What the test changes, and only that:
//!
//! - the Git user `git` is a test user (`glsg<pid><n>`), deleted at the end, so a real `git` user
//!   is never touched; `/opt/gitlab-shell`, `/var/log/gitlab-shell`, `/etc/ssh/sshd_config` and
//!   GitLab's `/home/git/gitlab` are folders of a scratch root under `target/e2e`;
//! - `make` runs in this workspace with `MANDIR` in the scratch root (the man pages would go to
//!   `/usr/local/share/man`), and `make setup` copies `config.yml.example` with the same names
//!   mapped (`CONFIG_EXAMPLE`; the example logs to `/var/log/gitlab-shell`);
//! - `gitlab_url` points at the stub internal API, "GitLab" being a [`Sandbox`] (stub API with the
//!   shared secret, dev Gitaly with the repositories).
//!
//! Then sshd runs that config on a free port of 127.0.0.1, and the test clones and pushes as the
//! Git user, and logs in as another local user with an ordinary `~/.ssh/authorized_keys`: the
//! `Match User` block must not lock the administrators out.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use test_support::paths::{current_uid, unique_dir, workspace_root};
use test_support::sshd::{SSHD_PATH, free_port};
use test_support::users::{LocalUser, unique_name};
use test_support::{ClientKey, Cmd, Commit, Run, Sandbox};

const DOC: &str = include_str!("../../docs/install.md");

/// Debian's stock sshd_config, as openssh-server installs it.
const STOCK_SSHD_CONFIG: &str = "/usr/share/openssh/sshd_config";

/// A PATH with the system's programs and no cargo: `make install` must not need it.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
projects:
  - path: group/hello
    id: 1
    members: { alice: admin }
"#;

/// One step of the doc, in document order.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// A command line of a ```` ```sh node ```` block.
    Shell(String),
    /// A ```` ```yaml ```` block: `key: value` lines for config.yml.
    Yaml(String),
    /// A ```` ```sshd_config ```` block.
    SshdConfig(String),
}

/// The steps of `doc`: the lines of ```` ```sh node ```` blocks (comments and blank lines
/// dropped), and the yaml and sshd_config blocks.
fn steps(doc: &str) -> Vec<Step> {
    let mut out = Vec::new();
    let mut block: Option<(String, String)> = None;
    for line in doc.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut block, fence) {
            (None, Some(info)) => block = Some((info.trim().to_owned(), String::new())),
            (None, None) => {}
            (Some((info, body)), Some(_)) => {
                match info.as_str() {
                    "sh node" => out.extend(
                        body.lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty() && !l.starts_with('#'))
                            .map(|l| Step::Shell(l.to_owned())),
                    ),
                    "yaml" => out.push(Step::Yaml(body.clone())),
                    "sshd_config" => out.push(Step::SshdConfig(body.clone())),
                    _ => {}
                }
                block = None;
            }
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    out
}

/// `text` with every standalone word `git` (not part of a longer name or path: neighbours other
/// than letters, digits, `_`, `.`, `/` and `-`) replaced by `user`.
fn replace_user(text: &str, user: &str) -> String {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || "_./-".contains(c));
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("git") {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + 3..].chars().next();
        out.push_str(&rest[..at]);
        if word(before) || word(after) {
            out.push_str("git");
        } else {
            out.push_str(user);
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    out
}

/// The node's names mapped to the scratch root's.
struct Names {
    user: String,
    paths: Vec<(&'static str, PathBuf)>,
}

impl Names {
    fn apply(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (from, to) in &self.paths {
            text = text.replace(from, &to.display().to_string());
        }
        replace_user(&text, &self.user)
    }
}

/// Sets `key: value` in a config.yml (replacing the key's line, or appending it).
fn set_yaml_key(config: &Path, key: &str, value: &str) {
    let text = fs::read_to_string(config).unwrap();
    let prefix = format!("{key}:");
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found = true;
                format!("{key}: {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(format!("{key}: {value}"));
    }
    fs::write(config, out.join("\n") + "\n").unwrap();
}

#[track_caller]
fn expect_ok(run: &Run, what: &str) {
    assert_eq!(run.code, 0, "{what}\n{run}");
}

#[test]
fn doc_steps_are_found_in_order() {
    let steps = steps(DOC);
    let shell: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Shell(c) => Some(c.as_str()),
            _ => None,
        })
        .collect();
    // The user first, then the binaries, then setup; sshd is checked before the first login.
    let pos = |needle: &str| {
        shell
            .iter()
            .position(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("docs/install.md runs no {needle:?}: {shell:?}"))
    };
    assert!(pos("adduser") < pos("make install"));
    assert!(pos("make install") < pos("make setup"));
    assert!(pos("make setup") < pos("sshd -t"));
    assert!(pos("sshd -t") < pos("gitlab-shell-check"));
    assert_eq!(
        steps
            .iter()
            .filter(|s| matches!(s, Step::SshdConfig(b) if b.contains("Match User git")))
            .count(),
        1
    );
    assert_eq!(
        replace_user(
            "chown git:git /home/git/gitlab-shell; Match User git; gitlab git-upload-pack .git",
            "u1"
        ),
        "chown u1:u1 /home/git/gitlab-shell; Match User u1; gitlab git-upload-pack .git"
    );
}

#[test]
fn install_md_played_on_a_scratch_root_like_a_node() {
    assert_eq!(
        current_uid(),
        0,
        "this test plays a node install: it creates users and runs sshd, as root"
    );
    // "GitLab": the stub API (with the shared secret) and the dev Gitaly with the project.
    let secret = "install-test-shared-secret-0123456789";
    let mut builder = Sandbox::builder("op-install")
        .fixture_yaml(FIXTURE)
        .secret(secret.as_bytes().to_vec());
    let alice = builder.client_key("alice", 1, Some("alice"));
    let sandbox = builder
        .seed(
            "group/hello",
            vec![Commit::new("main", "Initial\n", "README.md", "# Hello\n")],
        )
        .build();
    // The Git user's gitlab-shell reaches Gitaly on its unix socket, as on a node.
    let gitaly = sandbox.gitaly().unwrap().address();
    let socket = PathBuf::from(gitaly.strip_prefix("unix:").unwrap());
    fs::set_permissions(socket.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o777)).unwrap();

    let scratch = unique_dir("op-install-node");
    for dir in ["opt", "var/log", "etc/ssh", "gitlab", "man"] {
        fs::create_dir_all(scratch.join(dir)).unwrap();
    }
    let sshd_config = scratch.join("etc/ssh/sshd_config");
    fs::copy(STOCK_SSHD_CONFIG, &sshd_config).unwrap();
    let git_user = LocalUser::adopt(&unique_name("g"));
    let names = Names {
        user: git_user.name().to_owned(),
        paths: vec![
            ("/opt/gitlab-shell", scratch.join("opt/gitlab-shell")),
            (
                "/var/log/gitlab-shell",
                scratch.join("var/log/gitlab-shell"),
            ),
            ("/etc/ssh/sshd_config", sshd_config.clone()),
            ("/home/git/gitlab", scratch.join("gitlab")),
        ],
    };
    let example = scratch.join("config.yml.example");
    fs::write(
        &example,
        names.apply(&fs::read_to_string(workspace_root().join("config.yml.example")).unwrap()),
    )
    .unwrap();
    // The privilege separation folder a node's sshd service creates.
    fs::create_dir_all("/run/sshd").unwrap();
    let root = scratch.join("opt/gitlab-shell");
    let gitlab_secret = scratch.join("gitlab/.gitlab_shell_secret");
    let mut secret_written = false;
    let mut match_block = String::new();

    for step in steps(DOC) {
        match step {
            Step::Shell(line) => {
                let mut command = names.apply(&line);
                if let Some(rest) = command.strip_prefix("make ") {
                    command = format!(
                        "make -C {} --no-print-directory {rest} MANDIR={}",
                        workspace_root().display(),
                        scratch.join("man").display()
                    );
                }
                let run = Cmd::new("bash")
                    .args(["-euo", "pipefail", "-c", &command])
                    .env_clear()
                    .env("PATH", NODE_PATH)
                    .env("HOME", "/root")
                    .env("LANG", "C.UTF-8")
                    .env("CONFIG_EXAMPLE", &example)
                    .current_dir(&scratch)
                    .timeout(Duration::from_secs(120))
                    .run();
                expect_ok(&run, &format!("docs/install.md: {line}"));
                if line.contains("gitlab-shell-check") {
                    run.assert_stdout_contains("Internal API available: OK");
                }
                if line.ends_with("gitlab-shell -version") {
                    run.assert_stdout_contains(format!(
                        "gitlab-shell v{}-",
                        include_str!("../../VERSION").trim()
                    ));
                }
                if line.starts_with("sshd -T") {
                    run.assert_stdout_contains(format!(
                        "authorizedkeyscommand {}/bin/gitlab-shell-authorized-keys-check {} %u %k\n",
                        root.display(),
                        names.user
                    ));
                    run.assert_stdout_contains("authorizedkeysfile none\n");
                }
            }
            Step::Yaml(block) => {
                let config = root.join("config.yml");
                for line in block.lines().filter(|l| l.contains(": ")) {
                    let (key, value) = line.split_once(": ").unwrap();
                    let value = if key == "gitlab_url" {
                        format!("\"{}\"", sandbox.api().tcp_url())
                    } else {
                        names.apply(value)
                    };
                    set_yaml_key(&config, key, &value);
                }
            }
            Step::SshdConfig(block) if block.contains("Match User") => {
                match_block = names.apply(&block);
                let mut text = fs::read_to_string(&sshd_config).unwrap();
                text.push('\n');
                text.push_str(&match_block);
                fs::write(&sshd_config, text).unwrap();
            }
            Step::SshdConfig(_) => {}
        }
        // GitLab Rails writes its secret as the Git user (mode 0600) once that user exists.
        if !secret_written && git_user.exists() {
            fs::write(&gitlab_secret, secret).unwrap();
            fs::set_permissions(&gitlab_secret, fs::Permissions::from_mode(0o600)).unwrap();
            git_user.chown(&gitlab_secret);
            secret_written = true;
        }
    }
    assert!(match_block.contains("Match User"), "no sshd_config block");

    // What the install left: a usable account, root-owned binaries, a log folder of the user.
    let passwd = Cmd::new("getent").args(["passwd", git_user.name()]).run();
    let shell = passwd
        .stdout_str()
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        !shell.ends_with("nologin") && !shell.ends_with("false"),
        "{passwd}"
    );
    let shadow = Cmd::new("getent").args(["shadow", git_user.name()]).run();
    assert!(
        !shadow
            .stdout_str()
            .split(':')
            .nth(1)
            .unwrap()
            .starts_with('!'),
        "locked: {shadow}"
    );
    for p in [&root, &root.join("bin"), &root.join("bin/gitlab-shell")] {
        let m = fs::metadata(p).unwrap();
        assert!(m.uid() == 0 && m.mode() & 0o022 == 0, "{}", p.display());
    }
    assert_eq!(
        fs::read_to_string(root.join("VERSION")).unwrap(),
        include_str!("../../VERSION")
    );
    let log_dir = scratch.join("var/log/gitlab-shell");
    assert_eq!(
        fs::metadata(&log_dir).unwrap().uid(),
        fs::metadata(git_user.home()).unwrap().uid(),
        "the log folder belongs to the Git user"
    );
    assert!(
        !root.join(".gitlab_shell_secret").is_file()
            || root.join(".gitlab_shell_secret").is_symlink()
    );

    // sshd: Debian's stock config plus the documented lines, on 127.0.0.1.
    let port = free_port();
    let sshd_log = scratch.join("sshd.log");
    let sshd = Cmd::new(SSHD_PATH)
        .args(["-D", "-f"])
        .arg(&sshd_config)
        .args([
            "-o",
            &format!("Port={port}"),
            "-o",
            "ListenAddress=127.0.0.1",
        ])
        .arg("-o")
        .arg(format!("PidFile={}", scratch.join("sshd.pid").display()))
        .arg("-E")
        .arg(&sshd_log)
        .timeout(Duration::from_secs(600))
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "sshd not listening\n{}",
            fs::read_to_string(&sshd_log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let ssh = |key: &ClientKey| {
        format!(
            "ssh -F /dev/null -i {} -p {port} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR",
            key.private_key.display()
        )
    };
    let sshd_said = || fs::read_to_string(&sshd_log).unwrap_or_default();

    // The Git user: welcome, clone, push.
    let welcome = Cmd::new("sh")
        .arg("-c")
        .arg(format!("{} -T {}@127.0.0.1", ssh(&alice), git_user.name()))
        .run();
    assert_eq!(welcome.code, 0, "{welcome}\n{}", sshd_said());
    welcome.assert_stdout("Welcome to GitLab, @alice!\n");
    let work = sandbox.work_dir("install-clone");
    let url = format!("{}@127.0.0.1:group/hello.git", git_user.name());
    let git = || sandbox.git().git().env("GIT_SSH_COMMAND", ssh(&alice));
    let run = git().arg("clone").arg(&url).arg(&work).run();
    assert_eq!(run.code, 0, "{run}\n{}", sshd_said());
    fs::write(work.join("pushed.txt"), "from the install test\n").unwrap();
    git()
        .current_dir(&work)
        .args(["add", "pushed.txt"])
        .run()
        .assert_success();
    git()
        .current_dir(&work)
        .args([
            "commit",
            "-q",
            "-m",
            "Pushed through the documented install",
        ])
        .run()
        .assert_success();
    let run = git()
        .current_dir(&work)
        .args(["push", "origin", "main"])
        .run();
    assert_eq!(run.code, 0, "{run}\n{}", sshd_said());
    let pushed = git().current_dir(&work).args(["rev-parse", "HEAD"]).run();
    let server = sandbox
        .git()
        .git()
        .arg("--git-dir")
        .arg(sandbox.repo_path("group/hello"))
        .args(["rev-parse", "main"])
        .run();
    assert_eq!(server.stdout_str(), pushed.stdout_str());
    // The binaries ran as the Git user and logged into its folder.
    let log = log_dir.join("gitlab-shell.log");
    assert!(
        fs::read_to_string(&log)
            .unwrap()
            .contains("executing git command"),
        "{}",
        log.display()
    );

    // Another local user with an ordinary ~/.ssh/authorized_keys still logs in.
    let admin = LocalUser::create("a");
    let admin_ssh = admin.home().join(".ssh");
    fs::create_dir_all(&admin_ssh).unwrap();
    let admin_key = ClientKey::generate(&scratch, "admin");
    fs::write(
        admin_ssh.join("authorized_keys"),
        format!("{}\n", admin_key.public_line),
    )
    .unwrap();
    fs::set_permissions(&admin_ssh, fs::Permissions::from_mode(0o700)).unwrap();
    Cmd::new("chown")
        .args(["-R", &format!("{0}:{0}", admin.name())])
        .arg(&admin_ssh)
        .run()
        .assert_success();
    let run = Cmd::new("sh")
        .arg("-c")
        .arg(format!(
            "{} {}@127.0.0.1 'id -un'",
            ssh(&admin_key),
            admin.name()
        ))
        .run();
    assert_eq!(run.code, 0, "{run}\n{}", sshd_said());
    run.assert_stdout(format!("{}\n", admin.name()));
    // ... while the same key is refused for the Git user (only GitLab's keys count there).
    let run = Cmd::new("sh")
        .arg("-c")
        .arg(format!("{} {}@127.0.0.1", ssh(&admin_key), git_user.name()))
        .run();
    run.assert_code(255)
        .assert_stderr_contains("Permission denied (publickey)");

    drop(sshd);
    drop(admin);
    drop(git_user);
    let _ = fs::remove_dir_all(&scratch);
}
