//! The `https://` transport against a local rustls server with a throw-away certificate made
//! by the `openssl` CLI: `ca_file` trust, and no retries on a certificate verification failure.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Client, Error, check};
use crate::config::Config;

fn make_cert(dir: &Path) -> bool {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success());
    ok && Command::new("openssl")
        .args([
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ])
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Serves `connections` TLS connections, answering each request with a `/check` body.
fn serve(dir: &Path, connections: usize) -> u16 {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        std::fs::read(dir.join("key.der")).unwrap(),
    ));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..connections {
            let Ok((tcp, _)) = listener.accept() else {
                return;
            };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = br#"{"api_version":"v4","redis":true}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(body);
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

#[test]
fn https_with_ca_file_and_unverifiable_server() {
    let dir = tempfile::tempdir().unwrap();
    if !make_cert(dir.path()) {
        eprintln!("openssl is not available; skipping");
        return;
    }
    let port = serve(dir.path(), 2);
    // One connection with the CA, one refused handshake without it (no retry would need more).
    let yaml = format!(
        "secret: s\ngitlab_url: https://127.0.0.1:{port}\nhttp_settings:\n  ca_file: {}\n",
        dir.path().join("cert.pem").display()
    );
    let config = Config::from_yaml(dir.path(), yaml.as_bytes()).unwrap();
    let client = Client::new(&config, "cid").unwrap();
    let report = check::check(&client).unwrap();
    assert!(report.redis);
    assert_eq!(report.api_version, "v4");

    // Without the CA the certificate cannot be verified: no retries, unreachable at once.
    let yaml = format!("secret: s\ngitlab_url: https://127.0.0.1:{port}\n");
    let config = Config::from_yaml(dir.path(), yaml.as_bytes()).unwrap();
    let client = Client::new(&config, "cid").unwrap();
    let started = Instant::now();
    assert_eq!(check::check(&client).unwrap_err(), Error::Unreachable);
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not retried"
    );
}
