//! The revocation state by shards (`SHAREGATE_STATE_SHARDS=true`): per request, two small Core Cache reads whatever
//! the number of revoked tokens, instead of one read of the whole state.
//!
//! The control plane publishes the state split by token-id prefix (`GET <state URL>/head`, `GET <state
//! URL>/shard/<bits>/<index>`; format in `docs/revocation.md`, "Sharded state"). The POP's Core Cache holds:
//! - the **head** under [`HEAD_KEY`], verbatim (verified when it arrived), with its signed `as_of`, the check time and
//!   the length of its prefix in the user metadata. A request reads the prefix (generation, bits, watermarks) and,
//!   once the token is verified, the one 8-byte version of its bucket, both by byte range: the versions, which grow
//!   with the state, are never read whole. The head is refreshed exactly like the whole state (`state.rs`): fresh for
//!   half a window, then stale-while-revalidate, the obligation to one request, a signed freshness message moving
//!   only the as-of (a maximum), an older head refused, the POP's generation floor kept;
//! - each **shard** under `sharegate/shard/v1/<bits>/<index>/<version>`: immutable for that version, so a new
//!   generation makes only the changed bucket's object new. Read when the engine asks about a verified token
//!   ([`Lazy`]); when absent (a cold POP, an eviction, a new version) it is fetched from the control plane, verified
//!   (MAC, bucket, and a version at least the head's) and inserted, before deciding.
//!
//! No answer without the exact data: when the shard cannot be had (the control plane unreachable, or it answers an
//! older shard than the head needs), the request is decided again **with no state**, so the engine's stale policy
//! decides (`fail_closed`: 503) — never "not revoked". The state's age is the head's signed as-of, as before.

use crate::state::{self, FLOOR_KEY};
use fastly::cache::core::{self, CacheKey, Found, Transaction};
use sharegate_edge::Engine;
use sharegate_edge::adapter::AdapterSettings;
use sharegate_edge::contract::fastly::STATE_SURROGATE_KEY;
use sharegate_edge::engine::Revocations;
use sharegate_edge::held::{MAX_FUTURE_SKEW_SECS, Refresh};
use sharegate_shared::revocation::{
    FRESHNESS_MAGIC, HEAD_MAGIC, HeadPrefix, HeadView, Revoked, ShardView, Sharded, StateKey, Subject, verify_freshness,
};
use std::cell::Cell;
use std::io::{Read, Write};
use std::time::Duration;

/// Core Cache key of the head.
pub const HEAD_KEY: &[u8] = b"sharegate/head/v1";
/// How long a shard object is kept (it never changes for its version).
const SHARD_TTL: Duration = Duration::from_secs(86_400);
// The floor is the whole-state mode's (same generations).
const _: &[u8] = FLOOR_KEY;

/// The head object's metadata: `as_of u64 | checked_ms u64 | prefix_len u64`, little-endian.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The signed as-of of the newest verified evidence for the cached generation (unix seconds).
    pub as_of: u64,
    /// When this POP last got a verified answer (ms); the refresh schedule only.
    pub checked_ms: u64,
    /// Bytes of the head before its versions.
    pub prefix_len: u64,
}

impl Meta {
    fn encode(self) -> bytes::Bytes {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.as_of.to_le_bytes());
        b[8..16].copy_from_slice(&self.checked_ms.to_le_bytes());
        b[16..].copy_from_slice(&self.prefix_len.to_le_bytes());
        bytes::Bytes::copy_from_slice(&b)
    }

    fn decode(m: &[u8]) -> Option<Meta> {
        let m: &[u8; 24] = m.try_into().ok()?;
        let at = |i: usize| m[i..i + 8].try_into().ok().map(u64::from_le_bytes);
        Some(Meta {
            as_of: at(0)?,
            checked_ms: at(8)?,
            prefix_len: at(16)?,
        })
    }
}

/// What one request found: the head object (kept to read one version later), its prefix, its metadata.
pub struct Current {
    found: Option<Found>,
    prefix: Option<Vec<u8>>,
    /// The head's metadata.
    pub meta: Meta,
    obligation: Option<Transaction>,
}

