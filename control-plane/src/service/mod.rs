//! The control-plane HTTP service (axum): the API backends and responders call, under `/v1`.
//!
//! This module holds the router, the shared state, health (`/healthz`, `/readyz`, no key), link minting
//! (`POST /v1/links`: every mint is recorded in the issued log, the input of the edge's revocation filter, before the
//! link is returned), API keys and link settings; each other area is a sub-module with its own routes (assets and
//! their [`readiness`] check, shares, revocations, signing keys, the edge's state, diagnosis, the audit log with edge
//! events and metrics, the OpenAPI document). Handlers name the role they need in their signature
//! ([`extract::Authorized`]); every call that changes state is appended to the hash-chained audit log, refused ones
//! too. The request and answer types are gathered in [`api`]. It does not decide requests at the edge (that is
//! `sharegate-edge`).

pub mod analytics;
pub mod assets;
pub mod audit_events;
pub mod auth;
pub mod dashboard;
pub mod doctor;
pub mod edge_shards;
pub mod edge_state;
pub mod entitlement;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod keys;
pub mod observe;
pub mod openapi;
pub mod player;
pub mod readiness;
pub mod revocations;
pub mod shares;
pub mod snapshot;

/// The API's request and answer types in one place, for clients that send the service's own types (the
/// `sharegate` CLI). Each serializes to what the API reads: optional fields left out, not `null`.
pub mod api {
    pub use super::assets::{AssetKind, AssetRecord, Problem, RegisterRequest};
    pub use super::audit_events::{AuditAnswer, AuditQuery, AuditRecord};
    pub use super::auth::{ApiKeyRecord, Role};
    pub use super::keys::{KeyInfo, KeyStage, RotationAction, RotationReceipt};
    pub use super::observe::diagnose::{DiagnoseRequest, Diagnosis, Verdict};
    pub use super::revocations::{Receipt, RevocationKind, RevocationReceipt, RevocationRequest};
    pub use super::shares::{Audience, DeleteParams, ShareRequest, ShareResponse};
    pub use super::{ApiKeyCreated, ApiKeyRequest, LinkRequest, LinkResponse, LinkSettings};
}

use crate::store::{Check, Log, Ns, Op, Store};
use auth::{Caller, ChangeSettings, ListApiKeys, ManageApiKeys, MintLinks, Permission, ReadSettings, Role};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use extract::{Authorized, JsonBody};
use serde::{Deserialize, Serialize};
use sharegate_shared::keys::KeyRing;
use sharegate_shared::token::{Claims, Countries, Permissions, Policy, Text};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Base URL of the CDN (the edge) that links point at.
    pub edge_base_url: String,
    /// Base URL that serves stable share links (`/s/<id>`): the control plane itself, or a CDN route that
    /// passes `/s/*` through to it uncached.
    pub share_base_url: String,
    /// Shortest TTL a minter may ask for, seconds.
    pub min_ttl: u32,
    /// Longest TTL a minter may ask for, seconds (never above the token policy's `max_ttl`).
    pub max_ttl: u32,
    /// TTL when none is given.
    pub default_ttl: u32,
    /// Name of the multivariant playlist in link URLs.
    pub multivariant_name: String,
    /// Native edges to push revocations to.
    pub edges: Vec<EdgeTarget>,
    /// The credential edges present to pull state (`GET /v1/edge/state`); none: edges cannot pull.
    pub edge_token: Option<String>,
    /// What viewer tokens minted for the player pages are bound to.
    pub player: player::PlayerSettings,
    /// Playback analytics.
    pub analytics: analytics::AnalyticsSettings,
    /// The entitlement backend and its failure policy.
    pub entitlement: entitlement::EntitlementSettings,
}

/// An edge the control plane pushes state to.
#[derive(Debug, Clone)]
pub struct EdgeTarget {
    /// Base URL of the edge.
    pub url: String,
    /// Its push credential.
    pub token: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            edge_base_url: "http://127.0.0.1:7701".into(),
            share_base_url: "http://127.0.0.1:7700".into(),
            min_ttl: 600,
            max_ttl: 86_400,
            default_ttl: 3600,
            multivariant_name: "master.m3u8".into(),
            edges: Vec::new(),
            edge_token: None,
            player: player::PlayerSettings::default(),
            analytics: analytics::AnalyticsSettings::default(),
            entitlement: entitlement::EntitlementSettings::default(),
        }
    }
}

