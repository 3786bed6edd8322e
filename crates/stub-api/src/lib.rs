//! Stub internal API.
