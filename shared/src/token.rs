//! Token format v1: mint and verify.
//!
//! A token is a binary, versioned record (fixed-width header, then length-prefixed claims in ascending type order,
//! then a truncated HMAC-SHA256 tag), encoded as unpadded base64url so it fits in one URL path segment. The full
//! specification is `docs/token-format.md`; this module is its reference implementation.
//!
//! Verification never allocates: the token is decoded into a caller-owned [`TokenBuf`] and the returned [`Claims`]
//! borrow from it. A [`Verifier`] is keyed once (one pre-keyed HMAC state per key) and reused for every request.

use crate::keys::{KeyError, KeyId, KeyRing};
use crate::path::{normalize_path, path_in_scope};
use crate::reason::Reason;
use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The major version this code implements. A token with another major version is refused.
pub const VERSION_MAJOR: u8 = 1;
/// The minor version this code writes. Newer minors are read, skipping their unknown non-critical claims.
pub const VERSION_MINOR: u8 = 0;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 28;
/// Bytes of the MAC tag (HMAC-SHA256 truncated to 128 bits).
pub const TAG_LEN: usize = 16;
/// Bytes of a token id (96 random bits).
pub const TOKEN_ID_LEN: usize = 12;
/// Hard maximum of a decoded token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 384;
/// Hard maximum of an encoded token, in characters; checked before any decoding.
pub const MAX_TOKEN_CHARS: usize = MAX_TOKEN_BYTES / 3 * 4;
/// Default clock leeway, in seconds.
pub const DEFAULT_LEEWAY: u32 = 60;
/// Default maximum lifetime (`exp - iat`), in seconds.
pub const DEFAULT_MAX_TTL: u32 = 24 * 3600;

/// Set on a claim type whose meaning a verifier must understand to decide safely.
const CRITICAL: u8 = 0x80;
const T_CHANNEL: u8 = 0x01;
const T_TIER: u8 = 0x02;
const T_DATA: u8 = 0x03;
const T_ASSET: u8 = 0x81;
const T_PREFIX: u8 = 0x82;
const T_SHARE: u8 = 0x83;
const T_VIEWER: u8 = 0x84;
const T_SESSION: u8 = 0x85;
const T_CAMPAIGN: u8 = 0x86;
const T_IP: u8 = 0x87;
const T_COUNTRY_ALLOW: u8 = 0x88;
const T_COUNTRY_DENY: u8 = 0x89;
const T_ORIGIN: u8 = 0x8A;
const T_WATERMARK: u8 = 0x8B;

const MAX_ASSET_LEN: usize = 64;
const MAX_WATERMARK_LEN: usize = 32;
const MAX_DATA_LEN: usize = 64;

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
pub struct Text<'a>(&'a [u8]);

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
    fn codes(&self) -> &[u8] {
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
    /// The key that signed it. Set by the [`Minter`] when minting.
    pub key_id: KeyId,
    /// 96 random bits naming this token (revocation, audit).
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
    /// Entitlement tier (informational).
    pub tier: Option<u8>,
    /// Small opaque data for the caller (informational).
    pub data: Option<&'a [u8]>,
}

/// Verification and minting policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Clock leeway, seconds, applied to both `nbf` and `exp`.
    pub leeway: u32,
    /// Longest lifetime (`exp - iat`) accepted when minting and verifying.
    pub max_ttl: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            leeway: DEFAULT_LEEWAY,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

/// The facts of one request that a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request path after [`normalize_path`], without the token.
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
    bytes: [u8; MAX_TOKEN_BYTES],
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

// ---------------------------------------------------------------------------------------------------------------
// Claim syntax: one validator per claim, used by both the encoder and the decoder, so a minter can never write a
// token that a verifier refuses, and a verifier accepts only what a minter could write.

// Claim syntax is checked on every request, so the byte checks avoid a branch per byte.
fn valid_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 255 && all_visible_ascii(v)
}

