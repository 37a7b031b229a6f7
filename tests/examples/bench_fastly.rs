//! Per-request cost of the Fastly app in Viceroy, measured in one run: `bash scripts/bench-fastly.sh [--quick]`.
//!
//! Three Viceroy servers fetch a 100 KB segment from the same local origin, with the same state endpoint (100k
//! revocations among 1M issued tokens), in alternating rounds so machine noise falls on all:
//! - the service (`bin/main.wasm`) with origin caching off, so it fetches the segment from the origin every time,
//!   like the pass-through: the difference is reading the settings, opening the state, deciding and answering;
//! - the pass-through (`bin/passthrough.wasm`): the same origin fetch and nothing else;
//! - the service with caching on (segments from the Core Cache), for reference.
//!
//! More servers run the timing build (`bin/bench-timing.wasm`, same code plus a `server-timing` header), one per
//! state size (one size with `--quick`), splitting a request into settings, request facts, state (Core Cache lookup
//! and body read), open (in place) and decide, and timing — for comparison — reading and opening the same snapshot
//! from a KV Store.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::{StateServer, StaticOrigin};
use sharegate_e2e::unix_now;
use sharegate_e2e::viceroy::{Viceroy, app_wasm, build_app, package_dir, passthrough_wasm};
use sharegate_shared::token::Claims;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// Shared bench helpers; included by path (see the header of shared/testkit.rs).
#[path = "../../shared/testkit.rs"]
mod testkit;
use testkit::percentile as pct;

const SIGNING: [u8; 32] = [0x73; 32];
const STATE: [u8; 32] = [0x74; 32];
const SEGMENT: usize = 100 * 1024;

/// `n` requests; the durations, and the `server-timing` phases (ms) when present.
async fn round(client: &reqwest::Client, url: &str, n: usize, out: &mut Vec<Duration>, phases: &mut Phases) {
    for _ in 0..n {
        let t = Instant::now();
        let r = client.get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let timing = r
            .headers()
            .get("server-timing")
            .map(|v| v.to_str().unwrap().to_string());
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), SEGMENT);
        out.push(t.elapsed());
        for part in timing.iter().flat_map(|t| t.split(", ")) {
            if let Some((name, dur)) = part.split_once(";dur=") {
                phases.entry(name.to_string()).or_default().push(dur.parse().unwrap());
            }
        }
    }
}

type Phases = BTreeMap<String, Vec<f64>>;

