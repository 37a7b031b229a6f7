//! The audit query, edge event ingestion and the Prometheus metrics endpoint.
//!
//! - `GET /v1/audit` (roles `auditor`, `admin`): filters the hash-chained audit log and verifies the whole chain on
//!   every call, so a modified, removed or reordered entry shows as `"chain": "broken_at_seq_N"`. Entries dropped from
//!   the end can't be seen from the log alone: compare `head`/`length` with a value recorded elsewhere.
//! - `POST /v1/edge/events` (edge credential): takes the edges' event batches (`{"edge","dropped","events":[…]}`,
//!   at most [`MAX_EVENTS_BODY`] bytes), appends each event to the events log and bumps the per-label counters, all in
//!   one store transaction so a batch the edge retries is never half counted. The log keeps the newest
//!   [`MAX_EVENTS_KEPT`] events.
//! - `GET /metrics`: Prometheus text. `sharegate_edge_events_total`, `sharegate_edge_events_dropped_total` and
//!   `sharegate_edge_events_folded_total` come from the store's counters, so every replica reports the same
//!   (cluster-wide) values: aggregate them with `max`, not `sum`. `sharegate_http_request_duration_seconds` is this
//!   replica's own, recorded by [`track_http`].
//!
//! Metrics need an `auditor` or `admin` API key by default (Prometheus sends it with `authorization:
//! credentials_file`): event labels name assets, channels and campaigns, which are not public. A deployment that
//! scrapes over a private network can serve them without a key with [`routes_with`]`(`[`MetricsAccess::Public`]`)`.
//!
//! **Bounded whatever arrives.** An edge credential is not trusted to choose series: a compromised or buggy edge
//! (or an edge that labels what anonymous viewers send) must not be able to grow `/metrics` or the store without
//! bound. So each label is decided here, not taken from the event:
//! - `kind` is one of the edge's event kinds and `reason` one of its reason codes, else `_unknown`;
//! - `asset` is a registered asset (looked up in the catalogue, at most [`MAX_ASSET_LOOKUPS`] new ones per batch),
//!   else `_unknown` (also when the event names none: the edge attributes only what a valid token says);
//! - `channel` and `campaign` are cut to [`MAX_LABEL_LEN`] bytes of `[A-Za-z0-9_./~-]` (anything else becomes `_`,
//!   so nothing can inject exposition syntax or a counter-name separator), and at most [`MAX_CHANNELS`] and
//!   [`MAX_CAMPAIGNS`] distinct values are kept; later ones are `_overflow`;
//! - past [`MAX_SERIES`] series a new combination is counted in `{kind, reason, asset="_overflow",
//!   channel="_overflow", campaign="_overflow"}`, and past [`MAX_EDGES`] edges a new edge's drops in
//!   `{edge="_overflow"}`.
//!
//! Every replacement is counted in `sharegate_edge_events_folded_total{label, to}`. The caps are exact across
//! replicas: a batch that registers a series checks, in its transaction, that the registry did not change since it
//! was read, and is labelled again if it did. In all, `/metrics` holds at most [`MAX_SERIES`] event series, one
//! overflow series per kind × reason, [`MAX_EDGES`] + 1 dropped series, the seven folded series and the latency
//! histogram (whose labels are route templates, a fixed method set and status codes).

