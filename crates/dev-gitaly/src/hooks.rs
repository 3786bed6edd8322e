//! Push hooks as Gitaly runs them (gitaly.md §5.1, Gitaly `internal/gitaly/hook/{prereceive,
//! postreceive,update}.go`), without Gitaly's internal-socket indirection (gitaly.md §5.2): git
//! runs `-c core.hooksPath=<dir>` whose wrappers exec `dev-gitaly hook <name>`, and the hook reads
//! the request's identity from the environment the server gave git.
//!
//! pre-receive: `POST /api/v4/internal/allowed` (with the changes), custom hooks,
//! `POST /api/v4/internal/pre_receive`. post-receive: `POST /api/v4/internal/post_receive`,
//! prints the returned messages, custom hooks. update: custom hooks only.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The version reported in `User-Agent: gitaly/<version>`.
pub const GITALY_VERSION: &str = "16.11.6";

/// The hooks the wrappers dir provides.
pub const HOOK_NAMES: &[&str] = &["pre-receive", "update", "post-receive"];

/// Environment variable names the server sets for git (and so for the hooks).
pub mod env {
    /// Request `gl_id` (`key-N`, `user-N`, `username-X`).
    pub const GL_ID: &str = "GL_ID";
    /// Request `gl_username`.
    pub const GL_USERNAME: &str = "GL_USERNAME";
    /// `Repository.gl_repository` (e.g. `project-1`).
    pub const GL_REPOSITORY: &str = "GL_REPOSITORY";
    /// `Repository.gl_project_path`.
    pub const GL_PROJECT_PATH: &str = "GL_PROJECT_PATH";
    /// Always `ssh` here.
    pub const GL_PROTOCOL: &str = "GL_PROTOCOL";
    /// `Repository.relative_path`.
    pub const RELATIVE_PATH: &str = "DEV_GITALY_RELATIVE_PATH";
    /// Absolute repository path (`project` in `/allowed`).
    pub const REPO_PATH: &str = "DEV_GITALY_REPO_PATH";
    /// Internal API base URL (`http://…` or `http+unix://<escaped path>`); unset = no API calls.
    pub const GITLAB_URL: &str = "DEV_GITALY_GITLAB_URL";
    /// Path of the shared secret file used to sign the JWT.
    pub const SECRET_FILE: &str = "DEV_GITALY_SECRET_FILE";
    /// Gitaly-shaped payload (base64 JSON), informational.
    pub const HOOKS_PAYLOAD: &str = "GITALY_HOOKS_PAYLOAD";
}

