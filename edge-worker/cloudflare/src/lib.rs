//! sharegate's edge on Cloudflare Workers: a thin translation between workers-rs and `sharegate_edge::Engine`.
//!
//! Per isolate it keeps the parsed configuration (secrets and `[vars]`, read by the shared config parser), the
//! verified revocation state and a batch of events. Each request is decided by the engine; allowed ones are fetched
//! from the origin without the token (so the zone cache key has none), with the asset's cache tags. The state is
//! refreshed from the control plane off the request path (`wait_until`) when half the freshness window has passed,
//! and on it when the whole window has; see `docs/cloudflare.md`. The state's age, which decides the stale policy, is
//! measured from the control plane's signed "as of" time (`sharegate_edge::held`), never from when this isolate (or
//! the location's cache) got the answer; the refresh window is only a schedule.
#![forbid(unsafe_code)]

use sharegate_edge::adapter::{self, AdapterSettings};
use sharegate_edge::client::{ClientFacts, ClientSources, Peer};
use sharegate_edge::contract::{headers as names, paths};
use sharegate_edge::engine::{Allow, Headers};
use sharegate_edge::events::{Event, EventBatch};
use sharegate_edge::held::{self, Held, Refresh, Schedule, StateReply};
use sharegate_edge::response::{
    self, BodyPlan, ClientAsk, OriginAnswer, ResponsePlan, Step, TagHeader, try_next_origin,
};
use sharegate_edge::{ConfigSource, EdgeConfig, Engine};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::{Cache, Context, Env, Fetch, Method, Request, Response, ResponseBody, event, js_sys, web_sys};

/// Settings from the Worker's bindings: secrets first, then `[vars]`.
struct EnvSource<'a>(&'a Env);

impl ConfigSource for EnvSource<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.0
            .secret(key)
            .map(|s| s.to_string())
            .or_else(|_| self.0.var(key).map(|v| v.to_string()))
            .ok()
    }
}

/// What an isolate builds once from its bindings.
struct Runtime {
    engine: Engine,
    settings: AdapterSettings,
    /// The platform's client facts, or the test harness's headers (`SHAREGATE_TRUST_FORWARDED`).
    sources: ClientSources,
}

impl Runtime {
    fn schedule(&self) -> Schedule {
        Schedule {
            window_ms: u64::from(self.settings.state_refresh_ms),
        }
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<Rc<Runtime>>> = const { RefCell::new(None) };
    static HELD: RefCell<Option<Rc<Held>>> = const { RefCell::new(None) };
    /// When the refresh in flight started (0: none). One refresh at a time per isolate; a start older than two
    /// deadlines is a refresh the runtime abandoned, and no longer counts.
    static REFRESH_SINCE_MS: Cell<u64> = const { Cell::new(0) };
    /// When the last refresh failed (0: never), for the backoff.
    static FAILED_AT_MS: Cell<u64> = const { Cell::new(0) };
    /// When this isolate last got a verified answer from the control plane (0: never). Only the refresh schedule
    /// reads it: a replayed answer can move it, so it never counts as freshness.
    static CHECKED_MS: Cell<u64> = const { Cell::new(0) };
    static EVENTS: RefCell<EventBatch> = RefCell::new(EventBatch::default());
    static FLUSH_SCHEDULED: Cell<bool> = const { Cell::new(false) };
    static FLUSH_IN_FLIGHT: Cell<bool> = const { Cell::new(false) };
}

fn runtime(env: &Env) -> Result<Rc<Runtime>, &'static str> {
    if let Some(rt) = RUNTIME.with(|r| r.borrow().clone()) {
        return Ok(rt);
    }
    let src = EnvSource(env);
    // Errors name the setting, never its value (it may be a secret).
    let config = EdgeConfig::from_source(&src).map_err(|e| e.key)?;
    let settings = AdapterSettings::from_source(&src).map_err(|e| e.key)?;
    let rt = Rc::new(Runtime {
        engine: Engine::new(config),
        sources: ClientSources::cdn(settings.trust_forwarded),
        settings,
    });
    RUNTIME.with(|r| *r.borrow_mut() = Some(Rc::clone(&rt)));
    Ok(rt)
}

/// Wall-clock milliseconds. (Workers advance the clock only across I/O, which is all the precision needed here.)
fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Set the engine's headers, in order (a later one replaces an earlier one of the same name).
fn set_headers(r: &mut Response, headers: &Headers) -> worker::Result<()> {
    let h = r.headers_mut();
    for (k, v) in headers {
        h.set(k, v)?;
    }
    Ok(())
}

