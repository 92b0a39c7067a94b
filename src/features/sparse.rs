//! Assembling the sparse vector: sorting and deduplicating hashed coordinates, and merging the
//! binary and the token groups.

use super::Features;

/// Sorts `v` (values below `2^bits`) and removes duplicates; `scratch` is working space.
///
/// Coordinates are hashes, spread evenly over the space, so one counting pass on their top
/// bits into about `len` buckets leaves the values in order but for a few neighbours, which an
/// insertion sort puts right in about linear time. Should the values not be spread (crafted
/// collisions), the insertion sort gives up after a linear budget of moves and `sort_unstable`
/// finishes, so the worst case stays `O(n log n)`.
pub(super) fn sort_unique(v: &mut Vec<u32>, scratch: &mut Vec<u32>, bits: u32) {
    const SMALL: usize = 48;
    const MAX_BUCKET_BITS: u32 = 14;
    let n = v.len();
    if n <= SMALL {
        v.sort_unstable();
        v.dedup();
        return;
    }
    // About two values per bucket.
    let k = (usize::BITS - (n / 2).leading_zeros()).min(MAX_BUCKET_BITS).min(bits);
    let shift = bits - k;
    scratch.clear();
    scratch.resize(1 << k, 0);
    scratch.extend_from_slice(v);
    let (pos, out) = scratch.split_at_mut(1 << k);
    for &x in v.iter() {
        pos[(x >> shift) as usize] += 1;
    }
    let mut sum = 0;
    for p in pos.iter_mut() {
        (*p, sum) = (sum, sum + *p);
    }
    for &x in v.iter() {
        let p = &mut pos[(x >> shift) as usize];
        out[*p as usize] = x;
        *p += 1;
    }
    if !insertion_sort(out, 8 * n) {
        out.sort_unstable();
    }
    v.clear();
    let mut last = None;
    v.extend(out.iter().copied().filter(|x| last.replace(*x) != Some(*x)));
}

/// Insertion sort that stops, returning false, once it has made more than `budget` moves.
fn insertion_sort(a: &mut [u32], mut budget: usize) -> bool {
    for i in 1..a.len() {
        let x = a[i];
        let mut j = i;
        while j > 0 && a[j - 1] > x {
            a[j] = a[j - 1];
            j -= 1;
        }
        a[j] = x;
        budget = match budget.checked_sub(i - j) {
            Some(b) => b,
            None => return false,
        };
    }
    true
}

/// The feature vector of sorted unique binary coordinates (value 1) and sorted unique token
/// coordinates (value `tok_val`); a coordinate in both gets the sum.
pub(super) fn merge(binary: &[u32], tokens: &[u32], tok_val: f32, offset: f32) -> Features {
    let n = binary.len() + tokens.len();
    let mut f = Features { idx: Vec::with_capacity(n), val: Vec::with_capacity(n), offset };
    let mut rest = tokens;
    for &x in binary {
        // The tokens below `x` (a short run: binary coordinates are spread among them).
        let p = rest.iter().position(|t| *t >= x).unwrap_or(rest.len());
        f.idx.extend_from_slice(&rest[..p]);
        f.val.resize(f.val.len() + p, tok_val);
        f.idx.push(x);
        if rest.get(p) == Some(&x) {
            f.val.push(1.0 + tok_val);
            rest = &rest[p + 1..];
        } else {
            f.val.push(1.0);
            rest = &rest[p..];
        }
    }
    f.idx.extend_from_slice(rest);
    f.val.resize(f.val.len() + rest.len(), tok_val);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn colliding_values_fall_back_to_a_full_sort() {
        // Distinct values that share their top bits, in reverse: the insertion sort would be
        // quadratic.
        let mut v: Vec<u32> = (0..5000).rev().chain(0..100).collect();
        sort_unique(&mut v, &mut Vec::new(), 22);
        assert_eq!(v, (0..5000).collect::<Vec<u32>>());
    }

    proptest! {
        #[test]
        fn sorts_and_dedups_like_the_standard_library(
            v in proptest::collection::vec(0u32..1 << 22, 0..3000),
            dup in 0usize..4,
        ) {
            let mut v = v;
            // Repeats, as unigrams of a real snippet repeat.
            let head: Vec<u32> = v.iter().take(v.len() / 3).copied().collect();
            for _ in 0..dup {
                v.extend_from_slice(&head);
            }
            let mut want = v.clone();
            want.sort_unstable();
            want.dedup();
            let mut scratch = Vec::new();
            sort_unique(&mut v, &mut scratch, 22);
            prop_assert_eq!(v, want);
        }

        #[test]
        fn handles_narrow_spaces_and_clustered_values(v in proptest::collection::vec(0u32..300, 0..2000), bits in 8u32..12) {
            let mut v: Vec<u32> = v.into_iter().map(|x| x & ((1 << bits) - 1)).collect();
            let mut want = v.clone();
            want.sort_unstable();
            want.dedup();
            sort_unique(&mut v, &mut Vec::new(), bits);
            prop_assert_eq!(v, want);
        }

        #[test]
        fn merging_equals_sorting_the_pairs(
            a in proptest::collection::btree_set(0u32..5000, 0..200),
            b in proptest::collection::btree_set(0u32..5000, 0..200),
            t in 0.01f32..1.0,
        ) {
            let (a, b): (Vec<u32>, Vec<u32>) = (a.into_iter().collect(), b.into_iter().collect());
            // What the extractor did before: sort the tagged pairs and add up equal indices.
            let mut pairs: Vec<(u32, f32)> = a.iter().map(|i| (*i, 1.0)).chain(b.iter().map(|i| (*i, t))).collect();
            pairs.sort_unstable_by_key(|p| p.0);
            let mut want = Features::default();
            for (i, v) in pairs {
                if want.idx.last() == Some(&i) {
                    if let Some(l) = want.val.last_mut() {
                        *l += v;
                    }
                } else {
                    want.idx.push(i);
                    want.val.push(v);
                }
            }
            let got = merge(&a, &b, t, 0.0);
            prop_assert_eq!(got.idx, want.idx);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&got.val), bits(&want.val));
        }
    }
}
