//! The decision engine: one pure function from a request to allow-or-deny, shared by every adapter.
//!
//! [`Engine::decide`] takes the request's facts, `now`, the revocation state and its age, and returns a
//! [`Decision`]: allow (origin path, cache key, response headers, whether the body is a playlist to rewrite) or deny
//! (status, reason code, headers, body). [`Engine::rewrite_playlist`] then rewrites a fetched playlist body. Neither
//! does I/O, reads a clock or draws randomness, so adapters stay thin translations and every decision is
//! reproducible from the conformance suite (`tests/conformance/`).

use crate::config::{EdgeConfig, StalePolicy};
use crate::contract::{self, bodies, headers as names};
use crate::events::{Event, EventKind};
use crate::hls::{self, UriKind};
use crate::watermark;
use alloc::borrow::Cow;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::IpAddr;
use sharegate_shared::Reason;
use sharegate_shared::path::normalize_path;
use sharegate_shared::revocation::{Revoked, StateSet, StateView, Subject};
use sharegate_shared::token::{
    Claims, IpPrefix, Minter, Permissions, RequestFacts, Resource, Text, TokenBuf, Verifier,
};

/// The header that carries the reason code on denials (unless switched off).
pub const REASON_HEADER: &str = contract::headers::REASON;

/// The methods the edge serves: the `Allow` of a 405 (RFC 9110 §15.5.6 requires it) and the preflight's
/// `Access-Control-Allow-Methods`.
pub const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS";

/// A response header value: static, or shared with the engine's configuration, so a decision allocates no header
/// strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// A constant.
    Static(&'static str),
    /// A value from the configuration.
    Shared(alloc::sync::Arc<str>),
    /// A value made for this response (the origin's `Content-Type`, a `Content-Range`, the cache tags).
    Owned(String),
}

impl core::ops::Deref for HeaderValue {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            HeaderValue::Static(s) => s,
            HeaderValue::Shared(s) => s,
            HeaderValue::Owned(s) => s,
        }
    }
}

/// Response headers of a decision.
pub type Headers = Vec<(&'static str, HeaderValue)>;

/// What the engine knows about one request. Adapters fill it from their runtime's request type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The `Host` the client used (playlist URIs to this host are ours).
    pub host: &'a str,
    /// Raw path, without the query.
    pub path: &'a str,
    /// Raw query, without the `?`.
    pub query: Option<&'a str>,
    /// The `Cookie` header.
    pub cookie: Option<&'a str>,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Referer` header.
    pub referer: Option<&'a str>,
    /// Client address, from the runtime.
    pub client_ip: Option<IpAddr>,
    /// Client country (upper-case alpha-2), from the runtime's geo data.
    pub country: Option<[u8; 2]>,
    /// Where `country` is `None`: the runtime's geolocation, asked only when the token has a country rule (on Fastly
    /// the lookup is a hostcall per request, and almost no token has such a rule).
    pub country_lookup: Option<CountryLookup>,
    /// The `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` headers ([`crate::cmcd::HEADERS`]).
    pub cmcd_headers: [Option<&'a str>; 4],
}

/// A country the runtime can look up on demand: `lookup(ip)`.
#[derive(Debug, Clone, Copy)]
pub struct CountryLookup {
    /// The address to locate.
    pub ip: IpAddr,
    /// The runtime's geolocation (upper-case alpha-2, or `None` when it has no country for the address).
    pub lookup: fn(IpAddr) -> Option<[u8; 2]>,
}

impl Request<'_> {
    /// The client's country for a token with a country rule: `country`, else the lookup's answer.
    fn country_for_rule(&self) -> Option<[u8; 2]> {
        self.country
            .or_else(|| self.country_lookup.and_then(|l| (l.lookup)(l.ip)))
    }
}

/// How the token reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `/t/<token>/<asset path>` (the default).
    Path,
    /// `?<param>=<token>`.
    Query,
    /// `Cookie: <name>=<token>`.
    Cookie,
}

impl Transport {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Path => "path",
            Transport::Query => "query",
            Transport::Cookie => "cookie",
        }
    }
}

/// Anything that can say whether a verified token is revoked.
pub trait Revocations {
    /// The answer for one token.
    fn check(&self, s: &Subject<'_>) -> Revoked;
}

impl Revocations for StateSet<'_> {
    fn check(&self, s: &Subject<'_>) -> Revoked {
        self.is_revoked(s)
    }
}

impl Revocations for StateView<'_> {
    fn check(&self, s: &Subject<'_>) -> Revoked {
        self.is_revoked(s)
    }
}

/// The revocation state as the adapter holds it.
#[derive(Clone, Copy)]
pub struct StateInput<'s> {
    /// The state, if one was ever loaded and verified.
    pub state: Option<&'s dyn Revocations>,
    /// Seconds since the state was last refreshed successfully.
    pub age: u64,
}

impl<'s> StateInput<'s> {
    /// The state an adapter opened, with the age the stale policy reads: seconds since the control plane's signed
    /// `as_of` (never since the adapter or its cache got it), or unbounded without a state.
    pub fn opened(state: Option<&'s dyn Revocations>, as_of: u64, now: u64) -> Self {
        StateInput {
            age: if state.is_some() {
                now.saturating_sub(as_of)
            } else {
                u64::MAX
            },
            state,
        }
    }

    /// A fresh state.
    pub fn fresh(state: &'s dyn Revocations) -> Self {
        StateInput {
            state: Some(state),
            age: 0,
        }
    }
}

/// An allowed request. It borrows from the request and the engine (`'a`), so the allow path of a segment makes no
/// heap allocation: the origin path is the request's own (normalised) path unless a watermark variant or a
/// normalisation changed it, the cache key is the origin path unless LL-HLS directives are kept, and the cache tags
/// are materialised by the adapter only if its runtime takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow<'a> {
    /// Path to fetch from the origin: normalised, token removed, watermark variant applied.
    pub origin_path: Cow<'a, str>,
    /// LL-HLS directives kept for the origin and the cache key (`_HLS_msn=…&…`), if any.
    pub origin_query: Option<String>,
    /// What was requested.
    pub resource: Resource,
    /// Headers to set on the response (CORS, cache control for playlists): the engine's, shared by every answer.
    pub headers: &'a [(&'static str, HeaderValue)],
    /// Whether the response may be stored in a shared cache (segments: yes; tokenized playlists: no).
    pub shared_cacheable: bool,
    /// Cache tags / surrogate keys for purges.
    pub cache_tags: CacheTags<'a>,
    /// Set when the body is a playlist to rewrite with [`Engine::rewrite_playlist`].
    pub playlist: Option<alloc::boxed::Box<PlaylistPlan>>,
    /// An event to report, if any (boxed: most answers have none, and the decision stays small to move).
    pub event: Option<alloc::boxed::Box<Event>>,
}

