//! Playback analytics end to end in a real browser (issue 14): headless Debian Chromium drives the share page of
//! `sharegate dev` (`tests/browser/analytics.mjs`), and the test compares what the page measured itself with what
//! the control plane reports: a view's startup time and completion, stalls when the origin is throttled mid-play, a
//! revoked view as a business failure and a broken segment as a technical one, a backend's conversion in the
//! funnel, and the dashboard showing the same numbers (screenshot `docs/screenshots/dashboard.png` with
//! `SHAREGATE_UPDATE_SCREENSHOTS=1`).
//!
//! The origin is an HTTP server in this test serving the demo asset (`deploy/demo-media/demo`) under three names:
//! `demo` as is, `slow` and `slow2` with every media segment after the first held back 2.5 s once the asset is registered
//! (so a playing viewer stalls), and `broken` whose media playlists are gone (404) once registered. Needs chromium,
//! node_modules (playwright-core); fails when `CI=true` without them, skipped loudly otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::{Path as AxPath, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Dev, free_port, repo_root};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

struct Origin {
    media: PathBuf,
    /// Set once the assets are registered (the script posts `/_arm`): from then on `slow` is slow and `broken` is
    /// broken.
    armed: AtomicBool,
}

async fn serve(
    State(o): State<Arc<Origin>>,
    AxPath((asset, rest)): AxPath<(String, String)>,
) -> axum::response::Response {
    if rest.contains("..") || !matches!(asset.as_str(), "demo" | "slow" | "slow2" | "broken") {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(body) = tokio::fs::read(o.media.join(&rest)).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let armed = o.armed.load(Ordering::SeqCst);
    let segment = rest.ends_with(".ts");
    if armed && asset.starts_with("slow") && segment && !rest.ends_with("seg_000.ts") {
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    if armed && asset == "broken" && rest.ends_with("index.m3u8") {
        // Its media playlists gone from the origin after the readiness check: no rendition can load.
        return StatusCode::NOT_FOUND.into_response();
    }
    let ct = if rest.ends_with(".m3u8") {
        "application/vnd.apple.mpegurl"
    } else {
        "video/mp2t"
    };
    (StatusCode::OK, [("content-type", ct)], body).into_response()
}

#[test]
fn analytics_match_what_the_page_measured() {
    let root = repo_root();
    let Some((node, chromium)) = common::browser_tools("browser_analytics") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let origin = Arc::new(Origin {
        media: root.join("deploy/demo-media/demo"),
        armed: AtomicBool::new(false),
    });
    let origin_port = free_port();
    {
        let o = origin.clone();
        let app = axum::Router::new()
            .route("/{asset}/{*rest}", axum::routing::get(serve))
            .route(
                "/_arm",
                axum::routing::post(move || {
                    o.armed.store(true, Ordering::SeqCst);
                    async { StatusCode::NO_CONTENT }
                }),
            )
            .with_state(origin.clone());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", origin_port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let log = dir.path().join("dev.log");
    let origin_url = format!("http://127.0.0.1:{origin_port}");
    let dev = Dev::start_with_origin(
        &dir.path().join("data"),
        api,
        edge,
        std::path::Path::new(&origin_url),
        &log,
        &[],
    );
    assert!(
        dev.lines.iter().any(|l| l.contains("health:")),
        "sharegate dev did not start: {:#?}\n{}",
        dev.lines,
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let shots = dir.path().join("shots");
    std::fs::create_dir_all(&shots).unwrap();
    let out = Command::new(node)
        .arg(root.join("tests/browser/analytics.mjs"))
        .env("SG_API", format!("http://127.0.0.1:{api}"))
        .env("SG_ORIGIN", format!("http://127.0.0.1:{origin_port}"))
        .env("SG_ADMIN_KEY", dev.key("admin"))
        .env("SG_MINTER_KEY", dev.key("minter"))
        .env("SG_RESPONDER_KEY", dev.key("responder"))
        .env("SG_AUDITOR_KEY", dev.key("auditor"))
        .env("SG_SCREENSHOTS", &shots)
        .env("SG_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let _ = &origin;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "analytics.mjs failed:\n{text}\n--- dev log ---\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    if std::env::var("SHAREGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::copy(shots.join("dashboard.png"), root.join("docs/screenshots/dashboard.png")).unwrap();
    }
    drop(dev);
}
