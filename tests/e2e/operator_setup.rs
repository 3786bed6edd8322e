//! The operator's Makefile targets (docs/install.md): `make install DESTDIR=… PREFIX=…` copies
//! what `make compile` built, with a `PATH` without cargo, and `make uninstall` takes it back;
//! `make setup GITLAB_SHELL_DIR=… GITLAB_SHELL_USER=…` prepares a home for a (test) user: config
//! readable by the user, log and key folders owned by it, `~` being that user's home, no secret of
//! its own unless asked. Each is run twice: the second run must not overwrite anything.
//!
//! The binaries come from `bin/`, i.e. `make compile` must have run (as `make test` does).
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed setup step must fail the test"
)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use test_support::users::LocalUser;
use test_support::{ClientKey, Cmd, Run};

/// The binaries `make install` installs (the Makefile's `BINARIES`).
const INSTALLED: [&str; 6] = [
    "gitlab-shell",
    "gitlab-shell-authorized-keys-check",
    "gitlab-shell-authorized-principals-check",
    "gitlab-shell-check",
    "gitlab-shell-authorized-keys",
    "gitlab-sshd",
];

/// The man pages `make install` installs (support/man).
const MAN_PAGES: [&str; 6] = [
    "man1/gitlab-shell.1",
    "man1/gitlab-shell-authorized-keys-check.1",
    "man1/gitlab-shell-authorized-principals-check.1",
    "man1/gitlab-shell-check.1",
    "man1/gitlab-shell-authorized-keys.1",
    "man5/gitlab-shell-config.5",
];

/// A PATH with the system's programs and no cargo.
const NO_CARGO_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn make_with(args: &[&str], env: &[(&str, &str)]) -> Run {
    Cmd::new("make")
        .arg("-C")
        .arg(workspace())
        .arg("--no-print-directory")
        .args(args)
        .env_clear()
        .env("PATH", NO_CARGO_PATH)
        .env("HOME", "/root")
        .envs(env.iter().copied())
        .run()
}

