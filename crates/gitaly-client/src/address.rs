//! Parsing of `gitaly.address` values, mirroring Gitaly's `internal/grpc/client/dial.go`
//! (`getConnectionType`): the URL scheme alone decides how to dial.
//!
//! Accepted forms: `unix:/path`, `unix:///path`, `unix:relative/path`, `tcp://host:port`,
//! `tls://host:port` and `dns:[//authority/]host[:port]` (port 443 when omitted, as Gitaly's
//! resolver does). Host/port problems are not parse errors: like Go's non-blocking dial they
//! surface when the call dials (as `Unavailable`).

use crate::Error;

/// Where and how to dial Gitaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A unix domain socket path (possibly relative to the current directory).
    Unix(String),
    /// Plain TCP to `host:port`.
    Tcp(String),
    /// TCP + TLS (system roots) to `host:port`; the host is also the TLS server name.
    Tls(String),
    /// TCP to `host:port` after a DNS lookup (`dns:` scheme).
    Dns(String),
}

/// Default port of Gitaly's `dns:` resolver when the target has none.
const DNS_DEFAULT_PORT: &str = "443";

/// Parses a `gitaly.address` string.
///
/// # Errors
/// [`Error::NoAddress`] for an empty string, [`Error::InvalidAddress`] for an unknown scheme.
pub fn parse(addr: &str) -> Result<Address, Error> {
    if addr.is_empty() {
        return Err(Error::NoAddress);
    }
    let invalid = || Error::InvalidAddress(addr.to_owned());
    let (scheme, rest) = addr.split_once(':').ok_or_else(invalid)?;
    if !is_url_scheme(scheme) {
        return Err(invalid());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "unix" => {
            // `unix:///path` has an empty authority; `unix:/path` and `unix:path` have none.
            let path = rest.strip_prefix("//").unwrap_or(rest);
            Ok(Address::Unix(path.to_owned()))
        }
        "tcp" => Ok(Address::Tcp(authority(rest).ok_or_else(invalid)?)),
        "tls" => Ok(Address::Tls(authority(rest).ok_or_else(invalid)?)),
        "dns" => {
            // dns:[//authority/]host:port — the optional authority names a DNS server; we use
            // the system resolver either way.
            let target = match rest.strip_prefix("//") {
                Some(with_authority) => with_authority
                    .split_once('/')
                    .map(|(_, target)| target)
                    .ok_or_else(invalid)?,
                None => rest,
            };
            if target.is_empty() {
                return Err(invalid());
            }
            Ok(Address::Dns(with_default_port(target)))
        }
        _ => Err(invalid()),
    }
}

/// `//host:port[/...]` → `host:port`, `None` when the `//` is missing (Go's url.Parse would put
/// the rest into an opaque part and leave Host empty).
fn authority(rest: &str) -> Option<String> {
    let after = rest.strip_prefix("//")?;
    let host = after.split(['/', '?', '#']).next().unwrap_or_default();
    Some(host.to_owned())
}

fn with_default_port(target: &str) -> String {
    let has_port = match target.rsplit_once(':') {
        // `[::1]:8075` or `host:8075`; a bare IPv6 literal needs brackets to carry a port.
        Some((host, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    };
    if has_port {
        target.to_owned()
    } else {
        format!("{target}:{DNS_DEFAULT_PORT}")
    }
}

/// RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
fn is_url_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_table() {
        let ok = [
            (
                "unix:/run/gitaly.sock",
                Address::Unix("/run/gitaly.sock".into()),
            ),
            (
                "unix:///run/gitaly.sock",
                Address::Unix("/run/gitaly.sock".into()),
            ),
            (
                "unix:tmp/gitaly.sock",
                Address::Unix("tmp/gitaly.sock".into()),
            ),
            (
                "tcp://127.0.0.1:8075",
                Address::Tcp("127.0.0.1:8075".into()),
            ),
            ("tcp://[::1]:8075", Address::Tcp("[::1]:8075".into())),
            ("tcp://gitaly:8075/", Address::Tcp("gitaly:8075".into())),
            (
                "tls://gitaly.example.com:9999",
                Address::Tls("gitaly.example.com:9999".into()),
            ),
            (
                "dns:///127.0.0.1:8075",
                Address::Dns("127.0.0.1:8075".into()),
            ),
            ("dns:127.0.0.1:8075", Address::Dns("127.0.0.1:8075".into())),
            (
                "dns://8.8.8.8:53/gitaly:8075",
                Address::Dns("gitaly:8075".into()),
            ),
            (
                "dns:gitaly.example.com",
                Address::Dns("gitaly.example.com:443".into()),
            ),
            ("dns:[::1]:8075", Address::Dns("[::1]:8075".into())),
        ];
        for (input, want) in ok {
            assert_eq!(parse(input).ok(), Some(want), "{input}");
        }
    }

    #[test]
    fn address_errors_read_like_gitlab_shell() {
        assert_eq!(
            parse("").err().map(|e| e.to_string()).as_deref(),
            Some("no gitaly_address given")
        );
        for bad in [
            "foo",
            "127.0.0.1:8075",
            "http://gitaly:8075",
            "tcp:gitaly:8075",
            "dns://x",
            "1tcp://a:1",
        ] {
            assert_eq!(
                parse(bad).err().map(|e| e.to_string()),
                Some(format!("invalid connection string: \"{bad}\"")),
                "{bad}"
            );
        }
    }
}
