//! Observability for support: why a link fails, in words a support agent can read ([`diagnose`],
//! `POST /v1/diagnose`). Edge event ingestion, the audit query and metrics are in [`super::audit_events`].

use super::AppState;
use axum::Router;
use std::sync::Arc;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().merge(diagnose::routes())
}

pub mod diagnose {
    //! `POST /v1/diagnose` (roles `responder`, `auditor`, `minter`): what the edge would decide for a link, and why.
    //!
    //! The decision itself comes from the edge's own engine ([`Engine::decide`]) keyed with the service's signing
    //! keys and policy and fed the current revocation state ([`build_current_snapshot`]), so the answer cannot drift
    //! from what edges do. Around it this module adds what the edge cannot afford or must not say: the claims of a
    //! token whose signature fails (decoded without verification, and marked so), times in UTC with how long ago or
    //! ahead, a clock-skew suspicion, the revocation receipt that revoked a token, and the asset a token is for when
    //! the URL asks for another.
    //!
    //! It does not fetch anything from the origin or an edge, and does not change state. Building the revocation
    //! state reads the issued and revocation logs, so it is meant for support requests, not for traffic.

    use crate::service::auth::Diagnose;
    use crate::service::error::ApiError;
    use crate::service::extract::{Authorized, JsonBody};
    use crate::service::revocations::{Receipt, RevocationKind};
    use crate::service::shares::ShareRecord;
    use crate::service::snapshot::build_current_snapshot;
    use crate::service::{AppState, now};
    use crate::store::Ns;
    use crate::tokens::claims_json;
    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde::{Deserialize, Serialize};
    use sharegate_edge::config::{EdgeConfig, StalePolicy};
    use sharegate_edge::engine::{Decision, Engine, Request, StateInput, classify};
    use sharegate_shared::revocation::{Revoked, ScopeKind, StateView, Subject};
    use sharegate_shared::token::{Claims, Countries, Permissions, RequestFacts, Resource, TokenBuf, Verifier};
    use sharegate_shared::token::{MAX_TOKEN_CHARS, decode_unverified};
    use sharegate_shared::{Reason, normalize_path};
    use std::fmt::Write as _;
    use std::net::IpAddr;
    use std::sync::Arc;

    /// A `not_yet_valid` within this many seconds of `nbf` looks like clock skew rather than a token minted to start
    /// later.
    pub const SKEW_SUSPECT_SECS: u64 = 300;

    /// The query parameter tokens ride in when not in the path (the edge's default).
    const TOKEN_PARAM: &str = "sg";

    /// Longest `url` accepted.
    const MAX_URL_LEN: usize = 8192;

    /// `POST /v1/diagnose` body: a link (or a bare token) and what is known about the viewer's request.
    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct DiagnoseRequest {
        /// The URL the viewer's player requested (`…/t/<token>/<asset path>` or `…?sg=<token>`).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub url: Option<String>,
        /// A bare token, instead of `url`.
        #[serde(skip_serializing_if = "Option::is_none")]
        pub token: Option<String>,
        /// The viewer's IP address (for IP-bound tokens).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub client_ip: Option<String>,
        /// The viewer's country, ISO 3166-1 alpha-2 (for geo rules).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub country: Option<String>,
        /// The embedding page's origin (for embed-bound tokens).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub origin: Option<String>,
        /// When the request happened, unix seconds (default: now).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub at: Option<u64>,
        /// The asset path to check (default: the URL's, else the token's multivariant playlist).
        #[serde(skip_serializing_if = "Option::is_none")]
        pub path: Option<String>,
        /// A support reference from a player page (`sg-<token id or share id>-<unix seconds>`), instead of `url`
        /// or `token`: explained from the link record, its share and the revocations covering it at that time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub reference: Option<String>,
        /// With `asset`, instead of a link: why this viewer may or may not get tokens for the asset (its access
        /// policy, and what the entitlement backend answers now).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub viewer: Option<String>,
        /// The asset, with `viewer`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub asset: Option<String>,
    }

