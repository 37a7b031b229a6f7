//! Builders, for the control plane: full snapshots, deltas, and folding deltas into a snapshot.
//!
//! Everything is deterministic: the same inputs give the same bytes (filter seeds derive from the
//! generation), and `now` comes in as a parameter. Inputs need not be sorted or deduplicated.

use super::fuse::{self, Fuse, FuseParams, Values};
use super::tables::{self, WatermarkRef};
use super::view::{
    DELTA_HEADER_LEN, DELTA_MAGIC, DeltaView, SNAPSHOT_HEADER_LEN, SNAPSHOT_MAGIC, StateSet, StateView, VERSION, delta,
    snap,
};
use super::{ScopeKind, StateKey, TAG_LEN};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// A token the control plane minted and recorded (the builder's issued set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IssuedToken {
    /// The token id.
    pub id: [u8; 12],
    /// Issued-at, unix seconds.
    pub iat: u32,
    /// Expiry, unix seconds.
    pub exp: u32,
}

/// A token revoked by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RevokedToken {
    /// The token id.
    pub id: [u8; 12],
    /// Its issued-at: decides whether it goes to the static levels or the exact list.
    pub iat: u32,
    /// Its expiry: once passed, the entry is dropped at the next build or apply.
    pub exp: u32,
}

/// A per-scope watermark: tokens of the scope with `iat <= through` are revoked.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Watermark {
    /// The scope kind.
    pub kind: ScopeKind,
    /// The scope id's exact bytes, at most 255 (empty for [`ScopeKind::Global`]; the key id's two
    /// big-endian bytes for [`ScopeKind::KeyId`], see [`Watermark::key_id`]).
    pub id: Vec<u8>,
    /// Inclusive: a token issued in this very second is revoked too.
    pub through: u32,
}

impl Watermark {
    /// A watermark for scope (`kind`, `id`).
    pub fn new(kind: ScopeKind, id: &[u8], through: u32) -> Self {
        Watermark {
            kind,
            id: id.to_vec(),
            through,
        }
    }

    /// A watermark for every token signed with `key_id`.
    pub fn key_id(key_id: u16, through: u32) -> Self {
        Self::new(ScopeKind::KeyId, &key_id.to_be_bytes(), through)
    }

    /// A watermark for every token.
    pub fn global(through: u32) -> Self {
        Self::new(ScopeKind::Global, &[], through)
    }
}

impl From<WatermarkRef<'_>> for Watermark {
    fn from(w: WatermarkRef<'_>) -> Self {
        Watermark::new(w.kind, w.id, w.through)
    }
}

/// Parameters of a full snapshot build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotParams {
    /// Generation number; must exceed every generation published before.
    pub generation: u64,
    /// Build time, unix seconds (recorded, not interpreted).
    pub built_at: u32,
    /// Tokens with `iat < cutoff` are answered by the static levels, so the issued set must hold
    /// every unexpired token minted before it.
    pub cutoff: u32,
    /// Entries of tokens with `exp <= expire_before` are dropped. Pass `now` minus the edges'
    /// clock-skew allowance, so that no edge still accepts a token whose entry was dropped.
    pub expire_before: u32,
    /// The longest lifetime any token may have: a watermark `T` is dropped once
    /// `T + max_token_lifetime <= expire_before`, when every token it covers has expired.
    pub max_token_lifetime: u32,
}

/// Parameters of a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaParams {
    /// The generation this delta applies on top of.
    pub base_generation: u64,
    /// The generation after it; must be greater than the base.
    pub generation: u64,
    /// Build time, unix seconds.
    pub built_at: u32,
}

/// Parameters of folding deltas into a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApplyParams {
    /// Build time, unix seconds.
    pub built_at: u32,
    /// Exact entries of tokens with `exp <= expire_before` are dropped (see [`SnapshotParams`]).
    pub expire_before: u32,
}

