//! What a token says and what a request brings: the claims and their value types, and the request facts they are
//! checked against. No encoding here (see `wire`) and no decisions (see `policy`).

use super::wire::{MAX_TOKEN_BYTES, TOKEN_ID_LEN};
use crate::keys::KeyId;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;

/// What a token allows, one bit per kind of resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Permissions(pub u8);

impl Permissions {
    /// The multivariant (master) playlist.
    pub const MULTIVARIANT: Permissions = Permissions(1 << 0);
    /// Media (variant) playlists.
    pub const MEDIA: Permissions = Permissions(1 << 1);
    /// Media segments and partial segments.
    pub const SEGMENT: Permissions = Permissions(1 << 2);
    /// Initialisation sections (`EXT-X-MAP`).
    pub const INIT: Permissions = Permissions(1 << 3);
    /// Content keys (`EXT-X-KEY`).
    pub const KEY: Permissions = Permissions(1 << 4);
    /// Whole-file download (e.g. an MP4 rendition).
    pub const DOWNLOAD: Permissions = Permissions(1 << 5);
    /// Everything streaming playback needs.
    pub const PLAYBACK: Permissions = Permissions(0b1_1111);
    /// Bits defined by v1.0; a later minor may define more, which a v1.0 verifier ignores (they only grant).
    pub const DEFINED: Permissions = Permissions(0b11_1111);

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Union.
    pub const fn union(self, other: Permissions) -> Permissions {
        Permissions(self.0 | other.0)
    }
}

/// The kind of resource a request is for; each needs its own permission bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A multivariant playlist.
    MultivariantPlaylist,
    /// A media playlist.
    MediaPlaylist,
    /// A media segment or part.
    Segment,
    /// An initialisation section.
    Init,
    /// A content key.
    Key,
    /// A whole-file download.
    Download,
}

impl Resource {
    /// The permission this resource needs.
    pub const fn permission(self) -> Permissions {
        match self {
            Resource::MultivariantPlaylist => Permissions::MULTIVARIANT,
            Resource::MediaPlaylist => Permissions::MEDIA,
            Resource::Segment => Permissions::SEGMENT,
            Resource::Init => Permissions::INIT,
            Resource::Key => Permissions::KEY,
            Resource::Download => Permissions::DOWNLOAD,
        }
    }
}

/// A text claim: visible ASCII bytes, kept as bytes so decoding a token needs no UTF-8 validation per field (that
/// alone cost ~25 ns per verify); [`Text::as_str`] converts on demand.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Text<'a>(pub(super) &'a [u8]);

impl<'a> Text<'a> {
    /// The claim's bytes.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The claim as text. Claims are visible ASCII once validated, so this never falls back in practice; an
    /// unvalidated non-UTF-8 `Text` reads as empty rather than panicking.
    pub fn as_str(&self) -> &'a str {
        core::str::from_utf8(self.0).unwrap_or("")
    }

    /// Length in bytes.
    pub const fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty (never, for a decoded claim).
    pub const fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Text(s.as_bytes())
    }
}

impl PartialEq<str> for Text<'_> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for Text<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client IP binding: an IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpPrefix {
    /// The network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length in bits (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub len: u8,
}

impl IpPrefix {
    /// The network of `addr` with `len` bits, host bits cleared. `None` if `len` is too long for the family.
    pub fn new(addr: IpAddr, len: u8) -> Option<IpPrefix> {
        match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                Some(IpPrefix {
                    addr: IpAddr::V4((u32::from(a) & mask).into()),
                    len,
                })
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(len))
                };
                Some(IpPrefix {
                    addr: IpAddr::V6((u128::from(a) & mask).into()),
                    len,
                })
            }
            _ => None,
        }
    }

    /// Whether `ip` is inside the network. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.len))
                };
                u32::from(a) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = if self.len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.len))
                };
                u128::from(a) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

