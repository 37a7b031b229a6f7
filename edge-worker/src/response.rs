//! The answer to an allowed request, planned once for every adapter: which origin URL to fetch, when to try the next
//! origin, what the CDN may keep and how long, and then, from the origin's answer, the status, every header and
//! what becomes of the body (sent whole, a byte range cut from it, a playlist rewritten, or nothing).
//!
//! An adapter does only the I/O around it:
//!
//! 1. [`Allow::origin_url`] for each configured origin in order, sending [`Allow::origin_range`] along if the
//!    runtime lets its cache answer ranges; [`try_next_origin`] says when to move on. [`Allow::cdn_ttl`] is how long
//!    the CDN may keep the object (`None`: not at all).
//! 2. [`Allow::respond`] with the client's method and `Range` ([`ClientAsk`]) and the origin's answer
//!    ([`OriginAnswer`]) gives a [`ResponsePlan`].
//! 3. Set the plan's status and headers (in order: a later one replaces an earlier one of the same name), then move
//!    the bytes as [`BodyPlan`] says; for [`BodyPlan::Rewrite`], [`ResponsePlan::finish_rewrite`] gives the bytes to
//!    send (and on HEAD only their length, as a header).
//!
//! The rules, after RFC 9110: a `Range` is honoured on GET only (§14.2: a server ignores it on other methods, so
//! HEAD with `Range` is a 200 with the whole length), for a single satisfiable range of a 200 that is not a playlist
//! (playlists are rewritten whole); an unsatisfiable one is a 416 with `Content-Range: bytes */<length>` (§15.5.17).
//! HEAD carries the `Content-Length` a GET would (§9.3.2), a rewritten playlist's included. Whether a body is a
//! playlist is the engine's resource classification, nothing else.

use crate::contract::bodies as names_bodies;
use crate::contract::headers as names;
use crate::engine::{Allow, Engine, HeaderValue, Headers, OriginFailure, PlaylistPlan};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use sharegate_shared::token::Resource;

/// How the CDN takes purge tags on a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagHeader {
    /// Cloudflare: `Cache-Tag`, comma separated.
    CacheTag,
    /// Fastly (and the native edge): `Surrogate-Key`, space separated.
    SurrogateKey,
}

/// What the client asked for, beyond what the engine decided on.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAsk<'a> {
    /// The method is HEAD (no body is sent).
    pub head: bool,
    /// The `Range` header, if any.
    pub range: Option<&'a str>,
}

/// What the origin (or the CDN's cache in front of it) answered.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginAnswer<'a> {
    /// HTTP status.
    pub status: u16,
    /// Length of the body in bytes, when known (a whole body in hand, a cached object, a `Content-Length`).
    pub length: Option<u64>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// `Cache-Control`.
    pub cache_control: Option<&'a str>,
    /// `Content-Range` of a 206 the origin sent for a range the adapter forwarded ([`Allow::origin_range`]).
    pub content_range: Option<&'a str>,
    /// Whether the adapter can cut a byte range out of this body (it holds it, can seek it, or it is small enough
    /// to buffer). When it cannot, a range is answered with the whole body (a 200, which clients accept).
    pub sliceable: bool,
    /// Whether the adapter may read a body of unknown `length` whole (it is not kept by a cache that would know its
    /// length, and the runtime lets an instance hold it): a range over it is then planned as [`BodyPlan::Buffer`].
    pub bufferable: bool,
}

/// What to send as the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyPlan {
    /// The origin's body as it came (streamed).
    Whole,
    /// Bytes `start..=end` of the origin's body (inclusive, as `Content-Range` counts them).
    Slice {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// A playlist to rewrite: read the origin's body whole and pass it to [`ResponsePlan::finish`].
    Rewrite(Box<Rewrite>),
    /// A range over a body of unknown length: read it whole and pass it to [`ResponsePlan::finish`], which cuts
    /// the range (or answers 416) once the length is known.
    Buffer(Box<Buffer>),
    /// These bytes (a denial's or a failure's JSON body, or what [`ResponsePlan::finish`] made).
    Bytes(Vec<u8>),
    /// No body (HEAD, 416).
    Empty,
}

/// A range to cut once the body is read, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    range: String,
    /// The decision's own headers, for a 416.
    decision_headers: Headers,
}

/// A playlist rewrite, planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    plan: PlaylistPlan,
    head: bool,
    failure: OriginFailure,
}

