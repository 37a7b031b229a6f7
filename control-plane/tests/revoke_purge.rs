//! Revoke-and-purge as one act, through the HTTP API: `POST /v1/revocations` with `"purge": true` writes the
//! revocation and its purge jobs in one transaction, the outbox sends them to (strict local fakes of) Cloudflare
//! and Fastly, and `GET /v1/revocations/{id}` shows where each purge stands.
//!
//! The router runs in-process (`oneshot`) over the embedded store, as in `tests/service.rs`; the outbox is the
//! production one (`Outbox::over_store`, i.e. `StoreOutbox` on the service's own store). The CDN fakes are copied
//! from `tests/purge.rs`, which documents what they check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::Response;
use axum::routing::post;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sharegate_control_plane::purge::{
    CloudflarePurger, FastlyPurger, JobStatus, MemoryOutboxStore, Outbox, OutboxConfig, OutboxStore, PurgeTarget,
    StoreOutbox, spawn_outbox_worker,
};
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Log, Ns, Store, open_store};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::Policy;
use tower::ServiceExt;

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const CF_TOKEN: &str = "cf-test-token";
const SERVICE: &str = "SU1Z0isxPaozGVKXdv0eY";
const FASTLY_KEY: &str = "fastly-test-key";
/// Cloudflare's current per-request ceiling ("max operations per request"); the fake refuses more.
const CF_MAX_PER_CALL: usize = 100;
/// Fastly's documented bulk ceiling.
const FASTLY_MAX_KEYS: usize = 256;

// ---------------------------------------------------------------------------------------------------------------
// The fakes
// ---------------------------------------------------------------------------------------------------------------

/// What a fake does with its next valid request instead of succeeding.
#[derive(Clone, Copy, Debug)]
enum Scripted {
    /// 429 with a wait of this many seconds (`Retry-After` for Cloudflare, `Fastly-RateLimit-Reset` for Fastly).
    RateLimit(u64),
    /// This status with an error body.
    Status(u16),
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    body: Value,
    soft: bool,
}

#[derive(Default)]
struct FakeState {
    seen: Vec<Seen>,
    rejected: Vec<String>,
    script: VecDeque<Scripted>,
}

#[derive(Clone)]
struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

impl Fake {
    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Valid requests received (including those answered 429/5xx by script).
    fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
    fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }
    fn script(&self, steps: &[Scripted]) {
        self.state.lock().unwrap().script.extend(steps.iter().copied());
    }
}

fn reply(status: u16, headers: &[(&str, String)], body: &Value) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// Records a valid request and returns the scripted step for it, if any.
async fn accept(state: &Mutex<FakeState>, seen: Seen) -> Option<Scripted> {
    let mut s = state.lock().unwrap();
    s.seen.push(seen);
    s.script.pop_front()
}

// --- Cloudflare --------------------------------------------------------------------------------------------------

