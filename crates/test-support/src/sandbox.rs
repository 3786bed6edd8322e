//! [`Sandbox`]: a GitLab Shell root for one test, laid out as an operator's install is
//! (`<root>/bin/<binaries>`, `<root>/config.yml`, `<root>/.gitlab_shell_secret`), with the stub
//! internal API running in-process, a Gitaly (the in-process dev Gitaly, or GitLab's own as a
//! child process: [`crate::real_gitaly`]) and the fixture's projects as bare repositories in a
//! storage folder.
//!
//! The root lives under `<workspace>/target/e2e` (mode 0755 all the way up) because sshd refuses
//! an `AuthorizedKeysCommand` below a group/world-writable folder such as `/tmp`; sockets live in a
//! short `/tmp/glsXXXXXX` folder because unix socket paths are limited to ~108 bytes. Everything
//! is stopped on drop; the root is removed unless the test is failing (then it is kept for a
//! post-mortem and its path is printed).
//!
//! On drop, unless the test is already failing, every log in the root (`*.log` outside the
//! storage, `home` and `work` folders, e.g. `gitlab-shell.log` and sshd's log with the keys
//! check's stderr) and the `log_file` that `config.yml` names are scanned with
//! [`crate::secrets::scan`] for JWTs, `glpat-` tokens, Basic credentials, the sandbox's shared
//! secret and Gitaly token, and the fixture's tokens (see [`Sandbox::watched_secrets`]); any
//! finding fails the test, naming the log and the line, and keeps the root.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use dev_gitaly::{DevGitaly, Listen, Options as GitalyOptions};
use stub_api::fixture::{Fixture, Key};
use stub_api::{StartOptions, StubApi};

use crate::git::{Commit, GitEnv};
use crate::keys::ClientKey;
use crate::paths::{
    PRODUCT_BINARIES, bin_dir_override, built_binary, current_user, make_dir, socket_dir,
    unique_dir,
};
use crate::real_gitaly::{GitalyKind, RealGitaly, RealOptions};
use crate::run::{Cmd, Run};
use crate::secrets::{self, Finding};
use crate::sshd::Sshd;

/// The `SSH_CONNECTION` the sandbox passes by default: client 127.0.0.1:51234 → server :22.
pub const SSH_CONNECTION: &str = "127.0.0.1 51234 127.0.0.1 22";

/// The shared secret written to `.gitlab_shell_secret` unless the builder sets another.
pub const DEFAULT_SECRET: &str = "e2e-shared-secret-0123456789abcdef";

/// Gitaly token configured unless the builder sets another (empty = no auth).
pub const DEFAULT_GITALY_TOKEN: &str = "e2e-gitaly-token";

/// How GitLab Shell reaches the stub API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiTransport {
    /// `gitlab_url: http://127.0.0.1:<port>`.
    Tcp,
    /// `gitlab_url: http+unix://<escaped socket path>`.
    Unix,
}

/// Builder for [`Sandbox`]; start with [`Sandbox::builder`].
pub struct SandboxBuilder {
    root: PathBuf,
    fixture: Fixture,
    transport: ApiTransport,
    gitaly: bool,
    gitaly_kind: GitalyKind,
    gitaly_token: String,
    secret: Vec<u8>,
    config_extra: String,
    seeds: Vec<(String, Vec<Commit>)>,
}

impl SandboxBuilder {
    /// The stub API's fixture (users, keys, projects, …); the Gitaly placement is filled in.
    pub fn fixture(mut self, fixture: Fixture) -> Self {
        self.fixture = fixture;
        self
    }

    /// The fixture as YAML text (schema in `stub_api::fixture`). Panics on invalid YAML.
    #[track_caller]
    pub fn fixture_yaml(self, yaml: &str) -> Self {
        match Fixture::from_yaml_str(yaml) {
            Ok(f) => self.fixture(f),
            Err(e) => panic!("bad fixture: {e:#}"),
        }
    }