    /// What the edge would answer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    pub enum Verdict {
        /// It would serve the request.
        Allow,
        /// It would refuse it.
        Deny,
    }

    /// The answer.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Diagnosis {
        /// `allow` or `deny`: what the edge would answer.
        pub decision: Verdict,
        /// The HTTP status the edge would give.
        pub status: u16,
        /// The edge's reason code (`ok` when allowed).
        pub reason: String,
        /// What happened, in a sentence or two.
        pub explanation: String,
        /// The token's claims, if it decodes. When `signature_valid` is false they are unverified: anyone could
        /// have written them.
        pub claims: Option<serde_json::Value>,
        /// Whether the token's signature checks against a key this deployment holds.
        pub signature_valid: bool,
        /// The refusal looks like a clock off by a few minutes (the viewer's, the edge's or the minter's).
        pub clock_skew_suspected: bool,
        /// The normalised request path (token removed), if it normalises.
        pub path: Option<String>,
        /// The kind of resource the path names.
        pub resource: Option<String>,
        /// The time the request was checked at, unix seconds.
        pub at: u64,
        /// The revocation that revoked the token, when one is found.
        pub revocation: Option<Receipt>,
        /// What to do or check next.
        pub hints: Vec<String>,
    }

    /// The routes this module serves.
    pub fn routes() -> Router<Arc<AppState>> {
        Router::new().route("/v1/diagnose", post(diagnose))
    }

    /// `2026-01-02 03:04:05 UTC`.
    pub fn fmt_time(t: u64) -> String {
        // Days to a civil date (Howard Hinnant's `civil_from_days`), so no date crate is needed for one format.
        let days = i64::try_from(t / 86_400).unwrap_or(i64::MAX / 2);
        let secs = t % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }

    /// A duration for people: `45 s`, `10 min`, `3 h 5 min`, `4 days`.
    pub fn fmt_span(secs: u64) -> String {
        match secs {
            0..120 => format!("{secs} s"),
            120..7200 => format!("{} min", secs / 60),
            7200..172_800 => format!("{} h {} min", secs / 3600, secs / 60 % 60),
            _ => format!("{} days", secs / 86_400),
        }
    }

    fn resource_name(r: Resource) -> &'static str {
        match r {
            Resource::MultivariantPlaylist => "multivariant playlist",
            Resource::MediaPlaylist => "media playlist",
            Resource::Segment => "segment",
            Resource::Init => "init section",
            Resource::Key => "content key",
            Resource::Download => "download",
        }
    }

    fn permission_names(p: Permissions) -> String {
        let names: Vec<&str> = [
            (Permissions::MULTIVARIANT, "multivariant playlists"),
            (Permissions::MEDIA, "media playlists"),
            (Permissions::SEGMENT, "segments"),
            (Permissions::INIT, "init sections"),
            (Permissions::KEY, "content keys"),
            (Permissions::DOWNLOAD, "downloads"),
        ]
        .into_iter()
        .filter(|(bit, _)| p.contains(*bit))
        .map(|(_, n)| n)
        .collect();
        if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        }
    }

    fn country_list(codes: &[u8]) -> String {
        codes
            .chunks_exact(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The request to replay, taken apart: where the token is and what path and query the edge would see.
    struct Target {
        host: String,
        /// The raw path as the edge receives it (token segment included in path mode).
        raw_path: String,
        query: Option<String>,
        token: Option<String>,
        /// The raw asset path (token segment removed).
        asset_path: String,
    }

    /// Split a URL (or a bare path) into host, path and query.
    fn url_parts(url: &str) -> (String, String, Option<String>) {
        let url = url.split('#').next().unwrap_or("");
        let (host, rest) = match url.split_once("://") {
            Some((_, after)) => match after.find(['/', '?']) {
                Some(i) => (&after[..i], &after[i..]),
                None => (after, ""),
            },
            None => ("", url),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (rest, None),
        };
        let path = if path.is_empty() { "/" } else { path };
        (host.to_string(), path.to_string(), query)
    }

    fn absolute(p: &str) -> String {
        if p.starts_with('/') {
            p.to_string()
        } else {
            format!("/{p}")
        }
    }

    fn target(req: &DiagnoseRequest, multivariant: &str) -> Result<Target, ApiError> {
        let input = match (&req.url, &req.token) {
            (Some(u), None) => u.trim(),
            // A "token" pasted with its URL around it is a URL.
            (None, Some(t)) if t.contains('/') => t.trim(),
            (None, Some(t)) => {
                let token = t.trim().to_string();
                let path = match &req.path {
                    Some(p) => absolute(p),
                    None => default_path(&token, multivariant),
                };
                return Ok(Target {
                    host: String::new(),
                    raw_path: format!("/t/{token}{path}"),
                    query: None,
                    token: Some(token),
                    asset_path: path,
                });
            }
            (Some(_), Some(_)) => return Err(ApiError::Invalid("give `url` or `token`, not both".into())),
            (None, None) => return Err(ApiError::Invalid("give the link as `url`, or a bare `token`".into())),
        };
        if input.len() > MAX_URL_LEN {
            return Err(ApiError::Invalid(format!("url is at most {MAX_URL_LEN} bytes")));
        }
        let (host, path, query) = url_parts(input);
        // Path mode exactly as the edge splits it: `/t/<token>/<rest>`.
        let in_path = path
            .strip_prefix("/t/")
            .and_then(|r| r.find('/').map(|i| (r[..i].to_string(), r[i..].to_string())));
        let (raw_path, token, asset_path) = match (in_path, &req.path) {
            (Some((t, _)), Some(p)) => (format!("/t/{t}{}", absolute(p)), Some(t), absolute(p)),
            (Some((t, rest)), None) => (path, Some(t), rest),
            (None, over) => {
                let path = over.as_deref().map_or(path, absolute);
                let token = query.as_deref().and_then(|q| {
                    q.split('&')
                        .find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == TOKEN_PARAM).map(|(_, v)| v))
                        .map(str::to_string)
                });
                (path.clone(), token, path)
            }
        };
        Ok(Target {
            host,
            raw_path,
            query,
            token,
            asset_path,
        })
    }

    /// For a bare token: the multivariant playlist of the asset (or path prefix) it names.
    fn default_path(token: &str, multivariant: &str) -> String {
        let mut buf = TokenBuf::new();
        match decode_unverified(token, &mut buf) {
            Ok(c) => match (c.asset, c.prefix) {
                (Some(a), _) => format!("/{a}/{multivariant}"),
                (None, Some(p)) => format!("{}/{multivariant}", p.as_str().trim_end_matches('/')),
                (None, None) => "/".into(),
            },
            Err(_) => "/".into(),
        }
    }

    fn parse_country(c: &str) -> Result<[u8; 2], ApiError> {
        let up = c.trim().to_ascii_uppercase();
        <[u8; 2]>::try_from(up.as_bytes())
            .ok()
            .filter(|b| b.iter().all(u8::is_ascii_uppercase))
            .ok_or_else(|| ApiError::Invalid("country is a two-letter ISO 3166-1 code".into()))
    }

    /// The edge's configuration, from the service's keys and policy. The state is always fresh here, so the stale
    /// policy never applies.
    fn edge_config(s: &AppState) -> EdgeConfig {
        EdgeConfig {
            keys: s.minter.current().ring.clone(),
            policy: s.policy,
            state_key: Some(s.state_key.clone()),
            watermark_key: None,
            token_param: TOKEN_PARAM.into(),
            cookie_name: "sg_token".into(),
            multivariant_name: s.config.multivariant_name.clone(),
            reason_header: true,
            cors_origin: "*".into(),
            two_tier: None,
            playlist_max_age: 2,
            edge_id: "diagnose".into(),
            state_max_age: u32::MAX,
            stale_policy: StalePolicy::FailOpen,
            // The diagnosis is given the viewer's country by whoever asks, as a CDN's platform would give it.
            has_country_source: true,
            geo_lenient: false,
        }
    }

    /// What is known about the request, for the explanations.
    struct Ctx<'a> {
        at: u64,
        path: Option<&'a str>,
        resource: Option<Resource>,
        client_ip: Option<IpAddr>,
        country: Option<[u8; 2]>,
        origin: Option<&'a str>,
        leeway: u32,
        max_ttl: u32,
        edge_base: &'a str,
    }

    /// The sentence for a refusal the claims explain (time, scope, permission, bindings), and whether it looks like
    /// clock skew. `None` for reasons the claims do not explain.
    fn explain_claims(
        reason: Reason,
        c: &Claims<'_>,
        ctx: &Ctx<'_>,
        hints: &mut Vec<String>,
    ) -> Option<(String, bool)> {
        let (iat, nbf, exp) = (u64::from(c.iat), u64::from(c.nbf), u64::from(c.exp));
        Some(match reason {
            Reason::Expired if sharegate_shared::token::tier::ends_entitlement(c.tier) => {
                let plan = c.tier.and_then(sharegate_shared::token::tier::plan_name);
                hints.push(
                    "the product's entitlement backend decides whether the viewer may go on: a new token is minted \
                     only if it allows again (the trial became a subscription); ask with `viewer` and `asset`"
                        .into(),
                );
                (
                    format!(
                        "the viewer's {} ended {} ago at {}, and this token with it (issued {})",
                        if plan == Some("trial") { "trial" } else { "entitlement" },
                        fmt_span(ctx.at.saturating_sub(exp)),
                        fmt_time(exp),
                        fmt_time(iat)
                    ),
                    false,
                )
            }
            Reason::Expired => {
                let ago = ctx.at.saturating_sub(exp);
                match c.share {
                    Some(sh) => hints.push(format!(
                        "this token came from share {sh}: opening the share link {}/s/{sh} again gives a fresh token \
                         while the share is active",
                        ctx.edge_base
                    )),
                    None => hints.push("mint a new link for the viewer (POST /v1/links)".into()),
                }
                (
                    format!(
                        "expired {} ago at {} (issued {}, valid for {})",
                        fmt_span(ago),
                        fmt_time(exp),
                        fmt_time(iat),
                        fmt_span(exp.saturating_sub(nbf))
                    ),
                    false,
                )
            }
            Reason::NotYetValid => {
                let ahead = nbf.saturating_sub(ctx.at);
                // A token minted to start later is not skew; one that starts when issued and is refused by a few
                // minutes is a clock that is off.
                let skew = nbf == iat && ahead <= SKEW_SUSPECT_SECS;
                if nbf > iat {
                    hints.push(format!(
                        "the token was minted to start {} after it was issued",
                        fmt_span(nbf - iat)
                    ));
                }
                if skew {
                    hints.push(format!(
                        "check the clocks: the edge allows {} s of leeway; the minting host's clock may be ahead, or \
                         the viewer's device clock (or the `at` given) behind",
                        ctx.leeway
                    ));
                }
                (
                    format!(
                        "not yet valid: valid from {}; the viewer's clock or the edge's may be off by {ahead} s",
                        fmt_time(nbf)
                    ),
                    skew,
                )
            }
            Reason::TtlTooLong => (
                format!(
                    "the token's lifetime ({}) is longer than this deployment allows ({}): it was minted elsewhere or \
                     under another policy",
                    fmt_span(exp.saturating_sub(iat)),
                    fmt_span(u64::from(ctx.max_ttl))
                ),
                false,
            ),
            Reason::OutOfScope => {
                let asked = ctx
                    .path
                    .map(|p| p.trim_start_matches('/').split('/').next().unwrap_or(""))
                    .unwrap_or("");
                let text = match (c.asset, c.prefix) {
                    (Some(a), _) => format!("this token is for asset {a}, the URL asks for {asked}"),
                    (None, Some(p)) => format!(
                        "this token is for paths under {p}, the URL asks for {}",
                        ctx.path.unwrap_or("?")
                    ),
                    (None, None) => "the token names no asset or path scope".into(),
                };
                hints.push("use a link minted for the asset the player is loading".into());
                (text, false)
            }
            Reason::PermissionDenied => (
                format!(
                    "the token does not allow {} requests (it allows {})",
                    ctx.resource.map_or("these", resource_name),
                    permission_names(c.permissions)
                ),
                false,
            ),
            Reason::IpMismatch => {
                let net = c.ip.map_or_else(String::new, |p| format!("{}/{}", p.addr, p.len));
                let text = match ctx.client_ip {
                    Some(ip) => format!("the token is bound to the network {net}; the request came from {ip}"),
                    None => {
                        hints.push("give the viewer's address as `client_ip` to check the IP binding".into());
                        format!("the token is bound to the network {net}; the request's address is unknown")
                    }
                };
                hints.push(
                    "IP-bound links break when the viewer changes network (mobile, VPN); mint without `ip` if that \
                     is expected"
                        .into(),
                );
                (text, false)
            }
            Reason::GeoDenied => {
                let rule = match c.countries {
                    Some(Countries::Allow(l)) => format!("only allows viewers in {}", country_list(l)),
                    Some(Countries::Deny(l)) => format!("refuses viewers in {}", country_list(l)),
                    None => "has a country rule".into(),
                };
                let from = ctx.country.map_or_else(
                    || "an unknown country (give `country` to check)".into(),
                    |cc| String::from_utf8_lossy(&cc).into_owned(),
                );
                (format!("the token {rule}; the viewer is in {from}"), false)
            }
            Reason::OriginDenied => {
                let want = c.origin.map_or("", |o| o.as_str());
                let text = match ctx.origin {
                    Some(o) => format!("the token may only be played embedded on {want}; the request came from {o}"),
                    None => format!(
                        "the token may only be played embedded on {want}; the request had no Origin or Referer \
                         (give `origin` to check)"
                    ),
                };
                (text, false)
            }
            _ => return None,
        })
    }

    /// The revocation scope a watermark kind names in the token, as the receipt's `target` spells it.
    fn scope_target(kind: ScopeKind, c: &Claims<'_>) -> String {
        let text = |t: Option<sharegate_shared::token::Text<'_>>| t.map_or_else(String::new, |t| t.as_str().to_owned());
        match kind {
            ScopeKind::Global => String::new(),
            ScopeKind::Share => text(c.share),
            ScopeKind::Viewer => text(c.viewer),
            ScopeKind::Session => text(c.session),
            ScopeKind::Asset => text(c.asset),
            ScopeKind::Campaign => text(c.campaign),
            ScopeKind::KeyId => c.key_id.to_string(),
        }
    }

    /// The receipt of the revocation that revoked the token: same kind and target; for a watermark, the earliest one
    /// at or after the token's issue (a watermark covers tokens issued at or before it).
    async fn find_receipt(
        s: &AppState,
        kind: RevocationKind,
        target: &str,
        iat: u32,
    ) -> Result<Option<Receipt>, ApiError> {
        let mut best: Option<Receipt> = None;
        for (_, v) in s.store.scan(Ns::Revocations, "").await? {
            let r: Receipt =
                serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("revocation record: {e}")))?;
            if r.kind != kind || r.target != target || (kind != RevocationKind::Token && r.at < u64::from(iat)) {
                continue;
            }
            if best.as_ref().is_none_or(|b| r.at < b.at) {
                best = Some(r);
            }
        }
        Ok(best)
    }

    async fn share_hint(s: &AppState, id: &str, at: u64) -> Result<String, ApiError> {
        let Some(bytes) = s.store.get(Ns::Shares, id).await? else {
            return Ok(format!("share {id} does not exist"));
        };
        let sh: ShareRecord =
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(format!("share record: {e}")))?;
        Ok(match (sh.deleted_at, sh.expires_at) {
            (Some(d), _) => format!("share {id} was deleted at {}", fmt_time(d)),
            (None, Some(e)) if at >= e => format!("share {id} expired at {}", fmt_time(e)),
            _ => format!(
                "share {id} is active (audience {}); opening it redirects to a fresh token URL: diagnose that URL",
                serde_json::to_value(sh.audience)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        })
    }

    /// `viewer` + `asset`: the entitlement's answer as a diagnosis.
    async fn entitlement_diagnosis(s: &AppState, viewer: &str, asset: &str) -> Result<Diagnosis, ApiError> {
        if viewer.is_empty() || viewer.len() > 128 {
            return Err(ApiError::Invalid("viewer is 1 to 128 bytes".into()));
        }
        let e = crate::service::entitlement::explain(s, viewer, asset).await?;
        Ok(Diagnosis {
            decision: if e.status == 200 { Verdict::Allow } else { Verdict::Deny },
            status: e.status,
            reason: e.code,
            explanation: e.text,
            claims: None,
            signature_valid: false,
            clock_skew_suspected: false,
            path: None,
            resource: None,
            at: crate::service::now(),
            revocation: None,
            hints: e.hints,
        })
    }

    async fn diagnose(
        State(s): State<Arc<AppState>>,
        _: Authorized<Diagnose>,
        JsonBody(req): JsonBody<DiagnoseRequest>,
    ) -> Result<Json<Diagnosis>, ApiError> {
        if let Some(r) = &req.reference {
            return Ok(Json(crate::service::player::support::explain(&s, r).await?));
        }
        match (&req.viewer, &req.asset, &req.url, &req.token) {
            (Some(viewer), Some(asset), None, None) => {
                return Ok(Json(entitlement_diagnosis(&s, viewer, asset).await?));
            }
            (Some(_), None, _, _) | (None, Some(_), _, _) => {
                return Err(ApiError::Invalid("`viewer` and `asset` go together".into()));
            }
            (Some(_), Some(_), _, _) => {
                return Err(ApiError::Invalid(
                    "give `viewer` and `asset`, or a link, not both".into(),
                ));
            }
            _ => {}
        }
        let input = read_input(&req, &s.config.multivariant_name)?;
        // The edge's decision, from the same engine and the current revocation state.
        let (_, state_bytes) = build_current_snapshot(&s).await?;
        let view = StateView::open(&state_bytes).map_err(|e| ApiError::Internal(format!("state: {e}")))?;
        let (status, reason) = edge_answer(&s, &input, &view);

        // The rest is explanation: the same facts the edge looked at, decoded for people.
        let normalized = normalize_path(&input.target.asset_path).map(|p| p.into_owned());
        let resource = normalized
            .as_ref()
            .ok()
            .map(|p| classify(p, &s.config.multivariant_name));
        let edge_base = s.config.edge_base_url.trim_end_matches('/').to_string();
        let ctx = Ctx {
            at: input.at,
            path: normalized.as_deref().ok(),
            resource,
            client_ip: input.client_ip,
            country: input.country,
            origin: input.origin.as_deref(),
            leeway: s.policy.leeway,
            max_ttl: s.policy.max_ttl,
            edge_base: &edge_base,
        };
        let token = input.target.token.as_deref().unwrap_or("");
        let mut buf = TokenBuf::new();
        let decoded = decode_unverified(token, &mut buf).ok();
        let mut vbuf = TokenBuf::new();
        let signature_valid = Verifier::new(&s.minter.current().ring, s.policy)
            .authenticate(token, &mut vbuf)
            .is_ok();
        let mut notes = Notes::default();
        let explanation = explain(&s, &input.target, &ctx, reason, decoded.as_ref(), &view, &mut notes).await?;
        Ok(Json(Diagnosis {
            decision: if reason.is_none() {
                Verdict::Allow
            } else {
                Verdict::Deny
            },
            status,
            reason: reason.map_or("ok", Reason::as_str).into(),
            explanation,
            claims: decoded.as_ref().map(claims_json),
            signature_valid,
            clock_skew_suspected: notes.skew,
            path: normalized.ok(),
            resource: resource.map(|r| resource_name(r).into()),
            at: input.at,
            revocation: notes.revocation,
            hints: notes.hints,
        }))
    }

    /// The request to replay, read from the body and checked.
    struct Input {
        target: Target,
        client_ip: Option<IpAddr>,
        country: Option<[u8; 2]>,
        origin: Option<String>,
        at: u64,
    }

    fn read_input(req: &DiagnoseRequest, multivariant: &str) -> Result<Input, ApiError> {
        let client_ip = req
            .client_ip
            .as_deref()
            .map(|ip| {
                ip.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| ApiError::Invalid("client_ip is not an IP address".into()))
            })
            .transpose()?;
        let country = req.country.as_deref().map(parse_country).transpose()?;
        let at = req.at.unwrap_or_else(now);
        let target = target(req, multivariant)?;
        if target.token.as_ref().is_some_and(|tok| tok.len() > MAX_TOKEN_CHARS * 2) {
            return Err(ApiError::Invalid(
                "the token is far longer than any sharegate token".into(),
            ));
        }
        Ok(Input {
            target,
            client_ip,
            country,
            origin: req.origin.clone(),
            at,
        })
    }

    /// What the edge would answer: its status, and the reason when it refuses.
    fn edge_answer(s: &AppState, input: &Input, view: &StateView<'_>) -> (u16, Option<Reason>) {
        let engine = Engine::new(edge_config(s));
        let t = &input.target;
        let edge_req = Request {
            method: "GET",
            host: &t.host,
            path: &t.raw_path,
            query: t.query.as_deref(),
            origin: input.origin.as_deref(),
            client_ip: input.client_ip,
            country: input.country,
            ..Request::default()
        };
        match engine.decide(&edge_req, input.at, StateInput::fresh(view)) {
            Decision::Allow(_) | Decision::Preflight(_) => (200, None),
            Decision::Deny(d) => (d.status, Some(d.reason)),
        }
    }

    /// What the explanation found besides its sentence.
    #[derive(Default)]
    struct Notes {
        hints: Vec<String>,
        skew: bool,
        revocation: Option<Receipt>,
    }

    /// The sentence for the edge's answer (`reason` none: allowed), with hints, a skew suspicion and the revocation
    /// that revoked the token written to `notes`.
    async fn explain(
        s: &AppState,
        t: &Target,
        ctx: &Ctx<'_>,
        reason: Option<Reason>,
        decoded: Option<&Claims<'_>>,
        view: &StateView<'_>,
        notes: &mut Notes,
    ) -> Result<String, ApiError> {
        let hints = &mut notes.hints;
        Ok(match (reason, decoded) {
            (None, Some(c)) => explain_allowed(c, ctx, hints),
            (None, None) => "the edge would serve this request".into(),
            (Some(Reason::MissingToken), _) => {
                if let Some(id) = t.asset_path.strip_prefix("/s/") {
                    hints.push(share_hint(s, id.trim_end_matches('/'), ctx.at).await?);
                    "this is a share link, not a token URL: viewers open it and are redirected to a token URL".into()
                } else {
                    "the URL carries no token: a playable link has /t/<token>/ in its path (or ?sg=<token>)".into()
                }
            }
            (Some(Reason::BadPath), _) => format!(
                "the path is not acceptable to the edge ({}): no `..` or `.` segments, no encoded slashes, no double \
                 slashes",
                normalize_path(&t.asset_path).err().map_or("bad path", |e| e.as_str())
            ),
            (Some(Reason::Malformed), _) => {
                hints.push("check the link was copied whole: mail and chat apps sometimes cut long URLs".into());
                "the token is not well formed: it was cut off or mangled when copied, or is not a sharegate token"
                    .into()
            }
            (Some(Reason::UnsupportedVersion | Reason::UnsupportedClaim), _) => {
                "the token was minted by a newer sharegate than the edge runs (unknown version or required claim)"
                    .into()
            }
            (Some(Reason::UnknownKey), c) => {
                let held: Vec<String> = s.minter.current().ring.iter().map(|k| k.id.to_string()).collect();
                format!(
                    "the token names signing key {}, which this deployment does not hold (it holds {}): the key was \
                     retired and removed, or the token comes from another environment",
                    c.map_or_else(|| "?".into(), |c| c.key_id.to_string()),
                    held.join(", ")
                )
            }
            (Some(Reason::BadSignature), c) => explain_bad_signature(s, c, ctx, hints),
            (Some(Reason::Revoked), Some(c)) => {
                let (text, receipt) = explain_revoked(s, c, view).await?;
                notes.revocation = receipt;
                text
            }
            (Some(r), Some(c)) => match explain_claims(r, c, ctx, hints) {
                Some((text, skew)) => {
                    notes.skew = skew;
                    text
                }
                None => format!("the edge refuses this request: {r}"),
            },
            (Some(r), None) => format!("the edge refuses this request: {r}"),
        })
    }

    fn explain_allowed(c: &Claims<'_>, ctx: &Ctx<'_>, hints: &mut Vec<String>) -> String {
        let left = u64::from(c.exp).saturating_sub(ctx.at);
        if left < 300 {
            hints.push(format!(
                "it expires in {}: a player starting now may be cut off",
                fmt_span(left)
            ));
        }
        format!(
            "the edge would serve this {} request: the token (id {}, key {}) for {} is valid until {} ({} left) and \
             not revoked",
            ctx.resource.map_or("", resource_name),
            hex::encode(c.token_id),
            c.key_id,
            c.asset
                .map_or_else(|| "its path scope".into(), |a| format!("asset {a}")),
            fmt_time(u64::from(c.exp)),
            fmt_span(left)
        )
    }

    fn explain_bad_signature(s: &AppState, c: Option<&Claims<'_>>, ctx: &Ctx<'_>, hints: &mut Vec<String>) -> String {
        hints.push("the claims shown were decoded without verification: anyone could have written them".into());
        hints.push(
            "if the link was copied by hand or through another tool, check it was not altered; a token from another \
             environment (staging, production) is signed with another key"
                .into(),
        );
        // Say what else would be wrong, so a support agent does not fix the signature only to hit expiry.
        if let (Some(c), Some(path), Some(resource)) = (c, ctx.path, ctx.resource) {
            let facts = RequestFacts {
                path,
                resource,
                now: ctx.at,
                client_ip: ctx.client_ip,
                country: ctx.country,
                origin: ctx.origin,
            };
            if let Err(r) = s.policy.check(c, &facts)
                && let Some((text, _)) = explain_claims(r, c, ctx, &mut Vec::new())
            {
                hints.push(format!("apart from the signature, it would also be refused: {text}"));
            }
        }
        "bad signature: the token was altered or signed with another key".into()
    }

    /// Which revocation covers the token (the state says which kind: the token itself or a scope's watermark) and
    /// the receipt of it, if one is found.
    async fn explain_revoked(
        s: &AppState,
        c: &Claims<'_>,
        view: &StateView<'_>,
    ) -> Result<(String, Option<Receipt>), ApiError> {
        let (kind, target, scope) = match view.is_revoked(&Subject::from_claims(c)) {
            Revoked::Watermark(k) => {
                let target = scope_target(k, c);
                let scope = match k {
                    ScopeKind::Global => "every token issued before then".to_string(),
                    ScopeKind::KeyId => format!("every token signed with key {target} before then"),
                    k => format!("every token of {} {target} issued before then", k.as_str()),
                };
                (RevocationKind::from(k), target, scope)
            }
            _ => (RevocationKind::Token, hex::encode(c.token_id), "this token".to_string()),
        };
        let receipt = find_receipt(s, kind, &target, c.iat).await?;
        let text = match &receipt {
            Some(r) => {
                let mut text = format!(
                    "revoked by {} at {} for reason {} (revocation {})",
                    r.by,
                    fmt_time(r.at),
                    r.reason
                        .as_deref()
                        .map_or_else(|| "(none given)".into(), |x| format!("{x:?}")),
                    r.id
                );
                let _ = write!(text, "; it covers {scope}");
                text
            }
            None => format!("revoked ({scope}); no matching revocation record was found"),
        };
        Ok((text, receipt))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_read_as_utc_dates() {
            assert_eq!(fmt_time(0), "1970-01-01 00:00:00 UTC");
            assert_eq!(fmt_time(951_782_400), "2000-02-29 00:00:00 UTC");
            assert_eq!(fmt_time(1_767_225_599), "2025-12-31 23:59:59 UTC");
            assert_eq!(fmt_span(45), "45 s");
            assert_eq!(fmt_span(600), "10 min");
            assert_eq!(fmt_span(3 * 3600 + 300), "3 h 5 min");
            assert_eq!(fmt_span(4 * 86_400), "4 days");
        }

        #[test]
        fn urls_split_like_the_edge_splits_them() {
            let (h, p, q) = url_parts("https://cdn.example.com/t/abc/demo/master.m3u8?x=1#f");
            assert_eq!(
                (h.as_str(), p.as_str(), q.as_deref()),
                ("cdn.example.com", "/t/abc/demo/master.m3u8", Some("x=1"))
            );
            let (h, p, q) = url_parts("https://cdn.example.com?sg=abc");
            assert_eq!(
                (h.as_str(), p.as_str(), q.as_deref()),
                ("cdn.example.com", "/", Some("sg=abc"))
            );
            let req = DiagnoseRequest {
                url: Some("https://cdn/demo/v0/seg.ts?sg=tok&_HLS_msn=1".into()),
                ..DiagnoseRequest::default()
            };
            let t = target(&req, "master.m3u8").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(t.token.as_deref(), Some("tok"));
            assert_eq!(t.asset_path, "/demo/v0/seg.ts");
        }
    }
}
