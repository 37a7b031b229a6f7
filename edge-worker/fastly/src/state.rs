//! The revocation state on Fastly: one Core Cache object per POP that every request reads and opens in place.
//!
//! Fastly starts a fresh instance for every request, so nothing survives in memory. The verified state (a snapshot
//! and the deltas after it, as the control plane sent them) lives in the POP's Core Cache under [`STATE_KEY`], with
//! two times in the object's user metadata: the signed `as_of` the control plane last vouched for it with (a
//! snapshot's or delta's `built_at`, or a freshness message's `as_of`; the engine's state age is measured from it
//! and from nothing else, so a replayed answer cannot make the state look fresh — see `sharegate_edge::held`), and
//! when this POP last got a verified answer (only the refresh schedule reads that one). Per request that costs one lookup
//! (a plain one while the object is fresh, measured cheaper than a transaction; a transactional one when it is stale
//! or missing) and one body read (a copy into the instance, unavoidable); the layers are then opened in place (O(1)
//! each, no MAC: the bytes were verified before they were inserted, and only this service writes its cache).
//!
//! Freshness is the cache's own: the object is fresh for half the refresh window, then stale-while-revalidate for
//! the state's hard age limit. The first lookup that finds it stale gets the transaction's obligation and refreshes
//! it from the control plane — after responding when the state is younger than the whole window, before deciding
//! when it is older — while every other request keeps using the stale copy without waiting. A miss (cold POP,
//! eviction) is refreshed before deciding, with concurrent requests collapsed onto that one fetch. A failed refresh
//! is not retried for half a window ([`back_off`]), so an unreachable control plane costs one viewer the backend's
//! timeout per half window, not every viewer; the engine's stale policy sees the state's true age throughout.
//!
//! The generation never goes back: a refresh builds on the cached layers (`held::offer` refuses an older snapshot
//! or a delta that does not chain), refreshes are serialised by the transaction's obligation, and a second object,
//! [`FLOOR_KEY`], keeps the highest generation this POP accepted for a week, so a cold start after an eviction
//! refuses a replayed or lagging snapshot too.

use fastly::Request;
use fastly::cache::core::{CacheKey, Found, Transaction};
use sharegate_edge::Engine;
use sharegate_edge::adapter::AdapterSettings;
pub use sharegate_edge::contract::fastly::{CONTROL_PLANE_BACKEND, STATE_SURROGATE_KEY};
use sharegate_edge::engine::{Revocations, StateInput};
use sharegate_edge::held::{self, Held, Refresh, Schedule, StateReply};
use sharegate_shared::revocation::{DeltaView, StateSet, StateView};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// Core Cache key of the state object (v2: the metadata holds the signed as-of and the check time).
pub const STATE_KEY: &[u8] = b"sharegate/state/v2";
/// Core Cache key of the generation floor.
pub const FLOOR_KEY: &[u8] = b"sharegate/state-floor/v1";
// Both objects carry the contract's STATE_SURROGATE_KEY: purging it makes every POP fetch a whole snapshot (and
// forget its floor, for the day a control plane is restored from an older backup on purpose).
/// How long the floor is remembered.
const FLOOR_TTL: Duration = Duration::from_secs(7 * 86_400);
/// Magic of the cached blob: `SGFL`, version 1.
const MAGIC: &[u8; 5] = b"SGFL\x01";

// ---------------------------------------------------------------------------------------------------------------
// The cached blob: the layers, verbatim.

/// `SGFL 1 | u8 deltas | u32 snapshot length | u32 length of each delta | snapshot | deltas`, lengths little-endian.
pub fn encode(held: &Held) -> Vec<u8> {
    let total: usize = held.snapshot.len() + held.deltas.iter().map(|d| d.len()).sum::<usize>();
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + 4 * (1 + held.deltas.len()) + total);
    out.extend_from_slice(MAGIC);
    // held::offer keeps at most MAX_DELTAS (64) deltas.
    out.push(u8::try_from(held.deltas.len()).unwrap_or(u8::MAX));
    for layer in std::iter::once(&held.snapshot).chain(&held.deltas) {
        out.extend_from_slice(&u32::try_from(layer.len()).unwrap_or(u32::MAX).to_le_bytes());
    }
    out.extend_from_slice(&held.snapshot);
    for d in &held.deltas {
        out.extend_from_slice(d);
    }
    out
}