/// A country rule: ISO 3166-1 alpha-2 codes, upper case, stored as consecutive byte pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Countries<'a> {
    /// Only these countries.
    Allow(&'a [u8]),
    /// Every country but these.
    Deny(&'a [u8]),
}

impl Countries<'_> {
    pub(super) fn codes(&self) -> &[u8] {
        match self {
            Countries::Allow(c) | Countries::Deny(c) => c,
        }
    }

    fn lists(&self, country: [u8; 2]) -> bool {
        self.codes().chunks_exact(2).any(|c| c == country)
    }

    /// Whether a client in `country` may pass. An unknown country fails an allow list (fail closed) and passes a
    /// deny list (the list names what to keep out; unknown is not on it).
    pub fn permits(&self, country: Option<[u8; 2]>) -> bool {
        match (self, country) {
            (Countries::Allow(_), None) => false,
            (Countries::Allow(_), Some(c)) => self.lists(c),
            (Countries::Deny(_), None) => true,
            (Countries::Deny(_), Some(c)) => !self.lists(c),
        }
    }
}

/// The claims of a token. Decoded claims borrow from a [`TokenBuf`]; claims to mint borrow from the caller.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Claims<'a> {
    /// The minor version the token was written with (informational).
    pub minor: u8,
    /// The key that signed it. Set by the [`Minter`](super::Minter) when minting.
    pub key_id: KeyId,
    /// Names this token (revocation, audit): 64 random bits and the mint time in ms (docs/token-format.md §3).
    pub token_id: [u8; TOKEN_ID_LEN],
    /// Issued at (unix seconds).
    pub iat: u32,
    /// Not valid before (unix seconds); `iat <= nbf`.
    pub nbf: u32,
    /// Expires at (unix seconds); `nbf < exp`.
    pub exp: u32,
    /// What it allows.
    pub permissions: Permissions,
    /// Asset scope: the first path segment must equal it.
    pub asset: Option<Text<'a>>,
    /// Path scope: the normalised path must be inside this prefix (segment boundary).
    pub prefix: Option<Text<'a>>,
    /// The share it was opened from.
    pub share: Option<Text<'a>>,
    /// The viewer it was minted for.
    pub viewer: Option<Text<'a>>,
    /// The playback session.
    pub session: Option<Text<'a>>,
    /// Attribution: campaign (also a revocation scope).
    pub campaign: Option<Text<'a>>,
    /// Attribution: channel (informational).
    pub channel: Option<Text<'a>>,
    /// Client IP binding.
    pub ip: Option<IpPrefix>,
    /// Country rule.
    pub countries: Option<Countries<'a>>,
    /// Embed origin binding (`scheme://host[:port]`, compared case-insensitively).
    pub origin: Option<Text<'a>>,
    /// Forensic watermark id.
    pub watermark: Option<&'a [u8]>,
    /// Entitlement tier: bits 0–6 the plan ([`tier`] codes, informational), bit 7 ([`tier::ENDS_ENTITLEMENT`])
    /// that `exp` is the end of the viewer's entitlement, enforced without leeway.
    pub tier: Option<u8>,
    /// Small opaque data for the caller (informational).
    pub data: Option<&'a [u8]>,
}

/// The `tier` claim's layout: a plan code in bits 0–6 and the [`ENDS_ENTITLEMENT`](tier::ENDS_ENTITLEMENT) flag.
pub mod tier {
    /// Bit 7: the token's `exp` is the end of an entitlement (a trial, a rental). Verifiers apply no leeway to it,
    /// so the entitlement ends when the product's backend said, and report the expiry as the entitlement's end.
    pub const ENDS_ENTITLEMENT: u8 = 0x80;
    /// Plan codes (bits 0–6): none given.
    pub const PLAN_NONE: u8 = 0;
    /// `free`.
    pub const PLAN_FREE: u8 = 1;
    /// `trial`.
    pub const PLAN_TRIAL: u8 = 2;
    /// `paid`.
    pub const PLAN_PAID: u8 = 3;
    /// Any other plan name.
    pub const PLAN_OTHER: u8 = 4;

    /// The plan code of a plan name (`free`, `trial`, `paid`; anything else is "other").
    pub fn plan_code(plan: &str) -> u8 {
        match plan {
            "" => PLAN_NONE,
            "free" => PLAN_FREE,
            "trial" => PLAN_TRIAL,
            "paid" => PLAN_PAID,
            _ => PLAN_OTHER,
        }
    }

