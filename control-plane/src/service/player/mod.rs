//! What a viewer sees when they open a share: the player page, the embed, the playback JSON, oEmbed, and the
//! player's own files. All public (a share link is its own credential); none sets or reads a cookie.
//!
//! - `GET /s/{id}`: a browser (`Accept: text/html`) gets the player page; `?format=json` the playback JSON; a
//!   player or script the `302` to a token URL (as before pages existed). `Vary: Accept`; CORS `*` on every answer.
//! - `GET /e/{id}`: the player for an iframe, framed only by the share's `embed_origins` (`frame-ancestors`); a
//!   frame whose `Referer` names another site gets a refusal page that says so.
//! - `GET|POST /v1/shares/{id}/playback`: a fresh short-lived token for this viewer and the player settings. The
//!   page's script POSTs it (so the browser sends `Origin`) at load and again before each token expires.
//! - `GET /oembed?url=<share or embed URL>`: oEmbed 1.0 JSON (`type: video`), discoverable from the share page.
//! - `GET /player/refused/{code}`: the page a viewer sees for a reason code (for support and documentation).
//! - `GET /player/{file}`: hls.js and our script and stylesheet, content-named, cached for a year, SRI-pinned.
//!
//! **What a viewer's token is bound to.** The share (its id, asset, campaign), the page origin the player runs on
//! (the browser's `Origin`: our own pages, or an allowed embedding site for players that bring their own), and
//! the viewer's network (`/24` for IPv4, `/48` for IPv6 by default, as the edge's two-tier session tokens), as the
//! control plane sees the viewer (the peer address, or the last entry of `client_ip_header` behind a proxy). A
//! copied token URL plays neither on another site nor from another network; the page refreshes it before it
//! expires, and a viewer whose network changed gets a new one on the edge's `ip_mismatch` refusal.

pub mod assets;
pub mod page;
pub mod presets;
pub mod reasons;
pub mod support;

use super::analytics::viewid::ViewDims;
use super::error::ApiError;
use super::shares::{self, Binding, OpenError, ShareRecord, ViewerToken};
use super::{AppState, now};
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use page::{Framing, Mode, Page, Refusal};
use presets::PlayerLook;
use serde::Serialize;
use sharegate_shared::token::IpPrefix;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// How the control plane binds viewer tokens to the viewer's network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayerSettings {
    /// Prefix length of the IPv4 network a page's token is bound to; 0: no binding.
    pub bind_ipv4_prefix: u8,
    /// Prefix length of the IPv6 network; 0: no binding.
    pub bind_ipv6_prefix: u8,
    /// Behind a proxy or CDN: the request header whose last entry is the viewer's address (`x-forwarded-for`,
    /// `cf-connecting-ip`); none: the TCP peer.
    pub client_ip_header: Option<String>,
    /// The request header a CDN in front sets to the viewer's country (`cf-ipcountry`); none: unknown.
    pub client_country_header: Option<String>,
}

impl Default for PlayerSettings {
    fn default() -> Self {
        PlayerSettings {
            bind_ipv4_prefix: 24,
            bind_ipv6_prefix: 48,
            client_ip_header: None,
            client_country_header: None,
        }
    }
}

/// Longest title, bytes.
pub const MAX_TITLE: usize = 200;

/// Most embed origins a share may list.
pub const MAX_EMBED_ORIGINS: usize = 50;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/s/{id}", get(open).options(shares::preflight))
        .route("/e/{id}", get(embed))
        .route(
            "/v1/shares/{id}/playback",
            get(playback).post(playback).options(playback_preflight),
        )
        .route("/oembed", get(oembed).options(shares::preflight))
        .route("/player/refused/{code}", get(refused_preview))
        .route("/player/{file}", get(assets::serve))
        .merge(presets::routes())
}

/// A title a share may carry: visible text, at most [`MAX_TITLE`] bytes.
pub fn check_title(t: &str) -> Result<(), ApiError> {
    if t.trim().is_empty() || t.len() > MAX_TITLE || t.chars().any(char::is_control) {
        return Err(ApiError::Invalid(format!(
            "title must be 1 to {MAX_TITLE} bytes of text without control characters"
        )));
    }
    Ok(())
}

