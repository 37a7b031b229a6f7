//! The revocation state an adapter holds in memory, and how it is replaced.
//!
//! State arrives as bytes (pushed by the control plane, or pulled from it), is verified once on arrival (MAC,
//! generation never going back, deltas chaining onto what is held) and kept as bytes; each request opens it in place,
//! which is O(1) (see `shared::revocation`). Adapters that keep state between requests (the native server, a
//! Cloudflare isolate) share this logic; the caller supplies the time (a monotonic millisecond clock), since this
//! crate reads none.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use sharegate_shared::revocation::{DeltaView, StateError, StateKey, StateSet, StateView};

/// A verified snapshot and the deltas on top of it.
#[derive(Debug, Clone)]
pub struct Held {
    /// Snapshot bytes (verified on arrival).
    pub snapshot: Arc<[u8]>,
    /// Delta bytes, oldest first (each verified and chained on arrival).
    pub deltas: Vec<Arc<[u8]>>,
    /// Generation of the newest layer.
    pub generation: u64,
    /// When the state was last confirmed current (a push, or a pull that found nothing newer), in the caller's
    /// monotonic milliseconds.
    pub refreshed_ms: u64,
}

/// What happened to an offered state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A snapshot replaced what was held.
    Snapshot(u64),
    /// A delta was appended.
    Delta(u64),
    /// Nothing newer (already held).
    Current(u64),
}

/// Why an offered state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// The bytes are not a valid, authentic snapshot or delta.
    Invalid(&'static str),
    /// The snapshot is older than the one held.
    Older {
        /// Held generation.
        held: u64,
        /// Offered generation.
        offered: u64,
    },
    /// A delta does not continue the held generation (the sender should send a snapshot).
    Gap {
        /// Held generation.
        held: u64,
        /// The delta's base.
        base: u64,
    },
    /// No state key is configured, so nothing can be verified.
    NoKey,
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::Invalid(why) => write!(f, "invalid state: {why}"),
            OfferError::Older { held, offered } => write!(f, "stale_generation: held {held}, offered {offered}"),
            OfferError::Gap { held, base } => write!(f, "broken_chain: held {held}, delta base {base}"),
            OfferError::NoKey => f.write_str("no state key configured"),
        }
    }
}

impl core::error::Error for OfferError {}

fn invalid(e: StateError) -> OfferError {
    OfferError::Invalid(e.as_str())
}

/// Most deltas kept before the sender must send a fresh snapshot: each request walks them all.
pub const MAX_DELTAS: usize = 64;

/// Verify `bytes` (a snapshot or a delta, told apart by their magic) against what is held and return the new held
/// state.
/// `now_ms` is the caller's monotonic clock, recorded as the time the state was confirmed current.
pub fn offer(
    held: Option<&Held>,
    key: Option<&StateKey>,
    bytes: &[u8],
    now_ms: u64,
) -> Result<(Held, Offer), OfferError> {
    let key = key.ok_or(OfferError::NoKey)?;
    if bytes.starts_with(b"SGRS") {
        let min = held.map_or(0, |h| h.snapshot_generation());
        let view = StateView::open_verified(bytes, key, min).map_err(|e| match e {
            StateError::StaleGeneration => OfferError::Older {
                held: held.map_or(0, |h| h.generation),
                offered: StateView::open(bytes).map_or(0, |v| v.generation()),
            },
            e => invalid(e),
        })?;
        let generation = view.generation();
        if let Some(h) = held
            && generation <= h.generation
        {
            // Same snapshot again, or one older than the deltas held: keep what we have, but it is confirmed current.
            let mut h = h.clone();
            h.refreshed_ms = now_ms;
            if generation < h.generation {
                return Err(OfferError::Older {
                    held: h.generation,
                    offered: generation,
                });
            }
            return Ok((h, Offer::Current(generation)));
        }
        let held = Held {
            snapshot: Arc::from(bytes),
            deltas: Vec::new(),
            generation,
            refreshed_ms: now_ms,
        };
        return Ok((held, Offer::Snapshot(generation)));
    }
    let delta = DeltaView::open_verified(bytes, key).map_err(invalid)?;
    let Some(h) = held else {
        return Err(OfferError::Gap {
            held: 0,
            base: delta.base_generation(),
        });
    };
    if delta.generation() <= h.generation {
        let mut h = h.clone();
        h.refreshed_ms = now_ms;
        let g = h.generation;
        return Ok((h, Offer::Current(g)));
    }
    if delta.base_generation() != h.generation || h.deltas.len() >= MAX_DELTAS {
        return Err(OfferError::Gap {
            held: h.generation,
            base: delta.base_generation(),
        });
    }
    let mut next = h.clone();
    next.deltas.push(Arc::from(bytes));
    next.generation = delta.generation();
    next.refreshed_ms = now_ms;
    let g = next.generation;
    Ok((next, Offer::Delta(g)))
}

impl Held {
    /// Whole seconds since the state was last confirmed current.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.refreshed_ms) / 1000
    }

    /// Mark the state confirmed current (a pull that found nothing newer).
    pub fn confirmed(&self, now_ms: u64) -> Held {
        let mut h = self.clone();
        h.refreshed_ms = now_ms;
        h
    }

    fn snapshot_generation(&self) -> u64 {
        StateView::open(&self.snapshot).map_or(0, |v| v.generation())
    }

    /// Open the held bytes for one request and run `f` with the state. Opening is O(1) per layer; the bytes were
    /// verified on arrival, so a failure here cannot happen short of memory corruption, and yields `None`.
    pub fn with_set<R>(&self, f: impl FnOnce(Option<&StateSet<'_>>) -> R) -> R {
        let Ok(snapshot) = StateView::open(&self.snapshot) else {
            return f(None);
        };
        let mut deltas = Vec::with_capacity(self.deltas.len());
        for d in &self.deltas {
            match DeltaView::open(d) {
                Ok(v) => deltas.push(v),
                Err(_) => return f(None),
            }
        }
        match StateSet::new(snapshot, &deltas) {
            Ok(set) => f(Some(&set)),
            Err(_) => f(None),
        }
    }
}

/// Decide `req` with what an adapter holds: the state opened in place with its age, or no state at all (age
/// unbounded, so the engine applies the stale policy). `now` is Unix seconds, `now_ms` the caller's monotonic clock.
pub fn decide(
    engine: &crate::Engine,
    held: Option<&Held>,
    req: &crate::Request<'_>,
    now: u64,
    now_ms: u64,
) -> crate::Decision {
    use crate::engine::{Revocations, StateInput};
    match held {
        Some(h) => {
            let age = h.age_secs(now_ms);
            h.with_set(|set| {
                let input = StateInput {
                    state: set.map(|s| s as &dyn Revocations),
                    age,
                };
                engine.decide(req, now, input)
            })
        }
        None => engine.decide(
            req,
            now,
            StateInput {
                state: None,
                age: u64::MAX,
            },
        ),
    }
}
