//! Applying accepted inputs to the views and the hourly aggregates, exactly once.
//!
//! Inputs are first made durable in a log (beacons, mints and conversions in [`Log::Beacons`], edge events in
//! [`Log::Events`]); this module reads each log after its cursor, in batches, and writes one transaction per batch:
//! the views' new records (each checked unchanged since it was read), the counters' increments, the new views'
//! index entries, and the cursor (checked unchanged). A replica that crashes half-way wrote nothing, and two
//! replicas applying the same batch can't both commit it, so every input is counted once whatever crashes or races.

use super::model::{
    Beacon, Deltas, Dims, EdgeInput, HOUR, OVERFLOW, Source, ViewRecord, conversion_deltas, counter, hour_of,
};
use super::viewid::{ViewDims, parse as parse_view};
use super::{AppState, ConversionRequest};
use crate::service::error::ApiError;
use crate::store::{Check, Log, Ns, Op};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Entries read per batch: one store transaction each. Small enough that the embedded store's single writer is not
/// held long by the applier while beacons wait to be appended (their p99 under load), large enough to catch up.
pub const BATCH: usize = 128;
/// Most rows (dimension combinations) registered in one hour; later ones are counted in the overflow row.
pub const MAX_ROWS_PER_HOUR: usize = 2000;

/// The two logs applied, with their cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Beacons, mints and conversions.
    Beacons,
    /// Edge events.
    Events,
}

impl Input {
    /// The log.
    pub const fn log(self) -> Log {
        match self {
            Input::Beacons => Log::Beacons,
            Input::Events => Log::Events,
        }
    }
    /// The cursor's key in [`Ns::Analytics`]: the last seq applied.
    pub const fn cursor(self) -> &'static str {
        match self {
            Input::Beacons => "cursor/beacons",
            Input::Events => "cursor/events",
        }
    }
}

/// An entry of [`Log::Beacons`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// A verified beacon.
    Beacon {
        /// Received, unix seconds.
        at: u64,
        /// The view id's issue time.
        issued: u64,
        /// The beacon.
        beacon: Beacon,
    },
    /// A link minted.
    Mint {
        /// Unix seconds.
        at: u64,
        /// Asset.
        asset: String,
        /// Share.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        share: Option<String>,
        /// Channel.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<String>,
        /// Campaign.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        campaign: Option<String>,
        /// Viewer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        viewer: Option<String>,
        /// `<iat>-<token id hex>`: the session key of the link's token.
        token: String,
    },
    /// A conversion reported by a backend.
    Conversion {
        /// Unix seconds it happened.
        at: u64,
        /// The request.
        conversion: ConversionRequest,
    },
}

/// The fields of a stored edge event analytics reads (see `audit_events::WireEvent`).
#[derive(Debug, Deserialize)]
struct StoredEvent {
    kind: String,
    at: u64,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    asset: Option<String>,
    #[serde(default)]
    share: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    campaign: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    cid: Option<String>,
    #[serde(default)]
    ot: Option<String>,
    #[serde(default)]
    bs: Option<bool>,
    #[serde(default)]
    bl: Option<u64>,
    #[serde(default)]
    br: Option<u64>,
    #[serde(default)]
    mtp: Option<u64>,
}

/// What a viewer's latest link points at, for conversions reported by viewer.
#[derive(Debug, Serialize, Deserialize)]
struct ViewerIndex {
    key: String,
    hour: u64,
    dims: String,
}

/// One input, resolved to what it changes.
enum Work {
    /// Changes a view (created if absent with `hour`, `dims`, `source`).
    View {
        key: String,
        hour: u64,
        dims: Dims,
        source: Source,
        change: Change,
    },
    /// Adds to a row directly.
    Row { hour: u64, dims: Dims, deltas: Deltas },
    /// Points a viewer at a session.
    Viewer {
        viewer: String,
        index: ViewerIndex,
        hour: u64,
        dims: Dims,
    },
    /// Nothing to do (an event analytics doesn't use, or unreadable).
    Skip,
}

