//! `tls://host:port` dialling (Gitaly `internal/grpc/client/dial.go`: TLS ≥ 1.2 with the system
//! certificate pool). rustls with the ring provider; roots from the platform store, honouring
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` like Go's `x509.SystemCertPool`. ALPN offers `h2`, as grpc-go
//! does. The backchannel handshake then runs inside the TLS session.

use crate::Error;
use crate::connection::IoDyn;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use std::io;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

/// Dials `host_port` over TLS with the system roots. The outer `Result` is for set-up problems
/// that are not connection failures; the inner one is the dial itself.
pub(crate) async fn connect(host_port: &str) -> Result<io::Result<Box<dyn IoDyn>>, Error> {
    let config = client_config(native_roots())?;
    Ok(connect_with(host_port, config).await)
}

/// The platform's trust anchors; unreadable entries are skipped (logged at debug level).
fn native_roots() -> RootCertStore {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::debug!(error = %error, "skipping unreadable system certificates");
    }
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::debug!(ignored, "skipped unparsable system certificates");
    }
    roots
}

/// TLS 1.2/1.3 client configuration with the given roots, offering ALPN `h2`.
pub(crate) fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Local(format!("TLS set-up failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// TCP connect to `host_port`, then the TLS handshake with `host` as server name (SNI and
/// certificate check; an IP literal is checked against the certificate's IP SANs).
pub(crate) async fn connect_with(
    host_port: &str,
    config: Arc<ClientConfig>,
) -> io::Result<Box<dyn IoDyn>> {
    let name = server_name(host_port)?;
    let tcp = tokio::net::TcpStream::connect(host_port).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::new(tls))
}

fn server_name(host_port: &str) -> io::Result<ServerName<'static>> {
    let host = match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(host.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const CERT: &[u8] = include_bytes!("../tests/fixtures/tls-localhost.crt");
    const KEY: &[u8] = include_bytes!("../tests/fixtures/tls-localhost.key");

    /// A TLS server on 127.0.0.1 answering one connection: returns what the client sent first
    /// (11 bytes) and the negotiated ALPN protocol.
    async fn tls_server() -> (
        u16,
        tokio::task::JoinHandle<Option<(Vec<u8>, Option<Vec<u8>>)>>,
    ) {
        let cert = CertificateDer::from_pem_slice(CERT).expect("test cert");
        let key = PrivateKeyDer::from_pem_slice(KEY).expect("test key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.ok()?;
            let mut tls = acceptor.accept(tcp).await.ok()?;
            let mut first = vec![0u8; 11];
            tls.read_exact(&mut first).await.ok()?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            tls.write_all(b"ok").await.ok()?;
            Some((first, alpn))
        });
        (port, task)
    }

    fn test_roots() -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(CERT).expect("test cert"))
            .expect("root");
        roots
    }

    #[tokio::test]
    async fn tls_dial_verifies_the_server_and_offers_h2() {
        for host in ["localhost", "127.0.0.1"] {
            let (port, server) = tls_server().await;
            let config = client_config(test_roots()).expect("config");
            let mut conn = connect_with(&format!("{host}:{port}"), config)
                .await
                .expect("tls dial");
            conn.write_all(crate::sidechannel::BACKCHANNEL_MAGIC)
                .await
                .expect("write");
            let mut answer = [0u8; 2];
            conn.read_exact(&mut answer).await.expect("read");
            let (first, alpn) = server.await.expect("join").expect("server side");
            assert_eq!(first, b"backchannel");
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        }
    }

    #[tokio::test]
    async fn untrusted_certificate_is_the_unavailable_error() {
        let (port, _server) = tls_server().await;
        let err = crate::connection::connect(&Address::Tls(format!("localhost:{port}")))
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(err, Some(Error::unavailable(false).to_string()));
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("gitaly.example.com:9999"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("127.0.0.1:9999"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:9999"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(server_name("bad name:1").is_err());
    }
}
