//! `git-lfs-authenticate <repo> <download|upload>` (GitLab Shell
//! `internal/command/lfsauthenticate`, behaviour §7.3): `/allowed`, then an LFS token printed as
//! the JSON git-lfs expects. A token failure prints nothing and exits 0, as the Ruby version did.

use base64::Engine as _;
use serde::Serialize;

use crate::api::lfs_authenticate;
use crate::command::{Context, access};
use crate::error::Error;
use crate::identity::Identity;
use crate::io::Io;

#[derive(Serialize)]
struct Header {
    #[serde(rename = "Authorization")]
    authorization: String,
}

#[derive(Serialize)]
struct Payload {
    header: Header,
    href: String,
    #[serde(skip_serializing_if = "is_zero")]
    expires_in: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The line printed on success.
pub fn payload_json(r: &lfs_authenticate::Response) -> String {
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", r.username, r.lfs_token));
    let payload = Payload {
        header: Header {
            authorization: format!("Basic {basic}"),
        },
        href: format!("{}/info/lfs", r.repository_http_path),
        expires_in: r.expires_in,
    };
    serde_json::to_string(&payload).unwrap_or_default()
}

/// The `/lfs_authenticate` request for this session (behaviour §3.4 #6): `key_id` for a key
/// identity; otherwise `user_id`, the `/allowed` `gl_id` without its `user-` prefix, as a string.
/// Shared with `git-lfs-transfer`, which asks for the same token.
pub(crate) fn token_request(
    ctx: &Context<'_>,
    operation: &str,
    repo: &str,
    gl_id: &str,
) -> lfs_authenticate::Request {
    let mut request = lfs_authenticate::Request {
        operation: operation.to_owned(),
        project: repo.to_owned(),
        ..Default::default()
    };
    match &ctx.identity {
        Identity::KeyId(k) => request.key_id = k.clone(),
        _ => request.user_id = gl_id.strip_prefix("user-").unwrap_or(gl_id).to_owned(),
    }
    request
}

/// Runs the command.
pub fn run(ctx: &Context<'_>, io: &mut Io) -> Result<(), Error> {
    let words = &ctx.words;
    if words.len() < 3 {
        return Err(Error::DisallowedCommand);
    }
    let (repo, operation) = (&words[1], &words[2]);
    let action = match operation.as_str() {
        "download" => "git-upload-pack",
        "upload" => "git-receive-pack",
        _ => return Err(Error::DisallowedCommand),
    };
    let client = ctx.api()?;
    let access = access::verify(ctx, &client, action, repo, io)?;
    let request = token_request(ctx, operation, repo, &access.response.gl_id);
    match lfs_authenticate::authenticate(&client, &request) {
        Ok(r) => io.out_line(&payload_json(&r))?,
        Err(e) => {
            let r = &access.response;
            let gl_user_id = r
                .gl_id
                .strip_prefix("user-")
                .and_then(|n| n.parse::<i64>().ok());
            tracing::debug!(operation = %operation, gl_repository = %r.gl_repository, gl_user_id, error_message = %e, "lfsauthenticate: execute: lfs authentication failed")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_bytes() {
        let r = lfs_authenticate::Response {
            username: "alice".into(),
            lfs_token: "tok".into(),
            repository_http_path: "http://gitlab/group/repo.git".into(),
            expires_in: 1800,
        };
        assert_eq!(
            payload_json(&r),
            r#"{"header":{"Authorization":"Basic YWxpY2U6dG9r"},"href":"http://gitlab/group/repo.git/info/lfs","expires_in":1800}"#
        );
        let r = lfs_authenticate::Response { expires_in: 0, ..r };
        assert!(!payload_json(&r).contains("expires_in"));
    }
}

#[cfg(test)]
mod command_tests {
    use crate::command::testkit::{Kit, alice, bob, framed};

    #[test]
    fn prints_the_lfs_token_for_download_and_upload() {
        let kit = Kit::new("");
        let run = kit.run(alice(), "git-lfs-authenticate group/repo.git download", b"");
        assert_eq!((run.status, run.stderr.as_str()), (0, ""));
        let v: serde_json::Value = serde_json::from_str(run.out().trim_end()).unwrap();
        assert!(
            v["header"]["Authorization"]
                .as_str()
                .unwrap()
                .starts_with("Basic ")
        );
        assert_eq!(
            v["href"],
            "http://gitlab.example.com/group/repo.git/info/lfs"
        );
        assert_eq!(v["expires_in"], 7200);
        let run = kit.run(alice(), "git-lfs-authenticate group/repo.git upload", b"");
        assert_eq!(run.status, 0);
        let sent = kit.api.requests_to("/lfs_authenticate");
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].body["operation"], "download");
        assert_eq!(sent[0].body["key_id"], "1");
    }

    #[test]
    fn a_reader_cannot_upload() {
        let kit = Kit::new("");
        let run = kit.run(bob(), "git-lfs-authenticate group/repo.git upload", b"");
        assert_eq!((run.status, run.out()), (1, String::new()));
        assert_eq!(
            run.stderr,
            framed("You are not allowed to push code to this project.")
        );
        assert!(kit.api.requests_to("/lfs_authenticate").is_empty());
    }
}
