//! Token format v1: test vectors, attacks, boundaries and properties.
#![allow(clippy::unwrap_used)]

mod common_token;
#[path = "../testkit.rs"]
mod testkit;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common_token::{claims_from_json, claims_to_json};
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use serde_json::{Value, json};
use sharegate_shared::Reason;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{
    Claims, Countries, IpPrefix, Minter, Permissions, Policy, RequestFacts, Resource, TAG_LEN, TokenBuf, Verifier,
    decode_unverified,
};
use std::net::IpAddr;

const KEY: [u8; 32] = *b"sharegate-test-vector-key-000001";
const OTHER_KEY: [u8; 32] = *b"sharegate-test-vector-key-000002";
const T0: u32 = 1_800_000_000;

fn ring() -> KeyRing {
    KeyRing::with_active(7, SecretKey::new(KEY), 24 * 3600)
}

fn minter() -> Minter {
    Minter::new(&ring(), Policy::default()).unwrap()
}

fn verifier() -> Verifier {
    Verifier::new(&ring(), Policy::default())
}

/// A typical link: asset scope, share, viewer, channel, campaign and an IPv4 /24 binding.
fn typical() -> Claims<'static> {
    testkit::typical_claims(*b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", T0, T0 + 3600)
}

fn facts(path: &str, now: u64) -> RequestFacts<'_> {
    RequestFacts {
        path,
        resource: Resource::Segment,
        now,
        client_ip: Some("203.0.113.77".parse().unwrap()),
        country: Some(*b"DE"),
        origin: Some("https://player.example.com"),
    }
}

/// Sign arbitrary body bytes with a key, as a hostile or future minter could.
fn sign_raw(key: &[u8], body: &[u8]) -> String {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    let tag = m.finalize().into_bytes();
    let mut all = body.to_vec();
    all.extend_from_slice(&tag[..TAG_LEN]);
    URL_SAFE_NO_PAD.encode(all)
}

fn raw_bytes(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token).unwrap()
}

fn verify(token: &str, f: &RequestFacts<'_>) -> Result<(), Reason> {
    let mut buf = TokenBuf::new();
    verifier().verify(token, f, &mut buf).map(|_| ())
}

// --- test vectors --------------------------------------------------------------------------------------------

fn resource_name(r: Resource) -> &'static str {
    match r {
        Resource::MultivariantPlaylist => "multivariant_playlist",
        Resource::MediaPlaylist => "media_playlist",
        Resource::Segment => "segment",
        Resource::Init => "init",
        Resource::Key => "key",
        Resource::Download => "download",
    }
}

fn resource_from(s: &str) -> Resource {
    match s {
        "multivariant_playlist" => Resource::MultivariantPlaylist,
        "media_playlist" => Resource::MediaPlaylist,
        "segment" => Resource::Segment,
        "init" => Resource::Init,
        "key" => Resource::Key,
        _ => Resource::Download,
    }
}

fn facts_json(f: &RequestFacts<'_>) -> Value {
    json!({
        "path": f.path, "resource": resource_name(f.resource), "now": f.now,
        "client_ip": f.client_ip.map(|i| i.to_string()),
        "country": f.country.map(|c| String::from_utf8(c.to_vec()).unwrap()),
        "origin": f.origin,
    })
}

fn facts_from(v: &Value) -> RequestFacts<'_> {
    RequestFacts {
        path: v["path"].as_str().unwrap(),
        resource: resource_from(v["resource"].as_str().unwrap()),
        now: v["now"].as_u64().unwrap(),
        client_ip: v["client_ip"].as_str().map(|s| s.parse::<IpAddr>().unwrap()),
        country: v["country"].as_str().map(|s| s.as_bytes().try_into().unwrap()),
        origin: v["origin"].as_str(),
    }
}

