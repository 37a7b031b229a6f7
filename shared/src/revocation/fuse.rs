//! Three-wise binary fuse arrays: the two static levels of the revocation snapshot.
//!
//! One structure serves both levels. A cell array `B` of `width`-bit cells is solved so that for
//! every key `x`, `B[h0(x)] ^ B[h1(x)] ^ B[h2(x)] == v(x)`. As a *filter*, `v(x)` is a fingerprint
//! of the key's hash (false positive rate `2^-width`, no false negatives); as a *retrieval*
//! array, `v(x)` is an arbitrary value chosen per key (here one bit: revoked or not), exact for
//! the keys it was built over and meaningless for any other key. The layout follows Graf and
//! Lemire's binary fuse filters (2022): three positions in three consecutive segments, solved by
//! peeling. The reader only ever touches three cells and never allocates; the builder lives here
//! too so both sides share one hash and one position function.

use alloc::vec;
use alloc::vec::Vec;

/// Largest segment length, as a power of two; bounds the reader's arithmetic.
pub(crate) const MAX_SEGMENT_LOG: u8 = 18;
/// Widest cell, in bits. A cell is read from one 8-byte window, so `width + 7 <= 64`.
pub(crate) const MAX_WIDTH: u8 = 32;
/// Bytes of zero padding after the cells, so every read is one in-bounds 8-byte window.
pub(crate) const PADDING: usize = 7;
/// Encoded size of [`FuseParams`].
pub(crate) const PARAMS_LEN: usize = 24;
/// Largest cell array accepted by the reader (2^32 cells); far above any real state.
const MAX_CELLS: u64 = 1 << 32;

/// Shape and seed of one level, stored in the snapshot header so the reader recomputes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FuseParams {
    pub seed: u64,
    /// Number of segments the first position ranges over; 0 means the level is empty.
    pub segment_count: u32,
    /// Keys the level was built over (informational: sizes and bits-per-key reports).
    pub key_count: u32,
    pub segment_log: u8,
    pub width: u8,
}

impl FuseParams {
    /// Number of cells, or `None` if the parameters are out of range.
    pub(crate) fn cells(&self) -> Option<u64> {
        if self.segment_count == 0 {
            return Some(0);
        }
        if self.segment_log > MAX_SEGMENT_LOG || self.width == 0 || self.width > MAX_WIDTH {
            return None;
        }
        let cells = (u64::from(self.segment_count) + 2) << self.segment_log;
        (cells <= MAX_CELLS).then_some(cells)
    }

    /// Length of the level's section in bytes (cells plus padding), or `None` if out of range.
    pub(crate) fn byte_len(&self) -> Option<usize> {
        let cells = self.cells()?;
        if cells == 0 {
            return Some(0);
        }
        let bytes = (cells * u64::from(self.width)).div_ceil(8) + PADDING as u64;
        usize::try_from(bytes).ok()
    }

    pub(crate) fn encode(&self) -> [u8; PARAMS_LEN] {
        let mut out = [0u8; PARAMS_LEN];
        out[0..8].copy_from_slice(&self.seed.to_le_bytes());
        out[8..12].copy_from_slice(&self.segment_count.to_le_bytes());
        out[12..16].copy_from_slice(&self.key_count.to_le_bytes());
        out[16] = self.segment_log;
        out[17] = self.width;
        out
    }

    /// Decodes and range-checks; the reserved bytes must be zero.
    pub(crate) fn decode(b: &[u8; PARAMS_LEN]) -> Option<Self> {
        let p = FuseParams {
            seed: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            segment_count: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            key_count: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
            segment_log: b[16],
            width: b[17],
        };
        if b[18..].iter().any(|&x| x != 0) {
            return None;
        }
        if p.segment_count == 0 && (p.segment_log != 0 || p.width != 0 || p.seed != 0) {
            return None;
        }
        p.cells()?;
        Some(p)
    }
}

