//! The `access: finish` line the Go gitlab-sshd writes once per connection at its end
//! (docs/gitlab-sshd.md, "Logs"): the connection's duration, and the bytes written to the
//! client's stdout and the project (`meta`) of the session that ended last. A session counts
//! only when its command succeeded: a failed, refused or cut one leaves `written_bytes` 0 and
//! `meta` `{}`, as does a connection that never ran a command.

use std::sync::Mutex;
use std::time::Duration;

use gitlab_shell::api::allowed;

/// The project a session's command was granted (`/allowed`), as the line's `meta` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// `gitaly.repository.gl_project_path`, e.g. `group/sub/project`.
    pub project: String,
    /// The path's first segment, e.g. `group`.
    pub root_namespace: String,
    /// `gl_project_id` (0: not sent).
    pub project_id: i64,
    /// `gl_root_namespace_id` (0: not sent).
    pub root_namespace_id: i64,
}

impl Meta {
    /// What `response` says about the project.
    pub fn from_response(response: &allowed::Response) -> Meta {
        let project = response.gitaly.repository.gl_project_path.clone();
        let root_namespace = project.split('/').next().unwrap_or_default().to_owned();
        Meta {
            project,
            root_namespace,
            project_id: response.gl_project_id,
            root_namespace_id: response.gl_root_namespace_id,
        }
    }

    /// The JSON object, empty strings and zero ids left out (as Go's `omitempty`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        if !self.project.is_empty() {
            map.insert("project".into(), self.project.clone().into());
        }
        if !self.root_namespace.is_empty() {
            map.insert("root_namespace".into(), self.root_namespace.clone().into());
        }
        if self.project_id != 0 {
            map.insert("project_id".into(), self.project_id.into());
        }
        if self.root_namespace_id != 0 {
            map.insert("root_namespace_id".into(), self.root_namespace_id.into());
        }
        serde_json::Value::Object(map)
    }
}

/// What one session leaves for the line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes written to the client's stdout.
    pub written_bytes: u64,
    /// The project granted, if any.
    pub meta: Meta,
}

/// A connection's last session outcome; every session that ends replaces it.
#[derive(Debug, Default)]
pub struct Last(Mutex<Outcome>);

impl Last {
    /// Records the outcome of a session that just ended: `status` its exit status, `written`
    /// its stdout bytes, `meta` what `/allowed` granted it. Only a success keeps them.
    pub fn session_ended(&self, status: Option<u8>, written: u64, meta: Option<Meta>) {
        let outcome = match status {
            Some(0) => Outcome {
                written_bytes: written,
                meta: meta.unwrap_or_default(),
            },
            _ => Outcome::default(),
        };
        if let Ok(mut g) = self.0.lock() {
            *g = outcome;
        }
    }

    /// The outcome so far.
    pub fn get(&self) -> Outcome {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }
}

/// Writes the line (inside the connection's span, which adds `correlation_id` and
/// `remote_addr`).
pub fn log_finish(duration: Duration, outcome: &Outcome) {
    tracing::info!(
        duration_s = duration.as_secs_f64(),
        written_bytes = outcome.written_bytes,
        meta = %outcome.meta.to_json(),
        "access: finish"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(path: &str, id: i64, root: i64) -> allowed::Response {
        let mut r = allowed::Response::default();
        r.gitaly.repository.gl_project_path = path.into();
        r.gl_project_id = id;
        r.gl_root_namespace_id = root;
        r
    }

    #[test]
    fn meta_comes_from_the_repository_path_and_leaves_out_what_is_empty() {
        let m = Meta::from_response(&response("deep/sub/proj", 77, 88));
        assert_eq!(
            m.to_json(),
            serde_json::json!({"project": "deep/sub/proj", "root_namespace": "deep",
                "project_id": 77, "root_namespace_id": 88})
        );
        let m = Meta::from_response(&response("group/open", 0, 0));
        assert_eq!(
            m.to_json(),
            serde_json::json!({"project": "group/open", "root_namespace": "group"})
        );
        assert_eq!(Meta::default().to_json(), serde_json::json!({}));
    }

    #[test]
    fn the_last_session_to_end_decides_and_only_a_success_counts() {
        let last = Last::default();
        assert_eq!(last.get(), Outcome::default());
        let meta = Meta::from_response(&response("group/open", 1, 0));
        last.session_ended(Some(0), 845, Some(meta.clone()));
        assert_eq!(
            last.get(),
            Outcome {
                written_bytes: 845,
                meta
            }
        );
        // The welcome: bytes, no project.
        last.session_ended(Some(0), 27, None);
        assert_eq!(last.get().written_bytes, 27);
        assert_eq!(last.get().meta, Meta::default());
        // A refused command (128), a failure (1), a cut session: nothing.
        for status in [Some(128), Some(1), None] {
            last.session_ended(Some(0), 27, None);
            last.session_ended(status, 99, Some(Meta::default()));
            assert_eq!(last.get(), Outcome::default(), "{status:?}");
        }
    }
}