/// The layers of a blob, borrowed: the snapshot and the deltas, oldest first.
pub fn layers(blob: &[u8]) -> Option<(&[u8], Vec<&[u8]>)> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (&n, mut rest) = rest.split_first()?;
    let mut lens = Vec::with_capacity(usize::from(n) + 1);
    for _ in 0..=n {
        let (len, r) = rest.split_first_chunk::<4>()?;
        lens.push(usize::try_from(u32::from_le_bytes(*len)).ok()?);
        rest = r;
    }
    let mut out = Vec::with_capacity(lens.len());
    for len in lens {
        let (layer, r) = rest.split_at_checked(len)?;
        out.push(layer);
        rest = r;
    }
    if !rest.is_empty() {
        return None;
    }
    let snapshot = out.remove(0);
    Some((snapshot, out))
}

/// The layers opened in place for one request (no MAC: verified before insertion). `None` if the blob is not one
/// of ours, which only a foreign writer could cause.
pub fn open(blob: &[u8]) -> Option<(StateView<'_>, Vec<DeltaView<'_>>)> {
    let (snapshot, deltas) = layers(blob)?;
    let snapshot = StateView::open(snapshot).ok()?;
    let deltas = deltas
        .into_iter()
        .map(DeltaView::open)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((snapshot, deltas))
}

