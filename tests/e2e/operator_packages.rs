//! `make deb` and `make dist-tarball` (docs/packaging.md), built from what `make compile` put in
//! `bin/` (`make -o compile`: the test binary itself runs under cargo). The .deb holds
//! `/opt/gitlab-shell` (the binaries, root-owned, `VERSION`, the example config, `setup.sh`) and
//! the man pages; the tarball unpacks to `gitlab-shell/` with the same files and its `SHA256SUMS`
//! checks. The installed binaries run.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use test_support::paths::workspace_root;
use test_support::{Cmd, Run};

/// Both targets write into target/pkg: one at a time.
static PKG: Mutex<()> = Mutex::new(());

const VERSION: &str = include_str!("../../VERSION");

const BINARIES: [&str; 5] = [
    "gitlab-shell",
    "gitlab-shell-authorized-keys-check",
    "gitlab-shell-authorized-principals-check",
    "gitlab-shell-check",
    "gitlab-shell-authorized-keys",
];

#[track_caller]
fn make(target: &str) -> Run {
    let run = Cmd::new("make")
        .arg("-C")
        .arg(workspace_root())
        .args(["--no-print-directory", "-o", "compile", target])
        .timeout(std::time::Duration::from_secs(300))
        .run();
    run.assert_success();
    run
}

fn pkg_dir() -> PathBuf {
    workspace_root().join("target/pkg")
}

fn check_tree(root: &Path, man: &Path) {
    for b in BINARIES {
        let bin = root.join("bin").join(b);
        let run = Cmd::new(&bin).arg("-version").run();
        run.assert_success();
        assert!(
            run.stdout_str()
                .starts_with(&format!("{b} v{}", VERSION.trim())),
            "{run}"
        );
    }
    assert_eq!(fs::read_to_string(root.join("VERSION")).unwrap(), VERSION);
    assert!(root.join("config.yml.example").is_file());
    assert!(root.join("support/setup.sh").is_file());
    assert!(
        man.join("man1").read_dir().unwrap().count() == 5
            && man.join("man5").read_dir().unwrap().count() == 1,
        "{}",
        man.display()
    );
}

#[test]
fn make_deb_builds_a_package_of_opt_gitlab_shell() {
    let _one = PKG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let run = make("deb");
    let arch = Cmd::new("dpkg").arg("--print-architecture").run();
    let deb = pkg_dir().join(format!(
        "gitlab-shell-rs_{}-1_{}.deb",
        VERSION.trim(),
        arch.stdout_str().trim()
    ));
    run.assert_stdout_contains(format!(
        "target/pkg/{}",
        deb.file_name().unwrap().to_string_lossy()
    ));
    let info = Cmd::new("dpkg-deb").args(["--field"]).arg(&deb).run();
    info.assert_success()
        .assert_stdout_contains("Package: gitlab-shell-rs\n")
        .assert_stdout_contains(format!("Version: {}-1\n", VERSION.trim()));
    // Every file root-owned; the binaries 0755.
    let list = Cmd::new("dpkg-deb").arg("-c").arg(&deb).run();
    list.assert_success();
    for line in list.stdout_str().lines() {
        assert!(line.contains(" root/root "), "{line}");
        if line.contains("/opt/gitlab-shell/bin/gitlab-shell") {
            assert!(line.starts_with("-rwxr-xr-x"), "{line}");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    Cmd::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(tmp.path())
        .run()
        .assert_success();
    check_tree(
        &tmp.path().join("opt/gitlab-shell"),
        &tmp.path().join("usr/share/man"),
    );
}

#[test]
fn make_dist_tarball_writes_a_checked_tarball_of_gitlab_shell() {
    let _one = PKG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    make("dist-tarball");
    let sums = fs::read_to_string(pkg_dir().join("SHA256SUMS")).unwrap();
    let name = sums.split_whitespace().nth(1).unwrap().to_owned();
    assert!(
        name.starts_with(&format!("gitlab-shell-rs-{}-", VERSION.trim()))
            && name.ends_with("-linux.tar.gz"),
        "{sums}"
    );
    Cmd::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(pkg_dir())
        .run()
        .assert_success();
    let tmp = tempfile::tempdir().unwrap();
    Cmd::new("tar")
        .arg("-xzf")
        .arg(pkg_dir().join(&name))
        .arg("-C")
        .arg(tmp.path())
        .run()
        .assert_success();
    let names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["gitlab-shell"]);
    let root = tmp.path().join("gitlab-shell");
    check_tree(&root, &root.join("share/man"));
}
