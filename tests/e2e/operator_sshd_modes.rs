//! The two other ways an operator wires GitLab Shell into OpenSSH, through a real sshd:
//!
//! - forced-command file mode: `gitlab-shell-authorized-keys add-key` writes the authorized_keys
//!   file (`support/sshd_config_authorized_keys_file.tmpl` points sshd at it); a login runs
//!   `gitlab-shell key-N` and prints the welcome message; after `rm-key` the key is refused;
//! - SSH certificates: `support/sshd_config_principals.tmpl` (TrustedUserCAKeys +
//!   `AuthorizedPrincipalsCommand … gitlab-shell-authorized-principals-check %i sshUsers`).
//!
//! Both render `support/sshd_config.tmpl` first, so the rest of the config is the one every other
//! end-to-end test uses.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use test_support::paths::{built_binary, current_user};
use test_support::sshd::{SSHD_PATH, SshdConfig, free_port};
use test_support::{ClientKey, Cmd, Run, Sandbox, Spawned};

/// The file-mode snippet (replaces the key lookup lines of `sshd_config.tmpl`).
const KEYS_FILE_SNIPPET: &str = include_str!("../../support/sshd_config_authorized_keys_file.tmpl");
/// The certificate snippet (added to `sshd_config.tmpl`).
const PRINCIPALS_SNIPPET: &str = include_str!("../../support/sshd_config_principals.tmpl");

const FIXTURE: &str = r#"
users:
  - { id: 1, username: alice, name: Alice Liddell }
  - { id: 2, username: bob, name: Bob Reader }
"#;

/// An sshd with a config written by the test; killed (its process group) on drop.
struct PrivateSshd {
    _process: Spawned,
    port: u16,
    log: PathBuf,
}

