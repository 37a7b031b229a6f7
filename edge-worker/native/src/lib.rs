//! The native sharegate edge: an HTTP server on the decision engine.
//!
//! It serves HLS from a local directory or HTTP origins (with failover) through an in-memory cache (moka), holds the
//! keys and the revocation state in memory, refreshes them from the control plane (a pull on an interval, and an
//! authenticated push endpoint for immediate updates), and batches edge events back. It is what `sharegate edge` and
//! `sharegate dev` run, and what the end-to-end tests and benchmarks drive. Like every adapter, it only translates:
//! decisions come from `sharegate_edge::Engine`.
#![forbid(unsafe_code)]

pub mod client;
pub mod origin;
pub mod state;

use arc_swap::{ArcSwap, ArcSwapOption};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use axum::routing::{get, post};
use bytes::Bytes;
use origin::{Fetched, Origin};
use sharegate_edge::config::{ConfigError, ConfigSource, num, parse_signing_keys, url};
use sharegate_edge::contract;
use sharegate_edge::engine::Allow;
use sharegate_edge::events::{Event, EventBatch};
use sharegate_edge::held;
use sharegate_edge::response::{self, BodyPlan, ClientAsk, OriginAnswer, ResponsePlan, Step, TagHeader};
use sharegate_edge::{EdgeConfig, Engine};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where internal endpoints live; asset paths must not start with it.
pub const INTERNAL_PREFIX: &str = contract::paths::INTERNAL_PREFIX;

/// Settings of the native server (the engine's own settings are in [`EdgeConfig`]).
#[derive(Clone)]
pub struct NativeOptions {
    /// Origins, tried in order.
    pub origins: Vec<Origin>,
    /// Per-origin timeout.
    pub origin_timeout: Duration,
    /// Cache budget for segments, bytes.
    pub cache_bytes: u64,
    /// How long the edge may reuse an origin playlist (untokenized) before fetching it again.
    pub playlist_ttl: Duration,
    /// Where to pull the revocation state from (the control plane's state endpoint), if anywhere.
    pub state_url: Option<String>,
    /// Where to pull the signing keys from (`id:state:hex,...`, the control plane's edge keys endpoint), if anywhere.
    pub keys_url: Option<String>,
    /// Pull interval.
    pub pull_interval: Duration,
    /// Bearer credential for the push endpoints and for calls to the control plane.
    pub edge_token: Option<String>,
    /// Where to send event batches, if anywhere.
    pub events_url: Option<String>,
    /// Where the client's address and country come from (default: the TCP peer, and no country).
    pub client_sources: client::ClientSources,
}

impl std::fmt::Debug for NativeOptions {
    /// Everything but the bearer credential, which is a secret (the edge's own `Debug` prints its options).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeOptions")
            .field("origins", &self.origins)
            .field("origin_timeout", &self.origin_timeout)
            .field("cache_bytes", &self.cache_bytes)
            .field("playlist_ttl", &self.playlist_ttl)
            .field("state_url", &self.state_url)
            .field("keys_url", &self.keys_url)
            .field("pull_interval", &self.pull_interval)
            .field("edge_token", &self.edge_token.as_ref().map(|_| "<set>"))
            .field("events_url", &self.events_url)
            .field("client_sources", &self.client_sources)
            .finish()
    }
}

impl Default for NativeOptions {
    fn default() -> Self {
        NativeOptions {
            origins: Vec::new(),
            origin_timeout: Duration::from_secs(5),
            cache_bytes: 256 * 1024 * 1024,
            playlist_ttl: Duration::from_secs(1),
            state_url: None,
            keys_url: None,
            pull_interval: Duration::from_secs(1),
            edge_token: None,
            events_url: None,
            client_sources: client::ClientSources::default(),
        }
    }
}

/// The native edge's own setting names (the rest are the engine's, the adapters' and the client sources'; all are
/// listed in `docs/edge-config.md`).
pub mod keys {
    /// The control plane's edge keys endpoint (`https://cp.example.com/v1/edge/keys`): signing keys are pulled.
    pub const KEYS_URL: &str = "SHAREGATE_KEYS_URL";
    /// Milliseconds one origin may take before the next is tried (5000).
    pub const ORIGIN_TIMEOUT_MS: &str = "SHAREGATE_ORIGIN_TIMEOUT_MS";
    /// MiB of segments kept in memory (256).
    pub const CACHE_MIB: &str = "SHAREGATE_CACHE_MIB";
}

