//! The MAC: HMAC-SHA256 keyed once per key (`crate::hmac256`), the tag truncated to 128 bits and compared in
//! constant time; and the [`Verifier`] and [`Minter`], which hold those keyed states and join the text form, the
//! wire record and the policy into one call each.

use super::base64::{decode_b64, encode_b64};
use super::policy::Policy;
use super::types::{Claims, MintError, RequestFacts, TokenBuf};
use super::wire::{MAX_TOKEN_BYTES, TAG_LEN, parse_body, parse_preamble};
use crate::hmac256::PrekeyedHmac;
use crate::keys::{KeyError, KeyId, KeyRing};
use crate::reason::Reason;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use subtle::ConstantTimeEq;

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

/// Checks tokens against every key of a ring. Keyed once; reuse it for every request.
#[derive(Clone)]
pub struct Verifier {
    // One pre-keyed HMAC per key: keying once skips hashing the padded key (two SHA-256 blocks) per request.
    keys: Vec<(KeyId, PrekeyedHmac)>,
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

impl Verifier {
    /// Key a verifier with every key of the ring (next, active and retiring all verify).
    pub fn new(ring: &KeyRing, policy: Policy) -> Self {
        Verifier {
            keys: ring
                .iter()
                .map(|e| (e.id, PrekeyedHmac::new(e.secret.expose())))
                .collect(),
            policy,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Decode a token and check its MAC; no request facts. Returns the claims of an authentic token.
    #[inline]
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
        let full = mac.tag(body);
        if !tag_eq(&full[..TAG_LEN], tag) {
            return Err(Reason::BadSignature);
        }
        parse_body(body)
    }

    /// Verify a token for a request: MAC, then time, scope, permission and bindings. One stable reason on failure.
    /// Revocation is checked by the caller against the revocation state.
    #[inline]
    pub fn verify<'b>(
        &self,
        token: &str,
        facts: &RequestFacts<'_>,
        buf: &'b mut TokenBuf,
    ) -> Result<Claims<'b>, Reason> {
        // Checked where `authenticate` left them and handed back in the same result: moving the ~230-byte claims
        // out of it and into a new one was a copy each.
        let authenticated = self.authenticate(token, buf);
        if let Ok(claims) = &authenticated {
            self.policy.check(claims, facts)?;
        }
        authenticated
    }
}

// Kept beside `Verifier::authenticate` so the one path that skips the MAC is read next to the one that checks it.
/// Decode a token **without** checking its MAC, for diagnosis and support tools only. Never grant access on this.
pub fn decode_unverified<'b>(token: &str, buf: &'b mut TokenBuf) -> Result<Claims<'b>, Reason> {
    let n = decode_b64(token, buf)?;
    let bytes = &buf.bytes[..n];
    parse_preamble(bytes)?;
    parse_body(&bytes[..n - TAG_LEN])
}

/// Mints tokens with the ring's active key.
#[derive(Clone)]
pub struct Minter {
    key_id: KeyId,
    mac: PrekeyedHmac,
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
            mac: PrekeyedHmac::new(active.secret.expose()),
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
        let full = self.mac.tag(&buf[..n]);
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
mod tests {
    use super::*;

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
