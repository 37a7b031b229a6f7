//! Benchmarks of the revocation state at the issue's scale: 100,000 revoked among 10,000,000
//! issued tokens, plus 1,000 watermarks. Prints a size report (bytes, bits per revoked token
//! against the information-theoretic bound) before running: open, open+lookup, lookup (valid and
//! revoked tokens, snapshot alone and with two deltas), MAC verification, build and delta apply.
//!
//! Run: `cargo bench -p sharegate-shared --bench revocation`

use criterion::Criterion;
use sharegate_shared::revocation::{
    ApplyParams, DeltaParams, DeltaView, IssuedToken, RevokedToken, ScopeKind, SnapshotParams, StateKey, StateSet,
    StateView, Subject, Watermark, apply_deltas, build_delta, build_snapshot,
};
use std::hint::black_box;
use std::time::{Duration, Instant};
use testkit::Rng;

// The synthetic world every bench shares; included by path (see the header of shared/testkit.rs).
#[path = "../testkit.rs"]
mod testkit;

const FULL_ISSUED: usize = 10_000_000;
const FULL_REVOKED: usize = 100_000;

/// The full 100k/10M world under `cargo bench` (which passes `--bench`); a small one when the binary is only
/// listed or run once as a test (`cargo test --benches`, nextest), so test runs stay fast and listing prints nothing
/// but the names.
fn scale() -> (usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (FULL_ISSUED, FULL_REVOKED)
    } else {
        (20_000, 200)
    }
}
const NOW: u32 = 1_700_000_000;
const CUTOFF: u32 = NOW - 60;

struct World {
    issued: Vec<IssuedToken>,
    revoked: Vec<RevokedToken>,
    watermarks: Vec<Watermark>,
}

fn world() -> World {
    let (issued_n, revoked_n) = scale();
    let mut rng = Rng(2024);
    let issued: Vec<IssuedToken> = (0..issued_n)
        .map(|_| IssuedToken {
            id: rng.id(),
            iat: CUTOFF - 1 - (rng.next() % 86_000) as u32,
            exp: NOW + 1 + (rng.next() % 86_000) as u32,
        })
        .collect();
    // Every 100th issued token is revoked.
    let revoked = issued
        .iter()
        .step_by(issued_n / revoked_n)
        .map(|t| RevokedToken {
            id: t.id,
            iat: t.iat,
            exp: t.exp,
        })
        .collect();
    let watermarks = (0..1000u32)
        .map(|i| {
            let kind = ScopeKind::ALL[(1 + i % 5) as usize];
            Watermark::new(kind, format!("{}-{i:08}", kind.as_str()).as_bytes(), NOW - 10_000)
        })
        .collect();
    World {
        issued,
        revoked,
        watermarks,
    }
}

fn params(generation: u64) -> SnapshotParams {
    SnapshotParams {
        generation,
        built_at: NOW,
        cutoff: CUTOFF,
        expire_before: NOW,
        max_token_lifetime: 86_400,
    }
}

/// log2 of the number of ways to choose `r` of `n`: the fewest bits any exact encoding needs.
fn log2_binomial(n: u64, r: u64) -> f64 {
    (0..r).map(|i| ((n - i) as f64).log2() - ((r - i) as f64).log2()).sum()
}

fn subject<'a>(t: &'a IssuedToken) -> Subject<'a> {
    Subject {
        token_id: &t.id,
        iat: t.iat,
        key_id: 1,
        share: Some(b"share-00000042"),
        viewer: Some(b"viewer-00000007"),
        session: None,
        asset: Some(b"asset-00000124"),
        campaign: Some(b"campaign-00000001"),
    }
}

