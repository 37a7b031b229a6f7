//! Share pages, the embed, the playback JSON, oEmbed, branding presets, the player's files and support references
//! (issue 13), through the router in-process. Adversarial: each test fails if the behaviour it names is broken.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use base64::Engine as _;
use common::service::{World, call, register_demo, ring, send, world, world_with, write_demo};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha384};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::player::{PlayerSettings, assets, page, reasons};
use sharegate_control_plane::service::revocations::link_key_hex;
use sharegate_control_plane::service::{HOT_CACHE_TTL, ServiceConfig};
use sharegate_control_plane::store::{Log, Ns};
use sharegate_shared::token::{IpPrefix, OwnedClaims, Policy, TokenBuf, Verifier};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::IpAddr;
use tower::ServiceExt;

/// The default `share_base_url` (our own pages' origin) and `edge_base_url`.
const OWN: &str = "http://127.0.0.1:7700";
const EDGE: &str = "http://127.0.0.1:7701";
const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

fn now() -> u64 {
    sharegate_control_plane::service::now()
}

/// One request with raw headers; the answer's status, headers and body bytes.
async fn raw(w: &World, method: &str, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = w.app.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

/// A page as a browser asks for it: status, headers, HTML.
async fn html_get(w: &World, uri: &str, extra: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
    let mut headers = vec![HTML];
    headers.extend_from_slice(extra);
    let (s, h, b) = raw(w, "GET", uri, &headers).await;
    (s, h, String::from_utf8(b).unwrap())
}

/// The `sg-config` JSON block of a page, parsed.
fn config_of(html: &str) -> Value {
    let block = html.split("id=\"sg-config\">").nth(1).expect("no sg-config block");
    let block = block.split("</script>").next().unwrap();
    serde_json::from_str(block).unwrap_or_else(|e| panic!("sg-config does not parse: {e}: {block}"))
}

/// The page's Content-Security-Policy, directive → sources.
fn csp(h: &HeaderMap) -> BTreeMap<String, Vec<String>> {
    let v = h["content-security-policy"].to_str().unwrap();
    let mut out = BTreeMap::new();
    for d in v.split(';') {
        let mut parts = d.split_whitespace();
        if let Some(name) = parts.next() {
            out.insert(name.to_string(), parts.map(str::to_string).collect());
        }
    }
    out
}

/// Every start tag `<name …>` in `html`.
fn tags<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<{name} ");
    html.match_indices(&open)
        .map(|(i, _)| {
            let rest = &html[i..];
            &rest[..=rest.find('>').unwrap()]
        })
        .collect()
}

/// The value of attribute `name` in a start tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let end = tag[i..].find('"')?;
    Some(tag[i..i + end].replace("&amp;", "&"))
}

