//! Local system users for the tests that play an operator's install (docs/install.md): a Git user
//! created by the documented command, and an administrator with an ordinary
//! `~/.ssh/authorized_keys`. Names are unique per test (`gls<tag><pid><n>`), so a test never
//! touches a real `git` user; every user is deleted with its home (`userdel -r`) on drop.
//! Creating and deleting users is serialised: `useradd`/`userdel` lock `/etc/passwd`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::run::Cmd;

static PASSWD: Mutex<()> = Mutex::new(());

/// Held while a test changes `/etc/passwd` (user creation and deletion).
pub fn passwd_lock() -> MutexGuard<'static, ()> {
    PASSWD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fresh user name: `gls<tag><pid><n>` (lower case, at most 31 characters).
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = format!("gls{tag}{}{n}", std::process::id());
    name.truncate(31);
    name
}

/// A local user, deleted (with its home) on drop.
#[derive(Debug)]
pub struct LocalUser {
    name: String,
}

impl LocalUser {
    /// Takes charge of deleting `name` on drop, whoever creates it (e.g. a documented
    /// `adduser` command the test runs).
    pub fn adopt(name: &str) -> LocalUser {
        LocalUser {
            name: name.to_owned(),
        }
    }

    /// Creates a user with a home folder, `/bin/sh` and an unlocked password field (`*`).
    #[track_caller]
    pub fn create(tag: &str) -> LocalUser {
        let user = LocalUser::adopt(&unique_name(tag));
        let _lock = passwd_lock();
        Cmd::new("useradd")
            .args(["-m", "-s", "/bin/sh", "-p", "*", &user.name])
            .run()
            .assert_success();
        user
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the user exists (`getent passwd`).
    pub fn exists(&self) -> bool {
        Cmd::new("getent").args(["passwd", &self.name]).run().code == 0
    }

    /// The home folder from the password database.
    #[track_caller]
    pub fn home(&self) -> PathBuf {
        let run = Cmd::new("getent").args(["passwd", &self.name]).run();
        run.assert_success();
        let line = run.stdout_str();
        match line.trim().split(':').nth(5) {
            Some(h) => PathBuf::from(h),
            None => panic!("no home in {line:?}"),
        }
    }

    /// `chown <user>:<group of user>` of `path`.
    #[track_caller]
    pub fn chown(&self, path: &std::path::Path) {
        Cmd::new("chown")
            .arg(format!("{0}:{0}", self.name))
            .arg(path)
            .run()
            .assert_success();
    }
}

impl Drop for LocalUser {
    fn drop(&mut self) {
        let _lock = passwd_lock();
        // userdel refuses while the user still runs something (an sshd session being torn
        // down): retry for a few seconds.
        for _ in 0..50 {
            let run = Cmd::new("userdel").args(["-r", &self.name]).run();
            if run.code == 0 || !self.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}
