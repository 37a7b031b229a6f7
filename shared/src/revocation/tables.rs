//! The exact tables shared by snapshots and deltas: revoked token records and scope watermarks.
//!
//! Both are sorted so a lookup is a binary search over the bytes as they lie, with every read
//! bounds-checked: a malformed table gives a wrong answer or none, never a panic. Token records
//! compare as two integers; watermarks are found through a fixed-width index sorted by a hash of
//! the scope id, and a hit is confirmed on the exact id bytes, so a hash collision costs one more
//! comparison and can never revoke the wrong scope. Opening checks
//! only the section sizes (O(1)); [`Tables::validate`] walks every entry and runs when the MAC is
//! verified, so a verified state is also a well-formed one.

use super::build::{RevokedToken, Watermark};
use super::fuse::mix64;
use super::{Revoked, SCOPE_KINDS, ScopeKind, StateError, Subject};
use alloc::vec::Vec;

/// Bytes of one revoked token record: id (12), iat (u32 LE), exp (u32 LE).
pub(crate) const TOKEN_LEN: usize = 20;
/// Bytes of the tables' header fields: token count, one count per scope kind, blob length.
pub(crate) const HEADER_LEN: usize = 4 + 4 * SCOPE_KINDS + 4;
/// Bytes a watermark record adds around its id: kind, id length, `through` (u32 LE).
const WM_OVERHEAD: usize = 6;
/// Bytes of one watermark index entry: id hash (u64 LE), record offset in the blob (u32 LE).
const INDEX_LEN: usize = 12;

/// Hash of a scope id for the watermark index: eight bytes per mixing round, length mixed in
/// first so the zero padding of the last chunk is unambiguous. Unkeyed: scope ids come from
/// authenticated responders, and a collision only costs a comparison.
pub(crate) fn scope_hash(id: &[u8]) -> u64 {
    let mut h = 0x243F_6A88_85A3_08D3 ^ id.len() as u64;
    let mut chunks = id.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix64(h ^ u64::from_le_bytes(w));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // The zero-padded little-endian word, built in a register (a variable-length copy is a `memcpy` call).
        let w = rest
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | u64::from(b) << (8 * i));
        h = mix64(h ^ w);
    }
    h
}

/// A 12-byte id as one big-endian integer: ordered like the bytes, compared without `memcmp`.
#[inline]
fn id_key(id: &[u8; 12]) -> u128 {
    let mut b = [0u8; 16];
    b[4..].copy_from_slice(id);
    u128::from_be_bytes(b)
}

/// Reads a little-endian u32 at `at`, or `None` past the end.
#[inline]
pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..)?.first_chunk::<4>().map(|a| u32::from_le_bytes(*a))
}

/// Reads a little-endian u64 at `at`, or `None` past the end.
#[inline]
pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..)?.first_chunk::<8>().map(|a| u64::from_le_bytes(*a))
}

/// A watermark as it lies in a state: tokens of scope (`kind`, `id`) with `iat <= through` are revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkRef<'a> {
    /// The scope kind.
    pub kind: ScopeKind,
    /// The scope id's exact bytes (empty for [`ScopeKind::Global`]).
    pub id: &'a [u8],
    /// Inclusive: tokens issued at or before this second are revoked.
    pub through: u32,
}

/// The exact tables of a snapshot or delta, read in place.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tables<'a> {
    tokens: &'a [u8],
    token_count: usize,
    counts: [u32; SCOPE_KINDS],
    index: &'a [u8],
    blob: &'a [u8],
}

impl<'a> Tables<'a> {
    /// Splits `body` into the tables its header describes; returns the tables and what follows.
    pub(crate) fn split(header: &[u8; HEADER_LEN], body: &'a [u8]) -> Result<(Self, &'a [u8]), StateError> {
        let token_count = le_u32(header, 0).ok_or(StateError::Malformed)? as usize;
        let mut counts = [0u32; SCOPE_KINDS];
        let mut total: usize = 0;
        for (k, c) in counts.iter_mut().enumerate() {
            *c = le_u32(header, 4 + 4 * k).ok_or(StateError::Malformed)?;
            total = total.checked_add(*c as usize).ok_or(StateError::Malformed)?;
        }
        let blob_len = le_u32(header, 4 + 4 * SCOPE_KINDS).ok_or(StateError::Malformed)? as usize;
        // Each watermark record takes at least its overhead in the blob.
        if total.checked_mul(WM_OVERHEAD).is_none_or(|min| min > blob_len) {
            return Err(StateError::Malformed);
        }
        let token_bytes = token_count.checked_mul(TOKEN_LEN).ok_or(StateError::Malformed)?;
        let index_bytes = total.checked_mul(INDEX_LEN).ok_or(StateError::Malformed)?;
        let (tokens, rest) = body.split_at_checked(token_bytes).ok_or(StateError::Truncated)?;
        let (index, rest) = rest.split_at_checked(index_bytes).ok_or(StateError::Truncated)?;
        let (blob, rest) = rest.split_at_checked(blob_len).ok_or(StateError::Truncated)?;
        Ok((
            Tables {
                tokens,
                token_count,
                counts,
                index,
                blob,
            },
            rest,
        ))
    }