/// The blob as a [`Held`] to build on (copies the layers: refreshes only, never per request).
fn held_from(blob: &[u8], as_of: u64) -> Option<Held> {
    let (snapshot, deltas) = layers(blob)?;
    let (view, dviews) = open(blob)?;
    let generation = dviews.last().map_or(view.generation(), DeltaView::generation);
    Some(Held {
        snapshot: Arc::from(snapshot),
        deltas: deltas.into_iter().map(Arc::from).collect(),
        generation,
        as_of,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Per request: the lookup.

/// The times kept beside the blob: `as_of u64 | checked_ms u64`, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    /// The signed as-of of the newest verified evidence for the cached generation (unix seconds).
    pub as_of: u64,
    /// When this POP last got a verified answer (wall-clock ms). The refresh schedule only: never freshness.
    pub checked_ms: u64,
}

impl Times {
    fn encode(self) -> bytes::Bytes {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.as_of.to_le_bytes());
        b[8..].copy_from_slice(&self.checked_ms.to_le_bytes());
        bytes::Bytes::copy_from_slice(&b)
    }

    fn decode(meta: &[u8]) -> Option<Times> {
        let (as_of, checked) = meta.split_first_chunk::<8>()?;
        Some(Times {
            as_of: u64::from_le_bytes(*as_of),
            checked_ms: u64::from_le_bytes(checked.try_into().ok()?),
        })
    }
}

/// What one request found in the cache.
pub struct Current {
    /// The blob, read out of the cache (the one copy per request).
    pub blob: Option<Vec<u8>>,
    /// Its signed as-of and when it was last checked.
    pub times: Times,
    /// Held when this request is the one that must refresh the object.
    obligation: Option<Transaction>,
}

impl Current {
    /// Nothing (no state URL configured, or the cache failed).
    pub fn none() -> Current {
        Current {
            blob: None,
            times: Times::default(),
            obligation: None,
        }
    }

    /// Whether this request must refresh the state.
    pub fn must_refresh(&self) -> bool {
        self.obligation.is_some()
    }

    /// Open the blob in place (O(1) per layer, no copy) and run `f` with the engine's state input (its age the
    /// signed one, see `StateInput::opened`) and the generation held. `now` is unix seconds.
    pub fn with_input<R>(&self, now: u64, f: impl FnOnce(StateInput<'_>, Option<u64>) -> R) -> R {
        let opened = self.blob.as_deref().and_then(open);
        let set = opened.as_ref().and_then(|(s, d)| StateSet::new(*s, d).ok());
        let state = set.as_ref().map(|s| s as &dyn Revocations);
        f(
            StateInput::opened(state, self.times.as_of, now),
            set.as_ref().map(StateSet::generation),
        )
    }
}

fn read_found(found: &Found) -> Option<(Vec<u8>, Times)> {
    let times = Times::decode(found.user_metadata().as_ref())?;
    let mut blob = Vec::with_capacity(usize::try_from(found.known_length().unwrap_or(0)).unwrap_or(0));
    found.to_stream().ok()?.read_to_end(&mut blob).ok()?;
    Some((blob, times))
}

/// Look the state up. A request that gets the obligation to refresh it carries that in the result.
pub fn lookup() -> Current {
    // The common case first: a fresh object, through a plain lookup (cheaper than a transaction).
    if let Ok(Some(found)) = fastly::cache::core::lookup(CacheKey::from_static(STATE_KEY)).execute()
        && !found.is_stale()
        && let Some((blob, times)) = read_found(&found)
    {
        return Current {
            blob: Some(blob),
            times,
            obligation: None,
        };
    }
    let tx = match Transaction::lookup(CacheKey::from_static(STATE_KEY)).execute() {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("sharegate: state cache lookup failed: {e:?}");
            return Current::none();
        }
    };
    let (blob, times) = tx.found().and_then(|f| read_found(&f)).unzip();
    Current {
        blob,
        times: times.unwrap_or_default(),
        obligation: tx.must_insert_or_update().then_some(tx),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The refresh, by the one request that holds the obligation.

/// The control plane's answer for `since`: a snapshot, a delta, or the signed freshness message when current. A
/// bare 304 (a control plane from before signed freshness) is refused: unsigned, it could be a replay, and
/// confirms nothing.
fn fetch(settings: &AdapterSettings, since: Option<u64>) -> Result<Vec<u8>, String> {
    let url = settings.state_url.as_deref().ok_or("no state URL")?;
    fetch_url(settings, url, since)
}

/// GET `url` from the control plane with the state request headers (`since`: the generation held).
pub(crate) fn fetch_url(settings: &AdapterSettings, url: &str, since: Option<u64>) -> Result<Vec<u8>, String> {
    let mut req = Request::get(url).with_pass(true);
    for (name, value) in held::state_request_headers(since, settings.edge_token.as_deref(), None) {
        req.set_header(name, value);
    }
    let mut resp = req
        .send(CONTROL_PLANE_BACKEND)
        .map_err(|e| format!("state fetch: {e}"))?;
    match StateReply::of(resp.get_status().as_u16()) {
        StateReply::Offer => Ok(resp.take_body_bytes()),
        refused => Err(refused.to_string()),
    }
}

pub(crate) fn read_floor() -> u64 {
    let found = fastly::cache::core::lookup(CacheKey::from_static(FLOOR_KEY)).execute();
    let Ok(Some(found)) = found else { return 0 };
    let mut b = Vec::with_capacity(8);
    let read = found.to_stream().ok().and_then(|mut s| s.read_to_end(&mut b).ok());
    read.and_then(|_| b.try_into().ok()).map_or(0, u64::from_le_bytes)
}

pub(crate) fn write_floor(generation: u64) -> Result<(), String> {
    let mut w = fastly::cache::core::insert(CacheKey::from_static(FLOOR_KEY), FLOOR_TTL)
        .surrogate_keys([STATE_SURROGATE_KEY])
        .known_length(8)
        .execute()
        .map_err(|e| format!("floor insert: {e:?}"))?;
    w.write_all(&generation.to_le_bytes()).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())
}

/// Cache lifetimes of the state object: fresh for half the refresh window, then usable (stale) up to the hard age
/// limit, after which it is gone and the next request fetches a whole snapshot before deciding.
pub(crate) fn lifetimes(engine: &Engine, settings: &AdapterSettings) -> (Duration, Duration) {
    let fresh = Duration::from_millis(schedule(settings).fresh_ms());
    let usable = Duration::from_secs(u64::from(engine.config().state_max_age));
    (fresh, usable)
}

/// Refresh the state this request is obliged to: ask the control plane for what follows the cached generation,
/// verify it, and write the new state (or, for the same generation, its new signed as-of) back to the cache.
/// Returns the blob and times to decide on; on failure, what was cached (see [`back_off`]).
pub fn refresh(engine: &Engine, settings: &AdapterSettings, current: Current, now_ms: u64) -> Current {
    let Current {
        blob,
        times,
        obligation,
    } = current;
    let Some(tx) = obligation else {
        return Current {
            blob,
            times,
            obligation: None,
        };
    };
    match try_refresh(engine, settings, tx, blob.as_deref(), times, now_ms) {
        Ok((blob, times)) => Current {
            blob: Some(blob),
            times,
            obligation: None,
        },
        Err(e) => {
            eprintln!("sharegate: state refresh failed: {e}");
            Current {
                blob,
                times,
                obligation: None,
            }
        }
    }
}

fn try_refresh(
    engine: &Engine,
    settings: &AdapterSettings,
    tx: Transaction,
    blob: Option<&[u8]>,
    times: Times,
    now_ms: u64,
) -> Result<(Vec<u8>, Times), String> {
    let held = blob.and_then(|b| held_from(b, times.as_of));
    let key = engine.config().state_key.as_ref();
    let since = held.as_ref().map(|h| h.generation);
    let now = now_ms / 1000;
    let result = (|| {
        let bytes = fetch(settings, since)?;
        let next = match held::offer(held.as_ref(), key, &bytes, now) {
            Ok((next, _)) => next,
            // A delta that does not chain onto ours (we missed one, or hold the most deltas), or word that a newer
            // generation exists: the whole state.
            Err(e) if held::needs_snapshot(&e, since) => {
                let full = fetch(settings, None)?;
                held::offer(held.as_ref(), key, &full, now)
                    .map_err(|e| e.to_string())?
                    .0
            }
            Err(e) => return Err(e.to_string()),
        };
        if held.is_none() {
            let floor = read_floor();
            if next.generation < floor {
                return Err(format!(
                    "stale_generation: offered {}, this POP accepted {floor}",
                    next.generation
                ));
            }
        }
        Ok(next)
    })();
    let (fresh, usable) = lifetimes(engine, settings);
    match result {
        // The same generation: the cached bytes stay, only the signed as-of (a maximum: a replay cannot move it)
        // and the check time change.
        Ok(next) if held.as_ref().is_some_and(|h| h.generation == next.generation) => {
            let blob = blob.ok_or("nothing cached")?.to_vec();
            let times = Times {
                as_of: next.as_of,
                checked_ms: now_ms,
            };
            tx.update(fresh)
                .stale_while_revalidate(usable)
                .surrogate_keys([STATE_SURROGATE_KEY])
                .user_metadata(times.encode())
                .execute()
                .map_err(|e| format!("state update: {e:?}"))?;
            Ok((blob, times))
        }
        Ok(next) => {
            let out = encode(&next);
            let times = Times {
                as_of: next.as_of,
                checked_ms: now_ms,
            };
            let mut w = tx
                .insert(fresh)
                .stale_while_revalidate(usable)
                .surrogate_keys([STATE_SURROGATE_KEY])
                .user_metadata(times.encode())
                .known_length(out.len() as u64)
                .execute()
                .map_err(|e| format!("state insert: {e:?}"))?;
            w.write_all(&out).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())?;
            if Some(next.generation) > since
                && let Err(e) = write_floor(next.generation)
            {
                eprintln!("sharegate: {e}");
            }
            Ok((out, times))
        }
        Err(e) => {
            back_off(tx, blob, times, fresh, usable);
            Err(e)
        }
    }
}

/// After a failed refresh, keep the next half window free of retries: the cached copy is made fresh again with its
/// old times (so the engine still sees its true signed age and applies the stale policy), or, with nothing cached,
/// an empty object is cached so the requests collapsed behind this one decide at once (on no state) instead of each
/// waiting for the control plane in turn.
fn back_off(tx: Transaction, blob: Option<&[u8]>, times: Times, fresh: Duration, usable: Duration) {
    let meta = times.encode();
    let done = match blob {
        Some(_) => tx
            .update(fresh)
            .stale_while_revalidate(usable)
            .surrogate_keys([STATE_SURROGATE_KEY])
            .user_metadata(meta)
            .execute()
            .is_ok(),
        None => tx
            .insert(fresh)
            .surrogate_keys([STATE_SURROGATE_KEY])
            .user_metadata(meta)
            .known_length(0)
            .execute()
            .is_ok_and(|w| w.finish().is_ok()),
    };
    if !done {
        eprintln!("sharegate: could not record the failed refresh in the cache");
    }
}

/// The state one request decides on: looked up (one body read), and refreshed first when absent or not checked for
/// the whole refresh window. Nothing without a state URL.
pub fn for_request(engine: &Engine, settings: &AdapterSettings, now_ms: u64) -> Current {
    if settings.state_url.is_none() {
        return Current::none();
    }
    let current = lookup();
    if refresh_first(&current, settings, now_ms) {
        return refresh(engine, settings, current, now_ms);
    }
    current
}

pub(crate) fn schedule(settings: &AdapterSettings) -> Schedule {
    Schedule {
        window_ms: u64::from(settings.state_refresh_ms),
    }
}

/// Whether the state should be refreshed before deciding: this request holds the obligation and the engine's
/// schedule says so (nothing cached, or not checked for the whole window; the stale policy reads the signed age).
/// The back-off after a failure is the cache's own (`back_off` keeps the object fresh), so none is passed.
pub fn refresh_first(current: &Current, settings: &AdapterSettings, now_ms: u64) -> bool {
    let checked = current.blob.is_some().then_some(current.times.checked_ms);
    current.must_refresh() && schedule(settings).due(checked, None, now_ms) == Refresh::BeforeDeciding
}

#[cfg(test)]
mod tests {
    use super::*;
    use sharegate_shared::revocation::{
        DeltaParams, IssuedToken, RevokedToken, SnapshotParams, StateKey, build_delta, build_snapshot,
    };

    fn state() -> (Vec<u8>, Vec<u8>) {
        let key = StateKey::new([7; 32]);
        let params = SnapshotParams {
            generation: 3,
            built_at: 1_000,
            cutoff: 1_001,
            expire_before: 0,
            max_token_lifetime: 86_400,
        };
        let issued = [IssuedToken {
            id: [1; 12],
            iat: 900,
            exp: 5_000,
        }];
        let snap = build_snapshot(&params, issued, &[], &[], &key).unwrap_or_default();
        let delta = build_delta(
            &DeltaParams {
                base_generation: 3,
                generation: 4,
                built_at: 1_000,
            },
            &[RevokedToken {
                id: [1; 12],
                iat: 900,
                exp: 5_000,
            }],
            &[],
            &key,
        )
        .unwrap_or_default();
        (snap, delta)
    }

    #[test]
    fn blob_round_trip_opens_in_place() {
        let (snap, delta) = state();
        let held = Held {
            snapshot: Arc::from(snap.as_slice()),
            deltas: vec![Arc::from(delta.as_slice())],
            generation: 4,
            as_of: 0,
        };
        let blob = encode(&held);
        let (s, d) = layers(&blob).expect("layers");
        assert_eq!((s, d.as_slice()), (snap.as_slice(), [delta.as_slice()].as_slice()));
        let (view, deltas) = open(&blob).expect("opens");
        assert_eq!(view.generation(), 3);
        assert_eq!(deltas[0].generation(), 4);
        // The views borrow the blob: no copy.
        assert!(std::ptr::eq(
            view.as_bytes().as_ptr(),
            blob[blob.len() - snap.len() - delta.len()..].as_ptr()
        ));
        assert_eq!(held_from(&blob, 9).map(|h| (h.generation, h.as_of)), Some((4, 9)));
    }

    /// Under Viceroy (the test runner), with the package's fastly.toml: every refresh fails, whether or not a local
    /// control plane listens behind backend `control_plane` (these settings have no edge token and no state key).
    #[test]
    fn a_cold_cache_obliges_one_request_and_a_failed_refresh_backs_off() {
        let src: &[(&str, &str)] = &[
            (
                "SHAREGATE_SIGNING_KEYS",
                "1:active:1111111111111111111111111111111111111111111111111111111111111111",
            ),
            ("SHAREGATE_ORIGIN", "http://127.0.0.1:9"),
            ("SHAREGATE_STATE_URL", "http://127.0.0.1:9/v1/edge/state"),
        ];
        let engine = Engine::new(sharegate_edge::EdgeConfig::from_source(&src).expect("config"));
        let settings = AdapterSettings::from_source(&src).expect("settings");
        let first = lookup();
        assert!(first.blob.is_none() && first.must_refresh());
        assert!(refresh_first(&first, &settings, 1_000));
        let after = refresh(&engine, &settings, first, 1_000);
        assert!(after.blob.is_none() && !after.must_refresh());
        // The failure is cached for half a window: the next requests decide at once, on no state.
        let next = lookup();
        assert_eq!(next.blob.as_deref(), Some(&[][..]));
        assert!(!next.must_refresh());
        assert!(open(&[]).is_none());
    }

    #[test]
    fn times_round_trip_and_foreign_metadata_is_not_read() {
        let t = Times {
            as_of: 1_700_000_000,
            checked_ms: 1_700_000_000_123,
        };
        assert_eq!(Times::decode(&t.encode()), Some(t));
        // The v1 object's metadata (8 bytes: an unsigned arrival time) is not taken for a signed as-of.
        assert_eq!(Times::decode(&1_700_000_000_000u64.to_le_bytes()), None);
        assert_eq!(Times::decode(&[]), None);
    }

    #[test]
    fn the_floor_round_trips() {
        assert_eq!(read_floor(), 0);
        write_floor(41).expect("written");
        assert_eq!(read_floor(), 41);
    }

    #[test]
    fn foreign_or_truncated_blobs_are_refused() {
        let (snap, _) = state();
        let held = Held {
            snapshot: Arc::from(snap.as_slice()),
            deltas: Vec::new(),
            generation: 3,
            as_of: 0,
        };
        let blob = encode(&held);
        assert!(open(&blob).is_some());
        for bad in [&blob[..blob.len() - 1], &blob[..3], b"SGFL\x02\x00".as_slice(), &[]] {
            assert!(layers(bad).is_none() || open(bad).is_none(), "{bad:?}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(layers(&longer).is_none());
    }
}
