//! Pure pkt-line decoding: turn the start of a byte buffer into one packet, or say how many more
//! bytes are needed, or why the header is malformed.

use crate::{HEADER_LEN, MAX_PACKET_LEN};

/// One decoded packet, borrowing its payload from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0000`.
    Flush,
    /// `0001`.
    Delim,
    /// `0002`.
    ResponseEnd,
    /// A data packet's payload (may be empty for `0004`).
    Data(&'a [u8]),
}

impl<'a> Packet<'a> {
    /// The payload of a data packet, `None` for the special packets.
    pub fn as_data(&self) -> Option<&'a [u8]> {
        match self {
            Packet::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The payload with one trailing LF removed, as git's `packet_read` with
    /// `PACKET_READ_CHOMP_NEWLINE` and Git LFS's `ReadPacketText` do. `None` for special packets.
    pub fn as_text(&self) -> Option<&'a [u8]> {
        self.as_data().map(|d| d.strip_suffix(b"\n").unwrap_or(d))
    }
}

/// Result of looking at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole packet was found; it used `consumed` bytes of the buffer (header included).
    Packet {
        /// The packet.
        packet: Packet<'a>,
        /// Bytes to drop from the front of the buffer.
        consumed: usize,
    },
    /// The buffer holds only part of a packet; at least `needed` more bytes are required.
    Incomplete {
        /// Minimum number of additional bytes.
        needed: usize,
    },
}

/// Why a packet could not be decoded. The stream cannot be resynchronised after any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The four header bytes are not hexadecimal digits.
    #[error("invalid packet length header {0:?}")]
    InvalidHeader([u8; 4]),
    /// `0003` has no meaning.
    #[error("invalid packet length {0}")]
    ReservedLength(usize),
    /// The header announces more than the allowed maximum.
    #[error("packet length {len} exceeds the maximum of {max}")]
    TooLong {
        /// Announced length, header included.
        len: usize,
        /// The limit in force.
        max: usize,
    },
}

/// Parses the four-byte hex header. Only `0-9a-fA-F` are accepted, so signs and spaces, which
/// a lax `strtol`-style parse would take, are refused.
pub fn parse_header(header: [u8; 4]) -> Result<usize, DecodeError> {
    let mut len = 0usize;
    for b in header {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(DecodeError::InvalidHeader(header)),
        };
        len = len * 16 + usize::from(digit);
    }
    Ok(len)
}

/// Length of the frame at the start of `buf`, header included, using GitLab Shell's Go scanner
/// rules: any length below 4 (`0000`..`0003`) is a four-byte special packet, otherwise the
/// header value, which must not exceed `max`. `Ok(None)` means the buffer is too short to tell
/// or to hold the whole frame.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = parse_header(*header)?;
    let total = if len < HEADER_LEN { HEADER_LEN } else { len };
    if total > max {
        return Err(DecodeError::TooLong { len: total, max });
    }
    Ok((buf.len() >= total).then_some(total))
}

/// Decodes the packet at the start of `buf` with git's limit of [`MAX_PACKET_LEN`].
pub fn decode(buf: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    decode_with_max(buf, MAX_PACKET_LEN)
}

/// Decodes the packet at the start of `buf`, refusing packets longer than `max` bytes
/// (header included) and the reserved length `0003`.
pub fn decode_with_max(buf: &[u8], max: usize) -> Result<Decoded<'_>, DecodeError> {
    let Some(header) = buf.first_chunk::<4>() else {
        return Ok(Decoded::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    let len = parse_header(*header)?;
    let packet = match len {
        0 => Packet::Flush,
        1 => Packet::Delim,
        2 => Packet::ResponseEnd,
        3 => return Err(DecodeError::ReservedLength(3)),
        _ if len > max => return Err(DecodeError::TooLong { len, max }),
        _ if buf.len() < len => {
            return Ok(Decoded::Incomplete {
                needed: len - buf.len(),
            });
        }
        _ => Packet::Data(&buf[HEADER_LEN..len]),
    };
    let consumed = if len < HEADER_LEN { HEADER_LEN } else { len };
    Ok(Decoded::Packet { packet, consumed })
}

/// Decodes a whole buffer made only of complete packets (a transcript). Fails on a malformed
/// header or a truncated last packet.
pub fn decode_all(mut buf: &[u8]) -> Result<Vec<Packet<'_>>, DecodeAllError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        match decode(buf)? {
            Decoded::Packet { packet, consumed } => {
                out.push(packet);
                buf = &buf[consumed..];
            }
            Decoded::Incomplete { needed } => return Err(DecodeAllError::Truncated { needed }),
        }
    }
    Ok(out)
}