impl Allow<'_> {
    /// The cache key: the origin path plus the kept directives. Never contains a token. Borrowed unless directives
    /// are kept.
    pub fn cache_key(&self) -> Cow<'_, str> {
        match &self.origin_query {
            Some(q) => Cow::Owned(format!("{}?{q}", self.origin_path)),
            None => Cow::Borrowed(&self.origin_path),
        }
    }
}

/// Longest share id kept inline in [`CacheTags`]; a longer one (ids may have up to 255 bytes) is allocated.
const INLINE_ID: usize = 62;

/// A share id held without allocating when it is short (every id the control plane mints is).
#[derive(Clone, PartialEq, Eq)]
enum ShareId {
    Inline(u8, [u8; INLINE_ID]),
    Heap(String),
}

impl ShareId {
    /// From UTF-8 bytes (a `&str`'s, or a claim's, which are visible ASCII): taken as bytes so the allow path does
    /// not validate UTF-8 for a tag that the adapter may never write.
    fn new(id: &[u8]) -> Self {
        match u8::try_from(id.len()) {
            Ok(n) if id.len() <= INLINE_ID => {
                let mut b = [0u8; INLINE_ID];
                // A loop, not `copy_from_slice`: a variable-length copy is a call to `memcpy`, dearer than these
                // few bytes.
                for (d, s) in b.iter_mut().zip(id) {
                    *d = *s;
                }
                ShareId::Inline(n, b)
            }
            _ => ShareId::Heap(String::from_utf8_lossy(id).into_owned()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Copied whole from UTF-8, so always UTF-8; `unwrap_or` keeps this panic-free regardless.
            ShareId::Inline(n, b) => core::str::from_utf8(&b[..usize::from(*n)]).unwrap_or(""),
            ShareId::Heap(s) => s,
        }
    }
}

/// The purge tags of an allowed object (`docs/purge.md`): its asset's and, for a share link, its share's. Kept as
/// the ids; [`CacheTags::iter`] and [`CacheTags::join`] write the tags when an adapter needs them.
#[derive(Clone, PartialEq, Eq)]
pub struct CacheTags<'a> {
    asset: Cow<'a, str>,
    share: Option<ShareId>,
}

impl core::fmt::Debug for CacheTags<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> CacheTags<'a> {
    /// The tags of an object of `asset`, reached through `share` if any.
    pub fn new(asset: Cow<'a, str>, share: Option<&str>) -> Self {
        Self::of_bytes(asset, share.map(str::as_bytes))
    }

    /// [`CacheTags::new`] with the share id as bytes (a claim's, as the token carries it).
    fn of_bytes(asset: Cow<'a, str>, share: Option<&[u8]>) -> Self {
        CacheTags {
            asset,
            share: share.map(ShareId::new),
        }
    }

    /// No tags (an object the adapter made up, in tests).
    pub fn none() -> Self {
        CacheTags {
            asset: Cow::Borrowed(""),
            share: None,
        }
    }

    /// The tags, written (`sg-asset-<id>`, `sg-share-<id>`).
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        let asset = (!self.asset.is_empty()).then(|| contract::tags::asset(&self.asset));
        asset
            .into_iter()
            .chain(self.share.as_ref().map(|s| contract::tags::share(s.as_str())))
    }

    /// The tags joined by `sep`, in one allocation; empty when there are none.
    pub fn join(&self, sep: &str) -> String {
        let mut out = String::with_capacity(64);
        if !self.asset.is_empty() {
            out.push_str(contract::tags::ASSET_PREFIX);
            out.push_str(&self.asset);
        }
        if let Some(s) = &self.share {
            if !out.is_empty() {
                out.push_str(sep);
            }
            out.push_str(contract::tags::SHARE_PREFIX);
            out.push_str(s.as_str());
        }
        out
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.asset.is_empty() && self.share.is_none()
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// HTTP status.
    pub status: u16,
    /// Reason code.
    pub reason: Reason,
    /// Headers (CORS, no-store, the reason header).
    pub headers: Headers,
    /// JSON body.
    pub body: String,
    /// An event to report, if any (boxed: most answers have none, and the decision stays small to move).
    pub event: Option<alloc::boxed::Box<Event>>,
}

/// What to answer when the origin fails an allowed request (every adapter sends exactly this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginFailure {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: &'static str,
    /// Headers, in order (a later one replaces an earlier one of the same name).
    pub headers: Headers,
}

/// `Cache-Control` of a shared-cacheable object whose origin sent none.
pub const DEFAULT_SHARED_CACHE_CONTROL: &str = "public, max-age=86400";

impl Allow<'_> {
    /// The `Cache-Control` to send for this object, given the origin's: the origin's (or a day, public) when the
    /// object may be stored in a shared cache; `None` when the engine's own headers decide (tokenized playlists).
    pub fn cache_control<'a>(&self, origin: Option<&'a str>) -> Option<&'a str> {
        self.shared_cacheable
            .then(|| origin.unwrap_or(DEFAULT_SHARED_CACHE_CONTROL))
    }

    /// No origin answered: `503 origin_unavailable`, the decision's headers, never stored.
    pub fn origin_unavailable(&self, reason_header: bool) -> OriginFailure {
        let mut headers = self.headers.to_vec();
        if reason_header {
            headers.push((REASON_HEADER, HeaderValue::Static("origin_unavailable")));
        }
        headers.push(("cache-control", HeaderValue::Static("no-store")));
        OriginFailure {
            status: 503,
            body: bodies::ORIGIN_UNAVAILABLE,
            headers,
        }
    }

    /// The origin's playlist could not be rewritten: `502 bad_playlist`, with the decision's headers.
    pub fn bad_playlist(&self) -> OriginFailure {
        OriginFailure {
            status: 502,
            body: bodies::BAD_PLAYLIST,
            headers: self.headers.to_vec(),
        }
    }
}

/// The engine's answer.
// An allowance or a refusal (with its event) is a few hundred bytes against a preflight's header list; boxing
// either would add an allocation to every answer of its kind, and the allowed segment is the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Serve it.
    Allow(Allow<'a>),
    /// Refuse it.
    Deny(Deny),
    /// A CORS preflight: answer 204 with these headers.
    Preflight(Headers),
}