/// 64-bit hash of a token id under a level seed.
///
/// Token ids come from a CSPRNG and are authenticated before lookup, so nobody can choose them
/// to collide: one strong mixer is enough, no keyed hash is needed. The 96 bits fold into 64 with
/// an injective map of the last four bytes, so ids that differ in one half never collide.
#[inline]
pub(crate) fn hash_id(id: &[u8; 12], seed: u64) -> u64 {
    let a = u64::from_le_bytes([id[0], id[1], id[2], id[3], id[4], id[5], id[6], id[7]]);
    let b = u64::from(u32::from_le_bytes([id[8], id[9], id[10], id[11]]));
    mix64(a ^ seed ^ (b | (b << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The murmur3 64-bit finaliser: full avalanche in a few multiplies.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 33)).wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    z = (z ^ (z >> 33)).wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    z ^ (z >> 33)
}

#[inline]
fn positions(h: u64, segment_log: u8, segment_count: u32) -> [u64; 3] {
    let len = 1u64 << segment_log;
    let mask = len - 1;
    let span = u64::from(segment_count) << segment_log;
    let h0 = ((u128::from(h) * u128::from(span)) >> 64) as u64;
    let h1 = (h0 + len) ^ ((h >> 18) & mask);
    let h2 = (h0 + 2 * len) ^ (h & mask);
    [h0, h1, h2]
}

#[inline]
fn fingerprint(h: u64, width: u8) -> u32 {
    ((h ^ (h >> 32)) as u32) & cell_mask(width)
}

#[inline]
fn cell_mask(width: u8) -> u32 {
    if width >= 32 { u32::MAX } else { (1u32 << width) - 1 }
}

/// A level read in place: parameters plus its cell bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fuse<'a> {
    pub params: FuseParams,
    bytes: &'a [u8],
}

