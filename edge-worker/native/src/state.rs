//! The revocation state the native edge holds: the shared logic of `sharegate_edge::held`, on the wall clock.
//!
//! The state's age is `now - as_of`, where `as_of` is the control plane's signed time (see `sharegate_edge::held`):
//! a wall clock is what that is compared with, so this edge needs its clock synchronised (NTP), as any TLS client
//! does. A monotonic clock would not help: the evidence itself is a wall-clock time.

pub use sharegate_edge::held::{Held, MAX_DELTAS, MAX_FUTURE_SKEW_SECS, Offer, OfferError, offer};
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 before 1970, which only a broken clock reports: the state then looks as old as it can).
pub fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now, for the status endpoint's clock report.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