/// The claims a session token inherits: the presented token's, owned so the plan outlives the request's token
/// buffer (shared's one owned form of claims).
pub type SessionSeed = sharegate_shared::token::OwnedClaims;

/// How to rewrite a playlist body once it is fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistPlan {
    /// The playlist's public path (token removed): relative URIs resolve against it.
    pub public_path: String,
    /// Our host: absolute URIs to it are rewritten, others left alone.
    pub host: String,
    /// How the token came, and so how it is written back.
    pub transport: Transport,
    /// The token presented.
    pub token: String,
    /// Multivariant or media playlist.
    pub resource: Resource,
    /// Present when two-tier tokens are on: what session tokens inherit.
    pub session: Option<SessionSeed>,
}

fn owned(t: Option<Text<'_>>) -> Option<String> {
    t.map(|t| t.as_str().to_string())
}

/// The resource kind a normalised path names, by file name: the multivariant name, other `.m3u8` files, init
/// sections (`init*.mp4`/`*.m4i`/`init*.m4s`), content keys (`.key`), whole-file MP4 downloads, and segments.
pub fn classify(path: &str, multivariant_name: &str) -> Resource {
    // Byte scans: `/` and `.` are ASCII, so every index found is a char boundary.
    let b = path.as_bytes();
    let file = memchr::memrchr(b'/', b).map_or(path, |i| &path[i + 1..]);
    let ext = memchr::memrchr(b'.', file.as_bytes()).map_or("", |i| &file[i + 1..]);
    match ext {
        _ if file == multivariant_name => Resource::MultivariantPlaylist,
        "m3u8" | "m3u" => Resource::MediaPlaylist,
        "key" => Resource::Key,
        "m4i" => Resource::Init,
        "mp4" | "m4s" if file.starts_with("init") => Resource::Init,
        "mp4" => Resource::Download,
        _ => Resource::Segment,
    }
}

/// Split `/t/<token>/<rest>` into the token and `/<rest>`.
fn split_path_token(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/t/")?;
    // The token is ~150 characters: a vectorised search, not a loop per byte (with the two shorter scans of
    // `classify` and `plan` also vectorised, `decide` went from ~760 to ~580 ns).
    let slash = memchr::memchr(b'/', rest.as_bytes())?;
    Some((&rest[..slash], &rest[slash..]))
}

fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

fn cookie_value<'c>(cookie: Option<&'c str>, name: &str) -> Option<&'c str> {
    cookie?.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v.trim_matches('"'))
    })
}

/// LL-HLS delivery directives kept for the origin and the cache key, in a fixed order, values checked so nothing
/// else can ride along into the cache key.
fn hls_directives(query: Option<&str>) -> Option<String> {
    // Most queries (none, or a player's CMCD) hold no directive: one substring test instead of three scans. (A
    // segment whose query is CMCD alone does not get here: its flag scan said so.)
    if !query.is_some_and(|q| q.contains("_HLS_")) {
        return None;
    }
    let mut out = String::new();
    for name in ["_HLS_msn", "_HLS_part", "_HLS_skip"] {
        let Some(v) = query_param(query, name) else { continue };
        let ok = match name {
            "_HLS_skip" => v == "YES" || v == "v2",
            _ => !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()),
        };
        if ok {
            if !out.is_empty() {
                out.push('&');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(v);
        }
    }
    (!out.is_empty()).then_some(out)
}

/// The origin of the embedding page: `Origin`, else the scheme and host of `Referer`.
fn embed_origin<'r>(req: &Request<'r>) -> Option<&'r str> {
    if let Some(o) = req.origin.filter(|o| *o != "null") {
        return Some(o);
    }
    let r = req.referer?;
    let after_scheme = r.find("://")? + 3;
    let end = r[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(r.len(), |i| after_scheme + i);
    Some(&r[..end])
}

/// A phase's refusal: the whole answer, boxed so the phases' results stay small on the allowed path (a denial
/// allocates its body and headers anyway).
type Refused<'a> = alloc::boxed::Box<Decision<'a>>;

/// Where the token and the path it protects were found (phase 2 of [`Engine::decide`]).
struct Located<'r> {
    token: &'r str,
    path: alloc::borrow::Cow<'r, str>,
    transport: Transport,
    resource: Resource,
}

/// The one decision engine. Keyed once (verifier, minter), reused for every request.
#[derive(Debug, Clone)]
pub struct Engine {
    config: EdgeConfig,
    verifier: Verifier,
    minter: Option<Minter>,
    cors_origin: alloc::sync::Arc<str>,
    /// The headers of every allowed object that is not a playlist (CORS), made once.
    object_headers: Headers,
    /// The headers of every allowed playlist (CORS, private caching), made once.
    playlist_headers: Headers,
}

impl Engine {
    /// Build the engine for a configuration.
    pub fn new(config: EdgeConfig) -> Self {
        let verifier = Verifier::new(&config.keys, config.policy);
        let minter = Minter::new(&config.keys, config.policy).ok();
        let mut engine = Engine {
            cors_origin: config.cors_origin.as_str().into(),
            object_headers: Vec::new(),
            playlist_headers: Vec::new(),
            config,
            verifier,
            minter,
        };
        let mut object = Vec::with_capacity(3);
        engine.cors(&mut object);
        let mut playlist = object.clone();
        playlist.push((
            "cache-control",
            HeaderValue::Owned(format!("private, max-age={}", engine.config.playlist_max_age)),
        ));
        engine.object_headers = object;
        engine.playlist_headers = playlist;
        engine
    }

    /// The configuration in force.
    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    fn cors(&self, headers: &mut Headers) {
        headers.push((
            "access-control-allow-origin",
            HeaderValue::Shared(self.cors_origin.clone()),
        ));
        headers.push(("access-control-expose-headers", HeaderValue::Static(names::EXPOSED)));
        if self.config.cors_origin != "*" {
            headers.push(("vary", HeaderValue::Static("Origin")));
        }
    }

    fn event(&self, kind: EventKind, reason: Option<Reason>, now: u64, attr: Attr<'_, '_>) -> alloc::boxed::Box<Event> {
        let attribution = attr.resolve();
        alloc::boxed::Box::new(Event {
            kind,
            reason: reason.map(Reason::as_str),
            at: now,
            asset: attribution.asset,
            share: attribution.share,
            channel: attribution.channel,
            campaign: attribution.campaign,
            edge: self.config.edge_id.clone(),
            token: attribution.token,
            plan: attribution.plan,
            cmcd: None,
        })
    }

