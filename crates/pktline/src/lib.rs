//! Git pkt-line framing (git `Documentation/gitprotocol-common.txt`, "pkt-line Format").
//!
//! A pkt-line is a four-digit hexadecimal length, counting the four header bytes themselves,
//! followed by that many bytes minus four of payload. Three lengths below 4 are special packets:
//! `0000` flush, `0001` delimiter (protocol v2 and the Git LFS SSH protocol) and `0002`
//! response-end.
//!
//! The crate is split the gitoxide way (`gix-packetline`):
//! - [`decode`] and [`encode`] are pure functions over byte slices, with no I/O, so they can be
//!   tested byte for byte and fuzzed;
//! - [`read`] and [`write`] are thin `std::io` adapters on top of them.
//!
//! GitLab Shell uses pkt-lines in two places: the Geo custom action reads the client's request
//! from stdin packet by packet (`internal/pktline` in the Go code), and `git-lfs-transfer`
//! speaks the whole Git LFS SSH protocol in pkt-lines.

pub mod decode;
pub mod encode;
pub mod read;
pub mod write;

pub use decode::{DecodeError, Decoded, Packet};
pub use read::{RawScanner, Reader};
pub use write::{DataWriter, Writer};

/// The largest total packet length git itself produces or accepts (`LARGE_PACKET_MAX`):
/// 65520 bytes including the four header bytes.
pub const MAX_PACKET_LEN: usize = 65520;

/// The largest payload of one packet: [`MAX_PACKET_LEN`] minus the four header bytes.
pub const MAX_DATA_LEN: usize = MAX_PACKET_LEN - HEADER_LEN;

/// The largest payload of one side-band-64k packet: [`MAX_DATA_LEN`] minus the band byte.
pub const MAX_SIDEBAND_DATA: usize = MAX_DATA_LEN - 1;

/// The largest length a four-digit hex header can express. GitLab Shell's Go scanner
/// (`internal/pktline`) accepts packets up to this size, so the Geo flow uses it as its limit.
pub const MAX_HEADER_LEN: usize = 0xffff;

/// Number of header bytes in every packet.
pub const HEADER_LEN: usize = 4;

/// The flush packet, `0000`.
pub const FLUSH: &[u8; 4] = b"0000";

/// The delimiter packet, `0001`.
pub const DELIM: &[u8; 4] = b"0001";

/// The response-end packet, `0002`.
pub const RESPONSE_END: &[u8; 4] = b"0002";

/// The packet a git client sends to end upload-pack negotiation: `0009done\n`.
pub const DONE: &[u8; 9] = b"0009done\n";

/// Whether `raw` (a whole packet including its header) is the flush packet.
pub fn is_flush(raw: &[u8]) -> bool {
    raw == FLUSH
}

/// Whether `raw` (a whole packet including its header) is the `0009done\n` packet.
pub fn is_done(raw: &[u8]) -> bool {
    raw == DONE
}

/// Whether `raw` (a whole packet including its header) is a receive-pack command that deletes a
/// ref: four hex length digits, a 40-hex old id, a space, 40 zeros as new id, and a space.
///
/// GitLab Shell's Geo flow uses this to decide whether a push carries pack data after the flush
/// (a push made only of deletions has none). The test is a prefix match, like the Go regexp
/// `\A[a-fA-F0-9]{4}[a-fA-F0-9]{40} 0{40} `.
pub fn is_ref_removal(raw: &[u8]) -> bool {
    const PREFIX: usize = HEADER_LEN + 40 + 1 + 40 + 1;
    if raw.len() < PREFIX {
        return false;
    }
    let hex = |b: &u8| b.is_ascii_hexdigit();
    raw[..HEADER_LEN + 40].iter().all(hex)
        && raw[HEADER_LEN + 40] == b' '
        && raw[HEADER_LEN + 41..HEADER_LEN + 81]
            .iter()
            .all(|b| *b == b'0')
        && raw[HEADER_LEN + 81] == b' '
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_packet_predicates() {
        assert!(is_flush(b"0000"));
        assert!(!is_flush(b"0001"));
        assert!(is_done(b"0009done\n"));
        assert!(!is_done(b"0008done"));
    }

    #[test]
    fn ref_removal_matches_only_deletions() {
        let old = "a".repeat(40);
        let zero = "0".repeat(40);
        let del = format!("0067{old} {zero} refs/heads/x\0report-status");
        assert!(is_ref_removal(del.as_bytes()));
        let new = "b".repeat(40);
        let update = format!("0067{old} {new} refs/heads/x");
        assert!(!is_ref_removal(update.as_bytes()));
        let create = format!("0067{zero} {new} refs/heads/x");
        assert!(!is_ref_removal(create.as_bytes()));
        assert!(!is_ref_removal(b"0000"));
        let bad_len = format!("zz67{old} {zero} refs/heads/x");
        assert!(!is_ref_removal(bad_len.as_bytes()));
    }
}
