//! The analytics dashboard page (`GET /dashboard`) and its assets.

use super::AppState;
use axum::Router;
use std::sync::Arc;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
