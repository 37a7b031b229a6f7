//! End to end in workerd: the Cloudflare worker under `wrangler dev`, a real HTTP origin holding an ffmpeg-made HLS
//! VOD, and the control plane (in-process, on a real socket) that mints links, takes revocations, serves the
//! worker its revocation state and receives its events.
//!
//! ffmpeg plays a tokenized stream through the worker; after each revocation through the control plane's API the
//! worker refuses the link within its freshness window (1 s here). Reports revoke-to-enforced p50/p99.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::control_plane::{ControlPlaneSocket, Secrets, edge_status, metric_sum, percentiles};
use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::wrangler::WranglerDev;
use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, make_hls_vod};
use std::time::Duration;

const SECRETS: Secrets = Secrets {
    signing: [0x61; 32],
    state: [0x62; 32],
    edge_token: "cf-e2e-edge-credential",
};
const WINDOW_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_through_the_worker_and_revocations_are_enforced_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    make_hls_vod(&media, "demo").unwrap();
    let origin = StaticOrigin::start(media.clone()).await.unwrap();

    // The worker pulls its state from the control plane (nothing is pushed to Cloudflare); links point at it.
    let socket = ControlPlaneSocket::bind().await.unwrap();
    let settings = SECRETS.cdn_edge_settings(&origin.base, &socket.url, WINDOW_MS, "cf-e2e");
    let worker = WranglerDev::start(&settings).await.unwrap();
    let cp = socket
        .serve(&dir.path().join("data"), SECRETS, &worker.base)
        .await
        .unwrap();
    cp.register_asset("demo", &media).await.unwrap();
    let http = &cp.http;

    // ffmpeg plays the whole stream (both renditions) through the worker, and ffprobe reads its duration.
    let link = cp
        .mint(serde_json::json!({"asset": "demo", "viewer": "ffmpeg"}))
        .await
        .unwrap();
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
    assert!(tags.split(',').any(|t| t == "sg-asset-demo"), "{tags}");
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("public"));
    let whole = r.bytes().await.unwrap();
    assert_eq!(whole, std::fs::read(media.join("demo/v0/seg_000.ts")).unwrap());
    let playlist = http.get(&url).send().await.unwrap();
    assert!(
        playlist.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("private")
    );
    // A byte range (this origin ignores ranges, so the worker cuts it from the bounded object) and a HEAD.
    let r = http.get(&seg).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10-19/{}", whole.len())
    );
    assert_eq!(r.bytes().await.unwrap(), whole[10..20]);
    let r = http.head(&seg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], whole.len().to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    // HEAD ignores a Range (RFC 9110 §14.2): 200 with the whole length.
    let r = http.head(&seg).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], whole.len().to_string().as_str());
    assert!(r.headers().get("content-range").is_none());

    // CMCD (issue 14): read at this edge from the query or headers, attached to its events, never sent to the
    // origin nor part of the cache key.
    cp.check_cmcd(&origin, false, || worker.log_tail()).await.unwrap();

    // Revocations through the control plane reach the worker within the freshness window (the bound is functional,
    // not a benchmark: the window plus generous slack for a loaded CI machine).
    let limit = Duration::from_millis(WINDOW_MS + 4000);
    let latencies = cp
        .revoke_to_enforced(20, "demo", serde_json::json!({}), limit, || worker.log_tail())
        .await
        .unwrap();
    eprintln!(
        "cloudflare (workerd) revoke-to-enforced over {} revocations, window {WINDOW_MS} ms: {}",
        latencies.len(),
        percentiles(&latencies)
    );

    // The isolate says what it holds (for support): the control plane's generation after 20 revocations.
    let status = edge_status(http, &worker.base).await.unwrap();
    assert_eq!(status["runtime"], "cloudflare", "{status}");
    assert_eq!(status["generation"], 20, "{status}");
    assert_eq!(status["keys"][0]["state"], "active", "{status}");

    // The denials were reported to the control plane as events (sent with wait_until, batched).
    cp.wait_metrics(Duration::from_secs(10), |m| {
        metric_sum(
            m,
            "sharegate_edge_events_total{kind=\"deny\",reason=\"revoked\",asset=\"demo\"",
        ) >= 20.0
    })
    .await
    .unwrap();
}
