//! The endpoints: what GitLab Rails' `lib/api/internal/base.rb` (and the EE Geo
//! `proxy_git_ssh` API) would answer, computed from a [`Fixture`].
//!
//! Everything here is pure: a request (method, route below `/api/v4`, query, JSON body) goes in,
//! a status and a JSON body come out. Transport, JWT checking, recording and faults live in
//! `server.rs`.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::fixture::{Access, Fixture, Key, MessageKind, Project, RAILS_PAT_SCOPES, User};

/// Rails' `project_not_found` text.
pub const PROJECT_NOT_FOUND: &str =
    "The project you were looking for could not be found or you don't have permission to view it.";
/// Rails' `upload` text (push without write access).
pub const PUSH_NOT_ALLOWED: &str = "You are not allowed to push code to this project.";
/// Rails' `push_protected_branch` text.
pub const PUSH_PROTECTED_BRANCH: &str =
    "You are not allowed to push code to protected branches on this project.";
/// Rails' `account_blocked` text.
pub const ACCOUNT_BLOCKED: &str = "Your account has been blocked.";
/// Rails' `command_not_allowed` text.
pub const COMMAND_NOT_ALLOWED: &str = "The command you're trying to execute is not allowed.";

/// Status code Rails uses for `Gitlab::GitAccess::ForbiddenError` (401, not 403: see the
/// comment in `check_allowed` — with 403 the message would not reach the user).
pub const FORBIDDEN_STATUS: u16 = 401;

/// A computed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
    /// Wait this long before answering (push-OTP delay).
    pub delay: Option<Duration>,
}

impl Reply {
    fn ok(body: Value) -> Self {
        Self::with_status(200, body)
    }

    fn with_status(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            delay: None,
        }
    }

    fn not_found(what: &str) -> Self {
        let message = if what.is_empty() {
            "404 Not Found".to_owned()
        } else {
            format!("404 {what} Not Found")
        };
        Self::with_status(404, json!({ "message": message }))
    }

    fn denied(status: u16, message: &str) -> Self {
        Self::with_status(status, json!({ "status": false, "message": message }))
    }

    fn failure(message: &str) -> Self {
        Self::ok(json!({ "success": false, "message": message }))
    }
}

/// Answers one request. `route` is the path from `/api/v4/` on (relative-URL-root prefixes
/// already removed), e.g. `/api/v4/internal/allowed`.
pub fn respond(fixture: &Fixture, method: &str, route: &str, query: &str, body: &Value) -> Reply {
    let params = Params { query, body };
    if let Some(name) = route.strip_prefix("/api/v4/geo/proxy_git_ssh/") {
        return match method {
            "POST" => geo_proxy(fixture, name),
            _ => Reply::not_found(""),
        };
    }
    let Some(endpoint) = route.strip_prefix("/api/v4/internal/") else {
        return Reply::not_found("");
    };
    match (method, endpoint.trim_end_matches('/')) {
        ("GET", "authorized_keys") => authorized_keys(fixture, &params),
        ("GET", "authorized_certs") => authorized_certs(fixture, &params),
        ("GET", "discover") => discover(fixture, &params),
        ("GET", "check") => check(fixture),
        ("POST", "allowed") => allowed(fixture, &params),
        ("POST", "pre_receive") => Reply::ok(json!({ "reference_counter_increased": true })),
        ("POST", "post_receive") => post_receive(fixture, &params),
        ("POST", "lfs_authenticate") => lfs_authenticate(fixture, &params),
        ("POST", "two_factor_recovery_codes") => recovery_codes(fixture, &params),
        ("POST", "two_factor_manual_otp_check") => manual_otp(fixture, &params),
        ("POST", "two_factor_push_otp_check") => push_otp(fixture, &params),
        ("POST", "personal_access_token") => personal_access_token(fixture, &params),
        ("POST", "shellhorse/git_audit_event") => Reply::ok(json!({})),
        _ => Reply::not_found(""),
    }
}

/// Request parameters: like Grape, a value may come from the query string or the JSON body.
struct Params<'a> {
    query: &'a str,
    body: &'a Value,
}

impl Params<'_> {
    /// A parameter as a string (numbers are stringified, as Grape coerces them).
    fn get(&self, name: &str) -> Option<String> {
        if let Some(value) = self.body.get(name) {
            match value {
                Value::String(s) => return Some(s.clone()),
                Value::Number(n) => return Some(n.to_string()),
                Value::Bool(b) => return Some(b.to_string()),
                _ => {}
            }
        }
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A non-empty parameter.
    fn present(&self, name: &str) -> Option<String> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// Who is asking, resolved like Rails' `GitAccessActor.from_params`: `key_id` first, then
/// `user_id`, then `username`.
struct Actor<'f> {
    key: Option<&'f Key>,
    user: Option<&'f User>,
    /// Which identity parameter was given.
    given: Given,
}

