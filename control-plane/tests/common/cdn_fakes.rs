//! Local fakes of the Cloudflare and Fastly purge APIs that check the documented request shapes and answer with the
//! documented responses (including 429s), shared by the purge and revoke-and-purge tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub const ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const CF_TOKEN: &str = "cf-test-token";
pub const SERVICE: &str = "SU1Z0isxPaozGVKXdv0eY";
pub const FASTLY_KEY: &str = "fastly-test-key";
/// Cloudflare's current per-request ceiling ("max operations per request"); the fake refuses more.
pub const CF_MAX_PER_CALL: usize = 100;
/// Fastly's documented bulk ceiling.
pub const FASTLY_MAX_KEYS: usize = 256;

// ---------------------------------------------------------------------------------------------------------------
// The fakes
// ---------------------------------------------------------------------------------------------------------------

/// What a fake does with its next valid request instead of succeeding.
#[derive(Clone, Copy, Debug)]
pub enum Scripted {
    /// 429 with a wait of this many seconds (`Retry-After` for Cloudflare, `Fastly-RateLimit-Reset` for Fastly).
    RateLimit(u64),
    /// This status with an error body.
    Status(u16),
    /// Never answer (a call in flight when the process dies).
    Hang,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub body: Value,
    pub soft: bool,
}

#[derive(Default)]
pub struct FakeState {
    pub seen: Vec<Seen>,
    pub rejected: Vec<String>,
    pub script: VecDeque<Scripted>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<FakeState>>,
}

impl Fake {
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Valid requests received (including those answered 429/5xx by script).
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }
    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }
    pub fn script(&self, steps: &[Scripted]) {
        self.state.lock().unwrap().script.extend(steps.iter().copied());
    }
}

pub fn reply(status: u16, headers: &[(&str, String)], body: &Value) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

pub fn is_json(headers: &HeaderMap) -> bool {
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
pub async fn accept(state: &Mutex<FakeState>, seen: Seen) -> Option<Scripted> {
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

pub fn cf_error(status: u16, code: u32, message: &str) -> Response {
    reply(
        status,
        &[],
        &json!({"success": false, "errors": [{"code": code, "message": message}], "messages": [], "result": null}),
    )
}

/// The documented body: exactly one of `files`, `tags`, `prefixes`, `hosts`, `purge_everything`.
pub fn cf_check_body(body: &Value) -> Result<(), String> {
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

pub fn check_url(url: &str) -> Result<(), String> {
    if (url.starts_with("https://") || url.starts_with("http://")) && !url.contains(' ') {
        Ok(())
    } else {
        Err(format!("not an absolute URL: {url}"))
    }
}

pub async fn cf_purge(
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

pub async fn cloudflare_fake() -> Fake {
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

pub fn fastly_error(status: u16, msg: &str, detail: &str) -> Response {
    reply(status, &[], &json!({"msg": msg, "detail": detail}))
}

pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 1024 || key.chars().any(char::is_whitespace) {
        Err(format!("bad surrogate key {key:?}"))
    } else {
        Ok(())
    }
}

/// Auth and service checks shared by every Fastly route: the refusal, if any.
pub fn fastly_refusal(state: &Mutex<FakeState>, service: Option<&str>, headers: &HeaderMap) -> Option<Response> {
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

pub fn soft(headers: &HeaderMap) -> bool {
    headers.contains_key("fastly-soft-purge")
}

pub fn fastly_scripted(step: Option<Scripted>, ok: Value) -> Response {
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

pub async fn fastly_single(
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

pub async fn fastly_bulk(
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

pub async fn fastly_url(
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

pub async fn fastly_fake() -> Fake {
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
