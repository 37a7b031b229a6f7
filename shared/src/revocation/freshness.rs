//! Signed "no change" answers: the control plane's word that a generation is still current, as of a time.
//!
//! An edge measures the age of its revocation state from signed evidence only (the `as_of` of the newest verified
//! snapshot, delta or freshness message for the generation it holds), never from when bytes arrived: arrival can be
//! replayed, a MAC'd time cannot be moved. Snapshots and deltas carry their `built_at`; when nothing changed, the
//! control plane answers with this message instead of an unauthenticated `304`, like an OCSP response's
//! `thisUpdate`.
//!
//! The message is tiny and fixed (52 bytes: one SHA-256 block of body), and its magic `SGRF` differs from the
//! snapshot's and the delta's, so none of the three can pass for another under the same [`StateKey`]:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `SGRF` |
//! | 4 | 2 | version (1), little-endian |
//! | 6 | 2 | header length (20) |
//! | 8 | 8 | generation: the one the control plane says is current |
//! | 16 | 4 | as_of: unix seconds, taken before the generation was read |
//! | 20 | 32 | HMAC-SHA256 over bytes 0..20 |
//!
//! Pure: the caller passes the time in; nothing here reads a clock.

use super::view::VERSION;
use super::{StateError, StateKey, TAG_LEN};

/// Magic of a freshness message.
pub const FRESHNESS_MAGIC: &[u8; 4] = b"SGRF";
/// Length of the signed part of a freshness message.
const HEADER_LEN: usize = 20;
/// Length of a whole freshness message.
pub const FRESHNESS_LEN: usize = HEADER_LEN + TAG_LEN;

/// "Generation `generation` is current as of `as_of`", verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freshness {
    /// The generation the control plane vouches for.
    pub generation: u64,
    /// When it vouched (unix seconds, its clock).
    pub as_of: u32,
}

/// Builds the freshness message for `generation` as of `as_of` (unix seconds).
///
/// `as_of` must be read from the clock *before* the current generation is read, so that every revocation
/// acknowledged by `as_of` is in a generation no newer than the one vouched for.
pub fn build_freshness(generation: u64, as_of: u32, key: &StateKey) -> [u8; FRESHNESS_LEN] {
    let mut out = [0u8; FRESHNESS_LEN];
    out[..4].copy_from_slice(FRESHNESS_MAGIC);
    out[4..6].copy_from_slice(&VERSION.to_le_bytes());
    out[6..8].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
    out[8..16].copy_from_slice(&generation.to_le_bytes());
    out[16..20].copy_from_slice(&as_of.to_le_bytes());
    let tag = key.tag(&out[..HEADER_LEN]);
    out[HEADER_LEN..].copy_from_slice(&tag);
    out
}

/// Verifies a freshness message: magic, version, exact length, then the MAC (constant time).
///
/// Whether it says anything about the state an edge holds (same generation: yes; older: a replay, refused;
/// newer: the edge is behind) is the holder's decision, see `sharegate_edge::held`.
pub fn verify_freshness(bytes: &[u8], key: &StateKey) -> Result<Freshness, StateError> {
    let prefix = bytes.len().min(4);
    if bytes[..prefix] != FRESHNESS_MAGIC[..prefix] {
        return Err(StateError::BadMagic);
    }
    let field = |at: usize, len: usize| bytes.get(at..at + len).ok_or(StateError::Truncated);
    let version = field(4, 2).map(|v| u16::from_le_bytes([v[0], v[1]]))?;
    if version != VERSION {
        return Err(StateError::UnsupportedVersion);
    }
    let header_len = field(6, 2).map(|v| u16::from_le_bytes([v[0], v[1]]))?;
    if usize::from(header_len) != HEADER_LEN {
        return Err(StateError::Malformed);
    }
    match bytes.len().cmp(&FRESHNESS_LEN) {
        core::cmp::Ordering::Less => return Err(StateError::Truncated),
        core::cmp::Ordering::Greater => return Err(StateError::Malformed),
        core::cmp::Ordering::Equal => {}
    }
    key.verify(bytes)?;
    let mut generation = [0u8; 8];
    generation.copy_from_slice(&bytes[8..16]);
    let mut as_of = [0u8; 4];
    as_of.copy_from_slice(&bytes[16..20]);
    Ok(Freshness {
        generation: u64::from_le_bytes(generation),
        as_of: u32::from_le_bytes(as_of),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::revocation::{DeltaParams, DeltaView, SnapshotParams, StateView, build_delta, build_snapshot};

    fn key() -> StateKey {
        StateKey::new([0x5a; 32])
    }

    #[test]
    fn round_trip() {
        let m = build_freshness(42, 1_700_000_000, &key());
        assert_eq!(m.len(), FRESHNESS_LEN);
        assert_eq!(
            verify_freshness(&m, &key()),
            Ok(Freshness {
                generation: 42,
                as_of: 1_700_000_000
            })
        );
    }

    #[test]
    fn any_tampering_is_refused() {
        let m = build_freshness(42, 1_700_000_000, &key());
        for i in 0..m.len() {
            for bit in 0..8 {
                let mut t = m;
                t[i] ^= 1 << bit;
                assert!(verify_freshness(&t, &key()).is_err(), "byte {i} bit {bit}");
            }
        }
        for n in 0..m.len() {
            assert!(verify_freshness(&m[..n], &key()).is_err(), "truncated to {n}");
        }
        let mut longer = m.to_vec();
        longer.push(0);
        assert_eq!(verify_freshness(&longer, &key()), Err(StateError::Malformed));
        assert_eq!(
            verify_freshness(&m, &StateKey::new([0x5b; 32])),
            Err(StateError::BadMac),
            "another key"
        );
    }

    #[test]
    fn no_message_passes_for_another_kind() {
        let k = key();
        let f = build_freshness(3, 1_000, &k);
        assert_eq!(StateView::open_verified(&f, &k, 0).err(), Some(StateError::BadMagic));
        assert_eq!(DeltaView::open_verified(&f, &k).err(), Some(StateError::BadMagic));
        let snapshot = build_snapshot(
            &SnapshotParams {
                generation: 3,
                built_at: 1_000,
                cutoff: 1_000,
                expire_before: 0,
                max_token_lifetime: 60,
            },
            core::iter::empty(),
            &[],
            &[],
            &k,
        )
        .unwrap();
        let delta = build_delta(
            &DeltaParams {
                base_generation: 2,
                generation: 3,
                built_at: 1_000,
            },
            &[],
            &[],
            &k,
        )
        .unwrap();
        assert_eq!(verify_freshness(&snapshot, &k), Err(StateError::BadMagic));
        assert_eq!(verify_freshness(&delta, &k), Err(StateError::BadMagic));
        // Even a freshness message's signed bytes with a snapshot's magic do not verify (the magic is MAC'd).
        let mut relabelled = f;
        relabelled[..4].copy_from_slice(b"SGRS");
        assert!(StateView::open_verified(&relabelled, &k, 0).is_err());
    }
}
