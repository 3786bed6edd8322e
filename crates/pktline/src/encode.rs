//! Pure pkt-line encoding into a `Vec<u8>`.

use crate::{DELIM, FLUSH, HEADER_LEN, MAX_DATA_LEN, MAX_SIDEBAND_DATA, RESPONSE_END};

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The payload does not fit in one packet.
    #[error("packet payload of {len} bytes exceeds the maximum of {max}")]
    TooLong {
        /// Payload length.
        len: usize,
        /// [`MAX_DATA_LEN`].
        max: usize,
    },
    /// git reserves the empty data packet `0004`; writers never produce it.
    #[error("empty data packets are not allowed")]
    Empty,
}

/// Appends one data packet carrying `data` to `out`.
pub fn data(data: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if data.is_empty() {
        return Err(EncodeError::Empty);
    }
    if data.len() > MAX_DATA_LEN {
        return Err(EncodeError::TooLong {
            len: data.len(),
            max: MAX_DATA_LEN,
        });
    }
    header(data.len() + HEADER_LEN, out);
    out.extend_from_slice(data);
    Ok(())
}

/// Appends one text packet: `text` followed by LF.
pub fn text(text: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if text.len() + 1 > MAX_DATA_LEN {
        return Err(EncodeError::TooLong {
            len: text.len() + 1,
            max: MAX_DATA_LEN,
        });
    }
    header(text.len() + 1 + HEADER_LEN, out);
    out.extend_from_slice(text);
    out.push(b'\n');
    Ok(())
}

/// Appends `data` split into as many packets of at most [`MAX_DATA_LEN`] bytes as needed.
/// Empty input appends nothing.
pub fn chunked(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_DATA_LEN) {
        header(chunk.len() + HEADER_LEN, out);
        out.extend_from_slice(chunk);
    }
}

/// Appends `data` as side-band-64k packets on `band` (git `sideband.c`: 1 pack data or command
/// output, 2 progress and error text): each packet is the header, the band byte and at most
/// [`MAX_SIDEBAND_DATA`] bytes. Empty input appends nothing.
pub fn sideband(band: u8, data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(MAX_SIDEBAND_DATA) {
        header(chunk.len() + 1 + HEADER_LEN, out);
        out.push(band);
        out.extend_from_slice(chunk);
    }
}

/// Appends `0000`.
pub fn flush(out: &mut Vec<u8>) {
    out.extend_from_slice(FLUSH);
}

/// Appends `0001`.
pub fn delim(out: &mut Vec<u8>) {
    out.extend_from_slice(DELIM);
}

/// Appends `0002`.
pub fn response_end(out: &mut Vec<u8>) {
    out.extend_from_slice(RESPONSE_END);
}

fn header(len: usize, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in [12, 8, 4, 0] {
        out.push(HEX[(len >> shift) & 0xf]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Decoded, Packet, decode};

    #[test]
    fn text_and_specials() {
        let mut out = Vec::new();
        text(b"version=1", &mut out).unwrap();
        text(b"locking", &mut out).unwrap();
        flush(&mut out);
        delim(&mut out);
        response_end(&mut out);
        assert_eq!(out, b"000eversion=1\n000clocking\n000000010002");
    }

    #[test]
    fn data_limits() {
        let mut out = Vec::new();
        assert_eq!(data(b"", &mut out), Err(EncodeError::Empty));
        let big = vec![b'x'; MAX_DATA_LEN + 1];
        assert_eq!(
            data(&big, &mut out),
            Err(EncodeError::TooLong {
                len: MAX_DATA_LEN + 1,
                max: MAX_DATA_LEN
            })
        );
        data(&big[..MAX_DATA_LEN], &mut out).unwrap();
        assert_eq!(&out[..4], b"fff0");
        assert!(text(&big[..MAX_DATA_LEN], &mut Vec::new()).is_err());
    }

    #[test]
    fn sideband_golden_bytes_and_split() {
        let mut out = Vec::new();
        sideband(2, b"hello\n", &mut out);
        sideband(1, b"", &mut out);
        assert_eq!(out, b"000b\x02hello\n");
        let big = vec![b'x'; MAX_SIDEBAND_DATA + 1];
        let mut out = Vec::new();
        sideband(1, &big, &mut out);
        assert_eq!(&out[..5], b"fff0\x01");
        assert_eq!(&out[MAX_DATA_LEN + HEADER_LEN..], b"0006\x01x");
        assert_eq!(MAX_SIDEBAND_DATA, 65515);
    }

    #[test]
    fn chunked_round_trips() {
        let payload: Vec<u8> = (0..(MAX_DATA_LEN * 2 + 10)).map(|i| i as u8).collect();
        let mut out = Vec::new();
        chunked(&payload, &mut out);
        let mut rest = &out[..];
        let mut back = Vec::new();
        let mut n = 0;
        while !rest.is_empty() {
            let Ok(Decoded::Packet {
                packet: Packet::Data(d),
                consumed,
            }) = decode(rest)
            else {
                panic!("bad packet");
            };
            back.extend_from_slice(d);
            rest = &rest[consumed..];
            n += 1;
        }
        assert_eq!(n, 3);
        assert_eq!(back, payload);
        let mut none = Vec::new();
        chunked(b"", &mut none);
        assert!(none.is_empty());
    }
}