async fn create_share(w: &World, body: Value) -> Value {
    let (s, b) = call(
        &w.app,
        "POST",
        "/v1/shares",
        Some(w.key(Role::Minter)),
        &body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

async fn share_id(w: &World, body: Value) -> String {
    create_share(w, body).await["id"].as_str().unwrap().to_string()
}

async fn public_share(w: &World) -> String {
    share_id(w, json!({"asset": "demo", "audience": "public"})).await
}

async fn delete_share(w: &World, id: &str) -> Value {
    let (s, b) = call(
        &w.app,
        "DELETE",
        &format!("/v1/shares/{id}"),
        Some(w.key(Role::Responder)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

/// Move a share's expiry into the past, as time would.
async fn expire_share(w: &World, id: &str) {
    let mut rec: Value = serde_json::from_slice(&w.state.store.get(Ns::Shares, id).await.unwrap().unwrap()).unwrap();
    rec["expires_at"] = json!(now() - 1);
    w.state
        .store
        .put(Ns::Shares, id, &serde_json::to_vec(&rec).unwrap())
        .await
        .unwrap();
}

/// `POST /v1/shares/{id}/playback` with `headers`.
async fn playback(w: &World, id: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Value) {
    send(&w.app, "POST", &format!("/v1/shares/{id}/playback"), None, headers, "").await
}

fn claims(token: &str) -> OwnedClaims {
    let mut buf = TokenBuf::new();
    Verifier::new(&ring(), Policy::default())
        .authenticate(token, &mut buf)
        .unwrap_or_else(|r| panic!("token does not verify: {r:?}"))
        .to_owned_claims()
}

async fn issued(w: &World) -> usize {
    w.state.store.read_log(Log::Issued, 1, 100_000).await.unwrap().len()
}

async fn put_preset(w: &World, role: Role, name: &str, body: Value) -> (StatusCode, Value) {
    call(
        &w.app,
        "PUT",
        &format!("/v1/presets/{name}"),
        Some(w.key(role)),
        &body.to_string(),
    )
    .await
}

async fn diagnose_reference(w: &World, reference: &str) -> (StatusCode, Value) {
    let body = json!({ "reference": reference }).to_string();
    call(&w.app, "POST", "/v1/diagnose", Some(w.key(Role::Responder)), &body).await
}

/// A world whose viewer address comes from `x-forwarded-for`, with the given IPv4 prefix.
async fn proxied_world(ipv4_prefix: u8) -> World {
    let config = ServiceConfig {
        player: PlayerSettings {
            bind_ipv4_prefix: ipv4_prefix,
            client_ip_header: Some("x-forwarded-for".into()),
            ..PlayerSettings::default()
        },
        ..ServiceConfig::default()
    };
    let w = world_with(config, |_| {}).await;
    write_demo(&w.media());
    register_demo(&w.app, w.key(Role::Admin), &w.media()).await;
    w
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

fn sri(b: &[u8]) -> String {
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(Sha384::digest(b))
    )
}

fn enc(s: &str) -> String {
    serde_urlencoded::to_string([("url", s)]).unwrap()
}

// ---- 1. /s/{id} negotiation ----

#[tokio::test]
async fn a_browser_gets_a_player_page_with_a_strict_policy_and_no_token() {
    let w = world().await;
    let id = public_share(&w).await;
    let before = issued(&w).await;
    let (s, h, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["vary"].to_str().unwrap().contains("Accept"));
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h.get("set-cookie").is_none());

    let cfg = config_of(&html);
    assert_eq!(cfg["mode"], "share");
    assert_eq!(cfg["share"], id.as_str());
    assert_eq!(cfg["playback_url"], format!("/v1/shares/{id}/playback"));
    assert!(cfg["refusal"].is_null(), "{cfg}");
    // The page carries no credential: nothing was minted, and no token URL or token field is in it.
    assert_eq!(issued(&w).await, before, "rendering the page must not mint a token");
    assert!(!html.contains("/t/"), "{html}");
    assert!(cfg.get("token").is_none() && cfg.get("url").is_none(), "{cfg}");

    let policy = csp(&h);
    let script_src = &policy["script-src"];
    assert_eq!(script_src.len(), 1, "{script_src:?}");
    let nonce = script_src[0]
        .strip_prefix("'nonce-")
        .and_then(|n| n.strip_suffix('\''))
        .unwrap_or_else(|| panic!("script-src is not a nonce: {script_src:?}"));
    assert!(nonce.len() >= 16, "{nonce}");
    assert!(!h["content-security-policy"].to_str().unwrap().contains("unsafe-inline"));
    assert_eq!(policy["frame-ancestors"], ["'none'"]);
    assert_eq!(policy["default-src"], ["'none'"]);
    // Every script element carries the nonce, except the JSON data block (which is not script).
    let scripts = tags(&html, "script");
    let executable: Vec<_> = scripts.iter().filter(|t| !t.contains("application/json")).collect();
    assert_eq!(executable.len(), 2, "hls.js and the player: {scripts:?}");
    for t in executable {
        assert_eq!(attr(t, "nonce").as_deref(), Some(nonce), "{t}");
        assert!(attr(t, "src").is_some() && attr(t, "integrity").is_some(), "{t}");
    }
    // A fresh nonce per response.
    let (_, h2, _) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_ne!(csp(&h2)["script-src"], policy["script-src"]);
}

#[tokio::test]
async fn scripts_get_json_on_request_and_players_the_redirect() {
    let w = world().await;
    let id = public_share(&w).await;
    // ?format=json wins over Accept: text/html.
    let (s, h, b) = send(&w.app, "GET", &format!("/s/{id}?format=json"), None, &[HTML], "").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    assert_eq!(b["share"], id.as_str());
    assert!(b["url"].as_str().unwrap().starts_with(&format!("{EDGE}/t/")), "{b}");
    claims(b["token"].as_str().unwrap());

    for accept in [None, Some("*/*"), Some("application/vnd.apple.mpegurl")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
        let (s, h, _) = raw(&w, "GET", &format!("/s/{id}"), &headers).await;
        assert_eq!(s, StatusCode::FOUND, "{accept:?}");
        assert!(h["location"].to_str().unwrap().starts_with(&format!("{EDGE}/t/")));
        assert_eq!(h["cache-control"], "no-store");
        assert_eq!(h["access-control-allow-origin"], "*");
    }
}

#[tokio::test]
async fn refused_share_urls_are_pages_for_browsers_and_json_for_scripts() {
    let w = world().await;
    let deleted = public_share(&w).await;
    delete_share(&w, &deleted).await;
    let expiring = share_id(
        &w,
        json!({"asset": "demo", "audience": "public", "expires_at": now() + 120}),
    )
    .await;
    expire_share(&w, &expiring).await;

    for (id, status, code) in [
        (deleted.as_str(), StatusCode::NOT_FOUND, "not_found"),
        ("sh_0000000000000000", StatusCode::NOT_FOUND, "not_found"),
        ("not-a-share", StatusCode::NOT_FOUND, "not_found"),
        (expiring.as_str(), StatusCode::GONE, "expired"),
    ] {
        let (s, h, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
        assert_eq!(s, status, "{id}: {html}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"), "{id}");
        assert_eq!(h["cache-control"], "no-store");
        let cfg = config_of(&html);
        assert_eq!(cfg["refusal"]["code"], code, "{id}");
        assert_eq!(cfg["refusal"]["status"], status.as_u16());
        let words = page::esc(reasons::MESSAGES.iter().find(|(c, _)| *c == code).unwrap().1.title);
        assert!(html.contains(&words), "{id}: the page must say {words:?}");
        assert!(!html.contains("<video"), "a refusal has no player");

        let (s, h, b) = send(&w.app, "GET", &format!("/s/{id}"), None, &[("accept", "*/*")], "").await;
        assert_eq!((s, b["error"].as_str()), (status, Some(code)), "{id}: {b}");
        assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    }
    let (_, _, html) = html_get(&w, &format!("/s/{expiring}"), &[]).await;
    assert!(html.contains("This link has expired"), "{html}");
}

// ---- 2. Playback JSON ----

#[tokio::test]
async fn playback_json_carries_a_token_bound_to_the_share_and_page_origin() {
    let w = world().await;
    let id = share_id(
        &w,
        json!({"asset": "demo", "audience": "public", "campaign": "spring",
               "embed_origins": ["https://partner.example"]}),
    )
    .await;
    for method in ["GET", "POST"] {
        let (s, h, b) = send(&w.app, method, &format!("/v1/shares/{id}/playback"), None, &[], "").await;
        assert_eq!(s, StatusCode::OK, "{method}: {b}");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(h["cache-control"], "no-store");
        let c = claims(b["token"].as_str().unwrap());
        assert_eq!(c.share.as_deref(), Some(id.as_str()));
        assert_eq!(c.asset.as_deref(), Some("demo"));
        assert_eq!(c.campaign.as_deref(), Some("spring"));
        assert_eq!(c.origin, None, "no Origin sent, no origin binding");
        assert_eq!(hex::encode(c.token_id), b["token_id"].as_str().unwrap());
        assert_eq!(
            (u64::from(c.iat), u64::from(c.exp)),
            (b["issued_at"].as_u64().unwrap(), b["expires_at"].as_u64().unwrap())
        );
        let (iat, exp, refresh) = (u64::from(c.iat), u64::from(c.exp), b["refresh_at"].as_u64().unwrap());
        assert!(iat < refresh && refresh < exp, "{iat} < {refresh} < {exp}");
        assert!(b["url"].as_str().unwrap().contains(b["token"].as_str().unwrap()));
    }
    for origin in [OWN, "https://partner.example"] {
        let (s, _, b) = playback(&w, &id, &[("origin", origin)]).await;
        assert_eq!(s, StatusCode::OK, "{origin}: {b}");
        assert_eq!(b["origin"], origin);
        assert_eq!(claims(b["token"].as_str().unwrap()).origin.as_deref(), Some(origin));
    }
    // Sandboxed frames send `null`, which any site can make (and read our `*` CORS answers from): refused when the
    // share names its sites; no binding, not a refusal, when any site may play it.
    let (s, _, b) = playback(&w, &id, &[("origin", "null")]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("embed_not_allowed")),
        "{b}"
    );
    let open_id = share_id(&w, json!({"asset": "demo", "audience": "public"})).await;
    let (s, _, b) = playback(&w, &open_id, &[("origin", "null")]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(claims(b["token"].as_str().unwrap()).origin, None);
    assert!(b["origin"].is_null());
    // Without Origin, the Referer's origin stands in (a native <video src> on another site sends only that).
    let (s, _, b) = playback(&w, &id, &[("referer", "https://evil.example/page")]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("embed_not_allowed")),
        "{b}"
    );
    let (s, _, b) = playback(&w, &id, &[("referer", "https://partner.example:443/page")]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["origin"], "https://partner.example");
    // The Host header names no site of ours: an Origin equal to it is just another site.
    let (s, _, b) = playback(&w, &id, &[("origin", "http://evil.example"), ("host", "evil.example")]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("embed_not_allowed")),
        "{b}"
    );
    for bad in [
        "partner.example",
        "https://partner.example/page",
        "ftp://partner.example",
        "https://",
    ] {
        let (s, _, b) = playback(&w, &id, &[("origin", bad)]).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{bad}: {b}"
        );
    }
}

#[tokio::test]
async fn another_site_is_refused_and_nothing_is_recorded() {
    let w = world().await;
    let id = share_id(
        &w,
        json!({"asset": "demo", "audience": "public", "embed_origins": ["https://partner.example"]}),
    )
    .await;
    let before = issued(&w).await;
    for uri in [
        format!("/v1/shares/{id}/playback"),
        format!("/s/{id}?format=json"),
        format!("/s/{id}"),
    ] {
        let (s, h, b) = send(&w.app, "GET", &uri, None, &[("origin", "https://evil.example")], "").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("embed_not_allowed")),
            "{uri}: {b}"
        );
        assert_eq!(h["access-control-allow-origin"], "*");
        assert!(b.get("token").is_none());
    }
    assert_eq!(issued(&w).await, before, "a refused open must not record a token");
    // A share without a list may play anywhere, bound to the site that asked.
    let open = public_share(&w).await;
    let (s, _, b) = playback(&w, &open, &[("origin", "https://anyone.example")]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        claims(b["token"].as_str().unwrap()).origin.as_deref(),
        Some("https://anyone.example")
    );
}

