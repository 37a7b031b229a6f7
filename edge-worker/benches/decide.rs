//! `decide` per segment request, with a realistic revocation state (100k revoked among 1M issued, 1,000
//! watermarks), against a raw pre-keyed HMAC-SHA256 of the same token's signed bytes measured in the same run.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use sharegate_edge::engine::{Decision, Request, StateInput};
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    IssuedToken, RevokedToken, ScopeKind, SnapshotParams, StateKey, StateView, Watermark, build_snapshot,
};
use sharegate_shared::token::{Claims, IpPrefix, Minter, Permissions, Policy};
use std::hint::black_box;

const NOW: u32 = 1_800_000_000;

fn id(i: u64) -> [u8; 12] {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut out = [0u8; 12];
    for chunk in out.chunks_mut(4) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&x.to_le_bytes()[..4]);
    }
    out
}

fn bench(c: &mut Criterion) {
    let signing = [0x42u8; 32];
    let keys = format!("1:active:{}", hex::encode(signing));
    let settings: &[(&str, &str)] = &[
        ("SHAREGATE_SIGNING_KEYS", &keys),
        ("SHAREGATE_STATE_KEY", &"33".repeat(32)),
    ];
    let engine = Engine::new(EdgeConfig::from_source(&settings).unwrap());

    // The full state under `cargo bench`; a small one when only listed or run once as a test.
    let n_issued = if std::env::args().any(|a| a == "--bench") {
        1_000_000u64
    } else {
        10_000
    };
    let issued: Vec<IssuedToken> = (0..n_issued)
        .map(|i| IssuedToken {
            id: id(i),
            iat: NOW - 100,
            exp: NOW + 3600,
        })
        .collect();
    let revoked: Vec<RevokedToken> = (0..n_issued)
        .step_by(10)
        .map(|i| RevokedToken {
            id: id(i),
            iat: NOW - 100,
            exp: NOW + 3600,
        })
        .collect();
    let watermarks: Vec<Watermark> = (0..1000)
        .map(|i| Watermark::new(ScopeKind::Viewer, format!("viewer-{i}").as_bytes(), NOW - 50))
        .collect();
    let params = SnapshotParams {
        generation: 1,
        built_at: NOW,
        cutoff: NOW,
        expire_before: NOW - 60,
        max_token_lifetime: 86_400,
    };
    let state = build_snapshot(
        &params,
        issued.iter().copied(),
        &revoked,
        &watermarks,
        &StateKey::new([0x33; 32]),
    )
    .unwrap();
    let view = StateView::open(&state).unwrap();

    // A live, unrevoked token (id 1 is not among every tenth).
    let ring = KeyRing::with_active(1, SecretKey::new(signing), 86_400);
    let claims = Claims {
        token_id: id(1),
        iat: NOW - 100,
        nbf: NOW - 100,
        exp: NOW + 3500,
        permissions: Permissions::PLAYBACK,
        asset: Some("demo-asset-0001".into()),
        share: Some("sh_8f3a2b1c".into()),
        viewer: Some("v_1234567890".into()),
        channel: Some("email".into()),
        campaign: Some("spring-26".into()),
        ip: IpPrefix::new("203.0.113.0".parse().unwrap(), 24),
        ..Claims::default()
    };
    let minter = Minter::new(&ring, Policy::default()).unwrap();
    let token = minter.mint(&claims).unwrap();
    let signed_len = minter.signed_len(&claims).unwrap();
    let signed = vec![0x10u8; signed_len];
    let path = format!("/t/{token}/demo-asset-0001/v0/seg_00042.ts");
    let req = Request {
        method: "GET",
        host: "cdn.example.com",
        path: &path,
        client_ip: Some("203.0.113.77".parse().unwrap()),
        country: Some(*b"DE"),
        ..Request::default()
    };
    assert!(matches!(
        engine.decide(&req, u64::from(NOW), StateInput::fresh(&view)),
        Decision::Allow(_)
    ));
    let prekeyed = hmac::Hmac::<sha2::Sha256>::new_from_slice(&signed).unwrap();

    let mut g = c.benchmark_group("edge");
    g.bench_function("raw_hmac_prekeyed", |b| {
        b.iter(|| {
            let mut m = prekeyed.clone();
            m.update(black_box(&signed));
            black_box(m.finalize().into_bytes())
        })
    });
    g.bench_function("decide_segment", |b| {
        b.iter(|| black_box(engine.decide(black_box(&req), u64::from(NOW), StateInput::fresh(&view))))
    });
    g.bench_function("open_state_and_decide_segment", |b| {
        b.iter(|| {
            let v = StateView::open(black_box(&state)).unwrap();
            black_box(engine.decide(black_box(&req), u64::from(NOW), StateInput::fresh(&v)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
