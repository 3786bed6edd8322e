//! Dev Gitaly.
