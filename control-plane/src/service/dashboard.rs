//! The analytics dashboard: `GET /dashboard` (a page with no data in it, public) and its files under
//! `/dashboard/assets/` (uPlot from npm, vendored byte for byte in `control-plane/dashboard/vendor/uplot/`, our script
//! and stylesheet; content-named, immutable, SRI-pinned, gzip). The page asks for an auditor (or admin) API key, keeps
//! it in the tab's `sessionStorage`, and reads `GET /v1/analytics` with it: the data is as protected as the API.
//!
//! Same CSP rules as the player pages: scripts only with this answer's nonce, styles only from our origin (uPlot
//! sizes its canvases through the CSSOM, which CSP allows), no frames, connections only to our origin.

use super::AppState;
use super::player::assets::{Asset, respond};
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::{Arc, LazyLock};

/// The pinned uPlot version (package.json `devDependencies`, `control-plane/dashboard/vendor/uplot/`).
pub const UPLOT_VERSION: &str = "1.6.32";

/// The dashboard's files.
#[derive(Debug)]
pub struct DashboardAssets {
    /// uPlot.
    pub uplot: Asset,
    /// uPlot's stylesheet.
    pub uplot_css: Asset,
    /// Our script.
    pub script: Asset,
    /// Our stylesheet.
    pub style: Asset,
}

/// Built once per process.
pub static ASSETS: LazyLock<DashboardAssets> = LazyLock::new(|| DashboardAssets {
    uplot: Asset::new(
        "uPlot",
        "iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uplot/uPlot.iife.min.js"),
        Some(UPLOT_VERSION),
    ),
    uplot_css: Asset::new(
        "uPlot",
        "min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/vendor/uplot/uPlot.min.css"),
        Some(UPLOT_VERSION),
    ),
    script: Asset::new(
        "dashboard",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../dashboard/dashboard.js"),
        None,
    ),
    style: Asset::new(
        "dashboard",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../../dashboard/dashboard.css"),
        None,
    ),
});

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/assets/{file}", get(asset))
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let a = &*ASSETS;
    let found = [&a.uplot, &a.uplot_css, &a.script, &a.style]
        .into_iter()
        .find(|x| x.name == file);
    respond(found, &headers)
}

fn html(nonce: &str) -> String {
    let a = &*ASSETS;
    let css = |x: &Asset| {
        format!(
            "<link rel=\"stylesheet\" href=\"/dashboard/assets/{}\" integrity=\"{}\">\n",
            x.name, x.integrity
        )
    };
    let js = |x: &Asset| {
        format!(
            "<script nonce=\"{nonce}\" src=\"/dashboard/assets/{}\" integrity=\"{}\"></script>\n",
            x.name, x.integrity
        )
    };
    let mut out = String::with_capacity(6000);
    out.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<link rel=\"icon\" href=\"data:,\">\n\
         <title>Playback analytics · sharegate</title>\n",
    );
    out.push_str(&css(&a.uplot_css));
    out.push_str(&css(&a.style));
    out.push_str(include_str!("../../dashboard/body.html"));
    out.push_str(&js(&a.uplot));
    out.push_str(&js(&a.script));
    out.push_str("</body>\n</html>\n");
    out
}

/// `GET /dashboard`.
async fn page() -> Response {
    let nonce = super::player::page::nonce();
    let mut resp = html(&nonce).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    let csp = format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    resp
}
