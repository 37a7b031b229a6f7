//! The conformance suite against the native edge, over real HTTP on loopback.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sharegate_e2e::{Suite, config_key, conformance_dir, run_suite_http, unix_now};
use sharegate_edge::EdgeConfig;
use sharegate_edge_native::client::ClientSources;
use sharegate_edge_native::origin::Origin;
use sharegate_edge_native::{Edge, NativeOptions, serve};
use std::collections::BTreeMap;

/// A native edge in this process: origin the suite's directory, the client facts taken from the harness's headers
/// (unless a case turns that off with `SHAREGATE_TRUST_FORWARDED=false`, as on the CDN runtimes: then the socket
/// peer, and no country).
async fn start(settings: &BTreeMap<String, String>, state: Option<&[u8]>) -> String {
    let config = EdgeConfig::from_source(settings).unwrap();
    let harness = settings.get("SHAREGATE_TRUST_FORWARDED").map(String::as_str) != Some("false");
    let opts = NativeOptions {
        origins: vec![Origin::Dir(conformance_dir().join("origin"))],
        client_sources: if harness {
            ClientSources::test_harness()
        } else {
            ClientSources::default()
        },
        ..NativeOptions::default()
    };
    let edge = Edge::new(config, opts);
    if let Some(s) = state {
        edge.offer_state(s).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(edge, listener));
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_edge_passes_the_conformance_suite() {
    let suite = Suite::load().unwrap();
    let now = unix_now();
    let minted = suite.mint(now).unwrap();
    let state = suite.state(now, 1).unwrap();
    // One edge per distinct configuration; "state": "none" cases get an edge that never loaded a state.
    let key_of = |case: &Value| {
        let with_state = case.get("state").and_then(Value::as_str) != Some("none");
        format!("{}|{with_state}", config_key(&suite.settings(case)))
    };
    let mut edges: BTreeMap<String, String> = BTreeMap::new();
    for case in suite.cases() {
        if let std::collections::btree_map::Entry::Vacant(slot) = edges.entry(key_of(case)) {
            let with_state = slot.key().ends_with("|true");
            slot.insert(start(&suite.settings(case), with_state.then_some(state.as_slice())).await);
        }
    }
    assert!(suite.cases().len() >= 50);
    let failures = run_suite_http(&suite, &minted, |case| edges[&key_of(case)].as_str(), false, None).await;
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