/// The engine's plan as a response: its status and headers, and the body it names (`origin`'s, streamed unread, for
/// `Whole`; slices are cut and playlists rewritten before this).
fn send(plan: ResponsePlan, origin: Option<Response>) -> worker::Result<Response> {
    let body = match plan.body {
        BodyPlan::Whole => origin.map_or(ResponseBody::Empty, |o| o.into_parts().1),
        BodyPlan::Bytes(b) => ResponseBody::Body(b),
        BodyPlan::Empty | BodyPlan::Slice { .. } | BodyPlan::Rewrite(_) | BodyPlan::Buffer(_) => ResponseBody::Empty,
    };
    let mut r = Response::from_body(body)?.with_status(plan.status);
    set_headers(&mut r, &plan.headers)?;
    Ok(r)
}

/// What the engine reads of a request, copied out of it (workers-rs hands out owned header values).
struct Fields {
    host: String,
    cookie: Option<String>,
    origin: Option<String>,
    referer: Option<String>,
    range: Option<String>,
    client: ClientFacts,
    /// CMCD request headers ([`sharegate_edge::cmcd::HEADERS`]).
    cmcd: [Option<String>; 4],
}

impl Fields {
    /// The headers, and the client's facts through the one reader: the platform's (Cloudflare overwrites
    /// CF-Connecting-IP and `request.cf` whatever the client sent) as the peer, or the harness's headers.
    fn read(req: &Request, sources: &ClientSources) -> Fields {
        let header = |name: &str| req.headers().get(name).ok().flatten();
        let country = req.cf().and_then(|cf| cf.country());
        let peer = Peer {
            ip: header("cf-connecting-ip").and_then(|v| v.parse().ok()),
            country: country.as_deref().and_then(adapter::country_code),
        };
        Fields {
            host: header("host").unwrap_or_default(),
            cookie: header("cookie"),
            origin: header("origin"),
            referer: header("referer"),
            range: header("range"),
            client: sources.read_owned(peer, header),
            cmcd: sharegate_edge::cmcd::HEADERS.map(header),
        }
    }

    /// The engine's view of the request (`path` and `query` exactly as received).
    fn request<'a>(&'a self, method: &'a str, path: &'a str, query: Option<&'a str>) -> sharegate_edge::Request<'a> {
        sharegate_edge::Request {
            method,
            host: &self.host,
            path,
            query,
            cookie: self.cookie.as_deref(),
            origin: self.origin.as_deref(),
            referer: self.referer.as_deref(),
            client_ip: self.client.ip,
            country: self.client.country,
            // request.cf carries the country already: nothing to defer.
            country_lookup: None,
            cmcd_headers: [0, 1, 2, 3].map(|i| self.cmcd[i].as_deref()),
        }
    }
}

/// Read the request, ask the engine, and send its answer (fetching first when it allows).
#[event(fetch)]
async fn fetch(req: Request, env: Env, ctx: Context) -> worker::Result<Response> {
    let method = req.method();
    let head = method == Method::Head;
    let rt = match runtime(&env) {
        Ok(rt) => rt,
        Err(setting) => {
            worker::console_error!("sharegate: configuration error in {setting}");
            return send(ResponsePlan::misconfigured(head), None);
        }
    };
    let url = req.inner().url();
    let (path, query) = adapter::split_target(&url);
    if path == paths::STATUS {
        return status(&rt);
    }
    #[cfg(feature = "bench-phases")]
    let stop = bench::Stop::of(&req);
    #[cfg(feature = "bench-phases")]
    if stop == bench::Stop::Entry {
        return Response::empty();
    }
    let fields = Fields::read(&req, &rt.sources);
    let ereq = fields.request(method.as_ref(), path, query);
    let held = current_state(&rt, &fields.host, &ctx).await;
    let now = now_ms() / 1000;
    let ask = ClientAsk {
        head,
        range: fields.range.as_deref(),
    };
    let (step, event) = response::plan(held::decide(&rt.engine, held.as_deref(), &ereq, now), ask);
    record(&rt, &ctx, event);
    #[cfg(feature = "bench-phases")]
    if let Some(answer) = bench::stop_after_decide(stop, &rt, &step).await {
        return Ok(answer);
    }
    match step {
        Step::Answer(plan) => send(plan, None),
        Step::Fetch(a) => serve_allowed(&rt, &a, ask, now).await,
    }
}

