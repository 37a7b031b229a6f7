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
mod state;
mod stores;

use fastly::http::Method;
use fastly::{Request, Response};
use sharegate_edge::adapter::{self, AdapterSettings};
use sharegate_edge::contract::{bodies, headers as names, paths};
use sharegate_edge::engine::{Decision, Headers, Revocations, StateInput};
use sharegate_edge::events::{Event, EventBatch};
use sharegate_edge::response::ClientAsk;
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::revocation::StateSet;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a request builds from the stores.
pub struct Runtime {
    /// The engine, keyed.
    pub engine: Engine,
    /// Origins, control plane, cache lifetimes.
    pub settings: AdapterSettings,
}

impl Runtime {
    /// Read and parse every setting. `Err` names the setting or store at fault, never a value.
    fn load() -> Result<Runtime, &'static str> {
        let src = stores::Stores::open()?;
        let config = EdgeConfig::from_source(&src).map_err(|e| e.key)?;
        let settings = AdapterSettings::from_source(&src).map_err(|e| e.key)?;
        Ok(Runtime {
            engine: Engine::new(config),
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
}

impl Timings {
    fn mark(&mut self, _phase: &'static str) {
        #[cfg(feature = "bench-timing")]
        self.marks.push((_phase, std::time::Instant::now()));
    }

    fn header(&self, _resp: &mut Response) {
        #[cfg(feature = "bench-timing")]
        {
            let parts: Vec<String> = self
                .marks
                .windows(2)
                .map(|w| format!("{};dur={:.4}", w[1].0, (w[1].1 - w[0].1).as_secs_f64() * 1000.0))
                .collect();
            _resp.set_header("server-timing", parts.join(", "));
        }
    }
}

fn main() {
    let mut t = Timings::default();
    t.mark("start");
    let req = Request::from_client();
    let rt = match Runtime::load() {
        Ok(rt) => rt,
        Err(setting) => {
            eprintln!("sharegate: configuration error in {setting}");
            Response::from_status(500)
                .with_body(bodies::MISCONFIGURED)
                .with_header("content-type", "application/json")
                .send_to_client();
            return;
        }
    };
    t.mark("settings");

    let uri = raw::client_uri(&req).unwrap_or_else(|| req.get_url_str().to_string());
    let (ereq, ask) = read_request(&req, &uri, &rt.settings);
    t.mark("request");

    let now = now_ms();
    let current = state::for_request(&rt.engine, &rt.settings, now);
    t.mark("state");
    let opened = current.blob.as_deref().and_then(state::open);
    let set = opened.as_ref().and_then(|(s, d)| StateSet::new(*s, d).ok());
    t.mark("open");
    // The age is the signed one (now - as_of), never the time the POP cached or checked it.
    let input = StateInput {
        state: set.as_ref().map(|s| s as &dyn Revocations),
        age: if set.is_some() {
            (now / 1000).saturating_sub(current.times.as_of)
        } else {
            u64::MAX
        },
    };
    let decision = if ereq.path == paths::STATUS {
        None
    } else {
        Some(rt.engine.decide(&ereq, now / 1000, input))
    };
    t.mark("decide");
    #[cfg(feature = "bench-timing")]
    kv_state(&mut t);

    let (mut resp, event) = match decision {
        None => (
            status(&rt, set.as_ref().map(StateSet::generation), now, current.times.as_of),
            None,
        ),
        Some(decision) => answer(&rt, decision, ask, now),
    };
    t.header(&mut resp);
    resp.send_to_client();

    // After the response: the viewer waits for none of this.
    if current.must_refresh() {
        let _ = state::refresh(&rt.engine, &rt.settings, current, now_ms());
    }
    if let Some(e) = event {
        report(&rt, e);
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
/// answer.
fn read_request<'r>(
    req: &'r Request,
    raw: &'r str,
    settings: &AdapterSettings,
) -> (sharegate_edge::Request<'r>, ClientAsk<'r>) {
    let (path, query) = adapter::split_target(raw);
    let header = |name: &str| req.get_header(name).and_then(|v| v.to_str().ok());
    let (client_ip, country) = client_facts(settings, req);
    let method = req.get_method_str();
    let ereq = sharegate_edge::Request {
        method,
        host: header("host").unwrap_or_default(),
        path,
        query,
        cookie: header("cookie"),
        origin: header("origin"),
        referer: header("referer"),
        client_ip,
        country,
    };
    let ask = ClientAsk {
        head: method == Method::HEAD.as_str(),
        range: header("range"),
    };
    (ereq, ask)
}

/// The client's address and country: the platform's (the connection Fastly terminated, and its geolocation), or,
/// for a local test harness only, its headers.
fn client_facts(settings: &AdapterSettings, req: &Request) -> (Option<IpAddr>, Option<[u8; 2]>) {
    let header = |name: &str| req.get_header(name).and_then(|v| v.to_str().ok());
    if settings.trust_forwarded {
        adapter::forwarded_facts(header("x-forwarded-for"), header(names::TEST_COUNTRY))
    } else {
        let ip = req.get_client_ip_addr();
        let geo = ip.and_then(fastly::geo::geo_lookup);
        (ip, geo.and_then(|g| adapter::country_code(g.country_code())))
    }
}

/// The response to a decision, and the event to report.
fn answer(rt: &Runtime, decision: Decision, ask: ClientAsk<'_>, now_ms: u64) -> (Response, Option<Event>) {
    match decision {
        Decision::Preflight(h) => {
            let mut r = Response::from_status(204);
            set_headers(&mut r, &h);
            (r, None)
        }
        Decision::Deny(d) => {
            let mut r = Response::from_status(d.status);
            if !ask.head {
                r.set_body(d.body);
            }
            set_headers(&mut r, &d.headers);
            (r, d.event)
        }
        Decision::Allow(mut a) => {
            let event = a.event.take();
            (origin::serve(rt, &a, ask, now_ms / 1000), event)
        }
    }
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
    let mut req = Request::post(url)
        .with_pass(true)
        .with_header("content-type", "application/json")
        .with_body(json);
    if let Some(t) = &rt.settings.edge_token {
        req.set_header("authorization", format!("Bearer {t}"));
    }
    if let Err(e) = req.send_async(state::CONTROL_PLANE_BACKEND) {
        eprintln!("sharegate: event not sent: {e}");
    }
}
