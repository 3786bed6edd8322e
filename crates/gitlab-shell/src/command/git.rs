//! The one flow of the three git commands (GitLab Shell `internal/handler/exec.go` and
//! `internal/command/*/gitalycall.go`, behaviour §7.2), in order: arity → `/allowed` (console
//! messages, refusal, the Geo 300 hand-off) → the "executing git command" log line → the
//! Gitaly request → the Gitaly call with the session's stdio → the audit event. Each command
//! module ([`super::upload_pack`], [`super::receive_pack`], [`super::upload_archive`]) only says
//! what differs, by implementing [`GitService`].

use gitaly_client::{CallMeta, Stdio, Target, proto};

use crate::api::{self, allowed::Access, git_audit_event};
use crate::command::{Context, access, geo};
use crate::config::Config;
use crate::error::Error;
use crate::io::Io;

/// What differs between the three git commands.
pub trait GitService {
    /// The git action, as `/allowed` and the logs name it (`git-upload-pack`, …).
    const ACTION: &'static str;
    /// Whether the audit event is sent (when `/allowed` asks for it).
    const AUDITED: bool;
    /// Builds the Gitaly request and makes the call; returns the packfile statistics the
    /// audit event carries, if the RPC reports them.
    fn call(
        call: &GitalyCall<'_>,
        stdio: Stdio<'_>,
    ) -> Result<Option<git_audit_event::PackfileStats>, gitaly_client::Error>;
}

/// Everything a Gitaly call needs from the verified access.
pub struct GitalyCall<'a> {
    /// Gitaly address and token.
    pub target: Target,
    /// Per-call metadata (behaviour §5.4).
    pub meta: CallMeta,
    /// The repository message.
    pub repository: proto::Repository,
    /// The `/allowed` answer (`gl_id`, `gl_repository`, `git_config_options`, …).
    pub access: &'a Access,
    /// `GIT_PROTOCOL` of the session.
    pub git_protocol: &'a str,
    /// The front door's Gitaly connection cache (gitlab-sshd); `None`: dial for this call.
    pub pool: Option<&'a gitaly_client::Pool>,
}

/// Runs git command `S` for the session: the whole flow of the module doc.
pub fn run<S: GitService>(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let Some(prepared) = prepare(ctx, S::ACTION, io)? else {
        return Ok(());
    };
    let access = &prepared.access;
    let call = GitalyCall {
        target: target(ctx.config, access),
        meta: call_meta(ctx, access),
        repository: repository(access),
        access,
        git_protocol: &ctx.env.git_protocol,
        pool: ctx.gitaly_pool,
    };
    let stdio = Stdio {
        stdin: io.take_stdin(),
        stdout: &mut *io.stdout,
        stderr: &mut *io.stderr,
        cancel: io.cancel.clone(),
    };
    let stats = S::call(&call, stdio).inspect_err(log_failure)?;
    if S::AUDITED {
        audit(ctx, &prepared, S::ACTION, stats);
    }
    Ok(())
}

/// Client name for `x-gitlab-client-name` (the Gitaly client appends `-<service>`).
pub const CLIENT_NAME: &str = "gitlab-shell";

/// The verified access, or `None` when a Geo custom action already handled the command.
struct Prepared {
    /// The internal API client (reused for the audit event).
    pub client: api::Client,
    /// `/allowed` answer.
    pub access: Access,
}

/// Arity check, `/allowed`, console messages, and the 300 hand-off.
fn prepare(ctx: &Context<'_>, action: &str, io: &mut Io) -> Result<Option<Prepared>, Error> {
    let words = &ctx.words;
    if words.len() != 2 {
        return Err(Error::DisallowedCommand);
    }
    let client = ctx.api()?;
    let access = access::verify(ctx, &client, action, &words[1], io)?;
    if access.is_custom_action() {
        geo::run(ctx, &access, action, io)?;
        return Ok(None);
    }
    let r = &access.response;
    log_executing(ctx, action, r);
    Ok(Some(Prepared { client, access }))
}

