//! The call to the product's entitlement backend: the signed request, the answer, one retry on a connection
//! failure, the per-(viewer, asset) decision cache with single flight, and a circuit breaker per backend URL.
//!
//! The contract is docs/entitlement.md. What this module promises the mint paths: a dead backend costs a
//! breaker check (microseconds), not a timeout, once it has failed [`Breaker`]'s threshold in a row; a burst of
//! opens for one viewer and asset makes one call; a decision is never used past the backend's `valid_until`.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header carrying the request's signature: `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub const SIGNATURE_HEADER: &str = "x-sharegate-signature";
/// The header carrying the Unix seconds the signature was made at (also in the body).
pub const TIMESTAMP_HEADER: &str = "x-sharegate-timestamp";
/// Largest answer read from a backend, bytes.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// What is asked: may this viewer watch this asset now, and until when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookRequest {
    /// A fresh id per call (also sent as `x-request-id`); backends may use it to refuse replays.
    pub request_id: String,
    /// Why we ask: `link` (`POST /v1/links`), `share_open` (a share's first token), `refresh` (the player's next
    /// token).
    pub purpose: String,
    /// The viewer id.
    pub viewer: String,
    /// The asset id.
    pub asset: String,
    /// The share, when the token is for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<String>,
    /// Attribution: channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Attribution: campaign.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// The client's country (ISO 3166 alpha-2), when a trusted source gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Unix seconds; the same value as the timestamp header, inside what is signed.
    pub timestamp: u64,
}

/// The backend's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HookAnswer {
    /// Whether the viewer may watch.
    pub allow: bool,
    /// Why (shown to operators in diagnosis; a short code such as `no_subscription`, `trial_expired`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The plan (`paid`, `trial`, `free`, or the product's own name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Unix seconds the entitlement ends (a trial's end, a rental's); no token outlives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<u64>,
    /// Longest token lifetime the backend wants, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl: Option<u32>,
    /// How many streams at once the plan allows (a hint, recorded, not enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
}

impl HookAnswer {
    /// Refuse what no backend should send: text fields beyond 64 bytes, a zero max TTL.
    fn checked(self) -> Result<Self, CallError> {
        let long = |v: &Option<String>| {
            v.as_ref()
                .is_some_and(|s| s.len() > 64 || s.chars().any(char::is_control))
        };
        if long(&self.reason) || long(&self.plan) {
            return Err(CallError::Answer("reason and plan are at most 64 bytes of text".into()));
        }
        if self.max_ttl == Some(0) {
            return Err(CallError::Answer("max_ttl must be positive".into()));
        }
        Ok(self)
    }
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No connection (refused, unreachable, DNS), after the one retry.
    #[error("entitlement backend unreachable: {0}")]
    Connect(String),
    /// No answer within the timeout.
    #[error("entitlement backend did not answer within {0} ms")]
    Timeout(u64),
    /// An HTTP status other than 200 (a 401 is the backend refusing our signature).
    #[error("entitlement backend answered HTTP {0}")]
    Status(u16),
    /// An answer that is not the contract's JSON.
    #[error("entitlement backend's answer is unreadable: {0}")]
    Answer(String),
    /// The breaker is open: the backend failed repeatedly and is not called for a while.
    #[error("entitlement backend is failing; calls are paused (circuit breaker open)")]
    BreakerOpen,
    /// No backend or no secret configured.
    #[error("no entitlement backend is configured (SHAREGATE_ENTITLEMENT_URL and SHAREGATE_ENTITLEMENT_SECRET)")]
    NotConfigured,
}

impl CallError {
    /// A stable code for logs, audit and diagnosis.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect",
            CallError::Timeout(_) => "timeout",
            CallError::Status(401) => "signature_refused",
            CallError::Status(_) => "status",
            CallError::Answer(_) => "bad_answer",
            CallError::BreakerOpen => "breaker_open",
            CallError::NotConfigured => "not_configured",
        }
    }
}

/// `v1=<hex>`: the signature of `body` made at `timestamp` with `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// HMAC takes keys of any length, so this is never called; it keeps the signing path free of panics.
fn unreachable_hmac() -> HmacSha256 {
    <HmacSha256 as KeyInit>::new(&Default::default())
}

