//! Routes of `shares` (being written).

use super::AppState;
use axum::Router;
use std::sync::Arc;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
