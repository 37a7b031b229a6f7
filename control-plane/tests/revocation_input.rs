//! What `POST /v1/revocations` refuses, and what a replay answers (issue 11, items 5 and 9): each revocation kind
//! takes its own fields (`global` none, `token` exactly one of `token`/`id`, the scopes an `id` and no `token`),
//! refused with `400 invalid_scope` and nothing written; an idempotent replay of a `201` answers `200`.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::world_with;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sharegate_control_plane::service::ServiceConfig;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::store::{Log, Store};
use std::sync::Arc;
use tower::ServiceExt;

struct Svc {
    app: axum::Router,
    store: Arc<dyn Store>,
    responder: String,
    _dir: tempfile::TempDir,
}

async fn setup() -> Svc {
    let w = world_with(ServiceConfig::default(), |_| {}).await;
    Svc {
        responder: w.key(Role::Responder).to_string(),
        store: w.state.store.clone(),
        app: w.app,
        _dir: w.dir,
    }
}

async fn revoke(s: &Svc, body: &Value, key: Option<&str>) -> (StatusCode, Option<String>, Value) {
    let mut b = Request::post("/v1/revocations")
        .header("authorization", format!("Bearer {}", s.responder))
        .header("content-type", "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    let resp = s
        .app
        .clone()
        .oneshot(b.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let replay = resp
        .headers()
        .get("idempotent-replay")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, replay, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn each_kind_takes_only_its_own_fields() {
    let s = setup().await;
    let id = "0123456789abcdef01234567";
    for (body, why) in [
        (
            json!({"kind": "global", "id": "x"}),
            "global with an id (it would revoke everything)",
        ),
        (json!({"kind": "global", "id": ""}), "global with an empty id"),
        (json!({"kind": "global", "token": "abc"}), "global with a token"),
        (json!({"kind": "token"}), "token with neither id nor token"),
        (json!({"kind": "token", "id": id, "token": "abc"}), "token with both"),
        (json!({"kind": "viewer"}), "viewer without an id"),
        (json!({"kind": "viewer", "id": ""}), "viewer with an empty id"),
        (
            json!({"kind": "viewer", "id": "v", "token": "abc"}),
            "viewer with a token",
        ),
        (json!({"kind": "asset", "id": "a".repeat(256)}), "an id over 255 bytes"),
        (json!({"kind": "key_id", "id": "70000"}), "a key id out of range"),
    ] {
        let (status, _, b) = revoke(&s, &body, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {b}");
        assert_eq!(b["error"], "invalid_scope", "{why}: {b}");
        assert!(!b["message"].as_str().unwrap().is_empty());
    }
    for (body, why) in [
        (json!({"kind": "everything"}), "an unknown kind"),
        (json!({"kind": "global", "scope": "x"}), "an unknown field"),
        (json!({"kind": 3}), "a kind that is not a string"),
    ] {
        let (status, _, b) = revoke(&s, &body, None).await;
        assert_eq!(
            (status, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{why}: {b}"
        );
    }
    assert_eq!(
        s.store.last_seq(Log::Revocations).await.unwrap(),
        0,
        "nothing refused was written"
    );
    assert_eq!(s.store.counter("state_generation").await.unwrap(), 0);

    // The well-formed ones are accepted, and receipts name the kind by its wire name.
    let (status, _, b) = revoke(&s, &json!({"kind": "viewer", "id": "v1"}), None).await;
    assert_eq!(
        (status, b["kind"].as_str(), b["target"].as_str()),
        (StatusCode::CREATED, Some("viewer"), Some("v1"))
    );
    let (status, _, b) = revoke(&s, &json!({"kind": "key_id", "id": "4"}), None).await;
    assert_eq!(
        (status, b["kind"].as_str()),
        (StatusCode::CREATED, Some("key_id")),
        "{b}"
    );
    let (status, _, b) = revoke(&s, &json!({"kind": "global"}), None).await;
    assert_eq!(
        (status, b["kind"].as_str(), b["target"].as_str()),
        (StatusCode::CREATED, Some("global"), Some(""))
    );
    assert_eq!(s.store.last_seq(Log::Revocations).await.unwrap(), 3);
}

#[tokio::test]
async fn a_replay_answers_200_with_the_first_receipt() {
    let s = setup().await;
    let body = json!({"kind": "campaign", "id": "spring"});
    let (status, replay, first) = revoke(&s, &body, Some("k-1")).await;
    assert_eq!((status, replay), (StatusCode::CREATED, None));
    let (status, replay, again) = revoke(&s, &body, Some("k-1")).await;
    assert_eq!(
        (status, replay.as_deref()),
        (StatusCode::OK, Some("true")),
        "docs/openapi.yaml: a replay is 200"
    );
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["generation"], first["generation"]);
    assert_eq!(s.store.last_seq(Log::Revocations).await.unwrap(), 1, "revoked once");
    // The same key with another body is a conflict, and revokes nothing.
    let (status, _, b) = revoke(&s, &json!({"kind": "campaign", "id": "autumn"}), Some("k-1")).await;
    assert_eq!((status, b["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    assert_eq!(s.store.last_seq(Log::Revocations).await.unwrap(), 1);
}
