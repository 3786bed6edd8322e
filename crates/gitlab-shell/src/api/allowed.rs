//! `POST /api/v4/internal/allowed` (GitLab Shell `internal/gitlabnet/accessverifier`, behaviour
//! §3.4 #3 and §4): may this identity run this git action on this project?

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Client, Error};
use crate::identity::Identity;

/// The request body, fields in GitLab Shell's order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Request {
    /// `git-upload-pack`, `git-receive-pack` or `git-upload-archive`.
    pub action: String,
    /// The repository argument as typed.
    pub project: String,
    /// Always `_any`.
    pub changes: String,
    /// Always `ssh`.
    pub protocol: String,
    /// Digits of `key-N`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// From `username-X`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// Client IP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub check_ip: String,
    /// The namespace of the group SSH certificate the session authenticated with (gitlab-sshd
    /// only); left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace_path: String,
}

impl Request {
    /// The body for `action` on `project` by `identity` from `remote_addr`.
    pub fn new(action: &str, project: &str, identity: &Identity, remote_addr: &str) -> Request {
        let mut r = Request {
            action: action.into(),
            project: project.into(),
            changes: "_any".into(),
            protocol: "ssh".into(),
            check_ip: strip_port(remote_addr),
            ..Request::default()
        };
        match identity {
            Identity::Username(u) => r.username = u.clone(),
            Identity::KeyId(k) => r.key_id = k.clone(),
            Identity::None => {}
        }
        r
    }
}

/// "host:port" → host; bare IPv4/IPv6 addresses stay as they are.
pub fn strip_port(addr: &str) -> String {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => sa.ip().to_string(),
        Err(_) => addr.to_owned(),
    }
}

/// `gitaly.repository`, passed to Gitaly verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Repository {
    /// Storage name.
    pub storage_name: String,
    /// Path inside the storage.
    pub relative_path: String,
    /// Quarantine object directory.
    pub git_object_directory: String,
    /// Alternate object directories.
    pub git_alternate_object_directories: Vec<String>,
    /// `project-N`.
    pub gl_repository: String,
    /// `group/project`.
    pub gl_project_path: String,
}

/// `gitaly` of the response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Gitaly {
    /// Repository to serve.
    pub repository: Repository,
    /// Gitaly address (`unix:…`, `tcp://…`, `tls://…`, `dns:…`).
    pub address: String,
    /// v2 token secret (never logged).
    pub token: String,
    /// Feature flags; only `gitaly-feature-*` keys are forwarded.
    pub features: BTreeMap<String, String>,
}

/// `payload` of a 300 (Geo custom action) answer, kept raw for the Geo module.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Payload {
    /// Action name.
    pub action: String,
    /// Action data (`api_endpoints`, `primary_repo`, flags…).
    pub data: serde_json::Value,
}

/// The response (behaviour §4).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Response {
    /// Access granted.
    pub status: bool,
    /// Refusal text.
    pub message: String,
    /// `project-N`.
    pub gl_repository: String,
    /// `user-N` (or `deploy-token-N`).
    pub gl_id: String,
    /// `key`, `deploy_key`…
    pub gl_key_type: String,
    /// GitLab key id.
    pub gl_key_id: i64,
    /// Project id (logs only).
    pub gl_project_id: i64,
    /// Root namespace id (logs only).
    pub gl_root_namespace_id: i64,
    /// Username.
    pub gl_username: String,
    /// `-c` options for git.
    pub git_config_options: Vec<String>,
    /// Where and what to serve.
    pub gitaly: Gitaly,
    /// Parsed, unused.
    pub git_protocol: String,
    /// Custom action (300).
    pub payload: Payload,
    /// Info block shown before anything else.
    pub gl_console_messages: Vec<String>,
    /// Send the git audit event after a successful RPC.
    pub need_audit: bool,
    /// A gRPC retry policy for the Gitaly call (GitLab Shell 14.46+), as raw JSON; absent or
    /// `null` when Rails sends none.
    pub retry_config: Option<serde_json::Value>,
}

/// A verified access: the response, its HTTP status and the derived "who".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// The body.
    pub response: Response,
    /// 200, or 300 for a Geo custom action.
    pub status: u16,
    /// `key-<N>` when started with `key-N`, else `gl_id`.
    pub who: String,
}

impl Access {
    /// HTTP 300: Geo custom action.
    pub fn is_custom_action(&self) -> bool {
        self.status == 300
    }
}

/// Sends the check. `status: false` is *not* an error here: the caller prints console messages
/// first.
pub fn verify(client: &Client, request: &Request, identity: &Identity) -> Result<Access, Error> {
    let reply = client.post::<_, Response>("/allowed", request)?;
    let who = match identity {
        Identity::KeyId(k) => format!("key-{k}"),
        _ => reply.body.gl_id.clone(),
    };
    Ok(Access {
        response: reply.body,
        status: reply.status,
        who,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_json_field_order() {
        let r = Request::new(
            "git-upload-pack",
            "group/repo",
            &Identity::KeyId("1".into()),
            "127.0.0.1",
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"action":"git-upload-pack","project":"group/repo","changes":"_any","protocol":"ssh","key_id":"1","check_ip":"127.0.0.1"}"#
        );
        let r = Request::new("git-receive-pack", "/r.git", &Identity::None, "");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"action":"git-receive-pack","project":"/r.git","changes":"_any","protocol":"ssh"}"#
        );
        let r = Request::new(
            "git-upload-archive",
            "r",
            &Identity::Username("alice".into()),
            "::1",
        );
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .ends_with(r#""username":"alice","check_ip":"::1"}"#)
        );
        let mut r = r;
        r.namespace_path = "group/sub".into();
        assert!(
            serde_json::to_string(&r)
                .unwrap()
                .ends_with(r#""check_ip":"::1","namespace_path":"group/sub"}"#)
        );
    }

    #[test]
    fn strip_port_keeps_bare_addresses() {
        assert_eq!(strip_port("1.2.3.4:22"), "1.2.3.4");
        assert_eq!(strip_port("[::1]:22"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn parses_reference_response() {
        let body = br#"{"status":true,"gl_repository":"project-26","gl_project_path":"group/private","gl_id":"user-1","gl_username":"root","git_config_options":["option"],"gitaly":{"repository":{"storage_name":"default","relative_path":"@hashed/5f/9c.git","git_object_directory":"path/to/git_object_directory","git_alternate_object_directories":["path/to/git_alternate_object_directory"],"gl_repository":"project-26","gl_project_path":"group/private"},"address":"unix:gitaly.socket","token":"token"},"git_protocol":"protocol","gl_console_messages":["console","message"]}"#;
        let r = crate::api::decode::<Response>(200, body).unwrap().body;
        assert!(r.status);
        assert_eq!(r.gl_id, "user-1");
        assert_eq!(r.gitaly.repository.relative_path, "@hashed/5f/9c.git");
        assert_eq!(r.gitaly.address, "unix:gitaly.socket");
        assert_eq!(r.gl_console_messages, ["console", "message"]);
        assert_eq!(r.git_config_options, ["option"]);
    }
}
