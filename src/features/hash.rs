//! MurmurHash3 x86 32-bit, written out so that feature indices never depend on a crate's
//! choices: the same bytes and seed give the same index on every platform and release.
//! Reference: Austin Appleby's public-domain `MurmurHash3_x86_32`.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline]
const fn mix_k(mut k: u32) -> u32 {
    k = k.wrapping_mul(C1);
    k = k.rotate_left(15);
    k.wrapping_mul(C2)
}

#[inline]
const fn mix_h(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k)).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline]
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// MurmurHash3 (x86, 32-bit) of `data` with `seed`. A `const fn`, so fixed keys hash at
/// compile time.
#[must_use]
#[inline]
pub const fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    let mut h = seed;
    let mut rest = data;
    while let [a, b, c, d, tail @ ..] = rest {
        h = mix_h(h, u32::from_le_bytes([*a, *b, *c, *d]));
        rest = tail;
    }
    let k = match rest {
        [a] => *a as u32,
        [a, b] => u32::from_le_bytes([*a, *b, 0, 0]),
        [a, b, c] => u32::from_le_bytes([*a, *b, *c, 0]),
        _ => 0,
    };
    if !rest.is_empty() {
        h ^= mix_k(k);
    }
    // The reference mixes in the length as a 32-bit value; longer inputs wrap, as there.
    fmix(h ^ data.len() as u32)
}

/// Combines two 32-bit hashes into one (for n-grams), as murmur3 of their 8 little-endian bytes.
#[must_use]
#[inline]
pub const fn combine(a: u32, b: u32, seed: u32) -> u32 {
    // Two whole blocks, no tail: the loop of `murmur3_32` unrolled.
    fmix(mix_h(mix_h(seed, a), b) ^ 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reference's block-and-tail structure written plainly, to check the `const fn`.
    fn reference(data: &[u8], seed: u32) -> u32 {
        let mut h = seed;
        let mut chunks = data.chunks_exact(4);
        for c in &mut chunks {
            h ^= mix_k(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut k = 0u32;
            for (i, b) in tail.iter().enumerate() {
                k |= u32::from(*b) << (8 * i);
            }
            h ^= mix_k(k);
        }
        h ^= data.len() as u32;
        fmix(h)
    }

    #[test]
    fn matches_the_reference_vectors() {
        // Published test vectors of MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"\0\0\0\0", 0), 0x2362_f9de);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747_b28c), 0x2fa8_26cd);
        assert_eq!(murmur3_32(b"aaaa", 0x9747_b28c), 0x5a97_808a);
        assert_eq!(murmur3_32(b"abc", 0), 0xb3dd_93fa);
    }

    proptest! {
        #[test]
        fn is_a_pure_function_of_bytes_and_seed(data in proptest::collection::vec(any::<u8>(), 0..64), seed in any::<u32>()) {
            prop_assert_eq!(murmur3_32(&data, seed), murmur3_32(&data.clone(), seed));
            prop_assert_eq!(murmur3_32(&data, seed), reference(&data, seed));
        }

        #[test]
        fn combine_is_murmur3_of_the_two_words(a in any::<u32>(), b in any::<u32>(), seed in any::<u32>()) {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&a.to_le_bytes());
            buf[4..].copy_from_slice(&b.to_le_bytes());
            prop_assert_eq!(combine(a, b, seed), murmur3_32(&buf, seed));
        }

        #[test]
        fn combine_is_order_sensitive(a in any::<u32>(), b in any::<u32>()) {
            prop_assume!(a != b);
            prop_assert_ne!(combine(a, b, 7), combine(b, a, 7));
        }
    }
}
