//! The PROXY protocol (v1 text and v2 binary) in front of SSH (docs/gitlab-sshd.md, "PROXY
//! protocol"): the policies `use`, `require`, `reject`, `ignore`, `proxy_allowed`, and the header
//! timeout. The header is framed here (signature, length, CRLF) and decoded by the `ppp` crate;
//! bytes read past the header are handed back so the SSH layer sees them first.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The largest v2 header we accept (16 bytes + addresses + TLVs).
const V2_MAX: usize = 16 + 2048;

/// What to do with a header from one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Optional; used when present.
    Use,
    /// Mandatory.
    Require,
    /// Forbidden.
    Reject,
    /// Parsed and discarded.
    Ignore,
}

impl Policy {
    /// `proxy_policy` as upstream reads it: case-insensitive, anything unknown is `use`.
    pub fn parse(s: &str) -> Policy {
        match s.to_ascii_lowercase().as_str() {
            "require" => Policy::Require,
            "reject" => Policy::Reject,
            "ignore" => Policy::Ignore,
            _ => Policy::Use,
        }
    }
}

/// One `proxy_allowed` entry: an address or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("invalid proxy_allowed entry {s:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("invalid proxy_allowed entry {s:?}"))?,
            None => max,
        };
        Ok(Cidr { net, bits })
    }

    /// Whether `ip` is inside (IPv4-mapped IPv6 peers compare as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let (a, b, len): (u128, u128, u32) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n).into(), u32::from(i).into(), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let bits = u32::from(self.bits);
        if bits == 0 {
            return true;
        }
        let shift = len - bits;
        (a >> shift) == (b >> shift)
    }
}

/// The listener-wide PROXY settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `proxy_policy`.
    pub policy: Policy,
    /// `proxy_allowed`.
    pub allowed: Vec<Cidr>,
    /// `proxy_header_timeout`.
    pub timeout: Duration,
}

impl Settings {
    /// The policy for a peer. With `proxy_allowed`, listed peers get `use` and others `reject`
    /// (upstream); ours: `proxy_policy: require` together with `proxy_allowed` makes the header
    /// mandatory for the listed peers.
    pub fn policy_for(&self, peer: IpAddr) -> Policy {
        if self.allowed.is_empty() {
            return self.policy;
        }
        if self.allowed.iter().any(|c| c.contains(peer)) {
            if self.policy == Policy::Require {
                Policy::Require
            } else {
                Policy::Use
            }
        } else {
            Policy::Reject
        }
    }
}

/// Why a connection was refused before SSH.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    /// `require` and no header.
    #[error("proxy protocol header required")]
    Required,
    /// `reject` and a header.
    #[error("proxy protocol header not allowed")]
    Rejected,
    /// Not a valid header.
    #[error("invalid proxy protocol header: {0}")]
    Invalid(String),
    /// Read failure.
    #[error("reading proxy protocol header: {0}")]
    Io(String),
}

/// What the header said.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The client address from the header (None: no header, `LOCAL`, `UNKNOWN` or `ignore`).
    pub source: Option<SocketAddr>,
    /// Bytes read after the header: the start of the SSH stream.
    pub leftover: Vec<u8>,
}

enum Frame {
    /// Not (the start of) a header.
    None,
    /// Could still be a header.
    Partial,
    /// A whole header of this many bytes.
    Whole(usize),
}

fn frame(buf: &[u8]) -> Result<Frame, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Ok(Frame::Partial);
        }
        let total = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if total > V2_MAX {
            return Err(ProxyError::Invalid("header too long".into()));
        }
        return Ok(if buf.len() >= total {
            Frame::Whole(total)
        } else {
            Frame::Partial
        });
    }
    let n = buf.len().min(V1_PREFIX.len());
    if buf[..n] == V1_PREFIX[..n] {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            return Ok(Frame::Whole(i + 2));
        }
        if buf.len() >= V1_MAX {
            return Err(ProxyError::Invalid("v1 header without CRLF".into()));
        }
        return Ok(Frame::Partial);
    }
    Ok(Frame::None)
}