/// A control plane's sharded state endpoints (`/v1/edge/state/head`, `/v1/edge/state/shard/{bits}/{index}`) over
/// `revoked` pseudo-random revoked ids (spread over 1,000 generations) and 10 watermarks: the head at request time
/// (so the state stays fresh), the signed freshness message to an edge that holds the generation, a shard built on
/// demand. Returns the state URL and the head's size.
async fn shard_server(revoked: usize) -> (String, usize) {
    use sharegate_shared::revocation::{
        RevokedAt, RevokedToken, ScopeKind, ShardParams, StateKey, Watermark, bits_for, build_freshness, build_head,
        build_shard,
    };
    use std::sync::Arc;
    const GENERATION: u64 = 1_000;
    let mix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let records: Arc<Vec<RevokedAt>> = Arc::new(
        (0..revoked as u64)
            .map(|n| {
                let mut id = [0u8; 12];
                id[..8].copy_from_slice(&mix(n + 1).to_be_bytes());
                id[8..].copy_from_slice(&(n as u32).to_be_bytes());
                RevokedAt {
                    token: RevokedToken {
                        id,
                        iat: 1,
                        exp: u32::MAX,
                    },
                    generation: 1 + n % GENERATION,
                }
            })
            .collect(),
    );
    let marks: Arc<Vec<Watermark>> = Arc::new(
        (0..10u8)
            .map(|i| Watermark::new(ScopeKind::Viewer, &[b'v', i], 1))
            .collect(),
    );
    let bits = bits_for(revoked);
    let params = move || ShardParams {
        generation: GENERATION,
        as_of: unix_now() as u32,
        bits,
        expire_before: 0,
    };
    let key = StateKey::new(STATE);
    let head_len = build_head(&params(), &records, &marks, &key).unwrap().len();
    let (r1, m1, k1, r2, k2) = (records.clone(), marks, key.clone(), records, key);
    let app = axum::Router::new()
        .route(
            "/v1/edge/state/head",
            axum::routing::get(move |h: axum::http::HeaderMap| {
                let held = h
                    .get(sharegate_edge::contract::headers::GENERATION)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                let body = if held == Some(GENERATION) {
                    build_freshness(GENERATION, unix_now() as u32, &k1).to_vec()
                } else {
                    build_head(&params(), &r1, &m1, &k1).unwrap()
                };
                async move { body }
            }),
        )
        .route(
            "/v1/edge/state/shard/{bits}/{index}",
            axum::routing::get(move |axum::extract::Path((b, i)): axum::extract::Path<(u8, u32)>| {
                let p = ShardParams { bits: b, ..params() };
                let body = build_shard(&p, i, &r2, &k2).unwrap_or_default();
                async move { body }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/edge/state", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, head_len)
}

/// The settings as the app reads them in production: one Config Store key (`SHAREGATE_SETTINGS`) and one Secret
/// Store entry (`SHAREGATE_SECRETS`), each `NAME=value` lines. The origin and control-plane URLs stay as keys of their
/// own too: the harness derives the backends from them (the app does not read them once the bundle is there).
fn bundled(settings: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    use sharegate_e2e::viceroy::SECRET_NAMES;
    let lines = |secret: bool| {
        settings
            .iter()
            .filter(|(k, _)| SECRET_NAMES.contains(&k.as_str()) == secret)
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
    };
    let mut out: BTreeMap<String, String> = settings
        .iter()
        .filter(|(k, _)| ["SHAREGATE_ORIGIN", "SHAREGATE_STATE_URL", "SHAREGATE_EVENTS_URL"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("SHAREGATE_SETTINGS".into(), lines(false));
    out.insert("SHAREGATE_SECRETS".into(), lines(true));
    out
}

fn median_us(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2] * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (4, 100) } else { (10, 300) };
    build_app(true).unwrap();
    let now = unix_now() as u32;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("demo/v0")).unwrap();
    let segment: Vec<u8> = (0..SEGMENT).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.path().join("demo/v0/seg_000.ts"), &segment).unwrap();
    let origin = StaticOrigin::start(dir.path().to_path_buf()).await.unwrap();

    let mut settings = testkit::edge_settings(SIGNING, STATE);
    settings.insert("SHAREGATE_ORIGIN".to_string(), origin.base.clone());
    settings.insert("SHAREGATE_SEGMENT_TTL".to_string(), "0".to_string());
    // The service reads the state by shards (a head and one shard per request). The timing build runs with the
    // sharded state at two very different sizes (per-request state cost independent of size), and with the whole
    // 100k/1M snapshot for comparison (the mode before shards).
    let mut sizes = vec![("100k revoked", 100_000usize), ("1M revoked", 1_000_000)];
    if !quick {
        sizes.insert(0, ("10 revoked", 10));
    }
    let mut servers = Vec::new();
    let mut timing = Vec::new();
    let mut sharded = None;
    for (label, revoked) in &sizes {
        let (url, head_len) = shard_server(*revoked).await;
        let mut s = settings.clone();
        s.insert("SHAREGATE_STATE_URL".to_string(), url);
        s.insert("SHAREGATE_STATE_SHARDS".to_string(), "true".to_string());
        let v = Viceroy::start_wasm(&package_dir().join("bin/bench-timing.wasm"), &bundled(&s), &[])
            .await
            .unwrap();
        if sharded.is_none() || *revoked == 100_000 {
            sharded = Some(s.clone());
        }
        timing.push((format!("sharded, {label} (head {head_len} B)"), s, v));
    }
    {
        let snapshot = sharegate_e2e::synthetic_state(now, 1_000_000, 100_000, STATE);
        let file = dir.path().join("state-whole.bin");
        std::fs::write(&file, &snapshot).unwrap();
        let server = StateServer::start(snapshot.clone(), 1).await.unwrap();
        let mut s = settings.clone();
        s.insert("SHAREGATE_STATE_URL".to_string(), server.url.clone());
        let v = Viceroy::start_wasm(
            &package_dir().join("bin/bench-timing.wasm"),
            &bundled(&s),
            &[("state", file.as_path())],
        )
        .await
        .unwrap();
        timing.push((
            format!("whole snapshot, 100k revoked of 1M issued, {} B", snapshot.len()),
            s,
            v,
        ));
        servers.push(server);
    }
    let uncached = sharded.unwrap();
    let mut cached = uncached.clone();
    cached.remove("SHAREGATE_SEGMENT_TTL");
    let app = Viceroy::start_wasm(&app_wasm(), &bundled(&uncached), &[])
        .await
        .unwrap();
    let passthrough = Viceroy::start_wasm(&passthrough_wasm(), &uncached, &[]).await.unwrap();
    let cached = Viceroy::start_wasm(&app_wasm(), &bundled(&cached), &[]).await.unwrap();

    let token = testkit::mint(
        SIGNING,
        &Claims {
            share: Some("bench".into()),
            ..testkit::playback_claims([0x42; 12], "demo", now, now + 3600)
        },
    );
    let path = format!("/t/{token}/demo/v0/seg_000.ts");
    let client = reqwest::Client::builder().pool_max_idle_per_host(4).build().unwrap();
    let urls: Vec<String> = [&app, &passthrough, &cached]
        .into_iter()
        .chain(timing.iter().map(|t| &t.2))
        .map(|v| format!("{}{path}", v.base))
        .collect();
    // Warm every server (the first requests compile the module and fill the caches).
    let (mut warm, mut ignore) = (Vec::new(), Phases::new());
    for url in &urls {
        round(&client, url, 50, &mut warm, &mut ignore).await;
    }

    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); urls.len()];
    let mut phases: Vec<Phases> = vec![Phases::new(); urls.len()];
    for _ in 0..rounds {
        for (i, url) in urls.iter().enumerate() {
            round(&client, url, per_round, &mut lat[i], &mut phases[i]).await;
        }
    }
    let (a50, a99) = (pct(&mut lat[0], 0.5), pct(&mut lat[0], 0.99));
    let (p50, p99) = (pct(&mut lat[1], 0.5), pct(&mut lat[1], 0.99));
    let (c50, c99) = (pct(&mut lat[2], 0.5), pct(&mut lat[2], 0.99));
    let wasm = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "app wasm {} B, pass-through wasm {} B; 100 KB segment; state by shards, 100k revoked",
        wasm(&app_wasm()),
        wasm(&passthrough_wasm()),
    );
    println!(
        "requests per app: {} ({rounds} alternating rounds of {per_round})",
        lat[0].len()
    );
    println!("sharegate, origin cache off : p50 {a50:>10.3?}  p99 {a99:>10.3?}");
    println!("pass-through                : p50 {p50:>10.3?}  p99 {p99:>10.3?}");
    println!(
        "sharegate / pass-through    : p50 {:.2}x ({:+.0} us added), p99 {:.2}x",
        a50.as_secs_f64() / p50.as_secs_f64(),
        (a50.as_secs_f64() - p50.as_secs_f64()) * 1e6,
        a99.as_secs_f64() / p99.as_secs_f64()
    );
    println!(
        "sharegate, segment cached   : p50 {c50:>10.3?}  p99 {c99:>10.3?}  ({:.2}x pass-through at p50)",
        c50.as_secs_f64() / p50.as_secs_f64()
    );
    for (i, (label, _, _)) in timing.iter().enumerate() {
        let p = &mut phases[3 + i];
        println!(
            "in the instance, median of {} requests (timing build), state {label}:",
            lat[3 + i].len()
        );
        for (name, what) in [
            ("settings", "settings: one Config + one Secret Store key, parse, key"),
            ("request", "request: raw URI, client address, headers (no geo rule)"),
            ("state", "state: Core Cache lookup + read (head prefix / whole)"),
            ("open", "open: in place"),
            ("shard", "shard: bucket version + shard lookup + read"),
            ("decide", "decide: token, policy, revocation (shard excluded)"),
            ("kv_state", "for comparison: KV Store lookup + read + open"),
            ("answer", "answer: origin fetch + response plan (as pass-through)"),
        ] {
            if let Some(v) = p.get_mut(name) {
                println!("  {what:<58} {:>9.1} us", median_us(v));
            }
        }
    }
    drop(servers);
}