/// Build the vector file from scratch: valid tokens (mint side writes them) and one invalid token per reason.
fn generate_vectors() -> Value {
    let m = minter();
    let now = u64::from(T0) + 10;
    let seg = "/demo-asset-0001/v0/seg_001.ts";
    let mut valid = Vec::new();
    let mut add_valid = |name: &str, c: &Claims<'_>, f: RequestFacts<'_>| {
        let token = m.mint(c).unwrap();
        let bytes = raw_bytes(&token);
        let mut signed = c.clone();
        signed.key_id = 7;
        valid.push(json!({
            "name": name, "claims": claims_to_json(&signed), "token": token,
            "signed_hex": hex::encode(&bytes[..bytes.len() - TAG_LEN]), "facts": facts_json(&f),
        }));
    };
    add_valid("typical", &typical(), facts(seg, now));
    let minimal = Claims {
        token_id: [0xAA; 12],
        iat: T0,
        nbf: T0,
        exp: T0 + 600,
        permissions: Permissions::PLAYBACK,
        prefix: Some("/live/ch1/".into()),
        ..Claims::default()
    };
    add_valid("minimal_prefix", &minimal, facts("/live/ch1/seg_9.ts", now));
    let full = Claims {
        token_id: [0x5A; 12],
        iat: T0,
        nbf: T0 + 5,
        exp: T0 + 86_400,
        permissions: Permissions::PLAYBACK.union(Permissions::DOWNLOAD),
        asset: Some("movie_42".into()),
        prefix: Some("/movie_42/hd".into()),
        share: Some("sh_1".into()),
        viewer: Some("alice@example.com".into()),
        session: Some("sess-77".into()),
        campaign: Some("launch".into()),
        channel: Some("embed".into()),
        ip: IpPrefix::new("2001:db8:abcd::".parse().unwrap(), 48),
        countries: Some(Countries::Allow(b"DEFRNL")),
        origin: Some("https://player.example.com".into()),
        watermark: Some(&[0xde, 0xad, 0xbe, 0xef]),
        tier: Some(3),
        data: Some(b"opaque"),
        ..Claims::default()
    };
    let mut ff = facts("/movie_42/hd/seg_3.ts", now);
    ff.client_ip = Some("2001:db8:abcd:12::1".parse().unwrap());
    add_valid("all_claims", &full, ff);

    // A future minor version with an optional claim this verifier does not know: skipped, still valid.
    let base = m.mint(&minimal).unwrap();
    let mut body = raw_bytes(&base);
    body.truncate(body.len() - TAG_LEN);
    body[0] = 0x13;
    // Claims are in ascending type order: 0x70 goes before the prefix claim (0x82), right after the header.
    body.splice(28..28, [0x70, 2, b'h', b'i']);
    let future_token = sign_raw(&KEY, &body);
    let mut fc = claims_to_json(&minimal);
    fc["key_id"] = json!(7);
    valid.push(json!({
        "name": "future_minor_optional_claim_skipped", "claims": fc, "token": future_token, "verify_only": true,
        "signed_hex": hex::encode(&body), "facts": facts_json(&facts("/live/ch1/seg_9.ts", now)),
    }));

    let t = m.mint(&typical()).unwrap();
    let mut invalid = Vec::new();
    let mut add_invalid = |reason: Reason, token: String, f: RequestFacts<'_>| {
        invalid.push(json!({ "reason": reason.as_str(), "token": token, "facts": facts_json(&f) }));
    };
    add_invalid(Reason::Malformed, "not*a*token".repeat(8), facts(seg, now));
    let mut v2 = raw_bytes(&t);
    v2.truncate(v2.len() - TAG_LEN);
    v2[0] = 0x20;
    add_invalid(Reason::UnsupportedVersion, sign_raw(&KEY, &v2), facts(seg, now));
    let mut crit = raw_bytes(&t);
    crit.truncate(crit.len() - TAG_LEN);
    // A later minor version (1.1) with a critical claim this verifier does not know.
    crit[0] = 0x11;
    crit.extend_from_slice(&[0xF0, 1, 0]);
    add_invalid(Reason::UnsupportedClaim, sign_raw(&KEY, &crit), facts(seg, now));
    let mut other = raw_bytes(&t);
    other.truncate(other.len() - TAG_LEN);
    other[1..3].copy_from_slice(&99u16.to_be_bytes());
    add_invalid(Reason::UnknownKey, sign_raw(&OTHER_KEY, &other), facts(seg, now));
    let mut flipped = raw_bytes(&t);
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    add_invalid(Reason::BadSignature, URL_SAFE_NO_PAD.encode(&flipped), facts(seg, now));
    add_invalid(Reason::Expired, t.clone(), facts(seg, u64::from(T0) + 3600 + 60));
    let later = Claims {
        nbf: T0 + 1000,
        exp: T0 + 2000,
        ..typical()
    };
    add_invalid(
        Reason::NotYetValid,
        m.mint(&later).unwrap(),
        facts(seg, u64::from(T0) + 1000 - 61),
    );
    let long = Claims {
        exp: T0 + 2 * 86_400,
        ..typical()
    };
    let lenient = Minter::new(
        &ring(),
        Policy {
            leeway: 60,
            max_ttl: 7 * 86_400,
        },
    )
    .unwrap();
    add_invalid(Reason::TtlTooLong, lenient.mint(&long).unwrap(), facts(seg, now));
    add_invalid(
        Reason::OutOfScope,
        t.clone(),
        facts("/demo-asset-0002/v0/seg_001.ts", now),
    );
    let mut fk = facts(seg, now);
    fk.resource = Resource::Download;
    add_invalid(Reason::PermissionDenied, t.clone(), fk);
    let mut fi = facts(seg, now);
    fi.client_ip = Some("198.51.100.1".parse().unwrap());
    add_invalid(Reason::IpMismatch, t.clone(), fi);
    let mut fg = facts("/movie_42/hd/seg_3.ts", now);
    fg.client_ip = Some("2001:db8:abcd::9".parse().unwrap());
    fg.country = Some(*b"US");
    let full_token = m.mint(&full).unwrap();
    add_invalid(Reason::GeoDenied, full_token.clone(), fg);
    let mut fo = fg;
    fo.country = Some(*b"FR");
    fo.origin = Some("https://evil.example.net");
    add_invalid(Reason::OriginDenied, full_token, fo);
    json!({
        "comment": "sharegate token format v1 test vectors; see docs/token-format.md. Test keys only.",
        "keys": [{ "id": 7, "secret_hex": hex::encode(KEY), "state": "active" }],
        "policy": { "leeway": 60, "max_ttl": 86400 },
        "valid": valid,
        "invalid": invalid,
    })
}

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/tokens.json");

