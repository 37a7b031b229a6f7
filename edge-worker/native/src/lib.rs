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
use sharegate_edge::adapter::parse_range;
use sharegate_edge::config::parse_signing_keys;
use sharegate_edge::contract;
use sharegate_edge::engine::{Allow, Decision};
use sharegate_edge::events::{Event, EventBatch};
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::token::Resource;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where internal endpoints live; asset paths must not start with it.
pub const INTERNAL_PREFIX: &str = contract::paths::INTERNAL_PREFIX;

/// Settings of the native server (the engine's own settings are in [`EdgeConfig`]).
#[derive(Debug, Clone)]
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
        .fallback(handle)
        .with_state(edge)
}

/// Serve on a bound listener until the future is dropped.
pub async fn serve(edge: Arc<Edge>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(edge).into_make_service_with_connect_info::<SocketAddr>(),
    )
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
/// or, when we are current, a signed freshness message (asked for with `x-sharegate-freshness: 1`). A bare 304
/// (a control plane from before signed freshness) keeps the state but vouches for nothing, so the state ages.
pub async fn pull_once(edge: &Edge) -> Result<(), String> {
    let Some(url) = edge.opts.state_url.as_deref() else {
        return Ok(());
    };
    let mut req = edge.client.get(url).timeout(Duration::from_secs(5));
    if let Some(g) = edge.generation() {
        req = req.header(contract::headers::GENERATION, g.to_string());
    }
    req = req.header(contract::headers::FRESHNESS, contract::headers::FRESHNESS_SIGNED);
    if let Some(t) = &edge.opts.edge_token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        // Unsigned, so replayable: it cannot count as freshness.
        304 | 204 => {
            tracing::warn!("state endpoint answered an unsigned 304: the state is not confirmed fresh");
            Ok(())
        }
        200 => {
            let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
            edge.offer_state(&bytes).map(|_| ()).map_err(|e| e.to_string())
        }
        s => Err(format!("state endpoint answered {s}")),
    }
}