/// An origin as browsers send it (`scheme://host[:port]`, lower case), or `None`.
/// Default ports and a trailing dot are dropped, as browsers serialise origins (`https://a.example:443` and
/// `https://a.example.` are sent as `https://a.example`).
pub(crate) fn parse_origin(o: &str) -> Option<String> {
    let o = o.to_ascii_lowercase();
    let (scheme, rest, default_port) = match o.strip_prefix("https://") {
        Some(r) => ("https://", r, ":443"),
        None => ("http://", o.strip_prefix("http://")?, ":80"),
    };
    let ok = !rest.is_empty()
        && o.len() <= 255
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !ok {
        return None;
    }
    let host = rest.strip_suffix(default_port).unwrap_or(rest);
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty() && !host.starts_with(':')).then(|| format!("{scheme}{host}"))
}

/// Check and normalise a share's `embed_origins`.
pub fn normalise_origins(list: &[String]) -> Result<Vec<String>, ApiError> {
    if list.len() > MAX_EMBED_ORIGINS {
        return Err(ApiError::Invalid(format!("at most {MAX_EMBED_ORIGINS} embed_origins")));
    }
    let mut out = Vec::with_capacity(list.len());
    for o in list {
        let n = parse_origin(o).ok_or_else(|| {
            ApiError::Invalid(format!(
                "embed_origins: {o:?} is not an origin like https://example.com (scheme, host, optional port; no path)"
            ))
        })?;
        if !out.contains(&n) {
            out.push(n);
        }
    }
    Ok(out)
}

/// The TCP peer, when the server was started with connection info (tests driving the router directly have none).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<SocketAddr>>()
                .map(|c| c.0),
        ))
    }
}

/// The viewer's address as this control plane sees it.
pub(crate) fn client_ip(s: &AppState, headers: &HeaderMap, peer: Peer) -> Option<IpAddr> {
    match &s.config.player.client_ip_header {
        Some(name) => headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .and_then(|v| v.trim().parse().ok()),
        None => peer.0.map(|a| a.ip()),
    }
}

/// The viewer's country from the trusted header a CDN in front sets (`SHAREGATE_CLIENT_COUNTRY_HEADER`, such as
/// `cf-ipcountry`), when configured and well formed: for the entitlement check only.
fn client_country(s: &AppState, headers: &HeaderMap) -> Option<String> {
    let name = s.config.player.client_country_header.as_deref()?;
    let v = headers.get(name)?.to_str().ok()?.trim();
    (v.len() == 2 && v.bytes().all(|b| b.is_ascii_alphabetic())).then(|| v.to_ascii_uppercase())
}

/// The network a page's token is bound to (none when the address is unknown or binding is off for its family).
fn client_network(s: &AppState, headers: &HeaderMap, peer: Peer) -> Option<IpPrefix> {
    let ip = client_ip(s, headers, peer)?;
    // An IPv4 viewer reaching us over an IPv6 socket (`::ffff:a.b.c.d`) reaches the edge over IPv4.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let len = match ip {
        IpAddr::V4(_) => s.config.player.bind_ipv4_prefix,
        IpAddr::V6(_) => s.config.player.bind_ipv6_prefix,
    };
    if len == 0 {
        return None;
    }
    IpPrefix::new(ip, len)
}

/// Our own pages' origin: the share base URL's.
fn own_origin(s: &AppState) -> Option<String> {
    page::origin_of(&s.config.share_base_url).and_then(parse_origin)
}

/// The origin a viewer's token is bound to: the page the browser says it plays on — its `Origin`, else the origin
/// of its `Referer` (a native `<video src>` on another site sends only that) — if that page may play this share:
/// our own pages always, another site only if the share lets it embed. `Origin: null` (a sandboxed frame, which
/// could read our `*` CORS answers from any site) is refused when the share names its sites. Neither header (a
/// script, an app, a server): no origin binding.
fn permitted_origin(s: &AppState, headers: &HeaderMap, share: &ShareRecord) -> Result<Option<String>, OpenError> {
    let not_here = || {
        shares::refused(
            StatusCode::FORBIDDEN,
            "embed_not_allowed",
            "this share may not be played on this site",
        )
    };
    let origin = match headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("")) {
        Some("null") if share.embed_origins.is_some() => return Err(not_here()),
        Some("null") => return Ok(None),
        Some(raw) => parse_origin(raw)
            .ok_or_else(|| OpenError::from(ApiError::Invalid("the Origin header is not an origin".into())))?,
        None => match headers
            .get(header::REFERER)
            .and_then(|v| v.to_str().ok())
            .and_then(page::origin_of)
            .and_then(parse_origin)
        {
            Some(o) => o,
            None => return Ok(None),
        },
    };
    let ours = own_origin(s).as_deref() == Some(origin.as_str());
    let allowed = ours || share.embed_origins.as_ref().is_none_or(|list| list.contains(&origin));
    if !allowed {
        return Err(not_here());
    }
    Ok(Some(origin))
}

