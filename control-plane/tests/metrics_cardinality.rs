//! `/metrics` stays bounded whatever arrives: anonymous viewer traffic decided by the edge's own engine, and label
//! floods posted straight to `POST /v1/edge/events` with the edge credential (a compromised or buggy edge). Driven
//! in-process (`oneshot`) on the embedded store.
#![allow(clippy::unwrap_used)]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::{SECRET, app_state};
use http_body_util::BodyExt;
use sharegate_control_plane::service::audit_events::{
    self, MAX_CAMPAIGNS, MAX_CHANNELS, MAX_EDGES, MAX_EVENTS, MAX_EVENTS_KEPT, MAX_SERIES, MetricsAccess,
};
use sharegate_control_plane::service::{AppState, ServiceConfig};
use sharegate_control_plane::store::{Log, Ns, open_store};
use sharegate_edge::config::{EdgeConfig, keys};
use sharegate_edge::engine::{Decision, Engine, Request as EdgeRequest, StateInput};
use sharegate_edge::events::EventBatch;
use sharegate_shared::Reason;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{Claims, Minter, Permissions, Policy, Text};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tower::ServiceExt;

const EDGE_TOKEN: &str = "edge-credential-for-tests";
const KINDS: [&str; 4] = ["deny", "expiry", "playlist_open", "state_stale"];

struct World {
    app: Router,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let config = ServiceConfig {
        edge_token: Some(EDGE_TOKEN.into()),
        ..ServiceConfig::default()
    };
    let state = Arc::new(app_state(store, config));
    // Two registered assets (the record as `POST /v1/assets` stores it; only its existence matters here).
    for id in ["demo", "trailer"] {
        let rec = serde_json::json!({
            "id": id, "origin": "http://origin.invalid/", "kind": "vod", "multivariant": "master.m3u8",
            "registered_at": 1, "ready": true, "problems": [], "checked_at": 1, "renditions": 1, "segments": 1,
        });
        state
            .store
            .put(Ns::Assets, id, &serde_json::to_vec(&rec).unwrap())
            .await
            .unwrap();
    }
    let app = Router::new()
        .merge(audit_events::routes_with(MetricsAccess::Public))
        .with_state(state.clone());
    World { app, state, _dir: dir }
}

async fn post_events(app: &Router, body: String) -> (StatusCode, String) {
    let req = Request::builder()
        .method("POST")
        .uri("/v1/edge/events")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {EDGE_TOKEN}"))
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn metrics(app: &Router) -> String {
    let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }

    /// A string an attacker would send: random bytes of every kind, quotes, newlines and separators included.
    fn junk(&mut self) -> String {
        let len = 1 + (self.next() % 40) as usize;
        let mut out: String = (0..len)
            .map(|_| char::from(((self.next() % 0x7f) as u8).max(0x20)))
            .collect();
        let specials = (self.next() % 6) as usize;
        out.extend(["\"", "\n", ":", "}", "é"].into_iter().take(specials));
        out
    }
}

/// The series of one metric family, as `(labels, value)`, checking every line of the exposition is well formed.
fn family(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (metric, labels) = series.split_once('{').unwrap_or((series, "}"));
        let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("labels of {line}"));
        let mut map = BTreeMap::new();
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap_or_else(|| panic!("label in {line}"));
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "label name {k:?} in {line}"
            );
            let v = v.trim_end_matches('"');
            assert!(!v.contains(['"', '\\', '\n']), "label value {v:?} in {line}");
            map.insert(k.to_string(), v.to_string());
        }
        if metric == name {
            out.push((map, value));
        }
    }
    out
}

fn check_with_promtool(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        // scripts/test.sh installs it (Debian's `prometheus`); CI must not pass without the real checker.
        let ci = matches!(std::env::var("CI").as_deref(), Ok("true" | "1"));
        assert!(
            !ci,
            "promtool not found under CI=true: scripts/test.sh should have installed prometheus"
        );
        eprintln!("promtool not installed: exposition checked by the test's own parser only");
        return;
    };
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Syntax and the lints (names, units, HELP/TYPE) both clean.
    assert!(out.status.success(), "promtool check metrics: {said}");
}

