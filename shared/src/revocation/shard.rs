//! The revocation state split by token-id prefix, for runtimes that start a fresh instance per request (Fastly):
//! a small signed **head** and one signed **shard** per prefix bucket, so that a request reads two small objects
//! whatever the number of revoked tokens.
//!
//! - The head (`SGRH`) carries the generation, the signed `as_of`, the number of prefix bits, every watermark (the
//!   same table as a snapshot's; watermarks are few), and for each bucket its **version**: the generation of the
//!   newest revocation by id in that bucket (0 if none). A revocation by id changes one bucket's version, so only
//!   that bucket's shard is new; every other shard object stays valid.
//! - A shard (`SGRB`) carries its bucket, its version, the generation it was built at, and the exact records (id,
//!   iat, exp) of the tokens revoked by id whose id falls in the bucket. No filter, no issued set: the answer is exact.
//!
//! A token is answered from the head and the shard of its bucket ([`Sharded::check`]) only if the shard is the
//! bucket's (same bits and index) and at least as new as the head says (`shard.version >= head.version(bucket)`):
//! a newer shard holds every revocation the older one did (records leave only once expired), so it is as exact for
//! that head; an older one may miss a revocation and is refused ([`ShardError::Outdated`]) — the caller must then
//! fetch the shard or decide without a state, never answer "not revoked". Both objects are MAC'd under the state
//! key; the head's signed `as_of` is the only time a state's age may be measured from, as for snapshots.
//!
//! Bucket of an id: its first `bits` bits (ids are random, so buckets fill evenly). The control plane picks `bits`
//! so that a shard holds a few dozen records ([`bits_for`]).

use super::build::{RevokedToken, Watermark};
use super::tables::{self, HEADER_LEN as TABLES_HEADER_LEN, TOKEN_LEN, Tables, le_u32, le_u64};
use super::{Revoked, StateError, StateKey, Subject, TAG_LEN};
use alloc::vec::Vec;

/// Magic of a head.
pub const HEAD_MAGIC: &[u8; 4] = b"SGRH";
/// Magic of a shard.
pub const SHARD_MAGIC: &[u8; 4] = b"SGRB";
const VERSION: u16 = 1;
/// Head header: magic, version, header length, generation u64, as_of u32, bits u8, 7 reserved, tables header.
pub const HEAD_HEADER_LEN: usize = 28 + TABLES_HEADER_LEN;
/// Shard header: magic, version, header length, version u64, generation u64, bits u8, 3 reserved, index u32.
pub const SHARD_HEADER_LEN: usize = 32;
/// Most prefix bits (65,536 buckets: 512 KiB of versions in the head).
pub const MAX_BITS: u8 = 16;
/// Records per shard the control plane aims for.
pub const TARGET_PER_SHARD: usize = 64;

/// Prefix bits for `revoked` records: the fewest that keep the average shard at most [`TARGET_PER_SHARD`] records,
/// at least 4 (16 buckets).
pub fn bits_for(revoked: usize) -> u8 {
    let mut bits = 4u8;
    while bits < MAX_BITS && (revoked >> bits) > TARGET_PER_SHARD {
        bits += 1;
    }
    bits
}

/// The bucket of `id` among `2^bits`.
#[inline]
pub fn bucket(id: &[u8; 12], bits: u8) -> u32 {
    if bits == 0 {
        return 0;
    }
    let top = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
    top >> (32 - u32::from(bits.min(32)))
}

/// Why a head or shard was refused, or could not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShardError {
    /// The bytes are not a valid head or shard (see [`StateError`]).
    State(StateError),
    /// The shard is not the one of this token's bucket under this head.
    WrongShard,
    /// The shard is older than the head says its bucket is: it may miss a revocation.
    Outdated,
}

impl ShardError {
    /// Stable snake_case reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardError::State(e) => e.as_str(),
            ShardError::WrongShard => "wrong_shard",
            ShardError::Outdated => "outdated_shard",
        }
    }
}

