//! The revocation state an adapter holds in memory, and how it is replaced.
//!
//! State arrives as bytes (pushed by the control plane, or pulled from it), is verified once on arrival (MAC,
//! generation never going back, deltas chaining onto what is held) and kept as bytes; each request opens it in place,
//! which is O(1) (see `shared::revocation`). Adapters that keep state between requests (the native server, a
//! Cloudflare isolate) share this logic, and the Fastly app rebuilds a [`Held`] from its cache to refresh it.
//!
//! **Freshness comes from signed evidence only.** The age of the state is `now - as_of`, where `as_of` is the
//! newest signed time (a snapshot's or delta's `built_at`, or a freshness message's `as_of`) among the verified
//! answers for the generation held or a newer one. When bytes arrived counts for nothing: a replayed answer is
//! MAC-valid, so an edge that measured age from arrival could be kept "fresh" forever by replaying an old one. Here
//! an older generation is refused ([`OfferError::Older`]) and a same-generation replay leaves `as_of` where it was
//! (it is a maximum), so a replay can never make the state look younger than the control plane said it was.
//!
//! Clocks: `as_of` is the control plane's clock, `now` the edge's. An `as_of` ahead of the edge's clock counts as
//! age 0, and is believed at most [`MAX_FUTURE_SKEW_SECS`] ahead of the edge's clock when it arrives, so a control
//! plane clock that runs fast extends freshness by at most that much; one that runs slow makes the edge go stale
//! early (the safe side). The caller supplies the time (unix seconds); this crate reads no clock.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use sharegate_shared::revocation::{
    DeltaView, FRESHNESS_MAGIC, StateError, StateKey, StateSet, StateView, verify_freshness,
};

/// A verified snapshot and the deltas on top of it.
#[derive(Debug, Clone)]
pub struct Held {
    /// Snapshot bytes (verified on arrival).
    pub snapshot: Arc<[u8]>,
    /// Delta bytes, oldest first (each verified and chained on arrival).
    pub deltas: Vec<Arc<[u8]>>,
    /// Generation of the newest layer.
    pub generation: u64,
    /// Unix seconds: the newest signed time at which the control plane vouched that no generation newer than the
    /// held one existed (see the module docs). The state's age is measured from it, never from arrival.
    pub as_of: u64,
}

/// What happened to an offered state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// A snapshot replaced what was held.
    Snapshot(u64),
    /// A delta was appended.
    Delta(u64),
    /// The held generation again (a snapshot, a delta or a freshness message for it): the layers are kept, `as_of`
    /// becomes the later of the held and the offered one.
    Current(u64),
}

/// Why an offered state was refused. Nothing about the held state changes, its freshness included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    /// The bytes are not a valid, authentic snapshot, delta or freshness message.
    Invalid(&'static str),
    /// Older than the generation held: a replay or a lagging sender.
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
    /// A freshness message for a generation newer than the one held: this edge is behind and must fetch the state
    /// (it says nothing about the state held).
    Behind {
        /// Held generation (0: none).
        held: u64,
        /// The generation the message vouches for.
        current: u64,
    },
    /// No state key is configured, so nothing can be verified.
    NoKey,
}

impl OfferError {
    /// Stable snake_case reason code, for the push endpoint's answer.
    pub fn as_str(&self) -> &'static str {
        match self {
            OfferError::Invalid(_) => "invalid_state",
            OfferError::Older { .. } => "stale_generation",
            OfferError::Gap { .. } => "broken_chain",
            OfferError::Behind { .. } => "behind",
            OfferError::NoKey => "no_state_key",
        }
    }

    /// The generation the edge holds, when the refusal is about generations (the sender can tell "already
    /// current" from "needs a snapshot").
    pub fn held(&self) -> Option<u64> {
        match *self {
            OfferError::Older { held, .. } | OfferError::Gap { held, .. } | OfferError::Behind { held, .. } => {
                Some(held)
            }
            OfferError::Invalid(_) | OfferError::NoKey => None,
        }
    }
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OfferError::Invalid(why) => write!(f, "invalid state: {why}"),
            OfferError::Older { held, offered } => write!(f, "stale_generation: held {held}, offered {offered}"),
            OfferError::Gap { held, base } => write!(f, "broken_chain: held {held}, delta base {base}"),
            OfferError::Behind { held, current } => write!(f, "behind: held {held}, current {current}"),
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

