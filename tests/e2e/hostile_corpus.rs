//! The fuzz seed corpora as a regression suite (issue 5 §1): every file of
//! `fuzz/corpus/<target>/` and `tests/fixtures/hostile/<target>/` (inputs that once crashed or
//! hung a target) is fed to the very functions the libFuzzer targets run (`fuzz/src/lib.rs`,
//! compiled in here), so `make test` catches regressions without cargo-fuzz or nightly flags.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code, reason = "the shared fuzz bodies are all used below")]
mod gls_fuzz;

use std::path::PathBuf;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("ssh_command", gls_fuzz::ssh_command),
    ("argv", gls_fuzz::argv),
    ("pktline", gls_fuzz::pktline),
    ("config_yaml", gls_fuzz::config_yaml),
    ("api_json", gls_fuzz::api_json),
];

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [
        root.join("fuzz/corpus").join(target),
        root.join("tests/fixtures/hostile").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.push((e.path(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_seed_and_regression_input_passes_its_fuzz_target() {
    let mut total = 0;
    for (name, run) in TARGETS {
        let files = inputs(name);
        assert!(files.len() >= 10, "{name}: only {} seeds", files.len());
        for (path, bytes) in files {
            let outcome = std::panic::catch_unwind(|| run(&bytes));
            assert!(outcome.is_ok(), "{name}: {} fails", path.display());
            total += 1;
        }
    }
    assert!(total >= 50, "only {total} corpus inputs");
}