enum Change {
    Beacon(Box<Beacon>, u64),
    Edge(EdgeInput),
    Conversion(String),
}

/// The session key of a token (`<iat>-<id hex>`), and its hour, if well formed.
fn token_session(token: &str, at: u64) -> Option<(String, u64)> {
    let (iat, id) = token.split_once('-')?;
    let iat: u64 = iat.parse().ok()?;
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    // A token's iat is signed, but bound it anyway: the hour must be one the retention sweep will reach.
    let hour = if iat <= at + 3600 && at.saturating_sub(iat) <= 7 * 86_400 {
        hour_of(iat)
    } else {
        hour_of(at)
    };
    Some((format!("t/{iat}-{}", id.to_ascii_lowercase()), hour))
}

fn edge_work(s: &AppState, e: StoredEvent) -> Work {
    if !matches!(e.kind.as_str(), "playlist_open" | "segment" | "deny" | "expiry") {
        return Work::Skip;
    }
    let dims = Dims::of(
        e.asset.as_deref(),
        e.share.as_deref(),
        e.channel.as_deref(),
        e.campaign.as_deref(),
    );
    let input = EdgeInput {
        kind: e.kind.clone(),
        reason: e.reason.clone(),
        cmcd: e.sid.is_some()
            || e.cid.is_some()
            || e.ot.is_some()
            || e.bs.is_some()
            || e.bl.is_some()
            || e.br.is_some()
            || e.mtp.is_some(),
        bs: e.bs == Some(true),
    };
    // Our player's CMCD session id is its view id: verified against the token's own attribution, it joins the
    // edge's events to the page's beacons. Anything else in `sid` is a client's choice and keys nothing.
    if let Some(sid) = &e.sid {
        let d = ViewDims {
            share: e.share.as_deref().unwrap_or(""),
            asset: e.asset.as_deref().unwrap_or(""),
            channel: e.channel.as_deref().unwrap_or(""),
            campaign: e.campaign.as_deref().unwrap_or(""),
        };
        if let Ok(issued) = s.analytics.view_key.verify(sid, &d, e.at) {
            return Work::View {
                key: format!("v/{sid}"),
                hour: hour_of(issued),
                dims,
                source: Source::Player,
                change: Change::Edge(input),
            };
        }
    }
    match e.token.as_deref().and_then(|t| token_session(t, e.at)) {
        Some((key, hour)) => Work::View {
            key,
            hour,
            dims,
            source: Source::Edge,
            change: Change::Edge(input),
        },
        None => Work::Skip,
    }
}

async fn beacon_work(s: &AppState, entry: Entry) -> Result<Work, ApiError> {
    Ok(match entry {
        Entry::Beacon { issued, beacon, .. } => Work::View {
            key: format!("v/{}", beacon.view),
            hour: hour_of(issued),
            dims: Dims::of(
                Some(&beacon.asset),
                Some(&beacon.share),
                beacon.channel.as_deref(),
                beacon.campaign.as_deref(),
            ),
            source: Source::Player,
            change: Change::Beacon(Box::new(beacon), issued),
        },
        Entry::Mint {
            at,
            asset,
            share,
            channel,
            campaign,
            viewer,
            token,
        } => {
            let dims = Dims::of(Some(&asset), share.as_deref(), channel.as_deref(), campaign.as_deref());
            match (viewer, token_session(&token, at)) {
                (Some(viewer), Some((key, hour))) => Work::Viewer {
                    viewer,
                    index: ViewerIndex {
                        key,
                        hour,
                        dims: String::new(),
                    },
                    hour: hour_of(at),
                    dims,
                },
                _ => Work::Row {
                    hour: hour_of(at),
                    dims,
                    deltas: Deltas::from([("minted".to_string(), 1)]),
                },
            }
        }
        Entry::Conversion { at, conversion: c } => conversion_work(s, at, c).await?,
    })
}