/// The `executing git command` line with 14.56.1's fields: `gl_user_id` is the number of a
/// `user-N` `gl_id` (left out, with a warning, for any other kind of id) and `gl_user_name` the
/// username.
fn log_executing(ctx: &Context<'_>, action: &str, r: &api::allowed::Response) {
    let user_id = r
        .gl_id
        .strip_prefix("user-")
        .and_then(|n| n.parse::<i64>().ok());
    if user_id.is_none() {
        tracing::warn!(gl_id = %r.gl_id, "gl_id is not of the form user-N; gl_user_id left out");
    }
    tracing::info!(
        command = action,
        gl_project_path = %r.gitaly.repository.gl_project_path,
        gl_repository = %r.gl_repository,
        gl_user_id = user_id,
        gl_user_name = %r.gl_username,
        git_protocol = %ctx.env.git_protocol,
        remote_ip = %ctx.env.remote_addr,
        gl_key_type = %r.gl_key_type,
        gl_key_id = r.gl_key_id,
        "executing git command"
    );
}

/// Gitaly address, token and retry policy from `/allowed`; a `tls://` address is checked
/// against the process-wide trust (`ssl_cert_dir`, behaviour §2.3).
fn target(config: &Config, access: &Access) -> Target {
    Target {
        address: access.response.gitaly.address.clone(),
        token: access.response.gitaly.token.clone(),
        retry: retry_policy(access.response.retry_config.as_ref()),
        trust: config.system_trust(),
    }
}

/// `retry_config` as a policy; a malformed one is logged and ignored, as GitLab Shell does. The
/// policy is usually an object; a string holding the JSON is read too.
fn retry_policy(raw: Option<&serde_json::Value>) -> Option<gitaly_client::RetryPolicy> {
    let json = match raw? {
        serde_json::Value::String(text) => text.clone(),
        value => value.to_string(),
    };
    gitaly_client::RetryPolicy::from_json(&json)
        .inspect_err(|e| tracing::error!(error_message = %e, "failed to unmarshal retry policy"))
        .ok()
}

/// Per-call metadata (behaviour §5.4).
fn call_meta(ctx: &Context<'_>, access: &Access) -> CallMeta {
    let r = &access.response;
    CallMeta {
        features: r
            .gitaly
            .features
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        key_id: r.gl_key_id.to_string(),
        key_type: r.gl_key_type.clone(),
        user_id: r.gl_id.clone(),
        username: r.gl_username.clone(),
        remote_ip: ctx.env.remote_addr.clone(),
        correlation_id: ctx.correlation_id.to_owned(),
        client_name: CLIENT_NAME.to_owned(),
    }
}

/// `gitaly.repository` as the Gitaly message.
fn repository(access: &Access) -> proto::Repository {
    let r = &access.response.gitaly.repository;
    proto::Repository {
        storage_name: r.storage_name.clone(),
        relative_path: r.relative_path.clone(),
        git_object_directory: r.git_object_directory.clone(),
        git_alternate_object_directories: r.git_alternate_object_directories.clone(),
        gl_repository: r.gl_repository.clone(),
        gl_project_path: r.gl_project_path.clone(),
    }
}

/// Logs a failed RPC the way GitLab Shell does.
fn log_failure(e: &gitaly_client::Error) {
    tracing::error!(error = %e, "Failed to execute Git command");
}

/// Sends the audit event when `/allowed` asked for it; failures are only logged.
fn audit(
    ctx: &Context<'_>,
    prepared: &Prepared,
    action: &str,
    stats: Option<git_audit_event::PackfileStats>,
) {
    let r = &prepared.access.response;
    if !r.need_audit {
        return;
    }
    let request = git_audit_event::Request {
        action: action.to_owned(),
        protocol: "ssh".into(),
        gl_repository: r.gl_repository.clone(),
        username: r.gl_username.clone(),
        packfile_stats: stats,
        check_ip: api::allowed::strip_port(&ctx.env.remote_addr),
        changes: "_any".into(),
        key_id: r.gl_key_id,
        namespace_path: ctx.env.namespace_path.clone(),
    };
    tracing::debug!(
        gl_repository = %r.gl_repository,
        command = action,
        gl_user_name = %r.gl_username,
        gl_key_type = %r.gl_key_type,
        gl_key_id = r.gl_key_id,
        "sending git audit event"
    );
    if let Err(e) = git_audit_event::audit(&prepared.client, &request) {
        tracing::error!(error = %e, "failed to audit git event");
    }
}

#[cfg(test)]
mod log_tests {
    use serde_json::Value;

    use crate::command::testkit::{Kit, alice};
    use crate::io::SharedBuf;
    use crate::logging::{Format, LogrusFormat};

    /// Runs `f` with this thread's log lines captured as GitLab Shell writes them (JSON).
    fn logged(f: impl FnOnce()) -> Vec<Value> {
        let buf = SharedBuf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .event_format(LogrusFormat {
                format: Format::Json,
                correlation_id: "c".into(),
            })
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        buf.text()
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }

    /// The keys of a line, sorted.
    fn keys(line: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = line
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn a_malformed_retry_config_is_logged_at_error_and_ignored() {
        let kit = Kit::new("").with_gitaly();
        kit.api.update_fixture(|f| {
            for p in &mut f.projects {
                p.retry_config = Some(serde_json::json!({"maxAttempts": "many"}));
            }
        });
        let lines = logged(|| {
            let run = kit.run(alice(), "git-upload-pack group/repo.git", b"0000");
            assert_eq!(
                run.status, 0,
                "ignored: the call goes ahead: {}",
                run.stderr
            );
        });
        let bad = find(&lines, "failed to unmarshal retry policy");
        assert_eq!(bad["level"], "error");
        assert!(bad["error_message"].is_string(), "{bad}");
    }

    fn find<'a>(lines: &'a [Value], msg: &str) -> &'a Value {
        lines
            .iter()
            .find(|l| l["msg"] == msg)
            .unwrap_or_else(|| panic!("no {msg:?} in {lines:#?}"))
    }

    #[test]
    fn log_lines_carry_gitlab_shell_14_56_field_names() {
        let kit = Kit::new("").with_gitaly();
        let lines = logged(|| {
            let run = kit.run(alice(), "git-upload-pack group/audited.git", b"0000");
            assert_eq!(run.status, 0, "{}", run.stderr);
            let run = kit.run(alice(), "git-upload-pack nope/nope.git", b"0000");
            assert_eq!(run.status, 1);
        });
        let http = find(&lines, "Finished HTTP request");
        assert_eq!(
            keys(http),
            [
                "content_length_bytes",
                "correlation_id",
                "duration_s",
                "level",
                "method",
                "msg",
                "status",
                "time",
                "url"
            ]
        );
        assert_eq!(http["level"], "info");
        assert_eq!(http["method"], "POST");
        assert_eq!(http["status"], 200);
        assert!(http["content_length_bytes"].as_i64() > Some(0), "{http}");
        assert!(
            http["url"]
                .as_str()
                .is_some_and(|u| u.ends_with("/api/v4/internal/allowed")),
            "{http}"
        );
        assert!(http["duration_s"].is_f64(), "{http}");
        let exec = find(&lines, "executing git command");
        assert_eq!(
            keys(exec),
            [
                "command",
                "correlation_id",
                "git_protocol",
                "gl_key_id",
                "gl_key_type",
                "gl_project_path",
                "gl_repository",
                "gl_user_id",
                "gl_user_name",
                "level",
                "msg",
                "remote_ip",
                "time"
            ]
        );
        assert_eq!(exec["level"], "info");
        assert_eq!(exec["gl_user_id"], 1, "{exec}");
        assert_eq!(exec["gl_user_name"], "alice");
        assert_eq!(exec["gl_key_id"], 1);
        assert_eq!(exec["gl_key_type"], "key");
        assert_eq!(exec["gl_project_path"], "group/audited");
        assert_eq!(exec["gl_repository"], "project-8");
        assert_eq!(exec["git_protocol"], "");
        assert_eq!(exec["remote_ip"], "192.0.2.10");
        assert_eq!(exec["command"], "git-upload-pack");
        assert_eq!(exec["correlation_id"], "c");
        let audit = find(&lines, "sending git audit event");
        assert_eq!(audit["level"], "debug");
        assert_eq!(audit["gl_repository"], "project-8");
        assert_eq!(audit["gl_user_name"], "alice");
        assert_eq!(audit["gl_key_type"], "key");
        // The unknown project: a 404 is the user's problem, logged at info.
        let client = find(&lines, "Internal API returned a client error");
        assert_eq!(keys(client), keys(http), "the same fields as a success");
        assert_eq!(client["level"], "info");
        assert_eq!(client["status"], 404);
        assert_eq!(client["method"], "POST");
        assert!(client["duration_s"].is_f64(), "{client}");
        assert_eq!(client["url"], http["url"]);
        let failed = find(&lines, "gitlab-shell: main: command execution failed");
        assert!(
            failed["error_message"]
                .as_str()
                .unwrap_or_default()
                .contains("could not be found"),
            "{failed}"
        );
        assert_eq!(failed["level"], "warning");
        assert_eq!(
            keys(failed),
            [
                "command",
                "correlation_id",
                "error_message",
                "level",
                "msg",
                "time"
            ]
        );
        assert!(
            lines.iter().all(|l| l["msg"] != "Internal API error"),
            "{lines:#?}"
        );
    }
}