/// Check a signature header as a backend must (constant time), within `window` seconds of `now`: what
/// docs/entitlement.md asks of receivers, used by our tests' backend and offered to Rust backends.
pub fn verify(secret: &[u8], header: &str, timestamp: u64, body: &[u8], now: u64, window: u64) -> bool {
    if now.abs_diff(timestamp) > window {
        return false;
    }
    let Some(hex_mac) = header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable_hmac());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// [`verify`] for a request as a backend receives it: the timestamp and signature headers, the body.
pub fn verify_request(secret: &[u8], headers: &axum::http::HeaderMap, body: &[u8], now: u64, window: u64) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let Some(timestamp) = header(TIMESTAMP_HEADER).and_then(|v| v.parse().ok()) else {
        return false;
    };
    verify(
        secret,
        header(SIGNATURE_HEADER).unwrap_or(""),
        timestamp,
        body,
        now,
        window,
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Circuit breaker

/// Breaker states, as the metric reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once until the cool-down ends.
    Open,
    /// One probe call is let through; its result closes or re-opens.
    HalfOpen,
}

impl BreakerState {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A consecutive-failure breaker: `threshold` failures in a row open it for `cool_down`; then one probe.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<BreakerInner>,
    threshold: u32,
    cool_down: Duration,
}

#[derive(Debug)]
struct BreakerInner {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            inner: Mutex::new(BreakerInner {
                failures: 0,
                open_until: None,
                probing: false,
            }),
            threshold: threshold.max(1),
            cool_down,
        }
    }

    /// Whether a call may go out now (taking the probe slot when half open).
    pub fn admit(&self) -> bool {
        let mut b = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match b.open_until {
            None => true,
            Some(t) if Instant::now() < t => false,
            Some(_) if b.probing => false,
            Some(_) => {
                b.probing = true;
                true
            }
        }
    }

    /// Record a call's result.
    pub fn record(&self, ok: bool) {
        let mut b = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        b.probing = false;
        if ok {
            if b.open_until.is_some() {
                METRICS.transitions[0].fetch_add(1, Ordering::Relaxed);
            }
            b.failures = 0;
            b.open_until = None;
        } else {
            b.failures = b.failures.saturating_add(1);
            if b.failures >= self.threshold || b.open_until.is_some() {
                if b.open_until.is_none_or(|t| Instant::now() >= t) {
                    METRICS.transitions[1].fetch_add(1, Ordering::Relaxed);
                }
                b.open_until = Some(Instant::now() + self.cool_down);
            }
        }
    }

    /// The state now.
    pub fn state(&self) -> BreakerState {
        let b = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        match b.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Metrics (process-wide; labels are fixed sets)

/// Histogram bounds of `sharegate_entitlement_check_seconds`.
const BUCKETS: [f64; 11] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// Outcomes (`allow`, `deny`, `error`) × cache (`hit`, `miss`, `stale`).
const OUTCOMES: [&str; 3] = ["allow", "deny", "error"];
const CACHES: [&str; 3] = ["hit", "miss", "stale"];

struct Metrics {
    /// [outcome][cache][bucket], with a last slot for +Inf.
    buckets: [[[AtomicU64; BUCKETS.len() + 1]; 3]; 3],
    sum_micros: [[AtomicU64; 3]; 3],
    /// Failure-policy decisions: [fail_open, fail_closed].
    failure_decisions: [AtomicU64; 2],
    /// Breaker transitions: [to closed, to open].
    transitions: [AtomicU64; 2],
}

static METRICS: Metrics = Metrics {
    buckets: [const { [const { [const { AtomicU64::new(0) }; BUCKETS.len() + 1] }; 3] }; 3],
    sum_micros: [const { [const { AtomicU64::new(0) }; 3] }; 3],
    failure_decisions: [const { AtomicU64::new(0) }; 2],
    transitions: [const { AtomicU64::new(0) }; 2],
};

/// How a check ended, for the histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
    /// No decision (the failure policy decided).
    Error,
}

/// Where the decision came from, for the histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// A fresh cached decision.
    Hit,
    /// A call to the backend (or a failed one).
    Miss,
    /// A cached decision past its freshness, used by the `cached_only` failure policy.
    Stale,
}

/// Record one check.
pub fn observe(outcome: Outcome, cache: CacheUse, took: Duration) {
    let o = outcome as usize;
    let c = cache as usize;
    let secs = took.as_secs_f64();
    let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
    METRICS.buckets[o][c][i].fetch_add(1, Ordering::Relaxed);
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
    METRICS.sum_micros[o][c].fetch_add(micros, Ordering::Relaxed);
}

