//! The byte stream a Gitaly connection runs on, whatever its transport (unix, TCP, TLS): shared
//! by the dialler (`connection`) and the TLS layer (`tls`), so neither imports the other.

use tokio::io::{AsyncRead, AsyncWrite};

/// Object-safe async socket.
pub trait IoDyn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoDyn for T {}
