//! Playback analytics: view ids, beacons, the hourly aggregates, the query, conversions and the raw event stream.
//! Definitions and formats: docs/analytics.md.
//!
//! - `POST /v1/beacons` (anonymous): a player page's cumulative snapshot of its view, bound to a signed view id
//!   ([`viewid`]); checked, rate-limited per client address and appended to [`Log::Beacons`](crate::store::Log).
//! - `POST /v1/conversions` (minter, admin): a conversion against a view, viewer, share or campaign; idempotent by
//!   its `id`.
//! - `GET /v1/analytics` (auditor, admin): rows per asset × share × channel × campaign × hour, grouped and filtered,
//!   with the funnel. `GET /v1/analytics/views/{view}`: one view's record.
//! - Edge events (`POST /v1/edge/events`), mints and the above are applied to the views and rows by [`apply`],
//!   exactly once, in the background and before each query.

pub mod apply;
pub mod export;
pub mod model;
pub mod qoe;
mod query;
pub mod retention;
pub mod viewid;

use super::AppState;
use super::auth::ReportConversions;
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::player::{Peer, client_ip};
use crate::store::{Check, Log, Ns, Op};
use apply::Entry;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use model::{Beacon, CONVERSION_KINDS};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use viewid::{ViewDims, ViewError, ViewKey};

/// Largest beacon body, bytes.
pub const MAX_BEACON_BODY: usize = 4096;
/// Beacons one client address may send per second, sustained.
pub const BEACONS_PER_SEC: f64 = 10.0;
/// Beacons one client address may send in a burst.
pub const BEACON_BURST: f64 = 40.0;
/// Client addresses tracked by the rate limiter; past it, new addresses share one bucket.
pub const MAX_TRACKED_CLIENTS: usize = 50_000;

/// Analytics settings.
#[derive(Debug, Clone)]
pub struct AnalyticsSettings {
    /// Whether player pages carry a view id and send beacons.
    pub enabled: bool,
    /// How long raw inputs (beacons, view records) are kept, seconds; the hourly rows are kept.
    pub raw_retention_secs: u64,
    /// How often a playing page sends a beacon, ms.
    pub beacon_interval_ms: u64,
    /// Where raw events are pushed as NDJSON (at least once), if anywhere.
    pub webhook: Option<String>,
}

impl Default for AnalyticsSettings {
    fn default() -> Self {
        AnalyticsSettings {
            enabled: true,
            raw_retention_secs: 7 * 86_400,
            beacon_interval_ms: 10_000,
            webhook: None,
        }
    }
}

/// The outcomes of `POST /v1/beacons`, as counted in `sharegate_beacons_total{result}`.
pub const BEACON_RESULTS: [&str; 6] = ["accepted", "invalid", "forged", "expired", "too_large", "rate_limited"];

/// Analytics state of a replica.
pub struct Runtime {
    /// Signs and checks view ids.
    pub view_key: ViewKey,
    /// Wakes the applier when something was accepted.
    pub notify: tokio::sync::Notify,
    limiter: Mutex<Limiter>,
    /// This replica's beacon outcomes, in [`BEACON_RESULTS`] order.
    pub beacon_results: [AtomicU64; 6],
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("analytics::Runtime")
    }
}