/// What every handler shares.
pub struct AppState {
    /// The store (embedded or Redis).
    pub store: Arc<dyn Store>,
    /// Settings.
    pub config: ServiceConfig,
    /// The minter, keyed with the active signing key; swapped when keys rotate (see `keys::RotatingMinter`).
    pub minter: keys::RotatingMinter,
    /// Token policy (leeway, max TTL).
    pub policy: Policy,
    /// Every signing key (to verify tokens named in revocations).
    pub keys: KeyRing,
    /// The revocation state's MAC key.
    pub state_key: sharegate_shared::revocation::StateKey,
    /// Client for edge pushes and origin checks.
    pub http: reqwest::Client,
    /// Master key that encrypts signing keys at rest (from `SHAREGATE_MASTER_KEY` or a 0600 file).
    pub master_key: Option<[u8; 32]>,
    /// The purge outbox, when CDN purgers are configured.
    pub outbox: Option<Arc<crate::purge::Outbox>>,
    /// Hot, rarely changing records read on every mint (link settings, asset readiness), kept for
    /// [`HOT_CACHE_TTL`]: a change made on any replica applies everywhere within that time.
    pub hot: moka::sync::Cache<(Ns, String), Option<Vec<u8>>>,
    /// Added to the system clock where issue times and snapshot cut-offs are chosen: 0 in service; tests set it to
    /// play a replica whose clock is off.
    pub clock_offset_secs: i64,
    /// Anonymous refused calls not yet audited one by one (see `audit_failures`).
    pub anonymous_refusals: std::sync::Mutex<AnonymousRefusals>,
    /// Playback analytics: the view-id key, the applier's wake-up, the beacon rate limiter.
    pub analytics: analytics::Runtime,
    /// When edges last pulled state from this replica.
    pub edge_contacts: edge_state::EdgeContacts,
    /// Entitlement checks: the backend client, its decision cache and breakers.
    pub entitlements: entitlement::Entitlements,
    /// API key records read by this replica, for the calls that re-check them at commit (see [`auth::KeyCache`]).
    pub api_keys: auth::KeyCache,
}

/// How long [`AppState::hot`] keeps a record.
pub const HOT_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

impl AppState {
    /// Read `ns/key` through the hot cache.
    pub async fn get_hot(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let k = (ns, key.to_string());
        if let Some(v) = self.hot.get(&k) {
            return Ok(v);
        }
        let v = self.store.get(ns, key).await?;
        self.hot.insert(k, v.clone());
        Ok(v)
    }

    /// This replica's Unix seconds: the system clock plus [`AppState::clock_offset_secs`].
    pub fn now(&self) -> u64 {
        now().saturating_add_signed(self.clock_offset_secs)
    }

    /// Forget a cached record this replica just changed.
    pub fn invalidate_hot(&self, ns: Ns, key: &str) {
        self.hot.invalidate(&(ns, key.to_string()));
    }
}

impl AppState {
    /// Build the state from a store, settings and the signing keys.
    pub fn new(
        store: Arc<dyn Store>,
        config: ServiceConfig,
        keys: &KeyRing,
        policy: Policy,
        state_key: sharegate_shared::revocation::StateKey,
    ) -> Result<Self, ApiError> {
        let minter = keys::RotatingMinter::new(keys, policy, 0)?;
        let analytics = analytics::Runtime::new(&state_key);
        let entitlements = entitlement::Entitlements::new(config.entitlement.clone());
        Ok(AppState {
            entitlements,
            analytics,
            edge_contacts: edge_state::EdgeContacts::default(),
            store,
            config,
            minter,
            policy,
            keys: keys.clone(),
            state_key,
            http: reqwest::Client::new(),
            master_key: None,
            outbox: None,
            hot: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(HOT_CACHE_TTL)
                .build(),
            clock_offset_secs: 0,
            anonymous_refusals: std::sync::Mutex::new(AnonymousRefusals::default()),
            api_keys: auth::key_cache(),
        })
    }
}

/// The body of `resp`, read chunk by chunk up to `max` bytes: `None` when it is longer (or cut off). For answers of
/// other services (entitlement backends, edges' status) that must not make us hold more than we expect.
pub(crate) async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, CappedError> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(CappedError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() + c.len() > max {
                    return Err(CappedError::TooLarge);
                }
                body.extend_from_slice(&c);
            }
            Ok(None) => return Ok(body),
            Err(e) if e.is_timeout() => return Err(CappedError::Timeout),
            Err(_) => return Err(CappedError::CutOff),
        }
    }
}