/// The channel and campaign a view is credited to: the page URL's `utm_source` and `utm_campaign` when the share
/// takes them (from the query, else — for the player's own token requests — from the `Referer`, which is our page's
/// full URL), each cut to [`shares::UTM_MAX_LEN`] of `[A-Za-z0-9_.~-]`; `None` falls back to the share's own.
fn utm_attribution(
    share: &ShareRecord,
    query: &[(String, String)],
    headers: &HeaderMap,
) -> (Option<String>, Option<String>) {
    if !share.utm {
        return (None, None);
    }
    let referer: Vec<(String, String)> = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once('?'))
        .map(|(_, q)| query_pairs(Some(q.split('#').next().unwrap_or(""))))
        .unwrap_or_default();
    let pick = |name: &str| {
        let from = |pairs: &[(String, String)]| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        from(query).or_else(|| from(&referer)).and_then(|v| {
            let v: String = v
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~'))
                .take(shares::UTM_MAX_LEN)
                .collect();
            (!v.is_empty()).then_some(v)
        })
    };
    (pick("utm_source"), pick("utm_campaign"))
}

fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .unwrap_or_default()
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"))
}

fn reference(subject: &str) -> String {
    format!("sg-{subject}-{}", now())
}

fn subject(id: &str) -> &str {
    if shares::well_formed_id(id) { id } else { "unknown" }
}

fn edge_origin(s: &AppState) -> String {
    page::origin_of(&s.config.edge_base_url)
        .unwrap_or(&s.config.edge_base_url)
        .to_string()
}

/// A refusal page for `id`'s open that failed with `e`.
fn refusal_page(s: &AppState, mode: Mode, id: &str, e: &OpenError) -> Response {
    let (status, code, _) = e.parts();
    let code = if status.is_server_error() { "unavailable" } else { code };
    let refusal = Refusal {
        code: code.to_string(),
        status: status.as_u16(),
        reference: reference(subject(id)),
    };
    let mut resp = refusal_view(s, mode, shares::well_formed_id(id).then_some(id), refusal);
    shares::cors(resp.headers_mut());
    resp
}

/// The page that shows `refusal` instead of a player, in the default look.
fn refusal_view(s: &AppState, mode: Mode, share: Option<&str>, refusal: Refusal) -> Response {
    // A refused embed shows its reason inside whatever frames it.
    let framing = match mode {
        Mode::Share => Framing::Nobody,
        Mode::Embed => Framing::Anyone,
    };
    let look = PlayerLook::default();
    let edge = edge_origin(s);
    page::render(&Page {
        mode,
        share,
        title: "Video",
        look: &look,
        refusal: Some(refusal),
        oembed: None,
        embed_origins: None,
        framing,
        edge_origin: &edge,
        analytics: None,
    })
}

