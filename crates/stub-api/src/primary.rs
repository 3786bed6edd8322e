//! A stand-in for a Geo primary's git HTTP endpoints under `/primary/<repo>.git/` (behaviour
//! §6.2), for the direct-to-primary flow: smart HTTP `info/refs`, `git-upload-pack`,
//! `git-receive-pack`, and the SSH-over-HTTP `ssh-upload-pack` / `ssh-receive-pack`.
//!
//! Answers are canned and name the endpoint, so tests can see which one was used; what was sent
//! is in the stub's request record. Paths containing `/fail-with-body/` answer 403
//! `Primary says no`, `/fail-empty/` answers 502 with no body, and `/bad-prefix/` answers
//! `info/refs` without the smart HTTP service line.

use axum::body::Body;
use hyper::Response;

/// Answers a request under `/primary/`, or `None` for any other path.
pub fn respond(method: &str, path: &str, query: &str) -> Option<Response<Body>> {
    let rest = path.strip_prefix("/primary/")?;
    if rest.contains("fail-with-body/") {
        return Some(reply(403, b"Primary says no".to_vec()));
    }
    if rest.contains("fail-empty/") {
        return Some(reply(502, Vec::new()));
    }
    let (_, endpoint) = rest.rsplit_once(".git/")?;
    let body = match (method, endpoint) {
        ("GET", "info/refs") => {
            let service = query.strip_prefix("service=").unwrap_or_default();
            let mut out = Vec::new();
            if !rest.contains("bad-prefix/") {
                let line = format!("# service={service}\n");
                out.extend_from_slice(format!("{:04x}{line}0000", line.len() + 4).as_bytes());
            }
            out.extend_from_slice(format!("<{service} refs>").as_bytes());
            out
        }
        (
            "POST",
            "git-upload-pack" | "git-receive-pack" | "ssh-upload-pack" | "ssh-receive-pack",
        ) => format!("<{endpoint} result>").into_bytes(),
        _ => return Some(reply(404, b"Not Found".to_vec())),
    };
    Some(reply(200, body))
}

fn reply(status: u16, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(resp: Response<Body>) -> (u16, String) {
        let status = resp.status().as_u16();
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[test]
    fn canned_answers() {
        assert!(respond("GET", "/api/v4/internal/check", "").is_none());
        let r = respond(
            "GET",
            "/primary/g/r.git/info/refs",
            "service=git-receive-pack",
        )
        .unwrap();
        assert_eq!(
            text(r),
            (
                200,
                "001f# service=git-receive-pack\n0000<git-receive-pack refs>".into()
            )
        );
        let r = respond(
            "GET",
            "/primary/g/r.git/info/refs",
            "service=git-upload-pack",
        )
        .unwrap();
        assert_eq!(
            text(r),
            (
                200,
                "001e# service=git-upload-pack\n0000<git-upload-pack refs>".into()
            )
        );
        let r = respond("POST", "/primary/g/r.git/ssh-upload-pack", "").unwrap();
        assert_eq!(text(r), (200, "<ssh-upload-pack result>".into()));
        let r = respond(
            "POST",
            "/primary/fail-with-body/g/r.git/git-upload-pack",
            "",
        )
        .unwrap();
        assert_eq!(text(r), (403, "Primary says no".into()));
        let r = respond("GET", "/primary/fail-empty/g/r.git/info/refs", "").unwrap();
        assert_eq!(text(r), (502, String::new()));
    }
}
