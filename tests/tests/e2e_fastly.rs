//! End to end in Viceroy: the Fastly Compute app, a real HTTP origin holding an ffmpeg-made HLS VOD, and the control
//! plane (in-process, on a real socket) that mints links, takes revocations, serves the app its revocation state and
//! receives its events.
//!
//! ffmpeg plays a tokenized stream through the app; segments come from the POP's Core Cache under a token-free key
//! (a second viewer's request does not reach the origin) with the asset and share as surrogate keys; after each
//! revocation through the control plane's API the app refuses the link within its freshness window (1 s here).
//! Reports revoke-to-enforced p50/p99.
#![allow(clippy::unwrap_used)]

use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::viceroy::Viceroy;
use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, make_hls_vod};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNING: [u8; 32] = [0x63; 32];
const STATE: [u8; 32] = [0x64; 32];
const EDGE_TOKEN: &str = "fastly-e2e-edge-credential";
const WINDOW_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_through_the_app_and_revocations_are_enforced_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    make_hls_vod(&media, "demo").unwrap();
    let origin = StaticOrigin::start(media.clone()).await.unwrap();

    let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cp = format!("http://{}", cp_listener.local_addr().unwrap());
    let mut settings = BTreeMap::new();
    settings.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("1:active:{}", hex::encode(SIGNING)),
    );
    settings.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(STATE));
    settings.insert("SHAREGATE_EDGE_TOKEN".to_string(), EDGE_TOKEN.to_string());
    settings.insert("SHAREGATE_ORIGIN".to_string(), origin.base.clone());
    settings.insert("SHAREGATE_STATE_URL".to_string(), format!("{cp}/v1/edge/state"));
    settings.insert("SHAREGATE_EVENTS_URL".to_string(), format!("{cp}/v1/edge/events"));
    settings.insert("SHAREGATE_STATE_REFRESH_MS".to_string(), WINDOW_MS.to_string());
    settings.insert("SHAREGATE_EDGE_ID".to_string(), "fastly-e2e".to_string());
    let app = Viceroy::start(&settings).await.unwrap();

    // The control plane: links point at the app; the app pulls state (nothing is pushed to Fastly).
    let store = open_store("", &dir.path().join("data")).await.unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new(SIGNING), 86_400);
    let config = ServiceConfig {
        edge_base_url: app.base.clone(),
        edges: Vec::new(),
        edge_token: Some(EDGE_TOKEN.into()),
        ..ServiceConfig::default()
    };
    let state = Arc::new(AppState::new(store.clone(), config, &ring, Policy::default(), StateKey::new(STATE)).unwrap());
    let mut keys = BTreeMap::new();
    for (role, name) in [
        (Role::Minter, "backend"),
        (Role::Responder, "oncall"),
        (Role::Admin, "ops"),
    ] {
        let (key, rec) = new_key(role, name, 0).unwrap();
        store_key(store.as_ref(), &key, &rec).await.unwrap();
        keys.insert(name, key);
    }
    tokio::spawn(async move { axum::serve(cp_listener, router(state)).await });

    // Viceroy's readiness probe ran before the control plane served (its refresh failed, and the app backs off for
    // half a window): wait until the POP's cache holds the control plane's first snapshot.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status: serde_json::Value = http
            .get(format!("{}/_sharegate/status", app.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["generation"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no state after 10 s: {status}\n{}",
            app.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let asset: serde_json::Value = http
        .post(format!("{cp}/v1/assets"))
        .bearer_auth(&keys["ops"])
        .json(&serde_json::json!({"id": "demo", "origin": media.to_str().unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(asset["ready"], true, "{asset}");
    let mint = |viewer: String, share: &str| {
        let (http, cp, key) = (http.clone(), cp.clone(), keys["backend"].clone());
        let body = serde_json::json!({"asset": "demo", "viewer": viewer, "share": share});
        async move {
            let link: serde_json::Value = http
                .post(format!("{cp}/v1/links"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            link
        }
    };

    // ffmpeg plays the whole stream (both renditions) through the app, and ffprobe reads its duration.
    let link = mint("ffmpeg".into(), "sh-e2e").await;
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&app.base), "{url}");
    let u = url.clone();
    let (ok, err) = tokio::task::spawn_blocking(move || ffmpeg_reads(&u)).await.unwrap();
    assert!(
        ok,
        "ffmpeg could not play {url} through the app: {err}\n{}",
        app.log_tail()
    );
    let u = url.clone();
    let duration = tokio::task::spawn_blocking(move || ffprobe_duration(&u)).await.unwrap();
    assert!(duration.is_some_and(|d| (5.0..7.5).contains(&d)), "{duration:?}");
    // The origin saw every playlist and segment, and never a token.
    let seen = origin.requests();
    assert!(seen.iter().any(|t| t == "/demo/v0/seg_000.ts"), "{seen:?}");
    assert!(seen.iter().any(|t| t == "/demo/v1/seg_002.ts"), "{seen:?}");
    let token = link["token"].as_str().unwrap();
    assert!(
        seen.iter().all(|t| !t.contains(token) && !t.starts_with("/t/")),
        "{seen:?}"
    );

    // A segment: shared-cacheable, with the asset and the share as surrogate keys.
    let seg = url.replace("master.m3u8", "v0/seg_001.ts");
    let r = http.get(&seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let keys_header = r.headers()["surrogate-key"].to_str().unwrap().to_string();
    let surrogate: Vec<&str> = keys_header.split(' ').collect();
    assert!(
        surrogate.contains(&"sg-asset-demo") && surrogate.contains(&"sg-share-sh-e2e"),
        "{keys_header}"
    );
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("public"));
    let whole = r.bytes().await.unwrap();
    assert_eq!(whole, std::fs::read(media.join("demo/v0/seg_001.ts")).unwrap());
    let playlist = http.get(&url).send().await.unwrap();
    assert!(
        playlist.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );

    // Another viewer's token, the same segment: served from the cache (the key has no token), the origin not asked.
    origin.clear();
    let other = mint("second".into(), "sh-other").await;
    let other_seg = other["url"].as_str().unwrap().replace("master.m3u8", "v0/seg_001.ts");
    let r = http.get(&other_seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), whole);
    // A byte range and a HEAD, from the cached object.
    let r = http
        .get(&other_seg)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10-19/{}", whole.len())
    );
    assert_eq!(r.bytes().await.unwrap(), whole[10..20]);
    let r = http.head(&other_seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(
        origin.requests(),
        Vec::<String>::new(),
        "the cached segment went to the origin again"
    );

    // Revocations through the control plane reach the app within the freshness window.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let link = mint(format!("v{i}"), "sh-revoke").await;
        let seg = link["url"].as_str().unwrap().replace("master.m3u8", "v0/seg_000.ts");
        assert_eq!(http.get(&seg).send().await.unwrap().status(), 200, "iteration {i}");
        let start = Instant::now();
        let receipt = http
            .post(format!("{cp}/v1/revocations"))
            .bearer_auth(&keys["oncall"])
            .json(&serde_json::json!({"kind": "token", "id": link["token_id"], "reason": "e2e"}))
            .send()
            .await
            .unwrap();
        assert!(receipt.status().is_success(), "{}", receipt.text().await.unwrap());
        loop {
            let r = http.get(&seg).send().await.unwrap();
            if r.status() == 403 {
                assert_eq!(r.headers()["x-sharegate-reason"], "revoked");
                break;
            }
            assert_eq!(r.status(), 200);
            // A functional bound, not a benchmark: the window plus generous slack for a loaded CI machine.
            assert!(
                start.elapsed() < Duration::from_millis(WINDOW_MS + 4000),
                "revocation {i} not enforced after {:?}\n{}",
                start.elapsed(),
                app.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "fastly (viceroy) revoke-to-enforced over {} revocations, window {WINDOW_MS} ms: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );

    // The POP's cached state, as the app reports it: the control plane's generation after 20 revocations.
    let status: serde_json::Value = http
        .get(format!("{}/_sharegate/status", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["runtime"], "fastly", "{status}");
    assert_eq!(status["generation"], 20, "{status}");
    assert_eq!(status["keys"][0]["state"], "active", "{status}");

    // The denials and the playlist opens were reported to the control plane (one event per request, sent after
    // the response).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http
            .get(format!("{cp}/metrics"))
            .bearer_auth(&keys["ops"])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let count = |prefix: &str| -> f64 {
            metrics
                .lines()
                .filter(|l| l.starts_with(prefix))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
                .sum()
        };
        let revoked = count("sharegate_edge_events_total{kind=\"deny\",reason=\"revoked\",asset=\"demo\"");
        let opens = count("sharegate_edge_events_total{kind=\"playlist_open\"");
        if revoked >= 20.0 && opens >= 1.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the events did not reach the control plane ({revoked} revoked, {opens} opens):\n{metrics}\n{}",
            app.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
