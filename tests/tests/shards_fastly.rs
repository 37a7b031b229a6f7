//! The Fastly app in Viceroy reading the revocation state by shards (`SHAREGATE_STATE_SHARDS=true`, see
//! `edge-worker/fastly/src/shards.rs`), against a control plane's sharded endpoints played here:
//! - exact: a revoked token is refused and a valid one served, and a new revocation (one bucket's new version) is
//!   enforced within the refresh window;
//! - eviction / cold POP: with the token's shard not in the cache and the control plane failing to give it, a valid
//!   token is never served as "not revoked" (the app decides with no state: 503 under `fail_closed`), and is served
//!   again once the shard can be had; a shard older than the head needs is refused the same way;
//! - replay: an older head and an old freshness message, both MAC-valid, neither move the generation back nor make
//!   the state look fresher; the app goes stale (503) once its last honest signed time is `MAX_AGE` old.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::replay::{self, EDGE_TOKEN, MAX_AGE, SIGNING, STATE};
use sharegate_e2e::unix_now;
use sharegate_e2e::viceroy::Viceroy;
use sharegate_shared::revocation::{
    RevokedAt, RevokedToken, ShardParams, StateKey, build_freshness, build_head, build_shard,
};
use sharegate_shared::token::Claims;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "../../shared/testkit.rs"]
mod testkit;

const BITS: u8 = 4;

/// What the played control plane serves.
#[derive(Default)]
struct Cp {
    generation: u64,
    revoked: Vec<RevokedAt>,
    /// Shards answer 500.
    shards_fail: bool,
    /// Shards are served as of this generation (older than the head: an outdated shard).
    shards_at: Option<u64>,
    /// Instead of honest answers: these bytes to every head request (a replay).
    replay: Option<Vec<u8>>,
}

type Shared = Arc<Mutex<Cp>>;

fn params(generation: u64) -> ShardParams {
    ShardParams {
        generation,
        as_of: unix_now() as u32,
        bits: BITS,
        expire_before: 0,
    }
}