async fn player_page(s: &AppState, mode: Mode, opened: &shares::Opened, query: &[(String, String)]) -> Response {
    let share = &opened.share;
    let preset = match presets::for_share(s, share.preset.as_deref()).await {
        Ok(p) => p,
        Err(e) => return refusal_page(s, mode, &share.id, &OpenError::Api(e)),
    };
    let look = preset.resolve(query);
    let title = share.title.as_deref().unwrap_or(&share.asset);
    let base = s.config.share_base_url.trim_end_matches('/');
    let share_url = format!("{base}/s/{}", share.id);
    let oembed = format!(
        "{base}/oembed?{}",
        serde_urlencoded::to_string([("url", share_url.as_str()), ("format", "json")]).unwrap_or_default()
    );
    let framing = match (mode, &share.embed_origins) {
        (Mode::Share, _) => Framing::Nobody,
        (Mode::Embed, None) => Framing::Anyone,
        (Mode::Embed, Some(list)) => Framing::Only(list.clone()),
    };
    let edge = edge_origin(s);
    let analytics = s.config.analytics.enabled.then(|| {
        let (utm_channel, utm_campaign) = utm_attribution(share, query, &HeaderMap::new());
        let channel = utm_channel.or_else(|| share.channel.clone());
        let campaign = utm_campaign.or_else(|| share.campaign.clone());
        let view = s.analytics.view_key.mint(
            s.now(),
            &ViewDims {
                share: &share.id,
                asset: &share.asset,
                channel: channel.as_deref().unwrap_or(""),
                campaign: campaign.as_deref().unwrap_or(""),
            },
        );
        serde_json::json!({
            "view": view,
            // Relative: the page is ours whatever host name it was reached by, and CSP's 'self' allows it.
            "beacon": "/v1/beacons",
            "interval_ms": s.config.analytics.beacon_interval_ms,
            "share": share.id,
            "asset": share.asset,
            "channel": channel,
            "campaign": campaign,
        })
    });
    page::render(&Page {
        mode,
        share: Some(&share.id),
        title,
        look: &look,
        refusal: None,
        oembed: Some(oembed),
        embed_origins: share.embed_origins.as_deref(),
        framing,
        edge_origin: &edge,
        analytics,
    })
}

/// `GET /s/{id}`.
async fn open(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let query = query_pairs(q.as_deref());
    let mut resp = if query.iter().any(|(k, v)| k == "format" && v == "json") {
        playback_answer(&s, &headers, peer, &id, &query).await
    } else if wants_html(&headers) {
        match shares::check_open(&s, &headers, &id).await {
            Ok(opened) => player_page(&s, Mode::Share, &opened, &query).await,
            Err(e) => refusal_page(&s, Mode::Share, &id, &e),
        }
    } else {
        redirect(&s, &headers, &id)
            .await
            .unwrap_or_else(IntoResponse::into_response)
    };
    let h = resp.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("Accept"));
    shares::cors(h);
    resp
}

/// What `/s/{id}` always answered players and scripts: `302` to a fresh token URL.
async fn redirect(s: &AppState, headers: &HeaderMap, id: &str) -> Result<Response, OpenError> {
    let opened = shares::check_open(s, headers, id).await?;
    let bind = Binding {
        origin: permitted_origin(s, headers, &opened.share)?,
        network: None,
        ..Binding::default()
    };
    let token = shares::mint_for(s, &opened, &bind).await?;
    let location = HeaderValue::from_str(&token.url)
        .map_err(|_| ApiError::Internal("token URL is not a valid header value".into()))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// The playback JSON (`GET|POST /v1/shares/{id}/playback`, `GET /s/{id}?format=json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Playback {
    /// The share id.
    pub share: String,
    /// The asset id.
    pub asset: String,
    /// What to show as the title.
    pub title: String,
    /// The multivariant playlist on the edge; the token rides in its path, so every relative sub-request carries it.
    pub url: String,
    /// The token alone (a player swaps it into the `/t/<token>/` segment of later requests after a refresh).
    pub token: String,
    /// The token's id (hex): the subject of its support reference.
    pub token_id: String,
    /// Issued, unix seconds.
    pub issued_at: u32,
    /// Expires, unix seconds.
    pub expires_at: u32,
    /// When to ask for the next one, unix seconds (well before `expires_at`).
    pub refresh_at: u32,
    /// This server's clock now, unix seconds (players convert the times above with it).
    pub server_time: u64,
    /// The page origin the token is bound to, if any.
    pub origin: Option<String>,
    /// The viewer network it is bound to (`a.b.c.0/24`), if any.
    pub network: Option<String>,
    /// The player settings (preset and the URL overrides it allows).
    pub player: PlayerLook,
}

/// When a player should fetch the next token: with 30% of the lifetime left (at least a second).
pub fn refresh_at(iat: u32, exp: u32) -> u32 {
    let ttl = exp.saturating_sub(iat);
    exp.saturating_sub((ttl * 3 / 10).max(1)).max(iat)
}

