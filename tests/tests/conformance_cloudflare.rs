//! The conformance suite against the Cloudflare worker in workerd (`wrangler dev --local`), over real HTTP, with
//! the worker fetching from a real HTTP origin and its revocation state from a state endpoint.
//!
//! Same cases and expectations as the engine and the native edge. The two dot-segment cases use their
//! `expect_normalized` result: workerd (like Cloudflare's edge) resolves `..` and `%2e%2e` before the worker sees
//! the URL, so the engine gets the resolved path and refuses it as out of scope instead of as a bad path.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sharegate_e2e::origin::{StateServer, StaticOrigin};
use sharegate_e2e::wrangler::WranglerDev;
use sharegate_e2e::{Suite, conformance_dir, run_case_http, unix_now};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_in_workerd_passes_the_conformance_suite() {
    let suite = Suite::load().unwrap();
    let origin = StaticOrigin::start(conformance_dir().join("origin")).await.unwrap();
    // The state and the tokens are made once the workers run (starting them can take a while on a loaded machine,
    // and the leeway cases are only 30 s wide).
    let state = StateServer::empty().await.unwrap();

    // One worker per distinct configuration, started together.
    let mut configs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let config_of = |case: &Value| {
        let mut settings = suite.settings(case);
        settings.insert("SHAREGATE_ORIGIN".into(), origin.base.clone());
        settings.insert("SHAREGATE_TRUST_FORWARDED".into(), "true".into());
        if case.get("state").and_then(Value::as_str) != Some("none") {
            settings.insert("SHAREGATE_STATE_URL".into(), state.url.clone());
        }
        settings
    };
    for case in suite.cases() {
        let settings = config_of(case);
        configs.insert(serde_json::to_string(&settings).unwrap(), settings);
    }
    let mut starting = Vec::new();
    for (key, settings) in configs {
        starting.push((key, tokio::spawn(async move { WranglerDev::start(&settings).await })));
    }
    let mut workers = BTreeMap::new();
    for (key, handle) in starting {
        workers.insert(key, handle.await.unwrap().unwrap());
    }

    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    state.set(suite.state(now, 1).unwrap(), 1);

    let mut failures = Vec::new();
    assert!(suite.cases().len() >= 50);
    for case in suite.cases() {
        let name = case["name"].as_str().unwrap();
        let key = serde_json::to_string(&config_of(case)).unwrap();
        let worker = &workers[&key];
        let req = minted.request(&case["request"]);
        let normalized = case.get("expect_normalized");
        if let Err(e) = run_case_http(&worker.addr, &minted, req, &case["expect"], normalized, Some(&origin)).await {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    if !failures.is_empty() {
        let logs: Vec<String> = workers.values().map(|w| w.log_tail()).collect();
        panic!(
            "{} failing cases:\n{}\n\nwrangler output:\n{}",
            failures.len(),
            failures.join("\n"),
            logs.join("\n---\n")
        );
    }
}
