//! The gRPC metadata GitLab Shell attaches to every git RPC (gitaly.md §3.2): feature flags,
//! the `PrepareContext` user fields, labkit's correlation id and client name, the v2 token and,
//! for upload-pack, the sidechannel id.

use crate::{CallMeta, auth};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

/// Prefix of the `/allowed` feature flags that are forwarded to Gitaly.
pub const FEATURE_PREFIX: &str = "gitaly-feature-";

/// Assembles the metadata pairs for one RPC, in sending order.
///
/// `git_command` is `git-upload-pack`, `git-receive-pack` or `git-upload-archive`;
/// `authorization` is the ready header value (see [`auth::bearer_v2`]) or `None` without a token.
#[must_use]
pub fn assemble(
    meta: &CallMeta,
    git_command: &str,
    authorization: Option<String>,
    sidechannel_id: Option<i64>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = meta
        .features
        .iter()
        .filter(|(name, _)| name.starts_with(FEATURE_PREFIX))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .collect();
    for (key, value) in [
        ("key_id", &meta.key_id),
        ("key_type", &meta.key_type),
        ("user_id", &meta.user_id),
        ("username", &meta.username),
        ("remote_ip", &meta.remote_ip),
    ] {
        out.push((key.to_owned(), value.clone()));
    }
    if !meta.correlation_id.is_empty() {
        out.push((
            "x-gitlab-correlation-id".to_owned(),
            meta.correlation_id.clone(),
        ));
    }
    out.push((
        "x-gitlab-client-name".to_owned(),
        format!("{}-{git_command}", meta.client_name),
    ));
    if let Some(value) = authorization {
        out.push(("authorization".to_owned(), value));
    }
    if let Some(id) = sidechannel_id {
        out.push(("gitaly-sidechannel-id".to_owned(), id.to_string()));
    }
    out
}

/// The `authorization` value for `token`, or `None` when the token is empty.
#[must_use]
pub fn authorization(token: &str) -> Option<String> {
    (!token.is_empty()).then(|| auth::bearer_v2_now(token))
}

/// Copies pairs into a tonic metadata map. Pairs that HTTP/2 cannot carry (control characters in
/// values, invalid key characters) are skipped with a debug log naming only the key.
pub fn apply(pairs: Vec<(String, String)>, map: &mut MetadataMap) {
    for (key, value) in pairs {
        let parsed_key = MetadataKey::from_bytes(key.as_bytes());
        let parsed_value = MetadataValue::try_from(value.as_str());
        match (parsed_key, parsed_value) {
            (Ok(k), Ok(v)) => {
                map.append(k, v);
            }
            _ => tracing::debug!(key = %key, "skipping metadata that cannot be sent over gRPC"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> CallMeta {
        CallMeta {
            features: vec![
                ("gitaly-feature-cache_invalidator".into(), "true".into()),
                (
                    "gitaly-feature-inforef_uploadpack_cache".into(),
                    "false".into(),
                ),
                ("other-flag".into(), "true".into()),
            ],
            key_id: "123".into(),
            key_type: "key".into(),
            user_id: "user-1".into(),
            username: "alex-doe".into(),
            remote_ip: "127.0.0.1".into(),
            correlation_id: "01HZ-corr".into(),
            client_name: "gitlab-shell".into(),
        }
    }

    #[test]
    fn metadata_assembly() {
        let got = assemble(
            &meta(),
            "git-upload-pack",
            Some("Bearer v2.x.1".into()),
            Some(7),
        );
        let want: Vec<(String, String)> = [
            ("gitaly-feature-cache_invalidator", "true"),
            ("gitaly-feature-inforef_uploadpack_cache", "false"),
            ("key_id", "123"),
            ("key_type", "key"),
            ("user_id", "user-1"),
            ("username", "alex-doe"),
            ("remote_ip", "127.0.0.1"),
            ("x-gitlab-correlation-id", "01HZ-corr"),
            ("x-gitlab-client-name", "gitlab-shell-git-upload-pack"),
            ("authorization", "Bearer v2.x.1"),
            ("gitaly-sidechannel-id", "7"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_fields_are_still_sent_and_no_token_means_no_header() {
        let empty = CallMeta {
            client_name: "gitlab-shell".into(),
            ..CallMeta::default()
        };
        let got = assemble(&empty, "git-receive-pack", authorization(""), None);
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "key_id",
                "key_type",
                "user_id",
                "username",
                "remote_ip",
                "x-gitlab-client-name"
            ]
        );
        assert_eq!(got[5].1, "gitlab-shell-git-receive-pack");
        assert!(authorization("t").is_some_and(|v| v.starts_with("Bearer v2.")));
    }

    #[test]
    fn apply_appends_each_pair_once() {
        let mut map = MetadataMap::new();
        apply(
            assemble(&meta(), "git-upload-archive", None, None),
            &mut map,
        );
        assert_eq!(map.get_all("key_id").iter().count(), 1);
        assert_eq!(
            map.get("x-gitlab-client-name")
                .and_then(|v| v.to_str().ok()),
            Some("gitlab-shell-git-upload-archive")
        );
        assert!(map.get("other-flag").is_none());
        let mut bad = MetadataMap::new();
        apply(
            vec![
                ("username".into(), "a\nb".into()),
                ("bad key".into(), "v".into()),
            ],
            &mut bad,
        );
        assert!(bad.is_empty());
    }
}