/// Why a state could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// A watermark's scope id is longer than 255 bytes.
    ScopeIdTooLong,
    /// More entries than the format's 32-bit counts and offsets can hold.
    TooLarge,
    /// The static levels could not be built (no seed worked; not expected with distinct ids).
    Construction,
    /// A delta's generation is not greater than its base.
    BadGeneration,
    /// The deltas do not continue the snapshot's generation.
    BrokenChain,
}

impl BuildError {
    /// Stable snake_case reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildError::ScopeIdTooLong => "scope_id_too_long",
            BuildError::TooLarge => "too_large",
            BuildError::Construction => "construction_failed",
            BuildError::BadGeneration => "bad_generation",
            BuildError::BrokenChain => "broken_chain",
        }
    }
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for BuildError {}

/// Sorts by id and merges duplicates, keeping the widest window (earliest iat, latest exp).
pub(crate) fn normalize_tokens(tokens: impl Iterator<Item = RevokedToken>) -> Vec<RevokedToken> {
    let mut v: Vec<RevokedToken> = tokens.collect();
    v.sort_unstable_by_key(|t| t.id);
    v.dedup_by(|later, kept| {
        if later.id != kept.id {
            return false;
        }
        kept.iat = kept.iat.min(later.iat);
        kept.exp = kept.exp.max(later.exp);
        true
    });
    v
}

/// Sorts by (kind, id) and merges duplicates, keeping the latest `through`.
pub(crate) fn normalize_watermarks(watermarks: impl Iterator<Item = Watermark>) -> Result<Vec<Watermark>, BuildError> {
    let mut v: Vec<Watermark> = watermarks.collect();
    if v.iter().any(|w| w.id.len() > usize::from(u8::MAX)) {
        return Err(BuildError::ScopeIdTooLong);
    }
    v.sort_unstable_by(|a, b| (a.kind, &a.id).cmp(&(b.kind, &b.id)));
    v.dedup_by(|later, kept| {
        if later.kind != kept.kind || later.id != kept.id {
            return false;
        }
        kept.through = kept.through.max(later.through);
        true
    });
    Ok(v)
}

/// A watermark still covers some unexpired token.
fn watermark_live(through: u32, max_token_lifetime: u32, expire_before: u32) -> bool {
    u64::from(through) + u64::from(max_token_lifetime) > u64::from(expire_before)
}

/// Seed of a level, from the generation: deterministic, and different for every state.
fn seed_base(generation: u64, level: u64) -> u64 {
    fuse::mix64(generation ^ (level << 56) ^ 0x5347_5253_5345_4544)
}

/// The first level's fingerprint width that minimises the estimated size of both levels.
///
/// Level one costs about `cells(r) * w` bits and lets `s / 2^w` of the `s` non-revoked ids through;
/// level two costs `cells(r + s / 2^w)` bits. For 100k revoked among 10M this picks 6 bits.
fn choose_width(revoked: usize, others: usize) -> u8 {
    let mut best = (u64::MAX, 1u8);
    for w in 1..=16u8 {
        let passed = others >> w;
        let level2 = if passed == 0 {
            0
        } else {
            fuse::estimated_cells(revoked + passed)
        };
        let cost = fuse::estimated_cells(revoked) * u64::from(w) + level2;
        if cost < best.0 {
            best = (cost, w);
        }
    }
    best.1
}

/// The snapshot header fields other than the tables'.
struct SnapshotHeader {
    generation: u64,
    built_at: u32,
    cutoff: u32,
    expire_before: u32,
    max_token_lifetime: u32,
    issued: u32,
    level1: FuseParams,
    level2: FuseParams,
}