    fn deny<'a>(&self, reason: Reason, detail: Option<&str>, now: u64, attribution: Attr<'_, '_>) -> Decision<'a> {
        let status = reason.http_status();
        let mut headers = Vec::with_capacity(6);
        headers.push(("content-type", HeaderValue::Static("application/json")));
        headers.push(("cache-control", HeaderValue::Static("no-store")));
        if self.config.reason_header {
            headers.push((REASON_HEADER, HeaderValue::Static(reason.as_str())));
        }
        self.cors(&mut headers);
        let mut body = format!("{{\"error\":\"{}\",\"status\":{status}", reason.as_str());
        if let Some(d) = detail {
            // Details are our own static strings (scope kinds, path error codes): no escaping needed.
            body.push_str(&format!(",\"detail\":\"{d}\""));
        }
        body.push('}');
        let kind = match reason {
            Reason::Expired => EventKind::Expiry,
            Reason::StateStale => EventKind::StateStale,
            _ => EventKind::Deny,
        };
        Decision::Deny(Deny {
            status,
            reason,
            headers,
            body,
            event: Some(self.event(kind, Some(reason), now, attribution)),
        })
    }

    /// A refusal from a phase of [`Engine::decide`].
    fn refuse<'a>(&self, reason: Reason, detail: Option<&str>, now: u64, attribution: Attr<'_, '_>) -> Refused<'a> {
        alloc::boxed::Box::new(self.deny(reason, detail, now, attribution))
    }

