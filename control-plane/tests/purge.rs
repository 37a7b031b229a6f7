//! Purges against local fakes of Cloudflare's and Fastly's purge APIs.
//!
//! The real APIs cannot be reached from here, so each fake checks a request the way the documented API does
//! (method, path, auth header, content type, body schema, per-call limits) and answers with the documented bodies.
//! A fake can be told to answer 429, a 5xx, or nothing at all for its next valid requests. It counts the valid
//! requests it received, so a test can prove what was (not) sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use sharegate_control_plane::purge::{
    CloudflareLimits, CloudflarePurger, FastlyPurger, JobStatus, MemoryOutboxStore, Outbox, OutboxConfig, OutboxStore,
    PurgeJob, PurgeRequest, PurgeTarget, Revoked, spawn_outbox_worker,
};

const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
const CF_TOKEN: &str = "cf-test-token";
const SERVICE: &str = "SU1Z0isxPaozGVKXdv0eY";
const FASTLY_KEY: &str = "fastly-test-key";
/// Cloudflare's current per-request ceiling ("max operations per request"); the fake refuses more.
const CF_MAX_PER_CALL: usize = 100;
/// Fastly's documented bulk ceiling.
const FASTLY_MAX_KEYS: usize = 256;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

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
    /// Never answer (a call in flight when the process dies).
    Hang,
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
    let step = {
        let mut s = state.lock().unwrap();
        s.seen.push(seen);
        s.script.pop_front()
    };
    if let Some(Scripted::Hang) = step {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    step
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
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn cf(fake: &Fake) -> CloudflarePurger {
    CloudflarePurger::new(format!("{}/client/v4", fake.base()), ZONE, CF_TOKEN).unwrap()
}

fn fastly(fake: &Fake, soft: bool) -> FastlyPurger {
    FastlyPurger::new(fake.base(), SERVICE, FASTLY_KEY, soft).unwrap()
}

fn config() -> OutboxConfig {
    OutboxConfig {
        jitter_seed: Some(7),
        ..OutboxConfig::default()
    }
}

fn outbox(store: &MemoryOutboxStore, targets: Vec<Arc<dyn PurgeTarget>>) -> Outbox {
    targets
        .into_iter()
        .fold(Outbox::new(Arc::new(store.clone()), config()), Outbox::with_target)
}

fn tags(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sg-asset-{i:04}")).collect()
}

async fn one_job(store: &MemoryOutboxStore) -> PurgeJob {
    let all = store.all().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn is_done(job: &PurgeJob) -> bool {
    matches!(job.status, JobStatus::Done { .. })
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn happy_path_both_cdns() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, true))]);

    // An asset takedown: the asset tag, plus its prefix on the CDN host.
    let hosts = vec!["cdn.example.com".to_string()];
    let asset = PurgeRequest::for_revocation(&Revoked::Asset("a1"), &hosts);
    let jobs = ob.enqueue("rev-1", &asset, t0()).await.unwrap();
    // Cloudflare: one call for the tag, one for the prefix. Fastly: one single-key call (no prefix purge).
    assert_eq!(jobs.len(), 3, "{jobs:#?}");

    // A share revocation plus a single file, so Fastly's bulk and URL endpoints are used too.
    let mut share = PurgeRequest::for_revocation(&Revoked::Share("s1"), &hosts);
    share.tags.push("sg-asset-a2".into());
    share.files.push("https://cdn.example.com/a2/master.m3u8".into());
    ob.enqueue("rev-2", &share, t0()).await.unwrap();

    let report = ob.run_due(t0()).await.unwrap();
    assert_eq!((report.due, report.sent, report.done), (7, 7, 7), "{report:?}");

    let receipt = ob.receipt("rev-1").await.unwrap();
    assert!(receipt.iter().all(is_done), "{receipt:#?}");
    let ids: BTreeSet<String> = receipt
        .iter()
        .filter_map(|j| match &j.status {
            JobStatus::Done { cdn_id, at } => {
                assert_eq!(*at, t0());
                Some(cdn_id.clone())
            }
            _ => None,
        })
        .collect();
    assert!(
        ids.iter().any(|i| i.starts_with("cf-purge-")) && ids.iter().any(|i| i.starts_with("fy-")),
        "{ids:?}"
    );

    let cf_bodies: Vec<Value> = cff.seen().into_iter().map(|s| s.body).collect();
    assert!(cf_bodies.contains(&json!({"tags": ["sg-asset-a1"]})));
    assert!(cf_bodies.contains(&json!({"prefixes": ["cdn.example.com/a1/"]})));
    assert!(cf_bodies.contains(&json!({"tags": ["sg-share-s1", "sg-asset-a2"]})));
    assert!(cf_bodies.contains(&json!({"files": ["https://cdn.example.com/a2/master.m3u8"]})));
    assert_eq!(cff.count(), 4);

    let fy = fyf.seen();
    assert!(fy.iter().all(|s| s.soft), "soft purge header on every call");
    let paths: BTreeSet<&str> = fy.iter().map(|s| s.path.as_str()).collect();
    assert!(
        paths.contains(format!("/service/{SERVICE}/purge/sg-asset-a1").as_str()),
        "{paths:?}"
    );
    assert!(paths.contains(format!("/service/{SERVICE}/purge").as_str()));
    assert!(paths.contains("/purge/cdn.example.com/a2/master.m3u8"));
    assert!(
        fy.iter()
            .any(|s| s.body == json!({"surrogate_keys": ["sg-share-s1", "sg-asset-a2"]}))
    );
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());
}