#[test]
fn vectors_mint_and_verify() {
    if std::env::var_os("SHAREGATE_REGEN_VECTORS").is_some() {
        let text = serde_json::to_string_pretty(&generate_vectors()).unwrap();
        std::fs::write(VECTORS, text + "\n").unwrap();
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(VECTORS).unwrap()).unwrap();
    let key = SecretKey::from_hex(file["keys"][0]["secret_hex"].as_str().unwrap()).unwrap();
    let ring = KeyRing::with_active(7, key, 86_400);
    let m = Minter::new(&ring, Policy::default()).unwrap();
    let v = Verifier::new(&ring, Policy::default());
    let valid = file["valid"].as_array().unwrap();
    assert!(valid.len() >= 4);
    for case in valid {
        let name = case["name"].as_str().unwrap();
        let owned = claims_from_json(&case["claims"]);
        let expected = owned.as_claims();
        let token = case["token"].as_str().unwrap();
        if case.get("verify_only").is_none() {
            // Mint side: the same claims give byte-for-byte the same token.
            assert_eq!(m.mint(&expected).unwrap(), token, "{name}");
            assert_eq!(
                m.signed_len(&expected).unwrap() * 2,
                case["signed_hex"].as_str().unwrap().len()
            );
        }
        // Verify side.
        let mut buf = TokenBuf::new();
        let got = v.verify(token, &facts_from(&case["facts"]), &mut buf).unwrap();
        let mut got_norm = got.clone();
        got_norm.minor = 0;
        assert_eq!(got_norm, expected, "{name}");
        // Decoded claims survive the owned form unchanged (what the edge keeps past the token buffer).
        assert_eq!(got.to_owned_claims().as_claims(), got, "{name}");
    }
    let invalid = file["invalid"].as_array().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for case in invalid {
        let want = Reason::from_code(case["reason"].as_str().unwrap()).unwrap();
        let mut buf = TokenBuf::new();
        let got = v.verify(case["token"].as_str().unwrap(), &facts_from(&case["facts"]), &mut buf);
        assert_eq!(got.err(), Some(want), "vector for {want}");
        seen.insert(want.as_str());
    }
    for r in [
        "malformed",
        "unsupported_version",
        "unsupported_claim",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "ttl_too_long",
        "out_of_scope",
        "permission_denied",
        "ip_mismatch",
        "geo_denied",
        "origin_denied",
    ] {
        assert!(seen.contains(r), "no invalid vector for {r}");
    }
}

// --- structure and attacks ----------------------------------------------------------------------------------

#[test]
fn typical_token_fits_two_sha256_blocks() {
    let n = minter().signed_len(&typical()).unwrap();
    assert!(n <= 119, "typical token signs {n} bytes");
    let t = minter().mint(&typical()).unwrap();
    assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
}

