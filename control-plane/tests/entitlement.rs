//! Access policies and the entitlement check (issue 15) against a real HTTP entitlement backend started here, which
//! checks every request's signature as docs/entitlement.md asks: allow, deny, a trial ending in N s, slow beyond the
//! timeout, 5xx, connection refused, and our signature refused by it; cache, single flight, breaker, failure policies,
//! invalidation across replicas with revocation; shares and the player's refresh; on the embedded store and Redis.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use common::RedisServer;
use common::service::{World, app_state, call, send, world_on};
use serde_json::{Value, json};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::entitlement::hook::{self, HookRequest};
use sharegate_control_plane::service::entitlement::{EntitlementSettings, FailurePolicy};
use sharegate_control_plane::service::{ServiceConfig, router};
use sharegate_control_plane::store::{Store, open_store};
use sharegate_shared::token::{TokenBuf, decode_unverified, tier};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &[u8] = b"entitlement-secret-for-tests-0123456789";

/// The test backend: answers by viewer id, counts calls, refuses a bad signature with 401.
#[derive(Default)]
struct Backend {
    calls: Mutex<HashMap<String, u32>>,
    seen: Mutex<Vec<HookRequest>>,
    /// Viewers whose answer was changed at run time (`allow` flips).
    overrides: Mutex<HashMap<String, Value>>,
    /// Every answer a 500.
    down: AtomicBool,
    bad_signatures: Mutex<u32>,
    started: u64,
}

impl Backend {
    fn calls(&self, viewer: &str) -> u32 {
        self.calls.lock().unwrap().get(viewer).copied().unwrap_or(0)
    }
}

async fn answer(State(b): State<Arc<Backend>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let now = sharegate_control_plane::service::now();
    if !hook::verify_request(SECRET, &headers, &body, now, 300) {
        *b.bad_signatures.lock().unwrap() += 1;
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let req: HookRequest = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        headers.get(hook::TIMESTAMP_HEADER).and_then(|v| v.to_str().ok()),
        Some(req.timestamp.to_string().as_str()),
        "the signed timestamp is the body's"
    );
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(req.request_id.as_str())
    );
    *b.calls.lock().unwrap().entry(req.viewer.clone()).or_default() += 1;
    b.seen.lock().unwrap().push(req.clone());
    if b.down.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    if let Some(v) = b.overrides.lock().unwrap().get(&req.viewer) {
        return axum::Json(v.clone()).into_response();
    }
    let v = req.viewer.as_str();
    let body = if let Some(n) = v.strip_prefix("trial-") {
        // A trial that ends N seconds after the backend started.
        let n: u64 = n.parse().unwrap();
        json!({"allow": true, "plan": "trial", "valid_until": b.started + n, "concurrency": 1})
    } else if v.starts_with("slow") {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        json!({"allow": true, "plan": "paid"})
    } else if v.starts_with("err") {
        return (StatusCode::BAD_GATEWAY, "upstream").into_response();
    } else if v.starts_with("deny") {
        json!({"allow": false, "reason": "no_subscription"})
    } else if v.starts_with("short") {
        json!({"allow": true, "plan": "paid", "max_ttl": 120})
    } else if v.starts_with("garbage") {
        return (StatusCode::OK, "not json").into_response();
    } else {
        // A little latency, so concurrent callers overlap.
        tokio::time::sleep(Duration::from_millis(50)).await;
        json!({"allow": true, "plan": "paid"})
    };
    axum::Json(body).into_response()
}

async fn backend() -> (Arc<Backend>, String) {
    let b = Arc::new(Backend {
        started: sharegate_control_plane::service::now(),
        ..Backend::default()
    });
    let app = Router::new()
        .route("/check", axum::routing::post(answer))
        .with_state(b.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (b, format!("http://{addr}/check"))
}

/// A port nothing listens on.
fn refused_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/check")
}