fn mint(asset: &str, channel: &str, now: u32) -> String {
    let ring = KeyRing::with_active(4, SecretKey::new(SECRET), 86_400);
    let claims = Claims {
        token_id: [5; 12],
        iat: now,
        nbf: now,
        exp: now + 600,
        permissions: Permissions::PLAYBACK,
        asset: Some(Text::from(asset)),
        channel: Some(Text::from(channel)),
        ..Claims::default()
    };
    Minter::new(&ring, Policy::default()).unwrap().mint(&claims).unwrap()
}

fn edge_engine() -> Engine {
    // Through the edge's own settings parser, as every adapter builds it.
    let signing = format!("4:active:{}", hex::encode(SECRET));
    let settings: [(&str, &str); 3] = [
        (keys::SIGNING_KEYS, &signing),
        (keys::EDGE_ID, "edge-1"),
        (keys::STALE_POLICY, "fail_open"),
    ];
    Engine::new(EdgeConfig::from_source(&&settings[..]).unwrap())
}

#[tokio::test]
async fn anonymous_paths_at_the_edge_make_no_series() {
    let w = world().await;
    let edge = edge_engine();
    let now = u32::try_from(sharegate_control_plane::service::now()).unwrap();
    let mut rng = Rng(0x5eed_1234);
    let mut batch = EventBatch::default();
    let mut decide = |path: String, query: Option<String>| {
        let req = EdgeRequest {
            method: "GET",
            host: "cdn",
            path: &path,
            query: query.as_deref(),
            ..EdgeRequest::default()
        };
        let event = match edge.decide(&req, u64::from(now), StateInput { state: None, age: 0 }) {
            Decision::Deny(d) => d.event,
            Decision::Allow(a) => a.event,
            Decision::Preflight(_) => None,
        };
        if let Some(e) = event {
            batch.push(*e);
        }
    };
    // What the issue saw: a random first segment per request, and the odd favicon; then garbage tokens.
    decide("/favicon.ico".into(), None);
    for i in 0..150 {
        decide(format!("/hx{:016x}/master.m3u8", rng.next()), None);
        decide(format!("/t/{:x}{i}/x{i}/seg.ts", rng.next()), None);
        decide(format!("/x{i}/master.m3u8"), Some(format!("sg={:x}", rng.next())));
    }
    // Viewers with valid links: a playback start and a refusal in scope of the claims.
    let good = mint("demo", "email", now);
    decide(format!("/t/{good}/demo/master.m3u8"), None);
    decide(format!("/t/{good}/trailer/master.m3u8"), None);
    let sent = batch.len();
    let (s, text) = post_events(&w.app, batch.take_json("edge-1").unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{text}");

    let text = metrics(&w.app).await;
    check_with_promtool(&text);
    let series = family(&text, "sharegate_edge_events_total");
    let total: f64 = series.iter().map(|(_, v)| v).sum();
    assert_eq!(total as usize, sent, "every event is counted\n{text}");
    assert!(
        series.len() <= 4,
        "anonymous requests must not make series: {} series\n{text}",
        series.len()
    );
    let assets: HashSet<&str> = series.iter().map(|(l, _)| l["asset"].as_str()).collect();
    assert_eq!(assets, HashSet::from(["_unknown", "demo"]), "{text}");
    let unknown: f64 = series
        .iter()
        .filter(|(l, _)| l["asset"] == "_unknown")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(unknown as usize, sent - 2, "{text}");
    // The playback start (reported as `state_stale`: this edge holds no revocation state) and the refusal.
    for kind in ["state_stale", "deny"] {
        assert!(
            series
                .iter()
                .any(|(l, _)| l["kind"] == kind && l["asset"] == "demo" && l["channel"] == "email"),
            "{kind}\n{text}"
        );
    }
}

#[tokio::test]
async fn a_label_flood_from_an_edge_stays_bounded() {
    let w = world().await;
    let mut rng = Rng(0xdead_beef_cafe);
    let reasons: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    let mut posted = 0usize;
    // Floods of every label: attacker-written junk, unregistered assets, unknown kinds and reasons, and a great many
    // well-formed channels and campaigns with registered assets (which only the caps can stop).
    for _ in 0..6 {
        let mut events = Vec::new();
        for i in 0..2000 {
            let junk = rng.junk();
            let (kind, reason, asset) = match i % 4 {
                0 => (junk.clone(), Some(rng.junk()), Some(rng.junk())),
                1 => (
                    rng.pick(&KINDS).to_string(),
                    Some(rng.pick(&reasons).to_string()),
                    Some(format!("hx{:x}", rng.next())),
                ),
                _ => (
                    rng.pick(&KINDS).to_string(),
                    Some(rng.pick(&reasons).to_string()),
                    Some(rng.pick(&["demo", "trailer"]).to_string()),
                ),
            };
            // A quarter floods channels and campaigns; the rest draw from pools a real product could have, whose
            // combinations still outnumber the series cap.
            let (channel, campaign) = if i % 4 == 0 {
                (rng.junk(), format!("flood-{}", rng.next()))
            } else {
                (format!("ch-{}", rng.next() % 40), format!("cp-{}", rng.next() % 200))
            };
            let ev = serde_json::json!({
                "kind": kind, "at": 1, "reason": reason, "asset": asset,
                "channel": channel, "campaign": campaign, "share": rng.junk(),
            });
            events.push(ev);
        }
        posted += events.len();
        let body = serde_json::json!({ "edge": rng.junk(), "dropped": 3, "events": events });
        let (s, text) = post_events(&w.app, body.to_string()).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    // Many edge names, each with drops.
    for i in 0..(MAX_EDGES + 20) {
        let body = serde_json::json!({ "edge": format!("edge-{i}"), "dropped": 1, "events": [] });
        let (s, text) = post_events(&w.app, body.to_string()).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }

    let text = metrics(&w.app).await;
    check_with_promtool(&text);
    let series = family(&text, "sharegate_edge_events_total");
    let total: f64 = series.iter().map(|(_, v)| v).sum();
    assert_eq!(total as usize, posted, "folding loses no event");
    let overflow_series = series.iter().filter(|(l, _)| l["asset"] == "_overflow").count();
    let bound = MAX_SERIES + (KINDS.len() + 1) * (Reason::ALL.len() + 2);
    assert!(series.len() <= bound, "{} series > {bound}", series.len());
    assert_eq!(series.len() - overflow_series, MAX_SERIES, "the cap is reached exactly");
    assert!(overflow_series > 0);
    for (l, _) in &series {
        assert!(KINDS.contains(&l["kind"].as_str()) || l["kind"] == "_unknown", "{l:?}");
        assert!(
            ["demo", "trailer", "_unknown", "_overflow"].contains(&l["asset"].as_str()),
            "{l:?}"
        );
        assert!(
            l["reason"].is_empty() || l["reason"] == "_unknown" || Reason::from_code(&l["reason"]).is_some(),
            "{l:?}"
        );
    }
    let distinct = |k: &str| {
        series
            .iter()
            .map(|(l, _)| l[k].clone())
            .filter(|v| !v.is_empty() && v != "_overflow")
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(distinct("channel") <= MAX_CHANNELS, "{}", distinct("channel"));
    assert!(distinct("campaign") <= MAX_CAMPAIGNS, "{}", distinct("campaign"));
    for want in ["_unknown", "_overflow"] {
        assert!(series.iter().any(|(l, _)| l["asset"] == want), "no asset={want}");
    }
    assert!(series.iter().any(|(l, _)| l["channel"] == "_overflow"));
    assert!(series.iter().any(|(l, _)| l["campaign"] == "_overflow"));
    assert!(series.iter().any(|(l, _)| l["kind"] == "_unknown"));

    let dropped = family(&text, "sharegate_edge_events_dropped_total");
    assert_eq!(dropped.len(), MAX_EDGES + 1, "{} dropped series", dropped.len());
    let total_dropped: f64 = dropped.iter().map(|(_, v)| v).sum();
    assert_eq!(total_dropped as usize, 6 * 3 + MAX_EDGES + 20);
    assert!(dropped.iter().any(|(l, _)| l["edge"] == "_overflow"));

    let folded: BTreeMap<String, f64> = family(&text, "sharegate_edge_events_folded_total")
        .into_iter()
        .map(|(l, v)| (l["label"].clone(), v))
        .collect();
    for label in ["kind", "reason", "asset", "channel", "campaign", "series", "edge"] {
        assert!(
            folded.get(label).is_some_and(|v| *v > 0.0),
            "folded {label}: {folded:?}"
        );
    }

    // The registry of series in the store is bounded the same way.
    let registered = w.state.store.scan(Ns::Settings, "metrics/series/").await.unwrap().len();
    assert!(registered <= bound + MAX_EDGES + 1, "{registered} registered series");
}

#[tokio::test]
async fn replicas_racing_for_the_last_places_do_not_pass_the_cap() {
    let w = world().await;
    // Fill to a few places short of the cap, then let concurrent batches (each with new series) race for them.
    let fill: Vec<_> = (0..MAX_SERIES - 5)
        .map(|i| {
            serde_json::json!({"kind": "deny", "at": 1, "reason": "revoked", "asset": "demo",
                                    "channel": format!("c{}", i % 10), "campaign": format!("p{}", i / 10)})
        })
        .collect();
    let (s, text) = post_events(&w.app, serde_json::json!({"edge": "e", "events": fill}).to_string()).await;
    assert_eq!(s, StatusCode::OK, "{text}");
    let calls = (0..8).map(|n| {
        let app = w.app.clone();
        let events: Vec<_> = (0..10)
            .map(|i| {
                serde_json::json!({"kind": "expiry", "at": 1, "asset": "trailer",
                                        "channel": format!("c{i}"), "campaign": format!("race{n}")})
            })
            .collect();
        let body = serde_json::json!({"edge": "e", "events": events}).to_string();
        tokio::spawn(async move { post_events(&app, body).await })
    });
    for c in calls.collect::<Vec<_>>() {
        let (s, text) = c.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    let text = metrics(&w.app).await;
    let series = family(&text, "sharegate_edge_events_total");
    let capped = series.iter().filter(|(l, _)| l["asset"] != "_overflow").count();
    assert_eq!(capped, MAX_SERIES);
    let total: f64 = series.iter().map(|(_, v)| v).sum();
    assert_eq!(total as usize, MAX_SERIES - 5 + 80);
}

#[tokio::test]
async fn the_events_log_keeps_a_bounded_window() {
    let w = world().await;
    let batches = (MAX_EVENTS_KEPT as usize).div_ceil(MAX_EVENTS) + 1;
    for b in 0..batches {
        let body = format!(
            "{{\"edge\":\"e\",\"events\":[{}]}}",
            vec![format!("{{\"kind\":\"deny\",\"at\":{b},\"reason\":\"malformed\"}}"); MAX_EVENTS].join(",")
        );
        let (s, text) = post_events(&w.app, body).await;
        assert_eq!(s, StatusCode::OK, "{text}");
    }
    let last = w.state.store.last_seq(Log::Events).await.unwrap();
    assert_eq!(last as usize, batches * MAX_EVENTS);
    let first = w.state.store.read_log(Log::Events, 1, 1).await.unwrap();
    let first_seq = first.first().map_or(0, |(seq, _)| *seq);
    assert_eq!(
        first_seq,
        last - MAX_EVENTS_KEPT + 1,
        "the log holds the newest {MAX_EVENTS_KEPT} events"
    );
}
