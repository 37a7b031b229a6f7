//! The revocation state the native edge holds: the shared logic of `sharegate_edge::held`, on a monotonic clock.

pub use sharegate_edge::held::{Held, MAX_DELTAS, Offer, OfferError, offer};
use std::sync::OnceLock;
use std::time::Instant;

/// Milliseconds on a monotonic clock (since the first call in this process): the time base of [`Held`].
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}
