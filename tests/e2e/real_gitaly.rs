//! The end-to-end Git tests again, against GitLab's own Gitaly 16.11.6 instead of the dev Gitaly
//! (built from Debian packages by `support/real-gitaly.sh` on first use, then cached; see
//! docs/real-gitaly.md). Same bodies, same assertions: where the two Gitalys differ, the dev
//! Gitaly is fixed, so the fast default stays faithful.
//!
//! Covered: clone (protocol v0 and v2), fetch, ls-remote, push accepted with the post-receive
//! messages, push refused by `/allowed` in Gitaly's pre-receive hook, console messages,
//! `git archive --remote`, a repository missing in the storage, Gitaly down and the wrong or a
//! missing token, the Gitaly connection reset mid-clone and mid-push, pushes cut or killed
//! mid-stream (refs unchanged, nothing left running), and git-lfs next to Gitaly's clone/push.

use test_support::GitalyKind::Real;

use crate::{faults, git_over_ssh as g, lfs_transfer};

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
