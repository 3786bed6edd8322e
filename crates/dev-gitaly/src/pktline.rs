//! Pure pkt-line helpers used on the server side of the sidechannel (gitaly.md §4.1 item 8) and
//! for Gitaly's packfile-negotiation statistics (Gitaly `internal/git/stats/packfile_negotiation.go`).
//! The framing itself (headers, side-band packets) is the workspace's `pktline` crate; this file
//! holds only what the dev Gitaly reads out of the packets.
//!
//! No I/O here: everything works on byte slices so it can be tested byte for byte.

use gitaly_proto::PackfileNegotiationStatistics;

/// Largest data payload of one side-band-64k packet (65520 bytes minus 4 header bytes and the
/// band byte).
pub const MAX_SIDEBAND_DATA: usize = ::pktline::MAX_SIDEBAND_DATA;

/// Band number git uses for pack data / command output.
pub const BAND_STDOUT: u8 = 1;
/// Band number git uses for progress and error text.
pub const BAND_STDERR: u8 = 2;

/// Appends `data` to `out` as side-band-64k packets on `band`: `%04x` length (header, band byte
/// and data) + band byte + at most [`MAX_SIDEBAND_DATA`] data bytes each. Empty data writes nothing.
pub fn encode_sideband(band: u8, data: &[u8], out: &mut Vec<u8>) {
    ::pktline::encode::sideband(band, data, out);
}

/// One client → server frame of the sidechannel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `%04x` + data: bytes for git's stdin.
    Data(Vec<u8>),
    /// `0000`: end of git's stdin.
    Flush,
}

/// Why a client frame header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The four header bytes are not lowercase/uppercase hex.
    InvalidHeader([u8; 4]),
    /// `0001`, `0002` or `0003`: reserved lengths a sidechannel client must never send.
    ReservedLength(usize),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::InvalidHeader(h) => {
                write!(
                    f,
                    "invalid pkt-line header {:?}",
                    String::from_utf8_lossy(h)
                )
            }
            FrameError::ReservedLength(n) => write!(f, "invalid pkt-line length {n:04x}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Parses a 4-byte pkt-line length header (hex digits only).
pub fn parse_len(header: [u8; 4]) -> Option<usize> {
    ::pktline::decode::parse_header(header).ok()
}

/// Interprets a client frame header: `Ok(None)` for the flush `0000`, `Ok(Some(n))` for a data
/// frame carrying `n` payload bytes, an error for bad hex or the reserved lengths 1..=3.
pub fn frame_payload_len(header: [u8; 4]) -> Result<Option<usize>, FrameError> {
    match parse_len(header) {
        None => Err(FrameError::InvalidHeader(header)),
        Some(0) => Ok(None),
        Some(n @ 1..=3) => Err(FrameError::ReservedLength(n)),
        Some(n) => Ok(Some(n - 4)),
    }
}

/// Incremental parser of the client's upload-pack request (the pkt-lines git writes to
/// upload-pack's stdin), producing Gitaly's `PackfileNegotiationStatistics`.
///
/// Mirrors Gitaly: every packet counts (flush and delim too) until `done`, which ends parsing
/// and is itself not counted; the capabilities are the words after the oid of the first
/// `want` line.
#[derive(Debug, Default)]
pub struct NegotiationParser {
    buf: Vec<u8>,
    stats: PackfileNegotiationStatistics,
    caps_seen: bool,
    done: bool,
    broken: bool,
}

impl NegotiationParser {
    /// Creates an empty parser.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds more client bytes. Returns true once `done` has been seen.
    pub fn feed(&mut self, data: &[u8]) -> bool {
        if self.done || self.broken {
            return self.done;
        }
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        while !self.done {
            let total =
                match ::pktline::decode::frame_len(&self.buf[pos..], ::pktline::MAX_HEADER_LEN) {
                    Ok(Some(total)) => total,
                    Ok(None) => break,
                    Err(_) => {
                        self.broken = true;
                        break;
                    }
                };
            let payload = self.buf[pos + ::pktline::HEADER_LEN..pos + total].to_vec();
            pos += total;
            self.packet(total, &payload);
        }
        self.buf.drain(..pos.min(self.buf.len()));
        self.done
    }

    fn packet(&mut self, total: usize, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let data = text.strip_suffix('\n').unwrap_or(&text);
        let words: Vec<&str> = data.split(' ').collect();
        self.stats.payload_size += i64::try_from(total).unwrap_or(i64::MAX);
        match words.first().copied().unwrap_or("") {
            "want" => {
                if words.len() > 2 && !self.caps_seen {
                    self.stats.caps = words[2..].iter().map(|s| (*s).to_owned()).collect();
                    self.caps_seen = true;
                }
                self.stats.wants += 1;
            }
            "have" => self.stats.haves += 1,
            "shallow" => self.stats.shallows += 1,
            "deepen" | "deepen-since" | "deepen-not" => self.stats.deepen = data.to_owned(),
            "filter" => self.stats.filter = data.to_owned(),
            "done" => {
                self.done = true;
                return;
            }
            _ => {}
        }
        self.stats.packets += 1;
    }

    /// True once the `done` packet was parsed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The statistics gathered so far.
    pub fn stats(&self) -> PackfileNegotiationStatistics {
        self.stats.clone()
    }
}

/// Detects the first flush packet (`0000`) in a pkt-line byte stream fed in arbitrary chunks:
/// the end of `git upload-archive`'s argument negotiation.
#[derive(Debug, Default)]
pub struct FlushDetector {
    buf: Vec<u8>,
    /// Payload bytes of the current packet still to skip.
    skip: usize,
    done: bool,
}

impl FlushDetector {
    /// Feeds more bytes; returns true once a flush packet has been seen.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        while !self.done && !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let need = 4 - self.buf.len();
            let n = need.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == 4 {
                let mut h = [0u8; 4];
                h.copy_from_slice(&self.buf);
                self.buf.clear();
                match parse_len(h) {
                    Some(0) => self.done = true,
                    Some(l) if l >= 4 => self.skip = l - 4,
                    _ => {}
                }
            }
        }
        self.done
    }
}