/// Writes the hook wrappers into `dir` (created if needed): each is a tiny shell script that
/// execs `<binary> hook <name> "$@"`.
pub fn write_hooks_dir(dir: &Path, binary: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let quoted = format!("'{}'", binary.display().to_string().replace('\'', r"'\''"));
    for name in HOOK_NAMES {
        let path = dir.join(name);
        let script = format!("#!/bin/sh\nexec {quoted} hook {name} \"$@\"\n");
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Everything a hook needs, read from its environment.
#[derive(Debug, Clone, Default)]
pub struct HookEnv {
    /// All variables (only the ones below are interpreted).
    pub vars: BTreeMap<String, String>,
}

impl HookEnv {
    /// Captures the process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect(),
        }
    }

    fn get(&self, k: &str) -> &str {
        self.vars.get(k).map(String::as_str).unwrap_or("")
    }

    fn push_options(&self) -> Vec<String> {
        let n: usize = self.get("GIT_PUSH_OPTION_COUNT").parse().unwrap_or(0);
        (0..n)
            .map(|i| self.get(&format!("GIT_PUSH_OPTION_{i}")).to_owned())
            .collect()
    }

    fn repo_path(&self) -> PathBuf {
        PathBuf::from(self.get(env::REPO_PATH))
    }

    /// The quarantine dirs git set, relative to the repository (`env` of `/allowed`). Both keys
    /// are always there, as Gitaly 16.11 sends them (docs/real-gitaly.md): a push without a
    /// pack (only deletions) gives `{"GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE":null,
    /// "GIT_OBJECT_DIRECTORY_RELATIVE":""}`.
    fn quarantine_env_json(&self) -> String {
        let repo = self.repo_path();
        let rel = |p: &str| -> String {
            Path::new(p)
                .strip_prefix(&repo)
                .map(|r| r.display().to_string())
                .unwrap_or_else(|_| p.to_owned())
        };
        let mut m = serde_json::Map::new();
        let alternates: Vec<String> = self
            .get("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .split(':')
            .filter(|s| !s.is_empty())
            .map(|s| rel(s.trim_matches('"')))
            .collect();
        m.insert(
            "GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE".into(),
            if alternates.is_empty() {
                serde_json::Value::Null
            } else {
                alternates.into()
            },
        );
        let obj = self.get("GIT_OBJECT_DIRECTORY");
        let obj = if obj.is_empty() {
            String::new()
        } else {
            rel(obj)
        };
        m.insert("GIT_OBJECT_DIRECTORY_RELATIVE".into(), obj.into());
        serde_json::Value::Object(m).to_string()
    }
}

/// Body of `POST /api/v4/internal/allowed` from the pre-receive hook (field order as Gitaly's).
/// No push options: Gitaly 16.11 sends them only to `/post_receive` (docs/real-gitaly.md).
#[derive(Debug, Serialize)]
struct AllowedRequest {
    action: &'static str,
    gl_repository: String,
    project: String,
    changes: String,
    protocol: String,
    env: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    relative_path: String,
}

#[derive(Debug, Deserialize)]
struct AllowedResponse {
    #[serde(default)]
    status: bool,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct PreReceiveResponse {
    #[serde(default)]
    reference_counter_increased: bool,
}

/// One message of the `/post_receive` answer.
#[derive(Debug, Clone, Deserialize)]
pub struct PostReceiveMessage {
    /// The text.
    pub message: String,
    /// `basic` or `alert`.
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
struct PostReceiveResponse {
    #[serde(default)]
    messages: Vec<PostReceiveMessage>,
}

#[derive(Debug, Serialize)]
struct Claims {
    iss: &'static str,
    iat: u64,
    exp: u64,
}

/// Minimal client for the three internal-API calls the hooks make.
struct Api {
    client: reqwest::blocking::Client,
    base: String,
    secret: Vec<u8>,
}

impl Api {
    fn new(url: &str, secret_file: &str) -> Result<Self, String> {
        let secret = if secret_file.is_empty() {
            Vec::new()
        } else {
            std::fs::read(secret_file)
                .map_err(|e| format!("reading secret file: {e}"))?
                .trim_ascii()
                .to_vec()
        };
        // In workspace builds cargo unifies reqwest's features with gitlab-shell's
        // (`rustls-tls-*-no-provider`); without a process-wide provider reqwest panics while
        // building even a plain-HTTP client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .user_agent(format!("gitaly/{GITALY_VERSION}"));
        let (builder, base) = if let Some(escaped) = url.strip_prefix("http+unix://") {
            let path = percent_decode(escaped);
            (
                builder.unix_socket(PathBuf::from(path)),
                "http://unix".to_owned(),
            )
        } else {
            (builder, url.trim_end_matches('/').to_owned())
        };
        let client = builder
            .build()
            .map_err(|e| format!("building HTTP client: {e}"))?;
        Ok(Self {
            client,
            base,
            secret,
        })
    }

    fn post<T: Serialize>(&self, endpoint: &str, body: &T) -> Result<(u16, Vec<u8>), String> {
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: "gitlab-shell",
            iat,
            exp: iat + 60,
        };
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| format!("signing request: {e}"))?;
        let resp = self
            .client
            .post(format!("{}/api/v4/internal/{endpoint}", self.base))
            .header("Gitlab-Shell-Api-Request", jwt)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(body).map_err(|e| e.to_string())?)
            .send()
            .map_err(|_| "Internal API unreachable".to_owned())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().map_err(|e| e.to_string())?.to_vec();
        Ok((status, bytes))
    }
}

/// The error text for a non-2xx/3xx answer: its JSON `message`, else `Internal API error (<code>)`.
fn api_error(status: u16, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Msg {
        message: String,
    }
    serde_json::from_slice::<Msg>(body)
        .map(|m| m.message)
        .unwrap_or_else(|_| format!("Internal API error ({status})"))
}

/// Decodes `%XX` escapes (the unix socket path of an `http+unix://` URL).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `(username, key_id, user_id)`: exactly one is set.
type Identity = (Option<String>, Option<String>, Option<String>);

/// Identity field of `/allowed` derived from `gl_id` (`key-N`, `user-N`, `username-X`).
fn identity(gl_id: &str) -> Result<Identity, String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if let Some(n) = gl_id.strip_prefix("key-").filter(|n| digits(n)) {
        return Ok((None, Some(n.to_owned()), None));
    }
    if let Some(n) = gl_id.strip_prefix("user-").filter(|n| digits(n)) {
        return Ok((None, None, Some(n.to_owned())));
    }
    if let Some(u) = gl_id.strip_prefix("username-") {
        return Ok((Some(u.to_owned()), None, None));
    }
    Err(format!("gl_id={gl_id:?} is invalid"))
}

