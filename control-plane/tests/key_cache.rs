//! Mints authenticate from a replica's key cache (`auth::KeyCache`) and commit only while the key's record is the one
//! that authenticated them. A key disabled or deleted on another replica mints nothing more from the moment that
//! change is acknowledged, on the embedded store and on a real Redis; every link answered 200 is in the issued log,
//! and nothing else is.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::RedisServer;
use common::service::{api_keys, app_state, call, key_of, register_demo, write_demo};
use sharegate_control_plane::service::auth::{Role, key_hash};
use sharegate_control_plane::service::{ServiceConfig, router};
use sharegate_control_plane::store::{Log, Ns, Store, open_store, verify_chain};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Two replicas (routers over their own `AppState`, so their own key caches) on `stores`, the demo asset
/// registered, and keys for admin and minter.
async fn replicas(stores: [Arc<dyn Store>; 2], dir: &std::path::Path) -> ([axum::Router; 2], Vec<(Role, String)>) {
    let apps = stores
        .clone()
        .map(|store| router(Arc::new(app_state(store, ServiceConfig::default()))));
    let keys = api_keys(stores[0].as_ref(), &[Role::Admin, Role::Minter]).await;
    let media = dir.join("media");
    write_demo(&media);
    register_demo(&apps[0], key_of(&keys, Role::Admin), &media).await;
    (apps, keys)
}

/// Token ids (hex) in the issued log.
async fn issued(store: &dyn Store) -> BTreeSet<String> {
    store
        .read_log(Log::Issued, 1, 1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, rec)| hex::encode(&rec[..12]))
        .collect()
}

async fn mint(app: &axum::Router, key: &str) -> (StatusCode, serde_json::Value) {
    call(app, "POST", "/v1/links", Some(key), r#"{"asset":"demo"}"#).await
}

/// Sequential: the cached key's next calls see the other replica's disable (a mint and a mint refused before its
/// commit alike), and a key deleted from the store under a cache entry is refused too.
async fn disable_and_delete_reach_a_cached_key(stores: [Arc<dyn Store>; 2], dir: &std::path::Path) {
    let (apps, keys) = replicas(stores.clone(), dir).await;
    let (admin, minter) = (key_of(&keys, Role::Admin), key_of(&keys, Role::Minter));
    // Replica 0 reads the key into its cache.
    for _ in 0..2 {
        let (s, b) = mint(&apps[0], minter).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let before = issued(stores[0].as_ref()).await;
    let id = &key_hash(minter)[..12];
    let (s, b) = call(&apps[1], "DELETE", &format!("/v1/apikeys/{id}"), Some(admin), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // Refused before its commit (no such asset): still a 401, so a disabled key learns nothing it asks.
    let (s, b) = call(
        &apps[0],
        "POST",
        "/v1/links",
        Some(minter),
        r#"{"asset":"no-such-asset"}"#,
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a disabled key was told about an asset: {b}"
    );
    let (s, b) = mint(&apps[0], minter).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a key disabled on another replica still minted: {b}"
    );
    assert_eq!(issued(stores[0].as_ref()).await, before, "a refused mint left a record");

    // A second minter key, cached, then deleted outright.
    let more = api_keys(stores[0].as_ref(), &[Role::Minter]).await;
    let other = key_of(&more, Role::Minter);
    let (s, b) = mint(&apps[0], other).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(stores[1].delete(Ns::ApiKeys, &key_hash(other)).await.unwrap());
    let (s, b) = mint(&apps[0], other).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a deleted key still minted: {b}");
    let audit = stores[0].read_chained(Log::Audit, 1, 10_000).await.unwrap();
    assert!(verify_chain(&audit).is_ok());
}

/// Concurrent: minters keep minting on replica 0 while replica 1 disables their key. Oracle: a mint sent after the
/// disable was acknowledged is refused; the issued log holds exactly the links answered 200.
async fn no_mint_after_an_acknowledged_disable(stores: [Arc<dyn Store>; 2], dir: &std::path::Path) {
    let (apps, keys) = replicas(stores.clone(), dir).await;
    let (admin, minter) = (
        key_of(&keys, Role::Admin).to_string(),
        key_of(&keys, Role::Minter).to_string(),
    );
    let before = issued(stores[0].as_ref()).await;
    let disabled = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (app, minter, disabled) = (apps[0].clone(), minter.clone(), disabled.clone());
        tasks.push(tokio::spawn(async move {
            let mut minted = Vec::new();
            loop {
                let sent_after = disabled.load(Ordering::SeqCst);
                let (s, b) = mint(&app, &minter).await;
                match s {
                    StatusCode::OK => {
                        assert!(!sent_after, "minted after the disable was acknowledged: {b}");
                        minted.push(b["token_id"].as_str().unwrap().to_string());
                    }
                    StatusCode::UNAUTHORIZED => return minted,
                    // Another mint's commit raced this one's key check: the caller retries.
                    StatusCode::CONFLICT => {}
                    other => panic!("mint answered {other}: {b}"),
                }
            }
        }));
    }
    // Let the minters run, with the key in replica 0's cache.
    while issued(stores[0].as_ref()).await.len() < before.len() + 40 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let id = &key_hash(&minter)[..12];
    let (s, b) = call(&apps[1], "DELETE", &format!("/v1/apikeys/{id}"), Some(&admin), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    disabled.store(true, Ordering::SeqCst);
    let mut answered: BTreeSet<String> = before.clone();
    for t in tasks {
        answered.extend(
            tokio::time::timeout(std::time::Duration::from_secs(60), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(answered.len() > before.len() + 40);
    assert_eq!(
        issued(stores[0].as_ref()).await,
        answered,
        "the issued log and the links answered 200 differ"
    );
}

/// Two replicas' stores on one embedded database.
async fn embedded(dir: &std::path::Path) -> [Arc<dyn Store>; 2] {
    let store = open_store("", &dir.join("data")).await.unwrap();
    [store.clone(), store]
}

/// Two replicas' stores on one Redis.
async fn on_redis(redis: &RedisServer, dir: &std::path::Path) -> [Arc<dyn Store>; 2] {
    let mut stores = Vec::new();
    for i in 0..2 {
        stores.push(open_store(&redis.url(), &dir.join(format!("r{i}"))).await.unwrap());
    }
    [stores[0].clone(), stores[1].clone()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_disable_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    disable_and_delete_reach_a_cached_key(embedded(dir.path()).await, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_disable() {
    let dir = tempfile::tempdir().unwrap();
    no_mint_after_an_acknowledged_disable(embedded(dir.path()).await, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_disable_and_delete() {
    let (redis, dir) = (RedisServer::start(), tempfile::tempdir().unwrap());
    disable_and_delete_reach_a_cached_key(on_redis(&redis, dir.path()).await, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_concurrent_disable() {
    let (redis, dir) = (RedisServer::start(), tempfile::tempdir().unwrap());
    no_mint_after_an_acknowledged_disable(on_redis(&redis, dir.path()).await, dir.path()).await;
}