fn cf_error(status: u16, code: u32, message: &str) -> Response {
    reply(
        status,
        &[],
        &json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

/// The documented body: exactly one of `files`, `tags`, `prefixes`, `hosts`, `purge_everything`.
fn cf_check_body(body: &Value) -> Result<(), String> {
    let obj = body.as_object().ok_or("body is not a JSON object")?;
    const KINDS: [&str; 5] = ["files", "tags", "prefixes", "hosts", "purge_everything"];
    if let Some(k) = obj.keys().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(format!("unknown field {k}"));
    }
    if obj.len() != 1 {
        return Err(format!("exactly one purge kind expected, got {}", obj.len()));
    }
    let (kind, value) = obj.iter().next().ok_or("empty body")?;
    if kind == "purge_everything" {
        return if value == &Value::Bool(true) {
            Ok(())
        } else {
            Err("purge_everything must be true".into())
        };
    }
    let items = value.as_array().ok_or_else(|| format!("{kind} must be an array"))?;
    if items.is_empty() {
        return Err(format!("{kind} is empty"));
    }
    if items.len() > CF_MAX_PER_CALL {
        return Err(format!(
            "{kind}: {} entries, at most {CF_MAX_PER_CALL} per request",
            items.len()
        ));
    }
    for item in items {
        match (kind.as_str(), item) {
            ("files", Value::String(url)) => check_url(url)?,
            ("files", Value::Object(o)) => {
                let url = o.get("url").and_then(Value::as_str).ok_or("file object without url")?;
                check_url(url)?;
                if o.keys().any(|k| k != "url" && k != "headers") {
                    return Err("file object: only url and headers".into());
                }
            }
            ("tags" | "hosts", Value::String(s)) if !s.is_empty() && s.len() <= 1024 && !s.contains(' ') => {}
            ("prefixes", Value::String(p)) if !p.is_empty() && !p.contains("://") && !p.contains(' ') => {}
            _ => return Err(format!("bad {kind} entry: {item}")),
        }
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    if (url.starts_with("https://") || url.starts_with("http://")) && !url.contains(' ') {
        Ok(())
    } else {
        Err(format!("not an absolute URL: {url}"))
    }
}

async fn cf_purge(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reject = |why: String, resp: Response| {
        state.lock().unwrap().rejected.push(why);
        resp
    };
    if zone != ZONE {
        return reject(
            format!("zone {zone}"),
            cf_error(404, 7003, "Could not route to the zone; check its identifier"),
        );
    }
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {CF_TOKEN}")) {
        return reject("auth".into(), cf_error(403, 10000, "Authentication error"));
    }
    if !is_json(&headers) {
        return reject(
            "content-type".into(),
            cf_error(400, 6003, "Invalid request headers: JSON body expected"),
        );
    }
    let parsed: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return reject(
                format!("json: {e}"),
                cf_error(400, 6007, "Malformed JSON in request body"),
            );
        }
    };
    if let Err(why) = cf_check_body(&parsed) {
        return reject(why.clone(), cf_error(400, 1012, &why));
    }
    let n = state.lock().unwrap().seen.len();
    let seen = Seen {
        path: format!("/client/v4/zones/{zone}/purge_cache"),
        body: parsed,
        soft: false,
    };
    match accept(&state, seen).await {
        Some(Scripted::RateLimit(secs)) => reply(
            429,
            &[("retry-after", secs.to_string())],
            &json!({"success": false, "errors": [{"code": 971, "message": "Please wait and consider throttling your request speed"}], "messages": [], "result": null}),
        ),
        Some(Scripted::Status(code)) => cf_error(code, 10001, "service temporarily unavailable"),
        _ => reply(
            200,
            &[],
            &json!({"success": true, "errors": [], "messages": [], "result": {"id": format!("cf-purge-{n}")}}),
        ),
    }
}

async fn cloudflare_fake() -> Fake {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let app = Router::new()
        .route("/client/v4/zones/{zone}/purge_cache", post(cf_purge))
        .with_state(state.clone());
    Fake {
        addr: serve(app).await,
        state,
    }
}

// --- Fastly ------------------------------------------------------------------------------------------------------

fn fastly_error(status: u16, msg: &str, detail: &str) -> Response {
    reply(status, &[], &json!({"msg": msg, "detail": detail}))
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_whitespace) {
        Err(format!("bad surrogate key {key:?}"))
    } else {
        Ok(())
    }
}

/// Auth and service checks shared by every Fastly route: the refusal, if any.
fn fastly_refusal(state: &Mutex<FakeState>, service: Option<&str>, headers: &HeaderMap) -> Option<Response> {
    let (why, resp) = if headers.get("fastly-key").and_then(|v| v.to_str().ok()) != Some(FASTLY_KEY) {
        (
            "auth",
            fastly_error(401, "Provided credentials are missing or invalid", ""),
        )
    } else if service.is_some_and(|s| s != SERVICE) {
        ("service", fastly_error(404, "Record not found", "Cannot find service"))
    } else {
        return None;
    };
    state.lock().unwrap().rejected.push(why.to_string());
    Some(resp)
}

