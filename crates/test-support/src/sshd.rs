//! A private, real OpenSSH server (`/usr/sbin/sshd -D -e -f <config>`) on 127.0.0.1, configured
//! from `support/sshd_config.tmpl`: the same lines an operator puts in `/etc/ssh/sshd_config`
//! (`AuthorizedKeysCommand <root>/bin/gitlab-shell-authorized-keys-check <user> %u %k`, …).
//!
//! The login user is whoever runs the tests (root in CI, hence `PermitRootLogin
//! forced-commands-only`: a key is accepted only with the `command="…gitlab-shell key-N"` option
//! the keys check prints). Clients are `ssh`/`git` with a private key, no config file and no
//! known-hosts file ([`Sshd::ssh_command`]).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::keys::ClientKey;
use crate::paths::{current_uid, current_user, make_dir};
use crate::run::Cmd;

/// The template shipped in `support/`, also used by `make demo` and shown in the README.
pub const SSHD_CONFIG_TEMPLATE: &str = include_str!("../../../support/sshd_config.tmpl");

/// Where OpenSSH's server lives on Debian/Ubuntu.
pub const SSHD_PATH: &str = "/usr/sbin/sshd";

/// Values for the `@NAME@` placeholders of [`SSHD_CONFIG_TEMPLATE`].
#[derive(Clone, Debug)]
pub struct SshdConfig {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Host private key file.
    pub host_key: PathBuf,
    /// sshd's pid file.
    pub pid_file: PathBuf,
    /// The login user (`AllowUsers`, `AuthorizedKeysCommandUser`, expected user of the keys check).
    pub user: String,
    /// The GitLab Shell root whose `bin/gitlab-shell-authorized-keys-check` sshd runs.
    pub shell_root: PathBuf,
}

impl SshdConfig {
    /// The template with every placeholder filled in.
    pub fn render(&self) -> String {
        let permit_root = if self.user == "root" {
            "forced-commands-only"
        } else {
            "no"
        };
        SSHD_CONFIG_TEMPLATE
            .replace("@PORT@", &self.port.to_string())
            .replace("@HOST_KEY@", &self.host_key.display().to_string())
            .replace("@PID_FILE@", &self.pid_file.display().to_string())
            .replace("@PERMIT_ROOT_LOGIN@", permit_root)
            .replace("@USER@", &self.user)
            .replace("@ROOT@", &self.shell_root.display().to_string())
    }
}

/// Runs `"$0" "$@"` (sshd, or any test server) under a watchdog: when the parent (the test process) goes away for any
/// reason, its end of stdin closes and the watchdog kills the program by its PID.
pub const WATCHDOG: &str = r#"exec 3<&0
"$0" "$@" &
pid=$!
(read -r _ <&3; kill "$pid" 2>/dev/null) &
wait "$pid""#;

/// A running sshd; stopped (by PID) on drop, or when the test process dies.
pub struct Sshd {
    child: Child,
    lifeline: Option<ChildStdin>,
    port: u16,
    user: String,
    dir: PathBuf,
    log: PathBuf,
}

