//! Synthetic inputs for sharegate's tests, benches and load-test examples: reproducible token ids, the typical link's
//! claims, a key ring with one active key, and the edge benches' revocation state. One builder, so every bench
//! measures the same world and a change to that world is made once.
//!
//! Not part of the library: each user includes this file by path (`#[path = "…/shared/testkit.rs"] mod testkit;`).
//! That keeps it out of every production build without a cargo feature, and lets the benches and examples of other
//! packages use it without touching their manifests. It uses only `sharegate_shared`'s public API and `std`.
#![allow(dead_code)]

use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    IssuedToken, RevokedToken, ScopeKind, SnapshotParams, StateKey, Subject, Watermark, build_snapshot,
};
use sharegate_shared::token::{Claims, IpPrefix, Minter, Permissions, Policy};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// splitmix64: a fast deterministic generator, so a million ids cost nothing even in a debug build and every run
/// sees the same world.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random 12-byte token id.
    pub fn id(&mut self) -> [u8; 12] {
        let mut id = [0u8; 12];
        id[..8].copy_from_slice(&self.next().to_le_bytes());
        id[8..].copy_from_slice(&self.next().to_le_bytes()[..4]);
        id
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Token id number `i`: a fixed mix of the counter, so ids look random to the revocation structures (which hash
/// them) while any id can be named by its number (`mixed_id(1)` is live in [`edge_snapshot`]).
pub fn mixed_id(i: u64) -> [u8; 12] {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut out = [0u8; 12];
    for chunk in out.chunks_mut(4) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&x.to_le_bytes()[..4]);
    }
    out
}

/// The asset of the typical link.
pub const TYPICAL_ASSET: &str = "demo-asset-0001";

/// The typical link the token benches and vectors measure (151 characters, 97 signed bytes): asset scope, share,
/// viewer, channel, campaign and an IPv4 /24 binding (`203.0.113.0/24`), valid from `iat` until `exp`. Change a field
/// with struct update syntax: `Claims { asset: Some("bench".into()), ..typical_claims(id, iat, exp) }`.
pub fn typical_claims(token_id: [u8; 12], iat: u32, exp: u32) -> Claims<'static> {
    Claims {
        token_id,
        iat,
        nbf: iat,
        exp,
        permissions: Permissions::PLAYBACK,
        asset: Some(TYPICAL_ASSET.into()),
        share: Some("sh_8f3a2b1c".into()),
        viewer: Some("v_1234567890".into()),
        channel: Some("email".into()),
        campaign: Some("spring-26".into()),
        ip: IpPrefix::new(IpAddr::from([203, 0, 113, 0]), 24),
        ..Claims::default()
    }
}

/// The least a link can say: playback of one asset, valid from `iat` until `exp`, nothing bound.
pub fn playback_claims(token_id: [u8; 12], asset: &str, iat: u32, exp: u32) -> Claims<'_> {
    Claims {
        token_id,
        iat,
        nbf: iat,
        exp,
        permissions: Permissions::PLAYBACK,
        asset: Some(asset.into()),
        ..Claims::default()
    }
}

/// A ring holding one active key, id 1, for a day's tokens: what the benches sign and verify with.
pub fn ring(secret: [u8; 32]) -> KeyRing {
    KeyRing::with_active(1, SecretKey::new(secret), 86_400)
}

/// A token for `claims`, signed with [`ring`]`(secret)` under the default policy.
pub fn mint(secret: [u8; 32], claims: &Claims<'_>) -> String {
    let minter = Minter::new(&ring(secret), Policy::default()).expect("the ring has an active key");
    minter.mint(claims).expect("valid claims")
}

/// An edge's settings for the benches: [`ring`]`(signing)`'s key as `SHAREGATE_SIGNING_KEYS` and the state key as
/// `SHAREGATE_STATE_KEY`; add the rest (origin, state URL, ...) per bench.
pub fn edge_settings(signing: [u8; 32], state_key: [u8; 32]) -> BTreeMap<String, String> {
    let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    BTreeMap::from([
        (
            "SHAREGATE_SIGNING_KEYS".to_string(),
            format!("1:active:{}", hex(signing)),
        ),
        ("SHAREGATE_STATE_KEY".to_string(), hex(state_key)),
    ])
}

