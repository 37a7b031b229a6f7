//! The service's one error type: every failure becomes JSON `{"error": "<code>", "message": "..."}` with a stable
//! code and the right status. Messages never carry secrets (keys, tokens, API keys).

use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credential.
    #[error("an API key is required (Authorization: Bearer <key>)")]
    Unauthenticated,
    /// The credential is unknown or disabled.
    #[error("the API key is not valid")]
    BadCredential,
    /// The credential's role may not call this endpoint.
    #[error("role `{have}` may not {action}; needs one of: {need}")]
    Forbidden {
        /// The caller's role.
        have: &'static str,
        /// What was attempted.
        action: &'static str,
        /// Roles that may.
        need: String,
    },
    /// The request is malformed or a field is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A revocation's fields do not fit its kind (`global` with an `id`, a scope without one, ...).
    #[error("{0}")]
    InvalidScope(String),
    /// Not found.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with the current state (e.g. an idempotency key reused with another body).
    #[error("{0}")]
    Conflict(String),
    /// Minting refused by policy or readiness.
    #[error("{0}")]
    Refused(String),
    /// This replica's clock disagrees with what the other replicas wrote (see `mint_recorded`): retrying elsewhere
    /// may work, minting here would hand out tokens that are not valid yet.
    #[error("{0}")]
    ClockSkew(String),
    /// An access policy or the entitlement backend refused the token (or could not be asked).
    #[error("{}", .0.message)]
    Access(super::entitlement::Denial),
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Anything else that is our fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::BadCredential => "bad_credential",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::Invalid(_) => "invalid_request",
            ApiError::InvalidScope(_) => "invalid_scope",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::Refused(_) => "refused",
            ApiError::ClockSkew(_) => "clock_skew",
            ApiError::Access(d) => d.code,
            ApiError::Store(e) => e.code(),
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::BadCredential => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Invalid(_) | ApiError::InvalidScope(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Store(e) if e.is_retryable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ClockSkew(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Access(d) => d.status,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code(), "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}