/// Renders `/post_receive` messages exactly as Gitaly's `printMessages`.
pub fn format_messages(messages: &[PostReceiveMessage]) -> Result<String, String> {
    let mut out = String::new();
    for m in messages {
        out.push('\n');
        match m.kind.as_str() {
            "basic" => out.push_str(&m.message),
            "alert" => out.push_str(&format_alert(&m.message)),
            other => return Err(format!("invalid message type: {other}")),
        }
        out.push_str("\n\n");
    }
    Ok(out)
}

fn format_alert(text: &str) -> String {
    let divider = "=".repeat(72);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > 68 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    lines.push(line);
    let centered: Vec<String> = lines
        .iter()
        .map(|l| {
            let l = l.trim();
            format!("{}{l}", " ".repeat(72usize.saturating_sub(l.len()) / 2))
        })
        .collect();
    format!("{divider}\n\n{}\n\n{divider}", centered.join("\n"))
}

/// Runs the executable custom hooks of `name` for the repository: `custom_hooks/<name>` and
/// `custom_hooks/<name>.d/*` (sorted, skipping names ending in `~`). Returns the first
/// non-zero exit code.
fn run_custom_hooks(repo: &Path, name: &str, args: &[String], stdin: &[u8]) -> Result<i32, String> {
    use std::os::unix::fs::PermissionsExt;
    let base = repo.join("custom_hooks");
    let mut hooks = Vec::new();
    let single = base.join(name);
    if single.is_file() {
        hooks.push(single);
    }
    if let Ok(rd) = std::fs::read_dir(base.join(format!("{name}.d"))) {
        let mut more: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        hooks.extend(more);
    }
    for h in hooks {
        let executable = h
            .metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if !executable || h.to_string_lossy().ends_with('~') {
            continue;
        }
        let mut child = Command::new(&h)
            .args(args)
            .current_dir(repo)
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running custom hook {}: {e}", h.display()))?;
        if let Some(mut si) = child.stdin.take() {
            let _ = si.write_all(stdin);
        }
        let st = child.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Ok(st.code().unwrap_or(1));
        }
    }
    Ok(0)
}

/// Runs hook `name` with `args`; returns the process exit code.
pub fn run(
    name: &str,
    args: &[String],
    hook_env: &HookEnv,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let mut input = Vec::new();
    if name != "update"
        && let Err(e) = stdin.read_to_end(&mut input)
    {
        let _ = write!(stderr, "reading stdin: {e}");
        return 1;
    }
    let result = match name {
        "pre-receive" => pre_receive(hook_env, &input, stderr),
        "post-receive" => post_receive(hook_env, &input, stdout),
        "update" => run_custom_hooks(&hook_env.repo_path(), "update", args, &[]),
        other => Err(format!("unknown hook {other:?}")),
    };
    let _ = stdout.flush();
    match result {
        Ok(code) => code,
        Err(msg) => {
            let _ = write!(stderr, "{msg}");
            let _ = stderr.flush();
            1
        }
    }
}

fn pre_receive(e: &HookEnv, input: &[u8], stderr: &mut dyn Write) -> Result<i32, String> {
    let changes = String::from_utf8_lossy(input).into_owned();
    if changes.is_empty() {
        return Err("hook got no reference updates".into());
    }
    let url = e.get(env::GITLAB_URL);
    let api = if url.is_empty() {
        None
    } else {
        Some(Api::new(url, e.get(env::SECRET_FILE)).map_err(|m| format!("GitLab: {m}"))?)
    };
    if let Some(api) = &api {
        let (username, key_id, user_id) = identity(e.get(env::GL_ID))?;
        let req = AllowedRequest {
            action: "git-receive-pack",
            gl_repository: e.get(env::GL_REPOSITORY).to_owned(),
            project: e.repo_path().display().to_string().replace('\'', ""),
            changes: changes.clone(),
            protocol: e.get(env::GL_PROTOCOL).to_owned(),
            env: e.quarantine_env_json(),
            username,
            key_id,
            user_id,
            relative_path: e.get(env::RELATIVE_PATH).to_owned(),
        };
        let (status, body) = api
            .post("allowed", &req)
            .map_err(|m| format!("GitLab: {m}"))?;
        if !(200..400).contains(&status) {
            return Err(format!("GitLab: {}", api_error(status, &body)));
        }
        let resp: AllowedResponse = serde_json::from_slice(&body)
            .map_err(|_| format!("GitLab: Internal API error ({status})"))?;
        if !resp.status {
            return Err(format!("GitLab: {}", resp.message));
        }
    }
    let code = run_custom_hooks(&e.repo_path(), "pre-receive", &[], input)?;
    if code != 0 {
        return Ok(code);
    }
    if let Some(api) = &api {
        let body = serde_json::json!({ "gl_repository": e.get(env::GL_REPOSITORY) });
        let (status, body) = api
            .post("pre_receive", &body)
            .map_err(|m| format!("GitLab: {m}"))?;
        if status != 200 {
            return Err(format!("GitLab: {}", api_error(status, &body)));
        }
        let resp: PreReceiveResponse = serde_json::from_slice(&body)
            .map_err(|_| format!("GitLab: Internal API error ({status})"))?;
        if !resp.reference_counter_increased {
            let _ = stderr.flush();
            return Ok(1);
        }
    }
    Ok(0)
}