impl core::fmt::Display for ShardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<StateError> for ShardError {
    fn from(e: StateError) -> Self {
        ShardError::State(e)
    }
}

/// A revoked token with the generation that revoked it (the revocation log's sequence number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevokedAt {
    /// The record.
    pub token: RevokedToken,
    /// The generation whose revocation added it.
    pub generation: u64,
}

/// Parameters of a sharded build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardParams {
    /// The generation the head describes (every `RevokedAt::generation` is at most this).
    pub generation: u64,
    /// The signed as-of: read before the generation, as for snapshots.
    pub as_of: u32,
    /// Prefix bits (at most [`MAX_BITS`]).
    pub bits: u8,
    /// Records of tokens with `exp <= expire_before` are left out, as in a snapshot.
    pub expire_before: u32,
}

fn check_header<'a>(bytes: &'a [u8], magic: &[u8; 4], len: usize) -> Result<&'a [u8], StateError> {
    let prefix = bytes.len().min(4);
    if bytes[..prefix] != magic[..prefix] {
        return Err(StateError::BadMagic);
    }
    let field = |at: usize| {
        bytes
            .get(at..at + 2)
            .map(|v| u16::from_le_bytes([v[0], v[1]]))
            .ok_or(StateError::Truncated)
    };
    if field(4)? != VERSION {
        return Err(StateError::UnsupportedVersion);
    }
    if usize::from(field(6)?) != len {
        return Err(StateError::Malformed);
    }
    bytes.get(..len).ok_or(StateError::Truncated)
}

fn finish(rest: &[u8]) -> Result<(), StateError> {
    match rest.len().cmp(&TAG_LEN) {
        core::cmp::Ordering::Less => Err(StateError::Truncated),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(StateError::Malformed),
    }
}

/// A head, read in place.
#[derive(Clone, Copy, Debug)]
pub struct HeadView<'a> {
    bytes: &'a [u8],
    generation: u64,
    as_of: u32,
    bits: u8,
    tables: Tables<'a>,
    versions: &'a [u8],
}

impl<'a> HeadView<'a> {
    /// Opens a head without checking its MAC: O(1), no copy. Only for bytes verified when they arrived.
    pub fn open(bytes: &'a [u8]) -> Result<Self, StateError> {
        let h = check_header(bytes, HEAD_MAGIC, HEAD_HEADER_LEN)?;
        let bits = h[20];
        if bits > MAX_BITS || h[21..28].iter().any(|&b| b != 0) {
            return Err(StateError::Malformed);
        }
        let th: &[u8; TABLES_HEADER_LEN] = h[28..].try_into().map_err(|_| StateError::Malformed)?;
        let (tables, rest) = Tables::split(th, &bytes[HEAD_HEADER_LEN..])?;
        if tables.token_count() != 0 {
            return Err(StateError::Malformed);
        }
        let (versions, rest) = rest.split_at_checked(8 << bits).ok_or(StateError::Truncated)?;
        finish(rest)?;
        Ok(HeadView {
            bytes,
            generation: le_u64(h, 8).ok_or(StateError::Malformed)?,
            as_of: le_u32(h, 16).ok_or(StateError::Malformed)?,
            bits,
            tables,
            versions,
        })
    }

    /// Opens a head that arrived from elsewhere: structure, MAC and every table entry.
    pub fn open_verified(bytes: &'a [u8], key: &StateKey) -> Result<Self, StateError> {
        let view = Self::open(bytes)?;
        key.verify(bytes)?;
        view.tables.validate()?;
        Ok(view)
    }

    /// The generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The signed as-of (unix seconds).
    pub fn as_of(&self) -> u32 {
        self.as_of
    }

    /// Prefix bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The bucket of a token id.
    pub fn bucket_of(&self, id: &[u8; 12]) -> u32 {
        bucket(id, self.bits)
    }

