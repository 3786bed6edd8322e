//! Fuzz target bodies for GitLab Shell's hostile-input parsers, shared by the libFuzzer binaries
//! in `fuzz_targets/` and by the e2e suite (`tests/e2e/hostile_corpus.rs`, which replays every
//! seed-corpus file through these same functions).
//!
//! Each function takes raw fuzzer bytes, drives one public entry point of the product and
//! asserts invariants that must hold for *any* input (a violated invariant panics, which
//! libFuzzer reports as a crash):
//! - [`ssh_command`]: `SSH_ORIGINAL_COMMAND` parsing (`args::shell::split_command`) and allow-listing
//!   (`command::build`);
//! - [`argv`]: argv identity (`key-N` / `username-X`) and the two check binaries' argv;
//! - [`pktline`]: pkt-line decoding, the buffered reader and the raw scanner;
//! - [`config_yaml`]: `config.yml` parsing;
//! - [`api_json`]: internal API response decoding (JSON bodies and the HTTP/1.1 response reader).

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use gitlab_shell::api;
use gitlab_shell::args::shell::{self, Identity};
use gitlab_shell::args::{authorized_keys, authorized_principals};
use gitlab_shell::command::{self, Command};
use gitlab_shell::config::Config;
use gitlab_shell::error::Error;
use gitlab_shell::sshenv::SshEnv;

/// A GitLab Shell root with only a `.gitlab_shell_secret`, made once per process.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join("gls-fuzz-root");
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join(".gitlab_shell_secret"), b"fuzz-secret\n");
        dir
    })
}

/// Two configs: defaults, and one with every feature gate switched the other way.
fn configs() -> &'static [Config] {
    static CONFIGS: OnceLock<Vec<Config>> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        [
            &b""[..],
            b"lfs:\n  pure_ssh_protocol: true\npat:\n  enabled: false\n",
        ]
        .iter()
        .filter_map(|yaml| Config::from_yaml(root(), yaml).ok())
        .collect()
    })
}

/// `SSH_ORIGINAL_COMMAND` = `data` for `gitlab-shell key-1`: parsing never panics, and the
/// command chosen is exactly the one word 0 names (nothing else is ever allowed).
pub fn ssh_command(data: &[u8]) {
    let argv = [OsString::from("key-1")];
    let env = SshEnv::from_values(
        "127.0.0.1 1 127.0.0.1 22",
        OsString::from_vec(data.to_vec()),
        "",
    );
    let words = match shell::split_command(&env) {
        Ok(words) => words,
        Err(shell::Error::InvalidSshCommand(_)) => return,
        Err(e) => panic!("unexpected parse error {e:?} for {data:?}"),
    };
    assert_eq!(shell::parse_identity(&argv), Identity::KeyId("1".into()));
    for config in configs() {
        match command::build(&words, config) {
            Ok(cmd) => {
                let want = match cmd {
                    Command::Discover => None,
                    Command::UploadPack => Some("git-upload-pack"),
                    Command::ReceivePack => Some("git-receive-pack"),
                    Command::UploadArchive => Some("git-upload-archive"),
                    Command::LfsAuthenticate => Some("git-lfs-authenticate"),
                    Command::LfsTransfer => Some("git-lfs-transfer"),
                    Command::TwoFactorRecover => Some("2fa_recovery_codes"),
                    Command::TwoFactorVerify => Some("2fa_verify"),
                    Command::PersonalAccessToken(_) => Some("personal_access_token"),
                };
                assert_eq!(
                    words.first().map(String::as_str),
                    want,
                    "allow-list mismatch for {data:?}"
                );
            }
            Err(Error::UnknownCommand) => {
                assert!(!words.is_empty(), "empty command refused: {data:?}");
            }
            Err(e) => panic!("unexpected build error {e:?} for {data:?}"),
        }
    }
}

