//! `gitlab-shell-authorized-principals-check` as sshd's `AuthorizedPrincipalsCommand` runs it
//! (behaviour §1.4): one line per principal, no API call, exact errors.

use test_support::Sandbox;

use crate::shell_commands::framed;

const BIN: &str = "gitlab-shell-authorized-principals-check";
const OPTIONS: &str = "no-port-forwarding,no-X11-forwarding,no-agent-forwarding,no-pty";

fn sandbox() -> Sandbox {
    Sandbox::builder("principals").gitaly(false).build()
}

#[test]
fn one_line_per_principal_without_api() {
    let s = sandbox();
    // No gitlab_url at all: this binary never calls the API.
    s.write_config("log_level: info\n");
    let root = s.root().display().to_string();
    let want = format!(
        "command=\"{root}/bin/gitlab-shell username-alice\",{OPTIONS} sshUsers\ncommand=\"{root}/bin/gitlab-shell username-alice\",{OPTIONS} admins\n"
    );
    s.run(BIN, &["alice", "sshUsers", "admins"], &[], b"")
        .assert_success()
        .assert_stdout(want)
        .assert_stderr("");
    assert!(s.api().requests().is_empty());
}

#[test]
fn argument_errors_are_unframed() {
    let s = sandbox();
    let usage = |n: usize| {
        format!(
            "# Insufficient arguments. {n}. Usage\n#\tgitlab-shell-authorized-principals-check <key-id> <principal1> [<principal2>...]\n"
        )
    };
    let cases: &[(&[&str], String)] = &[
        (&[], usage(0)),
        (&["alice"], usage(1)),
        (&["", "p"], "# No key_id provided\n".into()),
        (
            &["alice", "p", ""],
            "# An invalid principal was provided\n".into(),
        ),
    ];
    for (args, err) in cases {
        s.run(BIN, args, &[], b"")
            .assert_code(1)
            .assert_stdout("")
            .assert_stderr(err);
    }
}

#[test]
fn invalid_key_id_and_principal_are_framed_line_by_line() {
    let s = sandbox();
    s.run(BIN, &["al ice", "p"], &[], b"")
        .assert_code(1)
        .assert_stdout("")
        .assert_stderr(framed("invalid key_id: al ice"));
    let root = s.root().display().to_string();
    s.run(BIN, &["alice", "ok", "bad\nline"], &[], b"")
        .assert_code(1)
        .assert_stdout(format!(
            "command=\"{root}/bin/gitlab-shell username-alice\",{OPTIONS} ok\n"
        ))
        .assert_stderr(framed("invalid value: bad\nline"));
}

#[test]
fn startup_errors() {
    let s = sandbox();
    s.run(
        BIN,
        &["alice", "p"],
        &[("GITLAB_SHELL_DIR", "/nonexistent/gls")],
        b"",
    )
    .assert_code(1)
    .assert_stderr("Failed to determine executable, exiting\n");
    std::fs::remove_file(s.root().join(".gitlab_shell_secret")).unwrap();
    s.run(BIN, &["alice", "p"], &[], b"").assert_code(1).assert_stdout("").assert_stderr(format!(
        "Failed to read config, exiting: open {}/.gitlab_shell_secret: no such file or directory\n",
        s.root().display()
    ));
}
