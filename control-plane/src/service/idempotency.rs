//! Idempotency keys on every mutating call: a retried `POST`/`PUT`/`DELETE` with the same `Idempotency-Key`
//! returns the first answer instead of acting twice.
//!
//! The key is scoped to the caller's credential and the route, and bound to a hash of the request body: the same key
//! with another body is a `409 conflict`. Only successful (2xx) answers are remembered; a failed call may be retried
//! with the same key. A remembered `201` is replayed as `200` (the resource exists already), with
//! `idempotent-replay: true`. Calls without a credential (what viewers send: beacons, token requests) are never
//! remembered: an anonymous caller must not be able to grow the store with keys.
//!
//! **Crashes.** The first call marks the key as running under a *lease* that it renews while it runs
//! ([`lease`]). A retry while the lease holds is `409` with `Retry-After`; once it has lapsed (the process that ran
//! the call died, or hung past the lease), the retry takes the key over and runs the call again. The handler then
//! finds out for itself whether the first run committed: handlers whose effect must not be applied twice write a
//! commit record under [`commit_key`] in the same store transaction as the effect, and answer from it when it is
//! there (revocations, key rotation; a share delete is idempotent by its own record). So a retry after a crash
//! either returns the committed result or runs the call once: never a wedged key, never a second application.

use super::AppState;
use super::error::ApiError;
use crate::store::{Check, Ns, Op};
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a running call's mark holds without renewal, by default. The running call renews it every third of
/// this, so only a dead (or wedged) process lets it lapse. `SHAREGATE_IDEMPOTENCY_LEASE_MS` overrides it (tests
/// use a short lease; in production, shorter means a retry after a crash waits less, at the price of more renewals).
pub const LEASE: Duration = Duration::from_secs(5);

/// The lease in force: [`LEASE`], or `SHAREGATE_IDEMPOTENCY_LEASE_MS` (300 ms to 10 min).
pub fn lease() -> Duration {
    static LEASE_IN_FORCE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *LEASE_IN_FORCE.get_or_init(|| {
        std::env::var("SHAREGATE_IDEMPOTENCY_LEASE_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| (300..=600_000).contains(ms))
            .map_or(LEASE, Duration::from_millis)
    })
}

/// The idempotency scope of the current request (credential, method, path, key) and the hash of its body, for
/// handlers that record their commit in their own transaction. Present only when the request carried an
/// `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Credential, method, path and key.
    pub key: String,
    /// Hex SHA-256 of the request body.
    pub request: String,
}

/// A response extension for answers that carry a secret shown only once (a new API key): the middleware remembers
/// that the call succeeded, never the body, and a retry with the key is told so instead of getting the secret
/// again (which would mean keeping it in the store).
#[derive(Debug, Clone, Copy)]
pub struct ShownOnce;

/// The key under [`Ns::Idempotency`] where a handler records, in its effect's transaction, that the call of
/// `scope` committed (and what it produced).
pub fn commit_key(scope: &Scope) -> String {
    format!("commit:{}", scope.key)
}

/// The check and the write that record a call's commit in the call's own transaction: the record must be absent
/// (a concurrent run, or one that took over the key too early while the first was alive after all, must not commit
/// a second time), and is written with the call's effect.
pub fn commit_guard<'a>(key: &'a str, value: &'a [u8]) -> (Check<'a>, Op<'a>) {
    (
        Check::Absent {
            ns: Ns::Idempotency,
            key,
        },
        Op::Put {
            ns: Ns::Idempotency,
            key,
            value,
        },
    )
}

/// A commit record's value: the request's body hash, then what the handler remembers of its effect.
pub fn commit_value(scope: &Scope, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(scope.request.len() + 1 + payload.len());
    v.extend_from_slice(scope.request.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(payload);
    v
}

/// What a commit record remembers, if it was written for this same request; a record of the same key with another
/// body (the first call failed after its commit and the key was reused) is a conflict, never another call's answer.
pub fn commit_payload<'a>(scope: &Scope, value: &'a [u8]) -> Result<&'a [u8], ApiError> {
    match value.iter().position(|b| *b == b'\n') {
        Some(i) if &value[..i] == scope.request.as_bytes() => Ok(&value[i + 1..]),
        _ => Err(ApiError::Conflict(
            "this Idempotency-Key was used with a different request body".into(),
        )),
    }
}

/// Largest request or response body the middleware buffers.
const MAX_BODY: usize = 1 << 20;

