//! `GET /v1/openapi.yaml` (no key: public API documentation): the OpenAPI 3.1 document of this service,
//! `docs/openapi.yaml`, compiled into the binary so the served document always matches the build.
//!
//! `control-plane/tests/openapi.rs` checks that the document names every route the service registers (and no
//! other), with the right methods and auth, and that this endpoint serves it byte for byte.

use super::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.yaml");

/// Its media type (RFC 9512).
pub const CONTENT_TYPE: &str = "application/yaml";

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/openapi.yaml", get(document))
}

async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        DOCUMENT,
    )
}