/// The classic delimiter-free attack: a signature over `path || exp` lets `/v/1` + `T` pass as `/v/` + `1T`. Here
/// every field is fixed-width or length-prefixed, so the same bytes have one parse, and any re-split changes the
/// signed bytes and breaks the MAC.
#[test]
fn delimiter_free_resplit_fails() {
    let m = minter();
    let c = Claims {
        prefix: Some("/v/1".into()),
        asset: None,
        ip: None,
        ..typical()
    };
    let token = m.mint(&c).unwrap();
    let bytes = raw_bytes(&token);
    let tag = bytes[bytes.len() - TAG_LEN..].to_vec();
    let body = &bytes[..bytes.len() - TAG_LEN];
    // Find the prefix claim (type 0x82, length 4, "/v/1").
    let at = body.windows(6).position(|w| w == b"\x82\x04/v/1").unwrap();

    // Attack 1: shorten the prefix by one byte and hand its last byte to whatever follows, keeping the tag.
    let mut resplit = body.to_vec();
    resplit[at + 1] = 3;
    resplit.extend_from_slice(&tag);
    let mut buf = TokenBuf::new();
    let forged = URL_SAFE_NO_PAD.encode(&resplit);
    let r = verifier().verify(&forged, &facts("/v/", u64::from(T0)), &mut buf);
    assert_eq!(r.err(), Some(Reason::BadSignature));

    // Attack 2: move the "1" of the path into the expiry (exp = 1T in decimal-string terms is impossible in a
    // fixed-width field; the binary analogue shifts a byte from the claim into the header's exp). Every such
    // re-split of the same bytes with the original tag is refused.
    for len in 0..=255u8 {
        if len == 4 {
            continue;
        }
        let mut alt = body.to_vec();
        alt[at + 1] = len;
        alt.extend_from_slice(&tag);
        let mut buf = TokenBuf::new();
        let r = verifier().authenticate(&URL_SAFE_NO_PAD.encode(&alt), &mut buf);
        assert!(r.is_err(), "length {len} accepted");
    }

    // Attack 3: a genuine token for `/v/` expiring later cannot be made to verify for `/v/1` either: the scope
    // check is on segment boundaries and the MAC covers the length byte.
    let short = Claims {
        prefix: Some("/v/".into()),
        ..c.clone()
    };
    let short_token = m.mint(&short).unwrap();
    // Same header, but the claim's length byte differs, so the signed bytes (and tags) differ.
    let short_bytes = raw_bytes(&short_token);
    assert_eq!(short_bytes[at], 0x82);
    assert_eq!(short_bytes[at + 1], 3);
    assert_ne!(short_bytes[short_bytes.len() - TAG_LEN..], tag[..]);
    assert_eq!(
        verify(&token, &facts("/v/10/x.ts", u64::from(T0))),
        Err(Reason::OutOfScope)
    );
    assert_eq!(verify(&token, &facts("/v/1/x.ts", u64::from(T0))), Ok(()));

    // The same concatenated claim values framed differently are different signed bytes.
    let body_short = raw_bytes(&short_token);
    assert_ne!(body_short, bytes);
}

#[test]
fn expiry_boundaries_and_leeway() {
    let t = minter().mint(&typical()).unwrap();
    let p = "/demo-asset-0001/x.ts";
    let exp = u64::from(T0) + 3600;
    assert_eq!(verify(&t, &facts(p, exp + 59)), Ok(()));
    assert_eq!(verify(&t, &facts(p, exp + 60)), Err(Reason::Expired));
    assert_eq!(verify(&t, &facts(p, u64::MAX)), Err(Reason::Expired));
    // Clock skew: an edge whose clock is behind the minter's by up to the leeway still accepts.
    assert_eq!(verify(&t, &facts(p, u64::from(T0) - 60)), Ok(()));
    assert_eq!(verify(&t, &facts(p, u64::from(T0) - 61)), Err(Reason::NotYetValid));
    assert_eq!(verify(&t, &facts(p, 0)), Err(Reason::NotYetValid));
    let strict = Verifier::new(
        &ring(),
        Policy {
            leeway: 0,
            max_ttl: 86_400,
        },
    );
    let mut buf = TokenBuf::new();
    assert_eq!(strict.verify(&t, &facts(p, exp), &mut buf).err(), Some(Reason::Expired));
    assert!(strict.verify(&t, &facts(p, exp - 1), &mut buf).is_ok());
}

#[test]
fn an_entitlements_end_has_no_leeway() {
    use sharegate_shared::token::tier;
    let p = "/demo-asset-0001/x.ts";
    let exp = u64::from(T0) + 3600;
    let trial = minter()
        .mint(&Claims {
            tier: Some(tier::PLAN_TRIAL | tier::ENDS_ENTITLEMENT),
            ..typical()
        })
        .unwrap();
    assert_eq!(verify(&trial, &facts(p, exp - 1)), Ok(()));
    assert_eq!(verify(&trial, &facts(p, exp)), Err(Reason::Expired));
    // The plan alone changes nothing; nbf keeps its leeway either way.
    let plan_only = minter()
        .mint(&Claims {
            tier: Some(tier::PLAN_TRIAL),
            ..typical()
        })
        .unwrap();
    assert_eq!(verify(&plan_only, &facts(p, exp + 59)), Ok(()));
    assert_eq!(verify(&trial, &facts(p, u64::from(T0) - 60)), Ok(()));
    assert_eq!(
        tier::plan_name(tier::PLAN_TRIAL | tier::ENDS_ENTITLEMENT),
        Some("trial")
    );
    assert_eq!(tier::plan_code("gold"), tier::PLAN_OTHER);
}

