//! Gitaly client.