#[derive(Serialize, Deserialize)]
struct Saved {
    /// Hex SHA-256 of the request body.
    request: String,
    /// `None` while the first call runs.
    status: Option<u16>,
    body: Vec<u8>,
    content_type: Option<String>,
    /// The answer carried a secret shown only once; its body is not kept.
    #[serde(default)]
    shown_once: bool,
    /// While running: who runs it (random per call) and until when its lease holds (Unix ms).
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    lease_until_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn running(request: &str, owner: &str) -> Result<Vec<u8>, ApiError> {
    let saved = Saved {
        request: request.to_string(),
        status: None,
        body: Vec::new(),
        content_type: None,
        shown_once: false,
        owner: Some(owner.to_string()),
        lease_until_ms: now_ms() + u64::try_from(lease().as_millis()).unwrap_or(u64::MAX),
    };
    serde_json::to_vec(&saved).map_err(|e| ApiError::Internal(format!("encode: {e}")))
}

/// What to do with a key that is already marked.
enum Marked {
    /// Answer this (a replay, or a conflict).
    Answer(Response),
    /// The running call's lease lapsed and we took the key over: run the call, with this as our mark.
    TakenOver(Vec<u8>),
}

/// The middleware; routes without the header pass straight through.
pub async fn layer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) {
        return next.run(req).await;
    }
    if !req.headers().contains_key(axum::http::header::AUTHORIZATION) {
        return next.run(req).await;
    }
    let Some(idem) = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        return next.run(req).await;
    };
    if idem.is_empty() || idem.len() > 200 {
        return ApiError::Invalid("Idempotency-Key must be 1 to 200 characters".into()).into_response();
    }
    // Scope by credential (its hash: the key itself is never stored) and route.
    let cred = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|a| super::auth::key_hash(a.trim_start_matches("Bearer ").trim()))
        .unwrap_or_default();
    let scope = format!(
        "http:{}:{}:{}:{}",
        &cred[..cred.len().min(16)],
        req.method(),
        req.uri().path(),
        idem
    );
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ApiError::Invalid("request body too large".into()).into_response();
    };
    let request = hex::encode(Sha256::digest(&bytes));
    let mut owner = [0u8; 12];
    if getrandom::fill(&mut owner).is_err() {
        return ApiError::Internal("no OS randomness".into()).into_response();
    }
    let owner = hex::encode(owner);
    let mut mark = match running(&request, &owner) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    match s.store.put_if_absent(Ns::Idempotency, &scope, &mark).await {
        Err(e) => return ApiError::Store(e).into_response(),
        Ok(true) => {}
        Ok(false) => match marked(&s, &scope, &request, &owner).await {
            Marked::Answer(r) => return r,
            Marked::TakenOver(m) => mark = m,
        },
    }
    crate::crash::point("idempotency.marked");
    // Renew the lease while the call runs, so only a dead process lets it lapse.
    let renewer = tokio::spawn(renew(s.clone(), scope.clone(), request.clone(), owner.clone(), mark));
    let mut req = Request::from_parts(parts, Body::from(bytes));
    req.extensions_mut().insert(Scope {
        key: scope.clone(),
        request: request.clone(),
    });
    let resp = next.run(req).await;
    renewer.abort();
    // Let the cancellation land; a renewal already handed to the store may still apply, which `settle` allows for.
    let _ = renewer.await;
    let status = resp.status();
    if !status.is_success() {
        // Forget the key: a failed call may be retried.
        settle(&s, &scope, &owner, None).await;
        return resp;
    }
    crate::crash::point("idempotency.before_save");
    let shown_once = resp.extensions().get::<ShownOnce>().is_some();
    let (rparts, rbody) = resp.into_parts();
    let Ok(rbytes) = to_bytes(rbody, MAX_BODY).await else {
        return ApiError::Internal("response too large to remember".into()).into_response();
    };
    let saved = Saved {
        request,
        status: Some(status.as_u16()),
        // 409 on replay (see `replay`): the body held a secret that is not kept.
        body: if shown_once { Vec::new() } else { rbytes.to_vec() },
        shown_once,
        content_type: rparts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        owner: None,
        lease_until_ms: 0,
    };
    if let Ok(v) = serde_json::to_vec(&saved) {
        settle(&s, &scope, &owner, Some(&v)).await;
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

/// Replace our running mark with `new` (the saved answer), or remove it (`None`). Only a mark that is still ours
/// (running, our owner) is touched: if another caller took the key over, it answers from the handler's commit
/// record instead. A lease renewal that was in flight when the call ended can land after we read the mark, so a
/// failed swap is retried with the mark as it is now (renewals are sequential, so this ends at once).
async fn settle(s: &AppState, scope: &str, owner: &str, new: Option<&[u8]>) {
    let ours = |v: &[u8]| {
        serde_json::from_slice::<Saved>(v)
            .ok()
            .is_some_and(|m| m.status.is_none() && m.owner.as_deref() == Some(owner))
    };
    for _ in 0..8 {
        let Ok(Some(cur)) = s.store.get(Ns::Idempotency, scope).await else {
            return;
        };
        if !ours(&cur) {
            return;
        }
        if let Ok(true) = s.store.cas(Ns::Idempotency, scope, Some(&cur), new).await {
            return;
        }
    }
    tracing::warn!("idempotency mark could not be settled; a retry will take it over when its lease lapses");
}

/// Renews our lease every third of [`lease`] while the call runs (aborted when it ends).
async fn renew(s: Arc<AppState>, scope: String, request: String, owner: String, mut mark: Vec<u8>) {
    loop {
        tokio::time::sleep(lease() / 3).await;
        let Ok(next) = running(&request, &owner) else { return };
        match s.store.cas(Ns::Idempotency, &scope, Some(&mark), Some(&next)).await {
            Ok(true) => mark = next,
            // Taken over (we were too slow) or completed: nothing more to renew.
            Ok(false) => return,
            // A store hiccup: try again at the next tick with the same mark.
            Err(_) => {}
        }
    }
}

/// A retry found the key marked: replay the answer, refuse (another body, or still running), or take over a
/// lapsed lease.
async fn marked(s: &AppState, scope: &str, request: &str, owner: &str) -> Marked {
    for _ in 0..3 {
        let cur = match s.store.get(Ns::Idempotency, scope).await {
            Ok(Some(v)) => v,
            // Forgotten between our insert and this read (the first call failed): the caller may retry now.
            Ok(None) => {
                return Marked::Answer(
                    ApiError::Conflict("retry: the first call with this Idempotency-Key just finished".into())
                        .into_response(),
                );
            }
            Err(e) => return Marked::Answer(ApiError::Store(e).into_response()),
        };
        let Ok(saved) = serde_json::from_slice::<Saved>(&cur) else {
            return Marked::Answer(ApiError::Internal("unreadable idempotency record".into()).into_response());
        };
        if saved.request != request {
            return Marked::Answer(
                ApiError::Conflict("this Idempotency-Key was used with a different request body".into())
                    .into_response(),
            );
        }
        if saved.status.is_some() {
            return Marked::Answer(replay(saved));
        }
        let now = now_ms();
        if saved.lease_until_ms > now {
            let wait = (saved.lease_until_ms - now).div_ceil(1000);
            let mut r = ApiError::Conflict("a call with this Idempotency-Key is still running".into()).into_response();
            if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            return Marked::Answer(r);
        }
        // The lease lapsed: whoever ran it is gone. Take it over; if another retry beat us to it, look again.
        let mark = match running(request, owner) {
            Ok(m) => m,
            Err(e) => return Marked::Answer(e.into_response()),
        };
        match s.store.cas(Ns::Idempotency, scope, Some(&cur), Some(&mark)).await {
            Ok(true) => {
                tracing::warn!("idempotency key taken over after its lease lapsed (the first call's process died)");
                return Marked::TakenOver(mark);
            }
            Ok(false) => {}
            Err(e) => return Marked::Answer(ApiError::Store(e).into_response()),
        }
    }
    Marked::Answer(ApiError::Conflict("a call with this Idempotency-Key is still running".into()).into_response())
}

fn replay(saved: Saved) -> Response {
    if saved.shown_once {
        return ApiError::Conflict(
            "the call with this Idempotency-Key succeeded; its answer held a secret shown only once, which is not \
             kept (list API keys to find it, or create another)"
                .into(),
        )
        .into_response();
    }
    let status = match saved.status {
        // The resource exists already: a replay of its creation says so (docs/openapi.yaml).
        Some(201) => StatusCode::OK,
        Some(s) => StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
        None => StatusCode::OK,
    };
    let mut resp = Response::new(Body::from(saved.body));
    *resp.status_mut() = status;
    if let Some(ct) = saved.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replay", HeaderValue::from_static("true"));
    resp
}