use super::auth::{ReadAuditLog, ReadMetrics, Role};
use super::error::ApiError;
use super::extract::{Authorized, QueryParams, authorize};
use super::keys::require_edge;
use super::{AppState, AuditEntry, now};
use crate::store::{Check, GENESIS, Log, MAX_PAGE, Ns, Op, StoreError, verify_chain_from};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{FromFnLayer, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sharegate_shared::Reason;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// Largest event batch body accepted, bytes.
pub const MAX_EVENTS_BODY: usize = 1 << 20;
/// Most events in one batch (the edge's own batch capacity).
pub const MAX_EVENTS: usize = 10_000;
/// Longest label value kept, bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Longest string field of an event stored, bytes.
const MAX_FIELD_LEN: usize = 1024;
/// Most entries `GET /v1/audit` returns.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// Most `sharegate_edge_events_total` series (besides the overflow ones): past it, a new combination of labels is
/// counted in the overflow series of its kind and reason.
pub const MAX_SERIES: usize = 2000;
/// Most distinct `channel` values; past it a new channel is counted as `_overflow`.
pub const MAX_CHANNELS: usize = 64;
/// Most distinct `campaign` values; past it a new campaign is counted as `_overflow`.
pub const MAX_CAMPAIGNS: usize = 256;
/// Most distinct edges in `sharegate_edge_events_dropped_total`; past it a new edge is counted as `_overflow`.
pub const MAX_EDGES: usize = 256;
/// Most assets of one batch looked up in the catalogue (those the registry does not know yet); the rest count as
/// `_unknown`, so a batch of random names costs a bounded number of store reads.
pub const MAX_ASSET_LOOKUPS: usize = 256;
/// Events kept in the events log (the newest); older ones are trimmed as batches arrive.
pub const MAX_EVENTS_KEPT: u64 = 100_000;
/// The label of an event whose asset is not a registered one (or was not given), or whose kind or reason the
/// control plane does not know.
pub const UNKNOWN: &str = "_unknown";
/// The label of what was folded because a cap was reached.
pub const OVERFLOW: &str = "_overflow";
/// How often a batch is labelled again when another replica registered series meanwhile.
const REGISTRY_ATTEMPTS: usize = 8;

/// Where the names of the event counters are kept (counters can't be listed, so each series is registered here).
const SERIES_PREFIX: &str = "metrics/series/";
/// Bumped by every batch that registers a series (see [`Registry::version`]).
const REGISTRY_VERSION: &str = "metrics/registry_version";
const EVENTS_PREFIX: &str = "events:";
const DROPPED_PREFIX: &str = "events_dropped:";
const FOLDED_PREFIX: &str = "events_folded:";

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// An API key with role `auditor` or `admin` (the default).
    #[default]
    ApiKey,
    /// Anyone who can reach the port (only behind a private network).
    Public,
}

/// The routes this module serves, with metrics behind an API key.
pub fn routes() -> Router<Arc<AppState>> {
    routes_with(MetricsAccess::ApiKey)
}

/// The routes this module serves, with the given metrics access.
pub fn routes_with(access: MetricsAccess) -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/audit", get(audit_query))
        .route("/v1/edge/events", post(ingest_events))
        .route(
            "/metrics",
            get(move |State(s): State<Arc<AppState>>, headers: HeaderMap| metrics(s, headers, access)),
        )
}

// ---------------------------------------------------------------------------------------------------------------
// Audit query

/// `GET /v1/audit` query.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries at or after this unix second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// Entries at or before this unix second.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// Entries whose subject contains this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Entries whose action starts with this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Most entries returned (the latest that match), 1..=1000, default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// One entry of `GET /v1/audit`: the stored [`AuditEntry`] with its place in the chain.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Sequence number in the chain.
    pub seq: u64,
    /// The entry's chain hash (hex).
    pub hash: String,
    /// Unix seconds.
    pub at: u64,
    /// API key id, or `anonymous` for a caller without a valid key.
    pub actor: String,
    /// The caller's role; `null` for a caller without a valid key (a refused call), which has none. Stored entries
    /// say `none` there (the chain's bytes can't change), so any stored value that is not a role reads as `null`.
    pub role: Option<Role>,
    /// Action (`links.mint`, `revocations.create`, ...).
    pub action: String,
    /// Subject (asset, token id, share id, ...).
    pub subject: String,
    /// `ok` or an error code.
    pub outcome: String,
    /// The request id, if the caller sent one.
    pub request_id: Option<String>,
}

impl AuditRecord {
    fn new(seq: u64, hash: [u8; 32], e: AuditEntry) -> Self {
        AuditRecord {
            seq,
            hash: hex::encode(hash),
            at: e.at,
            actor: e.actor,
            role: e.role,
            action: e.action,
            subject: e.subject,
            outcome: e.outcome,
            request_id: e.request_id,
        }
    }
}

/// `GET /v1/audit` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditAnswer {
    /// The latest `limit` matching entries, oldest first.
    pub entries: Vec<AuditRecord>,
    /// How many entries matched in all.
    pub matched: u64,
    /// `ok`, or `broken_at_seq_N` for the first entry that does not chain.
    pub chain: String,
    /// The last entry's hash (hex): the verified head when the chain is ok, else the stored (unverified) one.
    pub head: String,
    /// The last sequence number in the log.
    pub length: u64,
    /// Entries that are not audit records (only possible if the log was written behind the service's back).
    pub unreadable: u64,
}