/// Why [`read_capped`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CappedError {
    /// Longer than allowed.
    TooLarge,
    /// The read timed out.
    Timeout,
    /// The connection ended early.
    CutOff,
}

/// A playback link: the token in the path under the edge's base URL, then the asset's multivariant playlist.
pub(crate) fn link_url(s: &AppState, token: &str, asset: &str) -> String {
    let base = s.config.edge_base_url.trim_end_matches('/');
    format!("{base}/t/{token}/{asset}/{}", s.config.multivariant_name)
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/links", post(mint_link))
        .route("/v1/apikeys", post(create_api_key).get(list_api_keys))
        .route("/v1/apikeys/{id}", axum::routing::delete(disable_api_key))
        .route("/v1/settings", get(get_settings).put(put_settings))
        .route("/v1/revocations", post(revocations::create))
        .route("/v1/revocations/{id}", get(revocations::get))
        .route("/v1/edge/state", get(edge_state::edge_state))
        .route("/v1/edge/state/head", get(edge_shards::head))
        .route("/v1/edge/state/shard/{bits}/{index}", get(edge_shards::shard))
        .merge(assets::routes())
        .merge(shares::routes())
        .merge(player::routes())
        .merge(keys::routes())
        .merge(observe::routes())
        .merge(audit_events::routes())
        .merge(openapi::routes())
        .merge(analytics::routes())
        .merge(dashboard::routes())
        .merge(entitlement::routes())
        .merge(doctor::routes())
        // Idempotency keys for every mutating call, refused or failed mutating calls audited too, then the latency
        // histogram around everything.
        .layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .layer(axum::middleware::from_fn_with_state(state.clone(), audit_failures))
        .layer(audit_events::metrics_layer())
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(s): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    // Ready when the store answers and every edge this replica publishes to answers its status endpoint: a
    // revocation acknowledged now would reach them.
    let store = s.store.ping().await.map_err(|e| e.code());
    let mut edges = Vec::new();
    for e in &s.config.edges {
        let url = format!(
            "{}{}",
            e.url.trim_end_matches('/'),
            sharegate_edge::contract::paths::STATUS
        );
        let ok = s
            .http
            .get(&url)
            .timeout(std::time::Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        edges.push(serde_json::json!({ "edge": e.url, "ready": ok }));
    }
    let ready = store.is_ok() && edges.iter().all(|e| e["ready"] == true);
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": s.store.backend(),
        "store_error": store.err(),
        "edges": edges,
        "outbox": s.outbox.is_some(),
    });
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

/// The request's `Authorization` header, if it is text.
fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

pub(crate) async fn caller(s: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    auth::authenticate(s.store.as_ref(), authorization(headers)).await
}

/// [`caller`] through this replica's key cache ([`auth::authenticate_cached`]).
pub(crate) async fn caller_cached(s: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    auth::authenticate_cached(s.store.as_ref(), &s.api_keys, authorization(headers)).await
}

/// One audit entry: who did what to which subject, and how it ended.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Unix seconds.
    pub at: u64,
    /// API key id.
    pub actor: String,
    /// Role; none for a caller without a valid key. Written `none` then: the chain's bytes are what entries always
    /// were.
    #[serde(with = "role_or_none")]
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

pub(crate) async fn audit(
    s: &AppState,
    c: &Caller,
    action: &str,
    subject: &str,
    outcome: &str,
) -> Result<(), ApiError> {
    let bytes = audit_entry(c, action, subject, outcome)?;
    s.store.append_chained(Log::Audit, &bytes).await?;
    Ok(())
}

/// The bytes of the audit entry [`audit`] appends, for a caller that writes it in its own transaction.
pub(crate) fn audit_entry(c: &Caller, action: &str, subject: &str, outcome: &str) -> Result<Vec<u8>, ApiError> {
    let e = AuditEntry {
        at: now(),
        actor: c.key_id.clone(),
        role: Some(c.role),
        action: action.into(),
        subject: subject.into(),
        outcome: outcome.into(),
        request_id: c.request_id.clone(),
    };
    serde_json::to_vec(&e).map_err(|e| ApiError::Internal(e.to_string()))
}

