//! A/B forensic watermarking: which variant of segment N a viewer gets, and how to trace a leak back to them.
//!
//! The origin holds two copies of every media segment, marked differently (A and B) by the packager. A token with a
//! watermark id gets segment N from variant `bit(N mod 256)` of `HMAC-SHA256(watermark key, "sharegate-wm-v1" || id)`.
//! A leaked copy is a sequence of (segment index, variant) observations; the viewer is the issued watermark id whose
//! bits match them all (see `docs/watermarking.md`). Without the key nobody can predict or forge another viewer's
//! sequence.
//!
//! Origin layout convention: segment `/<dir>/<file>` has its variants at `/<dir>/wm/a/<file>` and
//! `/<dir>/wm/b/<file>`. The segment index is the last run of decimal digits in the file name (`seg_00042.ts` → 42);
//! files without one (and playlists, init sections, keys) are not watermarked.

use alloc::string::String;
use alloc::vec::Vec;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sharegate_shared::keys::SecretKey;

const DOMAIN: &[u8] = b"sharegate-wm-v1";

/// The 256-bit pattern of one watermark id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Pattern([u8; 32]);

impl Pattern {
    /// The pattern of `id` under `key`.
    pub fn of(key: &SecretKey, id: &[u8]) -> Pattern {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose())
            .unwrap_or_else(|_| <Hmac<Sha256> as KeyInit>::new(&Default::default()));
        m.update(DOMAIN);
        m.update(id);
        Pattern(m.finalize().into_bytes().into())
    }

    /// The variant of segment `n`: `false` is A, `true` is B.
    pub fn variant(&self, n: u64) -> bool {
        let bit = (n % 256) as usize;
        self.0[bit / 8] >> (bit % 8) & 1 == 1
    }
}

/// The index of a segment file: the last run of decimal digits in its name before the extension.
pub fn segment_index(file: &str) -> Option<u64> {
    let stem = file.rsplit_once('.').map_or(file, |(s, _)| s);
    let b = stem.as_bytes();
    let end = b.iter().rposition(u8::is_ascii_digit)? + 1;
    let start = b[..end].iter().rposition(|c| !c.is_ascii_digit()).map_or(0, |i| i + 1);
    // More than 18 digits is not a segment counter; refuse rather than overflow.
    if end - start > 18 {
        return None;
    }
    stem[start..end].parse().ok()
}

/// The origin path of the variant to serve for `path` (a normalised segment path), or `None` when the file has no
/// segment index.
pub fn variant_path(key: &SecretKey, id: &[u8], path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/')?;
    let n = segment_index(file)?;
    let v = if Pattern::of(key, id).variant(n) { "b" } else { "a" };
    Some(alloc::format!("{dir}/wm/{v}/{file}"))
}

/// One observation from a leaked copy: segment `index` was variant B (`true`) or A (`false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Segment index.
    pub index: u64,
    /// Whether it was the B variant.
    pub b: bool,
}

/// The candidate ids consistent with every observation. With k observations at distinct indexes mod 256, an
/// innocent id matches with probability 2^-k, so ~40 segments single out one viewer among millions.
pub fn recover<'c>(key: &SecretKey, candidates: &[&'c [u8]], seen: &[Observation]) -> Vec<&'c [u8]> {
    candidates
        .iter()
        .copied()
        .filter(|id| {
            let p = Pattern::of(key, id);
            seen.iter().all(|o| p.variant(o.index) == o.b)
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn segment_indexes() {
        assert_eq!(segment_index("seg_00042.ts"), Some(42));
        assert_eq!(segment_index("v1_seg7.m4s"), Some(7));
        assert_eq!(segment_index("12.ts"), Some(12));
        assert_eq!(segment_index("init.mp4"), None);
        assert_eq!(segment_index("seg_1234567890123456789.ts"), None);
        assert_eq!(segment_index("a9b.ts"), Some(9));
    }

    #[test]
    fn variant_paths_follow_the_layout() {
        let key = SecretKey::new([9; 32]);
        let p = variant_path(&key, b"viewer-7", "/demo/v0/seg_003.ts").unwrap();
        assert!(
            p == "/demo/v0/wm/a/seg_003.ts" || p == "/demo/v0/wm/b/seg_003.ts",
            "{p}"
        );
        assert_eq!(variant_path(&key, b"viewer-7", "/demo/v0/init.mp4"), None);
        // Different viewers get different sequences.
        let seq = |id: &[u8]| (0..64).map(|n| Pattern::of(&key, id).variant(n)).collect::<Vec<_>>();
        assert_ne!(seq(b"viewer-7"), seq(b"viewer-8"));
    }

    #[test]
    fn a_leak_is_traced_to_one_viewer_among_thousands() {
        let key = SecretKey::new([3; 32]);
        let ids: Vec<String> = (0..5000).map(|i| format!("wm-{i:05}")).collect();
        let refs: Vec<&[u8]> = ids.iter().map(|s| s.as_bytes()).collect();
        let leaker = refs[1234];
        // The leaked copy: 48 consecutive segments as served to the leaker, read back from their marks.
        let served: Vec<Observation> = (100..148)
            .map(|n| {
                let path = variant_path(&key, leaker, &format!("/movie/v1/seg_{n:05}.ts")).unwrap();
                Observation {
                    index: n,
                    b: path.contains("/wm/b/"),
                }
            })
            .collect();
        assert_eq!(recover(&key, &refs, &served), alloc::vec![leaker]);
        // Too few observations leave several suspects; the method says so rather than guessing.
        assert!(recover(&key, &refs, &served[..4]).len() > 1);
        // Without the key the pattern is not the one served.
        let other = SecretKey::new([4; 32]);
        assert!(!recover(&other, &refs, &served).contains(&leaker));
    }
}
