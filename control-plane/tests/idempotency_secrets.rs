//! An answer that carries a secret shown once (a new API key) is never kept by the idempotency layer: a retry is
//! told the call succeeded (409) instead of getting the key again, and the store holds no copy of it.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::world_with;
use http_body_util::BodyExt;
use sharegate_control_plane::service::ServiceConfig;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::store::Ns;
use tower::ServiceExt;

#[tokio::test]
async fn a_new_api_key_is_not_kept_for_replays() {
    let w = world_with(ServiceConfig::default(), |_| {}).await;
    let (app, store, admin) = (&w.app, &w.state.store, w.key(Role::Admin));
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