/// Formats `s` like Go's `%q` verb (strconv.Quote) for the ASCII range and common escapes, so
/// `Internal` messages read like Gitaly's (`stderr: "fatal: …\n"`).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(s: &str) -> Vec<u8> {
        let mut v = format!("{:04x}", s.len() + 4).into_bytes();
        v.extend_from_slice(s.as_bytes());
        v
    }

    #[test]
    fn sideband_packets_are_split_at_65515_bytes() {
        let data = vec![b'x'; 65516];
        let mut out = Vec::new();
        encode_sideband(BAND_STDOUT, &data, &mut out);
        assert_eq!(&out[..5], b"fff0\x01");
        assert_eq!(&out[65520..65526], b"0006\x01x");
        assert_eq!(out.len(), 65520 + 6);
    }

    #[test]
    fn sideband_golden_bytes() {
        let mut out = Vec::new();
        encode_sideband(BAND_STDERR, b"hello\n", &mut out);
        encode_sideband(BAND_STDOUT, b"", &mut out);
        assert_eq!(out, b"000b\x02hello\n");
    }

    #[test]
    fn frame_headers() {
        assert_eq!(frame_payload_len(*b"0000"), Ok(None));
        assert_eq!(frame_payload_len(*b"0009"), Ok(Some(5)));
        assert_eq!(frame_payload_len(*b"fff0"), Ok(Some(65516)));
        assert_eq!(
            frame_payload_len(*b"0001"),
            Err(FrameError::ReservedLength(1))
        );
        assert_eq!(
            frame_payload_len(*b"0003"),
            Err(FrameError::ReservedLength(3))
        );
        assert!(frame_payload_len(*b"zzzz").is_err());
    }

    #[test]
    fn v0_negotiation_stats() {
        let mut p = NegotiationParser::new();
        let mut input = pkt("want 1111111111111111111111111111111111111111 multi_ack\n");
        input.extend_from_slice(b"0000");
        input.extend_from_slice(&pkt("done\n"));
        // Feed byte by byte: client frames do not align with pkt-lines.
        for b in &input {
            p.feed(std::slice::from_ref(b));
        }
        assert!(p.is_done());
        let s = p.stats();
        assert_eq!(s.packets, 2);
        assert_eq!(s.wants, 1);
        assert_eq!(s.caps, vec!["multi_ack".to_owned()]);
    }

    #[test]
    fn v2_negotiation_stats() {
        let mut p = NegotiationParser::new();
        let mut input = pkt("command=fetch\n");
        input.extend(pkt("agent=git/2.39.5\n"));
        input.extend(pkt("object-format=sha1\n"));
        input.extend_from_slice(b"0001");
        input.extend(pkt("want 1111111111111111111111111111111111111111\n"));
        input.extend(pkt("have 2222222222222222222222222222222222222222\n"));
        input.extend(pkt("deepen 1\n"));
        input.extend(pkt("filter blob:none\n"));
        input.extend(pkt("done\n"));
        input.extend_from_slice(b"0000");
        assert!(p.feed(&input));
        let s = p.stats();
        assert_eq!(s.packets, 8);
        assert_eq!(s.wants, 1);
        assert_eq!(s.haves, 1);
        assert!(s.caps.is_empty());
        assert_eq!(s.deepen, "deepen 1");
        assert_eq!(s.filter, "filter blob:none");
    }

    #[test]
    fn flush_detector_finds_flush_across_chunks() {
        let mut d = FlushDetector::default();
        let mut input = pkt("argument main\n");
        input.extend_from_slice(b"0000");
        let (a, b) = input.split_at(input.len() - 2);
        assert!(!d.feed(a));
        assert!(d.feed(b));
        let mut d = FlushDetector::default();
        assert!(!d.feed(&pkt("0000 inside payload")));
    }

    #[test]
    fn go_quote_matches_go() {
        assert_eq!(
            go_quote("fatal: bad config line 1 in file ./config\n"),
            r#""fatal: bad config line 1 in file ./config\n""#
        );
        assert_eq!(go_quote("a\"b\\\u{1}"), r#""a\"b\\\x01""#);
    }
}