fn read_range(found: &Found, from: u64, len: u64) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    // Exactly `len` bytes: `read_exact` asks no further read to find the end (each read is a hostcall).
    let mut out = vec![0u8; usize::try_from(len).ok()?];
    found
        .to_stream_from_range(Some(from), Some(from + len - 1))
        .ok()?
        .read_exact(&mut out)
        .ok()?;
    Some(out)
}

fn read_head(found: Found) -> Option<(Found, Vec<u8>, Meta)> {
    let meta = Meta::decode(&found.user_metadata())?;
    let prefix = read_range(&found, 0, meta.prefix_len)?;
    Some((found, prefix, meta))
}

impl Current {
    fn none() -> Current {
        Current {
            found: None,
            prefix: None,
            meta: Meta::default(),
            obligation: None,
        }
    }

    /// Whether this request must refresh the head.
    pub fn must_refresh(&self) -> bool {
        self.obligation.is_some()
    }

    /// The head's prefix, opened (no MAC: verified before insertion).
    pub fn prefix(&self) -> Option<HeadPrefix<'_>> {
        HeadPrefix::open(self.prefix.as_deref()?).ok()
    }

    /// The state the engine asks, reading the token's shard when asked ([`Lazy`]).
    pub fn lazy<'c>(&'c self, engine: &'c Engine, settings: &'c AdapterSettings) -> Option<Lazy<'c>> {
        Some(Lazy {
            head: self.prefix()?,
            found: self.found.as_ref()?,
            prefix_len: self.meta.prefix_len,
            key: engine.config().state_key.as_ref()?,
            settings,
            unavailable: Cell::new(false),
            spent: Cell::new(Duration::ZERO),
        })
    }
}

/// Look the head up (a plain lookup while fresh, else a transaction that may carry the obligation to refresh).
pub fn lookup() -> Current {
    if let Ok(Some(found)) = core::lookup(CacheKey::from_static(HEAD_KEY)).execute()
        && !found.is_stale()
        && let Some((found, prefix, meta)) = read_head(found)
    {
        return Current {
            found: Some(found),
            prefix: Some(prefix),
            meta,
            obligation: None,
        };
    }
    let tx = match Transaction::lookup(CacheKey::from_static(HEAD_KEY)).execute() {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("sharegate: head cache lookup failed: {e:?}");
            return Current::none();
        }
    };
    let read = tx.found().and_then(read_head);
    let obligation = tx.must_insert_or_update().then_some(tx);
    match read {
        Some((found, prefix, meta)) => Current {
            found: Some(found),
            prefix: Some(prefix),
            meta,
            obligation,
        },
        None => Current {
            obligation,
            ..Current::none()
        },
    }
}

/// The head one request decides on: looked up, refreshed first when absent or not checked for the whole window.
pub fn for_request(engine: &Engine, settings: &AdapterSettings, now_ms: u64) -> Current {
    if settings.state_url.is_none() {
        return Current::none();
    }
    let current = lookup();
    let checked = current.prefix.is_some().then_some(current.meta.checked_ms);
    if current.must_refresh() && state::schedule(settings).due(checked, None, now_ms) == Refresh::BeforeDeciding {
        return refresh(engine, settings, current, now_ms);
    }
    current
}

/// The engine's state for one request: the head, and the token's shard, read (or fetched) when the engine asks
/// about a verified token. When the exact answer cannot be had it answers "revoked" and records it
/// ([`Lazy::unavailable`]): the caller must then decide again with no state.
pub struct Lazy<'c> {
    head: HeadPrefix<'c>,
    found: &'c Found,
    prefix_len: u64,
    key: &'c StateKey,
    settings: &'c AdapterSettings,
    unavailable: Cell<bool>,
    /// Time spent reading the shard (bench builds: `bench-timing`).
    spent: Cell<Duration>,
}

impl Lazy<'_> {
    /// Time spent reading (or fetching) the shard; zero unless built with `bench-timing`.
    pub fn spent(&self) -> Duration {
        self.spent.get()
    }

    /// Whether an answer was asked for and could not be had exactly (the decision made with it must be dropped).
    pub fn unavailable(&self) -> bool {
        self.unavailable.get()
    }

    fn answer(&self, s: &Subject<'_>) -> Result<Revoked, String> {
        let i = self.head.bucket_of(s.token_id);
        let at = self.prefix_len + 8 * u64::from(i);
        let version = read_range(self.found, at, 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or("head version unreadable")?;
        let bytes = shard(self.settings, self.key, self.head.bits(), i, version)?;
        let shard = ShardView::open(&bytes).map_err(|e| e.to_string())?;
        Sharded {
            head: self.head,
            version,
            shard: Some(shard),
        }
        .check(s)
        .map_err(|e| e.to_string())
    }
}

