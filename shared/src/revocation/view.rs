//! Readers: a snapshot, a delta and a snapshot with its chain of deltas, all read in place.
//!
//! Opening checks the magic, version, header fields and that the sections exactly fill the bytes,
//! in constant time, and copies nothing: a Fastly instance that starts fresh per request pays a
//! few dozen nanoseconds, not a parse. The MAC over the whole state costs time linear in its size,
//! so it is a separate step ([`StateView::open_verified`], [`StateView::verify_mac`]) that an
//! adapter runs once when the state arrives, before caching it.

use super::build::RevokedToken;
use super::fuse::{Fuse, FuseParams, PARAMS_LEN};
use super::tables::{self, Tables, WatermarkRef, le_u32, le_u64};
use super::{Revoked, StateError, StateKey, Subject, TAG_LEN};

pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"SGRS";
pub(crate) const DELTA_MAGIC: &[u8; 4] = b"SGRD";
pub(crate) const VERSION: u16 = 1;
pub(crate) const SNAPSHOT_HEADER_LEN: usize = 128;
pub(crate) const DELTA_HEADER_LEN: usize = 64;

/// Offsets of the snapshot header fields (see docs/revocation.md).
pub(crate) mod snap {
    pub const GENERATION: usize = 8;
    pub const BUILT_AT: usize = 16;
    pub const CUTOFF: usize = 20;
    pub const EXPIRE_BEFORE: usize = 24;
    pub const MAX_LIFETIME: usize = 28;
    pub const LEVEL1: usize = 32;
    pub const LEVEL2: usize = 56;
    pub const TABLES: usize = 80;
    pub const ISSUED: usize = 116;
    pub const RESERVED: usize = 120;
}

// The header fields tile the header exactly.
const _: () = {
    assert!(snap::LEVEL1 + PARAMS_LEN == snap::LEVEL2);
    assert!(snap::LEVEL2 + PARAMS_LEN == snap::TABLES);
    assert!(snap::TABLES + tables::HEADER_LEN == snap::ISSUED);
    assert!(delta::TABLES + tables::HEADER_LEN == DELTA_HEADER_LEN);
};

/// Offsets of the delta header fields.
pub(crate) mod delta {
    pub const BASE: usize = 8;
    pub const GENERATION: usize = 16;
    pub const BUILT_AT: usize = 24;
    pub const TABLES: usize = 28;
}

/// Checks magic, version and declared header length; returns the fixed header.
fn check_header<'a, const N: usize>(bytes: &'a [u8], magic: &[u8; 4]) -> Result<&'a [u8; N], StateError> {
    let prefix = bytes.len().min(4);
    if bytes[..prefix] != magic[..prefix] {
        return Err(StateError::BadMagic);
    }
    let version = bytes
        .get(4..6)
        .ok_or(StateError::Truncated)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))?;
    if version != VERSION {
        return Err(StateError::UnsupportedVersion);
    }
    let header_len = bytes
        .get(6..8)
        .ok_or(StateError::Truncated)
        .map(|v| u16::from_le_bytes([v[0], v[1]]))?;
    if usize::from(header_len) != N {
        return Err(StateError::Malformed);
    }
    bytes.first_chunk::<N>().ok_or(StateError::Truncated)
}

/// Splits off the tag and checks that nothing is left over between the sections and it.
fn finish(rest: &[u8]) -> Result<(), StateError> {
    match rest.len().cmp(&TAG_LEN) {
        core::cmp::Ordering::Less => Err(StateError::Truncated),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(StateError::Malformed),
    }
}

fn sub<const N: usize>(h: &[u8], at: usize) -> Result<&[u8; N], StateError> {
    h.get(at..)
        .and_then(|s| s.first_chunk::<N>())
        .ok_or(StateError::Malformed)
}