/// The revocation subject of a bare token (key 1, no scope ids): what revocation sees of a token id and its `iat`.
pub fn bare_subject(token_id: &[u8; 12], iat: u32) -> Subject<'_> {
    Subject {
        token_id,
        iat,
        key_id: 1,
        share: None,
        viewer: None,
        session: None,
        asset: None,
        campaign: None,
    }
}

/// The edge benches' revocation state, signed with `key`: `n_issued` tokens ([`mixed_id`] `0..n_issued`, issued 100 s
/// before `now`, expiring at `exp`), every tenth of them revoked (so `mixed_id(1)` is live), and 1,000 viewer
/// watermarks (`viewer-0` … `viewer-999`, at `now - 50`). Generation 1, built and cut off at `now`. At 1M issued this
/// is the 100k-revoked world.
pub fn edge_snapshot(n_issued: u64, now: u32, exp: u32, key: &StateKey) -> Vec<u8> {
    let issued = (0..n_issued).map(|i| IssuedToken {
        id: mixed_id(i),
        iat: now - 100,
        exp,
    });
    let revoked: Vec<RevokedToken> = (0..n_issued)
        .step_by(10)
        .map(|i| RevokedToken {
            id: mixed_id(i),
            iat: now - 100,
            exp,
        })
        .collect();
    let watermarks: Vec<Watermark> = (0..1000)
        .map(|i| Watermark::new(ScopeKind::Viewer, format!("viewer-{i}").as_bytes(), now - 50))
        .collect();
    let params = SnapshotParams {
        generation: 1,
        built_at: now,
        cutoff: now,
        expire_before: now - 60,
        max_token_lifetime: 86_400,
    };
    build_snapshot(&params, issued, &revoked, &watermarks, key).expect("a valid synthetic snapshot")
}

/// The `q` quantile (0..=1) of `samples`, which it sorts: nearest rank, as the latency benches report p50 and p99.
pub fn percentile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)]
}

/// The ratio `cost(subject) / cost(baseline)` measured interleaved: blocks of `block` calls of each, alternating,
/// for `blocks` rounds, each round's pair timed back to back; the median of the per-round ratios. Drift on a shared
/// machine (another build starting, a frequency change) hits both sides of a round alike, so this figure is far
/// steadier than two separate timings. Prints `<name>: <subject>/<baseline> interleaved = <ratio> (p25 … p75)`.
pub fn interleaved_ratio(
    name: &str,
    blocks: usize,
    block: usize,
    mut baseline: impl FnMut(),
    mut subject: impl FnMut(),
) -> f64 {
    use std::time::Instant;
    let mut ratios = Vec::with_capacity(blocks);
    // Per-operation times of each round, to show which side moved when the ratio does.
    let (mut base_ns, mut subj_ns) = (Vec::with_capacity(blocks), Vec::with_capacity(blocks));
    // Warm both paths (caches, branch predictors) before the first timed round.
    for _ in 0..block * 4 {
        baseline();
        subject();
    }
    for _ in 0..blocks {
        let t = Instant::now();
        for _ in 0..block {
            baseline();
        }
        let base = t.elapsed();
        let t = Instant::now();
        for _ in 0..block {
            subject();
        }
        let subj = t.elapsed();
        if !base.is_zero() {
            ratios.push(subj.as_secs_f64() / base.as_secs_f64());
            base_ns.push(base.as_secs_f64() * 1e9 / block as f64);
            subj_ns.push(subj.as_secs_f64() * 1e9 / block as f64);
        }
    }
    ratios.sort_by(f64::total_cmp);
    base_ns.sort_by(f64::total_cmp);
    subj_ns.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| {
        v.get(((v.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let median = at(&ratios, 0.5);
    eprintln!(
        "{name} interleaved = {median:.3} (p25 {:.3}, p75 {:.3}, {} rounds of {block}; median ns/op {:.1} / {:.1})",
        at(&ratios, 0.25),
        at(&ratios, 0.75),
        ratios.len(),
        at(&subj_ns, 0.5),
        at(&base_ns, 0.5),
    );
    median
}