fn config(url: &str, secret: &[u8], policy: FailurePolicy) -> ServiceConfig {
    let mut e = EntitlementSettings::default();
    e.hook.url = Some(url.into());
    e.hook.secret = Some(secret.into());
    e.hook.breaker_threshold = 3;
    e.hook.breaker_cool_down = Duration::from_secs(60);
    e.failure_policy = policy;
    ServiceConfig {
        entitlement: e,
        ..ServiceConfig::default()
    }
}

async fn set_access(w: &World, body: Value) {
    let (s, b) = call(
        &w.app,
        "PUT",
        "/v1/assets/demo/access",
        Some(w.key(Role::Admin)),
        &body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

async fn mint(w: &World, viewer: Option<&str>) -> (StatusCode, Value) {
    let mut body = json!({"asset": "demo", "ttl": 3600});
    if let Some(v) = viewer {
        body["viewer"] = json!(v);
    }
    call(
        &w.app,
        "POST",
        "/v1/links",
        Some(w.key(Role::Minter)),
        &body.to_string(),
    )
    .await
}

/// `(exp, tier)` of a minted link's token.
fn claims_of(link: &Value) -> (u32, Option<u8>) {
    let mut buf = TokenBuf::new();
    let c = decode_unverified(link["token"].as_str().unwrap(), &mut buf).unwrap();
    (c.exp, c.tier)
}

async fn policies_and_answers(store: Option<Arc<dyn Store>>) {
    let (b, url) = backend().await;
    let w = world_on(config(&url, SECRET, FailurePolicy::Deny), store).await;

    // Public (the default): no viewer needed, the backend never asked.
    let (s, body) = mint(&w, None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = call(&w.app, "GET", "/v1/assets/demo/access", Some(w.key(Role::Auditor)), "").await;
    assert_eq!((s, body["access"].as_str()), (StatusCode::OK, Some("public")));

    // `viewer`: refused without one, minted with one, still no backend call.
    set_access(&w, json!({"access": "viewer"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // the hot cache's second
    let (s, body) = mint(&w, None).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("viewer_required")),
        "{body}"
    );
    let (s, _) = mint(&w, Some("anyone")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.calls("anyone"), 0);

    // `entitled`.
    set_access(&w, json!({"access": "entitled"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, link) = mint(&w, Some("alice")).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let (_, t) = claims_of(&link);
    assert_eq!(t, Some(tier::PLAN_PAID), "the plan rides in the tier, no end");
    // Cached: a second mint does not ask again.
    let (s, _) = mint(&w, Some("alice")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b.calls("alice"), 1);
    let seen = b
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.viewer == "alice")
        .cloned()
        .unwrap();
    assert_eq!((seen.purpose.as_str(), seen.asset.as_str()), ("link", "demo"));

    // Denied, with the backend's reason; the denial is cached briefly.
    let (s, body) = mint(&w, Some("deny-bob")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("entitlement_denied")),
        "{body}"
    );
    assert!(body["message"].as_str().unwrap().contains("no_subscription"), "{body}");
    let _ = mint(&w, Some("deny-bob")).await;
    assert_eq!(b.calls("deny-bob"), 1, "negative caching");

    // A trial ending in 100 s: the token ends with it, marked, whatever TTL was asked.
    let (s, link) = mint(&w, Some("trial-100")).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let (exp, t) = claims_of(&link);
    assert_eq!(u64::from(exp), b.started + 100);
    assert_eq!(link["expires_at"].as_u64(), Some(b.started + 100));
    assert_eq!(t, Some(tier::PLAN_TRIAL | tier::ENDS_ENTITLEMENT));
    // A trial that has ended: refused, in words.
    let (s, body) = mint(&w, Some("trial-0")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("trial_ended")),
        "{body}"
    );
    // An ended trial is cached like a denial, not asked again on every open.
    let _ = mint(&w, Some("trial-0")).await;
    assert_eq!(b.calls("trial-0"), 1);
    // The backend's max TTL.
    let (_, link) = mint(&w, Some("short-1")).await;
    let (exp, _) = claims_of(&link);
    assert!(u64::from(exp) <= sharegate_control_plane::service::now() + 120);

    // Single flight: many concurrent mints for one new viewer make one call.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let app = w.app.clone();
        let key = w.key(Role::Minter).to_string();
        tasks.push(tokio::spawn(async move {
            let body = json!({"asset": "demo", "viewer": "carol"}).to_string();
            call(&app, "POST", "/v1/links", Some(&key), &body).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(b.calls("carol"), 1, "one flight for twenty opens");

    // Slow beyond the timeout, a 5xx, an unreadable answer: 503 entitlement_unavailable under `deny`, never a 5xx
    // of ours otherwise.
    for v in ["slow-1", "err-1", "garbage-1"] {
        let (s, body) = mint(&w, Some(v)).await;
        assert_eq!(
            (s, body["error"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("entitlement_unavailable")),
            "{v}: {body}"
        );
    }
    // The breaker (3 failures in a row) is now open: the backend is not called at all.
    let before = b.calls("err-2");
    let (s, _) = mint(&w, Some("err-2")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b.calls("err-2"), before, "an open breaker sends nothing");
    let text = metrics_text(&w).await;
    assert!(
        text.contains(r#"sharegate_entitlement_breakers{state="open"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"sharegate_entitlement_check_seconds_count{outcome="allow",cache="hit"}"#));
    assert!(!text.contains(SECRET_TEXT));

    // The audit log has the policy change.
    let (_, audit) = call(
        &w.app,
        "GET",
        "/v1/audit?action=assets.access",
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert!(audit.to_string().contains("demo:entitled"), "{audit}");
}

const SECRET_TEXT: &str = "entitlement-secret-for-tests";

async fn metrics_text(w: &World) -> String {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::builder()
        .uri("/metrics")
        .header("authorization", format!("Bearer {}", w.key(Role::Auditor)))
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test]
async fn policies_and_answers_embedded() {
    policies_and_answers(None).await;
}

#[tokio::test]
async fn policies_and_answers_redis() {
    let redis = RedisServer::start();
    let store = open_store(&redis.url(), std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    policies_and_answers(Some(store)).await;
}

#[tokio::test]
async fn failure_policies_refused_connections_and_bad_signatures() {
    // Connection refused, policy deny: 503 (after one retry, which a closed port also refuses).
    let w = world_on(config(&refused_url(), SECRET, FailurePolicy::Deny), None).await;
    set_access(&w, json!({"access": "entitled"})).await;
    let (s, body) = mint(&w, Some("alice")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("entitlement_unavailable"))
    );

    // Policy allow: minted, with no plan and no end, counted as fail-open.
    let w = world_on(config(&refused_url(), SECRET, FailurePolicy::Allow), None).await;
    set_access(&w, json!({"access": "entitled"})).await;
    let (s, link) = mint(&w, Some("alice")).await;
    assert_eq!(s, StatusCode::OK, "{link}");
    assert_eq!(claims_of(&link).1, None);
    assert!(
        metrics_text(&w)
            .await
            .contains(r#"sharegate_entitlement_failure_decisions_total{decision="fail_open"}"#)
    );

    // cached_only: a decision cached while the backend was up still decides once it is down (past freshness);
    // a viewer never seen is refused.
    let (b, url) = backend().await;
    let mut c = config(&url, SECRET, FailurePolicy::CachedOnly);
    c.entitlement.hook.cache_max = Duration::from_secs(0);
    let w = world_on(c, None).await;
    set_access(&w, json!({"access": "entitled"})).await;
    assert_eq!(mint(&w, Some("alice")).await.0, StatusCode::OK);
    b.down.store(true, Ordering::SeqCst);
    assert_eq!(
        mint(&w, Some("alice")).await.0,
        StatusCode::OK,
        "the stale decision decides"
    );
    assert_eq!(b.calls("alice"), 2, "it was asked again first");
    assert_eq!(mint(&w, Some("dave")).await.0, StatusCode::SERVICE_UNAVAILABLE);

    // Our signature made with the wrong secret: the backend detects it (401), we refuse, diagnosis says why.
    let (b, url) = backend().await;
    let w = world_on(
        config(&url, b"not-the-secret-the-backend-holds-000000", FailurePolicy::Deny),
        None,
    )
    .await;
    set_access(&w, json!({"access": "entitled"})).await;
    let (s, _) = mint(&w, Some("alice")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(*b.bad_signatures.lock().unwrap() >= 1);
    assert_eq!(b.calls("alice"), 0);
    let (s, d) = call(
        &w.app,
        "POST",
        "/v1/diagnose",
        Some(w.key(Role::Responder)),
        &json!({"viewer": "alice", "asset": "demo"}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["reason"], "entitlement_unavailable");
    assert!(d["hints"].to_string().contains("same secret"), "{d}");
}

#[tokio::test]
async fn invalidation_reaches_every_replica_and_revokes() {
    let redis = RedisServer::start();
    let (b, url) = backend().await;
    let cfg = config(&url, SECRET, FailurePolicy::Deny);
    let store_a = open_store(&redis.url(), std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    let a = world_on(cfg.clone(), Some(store_a)).await;
    let store_b = open_store(&redis.url(), std::path::Path::new("/nonexistent"))
        .await
        .unwrap();
    let state_b = Arc::new(app_state(store_b, cfg));
    let app_b = router(state_b);
    set_access(&a, json!({"access": "entitled"})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Both replicas cache alice's allowance.
    let (s, link) = mint(&a, Some("alice")).await;
    assert_eq!(s, StatusCode::OK);
    let minter = a.key(Role::Minter);
    let body = json!({"asset": "demo", "viewer": "alice"}).to_string();
    assert_eq!(
        call(&app_b, "POST", "/v1/links", Some(minter), &body).await.0,
        StatusCode::OK
    );
    assert_eq!(b.calls("alice"), 2);

    // Her subscription ends in the product; until invalidated, the cached allowance stands.
    b.overrides
        .lock()
        .unwrap()
        .insert("alice".into(), json!({"allow": false, "reason": "cancelled"}));
    assert_eq!(mint(&a, Some("alice")).await.0, StatusCode::OK);

    // Only the responder and entitlement roles may invalidate.
    let inv = json!({"viewer": "alice", "asset": "demo", "revoke": true, "reason": "subscription cancelled"});
    let (s, _) = call(
        &a.app,
        "POST",
        "/v1/entitlements/invalidate",
        Some(minter),
        &inv.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, receipt) = call(
        &a.app,
        "POST",
        "/v1/entitlements/invalidate",
        Some(a.key(Role::Entitlement)),
        &inv.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{receipt}");
    // Her live tokens for the asset (three minted) are revoked, each by id.
    let revs = receipt["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 3, "{receipt}");
    assert!(revs.iter().all(|r| r["kind"] == "token"), "{receipt}");

    // This replica asks again at once; the other within a second.
    let (s, body) = mint(&a, Some("alice")).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("entitlement_denied"))
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (s, _) = call(&app_b, "POST", "/v1/links", Some(minter), &body_for("alice")).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The first link is revoked at the edge, as diagnosis sees it.
    let (_, d) = call(
        &a.app,
        "POST",
        "/v1/diagnose",
        Some(a.key(Role::Responder)),
        &json!({"url": link["url"]}).to_string(),
    )
    .await;
    assert_eq!(d["reason"], "revoked", "{d}");
    let (_, audit) = call(
        &a.app,
        "GET",
        "/v1/audit?action=entitlements.invalidate",
        Some(a.key(Role::Auditor)),
        "",
    )
    .await;
    assert!(audit.to_string().contains("alice:demo"), "{audit}");
}

fn body_for(viewer: &str) -> String {
    json!({"asset": "demo", "viewer": viewer}).to_string()
}

#[tokio::test]
async fn shares_check_at_open_and_refresh() {
    let (b, url) = backend().await;
    let w = world_on(config(&url, SECRET, FailurePolicy::Deny), None).await;
    // A public asset, a share that asks for entitlement.
    let (s, share) = call(
        &w.app,
        "POST",
        "/v1/shares",
        Some(w.key(Role::Minter)),
        &json!({"asset": "demo", "audience": "public", "access": "entitled", "ttl": 600}).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{share}");
    assert_eq!(share["access"], "entitled");
    let id = share["id"].as_str().unwrap();
    let playback = format!("/v1/shares/{id}/playback");
    // No viewer: refused with the code the player shows.
    let (s, _, body) = send(&w.app, "POST", &playback, None, &[], "").await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("viewer_required")),
        "{body}"
    );
    // A trial viewer: the token ends with the trial, and the player renews exactly then.
    let (s, _, p) = send(
        &w.app,
        "POST",
        &playback,
        None,
        &[("x-sharegate-viewer", "trial-300")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["expires_at"].as_u64(), Some(b.started + 300));
    assert_eq!(p["refresh_at"], p["expires_at"]);
    let (s, _, _) = send(
        &w.app,
        "POST",
        &format!("{playback}?refresh=1"),
        None,
        &[("x-sharegate-viewer", "trial-1000")],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let purposes: Vec<(String, String)> = b
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.viewer.clone(), r.purpose.clone()))
        .collect();
    assert!(
        purposes.contains(&("trial-300".into(), "share_open".into())),
        "{purposes:?}"
    );
    assert!(
        purposes.contains(&("trial-1000".into(), "refresh".into())),
        "{purposes:?}"
    );
    let seen = b.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(seen.share.as_deref(), Some(id));
    // Ended: refused with the player's "trial ended" code.
    let (s, _, body) = send(
        &w.app,
        "POST",
        &playback,
        None,
        &[("x-sharegate-viewer", "trial-0")],
        "",
    )
    .await;
    assert_eq!(
        (s, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("trial_ended")),
        "{body}"
    );
}

#[tokio::test]
async fn hostile_bodies_get_4xx_never_5xx() {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, TestRunner};
    let (_, url) = backend().await;
    let w = world_on(config(&url, SECRET, FailurePolicy::Deny), None).await;
    let fields = prop_oneof![
        Just("access"),
        Just("entitlement_url"),
        Just("viewer"),
        Just("asset"),
        Just("revoke"),
        Just("purge"),
        Just("reason"),
        Just("x"),
    ];
    let values = prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(7)),
        Just(json!("entitled")),
        Just(json!("demo")),
        Just(json!("ftp://x")),
        Just(json!("https://u:p@h/")),
        Just(json!("\u{0}\u{1}")),
        Just(json!("x".repeat(5000))),
        Just(json!([1, 2])),
        Just(json!({"a": 1})),
    ];
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    let strategy = (
        proptest::collection::btree_map(fields, values, 0..5),
        prop_oneof![Just(0usize), Just(1)],
    );
    let cases: Vec<(std::collections::BTreeMap<&str, Value>, usize)> = (0..200)
        .map(|_| strategy.new_tree(&mut runner).unwrap().current())
        .collect();
    for (body, which) in cases {
        let (method, path, role) = [
            ("PUT", "/v1/assets/demo/access", Role::Admin),
            ("POST", "/v1/entitlements/invalidate", Role::Responder),
        ][which];
        let text = serde_json::to_string(&body).unwrap();
        let (s, b) = call(&w.app, method, path, Some(w.key(role)), &text).await;
        assert!(s.is_success() || s.is_client_error(), "{method} {path} {text}: {s} {b}");
        // Whatever was accepted, put the asset back to public for the next case.
        set_access(&w, json!({"access": "public"})).await;
    }
    // Not JSON, too large.
    let (s, _) = call(
        &w.app,
        "POST",
        "/v1/entitlements/invalidate",
        Some(w.key(Role::Responder)),
        "{",
    )
    .await;
    assert!(s.is_client_error());
    let huge = format!("{{\"viewer\":\"{}\"}}", "v".repeat(2_000_000));
    let (s, _) = call(
        &w.app,
        "POST",
        "/v1/entitlements/invalidate",
        Some(w.key(Role::Responder)),
        &huge,
    )
    .await;
    assert!(s.is_client_error(), "{s}");
}