/// The client address a whole header names (None for LOCAL/UNKNOWN/unix).
pub fn decode(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if header.starts_with(V2_SIGNATURE) {
        let h =
            ppp::v2::Header::try_from(header).map_err(|e| ProxyError::Invalid(e.to_string()))?;
        if h.command == ppp::v2::Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            ppp::v2::Addresses::IPv4(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            ppp::v2::Addresses::IPv6(a) => {
                Some(SocketAddr::new(a.source_address.into(), a.source_port))
            }
            _ => None,
        });
    }
    let h = ppp::v1::Header::try_from(header).map_err(|e| ProxyError::Invalid(e.to_string()))?;
    Ok(match h.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

/// Reads an optional PROXY header from `stream` under `policy`, waiting at most `timeout` for
/// it. A timeout with nothing received means "no header" (then `require` refuses).
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
    policy: Policy,
    timeout: Duration,
) -> Result<Outcome, ProxyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    let found = loop {
        if !buf.is_empty() {
            match frame(&buf)? {
                Frame::None => break None,
                Frame::Whole(n) => break Some(n),
                Frame::Partial => {}
            }
        }
        let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
        match read {
            Err(_) if buf.is_empty() => break None,
            Err(_) => return Err(ProxyError::Invalid("incomplete header (timeout)".into())),
            Ok(Err(e)) => return Err(ProxyError::Io(e.to_string())),
            Ok(Ok(0)) if buf.is_empty() => break None,
            Ok(Ok(0)) => return Err(ProxyError::Invalid("incomplete header (EOF)".into())),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    match (found, policy) {
        (None, Policy::Require) => Err(ProxyError::Required),
        (None, _) => Ok(Outcome {
            source: None,
            leftover: buf,
        }),
        (Some(_), Policy::Reject) => Err(ProxyError::Rejected),
        (Some(n), _) => {
            let source = decode(&buf[..n])?;
            let leftover = buf.split_off(n);
            Ok(Outcome {
                source: if policy == Policy::Ignore {
                    None
                } else {
                    source
                },
                leftover,
            })
        }
    }
}

/// A stream that first yields `prefix`, then reads from `inner`.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(src: &str) -> Vec<u8> {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = "127.0.0.1:22".parse().unwrap();
        ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .build()
        .unwrap()
    }

    async fn read(input: &[u8], policy: Policy) -> Result<Outcome, ProxyError> {
        let mut r = input;
        read_header(&mut r, policy, Duration::from_millis(200)).await
    }

    #[tokio::test]
    async fn v1_v2_and_leftover() {
        let mut input = v2("10.1.1.1:1000");
        input.extend_from_slice(b"SSH-2.0-x\r\n");
        let o = read(&input, Policy::Use).await.unwrap();
        assert_eq!(o.source, Some("10.1.1.1:1000".parse().unwrap()));
        assert_eq!(o.leftover, b"SSH-2.0-x\r\n");
        let o = read(
            b"PROXY TCP4 192.0.2.7 127.0.0.1 4444 22\r\nSSH-2.0-y\r\n",
            Policy::Use,
        )
        .await
        .unwrap();
        assert_eq!(o.source, Some("192.0.2.7:4444".parse().unwrap()));
        assert_eq!(o.leftover, b"SSH-2.0-y\r\n");
        let o = read(b"PROXY TCP6 2001:db8::1 ::1 5 22\r\n", Policy::Use)
            .await
            .unwrap();
        assert_eq!(o.source, Some("[2001:db8::1]:5".parse().unwrap()));
    }

    #[tokio::test]
    async fn policies() {
        let hdr = v2("10.1.1.1:1000");
        assert_eq!(
            read(b"SSH-2.0-x\r\n", Policy::Require).await,
            Err(ProxyError::Required)
        );
        assert_eq!(read(&hdr, Policy::Reject).await, Err(ProxyError::Rejected));
        let o = read(b"SSH-2.0-x\r\n", Policy::Use).await.unwrap();
        assert_eq!(o.source, None);
        assert_eq!(o.leftover, b"SSH-2.0-x\r\n");
        let o = read(&hdr, Policy::Ignore).await.unwrap();
        assert_eq!(o.source, None);
        assert!(o.leftover.is_empty());
        // Nothing at all within the timeout: no header.
        assert_eq!(read(b"", Policy::Use).await.unwrap(), Outcome::default());
        assert_eq!(read(b"", Policy::Require).await, Err(ProxyError::Required));
    }

    #[tokio::test]
    async fn broken_headers() {
        assert!(matches!(
            read(b"PROXY TCP4 nonsense\r\n", Policy::Use).await,
            Err(ProxyError::Invalid(_))
        ));
        assert!(matches!(
            read(
                &[b'P', b'R', b'O', b'X', b'Y', b' ', b'A'].repeat(20),
                Policy::Use
            )
            .await,
            Err(ProxyError::Invalid(_))
        ));
        let mut truncated = v2("10.1.1.1:1000");
        truncated.truncate(20);
        assert!(matches!(
            read(&truncated, Policy::Use).await,
            Err(ProxyError::Invalid(_))
        ));
    }

    #[test]
    fn allowed_lists() {
        let s = Settings {
            policy: Policy::Use,
            allowed: vec![
                Cidr::parse("10.0.0.0/8").unwrap(),
                Cidr::parse("::1").unwrap(),
            ],
            timeout: Duration::from_millis(1),
        };
        assert_eq!(s.policy_for("10.2.3.4".parse().unwrap()), Policy::Use);
        assert_eq!(s.policy_for("::1".parse().unwrap()), Policy::Use);
        assert_eq!(
            s.policy_for("::ffff:10.0.0.1".parse().unwrap()),
            Policy::Use
        );
        assert_eq!(s.policy_for("11.0.0.1".parse().unwrap()), Policy::Reject);
        let s = Settings {
            policy: Policy::Require,
            ..s
        };
        assert_eq!(s.policy_for("10.2.3.4".parse().unwrap()), Policy::Require);
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("x").is_err());
        assert_eq!(Policy::parse("REQUIRE"), Policy::Require);
        assert_eq!(Policy::parse("whatever"), Policy::Use);
    }
}
