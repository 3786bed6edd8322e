//! `tls://host:port` dialling (Gitaly `internal/grpc/client/dial.go`: TLS ≥ 1.2 with the system
//! certificate pool). The trust anchors and the rustls configuration come from the `tls-trust`
//! crate, shared with the internal-API client: the platform store plus GitLab Shell's
//! `ssl_cert_dir` (docs/gitaly.md §2.8). ALPN offers `h2`, as grpc-go does. The backchannel
//! handshake then runs inside the TLS session.

use crate::Error;
use crate::socket::IoDyn;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::io;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

use tls_trust::Trust;

/// gRPC's ALPN protocol.
const H2: &[u8] = b"h2";

/// Dials `host_port` over TLS, trusting what `trust` lists. The outer `Result` is for set-up
/// problems that are not connection failures; the inner one is the dial itself.
pub(crate) async fn connect(
    host_port: &str,
    trust: &Trust,
) -> Result<io::Result<Box<dyn IoDyn>>, Error> {
    let config = trust
        .client_config(&[H2])
        .map_err(|e| Error::Local(e.to_string()))?;
    Ok(connect_with(host_port, config).await)
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

    /// `ssl_cert_dir` holding the test certificate (a self-signed one, its own anchor).
    fn ssl_cert_dir() -> (tempfile::TempDir, Trust) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("gitaly-ca.pem"), CERT).expect("write");
        let trust = Trust::system(&dir.path().display().to_string());
        (dir, trust)
    }

    #[tokio::test]
    async fn tls_dial_verifies_the_server_and_offers_h2() {
        for host in ["localhost", "127.0.0.1"] {
            let (port, server) = tls_server().await;
            let (_dir, trust) = ssl_cert_dir();
            let mut conn = connect(&format!("{host}:{port}"), &trust)
                .await
                .expect("set-up")
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
        let err = crate::connection::connect(
            &Address::Tls(format!("localhost:{port}")),
            &Trust::default(),
        )
        .await
        .err()
        .map(|e| e.to_string());
        assert_eq!(err, Some(Error::unavailable(false).to_string()));
    }

    #[tokio::test]
    async fn ssl_cert_dir_is_what_makes_a_self_signed_gitaly_trusted() {
        let (dir, trusted) = ssl_cert_dir();
        let (port, server) = tls_server().await;
        let mut conn = connect(&format!("localhost:{port}"), &trusted)
            .await
            .expect("set-up")
            .expect("trusted through ssl_cert_dir");
        conn.write_all(b"backchannel").await.expect("write");
        let (first, _) = server.await.expect("join").expect("server side");
        assert_eq!(first, b"backchannel");

        // The same server without ssl_cert_dir: the handshake fails on the certificate.
        let (port, _server) = tls_server().await;
        let refused = connect(&format!("localhost:{port}"), &Trust::system(""))
            .await
            .expect("set-up")
            .err()
            .expect("refused without ssl_cert_dir");
        let cause = refused
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(cause, Some(rustls::Error::InvalidCertificate(_))),
            "{refused:?}"
        );
        drop(dir);
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
