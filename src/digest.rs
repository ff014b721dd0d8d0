//! FNV-1a, 64 bits: the project's one stable digest, for names and records that outlive a
//! build (the tuner's cache files, a run's training-data digest). Written out rather than
//! `std::hash::DefaultHasher`, whose output may change between Rust releases.

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_update(0xcbf2_9ce4_8422_2325, bytes)
}

/// FNV-1a of the concatenation of `parts`, without building it.
pub fn fnv1a_parts<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    parts.into_iter().fold(fnv1a(b""), fnv1a_update)
}

/// The digest `h` of some bytes continued over `bytes` (start from `fnv1a(b"")`): a file
/// read in chunks gets the digest of its whole content.
pub fn fnv1a_update(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a_parts([&b"foo"[..], b"bar"]), fnv1a(b"foobar"));
    }
}
