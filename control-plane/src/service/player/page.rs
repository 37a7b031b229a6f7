//! The HTML of the share page, the embed and the refusal pages, and the headers every one of them carries.
//!
//! One skeleton for all (the ids and classes are the contract with `control-plane/player/player.js`, see
//! docs/player.md); the settings travel in a JSON block the script reads, never in inline script. The
//! Content-Security-Policy allows only our two scripts (by a per-response nonce, and each pinned by subresource
//! integrity), our stylesheet, media and requests to the edge, and images from the preset's own logo and poster
//! origins. No cookie is set or read.

use super::assets::ASSETS;
use super::presets::PlayerLook;
use super::reasons;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Serialize;

/// Which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `/s/<id>`: a page of its own, with a header.
    Share,
    /// `/e/<id>`: made for an iframe, no chrome.
    Embed,
}

/// Who may frame the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Nobody (share pages).
    Nobody,
    /// Any site.
    Anyone,
    /// These origins.
    Only(Vec<String>),
}

impl Framing {
    fn csp(&self) -> String {
        match self {
            Framing::Nobody => "'none'".into(),
            Framing::Anyone => "*".into(),
            Framing::Only(list) if list.is_empty() => "'none'".into(),
            Framing::Only(list) => list.join(" "),
        }
    }
}

/// Why the page shows a refusal instead of a player.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// The reason code.
    pub code: String,
    /// The HTTP status the page is served with.
    pub status: u16,
    /// The support reference (`sg-<share id>-<unix seconds>`), which `POST /v1/diagnose` explains.
    pub reference: String,
}

/// Everything a page shows.
#[derive(Debug)]
pub struct Page<'a> {
    /// Share page or embed.
    pub mode: Mode,
    /// The share id (absent on previews of refusals).
    pub share: Option<&'a str>,
    /// The title.
    pub title: &'a str,
    /// The resolved look.
    pub look: &'a PlayerLook,
    /// A refusal to show instead of the player.
    pub refusal: Option<Refusal>,
    /// The page's oEmbed discovery URL.
    pub oembed: Option<String>,
    /// The sites that may embed it (sent to the script for its postMessage origin checks).
    pub embed_origins: Option<&'a [String]>,
    /// `frame-ancestors`.
    pub framing: Framing,
    /// The edge's origin (`connect-src`, `media-src`).
    pub edge_origin: &'a str,
    /// The view's analytics settings (view id, beacon URL, attribution), when analytics are on.
    pub analytics: Option<serde_json::Value>,
}