/// A full snapshot, read in place.
#[derive(Clone, Copy, Debug)]
pub struct StateView<'a> {
    bytes: &'a [u8],
    generation: u64,
    built_at: u32,
    cutoff: u32,
    expire_before: u32,
    max_token_lifetime: u32,
    issued: u32,
    level1: Fuse<'a>,
    level2: Fuse<'a>,
    tables: Tables<'a>,
}

/// Sizes of a snapshot's parts, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Whole encoding, header and tag included.
    pub total_bytes: usize,
    /// Issued, unexpired ids before the cut-off that the builder was given.
    pub issued: u32,
    /// Revoked ids in the static levels (keys of the first level).
    pub revoked_in_levels: u32,
    /// Bytes of the first level (fingerprint filter over the revoked ids).
    pub level1_bytes: usize,
    /// Fingerprint width of the first level, in bits.
    pub level1_width: u8,
    /// Keys of the second level (revoked ids plus the first level's false positives).
    pub level2_keys: u32,
    /// Bytes of the second level (one-bit retrieval array).
    pub level2_bytes: usize,
    /// Records in the exact token list.
    pub exact_tokens: usize,
    /// Watermarks.
    pub watermarks: usize,
}

impl<'a> StateView<'a> {
    /// Opens a snapshot without checking its MAC: O(1), no copy, no allocation.
    ///
    /// Use it only on bytes whose MAC was verified when they arrived (see
    /// [`StateView::open_verified`]). On unverified bytes it still never panics, but the answers
    /// are only as good as the bytes.
    pub fn open(bytes: &'a [u8]) -> Result<Self, StateError> {
        let h = check_header::<SNAPSHOT_HEADER_LEN>(bytes, SNAPSHOT_MAGIC)?;
        if h[snap::RESERVED..].iter().any(|&b| b != 0) {
            return Err(StateError::Malformed);
        }
        let field = |at| le_u32(h, at).ok_or(StateError::Malformed);
        let p1 = FuseParams::decode(sub(h, snap::LEVEL1)?).ok_or(StateError::Malformed)?;
        let p2 = FuseParams::decode(sub(h, snap::LEVEL2)?).ok_or(StateError::Malformed)?;
        let body = &bytes[SNAPSHOT_HEADER_LEN..];
        let len1 = p1.byte_len().ok_or(StateError::Malformed)?;
        let len2 = p2.byte_len().ok_or(StateError::Malformed)?;
        let (cells1, body) = body.split_at_checked(len1).ok_or(StateError::Truncated)?;
        let (cells2, body) = body.split_at_checked(len2).ok_or(StateError::Truncated)?;
        let (tables, rest) = Tables::split(sub(h, snap::TABLES)?, body)?;
        finish(rest)?;
        Ok(StateView {
            bytes,
            generation: le_u64(h, snap::GENERATION).ok_or(StateError::Malformed)?,
            built_at: field(snap::BUILT_AT)?,
            cutoff: field(snap::CUTOFF)?,
            expire_before: field(snap::EXPIRE_BEFORE)?,
            max_token_lifetime: field(snap::MAX_LIFETIME)?,
            issued: field(snap::ISSUED)?,
            level1: Fuse::new(p1, cells1),
            level2: Fuse::new(p2, cells2),
            tables,
        })
    }

    /// Opens a snapshot that arrived from elsewhere: structure, MAC, every table entry, and
    /// `generation >= min_generation` (so an older state cannot be replayed).
    pub fn open_verified(bytes: &'a [u8], key: &StateKey, min_generation: u64) -> Result<Self, StateError> {
        let view = Self::open(bytes)?;
        view.verify_mac(key)?;
        view.tables.validate()?;
        if view.generation < min_generation {
            return Err(StateError::StaleGeneration);
        }
        Ok(view)
    }

    /// Checks the MAC (time linear in the size: run it once per received state).
    pub fn verify_mac(&self, key: &StateKey) -> Result<(), StateError> {
        key.verify(self.bytes)
    }

