//! Paid and entitled access: who may get a token for an asset, asked once per viewer and asset of the product's
//! backend, cached, enforced in the token itself and explained.
//!
//! - **Access policy** per asset (`PUT /v1/assets/{id}/access`, admin) and per share (the share's `access`, set by
//!   its minter): `public` (anyone the link reaches), `viewer` (a viewer id is required) or `entitled` (the backend
//!   must allow). A share's token obeys the stricter of its share's and its asset's.
//! - **The check** ([`authorize`]) runs where tokens are minted: `POST /v1/links`, a share's open and the player's
//!   refresh. Its answer bounds the token: `exp` never past `valid_until` (bit 7 of the tier claim then tells edges
//!   the end is the entitlement's, enforced without leeway), the lifetime within `max_ttl`, the plan in the tier.
//! - **Failure policy** when the backend gives no answer: `deny` (default), `allow`, or `cached_only` (a decision
//!   cached earlier, though no longer fresh, still decides; never past its `valid_until`).
//! - **Invalidation** (`POST /v1/entitlements/invalidate`): the viewer's cached decisions go, on every replica
//!   within [`super::HOT_CACHE_TTL`] (an epoch in the store), and optionally the viewer's tokens are revoked.

pub mod hook;

use super::auth::{InvalidateEntitlements, ReadAssets, RegisterAssets};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::revocations::{self, RevocationKind, RevocationReceipt, RevocationRequest};
use super::{AppState, audit};
use crate::store::{Check, Ns, Op};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use hook::{CacheUse, CallError, Hook, HookAnswer, HookRequest, HookSettings, Outcome};
use serde::{Deserialize, Serialize};
use sharegate_shared::token::tier;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Who may get a token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone the link reaches (what every asset and share was before access policies).
    #[default]
    Public,
    /// A viewer id is required (from the minter, or the product's auth proxy for shares).
    Viewer,
    /// A viewer id, and the entitlement backend must allow.
    Entitled,
}

impl Access {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::Viewer => "viewer",
            Access::Entitled => "entitled",
        }
    }
}

/// What decides when the backend gives no answer (timeout, error, open breaker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Refuse (fail closed).
    #[default]
    Deny,
    /// Mint as if allowed, with no plan and no entitlement end (fail open).
    Allow,
    /// A cached decision decides, however old (never past its `valid_until`); none cached: refuse.
    CachedOnly,
}

impl FailurePolicy {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Deny => "deny",
            FailurePolicy::Allow => "allow",
            FailurePolicy::CachedOnly => "cached_only",
        }
    }

    /// Parse the setting's value.
    pub fn parse(s: &str) -> Option<Self> {
        [FailurePolicy::Deny, FailurePolicy::Allow, FailurePolicy::CachedOnly]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// The deployment's entitlement settings.
#[derive(Debug, Clone, Default)]
pub struct EntitlementSettings {
    /// The hook's URL, secret, timeout, cache and breaker.
    pub hook: HookSettings,
    /// What decides without an answer.
    pub failure_policy: FailurePolicy,
}

/// The service's entitlement runtime.
pub struct Entitlements {
    /// The backend client with its cache.
    pub hook: Hook,
    /// The failure policy.
    pub failure_policy: FailurePolicy,
    /// The store's invalidation epoch as last read, and when.
    epoch: Mutex<(Option<Instant>, u64)>,
}

impl Entitlements {
    /// The runtime for these settings.
    pub fn new(settings: EntitlementSettings) -> Self {
        Entitlements {
            hook: Hook::new(settings.hook),
            failure_policy: settings.failure_policy,
            epoch: Mutex::new((None, 0)),
        }
    }
}

/// Counter holding the invalidation epoch (bumped by every invalidation).
const EPOCH: &str = "entitlement_epoch";

/// The store key of an asset's access policy (in `Ns::Settings`).
fn asset_key(asset: &str) -> String {
    format!("access/{asset}")
}

/// The store key of a viewer's last invalidation epoch (in `Ns::Settings`).
fn invalidated_key(viewer: &str) -> String {
    format!("entinv/{viewer}")
}

/// An asset's access policy as stored and returned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetAccess {
    /// Who may get a token for the asset.
    pub access: Access,
    /// This asset's own entitlement backend (http or https URL), instead of the deployment's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_url: Option<String>,
}

