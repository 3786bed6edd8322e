//! Which certificates GitLab Shell trusts, and the rustls client configuration built from them.
//! Every TLS client of the product uses it: the internal-API client for `https://` (GitLab
//! Shell `client/httpclient.go`), the Gitaly client for `tls://` (Gitaly `client/dial.go`), and
//! the Geo primary and Git LFS clients (Go's default HTTP client, i.e. the system pool).
//!
//! The semantics (docs/behaviour.md §2.3, §2.4 and §5.4, docs/gitaly.md §2.8):
//! - the **system roots** are the platform's store as `rustls-native-certs` finds it, which
//!   honours `SSL_CERT_FILE`/`SSL_CERT_DIR` like Go's `x509.SystemCertPool`;
//! - the top-level `ssl_cert_dir` config key is part of the system roots of the **whole
//!   process**: GitLab Shell exports it as `SSL_CERT_DIR`, so its certificates are trusted by
//!   https to the internal API *and* by Gitaly `tls://`. We never touch the environment; the
//!   directory travels in [`Trust`] instead. Like `SSL_CERT_DIR` it may list several
//!   directories separated by `:`. (Go replaces the default directories with it; we add it to
//!   the platform store, a superset of the same anchors — the default bundle file, which Go
//!   keeps reading, already holds what the default directories hold.)
//! - `http_settings.ca_file` (must exist) and `http_settings.ca_path` (every file in the
//!   folder, errors ignored) add to that, for the internal API only.
//!
//! Nothing here runs for `http://`, `http+unix://`, `unix:` or `tcp://`: callers build a
//! [`Trust`] for free and load certificates only when they dial TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
pub use rustls::{ClientConfig, RootCertStore};

/// A TLS set-up failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `http_settings.ca_file` could not be read (GitLab Shell's text).
    #[error("cannot find cafile '{}': cafile not found", .0.display())]
    CaFileNotFound(PathBuf),
    /// rustls refused the configuration.
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificates a TLS client trusts beyond the platform store. Cheap to build and clone;
/// nothing is read until [`Trust::roots`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Trust {
    /// `ssl_cert_dir`, split on `:` (empty: none).
    pub cert_dirs: Vec<PathBuf>,
    /// `http_settings.ca_file` (internal API only).
    pub ca_file: Option<PathBuf>,
    /// `http_settings.ca_path` (internal API only).
    pub ca_path: Option<PathBuf>,
}

impl Trust {
    /// The process-wide trust: the platform store plus `ssl_cert_dir` (empty: none).
    pub fn system(ssl_cert_dir: &str) -> Trust {
        Trust {
            cert_dirs: std::env::split_paths(ssl_cert_dir)
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
            ca_file: None,
            ca_path: None,
        }
    }

    /// Adds the internal API's `ca_file` and `ca_path` (each ignored when empty).
    #[must_use]
    pub fn with_ca(mut self, ca_file: &str, ca_path: &str) -> Trust {
        self.ca_file = (!ca_file.is_empty()).then(|| PathBuf::from(ca_file));
        self.ca_path = (!ca_path.is_empty()).then(|| PathBuf::from(ca_path));
        self
    }

    /// Loads every trust anchor. Unreadable or unparsable certificates are skipped (logged at
    /// debug level), except a `ca_file` that cannot be read.
    ///
    /// # Errors
    /// [`Error::CaFileNotFound`].
    pub fn roots(&self) -> Result<RootCertStore, Error> {
        let mut roots = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(error = %error, "skipping unreadable system certificates");
        }
        add_all(&mut roots, native.certs);
        if let Some(file) = &self.ca_file {
            let pem = std::fs::read(file).map_err(|_| Error::CaFileNotFound(file.clone()))?;
            add_all(
                &mut roots,
                CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok),
            );
        }
        for dir in self.cert_dirs.iter().chain(&self.ca_path) {
            add_dir(&mut roots, dir);
        }
        Ok(roots)
    }

    /// A TLS 1.2/1.3 client configuration (ring provider) trusting [`Trust::roots`], offering
    /// the given ALPN protocols (`h2` for gRPC; none for the internal API).
    ///
    /// # Errors
    /// See [`Trust::roots`]; [`Error::Rustls`] if rustls refuses the protocol versions.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_root_certificates(self.roots()?)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// Every regular file of `dir` (symlinks followed), read as a PEM bundle; errors ignored, as
/// Go does for `ca_path` and for the files of `SSL_CERT_DIR`.
fn add_dir(roots: &mut RootCertStore, dir: &Path) {
    let loaded = rustls_native_certs::load_certs_from_paths(None, Some(dir));
    for error in &loaded.errors {
        tracing::debug!(error = %error, "skipping unreadable certificates");
    }
    add_all(roots, loaded.certs);
}

fn add_all(roots: &mut RootCertStore, certs: impl IntoIterator<Item = CertificateDer<'static>>) {
    let (_, ignored) = roots.add_parsable_certificates(certs);
    if ignored > 0 {
        tracing::debug!(ignored, "skipped unparsable certificates");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &[u8] = include_bytes!("../../gitaly-client/tests/fixtures/tls-localhost.crt");

    fn has_test_cert(roots: &RootCertStore) -> bool {
        let probe = {
            let mut one = RootCertStore::empty();
            one.add(CertificateDer::from_pem_slice(CERT).expect("cert"))
                .expect("anchor");
            one.roots[0].clone()
        };
        roots.roots.contains(&probe)
    }

    #[test]
    fn ssl_cert_dir_splits_like_ssl_cert_dir() {
        assert_eq!(Trust::system(""), Trust::default());
        assert_eq!(
            Trust::system("/a::/b").cert_dirs,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let t = Trust::system("/c").with_ca("/f.pem", "");
        assert_eq!(t.ca_file.as_deref(), Some(Path::new("/f.pem")));
        assert_eq!(t.ca_path, None);
    }

    #[test]
    fn each_source_adds_its_anchors_and_junk_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("mkdir");
        std::fs::write(certs.join("junk.pem"), b"not a certificate").expect("write");
        std::fs::create_dir(certs.join("sub")).expect("mkdir");
        assert!(!has_test_cert(&Trust::default().roots().expect("roots")));
        assert!(!has_test_cert(
            &Trust::system(&certs.display().to_string())
                .roots()
                .expect("roots")
        ));

        std::fs::write(certs.join("ca.pem"), CERT).expect("write");
        let as_dir = certs.display().to_string();
        assert!(has_test_cert(
            &Trust::system(&as_dir).roots().expect("roots")
        ));
        let as_ca_path = Trust::default().with_ca("", &as_dir);
        assert!(has_test_cert(&as_ca_path.roots().expect("roots")));
        let file = certs.join("ca.pem").display().to_string();
        let as_ca_file = Trust::default().with_ca(&file, "");
        assert!(has_test_cert(&as_ca_file.roots().expect("roots")));
    }

    #[test]
    fn a_missing_ca_file_is_gitlab_shells_error_and_a_missing_dir_is_not() {
        let err = Trust::default()
            .with_ca("/nonexistent/ca.pem", "")
            .roots()
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            "cannot find cafile '/nonexistent/ca.pem': cafile not found"
        );
        assert!(
            Trust::system("/nonexistent")
                .with_ca("", "/nonexistent")
                .client_config(&[b"h2"])
                .is_ok()
        );
    }
}
