//! Is it a public key? The check `add-key` and `batch-add-keys` apply before writing a line, at
//! least as strict as OpenSSH's own authorized_keys parser (docs/authorized-keys.md): the text is
//! `<type> <base64> [comment]`, the type is one OpenSSH knows, the base64 is valid (standard
//! alphabet, `=` padding only at the end, length a multiple of 4), and the blob starts with the
//! same type name as an SSH string (a big-endian u32 length, then the bytes), followed by key
//! material.

/// The key types OpenSSH accepts in an authorized_keys file (plain keys and certificates).
pub const KEY_TYPES: [&str; 16] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "ssh-ed25519-cert-v01@openssh.com",
    "ssh-rsa-cert-v01@openssh.com",
    "ssh-dss-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
];

/// Why a text is not a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Fewer than two words.
    #[error("expected \"<type> <base64> [comment]\"")]
    Shape,
    /// The first word is not a key type OpenSSH knows.
    #[error("unknown key type {0:?}")]
    UnknownType(String),
    /// The second word is not valid base64.
    #[error("the key data is not valid base64")]
    Base64,
    /// The blob does not name the same type, or has nothing after it.
    #[error("the key data is not a {0} key")]
    Blob(String),
}

/// Checks `<type> <base64> [comment]`; see the module docs.
pub fn check(public_key: &str) -> Result<(), KeyError> {
    let mut words = public_key.split_ascii_whitespace();
    let (Some(kind), Some(data)) = (words.next(), words.next()) else {
        return Err(KeyError::Shape);
    };
    if !KEY_TYPES.contains(&kind) {
        return Err(KeyError::UnknownType(kind.to_owned()));
    }
    let blob = decode_base64(data).ok_or(KeyError::Base64)?;
    let wrong = || KeyError::Blob(kind.to_owned());
    let len_bytes: [u8; 4] = blob
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(wrong)?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).map_err(|_| wrong())?;
    let name = blob.get(4..4 + len).ok_or_else(wrong)?;
    if name != kind.as_bytes() || blob.len() <= 4 + len {
        return Err(wrong());
    }
    Ok(())
}

/// Strict standard base64 (RFC 4648, section 4) with padding; `None` for anything else.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let chunks = bytes.len() / 4;
    for (i, chunk) in bytes.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        // Bits past the data must be zero (as a canonical encoder writes them).
        if three[3 - pad..].iter().any(|&b| b != 0) {
            return None;
        }
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real key (`ssh-keygen -t ed25519`).
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3xNSBlv46kN5dGwLbAsYsQ/dJFA6xuLrxLp4mCI99v alice@host";

    #[test]
    fn accepts_real_keys() {
        check(ED25519).unwrap();
        check("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE3xNSBlv46kN5dGwLbAsYsQ/dJFA6xuLrxLp4mCI99v")
            .unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_key() {
        assert_eq!(check("not a key"), Err(KeyError::UnknownType("not".into())));
        assert_eq!(check("ssh-ed25519"), Err(KeyError::Shape));
        assert_eq!(check(""), Err(KeyError::Shape));
        assert_eq!(check("ssh-ed25519 AAAAC3Nza"), Err(KeyError::Base64));
        assert_eq!(check("ssh-ed25519 AAAA!!!!"), Err(KeyError::Base64));
        assert_eq!(check("ssh-ed25519 AA==AAAA"), Err(KeyError::Base64));
        // Valid base64 of an ssh-rsa blob, labelled ed25519.
        let rsa_blob = "AAAAB3NzaC1yc2EAAAADAQAB";
        assert_eq!(
            check(&format!("ssh-ed25519 {rsa_blob}")),
            Err(KeyError::Blob("ssh-ed25519".into()))
        );
        check(&format!("ssh-rsa {rsa_blob}")).unwrap();
        // The type name alone, no key material.
        assert_eq!(
            check("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            Err(KeyError::Blob("ssh-ed25519".into()))
        );
        // A length longer than the blob.
        assert_eq!(
            check("ssh-ed25519 /////w=="),
            Err(KeyError::Blob("ssh-ed25519".into()))
        );
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(decode_base64("aGVsbG8h"), Some(b"hello!".to_vec()));
        assert_eq!(decode_base64("aGk"), None);
        assert_eq!(decode_base64("aGl="), None, "non-zero trailing bits");
        assert_eq!(decode_base64("a==="), None);
        assert_eq!(decode_base64("aG-="), None);
    }
}