    /// Decide one request, in the order of `docs/token-format.md`: the method, the token and path, the token's
    /// signature and claims (scope and bindings), revocation, then the plan of what to fetch and send. The event it
    /// makes, if any, carries the request's CMCD.
    pub fn decide<'a>(&'a self, req: &Request<'a>, now: u64, state: StateInput<'_>) -> Decision<'a> {
        self.decide_attached(req, now, state)
    }

    fn decide_core<'a>(&'a self, req: &Request<'a>, now: u64, state: StateInput<'_>) -> Decision<'a> {
        if let Some(answered) = self.method_phase(req, now) {
            return answered;
        }
        let found = match self.locate(req, now) {
            Ok(found) => found,
            Err(denied) => return *denied,
        };
        let mut buf = TokenBuf::new();
        // Unauthenticated: attribute to nothing, neither the path nor claims an attacker wrote. Authenticated here
        // and checked by reference below, borrowed where `authenticate` left them: moving the ~230-byte claims out
        // of its result, or through one more return, is a copy each.
        let authenticated = self.verifier.authenticate(found.token, &mut buf);
        let claims = match &authenticated {
            Ok(c) => c,
            Err(r) => return *self.refuse(*r, None, now, Attr::Nothing),
        };
        if let Err(denied) = self.verify(req, &found, claims, now) {
            return *denied;
        }
        let event = match self.revocation_phase(claims, state, now) {
            Ok(event) => event,
            Err(denied) => return *denied,
        };
        self.plan(req, found, claims, event, now)
    }

    /// The phases in order; the request's CMCD ([`crate::cmcd`]) is read only when the request may carry some and
    /// there is an event to attach it to.
    fn decide_attached<'a>(&'a self, req: &Request<'a>, now: u64, state: StateInput<'_>) -> Decision<'a> {
        let mut d = self.decide_core(req, now, state);
        let event = match &mut d {
            Decision::Allow(a) => a.event.as_mut(),
            Decision::Deny(x) => x.event.as_mut(),
            Decision::Preflight(_) => None,
        };
        if let Some(e) = event
            && crate::cmcd::maybe_present(req.query, &req.cmcd_headers)
        {
            let c = crate::cmcd::parse(req.query, &req.cmcd_headers);
            if !c.is_empty() {
                e.cmcd = Some(alloc::boxed::Box::new(c));
            }
        }
        d
    }

    /// Phase 1: the method. OPTIONS is a preflight, anything but GET/HEAD a 405 saying what is allowed; `None`:
    /// go on.
    fn method_phase<'a>(&self, req: &Request<'_>, now: u64) -> Option<Decision<'a>> {
        match req.method {
            "GET" | "HEAD" => None,
            "OPTIONS" => {
                let mut h = Vec::with_capacity(6);
                self.cors(&mut h);
                h.push(("access-control-allow-methods", HeaderValue::Static(ALLOWED_METHODS)));
                h.push(("access-control-allow-headers", HeaderValue::Static("range")));
                h.push(("access-control-max-age", HeaderValue::Static("86400")));
                Some(Decision::Preflight(h))
            }
            _ => {
                let mut d = self.deny(Reason::MethodNotAllowed, None, now, Attr::Nothing);
                if let Decision::Deny(deny) = &mut d {
                    deny.headers.push(("allow", HeaderValue::Static(ALLOWED_METHODS)));
                }
                Some(d)
            }
        }
    }

    /// Phase 2: find the token (path first, the default; then the query parameter; then the cookie) and normalise
    /// the path it protects.
    fn locate<'r>(&self, req: &Request<'r>, now: u64) -> Result<Located<'r>, Refused<'r>> {
        let (token, raw_path, transport) = if let Some((t, rest)) = split_path_token(req.path) {
            (Some(t), rest, Transport::Path)
        } else if let Some(t) = query_param(req.query, &self.config.token_param) {
            (Some(t), req.path, Transport::Query)
        } else {
            (
                cookie_value(req.cookie, &self.config.cookie_name),
                req.path,
                Transport::Cookie,
            )
        };
        let path =
            normalize_path(raw_path).map_err(|e| self.refuse(Reason::BadPath, Some(e.as_str()), now, Attr::Nothing))?;
        // No valid token, no attribution: the path is whatever an anonymous caller typed (`/favicon.ico`, random
        // names), and labelling events with it would let anyone grow the control plane's metrics without bound.
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(self.refuse(Reason::MissingToken, None, now, Attr::Nothing));
        };
        let resource = classify(&path, &self.config.multivariant_name);
        Ok(Located {
            token,
            path,
            transport,
            resource,
        })
    }

    /// Phase 3 (after the signature, checked by the caller): the claims against the request (time, scope,
    /// permissions, IP, country, embedding origin).
    fn verify<'a>(
        &self,
        req: &Request<'_>,
        found: &Located<'_>,
        claims: &Claims<'_>,
        now: u64,
    ) -> Result<(), Refused<'a>> {
        let facts = RequestFacts {
            path: &found.path,
            resource: found.resource,
            now,
            client_ip: req.client_ip,
            // Without a source, whatever the adapter passed is not a country anyone vouches for. Only a country
            // rule reads it, so only for one is it looked up.
            country: if claims.countries.is_some() && self.config.has_country_source {
                req.country_for_rule()
            } else {
                None
            },
            origin: embed_origin(req),
        };
        let checked = self.verifier.policy().check(claims, &facts);
        // A country rule on an edge that cannot know countries: the lenient rule of §8 would serve a deny-listed
        // link to everyone and refuse an allow-listed one to everyone, so refuse it, saying why, unless the
        // operator opted into that rule. This answers step 11 of the order, so earlier failures keep precedence.
        if claims.countries.is_some()
            && !self.config.has_country_source
            && !self.config.geo_lenient
            && matches!(checked, Ok(()) | Err(Reason::GeoDenied | Reason::OriginDenied))
        {
            return Err(self.refuse(Reason::GeoUnavailable, None, now, Attr::Claims(claims)));
        }
        match checked {
            Ok(()) => Ok(()),
            // A token that ended with its viewer's entitlement (a trial) says so: the player shows "trial ended",
            // not "link expired".
            Err(Reason::Expired) if sharegate_shared::token::tier::ends_entitlement(claims.tier) => {
                Err(self.refuse(Reason::Expired, Some("entitlement_ended"), now, Attr::Claims(claims)))
            }
            Err(r) => Err(self.refuse(r, None, now, Attr::Claims(claims))),
        }
    }

    /// Phase 4: revocation, from memory. A stale state follows the configured policy: refused (fail closed) or
    /// decided on the token alone and reported (fail open), which is the event this returns.
    fn revocation_phase<'a>(
        &self,
        claims: &Claims<'_>,
        state: StateInput<'_>,
        now: u64,
    ) -> Result<Option<alloc::boxed::Box<Event>>, Refused<'a>> {
        let attribution = Attr::Claims(claims);
        let stale = state.state.is_none() || state.age > u64::from(self.config.state_max_age);
        if stale && self.config.stale_policy == StalePolicy::FailClosed {
            return Err(self.refuse(Reason::StateStale, None, now, attribution));
        }
        let event = stale.then(|| self.event(EventKind::StateStale, None, now, attribution));
        if let Some(s) = state.state {
            match s.check(&Subject::from_claims(claims)) {
                Revoked::No => {}
                Revoked::Token => return Err(self.refuse(Reason::Revoked, Some("token"), now, attribution)),
                Revoked::Watermark(kind) => {
                    return Err(self.refuse(Reason::Revoked, Some(kind.as_str()), now, attribution));
                }
            }
        }
        Ok(event)
    }

    /// Phase 5: the plan of an allowed request: what to fetch (the watermark variant of a segment, the kept LL-HLS
    /// directives) and cache under which key and tags, the headers, and how to rewrite a playlist. The origin path
    /// and the cache key never contain the token.
    fn plan<'a>(
        &'a self,
        req: &Request<'a>,
        found: Located<'a>,
        claims: &Claims<'_>,
        mut event: Option<alloc::boxed::Box<Event>>,
        now: u64,
    ) -> Decision<'a> {
        let resource = found.resource;
        // The asset's purge tag: with an asset claim the path's first segment is that asset (its scope check said
        // so); with a prefix claim it is the asset the path names.
        let first = found
            .path
            .get(1..)
            .map_or("", |p| memchr::memchr(b'/', p.as_bytes()).map_or(p, |i| &p[..i]));
        let asset = match &found.path {
            Cow::Borrowed(p) => Cow::Borrowed(p.get(1..1 + first.len()).unwrap_or("")),
            Cow::Owned(_) => Cow::Owned(first.into()),
        };
        let cache_tags = CacheTags::of_bytes(asset, claims.share.map(|s| s.as_bytes()));
        let mut origin_path = found.path;
        if resource == Resource::Segment
            && let (Some(key), Some(id)) = (&self.config.watermark_key, claims.watermark)
            && let Some(v) = watermark::variant_path(key, id, &origin_path)
        {
            origin_path = Cow::Owned(v);
        }
        // A segment's CMCD flags first: their scan also says whether the query holds anything but CMCD.
        let segment_flags = (resource == Resource::Segment && event.is_none())
            .then(|| crate::cmcd::flags(req.query, &req.cmcd_headers));
        let origin_query = if segment_flags.is_some_and(|f| f.alone) {
            None
        } else {
            hls_directives(req.query)
        };
        let is_playlist = matches!(resource, Resource::MultivariantPlaylist | Resource::MediaPlaylist);
        let mut playlist = None;
        let headers = if is_playlist {
            playlist = Some(alloc::boxed::Box::new(PlaylistPlan {
                public_path: origin_path.to_string(),
                host: req.host.to_string(),
                transport: found.transport,
                token: found.token.to_string(),
                resource,
                session: self.config.two_tier.map(|_| {
                    let mut seed = claims.to_owned_claims();
                    if seed.ip.is_none() {
                        seed.ip = self.session_ip(req.client_ip);
                    }
                    seed
                }),
            }));
            if resource == Resource::MultivariantPlaylist && event.is_none() {
                event = Some(self.event(EventKind::PlaylistOpen, None, now, Attr::Claims(claims)));
            }
            &self.playlist_headers[..]
        } else {
            if let Some(f) = segment_flags
                && (f.su || f.bs)
            {
                // A player's startup segments and stalls, as its CMCD reports them (no allocation without CMCD).
                event = Some(self.event(EventKind::Segment, None, now, Attr::Claims(claims)));
            }
            &self.object_headers[..]
        };
        Decision::Allow(Allow {
            origin_path,
            origin_query,
            resource,
            headers,
            shared_cacheable: !is_playlist,
            cache_tags,
            playlist,
            event,
        })
    }

    fn session_ip(&self, client: Option<IpAddr>) -> Option<IpPrefix> {
        let tt = self.config.two_tier?;
        let ip = client?;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let len = match ip {
            IpAddr::V4(_) => tt.ipv4_prefix,
            IpAddr::V6(_) => tt.ipv6_prefix,
        };
        (len > 0).then(|| IpPrefix::new(ip, len)).flatten()
    }

    /// Mint a session token from a seed with narrowed permissions and expiry. It keeps the share token's id and
    /// issue time, so revoking the share token (by id or any watermark) also revokes every session token from it.
    fn session_token(&self, seed: &SessionSeed, permissions: Permissions, exp: u32) -> Option<String> {
        let minter = self.minter.as_ref()?;
        // The minter writes its own key id and the current format version, whatever the seed carried.
        let claims = Claims {
            exp,
            permissions,
            ..seed.as_claims()
        };
        minter.mint(&claims).ok()
    }

    /// Rewrite a fetched playlist body according to its plan, at `now`.
    ///
    /// - Two-tier: a multivariant playlist's URIs get a session token for everything below it, valid as long as the
    ///   share token (live players reload those media playlists for as long as they play); a media playlist's
    ///   segment URIs get a token that lives `session_ttl` when the playlist is live (it is reloaded, and so
    ///   refreshed) and as long as the presented token when it is VOD (`EXT-X-ENDLIST`: fetched once).
    /// - Query transport: every URI to our host carries the token parameter.
    /// - Path transport: relative URIs already inherit the token; absolute ones to our host get `/t/<token>`.
    pub fn rewrite_playlist(&self, plan: &PlaylistPlan, body: &str, now: u64) -> Result<String, hls::PlaylistError> {
        let (upper, lower) = match &plan.session {
            Some(seed) => {
                // Opening the multivariant playlist with a valid share token is the grant to play what it lists:
                // session tokens get the playback resources below it (never the multivariant, never downloads),
                // so a share token can be minted for the multivariant playlist alone.
                let below = Permissions(
                    Permissions::MEDIA.0 | Permissions::SEGMENT.0 | Permissions::INIT.0 | Permissions::KEY.0,
                );
                let tt = self.config.two_tier;
                match plan.resource {
                    Resource::MultivariantPlaylist => {
                        let t = self.session_token(seed, below, seed.exp);
                        (t.clone(), t)
                    }
                    _ => {
                        let vod = body.contains("#EXT-X-ENDLIST");
                        let short = u32::try_from(now)
                            .unwrap_or(u32::MAX)
                            .saturating_add(tt.map_or(300, |t| t.session_ttl));
                        let exp = if vod { seed.exp } else { short.min(seed.exp) };
                        let media =
                            Permissions(below.0 & (Permissions::SEGMENT.0 | Permissions::INIT.0 | Permissions::KEY.0));
                        // Rendition reports point at sibling media playlists: they keep the presented token.
                        let seg = if exp > seed.nbf {
                            self.session_token(seed, media, exp)
                        } else {
                            None
                        };
                        (Some(plan.token.clone()), seg)
                    }
                }
            }
            None => (Some(plan.token.clone()), Some(plan.token.clone())),
        };
        let two_tier = plan.session.is_some();
        let transport = if two_tier && plan.transport == Transport::Cookie {
            Transport::Path
        } else {
            plan.transport
        };
        if transport == Transport::Cookie {
            return Ok(body.to_string());
        }
        let param = &self.config.token_param;
        let out = hls::rewrite_uris(body, |uri, kind| {
            let token = match kind {
                UriKind::Variant | UriKind::Media | UriKind::RenditionReport => upper.as_deref(),
                _ if plan.resource == Resource::MultivariantPlaylist => upper.as_deref(),
                _ => lower.as_deref(),
            }?;
            let relative = !uri.starts_with('/') && !uri.contains("://");
            // Path transport without two-tier: relative URIs inherit the token from the playlist URL already.
            if transport == Transport::Path && !two_tier && relative {
                return None;
            }
            let resolved = hls::resolve(&plan.public_path, uri, &plan.host)?;
            let (p, q) = resolved
                .split_once('?')
                .map_or((resolved.as_str(), None), |(p, q)| (p, Some(q)));
            let p = normalize_path(p).ok()?;
            Some(match transport {
                Transport::Path => match q {
                    Some(q) => format!("/t/{token}{p}?{q}"),
                    None => format!("/t/{token}{p}"),
                },
                _ => {
                    let base = match q {
                        Some(q) => format!("{p}?{q}"),
                        None => p.to_string(),
                    };
                    hls::with_query_param(&base, param, token)
                }
            })
        })?;
        Ok(out.into_owned())
    }
}

