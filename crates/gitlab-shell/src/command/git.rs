//! What the three git commands share (GitLab Shell `internal/handler/exec.go` and
//! `internal/command/*/gitalycall.go`): arity, `/allowed`, the Geo seam, the Gitaly target and
//! per-call metadata (behaviour §5.4), the "executing git command" log line, and the audit event.

use gitaly_client::{CallMeta, Target, proto};

use crate::api::{self, allowed::Access, git_audit_event};
use crate::command::{Context, access, custom_action};
use crate::error::Error;
use crate::io::Io;

/// Client name for `x-gitlab-client-name` (the Gitaly client appends `-<service>`).
pub const CLIENT_NAME: &str = "gitlab-shell";

/// The verified access, or `None` when a Geo custom action already handled the command.
pub struct Prepared {
    /// The internal API client (reused for the audit event).
    pub client: api::Client,
    /// `/allowed` answer.
    pub access: Access,
    /// Repository argument as typed.
    pub repo: String,
}

/// Arity check, `/allowed`, console messages, and the 300 hand-off.
pub fn prepare(ctx: &Context<'_>, action: &str, io: &mut Io) -> Result<Option<Prepared>, Error> {
    let words = &ctx.args.words;
    if words.len() != 2 {
        return Err(Error::DisallowedCommand);
    }
    let repo = words[1].clone();
    let client = ctx.api()?;
    let access = access::verify(ctx, &client, action, &repo, io)?;
    if access.is_custom_action() {
        custom_action::run(ctx, &client, &access, action, io)?;
        return Ok(None);
    }
    let r = &access.response;
    tracing::info!(
        command = action,
        gl_project_path = %r.gitaly.repository.gl_project_path,
        gl_repository = %r.gl_repository,
        user_id = %r.gl_id,
        username = %r.gl_username,
        git_protocol = %ctx.args.env.git_protocol,
        remote_ip = %ctx.args.env.remote_addr,
        gl_key_type = %r.gl_key_type,
        gl_key_id = r.gl_key_id,
        "executing git command"
    );
    Ok(Some(Prepared {
        client,
        access,
        repo,
    }))
}

/// Gitaly address and token from `/allowed`.
pub fn target(access: &Access) -> Target {
    Target {
        address: access.response.gitaly.address.clone(),
        token: access.response.gitaly.token.clone(),
    }
}

/// Per-call metadata (behaviour §5.4).
pub fn call_meta(ctx: &Context<'_>, access: &Access) -> CallMeta {
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
        remote_ip: ctx.args.env.remote_addr.clone(),
        correlation_id: ctx.correlation_id.to_owned(),
        client_name: CLIENT_NAME.to_owned(),
    }
}

/// `gitaly.repository` as the Gitaly message.
pub fn repository(access: &Access) -> proto::Repository {
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
pub fn log_failure(e: &gitaly_client::Error) {
    tracing::error!(error = %e, "Failed to execute Git command");
}

/// Sends the audit event when `/allowed` asked for it; failures are only logged.
pub fn audit(
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
        check_ip: api::allowed::strip_port(&ctx.args.env.remote_addr),
        changes: "_any".into(),
    };
    if let Err(e) = git_audit_event::audit(&prepared.client, &request) {
        tracing::error!(error = %e, "failed to audit git event");
    }
}