async fn audit_query(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReadAuditLog>,
    QueryParams(q): QueryParams<AuditQuery>,
) -> Result<Json<AuditAnswer>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::Invalid(format!("limit must be 1..={MAX_AUDIT_LIMIT}")));
    }
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f > t
    {
        return Err(ApiError::Invalid("from must not be after to".into()));
    }
    let matches = |e: &AuditEntry| {
        q.from.is_none_or(|f| e.at >= f)
            && q.to.is_none_or(|t| e.at <= t)
            && q.subject.as_deref().is_none_or(|x| e.subject.contains(x))
            && q.action.as_deref().is_none_or(|x| e.action.starts_with(x))
    };
    // The whole chain is read and verified page by page, whatever the filters: a filtered view of a broken chain must
    // say so.
    let (mut verified_seq, mut verified_head, mut broken) = (0, GENESIS, None);
    let (mut last_seq, mut last_hash) = (0, GENESIS);
    let (mut found, mut matched, mut unreadable) = (VecDeque::with_capacity(limit), 0u64, 0u64);
    let mut from = 1;
    loop {
        let page = s.store.read_chained(Log::Audit, from, MAX_PAGE).await?;
        let Some(last) = page.last() else { break };
        (last_seq, last_hash) = (last.seq, last.hash);
        if broken.is_none() {
            match verify_chain_from(verified_seq, verified_head, &page) {
                Ok(h) => (verified_seq, verified_head) = (last_seq, h),
                Err(seq) => broken = Some(seq),
            }
        }
        for e in &page {
            let Ok(entry) = serde_json::from_slice::<AuditEntry>(&e.value) else {
                unreadable += 1;
                continue;
            };
            if !matches(&entry) {
                continue;
            }
            matched += 1;
            if found.len() == limit {
                found.pop_front();
            }
            found.push_back(AuditRecord::new(e.seq, e.hash, entry));
        }
        from = last_seq + 1;
    }
    let (chain, head) = match broken {
        None => ("ok".to_string(), verified_head),
        Some(seq) => (format!("broken_at_seq_{seq}"), last_hash),
    };
    if let Some(seq) = broken {
        tracing::error!(seq, "audit chain does not verify");
    }
    Ok(Json(AuditAnswer {
        entries: found.into(),
        matched,
        chain,
        head: hex::encode(head),
        length: last_seq,
        unreadable,
    }))
}

// ---------------------------------------------------------------------------------------------------------------
// Edge events

/// One edge's batch, as the native edge sends it.
#[derive(Debug, Deserialize)]
struct Batch {
    edge: String,
    #[serde(default)]
    dropped: u64,
    events: Vec<WireEvent>,
}

/// One event. Unknown fields are ignored so edges can add some before the control plane knows them.
#[derive(Debug, Serialize, Deserialize)]
struct WireEvent {
    kind: String,
    at: u64,
    reason: Option<String>,
    asset: Option<String>,
    share: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    edge: Option<String>,
    /// The verified token's session key, `<iat>-<token id hex>` (analytics joins a session's events by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The viewer's plan from the token's tier claim (`free`, `trial`, `paid`, `other`); anything else is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plan: Option<String>,
    /// CMCD (CTA-5004) the player sent with the request: session id, content id, object type, buffer starvation,
    /// startup, buffer length (ms), bitrate and measured throughput (kbps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    su: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bl: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    br: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtp: Option<u64>,
    /// Set by the control plane when stored.
    #[serde(default, skip_deserializing)]
    received_at: u64,
}

/// A label value safe in a counter name (no `:`) and in Prometheus text (no quotes, backslashes or newlines).
fn label(v: Option<&str>) -> String {
    v.unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '~') {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_LEN)
        .collect()
}