async fn playback_answer(
    s: &AppState,
    headers: &HeaderMap,
    peer: Peer,
    id: &str,
    query: &[(String, String)],
) -> Response {
    let answer = async {
        let opened = shares::check_open(s, headers, id).await?;
        // `network=off`: the player's second try after the edge refused the viewer's network (a viewer who reaches
        // us and the edge over different address families); no weaker than the share's own redirect.
        let network_off = query.iter().any(|(k, v)| k == "network" && v == "off");
        let (channel, campaign) = utm_attribution(&opened.share, query, headers);
        let bind = Binding {
            origin: permitted_origin(s, headers, &opened.share)?,
            network: if network_off {
                None
            } else {
                client_network(s, headers, peer)
            },
            channel,
            campaign,
            country: client_country(s, headers),
            // The player says so when it already holds a token.
            refresh: query.iter().any(|(k, v)| k == "refresh" && v == "1"),
        };
        let preset = presets::for_share(s, opened.share.preset.as_deref()).await?;
        let ViewerToken {
            token,
            token_id,
            iat,
            exp,
            url,
            ends_entitlement,
        } = shares::mint_for(s, &opened, &bind).await?;
        Ok::<_, OpenError>(Playback {
            share: opened.share.id.clone(),
            asset: opened.share.asset.clone(),
            title: opened.share.title.clone().unwrap_or_else(|| opened.share.asset.clone()),
            url,
            token,
            token_id,
            issued_at: iat,
            expires_at: exp,
            // A token that ends with the viewer's entitlement is renewed when it ends: only then can the answer
            // change (the trial became a subscription), and renewing earlier would only mint shorter tokens.
            refresh_at: if ends_entitlement { exp } else { refresh_at(iat, exp) },
            server_time: now(),
            origin: bind.origin,
            network: bind.network.map(|n| format!("{}/{}", n.addr, n.len)),
            player: preset.resolve(query),
        })
    };
    match answer.await {
        Ok(p) => {
            let mut resp = Json(p).into_response();
            let h = resp.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            shares::cors(h);
            resp
        }
        Err(e) => e.into_response(),
    }
}

/// `OPTIONS /v1/shares/{id}/playback`: players on other origins may POST, with a JSON content type if they like
/// (the body is ignored).
async fn playback_preflight() -> Response {
    let mut resp = shares::preflight().await;
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type"),
    );
    h.insert(header::ALLOW, HeaderValue::from_static("GET, POST, OPTIONS"));
    resp
}

/// `GET|POST /v1/shares/{id}/playback`.
async fn playback(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Peer,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    playback_answer(&s, &headers, peer, &id, &query_pairs(q.as_deref())).await
}

