//! The one short hash: SHA-256, the first bytes in lowercase hex. Fingerprints, content and
//! template hashes, the hashed tails of long names and a saved plan's digests are all this,
//! cut to the length each needs.

use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The first `bytes` bytes (at most 32) of the SHA-256 of `data`, in hex (two characters a
/// byte).
pub fn short_hash(data: &[u8], bytes: usize) -> String {
    let d = Sha256::digest(data);
    let mut out = String::with_capacity(bytes.min(32) * 2);
    for b in d.iter().take(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The whole SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    short_hash(data, 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_sha256_cut_to_length() {
        // SHA-256("abc"), from FIPS 180-2's examples.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        assert_eq!(short_hash(b"abc", 4), &abc[..8]);
        assert_eq!(short_hash(b"abc", 99), abc, "at most the whole digest");
        assert_eq!(short_hash(b"abc", 0), "");
    }
}