/// How far ahead of the edge's clock a signed `as_of` is believed, in seconds (see the module docs).
pub const MAX_FUTURE_SKEW_SECS: u64 = 2;

/// Verify `bytes` (a snapshot, a delta or a freshness message, told apart by their magic) against what is held and
/// return the new held state. `now` is the edge's clock (unix seconds), used only to cap an `as_of` from the future.
///
/// - older generation than held (any kind): [`OfferError::Older`];
/// - same generation: [`Offer::Current`], `as_of` = max(held, offered);
/// - newer: a snapshot replaces, a delta that chains is appended (`as_of` = max(held, offered): the newer state
///   contains the held one, so what was vouched for it still holds); a freshness message is
///   [`OfferError::Behind`].
pub fn offer(held: Option<&Held>, key: Option<&StateKey>, bytes: &[u8], now: u64) -> Result<(Held, Offer), OfferError> {
    let key = key.ok_or(OfferError::NoKey)?;
    let believed = |as_of: u32| u64::from(as_of).min(now.saturating_add(MAX_FUTURE_SKEW_SECS));
    let later = |h: &Held, as_of: u64| h.as_of.max(as_of);
    let older = |h: &Held, offered: u64| OfferError::Older {
        held: h.generation,
        offered,
    };
    if bytes.starts_with(FRESHNESS_MAGIC) {
        let f = verify_freshness(bytes, key).map_err(invalid)?;
        let h = match held {
            Some(h) if f.generation == h.generation => h,
            Some(h) if f.generation < h.generation => return Err(older(h, f.generation)),
            _ => {
                return Err(OfferError::Behind {
                    held: held.map_or(0, |h| h.generation),
                    current: f.generation,
                });
            }
        };
        let mut next = h.clone();
        next.as_of = later(h, believed(f.as_of));
        return Ok((next, Offer::Current(h.generation)));
    }
    if bytes.starts_with(b"SGRS") {
        let view = StateView::open_verified(bytes, key, 0).map_err(invalid)?;
        let generation = view.generation();
        let as_of = believed(view.built_at());
        return match held {
            Some(h) if generation < h.generation => Err(older(h, generation)),
            // The same generation again (possibly as a snapshot of what we hold as snapshot + deltas): keep the
            // layers, take the later signed time.
            Some(h) if generation == h.generation => {
                let mut next = h.clone();
                next.as_of = later(h, as_of);
                Ok((next, Offer::Current(generation)))
            }
            _ => Ok((
                Held {
                    snapshot: Arc::from(bytes),
                    deltas: Vec::new(),
                    generation,
                    as_of: held.map_or(as_of, |h| later(h, as_of)),
                },
                Offer::Snapshot(generation),
            )),
        };
    }
    let delta = DeltaView::open_verified(bytes, key).map_err(invalid)?;
    let as_of = believed(delta.built_at());
    let Some(h) = held else {
        return Err(OfferError::Gap {
            held: 0,
            base: delta.base_generation(),
        });
    };
    if delta.generation() < h.generation {
        return Err(older(h, delta.generation()));
    }
    if delta.generation() == h.generation {
        let mut next = h.clone();
        next.as_of = later(h, as_of);
        return Ok((next, Offer::Current(h.generation)));
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
    next.as_of = later(h, as_of);
    let g = next.generation;
    Ok((next, Offer::Delta(g)))
}

impl Held {
    /// Whole seconds since the signed `as_of` (0 while `as_of` is ahead of `now`, see the module docs).
    pub fn age_secs(&self, now: u64) -> u64 {
        now.saturating_sub(self.as_of)
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

/// Decide `req` with what an adapter holds: the state opened in place with its signed age, or no state at all (age
/// unbounded, so the engine applies the stale policy). `now` is Unix seconds.
pub fn decide<'a>(
    engine: &'a crate::Engine,
    held: Option<&Held>,
    req: &crate::Request<'a>,
    now: u64,
) -> crate::Decision<'a> {
    use crate::engine::{Revocations, StateInput};
    match held {
        Some(h) => h.with_set(|set| {
            let input = StateInput::opened(set.map(|s| s as &dyn Revocations), h.as_of, now);
            engine.decide(req, now, input)
        }),
        None => engine.decide(req, now, StateInput::opened(None, 0, now)),
    }
}

/// `Authorization: Bearer <token>`, the edge's credential on every call to the control plane.
pub fn bearer(token: Option<&str>) -> Option<(&'static str, alloc::string::String)> {
    token.map(|t| ("authorization", alloc::format!("Bearer {t}")))
}

/// The headers of a request to the control plane's state endpoint from an edge holding generation `since` (`None`:
/// no state yet): the generation, so the answer is what follows it, the ask for a signed freshness message when
/// current, and the edge's credential. An edge holding generation 0 (nothing revoked yet) says so too: otherwise
/// every pull would be answered with a whole snapshot instead of the short freshness message. `edge_id` names the
/// edge (the control plane exports how long ago each edge pulled).
pub fn state_request_headers(
    since: Option<u64>,
    token: Option<&str>,
    edge_id: Option<&str>,
) -> Vec<(&'static str, alloc::string::String)> {
    use crate::contract::headers;
    let mut h = Vec::with_capacity(4);
    if let Some(since) = since {
        h.push((headers::GENERATION, alloc::format!("{since}")));
    }
    h.push((headers::FRESHNESS, headers::FRESHNESS_SIGNED.into()));
    h.extend(bearer(token));
    h.extend(edge_id.map(|id| (headers::EDGE_ID, id.into())));
    h
}

/// The headers of a batch sent to the control plane's events endpoint: JSON, and the edge's credential.
pub fn events_request_headers(token: Option<&str>) -> Vec<(&'static str, alloc::string::String)> {
    let mut h = alloc::vec![("content-type", "application/json".into())];
    h.extend(bearer(token));
    h
}

/// When an adapter that keeps state between requests refreshes it, on the schedule's clock: when it last got a
/// verified answer (`checked_ms`), never the state's signed age, which only the stale policy reads (a replayed
/// answer could move the schedule, never the freshness). Pure: the adapter brings the times and does the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The freshness window (`SHAREGATE_STATE_REFRESH_MS`), ms.
    pub window_ms: u64,
}