/// Phase stops for scripts/bench-cloudflare.sh (feature `bench-phases`, never deployed).
#[cfg(feature = "bench-phases")]
mod bench {
    use super::*;

    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Stop {
        /// Answer 200 empty once the isolate's runtime is found: the cost of entering the worker at all.
        Entry,
        /// Answer 200 empty after reading the request and deciding.
        Decide,
        /// Fetch from the origin as an allowed request does, and return the origin's response object as it came.
        Fetch,
        /// The same fetch without the deadline (no AbortController, no timer).
        FetchNoDeadline,
        /// The same fetch without the deadline and without cache tags.
        FetchBare,
        /// The same fetch raced against the timer, without an abort signal.
        FetchTimerOnly,
        /// The same fetch with the runtime's own timeout signal (`AbortSignal.timeout`), no timer of ours.
        FetchNativeTimeout,
        /// The whole request.
        Full,
    }

    impl Stop {
        pub(super) fn of(req: &Request) -> Stop {
            match req.headers().get("x-sharegate-bench-stop").ok().flatten().as_deref() {
                Some("entry") => Stop::Entry,
                Some("decide") => Stop::Decide,
                Some("fetch") => Stop::Fetch,
                Some("fetch-no-deadline") => Stop::FetchNoDeadline,
                Some("fetch-bare") => Stop::FetchBare,
                Some("fetch-timer-only") => Stop::FetchTimerOnly,
                Some("fetch-native-timeout") => Stop::FetchNativeTimeout,
                _ => Stop::Full,
            }
        }
    }

    /// The answer that ends an allowed request early at `stop`, if it does.
    pub(super) async fn stop_after_decide(stop: Stop, rt: &Runtime, step: &Step<'_>) -> Option<Response> {
        let Step::Fetch(a) = step else { return None };
        match stop {
            Stop::Decide => Response::empty().ok(),
            Stop::Fetch => origin_fetch(rt, a, None).await,
            Stop::FetchNoDeadline | Stop::FetchBare | Stop::FetchTimerOnly | Stop::FetchNativeTimeout => {
                let base = rt.settings.origins.first()?;
                let ttl = a.cdn_ttl(rt.settings.segment_ttl, rt.settings.playlist_ttl);
                let none = sharegate_edge::engine::CacheTags::none();
                let tags = if stop == Stop::FetchBare { &none } else { &a.cache_tags };
                let request = cached_request(&a.origin_url(base), ttl, tags, None).ok()?;
                match stop {
                    Stop::FetchTimerOnly => {
                        use futures_util::future::{Either, select};
                        let f = Fetch::Request(request);
                        let fetch = std::pin::pin!(f.send());
                        let timer = std::pin::pin!(worker::Delay::from(Duration::from_millis(5000)));
                        match select(fetch, timer).await {
                            Either::Left((r, _)) => r.ok(),
                            Either::Right(_) => None,
                        }
                    }
                    Stop::FetchNativeTimeout => {
                        let signal = worker::AbortSignal::from(web_sys::AbortSignal::timeout_with_u32(5000));
                        Fetch::Request(request).send_with_signal(&signal).await.ok()
                    }
                    _ => Fetch::Request(request).send().await.ok(),
                }
            }
            Stop::Entry | Stop::Full => None,
        }
    }
}

/// What this isolate holds, in the status shape of every edge (`adapter::status_json`).
fn status(rt: &Runtime) -> worker::Result<Response> {
    let held = HELD.with(|h| h.borrow().clone());
    let body = adapter::status_json(
        "cloudflare",
        held.as_ref().map(|h| h.generation),
        held.as_ref().map(|h| h.as_of),
        now_ms() / 1000,
        &rt.engine.config().keys,
        &[("events_pending", EVENTS.with(|b| b.borrow().len()) as u64)],
    );
    // The client facts this worker trusts: Cloudflare sets CF-Connecting-IP and request.cf itself, overwriting
    // whatever a client sent, so they are the platform's word.
    let (ip, country) = rt.settings.client_sources("cf-connecting-ip", "cf.country");
    let body = adapter::with_client_sources(body, ip, country, "enforced");
    let mut r = Response::from_bytes(body.into_bytes())?;
    let h = r.headers_mut();
    h.set("content-type", "application/json")?;
    h.set("cache-control", "no-store")?;
    Ok(r)
}