#[derive(PartialEq)]
enum Given {
    KeyId,
    UserId,
    Username,
    Nothing,
}

fn actor<'f>(fixture: &'f Fixture, params: &Params<'_>) -> Actor<'f> {
    if let Some(key_id) = params.present("key_id") {
        let key = key_id.parse().ok().and_then(|id| fixture.key_by_id(id));
        let user = key.and_then(|k| fixture.key_owner(k));
        return Actor {
            key,
            user,
            given: Given::KeyId,
        };
    }
    if let Some(user_id) = params.present("user_id") {
        let user = user_id.parse().ok().and_then(|id| fixture.user_by_id(id));
        return Actor {
            key: None,
            user,
            given: Given::UserId,
        };
    }
    if let Some(username) = params.present("username") {
        return Actor {
            key: None,
            user: fixture.user_by_username(&username),
            given: Given::Username,
        };
    }
    Actor {
        key: None,
        user: None,
        given: Given::Nothing,
    }
}

impl Actor<'_> {
    /// Rails' `validate_actor`-style check used by the 2FA and PAT endpoints.
    fn two_factor_error(&self) -> Option<&'static str> {
        match self.given {
            Given::UserId | Given::Username if self.user.is_none() => {
                Some("Could not find the given user")
            }
            Given::KeyId if self.key.is_none() => Some("Could not find the given key"),
            Given::KeyId if self.user.is_none() => Some("Could not find a user for the given key"),
            Given::Nothing => Some("Could not find the given key"),
            _ => None,
        }
    }
}

fn user_json(user: &User) -> Value {
    json!({ "id": user.id, "name": user.display_name(), "username": user.username })
}

fn authorized_keys(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let blob = params.get("key").unwrap_or_default();
    match fixture.key_by_blob(blob.trim()) {
        Some(key) => Reply::ok(json!({
            "id": key.id,
            "title": key.title,
            "key": key.key,
        })),
        None => Reply::not_found("Key"),
    }
}

/// Rails answers 404 when no group has the CA or the user is unknown.
fn authorized_certs(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let fingerprint = params.get("key").unwrap_or_default();
    let identifier = params.get("user_identifier").unwrap_or_default();
    let Some(ca) = fixture
        .group_cas
        .iter()
        .find(|ca| ca.fingerprint == fingerprint)
    else {
        return Reply::not_found("Certificate");
    };
    match fixture.users.iter().find(|u| u.username == identifier) {
        Some(user) => Reply::ok(json!({ "username": user.username, "namespace": ca.namespace })),
        None => Reply::not_found("User"),
    }
}

fn discover(fixture: &Fixture, params: &Params<'_>) -> Reply {
    match actor(fixture, params).user {
        Some(user) => Reply::ok(user_json(user)),
        None => Reply::ok(Value::Null),
    }
}

fn check(fixture: &Fixture) -> Reply {
    let c = &fixture.check;
    Reply::ok(json!({
        "api_version": c.api_version,
        "gitlab_version": c.gitlab_version,
        "gitlab_rev": c.gitlab_rev,
        "redis": c.redis,
    }))
}

/// A `<old> <new> <ref>` line of `changes`.
struct Change<'a> {
    new: &'a str,
    refname: &'a str,
}

fn parse_changes(changes: &str) -> Vec<Change<'_>> {
    changes
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _old = words.next()?;
            let new = words.next()?;
            let refname = words.next()?;
            Some(Change { new, refname })
        })
        .collect()
}

fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

fn project_for<'f>(fixture: &'f Fixture, params: &Params<'_>) -> Option<&'f Project> {
    if let Some(gl_repository) = params.present("gl_repository") {
        return fixture.project_by_gl_repository(&gl_repository);
    }
    params
        .get("project")
        .and_then(|path| fixture.project_by_path(&path))
        .or_else(|| {
            // Gitaly's hooks send the absolute path on disk as `project`.
            params
                .present("relative_path")
                .and_then(|rel| fixture.project_by_relative_path(&rel))
        })
}

