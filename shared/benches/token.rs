//! Token hot paths. The baseline is a raw, pre-keyed HMAC-SHA256 over the same signed bytes, measured in the same
//! run: report `verify / raw_hmac` rather than absolute times (the machines are shared and noisy).
#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use sharegate_shared::token::{Claims, Minter, Policy, RequestFacts, Resource, TAG_LEN, TokenBuf, Verifier};
use std::hint::black_box;

// The synthetic world every bench shares; included by path (see the header of shared/testkit.rs).
#[path = "../testkit.rs"]
mod testkit;

const KEY: [u8; 32] = [0x42; 32];
const T0: u32 = 1_800_000_000;

fn typical() -> Claims<'static> {
    testkit::typical_claims([7; 12], T0, T0 + 3600)
}

fn bench(c: &mut Criterion) {
    let ring = testkit::ring(KEY);
    let minter = Minter::new(&ring, Policy::default()).unwrap();
    let verifier = Verifier::new(&ring, Policy::default());
    let token = minter.mint(&typical()).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    let signed = raw[..raw.len() - TAG_LEN].to_vec();
    eprintln!("typical token: {} chars, {} signed bytes", token.len(), signed.len());
    let facts = RequestFacts {
        path: "/demo-asset-0001/v0/seg_00042.ts",
        resource: Resource::Segment,
        now: u64::from(T0) + 100,
        client_ip: Some("203.0.113.77".parse().unwrap()),
        country: Some(*b"DE"),
        origin: None,
    };
    let prekeyed = Hmac::<sha2::Sha256>::new_from_slice(&KEY).unwrap();

    let mut g = c.benchmark_group("token");
    g.bench_function("raw_hmac_prekeyed", |b| {
        b.iter(|| {
            let mut m = prekeyed.clone();
            m.update(black_box(&signed));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("raw_hmac_keyed_per_call", |b| {
        b.iter(|| {
            let mut m = Hmac::<sha2::Sha256>::new_from_slice(black_box(&KEY)).unwrap();
            m.update(black_box(&signed));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("verify_full", |b| {
        let mut buf = TokenBuf::new();
        b.iter(|| {
            let c = verifier.verify(black_box(&token), black_box(&facts), &mut buf).unwrap();
            black_box(c.exp);
        })
    });
    // The decoder verify uses (base64-simd), alone, and the scalar `base64` crate beside it.
    g.bench_function("base64_decode_only", |b| {
        let mut out = [0u8; 400];
        b.iter(|| {
            let n = black_box(token.as_bytes()).len() * 3 / 4;
            black_box(
                base64_simd::URL_SAFE_NO_PAD
                    .decode(token.as_bytes(), base64_simd::Out::from_slice(&mut out[..n]))
                    .unwrap()
                    .len(),
            )
        })
    });
    g.bench_function("base64_decode_scalar_crate", |b| {
        let mut out = [0u8; 400];
        b.iter(|| {
            black_box(
                URL_SAFE_NO_PAD
                    .decode_slice(black_box(token.as_bytes()), &mut out[..])
                    .unwrap(),
            )
        })
    });
    g.bench_function("decode_unverified", |b| {
        let mut buf = TokenBuf::new();
        b.iter(|| {
            black_box(
                sharegate_shared::token::decode_unverified(black_box(&token), &mut buf)
                    .unwrap()
                    .exp,
            )
        })
    });
    // The least a link says (one asset claim): the fixed cost of decoding, against the typical token's claims.
    let minimal = minter
        .mint(&testkit::playback_claims([7; 12], "demo-asset-0001", T0, T0 + 3600))
        .unwrap();
    g.bench_function("decode_unverified_minimal", |b| {
        let mut buf = TokenBuf::new();
        b.iter(|| {
            black_box(
                sharegate_shared::token::decode_unverified(black_box(&minimal), &mut buf)
                    .unwrap()
                    .exp,
            )
        })
    });
    g.bench_function("authenticate_only", |b| {
        let mut buf = TokenBuf::new();
        b.iter(|| black_box(verifier.authenticate(black_box(&token), &mut buf).unwrap().exp))
    });
    g.bench_function("mint", |b| {
        b.iter(|| black_box(minter.mint(black_box(&typical())).unwrap()))
    });
    g.bench_function("normalize_path", |b| {
        b.iter(|| {
            black_box(sharegate_shared::normalize_path(black_box(
                "/demo-asset-0001/v0/seg_00042.ts",
            )))
        })
    });
    g.finish();

    // The figure of record: verify against the raw HMAC, interleaved in one loop (see testkit::interleaved_ratio).
    let mut buf = TokenBuf::new();
    testkit::interleaved_ratio(
        "token: verify_full/raw_hmac_prekeyed",
        2000,
        256,
        || {
            let mut m = prekeyed.clone();
            m.update(black_box(&signed));
            black_box(m.finalize().into_bytes());
        },
        || {
            black_box(
                verifier
                    .verify(black_box(&token), black_box(&facts), &mut buf)
                    .unwrap()
                    .exp,
            );
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
