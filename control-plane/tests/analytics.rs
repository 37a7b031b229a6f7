//! Playback analytics (issue 14) through the router in-process: view ids minted with pages, beacons, refusals that
//! store nothing, conversions, UTM attribution, edge events joined to views, the raw stream, retention, the webhook;
//! bounds under abuse; and the applier exactly once under concurrency, aborts and replays, on both stores.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::RedisServer;
use common::service::{World, app_state, call, send};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sharegate_control_plane::service::analytics::viewid::ViewDims;
use sharegate_control_plane::service::analytics::{apply, export, retention};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Log, Ns, Store, open_store};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tower::ServiceExt;

const EDGE_TOKEN: &str = "edge-secret-for-tests";

fn config() -> ServiceConfig {
    ServiceConfig {
        edge_token: Some(EDGE_TOKEN.into()),
        // Beacons are rate-limited per client address: the tests say which address each comes from.
        player: sharegate_control_plane::service::player::PlayerSettings {
            client_ip_header: Some("x-forwarded-for".into()),
            ..Default::default()
        },
        ..ServiceConfig::default()
    }
}

async fn world_on(store: Option<Arc<dyn Store>>) -> World {
    common::service::world_on(config(), store).await
}

async fn share(w: &World, utm: bool) -> String {
    let body = json!({"asset":"demo","audience":"public","channel":"email","campaign":"spring","utm":utm}).to_string();
    let (s, v) = call(&w.app, "POST", "/v1/shares", Some(w.key(Role::Minter)), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["id"].as_str().unwrap().to_string()
}

/// The analytics block of a share page opened with `query`.
async fn page_analytics(w: &World, id: &str, query: &str) -> Value {
    let req = Request::get(format!("/s/{id}{query}"))
        .header("accept", "text/html")
        .body(Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let html = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let block = html.split("id=\"sg-config\">").nth(1).unwrap();
    let block = &block[..block.find("</script>").unwrap()];
    serde_json::from_str::<Value>(block).unwrap()["analytics"].clone()
}

fn beacon(a: &Value, seq: u64, extra: Value) -> String {
    let mut b = json!({"v":1,"view":a["view"],"share":a["share"],"asset":a["asset"],"channel":a["channel"],
        "campaign":a["campaign"],"seq":seq});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b.to_string()
}

async fn post_beacon(w: &World, body: &str, ip: &str) -> (StatusCode, Value) {
    let req = Request::post("/v1/beacons")
        .header("content-type", "text/plain;charset=UTF-8")
        .header("x-forwarded-for", ip)
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn analytics(w: &World, query: &str) -> Value {
    let (s, v) = call(
        &w.app,
        "GET",
        &format!("/v1/analytics{query}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

#[tokio::test]
async fn a_view_from_page_to_funnel() {
    let w = world_on(None).await;
    let id = share(&w, true).await;
    let a = page_analytics(&w, &id, "?utm_source=news&utm_campaign=fall").await;
    assert_eq!(
        (a["channel"].as_str(), a["campaign"].as_str()),
        (Some("news"), Some("fall"))
    );
    assert_eq!(a["view"].as_str().unwrap().len(), 39);

    // The player's token request from that page carries the same attribution (Referer), counted as minted.
    let page = format!("http://127.0.0.1:7700/s/{id}?utm_source=news&utm_campaign=fall");
    let (s, _, _) = send(
        &w.app,
        "POST",
        &format!("/v1/shares/{id}/playback"),
        None,
        &[("referer", &page)],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let b1 = beacon(&a, 1, json!({"play_requested":true,"startup_ms":640,"watch_ms":4000}));
    let b2 = beacon(
        &a,
        2,
        json!({"play_requested":true,"startup_ms":640,"watch_ms":10000,"stall_ms":500,"rebuffers":1,
               "played_ms":9600,"duration_ms":10000,"ended":true}),
    );
    for b in [&b1, &b2, &b1, &b2] {
        assert_eq!(post_beacon(&w, b, "198.51.100.1").await.0, StatusCode::NO_CONTENT);
    }
    let view = a["view"].as_str().unwrap();
    let (s, v) = call(
        &w.app,
        "GET",
        &format!("/v1/analytics/views/{view}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (
            v["startup_ms"].as_u64(),
            v["watch_ms"].as_u64(),
            v["stall_ms"].as_u64(),
            v["rebuffers"].as_u64()
        ),
        (Some(640), Some(10000), Some(500), Some(1))
    );
    assert_eq!(
        (v["completed"].as_bool(), v["channel"].as_str()),
        (Some(true), Some("news"))
    );

    // A conversion against the view: once, idempotent, conflicting reuse refused.
    let conv = json!({"id":"order-1","kind":"purchase","view":view,"value":19.5}).to_string();
    let (s1, r1) = call(&w.app, "POST", "/v1/conversions", Some(w.key(Role::Minter)), &conv).await;
    let (s2, r2) = call(&w.app, "POST", "/v1/conversions", Some(w.key(Role::Minter)), &conv).await;
    assert_eq!((s1, s2), (StatusCode::CREATED, StatusCode::OK));
    assert_eq!(r1, r2);
    let other = json!({"id":"order-1","kind":"trial","view":view}).to_string();
    assert_eq!(
        call(&w.app, "POST", "/v1/conversions", Some(w.key(Role::Minter)), &other)
            .await
            .0,
        StatusCode::CONFLICT
    );
    for (key, want) in [
        (w.key(Role::Auditor), StatusCode::FORBIDDEN),
        ("sg_minter_nope", StatusCode::UNAUTHORIZED),
    ] {
        assert_eq!(call(&w.app, "POST", "/v1/conversions", Some(key), &conv).await.0, want);
    }
    for bad in [
        json!({"id":"","kind":"purchase","view":view}),
        json!({"id":"x","kind":"refund","view":view}),
        json!({"id":"x","kind":"purchase"}),
        json!({"id":"x","kind":"purchase","view":view,"value":-1}),
        json!({"id":"x","kind":"purchase","view":view,"extra":1}),
    ] {
        let (s, v) = call(
            &w.app,
            "POST",
            "/v1/conversions",
            Some(w.key(Role::Minter)),
            &bad.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
    }

    let q = analytics(&w, "?group_by=channel,campaign").await;
    let row = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["channel"] == "news")
        .unwrap()
        .clone();
    assert_eq!(row["campaign"], "fall");
    for (k, want) in [
        ("minted", 1),
        ("views", 1),
        ("started", 1),
        ("completed", 1),
        ("rebuffers", 1),
        ("converted", 1),
        ("conversions", 1),
    ] {
        assert_eq!(row[k].as_u64(), Some(want), "{k}: {row}");
    }
    let p50 = row["startup_p50_ms"].as_f64().unwrap();
    assert!((p50 / 640.0 - 1.0).abs() < 0.12, "{p50}");
    assert!((row["rebuffer_ratio"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    let funnel: Vec<u64> = q["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["count"].as_u64().unwrap())
        .collect();
    assert_eq!(
        funnel,
        vec![1, 0, 0, 1, 1, 1],
        "minted, opened, first segment, started, completed, converted"
    );
    // Filters and bad parameters.
    assert_eq!(analytics(&w, "?channel=nope").await["totals"]["views"], 0);
    for bad in ["?group_by=color", "?from=10&to=5", "?from=0&to=99999999", "?bogus=1"] {
        let (s, _) = call(
            &w.app,
            "GET",
            &format!("/v1/analytics{bad}"),
            Some(w.key(Role::Auditor)),
            "",
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(
        call(&w.app, "GET", "/v1/analytics", Some(w.key(Role::Minter)), "")
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    // A share without `utm` ignores UTM parameters.
    let plain = share(&w, false).await;
    let a = page_analytics(&w, &plain, "?utm_source=news&utm_campaign=fall").await;
    assert_eq!(
        (a["channel"].as_str(), a["campaign"].as_str()),
        (Some("email"), Some("spring"))
    );
}

#[tokio::test]
async fn refused_beacons_store_nothing_and_are_counted() {
    let w = world_on(None).await;
    let id = share(&w, false).await;
    let a = page_analytics(&w, &id, "").await;
    let before = w.state.store.last_seq(Log::Beacons).await.unwrap();
    let view = a["view"].as_str().unwrap().to_string();
    let mut flipped = view.clone().into_bytes();
    flipped[3] ^= 1;
    let old = w.state.analytics.view_key.mint(
        sharegate_control_plane::service::now() - 2 * 86_400,
        &ViewDims {
            share: &id,
            asset: "demo",
            channel: "email",
            campaign: "spring",
        },
    );
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (
            beacon(&a, 1, json!({"share":"sh_0000000000000000"})),
            StatusCode::FORBIDDEN,
            "forged_view",
        ),
        (
            beacon(&a, 1, json!({"campaign":"other"})),
            StatusCode::FORBIDDEN,
            "forged_view",
        ),
        (
            beacon(&a, 1, json!({"view": String::from_utf8_lossy(&flipped)})),
            StatusCode::FORBIDDEN,
            "forged_view",
        ),
        (beacon(&a, 1, json!({"view": old})), StatusCode::GONE, "view_expired"),
        (
            beacon(&a, 1, json!({"v": 2})),
            StatusCode::BAD_REQUEST,
            "invalid_beacon",
        ),
        (
            beacon(&a, 1, json!({"surprise": true})),
            StatusCode::BAD_REQUEST,
            "invalid_beacon",
        ),
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_beacon"),
        (
            beacon(&a, 1, json!({"pad": "x".repeat(5000)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in &cases {
        let (s, v) = post_beacon(&w, body, "198.51.100.2").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (*status, Some(*code)),
            "{}",
            &body[..body.len().min(120)]
        );
    }
    assert_eq!(
        w.state.store.last_seq(Log::Beacons).await.unwrap(),
        before,
        "nothing stored"
    );
    let (_, metrics) = metrics_text(&w).await;
    assert!(
        metrics.contains(r#"sharegate_beacons_total{result="forged"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"sharegate_beacons_total{result="expired"} 1"#));
    assert!(metrics.contains(r#"sharegate_beacons_total{result="too_large"} 1"#));
}

async fn metrics_text(w: &World) -> (StatusCode, String) {
    let req = Request::get("/metrics")
        .header("authorization", format!("Bearer {}", w.key(Role::Auditor)))
        .body(Body::empty())
        .unwrap();
    let resp = w.app.clone().oneshot(req).await.unwrap();
    let s = resp.status();
    (
        s,
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap(),
    )
}

async fn edge_events(w: &World, events: Value) -> StatusCode {
    let body = json!({"edge":"e1","dropped":0,"events":events}).to_string();
    let (s, _, _) = send(&w.app, "POST", "/v1/edge/events", Some(EDGE_TOKEN), &[], &body).await;
    s
}

#[tokio::test]
async fn edge_events_make_sessions_and_join_player_views() {
    let w = world_on(None).await;
    let id = share(&w, false).await;
    let a = page_analytics(&w, &id, "").await;
    let view = a["view"].as_str().unwrap();
    let at = sharegate_control_plane::service::now();
    let tok = format!("{at}-{}", "ab".repeat(12));
    let dims = json!({"asset":"demo","share":id,"channel":"email","campaign":"spring"});
    let ev = |kind: &str, extra: Value| {
        let mut e = dims.clone();
        e["kind"] = kind.into();
        e["at"] = at.into();
        for (k, v) in extra.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    let events = json!([
        // A client without our page (no CMCD): its token is its session.
        ev("playlist_open", json!({"token": tok})),
        ev("segment", json!({"token": tok, "ot": "v", "su": true})),
        ev("segment", json!({"token": tok, "ot": "v", "su": true})),
        ev("segment", json!({"token": tok, "bs": true, "bl": 0})),
        // Our player: its view id as CMCD sid joins the page's view.
        ev(
            "playlist_open",
            json!({"token": format!("{at}-{}", "cd".repeat(12)), "sid": view})
        ),
        ev(
            "segment",
            json!({"token": format!("{at}-{}", "cd".repeat(12)), "sid": view, "su": true})
        ),
        // A sid that is not a view id for these dimensions keys nothing new.
        ev(
            "segment",
            json!({"token": format!("{at}-{}", "ef".repeat(12)), "sid": "made-up", "su": true})
        ),
    ]);
    assert_eq!(edge_events(&w, events).await, StatusCode::OK);
    let (s, t) = call(
        &w.app,
        "GET",
        &format!("/v1/analytics/views/t:{tok}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    assert_eq!(
        (
            t["opened"].as_bool(),
            t["first_segment"].as_bool(),
            t["cmcd_stalls"].as_u64(),
            t["source"].as_str()
        ),
        (Some(true), Some(true), Some(1), Some("edge"))
    );
    let (_, v) = call(
        &w.app,
        "GET",
        &format!("/v1/analytics/views/{view}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!(
        (
            v["opened"].as_bool(),
            v["first_segment"].as_bool(),
            v["source"].as_str()
        ),
        (Some(true), Some(true), Some("player"))
    );
    let totals = analytics(&w, "").await["totals"].clone();
    assert_eq!(
        (
            totals["opened"].as_u64(),
            totals["first_segment"].as_u64(),
            totals["cmcd_sessions"].as_u64()
        ),
        (Some(2), Some(3), Some(3)),
        "{totals}"
    );
    // The raw stream pages through every edge event once, with a cursor.
    let mut after = 0;
    let mut seen = Vec::new();
    loop {
        let (s, h, _) = send(
            &w.app,
            "GET",
            &format!("/v1/analytics/stream?source=edge&after={after}&limit=3"),
            Some(w.key(Role::Auditor)),
            &[],
            "",
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        let next: u64 = h["x-sharegate-next-cursor"].to_str().unwrap().parse().unwrap();
        if next == after {
            break;
        }
        seen.extend(after + 1..=next);
        after = next;
    }
    assert_eq!(seen, (1..=7).collect::<Vec<u64>>());
}

#[tokio::test]
async fn anonymous_floods_leave_everything_bounded() {
    let w = world_on(None).await;
    let id = share(&w, false).await;
    let a = page_analytics(&w, &id, "").await;
    // 100,000 forged or random beacons from many addresses (the limiter is per address; these are refused anyway).
    let mut seed = 7u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut refused = 0;
    for i in 0..100_000u32 {
        let r = rnd();
        let body = match r % 3 {
            0 => beacon(
                &a,
                1,
                json!({"view": format!("{:018x}.{:020x}", r, r.rotate_left(7)), "channel": format!("c{r}")}),
            ),
            1 => beacon(&a, 1, json!({"campaign": format!("camp{r}")})),
            _ => format!("{{\"v\":1,\"view\":\"{r}\"}}"),
        };
        let req = Request::post("/v1/beacons")
            .header(
                "x-forwarded-for",
                format!("10.{}.{}.{}", (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8),
            )
            .body(Body::from(body))
            .unwrap();
        let resp = w.app.clone().oneshot(req).await.unwrap();
        assert!(resp.status().is_client_error(), "{i}: {}", resp.status());
        refused += 1;
    }
    assert_eq!(refused, 100_000);
    assert_eq!(
        w.state.store.last_seq(Log::Beacons).await.unwrap(),
        0,
        "no mint or beacon stored"
    );

    // 10,000 edge events with random CMCD, channels and campaigns (an edge labels what viewers' tokens say; the
    // CMCD is the viewers' own).
    let at = sharegate_control_plane::service::now();
    for batch in 0..10 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let r = rnd();
                json!({"kind": if i % 2 == 0 { "segment" } else { "playlist_open" }, "at": at, "asset": "demo",
                       "share": id, "channel": format!("ch{}", r % 5000), "campaign": format!("ca{}", r % 7000),
                       "token": format!("{at}-{:024x}", (batch * 1000 + i) % 50), "sid": format!("{r:x}"),
                       "cid": format!("{:x}", r >> 3), "bs": r % 2 == 0, "bl": r % 100_000, "br": r % 9000, "mtp": r})
            })
            .collect();
        assert_eq!(edge_events(&w, Value::Array(events)).await, StatusCode::OK);
    }
    let _ = analytics(&w, "").await;
    let (_, metrics) = metrics_text(&w).await;
    let series = metrics.lines().filter(|l| !l.starts_with('#')).count();
    // Edge event series ≤ 2000 + overflow; QoE pairs ≤ 256 pairs × (6 counters + 13 histogram lines) + failures.
    assert!(series < 2000 + 300 + 256 * 19 + 100, "{series} series");
    let rows = w
        .state
        .store
        .get(Ns::Analytics, &format!("rows/{}", at - at % 3600))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8(rows).unwrap().lines().count() <= apply::MAX_ROWS_PER_HOUR + 1);
    let views = w.state.store.scan(Ns::Views, "").await.unwrap().len();
    assert!(
        views <= 50,
        "sessions are keyed by verified tokens, not by what the viewer sends: {views}"
    );
}

/// Many writers, two appliers on two replicas of one store, aborted at random points and resumed, then a replay:
/// the totals equal the oracle's exactly.
async fn appliers_exactly_once(store: Arc<dyn Store>) {
    let w = world_on(Some(store.clone())).await;
    let replica = Arc::new(app_state(store.clone(), config()));
    let id = share(&w, false).await;
    let mut views = Vec::new();
    for _ in 0..40 {
        views.push(page_analytics(&w, &id, "").await);
    }
    // Oracle: the last (largest) snapshot of each view.
    let oracle = Arc::new(Mutex::new(BTreeMap::<String, (u64, u64)>::new()));
    let mut writers = Vec::new();
    for (i, a) in views.iter().enumerate() {
        let (app, a, oracle) = (w.app.clone(), a.clone(), oracle.clone());
        writers.push(tokio::spawn(async move {
            for seq in 1..=6u64 {
                let watch = seq * 1000 + i as u64;
                let stall = seq * 100;
                let body = beacon(&a, seq, json!({"play_requested":true,"startup_ms":300 + i,"watch_ms":watch,"stall_ms":stall,"rebuffers":seq}));
                let req = Request::post("/v1/beacons")
                    .header("x-forwarded-for", format!("10.0.{i}.1"))
                    .body(Body::from(body))
                    .unwrap();
                let resp = app.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::NO_CONTENT);
                oracle.lock().unwrap().insert(a["view"].as_str().unwrap().to_string(), (watch, stall));
                tokio::task::yield_now().await;
            }
        }));
    }
    // Appliers on both replicas, some aborted mid-way.
    let mut appliers = Vec::new();
    for k in 0..12 {
        let s: Arc<AppState> = if k % 2 == 0 { w.state.clone() } else { replica.clone() };
        let h = tokio::spawn(async move {
            for _ in 0..5 {
                let _ = apply::apply_pending(&s, 2).await;
                tokio::task::yield_now().await;
            }
        });
        if k % 3 == 0 {
            tokio::task::yield_now().await;
            h.abort();
        }
        appliers.push(h);
    }
    for h in writers {
        h.await.unwrap();
    }
    for h in appliers {
        let _ = h.await;
    }
    for s in [&w.state, &replica] {
        apply::apply_pending(s, 1000).await.unwrap();
    }
    let check = |t: &Value| {
        let o = oracle.lock().unwrap();
        let watch: u64 = o.values().map(|v| v.0).sum();
        let stall: u64 = o.values().map(|v| v.1).sum();
        assert_eq!(t["views"].as_u64(), Some(40));
        assert_eq!(t["started"].as_u64(), Some(40));
        assert_eq!(t["rebuffers"].as_u64(), Some(40 * 6));
        assert!(
            (t["watch_seconds"].as_f64().unwrap() - watch as f64 / 1000.0).abs() < 1e-6,
            "{t}"
        );
        assert!(
            (t["stall_seconds"].as_f64().unwrap() - stall as f64 / 1000.0).abs() < 1e-6,
            "{t}"
        );
    };
    let t = analytics(&w, "").await["totals"].clone();
    check(&t);
    // Replay: the applier's cursor back to 0 replays the log; views are unchanged, so nothing is added — except the
    // flags' own first-time counts, which the views' records already hold: the totals must not move.
    let replica_app = router(replica.clone());
    let (_, t2) = call(&replica_app, "GET", "/v1/analytics", Some(w.key(Role::Auditor)), "").await;
    assert_eq!(t2["totals"], t, "both replicas agree");
    w.state
        .store
        .delete(Ns::Analytics, apply::Input::Beacons.cursor())
        .await
        .unwrap();
    apply::apply_pending(&w.state, 1000).await.unwrap();
    let t3 = analytics(&w, "").await["totals"].clone();
    check(&t3);
    assert_eq!(t3, t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliers_exactly_once_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    appliers_exactly_once(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appliers_exactly_once_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&redis.url(), dir.path()).await.unwrap();
    appliers_exactly_once(store).await;
}

#[tokio::test]
async fn retention_deletes_old_raw_data_but_never_unapplied() {
    let w = world_on(None).await;
    let id = share(&w, false).await;
    let a = page_analytics(&w, &id, "").await;
    let b = beacon(&a, 1, json!({"play_requested":true,"startup_ms":500}));
    assert_eq!(post_beacon(&w, &b, "198.51.100.3").await.0, StatusCode::NO_CONTENT);
    let now = sharegate_control_plane::service::now();
    // Not yet applied: nothing goes, however old.
    let r = retention::sweep(&w.state, now + 30 * 86_400).await.unwrap();
    assert_eq!((r.views, r.beacons_below), (0, 1));
    assert_eq!(w.state.store.read_log(Log::Beacons, 1, 10).await.unwrap().len(), 1);
    apply::apply_pending(&w.state, 10).await.unwrap();
    // Within the retention: kept.
    let r = retention::sweep(&w.state, now + 3600).await.unwrap();
    assert_eq!(r.views, 0);
    assert_eq!(w.state.store.scan(Ns::Views, "").await.unwrap().len(), 1);
    // Past it: the view and the raw entries go, the hourly rows stay.
    let r = retention::sweep(&w.state, now + 8 * 86_400).await.unwrap();
    assert_eq!(r.views, 1);
    assert!(w.state.store.scan(Ns::Views, "").await.unwrap().is_empty());
    assert!(w.state.store.read_log(Log::Beacons, 1, 10).await.unwrap().is_empty());
    let from = now - now % 3600;
    assert_eq!(
        analytics(&w, &format!("?from={from}&to={}", from + 3600)).await["totals"]["started"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_gets_every_event_at_least_once() {
    use axum::routing::post;
    let w = world_on(None).await;
    let id = share(&w, false).await;
    let a = page_analytics(&w, &id, "").await;
    for seq in 0..5 {
        let b = beacon(&a, seq, json!({"play_requested":true}));
        assert_eq!(post_beacon(&w, &b, "198.51.100.4").await.0, StatusCode::NO_CONTENT);
    }
    // A receiver that fails its first two deliveries.
    let got = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let calls = Arc::new(Mutex::new(0u32));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                let mut n = c.lock().unwrap();
                *n += 1;
                if *n <= 2 {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let source = headers["x-sharegate-source"].to_str().unwrap().to_string();
                for line in body.lines() {
                    let v: Value = serde_json::from_str(line).unwrap();
                    g.lock().unwrap().push((source.clone(), v["seq"].as_u64().unwrap()));
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let mut failures = 0;
    for _ in 0..10 {
        match export::push_once(&w.state, &http, &url).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => failures += 1,
        }
    }
    assert_eq!(failures, 2);
    let got = got.lock().unwrap().clone();
    let player: Vec<u64> = got.iter().filter(|(s, _)| s == "player").map(|(_, q)| *q).collect();
    let last = w.state.store.last_seq(Log::Beacons).await.unwrap();
    assert_eq!(
        player,
        (1..=last).collect::<Vec<u64>>(),
        "every player entry once, in order, after the failures"
    );
    assert_eq!(
        export::push_cursor(&w.state, export::Source::Player).await.unwrap(),
        last
    );
}