/// Audit mutating calls that did not succeed (refused credential or role, bad input, conflicts): handlers audit
/// their own successes with the subject they acted on; this records everything else, so the log shows attempts too.
async fn audit_failures(
    State(s): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mutating = matches!(
        *req.method(),
        axum::http::Method::POST | axum::http::Method::PUT | axum::http::Method::DELETE
    );
    let path = req.uri().path().to_string();
    // Edge ingestion has its own credential and volume; viewers opening share links are not API callers.
    // Players asking for a token (`/v1/shares/{id}/playback`, exactly) and sending beacons are viewers too (a
    // refused beacon is counted in `sharegate_beacons_total`).
    let playback = matches!(
        path.split('/').collect::<Vec<_>>().as_slice(),
        ["", "v1", "shares", _, "playback"]
    ) || path == "/v1/beacons";
    if !mutating || path.starts_with("/v1/edge/") || !path.starts_with("/v1/") || playback {
        return next.run(req).await;
    }
    let method = req.method().to_string();
    let headers = req.headers().clone();
    let resp = next.run(req).await;
    if resp.status().is_success() {
        return resp;
    }
    let caller = caller(&s, &headers).await.ok();
    let at = now();
    let mut entries = Vec::with_capacity(2);
    if caller.is_none() {
        // Nothing an anonymous caller sends may grow the (never trimmed) audit log without bound: the first
        // anonymous refusal of each window is written, the rest are counted and their number written with the next
        // window's first. At most two entries per window and replica, whatever arrives.
        let mut w = s
            .anonymous_refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if at < w.window_start + ANONYMOUS_AUDIT_WINDOW_SECS {
            w.suppressed += 1;
            return resp;
        }
        let suppressed = std::mem::take(&mut w.suppressed);
        w.window_start = at;
        drop(w);
        if suppressed > 0 {
            entries.push(AuditEntry {
                at,
                actor: "anonymous".into(),
                role: None,
                action: "refused calls".into(),
                subject: String::new(),
                outcome: format!("suppressed:{suppressed}"),
                request_id: None,
            });
        }
    }
    // Caller-chosen text is kept, but bounded.
    let path = clip(&path, 256);
    entries.push(AuditEntry {
        at,
        actor: caller
            .as_ref()
            .map_or_else(|| "anonymous".to_string(), |c| c.key_id.clone()),
        role: caller.as_ref().map(|c| c.role),
        action: format!("{method} {path}"),
        subject: path,
        outcome: format!("refused:{}", resp.status().as_u16()),
        request_id: headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| clip(v, 128)),
    });
    for e in entries {
        if let Ok(bytes) = serde_json::to_vec(&e)
            && let Err(err) = s.store.append_chained(Log::Audit, &bytes).await
        {
            tracing::warn!(error = %err, "cannot audit a refused call");
        }
    }
    resp
}

