//! Integration and property tests of the revocation state: exactly the revoked tokens are denied,
//! across a snapshot and its deltas; watermarks per scope kind, same-second included; round trips;
//! and refusal of tampered, truncated, stale or unchained states.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use sharegate_shared::revocation::{
    ApplyParams, BuildError, DeltaParams, DeltaView, IssuedToken, Revoked, RevokedToken, ScopeKind, SnapshotParams,
    StateError, StateKey, StateSet, StateView, Watermark, apply_deltas, build_delta, build_snapshot,
};
use testkit::{Rng, bare_subject as subject};

#[path = "../testkit.rs"]
mod testkit;

fn key() -> StateKey {
    StateKey::new([7u8; 32])
}

const NOW: u32 = 1_700_000_000;

fn params(generation: u64, cutoff: u32) -> SnapshotParams {
    SnapshotParams {
        generation,
        built_at: NOW,
        cutoff,
        expire_before: NOW,
        max_token_lifetime: 86_400,
    }
}

/// A world of issued tokens, some revoked in the snapshot, some in each of a chain of deltas, and
/// some issued after the cut-off (never shown to the levels).
struct World {
    snapshot: Vec<u8>,
    deltas: Vec<Vec<u8>>,
    /// (id, iat, revoked)
    tokens: Vec<([u8; 12], u32, bool)>,
}

fn world(seed: u64, issued: usize, revoke_permille: u64, n_deltas: usize) -> World {
    let mut rng = Rng(seed);
    let cutoff = NOW - 600;
    let mut tokens = Vec::with_capacity(issued + issued / 10);
    let mut issued_set = Vec::with_capacity(issued);
    let mut in_snapshot = Vec::new();
    let mut in_deltas: Vec<Vec<RevokedToken>> = vec![Vec::new(); n_deltas];
    let mut layer_of = |rng: &mut Rng, t: RevokedToken, revoked: bool| {
        if !revoked {
            return;
        }
        let layer = rng.below(n_deltas as u64 + 1) as usize;
        if layer == 0 {
            in_snapshot.push(t);
        } else {
            in_deltas[layer - 1].push(t);
        }
    };
    for _ in 0..issued {
        let id = rng.id();
        let iat = cutoff - 1 - rng.below(3_000) as u32;
        let exp = NOW + 1 + rng.below(3_600) as u32;
        let revoked = rng.below(1000) < revoke_permille;
        issued_set.push(IssuedToken { id, iat, exp });
        layer_of(&mut rng, RevokedToken { id, iat, exp }, revoked);
        tokens.push((id, iat, revoked));
    }
    // Tokens minted after the cut-off: only the exact lists know about them.
    for _ in 0..issued / 10 {
        let id = rng.id();
        let iat = cutoff + rng.below(600) as u32;
        let revoked = rng.below(1000) < revoke_permille;
        layer_of(
            &mut rng,
            RevokedToken {
                id,
                iat,
                exp: NOW + 900,
            },
            revoked,
        );
        tokens.push((id, iat, revoked));
    }
    let snapshot = build_snapshot(
        &params(10, cutoff),
        issued_set.iter().copied(),
        &in_snapshot,
        &[],
        &key(),
    )
    .unwrap();
    let deltas = in_deltas
        .iter()
        .enumerate()
        .map(|(i, revoked)| {
            let p = DeltaParams {
                base_generation: 10 + i as u64,
                generation: 11 + i as u64,
                built_at: NOW,
            };
            build_delta(&p, revoked, &[], &key()).unwrap()
        })
        .collect();
    World {
        snapshot,
        deltas,
        tokens,
    }
}