    /// The version of bucket `i` (the generation of its newest revocation by id).
    pub fn version(&self, i: u32) -> Option<u64> {
        le_u64(self.versions, usize::try_from(i).ok()?.checked_mul(8)?)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The watermark answer for a subject (revocations by id are the shards').
    pub fn check_watermarks(&self, s: &Subject<'_>) -> Revoked {
        self.tables.check_watermarks(s)
    }
}

/// A shard, read in place.
#[derive(Clone, Copy, Debug)]
pub struct ShardView<'a> {
    bytes: &'a [u8],
    version: u64,
    generation: u64,
    bits: u8,
    index: u32,
    tokens: &'a [u8],
}

impl<'a> ShardView<'a> {
    /// Opens a shard without checking its MAC: O(1), no copy. Only for bytes verified when they arrived.
    pub fn open(bytes: &'a [u8]) -> Result<Self, StateError> {
        let h = check_header(bytes, SHARD_MAGIC, SHARD_HEADER_LEN)?;
        let bits = h[24];
        let index = le_u32(h, 28).ok_or(StateError::Malformed)?;
        if bits > MAX_BITS || h[25..28].iter().any(|&b| b != 0) || u64::from(index) >> bits != 0 {
            return Err(StateError::Malformed);
        }
        let body = bytes
            .get(SHARD_HEADER_LEN..bytes.len().saturating_sub(TAG_LEN))
            .unwrap_or(&[]);
        if bytes.len() < SHARD_HEADER_LEN + TAG_LEN {
            return Err(StateError::Truncated);
        }
        if body.len() % TOKEN_LEN != 0 {
            return Err(StateError::Malformed);
        }
        let version = le_u64(h, 8).ok_or(StateError::Malformed)?;
        let generation = le_u64(h, 16).ok_or(StateError::Malformed)?;
        if version > generation {
            return Err(StateError::Malformed);
        }
        Ok(ShardView {
            bytes,
            version,
            generation,
            bits,
            index,
            tokens: body,
        })
    }

    /// Opens a shard that arrived from elsewhere: structure, MAC, records sorted and each in this bucket.
    pub fn open_verified(bytes: &'a [u8], key: &StateKey) -> Result<Self, StateError> {
        let view = Self::open(bytes)?;
        key.verify(bytes)?;
        let mut prev: Option<&[u8]> = None;
        for rec in view.tokens.chunks_exact(TOKEN_LEN) {
            let id: &[u8; 12] = rec[..12].try_into().map_err(|_| StateError::Malformed)?;
            if prev.is_some_and(|p| p >= &id[..]) || bucket(id, view.bits) != view.index {
                return Err(StateError::Malformed);
            }
            prev = Some(&rec[..12]);
        }
        Ok(view)
    }

    /// The bucket's version this shard is at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The generation it was built at (at least its version).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Prefix bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The bucket.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Records in the shard.
    pub fn len(&self) -> usize {
        self.tokens.len() / TOKEN_LEN
    }

    /// No records.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Is this id revoked by id? (Binary search of the sorted records.)
    pub fn contains(&self, id: &[u8; 12]) -> bool {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let Some(rec) = self.tokens.get(mid * TOKEN_LEN..mid * TOKEN_LEN + 12) else {
                return false;
            };
            match rec.cmp(&id[..]) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return true,
            }
        }
        false
    }
}

/// The part of a head a request needs besides its bucket's version: generation, as-of, bits and the watermarks —
/// the head's bytes before the versions ([`HeadView::prefix_len`]), so a runtime can read them and the one version
/// it needs without reading every version.
#[derive(Clone, Copy, Debug)]
pub struct HeadPrefix<'a> {
    generation: u64,
    as_of: u32,
    bits: u8,
    tables: Tables<'a>,
}

