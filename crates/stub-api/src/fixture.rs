//! The YAML fixture the stub internal API answers from.
//!
//! A fixture describes the little slice of a GitLab instance that GitLab Shell and Gitaly's hooks
//! can observe through `/api/v4/internal/*`: users, their SSH keys, projects with membership,
//! protected branches and Gitaly placement, plus the canned answers of the token, LFS, 2FA,
//! `/check` and `/post_receive` endpoints. Every section is optional; unknown keys are rejected so
//! that a typo in a test fixture fails loudly instead of silently changing behaviour.
//!
//! # Schema (with defaults)
//!
//! ```yaml
//! external_url: http://gitlab.example.com   # base of project URLs (LFS href, merge-request links)
//! check:                                    # GET /check
//!   api_version: v4
//!   gitlab_version: 18.3.0
//!   gitlab_rev: 0123456789a
//!   redis: true
//! gitaly:                                   # copied into every /allowed success
//!   address: unix:/tmp/gitaly.socket       # default ""
//!   token: secret                          # default ""
//!   features: { gitaly-feature-foo: "true" } # default {}
//! users:
//!   - id: 1
//!     username: demo
//!     name: Demo User                       # default: the username
//!     blocked: false                        # /allowed: "Your account has been blocked."
//!     two_factor: true                      # 2FA endpoints refuse when false (the default)
//!     recovery_codes: [aaaa-1111, bbbb-2222] # /two_factor_recovery_codes
//!     otp: "123456"                         # the one valid manual OTP (none by default)
//!     push_otp_success: false               # /two_factor_push_otp_check result
//!     push_otp_delay_ms: 0                  # delay before that answer
//! keys:
//!   - id: 1
//!     user: demo                            # username of the owner; omit for an orphan key
//!     key: ssh-ed25519 AAAAC3Nza... demo@example.com # /authorized_keys matches the 2nd word
//!     title: demo key                       # default ""
//! projects:
//!   - path: demo/hello                      # full path, as typed after `git@host:`
//!     id: 1                                 # gl_repository is "project-<id>"
//!     relative_path: demo/hello.git         # default "<path>.git"
//!     storage: default                      # Gitaly storage name
//!     public: false                         # anyone (even anonymous) may read
//!     members: { demo: admin }              # read | write | admin (admin = maintainer)
//!     default_branch: main                  # no merge-request link for pushes to it
//!     protected_branches: [main, release/*] # only admins may push; `*` is a wildcard
//!     git_config_options: [a=b]             # default: Rails' uploadpack.allowFilter pair
//!     console_messages: [hello]             # gl_console_messages on success
//!     need_audit: false
//!     root_namespace_id: 9                  # gl_root_namespace_id (default: not sent)
//!     lfs_enabled: true
//!     geo:                                  # answer /allowed with HTTP 300 (Geo secondary)
//!       actions: [git-receive-pack]         # default: every action
//!       payload: { action: geo_proxy_to_primary, data: { api_endpoints: [...] } }
//! personal_access_token:
//!   token: glpat-stubtoken0000000000        # the token every creation returns
//!   valid_scopes: [api, read_api, ...]      # default: Rails' API+repository+registry scopes
//! lfs:
//!   token: stub-lfs-token
//!   expires_in: 7200
//!   repository_http_path: null              # default "<external_url>/<path>.git"
//! post_receive:
//!   merge_request_links: true               # Rails' "To create a merge request for ..." lines
//!   messages:                               # extra messages, alerts go first like Rails
//!     - { message: "Scheduled maintenance", type: alert }
//! group_cas:                                # GET /authorized_certs (group SSH certificates)
//!   - fingerprint: 3Oz8Kx...                # SHA-256 of the CA key, base64 without "SHA256:"
//!     namespace: group                      # full path of the group that trusts the CA
//!                                           # user_identifier (the KeyId) = a fixture username
//! geo_responses:                            # POST /api/v4/geo/proxy_git_ssh/<name>
//!   info_refs_receive_pack: { result: "raw bytes, base64-encoded on the wire", message: null }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The whole fixture (see the module docs for the YAML schema).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fixture {
    /// Base URL of the pretend GitLab instance, without a trailing slash.
    pub external_url: String,
    /// The `/check` answer.
    pub check: Check,
    /// Gitaly placement returned by `/allowed`.
    pub gitaly: Gitaly,
    /// Known users.
    pub users: Vec<User>,
    /// Known SSH keys.
    pub keys: Vec<Key>,
    /// Known projects.
    pub projects: Vec<Project>,
    /// `/personal_access_token` settings.
    pub personal_access_token: PersonalAccessToken,
    /// `/lfs_authenticate` settings.
    pub lfs: Lfs,
    /// `/post_receive` settings.
    pub post_receive: PostReceive,
    /// Answers of the Geo `proxy_git_ssh` endpoints, by endpoint name
    /// (`info_refs_receive_pack`, `receive_pack`, `info_refs_upload_pack`, `upload_pack`).
    pub geo_responses: BTreeMap<String, GeoResponse>,
    /// Group-level SSH certificate authorities (`/authorized_certs`).
    pub group_cas: Vec<GroupCa>,
}

