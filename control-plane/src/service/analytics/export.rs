//! The raw event stream: `GET /v1/analytics/stream` (pull, with a cursor) and the NDJSON webhook (push).

use super::AppState;
use axum::Router;
use std::sync::Arc;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}

/// Start the webhook pusher, when one is configured.
pub fn spawn(_s: Arc<AppState>) {}