/// Count a decision made by the failure policy: open (minted anyway) or closed (refused).
pub fn count_failure_decision(open: bool) {
    METRICS.failure_decisions[usize::from(!open)].fetch_add(1, Ordering::Relaxed);
}

/// Append the entitlement series to a Prometheus exposition.
pub fn render(out: &mut String, breakers: &[BreakerState]) {
    use std::fmt::Write as _;
    out.push_str(
        "# HELP sharegate_entitlement_check_seconds Entitlement checks at mint, by outcome and cache use (this \
         replica).\n# TYPE sharegate_entitlement_check_seconds histogram\n",
    );
    for (o, outcome) in OUTCOMES.iter().enumerate() {
        for (c, cache) in CACHES.iter().enumerate() {
            let labels = format!(r#"outcome="{outcome}",cache="{cache}""#);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cumulative += METRICS.buckets[o][c][i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "sharegate_entitlement_check_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += METRICS.buckets[o][c][BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "sharegate_entitlement_check_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            let sum = METRICS.sum_micros[o][c].load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "sharegate_entitlement_check_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(
                out,
                "sharegate_entitlement_check_seconds_count{{{labels}}} {cumulative}"
            );
        }
    }
    out.push_str(
        "# HELP sharegate_entitlement_failure_decisions_total Mints decided by the failure policy because the \
         backend gave no answer: fail_open (minted) or fail_closed (refused).\n\
         # TYPE sharegate_entitlement_failure_decisions_total counter\n",
    );
    for (i, d) in ["fail_open", "fail_closed"].iter().enumerate() {
        let v = METRICS.failure_decisions[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            r#"sharegate_entitlement_failure_decisions_total{{decision="{d}"}} {v}"#
        );
    }
    out.push_str(
        "# HELP sharegate_entitlement_breakers Entitlement backends by circuit-breaker state (this replica).\n\
         # TYPE sharegate_entitlement_breakers gauge\n",
    );
    for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
        let n = breakers.iter().filter(|b| **b == state).count();
        let _ = writeln!(
            out,
            r#"sharegate_entitlement_breakers{{state="{}"}} {n}"#,
            state.as_str()
        );
    }
    out.push_str(
        "# HELP sharegate_entitlement_breaker_transitions_total Circuit-breaker openings and closings.\n\
         # TYPE sharegate_entitlement_breaker_transitions_total counter\n",
    );
    for (i, to) in ["closed", "open"].iter().enumerate() {
        let v = METRICS.transitions[i].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            r#"sharegate_entitlement_breaker_transitions_total{{to="{to}"}} {v}"#
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The client

/// Knobs of the call (from the deployment's settings).
#[derive(Clone)]
pub struct HookSettings {
    /// The deployment's backend (an asset may name its own).
    pub url: Option<String>,
    /// The shared secret requests are signed with.
    pub secret: Option<Arc<[u8]>>,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Longest a positive decision is cached (never past its `valid_until`).
    pub cache_max: Duration,
    /// How long a denial is cached.
    pub negative_ttl: Duration,
    /// Failures in a row that open a backend's breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before one probe.
    pub breaker_cool_down: Duration,
}

impl std::fmt::Debug for HookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookSettings")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("cache_max", &self.cache_max)
            .field("negative_ttl", &self.negative_ttl)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cool_down", &self.breaker_cool_down)
            .finish()
    }
}

impl Default for HookSettings {
    fn default() -> Self {
        HookSettings {
            url: None,
            secret: None,
            timeout: Duration::from_millis(300),
            cache_max: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(10),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(5),
        }
    }
}

/// A decision as cached.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The backend's answer.
    pub answer: HookAnswer,
    /// When it was fetched (monotonic), for freshness.
    pub fetched: Instant,
    /// Fresh until (monotonic).
    pub fresh_until: Instant,
    /// The invalidation epoch read before the call (see [`super::Entitlements::invalidated`]).
    pub epoch: u64,
}

/// The cache key: backend URL, viewer, asset.
pub type Key = (Arc<str>, String, String);

/// The result of one flight, shared by everyone waiting on it.
pub type Flight = Result<Cached, CallError>;