/// [`AuditEntry::role`] on the wire: a role's name, or `none`; any stored value that is not a role reads as none.
mod role_or_none {
    use super::Role;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(role: &Option<Role>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.map_or("none", Role::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Role>, D::Error> {
        Ok(Role::parse(&String::deserialize(d)?))
    }
}

/// How often an anonymous refused call is audited in full (see `audit_failures`).
pub const ANONYMOUS_AUDIT_WINDOW_SECS: u64 = 60;

/// Anonymous refusals counted in the current audit window.
#[derive(Debug, Default)]
pub struct AnonymousRefusals {
    window_start: u64,
    suppressed: u64,
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Link settings an admin may change at run time (`/v1/settings`); the service config gives the defaults.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSettings {
    /// Shortest link TTL, seconds.
    pub min_ttl: u32,
    /// Longest link TTL, seconds (never above the token policy's maximum).
    pub max_ttl: u32,
    /// TTL when a request gives none.
    pub default_ttl: u32,
}

/// The link settings in force: stored by an admin, else the service config.
pub async fn link_settings(s: &AppState) -> Result<LinkSettings, ApiError> {
    if let Some(v) = s.get_hot(Ns::Settings, "links").await? {
        return serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("settings: {e}")));
    }
    Ok(LinkSettings {
        min_ttl: s.config.min_ttl,
        max_ttl: s.config.max_ttl,
        default_ttl: s.config.default_ttl,
    })
}

async fn get_settings(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReadSettings>,
) -> Result<Json<LinkSettings>, ApiError> {
    Ok(Json(link_settings(&s).await?))
}

async fn put_settings(
    State(s): State<Arc<AppState>>,
    c: Authorized<ChangeSettings>,
    JsonBody(new): JsonBody<LinkSettings>,
) -> Result<Json<LinkSettings>, ApiError> {
    if new.min_ttl == 0 || new.min_ttl > new.max_ttl || new.max_ttl > s.policy.max_ttl {
        return Err(ApiError::Invalid(format!(
            "need 0 < min_ttl <= max_ttl <= {} (the token policy's maximum)",
            s.policy.max_ttl
        )));
    }
    if new.default_ttl < new.min_ttl || new.default_ttl > new.max_ttl {
        return Err(ApiError::Invalid(
            "default_ttl must lie between min_ttl and max_ttl".into(),
        ));
    }
    let bytes = serde_json::to_vec(&new).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.put(Ns::Settings, "links", &bytes).await?;
    s.invalidate_hot(Ns::Settings, "links");
    audit(&s, &c, "settings.update", "links", "ok").await?;
    Ok(Json(new))
}

/// Mint a token and record it before it is handed out: its id, iat and exp in the issued log (the revocation
/// filter is exact only over tokens the control plane knows about) and its link record by id (for revocation by id
/// and diagnosis), in one transaction. `build(iat)` makes the claims for an issue time.
///
/// The record is written only if `iat` is not below the issued-log horizon ([`snapshot::ISSUED_HORIZON`]), in
/// the same transaction: a snapshot builder first raises the horizon to its cut-off, then reads the log, so every
/// record with `iat < cutoff` is either already in the log it reads or refused here. A refused mint is minted
/// again at `iat = horizon` (the token was never handed out). This is what makes a snapshot's issued set complete
/// by construction, whatever the replicas' clocks and however late a record becomes visible.
pub(crate) async fn mint_recorded<'a>(
    s: &AppState,
    token_id: &[u8; 12],
    asset: &str,
    share: Option<&str>,
    unchanged: &[Check<'_>],
    build: impl Fn(u32) -> Claims<'a>,
) -> Result<(String, Claims<'a>), ApiError> {
    mint_recorded_audited(s, token_id, asset, share, unchanged, None, build).await
}

/// [`mint_recorded`], with the call's audit entry (made by [`audit_entry`]) appended with the record
/// ([`Store::atomic_chained`]): on the embedded store in the same transaction, so the mint and its entry are one
/// group commit and survive a crash together; on Redis right after the record, as a separate [`audit`] would.
pub(crate) async fn mint_recorded_audited<'a>(
    s: &AppState,
    token_id: &[u8; 12],
    asset: &str,
    share: Option<&str>,
    unchanged: &[Check<'_>],
    audited: Option<&[u8]>,
    build: impl Fn(u32) -> Claims<'a>,
) -> Result<(String, Claims<'a>), ApiError> {
    let now = s.now();
    let mut iat = u32::try_from(now).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    // Two rounds suffice unless builders keep raising the horizon past this replica's clock; a few more cost
    // nothing and keep a slow writer from failing under a burst of snapshot builds.
    for _ in 0..4 {
        let claims = build(iat);
        let token = s
            .minter
            .current()
            .minter
            .mint(&claims)
            .map_err(|e| ApiError::Invalid(format!("cannot mint: {e}")))?;
        let mut rec = Vec::with_capacity(20);
        rec.extend_from_slice(token_id);
        rec.extend_from_slice(&claims.iat.to_be_bytes());
        rec.extend_from_slice(&claims.exp.to_be_bytes());
        let link = revocations::LinkRecord {
            iat: claims.iat,
            exp: claims.exp,
            asset: asset.to_string(),
            share: share.map(str::to_string),
        };
        let link = serde_json::to_vec(&link).map_err(|e| ApiError::Internal(e.to_string()))?;
        let link_key = revocations::link_key(token_id);
        let minted = analytics::mint_entry(now, &claims, asset, share).unwrap_or_default();
        // A viewer's tokens by asset, for entitlement invalidation (`entitlement::viewer_tokens`).
        let by_viewer = claims
            .viewer
            .map(|v| format!("{}{link_key}", entitlement::viewer_index_prefix(v.as_str(), asset)));
        let exp_text = claims.exp.to_string();
        let checks = [Check::CounterAtMost {
            counter: snapshot::ISSUED_HORIZON,
            value: u64::from(claims.iat),
        }]
        .into_iter()
        .chain(unchanged.iter().copied())
        .collect::<Vec<_>>();
        let ops = [
            Op::Append {
                log: Log::Issued,
                value: &rec,
            },
            Op::Put {
                ns: Ns::Links,
                key: &link_key,
                value: &link,
            },
            // The funnel's first stage, counted with the mint itself.
            Op::Append {
                log: Log::Beacons,
                value: &minted,
            },
        ]
        .into_iter()
        .chain(by_viewer.as_deref().map(|key| Op::Put {
            ns: Ns::Links,
            key,
            value: exp_text.as_bytes(),
        }))
        .collect::<Vec<_>>();
        let written = match audited {
            Some(entry) => s
                .store
                .atomic_chained(&checks, &ops, Log::Audit, entry)
                .await?
                .is_some(),
            None => s.store.atomic(&checks, &ops).await?.is_some(),
        };
        if written {
            return Ok((token, claims));
        }
        // Sealed past `iat` by a snapshot build (mint again past the horizon), or the record the caller wanted
        // unchanged has changed (the caller decides again).
        let horizon = s.store.counter(snapshot::ISSUED_HORIZON).await?;
        let horizon = u32::try_from(horizon).map_err(|_| ApiError::Internal("issued horizon beyond 2106".into()))?;
        if horizon <= claims.iat && !unchanged.is_empty() {
            return Err(ApiError::Conflict(
                "the record this mint depends on changed; retry".into(),
            ));
        }
        // The horizon is normally a lag behind every clock. Ahead of this replica's clock by more than half a lag,
        // some builder's clock is at least 1.5 lags ahead of ours: re-minting past it would carry that clock's error
        // into every replica's tokens, so refuse, loudly, until the clocks agree.
        let now = s.now();
        if u64::from(horizon) > now + u64::from(snapshot::CUTOFF_LAG_SECS / 2) {
            return Err(ApiError::ClockSkew(format!(
                "the issued-log horizon ({horizon}) is {} s ahead of this replica's clock; check the clocks of \
                 every control-plane replica (sharegate doctor)",
                u64::from(horizon) - now
            )));
        }
        // Past the horizon by half the builders' lag (builders keep raising it, one second per second); by the check
        // above that is at most a lag past this replica's clock, well within the verifier's leeway. A replica whose
        // clock is right never gets here; one whose clock is behind mints tokens whose `iat` is still in everyone
        // else's past. Watermarks cover such tokens (`snapshot::watermark_through`).
        let ahead = u64::from(horizon) + u64::from(snapshot::CUTOFF_LAG_SECS / 2);
        iat = u32::try_from(ahead.max(now)).unwrap_or(horizon).max(horizon);
    }
    Err(ApiError::Conflict(
        "the issued log kept being sealed past this mint; retry".into(),
    ))
}

/// `POST /v1/links` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// Asset id.
    pub asset: String,
    /// Lifetime, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// Viewer id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Share id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Client IP binding (`addr/len` or an address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Allowed countries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_countries: Option<Vec<String>>,
    /// Denied countries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_countries: Option<Vec<String>>,
    /// Embed origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embed_origin: Option<String>,
    /// Channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Watermark id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// Entitlement tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<u8>,
}

