//! Per-request latency the sharegate worker adds over a pass-through worker, both in workerd (`wrangler dev`),
//! measured in the same run: `bash scripts/bench-cloudflare.sh [--quick]`.
//!
//! Both fetch a 100 KB segment from the same local origin. The sharegate worker verifies a path token, checks a
//! 100k-revocation state (held in isolate memory, refreshed every second from a local state endpoint) and streams
//! the body; the pass-through worker (scripts/bench/passthrough-worker.js) only fetches. Rounds alternate between
//! the two so machine noise falls on both; the report is medians and p99 per worker, and their ratio.
//!
//! Then where the added time goes: a third worker, the same code built with the `bench-phases` feature, ends each
//! request after a phase named by the `x-sharegate-bench-stop` header (entering the worker; reading the request
//! and deciding; the origin fetch, its response returned as it came; the whole request). Phase costs are the
//! differences between those medians (workerd's clock does not move inside a request, so they cannot be timed
//! from within).
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::{StateServer, StaticOrigin};
use sharegate_e2e::wrangler::WranglerDev;
use sharegate_e2e::{repo_root, unix_now};
use std::time::{Duration, Instant};

// Shared bench helpers; included by path (see the header of shared/testkit.rs).
#[path = "../../shared/testkit.rs"]
mod testkit;
use testkit::percentile as pct;

const SIGNING: [u8; 32] = [0x71; 32];
const STATE: [u8; 32] = [0x72; 32];

async fn round(client: &reqwest::Client, url: &str, n: usize, out: &mut Vec<Duration>) {
    stop_round(client, url, None, n, out).await;
}

/// `n` requests to `url`, each ended after phase `stop` (none: the whole request, a 100 KB body).
async fn stop_round(client: &reqwest::Client, url: &str, stop: Option<&str>, n: usize, out: &mut Vec<Duration>) {
    for _ in 0..n {
        let t = Instant::now();
        let mut req = client.get(url);
        if let Some(s) = stop {
            req = req.header("x-sharegate-bench-stop", s);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{url} {stop:?}: {:?}", r.headers());
        let body = r.bytes().await.unwrap();
        let want = match stop {
            Some("entry" | "decide") => 0,
            _ => 100 * 1024,
        };
        assert_eq!(body.len(), want, "{stop:?}");
        out.push(t.elapsed());
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (4, 100) } else { (10, 300) };
    let now = unix_now() as u32;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("demo/v0")).unwrap();
    let segment: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("demo/v0/seg_000.ts"), &segment).unwrap();
    let origin = StaticOrigin::start(dir.path().to_path_buf()).await.unwrap();
    let state_server = StateServer::start(sharegate_e2e::synthetic_state(now, 1_000_000, 100_000, STATE), 1)
        .await
        .unwrap();

    let mut settings = testkit::edge_settings(SIGNING, STATE);
    settings.insert("SHAREGATE_ORIGIN".to_string(), origin.base.clone());
    settings.insert("SHAREGATE_STATE_URL".to_string(), state_server.url.clone());
    // The state server serves one snapshot stamped at start: on a slow machine the rounds outlast the default 30 s
    // and every request became `state_stale`. The age is still checked on every request, against this bound.
    settings.insert("SHAREGATE_STATE_MAX_AGE".to_string(), "86400".to_string());
    let worker = WranglerDev::start(&settings).await.unwrap();
    let passthrough = WranglerDev::start_script(&repo_root().join("scripts/bench/passthrough-worker.js"), &settings)
        .await
        .unwrap();
    let phases = WranglerDev::start_script(
        &repo_root().join("edge-worker/cloudflare/build-phases/index.js"),
        &settings,
    )
    .await
    .unwrap();

    let token = testkit::mint(SIGNING, &testkit::playback_claims([0x42; 12], "demo", now, now + 3600));
    let path = format!("/t/{token}/demo/v0/seg_000.ts");
    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build().unwrap();
    let (w_url, p_url) = (format!("{}{path}", worker.base), format!("{}{path}", passthrough.base));
    // Warm both isolates (first requests compile and load).
    let mut warm = Vec::new();
    round(&client, &w_url, 50, &mut warm).await;
    round(&client, &p_url, 50, &mut warm).await;

    let (mut w, mut p) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        round(&client, &w_url, per_round, &mut w).await;
        round(&client, &p_url, per_round, &mut p).await;
    }
    let (w50, p50) = (pct(&mut w, 0.5), pct(&mut p, 0.5));
    let (w99, p99) = (pct(&mut w, 0.99), pct(&mut p, 0.99));
    println!("requests per worker: {}", w.len());
    println!("sharegate worker : p50 {w50:>10.3?}  p99 {w99:>10.3?}");
    println!("pass-through     : p50 {p50:>10.3?}  p99 {p99:>10.3?}");
    println!(
        "sharegate / pass-through: p50 {:.2}x ({:+.0} us added), p99 {:.2}x",
        w50.as_secs_f64() / p50.as_secs_f64(),
        (w50.as_secs_f64() - p50.as_secs_f64()) * 1e6,
        w99.as_secs_f64() / p99.as_secs_f64()
    );

    // Where the time goes: the phase-stop worker, each stop in every round, beside the pass-through again.
    let ph_url = format!("{}{path}", phases.base);
    let stops = [
        "entry",
        "decide",
        "fetch",
        "full",
        "fetch-no-deadline",
        "fetch-bare",
        "fetch-timer-only",
        "fetch-native-timeout",
    ];
    let mut ph: Vec<Vec<Duration>> = vec![Vec::new(); stops.len()];
    let mut base = Vec::new();
    for s in stops {
        stop_round(&client, &ph_url, Some(s), 20, &mut Vec::new()).await;
    }
    for _ in 0..rounds {
        round(&client, &p_url, per_round / 2, &mut base).await;
        for (i, s) in stops.iter().enumerate() {
            stop_round(&client, &ph_url, Some(s), per_round / 2, &mut ph[i]).await;
        }
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let b50 = pct(&mut base, 0.5);
    let m: Vec<Duration> = ph.iter_mut().map(|v| pct(v, 0.5)).collect();
    println!("phases (p50, bench-phases build; differences are each phase's cost):");
    println!("  pass-through (JS fetch + stream)      {:>9.0} us", us(b50));
    println!("  entry: into the worker, empty answer  {:>9.0} us", us(m[0]));
    println!(
        "  decide: read request + state + decide {:>9.0} us  (+{:.0} us)",
        us(m[1]),
        us(m[1]) - us(m[0])
    );
    println!(
        "  fetch: origin fetch, response as-is   {:>9.0} us  (vs pass-through {:+.0} us)",
        us(m[2]),
        us(m[2]) - us(b50)
    );
    println!(
        "  full: plan + headers + body           {:>9.0} us  (+{:.0} us over fetch)",
        us(m[3]),
        us(m[3]) - us(m[2])
    );
    println!(
        "  fetch without the deadline            {:>9.0} us  (vs fetch {:+.0} us)",
        us(m[4]),
        us(m[4]) - us(m[2])
    );
    println!(
        "  fetch without deadline or cache tags  {:>9.0} us  (vs fetch {:+.0} us)",
        us(m[5]),
        us(m[5]) - us(m[2])
    );
    println!(
        "  fetch raced with the timer, no signal {:>9.0} us  (vs fetch {:+.0} us)",
        us(m[6]),
        us(m[6]) - us(m[2])
    );
    println!(
        "  fetch with AbortSignal.timeout        {:>9.0} us  (vs fetch {:+.0} us)",
        us(m[7]),
        us(m[7]) - us(m[2])
    );
}
