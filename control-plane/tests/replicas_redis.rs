//! Two control-plane replicas on one Redis (a real `redis-server`): they agree on state generations, see each
//! other's revocations and links, and the audit chain stays one chain.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::RedisServer;
use http_body_util::BodyExt;
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Log, open_store, verify_chain};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::sync::Arc;
use tower::ServiceExt;

async fn call(app: &axum::Router, method: &str, uri: &str, key: &str, body: String) -> (StatusCode, serde_json::Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_one_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new([5; 32]), 86_400);
    let mut apps = Vec::new();
    for i in 0..2 {
        let store = open_store(&redis.url(), &dir.path().join(format!("r{i}")))
            .await
            .unwrap();
        let state = AppState::new(
            store,
            ServiceConfig::default(),
            &ring,
            Policy::default(),
            StateKey::new([6; 32]),
        )
        .unwrap();
        let store = state.store.clone();
        apps.push((router(Arc::new(state)), store));
    }
    let store = apps[0].1.clone();
    let (admin, rec) = new_key(Role::Admin, "a", 0).unwrap();
    store_key(store.as_ref(), &admin, &rec).await.unwrap();
    let (minter, rec) = new_key(Role::Minter, "m", 0).unwrap();
    store_key(store.as_ref(), &minter, &rec).await.unwrap();
    let (responder, rec) = new_key(Role::Responder, "r", 0).unwrap();
    store_key(store.as_ref(), &responder, &rec).await.unwrap();

    // An asset registered on replica 0 is ready on replica 1.
    let media = dir.path().join("media/demo/v0");
    std::fs::create_dir_all(&media).unwrap();
    std::fs::write(
        media.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\ns.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(media.join("s.ts"), "x").unwrap();
    std::fs::write(
        dir.path().join("media/demo/master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n",
    )
    .unwrap();
    let origin = dir.path().join("media").to_string_lossy().into_owned();
    let (s, b) = call(
        &apps[0].0,
        "POST",
        "/v1/assets",
        &admin,
        format!(r#"{{"id":"demo","origin":"{origin}"}}"#),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // Mint on replica 1, revoke by token id on replica 0 (it finds the link record), interleave generations.
    let (_, link) = call(&apps[1].0, "POST", "/v1/links", &minter, r#"{"asset":"demo"}"#.into()).await;
    let mut generations = Vec::new();
    for i in 0..10 {
        let app = &apps[i % 2].0;
        let body = if i == 0 {
            format!(r#"{{"kind":"token","id":"{}"}}"#, link["token_id"].as_str().unwrap())
        } else {
            format!(r#"{{"kind":"viewer","id":"v{i}"}}"#)
        };
        let (s, r) = call(app, "POST", "/v1/revocations", &responder, body).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        generations.push(r["generation"].as_u64().unwrap());
        // The other replica reads the receipt.
        let other = &apps[(i + 1) % 2].0;
        let (s, _) = call(
            other,
            "GET",
            &format!("/v1/revocations/{}", r["id"].as_str().unwrap()),
            &responder,
            String::new(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    assert_eq!(
        generations,
        (1..=10).collect::<Vec<u64>>(),
        "one gap-free sequence across replicas"
    );
    let audit = store.read_chained(Log::Audit, 1, 1000).await.unwrap();
    assert!(verify_chain(&audit).is_ok());
    assert!(audit.len() >= 12);
}