/// `POST /v1/links` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct LinkResponse {
    /// The playable URL.
    pub url: String,
    /// The token alone.
    pub token: String,
    /// Its id (hex): what revocations name.
    pub token_id: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

async fn mint_link(
    State(s): State<Arc<AppState>>,
    c: Authorized<MintLinks>,
    JsonBody(req): JsonBody<LinkRequest>,
) -> Result<Json<LinkResponse>, ApiError> {
    let minted = mint_link_as(&s, &c, req).await;
    // The caller may have been authenticated from this replica's key cache, which a refusal before the commit does
    // not re-check: what the refusal says (no such asset, not entitled) is for a key that is still valid, so a key
    // disabled since gets its 401 instead.
    if let Err(e) = &minted
        && !matches!(e, ApiError::Unauthenticated | ApiError::BadCredential)
        && let Err(ApiError::BadCredential) = auth::authenticate_hash(s.store.as_ref(), c.key.hash.clone()).await
    {
        s.api_keys.invalidate(&c.key.hash);
        return Err(ApiError::BadCredential);
    }
    minted
}

async fn mint_link_as(s: &AppState, c: &Caller, req: LinkRequest) -> Result<Json<LinkResponse>, ApiError> {
    // Links only for registered assets whose last readiness check found nothing wrong.
    assets::ensure_ready(s, &req.asset).await?;
    let bounds = link_settings(s).await?;
    let ttl = req.ttl.unwrap_or(bounds.default_ttl);
    if ttl < bounds.min_ttl || ttl > bounds.max_ttl.min(s.policy.max_ttl) {
        return Err(ApiError::Invalid(format!(
            "ttl must be between {} and {} seconds",
            bounds.min_ttl,
            bounds.max_ttl.min(s.policy.max_ttl)
        )));
    }
    let token_id = revocations::new_token_id()?;
    let ip = req
        .ip
        .as_deref()
        .map(|s| crate::tokens::parse_prefix(s).map_err(|e| ApiError::Invalid(format!("ip: {e}"))))
        .transpose()?;
    let codes = |v: &Option<Vec<String>>| {
        v.as_ref().map(|l| {
            l.iter()
                .flat_map(|c| c.to_ascii_uppercase().into_bytes())
                .collect::<Vec<u8>>()
        })
    };
    let (allow, deny) = (codes(&req.allow_countries), codes(&req.deny_countries));
    if allow.is_some() && deny.is_some() {
        return Err(ApiError::Invalid(
            "give allow_countries or deny_countries, not both".into(),
        ));
    }
    // The asset's access policy, and for `entitled` the product's backend: what it allows bounds the token.
    let ask = entitlement::Ask {
        purpose: entitlement::Purpose::Link,
        viewer: req.viewer.as_deref(),
        asset: &req.asset,
        share: req.share.as_deref(),
        share_access: entitlement::Access::Public,
        channel: req.channel.as_deref(),
        campaign: req.campaign.as_deref(),
        country: None,
    };
    // A refusal is audited by `audit_failures`, with its status.
    let grant = entitlement::authorize(s, &ask).await?;
    let bounded = |iat: u32| match &grant {
        Some(g) => g.bound(iat, iat + ttl, req.entitlement),
        None => (iat + ttl, req.entitlement),
    };
    let build = |iat: u32| Claims {
        token_id,
        iat,
        nbf: iat,
        exp: bounded(iat).0,
        permissions: Permissions::PLAYBACK,
        asset: Some(Text::from(req.asset.as_str())),
        share: req.share.as_deref().map(Text::from),
        viewer: req.viewer.as_deref().map(Text::from),
        session: req.session.as_deref().map(Text::from),
        campaign: req.campaign.as_deref().map(Text::from),
        channel: req.channel.as_deref().map(Text::from),
        ip,
        countries: allow
            .as_deref()
            .map(Countries::Allow)
            .or(deny.as_deref().map(Countries::Deny)),
        origin: req.embed_origin.as_deref().map(Text::from),
        watermark: req.watermark.as_deref().map(str::as_bytes),
        tier: bounded(iat).1,
        ..Claims::default()
    };
    // The audit entry is written with the mint's record (one transaction on the embedded store).
    let entry = audit_entry(c, "links.mint", &req.asset, "ok")?;
    // Committed only while the caller's key record is still the one that authenticated it (perhaps from this
    // replica's key cache, see `auth::KeyCache`). If it changed, authenticate again from the store: a deleted or
    // disabled key gets its 401 and nothing is written; a key that still may mint mints again.
    let mut key = c.key.clone();
    let mut fresh = false;
    let minted = loop {
        let unchanged = [key.unchanged()];
        let r = mint_recorded_audited(
            s,
            &token_id,
            &req.asset,
            req.share.as_deref(),
            &unchanged,
            Some(&entry),
            &build,
        )
        .await;
        if fresh || !matches!(r, Err(ApiError::Conflict(_))) {
            break r;
        }
        s.api_keys.invalidate(&key.hash);
        let again = auth::authenticate_hash(s.store.as_ref(), key.hash.clone()).await?;
        again.require(MintLinks::ROLES, MintLinks::ACTION)?;
        key = again.key;
        fresh = true;
    };
    let (token, claims) = match (minted, &grant) {
        // The entitlement ended between the check and the mint's issue time: a refusal, not a bad request.
        (Err(_), Some(g)) if g.ended_by(s.now()) => return Err(g.ended().into()),
        (r, _) => r?,
    };
    Ok(Json(LinkResponse {
        url: link_url(s, &token, &req.asset),
        token,
        token_id: hex::encode(token_id),
        expires_at: u64::from(claims.exp),
    }))
}