/// Calls, cache, single flight and breakers.
pub struct Hook {
    /// Settings.
    pub settings: HookSettings,
    http: reqwest::Client,
    /// Decisions by (url, viewer, asset), kept until stale + the cache maximum (for `cached_only`).
    pub cache: moka::sync::Cache<Key, Cached>,
    flights: Mutex<HashMap<Key, Arc<tokio::sync::OnceCell<Flight>>>>,
    breakers: Mutex<HashMap<Arc<str>, Arc<Breaker>>>,
}

/// Takes a flight out of the in-flight map when its last caller is done with it: finished, or abandoned by every
/// caller (then a later caller starts a new one).
struct Leave<'a> {
    flights: &'a Mutex<HashMap<Key, Arc<tokio::sync::OnceCell<Flight>>>>,
    key: &'a Key,
    cell: &'a Arc<tokio::sync::OnceCell<Flight>>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // The map's reference and ours: nobody else waits on an unfinished flight.
        let alone = Arc::strong_count(self.cell) <= 2;
        if map.get(self.key).is_some_and(|c| Arc::ptr_eq(c, self.cell)) && (self.cell.initialized() || alone) {
            map.remove(self.key);
        }
    }
}

/// Most backends with their own breaker (asset-specific URLs beyond share one).
const MAX_BREAKERS: usize = 64;

impl Hook {
    /// A client with these settings.
    pub fn new(settings: HookSettings) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        let keep = settings.cache_max.saturating_mul(2).max(Duration::from_secs(60));
        Hook {
            http,
            cache: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(keep)
                .build(),
            flights: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            settings,
        }
    }

    /// The breaker of a backend URL.
    pub fn breaker(&self, url: &Arc<str>) -> Arc<Breaker> {
        let mut map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = map.get(url) {
            return b.clone();
        }
        let fresh = || {
            Arc::new(Breaker::new(
                self.settings.breaker_threshold,
                self.settings.breaker_cool_down,
            ))
        };
        if map.len() >= MAX_BREAKERS {
            // Past the cap every further URL shares one breaker (an admin configured very many backends).
            return map.entry(Arc::from("_overflow")).or_insert_with(fresh).clone();
        }
        map.entry(url.clone()).or_insert_with(fresh).clone()
    }

    /// Every breaker's state (for the metrics).
    pub fn breaker_states(&self) -> Vec<BreakerState> {
        let map = self.breakers.lock().unwrap_or_else(PoisonError::into_inner);
        map.values().map(|b| b.state()).collect()
    }

    /// One flight for `key`: concurrent callers share the first one's call. `epoch` is recorded in the result.
    pub async fn fly(&self, key: &Key, req: &HookRequest, epoch: u64) -> Flight {
        let cell = {
            let mut map = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            map.entry(key.clone()).or_default().clone()
        };
        // Leaves the map however this call ends, a dropped request (the viewer went away) included, so abandoned
        // flights cannot pile up.
        let _leave = Leave {
            flights: &self.flights,
            key,
            cell: &cell,
        };
        let out = cell
            .get_or_init(|| async {
                let r = self.call(&key.0, req).await;
                r.map(|answer| {
                    let now = Instant::now();
                    Cached {
                        fresh_until: now + self.freshness(&answer),
                        answer,
                        fetched: now,
                        epoch,
                    }
                })
            })
            .await
            .clone();
        if let Ok(c) = &out {
            self.cache.insert(key.clone(), c.clone());
        }
        out
    }

    /// How long an answer stays fresh: a denial briefly; an allowance up to the cache maximum and never past its
    /// `valid_until`.
    fn freshness(&self, a: &HookAnswer) -> Duration {
        let now = super::super::now();
        // A denial, or an allowance that has already ended (a trial over): refused for a short while, like a denial,
        // rather than asked again on every open.
        if !a.allow || a.valid_until.is_some_and(|u| u <= now) {
            return self.settings.negative_ttl;
        }
        let mut d = self.settings.cache_max;
        if let Some(until) = a.valid_until {
            d = d.min(Duration::from_secs(until - now));
        }
        d
    }

    /// Call the backend: signed POST, one retry on a connection failure only, through its breaker.
    pub async fn call(&self, url: &Arc<str>, req: &HookRequest) -> Result<HookAnswer, CallError> {
        let secret = self.settings.secret.clone().ok_or(CallError::NotConfigured)?;
        let breaker = self.breaker(url);
        if !breaker.admit() {
            return Err(CallError::BreakerOpen);
        }
        let body = serde_json::to_vec(req).map_err(|e| CallError::Answer(e.to_string()))?;
        let signature = sign(&secret, req.timestamp, &body);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let sent = self
                .http
                .post(&**url)
                .timeout(self.settings.timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, req.timestamp.to_string())
                .header(SIGNATURE_HEADER, &signature)
                .header("x-request-id", &req.request_id)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Err(e) if e.is_connect() && attempt == 1 => continue,
                Err(e) if e.is_timeout() => {
                    break Err(CallError::Timeout(
                        u64::try_from(self.settings.timeout.as_millis()).unwrap_or(0),
                    ));
                }
                // Never the error's text: it would name the URL, which may carry a credential of the product's.
                Err(e) if e.is_connect() => break Err(CallError::Connect("connection failed".into())),
                Err(_) => break Err(CallError::Connect("request failed".into())),
                Ok(resp) => break read_answer(resp, self.settings.timeout).await,
            }
        };
        breaker.record(result.is_ok());
        result
    }
}