/// What an event will be attributed to, resolved only when an event is made (allowed segment requests make none).
#[derive(Clone, Copy)]
enum Attr<'a, 'c> {
    Nothing,
    Claims(&'a Claims<'c>),
}

impl Attr<'_, '_> {
    fn resolve(self) -> Attribution {
        match self {
            Attr::Nothing => Attribution::default(),
            Attr::Claims(c) => Attribution::from_claims(c),
        }
    }
}

/// `<iat>-<token id hex>`: a verified token's session key in events.
fn session_key(c: &Claims<'_>) -> String {
    use core::fmt::Write as _;
    let mut s = String::with_capacity(36);
    let _ = write!(s, "{}-", c.iat);
    for b in c.token_id {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Ids an event is attributed to.
#[derive(Debug, Clone, Default)]
struct Attribution {
    asset: Option<String>,
    share: Option<String>,
    channel: Option<String>,
    campaign: Option<String>,
    token: Option<String>,
    plan: Option<&'static str>,
}

impl Attribution {
    fn from_claims(c: &Claims<'_>) -> Self {
        Attribution {
            asset: owned(c.asset).or_else(|| owned(c.prefix)),
            share: owned(c.share),
            channel: owned(c.channel),
            campaign: owned(c.campaign),
            token: Some(session_key(c)),
            plan: c.tier.and_then(sharegate_shared::token::tier::plan_name),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use sharegate_shared::token::Countries;

    #[test]
    fn resource_classification() {
        let m = "master.m3u8";
        assert_eq!(classify("/a/master.m3u8", m), Resource::MultivariantPlaylist);
        assert_eq!(classify("/a/v0/index.m3u8", m), Resource::MediaPlaylist);
        assert_eq!(classify("/a/v0/seg_1.ts", m), Resource::Segment);
        assert_eq!(classify("/a/v0/seg_1.m4s", m), Resource::Segment);
        assert_eq!(classify("/a/v0/init.mp4", m), Resource::Init);
        assert_eq!(classify("/a/v0/init_0.m4s", m), Resource::Init);
        assert_eq!(classify("/a/k/1.key", m), Resource::Key);
        assert_eq!(classify("/a/movie.mp4", m), Resource::Download);
    }

    #[test]
    fn token_extraction_helpers() {
        assert_eq!(split_path_token("/t/abc/demo/x.ts"), Some(("abc", "/demo/x.ts")));
        assert_eq!(split_path_token("/t/abc"), None);
        assert_eq!(split_path_token("/demo/x.ts"), None);
        assert_eq!(query_param(Some("a=1&sg=tok&b=2"), "sg"), Some("tok"));
        assert_eq!(query_param(Some("xsg=1"), "sg"), None);
        assert_eq!(
            cookie_value(Some("a=1; sg_token=\"tok\"; b=2"), "sg_token"),
            Some("tok")
        );
        assert_eq!(
            hls_directives(Some("sg=x&_HLS_part=2&_HLS_msn=10&_HLS_skip=YES&z=1")).unwrap(),
            "_HLS_msn=10&_HLS_part=2&_HLS_skip=YES"
        );
        assert_eq!(hls_directives(Some("_HLS_msn=1%2f")), None);
        let req = Request {
            referer: Some("https://player.example.com:8443/embed/1?x=y"),
            ..Request::default()
        };
        assert_eq!(embed_origin(&req), Some("https://player.example.com:8443"));
    }

    /// An engine on key 1 with a fresh empty state, and a token for asset `demo` with these countries.
    fn geo_setup(settings: &[(&str, &str)], countries: Countries<'_>) -> (Engine, String) {
        let keys = "1:active:1111111111111111111111111111111111111111111111111111111111111111";
        let mut src: Vec<(&str, &str)> = alloc::vec![(crate::config::keys::SIGNING_KEYS, keys)];
        src.extend_from_slice(settings);
        let engine = Engine::new(EdgeConfig::from_source(&src.as_slice()).unwrap());
        let token = engine
            .minter
            .as_ref()
            .unwrap()
            .mint(&demo_claims([7; 12], Some(countries)))
            .unwrap();
        (engine, token)
    }

    /// A one-hour playback token's claims for asset `demo`, with these countries if any.
    fn demo_claims(token_id: [u8; 12], countries: Option<Countries<'_>>) -> Claims<'_> {
        Claims {
            token_id,
            iat: 1_900_000_000,
            nbf: 1_900_000_000,
            exp: 1_900_003_600,
            permissions: Permissions::PLAYBACK,
            asset: Some(Text::from("demo")),
            countries,
            ..Claims::default()
        }
    }

    struct Nothing;
    impl Revocations for Nothing {
        fn check(&self, _: &Subject<'_>) -> Revoked {
            Revoked::No
        }
    }

    /// Status and reason code of one GET for the token, from a client in `country` (as the adapter saw it).
    fn geo_answer(engine: &Engine, token: &str, country: Option<&[u8; 2]>) -> (u16, &'static str) {
        let path = format!("/t/{token}/demo/v0/seg_000.ts");
        let req = Request {
            method: "GET",
            path: &path,
            country: country.copied(),
            ..Request::default()
        };
        match engine.decide(&req, 1_900_000_100, StateInput::fresh(&Nothing)) {
            Decision::Allow(_) => (200, ""),
            Decision::Deny(d) => (d.status, d.reason.as_str()),
            Decision::Preflight(_) => (204, ""),
        }
    }

    #[test]
    fn country_rules_without_a_country_source_are_refused_unless_lenient() {
        for (rule, at_home, abroad) in [
            (Countries::Allow(b"DE"), (200, ""), (403, "geo_denied")),
            (Countries::Deny(b"US"), (403, "geo_denied"), (200, "")),
        ] {
            let home: &[u8; 2] = if matches!(rule, Countries::Allow(_)) {
                b"DE"
            } else {
                b"US"
            };
            // A source (a CDN's platform data): the rule decides.
            let (e, t) = geo_setup(&[], rule);
            assert_eq!(geo_answer(&e, &t, Some(home)), at_home);
            assert_eq!(geo_answer(&e, &t, Some(b"FR")), abroad);
            // No source: refused whatever country the adapter claims, with a reason that says why.
            let (mut e, t) = geo_setup(&[], rule);
            e.config.has_country_source = false;
            for c in [None, Some(home), Some(b"FR")] {
                assert_eq!(geo_answer(&e, &t, c), (503, "geo_unavailable"), "{c:?}");
            }
            // No source, lenient: docs/token-format.md §8 (unknown fails an allow list, passes a deny list).
            let (mut e, t) = geo_setup(&[(crate::config::keys::GEO_LENIENT, "true")], rule);
            e.config.has_country_source = false;
            let lenient = if matches!(rule, Countries::Allow(_)) {
                (403, "geo_denied")
            } else {
                (200, "")
            };
            assert_eq!(geo_answer(&e, &t, Some(home)), lenient);
        }
        // Earlier checks keep their precedence over geo_unavailable (expired is step 7).
        let (mut e, t) = geo_setup(&[], Countries::Deny(b"US"));
        e.config.has_country_source = false;
        let req_path = format!("/t/{t}/demo/v0/seg_000.ts");
        let req = Request {
            method: "GET",
            path: &req_path,
            ..Request::default()
        };
        let Decision::Deny(d) = e.decide(&req, 1_900_010_000, StateInput::fresh(&Nothing)) else {
            panic!("allowed");
        };
        assert_eq!(d.reason, Reason::Expired);
    }

    /// Geolocation for `country_lookup` that counts its calls: 198.51.100.0/24 is in DE, nothing else is known.
    static LOOKUPS: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
    fn counted_geo(ip: IpAddr) -> Option<[u8; 2]> {
        LOOKUPS.fetch_add(1, core::sync::atomic::Ordering::SeqCst);
        match ip {
            IpAddr::V4(v4) if v4.octets()[..3] == [198, 51, 100] => Some(*b"DE"),
            _ => None,
        }
    }

    /// The deferred lookup decides a country rule exactly as the same country given up front, and is asked only
    /// for a token with a country rule on an edge with a country source.
    #[test]
    fn the_country_is_looked_up_only_for_a_country_rule() {
        use core::sync::atomic::Ordering::SeqCst;
        let ask = |e: &Engine, token: &str, ip: &str| {
            let path = format!("/t/{token}/demo/v0/seg_000.ts");
            let req = Request {
                method: "GET",
                path: &path,
                country_lookup: Some(CountryLookup {
                    ip: ip.parse().unwrap(),
                    lookup: counted_geo,
                }),
                ..Request::default()
            };
            let before = LOOKUPS.load(SeqCst);
            let answer = match e.decide(&req, 1_900_000_100, StateInput::fresh(&Nothing)) {
                Decision::Allow(_) => (200, ""),
                Decision::Deny(d) => (d.status, d.reason.as_str()),
                Decision::Preflight(_) => (204, ""),
            };
            (answer, LOOKUPS.load(SeqCst) - before)
        };
        for (rule, de, elsewhere) in [
            (Countries::Allow(b"DE"), (200, ""), (403, "geo_denied")),
            (Countries::Deny(b"DE"), (403, "geo_denied"), (200, "")),
        ] {
            let (e, t) = geo_setup(&[], rule);
            assert_eq!(ask(&e, &t, "198.51.100.7"), (de, 1));
            assert_eq!(geo_answer(&e, &t, Some(b"DE")), de);
            assert_eq!(ask(&e, &t, "203.0.113.9"), (elsewhere, 1));
            assert_eq!(geo_answer(&e, &t, None), elsewhere);
            // A country given up front wins; the lookup is not asked.
            let path = format!("/t/{t}/demo/v0/seg_000.ts");
            let req = Request {
                method: "GET",
                path: &path,
                country: Some(*b"DE"),
                country_lookup: Some(CountryLookup {
                    ip: "203.0.113.9".parse().unwrap(),
                    lookup: counted_geo,
                }),
                ..Request::default()
            };
            let before = LOOKUPS.load(SeqCst);
            let _ = e.decide(&req, 1_900_000_100, StateInput::fresh(&Nothing));
            assert_eq!(LOOKUPS.load(SeqCst), before);
            // No country source: refused as before, without asking.
            let (mut e, t) = geo_setup(&[], rule);
            e.config.has_country_source = false;
            assert_eq!(ask(&e, &t, "198.51.100.7"), ((503, "geo_unavailable"), 0));
        }
        // A token without a country rule: allowed, and the lookup never asked.
        let (e, _) = geo_setup(&[], Countries::Allow(b"DE"));
        let plain = e.minter.as_ref().unwrap().mint(&demo_claims([9; 12], None)).unwrap();
        assert_eq!(ask(&e, &plain, "198.51.100.7"), ((200, ""), 0));
        assert_eq!(ask(&e, &plain, "203.0.113.9"), ((200, ""), 0));
    }

    #[test]
    fn an_entitlements_end_is_expired_with_its_detail() {
        let (e, _) = geo_setup(&[], Countries::Deny(b"US"));
        let mint = |tier: Option<u8>| {
            let claims = Claims {
                token_id: [8; 12],
                iat: 1_900_000_000,
                nbf: 1_900_000_000,
                exp: 1_900_000_060,
                permissions: Permissions::PLAYBACK,
                asset: Some(Text::from("demo")),
                tier,
                ..Claims::default()
            };
            e.minter.as_ref().unwrap().mint(&claims).unwrap()
        };
        let answer = |t: &str, now: u64| {
            let path = format!("/t/{t}/demo/v0/seg_000.ts");
            let req = Request {
                method: "GET",
                path: &path,
                ..Request::default()
            };
            match e.decide(&req, now, StateInput::fresh(&Nothing)) {
                Decision::Deny(d) => {
                    // The event names the viewer's plan, for analytics.
                    let mut json = String::new();
                    d.event.as_ref().unwrap().write_json(&mut json);
                    assert!(json.contains("\"plan\":\"trial\""), "{json}");
                    Some((d.reason, d.body))
                }
                _ => None,
            }
        };
        use sharegate_shared::token::tier;
        let trial = mint(Some(tier::PLAN_TRIAL | tier::ENDS_ENTITLEMENT));
        assert!(answer(&trial, 1_900_000_059).is_none());
        let (reason, body) = answer(&trial, 1_900_000_060).unwrap();
        assert_eq!(reason, Reason::Expired);
        assert!(body.contains("\"detail\":\"entitlement_ended\""), "{body}");
        // An ordinary token keeps its leeway and says nothing of entitlements.
        let plain = mint(Some(tier::PLAN_TRIAL));
        assert!(answer(&plain, 1_900_000_060).is_none());
        let (_, body) = answer(&plain, 1_900_000_120).unwrap();
        assert!(!body.contains("detail"), "{body}");
    }

    #[test]
    fn method_not_allowed_says_what_is() {
        let (e, t) = geo_setup(&[], Countries::Deny(b"US"));
        let path = format!("/t/{t}/demo/v0/seg_000.ts");
        for m in ["POST", "PUT", "DELETE", "PATCH", "TRACE", "CONNECT", "get"] {
            let req = Request {
                method: m,
                path: &path,
                ..Request::default()
            };
            let Decision::Deny(d) = e.decide(&req, 1_900_000_100, StateInput::fresh(&Nothing)) else {
                panic!("{m} allowed");
            };
            assert_eq!(d.status, 405);
            assert!(
                d.headers
                    .contains(&("allow", HeaderValue::Static("GET, HEAD, OPTIONS"))),
                "{m}"
            );
        }
    }

    #[test]
    fn origin_failures_and_cache_control() {
        const HEADERS: [(&str, HeaderValue); 2] = [
            ("access-control-allow-origin", HeaderValue::Static("*")),
            ("cache-control", HeaderValue::Static("private, max-age=2")),
        ];
        let allow = |shared_cacheable| Allow {
            origin_path: "/a/seg.ts".into(),
            origin_query: None,
            resource: Resource::Segment,
            headers: &HEADERS[..],
            shared_cacheable,
            cache_tags: CacheTags::none(),
            playlist: None,
            event: None,
        };
        let a = allow(true);
        assert_eq!(a.cache_control(Some("public, max-age=60")), Some("public, max-age=60"));
        assert_eq!(a.cache_control(None), Some(DEFAULT_SHARED_CACHE_CONTROL));
        assert_eq!(allow(false).cache_control(Some("public")), None);

        let f = a.origin_unavailable(true);
        assert_eq!(
            (f.status, f.body),
            (503, r#"{"error":"origin_unavailable","status":503}"#)
        );
        // The decision's headers first; the reason and no-store after them, so they win.
        assert_eq!(f.headers[0].0, "access-control-allow-origin");
        assert!(
            f.headers
                .contains(&(REASON_HEADER, HeaderValue::Static("origin_unavailable")))
        );
        assert_eq!(
            f.headers.last(),
            Some(&("cache-control", HeaderValue::Static("no-store")))
        );
        assert!(
            !a.origin_unavailable(false)
                .headers
                .iter()
                .any(|(k, _)| *k == REASON_HEADER)
        );
        let f = a.bad_playlist();
        assert_eq!((f.status, f.headers.len()), (502, 2));
        assert!(f.body.contains("bad_playlist"));
    }
}
