//! Allowed requests: the origin, through the POP's Core Cache, without the token; the engine plans the answer.
//!
//! Objects are cached under `sharegate/o<cache key>` (the engine's cache key: origin path plus kept LL-HLS
//! directives, never a token) for the engine's `cdn_ttl`, with the engine's cache tags as surrogate keys, so the
//! control plane's purge by `sg-asset-…`/`sg-share-…` reaches them; status and headers ride in the object's user
//! metadata. Concurrent misses collapse onto one origin fetch. The origin fetch itself is `pass`, so Fastly's
//! readthrough cache keeps no second copy. Origins are tried in order (backends `origin_0`, `origin_1`, …); the
//! engine's `try_next_origin` says when to go on. The answer (status, headers, whole body, a byte range, a rewritten
//! playlist or none) is `Allow::respond`'s; this module only moves the bytes.

use crate::{Runtime, set_headers};
use fastly::cache::core::{CacheKey, Found, Transaction};
use fastly::http::FramingHeadersMode;
use fastly::http::body::StreamingBody;
use fastly::{Body, Request, Response};
use sharegate_edge::contract::fastly::origin_backend;
use sharegate_edge::engine::Allow;
use sharegate_edge::response::{BodyPlan, ClientAsk, OriginAnswer, ResponsePlan, TagHeader, try_next_origin};
use std::io::{Read, Write};
use std::time::Duration;

/// What the origin answered, as cached: status and the headers we pass on.
struct Meta {
    status: u16,
    content_type: Option<String>,
    cache_control: Option<String>,
    /// The origin's `Content-Length` (not cached: a cached object knows its own length).
    length: Option<u64>,
}

impl Meta {
    fn of(resp: &Response) -> Meta {
        let h = |name: &str| resp.get_header(name).and_then(|v| v.to_str().ok());
        Meta {
            status: resp.get_status().as_u16(),
            content_type: h("content-type").map(str::to_string),
            cache_control: h("cache-control").map(str::to_string),
            length: h("content-length").and_then(|v| v.parse().ok()),
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
            length: None,
        })
    }
}

/// Where an object's body comes from: the cache, or straight from the origin (not cacheable, or caching off).
pub enum Source {
    Cached(Found),
    Direct(Body),
}

impl Source {
    /// The length, when known without reading the body.
    fn length(&self, meta: &Meta) -> Option<u64> {
        match self {
            Source::Cached(found) => found.known_length(),
            Source::Direct(_) => meta.length,
        }
    }

    /// The whole body, streamed.
    fn whole(self) -> Option<Body> {
        match self {
            Source::Cached(found) => found.to_stream().ok(),
            Source::Direct(body) => Some(body),
        }
    }

    /// Bytes `start..=end`: read from the cached object in place, or cut from the origin's body.
    fn slice(self, start: u64, end: u64) -> Option<Body> {
        match self {
            Source::Cached(found) => found.to_stream_from_range(Some(start), Some(end)).ok(),
            Source::Direct(body) => {
                let all = body.into_bytes();
                let (s, e) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
                all.get(s..=e).map(|part| Body::from(part.to_vec()))
            }
        }
    }

    /// The whole body in memory (playlists, and ranges over an uncached body of unknown length).
    fn bytes(self) -> Vec<u8> {
        self.whole().map(Body::into_bytes).unwrap_or_default()
    }
}

/// An origin object to answer from.
type Object = (Meta, Source);

fn direct(mut resp: Response) -> Object {
    (Meta::of(&resp), Source::Direct(resp.take_body()))
}

/// GET `a` from the origins in order. `None` when none answered with something other than a server error. (Always
/// GET, HEAD included: a HEAD states the GET's length, a playlist's rewritten one too.)
fn fetch(rt: &Runtime, a: &Allow) -> Option<Response> {
    for (i, base) in rt.settings.origins.iter().enumerate() {
        let req = Request::get(a.origin_url(base)).with_pass(true);
        match req.send(origin_backend(i)) {
            Ok(resp) if !try_next_origin(resp.get_status().as_u16()) => return Some(resp),
            Ok(resp) => eprintln!("sharegate: origin {base} answered {}", resp.get_status()),
            Err(e) => eprintln!("sharegate: origin {base} failed: {e}"),
        }
    }
    None
}

/// The object for `a` through the Core Cache (`ttl` seconds for 200s; nothing else is cached, so a live segment asked
/// for early does not stay a cached 404, as on the other edges).
fn through_cache(rt: &Runtime, a: &Allow, ttl: u32) -> Option<Object> {
    let key = CacheKey::from(format!("sharegate/o{}", a.cache_key()));
    let tx = match Transaction::lookup(key).execute() {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("sharegate: cache lookup failed: {e:?}");
            return fetch(rt, a).map(direct);
        }
    };
    if !tx.must_insert_or_update()
        && let Some(found) = tx.found()
        && let Some(meta) = Meta::decode(&found.user_metadata())
    {
        return Some((meta, Source::Cached(found)));
    }
    let Some(resp) = fetch(rt, a) else {
        let _ = tx.cancel_insert_or_update();
        return None;
    };
    if resp.get_status().as_u16() != 200 {
        let _ = tx.cancel_insert_or_update();
        return Some(direct(resp));
    }
    insert(tx, a, ttl, resp)
}

