//! Where things live: the workspace, the built binaries, the per-test directories.
//!
//! sshd refuses an `AuthorizedKeysCommand` whose path or any parent directory is not root-owned or
//! is group/world-writable (OpenSSH `safe_path`), so sandbox roots cannot live under `/tmp`. They go
//! to `<workspace>/target/e2e/<unique>` with mode 0755. Unix socket paths are limited to about 108
//! bytes, so sockets go to a short directory under `/tmp` instead.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The four product binaries that `make compile` installs into `bin/`.
pub const PRODUCT_BINARIES: [&str; 4] = [
    "gitlab-shell",
    "gitlab-shell-authorized-keys-check",
    "gitlab-shell-authorized-principals-check",
    "gitlab-shell-check",
];

/// The workspace root (where `Cargo.toml`, `bin/` and `target/` are).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).unwrap_or(here).to_path_buf()
}

/// The release build directory, `<workspace>/target/release`.
pub fn release_dir() -> PathBuf {
    workspace_root().join("target").join("release")
}

/// Environment variable naming a folder to take the four product binaries from instead of the
/// build output, e.g. the Go GitLab Shell's binaries to check that a test pins real behaviour:
/// `GITLAB_SHELL_E2E_BIN_DIR=/tmp/go-gls/x/usr/bin cargo test --release -p gitlab-shell-e2e`.
pub const BIN_DIR_OVERRIDE: &str = "GITLAB_SHELL_E2E_BIN_DIR";

/// The folder named by [`BIN_DIR_OVERRIDE`], if set.
pub fn bin_dir_override() -> Option<PathBuf> {
    #[expect(
        clippy::disallowed_methods,
        reason = "test support, not the product: an explicit override for the binaries under test"
    )]
    std::env::var_os(BIN_DIR_OVERRIDE)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Environment variable that pins the product binaries to `<workspace>/bin` (set by `make test`,
/// so the suite runs exactly what `make compile` ships).
pub const BINARIES_FROM: &str = "GITLAB_SHELL_TEST_BINARIES";

/// Path of a built program: `<workspace>/bin/<name>` (what `make compile` installs) or
/// `target/release/<name>`, whichever is newer, so a `cargo build` after `make compile` is seen;
/// always `bin/<name>` when it exists and [`BINARIES_FROM`] is `bin`.
/// Panics with a hint when neither exists.
#[track_caller]
pub fn built_binary(name: &str) -> PathBuf {
    let installed = workspace_root().join("bin").join(name);
    #[expect(
        clippy::disallowed_methods,
        reason = "test support, not the product: which build of the binaries the suite runs"
    )]
    let pinned = std::env::var_os(BINARIES_FROM).is_some_and(|v| v == "bin");
    if pinned && installed.is_file() {
        return installed;
    }
    let candidates = [installed, release_dir().join(name)];
    let newest = candidates
        .iter()
        .filter_map(|p| fs::metadata(p).ok().map(|m| (m.modified().ok(), p.clone())))
        .max_by_key(|(mtime, _)| *mtime);
    match newest {
        Some((_, path)) => path,
        None => panic!(
            "{name} is not built: run `make compile` (or `cargo build --release --workspace --bins`)"
        ),
    }
}

/// A fresh directory `<base>/<name>-<pid>-<n>` with mode 0755, where `<base>` is
/// `<workspace>/target/e2e` (created 0755 as well).
pub fn unique_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = e2e_base().join(format!("{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    make_dir(&dir);
    dir
}

/// `<workspace>/target/e2e`, or `/var/lib/gitlab-shell-e2e` when some parent of the workspace
/// would make sshd refuse the keys command (e.g. a checkout below a group-writable folder).
pub fn e2e_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let target = workspace_root().join("target");
        make_dir(&target);
        let base = target.join("e2e");
        make_dir(&base);
        if sshd_safe(&base) {
            base
        } else {
            let fallback = PathBuf::from("/var/lib/gitlab-shell-e2e");
            make_dir(&fallback);
            fallback
        }
    })
    .clone()
}

/// Creates `dir` (and parents) and sets mode 0755 on it.
#[track_caller]
pub fn make_dir(dir: &Path) {
    if let Err(e) = fs::create_dir_all(dir) {
        panic!("cannot create {}: {e}", dir.display());
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o755)) {
        panic!("cannot chmod {}: {e}", dir.display());
    }
}

/// Whether `dir` and every parent is owned by root or by us and not group/world-writable: the
/// check sshd applies to an `AuthorizedKeysCommand` path.
pub fn sshd_safe(dir: &Path) -> bool {
    let me = current_uid();
    dir.ancestors().all(|p| match fs::metadata(p) {
        Ok(m) => (m.uid() == 0 || m.uid() == me) && m.mode() & 0o022 == 0,
        Err(_) => false,
    })
}

/// A short, private directory under `/tmp` for unix sockets (removed on drop).
#[track_caller]
pub fn socket_dir() -> tempfile::TempDir {
    match tempfile::Builder::new().prefix("gls").tempdir_in("/tmp") {
        Ok(d) => d,
        Err(e) => panic!("cannot create a socket directory in /tmp: {e}"),
    }
}

/// The user the tests run as (login user for sshd), from `id -un`.
pub fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| id("-un")).clone()
}

/// Our uid, from `id -u`.
pub fn current_uid() -> u32 {
    static UID: OnceLock<u32> = OnceLock::new();
    *UID.get_or_init(|| id("-u").parse().unwrap_or(u32::MAX))
}

fn id(flag: &str) -> String {
    match Command::new("id").arg(flag).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => panic!("`id {flag}` failed"),
    }
}
