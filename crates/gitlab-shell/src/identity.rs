//! Who the SSH user is, as the front door established it: the `key-N` / `username-X` argument
//! that sshd's forced command carries (behaviour §1.2), or the key gitlab-sshd verified. Used by
//! the input layer (which produces it), the commands and the API clients (which send it).

/// The user's identity for one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// `key-N`: the key's database id, as decimal digits.
    KeyId(String),
    /// `username-X` (SSH certificates: the principal's user).
    Username(String),
    /// Neither (fails later, per command).
    #[default]
    None,
}