#[test]
fn max_ttl_is_enforced_on_both_sides() {
    let c = Claims {
        exp: T0 + 86_401,
        ..typical()
    };
    assert_eq!(
        minter().mint(&c).unwrap_err(),
        sharegate_shared::token::MintError::TtlTooLong
    );
    let exact = Claims {
        exp: T0 + 86_400,
        ..typical()
    };
    assert!(minter().mint(&exact).is_ok());
    let short = Verifier::new(
        &ring(),
        Policy {
            leeway: 60,
            max_ttl: 600,
        },
    );
    let mut buf = TokenBuf::new();
    let t = minter().mint(&typical()).unwrap();
    assert_eq!(
        short
            .verify(&t, &facts("/demo-asset-0001/x.ts", u64::from(T0)), &mut buf)
            .err(),
        Some(Reason::TtlTooLong)
    );
}

#[test]
fn wrong_and_rotated_keys() {
    let t = minter().mint(&typical()).unwrap();
    let p = "/demo-asset-0001/x.ts";
    // A verifier holding only another key: unknown_key, not bad_signature.
    let other = KeyRing::with_active(8, SecretKey::new(OTHER_KEY), 86_400);
    let mut buf = TokenBuf::new();
    let v = Verifier::new(&other, Policy::default());
    assert_eq!(
        v.verify(&t, &facts(p, u64::from(T0)), &mut buf).err(),
        Some(Reason::UnknownKey)
    );
    // Same id, different secret: bad_signature.
    let same_id = KeyRing::with_active(7, SecretKey::new(OTHER_KEY), 86_400);
    let v = Verifier::new(&same_id, Policy::default());
    assert_eq!(
        v.verify(&t, &facts(p, u64::from(T0)), &mut buf).err(),
        Some(Reason::BadSignature)
    );
    // Rotation: tokens of the retiring key keep verifying; new tokens use the new key.
    let mut r = ring();
    r.add_next(8, SecretKey::new(OTHER_KEY)).unwrap();
    let v = Verifier::new(&r, Policy::default());
    assert!(v.verify(&t, &facts(p, u64::from(T0)), &mut buf).is_ok());
    r.promote(u64::from(T0)).unwrap();
    let m2 = Minter::new(&r, Policy::default()).unwrap();
    assert_eq!(m2.key_id(), 8);
    let t2 = m2.mint(&typical()).unwrap();
    let v = Verifier::new(&r, Policy::default());
    assert!(v.verify(&t, &facts(p, u64::from(T0)), &mut buf).is_ok());
    assert!(v.verify(&t2, &facts(p, u64::from(T0)), &mut buf).is_ok());
}

#[test]
fn bindings() {
    let t = minter().mint(&typical()).unwrap();
    let p = "/demo-asset-0001/x.ts";
    let now = u64::from(T0);
    let mut f = facts(p, now);
    f.client_ip = Some("::ffff:203.0.113.9".parse().unwrap());
    assert_eq!(verify(&t, &f), Ok(()), "IPv4-mapped IPv6 client");
    f.client_ip = None;
    assert_eq!(
        verify(&t, &f),
        Err(Reason::IpMismatch),
        "unknown client IP fails an IP binding"
    );
    let deny = Claims {
        countries: Some(Countries::Deny(b"USCA")),
        ip: None,
        ..typical()
    };
    let td = minter().mint(&deny).unwrap();
    let mut f = facts(p, now);
    f.country = Some(*b"CA");
    assert_eq!(verify(&td, &f), Err(Reason::GeoDenied));
    f.country = None;
    assert_eq!(verify(&td, &f), Ok(()), "deny list passes an unknown country");
    let allow = Claims {
        countries: Some(Countries::Allow(b"DE")),
        ip: None,
        ..typical()
    };
    let ta = minter().mint(&allow).unwrap();
    assert_eq!(
        verify(&ta, &f),
        Err(Reason::GeoDenied),
        "allow list fails an unknown country"
    );
    let embed = Claims {
        origin: Some("https://Player.Example.com".into()),
        ip: None,
        ..typical()
    };
    let te = minter().mint(&embed).unwrap();
    let mut f = facts(p, now);
    assert_eq!(verify(&te, &f), Ok(()), "origin compared case-insensitively");
    f.origin = Some("https://player.example.com.evil.net");
    assert_eq!(verify(&te, &f), Err(Reason::OriginDenied));
    f.origin = None;
    assert_eq!(verify(&te, &f), Err(Reason::OriginDenied));
}