fn soft(headers: &HeaderMap) -> bool {
    headers.contains_key("fastly-soft-purge")
}

fn fastly_scripted(step: Option<Scripted>, ok: Value) -> Response {
    match step {
        Some(Scripted::RateLimit(secs)) => {
            let reset = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + secs;
            reply(
                429,
                &[
                    ("fastly-ratelimit-remaining", "0".into()),
                    ("fastly-ratelimit-reset", reset.to_string()),
                ],
                &json!({"msg": "Too many requests"}),
            )
        }
        Some(Scripted::Status(code)) => fastly_error(code, "Service unavailable", ""),
        _ => reply(200, &[], &ok),
    }
}

async fn fastly_single(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path((service, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = fastly_refusal(&state, Some(&service), &headers) {
        return resp;
    }
    let soft = soft(&headers);
    if let Err(why) = check_key(&key) {
        state.lock().unwrap().rejected.push(why.clone());
        return fastly_error(400, "Bad request", &why);
    }
    let n = state.lock().unwrap().seen.len();
    let seen = Seen {
        path: format!("/service/{service}/purge/{key}"),
        body: Value::Null,
        soft,
    };
    let step = accept(&state, seen).await;
    fastly_scripted(step, json!({"status": "ok", "id": format!("fy-{n}")}))
}

async fn fastly_bulk(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(resp) = fastly_refusal(&state, Some(&service), &headers) {
        return resp;
    }
    let soft = soft(&headers);
    let checked = (|| -> Result<(Value, Vec<String>), String> {
        if !is_json(&headers) {
            return Err("content-type must be application/json".into());
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("json: {e}"))?;
        let obj = v.as_object().ok_or("body is not an object")?;
        if obj.len() != 1 {
            return Err("only surrogate_keys expected".into());
        }
        let keys = obj
            .get("surrogate_keys")
            .and_then(Value::as_array)
            .ok_or("surrogate_keys must be an array")?;
        if keys.is_empty() || keys.len() > FASTLY_MAX_KEYS {
            return Err(format!("{} keys; 1..={FASTLY_MAX_KEYS} per request", keys.len()));
        }
        let keys = keys
            .iter()
            .map(|k| {
                k.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| "keys must be strings".to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        keys.iter().try_for_each(|k| check_key(k))?;
        Ok((v, keys))
    })();
    let (parsed, keys) = match checked {
        Ok(x) => x,
        Err(why) => {
            state.lock().unwrap().rejected.push(why.clone());
            return fastly_error(400, "Bad request", &why);
        }
    };
    let n = state.lock().unwrap().seen.len();
    let seen = Seen {
        path: format!("/service/{service}/purge"),
        body: parsed,
        soft,
    };
    let step = accept(&state, seen).await;
    let ok: serde_json::Map<String, Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), json!(format!("fy-{n}-{i}"))))
        .collect();
    fastly_scripted(step, Value::Object(ok))
}

async fn fastly_url(
    State(state): State<Arc<Mutex<FakeState>>>,
    Path(url): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(resp) = fastly_refusal(&state, None, &headers) {
        return resp;
    }
    let soft = soft(&headers);
    if url.contains("://") || !url.contains('/') {
        state.lock().unwrap().rejected.push(format!("url {url}"));
        return fastly_error(400, "Bad request", "expected /purge/<host>/<path>");
    }
    let n = state.lock().unwrap().seen.len();
    let step = accept(
        &state,
        Seen {
            path: format!("/purge/{url}"),
            body: Value::Null,
            soft,
        },
    )
    .await;
    fastly_scripted(step, json!({"status": "ok", "id": format!("fy-{n}")}))
}

async fn fastly_fake() -> Fake {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let app = Router::new()
        .route("/service/{service}/purge", post(fastly_bulk))
        .route("/service/{service}/purge/{key}", post(fastly_single))
        .route("/purge/{*url}", post(fastly_url))
        .with_state(state.clone());
    Fake {
        addr: serve(app).await,
        state,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------

fn cf(fake: &Fake) -> Arc<dyn PurgeTarget> {
    Arc::new(CloudflarePurger::new(format!("{}/client/v4", fake.base()), ZONE, CF_TOKEN).unwrap())
}

fn fastly(fake: &Fake) -> Arc<dyn PurgeTarget> {
    Arc::new(FastlyPurger::new(fake.base(), SERVICE, FASTLY_KEY, false).unwrap())
}

/// The production outbox (jobs in the service store) with a fixed jitter seed.
fn outbox(store: &Arc<dyn Store>, targets: &[Arc<dyn PurgeTarget>]) -> Arc<Outbox> {
    let cfg = OutboxConfig {
        jitter_seed: Some(7),
        ..OutboxConfig::default()
    };
    Arc::new(
        targets
            .iter()
            .cloned()
            .fold(Outbox::over_store(store.clone(), cfg), Outbox::with_target),
    )
}

struct Svc {
    app: Router,
    state: Arc<AppState>,
    responder: String,
    minter: String,
    _dir: tempfile::TempDir,
}

/// As `tests/service.rs`: embedded store, one key per role, a ready `demo` asset; links point at
/// `https://cdn.example.com` (the CDN host an asset purge names). `make_outbox` gets the store the service uses.
async fn setup(make_outbox: impl FnOnce(&Arc<dyn Store>) -> Option<Arc<Outbox>>) -> Svc {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let ring = KeyRing::with_active(4, SecretKey::new([7; 32]), 86_400);
    let config = ServiceConfig {
        edge_base_url: "https://cdn.example.com".into(),
        ..ServiceConfig::default()
    };
    let mut state = AppState::new(
        store.clone(),
        config,
        &ring,
        Policy::default(),
        sharegate_shared::revocation::StateKey::new([9; 32]),
    )
    .unwrap();
    state.outbox = make_outbox(&store);
    let state = Arc::new(state);
    let mut keys = Vec::new();
    for role in [Role::Minter, Role::Responder, Role::Admin] {
        let (key, rec) = new_key(role, "test", 0).unwrap();
        store_key(store.as_ref(), &key, &rec).await.unwrap();
        keys.push(key);
    }
    let app = router(state.clone());
    let media = dir.path().join("media");
    for (path, body) in [
        (
            "demo/master.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nv0/index.m3u8\n",
        ),
        (
            "demo/v0/index.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_000.ts\n#EXT-X-ENDLIST\n",
        ),
        ("demo/v0/seg_000.ts", "segment"),
    ] {
        let p = media.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
    let body = json!({"id": "demo", "origin": media.to_str().unwrap()}).to_string();
    let (s, b) = call(&app, "POST", "/v1/assets", &keys[2], &body, None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["ready"], true, "{b}");
    Svc {
        app,
        state,
        minter: keys[0].clone(),
        responder: keys[1].clone(),
        _dir: dir,
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: &str,
    body: &str,
    idempotency_key: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"));
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

impl Svc {
    async fn revoke(&self, body: Value) -> (StatusCode, Value) {
        call(
            &self.app,
            "POST",
            "/v1/revocations",
            &self.responder,
            &body.to_string(),
            None,
        )
        .await
    }

    async fn receipt(&self, id: &str) -> Value {
        let (s, b) = call(
            &self.app,
            "GET",
            &format!("/v1/revocations/{id}"),
            &self.responder,
            "",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    fn outbox(&self) -> &Arc<Outbox> {
        self.state.outbox.as_ref().unwrap()
    }

    async fn outbox_keys(&self) -> Vec<String> {
        let rows = self.state.store.scan(Ns::Outbox, "").await.unwrap();
        rows.into_iter().map(|(k, _)| k).collect()
    }
}

fn purges(receipt: &Value) -> Vec<Value> {
    receipt["purges"].as_array().unwrap().clone()
}

/// The receipt's purge for a target whose name starts with `prefix`.
fn purge_for(receipt: &Value, prefix: &str) -> Value {
    let all = purges(receipt);
    let mut hits = all.iter().filter(|p| p["target"].as_str().unwrap().starts_with(prefix));
    let hit = hits
        .next()
        .unwrap_or_else(|| panic!("no {prefix} purge in {receipt}"))
        .clone();
    assert!(hits.next().is_none(), "one {prefix} purge expected: {receipt}");
    hit
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn share_revocation_purges_both_cdns_and_the_receipt_follows() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let svc = setup(|store| Some(outbox(store, &[cf(&cff), fastly(&fyf)]))).await;

    let (s, r) = svc
        .revoke(json!({"kind": "share", "id": "sh-1", "reason": "leaked", "purge": true}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["generation"], 1);
    let id = r["id"].as_str().unwrap().to_string();
    // Acknowledged with one pending job per CDN, already durable next to the revocation, not yet sent.
    assert_eq!(purges(&r).len(), 2, "{r}");
    for p in purges(&r) {
        assert_eq!(
            (&p["status"], &p["attempts"], &p["cdn_id"], &p["last_error"]),
            (&json!("pending"), &json!(0), &Value::Null, &Value::Null),
            "{p}"
        );
    }
    assert_eq!(
        svc.outbox_keys().await,
        [
            format!("{id}/cloudflare:{ZONE}/0000"),
            format!("{id}/fastly:{SERVICE}/0000")
        ]
    );
    assert_eq!((cff.count(), fyf.count()), (0, 0));

    let report = svc.outbox().run_due(SystemTime::now()).await.unwrap();
    assert_eq!((report.sent, report.done), (2, 2), "{report:?}");

    // The receipt now shows what the CDNs confirmed, with their purge ids.
    let r = svc.receipt(&id).await;
    assert_eq!(r["kind"], "share");
    assert_eq!(r["generation"], 1);
    let cfp = purge_for(&r, "cloudflare:");
    assert_eq!(
        (&cfp["status"], &cfp["cdn_id"], &cfp["attempts"]),
        (&json!("done"), &json!("cf-purge-0"), &json!(1)),
        "{r}"
    );
    let fyp = purge_for(&r, "fastly:");
    assert_eq!(
        (&fyp["status"], &fyp["cdn_id"], &fyp["attempts"]),
        (&json!("done"), &json!("fy-0"), &json!(1)),
        "{r}"
    );
    // Exactly the documented calls: Cloudflare's tag purge, Fastly's single-key hard purge.
    let seen = cff.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/client/v4/zones/{ZONE}/purge_cache"));
    assert_eq!(seen[0].body, json!({"tags": ["sg-share-sh-1"]}));
    let seen = fyf.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/service/{SERVICE}/purge/sg-share-sh-1"));
    assert!(!seen[0].soft);
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());

    // Done is done: later runs send nothing.
    let later = SystemTime::now() + Duration::from_secs(86_400);
    assert_eq!(svc.outbox().run_due(later).await.unwrap().sent, 0);
    assert_eq!((cff.count(), fyf.count()), (1, 1));
}

#[tokio::test]
async fn each_kind_purges_what_docs_say() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;

    // A takedown: the asset tag, and its prefix on the CDN host of the link URLs.
    let (s, r) = svc.revoke(json!({"kind": "asset", "id": "demo", "purge": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(purges(&r).len(), 2, "{r}");
    // A token minted for a share purges the share's tag, by id or by the token itself.
    let (s, link) = call(
        &svc.app,
        "POST",
        "/v1/links",
        &svc.minter,
        r#"{"asset":"demo","share":"sh-7"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let (s, r) = svc
        .revoke(json!({"kind": "token", "id": link["token_id"], "purge": true}))
        .await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    let (s, r) = svc
        .revoke(json!({"kind": "token", "token": link["token"], "purge": true}))
        .await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    // Cached bytes are shared by every viewer: a viewer revocation has nothing of its own to purge.
    let (s, r) = svc.revoke(json!({"kind": "viewer", "id": "v-1", "purge": true})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 0), "{r}");
    // Without `purge`, nothing is planned even where something could be.
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-9"})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 0), "{r}");

    assert_eq!(svc.outbox().run_due(SystemTime::now()).await.unwrap().done, 4);
    let bodies: Vec<Value> = cff.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(
        bodies,
        [
            json!({"tags": ["sg-asset-demo"]}),
            json!({"prefixes": ["cdn.example.com/demo/"]}),
            json!({"tags": ["sg-share-sh-7"]}),
            json!({"tags": ["sg-share-sh-7"]}),
        ]
    );
    assert!(cff.rejected().is_empty(), "{:?}", cff.rejected());
}

#[tokio::test]
async fn purge_without_purgers_is_refused_and_nothing_is_written() {
    // No outbox at all, and an outbox with no CDN: both refuse.
    let empty = |store: &Arc<dyn Store>| Some(outbox(store, &[]));
    for svc in [setup(|_| None).await, setup(empty).await] {
        let (s, b) = svc.revoke(json!({"kind": "share", "id": "sh-1", "purge": true})).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("refused")),
            "{b}"
        );
        let msg = b["message"].as_str().unwrap();
        assert!(
            msg.contains("no CDN purger") && msg.contains("SHAREGATE_CF_ZONE_ID"),
            "{msg}"
        );
        // Nothing written: no generation, no log entry, no record, no job.
        assert_eq!(svc.state.store.counter("state_generation").await.unwrap(), 0);
        assert_eq!(svc.state.store.last_seq(Log::Revocations).await.unwrap(), 0);
        assert!(svc.state.store.scan(Ns::Revocations, "").await.unwrap().is_empty());
        assert!(svc.outbox_keys().await.is_empty());

        // The same revocation without a purge goes through.
        let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-1", "purge": false})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!((r["generation"].as_u64(), purges(&r).len()), (Some(1), 0));
    }
}

#[tokio::test]
async fn pending_purge_survives_a_restart() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-2", "purge": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    // The process dies before its worker ran: nothing was sent.
    assert_eq!(cff.count(), 0);

    // "Restart": a new outbox, with new purger instances, over the same store, and a service using it.
    let store = svc.state.store.clone();
    let after = outbox(&store, &[cf(&cff)]);
    let jobs = StoreOutbox::new(store.clone()).jobs_for_revocation(&id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Pending);
    let report = after.run_due(SystemTime::now()).await.unwrap();
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(cff.count(), 1);
    assert_eq!(cff.seen()[0].body, json!({"tags": ["sg-share-sh-2"]}));

    // Both the old and the new service answer with the confirmed purge: the status lives in the store.
    let r = svc.receipt(&id).await;
    assert_eq!(purge_for(&r, "cloudflare:")["status"], "done", "{r}");
    let mut state2 = AppState::new(
        store,
        ServiceConfig::default(),
        &KeyRing::with_active(4, SecretKey::new([7; 32]), 86_400),
        Policy::default(),
        sharegate_shared::revocation::StateKey::new([9; 32]),
    )
    .unwrap();
    state2.outbox = Some(after);
    let app2 = router(Arc::new(state2));
    let (s, r) = call(&app2, "GET", &format!("/v1/revocations/{id}"), &svc.responder, "", None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(purge_for(&r, "cloudflare:")["cdn_id"], "cf-purge-0", "{r}");
}

#[tokio::test]
async fn rate_limited_purge_is_retried_and_the_receipt_counts_attempts() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::RateLimit(2), Scripted::Status(503)]);
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    let body = json!({"kind": "share", "id": "sh-3", "purge": true}).to_string();
    let (s, r) = call(
        &svc.app,
        "POST",
        "/v1/revocations",
        &svc.responder,
        &body,
        Some("inc-7"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();

    let t = SystemTime::now();
    let report = svc.outbox().run_due(t).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1), "{report:?}");
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("pending"), &json!(1)), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("rate limited"), "{p}");

    // Not before Retry-After; then a 503, retried after a backoff of 1 to 2 s; then confirmed.
    assert_eq!(svc.outbox().run_due(t + Duration::from_secs(1)).await.unwrap().sent, 0);
    let report = svc.outbox().run_due(t + Duration::from_secs(2)).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1), "{report:?}");
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("pending"), &json!(2)), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("503"), "{p}");
    let report = svc.outbox().run_due(t + Duration::from_secs(4)).await.unwrap();
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(cff.count(), 3);
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!(
        (&p["status"], &p["attempts"], &p["cdn_id"]),
        (&json!("done"), &json!(3), &json!("cf-purge-2")),
        "{p}"
    );
    // A retried POST with the same idempotency key revokes and purges nothing twice (it replays the first answer;
    // `GET` is where the current purge status is read).
    let (s, again) = call(
        &svc.app,
        "POST",
        "/v1/revocations",
        &svc.responder,
        &body,
        Some("inc-7"),
    )
    .await;
    assert!(s.is_success(), "{again}");
    assert_eq!(again["id"].as_str(), Some(id.as_str()), "{again}");
    assert_eq!(svc.outbox_keys().await.len(), 1);
    assert_eq!(
        svc.outbox().run_due(t + Duration::from_secs(3600)).await.unwrap().sent,
        0
    );
    assert_eq!(cff.count(), 3);
    assert_eq!(svc.state.store.counter("state_generation").await.unwrap(), 1);
}

