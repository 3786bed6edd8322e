//! The operator's Makefile targets: `make install DESTDIR=… PREFIX=…` (binaries, mode 755) and
//! `make setup GITLAB_SHELL_DIR=…` (config.yml from the example, secret 0600, log and key
//! folders), each run twice into temporary folders: the second run must not overwrite anything.
//!
//! `make -o compile` keeps make from rebuilding inside the test (the test binary itself runs under
//! cargo); the binaries come from `bin/`, i.e. `make compile` must have run (as `make test` does).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use test_support::{Cmd, Run};

/// The binaries `make install` installs (the Makefile's `BINARIES`).
const INSTALLED: [&str; 6] = [
    "gitlab-shell",
    "gitlab-shell-authorized-keys-check",
    "gitlab-shell-authorized-principals-check",
    "gitlab-shell-check",
    "gitlab-shell-authorized-keys",
    "gitlab-sshd",
];

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn make(args: &[&str], home: &Path) -> Run {
    let run = Cmd::new("make")
        .arg("-C")
        .arg(workspace())
        .arg("--no-print-directory")
        .args(args)
        .env("HOME", home)
        .run();
    run.assert_success();
    run
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn make_install_copies_the_binaries_with_mode_755_into_destdir_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let destdir = tmp.path().join("stage");
    let destdir_arg = format!("DESTDIR={}", destdir.display());
    for round in 0..2 {
        make(
            &["-o", "compile", "install", &destdir_arg, "PREFIX=/opt/gls"],
            tmp.path(),
        );
        let bin = destdir.join("opt/gls/bin");
        let mut names: Vec<String> = fs::read_dir(&bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = INSTALLED.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(names, want, "round {round}");
        for name in INSTALLED {
            let installed = bin.join(name);
            assert_eq!(mode(&installed), 0o755, "{name}");
            assert!(
                fs::read(&installed).unwrap()
                    == fs::read(workspace().join("bin").join(name)).unwrap(),
                "{name} differs from bin/{name}"
            );
        }
    }
    // The installed binary runs.
    let run = Cmd::new(destdir.join("opt/gls/bin/gitlab-shell-authorized-keys"))
        .arg("-version")
        .run();
    run.assert_success();
    assert!(
        run.stdout_str()
            .starts_with("gitlab-shell-authorized-keys v"),
        "{run}"
    );
}

#[test]
fn make_setup_prepares_a_home_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let shell_dir = home.join("gitlab-shell");
    let dir_arg = format!("GITLAB_SHELL_DIR={}", shell_dir.display());
    make(&["setup", &dir_arg], &home);

    let config = shell_dir.join("config.yml");
    let secret = shell_dir.join(".gitlab_shell_secret");
    let key_dir = home.join(".ssh");
    let auth_file = key_dir.join("authorized_keys");
    assert_eq!(
        fs::read(&config).unwrap(),
        fs::read(workspace().join("config.yml.example")).unwrap()
    );
    assert_eq!(mode(&config), 0o640);
    let secret_text = fs::read_to_string(&secret).unwrap();
    assert_eq!(secret_text.len(), 32, "{secret_text:?}");
    assert!(
        secret_text.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret_text:?}"
    );
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(mode(&key_dir), 0o700);
    assert_eq!(mode(&auth_file), 0o600);
    assert_eq!(fs::read(&auth_file).unwrap(), b"");

    // An operator edits everything, loosens modes; a second setup keeps the contents and only
    // tightens the modes back.
    fs::write(&config, "# mine\ngitlab_url: \"http://127.0.0.1:1\"\n").unwrap();
    fs::write(&secret, "my-own-secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&auth_file, "ssh-ed25519 AAAA admin\n").unwrap();
    fs::set_permissions(&key_dir, fs::Permissions::from_mode(0o755)).unwrap();
    make(&["setup", &dir_arg], &home);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "# mine\ngitlab_url: \"http://127.0.0.1:1\"\n"
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "my-own-secret");
    assert_eq!(mode(&secret), 0o600);
    assert_eq!(
        fs::read_to_string(&auth_file).unwrap(),
        "ssh-ed25519 AAAA admin\n"
    );
    assert_eq!(mode(&key_dir), 0o700);
}

#[test]
fn make_setup_follows_configured_secret_log_and_auth_file_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let shell_dir = tmp.path().join("gls");
    fs::create_dir_all(&shell_dir).unwrap();
    let keys = tmp.path().join("keys/git/authorized_keys");
    fs::write(
        shell_dir.join("config.yml"),
        format!(
            "gitlab_url: \"http://127.0.0.1:1\"\n\
             secret_file: secrets/shell_secret\n\
             log_file: \"log/gitlab-shell.log\"\n\
             auth_file: \"{}\"  # managed by gitlab-shell-authorized-keys\n",
            keys.display()
        ),
    )
    .unwrap();
    make(
        &[
            "setup",
            &format!("GITLAB_SHELL_DIR={}", shell_dir.display()),
        ],
        &home,
    );
    assert_eq!(mode(&shell_dir.join("secrets/shell_secret")), 0o600);
    assert!(shell_dir.join("log").is_dir());
    assert_eq!(mode(keys.parent().unwrap()), 0o700);
    assert_eq!(mode(&keys), 0o600);
    assert!(!shell_dir.join(".gitlab_shell_secret").exists());
    assert!(!home.join(".ssh").exists());

    // The prepared home works: the keys tool finds auth_file and the secret through config.yml.
    let tool = workspace().join("bin/gitlab-shell-authorized-keys");
    let run = Cmd::new(&tool)
        .args(["add-key", "key-3", "ssh-ed25519 AAAAC3Nza"])
        .env("GITLAB_SHELL_DIR", &shell_dir)
        .run();
    run.assert_success();
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        format!(
            "command=\"{}/bin/gitlab-shell key-3\",no-port-forwarding,no-X11-forwarding,\
             no-agent-forwarding,no-pty ssh-ed25519 AAAAC3Nza\n",
            shell_dir.display()
        )
    );
}
