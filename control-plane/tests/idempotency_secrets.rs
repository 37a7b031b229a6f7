//! An answer that carries a secret shown once (a new API key) is never kept by the idempotency layer: a retry is
//! told the call succeeded (409) instead of getting the key again, and the store holds no copy of it.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Ns, open_store};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::sync::Arc;
use tower::ServiceExt;

#[tokio::test]
async fn a_new_api_key_is_not_kept_for_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let ring = KeyRing::with_active(4, SecretKey::new([7; 32]), 86_400);
    let state = AppState::new(
        store.clone(),
        ServiceConfig::default(),
        &ring,
        Policy::default(),
        StateKey::new([9; 32]),
    )
    .unwrap();
    let app = router(Arc::new(state));
    let (admin, rec) = new_key(Role::Admin, "test", 0).unwrap();
    store_key(store.as_ref(), &admin, &rec).await.unwrap();
    let call = || {
        Request::post("/v1/apikeys")
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "application/json")
            .header("idempotency-key", "create-auditor")
            .body(Body::from(r#"{"role":"auditor"}"#))
            .unwrap()
    };
    let resp = app.clone().oneshot(call()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let b: serde_json::Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let key = b["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("sg_auditor_"));

    let resp = app.clone().oneshot(call()).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::CONFLICT,
        "a retry does not get the secret again"
    );
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(!String::from_utf8_lossy(&b).contains(&key));

    for (k, v) in store.scan(Ns::Idempotency, "").await.unwrap() {
        assert!(!String::from_utf8_lossy(&v).contains(&key), "the key is kept under {k}");
    }
}
