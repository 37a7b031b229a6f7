//! Allowed requests: the origin, through the POP's Core Cache, without the token.
//!
//! Objects are cached under `sharegate/o<cache key>` (the engine's cache key: origin path plus kept LL-HLS
//! directives, never a token), with the engine's cache tags as surrogate keys, so the control plane's purge by
//! `sg-asset-…`/`sg-share-…` reaches them; status and headers ride in the object's user metadata. Concurrent misses
//! collapse onto one origin fetch. The origin fetch itself is `pass`, so Fastly's readthrough cache keeps no second
//! copy. Origins are tried in order (backends `origin_0`, `origin_1`, …); a 5xx or a failed connection tries the
//! next.

use crate::{Runtime, set_headers};
use fastly::cache::core::{CacheKey, Found, Transaction};
use fastly::http::Method;
use fastly::{Body, Request, Response};
use sharegate_edge::adapter;
use sharegate_edge::engine::{Allow, OriginFailure};
use sharegate_shared::token::Resource;
use std::io::{Read, Write};
use std::time::Duration;

/// Backend name of the `i`-th origin of `SHAREGATE_ORIGIN`.
pub fn backend_name(i: usize) -> String {
    format!("origin_{i}")
}

/// What the origin answered, as cached: status and the headers we pass on.
struct Meta {
    status: u16,
    content_type: Option<String>,
    cache_control: Option<String>,
}

impl Meta {
    fn of(resp: &Response) -> Meta {
        let h = |name: &str| resp.get_header(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        Meta {
            status: resp.get_status().as_u16(),
            content_type: h("content-type"),
            cache_control: h("cache-control"),
        }
    }

    /// `status\ncontent-type\ncache-control` (header values cannot contain a newline).
    fn encode(&self) -> bytes::Bytes {
        let ct = self.content_type.as_deref().unwrap_or("");
        let cc = self.cache_control.as_deref().unwrap_or("");
        bytes::Bytes::from(format!("{}\n{ct}\n{cc}", self.status))
    }

    fn decode(b: &[u8]) -> Option<Meta> {
        let s = std::str::from_utf8(b).ok()?;
        let mut parts = s.splitn(3, '\n');
        let status = parts.next()?.parse().ok()?;
        let opt = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(str::to_string);
        Some(Meta {
            status,
            content_type: opt(parts.next()),
            cache_control: opt(parts.next()),
        })
    }
}

/// Where an object's body comes from: the cache, or straight from the origin (not cacheable, or caching off).
enum Source {
    Cached(Found),
    Direct(Body),
}

/// An origin object to answer from.
type Object = (Meta, Source);

fn direct(mut resp: Response) -> Object {
    (Meta::of(&resp), Source::Direct(resp.take_body()))
}

/// Fetch `a` from the origins in order. `None` when none answered with something other than a server error.
fn fetch(rt: &Runtime, a: &Allow, method: Method) -> Option<Response> {
    for (i, base) in rt.settings.origins.iter().enumerate() {
        let url = match &a.origin_query {
            Some(q) => format!("{base}{}?{q}", a.origin_path),
            None => format!("{base}{}", a.origin_path),
        };
        let req = Request::new(method.clone(), url.as_str()).with_pass(true);
        match req.send(backend_name(i)) {
            Ok(resp) if !adapter::try_next_origin(resp.get_status().as_u16()) => return Some(resp),
            Ok(resp) => eprintln!("sharegate: origin {base} answered {}", resp.get_status()),
            Err(e) => eprintln!("sharegate: origin {base} failed: {e}"),
        }
    }
    None
}

/// The object for `a` through the Core Cache (`ttl` seconds for 200s; nothing else is cached, so a live segment asked for
/// early does not stay a cached 404, as on the other edges).
fn through_cache(rt: &Runtime, a: &Allow, ttl: u32) -> Option<Object> {
    let key = CacheKey::from(format!("sharegate/o{}", a.cache_key));
    let tx = match Transaction::lookup(key).execute() {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("sharegate: cache lookup failed: {e:?}");
            return fetch(rt, a, Method::GET).map(direct);
        }
    };
    if !tx.must_insert_or_update()
        && let Some(found) = tx.found()
        && let Some(meta) = Meta::decode(&found.user_metadata())
    {
        return Some((meta, Source::Cached(found)));
    }
    let Some(mut resp) = fetch(rt, a, Method::GET) else {
        let _ = tx.cancel_insert_or_update();
        return None;
    };
    let meta = Meta::of(&resp);
    let secs = match meta.status {
        200 => ttl,
        _ => {
            let _ = tx.cancel_insert_or_update();
            return Some(direct(resp));
        }
    };
    let mut body = resp.take_body();
    // The cached length must be known for ranges: from Content-Length, else by reading the body first.
    let declared = resp
        .get_header("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (length, buffered) = match declared {
        Some(n) => (n, None),
        None => {
            let mut all = Vec::new();
            body.read_to_end(&mut all).ok()?;
            (all.len() as u64, Some(all))
        }
    };
    let inserted = tx
        .insert(Duration::from_secs(u64::from(secs)))
        .surrogate_keys(a.cache_tags.iter().map(String::as_str))
        .user_metadata(meta.encode())
        .known_length(length)
        .execute_and_stream_back();
    let (mut writer, found) = match inserted {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sharegate: cache insert failed: {e:?}");
            let body = match buffered {
                Some(all) => Body::from(all),
                None => body,
            };
            return Some((meta, Source::Direct(body)));
        }
    };
    let copied = match buffered {
        Some(all) => writer.write_all(&all).map(|()| all.len() as u64),
        None => std::io::copy(&mut body, &mut writer),
    };
    // An origin that breaks off mid-body: the unfinished object is dropped, never served.
    match copied {
        Ok(n) if n == length => writer.finish().ok()?,
        Ok(n) => {
            eprintln!("sharegate: origin sent {n} of {length} bytes");
            return None;
        }
        Err(e) => {
            eprintln!("sharegate: origin body failed: {e}");
            return None;
        }
    }
    Some((meta, Source::Cached(found)))
}