#[tokio::test]
async fn fakes_are_strict() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let http = reqwest::Client::new();
    let cf_url = format!("{}/client/v4/zones/{ZONE}/purge_cache", cff.base());
    let cf_send = |body: String, auth: Option<&str>, ctype: &str| {
        let mut r = http.post(&cf_url).header("content-type", ctype).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        r.send()
    };
    let json = "application/json";
    let bad_bodies = [
        json!({"tags": ["a"], "files": ["https://x/1"]}),
        json!({}),
        json!({"tags": []}),
        json!({"tags": tags(CF_MAX_PER_CALL + 1)}),
        json!({"prefixes": ["https://cdn.example.com/a1/"]}),
        json!({"files": ["/relative"]}),
        json!({"tags": "sg-asset-a1"}),
        json!({"purge_everything": false}),
        json!({"everything": true}),
    ];
    for body in &bad_bodies {
        let resp = cf_send(body.to_string(), Some(CF_TOKEN), json).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json_or_panic().await;
        assert_eq!(v["success"], json!(false));
        assert!(v["errors"][0]["code"].is_number(), "{v}");
    }
    let ok = json!({"tags": ["sg-asset-a1"]}).to_string();
    assert_eq!(cf_send(ok.clone(), None, json).await.unwrap().status(), 403);
    assert_eq!(cf_send(ok.clone(), Some("wrong"), json).await.unwrap().status(), 403);
    assert_eq!(
        cf_send(ok.clone(), Some(CF_TOKEN), "text/plain")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        cf_send("{not json".into(), Some(CF_TOKEN), json)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(http.get(&cf_url).send().await.unwrap().status(), 405);
    assert_eq!(cff.count(), 0, "nothing malformed was accepted");
    assert_eq!(cff.rejected().len(), bad_bodies.len() + 4);
    let good = cf_send(ok, Some(CF_TOKEN), json).await.unwrap();
    assert_eq!(good.status(), 200);
    let v: Value = good.json_or_panic().await;
    assert_eq!(v["success"], json!(true));
    assert!(v["result"]["id"].is_string());
    assert_eq!(v["errors"], json!([]));

    let fy_bulk = format!("{}/service/{SERVICE}/purge", fyf.base());
    let fy_send = |url: String, body: Option<Value>, key: Option<&str>| {
        let mut r = http.post(url);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        if let Some(k) = key {
            r = r.header("Fastly-Key", k);
        }
        r.send()
    };
    let keys = json!({"surrogate_keys": ["sg-asset-a1"]});
    assert_eq!(
        fy_send(fy_bulk.clone(), Some(keys.clone()), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        fy_send(fy_bulk.clone(), Some(keys.clone()), Some("wrong"))
            .await
            .unwrap()
            .status(),
        401
    );
    for body in [
        json!({"surrogate_keys": []}),
        json!({"surrogate_keys": tags(FASTLY_MAX_KEYS + 1)}),
        json!({"surrogate_keys": ["has space"]}),
        json!({"surrogate_keys": [""]}),
        json!({"surrogate_keys": ["a"], "extra": 1}),
        json!({"keys": ["a"]}),
    ] {
        assert_eq!(
            fy_send(fy_bulk.clone(), Some(body.clone()), Some(FASTLY_KEY))
                .await
                .unwrap()
                .status(),
            400,
            "{body}"
        );
    }
    let other_service = format!("{}/service/nope/purge/sg-asset-a1", fyf.base());
    assert_eq!(
        fy_send(other_service, None, Some(FASTLY_KEY)).await.unwrap().status(),
        404
    );
    assert_eq!(fyf.count(), 0);
    let single = fy_send(format!("{fy_bulk}/sg-asset-a1"), None, Some(FASTLY_KEY))
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    let v: Value = single.json_or_panic().await;
    assert_eq!(v["status"], json!("ok"));
    assert!(v["id"].is_string());
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::RateLimit(3)]);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(cf(&cff))]);
    // 40 tags at 30 per call: two jobs for the same zone.
    ob.enqueue(
        "rev-rl",
        &PurgeRequest {
            tags: tags(40),
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    let r = ob.run_due(t0()).await.unwrap();
    // The first call is rate limited; the second job is not even sent (same bucket) and waits as long.
    assert_eq!((r.sent, r.retried, r.deferred), (1, 1, 1), "{r:?}");
    assert_eq!(cff.count(), 1);
    let jobs = store.all().unwrap();
    assert!(
        jobs.iter().all(|j| j.next_attempt_at == t0() + Duration::from_secs(3)),
        "{jobs:#?}"
    );
    assert_eq!(jobs[0].attempts, 1);
    assert_eq!(jobs[1].attempts, 0, "a job not sent is not an attempt");
    assert!(jobs[0].last_error.as_deref().unwrap().contains("rate limited"));

    // Not before Retry-After.
    let r = ob.run_due(t0() + Duration::from_millis(2999)).await.unwrap();
    assert_eq!((r.due, r.sent), (0, 0));
    assert_eq!(cff.count(), 1);

    let r = ob.run_due(t0() + Duration::from_secs(3)).await.unwrap();
    assert_eq!((r.sent, r.done), (2, 2), "{r:?}");
    assert_eq!(cff.count(), 3);
    assert!(store.all().unwrap().iter().all(is_done));
}

#[tokio::test]
async fn fastly_rate_limit_reads_reset_header() {
    let fyf = fastly_fake().await;
    fyf.script(&[Scripted::RateLimit(4)]);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(fastly(&fyf, false))]);
    ob.enqueue(
        "rev-f",
        &PurgeRequest {
            tags: vec!["sg-share-s9".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    ob.run_due(t0()).await.unwrap();
    let job = one_job(&store).await;
    // Fastly sends Fastly-RateLimit-Reset (epoch seconds, against the real clock): about 4 s from now.
    let wait = job.next_attempt_at.duration_since(t0()).unwrap();
    assert!(
        wait >= Duration::from_secs(2) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    assert!(!fyf.seen()[0].soft);
    ob.run_due(job.next_attempt_at).await.unwrap();
    assert!(is_done(&one_job(&store).await));
    assert_eq!(fyf.count(), 2);
}

/// Runs a request against a Cloudflare fake that answers 503 twice, returning the two backoff delays.
async fn backoff_delays(seed: u64) -> (Duration, Duration) {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::Status(503), Scripted::Status(503)]);
    let store = MemoryOutboxStore::new();
    let cfg = OutboxConfig {
        jitter_seed: Some(seed),
        ..OutboxConfig::default()
    };
    let ob = Outbox::new(Arc::new(store.clone()), cfg).with_target(Arc::new(cf(&cff)));
    ob.enqueue(
        "rev-5xx",
        &PurgeRequest {
            tags: vec!["sg-asset-x".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    ob.run_due(t0()).await.unwrap();
    let job = one_job(&store).await;
    assert_eq!((job.attempts, &job.status), (1, &JobStatus::Pending));
    assert!(job.last_error.as_deref().unwrap().contains("503"), "{job:?}");
    let first = job.next_attempt_at;
    let d1 = first.duration_since(t0()).unwrap();
    assert!(
        d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
        "{d1:?}"
    );

    // Not sent before the backoff has passed.
    assert_eq!(ob.run_due(first - Duration::from_millis(1)).await.unwrap().sent, 0);
    ob.run_due(first).await.unwrap();
    let job = one_job(&store).await;
    let d2 = job.next_attempt_at.duration_since(first).unwrap();
    assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2), "{d2:?}");

    ob.run_due(job.next_attempt_at).await.unwrap();
    let job = one_job(&store).await;
    assert!(is_done(&job));
    assert_eq!(job.attempts, 3);
    assert_eq!(cff.count(), 3);
    (d1, d2)
}

#[tokio::test]
async fn server_errors_retried_with_reproducible_backoff() {
    let a = backoff_delays(11).await;
    let b = backoff_delays(11).await;
    assert_eq!(a, b, "the same seed gives the same jitter");
}

#[tokio::test]
async fn permanent_refusals_fail_without_retrying() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let bad_cf = CloudflarePurger::new(format!("{}/client/v4", cff.base()), ZONE, "revoked-token").unwrap();
    let bad_fy = FastlyPurger::new(fyf.base(), SERVICE, "wrong-key", false).unwrap();
    let ob = outbox(&store, vec![Arc::new(bad_cf), Arc::new(bad_fy)]);
    ob.enqueue(
        "rev-403",
        &PurgeRequest {
            tags: vec!["sg-share-s1".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    let r = ob.run_due(t0()).await.unwrap();
    assert_eq!((r.sent, r.failed, r.retried), (2, 2, 0), "{r:?}");
    for job in store.all().unwrap() {
        let JobStatus::Failed { reason } = &job.status else {
            panic!("{job:?}")
        };
        assert!(reason.contains("403") || reason.contains("401"), "{reason}");
        assert!(
            !reason.contains("revoked-token") && !reason.contains("wrong-key"),
            "no secret in {reason}"
        );
        assert_eq!(job.attempts, 1);
    }
    // An hour later, nothing is sent again.
    assert_eq!(ob.run_due(t0() + Duration::from_secs(3600)).await.unwrap().sent, 0);
    assert_eq!((cff.rejected().len(), fyf.rejected().len()), (1, 1));

    // A failure that may pass is retried, but not forever.
    let cff2 = cloudflare_fake().await;
    cff2.script(&[Scripted::Status(502); 10]);
    let store2 = MemoryOutboxStore::new();
    let cfg = OutboxConfig {
        max_attempts: 3,
        jitter_seed: Some(1),
        ..OutboxConfig::default()
    };
    let ob2 = Outbox::new(Arc::new(store2.clone()), cfg).with_target(Arc::new(cf(&cff2)));
    ob2.enqueue(
        "rev-502",
        &PurgeRequest {
            tags: vec!["t".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    let mut now = t0();
    for _ in 0..10 {
        ob2.run_due(now).await.unwrap();
        now += Duration::from_secs(600);
    }
    let job = one_job(&store2).await;
    let JobStatus::Failed { reason } = &job.status else {
        panic!("{job:?}")
    };
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    assert_eq!(cff2.count(), 3);
}

#[tokio::test]
async fn batches_respect_per_call_limits() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let wide_cf = cf(&cff).with_limits(CloudflareLimits {
        tags: 100,
        prefixes: 100,
        files: 100,
    });
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    let all = tags(600);
    let jobs = ob
        .enqueue(
            "rev-big",
            &PurgeRequest {
                tags: all.clone(),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    let cf_jobs = jobs.iter().filter(|j| j.target.starts_with("cloudflare:")).count();
    let fy_jobs = jobs.iter().filter(|j| j.target.starts_with("fastly:")).count();
    assert_eq!((cf_jobs, fy_jobs), (20, 3)); // 600/30; 256 + 256 + 88

    let r = ob.run_due(t0()).await.unwrap();
    assert_eq!((r.due, r.done), (23, 23), "{r:?}");
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());
    let cf_tags: Vec<String> = cff
        .seen()
        .iter()
        .flat_map(|s| {
            let t = s.body["tags"].as_array().unwrap().clone();
            assert!(t.len() <= 30);
            t.into_iter().map(|v| v.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(cf_tags, all, "every tag once, in order");
    let fy_sizes: Vec<usize> = fyf
        .seen()
        .iter()
        .map(|s| s.body["surrogate_keys"].as_array().unwrap().len())
        .collect();
    assert_eq!(fy_sizes, vec![256, 256, 88]);

    // A zone known to take Cloudflare's current 100 per call: fewer calls, all accepted.
    let before = cff.count();
    let wide_store = MemoryOutboxStore::new();
    let ob = outbox(&wide_store, vec![Arc::new(wide_cf)]);
    ob.enqueue(
        "rev-wide",
        &PurgeRequest {
            tags: tags(250),
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    assert_eq!(ob.run_due(t0()).await.unwrap().done, 3);
    assert_eq!(cff.count() - before, 3);
    assert!(cff.rejected().is_empty());
}

#[tokio::test]
async fn pending_job_survives_restart() {
    let cff = cloudflare_fake().await;
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Share("s7"), &[]);
    {
        // The revocation is written, then the process dies before the worker ran.
        let before = outbox(&store, vec![Arc::new(cf(&cff))]);
        before.enqueue("rev-restart", &req, t0()).await.unwrap();
    }
    assert_eq!(cff.count(), 0);
    let after = outbox(&store, vec![Arc::new(cf(&cff))]);
    let r = after.run_due(t0() + Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.done, 1);
    assert!(is_done(&one_job(&store).await));
    assert_eq!(cff.count(), 1);
}

#[tokio::test]
async fn job_in_flight_at_crash_is_resent_after_its_lease() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::Hang]);
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Asset("a3"), &[]);
    {
        let before = outbox(&store, vec![Arc::new(cf(&cff))]);
        before.enqueue("rev-crash", &req, t0()).await.unwrap();
        // The call reaches the CDN, then the process dies before the answer.
        let run = tokio::time::timeout(Duration::from_millis(300), before.run_due(t0())).await;
        assert!(run.is_err(), "the fake hangs");
    }
    assert_eq!(cff.count(), 1);
    let job = one_job(&store).await;
    assert_eq!(job.status, JobStatus::Pending);
    let lease = config().lease;
    assert_eq!(job.next_attempt_at, t0() + lease);

    let after = outbox(&store, vec![Arc::new(cf(&cff))]);
    // Still leased: another run (or replica) does not send it twice at once.
    assert_eq!(after.run_due(t0() + Duration::from_secs(1)).await.unwrap().sent, 0);
    let r = after.run_due(t0() + lease).await.unwrap();
    assert_eq!(r.done, 1);
    assert_eq!(cff.count(), 2, "re-sent once after the lease");
}

#[tokio::test]
async fn done_jobs_are_never_resent() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Token { share: Some("s2") }, &[]);
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    ob.enqueue("rev-once", &req, t0()).await.unwrap();
    assert_eq!(ob.run_due(t0()).await.unwrap().done, 2);
    assert_eq!((cff.count(), fyf.count()), (1, 1));

    // Later runs, a restart, and planning the same revocation again send nothing.
    assert_eq!(ob.run_due(t0() + Duration::from_secs(86_400)).await.unwrap().sent, 0);
    let restarted = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    let again = restarted
        .enqueue("rev-once", &req, t0() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(is_done), "re-planning keeps the stored status");
    assert_eq!(
        restarted
            .run_due(t0() + Duration::from_secs(86_400))
            .await
            .unwrap()
            .sent,
        0
    );
    assert_eq!((cff.count(), fyf.count()), (1, 1));

    // A stale writer cannot bring a Done job back.
    let mut stale = store.all().unwrap().remove(0);
    stale.status = JobStatus::Pending;
    store.update(&stale).await.unwrap();
    assert!(is_done(&store.all().unwrap()[0]));
}

#[tokio::test]
async fn worker_sends_new_jobs_promptly() {
    let cff = cloudflare_fake().await;
    let store = MemoryOutboxStore::new();
    let ob = Arc::new(outbox(&store, vec![Arc::new(cf(&cff))]));
    // A long tick: the job must go out because enqueue wakes the worker, not because the tick came round.
    let worker = spawn_outbox_worker(ob.clone(), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let req = PurgeRequest::for_revocation(&Revoked::Share("s3"), &[]);
    ob.enqueue("rev-worker", &req, SystemTime::now()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if ob.receipt("rev-worker").await.unwrap().iter().all(is_done) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker did not send the job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    assert_eq!(cff.count(), 1);
}

/// `reqwest` here has no `json` feature; read bodies through serde_json.
trait JsonBody {
    async fn json_or_panic(self) -> Value;
}

impl JsonBody for reqwest::Response {
    async fn json_or_panic(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}
