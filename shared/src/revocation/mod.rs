//! The revocation state: which verified tokens are revoked, answered exactly from bytes in memory.
//!
//! The control plane builds a MAC'd, versioned **snapshot** ([`build_snapshot`]), small
//! **deltas** ([`build_delta`]) and, when nothing changed, a signed **freshness** message
//! ([`build_freshness`]); each carries the signed time it is current as of, from which an edge
//! measures its state's age (never from arrival, which a replay controls). Every edge adapter reads them in place ([`StateView`],
//! [`DeltaView`], [`StateSet`]) and asks [`StateSet::is_revoked`] for each request. A token is
//! revoked by id, or by a per-scope **watermark** (everything issued at or before second `T` for a
//! share, viewer, session, asset, campaign, key id, or globally).
//!
//! Tokens issued before the snapshot's cut-off are answered by a two-level static structure (a
//! binary fuse filter over the revoked ids, then a one-bit retrieval array over the revoked ids and
//! the filter's false positives among the issued ids), which is exact for every id it was built
//! over: no valid token is denied by chance. Everything else is an exact sorted list. See
//! `docs/revocation.md` for the format byte by byte and the measurements.
//!
//! What this module does not do: read a clock (callers pass `now`), fetch or store state, or
//! check a token's signature or expiry (the token verifier does that before asking here).

mod build;
mod freshness;
mod fuse;
mod shard;
mod tables;
mod view;

pub use build::{
    ApplyParams, BuildError, DeltaParams, IssuedToken, RevokedToken, SnapshotParams, Watermark, apply_deltas,
    build_delta, build_snapshot,
};
pub use freshness::{FRESHNESS_LEN, FRESHNESS_MAGIC, Freshness, build_freshness, verify_freshness};
pub use shard::{
    HEAD_MAGIC, HeadPrefix, HeadView, MAX_BITS, RevokedAt, SHARD_MAGIC, ShardError, ShardParams, ShardView, Sharded,
    bits_for, bucket, build_head, build_shard, build_sharded,
};
pub use tables::WatermarkRef;
pub use view::{DeltaView, SnapshotStats, StateSet, StateView};

use crate::hmac256::PrekeyedHmac;
use crate::token::Claims;
use core::fmt;
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Length of the HMAC-SHA256 tag that ends every snapshot and delta.
pub const TAG_LEN: usize = 32;

/// The claims of a verified token that revocation looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The token's 12 id bytes (docs/token-format.md §3).
    pub token_id: &'a [u8; 12],
    /// Issued-at, unix seconds.
    pub iat: u32,
    /// The id of the key that signed the token.
    pub key_id: u16,
    /// Share id, if the token belongs to a share.
    pub share: Option<&'a [u8]>,
    /// Viewer id, if the token is bound to a viewer.
    pub viewer: Option<&'a [u8]>,
    /// Session id, if the token is bound to a session.
    pub session: Option<&'a [u8]>,
    /// Asset id.
    pub asset: Option<&'a [u8]>,
    /// Campaign id, for attribution.
    pub campaign: Option<&'a [u8]>,
}

impl<'a> Subject<'a> {
    /// The revocation subject of verified claims: the fields revocation looks at, borrowed from them.
    ///
    /// One constructor, so the edge's decision and the control plane's diagnosis ask the state about exactly the
    /// same fields (a scope forgotten on one side would make them disagree about a revoked token).
    pub fn from_claims(c: &'a Claims<'_>) -> Self {
        Subject {
            token_id: &c.token_id,
            iat: c.iat,
            key_id: c.key_id,
            share: c.share.map(|t| t.as_bytes()),
            viewer: c.viewer.map(|t| t.as_bytes()),
            session: c.session.map(|t| t.as_bytes()),
            asset: c.asset.map(|t| t.as_bytes()),
            campaign: c.campaign.map(|t| t.as_bytes()),
        }
    }
}

/// The scope a watermark applies to. The codes are part of the encoding and never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ScopeKind {
    /// Every token.
    Global = 0,
    /// Tokens of one share.
    Share = 1,
    /// Tokens bound to one viewer.
    Viewer = 2,
    /// Tokens bound to one session.
    Session = 3,
    /// Tokens for one asset.
    Asset = 4,
    /// Tokens of one campaign.
    Campaign = 5,
    /// Tokens signed with one key id (id: the key id's two big-endian bytes).
    KeyId = 6,
}

/// Number of scope kinds.
pub const SCOPE_KINDS: usize = 7;

impl ScopeKind {
    /// All kinds, in code order.
    pub const ALL: [ScopeKind; SCOPE_KINDS] = [
        ScopeKind::Global,
        ScopeKind::Share,
        ScopeKind::Viewer,
        ScopeKind::Session,
        ScopeKind::Asset,
        ScopeKind::Campaign,
        ScopeKind::KeyId,
    ];