fn encode_snapshot(
    h: &SnapshotHeader,
    level_cells: &[&[u8]],
    tokens: &[RevokedToken],
    watermarks: &[Watermark],
    key: &StateKey,
) -> Result<Vec<u8>, BuildError> {
    let (tables_header, tables_body) = tables::encode(tokens, watermarks).ok_or(BuildError::TooLarge)?;
    let cells_len: usize = level_cells.iter().map(|c| c.len()).sum();
    let mut header = [0u8; SNAPSHOT_HEADER_LEN];
    header[0..4].copy_from_slice(SNAPSHOT_MAGIC);
    header[4..6].copy_from_slice(&VERSION.to_le_bytes());
    header[6..8].copy_from_slice(&(SNAPSHOT_HEADER_LEN as u16).to_le_bytes());
    header[snap::GENERATION..snap::GENERATION + 8].copy_from_slice(&h.generation.to_le_bytes());
    for (at, v) in [
        (snap::BUILT_AT, h.built_at),
        (snap::CUTOFF, h.cutoff),
        (snap::EXPIRE_BEFORE, h.expire_before),
        (snap::MAX_LIFETIME, h.max_token_lifetime),
        (snap::ISSUED, h.issued),
    ] {
        header[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    header[snap::LEVEL1..snap::LEVEL2].copy_from_slice(&h.level1.encode());
    header[snap::LEVEL2..snap::TABLES].copy_from_slice(&h.level2.encode());
    header[snap::TABLES..snap::ISSUED].copy_from_slice(&tables_header);
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_LEN + cells_len + tables_body.len() + TAG_LEN);
    out.extend_from_slice(&header);
    for c in level_cells {
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&tables_body);
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Builds a full snapshot.
///
/// `issued` must yield every token minted and recorded before `params.cutoff` that has not
/// expired (more is fine: others are skipped); it is walked twice, hence `Clone`. `revoked` holds
/// every revocation by id still in force, `watermarks` every watermark. Revoked ids with
/// `iat < cutoff` go into the static levels, the others into the exact list.
///
/// Contract: a token with `iat < cutoff` missing from `issued` was never shown to the levels, so
/// the reader's answer for it is not guaranteed: it is denied with probability about
/// `2^-(w+1)` (`w` the first level's width, 1/128 at 100k/10M), and never wrongly accepted if it
/// was revoked, since revoked ids are always in the levels.
pub fn build_snapshot<I>(
    params: &SnapshotParams,
    issued: I,
    revoked: &[RevokedToken],
    watermarks: &[Watermark],
    key: &StateKey,
) -> Result<Vec<u8>, BuildError>
where
    I: IntoIterator<Item = IssuedToken>,
    I::IntoIter: Clone,
{
    let live = |exp: u32| exp > params.expire_before;
    let mut in_levels: Vec<[u8; 12]> = revoked
        .iter()
        .filter(|t| live(t.exp) && t.iat < params.cutoff)
        .map(|t| t.id)
        .collect();
    in_levels.sort_unstable();
    in_levels.dedup();
    if u32::try_from(in_levels.len()).is_err() {
        return Err(BuildError::TooLarge);
    }
    let exact = normalize_tokens(
        revoked
            .iter()
            .filter(|t| live(t.exp) && t.iat >= params.cutoff)
            .copied(),
    );
    let watermarks = normalize_watermarks(
        watermarks
            .iter()
            .filter(|w| watermark_live(w.through, params.max_token_lifetime, params.expire_before))
            .cloned(),
    )?;

    let issued = issued.into_iter();
    let eligible = |t: &IssuedToken| t.iat < params.cutoff && live(t.exp);
    let issued_count = issued.clone().filter(eligible).count();
    let width = choose_width(in_levels.len(), issued_count.saturating_sub(in_levels.len()));
    let (p1, cells1) = fuse::build(&in_levels, &Values::Fingerprint, width, seed_base(params.generation, 1))
        .ok_or(BuildError::Construction)?;

    // The issued ids the first level wrongly lets through: the second level must say "no" for them.
    let level1 = Fuse::new(p1, &cells1);
    let mut passed: Vec<[u8; 12]> = Vec::new();
    if !level1.is_empty() {
        for t in issued {
            if eligible(&t) && level1.contains(&t.id) && in_levels.binary_search(&t.id).is_err() {
                passed.push(t.id);
            }
        }
    }
    passed.sort_unstable();
    passed.dedup();
    let (p2, cells2) = if passed.is_empty() {
        (FuseParams::default(), Vec::new())
    } else {
        let mut keys = in_levels.clone();
        keys.extend_from_slice(&passed);
        let mut bits = vec![true; in_levels.len()];
        bits.resize(keys.len(), false);
        fuse::build(&keys, &Values::Bits(&bits), 1, seed_base(params.generation, 2)).ok_or(BuildError::Construction)?
    };

    let header = SnapshotHeader {
        generation: params.generation,
        built_at: params.built_at,
        cutoff: params.cutoff,
        expire_before: params.expire_before,
        max_token_lifetime: params.max_token_lifetime,
        issued: u32::try_from(issued_count).unwrap_or(u32::MAX),
        level1: p1,
        level2: p2,
    };
    encode_snapshot(&header, &[&cells1, &cells2], &exact, &watermarks, key)
}

/// Builds a delta: revocations and watermarks made since `params.base_generation`.
pub fn build_delta(
    params: &DeltaParams,
    revoked: &[RevokedToken],
    watermarks: &[Watermark],
    key: &StateKey,
) -> Result<Vec<u8>, BuildError> {
    if params.generation <= params.base_generation {
        return Err(BuildError::BadGeneration);
    }
    let tokens = normalize_tokens(revoked.iter().copied());
    let watermarks = normalize_watermarks(watermarks.iter().cloned())?;
    let (tables_header, tables_body) = tables::encode(&tokens, &watermarks).ok_or(BuildError::TooLarge)?;
    let mut out = Vec::with_capacity(DELTA_HEADER_LEN + tables_body.len() + TAG_LEN);
    out.extend_from_slice(DELTA_MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(DELTA_HEADER_LEN as u16).to_le_bytes());
    out.extend_from_slice(&params.base_generation.to_le_bytes());
    out.extend_from_slice(&params.generation.to_le_bytes());
    out.extend_from_slice(&params.built_at.to_le_bytes());
    debug_assert_eq!(out.len(), delta::TABLES);
    out.extend_from_slice(&tables_header);
    out.extend_from_slice(&tables_body);
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Folds a chain of deltas into a snapshot without rebuilding its static levels.
///
/// The levels are copied byte for byte; the deltas' tokens and watermarks join the snapshot's
/// exact tables, and exact entries that have expired are dropped (entries in the levels stay until
/// the next [`build_snapshot`]). The result carries the last delta's generation, under `key`.
pub fn apply_deltas(
    snapshot: &StateView<'_>,
    deltas: &[DeltaView<'_>],
    params: &ApplyParams,
    key: &StateKey,
) -> Result<Vec<u8>, BuildError> {
    let set = StateSet::new(*snapshot, deltas).map_err(|_| BuildError::BrokenChain)?;
    let live = |exp: u32| exp > params.expire_before;
    let tokens = normalize_tokens(
        snapshot
            .tables()
            .tokens()
            .chain(deltas.iter().flat_map(|d| d.tables().tokens()))
            .filter(|t| live(t.exp)),
    );
    let lifetime = snapshot.max_token_lifetime();
    let watermarks = normalize_watermarks(
        snapshot
            .tables()
            .watermarks()
            .chain(deltas.iter().flat_map(|d| d.tables().watermarks()))
            .filter(|w| watermark_live(w.through, lifetime, params.expire_before))
            .map(Watermark::from),
    )?;
    let (level1, level2, cells) = snapshot.level_bytes();
    let header = SnapshotHeader {
        generation: set.generation(),
        built_at: params.built_at,
        cutoff: snapshot.cutoff(),
        expire_before: snapshot.expire_before(),
        max_token_lifetime: lifetime,
        issued: snapshot.stats().issued,
        level1,
        level2,
    };
    encode_snapshot(&header, &[cells], &tokens, &watermarks, key)
}