/// Checks every token of the world: denied if and only if revoked, layered and after apply.
fn check_world(w: &World) {
    let snap = StateView::open_verified(&w.snapshot, &key(), 0).unwrap();
    let deltas: Vec<DeltaView<'_>> = w
        .deltas
        .iter()
        .map(|d| DeltaView::open_verified(d, &key()).unwrap())
        .collect();
    let set = StateSet::new(snap, &deltas).unwrap();
    let applied = apply_deltas(
        &snap,
        &deltas,
        &ApplyParams {
            built_at: NOW,
            expire_before: NOW,
        },
        &key(),
    )
    .unwrap();
    let applied = StateView::open_verified(&applied, &key(), set.generation()).unwrap();
    assert_eq!(applied.generation(), set.generation());
    for (id, iat, revoked) in &w.tokens {
        let s = subject(id, *iat);
        let want = if *revoked { Revoked::Token } else { Revoked::No };
        assert_eq!(set.is_revoked(&s), want, "layered, iat={iat}");
        assert_eq!(applied.is_revoked(&s), want, "applied, iat={iat}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    /// No false denial and no missed revocation, over random issued sets, revoked subsets and
    /// chains of deltas.
    #[test]
    fn exactly_the_revoked_are_denied(
        seed in any::<u64>(),
        issued in 0usize..4000,
        revoke_permille in prop_oneof![Just(0u64), Just(1000u64), 0u64..1000, 0u64..20],
        n_deltas in 0usize..4,
    ) {
        check_world(&world(seed, issued, revoke_permille, n_deltas));
    }

    /// Arbitrary bytes never panic the readers.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = StateView::open(&bytes).map(|v| v.is_revoked(&subject(&[1; 12], 5)));
        let _ = DeltaView::open(&bytes).map(|v| v.is_revoked(&subject(&[1; 12], 5)));
        prop_assert!(StateView::open_verified(&bytes, &key(), 0).is_err());
        prop_assert!(DeltaView::open_verified(&bytes, &key()).is_err());
    }
}

/// The million: 1,000,000 issued tokens, 1% revoked, across a snapshot and two deltas.
#[test]
fn a_million_issued_tokens() {
    check_world(&world(0xC0FFEE, 1_000_000, 10, 2));
}

#[test]
fn empty_state_revokes_nothing() {
    let bytes = build_snapshot(&params(1, NOW), [], &[], &[], &key()).unwrap();
    let v = StateView::open_verified(&bytes, &key(), 1).unwrap();
    assert_eq!(v.is_revoked(&subject(&[0; 12], 0)), Revoked::No);
    assert_eq!(v.is_revoked(&subject(&[9; 12], NOW - 1)), Revoked::No);
    assert_eq!(bytes.len(), 128 + 32);
}

#[test]
fn every_issued_token_revoked() {
    let mut rng = Rng(5);
    let issued: Vec<IssuedToken> = (0..500)
        .map(|_| IssuedToken {
            id: rng.id(),
            iat: 100,
            exp: NOW + 10,
        })
        .collect();
    let revoked: Vec<RevokedToken> = issued
        .iter()
        .map(|t| RevokedToken {
            id: t.id,
            iat: t.iat,
            exp: t.exp,
        })
        .collect();
    let bytes = build_snapshot(&params(1, 200), issued.iter().copied(), &revoked, &[], &key()).unwrap();
    let v = StateView::open(&bytes).unwrap();
    assert!(
        issued
            .iter()
            .all(|t| v.is_revoked(&subject(&t.id, t.iat)) == Revoked::Token)
    );
}

/// Builds a snapshot holding one watermark and returns it.
fn with_watermark(w: Watermark) -> Vec<u8> {
    build_snapshot(&params(3, NOW), [], &[], &[w], &key()).unwrap()
}

#[test]
fn watermarks_per_scope_kind_and_same_second() {
    const T: u32 = NOW - 100;
    let id: &[u8] = b"scope-7";
    for kind in ScopeKind::ALL {
        let w = match kind {
            ScopeKind::Global => Watermark::global(T),
            ScopeKind::KeyId => Watermark::key_id(42, T),
            _ => Watermark::new(kind, id, T),
        };
        let bytes = with_watermark(w);
        let v = StateView::open_verified(&bytes, &key(), 0).unwrap();
        let delta = build_delta(
            &DeltaParams {
                base_generation: 3,
                generation: 4,
                built_at: NOW,
            },
            &[],
            &[match kind {
                ScopeKind::Global => Watermark::global(T),
                ScopeKind::KeyId => Watermark::key_id(42, T),
                _ => Watermark::new(kind, id, T),
            }],
            &key(),
        )
        .unwrap();
        let d = DeltaView::open_verified(&delta, &key()).unwrap();
        let empty = build_snapshot(&params(3, NOW), [], &[], &[], &key()).unwrap();
        let deltas = [d];
        let set = StateSet::new(StateView::open(&empty).unwrap(), &deltas).unwrap();

        let tid = [3u8; 12];
        let make = |iat: u32, scope: &'static [u8], key_id: u16| {
            let mut s = subject(&tid, iat);
            s.key_id = key_id;
            match kind {
                ScopeKind::Share => s.share = Some(scope),
                ScopeKind::Viewer => s.viewer = Some(scope),
                ScopeKind::Session => s.session = Some(scope),
                ScopeKind::Asset => s.asset = Some(scope),
                ScopeKind::Campaign => s.campaign = Some(scope),
                ScopeKind::Global | ScopeKind::KeyId => {}
            }
            s
        };
        let want = Revoked::Watermark(kind);
        for (s, expect) in [
            // Issued before T: revoked.
            (make(T - 1, b"scope-7", 42), want),
            // Issued in the same second as T: revoked (fail safe, see docs/revocation.md).
            (make(T, b"scope-7", 42), want),
            // Issued after T: not revoked.
            (make(T + 1, b"scope-7", 42), Revoked::No),
        ] {
            assert_eq!(v.is_revoked(&s), expect, "{kind} snapshot iat={}", s.iat);
            assert_eq!(set.is_revoked(&s), expect, "{kind} delta iat={}", s.iat);
        }
        // Another scope of the same kind is untouched (global has no other scope).
        if kind != ScopeKind::Global {
            let s = make(T - 1, b"scope-8", 43);
            assert_eq!(v.is_revoked(&s), Revoked::No, "{kind} other scope");
            assert_eq!(set.is_revoked(&s), Revoked::No, "{kind} other scope");
        }
        // A token without the scope is untouched.
        if !matches!(kind, ScopeKind::Global | ScopeKind::KeyId) {
            assert_eq!(v.is_revoked(&subject(&tid, T - 1)), Revoked::No);
        }
    }
}

