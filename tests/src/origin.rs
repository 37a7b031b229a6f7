//! A static HTTP origin for the CDN runtimes under test (workerd, Viceroy fetch from it over loopback), which records
//! every request target it receives so tests can check what reached the origin (never a token).

use anyhow::Result;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A running static origin.
pub struct StaticOrigin {
    /// `http://127.0.0.1:port`.
    pub base: String,
    log: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("m3u8") => "application/vnd.apple.mpegurl",
        Some("ts") => "video/mp2t",
        Some("mp4" | "m4s") => "video/mp4",
        Some("key") => "application/octet-stream",
        _ => "application/octet-stream",
    }
}

impl StaticOrigin {
    /// Serve `dir` on an ephemeral loopback port.
    pub async fn start(dir: PathBuf) -> Result<StaticOrigin> {
        let log = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (dir, seen) = (Arc::new(dir), Arc::clone(&log));
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (dir, seen) = (Arc::clone(&dir), Arc::clone(&seen));
            async move { serve(&dir, &seen, req).await }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StaticOrigin { base, log, task })
    }

    /// Every request target (path and query) received so far, and `header <name>` for any CMCD header one carried.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Forget the recorded requests.
    pub fn clear(&self) {
        if let Ok(mut l) = self.log.lock() {
            l.clear();
        }
    }
}

impl Drop for StaticOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(dir: &Path, seen: &Mutex<Vec<String>>, req: Request<Body>) -> Response<Body> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string());
    if let Ok(mut l) = seen.lock() {
        l.push(target);
        // CMCD must never reach the origin: record any CMCD header, so tests can check none came.
        for name in req.headers().keys().filter(|n| n.as_str().starts_with("cmcd")) {
            l.push(format!("header {name}"));
        }
    }
    let rel = req.uri().path().trim_start_matches('/');
    let mut resp = Response::new(Body::empty());
    // The engine only ever sends normalised paths; refuse anything else rather than resolve it.
    if rel.split('/').any(|s| s.is_empty() || s == "." || s == "..") || rel.contains('%') {
        *resp.status_mut() = StatusCode::BAD_REQUEST;
        return resp;
    }
    let path = dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&path)));
            if req.method() != axum::http::Method::HEAD {
                *resp.body_mut() = Body::from(bytes);
            }
        }
        Err(_) => *resp.status_mut() = StatusCode::NOT_FOUND,
    }
    resp
}

/// The state bytes and generation being served, if any.
type Served = Arc<Mutex<Option<(Arc<Vec<u8>>, u64)>>>;

/// A stand-in for the control plane's state endpoint, serving fixed bytes (for the conformance suite; end-to-end
/// tests use the real control plane). Answers 304 when the caller already holds the generation.
pub struct StateServer {
    /// `http://127.0.0.1:port/v1/edge/state`.
    pub url: String,
    current: Served,
    task: tokio::task::JoinHandle<()>,
}

impl StateServer {
    /// Serve `bytes` (a snapshot of generation `generation`).
    pub async fn start(bytes: Vec<u8>, generation: u64) -> Result<StateServer> {
        let s = Self::empty().await?;
        s.set(bytes, generation);
        Ok(s)
    }

    /// Serve nothing yet (503) until [`StateServer::set`]: lets a test start its runtimes first and build the state
    /// and tokens at the time the cases run.
    pub async fn empty() -> Result<StateServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/v1/edge/state", listener.local_addr()?);
        let current: Served = Arc::new(Mutex::new(None));
        let serving = Arc::clone(&current);
        let app = axum::Router::new().route(
            "/v1/edge/state",
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let now = serving.lock().ok().and_then(|c| c.clone());
                async move {
                    let status = |s: StatusCode| Response::builder().status(s).body(Body::empty()).unwrap_or_default();
                    let Some((bytes, generation)) = now else {
                        return status(StatusCode::SERVICE_UNAVAILABLE);
                    };
                    let held = headers
                        .get(sharegate_edge::contract::headers::GENERATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    if held == Some(generation) {
                        return status(StatusCode::NOT_MODIFIED);
                    }
                    Response::new(Body::from(bytes.as_ref().clone()))
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(StateServer { url, current, task })
    }

    /// Serve `bytes` as generation `generation` from now on.
    pub fn set(&self, bytes: Vec<u8>, generation: u64) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some((Arc::new(bytes), generation));
        }
    }
}

impl Drop for StateServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
