//! Finding processes left behind: scans `/proc` for processes whose command line or working
//! directory points into a folder (e.g. a sandbox's repository storage). Used to prove that a push
//! cut off mid-stream leaves no `git` running on the server side.

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// A process seen in `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id.
    pub pid: u32,
    /// Command line, arguments joined with spaces.
    pub cmdline: String,
    /// Working directory (empty when unreadable).
    pub cwd: String,
}

/// Live processes (not zombies) whose command line mentions `dir` or whose working directory is
/// inside `dir`, and whose command line contains `name` (e.g. `git`).
pub fn processes_under(dir: &Path, name: &str) -> Vec<ProcInfo> {
    let dir = dir.display().to_string();
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let base = entry.path();
        let Ok(raw) = fs::read(base.join("cmdline")) else {
            continue;
        };
        if raw.is_empty() {
            continue; // kernel thread or zombie
        }
        if let Ok(stat) = fs::read_to_string(base.join("stat")) {
            // Field 3 (after the parenthesised comm) is the state; Z is a zombie.
            if stat
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
            {
                continue;
            }
        }
        let cmdline = String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim()
            .to_owned();
        let cwd = fs::read_link(base.join("cwd"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if cmdline.contains(name) && (cmdline.contains(&dir) || cwd.starts_with(&dir)) {
            found.push(ProcInfo { pid, cmdline, cwd });
        }
    }
    found
}

/// Waits up to `timeout` for [`processes_under`] to become empty; returns what is left.
pub fn wait_until_gone(dir: &Path, name: &str, timeout: Duration) -> Vec<ProcInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = processes_under(dir, name);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}