/// An asset's access policy (public when none was set).
pub async fn asset_access(s: &AppState, asset: &str) -> Result<AssetAccess, ApiError> {
    match s.get_hot(Ns::Settings, &asset_key(asset)).await? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("access policy: {e}"))),
        None => Ok(AssetAccess::default()),
    }
}

/// Why a token is asked for (sent to the backend as `purpose`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `POST /v1/links`.
    Link,
    /// A share's first token for a page or player.
    ShareOpen,
    /// The player's next token.
    Refresh,
    /// `POST /v1/diagnose` asking on a responder's behalf.
    Diagnose,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Link => "link",
            Purpose::ShareOpen => "share_open",
            Purpose::Refresh => "refresh",
            Purpose::Diagnose => "diagnose",
        }
    }
}

/// A token request to authorize.
#[derive(Debug, Clone)]
pub struct Ask<'a> {
    /// Why.
    pub purpose: Purpose,
    /// The viewer, if known.
    pub viewer: Option<&'a str>,
    /// The asset.
    pub asset: &'a str,
    /// The share, if the token is for one.
    pub share: Option<&'a str>,
    /// The share's own access policy (public for links).
    pub share_access: Access,
    /// Attribution.
    pub channel: Option<&'a str>,
    /// Attribution.
    pub campaign: Option<&'a str>,
    /// The client's country, from a trusted source.
    pub country: Option<&'a str>,
}

/// What an allowed check bounds the token by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The plan, for the tier claim.
    pub plan: Option<String>,
    /// The entitlement's end, Unix seconds.
    pub valid_until: Option<u64>,
    /// Longest token lifetime, seconds.
    pub max_ttl: Option<u32>,
}

impl Grant {
    /// Whether the entitlement has ended by `iat` (no token may be minted then).
    pub fn ended_by(&self, iat: u64) -> bool {
        self.valid_until.is_some_and(|u| u <= iat)
    }

    /// The token's expiry and tier for a token issued at `iat` that would expire at `exp` with tier `tier_claim`:
    /// `exp` brought within `max_ttl` and `valid_until` (then marked as the entitlement's end), the plan in the tier.
    /// Never past `valid_until`; at or before `iat` when the entitlement has ended (which the minter refuses).
    pub fn bound(&self, iat: u32, exp: u32, tier_claim: Option<u8>) -> (u32, Option<u8>) {
        let mut exp = exp;
        if let Some(m) = self.max_ttl {
            exp = exp.min(iat.saturating_add(m));
        }
        let mut ends = false;
        if let Some(until) = self.valid_until {
            let until = u32::try_from(until).unwrap_or(u32::MAX);
            if until <= exp {
                exp = until;
                ends = true;
            }
        }
        let mut t = match &self.plan {
            Some(p) => Some(tier::plan_code(p)),
            None => tier_claim,
        };
        if ends {
            t = Some(t.unwrap_or(tier::PLAN_NONE) | tier::ENDS_ENTITLEMENT);
        }
        (exp, t)
    }

    /// The refusal for a grant that ended before its token could be minted.
    pub fn ended(&self) -> Denial {
        Denial::ended(self.plan.as_deref(), self.valid_until.unwrap_or(0))
    }
}

/// A refused check: an HTTP status, a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// 403, or 503 when the backend could not be asked and the policy refuses.
    pub status: StatusCode,
    /// `viewer_required`, `entitlement_denied`, `trial_ended`, `entitlement_ended`, `entitlement_unavailable`.
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl Denial {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Denial {
            status,
            code,
            message: message.into(),
        }
    }

    /// The end of an entitlement (`trial_ended` for a trial).
    fn ended(plan: Option<&str>, at: u64) -> Self {
        let when = super::observe::diagnose::fmt_time(at);
        if plan == Some("trial") {
            Denial::new(
                StatusCode::FORBIDDEN,
                "trial_ended",
                format!("the viewer's trial ended at {when}"),
            )
        } else {
            Denial::new(
                StatusCode::FORBIDDEN,
                "entitlement_ended",
                format!("the viewer's entitlement ended at {when}"),
            )
        }
    }
}