/// Why [`decode_all`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeAllError {
    /// A malformed packet.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The buffer ends inside a packet.
    #[error("truncated packet: {needed} more bytes needed")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_HEADER_LEN;

    #[test]
    fn decodes_special_packets() {
        for (raw, want) in [
            (&b"0000"[..], Packet::Flush),
            (b"0001", Packet::Delim),
            (b"0002", Packet::ResponseEnd),
            (b"0004", Packet::Data(b"")),
        ] {
            assert_eq!(
                decode(raw),
                Ok(Decoded::Packet {
                    packet: want,
                    consumed: 4
                })
            );
        }
    }

    #[test]
    fn decodes_data_and_leaves_the_rest() {
        let buf = b"0009done\n0000";
        assert_eq!(
            decode(buf),
            Ok(Decoded::Packet {
                packet: Packet::Data(b"done\n"),
                consumed: 9
            })
        );
        assert_eq!(Packet::Data(b"done\n").as_text(), Some(&b"done"[..]));
        assert_eq!(Packet::Data(b"a\n\n").as_text(), Some(&b"a\n"[..]));
        assert_eq!(Packet::Flush.as_text(), None);
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        assert_eq!(parse_header(*b"00Ff"), Ok(255));
    }

    #[test]
    fn incomplete_header_and_body() {
        assert_eq!(decode(b""), Ok(Decoded::Incomplete { needed: 4 }));
        assert_eq!(decode(b"00"), Ok(Decoded::Incomplete { needed: 2 }));
        assert_eq!(decode(b"000ahel"), Ok(Decoded::Incomplete { needed: 3 }));
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(decode(b"zz00"), Err(DecodeError::InvalidHeader(*b"zz00")));
        assert_eq!(decode(b"+00a"), Err(DecodeError::InvalidHeader(*b"+00a")));
        assert_eq!(decode(b"\n000"), Err(DecodeError::InvalidHeader(*b"\n000")));
        assert_eq!(decode(b"0003"), Err(DecodeError::ReservedLength(3)));
    }

    #[test]
    fn size_limits() {
        let max = format!("{MAX_PACKET_LEN:04x}");
        let mut buf = max.into_bytes();
        buf.resize(MAX_PACKET_LEN, b'x');
        assert!(matches!(
            decode(&buf),
            Ok(Decoded::Packet { consumed, .. }) if consumed == MAX_PACKET_LEN
        ));
        assert_eq!(
            decode(b"fff1"),
            Err(DecodeError::TooLong {
                len: 0xfff1,
                max: MAX_PACKET_LEN
            })
        );
        assert_eq!(
            decode_with_max(b"ffff", MAX_HEADER_LEN),
            Ok(Decoded::Incomplete { needed: 0xffff - 4 })
        );
    }

    #[test]
    fn frame_len_follows_the_go_scanner() {
        assert_eq!(frame_len(b"0003", MAX_HEADER_LEN), Ok(Some(4)));
        assert_eq!(frame_len(b"0000rest", MAX_HEADER_LEN), Ok(Some(4)));
        assert_eq!(frame_len(b"0006ab", MAX_HEADER_LEN), Ok(Some(6)));
        assert_eq!(frame_len(b"0006a", MAX_HEADER_LEN), Ok(None));
        assert_eq!(frame_len(b"00", MAX_HEADER_LEN), Ok(None));
        assert!(frame_len(b"\n", MAX_HEADER_LEN).is_ok());
        assert_eq!(
            frame_len(b"xyzw", MAX_HEADER_LEN),
            Err(DecodeError::InvalidHeader(*b"xyzw"))
        );
    }

    #[test]
    fn decode_all_transcript() {
        let got = decode_all(b"0008abcd00010000").unwrap();
        assert_eq!(
            got,
            vec![Packet::Data(b"abcd"), Packet::Delim, Packet::Flush]
        );
        assert_eq!(
            decode_all(b"0008ab"),
            Err(DecodeAllError::Truncated { needed: 2 })
        );
    }
}
