//! Byte-level pieces of Gitaly's backchannel/sidechannel protocol (Gitaly
//! `internal/grpc/{backchannel,sidechannel}`; gitaly.md §4.1) as pure functions, separated from
//! I/O so they can be tested against golden bytes.
//!
//! * Client dial: write [`BACKCHANNEL_MAGIC`], then run a yamux client session.
//! * Gitaly opens a yamux stream and writes [`SIDECHANNEL_MAGIC`] + the id as 8-byte big-endian
//!   int64; the client answers [`HANDSHAKE_OK`].
//! * Client → server (git's stdin): `%04x` length (incl. the 4 header bytes) + data, at most
//!   [`MAX_FRAME_DATA`] data bytes per frame; end of stdin = [`FLUSH`].
//! * Server → client: side-band-64k packets `%04x` + band byte + data (band 1 stdout, 2 stderr),
//!   no closing flush: the server closes the stream.

use std::fmt;

/// First bytes a client writes on a fresh connection to ask for a multiplexed session.
pub const BACKCHANNEL_MAGIC: &[u8; 11] = b"backchannel";
/// First bytes Gitaly writes on a yamux stream it opens for a sidechannel.
pub const SIDECHANNEL_MAGIC: &[u8; 11] = b"sidechannel";
/// The client's answer once it has accepted a sidechannel.
pub const HANDSHAKE_OK: &[u8; 2] = b"ok";
/// Length of the sidechannel header: magic + 8-byte id.
pub const SIDECHANNEL_HEADER_LEN: usize = 19;
/// Largest pkt-line on the wire, header included.
pub const MAX_PKT_LEN: usize = pktline::MAX_PACKET_LEN;
/// Largest payload of one client → server frame.
pub const MAX_FRAME_DATA: usize = pktline::MAX_DATA_LEN;
/// The flush packet that marks the end of the client's stdin.
pub const FLUSH: &[u8; 4] = pktline::FLUSH;

/// The 19 bytes Gitaly writes at the start of a sidechannel stream.
#[must_use]
pub fn encode_sidechannel_header(id: i64) -> [u8; SIDECHANNEL_HEADER_LEN] {
    let mut out = [0u8; SIDECHANNEL_HEADER_LEN];
    out[..11].copy_from_slice(SIDECHANNEL_MAGIC);
    out[11..].copy_from_slice(&id.to_be_bytes());
    out
}

/// What a server-opened yamux stream announced in its first 11 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundKind {
    /// A sidechannel; 8 bytes of id follow.
    Sidechannel,
    /// Anything else (e.g. Gitaly's reverse gRPC dial, `PRI * HTTP/`).
    Other,
}

/// Classifies the first 11 bytes of a server-opened stream.
#[must_use]
pub fn classify_inbound(magic: &[u8; 11]) -> InboundKind {
    if magic == SIDECHANNEL_MAGIC {
        InboundKind::Sidechannel
    } else {
        InboundKind::Other
    }
}

/// The sidechannel id from the 8 bytes following the magic.
#[must_use]
pub fn decode_sidechannel_id(bytes: [u8; 8]) -> i64 {
    i64::from_be_bytes(bytes)
}

/// Appends `data` to `out` as client → server frames of at most [`MAX_FRAME_DATA`] bytes each.
/// Empty input appends nothing (an empty frame `0004` is not a flush and must not be sent).
pub fn encode_frames(data: &[u8], out: &mut Vec<u8>) {
    pktline::encode::chunked(data, out);
}

/// A malformed server → client side-band stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FramingError {
    /// The 4 length bytes are not lowercase/uppercase hex.
    InvalidLength([u8; 4]),
    /// A length that cannot carry a band byte (`0000`–`0004`) or exceeds 65520.
    BadLength(usize),
    /// A band other than 1 or 2.
    UnexpectedBand(u8),
    /// The stream ended inside a packet.
    Truncated,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FramingError::InvalidLength(raw) => {
                write!(
                    f,
                    "invalid pkt-line length: {:?}",
                    String::from_utf8_lossy(raw)
                )
            }
            FramingError::BadLength(len) => write!(f, "invalid side-band packet length: {len:04x}"),
            FramingError::UnexpectedBand(band) => write!(f, "unexpected band: {band}"),
            FramingError::Truncated => f.write_str("sidechannel: unexpected EOF inside a packet"),
        }
    }
}

