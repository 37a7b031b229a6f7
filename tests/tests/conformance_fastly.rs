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
use sharegate_e2e::{Suite, config_key, conformance_dir, run_case_http, run_suite_http, start_per_config, unix_now};

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
        // The harness simulates clients with headers, unless a case checks that client-sent headers move nothing.
        settings
            .entry("SHAREGATE_TRUST_FORWARDED".into())
            .or_insert_with(|| "true".into());
        settings.insert("SHAREGATE_SEGMENT_TTL".into(), "0".into());
        settings.insert("SHAREGATE_PLAYLIST_TTL".into(), "0".into());
        if case.get("state").and_then(Value::as_str) != Some("none") {
            settings.insert("SHAREGATE_STATE_URL".into(), state.url.clone());
        }
        settings
    };
    let apps = start_per_config(
        &suite,
        config_of,
        |settings| async move { Viceroy::start(&settings).await },
    )
    .await
    .unwrap();

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

    assert!(suite.cases().len() >= 50);
    let addr_of = |case: &Value| apps[&config_key(&config_of(case))].addr.as_str();
    let mut failures = run_suite_http(&suite, &minted, addr_of, false, Some(&origin)).await;
    // A request target longer than the app's first buffer for the raw URI (2 KB): still read raw, whole.
    let default_app = &apps[&config_key(&config_of(&serde_json::json!({})))];
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
