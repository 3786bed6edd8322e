//! Bakes the product version and the build time into the binaries, as GitLab Shell's Makefile
//! does with `-ldflags -X main.Version=… -X main.BuildTime=…` (docs/packaging.md):
//! - version: `v` + the workspace `VERSION` file, plus `-g<commit>` (`git rev-parse --short
//!   HEAD`, the suffix `git describe` gives, or `GITLAB_SHELL_COMMIT`) when built from a Git
//!   checkout;
//! - build time, `%Y%m%d.%H%M%S` in UTC: `GITLAB_SHELL_BUILD_TIME` when set, else
//!   `SOURCE_DATE_EPOCH` (reproducible builds, e.g. the Debian package), else the current time.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[expect(
    clippy::disallowed_methods,
    reason = "build scripts read cargo's environment"
)]
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `git <args>` in the workspace, trimmed stdout; `None` without git or outside a checkout.
fn git(workspace: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(workspace)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `%Y%m%d.%H%M%S` (UTC) of `secs` since the Unix epoch (days to civil date: H. Hinnant's
/// algorithm).
fn format_utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}.{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn main() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest.join("../..");
    let version_file = workspace.join("VERSION");
    println!("cargo:rerun-if-changed={}", version_file.display());
    println!("cargo:rerun-if-env-changed=GITLAB_SHELL_BUILD_TIME");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let version = fs::read_to_string(&version_file)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned());

    // The commit: GITLAB_SHELL_COMMIT when set (the Makefile exports it to every cargo run, so a
    // new commit rebuilds the shipped binaries), else HEAD when this script runs, `-dirty` when the
    // tracked files differ from it. This script reruns when the crate's sources change (not at
    // every commit: that would rebuild everything depending on this crate after each commit).
    println!("cargo:rerun-if-env-changed=GITLAB_SHELL_COMMIT");
    println!("cargo:rerun-if-changed={}", manifest.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("build.rs").display()
    );
    let commit = env("GITLAB_SHELL_COMMIT").or_else(|| {
        let sha = git(&workspace, &["rev-parse", "--short", "HEAD"])?;
        let dirty = git(
            &workspace,
            &["status", "--porcelain", "--untracked-files=no"],
        )
        .is_some();
        Some(if dirty { format!("{sha}-dirty") } else { sha })
    });
    let full_version = match &commit {
        Some(c) => format!("v{version}-g{c}"),
        None => format!("v{version}"),
    };

    let build_time = env("GITLAB_SHELL_BUILD_TIME").unwrap_or_else(|| {
        let secs = env("SOURCE_DATE_EPOCH")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            });
        format_utc(secs)
    });
    println!("cargo:rustc-env=GITLAB_SHELL_VERSION={full_version}");
    println!("cargo:rustc-env=GITLAB_SHELL_BUILD_TIME={build_time}");
    println!(
        "cargo:rustc-env=GITLAB_SHELL_COMMIT={}",
        commit.unwrap_or_default()
    );
}