impl NativeOptions {
    /// Read the native edge's settings from `src` through the same parsers as every edge's (`SHAREGATE_ORIGIN`
    /// here also takes directories), with [`NativeOptions::default`]'s values for what is unset. The engine's
    /// settings are [`EdgeConfig::from_source`]; [`settings`] reads both.
    pub fn from_source(src: &dyn ConfigSource) -> Result<Self, ConfigError> {
        use sharegate_edge::adapter::keys as cdn;
        let d = NativeOptions::default();
        let ms = |key, default: Duration| -> Result<Duration, ConfigError> {
            let ms = num(src, key, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
            if ms == 0 {
                return Err(ConfigError {
                    key,
                    problem: "must be at least 1",
                });
            }
            Ok(Duration::from_millis(ms))
        };
        Ok(NativeOptions {
            origins: src
                .get(cdn::ORIGIN)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(Origin::parse)
                .collect(),
            origin_timeout: ms(keys::ORIGIN_TIMEOUT_MS, d.origin_timeout)?,
            cache_bytes: num(src, keys::CACHE_MIB, d.cache_bytes >> 20)?.saturating_mul(1 << 20),
            playlist_ttl: Duration::from_secs(num(src, cdn::PLAYLIST_TTL, d.playlist_ttl.as_secs())?),
            state_url: url(src, cdn::STATE_URL)?,
            keys_url: url(src, keys::KEYS_URL)?,
            pull_interval: ms(cdn::STATE_REFRESH_MS, d.pull_interval)?,
            edge_token: src.get(cdn::EDGE_TOKEN).filter(|t| !t.trim().is_empty()),
            events_url: url(src, cdn::EVENTS_URL)?,
            client_sources: client::ClientSources::from_source(src)?,
        })
    }
}

/// Every setting of a native edge from one source (the process environment for `sharegate edge`, the dev
/// composition's map for `sharegate dev`, a map in tests): the engine's and the server's, one parser each.
pub fn settings(src: &dyn ConfigSource) -> Result<(EdgeConfig, NativeOptions), ConfigError> {
    Ok((EdgeConfig::from_source(src)?, NativeOptions::from_source(src)?))
}

/// The running edge: engine, state, cache, event batch.
pub struct Edge {
    engine: ArcSwap<Engine>,
    /// The same engine without a country source, for requests that bypassed the trusted proxy.
    sourceless: ArcSwap<Engine>,
    /// Held while an offered state is verified and stored (see `offer_state`).
    offering: Mutex<()>,
    held: ArcSwapOption<state::Held>,
    segments: moka::sync::Cache<String, Arc<Fetched>>,
    playlists: moka::sync::Cache<String, Arc<Fetched>>,
    client: reqwest::Client,
    events: Mutex<EventBatch>,
    keys_spec: Mutex<Option<String>>,
    opts: NativeOptions,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge").field("opts", &self.opts).finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Edge {
    /// Build an edge from the engine's config and the server's options. Says in the log which client facts it
    /// trusts, and loudly when it has no country source.
    pub fn new(mut config: EdgeConfig, opts: NativeOptions) -> Arc<Edge> {
        // Only this adapter knows whether it can learn a client's country; the engine refuses country rules
        // without a source (unless the operator chose the lenient rule).
        config.has_country_source = opts.client_sources.has_country();
        announce_sources(&config, &opts.client_sources);
        let weigher = |_: &String, v: &Arc<Fetched>| u32::try_from(v.body.len().max(1)).unwrap_or(u32::MAX);
        Arc::new(Edge {
            sourceless: ArcSwap::from_pointee(Engine::new(sourceless(&config))),
            engine: ArcSwap::from_pointee(Engine::new(config)),
            held: ArcSwapOption::empty(),
            offering: Mutex::new(()),
            segments: moka::sync::Cache::builder()
                .max_capacity(opts.cache_bytes)
                .weigher(weigher)
                .build(),
            playlists: moka::sync::Cache::builder()
                .max_capacity(64 * 1024 * 1024)
                .weigher(weigher)
                .time_to_live(opts.playlist_ttl)
                .build(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap_or_default(),
            events: Mutex::new(EventBatch::default()),
            keys_spec: Mutex::new(None),
            opts,
        })
    }

    /// Offer state bytes (a snapshot, a delta or a freshness message) as if pushed. Refused offers change nothing,
    /// the state's signed freshness included.
    pub fn offer_state(&self, bytes: &[u8]) -> Result<state::Offer, state::OfferError> {
        // One offer at a time: a pull's answer and a push decided on the same held state would otherwise race, and
        // the later store could put an older generation back.
        let _one = self.offering.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let engine = self.engine.load();
        let held = self.held.load_full();
        let (next, what) = state::offer(
            held.as_deref(),
            engine.config().state_key.as_ref(),
            bytes,
            state::now_unix(),
        )?;
        self.held.store(Some(Arc::new(next)));
        Ok(what)
    }

    /// Replace the signing keys (`id:state:hex,...`), keeping every other setting.
    pub fn set_keys(&self, spec: &str) -> Result<(), String> {
        let engine = self.engine.load();
        let mut config = engine.config().clone();
        config.keys = parse_signing_keys(spec, config.policy.max_ttl).map_err(|e| e.to_string())?;
        self.sourceless.store(Arc::new(Engine::new(sourceless(&config))));
        self.engine.store(Arc::new(Engine::new(config)));
        Ok(())
    }

    /// The generation of the held state, if any.
    pub fn generation(&self) -> Option<u64> {
        self.held.load().as_ref().map(|h| h.generation)
    }

    fn record(&self, event: Option<Event>) {
        if let Some(e) = event
            && let Ok(mut b) = self.events.lock()
        {
            b.push(e);
        }
    }

    /// Take pending events as a JSON batch (for tests and the flush task).
    pub fn take_events_json(&self) -> Option<String> {
        let edge_id = self.engine.load().config().edge_id.clone();
        self.events.lock().ok()?.take_json(&edge_id)
    }

    /// The object for an allowed request: from the in-memory cache (a hash probe, no future to poll on the hot
    /// path), else from the origins, kept when the engine's rules say the CDN may keep it.
    async fn fetch(&self, a: &Allow<'_>) -> Option<Arc<Fetched>> {
        let cache = if a.is_playlist() {
            &self.playlists
        } else {
            &self.segments
        };
        let key = a.cache_key();
        if let Some(f) = cache.get(&*key) {
            return Some(f);
        }
        let f = Arc::new(origin::fetch(&self.opts.origins, &self.client, self.opts.origin_timeout, a).await?);
        // Only 200s, and never what the engine says no cache may keep (blocking LL-HLS reloads); how long is the
        // caches' own lifetime.
        if f.status == 200 && a.cdn_ttl(0, 0).is_some() {
            cache.insert(key.into_owned(), Arc::clone(&f));
        }
        Some(f)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(want) = self.opts.edge_token.as_deref() else {
            return false;
        };
        let got = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        ct_eq(got.as_bytes(), want.as_bytes())
    }
}

/// The router: internal endpoints and the catch-all edge handler.
pub fn router(edge: Arc<Edge>) -> Router {
    Router::new()
        .route(contract::paths::STATE, post(push_state))
        .route(contract::paths::KEYS, post(push_keys))
        .route(contract::paths::STATUS, get(status))
        .route(contract::paths::READY, get(ready))
        .fallback(handle)
        .with_state(edge)
}

/// Every accepted connection with TCP_NODELAY: a response's last partial packet goes out at once instead of waiting
/// for the client's (delayed) ACK of the one before, as nginx does on keep-alive connections.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, impl FnMut(&mut tokio::net::TcpStream) + Send + 'static> {
    use axum::serve::ListenerExt;
    listener.tap_io(|stream| {
        // Best effort: a socket that refuses it still serves, only later.
        let _ = stream.set_nodelay(true);
    })
}

/// Serve on a bound listener until the future is dropped.
pub async fn serve(edge: Arc<Edge>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        no_delay(listener),
        router(edge).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serve until `shutdown` completes, then stop accepting, let requests in flight finish, and return (SIGTERM from
/// a container runtime or systemd: a rollout then drops no viewer's request).
pub async fn serve_until(
    edge: Arc<Edge>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        no_delay(listener),
        router(edge).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Start the pull and event-flush loops.
pub fn spawn_background(edge: &Arc<Edge>) {
    if edge.opts.state_url.is_some() || edge.opts.keys_url.is_some() {
        let e = Arc::clone(edge);
        tokio::spawn(async move {
            loop {
                if let Err(err) = pull_keys_once(&e).await {
                    tracing::warn!(%err, "key pull failed");
                }
                if let Err(err) = pull_once(&e).await {
                    tracing::warn!(%err, "state pull failed");
                }
                tokio::time::sleep(e.opts.pull_interval).await;
            }
        });
    }
    if edge.opts.events_url.is_some() {
        let e = Arc::clone(edge);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                flush_events(&e, false).await;
            }
        });
    }
}

/// Pull the state once: the control plane answers 200 with a snapshot or delta newer than the generation we send,
/// or, when we are current, a signed freshness message. A bare 304 (a control plane from before signed freshness)
/// keeps the state but vouches for nothing, so the state ages. A delta that does not chain onto what is held (or word
/// that a newer generation exists) is followed by a fetch of the whole state, as on every edge.
pub async fn pull_once(edge: &Edge) -> Result<(), String> {
    let since = edge.generation();
    let Some(bytes) = pull_state(edge, since).await? else {
        return Ok(());
    };
    match edge.offer_state(&bytes) {
        Err(e) if held::needs_snapshot(&e, since) => {
            let Some(whole) = pull_state(edge, None).await? else {
                return Ok(());
            };
            edge.offer_state(&whole).map(drop).map_err(|e| e.to_string())
        }
        offered => offered.map(drop).map_err(|e| e.to_string()),
    }
}

/// One answer of the state endpoint for an edge holding `since`: the bytes to offer, or `None` when it confirmed
/// nothing.
async fn pull_state(edge: &Edge, since: Option<u64>) -> Result<Option<Bytes>, String> {
    let Some(url) = edge.opts.state_url.as_deref() else {
        return Ok(None);
    };
    let mut req = edge.client.get(url).timeout(Duration::from_secs(5));
    for (name, value) in held::state_request_headers(
        since,
        edge.opts.edge_token.as_deref(),
        Some(&edge.engine.load().config().edge_id),
    ) {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    match held::StateReply::of(resp.status().as_u16()) {
        held::StateReply::Offer => resp.bytes().await.map(Some).map_err(|e| e.to_string()),
        // Unsigned, so replayable: it cannot count as freshness.
        r @ held::StateReply::Unconfirmed => {
            tracing::warn!("{r}");
            Ok(None)
        }
        r @ held::StateReply::Failed(_) => Err(r.to_string()),
    }
}

/// Pull the signing keys once (`id:state:hex,...`); replaces the engine only when they changed.
pub async fn pull_keys_once(edge: &Edge) -> Result<(), String> {
    let Some(url) = edge.opts.keys_url.as_deref() else {
        return Ok(());
    };
    let mut req = edge.client.get(url).timeout(Duration::from_secs(5));
    if let Some((name, value)) = held::bearer(edge.opts.edge_token.as_deref()) {
        req = req.header(name, value);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("keys endpoint answered {}", resp.status()));
    }
    let spec = resp.text().await.map_err(|e| e.to_string())?;
    let spec = spec.trim();
    if edge.keys_spec.lock().is_ok_and(|k| k.as_deref() == Some(spec)) {
        return Ok(());
    }
    edge.set_keys(spec)?;
    if let Ok(mut k) = edge.keys_spec.lock() {
        *k = Some(spec.to_string());
    }
    Ok(())
}

/// Send pending events now (the background task calls this every second).
pub async fn flush_events_now(edge: &Edge) {
    flush_events(edge, true).await;
}

async fn flush_events(edge: &Edge, force: bool) {
    let Some(url) = edge.opts.events_url.as_deref() else {
        return;
    };
    let pending = {
        let Ok(mut b) = edge.events.lock() else { return };
        if !force && !b.due(now_secs(), 500, 1) {
            return;
        }
        b.take_pending()
    };
    let Some(pending) = pending else { return };
    let edge_id = edge.engine.load().config().edge_id.clone();
    let json = pending.to_json(&edge_id);
    let mut req = edge.client.post(url).body(json).timeout(Duration::from_secs(5));
    for (name, value) in held::events_request_headers(edge.opts.edge_token.as_deref()) {
        req = req.header(name, value);
    }
    let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
    if !ok && let Ok(mut b) = edge.events.lock() {
        b.restore(pending);
    }
}

fn json_response(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn push_state(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: Bytes) -> Response<Body> {
    if !edge.authorized(&headers) {
        return json_response(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#.into());
    }
    match edge.offer_state(&body) {
        Ok(o) => {
            let (what, g) = match o {
                state::Offer::Snapshot(g) => ("snapshot", g),
                state::Offer::Delta(g) => ("delta", g),
                state::Offer::Current(g) => ("current", g),
            };
            json_response(StatusCode::OK, format!(r#"{{"accepted":"{what}","generation":{g}}}"#))
        }
        // Generation conflicts say what this edge holds, so the sender can tell "already current" (nothing to do)
        // from "needs the whole state".
        Err(
            e @ (state::OfferError::Gap { .. } | state::OfferError::Older { .. } | state::OfferError::Behind { .. }),
        ) => json_response(
            StatusCode::CONFLICT,
            format!(
                r#"{{"error":"{}","held":{},"detail":"{e}"}}"#,
                e.as_str(),
                e.held().unwrap_or(0)
            ),
        ),
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            format!(r#"{{"error":"invalid_state","detail":"{e}"}}"#),
        ),
    }
}

async fn push_keys(State(edge): State<Arc<Edge>>, headers: HeaderMap, body: String) -> Response<Body> {
    if !edge.authorized(&headers) {
        return json_response(StatusCode::UNAUTHORIZED, r#"{"error":"unauthorized"}"#.into());
    }
    match edge.set_keys(body.trim()) {
        Ok(()) => json_response(StatusCode::OK, r#"{"accepted":"keys"}"#.into()),
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            format!(r#"{{"error":"invalid_keys","detail":"{e}"}}"#),
        ),
    }
}

async fn status(State(edge): State<Arc<Edge>>) -> Response<Body> {
    let held = edge.held.load_full();
    let engine = edge.engine.load();
    let body = sharegate_edge::adapter::status_json(
        "native",
        held.as_ref().map(|h| h.generation),
        held.as_ref().map(|h| h.as_of),
        state::now_unix(),
        &engine.config().keys,
        &[
            ("cached_segments", edge.segments.entry_count()),
            // The edge's clock, so `sharegate doctor` can see skew against the control plane's (tokens expire by it).
            ("now_ms", state::now_ms()),
            ("events_pending", edge.events.lock().map_or(0, |b| b.len()) as u64),
        ],
    );
    let body = sharegate_edge::adapter::with_client_sources(
        body,
        &edge.opts.client_sources.ip_source(),
        &edge.opts.client_sources.country_source(),
        country_rules(engine.config()),
    );
    json_response(StatusCode::OK, body)
}

/// Readiness (`/_sharegate/ready`): 200 while the edge holds a revocation state younger than its
/// `SHAREGATE_STATE_MAX_AGE`, so a load balancer or Kubernetes sends viewers only to edges that can decide exactly;
/// 503 with the reason otherwise (no state yet, or a stale one). An edge that fails open on stale state is ready
/// without one: it chose to serve.
async fn ready(State(edge): State<Arc<Edge>>) -> Response<Body> {
    let config = edge.engine.load();
    let config = config.config();
    let age = edge.held.load_full().map(|h| state::now_unix().saturating_sub(h.as_of));
    let (status, why) = match age {
        Some(a) if a <= u64::from(config.state_max_age) => (StatusCode::OK, "ready"),
        _ if config.stale_policy == sharegate_edge::config::StalePolicy::FailOpen => {
            (StatusCode::OK, "ready_fail_open")
        }
        Some(_) => (StatusCode::SERVICE_UNAVAILABLE, "state_stale"),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no_state"),
    };
    let age = age.map_or_else(|| "null".to_string(), |a| a.to_string());
    json_response(status, format!(r#"{{"status":"{why}","state_age_s":{age}}}"#))
}

/// The engine settings for a request that has no country source (it bypassed the trusted proxy).
fn sourceless(config: &EdgeConfig) -> EdgeConfig {
    let mut c = config.clone();
    c.has_country_source = false;
    c
}

/// What becomes of country rules on this edge: `enforced` (it has a country source), `refused` (none: such
/// tokens get `geo_unavailable`) or `lenient` (none, and the operator chose the rule of docs/token-format.md §8).
fn country_rules(config: &EdgeConfig) -> &'static str {
    match (config.has_country_source, config.geo_lenient) {
        (true, _) => "enforced",
        (false, false) => "refused",
        (false, true) => "lenient",
    }
}

fn announce_sources(config: &EdgeConfig, sources: &client::ClientSources) {
    tracing::info!(
        client_ip = %sources.ip_source(),
        country = %sources.country_source(),
        trusted_proxies = sources.trusted_proxies.len(),
        "client facts: trusted sources"
    );
    if (sources.ip_header.is_some() || sources.country_header.is_some()) && sources.trusted_proxies.is_empty() {
        tracing::warn!(
            "SHAREGATE_CLIENT_IP_HEADER / SHAREGATE_COUNTRY_HEADER are believed from any peer: the edge must be \
             reachable only through that proxy (or set SHAREGATE_TRUSTED_PROXIES)"
        );
    }
    match country_rules(config) {
        "refused" => tracing::warn!(
            "NO COUNTRY SOURCE: tokens with country rules are refused (503 geo_unavailable). Set \
             SHAREGATE_COUNTRY_HEADER to the header a trusted proxy sets (e.g. CF-IPCountry), or \
             SHAREGATE_GEO_LENIENT=true to serve deny lists to everyone and refuse allow lists to everyone"
        ),
        "lenient" => tracing::warn!(
            "NO COUNTRY SOURCE, lenient: a token's deny list passes every client and its allow list refuses every \
             client (SHAREGATE_GEO_LENIENT=true)"
        ),
        _ => {}
    }
}

/// A response with `status`, `headers` (in order: a later one replaces an earlier one of the same name) and `body`.
fn respond(status: u16, headers: &sharegate_edge::engine::Headers, body: Body) -> Response<Body> {
    use sharegate_edge::engine::HeaderValue as V;
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (k, v) in headers {
        // Constants need no validation or copy; configured values were checked when the config was parsed, and a
        // value that is no header value (an origin's odd Content-Type) is left out.
        let value = match v {
            V::Static(s) => Some(HeaderValue::from_static(s)),
            V::Shared(s) => HeaderValue::from_str(s).ok(),
            V::Owned(s) => HeaderValue::from_str(s).ok(),
        };
        if let Some(value) = value {
            r.headers_mut().insert(*k, value);
        }
    }
    r
}

/// The engine's view of the request, the engine to decide it with, and what the client asked of the answer. A request
/// that bypassed the trusted proxy has no country source: country rules are refused for it (or follow the lenient
/// rule, if chosen), rather than read as "unknown country", which passes every deny list.
fn read_request<'r>(edge: &Edge, req: &'r Request<Body>) -> (Arc<Engine>, sharegate_edge::Request<'r>, ClientAsk<'r>) {
    let h = req.headers();
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let client = client::facts(&edge.opts.client_sources, peer, h);
    let engine = if client.vouched {
        edge.engine.load_full()
    } else {
        edge.sourceless.load_full()
    };
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let ereq = sharegate_edge::Request {
        method: req.method().as_str(),
        host: text(header::HOST).unwrap_or(""),
        path: req.uri().path(),
        query: req.uri().query(),
        cookie: text(header::COOKIE),
        origin: text(header::ORIGIN),
        referer: text(header::REFERER),
        client_ip: client.ip,
        country: client.country,
        // The native edge's country comes from a proxy's header only: nothing to look up.
        country_lookup: None,
        cmcd_headers: sharegate_edge::cmcd::HEADERS.map(|n| h.get(n).and_then(|v| v.to_str().ok())),
    };
    let ask = ClientAsk {
        head: req.method() == Method::HEAD,
        range: text(header::RANGE),
    };
    (engine, ereq, ask)
}

/// Read the request, ask the engine, and send its answer (fetching first when it allows).
async fn handle(State(edge): State<Arc<Edge>>, req: Request<Body>) -> Response<Body> {
    let (engine, ereq, ask) = read_request(&edge, &req);
    let now = now_secs();
    let decision = held::decide(&engine, edge.held.load().as_deref(), &ereq, now);
    let (step, event) = response::plan(decision, ask);
    edge.record(event);
    match step {
        Step::Answer(plan) => send(plan, &Bytes::new()),
        Step::Fetch(a) => serve_allowed(&edge, &engine, &a, now, ask).await,
    }
}

/// Fetch (through the in-memory cache), ask the engine, move the bytes.
async fn serve_allowed(edge: &Edge, engine: &Engine, a: &Allow<'_>, now: u64, ask: ClientAsk<'_>) -> Response<Body> {
    let Some(f) = edge.fetch(a).await else {
        return send(a.unavailable(engine.config().reason_header, ask), &Bytes::new());
    };
    let origin = OriginAnswer {
        status: f.status,
        length: Some(f.body.len() as u64),
        content_type: f.content_type.as_deref(),
        cache_control: f.cache_control.as_deref(),
        sliceable: true,
        ..OriginAnswer::default()
    };
    let mut plan = a.respond(ask, &origin, TagHeader::SurrogateKey);
    if plan.needs_body() {
        plan.finish(engine, f.body.to_vec(), now);
    }
    send(plan, &f.body)
}

/// The engine's plan as a response; `origin` is the body its `Whole` and `Slice` name (segments are shared with the
/// cache, never copied).
fn send(plan: ResponsePlan, origin: &Bytes) -> Response<Body> {
    let body = match plan.body {
        BodyPlan::Whole => Body::from(origin.clone()),
        // The plan's range lies within the body it was planned from; the guard only keeps a slip from panicking.
        BodyPlan::Slice { start, end } => match usize::try_from(start).ok().zip(usize::try_from(end).ok()) {
            Some((s, e)) if e < origin.len() => Body::from(origin.slice(s..=e)),
            _ => Body::from(origin.clone()),
        },
        BodyPlan::Bytes(b) => Body::from(b),
        // Rewrite and Buffer are finished before sending; nothing is left to send for them.
        BodyPlan::Empty | BodyPlan::Rewrite(_) | BodyPlan::Buffer(_) => Body::empty(),
    };
    respond(plan.status, &plan.headers, body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn native_settings_come_from_the_one_parser() {
        let src: &[(&str, &str)] = &[];
        let d = NativeOptions::from_source(&src).unwrap();
        let def = NativeOptions::default();
        assert_eq!(
            (d.origin_timeout, d.cache_bytes, d.playlist_ttl, d.pull_interval),
            (def.origin_timeout, def.cache_bytes, def.playlist_ttl, def.pull_interval)
        );
        assert!(d.origins.is_empty() && d.state_url.is_none() && d.edge_token.is_none());

        let src: &[(&str, &str)] = &[
            ("SHAREGATE_ORIGIN", "/srv/media, https://o.example.com/"),
            ("SHAREGATE_STATE_URL", "https://cp.example.com/v1/edge/state"),
            ("SHAREGATE_EDGE_TOKEN", "sekrit-token"),
            ("SHAREGATE_STATE_REFRESH_MS", "250"),
            (keys::ORIGIN_TIMEOUT_MS, "1500"),
            (keys::CACHE_MIB, "8"),
            (client::keys::COUNTRY_HEADER, "CF-IPCountry"),
        ];
        let o = NativeOptions::from_source(&src).unwrap();
        assert_eq!(
            o.origins,
            [
                Origin::Dir("/srv/media".into()),
                Origin::Http("https://o.example.com".into())
            ]
        );
        assert_eq!(o.pull_interval, Duration::from_millis(250));
        assert_eq!(o.origin_timeout, Duration::from_millis(1500));
        assert_eq!(o.cache_bytes, 8 << 20);
        assert_eq!(o.edge_token.as_deref(), Some("sekrit-token"));
        assert!(o.client_sources.has_country());

        // The same refusals, naming the setting, as on every edge.
        for (k, v) in [
            ("SHAREGATE_STATE_URL", "cp.example.com"),
            ("SHAREGATE_STATE_REFRESH_MS", "0"),
            (keys::ORIGIN_TIMEOUT_MS, "soon"),
            (client::keys::TRUSTED_PROXIES, "10.0.0.0/33"),
        ] {
            let src: &[(&str, &str)] = &[(k, v)];
            assert_eq!(NativeOptions::from_source(&src).unwrap_err().key, k, "{k}={v}");
        }
        let src: &[(&str, &str)] = &[];
        assert_eq!(settings(&src).unwrap_err().key, "SHAREGATE_SIGNING_KEYS");
        let shown = format!("{o:?}");
        assert!(!shown.contains("sekrit") && shown.contains("<set>"), "{shown}");
    }
}
