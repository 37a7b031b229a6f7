//! sharegate's edge on Fastly Compute: a thin translation between the fastly crate and `sharegate_edge::Engine`.
//!
//! Fastly runs a fresh instance for every request, so each one reads its settings from the Config and Secret Stores
//! (through the shared parser), opens the revocation state in place from the POP's Core Cache (`state`), decides,
//! and answers: a denial, a preflight, or the origin object through the Core Cache without the token (`origin`).
//! Work the viewer need not wait for — refreshing a stale state, reporting the event — happens after the response
//! has been handed to Fastly. See `docs/fastly.md`.
#![deny(unsafe_code)]

mod origin;
mod raw;
mod shards;
mod state;
mod stores;

use fastly::http::Method;
use fastly::{Request, Response};
use sharegate_edge::ConfigSource;
use sharegate_edge::adapter::{self, AdapterSettings};
use sharegate_edge::client::{ClientSources, Peer};
use sharegate_edge::contract::{
    fastly::{CONTROL_PLANE_BACKEND, STATE_SHARDS},
    paths,
};
use sharegate_edge::engine::{CountryLookup, Decision, Headers};
use sharegate_edge::engine::{Revocations, StateInput};
use sharegate_edge::events::{Event, EventBatch};
use sharegate_edge::held;
use sharegate_edge::response::{self, ClientAsk, ResponsePlan, Step};
use sharegate_edge::{EdgeConfig, Engine};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a request builds from the stores.
pub struct Runtime {
    /// The engine, keyed.
    pub engine: Engine,
    /// Origins, control plane, cache lifetimes.
    pub settings: AdapterSettings,
    /// The platform's client facts, or the test harness's headers (`SHAREGATE_TRUST_FORWARDED`).
    pub sources: ClientSources,
    /// The revocation state by shards (`SHAREGATE_STATE_SHARDS=true`) rather than whole.
    pub shards: bool,
}