// ---------------------------------------------------------------------------------------------------------------
// Revocation state: isolate memory, refreshed through the zone cache.

/// The state to decide on. Younger than half the freshness window: as held. Older: refreshed in the background
/// (`wait_until`) and used meanwhile. Older than the whole window, or none yet: refreshed before deciding, and
/// requests arriving meanwhile wait for that same refresh rather than decide on older state.
async fn current_state(rt: &Rc<Runtime>, host: &str, ctx: &Context) -> Option<Rc<Held>> {
    rt.settings.state_url.as_ref()?;
    let held = HELD.with(|h| h.borrow().clone());
    let now = now_ms();
    // The schedule's clock (see CHECKED_MS); 0 is "never".
    let checked = Some(CHECKED_MS.with(Cell::get)).filter(|c| *c != 0 && held.is_some());
    let failed = Some(FAILED_AT_MS.with(Cell::get)).filter(|f| *f != 0);
    match rt.schedule().due(checked, failed, now) {
        Refresh::NotYet | Refresh::BackingOff => return held,
        Refresh::InBackground => {
            if begin_refresh(now) {
                let (rt, host) = (Rc::clone(rt), host.to_string());
                ctx.wait_until(async move { guarded_refresh(&rt, &host).await });
            }
            return held;
        }
        Refresh::BeforeDeciding => {}
    }
    if begin_refresh(now) {
        guarded_refresh(rt, host).await;
    } else {
        // Another request is refreshing: wait for it (bounded by its deadline).
        while REFRESH_SINCE_MS.with(Cell::get) != 0 && now_ms().saturating_sub(now) < u64::from(REFRESH_MS) {
            worker::Delay::from(Duration::from_millis(5)).await;
        }
    }
    HELD.with(|h| h.borrow().clone())
}

/// Claim the isolate's one refresh slot.
fn begin_refresh(now: u64) -> bool {
    REFRESH_SINCE_MS.with(|since| {
        let busy = since.get() != 0 && now.saturating_sub(since.get()) < 2 * u64::from(REFRESH_MS);
        if !busy {
            since.set(now.max(1));
        }
        !busy
    })
}

/// One refresh under one deadline (answer, body and cache included), then the slot is released; a failure starts
/// the backoff.
async fn guarded_refresh(rt: &Runtime, host: &str) {
    use futures_util::future::{Either, select};
    let work = std::pin::pin!(refresh(rt, host));
    let timer = std::pin::pin!(worker::Delay::from(Duration::from_millis(u64::from(REFRESH_MS))));
    let result = match select(work, timer).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => Err(format!("no complete answer within {REFRESH_MS} ms")),
    };
    if let Err(e) = result {
        worker::console_warn!("sharegate: state refresh failed: {e}");
        FAILED_AT_MS.with(|t| t.set(now_ms()));
    }
    REFRESH_SINCE_MS.with(|t| t.set(0));
}

/// Fetch with a deadline: a control plane or origin that does not answer must not hold a viewer's request.
/// The deadline covers the response head only: a long segment body may stream for as long as it takes.
async fn send_within(request: Request, ms: u32) -> worker::Result<Response> {
    use futures_util::future::{Either, select};
    let controller = worker::AbortController::default();
    let signal = controller.signal();
    let fetch = std::pin::pin!(async move { Fetch::Request(request).send_with_signal(&signal).await });
    let timer = std::pin::pin!(worker::Delay::from(Duration::from_millis(u64::from(ms))));
    match select(fetch, timer).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => {
            controller.abort();
            Err(worker::Error::RustError(format!("no answer within {ms} ms")))
        }
    }
}

/// Deadline of a control-plane call's answer head, ms.
const STATE_FETCH_MS: u32 = 2000;
/// Deadline of a whole state refresh (cache, answer, body, a second fetch after a gap), ms.
const REFRESH_MS: u32 = 4000;
/// Deadline of one origin attempt, ms (then the next origin is tried).
const ORIGIN_FETCH_MS: u32 = 5000;

/// One answer of the control plane, as the location's cache keeps it: the bytes (a snapshot, a delta, or the signed
/// freshness message when the held generation was current; empty for a bare 304 from a control plane that predates
/// it). When the location cached it decides only whether the cached copy is reused: the freshness it gives is its
/// signed as-of.
struct StateAnswer {
    bytes: Vec<u8>,
}

