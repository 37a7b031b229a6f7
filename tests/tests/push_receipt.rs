//! The control plane's side of signed freshness, over real sockets (issue 11, items 3 and 9): a push receipt says
//! what each edge did with the push (`applied`, `already_current` for an edge that holds a newer generation — whose
//! 409 names it — or `unreachable`), and a current edge that pulls gets a signed freshness message that moves its
//! state's signed time forward, never its generation.
#![allow(clippy::unwrap_used)]

use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, EdgeTarget, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_e2e::{start_native_edge, unix_now};
use sharegate_edge_native::NativeOptions;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{SnapshotParams, StateKey, build_snapshot};
use sharegate_shared::token::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const STATE: [u8; 32] = [0x44; 32];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_tell_already_current_from_refused_and_no_change_is_signed() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = BTreeMap::new();
    settings.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("1:active:{}", hex::encode([0x22u8; 32])),
    );
    settings.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(STATE));
    let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp_url = format!("http://{}", cp_listener.local_addr().unwrap());
    let opts = || NativeOptions {
        state_url: Some(format!("{cp_url}/v1/edge/state")),
        edge_token: Some("edge-cred".into()),
        ..NativeOptions::default()
    };
    // `behind` follows the control plane; `ahead` holds a generation the control plane has not reached (as after a
    // restore, or a push that overtook this one).
    let behind = start_native_edge(&settings, opts()).await.unwrap();
    let ahead = start_native_edge(&settings, opts()).await.unwrap();
    let now = u32::try_from(unix_now()).unwrap();
    let p = SnapshotParams {
        generation: 50,
        built_at: now,
        cutoff: now,
        expire_before: now - 60,
        max_token_lifetime: 86_400,
    };
    ahead
        .edge
        .offer_state(&build_snapshot(&p, std::iter::empty(), &[], &[], &StateKey::new(STATE)).unwrap())
        .unwrap();
    let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone_url = format!("http://{}", gone.local_addr().unwrap());
    drop(gone);

    let store = open_store("", &dir.path().join("data")).await.unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new([0x22; 32]), 86_400);
    let target = |url: String| EdgeTarget {
        url,
        token: "edge-cred".into(),
    };
    let config = ServiceConfig {
        edge_base_url: format!("http://{}", behind.addr),
        edges: vec![
            target(format!("http://{}", behind.addr)),
            target(format!("http://{}", ahead.addr)),
            target(gone_url),
        ],
        edge_token: Some("edge-cred".into()),
        ..ServiceConfig::default()
    };
    let state = Arc::new(AppState::new(store.clone(), config, &ring, Policy::default(), StateKey::new(STATE)).unwrap());
    let (responder, rec) = new_key(Role::Responder, "oncall", 0).unwrap();
    store_key(store.as_ref(), &responder, &rec).await.unwrap();
    tokio::spawn(async move { axum::serve(cp_listener, router(state)).await });
    sharegate_edge_native::pull_once(&behind.edge).await.unwrap();
    assert_eq!(behind.edge.generation(), Some(0));

    let http = reqwest::Client::new();
    let receipt: serde_json::Value = http
        .post(format!("{cp_url}/v1/revocations"))
        .bearer_auth(&responder)
        .json(&serde_json::json!({"kind": "share", "id": "sh-1", "reason": "test"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pushed = &receipt["pushed"];
    assert_eq!(
        (&pushed[0]["status"], &pushed[0]["result"]),
        (&serde_json::json!(200), &serde_json::json!("applied")),
        "{receipt}"
    );
    assert_eq!(
        (&pushed[1]["status"], &pushed[1]["result"]),
        (&serde_json::json!(409), &serde_json::json!("already_current")),
        "an edge already holding a newer generation: {receipt}"
    );
    assert_eq!(
        (&pushed[2]["status"], &pushed[2]["result"]),
        (&serde_json::json!(0), &serde_json::json!("unreachable")),
        "{receipt}"
    );
    assert_eq!(ahead.edge.generation(), Some(50), "nothing older replaced what it held");

    // Nothing changes from here on: each pull of the current edge gets the signed "no change", whose time moves.
    let as_of = |base: String| {
        let http = http.clone();
        async move {
            let v: serde_json::Value = http
                .get(format!("{base}/_sharegate/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (v["generation"].as_u64(), v["state_as_of"].as_u64().unwrap_or(0))
        }
    };
    let (generation, before) = as_of(format!("http://{}", behind.addr)).await;
    assert_eq!(generation, Some(1));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sharegate_edge_native::pull_once(&behind.edge).await.unwrap();
    let (generation, after) = as_of(format!("http://{}", behind.addr)).await;
    assert_eq!(generation, Some(1));
    assert!(
        after > before,
        "the no-change answer carried no newer signed time: {before} -> {after}"
    );
    // A bare request (an edge from before signed freshness) still gets 304.
    let r = http
        .get(format!("{cp_url}/v1/edge/state"))
        .bearer_auth("edge-cred")
        .header("x-sharegate-generation", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
}