impl std::error::Error for FramingError {}

/// Parses a side-band packet header and returns the number of bytes that follow it
/// (band byte + data, 1..=65516).
///
/// # Errors
/// Non-hex digits, a length below 5 (flush, delim, empty packets) or above 65520.
pub fn parse_packet_header(header: [u8; 4]) -> Result<usize, FramingError> {
    let len =
        pktline::decode::parse_header(header).map_err(|_| FramingError::InvalidLength(header))?;
    if !(5..=MAX_PKT_LEN).contains(&len) {
        return Err(FramingError::BadLength(len));
    }
    Ok(len - 4)
}

/// Where a side-band payload goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Band<'a> {
    /// Band 1: git's stdout.
    Stdout(&'a [u8]),
    /// Band 2: git's stderr.
    Stderr(&'a [u8]),
}

/// Splits a packet body (band byte + data) into its destination.
///
/// # Errors
/// [`FramingError::UnexpectedBand`] for any band but 1 and 2; [`FramingError::BadLength`] for an
/// empty body.
pub fn demux(body: &[u8]) -> Result<Band<'_>, FramingError> {
    match body.split_first() {
        Some((1, data)) => Ok(Band::Stdout(data)),
        Some((2, data)) => Ok(Band::Stderr(data)),
        Some((band, _)) => Err(FramingError::UnexpectedBand(*band)),
        None => Err(FramingError::BadLength(4)),
    }
}

/// Demultiplexes a complete server → client byte stream (test and debugging helper; the client
/// itself reads packet by packet with bounded memory). Returns the bands in order.
///
/// # Errors
/// The first framing problem, including a stream that ends inside a packet.
pub fn demux_all(mut wire: &[u8]) -> Result<Vec<Band<'_>>, FramingError> {
    let mut out = Vec::new();
    while !wire.is_empty() {
        let Some((header, rest)) = wire.split_first_chunk::<4>() else {
            return Err(FramingError::Truncated);
        };
        let len = parse_packet_header(*header)?;
        if rest.len() < len {
            return Err(FramingError::Truncated);
        }
        let (body, rest) = rest.split_at(len);
        out.push(demux(body)?);
        wire = rest;
    }
    Ok(out)
}

/// Where an incremental demultiplexer is inside the server → client stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DemuxState {
    /// Reading a packet header; so many of its 4 bytes are in.
    Header(usize),
    /// The header said so many body bytes follow; the band byte is next.
    Band(usize),
    /// Inside the data of a packet of this band; so many bytes left.
    Data(u8, usize),
}

/// Demultiplexes the server → client side-band stream as it arrives, whatever the read sizes:
/// a packet may span reads, and its data is handed on piece by piece, so the reader needs no
/// buffer the size of the largest packet (65520 bytes).
#[derive(Debug, Clone)]
pub struct Demuxer {
    state: DemuxState,
    header: [u8; 4],
}

impl Default for Demuxer {
    fn default() -> Self {
        Demuxer {
            state: DemuxState::Header(0),
            header: [0; 4],
        }
    }
}