/// What [`Schedule::due`] says to do before deciding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Checked within half the window: decide on what is held.
    NotYet,
    /// Between half and the whole window: decide on what is held, refresh after (off the viewer's path).
    InBackground,
    /// Nothing held, or not checked for the whole window: refresh, then decide.
    BeforeDeciding,
    /// Due, but a refresh failed within the last half window: decide on what is held (the stale policy applies
    /// once the hard limit passes), so an unreachable control plane does not make every viewer wait for a deadline.
    BackingOff,
}

impl Schedule {
    /// How long a checked state (or a cached state answer) counts as fresh: half the window, at least 1 ms.
    pub fn fresh_ms(&self) -> u64 {
        (self.window_ms / 2).max(1)
    }

    /// What to do at `now_ms`, given when the held state was last checked (`None`: nothing held) and when the last
    /// refresh failed (`None`: never, or the runtime's cache keeps the back-off itself).
    pub fn due(&self, checked_ms: Option<u64>, failed_ms: Option<u64>, now_ms: u64) -> Refresh {
        let age = checked_ms.map_or(u64::MAX, |c| now_ms.saturating_sub(c));
        if age < self.window_ms / 2 {
            Refresh::NotYet
        } else if age < self.window_ms {
            Refresh::InBackground
        } else if failed_ms.is_some_and(|f| now_ms.saturating_sub(f) < self.window_ms / 2) {
            Refresh::BackingOff
        } else {
            Refresh::BeforeDeciding
        }
    }
}