impl Runtime {
    /// A runtime keyed from the state key.
    pub fn new(state_key: &sharegate_shared::revocation::StateKey) -> Self {
        Runtime {
            view_key: ViewKey::from_state_key(state_key),
            notify: tokio::sync::Notify::new(),
            limiter: Mutex::new(Limiter::default()),
            beacon_results: Default::default(),
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = BEACON_RESULTS.iter().position(|r| *r == result) {
            self.beacon_results[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Token buckets per client address, bounded: an address not seen for a minute is forgotten, and once
/// [`MAX_TRACKED_CLIENTS`] are tracked new addresses share one bucket (so a flood of addresses can't grow memory,
/// and can't get more than one bucket's worth through either).
#[derive(Debug, Default)]
struct Limiter {
    buckets: HashMap<Option<IpAddr>, (f64, Instant)>,
    swept: Option<Instant>,
}

impl Limiter {
    fn allow(&mut self, ip: Option<IpAddr>, now: Instant) -> bool {
        if self
            .swept
            .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
        {
            self.buckets
                .retain(|_, (_, t)| now.duration_since(*t) < Duration::from_secs(60));
            self.swept = Some(now);
        }
        let key = if self.buckets.contains_key(&ip) || self.buckets.len() < MAX_TRACKED_CLIENTS {
            ip
        } else {
            None
        };
        let (tokens, last) = self.buckets.entry(key).or_insert((BEACON_BURST, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * BEACONS_PER_SEC).min(BEACON_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/beacons", post(beacon).options(beacon_preflight))
        .route("/v1/conversions", post(conversion))
        .merge(query::routes())
        .merge(export::routes())
}

fn cors(h: &mut HeaderMap) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}

async fn beacon_preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    resp
}

fn beacon_refusal(s: &AppState, status: StatusCode, code: &'static str, result: &str, message: String) -> Response {
    s.analytics.count(result);
    let mut resp = (status, Json(serde_json::json!({"error": code, "message": message}))).into_response();
    cors(resp.headers_mut());
    resp
}

/// `POST /v1/beacons`: check a beacon and keep it for the applier. Nothing is stored for a refused one.
async fn beacon(State(s): State<Arc<AppState>>, peer: Peer, req: Request) -> Response {
    match take_beacon(&s, peer, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = e.into_response();
            cors(resp.headers_mut());
            resp
        }
    }
}

async fn take_beacon(s: &AppState, peer: Peer, req: Request) -> Result<Response, ApiError> {
    let ip = client_ip(s, req.headers(), peer);
    let allowed = s
        .analytics
        .limiter
        .lock()
        .map(|mut l| l.allow(ip, Instant::now()))
        .unwrap_or(true);
    if !allowed {
        return Ok(beacon_refusal(
            s,
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate_limited",
            format!("at most {BEACONS_PER_SEC} beacons per second from one address"),
        ));
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        beacon_refusal(
            s,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "too_large",
            format!("a beacon is at most {MAX_BEACON_BODY} bytes"),
        )
    };
    if declared.is_some_and(|n| n > MAX_BEACON_BODY as u64) {
        return Ok(too_large());
    }
    let Ok(body) = axum::body::to_bytes(req.into_body(), MAX_BEACON_BODY).await else {
        return Ok(too_large());
    };
    accept_beacon(s, &body).await
}

async fn accept_beacon(s: &AppState, body: &Bytes) -> Result<Response, ApiError> {
    let b: Beacon = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Ok(beacon_refusal(
                s,
                StatusCode::BAD_REQUEST,
                "invalid_beacon",
                "invalid",
                format!("malformed beacon: {e}"),
            ));
        }
    };
    if b.v != 1 {
        return Ok(beacon_refusal(
            s,
            StatusCode::BAD_REQUEST,
            "invalid_beacon",
            "invalid",
            "unsupported beacon version (v must be 1)".into(),
        ));
    }
    let dims = ViewDims {
        share: &b.share,
        asset: &b.asset,
        channel: b.channel.as_deref().unwrap_or(""),
        campaign: b.campaign.as_deref().unwrap_or(""),
    };
    let now = s.now();
    let issued = match s.analytics.view_key.verify(&b.view, &dims, now) {
        Ok(t) => t,
        Err(ViewError::Forged) => {
            return Ok(beacon_refusal(
                s,
                StatusCode::FORBIDDEN,
                "forged_view",
                "forged",
                "the view id was not issued for this share, asset, channel and campaign".into(),
            ));
        }
        Err(ViewError::Expired) => {
            return Ok(beacon_refusal(
                s,
                StatusCode::GONE,
                "view_expired",
                "expired",
                "the view id is too old (a view lasts 24 hours); reload the page".into(),
            ));
        }
    };
    let entry = Entry::Beacon {
        at: now,
        issued,
        beacon: b,
    };
    let bytes = serde_json::to_vec(&entry).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.append(Log::Beacons, &bytes).await?;
    s.analytics.count("accepted");
    s.analytics.notify.notify_one();
    let mut resp = StatusCode::NO_CONTENT.into_response();
    cors(resp.headers_mut());
    Ok(resp)
}

/// `POST /v1/conversions` body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConversionRequest {
    /// The caller's id for this conversion (idempotency key), 1 to 128 of `[A-Za-z0-9._:-]`.
    pub id: String,
    /// `trial`, `purchase`, `signup` or `other`.
    pub kind: String,
    /// The view it is credited to (the player's view id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<String>,
    /// The share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// The viewer (the viewer id links were minted for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// The campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Its value (e.g. revenue), kept in the raw stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When it happened, unix seconds (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<u64>,
}

/// `POST /v1/conversions` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversionReceipt {
    /// The caller's id.
    pub id: String,
    /// Kind.
    pub kind: String,
    /// When it happened.
    pub at: u64,
    /// When it was accepted.
    pub accepted_at: u64,
    /// What it is credited to: `view`, `viewer`, `share`, `campaign` or `channel` (the first given).
    pub credited_to: String,
}

#[derive(Serialize, Deserialize)]
struct StoredConversion {
    hash: String,
    receipt: ConversionReceipt,
}

fn check_conversion(c: &ConversionRequest, now: u64) -> Result<(u64, &'static str), ApiError> {
    let id_ok = |v: &str, max: usize| {
        !v.is_empty() && v.len() <= max && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-~".contains(&b))
    };
    if !id_ok(&c.id, 128) {
        return Err(ApiError::Invalid("id must be 1 to 128 of [A-Za-z0-9._:~-]".into()));
    }
    if !CONVERSION_KINDS.contains(&c.kind.as_str()) {
        return Err(ApiError::Invalid(format!(
            "kind must be one of {}",
            CONVERSION_KINDS.join(", ")
        )));
    }
    for (name, v) in [
        ("view", &c.view),
        ("share", &c.share),
        ("viewer", &c.viewer),
        ("campaign", &c.campaign),
        ("channel", &c.channel),
    ] {
        if let Some(v) = v
            && !id_ok(v, 256)
        {
            return Err(ApiError::Invalid(format!(
                "{name} must be 1 to 256 of [A-Za-z0-9._:~-]"
            )));
        }
    }
    if c.value.is_some_and(|v| !v.is_finite() || v < 0.0) {
        return Err(ApiError::Invalid("value must be a finite number ≥ 0".into()));
    }
    let at = c.at.unwrap_or(now);
    if at > now + 300 || now.saturating_sub(at) > 30 * 86_400 {
        return Err(ApiError::Invalid("at must be within the last 30 days".into()));
    }
    let credited = if c.view.is_some() {
        "view"
    } else if c.viewer.is_some() {
        "viewer"
    } else if c.share.is_some() {
        "share"
    } else if c.campaign.is_some() {
        "campaign"
    } else if c.channel.is_some() {
        "channel"
    } else {
        return Err(ApiError::Invalid(
            "name what the conversion is credited to: view, viewer, share, campaign or channel".into(),
        ));
    };
    Ok((at, credited))
}

/// `POST /v1/conversions`: record a conversion once per `id`.
async fn conversion(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReportConversions>,
    JsonBody(c): JsonBody<ConversionRequest>,
) -> Result<Response, ApiError> {
    let now = s.now();
    let (at, credited) = check_conversion(&c, now)?;
    let canonical = serde_json::to_vec(&c).map_err(|e| ApiError::Internal(e.to_string()))?;
    let hash = hex::encode(Sha256::digest(&canonical));
    let key = format!("conv/{}", c.id);
    let receipt = ConversionReceipt {
        id: c.id.clone(),
        kind: c.kind.clone(),
        at,
        accepted_at: now,
        credited_to: credited.into(),
    };
    let stored = serde_json::to_vec(&StoredConversion {
        hash: hash.clone(),
        receipt: receipt.clone(),
    })
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let entry =
        serde_json::to_vec(&Entry::Conversion { at, conversion: c }).map_err(|e| ApiError::Internal(e.to_string()))?;
    let written = s
        .store
        .atomic(
            &[Check::Absent {
                ns: Ns::Analytics,
                key: &key,
            }],
            &[
                Op::Put {
                    ns: Ns::Analytics,
                    key: &key,
                    value: &stored,
                },
                Op::Append {
                    log: Log::Beacons,
                    value: &entry,
                },
            ],
        )
        .await?;
    if written.is_some() {
        s.analytics.notify.notify_one();
        return Ok((StatusCode::CREATED, Json(receipt)).into_response());
    }
    let prior = s
        .store
        .get(Ns::Analytics, &key)
        .await?
        .ok_or_else(|| ApiError::Conflict("the conversion id was being recorded concurrently; retry".into()))?;
    let prior: StoredConversion =
        serde_json::from_slice(&prior).map_err(|e| ApiError::Internal(format!("stored conversion: {e}")))?;
    if prior.hash == hash {
        Ok((StatusCode::OK, Json(prior.receipt)).into_response())
    } else {
        Err(ApiError::Conflict(format!(
            "conversion id {} was already used for a different conversion",
            prior.receipt.id
        )))
    }
}

/// Record a mint for the funnel, as part of the mint's own transaction (see `mint_recorded`).
pub fn mint_entry(
    at: u64,
    claims: &sharegate_shared::token::Claims<'_>,
    asset: &str,
    share: Option<&str>,
) -> Option<Vec<u8>> {
    let entry = Entry::Mint {
        at,
        asset: asset.to_string(),
        share: share.map(str::to_string),
        channel: claims.channel.as_ref().map(|t| t.as_str().to_string()),
        campaign: claims.campaign.as_ref().map(|t| t.as_str().to_string()),
        viewer: claims.viewer.as_ref().map(|t| t.as_str().to_string()),
        token: format!("{}-{}", claims.iat, hex::encode(claims.token_id)),
    };
    serde_json::to_vec(&entry).ok()
}

/// Start the analytics background work: the applier, and the export and retention loops.
pub fn spawn_background(s: Arc<AppState>) {
    spawn_applier(s.clone());
    export::spawn(s.clone());
    retention::spawn(s);
}

/// The background applier: applies what was accepted soon after it was (woken by each acceptance, and every
/// second in case another replica accepted it).
pub fn spawn_applier(s: Arc<AppState>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = s.analytics.notify.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Let a burst gather into one batch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(e) = apply::apply_pending(&s, 64).await {
                tracing::warn!(error = %e, "cannot apply analytics inputs; will retry");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_is_bounded_and_fair() {
        let mut l = Limiter::default();
        let t = Instant::now();
        let ip: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let allowed = (0..100).filter(|_| l.allow(ip, t)).count();
        assert_eq!(allowed, BEACON_BURST as usize);
        assert!(
            l.allow(ip, t + Duration::from_millis(150)),
            "refills at the sustained rate"
        );
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 1000) {
            l.allow(Some(IpAddr::from(i.to_be_bytes())), t);
        }
        assert!(l.buckets.len() <= MAX_TRACKED_CLIENTS + 1);
    }
}