/// A CA a group trusts for SSH certificates: `/authorized_certs?key=<fingerprint>&
/// user_identifier=<username>` answers `{"username","namespace"}` for a fixture user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupCa {
    /// SHA-256 fingerprint of the CA public key, base64 without padding or `SHA256:`.
    pub fingerprint: String,
    /// Full path of the group.
    pub namespace: String,
}

impl Default for Fixture {
    fn default() -> Self {
        Self {
            external_url: "http://gitlab.example.com".to_owned(),
            check: Check::default(),
            gitaly: Gitaly::default(),
            users: Vec::new(),
            keys: Vec::new(),
            projects: Vec::new(),
            personal_access_token: PersonalAccessToken::default(),
            lfs: Lfs::default(),
            post_receive: PostReceive::default(),
            geo_responses: BTreeMap::new(),
            group_cas: Vec::new(),
        }
    }
}

impl Fixture {
    /// Parses a fixture from YAML text.
    pub fn from_yaml_str(text: &str) -> anyhow::Result<Self> {
        let fixture: Fixture = serde_yaml::from_str(text).context("invalid stub-api fixture")?;
        Ok(fixture)
    }

    /// Reads and parses a fixture file.
    pub fn from_file(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read fixture {}", path.display()))?;
        Self::from_yaml_str(&text).with_context(|| format!("in fixture {}", path.display()))
    }

    /// The user with this id.
    pub fn user_by_id(&self, id: u64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    /// The user with this username (case-sensitive, as GitLab Shell sends it).
    pub fn user_by_username(&self, username: &str) -> Option<&User> {
        self.users.iter().find(|u| u.username == username)
    }

    /// The key with this id.
    pub fn key_by_id(&self, id: u64) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// The key whose base64 blob (second word of the key line) equals `blob`. Trailing `=`
    /// padding is ignored on both sides: sshd's `%k` has it, gitlab-sshd sends the blob without
    /// it, and GitLab decodes either.
    pub fn key_by_blob(&self, blob: &str) -> Option<&Key> {
        let blob = blob.trim_end_matches('=');
        self.keys
            .iter()
            .find(|k| k.blob().map(|b| b.trim_end_matches('=')) == Some(blob))
    }

    /// The owner of a key, if the key names one that exists.
    pub fn key_owner(&self, key: &Key) -> Option<&User> {
        key.user
            .as_deref()
            .and_then(|name| self.user_by_username(name))
    }

    /// The project with this id.
    pub fn project_by_id(&self, id: u64) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }

    /// The project named by a `gl_repository` value (`project-<id>`).
    pub fn project_by_gl_repository(&self, gl_repository: &str) -> Option<&Project> {
        let id = gl_repository.strip_prefix("project-")?.parse().ok()?;
        self.project_by_id(id)
    }

    /// The project named by a repository argument as GitLab Shell sends it.
    ///
    /// Like Rails, a leading `/` and a trailing `.git` are ignored and the match is
    /// case-insensitive.
    pub fn project_by_path(&self, raw: &str) -> Option<&Project> {
        let wanted = normalize_project_path(raw);
        self.projects
            .iter()
            .find(|p| p.path.eq_ignore_ascii_case(wanted))
    }

    /// The project stored at this storage-relative path (Gitaly's hooks send it as
    /// `relative_path`, next to the absolute path on disk as `project`).
    pub fn project_by_relative_path(&self, relative_path: &str) -> Option<&Project> {
        self.projects
            .iter()
            .find(|p| p.relative_path() == relative_path)
    }
}

/// Strips a leading `/` (any number) and a trailing `.git` from a repository argument.
pub fn normalize_project_path(raw: &str) -> &str {
    let trimmed = raw.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    trimmed.trim_end_matches('/')
}

/// The `/check` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Check {
    /// `api_version`, always `v4` in real GitLab.
    pub api_version: String,
    /// `gitlab_version`.
    pub gitlab_version: String,
    /// `gitlab_rev`.
    pub gitlab_rev: String,
    /// `redis`: false makes `gitlab-shell-check` fail its second line.
    pub redis: bool,
}

impl Default for Check {
    fn default() -> Self {
        Self {
            api_version: "v4".to_owned(),
            gitlab_version: "18.3.0".to_owned(),
            gitlab_rev: "0123456789a".to_owned(),
            redis: true,
        }
    }
}