    /// Is this token revoked? Exact for every token the builder was told about; no allocation.
    #[inline]
    pub fn is_revoked(&self, s: &Subject<'_>) -> Revoked {
        if self.token_revoked(s) {
            return Revoked::Token;
        }
        self.tables.check_watermarks(s)
    }

    /// Revoked by id (the static levels for tokens before the cut-off, then the exact list).
    #[inline]
    pub(crate) fn token_revoked(&self, s: &Subject<'_>) -> bool {
        // First level: no false negatives, so a miss is a definite "not revoked". A hit is settled
        // by the second level, which stores the exact answer for every revoked id and every
        // issued id the first level lets through; an empty second level means no issued id got
        // through, so every hit is revoked.
        let in_levels = s.iat < self.cutoff
            && self.level1.contains(s.token_id)
            && (self.level2.is_empty() || self.level2.retrieve(s.token_id));
        in_levels || self.tables.contains_token(s.token_id)
    }

    pub(crate) fn tables(&self) -> &Tables<'a> {
        &self.tables
    }

    pub(crate) fn level_bytes(&self) -> (FuseParams, FuseParams, &'a [u8]) {
        let len = self.level1_len() + self.level2_len();
        let cells = self
            .bytes
            .get(SNAPSHOT_HEADER_LEN..SNAPSHOT_HEADER_LEN + len)
            .unwrap_or(&[]);
        (self.level1.params, self.level2.params, cells)
    }

    fn level1_len(&self) -> usize {
        self.level1.params.byte_len().unwrap_or(0)
    }

    fn level2_len(&self) -> usize {
        self.level2.params.byte_len().unwrap_or(0)
    }

    /// The generation number; strictly increasing across published states.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the snapshot was built (unix seconds, as told by the builder).
    pub fn built_at(&self) -> u32 {
        self.built_at
    }

    /// Tokens with `iat < cutoff` are answered by the static levels.
    pub fn cutoff(&self) -> u32 {
        self.cutoff
    }

    /// Entries of tokens with `exp <= expire_before` were dropped at build.
    pub fn expire_before(&self) -> u32 {
        self.expire_before
    }

    /// The longest token lifetime the builder assumed when dropping old watermarks.
    pub fn max_token_lifetime(&self) -> u32 {
        self.max_token_lifetime
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The exact token records (revoked at or after the cut-off, or folded in from deltas).
    pub fn tokens(&self) -> impl Iterator<Item = RevokedToken> + 'a {
        self.tables.tokens()
    }

    /// The watermarks, in (kind, id) order.
    pub fn watermarks(&self) -> impl Iterator<Item = WatermarkRef<'a>> + 'a {
        self.tables.watermarks()
    }

    /// Sizes of the parts, for size reports.
    pub fn stats(&self) -> SnapshotStats {
        SnapshotStats {
            total_bytes: self.bytes.len(),
            issued: self.issued,
            revoked_in_levels: self.level1.params.key_count,
            level1_bytes: self.level1_len(),
            level1_width: self.level1.params.width,
            level2_keys: self.level2.params.key_count,
            level2_bytes: self.level2_len(),
            exact_tokens: self.tables.token_count(),
            watermarks: self.tables.watermark_count(),
        }
    }
}

/// A delta: exact revocations made since a base generation, read in place.
#[derive(Clone, Copy, Debug)]
pub struct DeltaView<'a> {
    bytes: &'a [u8],
    base_generation: u64,
    generation: u64,
    built_at: u32,
    tables: Tables<'a>,
}