impl Sshd {
    /// Starts sshd for the GitLab Shell root `shell_root` (which must be sshd-safe, see
    /// [`crate::paths`]), keeping its files (config, host key, pid, log) in `<shell_root>/sshd`.
    /// Waits until it accepts connections. Panics when it cannot start.
    #[track_caller]
    pub fn start(shell_root: &Path) -> Sshd {
        let dir = shell_root.join("sshd");
        make_dir(&dir);
        if current_uid() == 0 {
            // The privilege separation directory; Debian creates it only in its service unit.
            make_dir(Path::new("/run/sshd"));
        }
        let host_key = dir.join("ssh_host_ed25519_key");
        if !host_key.exists() {
            Cmd::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e-host", "-f"])
                .arg(&host_key)
                .run()
                .assert_success();
        }
        let mut last_error = String::new();
        for _ in 0..5 {
            let config = SshdConfig {
                port: free_port(),
                host_key: host_key.clone(),
                pid_file: dir.join("sshd.pid"),
                user: current_user(),
                shell_root: shell_root.to_owned(),
            };
            let config_path = dir.join("sshd_config");
            write_file(&config_path, config.render().as_bytes());
            let log = dir.join("sshd.log");
            let log_file = match fs::File::create(&log) {
                Ok(f) => f,
                Err(e) => panic!("cannot create {}: {e}", log.display()),
            };
            // sshd runs under a small sh that also starts a watchdog reading our end of a
            // pipe: when this process goes away for any reason (even SIGKILL, where no Drop
            // runs) the pipe closes and the watchdog kills sshd by its PID. The sh itself exits
            // when sshd does, so a failed start is still seen by `try_wait`.
            let mut child = match Command::new("/bin/sh")
                .arg("-c")
                .arg(WATCHDOG)
                .arg(SSHD_PATH)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config_path)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
            {
                Ok(c) => c,
                Err(e) => panic!("cannot start {SSHD_PATH}: {e} (run `make deps`)"),
            };
            let lifeline = child.stdin.take();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_error = format!("sshd exited ({status}):\n{}", read_lossy(&log));
                    break;
                }
                if TcpStream::connect(("127.0.0.1", config.port)).is_ok() {
                    return Sshd {
                        child,
                        lifeline,
                        port: config.port,
                        user: config.user,
                        dir,
                        log,
                    };
                }
                if Instant::now() > deadline {
                    drop(lifeline);
                    let _ = child.wait();
                    last_error = format!("sshd not listening after 10s:\n{}", read_lossy(&log));
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        panic!("cannot start sshd: {last_error}");
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// sshd's private directory (config, host key, pid file, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What sshd logged so far (its stderr).
    pub fn log(&self) -> String {
        read_lossy(&self.log)
    }

    /// The scp-style remote for `git`: `<user>@127.0.0.1:<project>` (the port is in
    /// [`Sshd::ssh_command`]), so the repository path reaches GitLab Shell without a leading `/`.
    pub fn git_url(&self, project: &str) -> String {
        format!("{}@127.0.0.1:{project}", self.user)
    }

    /// The `GIT_SSH_COMMAND` value for `key`: no config file, only this key, no host key checks,
    /// never prompt.
    pub fn ssh_command(&self, key: &ClientKey) -> String {
        let mut s = String::from("ssh");
        for a in self.ssh_options(key) {
            s.push(' ');
            s.push_str(&crate::run::shell_quote(a.as_ref()));
        }
        s
    }

    /// `ssh` options (without the destination) for `key`.
    pub fn ssh_options(&self, key: &ClientKey) -> Vec<String> {
        vec![
            "-F".into(),
            "/dev/null".into(),
            "-i".into(),
            key.private_key.display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "StrictHostKeyChecking=no".into(),
            "-o".into(),
            "UserKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// An `ssh <options> <user>@127.0.0.1` command; add the remote command with [`Cmd::arg`].
    pub fn ssh(&self, key: &ClientKey) -> Cmd {
        Cmd::new("ssh")
            .args(self.ssh_options(key))
            .arg(format!("{}@127.0.0.1", self.user))
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Closing the pipe makes the watchdog kill sshd; its sh then exits.
        drop(self.lifeline.take());
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[track_caller]
fn write_file(path: &Path, bytes: &[u8]) {
    if let Err(e) = fs::write(path, bytes) {
        panic!("cannot write {}: {e}", path.display());
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o644));
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paths::unique_dir;

    /// The fixture works with any keys command: a script that accepts `key` and forces a command.
    #[test]
    fn sshd_runs_the_forced_command_from_the_keys_command() {
        let root = unique_dir("sshd-selftest");
        make_dir(&root.join("bin"));
        let key = ClientKey::generate(&root, "client");
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = \"$2\" ] || exit 0\n\
             [ \"$3\" = \"{}\" ] || exit 0\n\
             echo 'command=\"echo forced: $SSH_ORIGINAL_COMMAND\",no-pty {}'\n",
            key.blob,
            key.type_and_blob()
        );
        let keys_check = root.join("bin/gitlab-shell-authorized-keys-check");
        fs::write(&keys_check, script).unwrap();
        fs::set_permissions(&keys_check, fs::Permissions::from_mode(0o755)).unwrap();
        let sshd = Sshd::start(&root);

        let run = sshd.ssh(&key).arg("hello world").run();
        assert_eq!(run.code, 0, "{run}\n{}", sshd.log());
        run.assert_stdout("forced: hello world\n");

        let stranger = ClientKey::generate(&root, "stranger");
        let run = sshd.ssh(&stranger).arg("hello").run();
        run.assert_code(255)
            .assert_stderr_contains("Permission denied (publickey)");

        // Dropping the handle stops sshd (by PID, through the watchdog): nothing listens and no
        // sshd with this config is left.
        let port = sshd.port();
        let dir = sshd.dir().to_owned();
        drop(sshd);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
        let left = crate::procs::wait_until_gone(&dir, "sshd", Duration::from_secs(5));
        assert!(left.is_empty(), "{left:?}");
        fs::remove_dir_all(&root).unwrap();
    }
}