    /// Generates a client key in `<root>/keys/<name>` and registers it in the fixture as key
    /// `id` of `user` (`None`: an orphan key). Call after [`SandboxBuilder::fixture`].
    pub fn client_key(&mut self, name: &str, id: u64, user: Option<&str>) -> ClientKey {
        let dir = self.root.join("keys");
        make_dir(&dir);
        let key = ClientKey::generate(&dir, name);
        self.fixture.keys.push(Key {
            id,
            user: user.map(str::to_owned),
            key: key.public_line.clone(),
            title: name.to_owned(),
        });
        key
    }

    /// Reach the stub API over TCP (default) or its unix socket.
    pub fn api_transport(mut self, transport: ApiTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Whether to start the dev Gitaly and create the repositories (default: yes).
    pub fn gitaly(mut self, on: bool) -> Self {
        self.gitaly = on;
        self
    }

    /// Which Gitaly to start: the dev Gitaly or GitLab's own (default: [`GitalyKind::from_env`],
    /// i.e. `GITLAB_SHELL_TEST_GITALY`, else the dev Gitaly).
    pub fn gitaly_kind(mut self, kind: GitalyKind) -> Self {
        self.gitaly_kind = kind;
        self
    }

    /// The Gitaly token (default [`DEFAULT_GITALY_TOKEN`]; empty disables authentication).
    pub fn gitaly_token(mut self, token: &str) -> Self {
        self.gitaly_token = token.to_owned();
        self
    }

    /// Contents of `.gitlab_shell_secret` (default [`DEFAULT_SECRET`]).
    pub fn secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.secret = secret.into();
        self
    }

    /// Extra lines appended to `config.yml`.
    pub fn config_extra(mut self, yaml: &str) -> Self {
        self.config_extra.push_str(yaml);
        if !self.config_extra.ends_with('\n') {
            self.config_extra.push('\n');
        }
        self
    }

    /// Commits to put into a project's repository (by project path) before the test starts.
    pub fn seed(mut self, project: &str, commits: Vec<Commit>) -> Self {
        self.seeds.push((project.to_owned(), commits));
        self
    }