/// The whole answer to an allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponsePlan {
    /// HTTP status.
    pub status: u16,
    /// Headers to set, in order (a later one replaces an earlier one of the same name).
    pub headers: Headers,
    /// What to send as the body.
    pub body: BodyPlan,
}

/// Whether an origin status should make the adapter try the next origin: server errors. 404s and the like are
/// answers, the same on every replica.
pub fn try_next_origin(status: u16) -> bool {
    status >= 500
}

/// A single byte range `bytes=a-b`, `bytes=a-` or `bytes=-n` over `len` bytes: `None` when the header is absent in
/// effect (not a single byte range: serve the whole body), `Some(Err(()))` when unsatisfiable (416).
pub fn parse_range(v: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let r = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            if n == 0 {
                return Some(Err(()));
            }
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    Some(if r.0 > r.1 || r.0 >= len { Err(()) } else { Ok(r) })
}

fn owned(s: &str) -> HeaderValue {
    HeaderValue::Owned(s.into())
}

impl Allow<'_> {
    /// Whether the body is a playlist (rewritten whole, never sliced, cached as a playlist).
    pub fn is_playlist(&self) -> bool {
        matches!(self.resource, Resource::MultivariantPlaylist | Resource::MediaPlaylist)
    }

    /// The URL to fetch from an origin whose base URL (no trailing `/`) is `base`: the token-free origin path and
    /// the kept LL-HLS directives.
    pub fn origin_url(&self, base: &str) -> String {
        match &self.origin_query {
            Some(q) => format!("{base}{}?{q}", self.origin_path),
            None => format!("{base}{}", self.origin_path),
        }
    }

    /// The client's range, for an adapter whose cache can answer ranges itself: only a GET of something that is not
    /// a playlist forwards one.
    pub fn origin_range<'r>(&self, ask: ClientAsk<'r>) -> Option<&'r str> {
        ask.range.filter(|_| !ask.head && !self.is_playlist())
    }

    /// How long the CDN may keep the object, seconds; `None`: not at all. Blocking LL-HLS reloads (kept `_HLS_`
    /// directives) are per request by nature; playlists and anything not shared-cacheable get `playlist_ttl` (the
    /// origin's untokenized playlist: it is rewritten per request), the rest `segment_ttl`.
    pub fn cdn_ttl(&self, segment_ttl: u32, playlist_ttl: u32) -> Option<u32> {
        if self.origin_query.is_some() {
            None
        } else if self.is_playlist() || !self.shared_cacheable {
            Some(playlist_ttl)
        } else {
            Some(segment_ttl)
        }
    }

    /// No origin answered: the engine's `503 origin_unavailable`, planned.
    pub fn unavailable(&self, reason_header: bool, ask: ClientAsk<'_>) -> ResponsePlan {
        ResponsePlan::failure(self.origin_unavailable(reason_header), ask.head)
    }

    /// Plan the answer from the origin's.
    pub fn respond(&self, ask: ClientAsk<'_>, origin: &OriginAnswer<'_>, tags: TagHeader) -> ResponsePlan {
        let mut status = origin.status;
        let mut content_range = origin.content_range.filter(|_| status == 206).map(owned);
        // The engine plans a rewrite for every playlist it allows (and only for those).
        let body = if origin.status == 200
            && let Some(plan) = &self.playlist
        {
            BodyPlan::Rewrite(Box::new(Rewrite {
                plan: (**plan).clone(),
                head: ask.head,
                failure: self.bad_playlist(),
            }))
        } else if ask.head {
            BodyPlan::Empty
        } else {
            let range = ask
                .range
                .filter(|_| origin.status == 200 && origin.sliceable && !self.is_playlist());
            if let Some(r) = range.filter(|_| origin.length.is_none() && origin.bufferable) {
                BodyPlan::Buffer(Box::new(Buffer {
                    range: r.into(),
                    decision_headers: self.headers.to_vec(),
                }))
            } else {
                match range
                    .zip(origin.length)
                    .and_then(|(r, len)| Some((parse_range(r, len)?, len)))
                {
                    Some((Ok((start, end)), len)) => {
                        status = 206;
                        content_range = Some(HeaderValue::Owned(format!("bytes {start}-{end}/{len}")));
                        BodyPlan::Slice { start, end }
                    }
                    Some((Err(()), len)) => return unsatisfiable(self.headers, len),
                    None => BodyPlan::Whole,
                }
            }
        };
        let mut headers = Vec::with_capacity(self.headers.len() + 6);
        if let Some(ct) = origin.content_type {
            headers.push(("content-type", owned(ct)));
        }
        // HEAD says how long the body would be; a rewritten playlist's length is known once it is rewritten.
        if ask.head
            && !matches!(body, BodyPlan::Rewrite(_))
            && let Some(len) = origin.length
        {
            headers.push(("content-length", HeaderValue::Owned(format!("{len}"))));
        }
        headers.push(("accept-ranges", HeaderValue::Static("bytes")));
        if let Some(cr) = content_range {
            headers.push(("content-range", cr));
        }
        match self.cache_control(origin.cache_control) {
            Some(crate::engine::DEFAULT_SHARED_CACHE_CONTROL) => headers.push((
                "cache-control",
                HeaderValue::Static(crate::engine::DEFAULT_SHARED_CACHE_CONTROL),
            )),
            Some(cc) => headers.push(("cache-control", owned(cc))),
            None => {}
        }
        if !self.cache_tags.is_empty() {
            let (name, sep) = match tags {
                TagHeader::CacheTag => (names::CACHE_TAG, ","),
                TagHeader::SurrogateKey => (names::SURROGATE_KEY, " "),
            };
            headers.push((name, HeaderValue::Owned(self.cache_tags.join(sep))));
        }
        headers.extend(self.headers.iter().cloned());
        ResponsePlan { status, headers, body }
    }
}