/// The origin of the page framing this request, from `Referer`, when the browser says it is loading a frame.
fn framing_origin(headers: &HeaderMap) -> Option<String> {
    let dest = headers.get("sec-fetch-dest").and_then(|v| v.to_str().ok());
    if dest.is_some_and(|d| d != "iframe" && d != "frame") {
        return None;
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    page::origin_of(referer).and_then(parse_origin)
}

/// `GET /e/{id}`.
async fn embed(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let opened = match shares::check_open(&s, &headers, &id).await {
        Ok(o) => o,
        Err(e) => return refusal_page(&s, Mode::Embed, &id, &e),
    };
    // The browser enforces `frame-ancestors`, but would show its own error; a frame that names its parent gets
    // our refusal page instead, in words. A parent that sends no `Referer` still meets `frame-ancestors`.
    if let (Some(list), Some(parent)) = (&opened.share.embed_origins, framing_origin(&headers))
        && !list.contains(&parent)
        && own_origin(&s).as_deref() != Some(parent.as_str())
    {
        let e = shares::refused(
            StatusCode::FORBIDDEN,
            "embed_not_allowed",
            "this share may not be embedded on this site",
        );
        return refusal_page(&s, Mode::Embed, &id, &e);
    }
    player_page(&s, Mode::Embed, &opened, &query_pairs(q.as_deref())).await
}

/// `GET /player/refused/{code}`: the page a viewer sees for `code`, served 200 (a preview, not a refusal); an
/// unknown code gets the `not_found` page with 404.
async fn refused_preview(State(s): State<Arc<AppState>>, Path(code): Path<String>) -> Response {
    let (code, status) = if reasons::known(&code) && code != "default" {
        (code, 200)
    } else {
        ("not_found".to_string(), 404)
    };
    let refusal = Refusal {
        code,
        status,
        reference: reference("preview"),
    };
    refusal_view(&s, Mode::Share, None, refusal)
}

/// oEmbed 1.0 (`https://oembed.com`), JSON only.
#[derive(Debug, serde::Deserialize)]
struct OembedQuery {
    url: String,
    maxwidth: Option<u32>,
    maxheight: Option<u32>,
    format: Option<String>,
}

async fn oembed(State(s): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let answer = async {
        let Ok(q) = serde_urlencoded::from_str::<OembedQuery>(q.as_deref().unwrap_or("")) else {
            return Err(ApiError::Invalid("oEmbed needs ?url=<share or embed URL>".into()).into());
        };
        if q.format.as_deref().is_some_and(|f| f != "json") {
            return Ok((
                StatusCode::NOT_IMPLEMENTED,
                Json(serde_json::json!({"error": "not_implemented", "message": "only format=json is served"})),
            )
                .into_response());
        }
        let base = s.config.share_base_url.trim_end_matches('/');
        let path = q.url.strip_prefix(base).unwrap_or("");
        let id = path
            .strip_prefix("/s/")
            .or_else(|| path.strip_prefix("/e/"))
            .map(|rest| rest.split(['?', '#', '/']).next().unwrap_or(""))
            .unwrap_or("");
        if !shares::well_formed_id(id) {
            return Err(shares::unknown());
        }
        let share = match s.store.get(crate::store::Ns::Shares, id).await? {
            Some(b) => serde_json::from_slice::<ShareRecord>(&b)
                .map_err(|e| ApiError::Internal(format!("share record: {e}")))?,
            None => return Err(shares::unknown()),
        };
        // Nothing to embed: a withdrawn or ended share, or one no site may embed.
        if share.deleted_at.is_some()
            || share.expires_at.is_some_and(|e| now() >= e)
            || share.embed_origins.as_ref().is_some_and(Vec::is_empty)
        {
            return Err(shares::unknown());
        }
        // 16:9 within the asked bounds (oEmbed: a provider must respect them), 640×360 by default.
        let mut w = q.maxwidth.unwrap_or(640).clamp(1, 3840);
        let mut h = (w * 9 / 16).max(1);
        if let Some(mh) = q.maxheight
            && h > mh
        {
            h = mh.max(1);
            w = (h * 16 / 9).clamp(1, w);
        }
        let title = share.title.clone().unwrap_or_else(|| share.asset.clone());
        let embed = format!("{base}/e/{id}");
        let html = format!(
            "<iframe src=\"{}\" width=\"{w}\" height=\"{h}\" title=\"{}\" frameborder=\"0\" \
             allow=\"autoplay; fullscreen; picture-in-picture\" allowfullscreen></iframe>",
            page::esc(&embed),
            page::esc(&title)
        );
        let preset = presets::for_share(&s, share.preset.as_deref()).await?;
        let mut body = serde_json::json!({
            "version": "1.0",
            "type": "video",
            "provider_name": "sharegate",
            "provider_url": base,
            "title": title,
            "html": html,
            "width": w,
            "height": h,
            "cache_age": 300,
        });
        if let Some(p) = preset.look.poster_url {
            body["thumbnail_url"] = p.into();
        }
        Ok(Json(body).into_response())
    };
    let mut resp = answer.await.unwrap_or_else(|e: OpenError| e.into_response());
    shares::cors(resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_normalised_and_checked() {
        assert_eq!(
            normalise_origins(&["HTTPS://A.example:8443".into(), "https://a.example:8443".into()]).ok(),
            Some(vec!["https://a.example:8443".to_string()])
        );
        assert_eq!(
            normalise_origins(&[
                "https://a.example:443".into(),
                "http://b.example.:80".into(),
                "http://c.example:443".into()
            ])
            .ok(),
            Some(vec![
                "https://a.example".to_string(),
                "http://b.example".to_string(),
                "http://c.example:443".to_string()
            ])
        );
        for bad in [
            "https://:443",
            "a.example",
            "https://a.example/",
            "https://a.example/x",
            "javascript:x",
            "https://",
            "*",
        ] {
            assert!(normalise_origins(&[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn refresh_leaves_a_margin() {
        assert_eq!(refresh_at(1000, 1600), 1420);
        assert_eq!(refresh_at(1000, 1008), 1006);
        assert_eq!(refresh_at(1000, 1001), 1000);
    }
}