#[test]
fn asset_scope_is_exactly_the_first_segment() {
    let t = minter().mint(&typical()).unwrap();
    let now = u64::from(T0);
    for bad in [
        "/demo-asset-00010/x.ts",
        "/demo-asset-000/x.ts",
        "/demo-asset-0001",
        "/demo-asset-0001/",
        "/x/demo-asset-0001/a",
    ] {
        assert_eq!(verify(&t, &facts(bad, now)), Err(Reason::OutOfScope), "{bad}");
    }
    assert_eq!(verify(&t, &facts("/demo-asset-0001/v1/a.ts", now)), Ok(()));
}

#[test]
fn mint_refuses_bad_claims() {
    let m = minter();
    use sharegate_shared::token::MintError::InvalidClaim;
    let cases: Vec<(Claims<'static>, &str)> = vec![
        (
            Claims {
                asset: Some("../x".into()),
                ..typical()
            },
            "asset",
        ),
        (
            Claims {
                asset: Some("a/b".into()),
                ..typical()
            },
            "asset",
        ),
        (
            Claims {
                asset: None,
                prefix: None,
                ..typical()
            },
            "scope",
        ),
        (
            Claims {
                prefix: Some("/a/../b".into()),
                ..typical()
            },
            "prefix",
        ),
        (
            Claims {
                prefix: Some("relative".into()),
                ..typical()
            },
            "prefix",
        ),
        (
            Claims {
                viewer: Some("has space".into()),
                ..typical()
            },
            "viewer",
        ),
        (
            Claims {
                viewer: Some("".into()),
                ..typical()
            },
            "viewer",
        ),
        (
            Claims {
                permissions: Permissions(0),
                ..typical()
            },
            "permissions",
        ),
        (
            Claims {
                nbf: T0 - 1,
                ..typical()
            },
            "nbf",
        ),
        (Claims { exp: T0, ..typical() }, "exp"),
        (
            Claims {
                countries: Some(Countries::Allow(b"de")),
                ..typical()
            },
            "countries",
        ),
        (
            Claims {
                countries: Some(Countries::Allow(b"DEF")),
                ..typical()
            },
            "countries",
        ),
        (
            Claims {
                origin: Some("player.example.com".into()),
                ..typical()
            },
            "origin",
        ),
        (
            Claims {
                watermark: Some(&[0; 33]),
                ..typical()
            },
            "watermark",
        ),
        (
            Claims {
                data: Some(&[0; 65]),
                ..typical()
            },
            "data",
        ),
        (
            Claims {
                ip: Some(IpPrefix {
                    addr: "10.0.0.1".parse().unwrap(),
                    len: 24,
                }),
                ..typical()
            },
            "ip",
        ),
    ];
    for (c, field) in cases {
        assert_eq!(m.mint(&c).unwrap_err(), InvalidClaim(field), "{field}");
    }
}

#[test]
fn oversized_and_garbage_tokens_are_malformed() {
    let v = verifier();
    let mut buf = TokenBuf::new();
    let f = facts("/demo-asset-0001/x.ts", u64::from(T0));
    for t in [
        String::new(),
        "A".repeat(10),
        "A".repeat(100_000),
        "=".repeat(80),
        format!("{}=", minter().mint(&typical()).unwrap()),
        format!("{}+", &minter().mint(&typical()).unwrap()[1..]),
        "é".repeat(60),
        "\0".repeat(80),
    ] {
        assert_eq!(
            v.verify(&t, &f, &mut buf).err(),
            Some(Reason::Malformed),
            "{:?}",
            &t[..t.len().min(20)]
        );
    }
    // Non-canonical base64 (non-zero trailing bits) is refused, so a token has exactly one spelling.
    let t = minter().mint(&typical()).unwrap();
    let last = t.chars().last().unwrap();
    let idx = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        .find(last)
        .unwrap();
    if !t.len().is_multiple_of(4) {
        let alt = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".as_bytes()[idx ^ 1] as char;
        let mut nc = t.clone();
        nc.pop();
        nc.push(alt);
        assert!(v.verify(&nc, &f, &mut buf).is_err());
    }
}

