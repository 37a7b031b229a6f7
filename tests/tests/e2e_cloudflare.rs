//! End to end in workerd: the Cloudflare worker under `wrangler dev`, a real HTTP origin holding an ffmpeg-made HLS
//! VOD, and the control plane (in-process, on a real socket) that mints links, takes revocations, serves the
//! worker its revocation state and receives its events.
//!
//! ffmpeg plays a tokenized stream through the worker; after each revocation through the control plane's API the
//! worker refuses the link within its freshness window (1 s here). Reports revoke-to-enforced p50/p99.
#![allow(clippy::unwrap_used)]

use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::wrangler::WranglerDev;
use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, make_hls_vod};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIGNING: [u8; 32] = [0x61; 32];
const STATE: [u8; 32] = [0x62; 32];
const EDGE_TOKEN: &str = "cf-e2e-edge-credential";
const WINDOW_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_through_the_worker_and_revocations_are_enforced_within_the_window() {
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
    settings.insert("SHAREGATE_EDGE_ID".to_string(), "cf-e2e".to_string());
    let worker = WranglerDev::start(&settings).await.unwrap();

    // The control plane: links point at the worker; the worker pulls state (no push targets on Cloudflare).
    let store = open_store("", &dir.path().join("data")).await.unwrap();
    let ring = KeyRing::with_active(1, SecretKey::new(SIGNING), 86_400);
    let config = ServiceConfig {
        edge_base_url: worker.base.clone(),
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

    let http = reqwest::Client::new();
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
    let mint = |viewer: String| {
        let (http, cp, key) = (http.clone(), cp.clone(), keys["backend"].clone());
        async move {
            let link: serde_json::Value = http
                .post(format!("{cp}/v1/links"))
                .bearer_auth(key)
                .json(&serde_json::json!({"asset": "demo", "viewer": viewer}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            link
        }
    };

    // ffmpeg plays the whole stream (both renditions) through the worker, and ffprobe reads its duration.
    let link = mint("ffmpeg".into()).await;
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&worker.base), "{url}");
    let u = url.clone();
    let (ok, err) = tokio::task::spawn_blocking(move || ffmpeg_reads(&u)).await.unwrap();
    assert!(
        ok,
        "ffmpeg could not play {url} through the worker: {err}\n{}",
        worker.log_tail()
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

    // A segment through the worker: shared-cacheable, tagged for purges by asset and share.
    let seg = url.replace("master.m3u8", "v0/seg_000.ts");
    let r = http.get(&seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tags = r.headers()["cache-tag"].to_str().unwrap().to_string();
    assert!(tags.split(',').any(|t| t.contains("demo")), "{tags}");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("public"));
    let playlist = http.get(&url).send().await.unwrap();
    assert!(
        playlist.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );

    // Revocations through the control plane reach the worker within the freshness window.
    let mut latencies = Vec::new();
    for i in 0..20 {
        let link = mint(format!("v{i}")).await;
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
                worker.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    eprintln!(
        "cloudflare (workerd) revoke-to-enforced over {} revocations, window {WINDOW_MS} ms: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1]
    );

    // The isolate says what it holds (for support): the control plane's generation after 20 revocations.
    let status: serde_json::Value = http
        .get(format!("{}/_sharegate/status", worker.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["runtime"], "cloudflare", "{status}");
    assert_eq!(status["generation"], 20, "{status}");
    assert_eq!(status["keys"][0]["state"], "active", "{status}");

    // The denials were reported to the control plane as events (sent with wait_until, batched).
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
        let revoked_events = metrics
            .lines()
            .find(|l| l.starts_with("sharegate_edge_events_total{kind=\"deny\",reason=\"revoked\",asset=\"demo\""));
        let n: f64 = revoked_events.map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap());
        if n >= 20.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no revoked events reached the control plane:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
