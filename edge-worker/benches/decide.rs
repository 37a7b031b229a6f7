//! `decide` per segment request, with a realistic revocation state (100k revoked among 1M issued, 1,000
//! watermarks), against a raw pre-keyed HMAC-SHA256 of the same token's signed bytes measured in the same run.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{KeyInit, Mac};
use sharegate_edge::engine::{Decision, Request, StateInput};
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::revocation::{StateKey, StateView};
use sharegate_shared::token::{Minter, Policy};
use std::hint::black_box;

// The synthetic world every bench shares; included by path (see the header of shared/testkit.rs).
#[path = "../../shared/testkit.rs"]
mod testkit;

const NOW: u32 = 1_800_000_000;

fn bench(c: &mut Criterion) {
    let signing = [0x42u8; 32];
    let state_key = [0x33u8; 32];
    let engine = Engine::new(EdgeConfig::from_source(&testkit::edge_settings(signing, state_key)).unwrap());

    // The full state under `cargo bench`; a small one when only listed or run once as a test.
    let n_issued = if std::env::args().any(|a| a == "--bench") {
        1_000_000u64
    } else {
        10_000
    };
    let state = testkit::edge_snapshot(n_issued, NOW, NOW + 3600, &StateKey::new(state_key));
    let view = StateView::open(&state).unwrap();

    // A live, unrevoked token (id 1 is not among every tenth).
    let ring = testkit::ring(signing);
    let claims = testkit::typical_claims(testkit::mixed_id(1), NOW - 100, NOW + 3500);
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
    // The same request as hls.js sends it with CMCD on (query mode, our view id as `sid`): a steady-state segment
    // (read, no event) and a startup one (`su`: an event with the CMCD attached).
    let steady = "CMCD=bl%3D21300%2Cbr%3D3200%2Ccid%3D%22demo-asset-0001%22%2Cd%3D4004%2Cdl%3D18500%2Cmtp%3D48100%2Cot%3Dav%2Csid%3D%22-3zov1ksPVmUaxB9LQ.-YRsh2F4_OyRCLxtPBDl%22%2Ctb%3D6000";
    let startup = format!("{steady}%2Csu");
    let req_cmcd = Request {
        query: Some(steady),
        ..req
    };
    let req_startup = Request {
        query: Some(&startup),
        ..req
    };
    g.bench_function("cmcd_flags_only", |b| {
        b.iter(|| black_box(sharegate_edge::cmcd::flags(black_box(Some(steady)), &[None; 4])))
    });
    g.bench_function("decide_segment_cmcd", |b| {
        b.iter(|| black_box(engine.decide(black_box(&req_cmcd), u64::from(NOW), StateInput::fresh(&view))))
    });
    // The two above interleaved in one timing loop, in blocks of 64 requests each, so the machine's drift (shared,
    // noisy) hits both alike: criterion times the CMCD requests; the plain ones, timed in the same loop, give the
    // ratio printed at the end (`cmcd/plain interleaved`). This is the figure for "CMCD costs within 5%".
    let (mut cmcd_ns, mut plain_ns) = (0u128, 0u128);
    g.bench_function("decide_segment_cmcd_interleaved", |b| {
        b.iter_custom(|iters| {
            let mut cmcd = std::time::Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(64);
                let t = std::time::Instant::now();
                for _ in 0..n {
                    black_box(engine.decide(black_box(&req), u64::from(NOW), StateInput::fresh(&view)));
                }
                plain_ns += t.elapsed().as_nanos();
                let t = std::time::Instant::now();
                for _ in 0..n {
                    black_box(engine.decide(black_box(&req_cmcd), u64::from(NOW), StateInput::fresh(&view)));
                }
                let d = t.elapsed();
                cmcd_ns += d.as_nanos();
                cmcd += d;
                done += n;
            }
            cmcd
        })
    });
    if plain_ns > 0 {
        eprintln!(
            "edge/decide_segment_cmcd_interleaved: cmcd/plain interleaved = {:.3}",
            cmcd_ns as f64 / plain_ns as f64
        );
    }
    g.bench_function("decide_segment_cmcd_startup_event", |b| {
        b.iter(|| black_box(engine.decide(black_box(&req_startup), u64::from(NOW), StateInput::fresh(&view))))
    });
    g.bench_function("open_state_and_decide_segment", |b| {
        b.iter(|| {
            let v = StateView::open(black_box(&state)).unwrap();
            black_box(engine.decide(black_box(&req), u64::from(NOW), StateInput::fresh(&v)))
        })
    });
    g.finish();

    // The figure of record: decide against the raw HMAC, interleaved in one loop (see testkit::interleaved_ratio).
    testkit::interleaved_ratio(
        "edge: decide_segment/raw_hmac_prekeyed",
        2000,
        256,
        || {
            let mut m = prekeyed.clone();
            m.update(black_box(&signed));
            black_box(m.finalize().into_bytes());
        },
        || {
            black_box(engine.decide(black_box(&req), u64::from(NOW), StateInput::fresh(&view)));
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
