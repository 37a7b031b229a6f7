//! Playback analytics: view ids, beacons, the aggregates, the query, conversions and the raw event stream.

use super::AppState;
use axum::Router;
use std::sync::Arc;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