#[tokio::test]
async fn a_playback_token_never_outlives_its_share() {
    let w = world().await;
    let ends = now() + 700;
    let id = share_id(
        &w,
        json!({"asset": "demo", "audience": "public", "ttl": 3600, "expires_at": ends}),
    )
    .await;
    let (s, _, b) = playback(&w, &id, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["expires_at"].as_u64(), Some(ends));
    assert_eq!(u64::from(claims(b["token"].as_str().unwrap()).exp), ends);
    let refresh = b["refresh_at"].as_u64().unwrap();
    assert!(b["issued_at"].as_u64().unwrap() < refresh && refresh < ends, "{b}");
}

#[tokio::test]
async fn the_viewer_network_comes_from_the_last_forwarded_entry() {
    let w = proxied_world(24).await;
    let id = public_share(&w).await;
    let cases: [(&str, Option<(&str, u8)>); 5] = [
        ("198.51.100.9, 203.0.113.77", Some(("203.0.113.0", 24))),
        ("203.0.113.77", Some(("203.0.113.0", 24))),
        ("2001:db8:abcd:12:1::5", Some(("2001:db8:abcd::", 48))),
        ("::ffff:1.2.3.4", Some(("1.2.3.0", 24))),
        ("not-an-address", None),
    ];
    for (xff, want) in cases {
        let (s, _, b) = playback(&w, &id, &[("x-forwarded-for", xff)]).await;
        assert_eq!(s, StatusCode::OK, "{xff}: {b}");
        let c = claims(b["token"].as_str().unwrap());
        let want = want.map(|(a, l)| IpPrefix::new(a.parse::<IpAddr>().unwrap(), l).unwrap());
        assert_eq!(c.ip, want, "{xff}");
        let text = want.map(|p| format!("{}/{}", p.addr, p.len));
        assert_eq!(b["network"].as_str(), text.as_deref(), "{xff}");
    }
    // Two header lines: the last line's last entry.
    let (_, _, b) = playback(
        &w,
        &id,
        &[("x-forwarded-for", "10.9.9.9"), ("x-forwarded-for", "192.0.2.200")],
    )
    .await;
    assert_eq!(b["network"], "192.0.2.0/24");
}