    /// The plan name of a tier byte, if it names one.
    pub fn plan_name(tier: u8) -> Option<&'static str> {
        match tier & !ENDS_ENTITLEMENT {
            PLAN_FREE => Some("free"),
            PLAN_TRIAL => Some("trial"),
            PLAN_PAID => Some("paid"),
            PLAN_OTHER => Some("other"),
            _ => None,
        }
    }

    /// Whether a tier byte says `exp` ends an entitlement.
    pub fn ends_entitlement(tier: Option<u8>) -> bool {
        tier.is_some_and(|t| t & ENDS_ENTITLEMENT != 0)
    }
}

/// The owned form of [`Claims`]: the same fields, holding their bytes, for claims that must outlive the token buffer
/// they were decoded into or the strings they were built from (a session seed kept in a playlist plan, claims parsed
/// from a file). [`OwnedClaims::as_claims`] borrows a [`Claims`] back, so minting, policy checks and revocation
/// take either form through one type.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct OwnedClaims {
    /// See [`Claims::minor`].
    pub minor: u8,
    /// See [`Claims::key_id`].
    pub key_id: KeyId,
    /// See [`Claims::token_id`].
    pub token_id: [u8; TOKEN_ID_LEN],
    /// See [`Claims::iat`].
    pub iat: u32,
    /// See [`Claims::nbf`].
    pub nbf: u32,
    /// See [`Claims::exp`].
    pub exp: u32,
    /// See [`Claims::permissions`].
    pub permissions: Permissions,
    /// See [`Claims::asset`].
    pub asset: Option<String>,
    /// See [`Claims::prefix`].
    pub prefix: Option<String>,
    /// See [`Claims::share`].
    pub share: Option<String>,
    /// See [`Claims::viewer`].
    pub viewer: Option<String>,
    /// See [`Claims::session`].
    pub session: Option<String>,
    /// See [`Claims::campaign`].
    pub campaign: Option<String>,
    /// See [`Claims::channel`].
    pub channel: Option<String>,
    /// See [`Claims::ip`].
    pub ip: Option<IpPrefix>,
    /// See [`Claims::countries`].
    pub countries: Option<OwnedCountries>,
    /// See [`Claims::origin`].
    pub origin: Option<String>,
    /// See [`Claims::watermark`].
    pub watermark: Option<Vec<u8>>,
    /// See [`Claims::tier`].
    pub tier: Option<u8>,
    /// See [`Claims::data`].
    pub data: Option<Vec<u8>>,
}

/// The owned form of [`Countries`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedCountries {
    /// Only these countries (consecutive upper-case alpha-2 pairs).
    Allow(Vec<u8>),
    /// Every country but these.
    Deny(Vec<u8>),
}

impl OwnedCountries {
    /// The borrowed rule.
    pub fn as_countries(&self) -> Countries<'_> {
        match self {
            OwnedCountries::Allow(c) => Countries::Allow(c),
            OwnedCountries::Deny(c) => Countries::Deny(c),
        }
    }
}

impl From<Countries<'_>> for OwnedCountries {
    fn from(c: Countries<'_>) -> Self {
        match c {
            Countries::Allow(c) => OwnedCountries::Allow(c.to_vec()),
            Countries::Deny(c) => OwnedCountries::Deny(c.to_vec()),
        }
    }
}

// Text claims are visible ASCII once validated, and a `Text` can only be built from a `&str` or by the decoder, so
// holding them as `String` loses nothing.
fn owned_text(t: Option<Text<'_>>) -> Option<String> {
    t.map(|t| String::from(t.as_str()))
}

fn text(s: &Option<String>) -> Option<Text<'_>> {
    s.as_deref().map(Text::from)
}

// Both directions spell out every field, with no `..` rest: a claim added to `Claims` does not compile here until the
// owned form carries it too, so the two cannot drift apart.
impl Claims<'_> {
    /// Copy these claims into an [`OwnedClaims`] (allocates one buffer per present text or byte claim).
    pub fn to_owned_claims(&self) -> OwnedClaims {
        OwnedClaims {
            minor: self.minor,
            key_id: self.key_id,
            token_id: self.token_id,
            iat: self.iat,
            nbf: self.nbf,
            exp: self.exp,
            permissions: self.permissions,
            asset: owned_text(self.asset),
            prefix: owned_text(self.prefix),
            share: owned_text(self.share),
            viewer: owned_text(self.viewer),
            session: owned_text(self.session),
            campaign: owned_text(self.campaign),
            channel: owned_text(self.channel),
            ip: self.ip,
            countries: self.countries.map(OwnedCountries::from),
            origin: owned_text(self.origin),
            watermark: self.watermark.map(<[u8]>::to_vec),
            tier: self.tier,
            data: self.data.map(<[u8]>::to_vec),
        }
    }
}