impl PrivateSshd {
    /// Renders `sshd_config.tmpl` for `root`, lets `edit` change it, starts sshd and waits until
    /// it listens.
    fn start(root: &Path, edit: impl Fn(String) -> String) -> PrivateSshd {
        let dir = root.join("sshd-private");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        if current_user() == "root" {
            fs::create_dir_all("/run/sshd").unwrap();
        }
        let host_key = dir.join("host_key");
        Cmd::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .run()
            .assert_success();
        let port = free_port();
        let rendered = SshdConfig {
            port,
            host_key,
            pid_file: dir.join("sshd.pid"),
            user: current_user(),
            shell_root: root.to_path_buf(),
        }
        .render();
        let config = dir.join("sshd_config");
        fs::write(&config, edit(rendered)).unwrap();
        let log = dir.join("sshd.log");
        // `-C` evaluates the `Match User` block for the login user.
        let check = Cmd::new(SSHD_PATH)
            .arg("-T")
            .arg("-f")
            .arg(&config)
            .arg("-C")
            .arg(format!(
                "user={},host=localhost,addr=127.0.0.1",
                current_user()
            ))
            .run();
        assert_eq!(check.code, 0, "sshd -T rejects the config\n{check}");
        // Every command line written in the config must be in effect (see the principals
        // snippet for an OpenSSH ordering trap).
        for line in fs::read_to_string(&config).unwrap().lines() {
            if let Some(cmd) = line
                .trim_start()
                .strip_prefix("AuthorizedPrincipalsCommand ")
            {
                check.assert_stdout_contains(format!("authorizedprincipalscommand {cmd}\n"));
            }
        }
        let process = Cmd::new(SSHD_PATH)
            .args(["-D", "-f"])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .timeout(Duration::from_secs(600))
            .spawn();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd not listening\n{}",
                read(&log)
            );
            thread::sleep(Duration::from_millis(10));
        }
        PrivateSshd {
            _process: process,
            port,
            log,
        }
    }

    /// `ssh` with only `key` (and its `-cert.pub`, if any), no config, no host key checks.
    fn ssh(&self, key: &ClientKey) -> Cmd {
        Cmd::new("ssh")
            .args(["-F", "/dev/null", "-i"])
            .arg(&key.private_key)
            .args(["-p", &self.port.to_string()])
            .args(["-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "LogLevel=ERROR"])
            .arg(format!("{}@127.0.0.1", current_user()))
    }

    #[track_caller]
    fn expect(&self, run: &Run, code: i32) {
        assert_eq!(
            run.code,
            code,
            "{run}\n--- sshd log ---\n{}",
            read(&self.log)
        );
    }
}

fn read(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// `config` without its key lookup lines (`AuthorizedKeysFile`, `AuthorizedKeysCommand*`).
/// `config` with the key lookup lines of its `Match User` block replaced by `replacement`
/// (placed where the first of them was, so it stays inside the block).
fn replace_key_lookup(config: &str, replacement: &str) -> String {
    let mut out = String::new();
    let mut placed = false;
    for l in config.lines() {
        let t = l.trim_start();
        if t.starts_with("AuthorizedKeysFile") || t.starts_with("AuthorizedKeysCommand") {
            if !placed {
                out.push_str(replacement);
                placed = true;
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    assert!(placed, "no key lookup lines in\n{config}");
    out
}

fn welcome(user: &str) -> String {
    format!("Welcome to GitLab, @{user}!\n")
}

#[test]
fn forced_command_file_written_by_the_keys_tool_lets_openssh_log_in() {
    let mut builder = Sandbox::builder("op-keys-file")
        .fixture_yaml(FIXTURE)
        .gitaly(false)
        .config_extra("auth_file: \"ssh/authorized_keys\"\n");
    let alice = builder.client_key("alice", 7, Some("alice"));
    let bob = builder.client_key("bob", 8, Some("bob"));
    let sandbox = builder.build();
    let tool = sandbox.bin("gitlab-shell-authorized-keys");
    fs::copy(built_binary("gitlab-shell-authorized-keys"), &tool).unwrap();
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
    let auth_file = sandbox.root().join("ssh/authorized_keys");

    sandbox
        .run(
            "gitlab-shell-authorized-keys",
            &["add-key", "key-7", &alice.public_line],
            &[],
            b"",
        )
        .assert_success();
    sandbox
        .run(
            "gitlab-shell-authorized-keys",
            &["batch-add-keys"],
            &[],
            format!("key-8\t{}\n", bob.public_line).as_bytes(),
        )
        .assert_success();

    // The file holds exactly the lines the AuthorizedKeysCommand would print for these keys.
    let user = current_user();
    let mut expected = String::new();
    for key in [&alice, &bob] {
        let check = sandbox.run(
            "gitlab-shell-authorized-keys-check",
            &[&user, &user, &key.blob],
            &[],
            b"",
        );
        check.assert_success();
        expected.push_str(&check.stdout_str());
    }
    assert_eq!(fs::read_to_string(&auth_file).unwrap(), expected);
    assert_eq!(
        fs::metadata(&auth_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let sshd = PrivateSshd::start(sandbox.root(), |config| {
        let snippet = KEYS_FILE_SNIPPET
            .replace("@AUTH_FILE@", &auth_file.display().to_string())
            .replace("@USER@", &current_user());
        replace_key_lookup(&config, &snippet)
    });
    let run = sshd.ssh(&alice).run();
    sshd.expect(&run, 0);
    run.assert_stdout(welcome("alice"));
    sshd.expect(&sshd.ssh(&bob).run(), 0);

    // Removed keys are refused at once (sshd rereads the file at every login).
    sandbox
        .run(
            "gitlab-shell-authorized-keys",
            &["rm-key", "key-7"],
            &[],
            b"",
        )
        .assert_success();
    let run = sshd.ssh(&alice).run();
    sshd.expect(&run, 255);
    run.assert_stderr_contains("Permission denied (publickey)");
    let run = sshd.ssh(&bob).run();
    sshd.expect(&run, 0);
    run.assert_stdout(welcome("bob"));
}

#[test]
fn ssh_certificate_logs_in_through_the_principals_check() {
    let sandbox = Sandbox::builder("op-principals")
        .fixture_yaml(FIXTURE)
        .gitaly(false)
        .build();
    let keys = sandbox.root().join("cert-keys");
    fs::create_dir_all(&keys).unwrap();
    let ca = keys.join("ca");
    Cmd::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "gitlab-ca", "-f"])
        .arg(&ca)
        .run()
        .assert_success();
    // A key GitLab does not know: only its certificate (key id = GitLab username) can log in.
    let alice = ClientKey::generate(&keys, "alice-cert");
    let sign = |principal: &str| {
        Cmd::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "alice", "-n", principal, "-V", "-5m:+1h"])
            .arg(alice.private_key.with_extension("pub"))
            .run()
            .assert_success();
    };
    let ca_pub = ca.with_extension("pub");
    let snippet = PRINCIPALS_SNIPPET
        .replace("@CA_KEY@", &ca_pub.display().to_string())
        .replace("@ROOT@", &sandbox.root().display().to_string())
        .replace("@USER@", &current_user());
    let sshd = PrivateSshd::start(sandbox.root(), |config| {
        // Before the key lookup lines: see the snippet's comment.
        let at = config.find("\n    AuthorizedKeysFile").unwrap() + 1;
        format!("{}{snippet}{}", &config[..at], &config[at..])
    });

    sign("sshUsers");
    let run = sshd.ssh(&alice).run();
    sshd.expect(&run, 0);
    run.assert_stdout(welcome("alice"));

    // A certificate for another principal is refused.
    sign("admins");
    let run = sshd.ssh(&alice).run();
    sshd.expect(&run, 255);
    run.assert_stderr_contains("Permission denied (publickey)");
}
