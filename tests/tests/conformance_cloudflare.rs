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
use sharegate_e2e::{Suite, config_key, conformance_dir, run_suite_http, start_per_config, unix_now};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_in_workerd_passes_the_conformance_suite() {
    let suite = Suite::load().unwrap();
    let origin = StaticOrigin::start(conformance_dir().join("origin")).await.unwrap();
    // The state and the tokens are made once the workers run (starting them can take a while on a loaded machine,
    // and the leeway cases are only 30 s wide).
    let state = StateServer::empty().await.unwrap();

    // One worker per distinct configuration, started together.
    let config_of = |case: &Value| {
        let mut settings = suite.settings(case);
        settings.insert("SHAREGATE_ORIGIN".into(), origin.base.clone());
        // The harness simulates clients with headers, unless a case checks that client-sent headers move nothing.
        settings
            .entry("SHAREGATE_TRUST_FORWARDED".into())
            .or_insert_with(|| "true".into());
        if case.get("state").and_then(Value::as_str) != Some("none") {
            settings.insert("SHAREGATE_STATE_URL".into(), state.url.clone());
        }
        settings
    };
    let workers = start_per_config(&suite, config_of, |settings| async move {
        WranglerDev::start(&settings).await
    })
    .await
    .unwrap();

    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    state.set(suite.state(now, 1).unwrap(), 1);

    assert!(suite.cases().len() >= 50);
    let addr_of = |case: &Value| workers[&config_key(&config_of(case))].addr.as_str();
    let failures = run_suite_http(&suite, &minted, addr_of, true, Some(&origin)).await;
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