async fn refresh(rt: &Runtime, host: &str) -> Result<(), String> {
    let held = HELD.with(|h| h.borrow().clone());
    let since = held.as_ref().map(|h| h.generation);
    let answer = state_answer(rt, host, since).await?;
    if answer.bytes.is_empty() {
        // Unsigned, so replayable: it confirms nothing, and the state ages towards the stale policy.
        return Err(StateReply::Unconfirmed.to_string());
    }
    let key = rt.engine.config().state_key.as_ref();
    let now = now_ms() / 1000;
    let next = match held::offer(held.as_deref(), key, &answer.bytes, now) {
        Ok((next, _)) => next,
        // A delta that does not chain onto ours (we missed one), or word that a newer generation exists: ask for
        // the whole state.
        Err(e) if held::needs_snapshot(&e, since) => {
            let full = state_answer(rt, host, None).await?;
            held::offer(held.as_deref(), key, &full.bytes, now)
                .map_err(|e| e.to_string())?
                .0
        }
        Err(e) => return Err(e.to_string()),
    };
    // Another request may have installed a newer state (or newer evidence) while we waited: never go back.
    HELD.with(|h| {
        let mut h = h.borrow_mut();
        if held::replaces(h.as_deref(), &next) {
            *h = Some(Rc::new(next));
        }
    });
    CHECKED_MS.with(|t| t.set(now_ms().max(1)));
    Ok(())
}

/// The control plane's answer for `since`, from the colo's cache when it is young enough (under half the freshness
/// window), else from the control plane, then cached for the other isolates of this location. A cached answer is
/// worth exactly its signed as-of, however recently it was cached: an isolate that reads it is no fresher than the
/// control plane said when it signed it. The answers live in
/// a cache of their own (`caches.open("sharegate-state")`), apart from the zone cache that fetches and viewers go
/// through, so no request to the zone reads or writes them.
async fn state_answer(rt: &Runtime, host: &str, since: Option<u64>) -> Result<StateAnswer, String> {
    let Some(url) = rt.settings.state_url.as_deref() else {
        return Err("no state URL".into());
    };
    let half = rt.schedule().fresh_ms();
    let cache = Cache::open("sharegate-state".to_string()).await;
    // Holding nothing and holding generation 0 are different questions with different answers.
    let since_key = since.map_or_else(|| "none".to_string(), |g| g.to_string());
    let cache_key = format!("https://{host}{}{since_key}", paths::STATE_CACHE_PREFIX);
    if let Ok(Some(mut cached)) = cache.get(&cache_key, false).await {
        let at_ms: u64 = cached
            .headers()
            .get(names::AT_MS)
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // A time in the future is not believed (it would keep the state "fresh" forever).
        let now = now_ms();
        if at_ms <= now
            && now - at_ms < half
            && let Ok(bytes) = cached.bytes().await
        {
            return Ok(StateAnswer { bytes });
        }
    }
    let headers = worker::Headers::new();
    for (name, value) in held::state_request_headers(
        since,
        rt.settings.edge_token.as_deref(),
        Some(&rt.engine.config().edge_id),
    ) {
        headers.set(name, &value).map_err(|e| e.to_string())?;
    }
    let mut init = worker::RequestInit::new();
    init.with_headers(headers);
    let request = Request::new_with_init(url, &init).map_err(|e| e.to_string())?;
    let mut resp = send_within(request, STATE_FETCH_MS).await.map_err(|e| e.to_string())?;
    let at_ms = now_ms();
    let bytes = match StateReply::of(resp.status_code()) {
        StateReply::Offer => resp.bytes().await.map_err(|e| e.to_string())?,
        // Kept (and cached) as empty: `refresh` refuses it.
        StateReply::Unconfirmed => Vec::new(),
        failed @ StateReply::Failed(_) => return Err(failed.to_string()),
    };
    let ttl = half.div_ceil(1000).max(1);
    let mut copy = Response::from_bytes(bytes.clone()).map_err(|e| e.to_string())?;
    let h = copy.headers_mut();
    let _ = h.set("cache-control", &format!("public, max-age={ttl}"));
    let _ = h.set(names::AT_MS, &at_ms.to_string());
    // Best effort: a failed put only costs the next isolate a fetch.
    let _ = cache.put(&cache_key, copy).await;
    Ok(StateAnswer { bytes })
}

