//! End to end in Viceroy: the Fastly Compute app, a real HTTP origin holding an ffmpeg-made HLS VOD, and the control
//! plane (in-process, on a real socket) that mints links, takes revocations, serves the app its revocation state and
//! receives its events.
//!
//! ffmpeg plays a tokenized stream through the app; segments come from the POP's Core Cache under a token-free key
//! (a second viewer's request does not reach the origin) with the asset and share as surrogate keys; after each
//! revocation through the control plane's API the app refuses the link within its freshness window (1 s here).
//! Reports revoke-to-enforced p50/p99.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::control_plane::{ControlPlaneSocket, Secrets, edge_status, metric_sum, percentiles};
use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::viceroy::Viceroy;
use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, make_hls_vod};
use std::time::{Duration, Instant};

const SECRETS: Secrets = Secrets {
    signing: [0x63; 32],
    state: [0x64; 32],
    edge_token: "fastly-e2e-edge-credential",
};
const WINDOW_MS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_plays_through_the_app_and_revocations_are_enforced_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let media = dir.path().join("media");
    make_hls_vod(&media, "demo").unwrap();
    let origin = StaticOrigin::start(media.clone()).await.unwrap();

    // The app pulls its state from the control plane (nothing is pushed to Fastly); links point at it.
    let socket = ControlPlaneSocket::bind().await.unwrap();
    let settings = SECRETS.cdn_edge_settings(&origin.base, &socket.url, WINDOW_MS, "fastly-e2e");
    let app = Viceroy::start(&settings).await.unwrap();
    let cp = socket
        .serve(&dir.path().join("data"), SECRETS, &app.base)
        .await
        .unwrap();

    // Viceroy's readiness probe ran before the control plane served (its refresh failed, and the app backs off for
    // half a window): wait until the POP's cache holds the control plane's first snapshot.
    let http = &cp.http;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = edge_status(http, &app.base).await.unwrap();
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
    cp.register_asset("demo", &media).await.unwrap();
    let mint =
        |viewer: &str, share: &str| cp.mint(serde_json::json!({"asset": "demo", "viewer": viewer, "share": share}));

    // ffmpeg plays the whole stream (both renditions) through the app, and ffprobe reads its duration.
    let link = mint("ffmpeg", "sh-e2e").await.unwrap();
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
    let other = mint("second", "sh-other").await.unwrap();
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
    assert_eq!(r.headers()["content-length"], whole.len().to_string().as_str());
    assert!(r.bytes().await.unwrap().is_empty());
    // HEAD ignores a Range (RFC 9110 §14.2): 200 with the cached object's whole length.
    let r = http
        .head(&other_seg)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], whole.len().to_string().as_str());
    assert!(r.headers().get("content-range").is_none());
    assert_eq!(
        origin.requests(),
        Vec::<String>::new(),
        "the cached segment went to the origin again"
    );

    // CMCD (issue 14): read at this edge from the query or headers, attached to its events, never sent to the
    // origin nor part of the cache key.
    cp.check_cmcd(&origin, true, || app.log_tail()).await.unwrap();

    // Revocations through the control plane reach the app within the freshness window (the bound is functional, not
    // a benchmark: the window plus generous slack for a loaded CI machine).
    let limit = Duration::from_millis(WINDOW_MS + 4000);
    let latencies = cp
        .revoke_to_enforced(20, "demo", serde_json::json!({"share": "sh-revoke"}), limit, || {
            app.log_tail()
        })
        .await
        .unwrap();
    eprintln!(
        "fastly (viceroy) revoke-to-enforced over {} revocations, window {WINDOW_MS} ms: {}",
        latencies.len(),
        percentiles(&latencies)
    );

    // The POP's cached state, as the app reports it: the control plane's generation after 20 revocations.
    let status = edge_status(http, &app.base).await.unwrap();
    assert_eq!(status["runtime"], "fastly", "{status}");
    assert_eq!(status["generation"], 20, "{status}");
    assert_eq!(status["keys"][0]["state"], "active", "{status}");

    // The denials and the playlist opens were reported to the control plane (one event per request, sent after
    // the response).
    cp.wait_metrics(Duration::from_secs(10), |m| {
        metric_sum(
            m,
            "sharegate_edge_events_total{kind=\"deny\",reason=\"revoked\",asset=\"demo\"",
        ) >= 20.0
            && metric_sum(m, "sharegate_edge_events_total{kind=\"playlist_open\"") >= 1.0
    })
    .await
    .unwrap_or_else(|e| panic!("the events did not reach the control plane: {e}\n{}", app.log_tail()));
}
