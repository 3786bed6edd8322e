//! `gitaly-ssh`: a `GIT_SSH_COMMAND` for tests, like Gitaly's own `gitaly-ssh` helper: git runs
//! it as `gitaly-ssh [ssh options] <host> "git-upload-pack '<path>'"` and it carries the session
//! to a Gitaly through the `gitaly-client` crate (sidechannel for upload-pack).
//!
//! Configuration comes from the environment: `GITALY_ADDRESS`, `GITALY_TOKEN`,
//! `GITALY_STORAGE` (default `default`), `GITALY_REPO` (relative path; default: the path in the
//! command without its leading `/`), `GITALY_GL_ID` (default `user-1`), `GITALY_GL_USERNAME`,
//! `GITALY_GL_REPOSITORY`, `GITALY_GL_PROJECT_PATH`, `GITALY_CONFIG` (`;`-separated
//! `key=value` options) and `GIT_PROTOCOL`.

use std::process::ExitCode;

use gitaly_client::{CallMeta, Stdio, Target, proto};

#[expect(
    clippy::disallowed_methods,
    reason = "a test helper configured through its environment, like gitaly-ssh"
)]
fn var(k: &str) -> String {
    std::env::var(k).unwrap_or_default()
}

#[expect(
    clippy::print_stderr,
    reason = "errors go to git's stderr, as GitLab Shell does"
)]
fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rest = args.iter().peekable();
    // Skip ssh options: `-o X`, `-p N`, and flags like `-4`.
    while let Some(a) = rest.peek() {
        if !a.starts_with('-') {
            break;
        }
        let takes_value = matches!(a.as_str(), "-o" | "-p" | "-i" | "-l");
        rest.next();
        if takes_value {
            rest.next();
        }
    }
    let _host = rest.next();
    let command = rest.cloned().collect::<Vec<_>>().join(" ");
    let Some((service, path)) = command.split_once(' ') else {
        eprintln!("gitaly-ssh: cannot parse command {command:?}");
        return ExitCode::from(2);
    };
    let path = path.trim_matches('\'').trim_start_matches('/').to_owned();
    let storage = Some(var("GITALY_STORAGE")).filter(|s| !s.is_empty());
    let repo_rel = Some(var("GITALY_REPO")).filter(|s| !s.is_empty());
    let gl_id = Some(var("GITALY_GL_ID"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "user-1".to_owned());
    let repository = proto::Repository {
        storage_name: storage.unwrap_or_else(|| "default".to_owned()),
        relative_path: repo_rel.unwrap_or(path),
        gl_repository: var("GITALY_GL_REPOSITORY"),
        gl_project_path: var("GITALY_GL_PROJECT_PATH"),
        ..Default::default()
    };
    let config: Vec<String> = var("GITALY_CONFIG")
        .split(';')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let target = Target {
        address: var("GITALY_ADDRESS"),
        token: var("GITALY_TOKEN"),
        retry: None,
        trust: Default::default(),
    };
    let meta = CallMeta {
        key_id: "0".into(),
        key_type: "key".into(),
        user_id: gl_id.clone(),
        username: var("GITALY_GL_USERNAME"),
        remote_ip: "127.0.0.1".into(),
        client_name: "gitaly-ssh".into(),
        ..Default::default()
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let io = Stdio {
        stdin: Box::new(std::io::stdin()),
        stdout: &mut stdout,
        stderr: &mut stderr,
        cancel: gitaly_client::CancellationToken::new(),
    };
    let protocol = var("GIT_PROTOCOL");
    let result = match service {
        "git-upload-pack" => gitaly_client::upload_pack(
            &target,
            &meta,
            proto::SshUploadPackWithSidechannelRequest {
                repository: Some(repository),
                git_config_options: config,
                git_protocol: protocol,
            },
            io,
        )
        .map(|_| ()),
        "git-receive-pack" => gitaly_client::receive_pack(
            &target,
            &meta,
            proto::SshReceivePackRequest {
                repository: Some(repository),
                gl_id,
                gl_repository: var("GITALY_GL_REPOSITORY"),
                gl_username: var("GITALY_GL_USERNAME"),
                git_protocol: protocol,
                git_config_options: config,
                ..Default::default()
            },
            io,
        )
        .map(|_| ()),
        "git-upload-archive" => gitaly_client::upload_archive(
            &target,
            &meta,
            proto::SshUploadArchiveRequest {
                repository: Some(repository),
                ..Default::default()
            },
            io,
        )
        .map(|_| ()),
        other => {
            eprintln!("gitaly-ssh: unsupported command {other}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_silent() {
                eprintln!("{e}");
            }
            ExitCode::FAILURE
        }
    }
}