fn allowed(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let actor = actor(fixture, params);
    if actor.user.is_some_and(|u| u.blocked) {
        return Reply::denied(FORBIDDEN_STATUS, ACCOUNT_BLOCKED);
    }
    let action = params.get("action").unwrap_or_default();
    let push = match action.as_str() {
        "git-upload-pack" | "git-upload-archive" => false,
        "git-receive-pack" => true,
        _ => return Reply::denied(FORBIDDEN_STATUS, COMMAND_NOT_ALLOWED),
    };
    let Some(project) = project_for(fixture, params) else {
        return Reply::denied(404, PROJECT_NOT_FOUND);
    };
    let access = actor
        .user
        .and_then(|user| project.access_of(&user.username));
    if access.is_none() && !project.public {
        return Reply::denied(404, PROJECT_NOT_FOUND);
    }
    if push {
        if access.is_none_or(|a| a < Access::Write) {
            return Reply::denied(FORBIDDEN_STATUS, PUSH_NOT_ALLOWED);
        }
        let changes = params.get("changes").unwrap_or_default();
        if access != Some(Access::Admin) {
            for change in parse_changes(&changes) {
                if let Some(branch) = change.refname.strip_prefix("refs/heads/")
                    && project.is_protected(branch)
                {
                    return Reply::denied(FORBIDDEN_STATUS, PUSH_PROTECTED_BRANCH);
                }
            }
        }
    }
    if let Some(geo) = &project.geo
        && (geo.actions.is_empty() || geo.actions.contains(&action))
    {
        return Reply::with_status(
            300,
            json!({
                "status": true,
                "payload": geo.payload,
                "gl_console_messages": project.console_messages,
            }),
        );
    }
    allowed_success(fixture, project, &actor)
}

fn allowed_success(fixture: &Fixture, project: &Project, actor: &Actor<'_>) -> Reply {
    let gl_repository = project.gl_repository();
    let git_config_options = project.git_config_options.clone().unwrap_or_else(|| {
        vec![
            "uploadpack.allowFilter=true".to_owned(),
            "uploadpack.allowAnySHA1InWant=true".to_owned(),
        ]
    });
    let mut body = json!({
        "status": true,
        "gl_repository": gl_repository,
        "gl_project_path": project.path,
        "gl_project_id": project.id,
        "gl_id": actor.user.map(|u| format!("user-{}", u.id)).unwrap_or_default(),
        "git_config_options": git_config_options,
        "gitaly": {
            "repository": {
                "storage_name": project.storage(),
                "relative_path": project.relative_path(),
                "git_object_directory": "",
                "git_alternate_object_directories": [],
                "gl_repository": gl_repository,
                "gl_project_path": project.path,
            },
            "address": fixture.gitaly.address,
            "token": fixture.gitaly.token,
            "features": fixture.gitaly.features,
        },
        "gl_console_messages": project.console_messages,
        "need_audit": project.need_audit,
    });
    if let Some(map) = body.as_object_mut() {
        if let Some(user) = actor.user {
            map.insert("gl_username".to_owned(), json!(user.username));
        }
        if let Some(key) = actor.key {
            map.insert("gl_key_type".to_owned(), json!("key"));
            map.insert("gl_key_id".to_owned(), json!(key.id));
        }
        if let Some(id) = project.root_namespace_id {
            map.insert("gl_root_namespace_id".to_owned(), json!(id));
        }
        if let Some(policy) = &project.retry_config {
            map.insert("retry_config".to_owned(), policy.clone());
        }
    }
    Reply::ok(body)
}

