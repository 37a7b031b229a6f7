//! The sharded state endpoints (`GET /v1/edge/state/head`, `GET /v1/edge/state/shard/{bits}/{index}`): MAC'd under the
//! state key, behind the edge credential, and exact: for minted tokens, revoked or not, the head and the token's shard
//! answer as the whole snapshot does; a revocation moves only its bucket's version; an edge at the current generation
//! gets the signed freshness message.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::{api_keys, app_state, key_of, register_demo, state_key, write_demo};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_shared::revocation::{HeadView, ShardView, Sharded, StateView, Subject, verify_freshness};
use sharegate_shared::token::{TokenBuf, decode_unverified};
use std::sync::Arc;
use tower::ServiceExt;

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

fn get(uri: &str, auth: Option<&str>, generation: Option<u64>) -> Request<Body> {
    let mut b = Request::get(uri).header("x-sharegate-freshness", "1");
    if let Some(a) = auth {
        b = b.header("authorization", format!("Bearer {a}"));
    }
    if let Some(g) = generation {
        b = b.header("x-sharegate-generation", g.to_string());
    }
    b.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn head_and_shards_answer_as_the_snapshot_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let keys = api_keys(store.as_ref(), &[Role::Admin, Role::Minter, Role::Responder]).await;
    let (admin, minter, responder) = (
        key_of(&keys, Role::Admin),
        key_of(&keys, Role::Minter),
        key_of(&keys, Role::Responder),
    );
    let media = dir.path().join("media");
    write_demo(&media);
    let config = ServiceConfig {
        edge_token: Some("edge".into()),
        ..ServiceConfig::default()
    };
    let app = router(Arc::new(app_state(store.clone(), config)));
    register_demo(&app, admin, &media).await;
    let post = |uri: &str, key: &str, body: Value| {
        Request::post(uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let mut tokens = Vec::new();
    for _ in 0..12 {
        let (s, b) = call(&app, post("/v1/links", minter, json!({"asset": "demo", "ttl": 600}))).await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
        let v: Value = serde_json::from_slice(&b).unwrap();
        tokens.push(v["token"].as_str().unwrap().to_string());
    }
    let id_of = |t: &str| {
        let mut buf = TokenBuf::new();
        let c = decode_unverified(t, &mut buf).unwrap();
        (c.token_id, c.iat, c.key_id)
    };
    for t in tokens.iter().step_by(3) {
        let id = hex::encode(id_of(t).0);
        let (s, b) = call(
            &app,
            post("/v1/revocations", responder, json!({"kind": "token", "id": id})),
        )
        .await;
        assert!(s.is_success(), "{s} {}", String::from_utf8_lossy(&b));
    }
    let key = state_key();
    // The edge credential is required.
    assert_eq!(
        call(&app, get("/v1/edge/state/head", None, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_ne!(
        call(&app, get("/v1/edge/state/shard/4/0", Some("nope"), None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, get("/v1/edge/state/shard/17/0", Some("edge"), None)).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&app, get("/v1/edge/state/shard/4/16", Some("edge"), None)).await.0,
        StatusCode::NOT_FOUND
    );
    let (s, head) = call(&app, get("/v1/edge/state/head", Some("edge"), None)).await;
    assert_eq!(s, StatusCode::OK);
    let head = HeadView::open_verified(&head, &key).unwrap();
    assert_eq!(head.generation(), 4);
    let (_, snap) = call(&app, get("/v1/edge/state", Some("edge"), None)).await;
    let snap = StateView::open_verified(&snap, &key, 0).unwrap();
    for (n, t) in tokens.iter().enumerate() {
        let (id, iat, key_id) = id_of(t);
        let i = head.bucket_of(&id);
        let (s, shard) = call(
            &app,
            get(&format!("/v1/edge/state/shard/{}/{i}", head.bits()), Some("edge"), None),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let shard = ShardView::open_verified(&shard, &key).unwrap();
        let subject = Subject {
            token_id: &id,
            iat,
            key_id,
            share: None,
            viewer: None,
            session: None,
            asset: Some(b"demo"),
            campaign: None,
        };
        let sharded = Sharded {
            head: head.prefix(),
            version: head.version(i).unwrap(),
            shard: Some(shard),
        };
        assert_eq!(sharded.check(&subject), Ok(snap.is_revoked(&subject)), "token {n}");
        assert_eq!(sharded.check(&subject).unwrap().is_revoked(), n % 3 == 0, "token {n}");
    }
    // Current: the signed freshness message.
    let (s, fresh) = call(&app, get("/v1/edge/state/head", Some("edge"), Some(4))).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verify_freshness(&fresh, &key).unwrap().generation, 4);
    // Behind: the head.
    let (_, again) = call(&app, get("/v1/edge/state/head", Some("edge"), Some(3))).await;
    assert_eq!(HeadView::open_verified(&again, &key).unwrap().generation(), 4);
}