async fn conversion_work(s: &AppState, at: u64, c: ConversionRequest) -> Result<Work, ApiError> {
    let kind = c.kind.clone();
    if let Some(view) = c.view.as_deref()
        && parse_view(view).is_some()
    {
        let key = format!("v/{view}");
        if s.store.get(Ns::Views, &key).await?.is_some() {
            return Ok(Work::View {
                key,
                hour: hour_of(at),
                dims: Dims::overflow(),
                source: Source::Player,
                change: Change::Conversion(kind),
            });
        }
    }
    if let Some(viewer) = c.viewer.as_deref()
        && let Some(raw) = s.store.get(Ns::Analytics, &format!("viewer/{viewer}")).await?
        && let Ok(ix) = serde_json::from_slice::<ViewerIndex>(&raw)
    {
        if s.store.get(Ns::Views, &ix.key).await?.is_some() {
            return Ok(Work::View {
                key: ix.key,
                hour: ix.hour,
                dims: Dims::overflow(),
                source: Source::Edge,
                change: Change::Conversion(kind),
            });
        }
        if let Some(dims) = Dims::parse(&ix.dims) {
            return Ok(Work::Row {
                hour: hour_of(at),
                dims,
                deltas: conversion_deltas(&kind),
            });
        }
    }
    let dims = match c.share.as_deref() {
        Some(share) => match load_share(s, share).await? {
            Some(rec) => Dims::of(
                Some(&rec.asset),
                Some(share),
                rec.channel.as_deref().or(c.channel.as_deref()),
                rec.campaign.as_deref().or(c.campaign.as_deref()),
            ),
            None => Dims::of(None, Some(share), c.channel.as_deref(), c.campaign.as_deref()),
        },
        None => Dims::of(None, None, c.channel.as_deref(), c.campaign.as_deref()),
    };
    Ok(Work::Row {
        hour: hour_of(at),
        dims,
        deltas: conversion_deltas(&kind),
    })
}

