//! Origins: a local directory or HTTP servers, tried in order (failover on 5xx, timeout or connection error).

use bytes::Bytes;
use std::path::PathBuf;
use std::time::Duration;

/// One origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Files under a directory.
    Dir(PathBuf),
    /// An HTTP(S) base URL (no trailing slash).
    Http(String),
}

impl Origin {
    /// `http://…`/`https://…` is an HTTP origin; anything else a directory.
    pub fn parse(s: &str) -> Origin {
        if s.starts_with("http://") || s.starts_with("https://") {
            Origin::Http(s.trim_end_matches('/').to_string())
        } else {
            Origin::Dir(PathBuf::from(s))
        }
    }
}

/// What an origin answered.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// `Content-Type`, if known.
    pub content_type: Option<String>,
    /// `Cache-Control` from the origin, if any.
    pub cache_control: Option<String>,
    /// Index of the origin that answered (0 = primary).
    pub origin_index: usize,
}

fn content_type_for(path: &str) -> &'static str {
    match path.rsplit_once('.').map_or("", |(_, e)| e) {
        "m3u8" | "m3u" => "application/vnd.apple.mpegurl",
        "ts" => "video/mp2t",
        "m4s" | "mp4" | "m4i" => "video/mp4",
        "aac" => "audio/aac",
        "vtt" => "text/vtt",
        "key" => "application/octet-stream",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// Fetch `path` (normalised, token-free) with optional query from the origins in order.
///
/// A directory origin answers 404 for a missing file (definitive: the next origin is not asked); an HTTP origin
/// that fails with 5xx, a timeout or a connection error hands over to the next. `None` when every origin failed.
pub async fn fetch(
    origins: &[Origin],
    client: &reqwest::Client,
    timeout: Duration,
    path: &str,
    query: Option<&str>,
) -> Option<Fetched> {
    for (i, origin) in origins.iter().enumerate() {
        match origin {
            Origin::Dir(dir) => {
                // The path is normalised (no dot segments, no encoded slashes), so joining cannot escape `dir`.
                let file = dir.join(path.trim_start_matches('/'));
                return Some(match tokio::fs::read(&file).await {
                    Ok(body) => Fetched {
                        status: 200,
                        body: Bytes::from(body),
                        content_type: Some(content_type_for(path).to_string()),
                        cache_control: None,
                        origin_index: i,
                    },
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::IsADirectory =>
                    {
                        Fetched {
                            status: 404,
                            body: Bytes::new(),
                            content_type: None,
                            cache_control: None,
                            origin_index: i,
                        }
                    }
                    Err(_) => continue,
                });
            }
            Origin::Http(base) => {
                let url = match query {
                    Some(q) => format!("{base}{path}?{q}"),
                    None => format!("{base}{path}"),
                };
                let Ok(resp) = client.get(&url).timeout(timeout).send().await else {
                    continue;
                };
                let status = resp.status().as_u16();
                if status >= 500 {
                    continue;
                }
                let header = |name: &str| {
                    resp.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                let content_type = header("content-type").or_else(|| Some(content_type_for(path).to_string()));
                let cache_control = header("cache-control");
                let Ok(body) = resp.bytes().await else {
                    continue;
                };
                return Some(Fetched {
                    status,
                    body,
                    content_type,
                    cache_control,
                    origin_index: i,
                });
            }
        }
    }
    None
}
