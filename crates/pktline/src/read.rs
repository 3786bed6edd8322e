//! `std::io` adapters for reading pkt-lines: [`Reader`] (strict, git limits, for protocols
//! spoken in pkt-lines end to end) and [`RawScanner`] (GitLab Shell's lenient scanner that hands
//! back whole frames, header included, for relaying them unchanged).

use std::io::{self, Read};

use crate::MAX_HEADER_LEN;
use crate::decode::{self, Decoded, Packet};

const READ_CHUNK: usize = 64 * 1024;

/// A buffered pkt-line reader over any `Read`.
///
/// Each call to [`Reader::read_packet`] returns the next packet, borrowing its payload from the
/// reader's buffer until the next call.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    consumed: usize,
}

impl<R: Read> Reader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            consumed: 0,
        }
    }

    /// Reads the next packet. `Ok(None)` is a clean end of input between packets; end of input
    /// inside a packet is `UnexpectedEof`, and a malformed header is `InvalidData`.
    pub fn read_packet(&mut self) -> io::Result<Option<Packet<'_>>> {
        self.start += std::mem::take(&mut self.consumed);
        loop {
            match decode::decode(&self.buf[self.start..]) {
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Ok(Decoded::Packet { consumed, .. }) => {
                    self.consumed = consumed;
                    break;
                }
                Ok(Decoded::Incomplete { needed }) => {
                    let had = self.buf.len() - self.start;
                    if self.fill(needed)? == 0 {
                        if had == 0 {
                            return Ok(None);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "end of input inside a pkt-line",
                        ));
                    }
                }
            }
        }
        match decode::decode(&self.buf[self.start..]) {
            Ok(Decoded::Packet { packet, .. }) => Ok(Some(packet)),
            _ => Err(io::Error::other("pkt-line buffer changed under the reader")),
        }
    }

    /// Reads packets up to the next flush and returns their payloads as text (one trailing LF
    /// removed each). A delimiter or response-end packet before the flush is `InvalidData`;
    /// end of input before the flush is `UnexpectedEof`.
    pub fn read_text_until_flush(&mut self) -> io::Result<Vec<String>> {
        self.read_text_until(Stop::Flush).map(|(lines, _)| lines)
    }

    /// Reads text packets up to a delimiter or a flush, returning the lines and which one ended
    /// the list.
    pub fn read_text_until_delim_or_flush(&mut self) -> io::Result<(Vec<String>, End)> {
        self.read_text_until(Stop::DelimOrFlush)
    }

    fn read_text_until(&mut self, stop: Stop) -> io::Result<(Vec<String>, End)> {
        let mut lines = Vec::new();
        loop {
            let end = match self.read_packet()? {
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of input before flush packet",
                    ));
                }
                Some(Packet::Flush) => End::Flush,
                Some(Packet::Delim) if stop == Stop::DelimOrFlush => End::Delim,
                Some(p @ Packet::Data(_)) => {
                    let text = p.as_text().unwrap_or_default();
                    lines.push(String::from_utf8_lossy(text).into_owned());
                    continue;
                }
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected special packet",
                    ));
                }
            };
            return Ok((lines, end));
        }
    }

    /// Copies the payloads of data packets into `out` until a flush packet, returning the number
    /// of payload bytes. Any other special packet is `InvalidData`.
    pub fn copy_data_until_flush(&mut self, out: &mut dyn io::Write) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            match self.read_packet()? {
                Some(Packet::Flush) => return Ok(total),
                Some(Packet::Data(d)) => {
                    out.write_all(d)?;
                    total += d.len() as u64;
                }
                Some(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "unexpected special packet in data",
                    ));
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "end of input before flush packet",
                    ));
                }
            }
        }
    }

    fn fill(&mut self, needed: usize) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + needed.max(READ_CHUNK), 0);
        let n = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Flush,
    DelimOrFlush,
}

/// Which special packet ended a list read by [`Reader::read_text_until_delim_or_flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `0001`.
    Delim,
    /// `0000`.
    Flush,
}

/// GitLab Shell's stdin scanner for the Geo custom action (`internal/pktline.NewScanner`):
/// yields whole frames (header included) and stops quietly, for good, at end of input or at the
/// first malformed frame, e.g. a stray trailing LF. Lengths `0000`..`0003` are four-byte frames,
/// and frames up to `0xffff` bytes are accepted.
///
/// Unlike Go's `bufio.Scanner`, bytes read ahead past the last frame are not lost:
/// [`RawScanner::read_rest`] returns them before the rest of the input.
#[derive(Debug)]
pub struct RawScanner<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    consumed: usize,
    done: bool,
}