/// `POST /v1/apikeys` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyRequest {
    /// The new key's role.
    pub role: Role,
    /// A label for listings (default empty). A string: `null` is refused like any other wrong type, as the schema
    /// says, rather than read as "no label".
    #[serde(default)]
    pub label: String,
}

/// `POST /v1/apikeys` answer: the key itself, shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct ApiKeyCreated {
    /// Public id, for listings and the audit log.
    pub id: String,
    /// The key (`sg_<role>_...`); only its hash is stored.
    pub key: String,
    /// A human label.
    pub label: String,
    /// Its role.
    pub role: Role,
}

async fn create_api_key(
    State(s): State<Arc<AppState>>,
    c: Authorized<ManageApiKeys>,
    JsonBody(req): JsonBody<ApiKeyRequest>,
) -> Result<(StatusCode, axum::Extension<idempotency::ShownOnce>, Json<ApiKeyCreated>), ApiError> {
    let role = req.role;
    let label = req.label;
    if label.len() > 200 {
        return Err(ApiError::Invalid("label is at most 200 bytes".into()));
    }
    let (key, rec) = auth::new_key(role, &label, now())?;
    auth::store_key(s.store.as_ref(), &key, &rec).await?;
    audit(&s, &c, "apikeys.create", &rec.id, "ok").await?;
    // The key is shown once, here; only its hash is stored (and the idempotency layer keeps no copy of this answer).
    Ok((
        StatusCode::CREATED,
        axum::Extension(idempotency::ShownOnce),
        Json(ApiKeyCreated {
            id: rec.id,
            key,
            label: rec.label,
            role,
        }),
    ))
}

