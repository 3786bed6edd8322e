//! GitLab Shell (classic mode) in Rust.