impl<R: Read> RawScanner<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            start: 0,
            consumed: 0,
            done: false,
        }
    }

    /// The next whole frame, or `None` once input ended or a frame was malformed.
    /// An I/O error also ends the scan (and is returned once).
    pub fn next_frame(&mut self) -> io::Result<Option<&[u8]>> {
        self.start += std::mem::take(&mut self.consumed);
        if self.done {
            return Ok(None);
        }
        loop {
            match decode::frame_len(&self.buf[self.start..], MAX_HEADER_LEN) {
                Err(_) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(len)) => {
                    self.consumed = len;
                    return Ok(Some(&self.buf[self.start..self.start + len]));
                }
                Ok(None) => {
                    if self.start > 0 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    let old = self.buf.len();
                    self.buf.resize(old + READ_CHUNK, 0);
                    let n = match self.inner.read(&mut self.buf[old..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                        Err(e) => {
                            self.buf.truncate(old);
                            self.done = true;
                            return Err(e);
                        }
                    };
                    self.buf.truncate(old + n);
                    if n == 0 {
                        self.done = true;
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Appends everything not yet returned as a frame (read-ahead bytes, then the rest of the
    /// input up to end of file) to `out`.
    pub fn read_rest(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        self.start += std::mem::take(&mut self.consumed);
        out.extend_from_slice(&self.buf[self.start..]);
        self.buf.clear();
        self.start = 0;
        self.inner.read_to_end(out)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader returning its input one byte per `read`, to exercise refills.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || out.is_empty() {
                return Ok(0);
            }
            out[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn reads_packets_across_refills() {
        let input = b"000eversion=1\n000clocking\n0000";
        let mut r = Reader::new(Trickle(input));
        assert_eq!(r.read_packet().unwrap(), Some(Packet::Data(b"version=1\n")));
        assert_eq!(r.read_packet().unwrap(), Some(Packet::Data(b"locking\n")));
        assert_eq!(r.read_packet().unwrap(), Some(Packet::Flush));
        assert_eq!(r.read_packet().unwrap(), None);
        assert_eq!(r.read_packet().unwrap(), None);
    }

    #[test]
    fn truncated_and_malformed_input() {
        let mut r = Reader::new(&b"000ahel"[..]);
        let err = r.read_packet().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut r = Reader::new(&b"zzzz"[..]);
        assert_eq!(
            r.read_packet().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut r = Reader::new(&b"fff1"[..]);
        assert_eq!(
            r.read_packet().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn text_lists_and_data() {
        let input = b"000abatch\n0015hash-algo=sha256\n00010009a 12\n00000009hello0000";
        let mut r = Reader::new(&input[..]);
        let (args, end) = r.read_text_until_delim_or_flush().unwrap();
        assert_eq!(args, ["batch", "hash-algo=sha256"]);
        assert_eq!(end, End::Delim);
        assert_eq!(r.read_text_until_flush().unwrap(), ["a 12"]);
        let mut data = Vec::new();
        assert_eq!(r.copy_data_until_flush(&mut data).unwrap(), 5);
        assert_eq!(data, b"hello");
        assert_eq!(r.read_packet().unwrap(), None);
    }

    #[test]
    fn text_list_refuses_delim_when_only_flush_ends_it() {
        let mut r = Reader::new(&b"0001"[..]);
        assert_eq!(
            r.read_text_until_flush().unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut r = Reader::new(&b"0008abcd"[..]);
        assert_eq!(
            r.read_text_until_flush().unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn raw_scanner_returns_frames_and_stops_on_garbage() {
        let input = b"0008abcd00000009done\n\n";
        let mut s = RawScanner::new(Trickle(input));
        assert_eq!(s.next_frame().unwrap(), Some(&b"0008abcd"[..]));
        assert_eq!(s.next_frame().unwrap(), Some(&b"0000"[..]));
        assert_eq!(s.next_frame().unwrap(), Some(&b"0009done\n"[..]));
        assert_eq!(s.next_frame().unwrap(), None);
        assert_eq!(s.next_frame().unwrap(), None);
    }

    #[test]
    fn raw_scanner_rest_includes_read_ahead() {
        let input = b"0008abcd0000PACKdata";
        let mut s = RawScanner::new(&input[..]);
        assert_eq!(s.next_frame().unwrap(), Some(&b"0008abcd"[..]));
        assert_eq!(s.next_frame().unwrap(), Some(&b"0000"[..]));
        let mut rest = Vec::new();
        s.read_rest(&mut rest).unwrap();
        assert_eq!(rest, b"PACKdata");
    }

    #[test]
    fn raw_scanner_accepts_go_lengths() {
        let mut s = RawScanner::new(&b"00030002"[..]);
        assert_eq!(s.next_frame().unwrap(), Some(&b"0003"[..]));
        assert_eq!(s.next_frame().unwrap(), Some(&b"0002"[..]));
        assert_eq!(s.next_frame().unwrap(), None);
        let mut s = RawScanner::new(&b"0010short"[..]);
        assert_eq!(s.next_frame().unwrap(), None);
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::decode::{decode, decode_all, frame_len};

    /// xorshift64: deterministic pseudo-random inputs without a dependency.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Bias towards hex digits so that many headers parse.
                let b = (x >> 24) as u8;
                if i % 3 == 0 {
                    b"0123456789abcdef"[usize::from(b & 15)]
                } else {
                    b
                }
            })
            .collect()
    }

    #[test]
    fn arbitrary_input_never_panics_and_always_terminates() {
        for seed in 1..400u64 {
            let input = noise(seed, (seed as usize * 37) % 300);
            let _ = decode(&input);
            let _ = decode_all(&input);
            let _ = frame_len(&input, crate::MAX_HEADER_LEN);
            let mut r = Reader::new(&input[..]);
            for _ in 0..input.len() + 2 {
                match r.read_packet() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let mut s = RawScanner::new(&input[..]);
            let mut frames = 0;
            while let Ok(Some(_)) = s.next_frame() {
                frames += 1;
                assert!(frames <= input.len(), "scanner must make progress");
            }
        }
    }
}
