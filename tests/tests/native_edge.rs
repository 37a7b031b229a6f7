//! The native edge's own machinery over real sockets: origin failover, pulling state and keys from a control
//! plane, pushing state (and refusing bad pushes), and sending event batches.
#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use sharegate_e2e::{start_native_edge, unix_now};
use sharegate_edge_native::origin::Origin;
use sharegate_edge_native::{NativeOptions, flush_events_now, pull_keys_once, pull_once};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    DeltaParams, IssuedToken, RevokedToken, SnapshotParams, StateKey, build_delta, build_snapshot,
};
use sharegate_shared::token::{Claims, Minter, Permissions, Policy};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const K1: [u8; 32] = [0x11; 32];
const K2: [u8; 32] = [0x22; 32];
const SK: [u8; 32] = [0x33; 32];

fn settings() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("SHAREGATE_SIGNING_KEYS".into(), format!("1:active:{}", hex::encode(K1)));
    m.insert("SHAREGATE_STATE_KEY".into(), hex::encode(SK));
    m
}

fn token(key_id: u16, secret: [u8; 32], id: u8) -> String {
    let now = u32::try_from(unix_now()).unwrap();
    let ring = KeyRing::with_active(key_id, SecretKey::new(secret), 86_400);
    let c = Claims {
        token_id: [id; 12],
        iat: now,
        nbf: now,
        exp: now + 600,
        permissions: Permissions::PLAYBACK,
        asset: Some("a".into()),
        ..Claims::default()
    };
    Minter::new(&ring, Policy::default()).unwrap().mint(&c).unwrap()
}

fn snapshot(generation: u64) -> Vec<u8> {
    let now = u32::try_from(unix_now()).unwrap();
    let issued = (0..4u8).map(|i| IssuedToken {
        id: [i; 12],
        iat: now,
        exp: now + 600,
    });
    let p = SnapshotParams {
        generation,
        built_at: now,
        cutoff: now + 1,
        expire_before: now - 60,
        max_token_lifetime: 86_400,
    };
    build_snapshot(&p, issued, &[], &[], &StateKey::new(SK)).unwrap()
}