impl Demuxer {
    /// Takes what it can from the start of `input`: the bytes consumed (at least 1 when
    /// `input` is not empty) and a piece of payload, if those bytes carried one.
    ///
    /// # Errors
    /// A bad header or band, as [`parse_packet_header`] and [`demux`] report them.
    pub fn feed<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Option<Band<'a>>), FramingError> {
        match self.state {
            DemuxState::Header(have) => {
                let take = (4 - have).min(input.len());
                self.header[have..have + take].copy_from_slice(&input[..take]);
                self.state = if have + take == 4 {
                    DemuxState::Band(parse_packet_header(self.header)?)
                } else {
                    DemuxState::Header(have + take)
                };
                Ok((take, None))
            }
            DemuxState::Band(len) => {
                let Some(&band) = input.first() else {
                    return Ok((0, None));
                };
                if band != 1 && band != 2 {
                    return Err(FramingError::UnexpectedBand(band));
                }
                self.state = match len - 1 {
                    0 => DemuxState::Header(0),
                    left => DemuxState::Data(band, left),
                };
                Ok((1, None))
            }
            DemuxState::Data(band, left) => {
                let take = left.min(input.len());
                let data = &input[..take];
                self.state = match left - take {
                    0 => DemuxState::Header(0),
                    left => DemuxState::Data(band, left),
                };
                let piece = if band == 1 {
                    Band::Stdout(data)
                } else {
                    Band::Stderr(data)
                };
                Ok((take, (take > 0).then_some(piece)))
            }
        }
    }

    /// Whether the stream may end here (between packets).
    #[must_use]
    pub fn at_boundary(&self) -> bool {
        self.state == DemuxState::Header(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_golden_bytes() {
        assert_eq!(BACKCHANNEL_MAGIC, b"backchannel");
        assert_eq!(HANDSHAKE_OK, b"ok");
        assert_eq!(
            encode_sidechannel_header(0),
            *b"sidechannel\x00\x00\x00\x00\x00\x00\x00\x00"
        );
        assert_eq!(
            encode_sidechannel_header(0x0102_0304_0506_0708),
            *b"sidechannel\x01\x02\x03\x04\x05\x06\x07\x08"
        );
        assert_eq!(
            decode_sidechannel_id(*b"\x00\x00\x00\x00\x00\x00\x01\x00"),
            256
        );
        assert_eq!(decode_sidechannel_id([0xff; 8]), -1);
        assert_eq!(classify_inbound(b"sidechannel"), InboundKind::Sidechannel);
        assert_eq!(classify_inbound(b"PRI * HTTP/"), InboundKind::Other);
        assert_eq!(classify_inbound(b"Sidechannel"), InboundKind::Other);
    }

    #[test]
    fn frames_golden_bytes() {
        let mut out = Vec::new();
        encode_frames(b"", &mut out);
        assert!(out.is_empty(), "no empty frame for empty input");
        encode_frames(b"0009done\n", &mut out);
        assert_eq!(out, b"000d0009done\n");
        out.extend_from_slice(FLUSH);
        assert_eq!(out, b"000d0009done\n0000");
    }

    #[test]
    fn frames_split_at_65516_data_bytes() {
        let data: Vec<u8> = (0..(MAX_FRAME_DATA * 2 + 3))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut out = Vec::new();
        encode_frames(&data, &mut out);
        assert_eq!(MAX_FRAME_DATA, 65516);
        assert_eq!(&out[..4], b"fff0");
        assert_eq!(&out[4..4 + MAX_FRAME_DATA], &data[..MAX_FRAME_DATA]);
        let second = 4 + MAX_FRAME_DATA;
        assert_eq!(&out[second..second + 4], b"fff0");
        let third = second + 4 + MAX_FRAME_DATA;
        assert_eq!(&out[third..third + 4], b"0007");
        assert_eq!(&out[third + 4..], &data[MAX_FRAME_DATA * 2..]);
        assert_eq!(out.len(), data.len() + 12);

        let mut exact = Vec::new();
        encode_frames(&data[..MAX_FRAME_DATA], &mut exact);
        assert_eq!(&exact[..4], b"fff0");
        assert_eq!(exact.len(), MAX_PKT_LEN);
    }

    #[test]
    fn band_demux() {
        let wire = b"000a\x01hello0006\x02e0005\x01";
        assert_eq!(
            demux_all(wire),
            Ok(vec![
                Band::Stdout(b"hello"),
                Band::Stderr(b"e"),
                Band::Stdout(b"")
            ])
        );
        assert_eq!(
            demux_all(b"0006\x03x").map_err(|e| e.to_string()),
            Err("unexpected band: 3".into())
        );
        assert_eq!(
            demux_all(b"0005\x00").map_err(|e| e.to_string()),
            Err("unexpected band: 0".into())
        );
    }

    #[test]
    fn bad_lengths_are_errors() {
        assert_eq!(parse_packet_header(*b"fff0"), Ok(65516));
        assert_eq!(parse_packet_header(*b"FFF0"), Ok(65516));
        assert_eq!(parse_packet_header(*b"0005"), Ok(1));
        for (raw, want) in [
            (*b"0000", FramingError::BadLength(0)),
            (*b"0001", FramingError::BadLength(1)),
            (*b"0004", FramingError::BadLength(4)),
            (*b"fff1", FramingError::BadLength(0xfff1)),
            (*b"zzzz", FramingError::InvalidLength(*b"zzzz")),
            (*b"+fff", FramingError::InvalidLength(*b"+fff")),
        ] {
            assert_eq!(parse_packet_header(raw), Err(want), "{raw:?}");
        }
        assert_eq!(demux_all(b"000a\x01hel"), Err(FramingError::Truncated));
        assert_eq!(demux_all(b"00"), Err(FramingError::Truncated));
        assert_eq!(
            FramingError::BadLength(0).to_string(),
            "invalid side-band packet length: 0000"
        );
    }

    /// Runs `wire` through a [`Demuxer`] in reads of `step` bytes: stdout, stderr, and whether
    /// it ended between packets.
    fn demux_in_steps(wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>, bool), FramingError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut d = Demuxer::default();
        for mut read in wire.chunks(step) {
            while !read.is_empty() {
                let (used, piece) = d.feed(read)?;
                assert!(used > 0, "progress on every call");
                match piece {
                    Some(Band::Stdout(b)) => out.extend_from_slice(b),
                    Some(Band::Stderr(b)) => err.extend_from_slice(b),
                    None => {}
                }
                read = &read[used..];
            }
        }
        Ok((out, err, d.at_boundary()))
    }

    #[test]
    fn the_incremental_demuxer_gives_the_same_bytes_whatever_the_read_sizes() {
        let mut wire = Vec::new();
        let big = vec![7u8; MAX_PKT_LEN - 5];
        for (band, data) in [
            (1u8, &b"abc"[..]),
            (2, &b"progress\r"[..]),
            (1, &big[..]),
            (1, &b""[..]),
            (2, &b"x"[..]),
        ] {
            wire.extend_from_slice(format!("{:04x}", data.len() + 5).as_bytes());
            wire.push(band);
            wire.extend_from_slice(data);
        }
        let (mut want_out, mut want_err) = (Vec::new(), Vec::new());
        for band in demux_all(&wire).expect("valid") {
            match band {
                Band::Stdout(b) => want_out.extend_from_slice(b),
                Band::Stderr(b) => want_err.extend_from_slice(b),
            }
        }
        for step in [1, 2, 3, 4, 5, 7, 4096, 32 * 1024, wire.len()] {
            let (out, err, boundary) = demux_in_steps(&wire, step).expect("valid");
            assert_eq!(out, want_out, "step {step}");
            assert_eq!(err, want_err, "step {step}");
            assert!(boundary, "step {step}");
        }
        // Cut inside a header, at the band byte and inside the data: not at a boundary.
        for cut in [2, 4, 6] {
            let (_, _, boundary) = demux_in_steps(&wire[..cut], 1).expect("valid so far");
            assert!(!boundary, "cut {cut}");
        }
    }

    #[test]
    fn the_incremental_demuxer_refuses_what_demux_all_refuses() {
        assert_eq!(
            demux_in_steps(b"0006\x03ab", 1).map(|_| ()),
            Err(FramingError::UnexpectedBand(3))
        );
        assert_eq!(
            demux_in_steps(b"0004", 2).map(|_| ()),
            Err(FramingError::BadLength(4))
        );
        assert!(matches!(
            demux_in_steps(b"zz06\x01ab", 3),
            Err(FramingError::InvalidLength(_))
        ));
    }
}