impl Runtime {
    /// Read and parse every setting. `Err` names the setting or store at fault, never a value.
    fn load() -> Result<Runtime, &'static str> {
        let src = stores::Stores::open()?;
        let config = EdgeConfig::from_source(&src).map_err(|e| e.key)?;
        let settings = AdapterSettings::from_source(&src).map_err(|e| e.key)?;
        let shards = match src.get(STATE_SHARDS).as_deref().map(str::trim) {
            None | Some("" | "false") => false,
            Some("true") => true,
            Some(_) => return Err(STATE_SHARDS),
        };
        Ok(Runtime {
            shards,
            engine: Engine::new(config),
            sources: ClientSources::cdn(settings.trust_forwarded),
            settings,
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Set a decision's headers on a response.
pub(crate) fn set_headers(resp: &mut Response, headers: &Headers) {
    for (k, v) in headers {
        resp.set_header(*k, &**v);
    }
}

/// Per-phase timings for `scripts/bench-fastly.sh` (feature `bench-timing`; free otherwise).
#[derive(Default)]
struct Timings {
    #[cfg(feature = "bench-timing")]
    marks: Vec<(&'static str, std::time::Instant)>,
    /// Time inside a phase reported as a phase of its own: (inside, as, duration).
    #[cfg(feature = "bench-timing")]
    moved: Vec<(&'static str, &'static str, std::time::Duration)>,
}

impl Timings {
    fn mark(&mut self, _phase: &'static str) {
        #[cfg(feature = "bench-timing")]
        self.marks.push((_phase, std::time::Instant::now()));
    }

    /// Report `_d` of phase `_inside` as phase `_as`.
    fn split(&mut self, _inside: &'static str, _as: &'static str, _d: std::time::Duration) {
        #[cfg(feature = "bench-timing")]
        self.moved.push((_inside, _as, _d));
    }

    fn header(&self, _resp: &mut Response) {
        #[cfg(feature = "bench-timing")]
        {
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
            let mut parts: Vec<String> = self
                .marks
                .windows(2)
                .map(|w| {
                    let moved: std::time::Duration = self.moved.iter().filter(|m| m.0 == w[1].0).map(|m| m.2).sum();
                    format!("{};dur={:.4}", w[1].0, ms((w[1].1 - w[0].1).saturating_sub(moved)))
                })
                .collect();
            parts.extend(self.moved.iter().map(|m| format!("{};dur={:.4}", m.1, ms(m.2))));
            _resp.set_header("server-timing", parts.join(", "));
        }
    }
}

/// Read the request, ask the engine, send its answer (fetching first when it allows); then, with the viewer served,
/// refresh the state if this request is the one obliged to, and report the event.
fn main() {
    let mut t = Timings::default();
    t.mark("start");
    let req = Request::from_client();
    let rt = match Runtime::load() {
        Ok(rt) => rt,
        Err(setting) => {
            eprintln!("sharegate: configuration error in {setting}");
            let head = req.get_method() == Method::HEAD;
            return origin::send(ResponsePlan::misconfigured(head), None).send_to_client();
        }
    };
    t.mark("settings");
    let uri = raw::client_uri(&req).unwrap_or_else(|| req.get_url_str().to_string());
    let (ereq, ask) = read_request(&req, &uri, &rt.sources);
    t.mark("request");
    let now = now_ms();
    if rt.shards {
        return sharded(&rt, &ereq, ask, now, t);
    }
    let current = state::for_request(&rt.engine, &rt.settings, now);
    t.mark("state");
    let (generation, decision) = current.with_input(now / 1000, |input, generation| {
        t.mark("open");
        let decision = (ereq.path != paths::STATUS).then(|| rt.engine.decide(&ereq, now / 1000, input));
        (generation, decision)
    });
    t.mark("decide");
    #[cfg(feature = "bench-timing")]
    kv_state(&mut t);
    let (mut resp, event) = match decision {
        None => (status(&rt, generation, now, current.times.as_of), None),
        Some(decision) => answer(&rt, decision, ask, now / 1000),
    };
    t.mark("answer");
    t.header(&mut resp);
    resp.send_to_client();
    if current.must_refresh() {
        let _ = state::refresh(&rt.engine, &rt.settings, current, now_ms());
    }
    if let Some(e) = event {
        report(&rt, e);
    }
}

/// The rest of a request with the state by shards (`SHAREGATE_STATE_SHARDS`, `shards.rs`): the head's prefix read
/// first, the token's shard when the engine asks about a verified token; without an exact answer, decided again
/// with no state (the engine's stale policy).
fn sharded(rt: &Runtime, ereq: &sharegate_edge::Request<'_>, ask: ClientAsk<'_>, now: u64, mut t: Timings) {
    let current = shards::for_request(&rt.engine, &rt.settings, now);
    t.mark("state");
    let lazy = current.lazy(&rt.engine, &rt.settings);
    let generation = current.prefix().map(|p| p.generation());
    t.mark("open");
    let as_of = current.meta.as_of;
    let decision = (ereq.path != paths::STATUS).then(|| {
        let state = lazy.as_ref().map(|l| l as &dyn Revocations);
        let d = rt
            .engine
            .decide(ereq, now / 1000, StateInput::opened(state, as_of, now / 1000));
        if lazy.as_ref().is_some_and(shards::Lazy::unavailable) {
            return rt
                .engine
                .decide(ereq, now / 1000, StateInput::opened(None, as_of, now / 1000));
        }
        d
    });
    t.mark("decide");
    if let Some(l) = &lazy {
        t.split("decide", "shard", l.spent());
    }
    let (mut resp, event) = match decision {
        None => (status(rt, generation, now, as_of), None),
        Some(decision) => answer(rt, decision, ask, now / 1000),
    };
    t.mark("answer");
    t.header(&mut resp);
    resp.send_to_client();
    if current.must_refresh() {
        let _ = shards::refresh(&rt.engine, &rt.settings, current, now_ms());
    }
    if let Some(e) = event {
        report(rt, e);
    }
}

/// The alternative `docs/fastly.md` measures the Core Cache against: the same snapshot read from a KV Store (key
/// `state` of `sharegate_state_kv`) and opened in place, per request. Bench builds only; the result is unused.
#[cfg(feature = "bench-timing")]
fn kv_state(t: &mut Timings) {
    if let Ok(Some(store)) = fastly::kv_store::KVStore::open(sharegate_edge::contract::fastly::STATE_KV_STORE)
        && let Ok(mut found) = store.lookup("state")
    {
        let bytes = found.take_body_bytes();
        let opened = sharegate_shared::revocation::StateView::open(&bytes).map(|v| v.generation());
        std::hint::black_box(opened.ok());
    }
    t.mark("kv_state");
}

/// The engine's view of the request (the target as the client sent it, `raw`), and what the client asked of the
/// answer. The client's facts come from the one reader: the platform's (the connection Fastly terminated, and its
/// geolocation) as the peer, or the test harness's headers.
fn read_request<'r>(
    req: &'r Request,
    raw: &'r str,
    sources: &ClientSources,
) -> (sharegate_edge::Request<'r>, ClientAsk<'r>) {
    let (path, query) = adapter::split_target(raw);
    // The names the request carries, in one pass (a few hostcalls); then a value only for a name that is there,
    // instead of one hostcall per header the engine might read (about a dozen, nearly all absent).
    let names: Vec<&fastly::http::HeaderName> = req.get_header_names().collect();
    let header = |name: &str| {
        names
            .iter()
            .any(|n| n.as_str().eq_ignore_ascii_case(name))
            .then(|| req.get_header(name).and_then(|v| v.to_str().ok()))
            .flatten()
    };
    // One hostcall each (see `raw`), not the crate's whole client record and serde parse of the geo record. The geo
    // lookup (~20 µs per request in Viceroy) is left to the engine, which asks only for a token with a country rule.
    let ip = raw::client_ip(req);
    let client = sources.read_peer(Peer { ip, country: None }, header);
    let country_lookup = ip.filter(|_| sources.country_from_peer(ip)).map(|ip| CountryLookup {
        ip,
        lookup: raw::country,
    });
    let method = req.get_method_str();
    let ereq = sharegate_edge::Request {
        method,
        host: header("host").unwrap_or_default(),
        path,
        query,
        cookie: header("cookie"),
        origin: header("origin"),
        referer: header("referer"),
        client_ip: client.ip,
        country: client.country,
        country_lookup,
        cmcd_headers: sharegate_edge::cmcd::HEADERS.map(header),
    };
    let ask = ClientAsk {
        head: method == Method::HEAD.as_str(),
        range: header("range"),
    };
    (ereq, ask)
}

/// The response to a decision (the engine's plan, or the origin object's), and the event to report.
fn answer(rt: &Runtime, decision: Decision, ask: ClientAsk<'_>, now: u64) -> (Response, Option<Event>) {
    let (step, event) = response::plan(decision, ask);
    let resp = match step {
        Step::Answer(plan) => origin::send(plan, None),
        Step::Fetch(a) => origin::serve(rt, &a, ask, now),
    };
    (resp, event)
}

/// What this POP's cache holds, in the status shape of every edge (`adapter::status_json`). Not a path the engine
/// would allow (`/_sharegate/` carries no token), so it shadows nothing.
fn status(rt: &Runtime, generation: Option<u64>, now_ms: u64, as_of: u64) -> Response {
    let as_of = generation.map(|_| as_of);
    let body = adapter::status_json(
        "fastly",
        generation,
        as_of,
        now_ms / 1000,
        &rt.engine.config().keys,
        &[],
    );
    // The client facts this app trusts: the platform's client address (the connection Fastly terminated) and its
    // geolocation of that address; no request header.
    let (ip, country) = rt
        .settings
        .client_sources("platform:client-ip", "platform:geo(client-ip)");
    let body = adapter::with_client_sources(body, ip, country, "enforced");
    Response::from_body(body)
        .with_header("content-type", "application/json")
        .with_header("cache-control", "no-store")
}

/// Send one event to the control plane, fire-and-forget: the request continues after this instance exits. A fresh
/// instance per request means a batch of one; the control plane takes batches of any size.
fn report(rt: &Runtime, e: Event) {
    let Some(url) = rt.settings.events_url.as_deref() else {
        return;
    };
    let mut batch = EventBatch::default();
    batch.push(e);
    let Some(json) = batch.take_json(&rt.engine.config().edge_id) else {
        return;
    };
    let mut req = Request::post(url).with_pass(true).with_body(json);
    for (name, value) in held::events_request_headers(rt.settings.edge_token.as_deref()) {
        req.set_header(name, value);
    }
    if let Err(e) = req.send_async(CONTROL_PLANE_BACKEND) {
        eprintln!("sharegate: event not sent: {e}");
    }
}