#[tokio::test]
async fn prefix_zero_turns_the_network_binding_off() {
    let w = proxied_world(0).await;
    let id = public_share(&w).await;
    let (s, _, b) = playback(&w, &id, &[("x-forwarded-for", "203.0.113.77")]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(claims(b["token"].as_str().unwrap()).ip, None);
    assert!(b["network"].is_null());
    // IPv6 keeps its default /48.
    let (_, _, b) = playback(&w, &id, &[("x-forwarded-for", "2001:db8:1:2::3")]).await;
    assert_eq!(b["network"], "2001:db8:1::/48");
}

#[tokio::test]
async fn an_invited_share_plays_only_for_its_viewers() {
    let w = world().await;
    let id = share_id(
        &w,
        json!({"asset": "demo", "audience": "invited", "invited": ["alice"]}),
    )
    .await;
    let before = issued(&w).await;
    let (s, _, b) = playback(&w, &id, &[]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("sign_in_required")),
        "{b}"
    );
    let (s, _, b) = playback(&w, &id, &[("x-sharegate-viewer", "mallory")]).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_invited")),
        "{b}"
    );
    assert_eq!(issued(&w).await, before);
    let (s, _, b) = playback(&w, &id, &[("x-sharegate-viewer", "alice")]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(claims(b["token"].as_str().unwrap()).viewer.as_deref(), Some("alice"));
    // The page says it in words too.
    let (s, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(config_of(&html)["refusal"]["code"], "sign_in_required");
}

// ---- 3. /e/{id} ----

#[tokio::test]
async fn an_embed_is_framed_only_by_its_embed_origins() {
    let w = world().await;
    let listed = share_id(
        &w,
        json!({"asset": "demo", "audience": "public",
               "embed_origins": ["https://a.example", "https://b.example:8443"]}),
    )
    .await;
    let (s, h, html) = html_get(&w, &format!("/e/{listed}"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert_eq!(
        csp(&h)["frame-ancestors"],
        ["https://a.example", "https://b.example:8443"]
    );
    let cfg = config_of(&html);
    assert_eq!(cfg["mode"], "embed");
    assert_eq!(
        cfg["embed_origins"],
        json!(["https://a.example", "https://b.example:8443"])
    );
    assert!(html.contains("<video"));

    let anywhere = public_share(&w).await;
    let (s, h, _) = html_get(&w, &format!("/e/{anywhere}"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(csp(&h)["frame-ancestors"], ["*"]);

    let nowhere = share_id(&w, json!({"asset": "demo", "audience": "public", "embed_origins": []})).await;
    let (_, h, _) = html_get(&w, &format!("/e/{nowhere}"), &[]).await;
    assert_eq!(csp(&h)["frame-ancestors"], ["'none'"]);
}

#[tokio::test]
async fn an_embed_framed_by_another_site_shows_a_refusal() {
    let w = world().await;
    let id = share_id(
        &w,
        json!({"asset": "demo", "audience": "public", "embed_origins": ["https://a.example"]}),
    )
    .await;
    let framed_by = |referer: &'static str| [("sec-fetch-dest", "iframe"), ("referer", referer)];
    let (s, _, html) = html_get(&w, &format!("/e/{id}"), &framed_by("https://evil.example/page")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{html}");
    assert_eq!(config_of(&html)["refusal"]["code"], "embed_not_allowed");
    assert!(!html.contains("<video"));

    let (s, _, html) = html_get(&w, &format!("/e/{id}"), &framed_by("https://a.example/blog/post?x=1")).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(config_of(&html)["refusal"].is_null());
    assert!(html.contains("<video"));
}

// ---- 4. Presets ----

#[tokio::test]
async fn presets_are_written_by_admins_and_read_by_minters_and_auditors() {
    let w = world().await;
    let body = json!({"accent_color": "#ff0066", "controls": false, "overridable": ["autoplay"]});
    let (s, b) = put_preset(&w, Role::Admin, "brand", body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(
        (b["name"].as_str(), b["accent_color"].as_str()),
        (Some("brand"), Some("#ff0066"))
    );
    let (s, b) = put_preset(&w, Role::Admin, "brand", json!({"accent_color": "#00ff66"})).await;
    assert_eq!(s, StatusCode::OK, "replacing answers 200: {b}");

    for role in [Role::Minter, Role::Auditor] {
        let (s, b) = call(&w.app, "GET", "/v1/presets", Some(w.key(role)), "").await;
        assert_eq!(s, StatusCode::OK, "{role:?}: {b}");
        let names: Vec<_> = b
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["brand", "default"], "{role:?}");
        let (s, b) = call(&w.app, "GET", "/v1/presets/brand", Some(w.key(role)), "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["accent_color"], "#00ff66", "read back what was written");
    }
    for role in [Role::Minter, Role::Responder] {
        let (s, b) = put_preset(&w, role, "brand", body.clone()).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{role:?}"
        );
        let (s, _) = call(&w.app, "DELETE", "/v1/presets/brand", Some(w.key(role)), "").await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{role:?}");
    }
    let (s, _) = call(&w.app, "DELETE", "/v1/presets/brand", Some(w.key(Role::Admin)), "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&w.app, "DELETE", "/v1/presets/brand", Some(w.key(Role::Admin)), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&w.app, "GET", "/v1/presets/brand", Some(w.key(Role::Auditor)), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, b) = call(
        &w.app,
        "GET",
        "/v1/audit?action=presets",
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let actions: Vec<_> = b["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "brand" && e["outcome"] == "ok")
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["presets.put", "presets.put", "presets.delete"], "{b}");
}

#[tokio::test]
async fn bad_presets_and_unknown_preset_names_are_refused() {
    let w = world().await;
    for (name, body) in [
        ("brand", json!({"accent_color": "red"})),
        ("brand", json!({"text_color": "#12345g"})),
        ("brand", json!({"poster_url": "javascript:alert(1)"})),
        ("brand", json!({"logo_url": "data:image/png;base64,AAAA"})),
        ("brand", json!({"poster_url": "https://img.example/p.jpg\"><script>"})),
        ("brand", json!({"overridable": ["everything"]})),
        ("brand", json!({"colour": "#ffffff"})),
        ("Brand", json!({})),
        ("br%20and", json!({})),
    ] {
        let (s, b) = put_preset(&w, Role::Admin, name, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{name} {body}: {b}");
    }
    let (s, b) = call(&w.app, "GET", "/v1/presets", Some(w.key(Role::Admin)), "").await;
    assert_eq!(
        (s, b.as_array().unwrap().len()),
        (StatusCode::OK, 1),
        "only the built-in default: {b}"
    );
    let (s, b) = call(
        &w.app,
        "POST",
        "/v1/shares",
        Some(w.key(Role::Minter)),
        &json!({"asset": "demo", "audience": "public", "preset": "nope"}).to_string(),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{b}"
    );
}

#[tokio::test]
async fn a_share_page_takes_its_look_from_its_preset_and_only_allowed_overrides() {
    let w = world().await;
    let fixed = json!({"accent_color": "#ff0066", "poster_url": "https://img.example/posters/p.jpg",
                       "loop": true, "start_time": 12, "overridable": []});
    assert_eq!(put_preset(&w, Role::Admin, "fixed", fixed).await.0, StatusCode::CREATED);
    let open = json!({"accent_color": "#112233", "overridable": ["controls", "autoplay", "start_time"]});
    assert_eq!(put_preset(&w, Role::Admin, "open", open).await.0, StatusCode::CREATED);
    let fixed_id = share_id(&w, json!({"asset": "demo", "audience": "public", "preset": "fixed"})).await;
    let open_id = share_id(&w, json!({"asset": "demo", "audience": "public", "preset": "open"})).await;

    let (s, h, html) = html_get(&w, &format!("/s/{fixed_id}?controls=0&autoplay=1&t=99&loop=0"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    let p = &config_of(&html)["player"];
    assert_eq!(p["accent_color"], "#ff0066");
    assert_eq!(p["poster_url"], "https://img.example/posters/p.jpg");
    assert_eq!(
        (
            p["controls"].as_bool(),
            p["autoplay"].as_bool(),
            p["loop"].as_bool(),
            p["start_time"].as_u64()
        ),
        (Some(true), Some(false), Some(true), Some(12)),
        "nothing is overridable: {p}"
    );
    let video = tags(&html, "video")[0];
    assert!(video.contains(" controls"), "{video}");
    assert_eq!(
        attr(video, "poster").as_deref(),
        Some("https://img.example/posters/p.jpg")
    );
    // The poster's origin, and no other foreign origin, may serve images.
    let policy = csp(&h);
    assert_eq!(policy["img-src"], ["'self'", "data:", "https://img.example"]);
    for (directive, sources) in &policy {
        for src in sources {
            if src.starts_with("http") {
                assert!(
                    src == EDGE || (directive == "img-src" && src == "https://img.example"),
                    "{directive} allows {src}"
                );
            }
        }
    }

    let (_, _, html) = html_get(&w, &format!("/s/{open_id}?controls=0&autoplay=1&t=30"), &[]).await;
    let p = &config_of(&html)["player"];
    assert_eq!(p["accent_color"], "#112233");
    assert_eq!(
        (
            p["controls"].as_bool(),
            p["autoplay"].as_bool(),
            p["muted"].as_bool(),
            p["start_time"].as_u64()
        ),
        (Some(false), Some(true), Some(false), Some(30)),
        "allowed overrides apply; autoplay leaves `muted` alone (the player mutes only when it autoplays): {p}"
    );
    assert!(!tags(&html, "video")[0].contains(" controls"));
    // The playback JSON resolves the same way.
    let (_, _, b) = send(
        &w.app,
        "GET",
        &format!("/v1/shares/{open_id}/playback?autoplay=1"),
        None,
        &[],
        "",
    )
    .await;
    assert_eq!(
        (b["player"]["autoplay"].as_bool(), b["player"]["muted"].as_bool()),
        (Some(true), Some(false))
    );
    let (_, _, b) = send(
        &w.app,
        "GET",
        &format!("/v1/shares/{fixed_id}/playback?autoplay=1"),
        None,
        &[],
        "",
    )
    .await;
    assert_eq!(b["player"]["autoplay"], false, "{b}");

    // A share without a preset: the built-in default, whose overridable set excludes controls.
    let plain = public_share(&w).await;
    let (_, h, html) = html_get(&w, &format!("/s/{plain}?controls=0"), &[]).await;
    assert_eq!(config_of(&html)["player"]["controls"], true);
    assert_eq!(csp(&h)["img-src"], ["'self'", "data:"]);
}

#[tokio::test]
async fn a_preset_url_cannot_add_directives_to_the_page_policy() {
    let w = world().await;
    // `;` and `,` are visible ASCII, so the URL check lets them through; the origin cut from the URL must not carry
    // them into the Content-Security-Policy header.
    let (s, b) = put_preset(
        &w,
        Role::Admin,
        "sneaky",
        json!({"poster_url": "https://img.example;sandbox", "logo_url": "https://logo.example,script-src"}),
    )
    .await;
    if s == StatusCode::BAD_REQUEST {
        return; // refusing such URLs is a fine answer too
    }
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = share_id(&w, json!({"asset": "demo", "audience": "public", "preset": "sneaky"})).await;
    let (s, h, _) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    let header = h["content-security-policy"].to_str().unwrap();
    let policy = csp(&h);
    assert!(
        !policy.contains_key("sandbox"),
        "a poster URL added a directive: {header}"
    );
    assert!(!header.contains(','), "a logo URL split the policy in two: {header}");
}

#[tokio::test]
async fn a_share_whose_preset_was_deleted_falls_back_to_the_default_look() {
    let w = world().await;
    assert_eq!(
        put_preset(&w, Role::Admin, "gone", json!({"accent_color": "#ff0066"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let id = share_id(&w, json!({"asset": "demo", "audience": "public", "preset": "gone"})).await;
    let (s, _) = call(&w.app, "DELETE", "/v1/presets/gone", Some(w.key(Role::Admin)), "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    // Every replica sees a change within the hot cache's lifetime (whether this one sees it at once is
    // `preset_changes_apply_at_once_on_the_replica_that_made_them`).
    tokio::time::sleep(HOT_CACHE_TTL + std::time::Duration::from_millis(200)).await;
    let (s, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert_eq!(config_of(&html)["player"]["accent_color"], "#3b82f6");
    let (s, _, b) = playback(&w, &id, &[]).await;
    assert_eq!(
        (s, b["player"]["accent_color"].as_str()),
        (StatusCode::OK, Some("#3b82f6"))
    );
}

#[tokio::test]
async fn preset_changes_apply_at_once_on_the_replica_that_made_them() {
    let w = world().await;
    assert_eq!(
        put_preset(&w, Role::Admin, "live", json!({"accent_color": "#ff0066"}))
            .await
            .0,
        StatusCode::CREATED
    );
    let id = share_id(&w, json!({"asset": "demo", "audience": "public", "preset": "live"})).await;
    let look = |w: &World, id: String| {
        let app = w.app.clone();
        async move {
            let (s, _, b) = send(&app, "GET", &format!("/v1/shares/{id}/playback"), None, &[], "").await;
            assert_eq!(s, StatusCode::OK, "{b}");
            b["player"]["accent_color"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(look(&w, id.clone()).await, "#ff0066");
    // Replaced: the admin who just got 200 expects the new look on the next page.
    assert_eq!(
        put_preset(&w, Role::Admin, "live", json!({"accent_color": "#00ff66"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        look(&w, id.clone()).await,
        "#00ff66",
        "a replaced preset still shows its old look"
    );
    // Deleted: the default look.
    let (s, _) = call(&w.app, "DELETE", "/v1/presets/live", Some(w.key(Role::Admin)), "").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    assert_eq!(look(&w, id).await, "#3b82f6", "a deleted preset still shows its look");
}

#[tokio::test]
async fn a_preset_created_after_a_refused_share_can_be_named_at_once() {
    let w = world().await;
    let body = json!({"asset": "demo", "audience": "public", "preset": "late"}).to_string();
    let (s, _) = call(&w.app, "POST", "/v1/shares", Some(w.key(Role::Minter)), &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "the preset does not exist yet");
    assert_eq!(
        put_preset(&w, Role::Admin, "late", json!({})).await.0,
        StatusCode::CREATED
    );
    let (s, b) = call(&w.app, "POST", "/v1/shares", Some(w.key(Role::Minter)), &body).await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the preset now exists, but the share is refused: {b}"
    );
}

// ---- 5. oEmbed ----

#[tokio::test]
async fn oembed_describes_share_and_embed_urls() {
    let w = world().await;
    let title = "\"Tom & Jerry\" <b>bold</b>";
    let share = create_share(&w, json!({"asset": "demo", "audience": "public", "title": title})).await;
    let id = share["id"].as_str().unwrap();
    let embed_url = format!("{OWN}/e/{id}");
    assert_eq!(share["embed_url"], embed_url.as_str());
    for url in [
        format!("{OWN}/s/{id}"),
        embed_url.clone(),
        format!("{OWN}/s/{id}?autoplay=1"),
    ] {
        let (s, h, b) = send(&w.app, "GET", &format!("/oembed?{}", enc(&url)), None, &[], "").await;
        assert_eq!(s, StatusCode::OK, "{url}: {b}");
        assert_eq!(h["access-control-allow-origin"], "*");
        assert_eq!(
            (b["version"].as_str(), b["type"].as_str()),
            (Some("1.0"), Some("video"))
        );
        assert_eq!(b["title"], title);
        let html = b["html"].as_str().unwrap();
        let iframe = tags(html, "iframe");
        assert_eq!(iframe.len(), 1, "{html}");
        assert_eq!(attr(iframe[0], "src").as_deref(), Some(embed_url.as_str()));
        assert!(
            html.contains("title=\"&quot;Tom &amp; Jerry&quot; &lt;b&gt;bold&lt;/b&gt;\""),
            "{html}"
        );
        assert!(!html.contains("<b>"), "{html}");
        assert_eq!((b["width"].as_u64(), b["height"].as_u64()), (Some(640), Some(360)));
    }
    let share_url = format!("{OWN}/s/{id}");
    for (q, w_max, h_max) in [
        ("&maxwidth=320", 320, 180),
        ("&maxwidth=1280&maxheight=360", 1280, 360),
        ("&maxheight=200", 640, 200),
    ] {
        let (s, _, b) = send(&w.app, "GET", &format!("/oembed?{}{q}", enc(&share_url)), None, &[], "").await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
        let (bw, bh) = (b["width"].as_u64().unwrap(), b["height"].as_u64().unwrap());
        assert!(bw <= w_max && bh <= h_max, "{q}: {bw}x{bh}");
        assert!((bw * 9).abs_diff(bh * 16) <= 16, "{q}: {bw}x{bh} is not 16:9");
        assert!(
            b["html"]
                .as_str()
                .unwrap()
                .contains(&format!("width=\"{bw}\" height=\"{bh}\""))
        );
    }
}

#[tokio::test]
async fn oembed_respects_a_small_maxwidth() {
    let w = world().await;
    let id = public_share(&w).await;
    let url = format!("{OWN}/s/{id}");
    let (s, _, b) = send(
        &w.app,
        "GET",
        &format!("/oembed?{}&maxwidth=120&maxheight=60", enc(&url)),
        None,
        &[],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    // oEmbed 1.0 §2.2: "this parameter must be respected by providers".
    assert!(
        b["width"].as_u64().unwrap() <= 120 && b["height"].as_u64().unwrap() <= 60,
        "maxwidth 120 / maxheight 60 answered with {}x{}",
        b["width"],
        b["height"]
    );
}

#[tokio::test]
async fn oembed_refuses_what_it_does_not_describe() {
    let w = world().await;
    let id = public_share(&w).await;
    let deleted = public_share(&w).await;
    delete_share(&w, &deleted).await;
    let no_embed = share_id(&w, json!({"asset": "demo", "audience": "public", "embed_origins": []})).await;
    for url in [
        format!("{OWN}/e/{no_embed}"),
        format!("{OWN}/s/sh_0000000000000000"),
        format!("{OWN}/s/{deleted}"),
        format!("{OWN}/e/{deleted}"),
        format!("https://evil.example/s/{id}"),
        format!("{OWN}.evil.example/s/{id}"),
        format!("{OWN}/x/{id}"),
        id.clone(),
    ] {
        let (s, _, b) = send(&w.app, "GET", &format!("/oembed?{}", enc(&url)), None, &[], "").await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{url}: {b}"
        );
    }
    let url = format!("{OWN}/s/{id}");
    let (s, _, _) = send(
        &w.app,
        "GET",
        &format!("/oembed?{}&format=xml", enc(&url)),
        None,
        &[],
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    let (s, _, _) = send(&w.app, "GET", "/oembed", None, &[], "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_share_page_advertises_a_working_oembed_url() {
    let w = world().await;
    let id = share_id(&w, json!({"asset": "demo", "audience": "public", "title": "Launch"})).await;
    let (_, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    let link = tags(&html, "link")
        .into_iter()
        .find(|t| t.contains("application/json+oembed"))
        .unwrap_or_else(|| panic!("no oEmbed discovery link: {html}"));
    assert_eq!(attr(link, "rel").as_deref(), Some("alternate"));
    let href = attr(link, "href").unwrap();
    let path = href
        .strip_prefix(OWN)
        .unwrap_or_else(|| panic!("{href} is not on {OWN}"));
    let (s, _, b) = send(&w.app, "GET", path, None, &[], "").await;
    assert_eq!(s, StatusCode::OK, "{href}: {b}");
    assert_eq!(
        (b["type"].as_str(), b["title"].as_str()),
        (Some("video"), Some("Launch"))
    );
}

// ---- 6. Static files ----

#[tokio::test]
async fn player_files_are_immutable_and_match_their_integrity() {
    let w = world().await;
    let id = public_share(&w).await;
    let (_, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    let mut files: Vec<(String, String)> = tags(&html, "script")
        .into_iter()
        .filter_map(|t| Some((attr(t, "src")?, attr(t, "integrity")?)))
        .collect();
    let style = tags(&html, "link")
        .into_iter()
        .find(|t| t.contains("rel=\"stylesheet\""))
        .unwrap();
    files.push((attr(style, "href").unwrap(), attr(style, "integrity").unwrap()));
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files
            .iter()
            .any(|(p, _)| p == &format!("/player/hls-{}.min.js", assets::HLS_JS_VERSION))
    );
    for (path, integrity) in files {
        let want_type = if path.ends_with(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        let (s, h, plain) = raw(&w, "GET", &path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(
            h["content-type"].to_str().unwrap().starts_with(want_type),
            "{path}: {:?}",
            h["content-type"]
        );
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"), "{path}");
        assert!(
            h.get("content-encoding").is_none(),
            "{path}: gzip without Accept-Encoding"
        );
        assert_eq!(sri(&plain), integrity, "{path}");

        let (s, h, body) = raw(&w, "GET", &path, &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(s, StatusCode::OK);
        let body = if h.get("content-encoding").is_some_and(|e| e == "gzip") {
            assert!(body.len() < plain.len(), "{path}: gzip is not smaller");
            gunzip(&body)
        } else {
            body
        };
        assert_eq!(sri(&body), integrity, "{path} (gzip)");
        assert!(h["cache-control"].to_str().unwrap().contains("immutable"));
        assert!(h["vary"].to_str().unwrap().contains("Accept-Encoding"));
    }
}

#[tokio::test]
async fn unknown_player_files_and_traversal_are_not_found() {
    let w = world().await;
    for path in [
        "/player/nope.js",
        "/player/hls-0.0.1.min.js",
        "/player/..%2fCargo.toml",
        "/player/..%2f..%2fCargo.toml",
        "/player/%2e%2e/x",
        "/player/%2e%2e%2fsrc%2flib.rs",
        "/player/..%5cCargo.toml",
        "/player/",
    ] {
        let (s, _, body) = raw(&w, "GET", path, &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("[package]"), "{path}");
    }
}

#[test]
fn the_vendored_hls_js_is_the_pinned_npm_build() {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let vendored = std::fs::read(manifest.join("player/vendor/hls.js/hls.min.js")).unwrap();
    let npm = manifest.join("../node_modules/hls.js");
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !npm.exists() {
        assert!(!ci, "node_modules/hls.js must be installed under CI (npm ci)");
        eprintln!("node_modules/hls.js absent: skipping the byte comparison");
        return;
    }
    let pkg: Value = serde_json::from_slice(&std::fs::read(npm.join("package.json")).unwrap()).unwrap();
    assert_eq!(pkg["version"], "1.7.4");
    assert_eq!(assets::HLS_JS_VERSION, "1.7.4");
    let from_npm = std::fs::read(npm.join("dist/hls.min.js")).unwrap();
    assert!(
        vendored == from_npm,
        "control-plane/player/vendor/hls.js/hls.min.js differs from npm's dist/hls.min.js"
    );
    let root: Value = serde_json::from_slice(&std::fs::read(manifest.join("../package.json")).unwrap()).unwrap();
    assert_eq!(root["devDependencies"]["hls.js"], "1.7.4", "pinned exactly");
}

// ---- 7. Refusal previews ----

#[tokio::test]
async fn every_reason_code_has_a_preview_page() {
    let w = world().await;
    let mut seen = 0;
    for (code, message) in reasons::MESSAGES.iter().filter(|(c, _)| *c != "default") {
        let (s, h, html) = html_get(&w, &format!("/player/refused/{code}"), &[]).await;
        assert_eq!(s, StatusCode::OK, "{code}");
        assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
        assert!(html.contains(&page::esc(message.title)), "{code}: {html}");
        assert!(html.contains(&page::esc(message.body)), "{code}");
        assert_eq!(config_of(&html)["refusal"]["code"], *code);
        seen += 1;
    }
    assert!(seen >= 20, "{seen}");
    for unknown in ["nope", "default", "..%2f"] {
        let (s, _, html) = html_get(&w, &format!("/player/refused/{unknown}"), &[]).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{unknown}");
        assert_eq!(config_of(&html)["refusal"]["code"], "not_found");
    }
}

// ---- 8. Support references ----

#[tokio::test]
async fn a_reference_explains_a_revocation_by_share_delete() {
    let w = world().await;
    let id = public_share(&w).await;
    let (s, _, b) = playback(&w, &id, &[]).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token_id = b["token_id"].as_str().unwrap().to_string();
    // As if the viewer had opened the page a minute ago, so there is a second between the open and the delete.
    let key = link_key_hex(&token_id).unwrap();
    let mut link: Value = serde_json::from_slice(&w.state.store.get(Ns::Links, &key).await.unwrap().unwrap()).unwrap();
    link["iat"] = json!(link["iat"].as_u64().unwrap() - 60);
    w.state
        .store
        .put(Ns::Links, &key, &serde_json::to_vec(&link).unwrap())
        .await
        .unwrap();

    let deleted = delete_share(&w, &id).await;
    let receipt = &deleted["revocation_receipt"];
    let revoked_at = receipt["at"].as_u64().unwrap();
    let t = now();

    let (s, d) = diagnose_reference(&w, &format!("sg-{token_id}-{t}")).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str()),
        (Some("deny"), Some("revoked")),
        "{d}"
    );
    assert_eq!(d["revocation"]["id"], receipt["id"], "{d}");
    assert_eq!(d["revocation"]["kind"], "share");
    assert_eq!(d["revocation"]["target"], id.as_str());

    let (_, d) = diagnose_reference(&w, &format!("sg-{token_id}-{}", revoked_at - 1)).await;
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str()),
        (Some("allow"), Some("ok")),
        "{d}"
    );
    assert!(d["revocation"].is_null());

    let (_, d) = diagnose_reference(&w, &format!("sg-{id}-{t}")).await;
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str()),
        (Some("deny"), Some("not_found")),
        "{d}"
    );
    // The refusal page for the deleted share carries a reference the diagnosis understands.
    let (_, _, html) = html_get(&w, &format!("/s/{id}"), &[]).await;
    let reference = config_of(&html)["refusal"]["reference"].as_str().unwrap().to_string();
    assert!(reference.starts_with(&format!("sg-{id}-")), "{reference}");
    assert!(html.contains(&reference));
    let (_, d) = diagnose_reference(&w, &reference).await;
    assert_eq!(d["reason"], "not_found", "{d}");

    for garbage in [
        "",
        "sg-",
        "sg-xyz-1",
        "hello",
        &format!("sg-{token_id}-soon"),
        "sg-sh_../x-1",
    ] {
        let (s, b) = diagnose_reference(&w, garbage).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{garbage:?}: {b}"
        );
    }
}

#[tokio::test]
async fn a_reference_after_the_token_expired_says_expired() {
    let w = world().await;
    let id = public_share(&w).await;
    let (_, _, b) = playback(&w, &id, &[]).await;
    let (token_id, exp) = (b["token_id"].as_str().unwrap(), b["expires_at"].as_u64().unwrap());
    let (s, d) = diagnose_reference(&w, &format!("sg-{token_id}-{}", exp + 30)).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str(), d["status"].as_u64()),
        (Some("deny"), Some("expired"), Some(410)),
        "{d}"
    );
    let (_, d) = diagnose_reference(&w, &format!("sg-{token_id}-{}", exp - 30)).await;
    assert_eq!(d["reason"], "ok", "{d}");
    let (_, d) = diagnose_reference(&w, &format!("sg-{}-{}", "0".repeat(24), now())).await;
    assert_eq!(d["reason"], "unknown_token", "{d}");
}

// ---- 9. Hostile input ----

#[tokio::test]
async fn hostile_input_is_answered_without_a_server_error() {
    let w = world().await;
    let hostile = "</script><script>alert(1)</script>\"'&";
    let id = share_id(&w, json!({"asset": "demo", "audience": "public", "title": hostile})).await;
    for path in [format!("/s/{id}"), format!("/e/{id}")] {
        let (s, _, html) = html_get(&w, &path, &[]).await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert!(!html.contains("<script>alert"), "{path}: the title escaped its place");
        assert!(!html.contains("</script><script>"), "{path}");
        assert_eq!(
            config_of(&html)["title"],
            hostile,
            "{path}: the JSON block must parse back to the title"
        );
    }
    let (_, _, b) = send(
        &w.app,
        "GET",
        &format!("/oembed?{}", enc(&format!("{OWN}/s/{id}"))),
        None,
        &[],
        "",
    )
    .await;
    assert!(!b["html"].as_str().unwrap().contains("<script>"), "{b}");

    let huge = format!("https://{}.example", "a".repeat(100_000));
    for uri in [
        format!("/v1/shares/{id}/playback"),
        format!("/s/{id}?format=json"),
        format!("/s/{id}"),
    ] {
        let (s, _, b) = send(&w.app, "GET", &uri, None, &[("origin", huge.as_str())], "").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: a 100 KB Origin: {b}");
    }
    let (s, _, _) = raw(
        &w,
        "GET",
        &format!("/e/{id}"),
        &[HTML, ("referer", huge.as_str()), ("sec-fetch-dest", "iframe")],
    )
    .await;
    assert!(!s.is_server_error(), "{s}");

    let long_value = format!("t={}", "9".repeat(10_000));
    let many_pairs = "autoplay=1&".repeat(1000);
    let junk = format!("x={}", "%zz%3C%3E%22".repeat(1000));
    for q in [long_value, many_pairs, junk] {
        for path in [format!("/s/{id}"), format!("/e/{id}")] {
            let uri = format!("{path}?{q}");
            let (s, _, html) = html_get(&w, &uri, &[]).await;
            assert!(!s.is_server_error(), "{path}?{}…: {s}", &q[..20]);
            assert_eq!(s, StatusCode::OK, "{path}?{}…", &q[..20]);
            config_of(&html);
        }
        let (s, _, _) = send(&w.app, "GET", &format!("/v1/shares/{id}/playback?{q}"), None, &[], "").await;
        assert!(!s.is_server_error());
    }
}