#[test]
fn watermark_ids_are_exact_bytes_not_prefixes() {
    let bytes = with_watermark(Watermark::new(ScopeKind::Asset, b"movie", NOW));
    let v = StateView::open(&bytes).unwrap();
    let tid = [1u8; 12];
    for asset in [&b"movi"[..], b"movie2", b"Movie", b""] {
        let mut s = subject(&tid, 1);
        s.asset = Some(asset);
        assert_eq!(v.is_revoked(&s), Revoked::No);
    }
    let mut s = subject(&tid, 1);
    s.asset = Some(b"movie");
    assert_eq!(v.is_revoked(&s), Revoked::Watermark(ScopeKind::Asset));
}

#[test]
fn many_watermarks_merge_and_are_found() {
    let mut ws = Vec::new();
    for i in 0..300u32 {
        let kind = ScopeKind::ALL[(i % 6 + 1) as usize];
        ws.push(Watermark::new(kind, format!("id-{i}").as_bytes(), NOW - 1000 + i));
        // A duplicate with an earlier time: the later one wins.
        ws.push(Watermark::new(kind, format!("id-{i}").as_bytes(), 5));
    }
    let bytes = build_snapshot(&params(3, NOW), [], &[], &ws, &key()).unwrap();
    let v = StateView::open_verified(&bytes, &key(), 0).unwrap();
    assert_eq!(v.watermarks().count(), 300);
    let tid = [1u8; 12];
    for i in 0..300u32 {
        let kind = ScopeKind::ALL[(i % 6 + 1) as usize];
        let name = format!("id-{i}");
        let mut s = subject(&tid, NOW - 1000 + i);
        match kind {
            ScopeKind::Share => s.share = Some(name.as_bytes()),
            ScopeKind::Viewer => s.viewer = Some(name.as_bytes()),
            ScopeKind::Session => s.session = Some(name.as_bytes()),
            ScopeKind::Asset => s.asset = Some(name.as_bytes()),
            ScopeKind::Campaign => s.campaign = Some(name.as_bytes()),
            _ => s.key_id = 7,
        }
        if kind == ScopeKind::KeyId {
            continue;
        }
        assert_eq!(v.is_revoked(&s), Revoked::Watermark(kind));
        s.iat += 1;
        assert_eq!(v.is_revoked(&s), Revoked::No);
    }
}

#[test]
fn scope_ids_longer_than_255_bytes_are_refused() {
    let w = Watermark::new(ScopeKind::Share, &[b'x'; 256], NOW);
    assert_eq!(
        build_snapshot(&params(1, NOW), [], &[], &[w], &key()),
        Err(BuildError::ScopeIdTooLong)
    );
}

