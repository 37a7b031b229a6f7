//! Fuzzes token decoding and verification: no input may panic, and an authentic token must have exactly one
//! encoding.
//!
//! The first input byte picks a mode:
//! - bit 0 clear: the rest is the token string as it would arrive in a URL path segment (length, alphabet, base64
//!   and preamble checks, and the MAC refusal);
//! - bit 0 set: the rest is a token *body* (header and claims), which the target signs with the fixed key and
//!   encodes with the `base64` crate, so the MAC passes and the fuzzer reaches the claim parser, the policy checks
//!   and the canonical-encoding check below. With bit 1 also set, the last character is then replaced by the one
//!   the upper six bits pick: a second spelling of the same bytes (non-zero trailing bits) must not authenticate.
//!
//! Properties checked, besides "never panics":
//! - whatever the token decoder accepts is valid unpadded base64url to the `base64` crate too (a differential check
//!   of the hand-written decoder);
//! - an authentic token decodes to the same claims with and without the MAC check;
//! - re-minting the claims of an authentic v1.<our minor> token gives back the very same string (canonical encoding;
//!   the minter writes its own minor version, so a token of another minor cannot round-trip);
//! - `verify` succeeds only if `authenticate` does, and then agrees with `Policy::check` on the claims.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use sharegate_shared::Reason;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{
    Claims, MAX_TOKEN_BYTES, MintError, Minter, Policy, RequestFacts, Resource, TAG_LEN, TokenBuf, VERSION_MINOR,
    Verifier, decode_unverified,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

const KEY_ID: u16 = 7;
const SECRET: [u8; 32] = *b"sharegate-fuzz-fixed-secret-key!";
/// A fixed "now" (2026-11-24) for the first fixed request; the third request takes its time from the token.
const NOW: u64 = 1_795_500_000;

struct Fixture {
    verifier: Verifier,
    minter: Minter,
    policy: Policy,
    /// Pre-keyed HMAC with the same key, to sign fuzzed bodies.
    mac: Hmac<Sha256>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let policy = Policy::default();
        let ring = KeyRing::with_active(KEY_ID, SecretKey::new(SECRET), policy.max_ttl);
        Fixture {
            verifier: Verifier::new(&ring, policy),
            minter: Minter::new(&ring, policy).expect("the ring has an active key"),
            policy,
            mac: Hmac::<Sha256>::new_from_slice(&SECRET).expect("HMAC takes any key length"),
        }
    })
}

/// Fixed request facts: a segment request in an asset, and a playlist request with no client facts at all.
fn fixed_facts() -> [RequestFacts<'static>; 2] {
    [
        RequestFacts {
            path: "/demo-asset-0001/720p/seg-00042.ts",
            resource: Resource::Segment,
            now: NOW,
            client_ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 57))),
            country: Some(*b"DE"),
            origin: Some("https://player.example"),
        },
        RequestFacts {
            path: "/demo-asset-0001/master.m3u8",
            resource: Resource::MultivariantPlaylist,
            now: 0,
            client_ip: None,
            country: None,
            origin: None,
        },
    ]
}

fn check_verify(s: &str, facts: &RequestFacts<'_>, authed: &Result<Claims<'_>, Reason>) {
    let f = fixture();
    let mut buf = TokenBuf::new();
    match (authed, f.verifier.verify(s, facts, &mut buf)) {
        (Ok(claims), Ok(verified)) => {
            assert_eq!(&verified, claims, "verify and authenticate decoded different claims");
            assert_eq!(
                f.policy.check(claims, facts),
                Ok(()),
                "verify passed what the policy refuses"
            );
        }
        (Ok(claims), Err(reason)) => assert_eq!(f.policy.check(claims, facts), Err(reason), "verify and policy differ"),
        (Err(refused), Err(reason)) => assert_eq!(*refused, reason, "verify and authenticate refuse differently"),
        (Err(refused), Ok(_)) => panic!("verify passed a token authenticate refused ({refused:?})"),
    }
}

fn check_token(s: &str) {
    let f = fixture();

    let mut unverified_buf = TokenBuf::new();
    let unverified = decode_unverified(s, &mut unverified_buf);
    let mut authed_buf = TokenBuf::new();
    let authed = f.verifier.authenticate(s, &mut authed_buf);

    if unverified.is_ok() || authed.is_ok() {
        assert!(
            URL_SAFE_NO_PAD.decode(s).is_ok(),
            "the token decoder accepted what is not canonical base64url"
        );
    }
    if let Ok(claims) = &authed {
        assert_eq!(
            unverified.as_ref().ok(),
            Some(claims),
            "MAC check changed the decoded claims"
        );
        if claims.minor == VERSION_MINOR {
            match f.minter.mint(claims) {
                Ok(again) => assert_eq!(again, s, "an authentic token that is not in canonical form"),
                // `authenticate` does not apply the lifetime policy (`verify` does); the minter does.
                Err(MintError::TtlTooLong) => assert!(claims.exp - claims.iat > f.policy.max_ttl),
                Err(e) => panic!("the minter refuses claims the verifier accepted: {e}"),
            }
        }
    }

    for facts in &fixed_facts() {
        check_verify(s, facts, &authed);
    }
    // Facts that fit the token's own scope and time, so the binding checks after them run too.
    if let Ok(claims) = &unverified {
        let path = match (claims.asset, claims.prefix) {
            (Some(asset), _) => format!("/{asset}/index.m3u8"),
            (None, Some(prefix)) => format!("{}/index.m3u8", prefix.as_str().trim_end_matches('/')),
            (None, None) => String::from("/index.m3u8"),
        };
        let facts = RequestFacts {
            path: &path,
            resource: Resource::MediaPlaylist,
            now: u64::from(claims.nbf),
            client_ip: claims.ip.map(|p| p.addr),
            country: Some(*b"FR"),
            origin: claims.origin.map(|o| o.as_str()),
        };
        check_verify(s, &facts, &authed);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Ok(s) = std::str::from_utf8(rest) {
            check_token(s);
        }
        return;
    }
    if rest.len() + TAG_LEN > MAX_TOKEN_BYTES {
        return;
    }
    let mut bytes = Vec::with_capacity(rest.len() + TAG_LEN);
    bytes.extend_from_slice(rest);
    // Name the fixed key, so the fuzzer spends its time on the claims rather than on finding the key id.
    if let Some(id) = bytes.get_mut(1..3) {
        id.copy_from_slice(&KEY_ID.to_be_bytes());
    }
    let mut mac = fixture().mac.clone();
    mac.update(&bytes);
    let tag = mac.finalize().into_bytes();
    bytes.extend_from_slice(&tag[..TAG_LEN]);
    let mut token = URL_SAFE_NO_PAD.encode(&bytes);
    if mode & 2 != 0 {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        token.pop();
        token.push(char::from(ALPHABET[usize::from(mode >> 2)]));
    }
    check_token(&token);
});
