//! Idempotency keys on every mutating call: a retried `POST`/`PUT`/`DELETE` with the same `Idempotency-Key`
//! returns the first answer instead of acting twice.
//!
//! The key is scoped to the caller's credential and the route, and bound to a hash of the request body: the same key
//! with another body is a `409 conflict`, and so is a retry that arrives while the first call is still running.
//! Only successful (2xx) answers are remembered; a failed call may be retried with the same key.

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
}

/// The middleware; routes without the header pass straight through.
pub async fn layer(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::DELETE | Method::PATCH
    ) {
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
    let pending = Saved {
        request: request.clone(),
        status: None,
        body: Vec::new(),
        content_type: None,
    };
    let Ok(pending_bytes) = serde_json::to_vec(&pending) else {
        return ApiError::Internal("encode".into()).into_response();
    };
    match s
        .store
        .atomic(
            &[Check::Absent {
                ns: Ns::Idempotency,
                key: &scope,
            }],
            &[Op::Put {
                ns: Ns::Idempotency,
                key: &scope,
                value: &pending_bytes,
            }],
        )
        .await
    {
        Err(e) => return ApiError::Store(e).into_response(),
        Ok(Some(_)) => {}
        Ok(None) => return replay(&s, &scope, &request).await,
    }
    let resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = resp.status();
    if !status.is_success() {
        // Forget the key: a failed call may be retried.
        let _ = s.store.delete(Ns::Idempotency, &scope).await;
        return resp;
    }
    let (rparts, rbody) = resp.into_parts();
    let Ok(rbytes) = to_bytes(rbody, MAX_BODY).await else {
        return ApiError::Internal("response too large to remember".into()).into_response();
    };
    let saved = Saved {
        request,
        status: Some(status.as_u16()),
        body: rbytes.to_vec(),
        content_type: rparts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    if let Ok(v) = serde_json::to_vec(&saved) {
        let _ = s.store.put(Ns::Idempotency, &scope, &v).await;
    }
    Response::from_parts(rparts, Body::from(rbytes))
}

async fn replay(s: &AppState, scope: &str, request: &str) -> Response {
    let saved = match s.store.get(Ns::Idempotency, scope).await {
        Ok(Some(v)) => serde_json::from_slice::<Saved>(&v).ok(),
        Ok(None) => None,
        Err(e) => return ApiError::Store(e).into_response(),
    };
    let Some(saved) = saved else {
        return ApiError::Conflict("retry: the first call with this Idempotency-Key just finished".into())
            .into_response();
    };
    if saved.request != request {
        return ApiError::Conflict("this Idempotency-Key was used with a different request body".into())
            .into_response();
    }
    let Some(status) = saved.status else {
        return ApiError::Conflict("a call with this Idempotency-Key is still running".into()).into_response();
    };
    let mut resp = Response::new(Body::from(saved.body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Some(ct) = saved.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(axum::http::header::CONTENT_TYPE, ct);
    }
    resp.headers_mut()
        .insert("idempotent-replay", HeaderValue::from_static("true"));
    resp
}