async fn list_api_keys(
    State(s): State<Arc<AppState>>,
    _: Authorized<ListApiKeys>,
) -> Result<Json<Vec<auth::ApiKeyRecord>>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in s.store.scan(Ns::ApiKeys, "").await? {
        out.push(serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("api key record: {e}")))?);
    }
    Ok(Json(out))
}

async fn disable_api_key(
    State(s): State<Arc<AppState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    c: Authorized<ManageApiKeys>,
) -> Result<Json<auth::ApiKeyRecord>, ApiError> {
    for (hash, v) in s.store.scan(Ns::ApiKeys, "").await? {
        let mut rec: auth::ApiKeyRecord =
            serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("api key record: {e}")))?;
        if rec.id == id {
            rec.disabled = true;
            let bytes = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
            s.store.put(Ns::ApiKeys, &hash, &bytes).await?;
            // Other replicas' caches learn it at their callers' next commit (`auth::KeyCache`).
            s.api_keys.invalidate(&hash);
            audit(&s, &c, "apikeys.disable", &id, "ok").await?;
            return Ok(Json(rec));
        }
    }
    Err(ApiError::NotFound("api key"))
}

#[cfg(test)]
mod tests {
    use super::api::*;

    // A client sending these types must send what the service reads: absent options left out (shares refuse `null`).
    #[test]
    fn requests_serialize_to_what_the_service_reads() {
        let share: ShareRequest =
            serde_json::from_str(r#"{"asset":"demo","audience":"public"}"#).unwrap_or_else(|e| panic!("{e}"));
        let wire = serde_json::to_string(&share).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wire, r#"{"asset":"demo","audience":"public"}"#);
        let link: LinkRequest = serde_json::from_str(r#"{"asset":"demo","ttl":600}"#).unwrap_or_else(|e| panic!("{e}"));
        let wire = serde_json::to_string(&link).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wire, r#"{"asset":"demo","ttl":600}"#);
        let rev: RevocationRequest =
            serde_json::from_str(r#"{"kind":"global","reason":"x"}"#).unwrap_or_else(|e| panic!("{e}"));
        let wire = serde_json::to_string(&rev).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(wire, r#"{"kind":"global","reason":"x"}"#);
        let key: ApiKeyRequest = serde_json::from_str(r#"{"role":"auditor"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(key.role, Role::Auditor);
    }
}