/// Insert the origin's 200 under the obligation `tx` (with the engine's tags as surrogate keys) while streaming it
/// back. The cached length must be known for ranges: from Content-Length, else by reading the body first.
fn insert(tx: Transaction, a: &Allow, ttl: u32, mut resp: Response) -> Option<Object> {
    let meta = Meta::of(&resp);
    let mut body = resp.take_body();
    let (length, buffered) = match meta.length {
        Some(n) => (n, None),
        None => {
            let mut all = Vec::new();
            body.read_to_end(&mut all).ok()?;
            (all.len() as u64, Some(all))
        }
    };
    let tags: Vec<String> = a.cache_tags.iter().collect();
    let inserted = tx
        .insert(Duration::from_secs(u64::from(ttl)))
        .surrogate_keys(tags.iter().map(String::as_str))
        .user_metadata(meta.encode())
        .known_length(length)
        .execute_and_stream_back();
    let (mut writer, found) = match inserted {
        Ok(w) => w,
        Err(e) => {
            eprintln!("sharegate: cache insert failed: {e:?}");
            return Some((meta, Source::Direct(buffered.map_or(body, Body::from))));
        }
    };
    let copied = match buffered {
        Some(all) => writer.write_all(&all).map(|()| all.len() as u64),
        None => std::io::copy(&mut body, &mut writer),
    };
    finish(writer, copied, length)?;
    Some((meta, Source::Cached(found)))
}

/// Finish the cache object once `length` bytes went in. An origin that breaks off mid-body: the unfinished object
/// is dropped, never served.
fn finish(writer: StreamingBody, copied: std::io::Result<u64>, length: u64) -> Option<()> {
    match copied {
        Ok(n) if n == length => writer.finish().ok(),
        Ok(n) => {
            eprintln!("sharegate: origin sent {n} of {length} bytes");
            None
        }
        Err(e) => {
            eprintln!("sharegate: origin body failed: {e}");
            None
        }
    }
}

/// The object for `a`: through the Core Cache, unless the engine says not to keep it.
fn object(rt: &Runtime, a: &Allow) -> Option<Object> {
    match a.cdn_ttl(rt.settings.segment_ttl, rt.settings.playlist_ttl) {
        Some(ttl) if ttl > 0 => through_cache(rt, a, ttl),
        _ => fetch(rt, a).map(direct),
    }
}

/// The response to an allowed request: fetch, ask the engine for the answer, read the body whole if the plan needs it
/// (a playlist to rewrite, a range over an uncached body of unknown length), then send.
pub fn serve(rt: &Runtime, a: &Allow, ask: ClientAsk<'_>, now: u64) -> Response {
    let Some((meta, source)) = object(rt, a) else {
        return send(a.unavailable(rt.engine.config().reason_header, ask), None);
    };
    let answer = OriginAnswer {
        status: meta.status,
        // An uncached body's Content-Length is the origin's word, not the bytes: a range over it is cut from what
        // was read (a short body then gives a short 206 or a 416, never a Content-Range over missing bytes).
        length: match (&source, ask.range) {
            (Source::Direct(_), Some(_)) if !ask.head => None,
            _ => source.length(&meta),
        },
        content_type: meta.content_type.as_deref(),
        cache_control: meta.cache_control.as_deref(),
        // No range goes to the origin: ranges are cut here, from the cached object in place.
        content_range: None,
        sliceable: true,
        // A body straight from the origin may be read whole; a cached one knows its length.
        bufferable: matches!(source, Source::Direct(_)),
    };
    let mut plan = a.respond(ask, &answer, TagHeader::SurrogateKey);
    if plan.needs_body() {
        plan.finish(&rt.engine, source.bytes(), now);
        return send(plan, None);
    }
    let mut r = send(plan, Some(source));
    // A HEAD's framing is what its headers say, even with no length known (an uncached chunked origin): Fastly
    // would otherwise frame the empty body and state a length of 0.
    if ask.head {
        r.set_framing_headers_mode(FramingHeadersMode::ManuallyFromHeaders);
    }
    r
}

/// The engine's plan as a response: its status and headers, and the body it names (`source`'s, whole or a range read
/// in place).
pub fn send(plan: ResponsePlan, source: Option<Source>) -> Response {
    let body = match plan.body {
        BodyPlan::Whole => source.and_then(Source::whole),
        BodyPlan::Slice { start, end } => source.and_then(|s| s.slice(start, end)),
        BodyPlan::Bytes(b) => Some(Body::from(b)),
        // Rewrite and Buffer are finished before sending.
        BodyPlan::Empty | BodyPlan::Rewrite(_) | BodyPlan::Buffer(_) => None,
    };
    let mut r = Response::from_status(plan.status);
    if let Some(b) = body {
        r.set_body(b);
    }
    // The engine states a length only on HEAD (the GET's): Fastly would otherwise replace it with the empty body's.
    if plan.headers.iter().any(|(k, _)| *k == "content-length") {
        r.set_framing_headers_mode(FramingHeadersMode::ManuallyFromHeaders);
    }
    set_headers(&mut r, &plan.headers);
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
            length: None,
        };
        let d = Meta::decode(&m.encode()).expect("decodes");
        assert_eq!(
            (d.status, d.content_type.as_deref(), d.cache_control),
            (404, Some("video/mp2t"), None)
        );
        assert!(Meta::decode(b"nope").is_none());
    }
}
