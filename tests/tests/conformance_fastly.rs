//! The conformance suite against the Fastly Compute app in Viceroy, over real HTTP, with the app fetching from a
//! real HTTP origin (backend `origin_0`) and its revocation state from a state endpoint (backend `control_plane`),
//! through the POP's Core Cache as in production.
//!
//! Same cases and expectations as the engine and the native edge, including the two dot-segment cases' `expect`
//! (not `expect_normalized`): the app reads the raw request target from the host, so the engine sees `..` and
//! `%2e%2e` and refuses them as `bad_path`, exactly like the native edge. Origin caching is off here
//! (`SHAREGATE_SEGMENT_TTL`/`SHAREGATE_PLAYLIST_TTL` = 0) so every case's origin request is observed; the cache
//! itself is exercised by `e2e_fastly`.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sharegate_e2e::control_plane::edge_status;
use sharegate_e2e::origin::{StateServer, StaticOrigin};
use sharegate_e2e::viceroy::Viceroy;
use sharegate_e2e::{Suite, conformance_dir, run_case_http, unix_now};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_in_viceroy_passes_the_conformance_suite() {
    let suite = Suite::load().unwrap();
    let origin = StaticOrigin::start(conformance_dir().join("origin")).await.unwrap();
    // The state and the tokens are made once the apps run (starting them can take a while on a loaded machine, and
    // the leeway cases are only 30 s wide).
    let state = StateServer::empty().await.unwrap();

    // One Viceroy per distinct configuration, started together.
    let config_of = |case: &Value| {
        let mut settings = suite.settings(case);
        settings.insert("SHAREGATE_ORIGIN".into(), origin.base.clone());
        settings.insert("SHAREGATE_TRUST_FORWARDED".into(), "true".into());
        settings.insert("SHAREGATE_SEGMENT_TTL".into(), "0".into());
        settings.insert("SHAREGATE_PLAYLIST_TTL".into(), "0".into());
        if case.get("state").and_then(Value::as_str) != Some("none") {
            settings.insert("SHAREGATE_STATE_URL".into(), state.url.clone());
        }
        settings
    };
    let mut configs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for case in suite.cases() {
        let settings = config_of(case);
        configs.insert(serde_json::to_string(&settings).unwrap(), settings);
    }
    let mut starting = Vec::new();
    for (key, settings) in configs {
        starting.push((key, tokio::spawn(async move { Viceroy::start(&settings).await })));
    }
    let mut apps = BTreeMap::new();
    for (key, handle) in starting {
        apps.insert(key, handle.await.unwrap().unwrap());
    }

    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    state.set(suite.state(now, 1).unwrap(), 1);
    // The readiness probes found no state yet (and the apps back off for half a window after a failed refresh):
    // wait until every app with a state URL holds generation 1.
    let http = reqwest::Client::new();
    for (key, app) in &apps {
        if !key.contains("SHAREGATE_STATE_URL") {
            continue;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let status = edge_status(&http, &app.base).await.unwrap();
            if status["generation"] == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no state: {status}\n{}",
                app.log_tail()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    let mut failures = Vec::new();
    assert!(suite.cases().len() >= 50);
    for case in suite.cases() {
        let name = case["name"].as_str().unwrap();
        let app = &apps[&serde_json::to_string(&config_of(case)).unwrap()];
        let req = minted.request(&case["request"]);
        if let Err(e) = run_case_http(&app.addr, &minted, req, &case["expect"], None, Some(&origin)).await {
            failures.push(format!("{name}: {e:#}"));
        }
    }
    // A request target longer than the app's first buffer for the raw URI (2 KB): still read raw, whole.
    let default_app = &apps[&serde_json::to_string(&config_of(&serde_json::json!({}))).unwrap()];
    let pad = "x".repeat(5000);
    for (path, want) in [
        (format!("/t/{}/demo/v0/seg_000.ts", minted.tokens["good"]), 200),
        (format!("/t/{}/demo/../demo/v0/seg_000.ts", minted.tokens["good"]), 400),
    ] {
        let req = sharegate_e2e::HttpRequest {
            method: "GET".into(),
            path,
            query: Some(format!("pad={pad}")),
            headers: Vec::new(),
            client_ip: None,
            country: None,
        };
        let expect = serde_json::json!({"status": want});
        if let Err(e) = run_case_http(&default_app.addr, &minted, req, &expect, None, Some(&origin)).await {
            failures.push(format!("5 KB request target, want {want}: {e:#}"));
        }
    }
    if !failures.is_empty() {
        let logs: Vec<String> = apps.values().map(|v| v.log_tail()).collect();
        panic!(
            "{} failing cases:\n{}\n\nviceroy output:\n{}",
            failures.len(),
            failures.join("\n"),
            logs.join("\n---\n")
        );
    }
}
