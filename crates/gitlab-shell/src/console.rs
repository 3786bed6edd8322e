//! `remote: ` framing of messages on stderr, as GitLab Shell's `internal/console` writes it
//! (behaviour §1.6): the framed warning block with the 72-`=` ruler for errors, and the
//! info block for `/allowed`'s `gl_console_messages`.

use std::io::{self, Write};

const PREFIX: &str = "remote: ";

/// True when there is nothing but whitespace to show; GitLab Shell then prints nothing at all.
fn nothing_to_show(messages: &[&str]) -> bool {
    messages.iter().all(|m| m.trim().is_empty())
}

fn render(messages: &[&str], divider: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if nothing_to_show(messages) {
        return out;
    }
    let edge = |out: &mut Vec<u8>| {
        out.extend_from_slice(b"remote: \n");
        if divider {
            out.extend_from_slice(PREFIX.as_bytes());
            out.extend_from_slice(&[b'='; 72]);
            out.extend_from_slice(b"\nremote: \n");
        }
    };
    edge(&mut out);
    for m in messages {
        out.extend_from_slice(PREFIX.as_bytes());
        out.extend_from_slice(m.as_bytes());
        out.push(b'\n');
    }
    edge(&mut out);
    out
}

/// Writes `message` as the framed warning block (used for every error of a command's execution).
pub fn display_warning(out: &mut dyn Write, message: &str) -> io::Result<()> {
    out.write_all(&render(&[message], true))?;
    out.flush()
}

/// Writes the info block (no ruler) for console messages from `/allowed`.
pub fn display_info(out: &mut dyn Write, messages: &[String]) -> io::Result<()> {
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    out.write_all(&render(&refs, false))?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_block_bytes() {
        let mut out = Vec::new();
        display_warning(&mut out, "Disallowed command").unwrap();
        let ruler = "=".repeat(72);
        let want = format!(
            "remote: \nremote: {ruler}\nremote: \nremote: Disallowed command\nremote: \nremote: {ruler}\nremote: \n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn empty_or_blank_warning_prints_nothing() {
        for m in ["", "  \t\n"] {
            let mut out = Vec::new();
            display_warning(&mut out, m).unwrap();
            assert!(out.is_empty(), "{m:?}");
        }
    }

    #[test]
    fn embedded_newlines_are_not_reprefixed() {
        let mut out = Vec::new();
        display_warning(&mut out, "a\nb").unwrap();
        assert!(String::from_utf8(out).unwrap().contains("remote: a\nb\n"));
    }

    #[test]
    fn info_block_bytes() {
        let mut out = Vec::new();
        display_info(&mut out, &["console".into(), "message".into()]).unwrap();
        assert_eq!(
            out,
            b"remote: \nremote: console\nremote: message\nremote: \n"
        );
        let mut out = Vec::new();
        display_info(&mut out, &[" ".into()]).unwrap();
        assert!(out.is_empty());
        display_info(&mut out, &[]).unwrap();
        assert!(out.is_empty());
    }
}