    /// Builds the root, starts the servers, creates and seeds the repositories.
    #[track_caller]
    pub fn build(self) -> Sandbox {
        let root = self.root;
        let bin = root.join("bin");
        make_dir(&bin);
        for name in PRODUCT_BINARIES {
            match bin_dir_override() {
                // Other builds (e.g. Debian's Go package) may look for their root elsewhere:
                // a wrapper pins it to this sandbox, as GITLAB_SHELL_DIR does.
                Some(dir) => write(
                    &bin.join(name),
                    format!(
                        "#!/bin/sh\nGITLAB_SHELL_DIR='{}' exec '{}' \"$@\"\n",
                        root.display(),
                        dir.join(name).display()
                    )
                    .as_bytes(),
                    0o755,
                ),
                None => install(&built_binary(name), &bin.join(name)),
            }
        }
        write(&root.join(".gitlab_shell_secret"), &self.secret, 0o600);
        let storage = root.join("storage");
        make_dir(&storage);
        let home = root.join("home");
        let git = GitEnv::new(&home);
        let sockets = socket_dir();

        let secret_file = root.join(".gitlab_shell_secret");
        let api = match StubApi::start(
            self.fixture,
            StartOptions {
                secret: Some(self.secret.clone()),
                unix_socket: Some(sockets.path().join("api.sock")),
                tcp: true,
            },
        ) {
            Ok(api) => api,
            Err(e) => panic!("cannot start the stub API: {e:#}"),
        };
        let token = Some(self.gitaly_token.clone()).filter(|t| !t.is_empty());
        let gitaly = match (self.gitaly, self.gitaly_kind) {
            (false, _) => None,
            (true, GitalyKind::Dev) => {
                let mut options = GitalyOptions::new(&storage);
                options.listen = Listen::Unix(sockets.path().join("gitaly.sock"));
                options.token = token;
                options.gitlab_url = Some(api.tcp_url());
                options.secret_file = Some(secret_file);
                options.hook_binary = Some(built_binary("dev-gitaly"));
                match DevGitaly::start(options) {
                    Ok(g) => Some(Gitaly::Dev(g)),
                    Err(e) => panic!("cannot start the dev Gitaly: {e:#}"),
                }
            }
            (true, GitalyKind::Real) => {
                let options = RealOptions {
                    dir: root.join("gitaly"),
                    storage: storage.clone(),
                    socket: sockets.path().join("gitaly.sock"),
                    runtime_dir: sockets.path().join("rt"),
                    gitlab_url: api.tcp_url(),
                    secret_file,
                    token,
                };
                match RealGitaly::start(&options) {
                    Ok(g) => Some(Gitaly::Real(g)),
                    Err(e) => panic!("cannot start the real Gitaly: {e:#}"),
                }
            }
        };
        if let Some(server) = &gitaly {
            api.set_gitaly(server.address(), self.gitaly_token.clone());
        }
        let fixture = api.fixture();
        let mut watched = vec![
            (
                "shared secret".to_owned(),
                String::from_utf8_lossy(&self.secret).trim().to_owned(),
            ),
            ("Gitaly token".to_owned(), self.gitaly_token.clone()),
        ];
        watched.extend(fixture_secrets(&fixture));
        if self.gitaly {
            for project in &fixture.projects {
                let path = storage.join(project.relative_path());
                if !path.exists() {
                    git.init_bare(&path);
                }
            }
        }
        let gitlab_url = match self.transport {
            ApiTransport::Tcp => api.tcp_url(),
            ApiTransport::Unix => api.gitlab_url_unix().unwrap_or_default(),
        };
        let config = format!(
            "# Written by test-support's Sandbox.\n\
             user: {user}\n\
             gitlab_url: \"{gitlab_url}\"\n\
             log_file: \"{log}\"\n\
             log_level: debug\n\
             {extra}",
            user = current_user(),
            log = root.join("gitlab-shell.log").display(),
            extra = self.config_extra,
        );
        write(&root.join("config.yml"), config.as_bytes(), 0o644);

        let sandbox = Sandbox {
            root,
            storage,
            git,
            api,
            gitaly,
            watched: Mutex::new(watched),
            _sockets: sockets,
        };
        for (project, commits) in &self.seeds {
            let path = sandbox.repo_path(project);
            sandbox.git.seed(&path, commits);
        }
        sandbox
    }
}

/// The Gitaly a sandbox started.
#[derive(Debug)]
pub enum Gitaly {
    /// The project's dev Gitaly, in-process.
    Dev(DevGitaly),
    /// GitLab's Gitaly, a child process.
    Real(RealGitaly),
}

impl Gitaly {
    /// The address GitLab Shell is given (`unix:<path>`).
    pub fn address(&self) -> String {
        match self {
            Gitaly::Dev(g) => g.address(),
            Gitaly::Real(g) => g.address(),
        }
    }

    /// Which one it is.
    pub fn kind(&self) -> GitalyKind {
        match self {
            Gitaly::Dev(_) => GitalyKind::Dev,
            Gitaly::Real(_) => GitalyKind::Real,
        }
    }

    /// What the Gitaly logged (empty for the dev Gitaly, which logs through `tracing`).
    pub fn log(&self) -> String {
        match self {
            Gitaly::Dev(_) => String::new(),
            Gitaly::Real(g) => g.log(),
        }
    }
}

/// A GitLab Shell root with its servers; see the module docs.
pub struct Sandbox {
    root: PathBuf,
    storage: PathBuf,
    git: GitEnv,
    api: StubApi,
    gitaly: Option<Gitaly>,
    /// `(label, value)` of the secrets the drop-time log scan looks for (besides the fixture's).
    watched: Mutex<Vec<(String, String)>>,
    _sockets: tempfile::TempDir,
}

