//! Go's text escapes that GitLab Shell's output and requests depend on: `%q` quoting (in error
//! messages) and `url.QueryEscape` (query parameters such as `key=` and `username=`).

/// Go's `%q` of a string (`strconv.Quote`): double quotes; `"` and `\` escaped; `\a \b \f \n
/// \r \t \v` by name; other ASCII controls as `\x..`; characters Go does not count as
/// printable as `\u....` (`\U........` above U+FFFF). Go's printable test is its Unicode
/// table; this one knows the controls, spaces other than the ASCII one, format characters,
/// private use and the noncharacters U+FFFE/U+FFFF, not unassigned code points.
pub fn go_quote(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !go_printable(c) && (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if !go_printable(c) => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Whether Go's `strconv.IsPrint` holds for a non-ASCII-control character, as far as it can be
/// told without Unicode's category tables (see [`go_quote`]).
fn go_printable(c: char) -> bool {
    let n = c as u32;
    let format = matches!(
        n,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x2064
            | 0x2066..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe0001
            | 0xe0020..=0xe007f
    );
    let private_or_non = matches!(
        n,
        0xe000..=0xf8ff | 0xfffe | 0xffff | 0xf0000..=0xffffd | 0x100000..=0x10fffd
    );
    !(c.is_control() || (c.is_whitespace() && c != ' ') || format || private_or_non)
}

/// Go's `url.QueryEscape`: unreserved `A-Za-z0-9-_.~` kept, space → `+`, the rest `%XX`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => {
                let _ = std::fmt::Write::write_fmt(&mut out, format_args!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values are Go's `fmt.Sprintf("%q", s)`.
    #[test]
    fn go_quote_matches_go() {
        for (input, go) in [
            ("https://other.example/x", r#""https://other.example/x""#),
            ("a\"b\\c", r#""a\"b\\c""#),
            ("\u{7}\u{8}\u{c}\n\r\t\u{b}", r#""\a\b\f\n\r\t\v""#),
            ("\u{0}\u{1b}\u{7f}", r#""\x00\x1b\x7f""#),
            (
                "\u{85}\u{a0}\u{2028}\u{3000}",
                r#""\u0085\u00a0\u2028\u3000""#,
            ),
            ("\u{ad}\u{200b}\u{feff}", r#""\u00ad\u200b\ufeff""#),
            ("\u{e000}\u{ffff}\u{10fffd}", r#""\ue000\uffff\U0010fffd""#),
            ("é ü 日本 😀", r#""é ü 日本 😀""#),
        ] {
            assert_eq!(go_quote(input), go, "{input:?}");
        }
    }

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(query_escape("AAAA+b/c=="), "AAAA%2Bb%2Fc%3D%3D");
        assert_eq!(query_escape("a b~*"), "a+b~%2A");
    }
}
