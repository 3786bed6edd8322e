//! Bakes the product version (from the workspace `VERSION` file) and the build time into the
//! binaries, as GitLab Shell's Makefile does with `-ldflags -X main.Version=… -X main.BuildTime=…`.
//! `GITLAB_SHELL_BUILD_TIME` (format `%Y%m%d.%H%M%S`) may be set by the Makefile; otherwise the
//! Go default `19700101.000000` is used so builds are reproducible.

use std::fs;
use std::path::Path;

fn main() {
    let version_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../VERSION");
    println!("cargo:rerun-if-changed={}", version_file.display());
    println!("cargo:rerun-if-env-changed=GITLAB_SHELL_BUILD_TIME");
    let version = fs::read_to_string(&version_file)
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| env!("CARGO_PKG_VERSION").to_owned());
    #[expect(
        clippy::disallowed_methods,
        reason = "build scripts read cargo's environment"
    )]
    let build_time = std::env::var("GITLAB_SHELL_BUILD_TIME")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "19700101.000000".to_owned());
    println!("cargo:rustc-env=GITLAB_SHELL_VERSION=v{version}");
    println!("cargo:rustc-env=GITLAB_SHELL_BUILD_TIME={build_time}");
}
