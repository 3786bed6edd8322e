//! The command-level test tier: runs a command in-process, exactly as a front door does
//! ([`super::execute`] with a [`Session`] and an in-memory [`Io`]), against the stub internal
//! API and, for the git commands, the dev Gitaly on a storage folder with one small repository.
//! Each command module's tests use [`Kit`]; the end-to-end suite proves the same through real
//! sshd and git.

use std::path::Path;
use std::process::Command as Process;

use stub_api::{Fixture, StartOptions, StubApi};

use super::{Session, execute};
use crate::config::Config;
use crate::identity::Identity;
use crate::io::Io;
use crate::sshenv::SshEnv;

/// The shared secret the kit's config and stub API agree on.
const SECRET: &str = "command-test-secret";

/// Users, keys and projects the tests refer to: `alice` (key 1, 2FA, maintainer of
/// `group/repo`), `bob` (key 2, reporter of `group/repo`); `group/audited` is the same
/// repository with `need_audit`.
pub const FIXTURE: &str = r#"
external_url: http://gitlab.example.com
check: { api_version: v4, gitlab_version: 18.3.0, gitlab_rev: abc, redis: true }
users:
  - { id: 1, username: alice, name: Alice, two_factor: true, recovery_codes: [aaaa-1111, bbbb-2222], otp: "123456" }
  - { id: 2, username: bob, name: Bob }
keys:
  - { id: 1, user: alice, title: a, key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFndHzcKPTK+ErPd+bVlQYRX6IWC5m9rbGX0AM9fruB/ a" }
  - { id: 2, user: bob, title: b, key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKpz2r1ZtWgIBGmxAYoqkq7f3tSrNA6ozcbGRqBJTsMJ b" }
projects:
  - path: group/repo
    id: 7
    relative_path: group/repo.git
    storage: default
    members: { alice: admin, bob: read }
    default_branch: main
    protected_branches: [main]
  - path: group/audited
    id: 8
    relative_path: group/repo.git
    storage: default
    members: { alice: admin }
    need_audit: true
"#;

/// A self-signed certificate for `localhost` and `127.0.0.1` and its key (gitaly-client's
/// TLS test fixtures).
const TLS_CERT: &[u8] = include_bytes!("../../../gitaly-client/tests/fixtures/tls-localhost.crt");
const TLS_KEY: &[u8] = include_bytes!("../../../gitaly-client/tests/fixtures/tls-localhost.key");

/// Serves TLS (ALPN `h2`, [`TLS_CERT`]) on a free 127.0.0.1 port and relays each connection's
/// bytes to and from `backend` (`host:port`), on a thread of its own for the rest of the
/// test process. Returns the port.
fn tls_terminator(backend: String) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let cert = CertificateDer::from_pem_slice(TLS_CERT).expect("cert");
    let key = PrivateKeyDer::from_pem_slice(TLS_KEY).expect("key");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, backend) = (acceptor.clone(), backend.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(&backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
    });
    port
}

/// What a command run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status.
    pub status: u8,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr, as text.
    pub stderr: String,
}

impl Outcome {
    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// A stub API (and optionally a dev Gitaly) plus a config pointing at them.
pub struct Kit {
    /// The stub internal API; tests read its recorded requests.
    pub api: StubApi,
    /// The loaded config.
    pub config: Config,
    _gitaly: Option<dev_gitaly::DevGitaly>,
    late: std::sync::Arc<std::sync::Mutex<Option<dev_gitaly::DevGitaly>>>,
    _dirs: Vec<tempfile::TempDir>,
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary folder")
}

impl Kit {
    /// The stub API answering from [`FIXTURE`]; `extra_yaml` is appended to `config.yml`.
    pub fn new(extra_yaml: &str) -> Kit {
        let fixture = Fixture::from_yaml_str(FIXTURE).expect("fixture");
        let api = StubApi::start(
            fixture,
            StartOptions {
                secret: Some(SECRET.as_bytes().to_vec()),
                ..StartOptions::default()
            },
        )
        .expect("stub API");
        let root = tempdir();
        let yaml = format!(
            "gitlab_url: {}\nsecret: {SECRET}\nlog_file: \"\"\n{extra_yaml}",
            api.tcp_url()
        );
        let config = Config::from_yaml(root.path(), yaml.as_bytes()).expect("config");
        Kit {
            api,
            config,
            _gitaly: None,
            late: Default::default(),
            _dirs: vec![root],
        }
    }

