//! Every endpoint with no key, a wrong key, and each wrong role — the table comes from `docs/openapi.yaml`
//! (`x-roles` per operation, `edgeToken` for edge endpoints), which the `openapi` test keeps in step with the router,
//! so a new endpoint cannot skip this check.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::service::{send, world_with};
use sharegate_control_plane::service::ServiceConfig;

/// The status of one call with an `{}` body (enough for every endpoint to get past its caller check).
async fn status(app: &axum::Router, method: &str, path: &str, auth: Option<&str>) -> StatusCode {
    send(app, method, path, auth, &[], "{}").await.0
}

#[tokio::test]
async fn every_endpoint_refuses_missing_wrong_and_other_role_keys() {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap(),
    )
    .unwrap();
    let config = ServiceConfig {
        edge_token: Some("edge-secret".into()),
        ..ServiceConfig::default()
    };
    let w = world_with(config, |_| {}).await;
    let (app, keys) = (&w.app, &w.keys);
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
                status(app, &method, &path, None).await,
                StatusCode::UNAUTHORIZED,
                "{what}: no key"
            );
            assert_eq!(
                status(app, &method, &path, Some("sg_admin_wrong")).await,
                StatusCode::UNAUTHORIZED,
                "{what}: wrong key"
            );
            for (role, key) in keys {
                let got = status(app, &method, &path, Some(key)).await;
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