/// Whether `next` (just verified) may replace `current` (what the adapter holds now, perhaps installed by another
/// request meanwhile): never go back, neither to an older generation nor to older evidence for the same one.
pub fn replaces(current: Option<&Held>, next: &Held) -> bool {
    current.is_none_or(|cur| {
        next.generation > cur.generation || (next.generation == cur.generation && next.as_of > cur.as_of)
    })
}

/// What the state endpoint's status says to do with its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateReply {
    /// 200: the body is a snapshot, a delta or a signed freshness message; [`offer`] it.
    Offer,
    /// 204/304 from a control plane that predates signed freshness: unsigned, so replayable; it confirms nothing
    /// and the held state ages towards the stale policy.
    Unconfirmed,
    /// Anything else: the refresh failed.
    Failed(u16),
}

impl StateReply {
    /// Read a status.
    pub fn of(status: u16) -> Self {
        match status {
            200 => StateReply::Offer,
            204 | 304 => StateReply::Unconfirmed,
            s => StateReply::Failed(s),
        }
    }
}

impl fmt::Display for StateReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateReply::Offer => f.write_str("state answer"),
            StateReply::Unconfirmed => {
                f.write_str("the control plane answered an unsigned 304: state not confirmed fresh")
            }
            StateReply::Failed(s) => write!(f, "state endpoint answered {s}"),
        }
    }
}