fn main() {
    let key = StateKey::new([9u8; 32]);
    let w = world();

    let start = Instant::now();
    let bytes = build_snapshot(&params(1), w.issued.iter().copied(), &w.revoked, &w.watermarks, &key).expect("build");
    let build_once = start.elapsed();
    let view = StateView::open_verified(&bytes, &key, 1).expect("open");
    let st = view.stats();
    let levels_bits = ((st.level1_bytes + st.level2_bytes) * 8) as f64;
    let bound = log2_binomial(u64::from(st.issued), u64::from(st.revoked_in_levels));
    let r = f64::from(st.revoked_in_levels);
    let (issued_n, revoked_n) = scale();
    let report = std::env::args().any(|a| a == "--bench");
    // The report only under `cargo bench`: a test harness listing the benchmarks must see nothing but their names.
    macro_rules! say {
        ($($t:tt)*) => {
            if report {
                println!($($t)*);
            }
        };
    }
    say!("== revocation state size ({revoked_n} revoked among {issued_n} issued, 1000 watermarks)");
    say!(
        "total bytes:            {} ({:.1} KiB)",
        st.total_bytes,
        st.total_bytes as f64 / 1024.0
    );
    say!(
        "level 1 (filter):       {} bytes, {}-bit fingerprints over {} ids",
        st.level1_bytes,
        st.level1_width,
        st.revoked_in_levels
    );
    say!(
        "level 2 (retrieval):    {} bytes, 1 bit over {} ids ({} false positives of level 1)",
        st.level2_bytes,
        st.level2_keys,
        st.level2_keys - st.revoked_in_levels
    );
    say!("exact list / watermarks: {} / {}", st.exact_tokens, st.watermarks);
    say!(
        "bits per revoked token: {:.2} (levels only); bound log2(C({}, {}))/r = {:.2}; ratio {:.3}",
        levels_bits / r,
        st.issued,
        st.revoked_in_levels,
        bound / r,
        levels_bits / bound
    );
    say!("build (one run, incl. MAC): {build_once:.2?}");

    // Two deltas of 1,000 revocations each (tokens issued after the cut-off and before it).
    let mut rng = Rng(7);
    let delta_bytes: Vec<Vec<u8>> = (0..2u64)
        .map(|i| {
            let revoked: Vec<RevokedToken> = (0..1000)
                .map(|j| {
                    let t = &w.issued[(rng.next() % w.issued.len() as u64) as usize];
                    let iat = if j % 2 == 0 { t.iat } else { NOW };
                    RevokedToken {
                        id: if j % 2 == 0 { t.id } else { rng.id() },
                        iat,
                        exp: NOW + 3600,
                    }
                })
                .collect();
            let p = DeltaParams {
                base_generation: 1 + i,
                generation: 2 + i,
                built_at: NOW,
            };
            build_delta(&p, &revoked, &[Watermark::new(ScopeKind::Viewer, b"v-x", NOW)], &key).expect("delta")
        })
        .collect();
    let deltas: Vec<DeltaView<'_>> = delta_bytes
        .iter()
        .map(|d| DeltaView::open_verified(d, &key).expect("delta"))
        .collect();
    say!("delta bytes (1,000 revocations): {}", delta_bytes[0].len());

    // Lookup pools: valid (not revoked) issued tokens, and revoked ones, copied out of the 200 MB
    // issued array so that the token id is hot, as it is at the edge right after parsing the token.
    let valid_tokens: Vec<IssuedToken> = w
        .issued
        .iter()
        .enumerate()
        .filter(|(i, _)| i % (w.issued.len() / w.revoked.len()) != 0)
        .step_by(2_000)
        .take(4096)
        .map(|(_, t)| *t)
        .collect();
    let revoked_tokens: Vec<IssuedToken> = w
        .revoked
        .iter()
        .take(4096)
        .map(|t| IssuedToken {
            id: t.id,
            iat: t.iat,
            exp: t.exp,
        })
        .collect();
    let valid: Vec<Subject<'_>> = valid_tokens.iter().map(subject).collect();
    let revoked: Vec<Subject<'_>> = revoked_tokens.iter().map(subject).collect();
    assert!(valid.iter().all(|s| !view.is_revoked(s).is_revoked()));
    assert!(revoked.iter().all(|s| view.is_revoked(s).is_revoked()));

    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    let mut i = 0usize;
    c.bench_function("revocation/open", |b| {
        b.iter(|| StateView::open(black_box(&bytes)).map(|v| v.generation()))
    });
    c.bench_function("revocation/open+lookup (valid)", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            StateView::open(black_box(&bytes)).map(|v| v.is_revoked(&valid[i]))
        })
    });
    c.bench_function("revocation/lookup (valid)", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            view.is_revoked(black_box(&valid[i]))
        })
    });
    c.bench_function("revocation/lookup (revoked)", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            view.is_revoked(black_box(&revoked[i]))
        })
    });
    let set = StateSet::new(view, &deltas).expect("chain");
    c.bench_function("revocation/lookup snapshot+2 deltas (valid)", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            set.is_revoked(black_box(&valid[i]))
        })
    });
    c.bench_function("revocation/verify_mac (whole snapshot)", |b| {
        b.iter(|| view.verify_mac(black_box(&key)))
    });
    let apply = ApplyParams {
        built_at: NOW,
        expire_before: NOW,
    };
    c.bench_function("revocation/apply 2 deltas of 1,000", |b| {
        b.iter(|| apply_deltas(&view, black_box(&deltas), &apply, &key).map(|v| v.len()))
    });
    let mut group = c.benchmark_group("revocation/build");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("100k revoked / 10M issued", |b| {
        b.iter(|| {
            build_snapshot(&params(1), w.issued.iter().copied(), &w.revoked, &w.watermarks, &key).map(|v| v.len())
        })
    });
    group.finish();
    c.final_summary();
}