#[test]
fn signed_but_structurally_broken_is_malformed() {
    let t = minter().mint(&typical()).unwrap();
    let mut body = raw_bytes(&t);
    body.truncate(body.len() - TAG_LEN);
    // Claims out of order: swap in a channel (0x01) after the critical ones.
    let mut out_of_order = body.clone();
    out_of_order.extend_from_slice(&[0x01, 1, b'x']);
    let mut buf = TokenBuf::new();
    let v = verifier();
    assert_eq!(
        v.authenticate(&sign_raw(&KEY, &out_of_order), &mut buf).err(),
        Some(Reason::Malformed)
    );
    // A claim whose length runs past the end.
    let mut overrun = body.clone();
    overrun.extend_from_slice(&[0xF1, 200, 1]);
    assert_eq!(
        v.authenticate(&sign_raw(&KEY, &overrun), &mut buf).err(),
        Some(Reason::Malformed)
    );
    // nbf before iat.
    let mut swapped = body.clone();
    swapped[19..23].copy_from_slice(&(T0 - 5).to_be_bytes());
    assert_eq!(
        v.authenticate(&sign_raw(&KEY, &swapped), &mut buf).err(),
        Some(Reason::Malformed)
    );
    // An unknown optional claim in a v1.0 token (found by the fuzzer): v1.0 defines no such type, so it is not a
    // canonical v1.0 encoding; only a later minor version may carry claims we skip.
    let mut unknown_optional = body.clone();
    unknown_optional.splice(28..28, [0x22, 1, b'@']);
    assert_eq!(
        v.authenticate(&sign_raw(&KEY, &unknown_optional), &mut buf).err(),
        Some(Reason::Malformed)
    );
    // Host bits set in an IP prefix.
    let ip_at = body.windows(2).position(|w| w == [0x87, 5]).unwrap();
    let mut host_bits = body.clone();
    host_bits[ip_at + 6] = 0x01;
    host_bits[ip_at + 1] = 5;
    host_bits[ip_at + 3] = 23;
    assert_eq!(
        v.authenticate(&sign_raw(&KEY, &host_bits), &mut buf).err(),
        Some(Reason::Malformed)
    );
    // decode_unverified reads claims but is never a grant: a forged tag still decodes for diagnosis.
    let forged = sign_raw(&OTHER_KEY, &body);
    assert!(decode_unverified(&forged, &mut buf).is_ok());
    assert_eq!(v.authenticate(&forged, &mut buf).err(), Some(Reason::BadSignature));
}

// --- properties ---------------------------------------------------------------------------------------------

fn arb_id() -> impl Strategy<Value = String> {
    "[!-~]{1,40}"
}

