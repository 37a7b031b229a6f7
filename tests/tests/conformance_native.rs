//! The conformance suite against the native edge, over real HTTP on loopback.
#![allow(clippy::unwrap_used)]

use serde_json::Value;
use sharegate_e2e::{HttpRequest, HttpResponse, Minted, Suite, check, conformance_dir, follow_request, raw_http};
use sharegate_edge::EdgeConfig;
use sharegate_edge_native::origin::Origin;
use sharegate_edge_native::{Edge, NativeOptions, serve};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

async fn start(settings: &BTreeMap<String, String>, state: Option<&[u8]>) -> String {
    let config = EdgeConfig::from_source(settings).unwrap();
    let opts = NativeOptions {
        origins: vec![Origin::Dir(conformance_dir().join("origin"))],
        trust_forwarded: true,
        ..NativeOptions::default()
    };
    let edge = Edge::new(config, opts);
    if let Some(s) = state {
        edge.offer_state(s).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(edge, listener));
    format!("http://{addr}")
}

async fn send(base: &str, r: &HttpRequest) -> HttpResponse {
    let addr = base.trim_start_matches("http://");
    let mut extra = Vec::new();
    if let Some(ip) = &r.client_ip {
        extra.push(("x-forwarded-for".to_string(), ip.clone()));
    }
    if let Some(c) = &r.country {
        extra.push(("x-sharegate-country".to_string(), c.clone()));
    }
    raw_http(addr, addr, r, &extra).await.unwrap()
}

async fn run_case(base: &str, minted: &Minted, req: HttpRequest, expect: &Value) -> Result<(), String> {
    let resp = send(base, &req).await;
    check(minted, expect, &resp).map_err(|e| e.to_string())?;
    if let Some(follow) = expect.get("follow") {
        let body = String::from_utf8_lossy(&resp.body).to_string();
        let next = follow_request(&req, &body, follow).map_err(|e| e.to_string())?;
        Box::pin(run_case(base, minted, next, &follow["expect"]))
            .await
            .map_err(|e| format!("follow: {e}"))?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_edge_passes_the_conformance_suite() {
    let suite = Suite::load().unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let minted = suite.mint(now).unwrap();
    let state = suite.state(now, 1).unwrap();
    let mut edges: BTreeMap<(String, bool), String> = BTreeMap::new();
    let mut failures = Vec::new();
    assert!(suite.cases().len() >= 50);
    for case in suite.cases() {
        let name = case["name"].as_str().unwrap();
        let settings = suite.settings(case);
        let with_state = case.get("state").and_then(Value::as_str) != Some("none");
        let key = (serde_json::to_string(&settings).unwrap(), with_state);
        if !edges.contains_key(&key) {
            let base = start(&settings, with_state.then_some(state.as_slice())).await;
            edges.insert(key.clone(), base);
        }
        let base = &edges[&key];
        let req = minted.request(&case["request"]);
        if let Err(e) = run_case(base, &minted, req, &case["expect"]).await {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