async fn spawn(router: Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_failover_on_5xx_and_timeout() {
    let broken = spawn(Router::new().fallback(|| async { (StatusCode::BAD_GATEWAY, "down") })).await;
    let slow = spawn(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        "late"
    }))
    .await;
    let good = spawn(Router::new().fallback(|| async { "from the third origin" })).await;
    let opts = NativeOptions {
        origins: vec![Origin::parse(&broken), Origin::parse(&slow), Origin::parse(&good)],
        origin_timeout: Duration::from_millis(300),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(), opts).await.unwrap();
    edge.edge.offer_state(&snapshot(1)).unwrap();
    let t = token(1, K1, 1);
    let r = reqwest::get(format!("http://{}/t/{t}/a/seg_1.ts", edge.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from the third origin");

    // Every origin down: 503 with a reason, never a hang or a 500.
    let opts = NativeOptions {
        origins: vec![Origin::parse(&broken), Origin::parse(&slow)],
        origin_timeout: Duration::from_millis(200),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(), opts).await.unwrap();
    edge.edge.offer_state(&snapshot(1)).unwrap();
    let r = reqwest::get(format!("http://{}/t/{t}/a/seg_2.ts", edge.addr))
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-sharegate-reason"], "origin_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_state_and_keys_and_sends_events() {
    let now = u32::try_from(unix_now()).unwrap();
    let snap = snapshot(1);
    let delta = build_delta(
        &DeltaParams {
            base_generation: 1,
            generation: 2,
            built_at: now,
        },
        &[RevokedToken {
            id: [2; 12],
            iat: now,
            exp: now + 600,
        }],
        &[],
        &StateKey::new(SK),
    )
    .unwrap();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let ev = Arc::clone(&events);
    let keys = format!("1:active:{},2:next:{}", hex::encode(K1), hex::encode(K2));
    let cp = Router::new()
        .route(
            "/v1/edge/state",
            get(move |h: HeaderMap| {
                let (snap, delta) = (snap.clone(), delta.clone());
                async move {
                    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer edge-secret") {
                        return (StatusCode::UNAUTHORIZED, Vec::new());
                    }
                    match h.get("x-sharegate-generation").and_then(|v| v.to_str().ok()) {
                        None => (StatusCode::OK, snap),
                        Some("1") => (StatusCode::OK, delta),
                        Some(_) => (StatusCode::NOT_MODIFIED, Vec::new()),
                    }
                }
            }),
        )
        .route("/v1/edge/keys", get(move || async move { keys }))
        .route(
            "/v1/edge/events",
            post(move |body: String| async move {
                ev.lock().unwrap().push(body);
                StatusCode::ACCEPTED
            }),
        );
    let cp = spawn(cp).await;
    let opts = NativeOptions {
        origins: vec![Origin::Dir(std::env::temp_dir())],
        state_url: Some(format!("{cp}/v1/edge/state")),
        keys_url: Some(format!("{cp}/v1/edge/keys")),
        events_url: Some(format!("{cp}/v1/edge/events")),
        edge_token: Some("edge-secret".into()),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(), opts).await.unwrap();
    let base = format!("http://{}", edge.addr);
    let victim = token(1, K1, 2);

    // Before any state: fail closed.
    let r = reqwest::get(format!("{base}/t/{victim}/a/x.ts")).await.unwrap();
    assert_eq!(r.headers()["x-sharegate-reason"], "state_stale");
    pull_once(&edge.edge).await.unwrap();
    assert_eq!(edge.edge.generation(), Some(1));
    let r = reqwest::get(format!("{base}/t/{victim}/a/x.ts")).await.unwrap();
    assert_eq!(r.status(), 404, "allowed through to a missing file");
    pull_once(&edge.edge).await.unwrap();
    assert_eq!(edge.edge.generation(), Some(2));
    let r = reqwest::get(format!("{base}/t/{victim}/a/x.ts")).await.unwrap();
    assert_eq!(r.headers()["x-sharegate-reason"], "revoked");
    pull_once(&edge.edge).await.unwrap();
    assert_eq!(edge.edge.generation(), Some(2), "304 keeps the state");

    // A token of the next key is refused until the keys are pulled.
    let next = token(2, K2, 3);
    let r = reqwest::get(format!("{base}/t/{next}/a/x.ts")).await.unwrap();
    assert_eq!(r.headers()["x-sharegate-reason"], "unknown_key");
    pull_keys_once(&edge.edge).await.unwrap();
    let r = reqwest::get(format!("{base}/t/{next}/a/x.ts")).await.unwrap();
    assert_eq!(r.status(), 404);

    flush_events_now(&edge.edge).await;
    let got = events.lock().unwrap().join("\n");
    assert!(
        got.contains("\"reason\":\"revoked\"") && got.contains("\"reason\":\"state_stale\""),
        "{got}"
    );
    assert!(!got.contains(&victim), "events must not carry tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_are_refused_and_change_nothing() {
    let opts = NativeOptions {
        edge_token: Some("t0ken".into()),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(), opts).await.unwrap();
    let c = reqwest::Client::new();
    let url = format!("http://{}/_sharegate/state", edge.addr);
    let push = |b: Vec<u8>, auth: &'static str| c.post(&url).bearer_auth(auth).body(b).send();
    assert_eq!(push(snapshot(5), "t0ken").await.unwrap().status(), 200);
    assert_eq!(push(snapshot(6), "wrong").await.unwrap().status(), 401);
    assert_eq!(
        push(snapshot(4), "t0ken").await.unwrap().status(),
        409,
        "older generation"
    );
    let mut tampered = snapshot(7);
    let n = tampered.len();
    tampered[n / 2] ^= 1;
    assert_eq!(push(tampered, "t0ken").await.unwrap().status(), 400);
    let mut truncated = snapshot(8);
    truncated.truncate(100);
    assert_eq!(push(truncated, "t0ken").await.unwrap().status(), 400);
    assert_eq!(push(b"garbage".to_vec(), "t0ken").await.unwrap().status(), 400);
    assert_eq!(edge.edge.generation(), Some(5));
    let other_key = {
        let now = u32::try_from(unix_now()).unwrap();
        let p = SnapshotParams {
            generation: 9,
            built_at: now,
            cutoff: now,
            expire_before: now - 60,
            max_token_lifetime: 86_400,
        };
        build_snapshot(&p, std::iter::empty(), &[], &[], &StateKey::new([0x99; 32])).unwrap()
    };
    assert_eq!(
        push(other_key, "t0ken").await.unwrap().status(),
        400,
        "state signed with another key"
    );
    assert_eq!(edge.edge.generation(), Some(5));
}

/// A delta that does not chain onto the held generation (one was missed) is followed by a fetch of the whole state,
/// as on Cloudflare and Fastly: the edge ends exact and live instead of failing until a later pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_gap_fetches_the_whole_state() {
    let now = u32::try_from(unix_now()).unwrap();
    // The edge holds generation 1; the control plane answers it with a delta from 2 to 3 (it missed 2), and anyone
    // who asks without a generation with the snapshot of 3.
    let gap = build_delta(
        &DeltaParams {
            base_generation: 2,
            generation: 3,
            built_at: now,
        },
        &[],
        &[],
        &StateKey::new(SK),
    )
    .unwrap();
    let whole = snapshot(3);
    let asked: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let seen = Arc::clone(&asked);
    let cp = Router::new().route(
        "/v1/edge/state",
        get(move |h: HeaderMap| {
            let (gap, whole, seen) = (gap.clone(), whole.clone(), Arc::clone(&seen));
            async move {
                let since = h
                    .get("x-sharegate-generation")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                seen.lock().unwrap().push(since.clone());
                match since.as_deref() {
                    Some("1") => (StatusCode::OK, gap),
                    _ => (StatusCode::OK, whole),
                }
            }
        }),
    );
    let cp = spawn(cp).await;
    let opts = NativeOptions {
        origins: vec![Origin::Dir(std::env::temp_dir())],
        state_url: Some(format!("{cp}/v1/edge/state")),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings(), opts).await.unwrap();
    edge.edge.offer_state(&snapshot(1)).unwrap();
    pull_once(&edge.edge).await.unwrap();
    assert_eq!(edge.edge.generation(), Some(3));
    assert_eq!(*asked.lock().unwrap(), [Some("1".to_string()), None]);
}