/// Gitaly placement copied into `/allowed` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gitaly {
    /// `gitaly.address` (`unix:/path`, `tcp://host:port`, ...).
    pub address: String,
    /// `gitaly.token` (v2 HMAC secret; empty for none).
    pub token: String,
    /// `gitaly.features`.
    pub features: BTreeMap<String, String>,
}

/// A GitLab user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct User {
    /// Numeric id (`gl_id` is `user-<id>`).
    pub id: u64,
    /// Username.
    pub username: String,
    /// Display name; the username when absent.
    pub name: Option<String>,
    /// A blocked user is refused by `/allowed`.
    pub blocked: bool,
    /// Whether two-factor authentication is enabled.
    pub two_factor: bool,
    /// Codes returned by `/two_factor_recovery_codes`.
    pub recovery_codes: Vec<String>,
    /// The one OTP value `/two_factor_manual_otp_check` accepts.
    pub otp: Option<String>,
    /// The result of `/two_factor_push_otp_check`.
    pub push_otp_success: bool,
    /// Milliseconds to wait before answering `/two_factor_push_otp_check`.
    pub push_otp_delay_ms: u64,
}

impl User {
    /// The display name (the username when none is configured).
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.username)
    }
}

/// An SSH key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Key {
    /// Numeric key id (`key-<id>` in authorized_keys).
    pub id: u64,
    /// Username of the owner; `None` for an orphaned key.
    pub user: Option<String>,
    /// The full public key line, `ssh-ed25519 AAAA... comment`.
    pub key: String,
    /// Key title.
    pub title: String,
}

impl Key {
    /// The base64 blob, i.e. the second word of the key line (what sshd passes as `%k`).
    pub fn blob(&self) -> Option<&str> {
        self.key.split_whitespace().nth(1)
    }
}

/// A member's access level on a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Reporter-like: may fetch.
    Read,
    /// Developer-like: may push to unprotected branches.
    Write,
    /// Maintainer: may push to protected branches too.
    Admin,
}

/// A project (repository).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Project {
    /// Full path, e.g. `group/project`.
    pub path: String,
    /// Numeric id (`gl_repository` is `project-<id>`).
    pub id: u64,
    /// Path inside the Gitaly storage; `<path>.git` when absent.
    pub relative_path: Option<String>,
    /// Gitaly storage name; `default` when absent.
    pub storage: Option<String>,
    /// Public projects are readable by everybody, including anonymous actors.
    pub public: bool,
    /// Members by username.
    pub members: BTreeMap<String, Access>,
    /// Default branch; `main` when absent.
    pub default_branch: Option<String>,
    /// Protected branch names or `*` patterns.
    pub protected_branches: Vec<String>,
    /// `git_config_options`; Rails' default pair when absent.
    pub git_config_options: Option<Vec<String>>,
    /// `gl_console_messages` returned on success.
    pub console_messages: Vec<String>,
    /// `need_audit` returned on success.
    pub need_audit: bool,
    /// `gl_root_namespace_id` returned on success (not sent when absent).
    pub root_namespace_id: Option<u64>,
    /// `retry_config` returned on success (a gRPC retry policy), when set.
    pub retry_config: Option<serde_json::Value>,
    /// Whether `/lfs_authenticate` works for this project (default true).
    pub lfs_enabled: Option<bool>,
    /// Answer `/allowed` with a Geo custom action (HTTP 300).
    pub geo: Option<GeoCustomAction>,
}

impl Project {
    /// `project-<id>`.
    pub fn gl_repository(&self) -> String {
        format!("project-{}", self.id)
    }

    /// The storage-relative path of the repository.
    pub fn relative_path(&self) -> String {
        self.relative_path
            .clone()
            .unwrap_or_else(|| format!("{}.git", self.path))
    }

    /// The Gitaly storage name.
    pub fn storage(&self) -> &str {
        self.storage.as_deref().unwrap_or("default")
    }

    /// The default branch.
    pub fn default_branch(&self) -> &str {
        self.default_branch.as_deref().unwrap_or("main")
    }

    /// Whether `branch` matches one of the protected branch patterns.
    pub fn is_protected(&self, branch: &str) -> bool {
        self.protected_branches
            .iter()
            .any(|pattern| wildcard_match(pattern, branch))
    }