/// Escape text for HTML content and double-quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON safe inside `<script type="application/json">`: no `<`, `>` or `&` can end the element early.
fn json_block(v: &serde_json::Value) -> String {
    v.to_string()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// `scheme://host[:port]` of an absolute http(s) URL.
pub fn origin_of(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    (end > 0).then(|| &url[..url.len() - rest.len() + end])
}

/// A fresh CSP nonce (also the dashboard's).
pub(crate) fn nonce() -> String {
    let mut b = [0u8; 16];
    // Without OS randomness a fixed nonce would still be no worse than 'unsafe-inline': there is no inline script.
    let _ = getrandom::fill(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn csp(page: &Page<'_>, nonce: &str) -> String {
    let mut img = vec!["'self'".to_string(), "data:".to_string()];
    for u in [&page.look.logo_url, &page.look.poster_url].into_iter().flatten() {
        // Only a plain `scheme://host[:port]` becomes a source: nothing in a URL can add a directive.
        if let Some(o) = origin_of(u).and_then(super::parse_origin)
            && !img.contains(&o)
        {
            img.push(o);
        }
    }
    let edge = page.edge_origin;
    // `data:` in media-src: hls.js gives each subtitle track a `data:,WEBVTT` source (Chromium's captions menu needs
    // one); a data: URL can only carry what the page itself wrote.
    format!(
        "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src {img}; media-src {edge} blob: data:; \
         connect-src 'self' {edge}; worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors {fa}",
        img = img.join(" "),
        fa = page.framing.csp(),
    )
}

/// The whole answer: status, headers, HTML.
pub fn render(page: &Page<'_>) -> Response {
    let nonce = nonce();
    let html = html(page, &nonce);
    let status = page
        .refusal
        .as_ref()
        .and_then(|r| StatusCode::from_u16(r.status).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // A page names its share's settings and a fresh nonce: never cached, never shared.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    if let Ok(v) = HeaderValue::from_str(&csp(page, &nonce)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    if page.mode == Mode::Share {
        h.insert(
            header::HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        );
    }
    h.insert(
        header::HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    resp
}

fn config(page: &Page<'_>) -> serde_json::Value {
    let messages: serde_json::Map<String, serde_json::Value> = reasons::MESSAGES
        .iter()
        .map(|(code, m)| {
            (
                (*code).to_string(),
                serde_json::json!({ "title": m.title, "body": m.body }),
            )
        })
        .collect();
    serde_json::json!({
        "mode": page.mode,
        "share": page.share,
        "playback_url": page.share.map(|id| format!("/v1/shares/{id}/playback")),
        "title": page.title,
        "edge_origin": page.edge_origin,
        "player": page.look,
        "messages": messages,
        "contact": reasons::CONTACT,
        "refusal": page.refusal,
        "embed_origins": page.embed_origins,
        "analytics": page.analytics,
    })
}

fn html(page: &Page<'_>, nonce: &str) -> String {
    let a = &*ASSETS;
    let title = esc(page.title);
    let look = page.look;
    let mut out = String::with_capacity(4096);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<meta name=\"robots\" content=\"noindex\">\n");
    // No favicon request (a 404 per page view otherwise).
    out.push_str("<link rel=\"icon\" href=\"data:,\">\n");
    let heading = match &page.refusal {
        Some(r) => esc(reasons::message(&r.code).title),
        None => title.clone(),
    };
    out.push_str(&format!("<title>{heading}</title>\n"));
    if let Some(href) = &page.oembed {
        out.push_str(&format!(
            "<link rel=\"alternate\" type=\"application/json+oembed\" href=\"{}\" title=\"{title}\">\n",
            esc(href)
        ));
    }
    out.push_str(&format!(
        "<link rel=\"stylesheet\" href=\"{}\" integrity=\"{}\">\n",
        a.style.path(),
        a.style.integrity
    ));
    if page.refusal.is_none() {
        out.push_str(&format!(
            "<script nonce=\"{nonce}\" src=\"{}\" integrity=\"{}\" defer></script>\n",
            a.hls.path(),
            a.hls.integrity
        ));
    }
    out.push_str(&format!(
        "<script nonce=\"{nonce}\" src=\"{}\" integrity=\"{}\" defer></script>\n</head>\n",
        a.script.path(),
        a.script.integrity
    ));
    let body_class = match page.mode {
        Mode::Share => "sg-share",
        Mode::Embed => "sg-embed",
    };
    out.push_str(&format!("<body class=\"{body_class}\">\n<main class=\"sg-shell\">\n"));
    if page.mode == Mode::Share && look.show_title {
        out.push_str("<header class=\"sg-header\">");
        if let Some(logo) = &look.logo_url {
            out.push_str(&format!("<img class=\"sg-logo\" src=\"{}\" alt=\"\">", esc(logo)));
        }
        out.push_str(&format!("<h1 class=\"sg-title\">{title}</h1></header>\n"));
    }
    out.push_str("<div class=\"sg-stage\" id=\"sg-stage\">\n");
    if page.refusal.is_none() {
        out.push_str("<video id=\"sg-video\" class=\"sg-video\" playsinline preload=\"auto\"");
        if look.controls {
            out.push_str(" controls");
        }
        if let Some(p) = &look.poster_url {
            out.push_str(&format!(" poster=\"{}\"", esc(p)));
        }
        out.push_str(&format!(" aria-label=\"Video: {title}\"></video>\n"));
    }
    out.push_str("<div id=\"sg-status\" class=\"sg-status\" role=\"status\" aria-live=\"polite\"></div>\n");
    let (hidden, r_title, r_body, r_ref) = match &page.refusal {
        Some(r) => {
            let m = reasons::message(&r.code);
            ("", esc(m.title), esc(m.body), esc(&r.reference))
        }
        None => (" hidden", String::new(), String::new(), String::new()),
    };
    out.push_str(&format!(
        "<section id=\"sg-refusal\" class=\"sg-refusal\" role=\"alert\"{hidden}>\n\
         <h2 id=\"sg-refusal-title\">{r_title}</h2>\n<p id=\"sg-refusal-body\">{r_body}</p>\n\
         <p class=\"sg-contact\">{}</p>\n\
         <p class=\"sg-ref\">Support reference: <code id=\"sg-refusal-ref\">{r_ref}</code></p>\n</section>\n",
        esc(reasons::CONTACT)
    ));
    out.push_str("</div>\n</main>\n");
    out.push_str(&format!(
        "<script type=\"application/json\" id=\"sg-config\">{}</script>\n</body>\n</html>\n",
        json_block(&config(page))
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page<'a>(look: &'a PlayerLook, title: &'a str) -> Page<'a> {
        Page {
            mode: Mode::Share,
            share: Some("sh_0123456789abcdef"),
            title,
            look,
            refusal: None,
            oembed: None,
            embed_origins: None,
            framing: Framing::Nobody,
            edge_origin: "https://cdn.example",
            analytics: None,
        }
    }

    #[test]
    fn hostile_titles_cannot_escape_their_place() {
        let look = PlayerLook::default();
        let html = html(&page(&look, "</script><script>alert(1)</script>\"'"), "n");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;/script&gt;"));
        // In the JSON block, `<` is escaped, so `</script>` cannot close it.
        let block = html.split("id=\"sg-config\">").nth(1).unwrap_or_default();
        let block = block.split("</script>").next().unwrap_or_default();
        assert!(!block.contains('<'));
        let v: serde_json::Value = serde_json::from_str(block).expect("the config block is JSON");
        assert_eq!(v["title"], "</script><script>alert(1)</script>\"'");
    }

    #[test]
    fn the_policy_is_strict() {
        let look = PlayerLook {
            poster_url: Some("https://img.example/p.jpg".into()),
            ..PlayerLook::default()
        };
        let p = page(&look, "t");
        let c = csp(&p, "abc");
        assert!(c.contains("script-src 'nonce-abc';"), "{c}");
        assert!(!c.contains("unsafe"), "{c}");
        assert!(c.contains("img-src 'self' data: https://img.example;"), "{c}");
        assert!(c.contains("frame-ancestors 'none'"), "{c}");
        // A URL cannot add a directive or a second policy: only a plain origin becomes a source.
        let sneaky = PlayerLook {
            poster_url: Some("https://img.example;sandbox".into()),
            logo_url: Some("https://logo.example,script-src/x.png".into()),
            ..PlayerLook::default()
        };
        let c2 = csp(&page(&sneaky, "t"), "n");
        assert!(c2.contains("img-src 'self' data:;"), "{c2}");
        assert!(c.contains("media-src https://cdn.example blob: data:;"), "{c}");
        let embed = Page {
            framing: Framing::Only(vec!["https://a.example".into()]),
            ..page(&look, "t")
        };
        assert!(csp(&embed, "n").ends_with("frame-ancestors https://a.example"));
    }

    #[test]
    fn origins_are_cut_from_urls() {
        assert_eq!(origin_of("https://a.example:8443/x?y"), Some("https://a.example:8443"));
        assert_eq!(origin_of("http://a.example"), Some("http://a.example"));
        assert_eq!(origin_of("ftp://a.example/"), None);
        assert_eq!(origin_of("https:///x"), None);
    }
}
