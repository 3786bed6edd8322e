//! Command-line and `SSH_ORIGINAL_COMMAND` parsing for the three argument-taking binaries
//! (GitLab Shell `internal/command/commandargs`).

pub mod authorized_keys;
pub mod authorized_principals;
pub mod shell;
pub mod shellwords;

pub use shell::Identity;

/// Turns raw OS bytes into text the way Go sees them: a Go string keeps invalid UTF-8, and
/// ranging over it (shellwords) or JSON-encoding it yields one U+FFFD for every invalid byte.
/// (`to_string_lossy` would fold a whole truncated sequence such as `\xe2\x82` into one.)
pub fn go_lossy(raw: &std::ffi::OsStr) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = raw.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    loop {
        match std::str::from_utf8(bytes) {
            Ok(valid) => {
                out.push_str(valid);
                return out;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len());
                out.extend(std::iter::repeat_n(char::REPLACEMENT_CHARACTER, bad));
                bytes = &rest[bad..];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::go_lossy;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn go_lossy_replaces_every_invalid_byte() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain", "plain"),
            (b"\xe2\x82", "\u{fffd}\u{fffd}"),
            (b"x\xf0\x9f\x92y", "x\u{fffd}\u{fffd}\u{fffd}y"),
            (b"\xe2\x82\xac ok \xff", "\u{20ac} ok \u{fffd}"),
            (b"\xe1\x80A", "\u{fffd}\u{fffd}A"),
        ];
        for (raw, want) in cases {
            assert_eq!(go_lossy(OsStr::from_bytes(raw)), *want, "{raw:?}");
        }
    }
}
