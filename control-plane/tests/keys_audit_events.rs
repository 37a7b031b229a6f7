//! Key rotation, the audit query, edge event ingestion and metrics, through the router in-process (`oneshot`); the
//! edges that keys are published to are small local HTTP servers.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use common::service::{ROLES, api_keys, app_state};
use http_body_util::BodyExt;
use sharegate_control_plane::service::audit_events::{self, MetricsAccess};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::keys::{self, RING_KEY, RotatingMinter, load_ring, open_ring};
use sharegate_control_plane::service::{AppState, AuditEntry, EdgeTarget, ServiceConfig};
use sharegate_control_plane::store::{Log, Ns, open_store};
use sharegate_edge::config::parse_signing_keys;
use sharegate_edge::events::{Event, EventBatch, EventKind};
use sharegate_shared::keys::{KeyRing, KeyState};
use sharegate_shared::token::{Claims, Permissions, Policy, Text, TokenBuf, Verifier};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const MASTER: [u8; 32] = [0x5a; 32];
const EDGE_TOKEN: &str = "edge-credential-for-tests";
const PUSH_TOKEN: &str = "push-credential-for-tests";
/// The secret of the test ring's startup key.
const STARTUP_SECRET: [u8; 32] = common::service::SECRET;

struct World {
    /// The routes under test (keys, audit, events, metrics) with the latency layer, built here so the tests do not
    /// depend on how the service router merges them.
    app: Router,
    state: Arc<AppState>,
    keys: Vec<(Role, String)>,
    dir: tempfile::TempDir,
}

impl World {
    fn key(&self, role: Role) -> String {
        self.keys.iter().find(|(r, _)| *r == role).unwrap().1.clone()
    }
}

async fn world_in(dir: tempfile::TempDir, edges: Vec<EdgeTarget>, master: Option<[u8; 32]>) -> World {
    let store = open_store("", dir.path()).await.unwrap();
    let config = ServiceConfig {
        edges,
        edge_token: Some(EDGE_TOKEN.into()),
        ..ServiceConfig::default()
    };
    let mut state = app_state(store.clone(), config);
    state.master_key = master;
    let state = Arc::new(state);
    let keys = api_keys(store.as_ref(), &ROLES).await;
    World {
        app: module_router(state.clone(), MetricsAccess::ApiKey),
        state,
        keys,
        dir,
    }
}

fn module_router(state: Arc<AppState>, access: MetricsAccess) -> Router {
    Router::new()
        .merge(keys::routes())
        .merge(audit_events::routes_with(access))
        .layer(audit_events::metrics_layer())
        .with_state(state)
}

async fn world(edges: Vec<EdgeTarget>, master: Option<[u8; 32]>) -> World {
    world_in(tempfile::tempdir().unwrap(), edges, master).await
}