/// `data` split on NUL is argv[1..] of the three argument-taking binaries.
pub fn argv(data: &[u8]) {
    let args: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let lossy: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let last = |i: usize| lossy[i].rsplit(' ').next().unwrap_or("").to_owned();
    match shell::parse_identity(&args) {
        Identity::KeyId(digits) => {
            assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()));
            assert!((0..lossy.len()).any(|i| last(i) == format!("key-{digits}")));
        }
        Identity::Username(name) => {
            assert!(!name.is_empty());
            assert!(!name.contains([' ', '\t', '\n', '\r', '\x0c']));
            assert!((0..lossy.len()).any(|i| last(i) == format!("username-{name}")));
        }
        Identity::None => {
            assert!((0..lossy.len()).all(|i| {
                let l = last(i);
                !(l.len() > 4
                    && l.starts_with("key-")
                    && l[4..].bytes().all(|b| b.is_ascii_digit()))
            }));
        }
    }
    if let Ok(a) = authorized_keys::parse(&args) {
        assert!(!a.expected_user.is_empty() && !a.actual_user.is_empty() && !a.key.is_empty());
    }
    if let Ok(a) = authorized_principals::parse(&args) {
        let _ = format!("{a:?}");
    }
}

/// pkt-line input: `decode_all`, the buffered [`pktline::Reader`] (always progresses and ends)
/// and the [`pktline::RawScanner`] (frames + rest give back the input exactly); also the
/// chunked encoder round-trips.
pub fn pktline(data: &[u8]) {
    let _ = pktline::decode::decode_all(data);

    let mut reader = pktline::Reader::new(data);
    for step in 0.. {
        assert!(step <= data.len() / 4 + 1, "reader did not progress");
        match reader.read_packet() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let mut reader = pktline::Reader::new(data);
    let _ = reader.read_text_until_flush();
    let mut sink = Vec::new();
    let _ = pktline::Reader::new(data).copy_data_until_flush(&mut sink);

    let mut scanner = pktline::RawScanner::new(data);
    let mut seen = Vec::with_capacity(data.len());
    for step in 0.. {
        assert!(step <= data.len() / 4 + 1, "scanner did not progress");
        match scanner.next_frame() {
            Ok(Some(frame)) => {
                assert!(!frame.is_empty());
                seen.extend_from_slice(frame);
            }
            Ok(None) | Err(_) => break,
        }
    }
    if scanner.read_rest(&mut seen).is_ok() {
        assert_eq!(seen, data, "raw scanner lost or invented bytes");
    }

    let mut encoded = Vec::new();
    pktline::encode::chunked(data, &mut encoded);
    let mut back = Vec::with_capacity(data.len());
    match pktline::decode::decode_all(&encoded) {
        Ok(packets) => {
            for p in packets {
                back.extend_from_slice(p.as_data().unwrap_or_default());
            }
        }
        Err(e) => panic!("chunked encoding does not decode: {e:?}"),
    }
    assert_eq!(back, data, "chunked round trip");
}

/// `config.yml` text. Inputs naming special file systems are skipped: the config may point
/// `secret_file` anywhere and reading `/dev/zero` never ends (as in Go).
pub fn config_yaml(data: &[u8]) {
    for bad in [&b"/dev"[..], b"/proc", b"/sys"] {
        if data.windows(bad.len()).any(|w| w == bad) {
            return;
        }
    }
    if let Ok(config) = Config::from_yaml(root(), data) {
        let _ = config.http_settings.read_timeout();
        let _ = format!("{config:?}");
    }
}

/// Internal API answers: byte 0 picks the status, the rest is the body decoded as every
/// response type; then the whole input is read as an HTTP/1.1 response.
pub fn api_json(data: &[u8]) {
    let (status, body) = match data.split_first() {
        Some((b, rest)) => ([200, 300, 201, 399][usize::from(*b % 4)], rest),
        None => (200, data),
    };
    let _ = api::decode::<api::allowed::Response>(status, body);
    let _ = api::decode::<api::discover::Response>(status, body);
    let _ = api::decode::<api::check::Response>(status, body);
    let _ = api::decode::<api::authorized_keys::Response>(status, body);
    let _ = api::decode::<api::lfs_authenticate::Response>(status, body);
    let _ = api::decode::<api::personal_access_token::Response>(status, body);
    let _ = api::decode::<api::two_factor_manual_otp_check::Response>(status, body);
    let _ = api::decode::<api::two_factor_recovery_codes::Response>(status, body);
    match api::error_from_body(400 + status % 100, body) {
        api::Error::Api { .. } | api::Error::Status(_) => {}
        other => panic!("error_from_body gave {other:?}"),
    }
    let mut input = data;
    if let Ok(resp) = api::http1::read_response(&mut input) {
        assert!(resp.body.len() <= data.len());
    }
}