    pub(crate) fn token_count(&self) -> usize {
        self.token_count
    }

    pub(crate) fn watermark_count(&self) -> usize {
        self.counts.iter().map(|&c| c as usize).sum()
    }

    fn token(&self, i: usize) -> Option<&'a [u8; TOKEN_LEN]> {
        self.tokens.get(i.checked_mul(TOKEN_LEN)?..)?.first_chunk()
    }

    /// Is this id in the exact token list?
    #[inline]
    pub(crate) fn contains_token(&self, id: &[u8; 12]) -> bool {
        // Branch-free lower bound: the step is a conditional move, so a search costs its
        // dependent loads and no mispredictions (the ids are random, so branches would miss).
        let want = id_key(id);
        let key = |i: usize| self.token(i).and_then(|r| r.first_chunk::<12>()).map(id_key);
        let (mut base, mut len) = (0usize, self.token_count);
        if len == 0 {
            return false;
        }
        while len > 1 {
            let half = len / 2;
            let Some(k) = key(base + half) else {
                return false;
            };
            base = if k <= want { base + half } else { base };
            len -= half;
        }
        key(base) == Some(want)
    }

    #[inline]
    fn hash_at(&self, i: usize) -> Option<u64> {
        le_u64(self.index, i.checked_mul(INDEX_LEN)?)
    }

    fn watermark_at(&self, i: usize) -> Option<WatermarkRef<'a>> {
        let off = le_u32(self.index, i.checked_mul(INDEX_LEN)? + 8)? as usize;
        let rec = self.blob.get(off..)?;
        let kind = ScopeKind::from_code(*rec.first()?)?;
        let len = usize::from(*rec.get(1)?);
        let id = rec.get(2..2 + len)?;
        let through = le_u32(rec, 2 + len)?;
        Some(WatermarkRef { kind, id, through })
    }

    fn kind_range(&self, kind: ScopeKind) -> (usize, usize) {
        let k = usize::from(kind.code());
        let start: usize = self.counts[..k].iter().map(|&c| c as usize).sum();
        (start, start + self.counts[k] as usize)
    }

    /// The watermark of scope (`kind`, `id`), if any.
    #[inline]
    pub(crate) fn watermark(&self, kind: ScopeKind, id: &[u8]) -> Option<u32> {
        let (start, end) = self.kind_range(kind);
        let h = scope_hash(id);
        // Lower bound of `h`, then the (almost always single) entries with that hash.
        let (mut lo, mut hi) = (start, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.hash_at(mid)? < h {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        while lo < end && self.hash_at(lo)? == h {
            let w = self.watermark_at(lo)?;
            if w.id == id {
                return Some(w.through);
            }
            lo += 1;
        }
        None
    }

    /// The first watermark covering the subject, if any (same-second rule: `iat <= through`).
    #[inline]
    pub(crate) fn check_watermarks(&self, s: &Subject<'_>) -> Revoked {
        if self.counts.iter().all(|&c| c == 0) {
            return Revoked::No;
        }
        let key_id = s.key_id.to_be_bytes();
        let scopes: [(ScopeKind, Option<&[u8]>); SCOPE_KINDS] = [
            (ScopeKind::Global, Some(&[])),
            (ScopeKind::Share, s.share),
            (ScopeKind::Viewer, s.viewer),
            (ScopeKind::Session, s.session),
            (ScopeKind::Asset, s.asset),
            (ScopeKind::Campaign, s.campaign),
            (ScopeKind::KeyId, Some(&key_id)),
        ];
        for (kind, id) in scopes {
            if let Some(id) = id
                && self.counts[usize::from(kind.code())] != 0
                && self.watermark(kind, id).is_some_and(|t| s.iat <= t)
            {
                return Revoked::Watermark(kind);
            }
        }
        Revoked::No
    }

    /// All token records, in id order.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = RevokedToken> + 'a {
        self.tokens.chunks_exact(TOKEN_LEN).map(|r| {
            let mut id = [0u8; 12];
            id.copy_from_slice(&r[..12]);
            RevokedToken {
                id,
                iat: le_u32(r, 12).unwrap_or(0),
                exp: le_u32(r, 16).unwrap_or(0),
            }
        })
    }

    /// All watermarks, in (kind, id hash) order; stops at the first malformed record.
    pub(crate) fn watermarks(&self) -> impl Iterator<Item = WatermarkRef<'a>> + 'a {
        let this = *self;
        (0..self.watermark_count()).map_while(move |i| this.watermark_at(i))
    }

    /// Walks every entry: tokens strictly increasing; watermark records contiguous, of the kind
    /// their position says, indexed by their true hash, strictly increasing by (hash, id) within
    /// a kind, and filling the blob exactly.
    pub(crate) fn validate(&self) -> Result<(), StateError> {
        let mut prev: Option<&[u8]> = None;
        for rec in self.tokens.chunks_exact(TOKEN_LEN) {
            let id = &rec[..12];
            if prev.is_some_and(|p| p >= id) {
                return Err(StateError::Malformed);
            }
            prev = Some(id);
        }
        let mut end = 0usize;
        let mut i = 0usize;
        for kind in ScopeKind::ALL {
            let mut prev: Option<(u64, &[u8])> = None;
            for _ in 0..self.counts[usize::from(kind.code())] {
                if le_u32(self.index, i * INDEX_LEN + 8).map(|o| o as usize) != Some(end) {
                    return Err(StateError::Malformed);
                }
                let w = self.watermark_at(i).ok_or(StateError::Malformed)?;
                let h = self.hash_at(i).ok_or(StateError::Malformed)?;
                if w.kind != kind || h != scope_hash(w.id) || prev.is_some_and(|p| p >= (h, w.id)) {
                    return Err(StateError::Malformed);
                }
                prev = Some((h, w.id));
                end += WM_OVERHEAD + w.id.len();
                i += 1;
            }
        }
        if end != self.blob.len() {
            return Err(StateError::Malformed);
        }
        Ok(())
    }
}

