//! The internal API (GitLab Shell `client/` and `internal/gitlabnet/`): the base client
//! ([`client`]: URL schemes `http://`, `https://`, `http+unix://`, the `/api/v4/internal`
//! prefix, the `Gitlab-Shell-Api-Request` JWT ([`jwt`]), basic auth, user agent, correlation id,
//! timeouts, retries) and Go's rules for answers ([`json`]: error bodies, `null`s), behaviour
//! §2.4 and §3. One small module per endpoint sits on top of it; commands never build URLs or
//! JSON themselves. TLS trust comes from the `tls-trust` crate, shared with the Gitaly client.

pub mod allowed;
pub mod authorized_certs;
pub mod authorized_keys;
pub mod check;
pub mod client;
pub mod discover;
pub mod geo;
pub mod geo_git;
pub mod git_audit_event;
pub mod go_escape;
pub mod http1;
#[cfg(test)]
mod https_tests;
pub mod json;
pub mod jwt;
pub mod lfs_authenticate;
pub mod lfs_transfer;
pub mod personal_access_token;
#[cfg(test)]
mod transport_tests;
pub mod two_factor_manual_otp_check;
pub mod two_factor_push_otp_check;
pub mod two_factor_recovery_codes;

pub use client::{Client, INTERNAL_API_PATH, Target};
pub use json::{decode, error_from_body};

use crate::messages;
use go_escape::go_quote;

/// Internal API failures; `Display` is GitLab Shell's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// 4xx/5xx (not retried) with a JSON body: its `message` (possibly empty).
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The body's `message`.
        message: String,
    },
    /// 4xx/5xx with an empty or non-JSON body.
    #[error("Internal API error ({0})")]
    Status(u16),
    /// Transport failure, or 429/5xx after every attempt.
    #[error("{}", messages::INTERNAL_API_UNREACHABLE)]
    Unreachable,
    /// 2xx/3xx whose body is not the expected JSON (or could not be read).
    #[error("{}", messages::PARSING_FAILED)]
    Parse,
    /// 301/302/303/307/308: never followed (docs/api-json.md, "Redirects").
    #[error("Internal API returned redirect ({status}) to {}", go_quote(.location))]
    Redirect {
        /// HTTP status.
        status: u16,
        /// The `Location` header (empty when absent).
        location: String,
    },
    /// The client could not be created (unknown scheme, missing CA file, TLS set-up).
    #[error("error creating http client: {0}")]
    Client(String),
    /// A `success: false` answer or a client-side refusal; the text as is.
    #[error("{0}")]
    Message(String),
}

/// A decoded answer with its HTTP status (300 matters for `/allowed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<T> {
    /// HTTP status (200–399).
    pub status: u16,
    /// Decoded body (`null` decodes to the default value).
    pub body: T,
}