/// Pull the signing keys once (`id:state:hex,...`); replaces the engine only when they changed.
pub async fn pull_keys_once(edge: &Edge) -> Result<(), String> {
    let Some(url) = edge.opts.keys_url.as_deref() else {
        return Ok(());
    };
    let mut req = edge.client.get(url).timeout(Duration::from_secs(5));
    if let Some(t) = &edge.opts.edge_token {
        req = req.bearer_auth(t);
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
    let mut req = edge
        .client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(json)
        .timeout(Duration::from_secs(5));
    if let Some(t) = &edge.opts.edge_token {
        req = req.bearer_auth(t);
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

/// The client's address and country, and whether the request came through a trusted proxy (see
/// `ClientSources::vouched`).
fn client_facts(edge: &Edge, req: &Request<Body>) -> (Option<IpAddr>, Option<[u8; 2]>, bool) {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let sources = &edge.opts.client_sources;
    let (ip, country) = sources.facts(peer, req.headers());
    // A configured country header that is missing (or unreadable) means the request did not come through the
    // proxy as configured: no country source for it, not "unknown country" (which passes every deny list).
    let vouched = sources.vouched(peer) && (sources.country_header.is_none() || country.is_some());
    (ip, country, vouched)
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

/// The engine's answer to an origin failure.
fn failure(f: &sharegate_edge::engine::OriginFailure) -> Response<Body> {
    let mut r = json_response(
        StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY),
        f.body.to_string(),
    );
    set_headers(&mut r, &f.headers);
    r
}

fn set_headers(resp: &mut Response<Body>, headers: &sharegate_edge::engine::Headers) {
    use sharegate_edge::engine::HeaderValue as V;
    for (k, v) in headers {
        // Constants need no validation or copy; configured values were checked when the config was parsed.
        let value = match v {
            V::Static(s) => Some(HeaderValue::from_static(s)),
            V::Shared(s) => HeaderValue::from_str(s).ok(),
            V::Owned(s) => HeaderValue::from_str(s).ok(),
        };
        if let Some(value) = value {
            resp.headers_mut().insert(*k, value);
        }
    }
}

async fn handle(State(edge): State<Arc<Edge>>, req: Request<Body>) -> Response<Body> {
    let (client_ip, country, vouched) = client_facts(&edge, &req);
    // A request that bypassed the trusted proxy has no country source: country rules are refused for it (or follow
    // the lenient rule, if chosen), rather than read as "unknown country", which passes every deny list.
    let engine = if vouched {
        edge.engine.load_full()
    } else {
        edge.sourceless.load_full()
    };
    let h = req.headers();
    let text = |name: header::HeaderName| h.get(name).and_then(|v| v.to_str().ok());
    let host = text(header::HOST).unwrap_or("");
    let ereq = sharegate_edge::Request {
        method: req.method().as_str(),
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        cookie: text(header::COOKIE),
        origin: text(header::ORIGIN),
        referer: text(header::REFERER),
        client_ip,
        country,
    };
    let now = now_secs();
    let held = edge.held.load_full();
    let decision = sharegate_edge::held::decide(&engine, held.as_deref(), &ereq, now);
    let head = req.method() == Method::HEAD;
    let range = text(header::RANGE).map(str::to_string);
    match decision {
        Decision::Preflight(headers) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            set_headers(&mut r, &headers);
            r
        }
        Decision::Deny(d) => {
            edge.record(d.event);
            let mut r = Response::new(if head { Body::empty() } else { Body::from(d.body) });
            *r.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::FORBIDDEN);
            set_headers(&mut r, &d.headers);
            r
        }
        Decision::Allow(mut a) => {
            edge.record(a.event.take());
            serve_allowed(&edge, &engine, *a, now, head, range.as_deref()).await
        }
    }
}

async fn serve_allowed(
    edge: &Edge,
    engine: &Engine,
    a: Allow,
    now: u64,
    head: bool,
    range: Option<&str>,
) -> Response<Body> {
    let is_playlist = a.playlist.is_some();
    let cache = if is_playlist { &edge.playlists } else { &edge.segments };
    // The sync cache: a lookup is a hash probe, with no future to poll on the hot path.
    let fetched = match cache.get(&a.cache_key) {
        Some(f) => Some(f),
        None => {
            let f = origin::fetch(
                &edge.opts.origins,
                &edge.client,
                edge.opts.origin_timeout,
                &a.origin_path,
                a.origin_query.as_deref(),
            )
            .await
            .map(Arc::new);
            // Blocking LL-HLS reloads (with _HLS_msn) are per-request by nature; cache only plain objects.
            if let Some(f) = &f
                && f.status == 200
                && a.origin_query.is_none()
            {
                cache.insert(a.cache_key.clone(), Arc::clone(f));
            }
            f
        }
    };
    let Some(f) = fetched else {
        return failure(&a.origin_unavailable(engine.config().reason_header));
    };
    let mut body = f.body.clone();
    if f.status == 200
        && let Some(plan) = &a.playlist
    {
        let rewritten = std::str::from_utf8(&f.body)
            .ok()
            .and_then(|text| engine.rewrite_playlist(plan, text, now).ok());
        match rewritten {
            Some(t) => body = Bytes::from(t),
            None => return failure(&a.bad_playlist()),
        }
    }
    let len = body.len() as u64;
    let mut status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut content_range = None;
    if f.status == 200
        && a.resource != Resource::MultivariantPlaylist
        && a.resource != Resource::MediaPlaylist
        && let Some(r) = range.and_then(|r| parse_range(r, len))
    {
        match r {
            Ok((s, e)) => {
                body = body.slice(s as usize..=e as usize);
                status = StatusCode::PARTIAL_CONTENT;
                content_range = Some(format!("bytes {s}-{e}/{len}"));
            }
            Err(()) => {
                let mut r = Response::new(Body::empty());
                *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                set_headers(&mut r, &a.headers);
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return r;
            }
        }
    }
    let body_len = body.len();
    let mut r = Response::new(if head { Body::empty() } else { Body::from(body) });
    // HEAD: say how long the body would be (hyper fills it in itself for full bodies).
    *r.status_mut() = status;
    if let Some(ct) = f.content_type.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if head {
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }
    r.headers_mut()
        .insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::CONTENT_RANGE, cr);
    }
    if let Some(v) = a
        .cache_control(f.cache_control.as_deref())
        .and_then(|cc| HeaderValue::from_str(cc).ok())
    {
        r.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    if !a.cache_tags.is_empty()
        && let Ok(v) = HeaderValue::from_str(&a.cache_tags.join(" "))
    {
        r.headers_mut().insert(contract::headers::SURROGATE_KEY, v);
    }
    set_headers(&mut r, &a.headers);
    r
}