impl<'a> HeadPrefix<'a> {
    /// Opens the first [`HeadView::prefix_len`] bytes of a head verified when it arrived (no MAC here: the MAC
    /// covers the whole head). The tables must fill the bytes exactly.
    pub fn open(bytes: &'a [u8]) -> Result<Self, StateError> {
        let h = check_header(bytes, HEAD_MAGIC, HEAD_HEADER_LEN)?;
        let bits = h[20];
        if bits > MAX_BITS || h[21..28].iter().any(|&b| b != 0) {
            return Err(StateError::Malformed);
        }
        let th: &[u8; TABLES_HEADER_LEN] = h[28..].try_into().map_err(|_| StateError::Malformed)?;
        let (tables, rest) = Tables::split(th, &bytes[HEAD_HEADER_LEN..])?;
        if tables.token_count() != 0 || !rest.is_empty() {
            return Err(StateError::Malformed);
        }
        Ok(HeadPrefix {
            generation: le_u64(h, 8).ok_or(StateError::Malformed)?,
            as_of: le_u32(h, 16).ok_or(StateError::Malformed)?,
            bits,
            tables,
        })
    }

    /// The generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The signed as-of (unix seconds).
    pub fn as_of(&self) -> u32 {
        self.as_of
    }

    /// Prefix bits.
    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The bucket of a token id.
    pub fn bucket_of(&self, id: &[u8; 12]) -> u32 {
        bucket(id, self.bits)
    }
}

impl<'a> HeadView<'a> {
    /// The head without its versions and tag.
    pub fn prefix(&self) -> HeadPrefix<'a> {
        HeadPrefix {
            generation: self.generation,
            as_of: self.as_of,
            bits: self.bits,
            tables: self.tables,
        }
    }

    /// Where the versions start: bucket `i`'s version is the u64 LE at `prefix_len() + 8 * i`.
    pub fn prefix_len(&self) -> usize {
        self.bytes.len() - TAG_LEN - self.versions.len()
    }
}

/// A head, its version of one token's bucket, and the shard the caller holds for that bucket: the exact answer
/// for that token.
#[derive(Clone, Copy, Debug)]
pub struct Sharded<'a> {
    /// The head.
    pub head: HeadPrefix<'a>,
    /// The head's version of the token's bucket.
    pub version: u64,
    /// The shard of the token's bucket, if the caller has one.
    pub shard: Option<ShardView<'a>>,
}

impl Sharded<'_> {
    /// Whether `shard` may answer for bucket `i` of a head with `bits` that gives the bucket `version`.
    pub fn usable(bits: u8, version: u64, shard: &ShardView<'_>, i: u32) -> Result<(), ShardError> {
        if shard.bits != bits || shard.index != i {
            return Err(ShardError::WrongShard);
        }
        if shard.version < version {
            return Err(ShardError::Outdated);
        }
        Ok(())
    }

    /// The exact answer for `s`, or why there is none (no shard, the wrong one, or one older than the head's).
    pub fn check(&self, s: &Subject<'_>) -> Result<Revoked, ShardError> {
        let i = self.head.bucket_of(s.token_id);
        let shard = self.shard.as_ref().ok_or(ShardError::WrongShard)?;
        Self::usable(self.head.bits, self.version, shard, i)?;
        if shard.contains(s.token_id) {
            return Ok(Revoked::Token);
        }
        Ok(self.head.tables.check_watermarks(s))
    }
}

fn push_header(out: &mut Vec<u8>, magic: &[u8; 4], len: usize) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_le_bytes());
}

fn versions_and_buckets(
    params: &ShardParams,
    revoked: &[RevokedAt],
    only: Option<u32>,
) -> Vec<(u64, Vec<RevokedToken>)> {
    let n = if only.is_some() { 1 } else { 1usize << params.bits };
    let mut out: Vec<(u64, Vec<RevokedToken>)> = alloc::vec![(0, Vec::new()); n];
    for r in revoked {
        let b = bucket(&r.token.id, params.bits);
        let slot = match only {
            Some(want) if want != b => continue,
            Some(_) => 0,
            None => b as usize,
        };
        let (version, tokens) = &mut out[slot];
        // The version counts expired records too, so it never goes down when one is dropped.
        *version = (*version).max(r.generation.min(params.generation));
        if r.token.exp > params.expire_before {
            tokens.push(r.token);
        }
    }
    out
}

