//! The audit log is never trimmed, so nothing an anonymous caller sends may grow it without bound: anonymous
//! refused calls are audited one per window (the rest counted), and caller-chosen text in an entry is clipped.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::world_with;
use sharegate_control_plane::service::ServiceConfig;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::store::Log;
use tower::ServiceExt;

#[tokio::test]
async fn anonymous_refusals_cannot_grow_the_audit_log() {
    let w = world_with(ServiceConfig::default(), |_| {}).await;
    let (app, store, minter) = (&w.app, &w.state.store, w.key(Role::Minter));
    let before = store.last_seq(Log::Audit).await.unwrap();

    // A flood of anonymous refused calls: no key, forged keys, long random paths and request ids.
    for i in 0..300 {
        let path = format!("/v1/{}{i}", "x".repeat(2000));
        let mut b = Request::post(path).header("x-request-id", "r".repeat(4000));
        if i % 2 == 0 {
            b = b.header("authorization", format!("Bearer sg_minter_forged{i}"));
        }
        let resp = app.clone().oneshot(b.body(Body::empty()).unwrap()).await.unwrap();
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    let after = store.last_seq(Log::Audit).await.unwrap();
    assert!(
        after - before <= 2,
        "300 anonymous refusals wrote {} audit entries",
        after - before
    );
    assert!(after > before, "the first anonymous refusal is audited");

    // A refused call by a known key is audited every time, with its caller-chosen text clipped.
    let resp = app
        .clone()
        .oneshot(
            Request::post(format!("/v1/links/{}", "y".repeat(5000)))
                .header("authorization", format!("Bearer {minter}"))
                .header("x-request-id", "q".repeat(5000))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_ne!(resp.status(), StatusCode::OK);
    let last = store.read_chained(Log::Audit, after + 1, 10).await.unwrap();
    assert_eq!(last.len(), 1, "an authenticated refusal is audited");
    let e: serde_json::Value = serde_json::from_slice(&last[0].value).unwrap();
    assert!(e["subject"].as_str().unwrap().len() <= 256, "{e}");
    assert!(e["request_id"].as_str().unwrap().len() <= 128, "{e}");
}
