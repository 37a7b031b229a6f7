//! An entitlement backend for load tests (`scripts/bench-mint.sh`): answers every signed request `allow` (plan
//! `paid`) after `--delay-ms` (default 5), refusing a bad signature with 401 as docs/entitlement.md asks. The secret
//! comes from `SHAREGATE_ENTITLEMENT_SECRET`. Counts calls and prints them to stderr when it ends (SIGTERM).
#![allow(clippy::unwrap_used)]

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use sharegate_control_plane::service::entitlement::hook;
use sharegate_e2e::arg;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

struct Backend {
    secret: Vec<u8>,
    delay: Duration,
    calls: AtomicU64,
    refused: AtomicU64,
}

async fn check(State(b): State<Arc<Backend>>, headers: HeaderMap, body: axum::body::Bytes) -> axum::response::Response {
    if !hook::verify_request(&b.secret, &headers, &body, sharegate_control_plane::service::now(), 300) {
        b.refused.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    b.calls.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(b.delay).await;
    axum::Json(serde_json::json!({"allow": true, "plan": "paid"})).into_response()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:7795".into());
    let delay = Duration::from_millis(arg("--delay-ms").map_or(5, |d| d.parse().unwrap()));
    let secret = std::env::var("SHAREGATE_ENTITLEMENT_SECRET").expect("SHAREGATE_ENTITLEMENT_SECRET");
    let b = Arc::new(Backend {
        secret: secret.into_bytes(),
        delay,
        calls: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route("/check", axum::routing::post(check))
        .with_state(b.clone());
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        term.recv().await;
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .unwrap();
    eprintln!(
        "entitlement backend: {} calls, {} refused signatures",
        b.calls.load(Ordering::Relaxed),
        b.refused.load(Ordering::Relaxed)
    );
}
