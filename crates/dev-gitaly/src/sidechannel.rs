//! Server side of Gitaly's sidechannel (gitaly.md §4.1 items 6 and 8; Gitaly
//! `internal/grpc/sidechannel`): open a yamux stream back to the client, write `sidechannel` +
//! the 8-byte big-endian id, wait up to 5 s for `ok`, then carry git's stdin as client frames
//! and git's stdout/stderr as side-band-64k packets.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_yamux::{Control, StreamHandle};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::pktline::{self, Frame};

/// Metadata key carrying the sidechannel id.
pub const METADATA_KEY: &str = "gitaly-sidechannel-id";
/// Magic the server writes on the stream it opens.
pub const SIDECHANNEL_MAGIC: &[u8; 11] = b"sidechannel";
/// Handshake deadline.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The bytes the server writes first on a new sidechannel stream.
pub fn handshake_bytes(id: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(19);
    v.extend_from_slice(SIDECHANNEL_MAGIC);
    v.extend_from_slice(&id.to_be_bytes());
    v
}

/// The **last** `gitaly-sidechannel-id` value of the request, as Gitaly reads it.
pub fn id_from_metadata(md: &MetadataMap) -> Result<i64, Status> {
    let value =
        md.get_all(METADATA_KEY).iter().next_back().ok_or_else(|| {
            Status::unavailable("sidechannel: sidechannel ID not found in metadata")
        })?;
    value
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| Status::unavailable("sidechannel: invalid sidechannel ID"))
}

/// Opens the sidechannel stream and performs the handshake.
pub async fn open(control: &mut Control, id: i64) -> Result<StreamHandle, Status> {
    let fail = |what: String| Status::unavailable(format!("sidechannel: {what}"));
    let work = async {
        let mut stream = control
            .open_stream()
            .await
            .map_err(|e| fail(format!("open stream: {e}")))?;
        stream
            .write_all(&handshake_bytes(id))
            .await
            .map_err(|e| fail(format!("write handshake: {e}")))?;
        stream
            .flush()
            .await
            .map_err(|e| fail(format!("write handshake: {e}")))?;
        let mut ok = [0u8; 2];
        stream
            .read_exact(&mut ok)
            .await
            .map_err(|e| fail(format!("read ok: {e}")))?;
        if &ok != b"ok" {
            return Err(fail(format!("expected ok, got {ok:?}")));
        }
        Ok(stream)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
        .await
        .map_err(|_| fail("handshake timed out".into()))?
}

/// Reads one client frame. `Ok(None)` means the stream ended *between* frames (a missing final
/// flush); an EOF inside a frame is `UnexpectedEof`; reserved lengths are `InvalidData`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Frame>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(std::io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    match pktline::frame_payload_len(header) {
        Ok(None) => Ok(Some(Frame::Flush)),
        Ok(Some(n)) => {
            let mut data = vec![0u8; n];
            r.read_exact(&mut data).await?;
            Ok(Some(Frame::Data(data)))
        }
        Err(e) => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_golden_bytes() {
        assert_eq!(
            handshake_bytes(0x0102_0304_0506_0708),
            b"sidechannel\x01\x02\x03\x04\x05\x06\x07\x08"
        );
        assert_eq!(handshake_bytes(7), b"sidechannel\0\0\0\0\0\0\0\x07");
    }

    #[test]
    fn last_metadata_value_wins() {
        let mut md = MetadataMap::new();
        md.append(METADATA_KEY, "1".parse().unwrap());
        md.append(METADATA_KEY, "42".parse().unwrap());
        assert_eq!(id_from_metadata(&md).unwrap(), 42);
        assert!(id_from_metadata(&MetadataMap::new()).is_err());
    }

    #[tokio::test]
    async fn frames_are_parsed() {
        let mut input: &[u8] = b"0009hello0000";
        assert_eq!(
            read_frame(&mut input).await.unwrap(),
            Some(Frame::Data(b"hello".to_vec()))
        );
        assert_eq!(read_frame(&mut input).await.unwrap(), Some(Frame::Flush));
        assert_eq!(read_frame(&mut input).await.unwrap(), None);
        let mut bad: &[u8] = b"0002";
        assert!(read_frame(&mut bad).await.is_err());
        let mut short: &[u8] = b"0011agent";
        assert_eq!(
            read_frame(&mut short).await.unwrap_err().kind(),
            std::io::ErrorKind::UnexpectedEof
        );
    }
}
