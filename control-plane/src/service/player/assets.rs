//! The files the player pages load, compiled into the binary and served by the control plane itself (never from
//! a third-party host): hls.js (the pinned npm build, vendored byte for byte in `control-plane/player/vendor/`),
//! our player script and its stylesheet.
//!
//! Each is served under a name that changes with its content (`player.<hash>.js`), so it can be cached for a
//! year (`immutable`), and the pages name it with subresource integrity (`sha384-…`). Compressed once, on first
//! use, with gzip for clients that accept it.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256, Sha384};
use std::io::Write as _;
use std::sync::LazyLock;

/// The pinned hls.js version (package.json `devDependencies`, `control-plane/player/vendor/hls.js/`).
pub const HLS_JS_VERSION: &str = "1.7.4";

/// One static file.
#[derive(Debug)]
pub struct Asset {
    /// The name it is served under (`/player/<name>`).
    pub name: String,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub body: &'static [u8],
    /// Gzip of `body`.
    pub gzip: Vec<u8>,
    /// `sha384-<base64>` for the `integrity` attribute.
    pub integrity: String,
}

impl Asset {
    /// An asset named after its content (`<stem>.<hash>.<ext>`), or after `versioned` (`<stem>-<version>.<ext>`).
    pub fn new(
        stem: &str,
        ext: &str,
        content_type: &'static str,
        body: &'static [u8],
        versioned: Option<&str>,
    ) -> Asset {
        let name = match versioned {
            Some(v) => format!("{stem}-{v}.{ext}"),
            None => format!("{stem}.{}.{ext}", &hex::encode(Sha256::digest(body))[..12]),
        };
        let integrity = format!(
            "sha384-{}",
            base64::engine::general_purpose::STANDARD.encode(Sha384::digest(body))
        );
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail; an empty gzip would only make clients fall back to the plain body.
        let gzip = z.write_all(body).and_then(|()| z.finish()).unwrap_or_default();
        Asset {
            name,
            content_type,
            body,
            gzip,
            integrity,
        }
    }

    /// `/player/<name>`.
    pub fn path(&self) -> String {
        format!("/player/{}", self.name)
    }
}

/// The player's files.
#[derive(Debug)]
pub struct Assets {
    /// hls.js, full build (captions, CMCD, content steering).
    pub hls: Asset,
    /// Our player script.
    pub script: Asset,
    /// Our stylesheet.
    pub style: Asset,
}

/// Built once per process.
pub static ASSETS: LazyLock<Assets> = LazyLock::new(|| Assets {
    hls: Asset::new(
        "hls",
        "min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../player/vendor/hls.js/hls.min.js"),
        Some(HLS_JS_VERSION),
    ),
    script: Asset::new(
        "player",
        "js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../player/player.js"),
        None,
    ),
    style: Asset::new(
        "player",
        "css",
        "text/css; charset=utf-8",
        include_bytes!("../../../player/player.css"),
        None,
    ),
});

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut parts = e.split(';');
            let name = parts.next().unwrap_or("").trim();
            // `gzip;q=0` refuses it.
            let refused = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// `GET /player/{file}`.
pub async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let a = &*ASSETS;
    respond(
        [&a.hls, &a.script, &a.style].into_iter().find(|x| x.name == file),
        &headers,
    )
}

/// The answer for one of our static files (immutable, gzip when accepted), or 404.
pub fn respond(asset: Option<&Asset>, headers: &HeaderMap) -> Response {
    let Some(asset) = asset else {
        let mut resp = (StatusCode::NOT_FOUND, "not found\n").into_response();
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    };
    let gzip = accepts_gzip(headers) && !asset.gzip.is_empty();
    let body = if gzip { asset.gzip.clone() } else { asset.body.to_vec() };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Pages on other origins never load these, but a CDN in front of `/player/` may serve them cross-origin.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_content_and_integrity_is_sha384() {
        let a = &*ASSETS;
        assert_eq!(a.hls.name, format!("hls-{HLS_JS_VERSION}.min.js"));
        assert!(a.script.name.starts_with("player.") && a.script.name.ends_with(".js"));
        assert!(a.style.integrity.starts_with("sha384-"));
        let mut d = flate2::read::GzDecoder::new(&a.hls.gzip[..]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut d, &mut back).expect("our own gzip decodes");
        assert_eq!(back, a.hls.body);
    }

    #[test]
    fn gzip_only_when_accepted() {
        let mut h = HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("br, gzip"));
        assert!(accepts_gzip(&h));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0, br"));
        assert!(!accepts_gzip(&h));
    }
}
