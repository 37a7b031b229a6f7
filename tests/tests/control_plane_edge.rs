//! The control plane and the native edge over real sockets: an edge pulls its state from the control plane, a
//! backend mints through the API, a responder revokes, and the very next request at the edge is denied. Reports
//! revoke-to-enforced latency (revocation call to first denied request) over 200 revocations.
#![allow(clippy::unwrap_used)]

use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, EdgeTarget, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_e2e::start_native_edge;
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_reach_the_edge_before_the_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media/demo/v0");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(media.join("seg_000.ts"), b"segment bytes").unwrap();
    std::fs::write(
        media.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_000.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("media/demo/master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n",
    )
    .unwrap();
    let signing = [0x21u8; 32];
    let state_key = [0x43u8; 32];

    // The edge: pulls from the control plane, accepts pushes.
    let mut settings = BTreeMap::new();
    settings.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("1:active:{}", hex::encode(signing)),
    );
    settings.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(state_key));
    let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_url = format!("http://{}", cp_listener.local_addr().unwrap());
    let edge = start_native_edge(
        &settings,
        NativeOptions {
            origins: vec![Origin::Dir(dir.path().join("media"))],
            state_url: Some(format!("{cp_url}/v1/edge/state")),
            edge_token: Some("edge-cred".into()),
            ..NativeOptions::default()
        },
    )
    .await
    .unwrap();

    // The control plane, pushing to that edge.
    let store = open_store("", &dir.path().join("data")).await.unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new(signing), 86_400);
    let config = ServiceConfig {
        edge_base_url: format!("http://{}", edge.addr),
        edges: vec![EdgeTarget {
            url: format!("http://{}", edge.addr),
            token: "edge-cred".into(),
        }],
        edge_token: Some("edge-cred".into()),
        ..ServiceConfig::default()
    };
    let state = Arc::new(
        AppState::new(
            store.clone(),
            config,
            &ring,
            Policy::default(),
            StateKey::new(state_key),
        )
        .unwrap(),
    );
    let (minter, rec) = new_key(Role::Minter, "backend", 0).unwrap();
    store_key(store.as_ref(), &minter, &rec).await.unwrap();
    let (responder, rec) = new_key(Role::Responder, "oncall", 0).unwrap();
    store_key(store.as_ref(), &responder, &rec).await.unwrap();
    let (admin, rec) = new_key(Role::Admin, "ops", 0).unwrap();
    store_key(store.as_ref(), &admin, &rec).await.unwrap();
    tokio::spawn(async move { axum::serve(cp_listener, router(state)).await });

    // The edge starts from the control plane's snapshot.
    sharegate_edge_native::pull_once(&edge.edge).await.unwrap();
    assert_eq!(edge.edge.generation(), Some(0));

    let http = reqwest::Client::new();
    let asset: serde_json::Value = http
        .post(format!("{cp_url}/v1/assets"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"id": "demo", "origin": dir.path().join("media").to_str().unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asset["ready"], true, "{asset}");
    let mut latencies = Vec::new();
    for i in 0..200 {
        let link: serde_json::Value = http
            .post(format!("{cp_url}/v1/links"))
            .bearer_auth(&minter)
            .json(&serde_json::json!({"asset": "demo", "viewer": format!("v{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let seg = link["url"].as_str().unwrap().replace("master.m3u8", "v0/seg_000.ts");
        assert_eq!(http.get(&seg).send().await.unwrap().status(), 200, "iteration {i}");
        let start = Instant::now();
        let receipt: serde_json::Value = http
            .post(format!("{cp_url}/v1/revocations"))
            .bearer_auth(&responder)
            .json(&serde_json::json!({"kind": "token", "id": link["token_id"], "reason": "test"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(receipt["pushed"][0]["status"], 200, "{receipt}");
        loop {
            let r = http.get(&seg).send().await.unwrap();
            if r.status() == 403 {
                assert_eq!(r.headers()["x-sharegate-reason"], "revoked");
                break;
            }
            assert!(start.elapsed().as_secs() < 5, "revocation not enforced within 5 s");
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "revoke-to-enforced over {} revocations: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );

    // An edge that missed pushes catches up by pulling: a fresh edge gets the whole state as a snapshot.
    let late = start_native_edge(
        &settings,
        NativeOptions {
            origins: vec![Origin::Dir(dir.path().join("media"))],
            state_url: Some(format!("{cp_url}/v1/edge/state")),
            edge_token: Some("edge-cred".into()),
            ..NativeOptions::default()
        },
    )
    .await
    .unwrap();
    sharegate_edge_native::pull_once(&late.edge).await.unwrap();
    assert_eq!(late.edge.generation(), Some(200));
}