async fn read_answer(resp: reqwest::Response, timeout: Duration) -> Result<HookAnswer, CallError> {
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(CallError::Status(status));
    }
    use crate::service::CappedError;
    let body = match crate::service::read_capped(resp, MAX_ANSWER_BYTES).await {
        Ok(b) => b,
        Err(CappedError::TooLarge) => return Err(CallError::Answer("answer too large".into())),
        Err(CappedError::Timeout) => {
            return Err(CallError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(0)));
        }
        Err(CappedError::CutOff) => return Err(CallError::Answer("answer cut off".into())),
    };
    let answer: HookAnswer = serde_json::from_slice(&body).map_err(|e| CallError::Answer(e.to_string()))?;
    answer.checked()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_fail_on_any_change() {
        let body = br#"{"viewer":"v"}"#;
        let sig = sign(b"secret", 1_800_000_000, body);
        assert!(verify(b"secret", &sig, 1_800_000_000, body, 1_800_000_010, 300));
        assert!(!verify(b"other", &sig, 1_800_000_000, body, 1_800_000_010, 300));
        assert!(!verify(b"secret", &sig, 1_800_000_001, body, 1_800_000_010, 300));
        assert!(!verify(
            b"secret",
            &sig,
            1_800_000_000,
            br#"{"viewer":"w"}"#,
            1_800_000_010,
            300
        ));
        // Outside the replay window.
        assert!(!verify(b"secret", &sig, 1_800_000_000, body, 1_800_000_301, 300));
        assert!(!verify(b"secret", "v1=zz", 1_800_000_000, body, 1_800_000_000, 300));
    }

    #[test]
    fn the_breaker_opens_after_failures_and_probes_once() {
        let b = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            assert!(b.admit());
            b.record(false);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit());
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admit());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.admit(), "one probe");
        assert!(!b.admit(), "only one");
        b.record(false);
        assert_eq!(b.state(), BreakerState::Open, "a failed probe re-opens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(b.admit());
        b.record(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.admit());
    }

    #[tokio::test]
    async fn abandoned_flights_leave_no_trace() {
        // A backend that never answers in time: every call is dropped by its caller (a viewer who went away).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // accepted, never answered
            }
        });
        let hook = Hook::new(HookSettings {
            url: Some(format!("http://{addr}/")),
            secret: Some(Arc::from(&b"s"[..])),
            timeout: Duration::from_secs(30),
            ..HookSettings::default()
        });
        let url: Arc<str> = Arc::from(format!("http://{addr}/"));
        for i in 0..50 {
            let key: Key = (url.clone(), format!("viewer-{i}"), "demo".into());
            let req = HookRequest {
                request_id: format!("r{i}"),
                purpose: "share_open".into(),
                viewer: key.1.clone(),
                asset: "demo".into(),
                share: None,
                channel: None,
                campaign: None,
                country: None,
                timestamp: 1,
            };
            let _ = tokio::time::timeout(Duration::from_millis(20), hook.fly(&key, &req, 0)).await;
        }
        assert!(hook.flights.lock().unwrap_or_else(PoisonError::into_inner).is_empty());
    }

    #[test]
    fn answers_are_bounded() {
        let a = HookAnswer {
            allow: true,
            reason: Some("x".repeat(65)),
            plan: None,
            valid_until: None,
            max_ttl: None,
            concurrency: None,
        };
        assert!(a.checked().is_err());
    }
}
