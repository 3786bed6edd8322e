//! `SSH_ORIGINAL_COMMAND` splitting with go-shellwords v1.0.12 semantics (default options: no
//! `$VAR` or backtick expansion), because GitLab Shell uses that library and users' clients
//! depend on its quirks (behaviour §1.2). The `shell-words` crate follows POSIX sh instead
//! (it rejects `;` outright, unquotes backslashes differently inside double quotes, and has no
//! notion of `$(…)`), so the few rules are implemented here:
//! - split on space, TAB, CR, LF; `'…'` and `"…"` quote; a backslash outside single quotes
//!   takes the next character literally;
//! - parsing stops silently at the first unquoted `;` `&` `|` `<` `>` (`2>` also drops the `2`);
//! - backticks and `$(…)` are kept literally as part of a word (spaces inside too);
//! - an unterminated quote, escape, backtick or `$(`, or a bare `(` or `)`, is an error.
//!
//! Nothing is ever run through a shell.

/// The go-shellwords error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command line string")]
pub struct ParseError;

/// Splits `line` into words.
pub fn split(line: &str) -> Result<Vec<String>, ParseError> {
    let mut args = Vec::new();
    let mut buf = String::new();
    let (mut escaped, mut dq, mut sq, mut bq, mut dollar) = (false, false, false, false, false);
    // Whether `buf` holds a word (possibly empty, from `""`).
    let mut got = false;
    for r in line.chars() {
        if escaped {
            buf.push(r);
            escaped = false;
            got = true;
            continue;
        }
        if r == '\\' {
            if sq {
                buf.push(r);
            } else {
                escaped = true;
            }
            continue;
        }
        if matches!(r, ' ' | '\t' | '\r' | '\n') {
            if sq || dq || bq || dollar {
                buf.push(r);
            } else if got {
                args.push(std::mem::take(&mut buf));
                got = false;
            }
            continue;
        }
        match r {
            '`' if !sq && !dq && !dollar => bq = !bq,
            ')' if !sq && !dq && !bq => dollar = !dollar,
            '(' if !sq && !dq && !bq => {
                if !dollar && buf.ends_with('$') {
                    dollar = true;
                    buf.push('(');
                    continue;
                }
                return Err(ParseError);
            }
            '"' if !sq && !dollar => {
                if dq {
                    got = true;
                }
                dq = !dq;
                continue;
            }
            '\'' if !dq && !dollar => {
                if sq {
                    got = true;
                }
                sq = !sq;
                continue;
            }
            ';' | '&' | '|' | '<' | '>' if !(sq || dq || bq || dollar) => {
                if r == '>' && buf.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                    got = false;
                }
                break;
            }
            _ => {}
        }
        got = true;
        buf.push(r);
    }
    if got {
        args.push(buf);
    }
    if escaped || sq || dq || bq || dollar {
        return Err(ParseError);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn table() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   ", &[]),
            (
                "git-upload-pack group/repo",
                &["git-upload-pack", "group/repo"],
            ),
            (
                "git-upload-pack 'group/repo.git'",
                &["git-upload-pack", "group/repo.git"],
            ),
            (
                "git-upload-pack \"/group/my repo\"",
                &["git-upload-pack", "/group/my repo"],
            ),
            ("a\tb\r\nc", &["a", "b", "c"]),
            ("a \"\" b", &["a", "", "b"]),
            ("a\\ b", &["a b"]),
            ("\"a\\\"b\"", &["a\"b"]),
            ("'a\\b'", &["a\\b"]),
            (
                "git-receive-pack group/repo; any command",
                &["git-receive-pack", "group/repo"],
            ),
            (
                "git-upload-pack repo; rm -rf /",
                &["git-upload-pack", "repo"],
            ),
            ("a && b", &["a"]),
            ("a | b", &["a"]),
            ("a < /etc/passwd", &["a"]),
            ("a>b", &["a"]),
            ("a 2>b", &["a"]),
            ("a ';' b", &["a", ";", "b"]),
            ("a `id` b", &["a", "`id`", "b"]),
            ("a `rm -rf /`", &["a", "`rm -rf /`"]),
            ("a $(rm -rf /) b", &["a", "$(rm -rf /)", "b"]),
            ("$HOME", &["$HOME"]),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), *want, "{line:?}");
        }
    }

    #[test]
    fn errors() {
        for line in [
            "'unterminated",
            "\"unterminated",
            "trailing\\",
            "a (b",
            "a ) b",
            "`x",
            "$(x",
        ] {
            assert_eq!(split(line), Err(ParseError), "{line:?}");
        }
    }

    #[test]
    fn huge_input_is_linear() {
        let line = format!("git-upload-pack {}", "a".repeat(1 << 20));
        let words = ok(&line);
        assert_eq!(words.len(), 2);
        assert_eq!(words[1].len(), 1 << 20);
    }
}
