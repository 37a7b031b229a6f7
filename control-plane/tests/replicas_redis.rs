//! Two control-plane replicas on one Redis (a real `redis-server`): they agree on state generations, see each
//! other's revocations and links, and the audit chain stays one chain.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::RedisServer;
use common::service::{api_keys, app_state, key_of, register_demo, write_demo};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{ServiceConfig, router};
use sharegate_control_plane::store::{Log, open_store, verify_chain};
use std::sync::Arc;

async fn call(app: &axum::Router, method: &str, uri: &str, key: &str, body: String) -> (StatusCode, serde_json::Value) {
    common::service::call(app, method, uri, Some(key), &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_agree_on_one_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut apps = Vec::new();
    for i in 0..2 {
        let store = open_store(&redis.url(), &dir.path().join(format!("r{i}")))
            .await
            .unwrap();
        let state = app_state(store, ServiceConfig::default());
        let store = state.store.clone();
        apps.push((router(Arc::new(state)), store));
    }
    let store = apps[0].1.clone();
    let keys = api_keys(store.as_ref(), &[Role::Admin, Role::Minter, Role::Responder]).await;
    let (minter, responder) = (key_of(&keys, Role::Minter), key_of(&keys, Role::Responder));

    // An asset registered on replica 0 is ready on replica 1.
    let media = dir.path().join("media");
    write_demo(&media);
    register_demo(&apps[0].0, key_of(&keys, Role::Admin), &media).await;

    // Mint on replica 1, revoke by token id on replica 0 (it finds the link record), interleave generations.
    let (_, link) = call(&apps[1].0, "POST", "/v1/links", minter, r#"{"asset":"demo"}"#.into()).await;
    let mut generations = Vec::new();
    for i in 0..10 {
        let app = &apps[i % 2].0;
        let body = if i == 0 {
            format!(r#"{{"kind":"token","id":"{}"}}"#, link["token_id"].as_str().unwrap())
        } else {
            format!(r#"{{"kind":"viewer","id":"v{i}"}}"#)
        };
        let (s, r) = call(app, "POST", "/v1/revocations", responder, body).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        generations.push(r["generation"].as_u64().unwrap());
        // The other replica reads the receipt.
        let other = &apps[(i + 1) % 2].0;
        let (s, _) = call(
            other,
            "GET",
            &format!("/v1/revocations/{}", r["id"].as_str().unwrap()),
            responder,
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