async fn control_plane(cp: Shared) -> String {
    let key = StateKey::new(STATE);
    let (c1, k1, c2, k2) = (cp.clone(), key.clone(), cp, key);
    let app = axum::Router::new()
        .route(
            "/v1/edge/state/head",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let cp = c1.lock().unwrap();
                assert_eq!(
                    h.get("authorization").and_then(|v| v.to_str().ok()),
                    Some(format!("Bearer {EDGE_TOKEN}").as_str())
                );
                let held = h
                    .get(sharegate_edge::contract::headers::GENERATION)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body = match &cp.replay {
                    Some(b) => b.clone(),
                    None if held == Some(cp.generation) => {
                        build_freshness(cp.generation, unix_now() as u32, &k1).to_vec()
                    }
                    None => build_head(&params(cp.generation), &cp.revoked, &[], &k1).unwrap(),
                };
                async move { body }
            }),
        )
        .route(
            "/v1/edge/state/shard/{bits}/{index}",
            axum::routing::get(move |axum::extract::Path((b, i)): axum::extract::Path<(u8, u32)>| {
                let cp = c2.lock().unwrap();
                let at = cp.shards_at.unwrap_or(cp.generation);
                let revoked: Vec<RevokedAt> = cp.revoked.iter().filter(|r| r.generation <= at).copied().collect();
                let p = ShardParams { bits: b, ..params(at) };
                let answer = if cp.shards_fail {
                    Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                } else {
                    Ok(build_shard(&p, i, &revoked, &k2).unwrap())
                };
                async move { answer }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/edge/state", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn id(first: u8, n: u8) -> [u8; 12] {
    let mut b = [n; 12];
    b[0] = first;
    b
}

fn token(id: [u8; 12]) -> String {
    let now = unix_now() as u32;
    testkit::mint(
        SIGNING,
        &Claims {
            ..testkit::playback_claims(id, "a", now - 5, now + 600)
        },
    )
}

fn revoke(cp: &Shared, id: [u8; 12]) {
    let mut cp = cp.lock().unwrap();
    cp.generation += 1;
    let generation = cp.generation;
    let now = unix_now() as u32;
    cp.revoked.push(RevokedAt {
        token: RevokedToken {
            id,
            iat: now - 5,
            exp: now + 600,
        },
        generation,
    });
}

struct Setup {
    cp: Shared,
    app: Viceroy,
    http: reqwest::Client,
    _origin: StaticOrigin,
    _media: tempfile::TempDir,
}

async fn setup(cp: Cp) -> Setup {
    let media = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(media.path().join("a")).unwrap();
    std::fs::write(media.path().join("a/seg.ts"), b"segment").unwrap();
    let origin = StaticOrigin::start(media.path().to_path_buf()).await.unwrap();
    let cp: Shared = Arc::new(Mutex::new(cp));
    let url = control_plane(cp.clone()).await;
    let mut settings = replay::edge_settings(&origin.base, &url, 300);
    settings.insert("SHAREGATE_STATE_SHARDS".into(), "true".into());
    let app = Viceroy::start(&settings).await.unwrap();
    Setup {
        cp,
        app,
        http: reqwest::Client::new(),
        _origin: origin,
        _media: media,
    }
}

impl Setup {
    async fn get(&self, id: [u8; 12]) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}/t/{}/a/seg.ts", self.app.base, token(id)))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let reason = r
            .headers()
            .get("x-sharegate-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, reason)
    }

    async fn status(&self) -> serde_json::Value {
        sharegate_e2e::control_plane::edge_status(&self.http, &self.app.base)
            .await
            .unwrap()
    }

    /// Polls until `id` gets `want`, for at most `limit`.
    async fn until(&self, id: [u8; 12], want: u16, limit: Duration) -> (u16, String) {
        let start = Instant::now();
        loop {
            let got = self.get(id).await;
            if got.0 == want || start.elapsed() > limit {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_answer_exactly_and_a_new_revocation_is_enforced_within_the_window() {
    let s = setup(Cp::default()).await;
    let (revoked, valid, later) = (id(0x10, 1), id(0x10, 2), id(0xe0, 3));
    revoke(&s.cp, revoked);
    assert_eq!(
        s.until(valid, 200, Duration::from_secs(5)).await.0,
        200,
        "{}",
        s.app.log_tail()
    );
    let (status, reason) = s.get(revoked).await;
    assert!(status == 403 || status == 410, "{status} {reason}");
    assert!(reason.starts_with("revoked"), "{reason}");
    assert_eq!(s.get(later).await.0, 200);
    // A revocation in another bucket: only that bucket's version moves; enforced within the window.
    revoke(&s.cp, later);
    let (status, reason) = s.until(later, 403, Duration::from_secs(3)).await;
    assert!(
        (status == 403 || status == 410) && reason.starts_with("revoked"),
        "{status} {reason}"
    );
    assert_eq!(s.get(valid).await.0, 200);
    assert_eq!(s.status().await["generation"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_outdated_shard_never_answers_not_revoked() {
    // A cold POP: the head can be had, the token's shard cannot.
    let s = setup(Cp {
        shards_fail: true,
        ..Cp::default()
    })
    .await;
    let (valid, revoked) = (id(0x20, 1), id(0x20, 2));
    revoke(&s.cp, revoked);
    for who in [valid, revoked] {
        let (status, reason) = s.get(who).await;
        assert_eq!(status, 503, "{reason}: no shard, no answer");
    }
    // The control plane answers again: served (and the revoked one refused).
    s.cp.lock().unwrap().shards_fail = false;
    assert_eq!(
        s.until(valid, 200, Duration::from_secs(3)).await.0,
        200,
        "{}",
        s.app.log_tail()
    );
    assert!(s.get(revoked).await.1.starts_with("revoked"));
    // A new revocation in that bucket, but the control plane hands out a shard from before it (older than the head
    // says the bucket is): refused as outdated, so the new revocation is not missed and no valid token is answered
    // "not revoked" from it.
    let fresh = id(0x20, 3);
    {
        let mut cp = s.cp.lock().unwrap();
        cp.shards_at = Some(cp.generation);
    }
    revoke(&s.cp, fresh);
    let (status, reason) = s.until(fresh, 503, Duration::from_secs(3)).await;
    assert_eq!(status, 503, "{reason}");
    assert_eq!(s.get(valid).await.0, 503);
    s.cp.lock().unwrap().shards_at = None;
    assert!(
        s.until(fresh, 403, Duration::from_secs(3))
            .await
            .1
            .starts_with("revoked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_head_or_freshness_neither_goes_back_nor_looks_fresh() {
    let s = setup(Cp::default()).await;
    let valid = id(0x30, 1);
    let key = StateKey::new(STATE);
    // Old answers, recorded while they were current: a head of generation 1 and a freshness message for 2.
    revoke(&s.cp, id(0x31, 1));
    let old_head = build_head(&params(1), &s.cp.lock().unwrap().revoked, &[], &key).unwrap();
    revoke(&s.cp, id(0x32, 1));
    let old_fresh = build_freshness(2, unix_now() as u32, &key).to_vec();
    assert_eq!(
        s.until(valid, 200, Duration::from_secs(5)).await.0,
        200,
        "{}",
        s.app.log_tail()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(s.get(valid).await.0, 200);
    assert_eq!(s.status().await["generation"], 2);
    for replay in [old_head, old_fresh] {
        let before = s.status().await["state_as_of"].as_u64().unwrap();
        s.cp.lock().unwrap().replay = Some(replay);
        // Until the state is older than MAX_AGE by the last honest signed time, then fail closed.
        let (status, _) = s.until(valid, 503, Duration::from_secs(MAX_AGE + 4)).await;
        assert_eq!(status, 503, "a replay kept the state fresh");
        let st = s.status().await;
        assert_eq!(st["generation"], 2, "the generation went back: {st}");
        // (+1: an honest refresh in flight when the replay began may still have landed.)
        assert!(
            st["state_as_of"].as_u64().unwrap() <= before + 1,
            "a replay moved the as-of: {st}"
        );
        // Honest again: fresh again.
        s.cp.lock().unwrap().replay = None;
        assert_eq!(s.until(valid, 200, Duration::from_secs(3)).await.0, 200);
        assert!(s.status().await["state_as_of"].as_u64().unwrap() >= before);
    }
}
