//! Spawning the real git programs the way Gitaly does (gitaly.md §5.1): a clean environment
//! (no inherited `GIT_*`), `-c key=value` global options, `GIT_PROTOCOL` only for `version=1|2`,
//! and every child in its own process group so a cancelled RPC kills git *and* its helpers
//! (index-pack, hooks) – nothing is left orphaned.

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tonic::Status;

/// Extra configuration Gitaly puts on every `git receive-pack` (Gitaly `git.ReceivePackConfig`
/// plus the alternate-refs tweak), before the request's own options.
pub const RECEIVE_PACK_CONFIG: &[&str] = &[
    "receive.advertisePushOptions=true",
    "receive.autogc=false",
    "core.alternateRefsCommand=exit 0 #",
    "receive.hideRefs=refs/environments/",
    "receive.hideRefs=refs/keep-around/",
    "receive.hideRefs=refs/merge-requests/",
    "receive.hideRefs=refs/pipelines/",
    "receive.hideRefs=refs/remotes/",
    "receive.hideRefs=refs/tmp/",
    "receive.fsckObjects=true",
    "receive.fsck.badTimezone=ignore",
    "receive.fsck.missingSpaceBeforeDate=ignore",
    "receive.fsck.zeroPaddedFilemode=ignore",
];

/// Checks request `git_config_options` (`key=value`; split at the first `=`).
pub fn check_config_options(options: &[String]) -> Result<(), Status> {
    for o in options {
        match o.split_once('=') {
            Some((k, _)) if !k.trim().is_empty() => {}
            _ => {
                return Err(Status::invalid_argument(format!(
                    "cannot convert invalid config key: {o:?}"
                )));
            }
        }
    }
    Ok(())
}

/// What to run: `git [-c opt]... <subcommand> <repo>`.
pub struct GitSpec<'a> {
    /// `upload-pack`, `receive-pack` or `upload-archive`.
    pub subcommand: &'a str,
    /// Absolute repository path.
    pub repo: &'a Path,
    /// Global `-c` options, in order.
    pub config: Vec<String>,
    /// The request's `git_protocol` (`version=2`, …; anything else is ignored).
    pub git_protocol: &'a str,
    /// Extra environment for git and its hooks.
    pub env: Vec<(String, String)>,
}

/// A running git child. Dropping it kills the whole process group unless the child was
/// reaped with [`GitChild::wait`] first.
pub struct GitChild {
    /// The tokio child (stdin/stdout/stderr are piped).
    pub child: tokio::process::Child,
    pgid: Option<i32>,
}

impl GitChild {
    /// Waits for git to exit; afterwards dropping no longer signals the group.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let st = self.child.wait().await?;
        // Leftover group members (should be none) are still killed below before forgetting.
        self.kill_group();
        self.pgid = None;
        Ok(st)
    }

    /// Kills git and every process in its group right now.
    pub fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid {
            kill_process_group(pgid);
        }
        let _ = self.child.start_kill();
    }
}

impl Drop for GitChild {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            kill_process_group(pgid);
        }
    }
}

#[expect(
    unsafe_code,
    reason = "kill(2) on our own child's process group; no safe std API exists"
)]
fn kill_process_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses the
        // process group created for our own child.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Spawns git as described by `spec`, with piped stdio, a cleaned environment and its own
/// process group.
pub fn spawn(spec: &GitSpec<'_>) -> std::io::Result<GitChild> {
    let mut cmd = tokio::process::Command::new("git");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(&k);
        }
    }
    for c in &spec.config {
        cmd.arg("-c").arg(c);
    }
    cmd.arg(spec.subcommand).arg(spec.repo);
    if matches!(spec.git_protocol, "version=1" | "version=2") {
        cmd.env("GIT_PROTOCOL", spec.git_protocol);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.current_dir(spec.repo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = cmd.spawn()?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    Ok(GitChild { child, pgid })
}

/// Go's `exec.ExitError` text: `exit status N` or `signal: killed`.
pub fn exit_text(st: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(9)) => "signal: killed".to_owned(),
        (None, Some(s)) => format!("signal: {s}"),
        (None, None) => "exit status -1".to_owned(),
    }
}

/// The value Gitaly puts in `ExitStatus` (`-1` when killed by a signal, like Go's `ExitCode`).
pub fn exit_value(st: &ExitStatus) -> i32 {
    st.code().unwrap_or(-1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_option_validation() {
        assert!(check_config_options(&["a.b=c".into(), "x.y=".into()]).is_ok());
        let e = check_config_options(&["nokey".into()]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
