//! `tls://host:port` dialling.

use crate::Error;
use crate::connection::IoDyn;
use std::io;

/// Dials `host_port` over TLS. The outer `Result` is for set-up problems that are not
/// connection failures; the inner one is the dial itself.
pub(crate) async fn connect(host_port: &str) -> Result<io::Result<Box<dyn IoDyn>>, Error> {
    let _ = host_port;
    Err(Error::Unsupported(
        "tls:// Gitaly addresses are not supported by this build".to_owned(),
    ))
}