async fn load_share(s: &AppState, id: &str) -> Result<Option<crate::service::shares::ShareRecord>, ApiError> {
    if id.len() > 64 {
        return Ok(None);
    }
    Ok(s.store
        .get(Ns::Shares, id)
        .await?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Register rows of these hours, at most [`MAX_ROWS_PER_HOUR`] per hour (the rest → the overflow row, which is
/// always allowed); the row each asked one is counted in. Registration is its own small transaction per hour,
/// checked unchanged: a row registered by a batch that then fails to commit is harmless (an empty row).
async fn register_rows(
    s: &AppState,
    wanted: &BTreeMap<u64, Vec<String>>,
) -> Result<HashMap<(u64, String), String>, ApiError> {
    let mut out = HashMap::new();
    let overflow = Dims::overflow().key();
    for (hour, keys) in wanted {
        let reg_key = format!("rows/{hour}");
        let mut mapping = None;
        for _ in 0..16 {
            let current = s.store.get(Ns::Analytics, &reg_key).await?;
            let text = current
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            let mut set: std::collections::BTreeSet<String> =
                text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
            let mut m = HashMap::new();
            let mut changed = false;
            for k in keys {
                if set.contains(k) {
                    m.insert(k.clone(), k.clone());
                } else if set.len() < MAX_ROWS_PER_HOUR || *k == overflow {
                    set.insert(k.clone());
                    changed = true;
                    m.insert(k.clone(), k.clone());
                } else {
                    if set.insert(overflow.clone()) {
                        changed = true;
                    }
                    m.insert(k.clone(), overflow.clone());
                }
            }
            if !changed {
                mapping = Some(m);
                break;
            }
            let new: Vec<&str> = set.iter().map(String::as_str).collect();
            let new = new.join("\n");
            if s.store
                .cas(Ns::Analytics, &reg_key, current.as_deref(), Some(new.as_bytes()))
                .await?
            {
                mapping = Some(m);
                break;
            }
        }
        let m = mapping.ok_or_else(|| {
            ApiError::Store(crate::store::StoreError::Contention(
                "analytics row registry kept changing".into(),
            ))
        })?;
        for (k, v) in m {
            out.insert((*hour, k), v);
        }
    }
    Ok(out)
}

/// The rows of an hour.
pub async fn rows_of(s: &AppState, hours: &[u64]) -> Result<Vec<(u64, Vec<String>)>, ApiError> {
    let keys: Vec<String> = hours.iter().map(|h| format!("rows/{h}")).collect();
    let vals = s.store.get_many(Ns::Analytics, &keys).await?;
    Ok(hours
        .iter()
        .zip(vals)
        .map(|(h, v)| {
            let rows = v
                .map(|v| {
                    String::from_utf8_lossy(&v)
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            (*h, rows)
        })
        .collect())
}

fn add(into: &mut BTreeMap<String, u64>, hour: u64, dims: &str, deltas: Deltas) {
    for (m, by) in deltas {
        *into.entry(counter(hour, dims, &m)).or_default() += by;
    }
    let _ = OVERFLOW;
}

/// Apply one batch of `input`; the number of entries applied (0: nothing new, or another replica got there first).
pub async fn apply_batch(s: &AppState, input: Input) -> Result<usize, ApiError> {
    let cursor_raw = s.store.get(Ns::Analytics, input.cursor()).await?;
    let cursor: u64 = cursor_raw
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let entries = s.store.read_log(input.log(), cursor + 1, BATCH).await?;
    let Some(&(last, _)) = entries.last() else {
        return Ok(0);
    };
    let now = s.now();
    let mut work = Vec::with_capacity(entries.len());
    for (_, raw) in &entries {
        work.push(match input {
            Input::Events => match serde_json::from_slice::<StoredEvent>(raw) {
                Ok(e) => edge_work(s, e),
                Err(_) => Work::Skip,
            },
            Input::Beacons => match serde_json::from_slice::<Entry>(raw) {
                Ok(e) => beacon_work(s, e).await?,
                Err(_) => Work::Skip,
            },
        });
    }

    // The views this batch touches, as stored.
    let mut view_keys: Vec<String> = Vec::new();
    for w in &work {
        if let Work::View { key, .. } = w
            && !view_keys.contains(key)
        {
            view_keys.push(key.clone());
        }
    }
    let stored = s.store.get_many(Ns::Views, &view_keys).await?;
    let mut views: HashMap<String, (Option<Vec<u8>>, Option<ViewRecord>)> = HashMap::new();
    for (k, v) in view_keys.iter().zip(stored) {
        let rec = v.as_deref().and_then(|b| serde_json::from_slice::<ViewRecord>(b).ok());
        views.insert(k.clone(), (v, rec));
    }

    // Rows of new views and direct row inputs.
    let mut wanted: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for w in &work {
        match w {
            Work::View { key, hour, dims, .. } if views.get(key).is_some_and(|(_, r)| r.is_none()) => {
                wanted.entry(*hour).or_default().push(dims.key());
            }
            Work::Row { hour, dims, .. } | Work::Viewer { hour, dims, .. } => {
                wanted.entry(*hour).or_default().push(dims.key());
            }
            _ => {}
        }
    }
    let rows = register_rows(s, &wanted).await?;
    let row = |hour: u64, dims: &Dims| rows.get(&(hour, dims.key())).cloned().unwrap_or_else(|| dims.key());

    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    let mut qoe = super::qoe::Batch::default();
    let mut created: Vec<String> = Vec::new();
    let mut viewers: Vec<(String, Vec<u8>)> = Vec::new();
    for w in work {
        match w {
            Work::Skip => {}
            Work::Row { hour, dims, deltas } => {
                let r = row(hour, &dims);
                qoe.add(&r, &deltas);
                add(&mut counters, hour, &r, deltas);
            }
            Work::Viewer {
                viewer,
                mut index,
                hour,
                dims,
            } => {
                let r = row(hour, &dims);
                let deltas = Deltas::from([("minted".to_string(), 1)]);
                qoe.add(&r, &deltas);
                add(&mut counters, hour, &r, deltas);
                index.dims = r;
                if viewer.len() <= 256
                    && let Ok(v) = serde_json::to_vec(&index)
                {
                    viewers.push((format!("viewer/{viewer}"), v));
                }
            }
            Work::View {
                key,
                hour,
                dims,
                source,
                change,
            } => {
                let Some((_, rec)) = views.get_mut(&key) else { continue };
                let rec = match rec {
                    Some(r) => r,
                    None => {
                        // A conversion can't create a view (it names one that exists); it was checked above.
                        if matches!(change, Change::Conversion(_)) {
                            continue;
                        }
                        created.push(format!("{hour} {key}"));
                        rec.insert(ViewRecord {
                            hour,
                            dims: row(hour, &dims),
                            source,
                            ..ViewRecord::default()
                        })
                    }
                };
                let deltas = match change {
                    Change::Beacon(b, issued) => rec.apply_beacon(&b, issued, now),
                    Change::Edge(e) => rec.apply_edge(&e, now),
                    Change::Conversion(kind) => rec.apply_conversion(&kind, now),
                };
                qoe.add(&rec.dims, &deltas);
                add(&mut counters, rec.hour, &rec.dims.clone(), deltas);
            }
        }
    }
    let qoe_counters = qoe.counters(s).await?;
    for (k, v) in qoe_counters {
        *counters.entry(k).or_default() += v;
    }

    // One transaction: cursor and views unchanged since read, then everything.
    let new_cursor = last.to_string();
    let encoded: Vec<(String, Vec<u8>)> = views
        .iter()
        .filter_map(|(k, (_, r))| {
            r.as_ref()
                .and_then(|r| serde_json::to_vec(r).ok())
                .map(|v| (k.clone(), v))
        })
        .collect();
    let mut checks = vec![match cursor_raw.as_deref() {
        Some(v) => Check::Equals {
            ns: Ns::Analytics,
            key: input.cursor(),
            value: v,
        },
        None => Check::Absent {
            ns: Ns::Analytics,
            key: input.cursor(),
        },
    }];
    for (k, (old, _)) in &views {
        checks.push(match old.as_deref() {
            Some(v) => Check::Equals {
                ns: Ns::Views,
                key: k,
                value: v,
            },
            None => Check::Absent { ns: Ns::Views, key: k },
        });
    }
    let mut ops: Vec<Op<'_>> = Vec::with_capacity(encoded.len() + counters.len() + created.len() + 2);
    for (k, v) in &encoded {
        ops.push(Op::Put {
            ns: Ns::Views,
            key: k,
            value: v,
        });
    }
    for (k, v) in &viewers {
        ops.push(Op::Put {
            ns: Ns::Analytics,
            key: k,
            value: v,
        });
    }
    for (c, by) in &counters {
        ops.push(Op::Incr { counter: c, by: *by });
    }
    for c in &created {
        ops.push(Op::Append {
            log: Log::ViewIndex,
            value: c.as_bytes(),
        });
    }
    ops.push(Op::Put {
        ns: Ns::Analytics,
        key: input.cursor(),
        value: new_cursor.as_bytes(),
    });
    match s.store.atomic(&checks, &ops).await? {
        Some(_) => Ok(entries.len()),
        None => Ok(0),
    }
}

/// Apply what is pending in both logs, at most `max_batches` batches each; entries applied.
pub async fn apply_pending(s: &AppState, max_batches: usize) -> Result<usize, ApiError> {
    let mut total = 0;
    for input in [Input::Beacons, Input::Events] {
        for _ in 0..max_batches {
            let n = apply_batch(s, input).await?;
            total += n;
            if n == 0 {
                // Nothing new, or another replica committed this batch: look once more in case it was the latter.
                if s.store.last_seq(input.log()).await? <= cursor_of(s, input).await? {
                    break;
                }
            }
        }
    }
    Ok(total)
}

/// The last seq applied of a log.
pub async fn cursor_of(s: &AppState, input: Input) -> Result<u64, ApiError> {
    Ok(s.store
        .get(Ns::Analytics, input.cursor())
        .await?
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Hours from `from` to `to` (both hour-aligned, `to` exclusive).
pub fn hours(from: u64, to: u64) -> Vec<u64> {
    (0..).map(|i| from + i * HOUR).take_while(|h| *h < to).collect()
}