prop_compose! {
    fn arb_claims()(
        token_id in any::<[u8; 12]>(),
        iat in 1u32..4_000_000_000,
        nbf_off in 0u32..100,
        ttl in 1u32..86_300,
        perms in 1u8..64,
        asset in proptest::option::of("[A-Za-z0-9_~-]{1,64}"),
        prefix_parts in proptest::collection::vec("[a-z0-9_-]{1,8}", 1..4),
        use_prefix in any::<bool>(),
        share in proptest::option::of(arb_id()),
        viewer in proptest::option::of(arb_id()),
        session in proptest::option::of(arb_id()),
        campaign in proptest::option::of(arb_id()),
        channel in proptest::option::of(arb_id()),
        ip in proptest::option::of((any::<[u8; 16]>(), any::<bool>(), 0u8..=128)),
        countries in proptest::option::of((any::<bool>(), proptest::collection::vec("[A-Z]{2}", 1..5))),
        watermark in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=32)),
        tier in proptest::option::of(any::<u8>()),
        data in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=64)),
    ) -> (Claims<'static>, ) {
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let prefix = (use_prefix || asset.is_none()).then(|| leak(format!("/{}", prefix_parts.join("/"))));
        let ip = ip.map(|(b, v4, len)| if v4 {
            IpPrefix::new(IpAddr::V4([b[0], b[1], b[2], b[3]].into()), len % 33).unwrap()
        } else {
            IpPrefix::new(IpAddr::V6(b.into()), len).unwrap()
        });
        let countries = countries.map(|(allow, list)| {
            let codes: &'static [u8] = Box::leak(list.concat().into_bytes().into_boxed_slice());
            if allow { Countries::Allow(codes) } else { Countries::Deny(codes) }
        });
        let nbf = iat.saturating_add(nbf_off);
        (Claims {
            minor: 0,
            key_id: 7,
            token_id,
            iat,
            nbf,
            exp: nbf.saturating_add(ttl).min(iat + 86_400).max(nbf + 1),
            permissions: Permissions(perms),
            asset: asset.map(|s| leak(s).into()),
            prefix: prefix.map(Into::into),
            share: share.map(|s| leak(s).into()),
            viewer: viewer.map(|s| leak(s).into()),
            session: session.map(|s| leak(s).into()),
            campaign: campaign.map(|s| leak(s).into()),
            channel: channel.map(|s| leak(s).into()),
            ip,
            countries,
            origin: None,
            watermark: watermark.map(|w| &*Box::leak(w.into_boxed_slice())),
            tier,
            data: data.map(|d| &*Box::leak(d.into_boxed_slice())),
        },)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn round_trip((c,) in arb_claims()) {
        let t = minter().mint(&c).unwrap();
        let mut buf = TokenBuf::new();
        let got = verifier().authenticate(&t, &mut buf).unwrap();
        prop_assert_eq!(got, c);
    }

    /// The owned form holds every claim: borrowing it back gives the same claims, and it mints the same token.
    #[test]
    fn owned_claims_round_trip((c,) in arb_claims()) {
        let owned = c.to_owned_claims();
        prop_assert_eq!(owned.as_claims(), c.clone());
        prop_assert_eq!(minter().mint(&owned.as_claims()).unwrap(), minter().mint(&c).unwrap());
    }

    #[test]
    fn any_bit_flip_is_refused((c,) in arb_claims(), bit in any::<usize>()) {
        let t = minter().mint(&c).unwrap();
        let mut bytes = raw_bytes(&t);
        let bit = bit % (bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        let mut buf = TokenBuf::new();
        prop_assert!(verifier().authenticate(&URL_SAFE_NO_PAD.encode(&bytes), &mut buf).is_err());
    }

    #[test]
    fn any_char_change_is_refused((c,) in arb_claims(), pos in any::<usize>(), ch in "[A-Za-z0-9_-]") {
        let t = minter().mint(&c).unwrap();
        let pos = pos % t.len();
        let mut s = t.clone().into_bytes();
        prop_assume!(s[pos] != ch.as_bytes()[0]);
        s[pos] = ch.as_bytes()[0];
        let mut buf = TokenBuf::new();
        prop_assert!(verifier().authenticate(std::str::from_utf8(&s).unwrap(), &mut buf).is_err());
    }

    #[test]
    fn truncation_and_extension_are_refused((c,) in arb_claims(), cut in any::<usize>(), extra in proptest::collection::vec(any::<u8>(), 1..40)) {
        let t = minter().mint(&c).unwrap();
        let bytes = raw_bytes(&t);
        let cut = cut % bytes.len();
        let mut buf = TokenBuf::new();
        prop_assert!(verifier().authenticate(&URL_SAFE_NO_PAD.encode(&bytes[..cut]), &mut buf).is_err());
        let mut ext = bytes.clone();
        ext.extend_from_slice(&extra);
        prop_assert!(verifier().authenticate(&URL_SAFE_NO_PAD.encode(&ext), &mut buf).is_err());
        // Also on the text: dropping or adding characters.
        prop_assert!(verifier().authenticate(&t[..t.len() - 1], &mut buf).is_err());
        let longer = format!("{t}A");
        prop_assert!(verifier().authenticate(&longer, &mut buf).is_err());
    }

    #[test]
    fn never_verifies_outside_scope((c,) in arb_claims(), path in "/[a-zA-Z0-9_~./-]{0,40}") {
        let t = minter().mint(&c).unwrap();
        let Ok(norm) = sharegate_shared::normalize_path(&path) else { return Ok(()); };
        let f = RequestFacts {
            path: &norm,
            resource: Resource::Segment,
            now: u64::from(c.nbf),
            client_ip: c.ip.map(|p| p.addr),
            country: None,
            origin: None,
        };
        let mut buf = TokenBuf::new();
        if verifier().verify(&t, &f, &mut buf).is_ok() {
            if let Some(a) = c.asset {
                let want = format!("/{a}/");
                prop_assert!(norm.starts_with(&want));
            }
            if let Some(p) = c.prefix {
                prop_assert!(sharegate_shared::path_in_scope(&norm, p.as_str()));
                let under = format!("{}/", p.as_str().trim_end_matches('/'));
                prop_assert!(norm.as_ref() == p.as_str() || norm.starts_with(&under));
            }
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,600}") {
        let mut buf = TokenBuf::new();
        let _ = verifier().authenticate(&s, &mut buf);
        let _ = decode_unverified(&s, &mut buf);
    }
}