impl Revocations for Lazy<'_> {
    fn check(&self, s: &Subject<'_>) -> Revoked {
        #[cfg(feature = "bench-timing")]
        let start = std::time::Instant::now();
        let answer = self.answer(s);
        #[cfg(feature = "bench-timing")]
        self.spent.set(self.spent.get() + start.elapsed());
        match answer {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sharegate: no exact revocation answer: {e}");
                self.unavailable.set(true);
                // Never "not revoked" without the data; the caller decides again with no state.
                Revoked::Token
            }
        }
    }
}

fn shard_key(bits: u8, i: u32, version: u64) -> CacheKey {
    CacheKey::from(format!("sharegate/shard/v1/{bits}/{i}/{version}"))
}

/// The shard of bucket `i` for a head at `version`: from the cache, or fetched, verified and inserted.
fn shard(settings: &AdapterSettings, key: &StateKey, bits: u8, i: u32, version: u64) -> Result<Vec<u8>, String> {
    if let Ok(Some(found)) = core::lookup(shard_key(bits, i, version)).execute()
        && let Some(b) = found.known_length().and_then(|n| read_range(&found, 0, n))
    {
        return Ok(b);
    }
    let url = settings.state_url.as_deref().ok_or("no state URL")?;
    let bytes = state::fetch_url(settings, &format!("{url}/shard/{bits}/{i}"), None)?;
    let view = ShardView::open_verified(&bytes, key).map_err(|e| e.to_string())?;
    Sharded::usable(bits, version, &view, i).map_err(|e| e.to_string())?;
    // Kept under the head's version: a newer shard holds every revocation that one did.
    let inserted = core::insert(shard_key(bits, i, version), SHARD_TTL)
        .surrogate_keys([STATE_SURROGATE_KEY])
        .known_length(bytes.len() as u64)
        .execute()
        .map_err(|e| format!("{e:?}"))
        .and_then(|mut w| {
            w.write_all(&bytes).map_err(|e| e.to_string())?;
            w.finish().map_err(|e| e.to_string())
        });
    if let Err(e) = inserted {
        eprintln!("sharegate: shard insert failed: {e}");
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------------------------
// The refresh, by the one request that holds the obligation.

/// Refresh the head this request is obliged to; returns what to decide on (on failure, what was cached).
pub fn refresh(engine: &Engine, settings: &AdapterSettings, current: Current, now_ms: u64) -> Current {
    let Current {
        found,
        prefix,
        meta,
        obligation,
    } = current;
    let Some(tx) = obligation else {
        return Current {
            found,
            prefix,
            meta,
            obligation: None,
        };
    };
    let held = prefix
        .as_deref()
        .and_then(|p| HeadPrefix::open(p).ok())
        .map(|p| p.generation());
    let (fresh, usable) = state::lifetimes(engine, settings);
    match try_refresh(engine, settings, held, meta, now_ms) {
        Ok(Next::Same(as_of)) => {
            let meta = Meta {
                as_of: as_of.max(meta.as_of),
                checked_ms: now_ms,
                ..meta
            };
            let done = tx
                .update(fresh)
                .stale_while_revalidate(usable)
                .surrogate_keys([STATE_SURROGATE_KEY])
                .user_metadata(meta.encode())
                .execute();
            if let Err(e) = done {
                eprintln!("sharegate: head update: {e:?}");
            }
            Current {
                found,
                prefix,
                meta,
                obligation: None,
            }
        }
        Ok(Next::Head(bytes, generation, as_of, prefix_len)) => {
            let meta = Meta {
                as_of,
                checked_ms: now_ms,
                prefix_len,
            };
            let written = tx
                .insert(fresh)
                .stale_while_revalidate(usable)
                .surrogate_keys([STATE_SURROGATE_KEY])
                .user_metadata(meta.encode())
                .known_length(bytes.len() as u64)
                .execute_and_stream_back()
                .map_err(|e| format!("{e:?}"))
                .and_then(|(mut w, found)| {
                    w.write_all(&bytes).map_err(|e| e.to_string())?;
                    w.finish().map_err(|e| e.to_string())?;
                    Ok(found)
                });
            if held.is_none_or(|h| generation > h)
                && let Err(e) = state::write_floor(generation)
            {
                eprintln!("sharegate: {e}");
            }
            let prefix = bytes
                .get(..usize::try_from(prefix_len).unwrap_or(usize::MAX))
                .map(<[u8]>::to_vec);
            match written {
                Ok(found) => Current {
                    found: Some(found),
                    prefix,
                    meta,
                    obligation: None,
                },
                Err(e) => {
                    eprintln!("sharegate: head insert: {e}");
                    Current::none()
                }
            }
        }
        Err(e) => {
            eprintln!("sharegate: head refresh failed: {e}");
            // Back off for half a window, as the whole state does: the cached head made fresh again with its old
            // times (its true signed age still applies), or an empty object when nothing was cached.
            let done = if prefix.is_some() {
                tx.update(fresh)
                    .stale_while_revalidate(usable)
                    .surrogate_keys([STATE_SURROGATE_KEY])
                    .user_metadata(meta.encode())
                    .execute()
                    .is_ok()
            } else {
                tx.insert(fresh)
                    .surrogate_keys([STATE_SURROGATE_KEY])
                    .known_length(0)
                    .execute()
                    .is_ok_and(|w| w.finish().is_ok())
            };
            if !done {
                eprintln!("sharegate: could not record the failed refresh in the cache");
            }
            Current {
                found,
                prefix,
                meta,
                obligation: None,
            }
        }
    }
}

enum Next {
    /// The held generation, vouched for as of this (signed) time.
    Same(u64),
    /// A newer head: its bytes, generation, signed as-of and prefix length.
    Head(Vec<u8>, u64, u64, u64),
}

fn try_refresh(
    engine: &Engine,
    settings: &AdapterSettings,
    held: Option<u64>,
    meta: Meta,
    now_ms: u64,
) -> Result<Next, String> {
    let key = engine.config().state_key.as_ref().ok_or("no state key")?;
    let url = settings.state_url.as_deref().ok_or("no state URL")?;
    let url = format!("{url}/head");
    let believed = |as_of: u32| u64::from(as_of).min((now_ms / 1000).saturating_add(MAX_FUTURE_SKEW_SECS));
    let mut bytes = state::fetch_url(settings, &url, held)?;
    if bytes.starts_with(FRESHNESS_MAGIC) {
        let f = verify_freshness(&bytes, key).map_err(|e| e.to_string())?;
        match held {
            // The held generation, vouched for again: only the as-of moves (a maximum: a replay cannot move it on).
            Some(h) if f.generation == h => return Ok(Next::Same(believed(f.as_of).max(meta.as_of))),
            Some(h) if f.generation < h => return Err(format!("stale_generation: offered {}, held {h}", f.generation)),
            // Behind: the whole head.
            _ => bytes = state::fetch_url(settings, &url, None)?,
        }
    }
    if !bytes.starts_with(HEAD_MAGIC) {
        return Err("not a head".into());
    }
    let head = HeadView::open_verified(&bytes, key).map_err(|e| e.to_string())?;
    let generation = head.generation();
    let floor = if held.is_none() { state::read_floor() } else { 0 };
    match held {
        Some(h) if generation < h => Err(format!("stale_generation: offered {generation}, held {h}")),
        Some(h) if generation == h => Ok(Next::Same(believed(head.as_of()).max(meta.as_of))),
        _ if generation < floor => Err(format!(
            "stale_generation: offered {generation}, this POP accepted {floor}"
        )),
        _ => {
            let prefix_len = head.prefix_len() as u64;
            let as_of = believed(head.as_of());
            Ok(Next::Head(bytes, generation, as_of, prefix_len))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_the_whole_state_metadata_is_not_taken_for_it() {
        let m = Meta {
            as_of: 1_700_000_000,
            checked_ms: 1_700_000_000_123,
            prefix_len: 64,
        };
        assert_eq!(Meta::decode(&m.encode()), Some(m));
        assert_eq!(Meta::decode(&[0; 16]), None);
        assert_eq!(Meta::decode(&[]), None);
    }
}