#[tokio::test]
async fn permanent_refusal_shows_as_failed() {
    let cff = cloudflare_fake().await;
    let bad: Arc<dyn PurgeTarget> =
        Arc::new(CloudflarePurger::new(format!("{}/client/v4", cff.base()), ZONE, "revoked-token").unwrap());
    let svc = setup(|store| Some(outbox(store, &[bad]))).await;
    let (_, r) = svc.revoke(json!({"kind": "share", "id": "sh-4", "purge": true})).await;
    svc.outbox().run_due(SystemTime::now()).await.unwrap();
    let p = purge_for(&svc.receipt(r["id"].as_str().unwrap()).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("failed"), &json!(1)), "{p}");
    let why = p["last_error"].as_str().unwrap();
    assert!(why.contains("403") && !why.contains("revoked-token"), "{why}");
}

#[tokio::test]
async fn the_worker_is_woken_by_the_revocation() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    // A tick far away: the purge must go out because the revocation wakes the worker.
    let worker = spawn_outbox_worker(svc.outbox().clone(), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, r) = svc.revoke(json!({"kind": "share", "id": "sh-5", "purge": true})).await;
    let id = r["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if purge_for(&svc.receipt(&id).await, "cloudflare:")["status"] == "done" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not send the purge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    assert_eq!(cff.count(), 1);
}

#[tokio::test]
async fn an_outbox_over_another_store_still_gets_the_jobs() {
    // Not the production wiring (jobs are then written right after the revocation, not in its transaction), but
    // it must not lose purges.
    let cff = cloudflare_fake().await;
    let memory = MemoryOutboxStore::new();
    let ob = Arc::new(
        Outbox::new(
            Arc::new(memory.clone()),
            OutboxConfig {
                jitter_seed: Some(7),
                ..OutboxConfig::default()
            },
        )
        .with_target(cf(&cff)),
    );
    let svc = setup(|_| Some(ob.clone())).await;
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-6", "purge": true})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    assert!(svc.outbox_keys().await.is_empty());
    assert_eq!(memory.all().unwrap().len(), 1);
    assert_eq!(ob.run_due(SystemTime::now()).await.unwrap().done, 1);
    let r = svc.receipt(r["id"].as_str().unwrap()).await;
    assert_eq!(purge_for(&r, "cloudflare:")["status"], "done", "{r}");
}