impl Sandbox {
    /// Starts building a sandbox; `name` appears in the root's folder name.
    pub fn builder(name: &str) -> SandboxBuilder {
        SandboxBuilder {
            root: unique_dir(name),
            fixture: Fixture::default(),
            transport: ApiTransport::Tcp,
            gitaly: true,
            gitaly_kind: GitalyKind::from_env(),
            gitaly_token: DEFAULT_GITALY_TOKEN.to_owned(),
            secret: DEFAULT_SECRET.as_bytes().to_vec(),
            config_extra: String::new(),
            seeds: Vec::new(),
        }
    }

    /// The GitLab Shell root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/bin/<name>`.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    /// The Gitaly storage folder.
    pub fn storage(&self) -> &Path {
        &self.storage
    }

    /// The fixture the stub API serves now (with the Gitaly placement filled in).
    pub fn fixture(&self) -> Fixture {
        self.api.fixture()
    }

    /// The stub API.
    pub fn api(&self) -> &StubApi {
        &self.api
    }

    /// The Gitaly (dev or real), when started.
    pub fn gitaly(&self) -> Option<&Gitaly> {
        self.gitaly.as_ref()
    }

    /// A client-side git environment with its own `HOME` inside the root.
    pub fn git(&self) -> &GitEnv {
        &self.git
    }

    /// Path of a project's bare repository in the storage. Panics for unknown projects.
    #[track_caller]
    pub fn repo_path(&self, project: &str) -> PathBuf {
        match self.api.fixture().project_by_path(project) {
            Some(p) => self.storage.join(p.relative_path()),
            None => panic!("project {project} is not in the fixture"),
        }
    }