/// A 416 for a body of `len` bytes: the decision's headers and `Content-Range: bytes */<len>` (RFC 9110 §15.5.17).
fn unsatisfiable(decision_headers: &[(&'static str, HeaderValue)], len: u64) -> ResponsePlan {
    let mut headers = decision_headers.to_vec();
    headers.push(("content-range", HeaderValue::Owned(format!("bytes */{len}"))));
    ResponsePlan {
        status: 416,
        headers,
        body: BodyPlan::Empty,
    }
}

/// What an adapter does with a decision: send a planned answer, or fetch the object and ask [`Allow::respond`].
// Not boxed: an allowed request is the hot path, and boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Step<'a> {
    /// Send this (a preflight, a denial).
    Answer(ResponsePlan),
    /// Fetch from the origin, then plan with [`Allow::respond`].
    Fetch(Allow<'a>),
}

/// Plan the answer to a decision, and take out the event to report (adapters record it before any I/O).
pub fn plan<'a>(decision: crate::Decision<'a>, ask: ClientAsk<'_>) -> (Step<'a>, Option<crate::events::Event>) {
    match decision {
        crate::Decision::Preflight(headers) => (Step::Answer(ResponsePlan::preflight(headers)), None),
        crate::Decision::Deny(mut d) => {
            let event = d.event.take().map(|e| *e);
            (Step::Answer(ResponsePlan::denied(d, ask.head)), event)
        }
        crate::Decision::Allow(mut a) => {
            let event = a.event.take().map(|e| *e);
            (Step::Fetch(a), event)
        }
    }
}

/// A JSON answer: `headers` with `Content-Type` first (so a decision header could still replace it), the body, or on
/// HEAD no body and the length a GET would have (RFC 9110 §9.3.2).
fn json(status: u16, mut headers: Headers, body: Vec<u8>, head: bool) -> ResponsePlan {
    if !headers.iter().any(|(k, _)| *k == "content-type") {
        headers.insert(0, ("content-type", HeaderValue::Static("application/json")));
    }
    let body = if head {
        headers.push(("content-length", HeaderValue::Owned(format!("{}", body.len()))));
        BodyPlan::Empty
    } else {
        BodyPlan::Bytes(body)
    };
    ResponsePlan { status, headers, body }
}

impl ResponsePlan {
    /// A CORS preflight: 204 with the engine's headers.
    pub fn preflight(headers: Headers) -> Self {
        ResponsePlan {
            status: 204,
            headers,
            body: BodyPlan::Empty,
        }
    }

    /// A denial: its status, headers and JSON body (none on HEAD).
    pub fn denied(d: crate::engine::Deny, head: bool) -> Self {
        json(d.status, d.headers, d.body.into_bytes(), head)
    }

    /// An origin failure (no origin answered, a playlist that cannot be rewritten).
    pub fn failure(f: OriginFailure, head: bool) -> Self {
        json(f.status, f.headers, f.body.as_bytes().to_vec(), head)
    }

    /// A setting could not be parsed: 500 `edge_misconfigured`, the edge serves nothing.
    pub fn misconfigured(head: bool) -> Self {
        json(500, Vec::new(), names_bodies::MISCONFIGURED.as_bytes().to_vec(), head)
    }

    /// For [`BodyPlan::Rewrite`] and [`BodyPlan::Buffer`]: the origin's whole `body`, read. The plan becomes the
    /// answer to send: its body [`BodyPlan::Bytes`] (the rewritten playlist, the cut range, or the body whole when the
    /// range is not one to honour), [`BodyPlan::Empty`] on HEAD or a 416, or the engine's `502 bad_playlist`. Other
    /// plans are left as they are.
    pub fn finish(&mut self, engine: &Engine, body: Vec<u8>, now: u64) {
        let head = matches!(&self.body, BodyPlan::Rewrite(r) if r.head);
        match &self.body {
            BodyPlan::Rewrite(_) => match self.finish_rewrite(engine, &body, now) {
                Ok(_) if head => self.body = BodyPlan::Empty,
                Ok(out) => self.body = BodyPlan::Bytes(out),
                Err(f) => *self = ResponsePlan::failure(f, head),
            },
            BodyPlan::Buffer(b) => {
                let len = body.len() as u64;
                match parse_range(&b.range, len) {
                    Some(Ok((start, end))) => {
                        self.status = 206;
                        self.headers.push((
                            "content-range",
                            HeaderValue::Owned(format!("bytes {start}-{end}/{len}")),
                        ));
                        let cut = usize::try_from(start).ok().zip(usize::try_from(end).ok());
                        let part = cut.and_then(|(s, e)| body.get(s..=e)).map(<[u8]>::to_vec);
                        self.body = BodyPlan::Bytes(part.unwrap_or(body));
                    }
                    Some(Err(())) => *self = unsatisfiable(&b.decision_headers, len),
                    None => self.body = BodyPlan::Bytes(body),
                }
            }
            _ => {}
        }
    }

    /// Whether the adapter must read the origin's body whole and call [`ResponsePlan::finish`] before sending.
    pub fn needs_body(&self) -> bool {
        matches!(self.body, BodyPlan::Rewrite(_) | BodyPlan::Buffer(_))
    }

    /// For [`BodyPlan::Rewrite`]: rewrite the origin's playlist `body` at `now` and return the bytes to send (none
    /// on HEAD, which gets the rewritten length as `Content-Length` instead). A body that is not a playlist the engine
    /// can rewrite is the engine's `502 bad_playlist`, returned as the answer to send instead. For any other body
    /// plan the origin's bytes come back unchanged.
    pub fn finish_rewrite(&mut self, engine: &Engine, body: &[u8], now: u64) -> Result<Vec<u8>, OriginFailure> {
        let BodyPlan::Rewrite(r) = &self.body else {
            return Ok(body.to_vec());
        };
        let text = core::str::from_utf8(body).map_err(|_| r.failure.clone())?;
        let out = engine
            .rewrite_playlist(&r.plan, text, now)
            .map_err(|_| r.failure.clone())?;
        if r.head {
            self.headers
                .push(("content-length", HeaderValue::Owned(format!("{}", out.len()))));
            return Ok(Vec::new());
        }
        Ok(out.into_bytes())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::EdgeConfig;
    use crate::engine::{Decision, Request, Revocations, StateInput};
    use alloc::string::ToString;
    use sharegate_shared::revocation::{Revoked, Subject};
    use sharegate_shared::token::{Claims, Permissions, Text};

    struct Nothing;
    impl Revocations for Nothing {
        fn check(&self, _: &Subject<'_>) -> Revoked {
            Revoked::No
        }
    }

    const NOW: u64 = 1_900_000_100;

    fn engine() -> Engine {
        let keys = "1:active:1111111111111111111111111111111111111111111111111111111111111111";
        let src: &[(&str, &str)] = &[(crate::config::keys::SIGNING_KEYS, keys)];
        Engine::new(EdgeConfig::from_source(&src).unwrap())
    }

    /// The engine's decision for `path` (a valid path token for asset `demo`, share `sh`).
    fn allow<'a>(engine: &'a Engine, path: &str, method: &'a str) -> Allow<'a> {
        let claims = Claims {
            token_id: [7; 12],
            iat: 1_900_000_000,
            nbf: 1_900_000_000,
            exp: 1_900_003_600,
            permissions: Permissions::PLAYBACK,
            asset: Some(Text::from("demo")),
            share: Some(Text::from("sh")),
            ..Claims::default()
        };
        let token = sharegate_shared::token::Minter::new(&engine.config().keys, engine.config().policy)
            .unwrap()
            .mint(&claims)
            .unwrap();
        // Leaked: the decision borrows the request's path, and each test makes a handful.
        let full: &'a str = Box::leak(alloc::format!("/t/{token}{path}").into_boxed_str());
        let req = Request {
            method,
            host: "edge.example",
            path: full,
            ..Request::default()
        };
        match engine.decide(&req, NOW, StateInput::fresh(&Nothing)) {
            Decision::Allow(a) => a,
            d => panic!("{d:?}"),
        }
    }

    fn origin(status: u16, length: u64) -> OriginAnswer<'static> {
        OriginAnswer {
            status,
            length: Some(length),
            content_type: Some("video/mp2t"),
            cache_control: None,
            content_range: None,
            sliceable: true,
            bufferable: false,
        }
    }

    fn header<'p>(p: &'p ResponsePlan, name: &str) -> Option<&'p str> {
        p.headers.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| &**v)
    }

    fn get(range: Option<&str>) -> ClientAsk<'_> {
        ClientAsk { head: false, range }
    }

    fn head(range: Option<&str>) -> ClientAsk<'_> {
        ClientAsk { head: true, range }
    }

    #[test]
    fn a_whole_segment() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let p = a.respond(get(None), &origin(200, 100), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (200, &BodyPlan::Whole));
        assert_eq!(header(&p, "content-type"), Some("video/mp2t"));
        assert_eq!(header(&p, "accept-ranges"), Some("bytes"));
        assert_eq!(
            header(&p, "cache-control"),
            Some(crate::engine::DEFAULT_SHARED_CACHE_CONTROL)
        );
        assert_eq!(header(&p, "surrogate-key"), Some("sg-asset-demo sg-share-sh"));
        assert_eq!(header(&p, "access-control-allow-origin"), Some("*"));
        // A GET's length is the runtime's to write from the body it sends.
        assert_eq!(header(&p, "content-length"), None);
        let p = a.respond(get(None), &origin(200, 100), TagHeader::CacheTag);
        assert_eq!(header(&p, "cache-tag"), Some("sg-asset-demo,sg-share-sh"));
        let with_cc = OriginAnswer {
            cache_control: Some("public, max-age=60"),
            ..origin(200, 100)
        };
        let p = a.respond(get(None), &with_cc, TagHeader::CacheTag);
        assert_eq!(header(&p, "cache-control"), Some("public, max-age=60"));
    }

    #[test]
    fn ranges_on_get() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let p = a.respond(get(Some("bytes=0-9")), &origin(200, 100), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (206, &BodyPlan::Slice { start: 0, end: 9 }));
        assert_eq!(header(&p, "content-range"), Some("bytes 0-9/100"));
        let p = a.respond(get(Some("bytes=-10")), &origin(200, 100), TagHeader::SurrogateKey);
        assert_eq!(p.body, BodyPlan::Slice { start: 90, end: 99 });
        // Not a single byte range: the whole body.
        let p = a.respond(get(Some("bytes=0-1,5-6")), &origin(200, 100), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (200, &BodyPlan::Whole));
        // A body the adapter cannot cut, or of unknown length: the whole body, 200.
        let big = OriginAnswer {
            sliceable: false,
            ..origin(200, 100)
        };
        let p = a.respond(get(Some("bytes=0-9")), &big, TagHeader::SurrogateKey);
        assert_eq!(
            (p.status, &p.body, header(&p, "content-range")),
            (200, &BodyPlan::Whole, None)
        );
        let unknown = OriginAnswer {
            length: None,
            ..origin(200, 100)
        };
        let p = a.respond(get(Some("bytes=0-9")), &unknown, TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (200, &BodyPlan::Whole));
        // Only a 200 is cut.
        let p = a.respond(get(Some("bytes=0-9")), &origin(404, 0), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (404, &BodyPlan::Whole));
    }

    #[test]
    fn an_unsatisfiable_range_is_416_with_the_length() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let p = a.respond(get(Some("bytes=100-")), &origin(200, 100), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (416, &BodyPlan::Empty));
        assert_eq!(header(&p, "content-range"), Some("bytes */100"));
        assert_eq!(header(&p, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&p, "accept-ranges"), None);
    }

    #[test]
    fn head_ignores_range_and_says_the_length() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "HEAD");
        for range in [None, Some("bytes=0-9"), Some("bytes=500-")] {
            let p = a.respond(head(range), &origin(200, 100), TagHeader::SurrogateKey);
            assert_eq!((p.status, &p.body), (200, &BodyPlan::Empty), "{range:?}");
            assert_eq!(header(&p, "content-length"), Some("100"));
            assert_eq!(header(&p, "content-range"), None);
        }
        assert_eq!(a.origin_range(head(Some("bytes=0-9"))), None);
        assert_eq!(a.origin_range(get(Some("bytes=0-9"))), Some("bytes=0-9"));
    }

    #[test]
    fn playlists_are_rewritten_whole_and_head_gets_the_rewritten_length() {
        let e = engine();
        let a = allow(&e, "/demo/master.m3u8", "GET");
        assert!(a.is_playlist());
        assert_eq!(a.origin_range(get(Some("bytes=0-9"))), None);
        let body = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n/demo/v0/index.m3u8\n";
        let o = OriginAnswer {
            content_type: Some("application/vnd.apple.mpegurl"),
            ..origin(200, body.len() as u64)
        };
        let mut p = a.respond(get(Some("bytes=0-9")), &o, TagHeader::SurrogateKey);
        assert_eq!(p.status, 200);
        assert!(matches!(p.body, BodyPlan::Rewrite(_)));
        assert_eq!(header(&p, "cache-control"), Some("private, max-age=2"));
        let sent = p.finish_rewrite(&e, body, NOW).unwrap();
        let text = core::str::from_utf8(&sent).unwrap();
        assert!(text.contains("/t/"), "{text}");

        let mut h = a.respond(head(Some("bytes=0-9")), &o, TagHeader::SurrogateKey);
        assert_eq!(header(&h, "content-length"), None);
        assert_eq!(h.finish_rewrite(&e, body, NOW).unwrap(), Vec::<u8>::new());
        assert_eq!(header(&h, "content-length"), Some(sent.len().to_string().as_str()));

        let bad = p.finish_rewrite(&e, b"\xff\xfe", NOW).unwrap_err();
        assert_eq!(bad.status, 502);
        // A playlist the origin does not have is passed on, not rewritten.
        let p = a.respond(get(None), &origin(404, 0), TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body), (404, &BodyPlan::Whole));
    }

    #[test]
    fn a_range_over_a_body_of_unknown_length_is_cut_once_read() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let unknown = OriginAnswer {
            length: None,
            bufferable: true,
            ..origin(200, 0)
        };
        let body: Vec<u8> = (0..100).collect();
        let mut p = a.respond(get(Some("bytes=10-19")), &unknown, TagHeader::SurrogateKey);
        assert!(p.needs_body() && matches!(p.body, BodyPlan::Buffer(_)));
        p.finish(&e, body.clone(), NOW);
        assert_eq!((p.status, &p.body), (206, &BodyPlan::Bytes((10..20).collect())));
        assert_eq!(header(&p, "content-range"), Some("bytes 10-19/100"));
        let mut p = a.respond(get(Some("bytes=100-")), &unknown, TagHeader::SurrogateKey);
        p.finish(&e, body.clone(), NOW);
        assert_eq!((p.status, &p.body), (416, &BodyPlan::Empty));
        assert_eq!(header(&p, "content-range"), Some("bytes */100"));
        let mut p = a.respond(get(Some("bytes=0-1,5-6")), &unknown, TagHeader::SurrogateKey);
        p.finish(&e, body.clone(), NOW);
        assert_eq!((p.status, &p.body), (200, &BodyPlan::Bytes(body)));
        // Without a range, or on HEAD, nothing is read.
        let p = a.respond(get(None), &unknown, TagHeader::SurrogateKey);
        assert_eq!((p.status, &p.body, p.needs_body()), (200, &BodyPlan::Whole, false));
        let p = a.respond(head(Some("bytes=0-9")), &unknown, TagHeader::SurrogateKey);
        assert_eq!((&p.body, header(&p, "content-length")), (&BodyPlan::Empty, None));
    }

    #[test]
    fn denials_and_failures_are_planned_whole() {
        let e = engine();
        let req = Request {
            method: "GET",
            host: "edge.example",
            path: "/t/nope/demo/v0/seg_1.ts",
            ..Request::default()
        };
        let d = e.decide(&req, NOW, StateInput::fresh(&Nothing));
        let ask = |head| ClientAsk { head, range: None };
        let Step::Answer(p) = plan(d.clone(), ask(false)).0 else {
            panic!("{d:?}")
        };
        let BodyPlan::Bytes(body) = &p.body else {
            panic!("{p:?}")
        };
        assert!(p.status >= 400 && header(&p, "content-type") == Some("application/json"));
        assert_eq!(header(&p, "content-length"), None);
        let Step::Answer(h) = plan(d, ask(true)).0 else {
            panic!()
        };
        assert_eq!((h.status, &h.body), (p.status, &BodyPlan::Empty));
        assert_eq!(header(&h, "content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(p.headers.iter().filter(|(k, _)| *k == "content-type").count(), 1);

        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let f = a.unavailable(true, ask(false));
        assert_eq!(f.status, 503);
        assert_eq!(header(&f, "content-type"), Some("application/json"));
        assert_eq!(header(&f, "cache-control"), Some("no-store"));
        assert_eq!(
            f.body,
            BodyPlan::Bytes(crate::contract::bodies::ORIGIN_UNAVAILABLE.into())
        );
        let f = a.unavailable(true, ask(true));
        assert_eq!(f.body, BodyPlan::Empty);
        assert_eq!(
            header(&f, "content-length"),
            Some(crate::contract::bodies::ORIGIN_UNAVAILABLE.len().to_string().as_str())
        );
        let m = ResponsePlan::misconfigured(false);
        assert_eq!((m.status, header(&m, "content-type")), (500, Some("application/json")));
        // A playlist that cannot be rewritten becomes the engine's 502, with its content type.
        let pl = allow(&e, "/demo/master.m3u8", "GET");
        let mut p = pl.respond(get(None), &origin(200, 2), TagHeader::SurrogateKey);
        p.finish(&e, b"\xff\xfe".to_vec(), NOW);
        assert_eq!((p.status, header(&p, "content-type")), (502, Some("application/json")));
        let Step::Answer(pf) = plan(Decision::Preflight(Vec::new()), ask(false)).0 else {
            panic!()
        };
        assert_eq!((pf.status, pf.body), (204, BodyPlan::Empty));
    }

    #[test]
    fn a_range_the_origin_answered_passes_through() {
        let e = engine();
        let a = allow(&e, "/demo/v0/seg_1.ts", "GET");
        let o = OriginAnswer {
            status: 206,
            content_range: Some("bytes 0-9/100"),
            sliceable: false,
            ..origin(206, 10)
        };
        let p = a.respond(get(Some("bytes=0-9")), &o, TagHeader::CacheTag);
        assert_eq!((p.status, &p.body), (206, &BodyPlan::Whole));
        assert_eq!(header(&p, "content-range"), Some("bytes 0-9/100"));
    }

    #[test]
    fn origin_urls_ttls_and_failover() {
        let e = engine();
        let seg = allow(&e, "/demo/v0/seg_1.ts", "GET");
        assert_eq!(
            seg.origin_url("https://o.example"),
            "https://o.example/demo/v0/seg_1.ts"
        );
        assert_eq!(seg.cdn_ttl(86_400, 1), Some(86_400));
        let pl = allow(&e, "/demo/v0/index.m3u8", "GET");
        assert_eq!(pl.cdn_ttl(86_400, 1), Some(1));
        let mut ll = pl.clone();
        ll.origin_query = Some("_HLS_msn=3".into());
        assert_eq!(ll.origin_url("http://o"), "http://o/demo/v0/index.m3u8?_HLS_msn=3");
        assert_eq!(ll.cdn_ttl(86_400, 1), None);
        assert!(try_next_origin(500) && try_next_origin(503));
        assert!(!try_next_origin(404) && !try_next_origin(200));
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 9))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=-10", 100), Some(Ok((90, 99))));
        assert_eq!(parse_range("bytes=0-1000", 100), Some(Ok((0, 99))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=5-1", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }
}
