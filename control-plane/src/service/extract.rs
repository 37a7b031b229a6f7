//! The handlers' prologue as extractors (the pattern of axum's `examples/error-handling`): who calls and may they
//! ([`Authorized`]), and the JSON body or query ([`JsonBody`], [`QueryParams`]), each refusing with an [`ApiError`]
//! so every refusal has our JSON shape and a stable code.
//!
//! Extractors run in argument order and the body last, so a handler taking `Authorized<_>` before `JsonBody<_>`
//! answers 401/403 before it looks at the body, as the API always has.

use super::AppState;
use super::auth::{Caller, Permission};
use super::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::{Json, http::HeaderMap};
use serde::de::DeserializeOwned;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// A caller with a valid API key whose role `P` allows the call: 401 without a valid key, 403 for another role.
/// Derefs to the [`Caller`] (what handlers audit with).
#[derive(Debug)]
pub struct Authorized<P> {
    caller: Caller,
    permission: PhantomData<P>,
}

impl<P> Deref for Authorized<P> {
    type Target = Caller;

    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<P: Permission> FromRequestParts<Arc<AppState>> for Authorized<P> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        let caller = authorize::<P>(s, &parts.headers).await?;
        Ok(Authorized {
            caller,
            permission: PhantomData,
        })
    }
}

/// Authenticate the request's caller and check its role against `P`: for the one endpoint whose key is optional
/// (`/metrics`), which cannot take [`Authorized`] in its signature.
pub async fn authorize<P: Permission>(s: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let mut caller = if P::CHECKED_AT_COMMIT {
        super::caller_cached(s, headers).await?
    } else {
        super::caller(s, headers).await?
    };
    caller.require(P::ROLES, P::ACTION)?;
    caller.request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(caller)
}

/// A JSON body; malformed JSON, a wrong type, an unknown field or a missing `Content-Type` is 400
/// `invalid_request` with serde's message (axum's own rejection would be plain text, some with 415 or 422).
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<T>::from_request(req, state)
            .await
            .map_err(|e| ApiError::Invalid(e.body_text()))?;
        Ok(JsonBody(v))
    }
}

/// A query string, refused like a body: 400 `invalid_request`.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(v) = Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::Invalid(e.body_text()))?;
        Ok(QueryParams(v))
    }
}
