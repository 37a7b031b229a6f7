//! Raw retention: beacons, edge events and view records older than the configured retention are deleted.

use super::AppState;
use std::sync::Arc;

/// Start the retention sweep.
pub fn spawn(_s: Arc<AppState>) {}
