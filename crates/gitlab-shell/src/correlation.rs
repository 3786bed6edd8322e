//! The per-process correlation id (behaviour §8.3): `CORRELATION_ID` from the environment, or a
//! fresh ULID-style id (26 Crockford base32 characters: 48-bit millisecond time + 80 random bits),
//! like labkit's `SafeRandomID`. It is sent as `X-Request-ID`, as gRPC
//! `x-gitlab-correlation-id`, and logged as `correlation_id`.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The environment's id, or a new one.
pub fn correlation_id(from_env: Option<String>) -> String {
    from_env.unwrap_or_else(generate)
}

/// A new ULID-style id.
pub fn generate() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut random = [0u8; 10];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .is_ok();
    if !from_os {
        // Degraded but still unique enough for log correlation: time, pid and an address.
        let seed = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default())
            ^ (u128::from(std::process::id()) << 64);
        random.copy_from_slice(&seed.to_le_bytes()[..10]);
    }
    let mut value: u128 = (millis & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in random.iter().enumerate() {
        value |= u128::from(*b) << (8 * (9 - i));
    }
    (0..26)
        .rev()
        .map(|i| CROCKFORD[((value >> (5 * i)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_26_crockford_chars_and_unique() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 26);
        assert!(a.bytes().all(|c| CROCKFORD.contains(&c)), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn env_value_wins() {
        assert_eq!(correlation_id(Some("abc".into())), "abc");
    }
}