#[track_caller]
fn make(args: &[&str], env: &[(&str, &str)]) -> Run {
    let run = make_with(args, env);
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

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn make_install_copies_the_build_without_cargo_and_uninstall_removes_it() {
    assert!(
        Cmd::new("sh")
            .args(["-c", "command -v cargo"])
            .env_clear()
            .env("PATH", NO_CARGO_PATH)
            .run()
            .code
            != 0,
        "cargo is in {NO_CARGO_PATH}: the test could not tell"
    );
    let tmp = tempfile::tempdir().unwrap();
    let destdir = tmp.path().join("stage");
    let destdir_arg = format!("DESTDIR={}", destdir.display());
    let args = [
        "install",
        destdir_arg.as_str(),
        "PREFIX=/opt/gls",
        "MANDIR=/usr/share/man",
    ];
    let root = destdir.join("opt/gls");
    for round in 0..2 {
        make(&args, &[]);
        let bin = root.join("bin");
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
        assert_eq!(
            fs::read_to_string(root.join("VERSION")).unwrap(),
            include_str!("../../VERSION")
        );
        assert_eq!(mode(&root.join("config.yml.example")), 0o644);
        assert_eq!(mode(&root.join("support/setup.sh")), 0o755);
        for page in MAN_PAGES {
            let path = destdir.join("usr/share/man").join(page);
            assert_eq!(mode(&path), 0o644, "{page}");
        }
    }
    // The installed binary runs.
    let run = Cmd::new(root.join("bin/gitlab-shell-authorized-keys"))
        .arg("-version")
        .run();
    run.assert_success();
    assert!(
        run.stdout_str()
            .starts_with("gitlab-shell-authorized-keys v"),
        "{run}"
    );

    // uninstall removes what install put there and keeps the operator's files.
    fs::write(root.join("config.yml"), "gitlab_url: http://127.0.0.1:1\n").unwrap();
    make(
        &[
            "uninstall",
            &destdir_arg,
            "PREFIX=/opt/gls",
            "MANDIR=/usr/share/man",
        ],
        &[],
    );
    assert!(!root.join("bin").exists());
    assert!(!root.join("VERSION").exists());
    assert!(!root.join("support").exists());
    for page in MAN_PAGES {
        assert!(!destdir.join("usr/share/man").join(page).exists(), "{page}");
    }
    assert!(root.join("config.yml").is_file());
}

#[test]
fn make_install_says_to_compile_first_when_bin_is_empty() {
    let run = make_with(
        &[
            "install",
            "DESTDIR=/nonexistent-stage",
            "BINARIES=no-such-binary",
        ],
        &[],
    );
    assert_ne!(run.code, 0);
    run.assert_stderr_contains("bin/no-such-binary missing: run `make compile` first");
    assert!(!Path::new("/nonexistent-stage").exists());
}

/// config.yml.example with its log in `log_dir` (the real one logs to /var/log/gitlab-shell).
fn example_logging_to(dir: &Path, log_dir: &Path) -> PathBuf {
    let example = fs::read_to_string(workspace().join("config.yml.example")).unwrap();
    let line = "log_file: \"/var/log/gitlab-shell/gitlab-shell.log\"";
    assert!(
        example.contains(line),
        "config.yml.example no longer has {line}"
    );
    let path = dir.join("config.yml.example");
    fs::write(
        &path,
        example.replace(
            line,
            &format!("log_file: \"{}/gitlab-shell.log\"", log_dir.display()),
        ),
    )
    .unwrap();
    path
}

#[test]
fn make_setup_prepares_a_home_for_the_user_and_never_overwrites() {
    let user = LocalUser::create("s");
    let (uid, gid) = owner(&user.home());
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let shell_dir = tmp.path().join("gitlab-shell");
    let log_dir = tmp.path().join("log/gitlab-shell");
    let example = example_logging_to(tmp.path(), &log_dir);
    let dir_arg = format!("GITLAB_SHELL_DIR={}", shell_dir.display());
    let user_arg = format!("GITLAB_SHELL_USER={}", user.name());
    let env = [("CONFIG_EXAMPLE", example.to_str().unwrap())];
    let run = make(&["setup", &dir_arg, &user_arg], &env);

    let config = shell_dir.join("config.yml");
    let secret = shell_dir.join(".gitlab_shell_secret");
    let key_dir = user.home().join(".ssh");
    let auth_file = key_dir.join("authorized_keys");
    assert_eq!(fs::read(&config).unwrap(), fs::read(&example).unwrap());
    assert_eq!((mode(&config), owner(&config)), (0o640, (0, gid)));
    // No secret of its own: GitLab links its own only when none is there.
    assert!(!secret.exists());
    run.assert_stdout_contains("no secret at");
    assert_eq!(owner(&log_dir), (uid, gid));
    assert_eq!((mode(&key_dir), owner(&key_dir)), (0o700, (uid, gid)));
    assert_eq!((mode(&auth_file), owner(&auth_file)), (0o600, (uid, gid)));
    assert_eq!(fs::read(&auth_file).unwrap(), b"");
    // The user can read its configuration (as sshd's AuthorizedKeysCommandUser must).
    Cmd::new("runuser")
        .args(["-u", user.name(), "--", "cat"])
        .arg(&config)
        .run()
        .assert_success();
    // Root's own ~/.ssh is not where the keys went.
    assert_ne!(key_dir, PathBuf::from("/root/.ssh"));

    // An operator edits everything, loosens modes; a second setup keeps the contents and only
    // tightens the modes back. A secret GitLab put there is made readable by the user.
    fs::write(&config, "# mine\ngitlab_url: \"http://127.0.0.1:1\"\n").unwrap();
    fs::write(&secret, "gitlabs-secret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&auth_file, "ssh-ed25519 AAAA admin\n").unwrap();
    fs::set_permissions(&key_dir, fs::Permissions::from_mode(0o755)).unwrap();
    make(&["setup", &dir_arg, &user_arg], &env);
    assert_eq!(
        fs::read_to_string(&config).unwrap(),
        "# mine\ngitlab_url: \"http://127.0.0.1:1\"\n"
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "gitlabs-secret");
    assert_eq!((mode(&secret), owner(&secret)), (0o640, (0, gid)));
    assert_eq!(
        fs::read_to_string(&auth_file).unwrap(),
        "ssh-ed25519 AAAA admin\n"
    );
    assert_eq!(mode(&key_dir), 0o700);
}

#[test]
fn make_setup_as_root_needs_a_user_and_generates_a_secret_only_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let shell_dir = tmp.path().join("gls");
    let example = example_logging_to(tmp.path(), &tmp.path().join("log"));
    let dir_arg = format!("GITLAB_SHELL_DIR={}", shell_dir.display());
    let env = [("CONFIG_EXAMPLE", example.to_str().unwrap())];
    let run = make_with(&["setup", &dir_arg], &env);
    assert_ne!(run.code, 0);
    run.assert_stderr_contains("make setup GITLAB_SHELL_USER=git");
    assert!(!shell_dir.join("config.yml").exists());

    let user = LocalUser::create("n");
    let (uid, gid) = owner(&user.home());
    make(
        &[
            "setup",
            &dir_arg,
            &format!("GITLAB_SHELL_USER={}", user.name()),
            "GITLAB_SHELL_NEW_SECRET=1",
        ],
        &env,
    );
    let secret = shell_dir.join(".gitlab_shell_secret");
    let text = fs::read_to_string(&secret).unwrap();
    assert_eq!(text.len(), 32, "{text:?}");
    assert!(text.bytes().all(|b| b.is_ascii_hexdigit()), "{text:?}");
    assert_eq!((mode(&secret), owner(&secret)), (0o600, (uid, gid)));
}

#[test]
fn make_setup_follows_configured_secret_log_and_auth_file_paths() {
    let user = LocalUser::create("f");
    let tmp = tempfile::tempdir().unwrap();
    let shell_dir = tmp.path().join("gls");
    fs::create_dir_all(shell_dir.join("secrets")).unwrap();
    fs::write(shell_dir.join("secrets/shell_secret"), "s3cret").unwrap();
    let keys = tmp.path().join("keys/git/authorized_keys");
    fs::write(
        shell_dir.join("config.yml"),
        format!(
            "gitlab_url: \"http://127.0.0.1:1\"\n\
             user: {}\n\
             secret_file: secrets/shell_secret\n\
             log_file: \"log/gitlab-shell.log\"\n\
             auth_file: \"{}\"  # managed by gitlab-shell-authorized-keys\n",
            user.name(),
            keys.display()
        ),
    )
    .unwrap();
    make(
        &[
            "setup",
            &format!("GITLAB_SHELL_DIR={}", shell_dir.display()),
            &format!("GITLAB_SHELL_USER={}", user.name()),
        ],
        &[],
    );
    assert_eq!(mode(&shell_dir.join("secrets/shell_secret")), 0o640);
    assert!(shell_dir.join("log").is_dir());
    assert_eq!(mode(keys.parent().unwrap()), 0o700);
    assert_eq!(mode(&keys), 0o600);
    assert!(!shell_dir.join(".gitlab_shell_secret").exists());
    assert!(!user.home().join(".ssh").exists());

    // The prepared home works: the keys tool finds auth_file and the secret through config.yml.
    let key = ClientKey::generate(tmp.path(), "k3");
    let tool = workspace().join("bin/gitlab-shell-authorized-keys");
    let run = Cmd::new(&tool)
        .args(["add-key", "key-3", &key.type_and_blob()])
        .env("GITLAB_SHELL_DIR", &shell_dir)
        .run();
    run.assert_success();
    assert_eq!(
        fs::read_to_string(&keys).unwrap(),
        format!(
            "command=\"{}/bin/gitlab-shell key-3\",no-port-forwarding,no-X11-forwarding,\
             no-agent-forwarding,no-pty {}\n",
            shell_dir.display(),
            key.type_and_blob()
        )
    );
}

#[test]
fn keys_tool_as_root_refuses_a_tilde_auth_file_outside_the_git_users_home() {
    let user = LocalUser::create("k");
    let tmp = tempfile::tempdir().unwrap();
    let shell_dir = tmp.path().join("gls");
    fs::create_dir_all(&shell_dir).unwrap();
    fs::write(shell_dir.join(".gitlab_shell_secret"), "s").unwrap();
    // The default auth_file (~/.ssh/authorized_keys) and the Git user of config.yml.
    fs::write(
        shell_dir.join("config.yml"),
        format!(
            "gitlab_url: \"http://127.0.0.1:1\"\nuser: {}\n",
            user.name()
        ),
    )
    .unwrap();
    let roots_home = tmp.path().join("root-home");
    fs::create_dir_all(&roots_home).unwrap();
    let key = ClientKey::generate(tmp.path(), "k5");
    let tool = workspace().join("bin/gitlab-shell-authorized-keys");
    let add = |home: &Path| {
        Cmd::new(&tool)
            .args(["add-key", "key-5", &key.type_and_blob()])
            .env("GITLAB_SHELL_DIR", &shell_dir)
            .env("HOME", home)
            .run()
    };
    let run = add(&roots_home);
    run.assert_code(1).assert_stderr(format!(
        "auth_file {home}/.ssh/authorized_keys is under HOME={home}, not in the home of {user} \
         ({user_home}): run as {user} (runuser -u {user} -- gitlab-shell-authorized-keys ...) or \
         set an absolute auth_file in config.yml\n",
        home = roots_home.display(),
        user = user.name(),
        user_home = user.home().display(),
    ));
    assert!(!roots_home.join(".ssh").exists());
    // With the Git user's home (as `runuser -u git` gives), the key goes there.
    let run = add(&user.home());
    run.assert_success();
    assert!(
        fs::read_to_string(user.home().join(".ssh/authorized_keys"))
            .unwrap()
            .contains(&key.type_and_blob())
    );
}