/// `application/x-www-form-urlencoded` escaping as Ruby's `CGI.escape` does it.
fn form_escape(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn project_url(fixture: &Fixture, project: &Project) -> String {
    format!(
        "{}/{}",
        fixture.external_url.trim_end_matches('/'),
        project.path
    )
}

fn post_receive(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let project = params
        .present("gl_repository")
        .and_then(|r| fixture.project_by_gl_repository(&r));
    let mut alerts = Vec::new();
    let mut basics = Vec::new();
    for message in &fixture.post_receive.messages {
        let entry = json!({ "message": message.message, "type": message.kind });
        match message.kind {
            MessageKind::Alert => alerts.push(entry),
            MessageKind::Basic => basics.push(entry),
        }
    }
    let mut links = Vec::new();
    if let Some(project) = project
        && fixture.post_receive.merge_request_links
    {
        let changes = params.get("changes").unwrap_or_default();
        for change in parse_changes(&changes) {
            let Some(branch) = change.refname.strip_prefix("refs/heads/") else {
                continue;
            };
            if is_zero(change.new) || branch == project.default_branch() {
                continue;
            }
            let url = format!(
                "{}/-/merge_requests/new?merge_request%5Bsource_branch%5D={}",
                project_url(fixture, project),
                form_escape(branch)
            );
            links.push(json!({
                "message": format!("To create a merge request for {branch}, visit:\n  {url}"),
                "type": "basic",
            }));
        }
    }
    let messages: Vec<Value> = alerts.into_iter().chain(links).chain(basics).collect();
    Reply::ok(json!({ "messages": messages, "reference_counter_decreased": true }))
}

fn lfs_authenticate(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let Some(project) = params
        .get("project")
        .and_then(|p| fixture.project_by_path(&p))
        .filter(|p| p.lfs_enabled.unwrap_or(true))
    else {
        return Reply::not_found("");
    };
    let actor = actor(fixture, params);
    let username = match (actor.user, actor.key) {
        (Some(user), _) => user.username.clone(),
        (None, Some(key)) => format!("lfs+deploy-key-{}", key.id),
        (None, None) => return Reply::not_found("User"),
    };
    let repository_http_path = fixture
        .lfs
        .repository_http_path
        .clone()
        .unwrap_or_else(|| format!("{}.git", project_url(fixture, project)));
    Reply::ok(json!({
        "username": username,
        "lfs_token": fixture.lfs.token,
        "repository_http_path": repository_http_path,
        "expires_in": fixture.lfs.expires_in,
    }))
}

/// The user behind a 2FA request, or the `{success:false}` reply Rails gives.
fn two_factor_user<'f>(fixture: &'f Fixture, params: &Params<'_>) -> Result<&'f User, Reply> {
    let actor = actor(fixture, params);
    if let Some(message) = actor.two_factor_error() {
        return Err(Reply::failure(message));
    }
    match actor.user {
        Some(user) if user.two_factor => Ok(user),
        Some(_) => Err(Reply::failure(
            "Two-factor authentication is not enabled for this user",
        )),
        None => Err(Reply::failure("Could not find the given user")),
    }
}

fn recovery_codes(fixture: &Fixture, params: &Params<'_>) -> Reply {
    match two_factor_user(fixture, params) {
        Ok(user) => Reply::ok(json!({ "success": true, "recovery_codes": user.recovery_codes })),
        Err(reply) => reply,
    }
}

fn manual_otp(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let user = match two_factor_user(fixture, params) {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let attempt = params.get("otp_attempt").unwrap_or_default();
    if user.otp.as_deref().is_some_and(|otp| otp == attempt) {
        Reply::ok(json!({ "success": true }))
    } else {
        Reply::failure("Invalid OTP")
    }
}

fn push_otp(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let user = match two_factor_user(fixture, params) {
        Ok(user) => user,
        Err(reply) => return reply,
    };
    let mut reply = if user.push_otp_success {
        Reply::ok(json!({ "success": true }))
    } else {
        Reply::failure("Invalid OTP")
    };
    if user.push_otp_delay_ms > 0 {
        reply.delay = Some(Duration::from_millis(user.push_otp_delay_ms));
    }
    reply
}

/// Ruby's `Array#to_s` of strings: `["a", "b"]`.
fn ruby_inspect(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

fn personal_access_token(fixture: &Fixture, params: &Params<'_>) -> Reply {
    let actor = actor(fixture, params);
    if let Some(message) = actor.two_factor_error() {
        return Reply::failure(message);
    }
    if params.present("name").is_none() {
        return Reply::failure("No token name specified");
    }
    let scopes: Vec<String> = params
        .body
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().map_or_else(|| s.to_string(), str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if scopes.is_empty() {
        return Reply::failure("No token scopes specified");
    }
    let mut valid: Vec<String> = match &fixture.personal_access_token.valid_scopes {
        Some(list) => list.clone(),
        None => RAILS_PAT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    };
    valid.sort();
    if let Some(invalid) = scopes.iter().find(|s| !valid.contains(s)) {
        return Reply::failure(&format!(
            "Invalid scope: '{invalid}'. Valid scopes are: {}",
            ruby_inspect(&valid)
        ));
    }
    let expires_at = params.present("expires_at");
    if let Some(date) = &expires_at
        && !is_iso_date(date)
    {
        return Reply::failure(&format!("Invalid token expiry date: '{date}'"));
    }
    Reply::ok(json!({
        "success": true,
        "token": fixture.personal_access_token.token,
        "scopes": scopes,
        "expires_at": expires_at,
    }))
}

fn is_iso_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

fn geo_proxy(fixture: &Fixture, name: &str) -> Reply {
    match fixture.geo_responses.get(name) {
        Some(answer) => Reply::with_status(
            answer.status.unwrap_or(200),
            json!({
                "result": base64::engine::general_purpose::STANDARD.encode(answer.result.as_bytes()),
                "message": answer.message,
            }),
        ),
        None => Reply::not_found(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorized_certs_answers_for_a_known_ca_and_user() {
        let fixture = Fixture::from_yaml_str(
            "users: [{ id: 1, username: alice }]\ngroup_cas: [{ fingerprint: abc, namespace: group/sub }]\n",
        )
        .expect("fixture");
        let ask = |q: &str| {
            respond(
                &fixture,
                "GET",
                "/api/v4/internal/authorized_certs",
                q,
                &Value::Null,
            )
        };
        let ok = ask("key=abc&user_identifier=alice");
        assert_eq!(ok.status, 200);
        assert_eq!(
            ok.body,
            json!({ "username": "alice", "namespace": "group/sub" })
        );
        assert_eq!(ask("key=other&user_identifier=alice").status, 404);
        assert_eq!(ask("key=abc&user_identifier=nobody").status, 404);
    }
}