fn encode_shard(params: &ShardParams, index: u32, version: u64, tokens: Vec<RevokedToken>, key: &StateKey) -> Vec<u8> {
    let tokens = super::build::normalize_tokens(tokens.into_iter());
    let mut out = Vec::with_capacity(SHARD_HEADER_LEN + tokens.len() * TOKEN_LEN + TAG_LEN);
    push_header(&mut out, SHARD_MAGIC, SHARD_HEADER_LEN);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&params.generation.to_le_bytes());
    out.push(params.bits);
    out.extend_from_slice(&[0; 3]);
    out.extend_from_slice(&index.to_le_bytes());
    for t in &tokens {
        out.extend_from_slice(&t.id);
        out.extend_from_slice(&t.iat.to_le_bytes());
        out.extend_from_slice(&t.exp.to_le_bytes());
    }
    let tag = key.tag(&out);
    out.extend_from_slice(&tag);
    out
}

/// Builds the head and every shard (shard `i` at index `i`) of a state: `revoked` every revocation by id with the
/// generation that made it (expired ones too: they count for the versions, never for the records), `watermarks`
/// every watermark (the builder merges duplicates, as for snapshots).
pub fn build_sharded(
    params: &ShardParams,
    revoked: &[RevokedAt],
    watermarks: &[Watermark],
    key: &StateKey,
) -> Result<(Vec<u8>, Vec<Vec<u8>>), super::BuildError> {
    let head = build_head(params, revoked, watermarks, key)?;
    let shards = versions_and_buckets(params, revoked, None)
        .into_iter()
        .enumerate()
        .map(|(i, (version, tokens))| encode_shard(params, i as u32, version, tokens, key))
        .collect();
    Ok((head, shards))
}

/// Builds the head alone (see [`build_sharded`]).
pub fn build_head(
    params: &ShardParams,
    revoked: &[RevokedAt],
    watermarks: &[Watermark],
    key: &StateKey,
) -> Result<Vec<u8>, super::BuildError> {
    if params.bits > MAX_BITS {
        return Err(super::BuildError::TooLarge);
    }
    let n = 1usize << params.bits;
    let marks = super::build::normalize_watermarks(watermarks.iter().cloned())?;
    let (th, tb) = tables::encode(&[], &marks).ok_or(super::BuildError::TooLarge)?;
    let mut head = Vec::with_capacity(HEAD_HEADER_LEN + tb.len() + 8 * n + TAG_LEN);
    push_header(&mut head, HEAD_MAGIC, HEAD_HEADER_LEN);
    head.extend_from_slice(&params.generation.to_le_bytes());
    head.extend_from_slice(&params.as_of.to_le_bytes());
    head.push(params.bits);
    head.extend_from_slice(&[0; 7]);
    head.extend_from_slice(&th);
    head.extend_from_slice(&tb);
    for (v, _) in versions_and_buckets(params, revoked, None) {
        head.extend_from_slice(&v.to_le_bytes());
    }
    let tag = key.tag(&head);
    head.extend_from_slice(&tag);
    Ok(head)
}

