//! The issued log does not grow with every mint ever made: a snapshot build trims the leading run of records whose
//! tokens have expired at every edge (the same bound the snapshot drops them by), and keeps the rest.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::{api_keys, app_state, key_of, register_demo, write_demo};
use http_body_util::BodyExt;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{ServiceConfig, router};
use sharegate_control_plane::store::{Log, Store, open_store};
use sharegate_shared::revocation::StateView;
use std::sync::Arc;
use tower::ServiceExt;

fn app(store: &Arc<dyn Store>, clock_offset_secs: i64) -> axum::Router {
    let config = ServiceConfig {
        edge_token: Some("edge".into()),
        ..ServiceConfig::default()
    };
    let mut state = app_state(store.clone(), config);
    state.clock_offset_secs = clock_offset_secs;
    router(Arc::new(state))
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

#[tokio::test]
async fn a_snapshot_build_trims_expired_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let keys = api_keys(store.as_ref(), &[Role::Admin, Role::Minter]).await;
    let (admin, minter) = (key_of(&keys, Role::Admin), key_of(&keys, Role::Minter));
    let media = dir.path().join("media");
    write_demo(&media);
    let now = app(&store, 0);
    register_demo(&now, admin, &media).await;
    let req = |method: &str, uri: &str, key: &str, body: String| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    for _ in 0..5 {
        let (s, b) = call(
            &now,
            req("POST", "/v1/links", minter, r#"{"asset":"demo","ttl":600}"#.into()),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
    }
    let snapshot = |app: axum::Router| async move {
        let (s, b) = call(&app, req("GET", "/v1/edge/state", "edge", String::new())).await;
        assert_eq!(s, StatusCode::OK);
        b
    };
    // Built a little later (past the cut-off lag, within the tokens' lives): every token is live, in the levels,
    // and nothing is trimmed.
    let b = snapshot(app(&store, 100)).await;
    assert_eq!(StateView::open(&b).unwrap().stats().issued, 5);
    assert_eq!(store.read_log(Log::Issued, 1, 100).await.unwrap().len(), 5);

    // Built two days later: every token has expired everywhere; the records go, their sequence numbers stay used.
    let b = snapshot(app(&store, 2 * 86_400)).await;
    assert_eq!(StateView::open(&b).unwrap().stats().issued, 0);
    assert!(
        store.read_log(Log::Issued, 1, 100).await.unwrap().is_empty(),
        "expired records trimmed"
    );
    assert_eq!(store.last_seq(Log::Issued).await.unwrap(), 5);
}