impl From<ApiError> for Denial {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Access(d) => d,
            e => Denial::new(e.status(), e.code(), e.to_string()),
        }
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        ApiError::Access(d)
    }
}

/// Decide whether `ask` may get a token now: `Ok(None)` for public access (nothing to bound), `Ok(Some(grant))`
/// when a viewer or the backend allowed, else the refusal.
pub async fn authorize(s: &AppState, ask: &Ask<'_>) -> Result<Option<Grant>, Denial> {
    let asset = asset_access(s, ask.asset).await?;
    let access = asset.access.max(ask.share_access);
    if access == Access::Public {
        return Ok(None);
    }
    let Some(viewer) = ask.viewer.filter(|v| !v.is_empty()) else {
        return Err(Denial::new(
            StatusCode::FORBIDDEN,
            "viewer_required",
            format!("access to {} needs a viewer id ({} access)", ask.asset, access.as_str()),
        ));
    };
    if access == Access::Viewer {
        return Ok(Some(Grant::default()));
    }
    let started = Instant::now();
    let (result, cache) = decide(s, &asset, viewer, ask).await;
    let outcome = match &result {
        Ok(_) => Outcome::Allow,
        Err(d) if d.status == StatusCode::FORBIDDEN => Outcome::Deny,
        Err(_) => Outcome::Error,
    };
    hook::observe(outcome, cache, started.elapsed());
    result.map(Some)
}

/// The backend URL for an asset: its own, else the deployment's.
fn backend_url(s: &AppState, asset: &AssetAccess) -> Option<Arc<str>> {
    asset
        .entitlement_url
        .as_deref()
        .or(s.entitlements.hook.settings.url.as_deref())
        .map(Arc::from)
}

/// The cached or fetched decision for `viewer`, with where it came from.
async fn decide(s: &AppState, asset: &AssetAccess, viewer: &str, ask: &Ask<'_>) -> (Result<Grant, Denial>, CacheUse) {
    let ents = &s.entitlements;
    let Some(url) = backend_url(s, asset) else {
        return (fail(s, None, &CallError::NotConfigured), CacheUse::Miss);
    };
    let key = (url, viewer.to_string(), ask.asset.to_string());
    let cached = ents.hook.cache.get(&key);
    if let Some(c) = &cached
        && Instant::now() < c.fresh_until
    {
        match still_valid(s, viewer, c.epoch).await {
            Ok(true) => return (grant(c.answer.clone()), CacheUse::Hit),
            Ok(false) => {}
            Err(e) => return (Err(e.into()), CacheUse::Hit),
        }
    }
    let epoch = match s.store.counter(EPOCH).await {
        Ok(e) => e,
        Err(e) => return (Err(ApiError::from(e).into()), CacheUse::Miss),
    };
    let req = HookRequest {
        request_id: request_id(),
        purpose: ask.purpose.as_str().into(),
        viewer: viewer.to_string(),
        asset: ask.asset.to_string(),
        share: ask.share.map(str::to_string),
        channel: ask.channel.map(str::to_string),
        campaign: ask.campaign.map(str::to_string),
        country: ask.country.map(str::to_string),
        timestamp: super::now(),
    };
    match ents.hook.fly(&key, &req, epoch).await {
        Ok(c) => (grant(c.answer), CacheUse::Miss),
        Err(e) => {
            tracing::warn!(code = e.code(), asset = ask.asset, "entitlement check failed: {e}");
            // A cached decision kept past its freshness: only `cached_only` uses it.
            let stale = cached.filter(|_| ents.failure_policy == FailurePolicy::CachedOnly);
            let use_ = if stale.is_some() {
                CacheUse::Stale
            } else {
                CacheUse::Miss
            };
            (fail(s, stale.map(|c| c.answer), &e), use_)
        }
    }
}

