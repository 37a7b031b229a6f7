//! The issued log does not grow with every mint ever made: a snapshot build trims the leading run of records whose
//! tokens have expired at every edge (the same bound the snapshot drops them by), and keeps the rest.
#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Log, Store, open_store};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{StateKey, StateView};
use sharegate_shared::token::Policy;
use std::sync::Arc;
use tower::ServiceExt;

fn app(store: &Arc<dyn Store>, clock_offset_secs: i64) -> axum::Router {
    let ring = KeyRing::with_active(4, SecretKey::new([7; 32]), 86_400);
    let config = ServiceConfig {
        edge_token: Some("edge".into()),
        ..ServiceConfig::default()
    };
    let mut state = AppState::new(store.clone(), config, &ring, Policy::default(), StateKey::new([9; 32])).unwrap();
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
    let (admin, rec) = new_key(Role::Admin, "t", 0).unwrap();
    store_key(store.as_ref(), &admin, &rec).await.unwrap();
    let (minter, rec) = new_key(Role::Minter, "t", 0).unwrap();
    store_key(store.as_ref(), &minter, &rec).await.unwrap();
    let media = dir.path().join("media/demo");
    std::fs::create_dir_all(media.join("v0")).unwrap();
    std::fs::write(
        media.join("master.m3u8"),
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n",
    )
    .unwrap();
    std::fs::write(
        media.join("v0/index.m3u8"),
        "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_000.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(media.join("v0/seg_000.ts"), "x").unwrap();
    let now = app(&store, 0);
    let body = serde_json::json!({"id": "demo", "origin": dir.path().join("media").to_str().unwrap()}).to_string();
    let req = |method: &str, uri: &str, key: &str, body: String| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let (s, b) = call(&now, req("POST", "/v1/assets", &admin, body)).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    for _ in 0..5 {
        let (s, b) = call(
            &now,
            req("POST", "/v1/links", &minter, r#"{"asset":"demo","ttl":600}"#.into()),
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