/// Whether a pulled answer that [`offer`] refused calls for fetching the whole state (asking as an edge that holds
/// nothing) and offering that: a delta that does not chain onto the held generation (one was missed), or word that a
/// newer generation exists. Every edge does so, so it stays exact and live rather than failing until the next pull
/// happens to bring a snapshot. An edge that already asked as holding nothing (`since` is `None`) does not ask again.
pub fn needs_snapshot(refused: &OfferError, since: Option<u64>) -> bool {
    since.is_some() && matches!(refused, OfferError::Gap { .. } | OfferError::Behind { .. })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_state_answer() {
        assert_eq!(StateReply::of(200), StateReply::Offer);
        assert_eq!(StateReply::of(304), StateReply::Unconfirmed);
        assert_eq!(StateReply::of(204), StateReply::Unconfirmed);
        assert_eq!(StateReply::of(503), StateReply::Failed(503));
        assert_eq!(
            state_request_headers(None, None, None),
            alloc::vec![("x-sharegate-freshness", "1".into())]
        );
        assert_eq!(
            state_request_headers(Some(7), None, None),
            alloc::vec![
                ("x-sharegate-generation", "7".into()),
                ("x-sharegate-freshness", "1".into())
            ]
        );
        // Holding generation 0 (nothing revoked yet) is holding a state: the answer can be the short freshness
        // message rather than a whole snapshot.
        assert_eq!(
            state_request_headers(None, None, Some("e1")),
            alloc::vec![("x-sharegate-freshness", "1".into()), ("x-sharegate-edge", "e1".into())]
        );
        assert_eq!(
            state_request_headers(Some(0), None, None)[0],
            ("x-sharegate-generation", "0".into())
        );
        assert_eq!(
            state_request_headers(None, Some("t0k"), None),
            alloc::vec![
                ("x-sharegate-freshness", "1".into()),
                ("authorization", "Bearer t0k".into())
            ]
        );
        assert_eq!(
            events_request_headers(Some("t0k")),
            alloc::vec![
                ("content-type", "application/json".into()),
                ("authorization", "Bearer t0k".into())
            ]
        );
        assert_eq!(events_request_headers(None).len(), 1);
        let gap = OfferError::Gap { held: 3, base: 4 };
        let behind = OfferError::Behind { held: 3, current: 5 };
        assert!(needs_snapshot(&gap, Some(3)) && needs_snapshot(&behind, Some(3)));
        assert!(needs_snapshot(&gap, Some(0)));
        assert!(!needs_snapshot(&gap, None));
        assert!(!needs_snapshot(&OfferError::Older { held: 3, offered: 2 }, Some(3)));
        assert!(!needs_snapshot(&OfferError::Invalid("mac"), Some(3)));
    }
    #[test]
    fn the_refresh_schedule() {
        let s = Schedule { window_ms: 1000 };
        assert_eq!(s.fresh_ms(), 500);
        assert_eq!(Schedule { window_ms: 1 }.fresh_ms(), 1);
        assert_eq!(s.due(Some(10_000), None, 10_499), Refresh::NotYet);
        assert_eq!(s.due(Some(10_000), None, 10_500), Refresh::InBackground);
        assert_eq!(s.due(Some(10_000), None, 11_000), Refresh::BeforeDeciding);
        assert_eq!(s.due(None, None, 11_000), Refresh::BeforeDeciding);
        assert_eq!(s.due(Some(10_000), Some(10_800), 11_000), Refresh::BackingOff);
        assert_eq!(s.due(None, Some(10_500), 11_000), Refresh::BeforeDeciding);
        // A check time in the future (a clock stepped back) is not "due".
        assert_eq!(s.due(Some(20_000), None, 11_000), Refresh::NotYet);
        let h = |generation, as_of| Held {
            snapshot: Arc::from(&b""[..]),
            deltas: Vec::new(),
            generation,
            as_of,
        };
        assert!(replaces(None, &h(1, 1)));
        assert!(replaces(Some(&h(1, 5)), &h(2, 1)));
        assert!(replaces(Some(&h(1, 5)), &h(1, 6)));
        assert!(!replaces(Some(&h(1, 5)), &h(1, 5)));
        assert!(!replaces(Some(&h(2, 1)), &h(1, 9)));
    }

    use sharegate_shared::revocation::{
        DeltaParams, IssuedToken, RevokedToken, SnapshotParams, build_delta, build_freshness, build_snapshot,
    };

    const T0: u32 = 1_700_000_000;

    fn key() -> StateKey {
        StateKey::new([0x42; 32])
    }

    fn snapshot(generation: u64, built_at: u32) -> Vec<u8> {
        let p = SnapshotParams {
            generation,
            built_at,
            cutoff: T0,
            expire_before: 0,
            max_token_lifetime: 86_400,
        };
        let issued = [IssuedToken {
            id: [1; 12],
            iat: T0 - 10,
            exp: T0 + 3_600,
        }];
        build_snapshot(&p, issued, &[], &[], &key()).unwrap()
    }

    fn delta(generation: u64, built_at: u32) -> Vec<u8> {
        let p = DeltaParams {
            base_generation: generation - 1,
            generation,
            built_at,
        };
        let revoked = [RevokedToken {
            id: [u8::try_from(generation).unwrap(); 12],
            iat: T0 - 10,
            exp: T0 + 3_600,
        }];
        build_delta(&p, &revoked, &[], &key()).unwrap()
    }

    fn fresh(generation: u64, as_of: u32) -> Vec<u8> {
        build_freshness(generation, as_of, &key()).to_vec()
    }

    /// Snapshot 5 then deltas 6 and 7, all signed at T0; the edge's clock is far later.
    fn held_at_7(now: u64) -> Held {
        let k = key();
        let (h, _) = offer(None, Some(&k), &snapshot(5, T0), now).unwrap();
        let (h, _) = offer(Some(&h), Some(&k), &delta(6, T0), now).unwrap();
        let (h, o) = offer(Some(&h), Some(&k), &delta(7, T0), now).unwrap();
        assert_eq!(o, Offer::Delta(7));
        h
    }

    #[test]
    fn age_is_measured_from_the_signed_time_not_from_arrival() {
        let now = u64::from(T0) + 100;
        let h = held_at_7(now);
        assert_eq!(h.as_of, u64::from(T0));
        assert_eq!(h.age_secs(now), 100, "arrived just now, but vouched for 100 s ago");
    }

    #[test]
    fn older_generations_are_refused_and_extend_nothing() {
        let k = key();
        let now = u64::from(T0) + 100;
        let h = held_at_7(now);
        // Each replay is signed *later* than what is held: only the generation rule stands between it and freshness.
        let later = T0 + 90;
        let replays = [
            ("older snapshot", snapshot(6, later)),
            ("older snapshot than the held snapshot", snapshot(4, later)),
            ("older delta", delta(6, later)),
            ("much older delta", delta(5, later)),
            ("stale freshness message", fresh(6, later)),
        ];
        for (what, bytes) in replays {
            let got = offer(Some(&h), Some(&k), &bytes, now);
            assert!(matches!(got, Err(OfferError::Older { held: 7, .. })), "{what}: {got:?}");
            assert_eq!(got.unwrap_err().as_str(), "stale_generation");
        }
    }

    #[test]
    fn same_generation_replays_never_move_freshness_forward_beyond_what_was_signed() {
        let k = key();
        let now = u64::from(T0) + 100;
        let (h, _) = offer(Some(&held_at_7(now)), Some(&k), &fresh(7, T0 + 50), now).unwrap();
        assert_eq!(h.as_of, u64::from(T0) + 50);
        // Replays of older evidence for generation 7 (the delta, a freshness message, a snapshot of 7) leave it.
        for bytes in [delta(7, T0), fresh(7, T0 + 10), snapshot(7, T0 + 20), fresh(7, T0 + 50)] {
            let (next, o) = offer(Some(&h), Some(&k), &bytes, now).unwrap();
            assert_eq!(o, Offer::Current(7));
            assert_eq!(next.as_of, u64::from(T0) + 50);
            assert_eq!(next.deltas.len(), 2, "the layers are kept");
        }
        // Newer signed evidence for the same generation does move it.
        let (next, _) = offer(Some(&h), Some(&k), &fresh(7, T0 + 60), now).unwrap();
        assert_eq!(next.age_secs(now), 40);
    }

    #[test]
    fn a_freshness_message_for_a_newer_generation_says_behind_and_confirms_nothing() {
        let k = key();
        let now = u64::from(T0) + 100;
        let h = held_at_7(now);
        assert_eq!(
            offer(Some(&h), Some(&k), &fresh(8, T0 + 99), now).unwrap_err(),
            OfferError::Behind { held: 7, current: 8 }
        );
        assert_eq!(
            offer(None, Some(&k), &fresh(8, T0 + 99), now).unwrap_err(),
            OfferError::Behind { held: 0, current: 8 }
        );
    }

    #[test]
    fn tampered_or_foreign_freshness_messages_are_refused() {
        let k = key();
        let now = u64::from(T0) + 100;
        let h = held_at_7(now);
        let good = fresh(7, T0 + 99);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            let got = offer(Some(&h), Some(&k), &bad, now);
            assert!(matches!(got, Err(OfferError::Invalid(_))), "byte {i}: {got:?}");
        }
        let other = build_freshness(7, T0 + 99, &StateKey::new([0x43; 32]));
        assert_eq!(
            offer(Some(&h), Some(&k), &other, now).unwrap_err(),
            OfferError::Invalid("bad_mac")
        );
        assert_eq!(offer(Some(&h), None, &good, now).unwrap_err(), OfferError::NoKey);
    }

    #[test]
    fn an_as_of_from_the_future_is_capped_and_counts_as_age_zero() {
        let k = key();
        let now = u64::from(T0);
        let (h, _) = offer(None, Some(&k), &snapshot(1, T0 + 3_600), now).unwrap();
        assert_eq!(h.as_of, now + MAX_FUTURE_SKEW_SECS);
        assert_eq!(h.age_secs(now), 0);
        assert_eq!(h.age_secs(now + MAX_FUTURE_SKEW_SECS + 30), 30);
    }

    #[test]
    fn a_newer_state_keeps_the_later_signed_time() {
        let k = key();
        let now = u64::from(T0) + 100;
        let (h, _) = offer(Some(&held_at_7(now)), Some(&k), &fresh(7, T0 + 80), now).unwrap();
        // A delta built (or cached) before that confirmation still contains everything generation 7 had.
        let (h2, o) = offer(Some(&h), Some(&k), &delta(8, T0 + 70), now).unwrap();
        assert_eq!((o, h2.as_of), (Offer::Delta(8), u64::from(T0) + 80));
        let (h3, o) = offer(Some(&h2), Some(&k), &snapshot(9, T0 + 95), now).unwrap();
        assert_eq!(
            (o, h3.as_of, h3.deltas.len()),
            (Offer::Snapshot(9), u64::from(T0) + 95, 0)
        );
    }
}