    /// The access level of a user, `None` for non-members.
    pub fn access_of(&self, username: &str) -> Option<Access> {
        self.members.get(username).copied()
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters (as in GitLab's
/// protected-branch wildcards).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut remaining) = text.strip_prefix(first) else {
        return false;
    };
    let mut pieces: Vec<&str> = rest.split('*').collect();
    let last = pieces.pop().unwrap_or("");
    for piece in pieces {
        match remaining.find(piece) {
            Some(at) => remaining = &remaining[at + piece.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// A Geo custom action for `/allowed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoCustomAction {
    /// Actions it applies to (`git-receive-pack`, ...); empty means all.
    pub actions: Vec<String>,
    /// The `payload` object (`{"action": ..., "data": {...}}`), returned verbatim.
    pub payload: serde_json::Value,
}

/// Answer of one Geo `proxy_git_ssh` endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeoResponse {
    /// Raw bytes of `result` (sent base64-encoded).
    pub result: String,
    /// `message`.
    pub message: Option<String>,
    /// HTTP status; 200 when absent.
    pub status: Option<u16>,
}

/// `/personal_access_token` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PersonalAccessToken {
    /// Token value returned on success.
    pub token: String,
    /// Accepted scopes; Rails' list when absent.
    pub valid_scopes: Option<Vec<String>>,
}

impl Default for PersonalAccessToken {
    fn default() -> Self {
        Self {
            token: "glpat-stubtoken0000000000".to_owned(),
            valid_scopes: None,
        }
    }
}

/// Scopes Rails accepts for tokens created over SSH (API, repository and registry scopes),
/// sorted as Rails prints them in its "Valid scopes are" message.
pub const RAILS_PAT_SCOPES: &[&str] = &[
    "ai_features",
    "api",
    "create_runner",
    "k8s_proxy",
    "manage_runner",
    "read_api",
    "read_registry",
    "read_repository",
    "read_user",
    "self_rotate",
    "write_registry",
    "write_repository",
];

/// `/lfs_authenticate` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Lfs {
    /// `lfs_token`.
    pub token: String,
    /// `expires_in` (seconds).
    pub expires_in: u64,
    /// `repository_http_path`; `<external_url>/<path>.git` when absent.
    pub repository_http_path: Option<String>,
}

impl Default for Lfs {
    fn default() -> Self {
        Self {
            token: "stub-lfs-token".to_owned(),
            expires_in: 7200,
            repository_http_path: None,
        }
    }
}

/// `/post_receive` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostReceive {
    /// Add Rails' per-branch "To create a merge request" messages.
    pub merge_request_links: bool,
    /// Extra messages (alerts are put first, basics last, as Rails does).
    pub messages: Vec<Message>,
}

impl Default for PostReceive {
    fn default() -> Self {
        Self {
            merge_request_links: true,
            messages: Vec::new(),
        }
    }
}

/// A `/post_receive` message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Text.
    pub message: String,
    /// `basic` or `alert`.
    #[serde(rename = "type")]
    pub kind: MessageKind,
}

/// Type of a `/post_receive` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageKind {
    /// Printed as is.
    Basic,
    /// Printed as a banner.
    Alert,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_patterns() {
        assert!(wildcard_match("main", "main"));
        assert!(!wildcard_match("main", "main2"));
        assert!(wildcard_match("release/*", "release/1.0"));
        assert!(!wildcard_match("release/*", "feature/1.0"));
        assert!(wildcard_match("*-stable", "14-0-stable"));
        assert!(wildcard_match("a*b*c", "axxbyyc"));
        assert!(!wildcard_match("a*b*c", "axxbyy"));
        assert!(wildcard_match("*", "anything"));
    }

    #[test]
    fn project_paths_are_normalised() {
        let fixture = Fixture::from_yaml_str(
            "projects:\n  - { path: group/Project, id: 7, relative_path: '@hashed/aa/bb.git' }\n",
        )
        .unwrap();
        for raw in ["group/project", "/group/Project.git", "group/project.git"] {
            assert_eq!(fixture.project_by_path(raw).map(|p| p.id), Some(7), "{raw}");
        }
        for raw in [
            "group/other",
            "/srv/repos/@hashed/aa/bb.git",
            "x/group/project",
        ] {
            assert!(fixture.project_by_path(raw).is_none(), "{raw}");
        }
        assert_eq!(
            fixture
                .project_by_relative_path("@hashed/aa/bb.git")
                .unwrap()
                .id,
            7
        );
        assert_eq!(fixture.project_by_gl_repository("project-7").unwrap().id, 7);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Fixture::from_yaml_str("userz: []\n").unwrap_err();
        assert!(format!("{err:#}").contains("userz"), "{err:#}");
    }

    #[test]
    fn demo_fixture_parses() {
        let fixture =
            Fixture::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo.yml")).unwrap();
        let key = fixture.key_by_id(1).unwrap();
        assert_eq!(fixture.key_owner(key).unwrap().username, "demo");
        assert!(fixture.project_by_path("demo/hello").is_some());
    }
}