#[test]
fn rebuild_drops_expired_entries() {
    let mut rng = Rng(9);
    let old = RevokedToken {
        id: rng.id(),
        iat: NOW - 5000,
        exp: NOW - 1,
    };
    let live = RevokedToken {
        id: rng.id(),
        iat: NOW - 5000,
        exp: NOW + 1,
    };
    let late_old = RevokedToken {
        id: rng.id(),
        iat: NOW + 10,
        exp: NOW,
    };
    let late_live = RevokedToken {
        id: rng.id(),
        iat: NOW + 10,
        exp: NOW + 100,
    };
    let ws = [
        // Every token it covers has expired: dropped.
        Watermark::new(ScopeKind::Viewer, b"gone", NOW - 86_400),
        Watermark::new(ScopeKind::Viewer, b"kept", NOW - 86_399),
    ];
    let bytes = build_snapshot(&params(2, NOW), [], &[old, live, late_old, late_live], &ws, &key()).unwrap();
    let v = StateView::open_verified(&bytes, &key(), 0).unwrap();
    let st = v.stats();
    assert_eq!(st.revoked_in_levels, 1);
    assert_eq!(v.tokens().map(|t| t.id).collect::<Vec<_>>(), vec![late_live.id]);
    assert_eq!(v.watermarks().map(|w| w.id).collect::<Vec<_>>(), vec![&b"kept"[..]]);
    assert_eq!(v.is_revoked(&subject(&live.id, live.iat)), Revoked::Token);
    assert_eq!(v.is_revoked(&subject(&late_live.id, late_live.iat)), Revoked::Token);

    // Folding deltas drops expired exact entries too.
    let d = build_delta(
        &DeltaParams {
            base_generation: 2,
            generation: 3,
            built_at: NOW,
        },
        &[old, late_live],
        &[],
        &key(),
    )
    .unwrap();
    let d = [DeltaView::open(&d).unwrap()];
    let applied = apply_deltas(
        &v,
        &d,
        &ApplyParams {
            built_at: NOW + 50,
            expire_before: NOW + 50,
        },
        &key(),
    )
    .unwrap();
    let a = StateView::open_verified(&applied, &key(), 3).unwrap();
    assert_eq!(a.tokens().count(), 1);
    assert_eq!(a.built_at(), NOW + 50);
}

#[test]
fn builds_are_deterministic() {
    let w = world(77, 3000, 100, 0);
    let again = world(77, 3000, 100, 0);
    assert_eq!(w.snapshot, again.snapshot);
}

#[test]
fn round_trip_of_header_fields() {
    let p = SnapshotParams {
        generation: 0x0102_0304_0506_0708,
        built_at: 11,
        cutoff: 22,
        expire_before: 5,
        max_token_lifetime: 44,
    };
    let bytes = build_snapshot(&p, [], &[], &[], &key()).unwrap();
    let v = StateView::open_verified(&bytes, &key(), p.generation).unwrap();
    assert_eq!(
        (
            v.generation(),
            v.built_at(),
            v.cutoff(),
            v.expire_before(),
            v.max_token_lifetime()
        ),
        (p.generation, 11, 22, 5, 44)
    );
    assert_eq!(&bytes[..4], b"SGRS");
    assert_eq!(v.as_bytes(), &bytes[..]);
}

/// A small but complete state: both levels, exact tokens and watermarks.
fn small_state() -> Vec<u8> {
    let mut rng = Rng(1);
    let issued: Vec<IssuedToken> = (0..300)
        .map(|_| IssuedToken {
            id: rng.id(),
            iat: NOW - 100,
            exp: NOW + 100,
        })
        .collect();
    let mut revoked: Vec<RevokedToken> = issued[..20]
        .iter()
        .map(|t| RevokedToken {
            id: t.id,
            iat: t.iat,
            exp: t.exp,
        })
        .collect();
    revoked.push(RevokedToken {
        id: rng.id(),
        iat: NOW,
        exp: NOW + 10,
    });
    let ws = [
        Watermark::new(ScopeKind::Share, b"s1", NOW - 10),
        Watermark::key_id(3, NOW - 10),
    ];
    build_snapshot(&params(9, NOW - 50), issued.iter().copied(), &revoked, &ws, &key()).unwrap()
}

