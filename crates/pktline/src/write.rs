//! `std::io` adapters for writing pkt-lines.

use std::io::{self, Write};

use crate::MAX_DATA_LEN;
use crate::encode::{self, EncodeError};

/// Writes whole packets to any `Write`. Each call issues one `write_all`, so packets are never
/// interleaved with other output; call [`Writer::flush_io`] before waiting on the peer.
#[derive(Debug)]
pub struct Writer<W> {
    inner: W,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            scratch: Vec::new(),
        }
    }

    /// Writes one data packet (1 to [`MAX_DATA_LEN`] bytes).
    pub fn data(&mut self, data: &[u8]) -> io::Result<()> {
        self.scratch.clear();
        encode::data(data, &mut self.scratch).map_err(invalid)?;
        self.inner.write_all(&self.scratch)
    }

    /// Writes `text` + LF as one packet.
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        self.scratch.clear();
        encode::text(text.as_bytes(), &mut self.scratch).map_err(invalid)?;
        self.inner.write_all(&self.scratch)
    }

    /// Writes `0000`.
    pub fn flush_pkt(&mut self) -> io::Result<()> {
        self.inner.write_all(crate::FLUSH)
    }

    /// Writes `0001`.
    pub fn delim(&mut self) -> io::Result<()> {
        self.inner.write_all(crate::DELIM)
    }

    /// Writes `0002`.
    pub fn response_end(&mut self) -> io::Result<()> {
        self.inner.write_all(crate::RESPONSE_END)
    }

    /// Flushes the underlying writer (an I/O flush, not a flush packet).
    pub fn flush_io(&mut self) -> io::Result<()> {
        self.inner.flush()
    }

    /// A `Write` adapter that wraps everything written to it into data packets.
    pub fn data_writer(&mut self) -> DataWriter<'_, W> {
        DataWriter { inner: self }
    }

    /// The wrapped writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Unwraps the writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Turns plain writes into data packets of at most [`MAX_DATA_LEN`] bytes each; see
/// [`Writer::data_writer`]. Empty writes produce nothing (git reserves `0004`).
#[derive(Debug)]
pub struct DataWriter<'a, W> {
    inner: &'a mut Writer<W>,
}

impl<W: Write> Write for DataWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(MAX_DATA_LEN);
        self.inner.data(&buf[..n])?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush_io()
    }
}

fn invalid(e: EncodeError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_packets() {
        let mut w = Writer::new(Vec::new());
        w.text("status 200").unwrap();
        w.delim().unwrap();
        w.data(b"\x00\x01").unwrap();
        w.flush_pkt().unwrap();
        w.response_end().unwrap();
        assert_eq!(w.into_inner(), b"000fstatus 200\n00010006\x00\x0100000002");
    }

    #[test]
    fn refuses_oversized_and_empty_packets() {
        let mut w = Writer::new(Vec::new());
        let big = vec![0u8; MAX_DATA_LEN + 1];
        assert_eq!(
            w.data(&big).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(w.data(b"").unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(w.into_inner().is_empty());
    }

    #[test]
    fn data_writer_chunks() {
        let mut w = Writer::new(Vec::new());
        let big = vec![7u8; MAX_DATA_LEN + 3];
        w.data_writer().write_all(&big).unwrap();
        let out = w.into_inner();
        assert_eq!(&out[..4], b"fff0");
        assert_eq!(&out[4 + MAX_DATA_LEN..4 + MAX_DATA_LEN + 4], b"0007");
        assert_eq!(out.len(), big.len() + 8);
    }
}