/// Whether a decision cached at `epoch` survives every invalidation since: the store's epoch is read at most once
/// per [`super::HOT_CACHE_TTL`], the viewer's own only when the epoch moved past the entry's.
async fn still_valid(s: &AppState, viewer: &str, epoch: u64) -> Result<bool, ApiError> {
    let current = {
        let held = *s.entitlements.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        match held {
            (Some(at), e) if at.elapsed() < super::HOT_CACHE_TTL => e,
            _ => {
                let e = s.store.counter(EPOCH).await?;
                *s.entitlements.epoch.lock().unwrap_or_else(PoisonError::into_inner) = (Some(Instant::now()), e);
                e
            }
        }
    };
    if current <= epoch {
        return Ok(true);
    }
    let Some(v) = s.get_hot(Ns::Settings, &invalidated_key(viewer)).await? else {
        return Ok(true);
    };
    let at: u64 = String::from_utf8_lossy(&v).parse().unwrap_or(u64::MAX);
    Ok(at <= epoch)
}

/// A backend's answer as a grant or a refusal.
fn grant(a: HookAnswer) -> Result<Grant, Denial> {
    let now = super::now();
    if !a.allow {
        let why = a.reason.as_deref().unwrap_or("not entitled");
        return Err(Denial::new(
            StatusCode::FORBIDDEN,
            "entitlement_denied",
            format!("the entitlement backend refused this viewer: {why}"),
        ));
    }
    if let Some(until) = a.valid_until
        && until <= now
    {
        return Err(Denial::ended(a.plan.as_deref(), until));
    }
    Ok(Grant {
        plan: a.plan,
        valid_until: a.valid_until,
        max_ttl: a.max_ttl,
    })
}

/// The failure policy's decision when the backend gave no answer.
fn fail(s: &AppState, stale: Option<HookAnswer>, e: &CallError) -> Result<Grant, Denial> {
    let unavailable = || {
        Denial::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "entitlement_unavailable",
            format!(
                "the viewer's entitlement cannot be checked now ({}); try again shortly",
                e.code()
            ),
        )
    };
    let r = match s.entitlements.failure_policy {
        FailurePolicy::Deny => Err(unavailable()),
        FailurePolicy::Allow => Ok(Grant::default()),
        FailurePolicy::CachedOnly => match stale {
            Some(a) => grant(a),
            None => Err(unavailable()),
        },
    };
    hook::count_failure_decision(r.is_ok());
    r
}

fn request_id() -> String {
    let mut b = [0u8; 12];
    // Without OS randomness a constant id is still a valid id; backends that refuse replays would refuse it.
    let _ = getrandom::fill(&mut b);
    format!("ent_{}", hex::encode(b))
}

// ---------------------------------------------------------------------------------------------------------------
// API

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/assets/{id}/access", get(get_access).put(put_access))
        .route("/v1/entitlements/invalidate", post(invalidate))
}

async fn get_access(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    _: Authorized<ReadAssets>,
) -> Result<Json<AssetAccess>, ApiError> {
    super::assets::registered(&s, &id).await?;
    Ok(Json(asset_access(&s, &id).await?))
}

/// Check an entitlement URL an admin gives: http(s), no credentials in it, bounded.
pub fn check_url(u: &str) -> Result<(), ApiError> {
    let ok = (u.starts_with("https://") || u.starts_with("http://"))
        && u.len() <= 512
        && !u.contains(char::is_whitespace)
        && !u
            .split_once("://")
            .is_some_and(|(_, rest)| rest.split('/').next().unwrap_or("").contains('@'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(
            "entitlement_url must be an http(s) URL of at most 512 bytes, without credentials in it".into(),
        ))
    }
}

async fn put_access(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    c: Authorized<RegisterAssets>,
    JsonBody(req): JsonBody<AssetAccess>,
) -> Result<Json<AssetAccess>, ApiError> {
    super::assets::registered(&s, &id).await?;
    if let Some(u) = &req.entitlement_url {
        check_url(u)?;
    }
    let bytes = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.put(Ns::Settings, &asset_key(&id), &bytes).await?;
    s.invalidate_hot(Ns::Settings, &asset_key(&id));
    audit(&s, &c, "assets.access", &format!("{id}:{}", req.access.as_str()), "ok").await?;
    Ok(Json(req))
}