/// Encodes deduplicated tables (tokens sorted by id): returns the header fields and the body.
pub(crate) fn encode(tokens: &[RevokedToken], watermarks: &[Watermark]) -> Option<([u8; HEADER_LEN], Vec<u8>)> {
    let mut order: Vec<(ScopeKind, u64, &[u8], u32)> = watermarks
        .iter()
        .map(|w| (w.kind, scope_hash(&w.id), &w.id[..], w.through))
        .collect();
    order.sort_unstable();
    let mut header = [0u8; HEADER_LEN];
    header[0..4].copy_from_slice(&u32::try_from(tokens.len()).ok()?.to_le_bytes());
    let mut counts = [0u32; SCOPE_KINDS];
    let mut blob = Vec::new();
    let mut index = Vec::with_capacity(order.len() * INDEX_LEN);
    for (kind, hash, id, through) in order {
        let len = u8::try_from(id.len()).ok()?;
        let k = usize::from(kind.code());
        counts[k] = counts[k].checked_add(1)?;
        index.extend_from_slice(&hash.to_le_bytes());
        index.extend_from_slice(&u32::try_from(blob.len()).ok()?.to_le_bytes());
        blob.push(kind.code());
        blob.push(len);
        blob.extend_from_slice(id);
        blob.extend_from_slice(&through.to_le_bytes());
    }
    for (k, c) in counts.iter().enumerate() {
        header[4 + 4 * k..8 + 4 * k].copy_from_slice(&c.to_le_bytes());
    }
    let blob_len = u32::try_from(blob.len()).ok()?;
    header[4 + 4 * SCOPE_KINDS..].copy_from_slice(&blob_len.to_le_bytes());
    let mut body = Vec::with_capacity(tokens.len() * TOKEN_LEN + index.len() + blob.len());
    for t in tokens {
        body.extend_from_slice(&t.id);
        body.extend_from_slice(&t.iat.to_le_bytes());
        body.extend_from_slice(&t.exp.to_le_bytes());
    }
    body.extend_from_slice(&index);
    body.extend_from_slice(&blob);
    Some((header, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash is part of the wire format (the index is sorted by it): the register-built last word must equal the
    /// zero-padded little-endian word of the format, at every length.
    #[test]
    fn scope_hash_is_the_padded_word_hash_at_every_length() {
        let reference = |id: &[u8]| {
            let mut h = 0x243F_6A88_85A3_08D3 ^ id.len() as u64;
            for c in id.chunks(8) {
                let mut w = [0u8; 8];
                w[..c.len()].copy_from_slice(c);
                h = mix64(h ^ u64::from_le_bytes(w));
            }
            h
        };
        let bytes: Vec<u8> = (0u8..=255).map(|i| i.wrapping_mul(151).wrapping_add(7)).collect();
        for len in 0..=40 {
            for start in [0, 3, 200] {
                let id = &bytes[start..start + len];
                assert_eq!(scope_hash(id), reference(id), "len {len} start {start}");
            }
        }
    }
}