/// Builds shard `index` alone (see [`build_sharded`]); `None` if `index` is not below `2^bits`.
pub fn build_shard(params: &ShardParams, index: u32, revoked: &[RevokedAt], key: &StateKey) -> Option<Vec<u8>> {
    if params.bits > MAX_BITS || u64::from(index) >> params.bits != 0 {
        return None;
    }
    let (version, tokens) = versions_and_buckets(params, revoked, Some(index)).pop()?;
    Some(encode_shard(params, index, version, tokens, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StateKey {
        StateKey::new([5; 32])
    }

    fn tok(b: u8, iat: u32) -> RevokedToken {
        RevokedToken {
            id: [b; 12],
            iat,
            exp: 10_000,
        }
    }

    #[test]
    fn buckets_are_the_leading_bits() {
        assert_eq!(bucket(&[0xff; 12], 4), 15);
        assert_eq!(bucket(&[0x0f; 12], 4), 0);
        assert_eq!(bucket(&[0xab; 12], 0), 0);
        assert_eq!(bucket(&[0xab; 12], 16), 0xabab);
        assert_eq!(bits_for(0), 4);
        assert_eq!(bits_for(100_000), 11);
        assert_eq!(bits_for(usize::MAX), MAX_BITS);
    }

    #[test]
    fn a_shard_answers_only_for_its_bucket_and_version() {
        let k = key();
        let revoked = [
            RevokedAt {
                token: tok(0x10, 5),
                generation: 3,
            },
            RevokedAt {
                token: tok(0xf0, 5),
                generation: 7,
            },
        ];
        let p = ShardParams {
            generation: 9,
            as_of: 100,
            bits: 4,
            expire_before: 0,
        };
        let (head, shards) = build_sharded(&p, &revoked, &[Watermark::global(1)], &k).expect("built");
        let head = HeadView::open_verified(&head, &k).expect("head");
        assert_eq!((head.generation(), head.as_of(), head.bits()), (9, 100, 4));
        assert_eq!(
            (head.version(1), head.version(15), head.version(2)),
            (Some(3), Some(7), Some(0))
        );
        let s1 = ShardView::open_verified(&shards[1], &k).expect("shard");
        assert!(s1.contains(&[0x10; 12]) && !s1.contains(&[0x11; 12]));
        let subject = |id: &'static [u8; 12]| Subject {
            token_id: id,
            iat: 5,
            key_id: 1,
            share: None,
            viewer: None,
            session: None,
            asset: None,
            campaign: None,
        };
        let both = Sharded {
            head: head.prefix(),
            version: head.version(1).unwrap_or(0),
            shard: Some(s1),
        };
        assert_eq!(both.check(&subject(&[0x10; 12])), Ok(Revoked::Token));
        assert_eq!(both.check(&subject(&[0x11; 12])), Ok(Revoked::No));
        // Another bucket's shard, or none: no answer (never "not revoked").
        assert_eq!(both.check(&subject(&[0xf0; 12])), Err(ShardError::WrongShard));
        let none = Sharded { shard: None, ..both };
        assert_eq!(none.check(&subject(&[0x10; 12])), Err(ShardError::WrongShard));
        // A shard older than the head's version for its bucket is refused.
        let (_, old) = build_sharded(&ShardParams { generation: 2, ..p }, &revoked[..0], &[], &k).expect("built");
        let old1 = ShardView::open_verified(&old[1], &k).expect("shard");
        let stale = Sharded {
            shard: Some(old1),
            ..both
        };
        // The prefix read alone opens to the same head.
        let prefix = HeadPrefix::open(&head.as_bytes()[..head.prefix_len()]).expect("prefix");
        assert_eq!((prefix.generation(), prefix.as_of(), prefix.bits()), (9, 100, 4));
        assert!(HeadPrefix::open(&head.as_bytes()[..head.prefix_len() + 1]).is_err());
        assert_eq!(stale.check(&subject(&[0x10; 12])), Err(ShardError::Outdated));
        // One shard built alone is the same bytes.
        assert_eq!(build_shard(&p, 1, &revoked, &k).as_deref(), Some(shards[1].as_slice()));
        assert_eq!(build_shard(&p, 16, &revoked, &k), None);
        // Tampering is refused, and magic is not interchangeable.
        let mut bad = shards[1].clone();
        bad[SHARD_HEADER_LEN] ^= 1;
        assert!(ShardView::open_verified(&bad, &k).is_err());
        assert_eq!(HeadView::open(&shards[1]).err(), Some(StateError::BadMagic));
    }

    #[test]
    fn truncations_never_open() {
        let k = key();
        let p = ShardParams {
            generation: 1,
            as_of: 1,
            bits: 4,
            expire_before: 0,
        };
        let (head, shards) = build_sharded(
            &p,
            &[RevokedAt {
                token: tok(1, 1),
                generation: 1,
            }],
            &[],
            &k,
        )
        .expect("built");
        for n in 0..head.len() {
            assert!(HeadView::open_verified(&head[..n], &k).is_err());
        }
        for n in 0..shards[0].len() {
            assert!(ShardView::open_verified(&shards[0][..n], &k).is_err());
        }
    }

    mod equivalence {
        use super::super::*;
        use crate::revocation::ScopeKind;
        use crate::revocation::{IssuedToken, SnapshotParams, StateView, build_snapshot};
        use proptest::prelude::*;

        fn id(n: u64) -> [u8; 12] {
            // Spread over every bucket: the leading bytes vary.
            let h = crate::revocation::fuse::mix64(n);
            let mut b = [0u8; 12];
            b[..8].copy_from_slice(&h.to_be_bytes());
            b[8..].copy_from_slice(&(n as u32).to_be_bytes());
            b
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            /// For random states (issued set, revoked subset, watermarks, bits) and every issued token, the head and
            /// the token's shard give exactly the whole snapshot's answer.
            #[test]
            fn sharded_answers_equal_the_whole_state(
                issued in 1u64..600,
                revoke_every in 1u64..9,
                bits in 0u8..8,
                seed in any::<u64>(),
                wm_share in proptest::option::of(0u32..3),
                wm_through in 0u32..200,
            ) {
                let k = StateKey::new([9; 32]);
                let cutoff = 150;
                let tokens: Vec<IssuedToken> = (0..issued)
                    .map(|n| IssuedToken { id: id(n ^ seed), iat: (n % 300) as u32, exp: 10_000 })
                    .collect();
                let revoked: Vec<RevokedToken> = tokens
                    .iter()
                    .enumerate()
                    .filter(|(n, _)| (*n as u64).is_multiple_of(revoke_every))
                    .map(|(_, t)| RevokedToken { id: t.id, iat: t.iat, exp: t.exp })
                    .collect();
                let marks: Vec<Watermark> = wm_share
                    .map(|s| Watermark::new(ScopeKind::Share, &[b'a' + s as u8], wm_through))
                    .into_iter()
                    .collect();
                let snap = build_snapshot(
                    &SnapshotParams { generation: 40, built_at: 1, cutoff, expire_before: 0, max_token_lifetime: 86_400 },
                    tokens.iter().copied(),
                    &revoked,
                    &marks,
                    &k,
                ).expect("snapshot");
                let snap = StateView::open_verified(&snap, &k, 0).expect("opens");
                let at: Vec<RevokedAt> = revoked
                    .iter()
                    .enumerate()
                    .map(|(i, t)| RevokedAt { token: *t, generation: 1 + (i as u64 % 40) })
                    .collect();
                let (head, shards) = build_sharded(
                    &ShardParams { generation: 40, as_of: 1, bits, expire_before: 0 },
                    &at,
                    &marks,
                    &k,
                ).expect("sharded");
                let head = HeadView::open_verified(&head, &k).expect("head");
                let shards: Vec<ShardView<'_>> = shards
                    .iter()
                    .map(|s| ShardView::open_verified(s, &k).expect("shard"))
                    .collect();
                for (n, t) in tokens.iter().enumerate() {
                    let share = [b'a' + (n % 3) as u8];
                    let s = Subject {
                        token_id: &t.id,
                        iat: t.iat,
                        key_id: 1,
                        share: Some(&share),
                        viewer: None,
                        session: None,
                        asset: None,
                        campaign: None,
                    };
                    let i = head.bucket_of(&t.id);
                    let version = head.version(i).unwrap_or(u64::MAX);
                    let sharded = Sharded { head: head.prefix(), version, shard: Some(shards[i as usize]) };
                    prop_assert_eq!(sharded.check(&s), Ok(snap.is_revoked(&s)));
                    // Any other bucket's shard gives no answer at all.
                    if bits > 0 {
                        let other = shards[((i + 1) % (1 << bits)) as usize];
                        let wrong = Sharded { shard: Some(other), ..sharded };
                        prop_assert_eq!(wrong.check(&s), Err(ShardError::WrongShard));
                    }
                }
            }
        }
    }
}
