//! The conformance suite against the pure engine: the decision (status, reason, origin path, cache key) of every
//! case, and the whole answer it plans (status, headers, body: ranges, HEAD, 416, rewritten playlists) played out
//! against the suite's origin directory, without HTTP. Adapters must agree with this over their own runtimes.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sharegate_e2e::Suite;
use sharegate_edge::engine::{CountryLookup, Decision, Request, StateInput};
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::revocation::StateView;
use std::cell::Cell;
use std::net::IpAddr;

thread_local! {
    /// The country of the case under test, for [`case_country`].
    static CASE_COUNTRY: Cell<Option<[u8; 2]>> = const { Cell::new(None) };
}

/// A geolocation that answers the current case's country for any address.
fn case_country(_: IpAddr) -> Option<[u8; 2]> {
    CASE_COUNTRY.with(Cell::get)
}

#[test]
fn engine_decisions_match_the_suite() {
    let suite = Suite::load().unwrap();
    let now = 1_900_000_000;
    let minted = suite.mint(now).unwrap();
    let state_bytes = suite.state(now, 1).unwrap();
    let view = StateView::open(&state_bytes).unwrap();
    let mut failures = Vec::new();
    for case in suite.cases() {
        let name = case["name"].as_str().unwrap();
        let engine = Engine::new(EdgeConfig::from_source(&suite.settings(case)).unwrap());
        let r = minted.request(&case["request"]);
        let headers = |k: &str| r.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let country = r.country.as_deref().map(|c| <[u8; 2]>::try_from(c.as_bytes()).unwrap());
        let req = Request {
            method: &r.method,
            host: "edge.test",
            path: &r.path,
            query: r.query.as_deref(),
            cookie: headers("cookie"),
            origin: headers("origin"),
            referer: headers("referer"),
            client_ip: r.client_ip.as_deref().map(|i| i.parse().unwrap()),
            country,
            country_lookup: None,
            cmcd_headers: sharegate_edge::cmcd::HEADERS.map(headers),
        };
        let input = || {
            if case.get("state").and_then(Value::as_str) == Some("none") {
                StateInput {
                    state: None,
                    age: u64::MAX,
                }
            } else {
                StateInput::fresh(&view)
            }
        };
        let d = engine.decide(&req, now, input());
        // The same request with its country left to a lookup (as Fastly defers its geo hostcall): the same decision.
        CASE_COUNTRY.with(|c| c.set(country));
        let deferred = Request {
            country: None,
            country_lookup: Some(CountryLookup {
                ip: req.client_ip.unwrap_or(IpAddr::from([192, 0, 2, 1])),
                lookup: case_country,
            }),
            ..req
        };
        let d_deferred = engine.decide(&deferred, now, input());
        if format!("{d_deferred:?}") != format!("{d:?}") {
            failures.push(format!(
                "{name}: with the country looked up: {d_deferred:?}, given: {d:?}"
            ));
        }
        // The planned answer meets every expectation of the case (its follow-up steps are for runtimes).
        let answer = sharegate_e2e::engine_answer(&engine, d.clone(), &r, now);
        if let Err(e) = sharegate_e2e::check(&minted, e_without_follow(&case["expect"]).as_ref(), &r.method, &answer) {
            failures.push(format!("{name}: planned answer: {e:#}"));
        }
        let e = &case["expect"];
        let status = e["status"].as_u64().unwrap() as u16;
        let ok = match (&d, e.get("reason").and_then(Value::as_str)) {
            (Decision::Deny(deny), Some(reason)) => deny.status == status && deny.reason.as_str() == reason,
            (Decision::Preflight(_), None) => status == 204,
            // Allowed: the origin's 200 or 404, or what a byte range makes of a 200 (206, 416).
            (Decision::Allow(a), None) if matches!(status, 200 | 404 | 206 | 416) => {
                let path_ok = e
                    .get("origin_path")
                    .and_then(Value::as_str)
                    .is_none_or(|p| minted.expand(p) == a.origin_path);
                let key_ok = e
                    .get("cache_key")
                    .and_then(Value::as_str)
                    .is_none_or(|k| minted.expand(k) == a.cache_key());
                // The token never reaches the origin or the cache key.
                let clean = minted
                    .tokens
                    .values()
                    .all(|t| !a.cache_key().contains(t.as_str()) && !a.origin_path.contains(t.as_str()));
                path_ok && key_ok && clean
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: got {d:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// An expectation without its `follow` step.
fn e_without_follow(e: &Value) -> std::borrow::Cow<'_, Value> {
    match e.get("follow") {
        None => std::borrow::Cow::Borrowed(e),
        Some(_) => {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.remove("follow");
            }
            std::borrow::Cow::Owned(e)
        }
    }
}