impl<'a> DeltaView<'a> {
    /// Opens a delta without checking its MAC: O(1), no copy (see [`StateView::open`]).
    pub fn open(bytes: &'a [u8]) -> Result<Self, StateError> {
        let h = check_header::<DELTA_HEADER_LEN>(bytes, DELTA_MAGIC)?;
        let base_generation = le_u64(h, delta::BASE).ok_or(StateError::Malformed)?;
        let generation = le_u64(h, delta::GENERATION).ok_or(StateError::Malformed)?;
        if generation <= base_generation {
            return Err(StateError::Malformed);
        }
        let (tables, rest) = Tables::split(sub(h, delta::TABLES)?, &bytes[DELTA_HEADER_LEN..])?;
        finish(rest)?;
        Ok(DeltaView {
            bytes,
            base_generation,
            generation,
            built_at: le_u32(h, delta::BUILT_AT).ok_or(StateError::Malformed)?,
            tables,
        })
    }

    /// Opens a delta that arrived from elsewhere: structure, MAC and every table entry. Whether
    /// it continues the state the edge holds is checked by [`StateSet::new`].
    pub fn open_verified(bytes: &'a [u8], key: &StateKey) -> Result<Self, StateError> {
        let view = Self::open(bytes)?;
        view.verify_mac(key)?;
        view.tables.validate()?;
        Ok(view)
    }

    /// Checks the MAC.
    pub fn verify_mac(&self, key: &StateKey) -> Result<(), StateError> {
        key.verify(self.bytes)
    }

    /// Revoked by this delta alone?
    #[inline]
    pub fn is_revoked(&self, s: &Subject<'_>) -> Revoked {
        if self.tables.contains_token(s.token_id) {
            return Revoked::Token;
        }
        self.tables.check_watermarks(s)
    }

    /// The generation this delta applies on top of.
    pub fn base_generation(&self) -> u64 {
        self.base_generation
    }

    /// The generation after this delta.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the delta was built.
    pub fn built_at(&self) -> u32 {
        self.built_at
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The revoked tokens, in id order.
    pub fn tokens(&self) -> impl Iterator<Item = RevokedToken> + 'a {
        self.tables.tokens()
    }

    /// The watermarks, in (kind, id) order.
    pub fn watermarks(&self) -> impl Iterator<Item = WatermarkRef<'a>> + 'a {
        self.tables.watermarks()
    }

    pub(crate) fn tables(&self) -> &Tables<'a> {
        &self.tables
    }
}

/// A snapshot and the deltas published after it, checked to form one chain of generations.
#[derive(Clone, Copy, Debug)]
pub struct StateSet<'a> {
    snapshot: StateView<'a>,
    deltas: &'a [DeltaView<'a>],
}

impl<'a> StateSet<'a> {
    /// Each delta's base must be the generation before it (the snapshot's for the first).
    pub fn new(snapshot: StateView<'a>, deltas: &'a [DeltaView<'a>]) -> Result<Self, StateError> {
        let mut generation = snapshot.generation();
        for d in deltas {
            if d.base_generation() != generation {
                return Err(StateError::BrokenChain);
            }
            generation = d.generation();
        }
        Ok(StateSet { snapshot, deltas })
    }

    /// The generation of the newest layer.
    pub fn generation(&self) -> u64 {
        self.deltas
            .last()
            .map_or(self.snapshot.generation(), |d| d.generation())
    }

    /// The snapshot.
    pub fn snapshot(&self) -> &StateView<'a> {
        &self.snapshot
    }

    /// The deltas, oldest first.
    pub fn deltas(&self) -> &'a [DeltaView<'a>] {
        self.deltas
    }

    /// Is this token revoked by the snapshot or any delta? Token revocations are reported before
    /// watermarks. No allocation.
    #[inline]
    pub fn is_revoked(&self, s: &Subject<'_>) -> Revoked {
        if self.snapshot.token_revoked(s) || self.deltas.iter().any(|d| d.tables.contains_token(s.token_id)) {
            return Revoked::Token;
        }
        let r = self.snapshot.tables.check_watermarks(s);
        if r.is_revoked() {
            return r;
        }
        for d in self.deltas {
            let r = d.tables.check_watermarks(s);
            if r.is_revoked() {
                return r;
            }
        }
        Revoked::No
    }
}