/// Could be an asset id (the syntax `POST /v1/assets` accepts): only these are looked up in the store.
fn asset_syntax(id: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Which label of an event was replaced, and by what: the fixed set behind `sharegate_edge_events_folded_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Fold {
    /// A kind this control plane does not know → `_unknown`.
    Kind,
    /// A reason that is not an edge reason code → `_unknown`.
    Reason,
    /// An asset that is not registered (or not looked up: see [`MAX_ASSET_LOOKUPS`]) → `_unknown`.
    Asset,
    /// A channel past [`MAX_CHANNELS`] → `_overflow`.
    Channel,
    /// A campaign past [`MAX_CAMPAIGNS`] → `_overflow`.
    Campaign,
    /// A whole series past [`MAX_SERIES`] → asset, channel and campaign `_overflow`.
    Series,
    /// An edge name past [`MAX_EDGES`] (in `sharegate_edge_events_dropped_total`) → `_overflow`.
    Edge,
}

impl Fold {
    const ALL: [Fold; 7] = [
        Fold::Kind,
        Fold::Reason,
        Fold::Asset,
        Fold::Channel,
        Fold::Campaign,
        Fold::Series,
        Fold::Edge,
    ];

    /// `(label, replacement)` as exported.
    const fn labels(self) -> (&'static str, &'static str) {
        match self {
            Fold::Kind => ("kind", UNKNOWN),
            Fold::Reason => ("reason", UNKNOWN),
            Fold::Asset => ("asset", UNKNOWN),
            Fold::Channel => ("channel", OVERFLOW),
            Fold::Campaign => ("campaign", OVERFLOW),
            Fold::Series => ("series", OVERFLOW),
            Fold::Edge => ("edge", OVERFLOW),
        }
    }

    fn counter(self) -> String {
        let (l, to) = self.labels();
        format!("{FOLDED_PREFIX}{l}:{to}")
    }
}

/// The event kinds edges send (`sharegate_edge::events::EventKind`); anything else is counted as `_unknown`.
const KINDS: [&str; 5] = ["deny", "expiry", "playlist_open", "segment", "state_stale"];

/// The series registered so far, cluster-wide, read before a batch is counted: what the caps are measured against.
#[derive(Debug, Default)]
struct Registry {
    /// The registry's version as stored (`None`: never written). A batch that registers series checks it is
    /// unchanged and bumps it, in the same transaction, so two replicas can't both take the last free place.
    version: Option<Vec<u8>>,
    /// Every registered counter name (events, dropped), without [`SERIES_PREFIX`].
    names: HashSet<String>,
    /// Event series that count against [`MAX_SERIES`] (all but the overflow ones).
    events: usize,
    channels: HashSet<String>,
    campaigns: HashSet<String>,
    /// Assets already in a series: registered when they were counted, so not looked up again.
    assets: HashSet<String>,
    /// Edge names in `dropped` series, but `_overflow`.
    edges: usize,
}

impl Registry {
    async fn load(s: &AppState) -> Result<Registry, ApiError> {
        // The version first, then the names: a registration that lands in between changes the version, so the
        // batch's check fails and it is counted again against the newer registry.
        let version = s.store.get(Ns::Settings, REGISTRY_VERSION).await?;
        let mut r = Registry {
            version,
            ..Registry::default()
        };
        for (key, _) in s.store.scan(Ns::Settings, SERIES_PREFIX).await? {
            let Some(name) = key.strip_prefix(SERIES_PREFIX) else {
                continue;
            };
            r.note(name);
        }
        Ok(r)
    }

    /// Take one registered counter name into account.
    fn note(&mut self, name: &str) {
        if !self.names.insert(name.to_string()) {
            return;
        }
        if let Some(rest) = name.strip_prefix(EVENTS_PREFIX) {
            if let [_, _, asset, channel, campaign] = rest.split(':').collect::<Vec<_>>()[..] {
                if asset == OVERFLOW {
                    return;
                }
                self.events += 1;
                for (set, v) in [(&mut self.channels, channel), (&mut self.campaigns, campaign)] {
                    if !v.is_empty() && v != OVERFLOW {
                        set.insert(v.to_string());
                    }
                }
                if asset != UNKNOWN {
                    self.assets.insert(asset.to_string());
                }
            }
        } else if let Some(edge) = name.strip_prefix(DROPPED_PREFIX)
            && edge != OVERFLOW
        {
            self.edges += 1;
        }
    }

    /// The bounded value for a channel or campaign: kept if already known or there is room, else `_overflow`.
    fn bounded(
        set: &mut HashSet<String>,
        v: String,
        cap: usize,
        fold: Fold,
        folded: &mut BTreeMap<Fold, u64>,
    ) -> String {
        if v.is_empty() || set.contains(&v) {
            return v;
        }
        if set.len() >= cap {
            *folded.entry(fold).or_default() += 1;
            return OVERFLOW.into();
        }
        set.insert(v.clone());
        v
    }

    /// The counter an event is counted in. `registered` holds the assets found registered for this batch.
    fn event_series(
        &mut self,
        e: &WireEvent,
        registered: &HashSet<String>,
        folded: &mut BTreeMap<Fold, u64>,
    ) -> String {
        let mut fold = |f: Fold| *folded.entry(f).or_default() += 1;
        let kind = if KINDS.contains(&e.kind.as_str()) {
            e.kind.clone()
        } else {
            fold(Fold::Kind);
            UNKNOWN.into()
        };
        let reason = match e.reason.as_deref() {
            None => String::new(),
            Some(r) if Reason::from_code(r).is_some() => r.to_string(),
            Some(_) => {
                fold(Fold::Reason);
                UNKNOWN.into()
            }
        };
        // Only an asset the catalogue holds becomes a label: an edge's attribution is trusted no further than that.
        let asset = match e.asset.as_deref() {
            None => UNKNOWN.to_string(),
            Some(a) if self.assets.contains(a) || registered.contains(a) => a.to_string(),
            Some(_) => {
                fold(Fold::Asset);
                UNKNOWN.into()
            }
        };
        let channel = Self::bounded(
            &mut self.channels,
            label(e.channel.as_deref()),
            MAX_CHANNELS,
            Fold::Channel,
            folded,
        );
        let campaign = Self::bounded(
            &mut self.campaigns,
            label(e.campaign.as_deref()),
            MAX_CAMPAIGNS,
            Fold::Campaign,
            folded,
        );
        let name = format!("{EVENTS_PREFIX}{kind}:{reason}:{asset}:{channel}:{campaign}");
        if self.names.contains(&name) {
            return name;
        }
        if self.events >= MAX_SERIES {
            // Kind and reason come from closed sets, so the overflow series stay few and keep the deny/expiry split.
            *folded.entry(Fold::Series).or_default() += 1;
            let name = format!("{EVENTS_PREFIX}{kind}:{reason}:{OVERFLOW}:{OVERFLOW}:{OVERFLOW}");
            self.note(&name);
            return name;
        }
        self.note(&name);
        name
    }

    /// The counter of an edge's dropped events.
    fn dropped_series(&mut self, edge: &str, folded: &mut BTreeMap<Fold, u64>) -> String {
        let name = format!("{DROPPED_PREFIX}{}", label(Some(edge)));
        if self.names.contains(&name) {
            return name;
        }
        if self.edges >= MAX_EDGES {
            *folded.entry(Fold::Edge).or_default() += 1;
            let name = format!("{DROPPED_PREFIX}{OVERFLOW}");
            self.note(&name);
            return name;
        }
        self.note(&name);
        name
    }
}

/// The registered assets among the ones a batch names that the registry does not know yet (at most
/// [`MAX_ASSET_LOOKUPS`] of them are looked up; the rest count as unregistered).
async fn registered_assets(
    s: &AppState,
    known: &HashSet<String>,
    events: &[WireEvent],
) -> Result<HashSet<String>, ApiError> {
    let mut wanted: Vec<&str> = events
        .iter()
        .filter_map(|e| e.asset.as_deref())
        .filter(|a| !known.contains(*a) && asset_syntax(a))
        .collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = HashSet::new();
    for a in wanted.into_iter().take(MAX_ASSET_LOOKUPS) {
        // Through the hot cache: a busy edge names the same few assets in every batch.
        if s.get_hot(Ns::Assets, a).await?.is_some() {
            found.insert(a.to_string());
        }
    }
    Ok(found)
}

fn too_large() -> Response {
    let body = serde_json::json!({
        "error": "payload_too_large",
        "message": format!("an event batch is at most {MAX_EVENTS_BODY} bytes"),
    });
    (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response()
}

async fn ingest_events(State(s): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    // The credential is checked before the body is read: an unauthenticated caller can't make us buffer it.
    require_edge(&s, req.headers())?;
    let Some(batch) = read_batch(req).await? else {
        return Ok(too_large());
    };
    let (events, entries) = stamp(batch.events, &batch.edge, now())?;
    if entries.is_empty() && batch.dropped == 0 {
        return Ok(accepted(0, 0));
    }
    // Labels are decided against the registry as every replica sees it; a batch that registers series commits only
    // if nobody registered any meanwhile, else it is labelled again (the log and counters are written once).
    for _ in 0..REGISTRY_ATTEMPTS {
        let registry = Registry::load(&s).await?;
        let registered = registered_assets(&s, &registry.assets, &events).await?;
        let counted = Counted::of(registry, &registered, &events, &batch.edge, batch.dropped);
        if let Some(results) = counted.commit(&s, &entries).await? {
            // The entries' appends come first: the last one's result is the newest sequence number.
            if let Some(&last) = entries.len().checked_sub(1).and_then(|i| results.get(i)) {
                trim_events(&s, last).await;
            }
            s.analytics.notify.notify_one();
            return Ok(accepted(entries.len(), batch.dropped));
        }
    }
    Err(ApiError::Store(StoreError::Contention(
        "the metrics series registry kept changing; resend the batch".into(),
    )))
}

/// The batch, if its body is within [`MAX_EVENTS_BODY`] (`None`: too large), checked against the batch limits.
async fn read_batch(req: Request) -> Result<Option<Batch>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_EVENTS_BODY as u64) {
        return Ok(None);
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_EVENTS_BODY).await else {
        return Ok(None);
    };
    let batch: Batch =
        serde_json::from_slice(&body).map_err(|e| ApiError::Invalid(format!("malformed event batch: {e}")))?;
    if batch.events.len() > MAX_EVENTS {
        return Err(ApiError::Invalid(format!("a batch holds at most {MAX_EVENTS} events")));
    }
    if batch.edge.is_empty() || batch.edge.len() > MAX_FIELD_LEN {
        return Err(ApiError::Invalid(format!("edge must be 1 to {MAX_FIELD_LEN} bytes")));
    }
    Ok(Some(batch))
}

/// Check each event's fields, name its edge (the batch's, unless it names one) and the time it was received; the
/// events and their log entries.
fn stamp(mut events: Vec<WireEvent>, edge: &str, received_at: u64) -> Result<(Vec<WireEvent>, Vec<Vec<u8>>), ApiError> {
    let mut entries = Vec::with_capacity(events.len());
    for (i, e) in events.iter_mut().enumerate() {
        if e.kind.is_empty() || e.kind.len() > MAX_LABEL_LEN {
            return Err(ApiError::Invalid(format!(
                "event {i}: kind must be 1 to {MAX_LABEL_LEN} bytes"
            )));
        }
        let fields = [
            &e.reason,
            &e.asset,
            &e.share,
            &e.channel,
            &e.campaign,
            &e.edge,
            &e.token,
            &e.sid,
            &e.cid,
            &e.ot,
        ];
        if fields
            .iter()
            .any(|f| f.as_ref().is_some_and(|v| v.len() > MAX_FIELD_LEN))
        {
            return Err(ApiError::Invalid(format!(
                "event {i}: a field is over {MAX_FIELD_LEN} bytes"
            )));
        }
        if e.edge.is_none() {
            e.edge = Some(edge.to_string());
        }
        // A closed set: a plan is a tier code's name, never a client's text.
        use sharegate_shared::token::tier;
        if e.plan
            .as_deref()
            .is_some_and(|p| tier::plan_name(tier::plan_code(p)) != Some(p))
        {
            e.plan = None;
        }
        e.received_at = received_at;
        entries.push(serde_json::to_vec(&e).map_err(|e| ApiError::Internal(e.to_string()))?);
    }
    Ok((events, entries))
}

/// A batch labelled against one reading of the registry: what to add to which counter, and the series it
/// registers.
struct Counted {
    registry: Registry,
    series: HashMap<String, u64>,
    folded: Vec<(String, u64)>,
    /// Newly registered series, as stored keys.
    new: Vec<String>,
}

impl Counted {
    fn of(
        mut registry: Registry,
        registered: &HashSet<String>,
        events: &[WireEvent],
        edge: &str,
        dropped: u64,
    ) -> Counted {
        let before = registry.names.clone();
        let mut folded = BTreeMap::new();
        let mut series: HashMap<String, u64> = HashMap::new();
        for e in events {
            *series
                .entry(registry.event_series(e, registered, &mut folded))
                .or_default() += 1;
        }
        if dropped > 0 {
            let name = registry.dropped_series(edge, &mut folded);
            *series.entry(name).or_default() += dropped;
        }
        let new = registry
            .names
            .difference(&before)
            .map(|n| format!("{SERIES_PREFIX}{n}"))
            .collect();
        let folded = folded.into_iter().map(|(f, n)| (f.counter(), n)).collect();
        Counted {
            registry,
            series,
            folded,
            new,
        }
    }

    /// Append the entries and add the counts in one transaction (the log and the counters agree, and a failed
    /// call changed nothing: the edge resends it), registering new series only if the registry is unchanged.
    /// The transaction's results (the entries' appends first), or `None` if the registry changed: label again.
    async fn commit(&self, s: &AppState, entries: &[Vec<u8>]) -> Result<Option<Vec<u64>>, ApiError> {
        let next_version = self
            .registry
            .version
            .as_deref()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_add(1)
            .to_string();
        let mut checks = Vec::new();
        let mut ops: Vec<Op<'_>> = Vec::with_capacity(entries.len() + self.series.len() + 2 * self.new.len() + 8);
        ops.extend(entries.iter().map(|v| Op::Append {
            log: Log::Events,
            value: v,
        }));
        ops.extend(self.series.iter().map(|(name, by)| Op::Incr { counter: name, by: *by }));
        ops.extend(self.folded.iter().map(|(name, by)| Op::Incr { counter: name, by: *by }));
        if !self.new.is_empty() {
            checks.push(match self.registry.version.as_deref() {
                Some(v) => Check::Equals {
                    ns: Ns::Settings,
                    key: REGISTRY_VERSION,
                    value: v,
                },
                None => Check::Absent {
                    ns: Ns::Settings,
                    key: REGISTRY_VERSION,
                },
            });
            ops.extend(self.new.iter().map(|key| Op::Put {
                ns: Ns::Settings,
                key,
                value: b"",
            }));
            ops.push(Op::Put {
                ns: Ns::Settings,
                key: REGISTRY_VERSION,
                value: next_version.as_bytes(),
            });
        }
        Ok(s.store.atomic(&checks, &ops).await?)
    }
}

fn accepted(events: usize, dropped: u64) -> Response {
    Json(serde_json::json!({ "accepted": events, "dropped": dropped })).into_response()
}

/// Keep the events log to its last [`MAX_EVENTS_KEPT`] entries. Nothing reads old events back (the counters hold
/// the totals), so the log is a recent window for investigation, not an archive. A failed trim is retried by the
/// next batch, so it does not fail this one.
async fn trim_events(s: &AppState, last_seq: u64) {
    // Analytics applies events from this log within about a second (`analytics::apply`); an applier more than
    // MAX_EVENTS_KEPT events behind loses the oldest, which keeps the window bounded whatever happens.
    let Some(below) = last_seq.checked_sub(MAX_EVENTS_KEPT) else {
        return;
    };
    if let Err(e) = s.store.trim_log(Log::Events, below + 1).await {
        tracing::warn!(error = %e, "cannot trim the events log");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics

/// Upper bounds of the latency histogram, seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations in each bucket (not cumulative; the exposition sums them).
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

type SeriesKey = (String, &'static str, u16);

/// This process's request latencies by (route, method, status). Routes are the router's templates and methods a
/// fixed set, so the map stays small.
static HTTP: LazyLock<Mutex<BTreeMap<SeriesKey, Histogram>>> = LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn observe(route: String, method: &'static str, status: u16, took: Duration) {
    let secs = took.as_secs_f64();
    // A poisoned lock only means another request panicked mid-update; the counts are still usable.
    let mut map = HTTP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let h = map.entry((route, method, status)).or_default();
    if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
        h.buckets[i] += 1;
    }
    h.count += 1;
    h.sum += secs;
}

/// Middleware that records `sharegate_http_request_duration_seconds` (time to the response head). Add it as the
/// router's last layer: `.layer(axum::middleware::from_fn(audit_events::track_http))`, or [`metrics_layer`].
pub async fn track_http(req: Request, next: Next) -> Response {
    // The route template, never the raw path: raw paths carry ids (and tokens) and would explode the series.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    observe(route, method, resp.status().as_u16(), start.elapsed());
    resp
}

/// The function type behind [`metrics_layer`].
pub type TrackFn = fn(Request, Next) -> Pin<Box<dyn Future<Output = Response> + Send>>;

/// [`track_http`] as a layer: `router.layer(audit_events::metrics_layer())` after the last route.
pub fn metrics_layer() -> FromFnLayer<TrackFn, (), (Request,)> {
    fn boxed(req: Request, next: Next) -> Pin<Box<dyn Future<Output = Response> + Send>> {
        Box::pin(track_http(req, next))
    }
    axum::middleware::from_fn(boxed as TrackFn)
}

/// Escape a label value for the Prometheus text format (defence in depth: stored labels are already sanitised).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_histograms(out: &mut String) {
    let snapshot: Vec<(SeriesKey, Histogram)> = {
        let map = HTTP.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    out.push_str("# HELP sharegate_http_request_duration_seconds Control-plane request latency (this replica).\n");
    out.push_str("# TYPE sharegate_http_request_duration_seconds histogram\n");
    for ((route, method, status), h) in snapshot {
        let labels = format!(r#"route="{}",method="{method}",status="{status}""#, esc(&route));
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(h.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "sharegate_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "sharegate_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "sharegate_http_request_duration_seconds_sum{{{labels}}} {}", h.sum);
        let _ = writeln!(
            out,
            "sharegate_http_request_duration_seconds_count{{{labels}}} {}",
            h.count
        );
    }
}

async fn metrics(s: Arc<AppState>, headers: HeaderMap, access: MetricsAccess) -> Result<Response, ApiError> {
    if access == MetricsAccess::ApiKey {
        authorize::<ReadMetrics>(&s, &headers).await?;
    }
    let mut events = Vec::new();
    let mut dropped = Vec::new();
    for (key, _) in s.store.scan(Ns::Settings, SERIES_PREFIX).await? {
        let Some(name) = key.strip_prefix(SERIES_PREFIX) else {
            continue;
        };
        let value = s.store.counter(name).await?;
        if let Some(rest) = name.strip_prefix(EVENTS_PREFIX) {
            let parts: Vec<&str> = rest.split(':').collect();
            if let [kind, reason, asset, channel, campaign] = parts[..] {
                events.push(format!(
                    r#"sharegate_edge_events_total{{kind="{}",reason="{}",asset="{}",channel="{}",campaign="{}"}} {value}"#,
                    esc(kind),
                    esc(reason),
                    esc(asset),
                    esc(channel),
                    esc(campaign)
                ));
            }
        } else if let Some(edge) = name.strip_prefix(DROPPED_PREFIX) {
            dropped.push(format!(
                r#"sharegate_edge_events_dropped_total{{edge="{}"}} {value}"#,
                esc(edge)
            ));
        }
    }
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP sharegate_edge_events_total Edge events ingested (cluster-wide, from the store).\n");
    out.push_str("# TYPE sharegate_edge_events_total counter\n");
    for l in events {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str("# HELP sharegate_edge_events_dropped_total Events edges dropped because their batch was full.\n");
    out.push_str("# TYPE sharegate_edge_events_dropped_total counter\n");
    for l in dropped {
        out.push_str(&l);
        out.push('\n');
    }
    out.push_str(
        "# HELP sharegate_edge_events_folded_total Event labels replaced by _unknown (not a registered asset, an \
         unknown kind or reason) or _overflow (a cap was reached).\n",
    );
    out.push_str("# TYPE sharegate_edge_events_folded_total counter\n");
    for f in Fold::ALL {
        let (l, to) = f.labels();
        let value = s.store.counter(&f.counter()).await?;
        let _ = writeln!(
            out,
            r#"sharegate_edge_events_folded_total{{label="{l}",to="{to}"}} {value}"#
        );
    }
    render_histograms(&mut out);
    super::analytics::qoe::render(&s, &mut out).await?;
    super::entitlement::hook::render(&mut out, &s.entitlements.hook.breaker_states());
    out.push_str("# HELP sharegate_beacons_total Player beacons this replica answered, by outcome.\n");
    out.push_str("# TYPE sharegate_beacons_total counter\n");
    for (i, r) in super::analytics::BEACON_RESULTS.iter().enumerate() {
        let v = s.analytics.beacon_results[i].load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, r#"sharegate_beacons_total{{result="{r}"}} {v}"#);
    }
    out.push_str(
        "# HELP sharegate_edge_state_age_seconds Seconds since each edge last pulled state from this replica \
         (replica-local: use min by (edge)).\n",
    );
    out.push_str("# TYPE sharegate_edge_state_age_seconds gauge\n");
    for (edge, age) in s.edge_contacts.ages() {
        let _ = writeln!(
            out,
            r#"sharegate_edge_state_age_seconds{{edge="{}"}} {age:.3}"#,
            esc(&edge)
        );
    }
    let backlog = match &s.outbox {
        Some(o) => o
            .oldest_pending()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
        None => 0.0,
    };
    out.push_str(
        "# HELP sharegate_purge_backlog_oldest_seconds Age of the oldest purge not yet confirmed by its CDN (0: none).\n",
    );
    out.push_str("# TYPE sharegate_purge_backlog_oldest_seconds gauge\n");
    let _ = writeln!(out, "sharegate_purge_backlog_oldest_seconds {backlog:.3}");
    let mut resp = out.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_sanitised_and_bounded() {
        assert_eq!(label(Some("as:set\"x\n}")), "as_set_x__");
        assert_eq!(label(Some("movies/ep-1.v2")), "movies/ep-1.v2");
        assert_eq!(label(None), "");
        assert_eq!(label(Some(&"é".repeat(100))).len(), MAX_LABEL_LEN);
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let route = "/test/histogram".to_string();
        observe(route.clone(), "GET", 200, Duration::from_micros(500));
        observe(route.clone(), "GET", 200, Duration::from_millis(30));
        observe(route, "GET", 200, Duration::from_secs(60));
        let mut out = String::new();
        render_histograms(&mut out);
        let line = |le: &str| {
            out.lines()
                .find(|l| l.contains("/test/histogram") && l.contains(&format!("le=\"{le}\"")))
                .map(str::to_string)
                .unwrap_or_default()
        };
        assert!(line("0.001").ends_with(" 1"));
        assert!(line("0.05").ends_with(" 2"));
        assert!(line("5").ends_with(" 2"));
        assert!(line("+Inf").ends_with(" 3"));
    }
}