// ---------------------------------------------------------------------------------------------------------------
// Events: batched per isolate, sent with wait_until (never on the viewer's path).

fn record(rt: &Rc<Runtime>, ctx: &Context, event: Option<Event>) {
    let Some(e) = event else { return };
    if rt.settings.events_url.is_none() {
        return;
    }
    let full = EVENTS.with(|b| {
        let mut b = b.borrow_mut();
        b.push(e);
        b.len() >= rt.settings.events_batch
    });
    if full && !FLUSH_IN_FLIGHT.with(Cell::get) {
        let rt = Rc::clone(rt);
        ctx.wait_until(async move {
            // A failure puts the batch back; the scheduled flush below retries it.
            let _ = flush_events(&rt).await;
        });
    }
    schedule_flush(rt, ctx);
}

/// Send whatever is pending a second from now, unless a send is already scheduled: a quiet isolate still reports.
/// A failed send is retried each second a few times within the request's `wait_until` allowance; after that the
/// events wait in the batch for the next request's flush.
fn schedule_flush(rt: &Rc<Runtime>, ctx: &Context) {
    if FLUSH_SCHEDULED.with(|f| f.replace(true)) {
        return;
    }
    let rt = Rc::clone(rt);
    ctx.wait_until(async move {
        for _ in 0..5 {
            worker::Delay::from(Duration::from_secs(1)).await;
            if flush_events(&rt).await {
                break;
            }
        }
        FLUSH_SCHEDULED.with(|f| f.set(false));
    });
}

/// Send the pending events as one batch (one send at a time per isolate). `false` when they were put back.
async fn flush_events(rt: &Runtime) -> bool {
    let Some(url) = rt.settings.events_url.as_deref() else {
        return true;
    };
    if FLUSH_IN_FLIGHT.with(|f| f.replace(true)) {
        return true;
    }
    let Some(pending) = EVENTS.with(|b| b.borrow_mut().take_pending()) else {
        FLUSH_IN_FLIGHT.with(|f| f.set(false));
        return true;
    };
    let json = pending.to_json(&rt.engine.config().edge_id);
    let sent = async {
        let headers = worker::Headers::new();
        for (name, value) in held::events_request_headers(rt.settings.edge_token.as_deref()) {
            headers.set(name, &value)?;
        }
        let mut init = worker::RequestInit::new();
        init.with_method(Method::Post)
            .with_headers(headers)
            .with_body(Some(JsValue::from_str(&json)));
        let resp = send_within(Request::new_with_init(url, &init)?, STATE_FETCH_MS).await?;
        Ok::<bool, worker::Error>((200..300).contains(&resp.status_code()))
    }
    .await;
    let ok = matches!(sent, Ok(true));
    if !ok {
        // Put back in front, the drop count included. (A send that timed out after the control plane took it is
        // counted twice: the events endpoint has no batch id to deduplicate on.)
        EVENTS.with(|b| b.borrow_mut().restore(pending));
    }
    FLUSH_IN_FLIGHT.with(|f| f.set(false));
    ok
}

// ---------------------------------------------------------------------------------------------------------------
// Allowed requests: the origin, through the zone cache, without the token; the engine plans the answer.

/// Fetch the object from the origins in order (`Allow::origin_url`, `try_next_origin`), through the zone cache
/// (`cf.cacheEverything` for the engine's `cdn_ttl`, and the asset's cache tags so a purge by tag reaches the
/// object). The URL carries no token, so neither does the cache key.
async fn origin_fetch(rt: &Runtime, a: &Allow<'_>, range: Option<&str>) -> Option<Response> {
    let ttl = a.cdn_ttl(rt.settings.segment_ttl, rt.settings.playlist_ttl);
    for base in &rt.settings.origins {
        let Ok(request) = cached_request(&a.origin_url(base), ttl, &a.cache_tags, range) else {
            continue;
        };
        match send_within(request, ORIGIN_FETCH_MS).await {
            Ok(resp) if !try_next_origin(resp.status_code()) => return Some(resp),
            Ok(resp) => worker::console_warn!("sharegate: origin {base} answered {}", resp.status_code()),
            Err(e) => worker::console_warn!("sharegate: origin {base} failed: {e}"),
        }
    }
    None
}

