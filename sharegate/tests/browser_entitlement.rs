//! A trial ending mid-play in a real browser (issue 15): `sharegate dev` with an entitlement backend started here
//! (signatures checked as docs/entitlement.md asks), the demo asset made `entitled`, and headless Chromium playing
//! its share page as a signed-in trial viewer (`tests/browser/entitlement.mjs`): the player stops at the trial's
//! end and the page says "Your trial has ended" (screenshot `docs/screenshots/trial-ended.png` with
//! `SHAREGATE_UPDATE_SCREENSHOTS=1`). Needs chromium and node_modules (playwright-core); fails when `CI=true` without
//! them, skipped loudly otherwise.
#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use common::{Dev, free_port, repo_root};
use sharegate_control_plane::service::entitlement::hook::{self, HookRequest};
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};

const SECRET: &str = "a-browser-test-entitlement-secret-0123456789";
/// How long the trial lasts after the viewer's first check, seconds.
const TRIAL_SECS: u64 = 10;

/// Trials by viewer: when each one's first check came.
type Trials = Arc<Mutex<HashMap<String, u64>>>;

async fn check(State(trials): State<Trials>, headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    let now = sharegate_control_plane::service::now();
    if !hook::verify_request(SECRET.as_bytes(), &headers, &body, now, 300) {
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let Ok(req) = serde_json::from_slice::<HookRequest>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let started = *trials.lock().unwrap().entry(req.viewer.clone()).or_insert(now);
    axum::Json(serde_json::json!({
        "allow": true, "plan": "trial", "valid_until": started + TRIAL_SECS
    }))
    .into_response()
}

#[test]
fn a_trial_ends_mid_play_and_the_page_says_so() {
    let root = repo_root();
    let Some((node, chromium)) = common::browser_tools("browser_entitlement") else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend_port = free_port();
    {
        let app = axum::Router::new()
            .route("/check", axum::routing::post(check))
            .with_state(Trials::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", backend_port)))
            .unwrap();
        rt.spawn(async move { axum::serve(listener, app).await });
    }
    let dir = tempfile::tempdir().unwrap();
    let (api, edge) = (free_port(), free_port());
    let log = dir.path().join("dev.log");
    let url = format!("http://127.0.0.1:{backend_port}/check");
    let dev = Dev::start_with_origin(
        &dir.path().join("data"),
        api,
        edge,
        &root.join("deploy/demo-media"),
        &log,
        &[
            ("SHAREGATE_ENTITLEMENT_URL", &url),
            ("SHAREGATE_ENTITLEMENT_SECRET", SECRET),
        ],
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
        .arg(root.join("tests/browser/entitlement.mjs"))
        .env("SG_API", format!("http://127.0.0.1:{api}"))
        .env("SG_ADMIN_KEY", dev.key("admin"))
        .env("SG_MINTER_KEY", dev.key("minter"))
        .env("SG_AUDITOR_KEY", dev.key("auditor"))
        .env("SG_TRIAL_SECS", TRIAL_SECS.to_string())
        .env("SG_SCREENSHOTS", &shots)
        .env("SG_CHROMIUM", &chromium)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    let dev_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!dev_log.contains(SECRET), "the entitlement secret reached the log");
    assert!(
        out.status.success(),
        "entitlement.mjs failed:\n{text}\n--- dev log ---\n{dev_log}"
    );
    if std::env::var("SHAREGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        std::fs::copy(
            shots.join("trial-ended.png"),
            root.join("docs/screenshots/trial-ended.png"),
        )
        .unwrap();
    }
    drop(dev);
}
