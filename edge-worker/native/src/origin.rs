//! Origins: a local directory or HTTP servers, tried in order (failover on 5xx, timeout or connection error).

use bytes::Bytes;
use sharegate_edge::engine::Allow;
use sharegate_edge::response::try_next_origin;
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

/// Whether a directory origin's read error says "there is no such file here": an answer (404), the same on every
/// replica of the files, so the next origin is not asked.
///
/// Anyone holding a link chooses the path below its scope, so every way the filesystem can reject a *name* must land
/// here, or a client could turn a valid link into a 5xx at will: missing (`ENOENT`), a directory (`EISDIR`), a path
/// below a file (`.../master.m3u8/x`: `ENOTDIR`), a name or path too long (`ENAMETOOLONG`), a name the filesystem
/// cannot hold (`InvalidFilename`, `InvalidInput` for an interior NUL). Everything else (`EIO`, `EACCES`, `EMFILE`, a
/// stale NFS handle, ...) is the origin failing, which may fail over and, when every origin fails, is a 503.
pub fn no_such_file(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::NotFound | K::IsADirectory | K::NotADirectory | K::InvalidFilename | K::InvalidInput
    )
}

/// Fetch an allowed request's object from the origins in order.
///
/// A directory origin answers 404 for a file that is not there ([`no_such_file`]: definitive, the next origin is not
/// asked) and fails over on any other read error; an HTTP origin hands over to the next on a timeout, a connection
/// error or a status the engine says to move on from ([`try_next_origin`]). `None` when every origin failed.
pub async fn fetch(origins: &[Origin], client: &reqwest::Client, timeout: Duration, a: &Allow<'_>) -> Option<Fetched> {
    let path: &str = &a.origin_path;
    for (i, origin) in origins.iter().enumerate() {
        match origin {
            Origin::Dir(dir) => {
                // Decoded as a static file server decodes (`a%20b.ts` is the file `a b.ts`), by the same function
                // the control plane's readiness check uses; a name it refuses (a decoded NUL, `/` or dot segment)
                // is no file here, like a name the filesystem rejects.
                let read = match sharegate_edge::hls::origin_file_path(path) {
                    Some(rel) => tokio::fs::read(dir.join(rel)).await,
                    None => Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
                };
                return Some(match read {
                    Ok(body) => Fetched {
                        status: 200,
                        body: Bytes::from(body),
                        content_type: Some(content_type_for(path).to_string()),
                        cache_control: None,
                        origin_index: i,
                    },
                    // A missing file is an answer only while the origin's root is there: an unmounted or
                    // deleted origin directory is the origin failing, not every file being gone.
                    Err(e) if no_such_file(&e) && tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) => Fetched {
                        status: 404,
                        body: Bytes::new(),
                        content_type: None,
                        cache_control: None,
                        origin_index: i,
                    },
                    Err(_) => continue,
                });
            }
            Origin::Http(base) => {
                let Ok(resp) = client.get(a.origin_url(base)).timeout(timeout).send().await else {
                    continue;
                };
                let status = resp.status().as_u16();
                if try_next_origin(status) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fresh directory with `a/master.m3u8`, removed when dropped.
    struct Root(PathBuf);
    impl Drop for Root {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn root(tag: &str) -> Root {
        let p = std::env::temp_dir().join(format!("sg-origin-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(p.join("a")).unwrap();
        std::fs::write(p.join("a/master.m3u8"), "#EXTM3U\n").unwrap();
        Root(p)
    }

    /// An allowed request for `path` (what the engine hands over; only the origin path and query matter here).
    fn allow(path: &str) -> Allow<'_> {
        Allow {
            origin_path: path.into(),
            origin_query: None,
            resource: sharegate_shared::token::Resource::Segment,
            headers: &[],
            shared_cacheable: true,
            cache_tags: sharegate_edge::engine::CacheTags::none(),
            playlist: None,
            event: None,
        }
    }

    async fn status(origins: &[Origin], path: &str) -> Option<u16> {
        let client = reqwest::Client::new();
        fetch(origins, &client, Duration::from_secs(1), &allow(path))
            .await
            .map(|f| f.status)
    }

    #[tokio::test]
    async fn names_the_filesystem_rejects_are_404_not_origin_failures() {
        let r = root("names");
        let dir = [Origin::Dir(r.0.clone())];
        assert_eq!(status(&dir, "/a/master.m3u8").await, Some(200));
        let long = format!("/a/{}", "n".repeat(300));
        let deep_long = format!("/a/{}/x", "d".repeat(300));
        for p in [
            "/a/missing.ts",
            "/a",
            "/a/",
            "/a/master.m3u8/x",
            "/a/master.m3u8/x/y.ts",
            long.as_str(),
            deep_long.as_str(),
            "/a/nul\0.ts",
        ] {
            assert_eq!(status(&dir, p).await, Some(404), "{p:?}");
        }
    }

    #[tokio::test]
    async fn request_paths_are_percent_decoded_like_a_file_server() {
        let r = root("decode");
        std::fs::write(r.0.join("a/a b.ts"), "seg").unwrap();
        let dir = [Origin::Dir(r.0.clone())];
        // The readiness check reads `a%20b.ts` as the file `a b.ts`; so does the directory origin.
        assert_eq!(status(&dir, "/a/a%20b.ts").await, Some(200));
        assert_eq!(status(&dir, "/a/a b.ts").await, Some(200));
        for p in ["/a/a%2Fb.ts", "/a/x%00.ts", "/a/%FF.ts", "/a/%2E%2E/a/master.m3u8"] {
            assert_eq!(status(&dir, p).await, Some(404), "{p:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_origin_root_fails_over() {
        let good = root("good");
        let gone = good.0.join("not-mounted");
        let origins = [Origin::Dir(gone.clone()), Origin::Dir(good.0.clone())];
        let client = reqwest::Client::new();
        let f = fetch(&origins, &client, Duration::from_secs(1), &allow("/a/master.m3u8"))
            .await
            .unwrap();
        assert_eq!((f.status, f.origin_index), (200, 1));
        assert_eq!(status(&[Origin::Dir(gone)], "/a/master.m3u8").await, None);
    }
}