/// Whether every byte is in 0x21..=0x7E, eight bytes at a time (SWAR).
fn all_visible_ascii(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = v.chunks_exact(8);
    let mut bad = 0u64;
    for c in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        let w = u64::from_le_bytes(b);
        // Some byte < 0x21 (exact as an existence test for thresholds up to 0x80).
        bad |= w.wrapping_sub(ONES * 0x21) & !w & HIGH;
        // Some byte > 0x7E: adding 1 sets the high bit of 0x7F, and `| w` catches bytes already >= 0x80.
        bad |= (w.wrapping_add(ONES) | w) & HIGH;
    }
    bad == 0
        && words
            .remainder()
            .iter()
            .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e))
}

/// Asset ids: unreserved URL characters only, so an asset id is always exactly one path segment.
static ASSET_CHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b'~';
        i += 1;
    }
    t
};

fn valid_asset(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= MAX_ASSET_LEN
        && v != b"."
        && v != b".."
        && v.iter().fold(true, |ok, &b| ok & ASSET_CHAR[usize::from(b)])
}

fn valid_prefix(v: &[u8]) -> bool {
    v.len() <= 255 && core::str::from_utf8(v).is_ok_and(|s| matches!(normalize_path(s), Ok(Cow::Borrowed(_))))
}

fn valid_countries(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 254 && v.len().is_multiple_of(2) && v.iter().all(u8::is_ascii_uppercase)
}

fn valid_origin(v: &[u8]) -> bool {
    valid_id(v) && v.windows(3).any(|w| w == b"://")
}

fn valid_blob(v: &[u8], max: usize) -> bool {
    !v.is_empty() && v.len() <= max
}

fn encode_ip(p: &IpPrefix, out: &mut [u8; 18]) -> usize {
    let (family, bytes): (u8, [u8; 16]) = match p.addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            (4, b)
        }
        IpAddr::V6(a) => (6, a.octets()),
    };
    let n = usize::from(p.len).div_ceil(8);
    out[0] = family;
    out[1] = p.len;
    out[2..2 + n].copy_from_slice(&bytes[..n]);
    2 + n
}

fn decode_ip(v: &[u8]) -> Option<IpPrefix> {
    let (&family, rest) = v.split_first()?;
    let (&len, addr) = rest.split_first()?;
    let (max, width) = match family {
        4 => (32u8, 4usize),
        6 => (128u8, 16usize),
        _ => return None,
    };
    if len > max || addr.len() != usize::from(len).div_ceil(8) {
        return None;
    }
    let mut full = [0u8; 16];
    full[..addr.len()].copy_from_slice(addr);
    let ip = if width == 4 {
        IpAddr::V4([full[0], full[1], full[2], full[3]].into())
    } else {
        IpAddr::V6(full.into())
    };
    let p = IpPrefix::new(ip, len)?;
    // Canonical only: host bits must already be zero, so one network has one encoding.
    (p.addr == ip).then_some(p)
}

// ---------------------------------------------------------------------------------------------------------------
// Encoding

struct Writer<'o> {
    out: &'o mut [u8; MAX_TOKEN_BYTES],
    pos: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), MintError> {
        let end = self.pos + bytes.len();
        // Leave room for the tag.
        if end + TAG_LEN > MAX_TOKEN_BYTES {
            return Err(MintError::TooLarge);
        }
        self.out[self.pos..end].copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    fn claim(&mut self, t: u8, v: &[u8]) -> Result<(), MintError> {
        let len = u8::try_from(v.len()).map_err(|_| MintError::TooLarge)?;
        self.put(&[t, len])?;
        self.put(v)
    }
}