impl From<&Claims<'_>> for OwnedClaims {
    fn from(c: &Claims<'_>) -> Self {
        c.to_owned_claims()
    }
}

impl OwnedClaims {
    /// Borrow these claims as [`Claims`], to mint, check or look up without copying.
    pub fn as_claims(&self) -> Claims<'_> {
        Claims {
            minor: self.minor,
            key_id: self.key_id,
            token_id: self.token_id,
            iat: self.iat,
            nbf: self.nbf,
            exp: self.exp,
            permissions: self.permissions,
            asset: text(&self.asset),
            prefix: text(&self.prefix),
            share: text(&self.share),
            viewer: text(&self.viewer),
            session: text(&self.session),
            campaign: text(&self.campaign),
            channel: text(&self.channel),
            ip: self.ip,
            countries: self.countries.as_ref().map(OwnedCountries::as_countries),
            origin: text(&self.origin),
            watermark: self.watermark.as_deref(),
            tier: self.tier,
            data: self.data.as_deref(),
        }
    }
}

/// The facts of one request that a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request path after [`normalize_path`](crate::path::normalize_path), without the token.
    pub path: &'a str,
    /// The kind of resource requested.
    pub resource: Resource,
    /// Now, unix seconds (from the adapter's clock).
    pub now: u64,
    /// The client's address, if the runtime knows it.
    pub client_ip: Option<IpAddr>,
    /// The client's country (upper-case alpha-2), if the runtime knows it.
    pub country: Option<[u8; 2]>,
    /// The embedding page's origin (from `Origin`, else `Referer`), if any.
    pub origin: Option<&'a str>,
}

/// Why minting failed. Names the offending claim; never carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MintError {
    /// A claim is out of its allowed syntax or range; the field name says which.
    InvalidClaim(&'static str),
    /// `exp - iat` exceeds the policy's maximum TTL.
    TtlTooLong,
    /// The encoded token would exceed [`MAX_TOKEN_BYTES`].
    TooLarge,
}

impl fmt::Display for MintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MintError::InvalidClaim(field) => write!(f, "invalid claim: {field}"),
            MintError::TtlTooLong => f.write_str("ttl_too_long"),
            MintError::TooLarge => f.write_str("token too large"),
        }
    }
}

impl core::error::Error for MintError {}

/// Caller-owned space a token is decoded into, so verification does not allocate.
pub struct TokenBuf {
    pub(super) bytes: [u8; MAX_TOKEN_BYTES],
}

impl TokenBuf {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        TokenBuf {
            bytes: [0; MAX_TOKEN_BYTES],
        }
    }
}

impl Default for TokenBuf {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn every_claim() -> Claims<'static> {
        Claims {
            minor: 1,
            key_id: 9,
            token_id: [3; TOKEN_ID_LEN],
            iat: 10,
            nbf: 11,
            exp: 12,
            permissions: Permissions::PLAYBACK,
            asset: Some("a".into()),
            prefix: Some("/p/".into()),
            share: Some("s".into()),
            viewer: Some("v".into()),
            session: Some("se".into()),
            campaign: Some("c".into()),
            channel: Some("ch".into()),
            ip: IpPrefix::new(IpAddr::from([10, 0, 0, 0]), 8),
            countries: Some(Countries::Deny(b"FRDE")),
            origin: Some("https://x.example".into()),
            watermark: Some(&[1, 2]),
            tier: Some(3),
            data: Some(&[4]),
        }
    }

    #[test]
    fn owned_claims_round_trip() {
        for c in [every_claim(), Claims::default()] {
            let owned = c.to_owned_claims();
            assert_eq!(owned.as_claims(), c);
            assert_eq!(OwnedClaims::from(&c), owned);
        }
        let allow = Claims {
            countries: Some(Countries::Allow(b"US")),
            ..every_claim()
        };
        assert_eq!(allow.to_owned_claims().as_claims(), allow);
    }
}