/// `POST /v1/entitlements/invalidate` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvalidateRequest {
    /// The viewer whose decisions are dropped.
    pub viewer: String,
    /// Only this asset's (default: every asset's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// Also revoke the viewer's tokens (for the asset, if one is named) at the edge. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub revoke: bool,
    /// With `revoke`: purge the revoked tokens' cached objects at every configured CDN.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
    /// Why (kept in the revocation and the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/entitlements/invalidate` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidateReceipt {
    /// The viewer.
    pub viewer: String,
    /// The asset, if one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset: Option<String>,
    /// The invalidation epoch: decisions fetched before it are no longer used, on every replica within a second.
    pub epoch: u64,
    /// Unix seconds.
    pub at: u64,
    /// The revocations made (one for the viewer; one per live token of the viewer for the asset).
    pub revocations: Vec<RevocationReceipt>,
}

/// Most tokens revoked one by one for a viewer and an asset; beyond it the viewer's every token is revoked.
pub const MAX_TOKEN_REVOCATIONS: usize = 100;

async fn invalidate(
    State(s): State<Arc<AppState>>,
    c: Authorized<InvalidateEntitlements>,
    JsonBody(req): JsonBody<InvalidateRequest>,
) -> Result<(StatusCode, Json<InvalidateReceipt>), ApiError> {
    if req.viewer.is_empty() || req.viewer.len() > 128 || req.viewer.chars().any(char::is_control) {
        return Err(ApiError::Invalid("viewer is 1 to 128 bytes of text".into()));
    }
    if req.purge && !req.revoke {
        return Err(ApiError::Invalid(
            "purge needs revoke: true (only revoked tokens are purged)".into(),
        ));
    }
    if let Some(a) = &req.asset {
        super::assets::registered(&s, a).await?;
    }
    // The epoch first, then the viewer's mark: a decision fetched after the bump sees the backend's new answer.
    let epoch = s.store.incr(EPOCH, 1).await?;
    let key = invalidated_key(&req.viewer);
    let mark = epoch.to_string();
    s.store
        .atomic(
            &[] as &[Check<'_>],
            &[Op::Put {
                ns: Ns::Settings,
                key: &key,
                value: mark.as_bytes(),
            }],
        )
        .await?;
    s.invalidate_hot(Ns::Settings, &key);
    *s.entitlements.epoch.lock().unwrap_or_else(PoisonError::into_inner) = (None, epoch);
    let viewer = req.viewer.clone();
    let asset = req.asset.clone();
    let _ = s
        .entitlements
        .hook
        .cache
        .invalidate_entries_if(move |k, _| k.1 == viewer && asset.as_ref().is_none_or(|a| *a == k.2));
    let mut receipts = Vec::new();
    if req.revoke {
        let reason = req.reason.clone().or_else(|| Some("entitlement invalidated".into()));
        let targets = match &req.asset {
            Some(asset) => {
                let live = viewer_tokens(&s, &req.viewer, asset).await?;
                if live.len() > MAX_TOKEN_REVOCATIONS {
                    vec![(RevocationKind::Viewer, req.viewer.clone())]
                } else {
                    live.into_iter().map(|id| (RevocationKind::Token, id)).collect()
                }
            }
            None => vec![(RevocationKind::Viewer, req.viewer.clone())],
        };
        for (kind, id) in targets {
            let r = RevocationRequest {
                kind,
                id: Some(id),
                token: None,
                reason: reason.clone(),
                purge: req.purge,
            };
            receipts.push(revocations::revoke(&s, &c, &r).await?);
        }
    }
    let subject = match &req.asset {
        Some(a) => format!("{}:{a}", req.viewer),
        None => req.viewer.clone(),
    };
    audit(&s, &c, "entitlements.invalidate", &subject, "ok").await?;
    Ok((
        StatusCode::OK,
        Json(InvalidateReceipt {
            viewer: req.viewer,
            asset: req.asset,
            epoch,
            at: super::now(),
            revocations: receipts,
        }),
    ))
}

/// The viewer's tokens for `asset` that have not expired, by id (hex), from the index written with each mint.
async fn viewer_tokens(s: &AppState, viewer: &str, asset: &str) -> Result<Vec<String>, ApiError> {
    let now = s.now();
    let mut live = Vec::new();
    for (key, v) in s.store.scan(Ns::Links, &viewer_index_prefix(viewer, asset)).await? {
        let exp: u64 = String::from_utf8_lossy(&v).parse().unwrap_or(0);
        let Some(suffix) = key.rsplit('/').next() else { continue };
        let id = super::revocations::id_of_link_key(suffix);
        if exp + u64::from(s.policy.leeway) > now {
            live.push(id.to_string());
        } else {
            // Expired: the index entry has done its work.
            let _ = s.store.delete(Ns::Links, &key).await;
        }
    }
    Ok(live)
}

/// The prefix of a viewer's token index entries for an asset (in `Ns::Links`, beside the link records, whose keys
/// are hex digits and a `.` and so never start with `vt/`); each entry's key ends with the token's link key
/// (`revocations::link_key`, or a bare hex id for entries written before it), so a viewer's entries sort by mint
/// time.
pub fn viewer_index_prefix(viewer: &str, asset: &str) -> String {
    format!("vt/{}/{asset}/", hex::encode(viewer.as_bytes()))
}

/// What a diagnosis says about a viewer's entitlement to an asset.
#[derive(Debug, Clone)]
pub struct Explained {
    /// The status a mint would get now (200, 403 or 503).
    pub status: u16,
    /// `ok` or the refusal's code.
    pub code: String,
    /// In words.
    pub text: String,
    /// What to check next.
    pub hints: Vec<String>,
}

/// How a responder's diagnosis sees a viewer's entitlement: the policy, what the backend answers now (asked with
/// purpose `diagnose`, not cached), what this replica has cached, and the breaker.
pub async fn explain(s: &AppState, viewer: &str, asset: &str) -> Result<Explained, ApiError> {
    super::assets::registered(s, asset).await?;
    let policy = asset_access(s, asset).await?;
    let mut hints = Vec::new();
    let ok = |text: String, hints: Vec<String>| Explained {
        status: 200,
        code: "ok".into(),
        text,
        hints,
    };
    match policy.access {
        Access::Public => {
            return Ok(ok(
                format!(
                    "asset {asset} has public access: no viewer id or entitlement check is needed for its links (a \
                     share of it may still ask for them with its own `access`)"
                ),
                hints,
            ));
        }
        Access::Viewer => {
            return Ok(ok(
                format!("asset {asset} needs a viewer id and no entitlement check: viewer {viewer} may get tokens"),
                hints,
            ));
        }
        Access::Entitled => {}
    }
    let Some(url) = backend_url(s, &policy) else {
        hints.push(
            "set SHAREGATE_ENTITLEMENT_URL and SHAREGATE_ENTITLEMENT_SECRET, or the asset's entitlement_url".into(),
        );
        return Ok(Explained {
            status: 503,
            code: "entitlement_unavailable".into(),
            text: format!("asset {asset} needs an entitlement check but no backend is configured"),
            hints,
        });
    };
    let breaker = s.entitlements.hook.breaker(&url).state();
    let cached = s
        .entitlements
        .hook
        .cache
        .get(&(url.clone(), viewer.to_string(), asset.to_string()));
    let req = HookRequest {
        request_id: request_id(),
        purpose: Purpose::Diagnose.as_str().into(),
        viewer: viewer.to_string(),
        asset: asset.to_string(),
        share: None,
        channel: None,
        campaign: None,
        country: None,
        timestamp: super::now(),
    };
    let live = s.entitlements.hook.call(&url, &req).await;
    let mut out = match live {
        Ok(a) => {
            let plan = a.plan.clone();
            let until = a.valid_until;
            match grant(a) {
                Ok(_) => ok(
                    match until {
                        Some(u) => format!(
                            "the entitlement backend allows viewer {viewer} ({}) until {}: tokens for {asset} end then, \
                             mid-play if need be",
                            plan.as_deref().unwrap_or("no plan"),
                            super::observe::diagnose::fmt_time(u)
                        ),
                        None => format!(
                            "the entitlement backend allows viewer {viewer} ({}) with no end",
                            plan.as_deref().unwrap_or("no plan")
                        ),
                    },
                    Vec::new(),
                ),
                Err(d) => Explained {
                    status: d.status.as_u16(),
                    code: d.code.into(),
                    text: d.message,
                    hints: Vec::new(),
                },
            }
        }
        Err(e) => {
            let policy = s.entitlements.failure_policy.as_str();
            let mut hints = vec![format!(
                "while the backend gives no answer, the failure policy `{policy}` decides"
            )];
            if matches!(e, CallError::Status(401)) {
                hints.push("a 401 is the backend refusing our signature: check both sides hold the same secret".into());
            }
            Explained {
                status: 503,
                code: "entitlement_unavailable".into(),
                text: format!("the entitlement backend could not be asked: {e}"),
                hints,
            }
        }
    };
    out.hints.push(format!(
        "this replica's breaker for the backend is {}",
        breaker.as_str()
    ));
    if let Some(c) = cached {
        out.hints.push(format!(
            "this replica holds a decision fetched {} s ago ({})",
            c.fetched.elapsed().as_secs(),
            if c.answer.allow { "allow" } else { "deny" }
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // No token is ever minted with `exp` past the entitlement's `valid_until`, whatever the TTL, the backend's
        // maximum, the plan and the clock; the end is marked exactly when it bounds the token.
        #[test]
        fn no_token_outlives_its_entitlement(
            iat in 1_000_000u32..2_000_000_000,
            ttl in 1u32..200_000,
            until_offset in -10_000i64..300_000,
            max_ttl in proptest::option::of(1u32..100_000),
            plan in proptest::option::of(prop_oneof![Just("trial"), Just("paid"), Just("free"), Just("gold")]),
            caller_tier in proptest::option::of(0u8..=255),
        ) {
            let until = u64::try_from(i64::from(iat) + until_offset).unwrap_or(0);
            let g = Grant { plan: plan.map(str::to_string), valid_until: Some(until), max_ttl };
            let (exp, tier_claim) = g.bound(iat, iat.saturating_add(ttl), caller_tier);
            prop_assert!(u64::from(exp) <= until);
            prop_assert!(exp <= iat.saturating_add(ttl));
            if let Some(m) = max_ttl {
                prop_assert!(exp <= iat.saturating_add(m));
            }
            let candidate = iat.saturating_add(ttl).min(max_ttl.map_or(u32::MAX, |m| iat.saturating_add(m)));
            let caller_marked = plan.is_none() && caller_tier.is_some_and(|t| t & tier::ENDS_ENTITLEMENT != 0);
            prop_assert_eq!(tier::ends_entitlement(tier_claim), until <= u64::from(candidate) || caller_marked);
            prop_assert_eq!(g.ended_by(u64::from(iat)), until <= u64::from(iat));
            if let Some(p) = plan {
                prop_assert_eq!(tier_claim.map(|t| t & !tier::ENDS_ENTITLEMENT), Some(tier::plan_code(p)));
            }
        }
    }

    #[test]
    fn stricter_policy_wins() {
        assert_eq!(Access::Public.max(Access::Entitled), Access::Entitled);
        assert_eq!(Access::Viewer.max(Access::Public), Access::Viewer);
    }

    #[test]
    fn entitlement_urls_are_checked() {
        assert!(check_url("https://billing.example.com/entitled").is_ok());
        assert!(check_url("http://127.0.0.1:9000/x").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("https://user:pw@billing.example.com/").is_err());
        assert!(check_url(&format!("https://x/{}", "a".repeat(600))).is_err());
    }
}
