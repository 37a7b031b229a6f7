//! Every endpoint with no key, a wrong key, and each wrong role — the table comes from `docs/openapi.yaml`
//! (`x-roles` per operation, `edgeToken` for edge endpoints), which the `openapi` test keeps in step with the router,
//! so a new endpoint cannot skip this check.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::sync::Arc;
use tower::ServiceExt;

async fn status(app: &axum::Router, method: &str, path: &str, auth: Option<&str>) -> StatusCode {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", format!("Bearer {a}"));
    }
    app.clone()
        .oneshot(req.body(Body::from("{}")).unwrap())
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn every_endpoint_refuses_missing_wrong_and_other_role_keys() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new([1; 32]), 86_400);
    let config = ServiceConfig {
        edge_token: Some("edge-secret".into()),
        ..ServiceConfig::default()
    };
    let state = AppState::new(store.clone(), config, &ring, Policy::default(), StateKey::new([2; 32])).unwrap();
    let app = router(Arc::new(state));
    let roles = [Role::Minter, Role::Responder, Role::Admin, Role::Auditor];
    let mut keys = Vec::new();
    for r in roles {
        let (k, rec) = new_key(r, "matrix", 0).unwrap();
        store_key(store.as_ref(), &k, &rec).await.unwrap();
        keys.push((r, k));
    }
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_mapping().unwrap() {
        let path = path.as_str().unwrap().replace("{id}", "x");
        for (method, op) in ops.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            if !matches!(method.as_str(), "GET" | "POST" | "PUT" | "DELETE" | "PATCH") {
                continue;
            }
            let edge = op["security"]
                .as_sequence()
                .is_some_and(|s| s.iter().any(|x| x.get("edgeToken").is_some()));
            let allowed: Vec<String> = op["x-roles"]
                .as_sequence()
                .map(|s| s.iter().map(|r| r.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            if allowed.is_empty() && !edge {
                continue; // public: /healthz, /readyz, /s/{id}, the OpenAPI document
            }
            let what = format!("{method} {path}");
            assert_eq!(
                status(&app, &method, &path, None).await,
                StatusCode::UNAUTHORIZED,
                "{what}: no key"
            );
            assert_eq!(
                status(&app, &method, &path, Some("sg_admin_wrong")).await,
                StatusCode::UNAUTHORIZED,
                "{what}: wrong key"
            );
            for (role, key) in &keys {
                let got = status(&app, &method, &path, Some(key)).await;
                if edge {
                    assert_eq!(
                        got,
                        StatusCode::UNAUTHORIZED,
                        "{what}: API key {role:?} on an edge endpoint"
                    );
                } else if !allowed.iter().any(|a| a == role.as_str()) {
                    assert_eq!(got, StatusCode::FORBIDDEN, "{what}: role {role:?}");
                } else {
                    assert!(
                        got != StatusCode::UNAUTHORIZED && got != StatusCode::FORBIDDEN,
                        "{what}: role {role:?} got {got}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 18, "only {checked} keyed operations found");
}