    /// A scratch folder `<root>/work/<name>` (created).
    pub fn work_dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join("work").join(name);
        make_dir(&dir);
        dir
    }

    /// Everything GitLab Shell logged so far.
    pub fn log(&self) -> String {
        fs::read(self.root.join("gitlab-shell.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Adds a secret the drop-time log scan must not find (e.g. a password put into
    /// `config.yml`, a token a test obtained); `label` names it in the failure message.
    pub fn watch_secret(&self, label: &str, value: &str) {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((label.to_owned(), value.to_owned()));
    }

    /// The `(label, value)` secrets the log scan looks for, besides JWTs, `glpat-` tokens and
    /// Basic credentials found by shape: the shared secret and Gitaly token the sandbox was
    /// built with, those passed to [`Sandbox::watch_secret`], and from the fixture as built and
    /// as served now, the Gitaly token, the personal access token, the LFS token, each user's
    /// LFS Basic credential (base64 of `username:lfs token`) and recovery codes.
    pub fn watched_secrets(&self) -> Vec<(String, String)> {
        let mut all = self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.extend(fixture_secrets(&self.api.fixture()));
        all.sort();
        all.dedup();
        all
    }

    /// The logs the drop-time scan reads: every `*.log` file in the root outside `storage`,
    /// `home` and `work`, plus the `log_file` named by `config.yml` when it is elsewhere.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut logs = Vec::new();
        collect_logs(&self.root, &self.root, &mut logs);
        if let Some(configured) = configured_log_file(&self.root) {
            let regular = fs::metadata(&configured).is_ok_and(|m| m.is_file());
            if regular && !logs.contains(&configured) && !configured.starts_with(&self.root) {
                logs.push(configured);
            }
        }
        logs.sort();
        logs
    }

    /// Scans [`Sandbox::log_files`] for leaked secrets ([`crate::secrets::scan`] with
    /// [`Sandbox::watched_secrets`]); each log with findings, in path order.
    pub fn scan_logs(&self) -> Vec<(PathBuf, Vec<Finding>)> {
        let watched = self.watched_secrets();
        let pairs: Vec<(&str, &str)> = watched
            .iter()
            .map(|(l, v)| (l.as_str(), v.as_str()))
            .collect();
        self.log_files()
            .into_iter()
            .filter_map(|path| {
                let text = fs::read(&path).ok()?;
                let findings = secrets::scan(&String::from_utf8_lossy(&text), &pairs);
                (!findings.is_empty()).then_some((path, findings))
            })
            .collect()
    }

    /// Replaces `config.yml`.
    #[track_caller]
    pub fn write_config(&self, yaml: &str) {
        write(&self.root.join("config.yml"), yaml.as_bytes(), 0o644);
    }

    /// `<root>/bin/<binary>` with the environment sshd gives a session (PATH, HOME, USER,
    /// LOGNAME, SHELL) and nothing else.
    pub fn cmd(&self, binary: &str) -> Cmd {
        let user = current_user();
        Cmd::new(self.bin(binary))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", self.git.home())
            .env("USER", &user)
            .env("LOGNAME", &user)
            .env("SHELL", "/bin/sh")
            .current_dir(self.git.home())
    }

    /// `gitlab-shell <args>` as sshd runs the forced command for `SSH_ORIGINAL_COMMAND` =
    /// `command` (`None`: no command, i.e. the welcome message), from [`SSH_CONNECTION`].
    pub fn shell(&self, args: &[&str], command: Option<&str>) -> Cmd {
        let mut cmd = self
            .cmd("gitlab-shell")
            .args(args)
            .env("SSH_CONNECTION", SSH_CONNECTION)
            .env("SSH_CLIENT", "127.0.0.1 51234 22");
        if let Some(c) = command {
            cmd = cmd.env("SSH_ORIGINAL_COMMAND", c);
        }
        cmd
    }

    /// Runs `<root>/bin/<binary> <args>` exactly as sshd would: the session environment of
    /// [`Sandbox::cmd`] plus `env` (e.g. `SSH_CONNECTION`, `SSH_ORIGINAL_COMMAND`,
    /// `GIT_PROTOCOL`), with `stdin` as input.
    #[track_caller]
    pub fn run(&self, binary: &str, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
        self.cmd(binary)
            .args(args)
            .envs(env.iter().copied())
            .stdin(stdin)
            .run()
    }

    /// Starts a private sshd whose `AuthorizedKeysCommand` is this root's keys check.
    #[track_caller]
    pub fn sshd(&self) -> Sshd {
        Sshd::start(&self.root)
    }

    /// `git` configured to reach `sshd` with `key` (`GIT_SSH_COMMAND`).
    pub fn git_via(&self, sshd: &Sshd, key: &ClientKey) -> Cmd {
        self.git.git().env("GIT_SSH_COMMAND", sshd.ssh_command(key))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Stop Gitaly first: its log is complete and nothing writes into the root any more.
        drop(self.gitaly.take());
        if std::thread::panicking() {
            eprintln_kept(&self.root);
            return;
        }
        let leaks = self.scan_logs();
        if leaks.is_empty() {
            let _ = fs::remove_dir_all(&self.root);
            return;
        }
        let report: Vec<String> = leaks
            .iter()
            .map(|(path, findings)| secrets::report(&path.display().to_string(), findings))
            .collect();
        panic!(
            "{}\n(sandbox kept for inspection: {})",
            report.join("\n"),
            self.root.display()
        );
    }
}

/// The secrets a fixture hands out, labelled for the log scan.
fn fixture_secrets(fixture: &Fixture) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "Gitaly token (fixture)".to_owned(),
            fixture.gitaly.token.clone(),
        ),
        (
            "personal access token".to_owned(),
            fixture.personal_access_token.token.clone(),
        ),
        ("LFS token".to_owned(), fixture.lfs.token.clone()),
    ];
    for user in &fixture.users {
        if !fixture.lfs.token.is_empty() {
            for cred in secrets::basic_credential(&user.username, &fixture.lfs.token) {
                out.push((format!("LFS Basic credential of {}", user.username), cred));
            }
        }
        for code in &user.recovery_codes {
            out.push((format!("recovery code of {}", user.username), code.clone()));
        }
    }
    out
}