/// `auth` is the whole `Authorization` value.
async fn raw(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app.clone().oneshot(req.body(Body::from(body)).unwrap()).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

async fn call(app: &Router, method: &str, uri: &str, key: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
    let auth = key.map(|k| format!("Bearer {k}"));
    let (s, _, text) = raw(app, method, uri, auth.as_deref(), body.as_bytes().to_vec()).await;
    (s, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// A stand-in edge: records every key push it accepts, answers with a settable status.
struct FakeEdge {
    url: String,
    bodies: Mutex<Vec<String>>,
    status: AtomicU16,
}

async fn fake_edge(status: u16) -> Arc<FakeEdge> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge = Arc::new(FakeEdge {
        url: format!("http://{}", listener.local_addr().unwrap()),
        bodies: Mutex::new(Vec::new()),
        status: AtomicU16::new(status),
    });
    let e = edge.clone();
    let app = Router::new().route(
        "/_sharegate/keys",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let e = e.clone();
            async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                if auth != Some(&format!("Bearer {PUSH_TOKEN}")) {
                    return StatusCode::UNAUTHORIZED;
                }
                e.bodies.lock().unwrap().push(body);
                StatusCode::from_u16(e.status.load(Ordering::SeqCst)).unwrap()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    edge
}

fn target(e: &FakeEdge) -> EdgeTarget {
    EdgeTarget {
        url: e.url.clone(),
        token: PUSH_TOKEN.into(),
    }
}

/// The ring an edge holds after a push, and the hex secret of key `id` in it.
fn pushed(body: &str) -> KeyRing {
    parse_signing_keys(body, 86_400).unwrap()
}

fn secret_hex(ring: &KeyRing, id: u16) -> String {
    hex::encode(ring.get(id).unwrap().secret.expose())
}

fn mint(minter: &sharegate_shared::token::Minter) -> String {
    let iat = u32::try_from(sharegate_control_plane::service::now()).unwrap();
    let claims = Claims {
        token_id: [1; 12],
        iat,
        nbf: iat,
        exp: iat + 600,
        permissions: Permissions::PLAYBACK,
        asset: Some(Text::from("demo")),
        ..Claims::default()
    };
    minter.mint(&claims).unwrap()
}

fn verifies(ring: &KeyRing, token: &str) -> bool {
    let mut buf = TokenBuf::new();
    Verifier::new(ring, Policy::default())
        .authenticate(token, &mut buf)
        .is_ok()
}

#[tokio::test]
async fn rotation_publishes_next_before_it_mints() {
    let edge = fake_edge(200).await;
    let w = world(vec![target(&edge)], Some(MASTER)).await;
    let responder = w.key(Role::Responder);

    let (s, b) = call(&w.app, "GET", "/v1/keys", Some(&w.key(Role::Auditor)), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["source"], "config");
    assert_eq!(b["keys"][0]["id"], 4);
    assert_eq!(b["keys"][0]["state"], "active");

    // Step 1: stage a `next` key and publish it; minting stays on key 4.
    let (s, b) = call(&w.app, "POST", "/v1/keys/rotate", Some(&responder), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["action"], "staged");
    assert_eq!(b["active"], 4);
    assert_eq!(b["next"], 5);
    assert_eq!(b["published"][0]["status"], 200);
    assert_eq!(b["published"][0]["edge"], edge.url.as_str());
    let first = pushed(&edge.bodies.lock().unwrap()[0]);
    assert_eq!(first.get(5).unwrap().state, KeyState::Next);
    assert_eq!(first.active().unwrap().id, 4);
    let s5 = secret_hex(&first, 5);
    let startup = hex::encode(STARTUP_SECRET);
    assert!(!b.to_string().contains(&s5) && !b.to_string().contains(&startup));
    let minter = RotatingMinter::from_state(&w.state).await.unwrap();
    assert_eq!(minter.current().minter.key_id(), 4);
    let old_token = mint(&minter.current().minter);

    // At rest: only sealed secrets; the wrong master key opens nothing and says nothing.
    let stored = w.state.store.get(Ns::Keys, RING_KEY).await.unwrap().unwrap();
    let stored_text = String::from_utf8_lossy(&stored);
    let s5_raw = hex::decode(&s5).unwrap();
    assert!(!stored_text.contains(&s5) && !stored_text.contains(&startup));
    assert!(
        !stored
            .windows(32)
            .any(|w| w == s5_raw.as_slice() || w == STARTUP_SECRET)
    );
    let err = open_ring(&stored, &[0x5b; 32], 86_400).unwrap_err().to_string();
    assert!(err.contains("cannot be decrypted") && !err.contains(&s5));
    let opened = open_ring(&stored, &MASTER, 86_400).unwrap();
    assert_eq!(secret_hex(&opened, 5), s5);
    assert_eq!(secret_hex(&opened, 4), startup);

    // Listing shows ids and states from the store, never secrets.
    let (s, b) = call(&w.app, "GET", "/v1/keys", Some(&w.key(Role::Admin)), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["source"], "store");
    assert!(!b.to_string().contains(&s5) && !b.to_string().contains(&startup));
    let states: Vec<(u64, String)> = b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_u64().unwrap(), k["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(states, vec![(4, "active".into()), (5, "next".into())]);

    // Step 2: the published `next` key is promoted; the old one retires; a new `next` is staged and published.
    let (s, b) = call(&w.app, "POST", "/v1/keys/rotate", Some(&responder), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["action"], "promoted");
    assert_eq!(b["active"], 5);
    assert_eq!(b["next"], 6);
    assert_eq!(b["retiring"], serde_json::json!([4]));
    let bodies = edge.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let second = pushed(&bodies[1]);
    assert_eq!(second.active().unwrap().id, 5);
    assert_eq!(second.get(6).unwrap().state, KeyState::Next);
    assert!(matches!(second.get(4).unwrap().state, KeyState::Retiring { .. }));
    // The key that now mints is the one the edge received, as `next`, one push earlier.
    assert_eq!(secret_hex(&second, 5), s5);

    // The rotating minter picks the new active key up; the edge verifies both the new and the old tokens.
    assert!(minter.refresh(&w.state).await.unwrap());
    assert!(!minter.refresh(&w.state).await.unwrap());
    assert_eq!(minter.current().minter.key_id(), 5);
    let new_token = mint(&minter.current().minter);
    assert!(verifies(&second, &new_token) && verifies(&second, &old_token));
    assert!(
        verifies(&first, &new_token),
        "the edge could verify key 5 before it minted"
    );
    let ring = load_ring(&w.state).await.unwrap().unwrap();
    assert_eq!(ring.active().unwrap().id, 5);

    // Each step is audited.
    let (_, b) = call(
        &w.app,
        "GET",
        "/v1/audit?action=keys.rotate",
        Some(&w.key(Role::Auditor)),
        "",
    )
    .await;
    let actions: Vec<&str> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["keys.rotate.staged", "keys.rotate.promoted"]);
}

#[tokio::test]
async fn a_next_key_an_edge_refused_is_republished_not_promoted() {
    let edge = fake_edge(500).await;
    let w = world(vec![target(&edge)], Some(MASTER)).await;
    let responder = w.key(Role::Responder);
    let rotate = || call(&w.app, "POST", "/v1/keys/rotate", Some(&responder), "");

    let (_, b) = rotate().await;
    assert_eq!((b["action"].as_str(), b["next"].as_u64()), (Some("staged"), Some(5)));
    assert_eq!(b["published"][0]["status"], 500);
    let (_, b) = rotate().await;
    assert_eq!(b["action"], "republished");
    assert_eq!((b["active"].as_u64(), b["next"].as_u64()), (Some(4), Some(5)));
    let (_, keys) = call(&w.app, "GET", "/v1/keys", Some(&responder), "").await;
    assert_eq!(keys["keys"][1]["published"], false);

    // The edge recovers: the next call only publishes; the one after promotes.
    edge.status.store(200, Ordering::SeqCst);
    let (_, b) = rotate().await;
    assert_eq!(
        (b["action"].as_str(), b["active"].as_u64()),
        (Some("republished"), Some(4))
    );
    let (_, b) = rotate().await;
    assert_eq!(
        (b["action"].as_str(), b["active"].as_u64()),
        (Some("promoted"), Some(5))
    );
    assert_eq!(edge.bodies.lock().unwrap().len(), 4);

    // An unreachable edge reads as status 0.
    let w2 = world(
        vec![EdgeTarget {
            url: "http://127.0.0.1:1".into(),
            token: PUSH_TOKEN.into(),
        }],
        Some(MASTER),
    )
    .await;
    let (s, b) = call(&w2.app, "POST", "/v1/keys/rotate", Some(&w2.key(Role::Responder)), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["published"][0]["status"], 0);
}

#[tokio::test]
async fn rotation_is_refused_without_a_master_key() {
    let w = world(Vec::new(), None).await;
    let (s, b) = call(&w.app, "POST", "/v1/keys/rotate", Some(&w.key(Role::Responder)), "").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["error"], "refused");
    assert!(b["message"].as_str().unwrap().contains("master key"));
    assert!(w.state.store.get(Ns::Keys, RING_KEY).await.unwrap().is_none());
    assert!(load_ring(&w.state).await.unwrap().is_none());
    let (s, _) = call(&w.app, "GET", "/v1/keys", Some(&w.key(Role::Responder)), "").await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn the_edge_pulls_the_ring_with_its_credential() {
    let w = world(Vec::new(), Some(MASTER)).await;
    let (s, h, body) = raw(
        &w.app,
        "GET",
        "/v1/edge/keys",
        Some(&format!("Bearer {EDGE_TOKEN}")),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(pushed(&body).active().unwrap().id, 4);
    call(&w.app, "POST", "/v1/keys/rotate", Some(&w.key(Role::Responder)), "").await;
    let (_, _, body) = raw(
        &w.app,
        "GET",
        "/v1/edge/keys",
        Some(&format!("Bearer {EDGE_TOKEN}")),
        vec![],
    )
    .await;
    let ring = pushed(&body);
    assert_eq!(ring.get(5).unwrap().state, KeyState::Next);
}

fn batch_json(events: &[(EventKind, Option<&'static str>, &str, Option<&str>)], dropped: usize) -> String {
    let mut b = EventBatch::default();
    for (kind, reason, asset, channel) in events {
        b.push(Event {
            kind: *kind,
            reason: *reason,
            at: 1_700_000_000,
            asset: Some((*asset).into()),
            share: None,
            channel: channel.map(str::to_string),
            campaign: channel.map(|_| "spring".to_string()),
            edge: "e1".into(),
            token: None,
            plan: None,
            cmcd: None,
        });
    }
    let mut json = b.take_json("e1").unwrap();
    if dropped > 0 {
        json = json.replace("\"dropped\":0", &format!("\"dropped\":{dropped}"));
    }
    json
}

#[tokio::test]
async fn auth_matrix() {
    let w = world(Vec::new(), Some(MASTER)).await;
    let api_routes: [(&str, &str, &[Role]); 4] = [
        ("POST", "/v1/keys/rotate", &[Role::Responder]),
        ("GET", "/v1/keys", &[Role::Responder, Role::Admin, Role::Auditor]),
        ("GET", "/v1/audit", &[Role::Auditor, Role::Admin]),
        ("GET", "/metrics", &[Role::Auditor, Role::Admin]),
    ];
    for (method, uri, allowed) in api_routes {
        let (s, b) = call(&w.app, method, uri, None, "").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{uri}"
        );
        let (s, _) = call(&w.app, method, uri, Some("sg_admin_notakey"), "").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        let (s, _) = call(&w.app, method, uri, Some(EDGE_TOKEN), "").await;
        assert_eq!(
            s,
            StatusCode::UNAUTHORIZED,
            "{uri}: the edge credential is not an API key"
        );
        for (role, key) in &w.keys {
            let (s, b) = call(&w.app, method, uri, Some(key), "").await;
            let want = if allowed.contains(role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(s, want, "{method} {uri} as {}: {b}", role.as_str());
        }
    }
    let events = batch_json(&[(EventKind::Deny, Some("revoked"), "a1", None)], 0);
    for (method, uri, body) in [
        ("POST", "/v1/edge/events", events.as_str()),
        ("GET", "/v1/edge/keys", ""),
    ] {
        let send = |auth: Option<String>| {
            let app = w.app.clone();
            async move {
                raw(&app, method, uri, auth.as_deref(), body.as_bytes().to_vec())
                    .await
                    .0
            }
        };
        assert_eq!(send(None).await, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            send(Some("Bearer wrong".into())).await,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            send(Some(format!("Bearer {EDGE_TOKEN}x"))).await,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
        assert_eq!(
            send(Some(EDGE_TOKEN.into())).await,
            StatusCode::UNAUTHORIZED,
            "{uri}: no Bearer"
        );
        for (role, key) in &w.keys {
            assert_eq!(
                send(Some(format!("Bearer {key}"))).await,
                StatusCode::UNAUTHORIZED,
                "{uri} as {role:?}"
            );
        }
        assert_eq!(
            send(Some(format!("Bearer {EDGE_TOKEN}"))).await,
            StatusCode::OK,
            "{uri}"
        );
    }

    // Without a configured edge credential no edge call is accepted.
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let state = Arc::new(app_state(store, ServiceConfig::default()));
    let app = module_router(state.clone(), MetricsAccess::ApiKey);
    let (s, _, _) = raw(
        &app,
        "POST",
        "/v1/edge/events",
        Some("Bearer "),
        events.clone().into_bytes(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Public metrics, when a deployment chooses them.
    let public = module_router(state, MetricsAccess::Public);
    assert_eq!(raw(&public, "GET", "/metrics", None, vec![]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn audit_query_filters_and_detects_tampering() {
    let w = world(Vec::new(), Some(MASTER)).await;
    let auditor = w.key(Role::Auditor);
    // Entries at known times, as the service writes them; then one through the API.
    for (at, asset) in [(1000, "a1"), (2000, "a2"), (3000, "a2")] {
        let e = AuditEntry {
            at,
            actor: "k1".into(),
            role: Some(Role::Minter),
            action: "links.mint".into(),
            subject: asset.into(),
            outcome: "ok".into(),
            request_id: None,
        };
        let bytes = serde_json::to_vec(&e).unwrap();
        w.state.store.append_chained(Log::Audit, &bytes).await.unwrap();
    }
    call(&w.app, "POST", "/v1/keys/rotate", Some(&w.key(Role::Responder)), "").await;

    let (s, b) = call(&w.app, "GET", "/v1/audit", Some(&auditor), "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["chain"], "ok");
    assert_eq!(b["length"], 4);
    assert_eq!(b["entries"].as_array().unwrap().len(), 4);
    let stored = w.state.store.read_chained(Log::Audit, 1, 100).await.unwrap();
    assert_eq!(b["head"], hex::encode(stored[3].hash));
    assert_eq!(b["entries"][0]["seq"], 1);
    assert_eq!(b["entries"][0]["hash"], hex::encode(stored[0].hash));
    assert_eq!(b["entries"][0]["action"], "links.mint");
    assert_eq!(b["entries"][0]["role"], "minter");

    let count = |q: &'static str| {
        let app = w.app.clone();
        let auditor = auditor.clone();
        async move {
            let (s, b) = call(&app, "GET", &format!("/v1/audit?{q}"), Some(&auditor), "").await;
            assert_eq!(s, StatusCode::OK, "{q}: {b}");
            (b["entries"].as_array().unwrap().len(), b["matched"].as_u64().unwrap())
        }
    };
    assert_eq!(count("action=links").await, (3, 3));
    assert_eq!(count("action=links&subject=a2").await, (2, 2));
    assert_eq!(count("subject=2").await, (2, 2));
    assert_eq!(count("action=keys.rotate").await, (1, 1));
    assert_eq!(count("action=mint").await, (0, 0), "action is a prefix");
    assert_eq!(count("limit=1").await, (1, 4));
    assert_eq!(count("from=0&to=4000000000").await, (4, 4));
    assert_eq!(count("from=1500&to=2500").await, (1, 1));
    assert_eq!(count("from=2000&to=3000&subject=a2").await, (2, 2));
    assert_eq!(count("from=4000000000").await, (0, 0));
    assert_eq!(count("to=1").await, (0, 0));
    let (_, b) = call(&w.app, "GET", "/v1/audit?limit=1", Some(&auditor), "").await;
    assert_eq!(b["entries"][0]["seq"], 4, "the latest match is kept");
    for bad in ["limit=0", "limit=1001", "from=5&to=4", "from=yesterday", "colour=red"] {
        let (s, b) = call(&w.app, "GET", &format!("/v1/audit?{bad}"), Some(&auditor), "").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{bad}"
        );
    }

    // Edit entry 2 behind the service's back (the store keeps `hash || value`), keeping its stored hash.
    let World { app, state, dir, .. } = w;
    drop((app, state));
    {
        use redb::ReadableTable;
        let table = redb::TableDefinition::<u64, &[u8]>::new("log:audit");
        let db = redb::Database::create(dir.path().join("sharegate.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let stored = t.get(2).unwrap().unwrap().value().to_vec();
            let text = String::from_utf8(stored[32..].to_vec()).unwrap();
            assert!(text.contains("\"a2\""));
            let mut edited = stored[..32].to_vec();
            edited.extend_from_slice(text.replace("\"a2\"", "\"a9\"").as_bytes());
            t.insert(2, edited.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let w = world_in(dir, Vec::new(), Some(MASTER)).await;
    let (s, b) = call(&w.app, "GET", "/v1/audit", Some(&w.key(Role::Auditor)), "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["chain"], "broken_at_seq_2");
    assert_eq!(b["entries"][1]["subject"], "a9");
    let (_, b) = call(&w.app, "GET", "/v1/audit?action=keys", Some(&w.key(Role::Auditor)), "").await;
    assert_eq!(b["chain"], "broken_at_seq_2", "a filtered view still reports the break");
}

#[tokio::test]
async fn edge_events_are_counted_and_exported() {
    let w = world(Vec::new(), Some(MASTER)).await;
    let edge = format!("Bearer {EDGE_TOKEN}");
    let post = |body: Vec<u8>| {
        let app = w.app.clone();
        let edge = edge.clone();
        async move { raw(&app, "POST", "/v1/edge/events", Some(&edge), body).await }
    };
    for bad in [
        &b"{\"edge\":"[..],
        b"[]",
        b"{\"edge\":\"e1\"}",
        b"{\"edge\":\"e1\",\"events\":[{\"at\":1}]}",
    ] {
        let (s, _, text) = post(bad.to_vec()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(bad));
        let b: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(b["error"], "invalid_request");
        assert!(
            b["message"].as_str().unwrap().contains("malformed event batch"),
            "{text}"
        );
    }
    let (s, _, text) = post(br#"{"edge":"e1","events":[{"kind":"","at":1}]}"#.to_vec()).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{text}");
    let (s, _, text) = post(vec![b' '; (1 << 20) + 1]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(
        w.state.store.last_seq(Log::Events).await.unwrap(),
        0,
        "refused batches store nothing"
    );

    // Only registered assets become labels (see tests/metrics_cardinality.rs for everything else).
    w.state.store.put(Ns::Assets, "a1", b"{}").await.unwrap();
    let batch = batch_json(
        &[
            (EventKind::Deny, Some("revoked"), "a1", Some("email")),
            (EventKind::Deny, Some("revoked"), "a1", Some("email")),
            (EventKind::Expiry, None, "we:ird\"x\n", None),
        ],
        5,
    );
    let (s, _, text) = post(batch.clone().into_bytes()).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let b: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!((b["accepted"].as_u64(), b["dropped"].as_u64()), (Some(3), Some(5)));
    let logged = w.state.store.read_log(Log::Events, 1, 100).await.unwrap();
    assert_eq!(logged.len(), 3);
    let first: serde_json::Value = serde_json::from_slice(&logged[0].1).unwrap();
    assert_eq!(
        (first["kind"].as_str(), first["edge"].as_str()),
        (Some("deny"), Some("e1"))
    );
    assert!(first["received_at"].as_u64().unwrap() > 0);
    post(batch.into_bytes()).await;

    // An unauthenticated call, to see a 401 series in the histogram.
    raw(&w.app, "POST", "/v1/edge/events", None, b"{}".to_vec()).await;
    let (s, h, text) = raw(
        &w.app,
        "GET",
        "/metrics",
        Some(&format!("Bearer {}", w.key(Role::Auditor))),
        vec![],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for want in [
        "# TYPE sharegate_edge_events_total counter",
        r#"sharegate_edge_events_total{kind="deny",reason="revoked",asset="a1",channel="email",campaign="spring"} 4"#,
        r#"sharegate_edge_events_total{kind="expiry",reason="",asset="_unknown",channel="",campaign=""} 2"#,
        r#"sharegate_edge_events_folded_total{label="asset",to="_unknown"} 2"#,
        r#"sharegate_edge_events_dropped_total{edge="e1"} 10"#,
        "# TYPE sharegate_http_request_duration_seconds histogram",
        r#"sharegate_http_request_duration_seconds_bucket{route="/v1/edge/events",method="POST",status="200",le="0.005"}"#,
        r#"sharegate_http_request_duration_seconds_bucket{route="/v1/edge/events",method="POST",status="200",le="+Inf"}"#,
        r#"sharegate_http_request_duration_seconds_count{route="/v1/edge/events",method="POST",status="401"}"#,
        r#"sharegate_http_request_duration_seconds_sum{route="/v1/edge/events",method="POST",status="400"}"#,
    ] {
        assert!(text.contains(want), "missing {want}\n{text}");
    }
    // Every exposition line is well formed: a comment, `name{labels} value`, or `name value` (a gauge without labels).
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        let bare = !series.is_empty() && series.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        assert!(
            bare || (series.ends_with('}') && series.matches('{').count() == 1),
            "{line}"
        );
    }
}