impl<'a> Fuse<'a> {
    /// `bytes` must be exactly `params.byte_len()` long (checked by the caller at open).
    pub(crate) fn new(params: FuseParams, bytes: &'a [u8]) -> Self {
        Fuse { params, bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.params.segment_count == 0
    }

    #[inline]
    fn cell(&self, index: u64) -> u32 {
        let bit = index * u64::from(self.params.width);
        let Ok(byte) = usize::try_from(bit >> 3) else {
            return 0;
        };
        // In bounds for every index `positions` yields, thanks to the padding checked at open.
        match self.bytes.get(byte..).and_then(|s| s.first_chunk::<8>()) {
            Some(w) => ((u64::from_le_bytes(*w) >> (bit & 7)) as u32) & cell_mask(self.params.width),
            None => 0,
        }
    }

    #[inline]
    fn value(&self, id: &[u8; 12]) -> (u64, u32) {
        let p = &self.params;
        let h = hash_id(id, p.seed);
        let [a, b, c] = positions(h, p.segment_log, p.segment_count);
        (h, self.cell(a) ^ self.cell(b) ^ self.cell(c))
    }

    /// Filter query: true for every key it was built over, and for about `2^-width` of others.
    #[inline]
    pub(crate) fn contains(&self, id: &[u8; 12]) -> bool {
        if self.is_empty() {
            return false;
        }
        let (h, v) = self.value(id);
        v == fingerprint(h, self.params.width)
    }

    /// Retrieval query: the low bit stored for a key it was built over.
    #[inline]
    pub(crate) fn retrieve(&self, id: &[u8; 12]) -> bool {
        if self.is_empty() {
            return false;
        }
        self.value(id).1 & 1 == 1
    }
}

/// What the cells must produce for each key.
pub(crate) enum Values<'v> {
    /// A `width`-bit fingerprint of the key's hash.
    Fingerprint,
    /// One bit per key, by index.
    Bits(&'v [bool]),
}

/// Seeds attempted per size before the array is grown by one segment.
const ATTEMPTS_PER_SIZE: u32 = 16;
/// Total attempts before giving up; with distinct keys this is never reached in practice.
const MAX_ATTEMPTS: u32 = 256;

/// Integer `log2(n) * 256`, linear in the mantissa (error under 0.09); `n >= 1`.
fn log2_fixed(n: u64) -> u64 {
    let e = u64::from(n.ilog2());
    e * 256 + (((n - (1 << e)) << 8) >> e)
}

/// Segment size and count for `n` keys, following the binary fuse paper's heuristics
/// (segment length `2^floor(log_3.33(n) + 2.25)`, size factor `max(1.125, 0.875 + 0.25 ln(1e6)/ln(n))`),
/// computed in integers so that no floating point is needed without `std`.
pub(crate) fn shape(n: usize) -> (u8, u32) {
    let n = n.max(2) as u64;
    let l = log2_fixed(n);
    // log2(n)/log2(3.33) = log2(n) * 0.5762
    let segment_log = ((l * 5762 / 10_000 + 576) >> 8).clamp(1, u64::from(MAX_SEGMENT_LOG)) as u8;
    let factor_milli = (875 + 4983 * 256 / l).max(1125);
    let capacity = (n * factor_milli).div_ceil(1000);
    let segments = capacity.div_ceil(1 << segment_log).saturating_sub(2).max(1);
    (segment_log, u32::try_from(segments).unwrap_or(u32::MAX))
}

/// Estimated cell count for `n` keys (used to pick the first level's width).
pub(crate) fn estimated_cells(n: usize) -> u64 {
    if n == 0 {
        return 0;
    }
    let (log, count) = shape(n);
    (u64::from(count) + 2) << log
}

/// Builds a level over distinct `keys`; returns its parameters and cell bytes.
///
/// Seeds are derived from `seed_base` and the attempt number, so a build is deterministic.
/// Fails only if the keys contain duplicates (which the caller removes) or after
/// [`MAX_ATTEMPTS`] unlucky seeds.
pub(crate) fn build(
    keys: &[[u8; 12]],
    values: &Values<'_>,
    width: u8,
    seed_base: u64,
) -> Option<(FuseParams, Vec<u8>)> {
    if keys.is_empty() {
        return Some((FuseParams::default(), Vec::new()));
    }
    if width == 0 || width > MAX_WIDTH || u32::try_from(keys.len()).is_err() {
        return None;
    }
    if let Values::Bits(bits) = values
        && bits.len() != keys.len()
    {
        return None;
    }
    let (segment_log, mut segment_count) = shape(keys.len());
    let mut hashes = vec![0u64; keys.len()];
    let mut stack: Vec<(u32, u32)> = Vec::with_capacity(keys.len());
    let mut queue: Vec<u32> = Vec::new();
    for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 && attempt % ATTEMPTS_PER_SIZE == 0 {
            segment_count = segment_count.saturating_add(1);
        }
        let seed = mix64(seed_base ^ mix64(u64::from(attempt) + 1));
        let params = FuseParams {
            seed,
            segment_count,
            key_count: keys.len() as u32,
            segment_log,
            width,
        };
        let cells = usize::try_from(params.cells()?).ok()?;
        for (h, id) in hashes.iter_mut().zip(keys) {
            *h = hash_id(id, seed);
        }
        // Peeling: a cell hit by exactly one key fixes that key; remove it and repeat.
        // `xor_key` holds the xor of the indices of the keys hitting each cell, so a cell with
        // count 1 names its key directly.
        let mut count = vec![0u32; cells];
        let mut xor_key = vec![0u32; cells];
        for (k, &h) in hashes.iter().enumerate() {
            for p in positions(h, segment_log, segment_count) {
                count[p as usize] += 1;
                xor_key[p as usize] ^= k as u32;
            }
        }
        queue.clear();
        queue.extend((0..cells as u32).filter(|&c| count[c as usize] == 1));
        stack.clear();
        while let Some(cell) = queue.pop() {
            if count[cell as usize] != 1 {
                continue;
            }
            let k = xor_key[cell as usize];
            stack.push((k, cell));
            for p in positions(hashes[k as usize], segment_log, segment_count) {
                let p = p as usize;
                count[p] -= 1;
                xor_key[p] ^= k;
                if count[p] == 1 {
                    queue.push(p as u32);
                }
            }
        }
        if stack.len() != keys.len() {
            continue;
        }
        // Assign in reverse peeling order: each key's free cell is set last among its three.
        let mask = cell_mask(width);
        let mut solved = vec![0u32; cells];
        for &(k, cell) in stack.iter().rev() {
            let h = hashes[k as usize];
            let want = match values {
                Values::Fingerprint => fingerprint(h, width),
                Values::Bits(bits) => u32::from(bits[k as usize]),
            };
            let [a, b, c] = positions(h, segment_log, segment_count);
            let others = solved[a as usize] ^ solved[b as usize] ^ solved[c as usize];
            solved[cell as usize] = (want ^ others) & mask;
        }
        let mut bytes = vec![0u8; params.byte_len()?];
        for (i, &v) in solved.iter().enumerate() {
            let bit = i as u64 * u64::from(width);
            let byte = (bit >> 3) as usize;
            let window = bytes.get_mut(byte..byte + 8)?;
            let mut w = u64::from_le_bytes([
                window[0], window[1], window[2], window[3], window[4], window[5], window[6], window[7],
            ]);
            w |= u64::from(v) << (bit & 7);
            window.copy_from_slice(&w.to_le_bytes());
        }
        return Some((params, bytes));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ids(n: usize, salt: u64) -> Vec<[u8; 12]> {
        (0..n as u64)
            .map(|i| {
                let a = mix64(i ^ salt.rotate_left(17));
                let b = mix64(a ^ 0x55);
                let mut id = [0u8; 12];
                id[..8].copy_from_slice(&a.to_le_bytes());
                id[8..].copy_from_slice(&b.to_le_bytes()[..4]);
                id
            })
            .collect()
    }

    #[test]
    fn filter_has_no_false_negatives_and_about_the_expected_fp_rate() {
        for &(n, width) in &[(1usize, 8u8), (2, 1), (3, 4), (50, 8), (1000, 6), (20_000, 8)] {
            let keys = ids(n, n as u64);
            let (p, bytes) = build(&keys, &Values::Fingerprint, width, 7).unwrap();
            assert_eq!(bytes.len(), p.byte_len().unwrap());
            let f = Fuse::new(p, &bytes);
            assert!(keys.iter().all(|k| f.contains(k)), "n={n}");
            if n == 20_000 {
                let others = ids(100_000, 99);
                let fp = others.iter().filter(|k| f.contains(k)).count();
                // 2^-8 of 100k is ~390.
                assert!((250..550).contains(&fp), "fp={fp}");
            }
        }
    }

    #[test]
    fn retrieval_is_exact_on_its_keys() {
        for n in [1usize, 2, 5, 100, 10_000] {
            let keys = ids(n, 3);
            let bits: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
            let (p, bytes) = build(&keys, &Values::Bits(&bits), 1, 11).unwrap();
            let f = Fuse::new(p, &bytes);
            for (k, &b) in keys.iter().zip(&bits) {
                assert_eq!(f.retrieve(k), b);
            }
        }
    }

    #[test]
    fn params_round_trip_and_reject_garbage() {
        let p = FuseParams {
            seed: 5,
            segment_count: 9,
            key_count: 100,
            segment_log: 4,
            width: 7,
        };
        assert_eq!(FuseParams::decode(&p.encode()), Some(p));
        let mut bad = p.encode();
        bad[17] = 33;
        assert_eq!(FuseParams::decode(&bad), None);
        let mut bad = p.encode();
        bad[16] = 19;
        assert_eq!(FuseParams::decode(&bad), None);
        let mut bad = p.encode();
        bad[20] = 1;
        assert_eq!(FuseParams::decode(&bad), None);
    }
}