impl Claims<'_> {
    /// Check every claim's syntax and the time window; `Err` names the first bad claim.
    pub fn validate(&self, policy: &Policy) -> Result<(), MintError> {
        let bad = MintError::InvalidClaim;
        if self.nbf < self.iat {
            return Err(bad("nbf"));
        }
        if self.exp <= self.nbf {
            return Err(bad("exp"));
        }
        if self.exp - self.iat > policy.max_ttl {
            return Err(MintError::TtlTooLong);
        }
        if self.permissions.0 == 0 {
            return Err(bad("permissions"));
        }
        if self.asset.is_none() && self.prefix.is_none() {
            return Err(bad("scope"));
        }
        let id_ok = |v: Option<Text<'_>>| v.is_none_or(|s| valid_id(s.as_bytes()));
        let checks: [(&'static str, bool); 11] = [
            ("asset", self.asset.is_none_or(|s| valid_asset(s.as_bytes()))),
            ("prefix", self.prefix.is_none_or(|p| valid_prefix(p.as_bytes()))),
            ("share", id_ok(self.share)),
            ("viewer", id_ok(self.viewer)),
            ("session", id_ok(self.session)),
            ("campaign", id_ok(self.campaign)),
            ("channel", id_ok(self.channel)),
            ("countries", self.countries.is_none_or(|c| valid_countries(c.codes()))),
            ("origin", self.origin.is_none_or(|s| valid_origin(s.as_bytes()))),
            (
                "watermark",
                self.watermark.is_none_or(|w| valid_blob(w, MAX_WATERMARK_LEN)),
            ),
            ("data", self.data.is_none_or(|d| valid_blob(d, MAX_DATA_LEN))),
        ];
        if let Some((field, _)) = checks.iter().find(|(_, ok)| !ok) {
            return Err(bad(field));
        }
        if let Some(ip) = self.ip
            && IpPrefix::new(ip.addr, ip.len) != Some(ip)
        {
            return Err(bad("ip"));
        }
        Ok(())
    }

    /// Write the signed bytes (header and claims, no tag) into `out`; returns their length.
    fn encode_body(&self, key_id: KeyId, out: &mut [u8; MAX_TOKEN_BYTES]) -> Result<usize, MintError> {
        let mut w = Writer { out, pos: 0 };
        w.put(&[(VERSION_MAJOR << 4) | VERSION_MINOR])?;
        w.put(&key_id.to_be_bytes())?;
        w.put(&self.token_id)?;
        w.put(&self.iat.to_be_bytes())?;
        w.put(&self.nbf.to_be_bytes())?;
        w.put(&self.exp.to_be_bytes())?;
        w.put(&[self.permissions.0])?;
        // Claims in strictly ascending type order: the canonical form the decoder insists on.
        if let Some(v) = self.channel {
            w.claim(T_CHANNEL, v.as_bytes())?;
        }
        if let Some(v) = self.tier {
            w.claim(T_TIER, &[v])?;
        }
        if let Some(v) = self.data {
            w.claim(T_DATA, v)?;
        }
        let strs = [
            (T_ASSET, self.asset),
            (T_PREFIX, self.prefix),
            (T_SHARE, self.share),
            (T_VIEWER, self.viewer),
            (T_SESSION, self.session),
            (T_CAMPAIGN, self.campaign),
        ];
        for (t, v) in strs {
            if let Some(v) = v {
                w.claim(t, v.as_bytes())?;
            }
        }
        if let Some(ip) = &self.ip {
            let mut buf = [0u8; 18];
            let n = encode_ip(ip, &mut buf);
            w.claim(T_IP, &buf[..n])?;
        }
        match self.countries {
            Some(Countries::Allow(c)) => w.claim(T_COUNTRY_ALLOW, c)?,
            Some(Countries::Deny(c)) => w.claim(T_COUNTRY_DENY, c)?,
            None => {}
        }
        if let Some(v) = self.origin {
            w.claim(T_ORIGIN, v.as_bytes())?;
        }
        if let Some(v) = self.watermark {
            w.claim(T_WATERMARK, v)?;
        }
        Ok(w.pos)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

const B64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Per position in a 4-character group, each character's sextet already shifted into place in a 24-bit word; bit
/// 31 marks a character outside the alphabet. Four lookups and three ORs decode a group, and one test at the end
/// catches any bad character.
static B64_DECODE: [[u32; 256]; 4] = {
    let mut t = [[1u32 << 31; 256]; 4];
    let mut i = 0;
    while i < 64 {
        let c = B64_ALPHABET[i] as usize;
        let v = i as u32;
        t[0][c] = v << 18;
        t[1][c] = v << 12;
        t[2][c] = v << 6;
        t[3][c] = v;
        i += 1;
    }
    t
};

/// Unpadded base64url encoding.
fn encode_b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |v: u32| char::from(B64_ALPHABET[(v & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        if chunk.len() > 1 {
            out.push(sym(n >> 6));
        }
        if chunk.len() > 2 {
            out.push(sym(n));
        }
    }
    out
}

/// base64url-decode `token` into `buf` after the length checks; returns the byte length.
///
/// Our own decoder rather than the `base64` crate's: a table lookup per character with one validity check at the
/// end is ~2x faster on a 150-character token, and this sits on every request. It refuses padding, characters
/// outside the URL-safe alphabet and non-zero trailing bits, so every token has exactly one spelling.
fn decode_b64(token: &str, buf: &mut TokenBuf) -> Result<usize, Reason> {
    let t = token.as_bytes();
    if t.len() > MAX_TOKEN_CHARS || t.len() < (HEADER_LEN + TAG_LEN) * 4 / 3 || t.len() % 4 == 1 {
        return Err(Reason::Malformed);
    }
    let d = |pos: usize, c: u8| B64_DECODE[pos][usize::from(c)];
    let mut bad = 0u32;
    let quads = t.chunks_exact(4);
    let tail = quads.remainder();
    let full = t.len() / 4 * 3;
    for (q, o) in quads.zip(buf.bytes[..full].chunks_exact_mut(3)) {
        let n = d(0, q[0]) | d(1, q[1]) | d(2, q[2]) | d(3, q[3]);
        bad |= n;
        o.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let n = match *tail {
        [] => full,
        [a, b] => {
            let n = d(0, a) | d(1, b);
            // Canonical: the bits that do not fit in the last byte must be zero.
            bad |= n | ((n & 0xFFFF) << 16);
            buf.bytes[full] = (n >> 16) as u8;
            full + 1
        }
        [a, b, c] => {
            let n = d(0, a) | d(1, b) | d(2, c);
            bad |= n | ((n & 0xFF) << 24);
            buf.bytes[full] = (n >> 16) as u8;
            buf.bytes[full + 1] = (n >> 8) as u8;
            full + 2
        }
        _ => return Err(Reason::Malformed),
    };
    if bad & 0xFF00_0000 != 0 {
        return Err(Reason::Malformed);
    }
    Ok(n)
}

/// Parse the version and key id, the two fields needed before the MAC can be checked.
fn parse_preamble(bytes: &[u8]) -> Result<KeyId, Reason> {
    if bytes.len() < HEADER_LEN + TAG_LEN {
        return Err(Reason::Malformed);
    }
    if bytes[0] >> 4 != VERSION_MAJOR {
        return Err(Reason::UnsupportedVersion);
    }
    Ok(u16::from_be_bytes([bytes[1], bytes[2]]))
}

/// Parse the signed bytes (header and claims, tag excluded) into claims. Strict: canonical order, no duplicates,
/// each known claim's syntax checked, unknown critical claims refused, unknown optional ones skipped.
fn parse_body(body: &[u8]) -> Result<Claims<'_>, Reason> {
    if body.len() < HEADER_LEN {
        return Err(Reason::Malformed);
    }
    let mut token_id = [0u8; TOKEN_ID_LEN];
    token_id.copy_from_slice(&body[3..15]);
    let mut c = Claims {
        minor: body[0] & 0x0f,
        key_id: u16::from_be_bytes([body[1], body[2]]),
        token_id,
        iat: be_u32(body, 15),
        nbf: be_u32(body, 19),
        exp: be_u32(body, 23),
        permissions: Permissions(body[27]),
        ..Claims::default()
    };
    let mut rest = &body[HEADER_LEN..];
    let mut last_type: Option<u8> = None;
    let mut unsupported = false;
    while !rest.is_empty() {
        let [t, len, tail @ ..] = rest else {
            return Err(Reason::Malformed);
        };
        let (t, len) = (*t, usize::from(*len));
        if last_type.is_some_and(|l| t <= l) || tail.len() < len {
            return Err(Reason::Malformed);
        }
        last_type = Some(t);
        let (v, next) = tail.split_at(len);
        rest = next;
        let ok = match t {
            T_CHANNEL => {
                valid_id(v) && {
                    c.channel = Some(Text(v));
                    true
                }
            }
            T_TIER => {
                v.len() == 1 && {
                    c.tier = Some(v[0]);
                    true
                }
            }
            T_DATA => {
                valid_blob(v, MAX_DATA_LEN) && {
                    c.data = Some(v);
                    true
                }
            }
            T_ASSET => {
                valid_asset(v) && {
                    c.asset = Some(Text(v));
                    true
                }
            }
            T_PREFIX => {
                valid_prefix(v) && {
                    c.prefix = Some(Text(v));
                    true
                }
            }
            T_SHARE | T_VIEWER | T_SESSION | T_CAMPAIGN => {
                valid_id(v) && {
                    let s = Some(Text(v));
                    match t {
                        T_SHARE => c.share = s,
                        T_VIEWER => c.viewer = s,
                        T_SESSION => c.session = s,
                        _ => c.campaign = s,
                    }
                    true
                }
            }
            T_IP => decode_ip(v).map(|p| c.ip = Some(p)).is_some(),
            T_COUNTRY_ALLOW | T_COUNTRY_DENY => {
                // One country rule per token: allow and deny together have no clear meaning.
                c.countries.is_none() && valid_countries(v) && {
                    c.countries = Some(if t == T_COUNTRY_ALLOW {
                        Countries::Allow(v)
                    } else {
                        Countries::Deny(v)
                    });
                    true
                }
            }
            T_ORIGIN => {
                valid_origin(v) && {
                    c.origin = Some(Text(v));
                    true
                }
            }
            T_WATERMARK => {
                valid_blob(v, MAX_WATERMARK_LEN) && {
                    c.watermark = Some(v);
                    true
                }
            }
            // A token of our minor version or older can only hold types this code knows: anything else is not a
            // canonical encoding (re-minting would drop it, giving one grant two spellings).
            // (`<=`, not `==`: VERSION_MINOR is 0 today, and the rule must survive its first bump.)
            #[allow(clippy::absurd_extreme_comparisons)]
            _ if c.minor <= VERSION_MINOR => false,
            // A claim from a later minor version: skip it if optional, refuse if critical. Keep parsing so a
            // malformed tail still reports `malformed`.
            _ => {
                unsupported |= t & CRITICAL != 0;
                true
            }
        };
        if !ok {
            return Err(Reason::Malformed);
        }
    }
    if unsupported {
        return Err(Reason::UnsupportedClaim);
    }
    if c.nbf < c.iat || c.exp <= c.nbf || c.permissions.0 == 0 || (c.asset.is_none() && c.prefix.is_none()) {
        return Err(Reason::Malformed);
    }
    Ok(c)
}

/// Decode a token **without** checking its MAC, for diagnosis and support tools only. Never grant access on this.
pub fn decode_unverified<'b>(token: &str, buf: &'b mut TokenBuf) -> Result<Claims<'b>, Reason> {
    let n = decode_b64(token, buf)?;
    let bytes = &buf.bytes[..n];
    parse_preamble(bytes)?;
    parse_body(&bytes[..n - TAG_LEN])
}

// ---------------------------------------------------------------------------------------------------------------
// Policy checks

fn in_asset(path: &str, asset: &[u8]) -> bool {
    // "/<asset>/..." : the asset is exactly the first segment, and something follows it.
    let p = path.as_bytes();
    p.len() > asset.len() + 2 && p[0] == b'/' && p[1..].starts_with(asset) && p[asset.len() + 1] == b'/'
}

impl Policy {
    /// Check the time window and lifetime alone (what diagnosis reports first).
    pub fn check_time(&self, c: &Claims<'_>, now: u64) -> Result<(), Reason> {
        if u64::from(c.exp) - u64::from(c.iat) > u64::from(self.max_ttl) {
            return Err(Reason::TtlTooLong);
        }
        let leeway = u64::from(self.leeway);
        if now.saturating_add(leeway) < u64::from(c.nbf) {
            return Err(Reason::NotYetValid);
        }
        // Valid while now < exp + leeway: at exactly exp + leeway the token is expired.
        if now >= u64::from(c.exp) + leeway {
            return Err(Reason::Expired);
        }
        Ok(())
    }

    /// Check authenticated claims against a request: time, scope, permission, IP, country, origin, in that order.
    pub fn check(&self, c: &Claims<'_>, facts: &RequestFacts<'_>) -> Result<(), Reason> {
        self.check_time(c, facts.now)?;
        if c.asset.is_some_and(|a| !in_asset(facts.path, a.as_bytes()))
            || c.prefix.is_some_and(|p| !path_in_scope(facts.path, p.as_str()))
        {
            return Err(Reason::OutOfScope);
        }
        if !c.permissions.contains(facts.resource.permission()) {
            return Err(Reason::PermissionDenied);
        }
        if let Some(net) = c.ip
            && !facts.client_ip.is_some_and(|ip| net.contains(ip))
        {
            return Err(Reason::IpMismatch);
        }
        if let Some(rule) = c.countries
            && !rule.permits(facts.country)
        {
            return Err(Reason::GeoDenied);
        }
        if let Some(want) = c.origin
            && !facts
                .origin
                .is_some_and(|got| got.as_bytes().eq_ignore_ascii_case(want.as_bytes()))
        {
            return Err(Reason::OriginDenied);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Verifier and minter

/// Checks tokens against every key of a ring. Keyed once; reuse it for every request.
#[derive(Clone)]
pub struct Verifier {
    // One pre-keyed HMAC state per key: cloning it skips hashing the padded key (two SHA-256 blocks) per request.
    keys: Vec<(KeyId, HmacSha256)>,
    policy: Policy,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<KeyId> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("Verifier")
            .field("key_ids", &ids)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Constant-time comparison of two 16-byte tags: XOR-fold into two words and compare both at once, so the time does
/// not depend on where they differ (and it is cheaper than a byte-by-byte `ct_eq`).
fn tag_eq(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    if a.len() != TAG_LEN || b.len() != TAG_LEN {
        return false;
    }
    let diff = (word(a, 0) ^ word(b, 0)) | (word(a, 8) ^ word(b, 8));
    bool::from(diff.ct_eq(&0))
}

fn keyed(secret: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; fall back to an empty key rather than panic.
    HmacSha256::new_from_slice(secret).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
}

impl Verifier {
    /// Key a verifier with every key of the ring (next, active and retiring all verify).
    pub fn new(ring: &KeyRing, policy: Policy) -> Self {
        Verifier {
            keys: ring.iter().map(|e| (e.id, keyed(e.secret.expose()))).collect(),
            policy,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decode a token and check its MAC; no request facts. Returns the claims of an authentic token.
    pub fn authenticate<'b>(&self, token: &str, buf: &'b mut TokenBuf) -> Result<Claims<'b>, Reason> {
        let n = decode_b64(token, buf)?;
        let bytes = &buf.bytes[..n];
        let key_id = parse_preamble(bytes)?;
        let mac = self
            .keys
            .iter()
            .find(|(id, _)| *id == key_id)
            .map(|(_, m)| m)
            .ok_or(Reason::UnknownKey)?;
        let (body, tag) = bytes.split_at(n - TAG_LEN);
        let mut m = mac.clone();
        m.update(body);
        let full = m.finalize().into_bytes();
        if !tag_eq(&full[..TAG_LEN], tag) {
            return Err(Reason::BadSignature);
        }
        parse_body(body)
    }

    /// Verify a token for a request: MAC, then time, scope, permission and bindings. One stable reason on failure.
    /// Revocation is checked by the caller against the revocation state.
    pub fn verify<'b>(
        &self,
        token: &str,
        facts: &RequestFacts<'_>,
        buf: &'b mut TokenBuf,
    ) -> Result<Claims<'b>, Reason> {
        let claims = self.authenticate(token, buf)?;
        self.policy.check(&claims, facts)?;
        Ok(claims)
    }
}

/// Mints tokens with the ring's active key.
#[derive(Clone)]
pub struct Minter {
    key_id: KeyId,
    mac: HmacSha256,
    policy: Policy,
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Minter")
            .field("key_id", &self.key_id)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Minter {
    /// Key a minter with the ring's active key.
    pub fn new(ring: &KeyRing, policy: Policy) -> Result<Self, KeyError> {
        let active = ring.active().ok_or(KeyError::UnknownKey)?;
        Ok(Minter {
            key_id: active.id,
            mac: keyed(active.secret.expose()),
            policy,
        })
    }

    /// The id of the key this minter signs with.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Mint a token. `claims.key_id` and `claims.minor` are ignored: the minter writes its own.
    pub fn mint(&self, claims: &Claims<'_>) -> Result<String, MintError> {
        claims.validate(&self.policy)?;
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        let n = claims.encode_body(self.key_id, &mut buf)?;
        let mut m = self.mac.clone();
        m.update(&buf[..n]);
        let full = m.finalize().into_bytes();
        buf[n..n + TAG_LEN].copy_from_slice(&full[..TAG_LEN]);
        Ok(encode_b64(&buf[..n + TAG_LEN]))
    }

    /// The number of signed bytes (header and claims, tag excluded) `claims` would produce: ≤ 119 keeps the HMAC at
    /// two SHA-256 compressions per verify after pre-keying.
    pub fn signed_len(&self, claims: &Claims<'_>) -> Result<usize, MintError> {
        let mut buf = [0u8; MAX_TOKEN_BYTES];
        claims.encode_body(self.key_id, &mut buf)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn swar_ascii_check_matches_naive(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(all_visible_ascii(&v), v.iter().all(|b| (0x21..=0x7e).contains(b)));
        }

        #[test]
        fn swar_ascii_check_edge_bytes(v in proptest::collection::vec(prop::sample::select(vec![0x20u8, 0x21, 0x7e, 0x7f, 0x80, 0xff, 0x41]), 0..40)) {
            prop_assert_eq!(all_visible_ascii(&v), v.iter().all(|b| (0x21..=0x7e).contains(b)));
        }

        #[test]
        fn base64_round_trips_and_is_canonical(v in proptest::collection::vec(any::<u8>(), 44..=384)) {
            let text = encode_b64(&v);
            let mut buf = TokenBuf::new();
            let n = decode_b64(&text, &mut buf).unwrap();
            prop_assert_eq!(&buf.bytes[..n], &v[..]);
        }
    }

    #[test]
    fn tag_eq_detects_every_byte() {
        let a = [7u8; TAG_LEN];
        assert!(tag_eq(&a, &a));
        for i in 0..TAG_LEN {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!tag_eq(&a, &b));
        }
        assert!(!tag_eq(&a, &a[..15]));
    }
}