/// The engine's answer to an origin failure.
fn failure(f: &OriginFailure) -> Response {
    let mut r = Response::from_status(f.status)
        .with_body(f.body)
        .with_header("content-type", "application/json");
    set_headers(&mut r, &f.headers);
    r
}

/// The response to an allowed request: the object (cached or not), its playlist rewritten, a byte range cut, an
/// empty body for HEAD, and the headers every adapter sets.
pub fn serve(rt: &Runtime, a: &Allow, now: u64, head: bool, range: Option<&str>) -> Response {
    // Blocking LL-HLS reloads (kept `_HLS_` directives) are per request by nature: not cached, as on the other edges.
    let ttl = if a.origin_query.is_some() {
        0
    } else if a.playlist.is_some() || !a.shared_cacheable {
        rt.settings.playlist_ttl
    } else {
        rt.settings.segment_ttl
    };
    let object = if ttl == 0 {
        // Caching off: ask the origin with the client's method.
        let method = if head { Method::HEAD } else { Method::GET };
        fetch(rt, a, method).map(direct)
    } else {
        through_cache(rt, a, ttl)
    };
    let Some(object) = object else {
        return failure(&a.origin_unavailable(rt.engine.config().reason_header));
    };
    let (meta, source) = object;
    let is_playlist = matches!(a.resource, Resource::MultivariantPlaylist | Resource::MediaPlaylist);
    let mut status = meta.status;
    let mut content_range = None;
    let body: Option<Body> = match (status, &a.playlist, range, source) {
        (200, Some(plan), _, source) => {
            let bytes = match source {
                Source::Cached(found) => found.to_stream().ok().map(Body::into_bytes),
                // HEAD with caching off: the origin sent no body to rewrite, and none is owed.
                Source::Direct(_) if head => Some(Vec::new()),
                Source::Direct(b) => Some(b.into_bytes()),
            };
            let text = bytes.and_then(|b| String::from_utf8(b).ok());
            match text.and_then(|t| rt.engine.rewrite_playlist(plan, &t, now).ok()) {
                Some(t) => Some(Body::from(t)),
                None => return failure(&a.bad_playlist()),
            }
        }
        // A single byte range of a 200: cut from the cached object (caching off: from the body).
        (200, None, Some(range), source) if !is_playlist => {
            let (len, bytes, found) = match source {
                Source::Cached(found) => (found.known_length().unwrap_or(0), Vec::new(), Some(found)),
                Source::Direct(b) => {
                    let all = b.into_bytes();
                    (all.len() as u64, all, None)
                }
            };
            match (adapter::parse_range(range, len), found) {
                (None, Some(found)) => found.to_stream().ok(),
                (None, None) => Some(Body::from(bytes)),
                (Some(Ok((s, e))), found) => {
                    status = 206;
                    content_range = Some(format!("bytes {s}-{e}/{len}"));
                    match found {
                        Some(found) => found.to_stream_from_range(Some(s), Some(e)).ok(),
                        None => bytes.get(s as usize..=e as usize).map(|b| Body::from(b.to_vec())),
                    }
                }
                (Some(Err(())), _) => {
                    let mut r = Response::from_status(416);
                    set_headers(&mut r, &a.headers);
                    r.set_header("content-range", format!("bytes */{len}"));
                    return r;
                }
            }
        }
        (_, _, _, Source::Cached(found)) => found.to_stream().ok(),
        (_, _, _, Source::Direct(b)) => Some(b),
    };
    let mut r = Response::from_status(status);
    if !head && let Some(b) = body {
        r.set_body(b);
    }
    if let Some(ct) = &meta.content_type {
        r.set_header("content-type", ct);
    }
    r.set_header("accept-ranges", "bytes");
    if let Some(cr) = content_range {
        r.set_header("content-range", cr);
    }
    if let Some(cc) = a.cache_control(meta.cache_control.as_deref()) {
        r.set_header("cache-control", cc);
    }
    if !a.cache_tags.is_empty() {
        // Fastly's purge key list (space separated): the same keys are on the cached object.
        r.set_header("surrogate-key", a.cache_tags.join(" "));
    }
    set_headers(&mut r, &a.headers);
    r
}

#[cfg(test)]
mod tests {
    use super::Meta;

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            status: 404,
            content_type: Some("video/mp2t".into()),
            cache_control: None,
        };
        let d = Meta::decode(&m.encode()).expect("decodes");
        assert_eq!(
            (d.status, d.content_type.as_deref(), d.cache_control),
            (404, Some("video/mp2t"), None)
        );
        assert!(Meta::decode(b"nope").is_none());
    }
}
