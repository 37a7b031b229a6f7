//! Token format v1: mint and verify.
//!
//! A token is a binary, versioned record (fixed-width header, then length-prefixed claims in ascending type order,
//! then a truncated HMAC-SHA256 tag), encoded as unpadded base64url so it fits in one URL path segment. The full
//! specification is `docs/token-format.md`; this module is its reference implementation.
//!
//! Verification never allocates: the token is decoded into a caller-owned [`TokenBuf`] and the returned [`Claims`]
//! borrow from it. A [`Verifier`] is keyed once (one pre-keyed HMAC state per key) and reused for every request.
//!
//! The parts, each in its own file, from the bottom up:
//! - `types`: what a token says ([`Claims`], [`Permissions`], [`Text`], [`Countries`], [`IpPrefix`]; [`OwnedClaims`]
//!   when it must outlive its buffer) and what a request brings ([`RequestFacts`], [`Resource`]);
//! - `wire`: the claims record as bytes — the format constants, one syntax check per claim shared by encoder and
//!   decoder, encoding and the strict decoder;
//! - `base64`: the URL-safe text form, canonical (one spelling per token);
//! - `policy`: the [`Policy`] a verifier and minter apply: time window, scope, permission, bindings;
//! - `mac`: HMAC keying (once, `crate::hmac256`) and the constant-time tag compare, and the [`Verifier`] and
//!   [`Minter`] built on them (with [`decode_unverified`], the one path that skips the MAC, beside them).

mod base64;
mod mac;
mod policy;
mod types;
mod wire;

pub use mac::{Minter, Verifier, decode_unverified};
pub use policy::{DEFAULT_LEEWAY, DEFAULT_MAX_TTL, Policy};
pub use types::{
    Claims, Countries, IpPrefix, MintError, OwnedClaims, OwnedCountries, Permissions, RequestFacts, Resource, Text,
    TokenBuf, tier,
};
pub use wire::{HEADER_LEN, MAX_TOKEN_BYTES, MAX_TOKEN_CHARS, TAG_LEN, TOKEN_ID_LEN, VERSION_MAJOR, VERSION_MINOR};