/// The origin request: token-free URL, the zone-cache options, and the viewer's byte range (the zone cache answers
/// ranges from the cached object, so the isolate never holds a whole segment to slice it). `ttl: None` is never
/// cached; otherwise 2xx are kept `ttl` seconds and nothing else is (a live segment asked for early must not stay a
/// cached 404).
fn cached_request(
    url: &str,
    ttl: Option<u32>,
    tags: &sharegate_edge::engine::CacheTags<'_>,
    range: Option<&str>,
) -> Result<Request, JsValue> {
    let cf = js_sys::Object::new();
    let by_status = js_sys::Object::new();
    match ttl {
        Some(ttl) => {
            js_sys::Reflect::set(&cf, &"cacheEverything".into(), &JsValue::TRUE)?;
            js_sys::Reflect::set(&by_status, &"200-299".into(), &JsValue::from(ttl))?;
            js_sys::Reflect::set(&by_status, &"300-599".into(), &JsValue::from(-1))?;
        }
        // Negative: not cached at all.
        None => {
            js_sys::Reflect::set(&by_status, &"100-599".into(), &JsValue::from(-1))?;
        }
    }
    js_sys::Reflect::set(&cf, &"cacheTtlByStatus".into(), &by_status)?;
    let tag_list = js_sys::Array::new();
    for t in tags.iter() {
        tag_list.push(&JsValue::from_str(&t));
    }
    js_sys::Reflect::set(&cf, &"cacheTags".into(), &tag_list)?;
    let init = web_sys::RequestInit::new();
    js_sys::Reflect::set(&init, &"cf".into(), &cf)?;
    if let Some(r) = range {
        let headers = web_sys::Headers::new()?;
        headers.set("range", r)?;
        init.set_headers(&headers);
    }
    let req = web_sys::Request::new_with_str_and_init(url, &init)?;
    Ok(Request::from(req.unchecked_into::<web_sys::Request>()))
}

/// Largest object the isolate buffers to cut a byte range itself, when the origin ignored the range (above it the
/// whole object streams as a 200, which a client must accept).
const MAX_SLICE_BYTES: u64 = 16 * 1024 * 1024;

/// What the origin (or the zone cache) answered, for the engine.
fn origin_answer(origin: &Response) -> worker::Result<(u16, [Option<String>; 4])> {
    let h = origin.headers();
    let (content_type, cache_control) = (h.get("content-type")?, h.get("cache-control")?);
    let (content_range, length) = (h.get("content-range")?, h.get("content-length")?);
    Ok((
        origin.status_code(),
        [content_type, cache_control, content_range, length],
    ))
}

/// Fetch, ask the engine for the answer, copy its headers, and move the bytes as it says: segments (and ranges the
/// zone cache answered) stream through unread; a range the origin ignored is cut from the bounded object; a
/// playlist is rewritten; HEAD reads no body (except a playlist's, whose rewritten length it states).
async fn serve_allowed(rt: &Runtime, a: &Allow<'_>, ask: ClientAsk<'_>, now: u64) -> worker::Result<Response> {
    let unavailable = || a.unavailable(rt.engine.config().reason_header, ask);
    let Some(mut origin) = origin_fetch(rt, a, a.origin_range(ask)).await else {
        return send(unavailable(), None);
    };
    let (status, [content_type, cache_control, content_range, length]) = origin_answer(&origin)?;
    let length = length.and_then(|v| v.parse::<u64>().ok());
    let answer = OriginAnswer {
        status,
        length,
        content_type: content_type.as_deref(),
        cache_control: cache_control.as_deref(),
        content_range: content_range.as_deref(),
        sliceable: length.is_some_and(|l| l <= MAX_SLICE_BYTES),
        bufferable: false,
    };
    let mut plan = a.respond(ask, &answer, TagHeader::CacheTag);
    if let BodyPlan::Slice { start, end } = plan.body {
        let bytes = origin.bytes().await?;
        let cut = usize::try_from(start).ok().zip(usize::try_from(end).ok());
        match cut.and_then(|(s, e)| bytes.get(s..=e)) {
            Some(part) => plan.body = BodyPlan::Bytes(part.to_vec()),
            // Shorter than its Content-Length said: a broken origin answer.
            None => plan = unavailable(),
        }
    } else if plan.needs_body() {
        plan.finish(&rt.engine, origin.bytes().await?, now);
    }
    send(plan, Some(origin))
}
