//! The claims record as bytes: a fixed header, then length-prefixed claims in strictly ascending type order (the
//! signed bytes), then the tag. Encoding for the minter, a strict decoder for the verifier, and one syntax check per
//! claim that both use. `docs/token-format.md` is the specification, byte by byte.

use super::policy::Policy;
use super::types::{Claims, Countries, IpPrefix, MintError, Permissions, Text};
use crate::keys::KeyId;
use crate::path::normalize_path;
use crate::reason::Reason;
use alloc::borrow::Cow;
use core::net::IpAddr;

/// The major version this code implements. A token with another major version is refused.
pub const VERSION_MAJOR: u8 = 1;
/// The minor version this code writes. Newer minors are read, skipping their unknown non-critical claims.
pub const VERSION_MINOR: u8 = 0;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 28;
/// Bytes of the MAC tag (HMAC-SHA256 truncated to 128 bits).
pub const TAG_LEN: usize = 16;
/// Bytes of a token id (64 random bits and a millisecond clock; docs/token-format.md §3).
pub const TOKEN_ID_LEN: usize = 12;
/// Hard maximum of a decoded token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 384;
/// Hard maximum of an encoded token, in characters; checked before any decoding.
pub const MAX_TOKEN_CHARS: usize = MAX_TOKEN_BYTES / 3 * 4;

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

// ---------------------------------------------------------------------------------------------------------------
// Claim syntax: one validator per claim, used by both the encoder and the decoder, so a minter can never write a
// token that a verifier refuses, and a verifier accepts only what a minter could write.

// Claim syntax is checked on every request, so the byte checks avoid a branch per byte.
fn valid_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= 255 && all_visible_ascii(v)
}

/// Whether every byte is in 0x21..=0x7E, eight bytes at a time (SWAR). Past eight bytes the last word overlaps the
/// one before it, so there is no loop over a remainder.
fn all_visible_ascii(v: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte that is < 0x21 (exact as an existence test for thresholds up to 0x80) or > 0x7E
    // (adding 1 sets the high bit of 0x7F, and `| w` catches bytes already >= 0x80).
    let bad = |w: u64| (w.wrapping_sub(ONES * 0x21) & !w & HIGH) | ((w.wrapping_add(ONES) | w) & HIGH);
    let word = |c: &[u8; 8]| u64::from_le_bytes(*c);
    match v.last_chunk::<8>() {
        Some(last) => {
            let (words, _) = v.as_chunks::<8>();
            words.iter().fold(bad(word(last)), |acc, c| acc | bad(word(c))) == 0
        }
        // Byte by byte, without branches: padding a stack word and loading it whole would stall on store
        // forwarding (the copy's narrow stores cannot feed one wide load), which cost more than this loop.
        None => v.iter().fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e)),
    }
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
    let max = match family {
        4 => 32u8,
        6 => 128u8,
        _ => return None,
    };
    if len > max || addr.len() != usize::from(len).div_ceil(8) {
        return None;
    }
    // The address in the top bits, whatever the family; assembled in a register (copying into a stack array and
    // loading it as one word stalls on store forwarding).
    let bits = addr
        .iter()
        .zip((0..128).step_by(8).rev())
        .fold(0u128, |acc, (&b, shift)| acc | (u128::from(b) << shift));
    // Canonical only: host bits must already be zero, so one network has one encoding (`len` is at most 128).
    let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    if bits & host != 0 {
        return None;
    }
    let ip = if family == 4 {
        IpAddr::V4(((bits >> 96) as u32).into())
    } else {
        IpAddr::V6(bits.into())
    };
    Some(IpPrefix { addr: ip, len })
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
    pub(super) fn encode_body(&self, key_id: KeyId, out: &mut [u8; MAX_TOKEN_BYTES]) -> Result<usize, MintError> {
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

/// Parse the version and key id, the two fields needed before the MAC can be checked.
pub(super) fn parse_preamble(bytes: &[u8]) -> Result<KeyId, Reason> {
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
pub(super) fn parse_body(body: &[u8]) -> Result<Claims<'_>, Reason> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn swar_ascii_check_matches_naive(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(all_visible_ascii(&v), v.iter().all(|b| (0x21..=0x7e).contains(b)));
        }

        /// The decoder takes exactly the canonical encodings: what `IpPrefix::new` keeps unchanged.
        #[test]
        fn decode_ip_is_canonical(family in prop::sample::select(vec![4u8, 6, 5]), len in 0u8..=130,
                                  addr in proptest::collection::vec(any::<u8>(), 0..=17), zero_host in any::<bool>()) {
            let mut addr = addr;
            let n = usize::from(len).div_ceil(8).min(16);
            if zero_host && addr.len() >= n {
                addr.truncate(n);
                if len % 8 != 0 && n > 0 {
                    addr[n - 1] &= 0xffu8 << (8 - len % 8);
                }
            }
            let mut v = vec![family, len];
            v.extend_from_slice(&addr);
            let mut full = [0u8; 16];
            let reference = match family {
                4 if addr.len() == n && len <= 32 => {
                    full[..n].copy_from_slice(&addr);
                    let ip = IpAddr::V4([full[0], full[1], full[2], full[3]].into());
                    IpPrefix::new(ip, len).filter(|p| p.addr == ip)
                }
                6 if addr.len() == n && len <= 128 => {
                    full[..n].copy_from_slice(&addr);
                    let ip = IpAddr::V6(full.into());
                    IpPrefix::new(ip, len).filter(|p| p.addr == ip)
                }
                _ => None,
            };
            prop_assert_eq!(decode_ip(&v), reference);
        }

        #[test]
        fn swar_ascii_check_edge_bytes(v in proptest::collection::vec(prop::sample::select(vec![0x20u8, 0x21, 0x7e, 0x7f, 0x80, 0xff, 0x41]), 0..40)) {
            prop_assert_eq!(all_visible_ascii(&v), v.iter().all(|b| (0x21..=0x7e).contains(b)));
        }
    }
}