/// Adds the `*.log` files below `dir` to `logs`, skipping repositories and client folders and
/// not following symbolic links.
fn collect_logs(root: &Path, dir: &Path, logs: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let skipped = ["storage", "home", "work"]
                .iter()
                .any(|s| path == root.join(s));
            if !skipped {
                collect_logs(root, &path, logs);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "log") {
            logs.push(path);
        }
    }
}

/// The `log_file:` of `<root>/config.yml` (relative paths resolved against the root).
fn configured_log_file(root: &Path) -> Option<PathBuf> {
    let config = fs::read_to_string(root.join("config.yml")).ok()?;
    let value = config
        .lines()
        .find_map(|l| l.strip_prefix("log_file:"))?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    (!value.is_empty()).then(|| root.join(value))
}

#[expect(
    clippy::print_stderr,
    reason = "tell the developer where the evidence is"
)]
fn eprintln_kept(root: &Path) {
    eprintln!("sandbox kept for inspection: {}", root.display());
}

/// Copies a built binary into the sandbox with mode 0755 (a copy, not a link: a rebuild while
/// tests run must not change or lock the sandbox's binaries).
#[track_caller]
fn install(from: &Path, to: &Path) {
    let _ = fs::remove_file(to);
    if let Err(e) = fs::copy(from, to) {
        panic!("cannot copy {} to {}: {e}", from.display(), to.display());
    }
    let _ = fs::set_permissions(to, fs::Permissions::from_mode(0o755));
}

#[track_caller]
fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Err(e) = fs::write(path, bytes) {
        panic!("cannot write {}: {e}", path.display());
    }
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    #[test]
    fn builds_a_root_with_servers_and_seeded_repositories() {
        let mut builder = Sandbox::builder("sandbox-selftest").fixture_yaml(
            "users: [{ id: 1, username: alice }]\n\
             projects: [{ path: group/project, id: 1, members: { alice: admin } }]\n",
        );
        let key = builder.client_key("alice", 7, Some("alice"));
        let sandbox = builder
            .api_transport(ApiTransport::Unix)
            .config_extra("pat:\n  enabled: false")
            .seed(
                "group/project",
                vec![Commit::new("main", "m\n", "README", "hi\n")],
            )
            .build();
        let root = sandbox.root().to_owned();

        for name in PRODUCT_BINARIES {
            let mode = fs::metadata(sandbox.bin(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{name}");
        }
        assert!(crate::paths::sshd_safe(
            &sandbox.bin("gitlab-shell-authorized-keys-check")
        ));
        assert_eq!(
            fs::read(root.join(".gitlab_shell_secret")).unwrap(),
            DEFAULT_SECRET.as_bytes()
        );
        let config = fs::read_to_string(root.join("config.yml")).unwrap();
        let socket = sandbox.api().unix_socket().unwrap().to_owned();
        assert!(socket.as_os_str().len() < 100, "{}", socket.display());
        assert!(
            config.contains("gitlab_url: \"http+unix://%2Ftmp%2Fgls"),
            "{config}"
        );
        assert!(config.ends_with("pat:\n  enabled: false\n"), "{config}");

        let fixture = sandbox.fixture();
        assert_eq!(fixture.gitaly.address, sandbox.gitaly().unwrap().address());
        assert_eq!(fixture.gitaly.token, DEFAULT_GITALY_TOKEN);
        assert_eq!(fixture.key_by_blob(&key.blob).map(|k| k.id), Some(7));
        let repo = sandbox.repo_path("group/project");
        assert_eq!(repo, sandbox.storage().join("group/project.git"));
        assert!(sandbox.git().rev_parse(&repo, "main").is_some());

        // The API is up and checks the JWT: a request without one is refused.
        let mut conn = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        conn.write_all(
            b"GET /api/v4/internal/check HTTP/1.1\r\nHost: unix\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

        drop(sandbox);
        assert!(!root.exists());
        assert!(!socket.exists());
    }
}