    /// The stable one-byte code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with this code, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Stable snake_case name, for reason codes and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Global => "global",
            ScopeKind::Share => "share",
            ScopeKind::Viewer => "viewer",
            ScopeKind::Session => "session",
            ScopeKind::Asset => "asset",
            ScopeKind::Campaign => "campaign",
            ScopeKind::KeyId => "key_id",
        }
    }
}

impl fmt::Display for ScopeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to "is this token revoked?", with the reason when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// Not revoked.
    No,
    /// This token was revoked by id.
    Token,
    /// A watermark of this scope covers the token's `iat`.
    Watermark(ScopeKind),
}

impl Revoked {
    /// True unless [`Revoked::No`].
    pub fn is_revoked(self) -> bool {
        self != Revoked::No
    }

    /// Stable snake_case reason code (`not_revoked`, `revoked_token`, `revoked_<scope>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Revoked::No => "not_revoked",
            Revoked::Token => "revoked_token",
            Revoked::Watermark(ScopeKind::Global) => "revoked_global",
            Revoked::Watermark(ScopeKind::Share) => "revoked_share",
            Revoked::Watermark(ScopeKind::Viewer) => "revoked_viewer",
            Revoked::Watermark(ScopeKind::Session) => "revoked_session",
            Revoked::Watermark(ScopeKind::Asset) => "revoked_asset",
            Revoked::Watermark(ScopeKind::Campaign) => "revoked_campaign",
            Revoked::Watermark(ScopeKind::KeyId) => "revoked_key_id",
        }
    }
}

/// Why a snapshot or delta was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateError {
    /// The bytes do not start with the expected magic (snapshot `SGRS`, delta `SGRD`, freshness `SGRF`).
    BadMagic,
    /// A format version this reader does not know.
    UnsupportedVersion,
    /// Shorter (or longer) than its header says.
    Truncated,
    /// A header field or section is out of range or inconsistent.
    Malformed,
    /// The MAC does not verify under the state key.
    BadMac,
    /// Older than the generation the edge already holds.
    StaleGeneration,
    /// A delta does not continue the generation before it.
    BrokenChain,
}

impl StateError {
    /// Stable snake_case reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            StateError::BadMagic => "bad_magic",
            StateError::UnsupportedVersion => "unsupported_version",
            StateError::Truncated => "truncated",
            StateError::Malformed => "malformed",
            StateError::BadMac => "bad_mac",
            StateError::StaleGeneration => "stale_generation",
            StateError::BrokenChain => "broken_chain",
        }
    }
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for StateError {}

/// The secret that authenticates snapshots and deltas (HMAC-SHA256).
///
/// The HMAC is keyed once here, which saves the two key-block compressions on every verification.
/// The raw bytes are wiped as soon as they are absorbed; the keyed states are wiped on drop.
#[derive(Clone)]
pub struct StateKey {
    mac: PrekeyedHmac,
}

impl StateKey {
    /// Keys the state MAC with 32 secret bytes.
    pub fn new(mut bytes: [u8; 32]) -> Self {
        let mac = PrekeyedHmac::new(&bytes);
        bytes.zeroize();
        StateKey { mac }
    }

    /// HMAC-SHA256 of `data` under this key, for keys derived from it (e.g. the control plane's view-id key, with a
    /// context that no state starts with) and MACs of our own formats. Never use it to MAC revocation state: that
    /// is [`StateKey`]'s own format's job.
    pub fn derive(&self, data: &[u8]) -> [u8; TAG_LEN] {
        self.tag(data)
    }

    pub(crate) fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        self.mac.tag(data)
    }

    /// Checks the trailing tag of `bytes` in constant time.
    pub(crate) fn verify(&self, bytes: &[u8]) -> Result<(), StateError> {
        let Some(split) = bytes.len().checked_sub(TAG_LEN) else {
            return Err(StateError::Truncated);
        };
        let (body, tag) = bytes.split_at(split);
        if bool::from(self.tag(body).ct_eq(tag)) {
            Ok(())
        } else {
            Err(StateError::BadMac)
        }
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::{Claims, Text};

    #[test]
    fn subject_from_claims_takes_every_revocation_field() {
        let c = Claims {
            key_id: 7,
            token_id: [9; 12],
            iat: 100,
            share: Some(Text::from("sh")),
            viewer: Some(Text::from("vw")),
            session: Some(Text::from("se")),
            asset: Some(Text::from("as")),
            campaign: Some(Text::from("ca")),
            // Not revocation scopes: must not leak into the subject.
            channel: Some(Text::from("ch")),
            prefix: Some(Text::from("/p")),
            ..Claims::default()
        };
        let s = Subject::from_claims(&c);
        assert_eq!(
            s,
            Subject {
                token_id: &[9; 12],
                iat: 100,
                key_id: 7,
                share: Some(b"sh"),
                viewer: Some(b"vw"),
                session: Some(b"se"),
                asset: Some(b"as"),
                campaign: Some(b"ca"),
            }
        );
        let none = Claims::default();
        let s = Subject::from_claims(&none);
        assert_eq!(
            (s.share, s.viewer, s.session, s.asset, s.campaign),
            (None, None, None, None, None)
        );
    }
}