#[test]
fn any_single_bit_flip_is_refused() {
    let bytes = small_state();
    let st = StateView::open(&bytes).unwrap().stats();
    assert!(st.level1_bytes > 0 && st.level2_bytes > 0 && st.exact_tokens == 1 && st.watermarks == 2);
    let mut copy = bytes.clone();
    for i in 0..bytes.len() {
        for bit in [0u8, 3, 7] {
            copy[i] ^= 1 << bit;
            assert!(
                StateView::open_verified(&copy, &key(), 0).is_err(),
                "flip at byte {i} bit {bit} accepted"
            );
            copy[i] ^= 1 << bit;
        }
    }
    let d = build_delta(
        &DeltaParams {
            base_generation: 9,
            generation: 10,
            built_at: NOW,
        },
        &[RevokedToken {
            id: [5; 12],
            iat: 1,
            exp: NOW + 5,
        }],
        &[Watermark::global(3)],
        &key(),
    )
    .unwrap();
    let mut copy = d.clone();
    for i in 0..d.len() {
        copy[i] ^= 0x10;
        assert!(DeltaView::open_verified(&copy, &key()).is_err(), "delta flip at {i}");
        copy[i] ^= 0x10;
    }
}

#[test]
fn every_truncation_and_extension_is_refused() {
    let bytes = small_state();
    for len in 0..bytes.len() {
        let err = StateView::open(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, StateError::Truncated | StateError::Malformed),
            "len {len}: {err}"
        );
        assert!(StateView::open_verified(&bytes[..len], &key(), 0).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(StateView::open(&longer).unwrap_err(), StateError::Malformed);
    assert_eq!(StateView::open(&bytes[..100]).unwrap_err(), StateError::Truncated);
}

#[test]
fn refusals_have_stable_reasons() {
    let bytes = small_state();
    assert_eq!(StateView::open(b"SGRDxxxx").unwrap_err().as_str(), "bad_magic");
    assert_eq!(StateView::open(b"SG").unwrap_err().as_str(), "truncated");
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(StateView::open(&v2).unwrap_err().as_str(), "unsupported_version");
    let mut tampered = bytes.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        StateView::open_verified(&tampered, &key(), 0).unwrap_err().as_str(),
        "bad_mac"
    );
    assert_eq!(
        StateView::open_verified(&bytes, &StateKey::new([8; 32]), 0).unwrap_err(),
        StateError::BadMac
    );
    assert_eq!(
        StateView::open_verified(&bytes, &key(), 10).unwrap_err().as_str(),
        "stale_generation"
    );
    // A delta is not a snapshot, nor the reverse.
    let d = build_delta(
        &DeltaParams {
            base_generation: 9,
            generation: 10,
            built_at: NOW,
        },
        &[],
        &[],
        &key(),
    )
    .unwrap();
    assert_eq!(StateView::open(&d).unwrap_err(), StateError::BadMagic);
    assert_eq!(DeltaView::open(&bytes).unwrap_err(), StateError::BadMagic);
    // Deltas must chain.
    let snap = StateView::open(&bytes).unwrap();
    let skip = build_delta(
        &DeltaParams {
            base_generation: 10,
            generation: 11,
            built_at: NOW,
        },
        &[],
        &[],
        &key(),
    )
    .unwrap();
    let skip = [DeltaView::open(&skip).unwrap()];
    assert_eq!(StateSet::new(snap, &skip).unwrap_err().as_str(), "broken_chain");
    let ok = [DeltaView::open(&d).unwrap(), skip[0]];
    assert_eq!(StateSet::new(snap, &ok).unwrap().generation(), 11);
    assert_eq!(
        apply_deltas(
            &snap,
            &skip,
            &ApplyParams {
                built_at: 0,
                expire_before: 0
            },
            &key()
        ),
        Err(BuildError::BrokenChain)
    );
    assert_eq!(
        build_delta(
            &DeltaParams {
                base_generation: 4,
                generation: 4,
                built_at: 0
            },
            &[],
            &[],
            &key()
        ),
        Err(BuildError::BadGeneration)
    );
}

#[test]
fn key_debug_is_redacted() {
    assert_eq!(format!("{:?}", StateKey::new([0xAB; 32])), "StateKey(<redacted>)");
}

#[test]
fn reason_codes() {
    assert_eq!(Revoked::No.as_str(), "not_revoked");
    assert_eq!(Revoked::Token.as_str(), "revoked_token");
    assert_eq!(Revoked::Watermark(ScopeKind::KeyId).as_str(), "revoked_key_id");
    for (i, k) in ScopeKind::ALL.iter().enumerate() {
        assert_eq!(k.code() as usize, i);
        assert_eq!(ScopeKind::from_code(i as u8), Some(*k));
    }
    assert_eq!(ScopeKind::from_code(7), None);
}