fn post_receive(e: &HookEnv, input: &[u8], stdout: &mut dyn Write) -> Result<i32, String> {
    let url = e.get(env::GITLAB_URL);
    if !url.is_empty() {
        let api = Api::new(url, e.get(env::SECRET_FILE)).map_err(|m| format!("GitLab: {m}"))?;
        let mut body = serde_json::json!({
            "gl_repository": e.get(env::GL_REPOSITORY),
            "identifier": e.get(env::GL_ID),
            "changes": String::from_utf8_lossy(input),
        });
        // Gitaly 16.11 always sends the field: `null` without push options.
        let opts = e.push_options();
        body["push_options"] = if opts.is_empty() {
            serde_json::Value::Null
        } else {
            opts.into()
        };
        let (status, body) = api
            .post("post_receive", &body)
            .map_err(|m| format!("GitLab: {m}"))?;
        if status != 200 {
            return Err(format!("GitLab: {}", api_error(status, &body)));
        }
        let resp: PostReceiveResponse = serde_json::from_slice(&body)
            .map_err(|_| format!("GitLab: Internal API error ({status})"))?;
        let text = format_messages(&resp.messages)?;
        stdout
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())?;
        stdout.flush().map_err(|e| e.to_string())?;
    }
    run_custom_hooks(&e.repo_path(), "post-receive", &[], input)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `env` of `/allowed` always names both quarantine keys, as Gitaly 16.11 does.
    #[test]
    fn quarantine_env_with_and_without_a_quarantine() {
        let mut e = HookEnv::default();
        e.vars.insert(env::REPO_PATH.into(), "/s/r.git".into());
        assert_eq!(
            e.quarantine_env_json(),
            r#"{"GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE":null,"GIT_OBJECT_DIRECTORY_RELATIVE":""}"#
        );
        e.vars.insert(
            "GIT_OBJECT_DIRECTORY".into(),
            "/s/r.git/objects/tmp_objdir-incoming-x".into(),
        );
        e.vars.insert(
            "GIT_ALTERNATE_OBJECT_DIRECTORIES".into(),
            "/s/r.git/objects".into(),
        );
        assert_eq!(
            e.quarantine_env_json(),
            r#"{"GIT_ALTERNATE_OBJECT_DIRECTORIES_RELATIVE":["objects"],"GIT_OBJECT_DIRECTORY_RELATIVE":"objects/tmp_objdir-incoming-x"}"#
        );
    }

    #[test]
    fn identity_from_gl_id() {
        assert_eq!(identity("key-12").unwrap(), (None, Some("12".into()), None));
        assert_eq!(identity("user-3").unwrap(), (None, None, Some("3".into())));
        assert_eq!(
            identity("username-jo").unwrap(),
            (Some("jo".into()), None, None)
        );
        assert_eq!(identity("key-x").unwrap_err(), "gl_id=\"key-x\" is invalid");
    }

    #[test]
    fn basic_and_alert_messages() {
        let msgs = vec![
            PostReceiveMessage {
                message: "To create a merge request for b, visit:\n  http://x/mr".into(),
                kind: "basic".into(),
            },
            PostReceiveMessage {
                message: "short alert".into(),
                kind: "alert".into(),
            },
        ];
        let eq = "=".repeat(72);
        let want = format!(
            "\nTo create a merge request for b, visit:\n  http://x/mr\n\n\n{eq}\n\n{}short alert\n\n{eq}\n\n",
            " ".repeat(30)
        );
        assert_eq!(format_messages(&msgs).unwrap(), want);
    }

    #[test]
    fn alert_rewraps_at_68_chars() {
        let word = "abcdefghi"; // 9 chars; 6 words + 5 spaces = 59, 7 words = 69 > 68
        let text = [word; 8].join(" ");
        let out = format_alert(&text);
        let lines: Vec<&str> = out.lines().collect();
        let first = [word; 6].join(" ");
        let second = [word; 2].join(" ");
        assert_eq!(lines[2], format!("{}{first}", " ".repeat((72 - 59) / 2)));
        assert_eq!(lines[3], format!("{}{second}", " ".repeat((72 - 19) / 2)));
        assert!(
            format_messages(&[PostReceiveMessage {
                message: "x".into(),
                kind: "other".into()
            }])
            .is_err()
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%2Ftmp%2Fa.sock"), "/tmp/a.sock");
        assert_eq!(percent_decode("/tmp/plain"), "/tmp/plain");
    }
}