    /// Adds a dev Gitaly whose storage holds `group/repo.git` with one commit on `main`, and
    /// points `/allowed` answers at it.
    pub fn with_gitaly(mut self) -> Kit {
        let storage = tempdir();
        make_repo(&storage.path().join("group/repo.git"));
        let mut options = dev_gitaly::Options::new(storage.path());
        // The kit never pushes, so the hooks never run.
        options.hook_binary = Some("/bin/true".into());
        let gitaly = dev_gitaly::DevGitaly::start(options).expect("dev gitaly");
        self.api.set_gitaly(gitaly.address(), "");
        self._gitaly = Some(gitaly);
        self._dirs.push(storage);
        self
    }

    /// Like [`Kit::with_gitaly`], with the dev Gitaly behind a TLS terminator: `/allowed`
    /// answers `tls://localhost:<port>`, whose certificate is self-signed (`localhost`,
    /// `127.0.0.1`). With `trusted`, the certificate is the only file of a folder that the
    /// config names as `ssl_cert_dir`; without, nothing trusts it.
    pub fn with_tls_gitaly(mut self, trusted: bool) -> Kit {
        self = self.with_gitaly();
        let backend = self
            ._gitaly
            .as_ref()
            .map(|g| g.address().trim_start_matches("tcp://").to_owned())
            .expect("a tcp dev Gitaly");
        let port = tls_terminator(backend);
        self.api.set_gitaly(format!("tls://localhost:{port}"), "");
        if trusted {
            let certs = tempdir();
            std::fs::write(certs.path().join("gitaly.pem"), TLS_CERT).expect("write cert");
            self.config.ssl_cert_dir = certs.path().display().to_string();
            self._dirs.push(certs);
        }
        self
    }

    /// Like [`Kit::with_gitaly`], but the dev Gitaly only starts listening `delay` after this
    /// call (a Gitaly that is down for the first dial); `/allowed` points at its address.
    pub fn with_late_gitaly(mut self, delay: std::time::Duration) -> Kit {
        let storage = tempdir();
        make_repo(&storage.path().join("group/repo.git"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut options = dev_gitaly::Options::new(storage.path());
        options.hook_binary = Some("/bin/true".into());
        options.listen = dev_gitaly::Listen::Tcp(format!("127.0.0.1:{port}"));
        self.api.set_gitaly(format!("tcp://127.0.0.1:{port}"), "");
        let slot = std::sync::Arc::clone(&self.late);
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let gitaly = dev_gitaly::DevGitaly::start(options).expect("dev gitaly");
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(gitaly);
            }
        });
        self._dirs.push(storage);
        self
    }

    /// Runs the SSH command `command` for `identity` with `stdin`, as a front door would.
    pub fn run(&self, identity: Identity, command: &str, stdin: &[u8]) -> Outcome {
        self.run_env(identity, Self::env(command), stdin)
    }

    /// The SSH environment [`Kit::run`] uses: client `192.0.2.10`, no `GIT_PROTOCOL`.
    pub fn env(command: &str) -> SshEnv {
        SshEnv::from_values("192.0.2.10 5555 127.0.0.1 22", command.into(), "")
    }

    /// [`Kit::run`] with an explicit SSH environment.
    pub fn run_env(&self, identity: Identity, env: SshEnv, stdin: &[u8]) -> Outcome {
        let (mut io, out, err) = Io::memory(stdin);
        let session = Session {
            config: &self.config,
            identity,
            env,
            correlation_id: "command-test",
            observer: crate::observe::noop(),
            gitaly_pool: None,
        };
        let status = execute(&session, &mut io);
        Outcome {
            status,
            stdout: out.contents(),
            stderr: err.text(),
        }
    }
}

/// The framed warning block GitLab Shell prints for `message` (behaviour §1.6).
pub fn framed(message: &str) -> String {
    let line = "=".repeat(72);
    format!(
        "remote: \nremote: {line}\nremote: \nremote: {message}\nremote: \nremote: {line}\nremote: \n"
    )
}

/// Key 1 (alice).
pub fn alice() -> Identity {
    Identity::KeyId("1".into())
}

/// Key 2 (bob, read-only).
pub fn bob() -> Identity {
    Identity::KeyId("2".into())
}

fn git(args: &[&str], dir: &Path) {
    let status = Process::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .env("GIT_AUTHOR_DATE", "2020-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2020-01-01T00:00:00Z")
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

fn make_repo(bare: &Path) {
    let work = tempdir();
    git(&["init", "-q", "-b", "main", "."], work.path());
    std::fs::write(work.path().join("README"), "hello\n").expect("write");
    git(&["add", "README"], work.path());
    git(&["commit", "-q", "-m", "first"], work.path());
    std::fs::create_dir_all(bare).expect("mkdir");
    git(
        &["clone", "-q", "--bare", ".", &bare.to_string_lossy()],
        work.path(),
    );
}
