//! Shares: stable links (`<edge>/s/<id>`) that mint a fresh short-lived token each time a viewer opens them.
//!
//! - `POST /v1/shares` (role `minter`) creates a share for one asset and an audience: `public` (anyone),
//!   `signed_in` (any viewer the product has signed in) or `invited` (only the listed viewer ids), with an optional
//!   expiry, attribution (`channel`, `campaign`) and the lifetime of the tokens it hands out (`ttl`, within the
//!   same bounds as `POST /v1/links`, which an admin sets at run time with `PUT /v1/settings`; outside them the
//!   share is refused with `400`, never silently clamped).
//! - `GET /v1/shares/{id}` (roles `minter`, `auditor`) reads one back; deleted shares stay readable for the record.
//! - `DELETE /v1/shares/{id}` (roles `minter`, `responder`) marks it deleted and revokes every token it ever issued:
//!   a `share` watermark goes into the revocation log with the state generation bump and a revocation receipt, in
//!   the same transaction and the same format as `POST /v1/revocations`, and is then pushed to the edges.
//! - `GET /s/{id}` (no API key: this is the link viewers open) is served by `player`: a page for browsers, the
//!   playback JSON, or `302 Found` to a fresh token URL for players. Every one of them checks the share and its
//!   audience here ([`check_open`]) and records each token like `POST /v1/links` does (issued log and link record
//!   in one transaction, [`mint_for`]), with `Cache-Control: no-store`, so no cache ever replays one viewer's token
//!   to another. Every answer, refusals included, has `Access-Control-Allow-Origin: *` and `OPTIONS /s/{id}`
//!   answers a CORS preflight, so a web player on any origin can follow the link (see `cors`).
//!
//! **Viewer identity.** `signed_in` and `invited` shares read the viewer id from the `x-sharegate-viewer` request
//! header. The control plane does not sign viewers in: the product's auth proxy in front of `/s/`, `/e/` and
//! `/v1/shares/{id}/playback` must authenticate
//! the viewer, set this header, and strip any value the client sent. Without such a proxy, only `public` shares are
//! safe. When present on a `public` share the viewer id is still put in the token (attribution, viewer revocation).
//!
//! What it does not do: rate-limit opens (put that in the proxy or CDN in front of `/s/`), or audit each open (that
//! is viewer traffic; every open is in the issued log and the link records instead).

use super::auth::{DeleteShares, ManageShares, ReadShares};
use super::entitlement::{Access, Ask, Grant, Purpose, authorize};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody, QueryParams};
use super::revocations::{
    Finish, LogEntry, Receipt, backoff, finish_committed, is_finished, new_receipt, publish_and_finish, write_durably,
};
use super::{AppState, audit, now};
use crate::store::{Check, Ns, Op};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sharegate_shared::token::{Claims, IpPrefix, Permissions, Text};
use std::sync::Arc;

/// The header the product's auth proxy sets to the signed-in viewer's id (see the module docs).
pub const VIEWER_HEADER: &str = sharegate_edge::contract::headers::VIEWER;

/// Token lifetime when a share does not name one, seconds: short, because every open mints a fresh token.
pub const DEFAULT_SHARE_TTL: u32 = 600;

/// Most viewer ids an `invited` share may list (the record is read on every open).
pub const MAX_INVITED: usize = 1000;

/// Who may open a share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Audience {
    /// Anyone with the link.
    Public,
    /// Any viewer the product's auth proxy has signed in.
    SignedIn,
    /// Only the listed viewers.
    Invited,
}

/// `POST /v1/shares` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// Asset id.
    pub asset: String,
    /// Who may open it.
    pub audience: Audience,
    /// Viewer ids, for `invited`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited: Vec<String>,
    /// When the share stops working, unix seconds (left out: until deleted).
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Attribution: channel.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Attribution: campaign (also a revocation scope).
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Lifetime of each token it mints, seconds: within the link TTL bounds in force ([`super::link_settings`]), else
    /// the request is refused. Default [`DEFAULT_SHARE_TTL`], brought within those bounds.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// What the share page and the embed show as the title (default: the asset id).
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The branding preset of its player (`PUT /v1/presets/{name}`); left out: the built-in `default`.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// The sites that may embed its player (`/e/<id>`), as origins (`https://example.com`); left out: any site;
    /// an empty list: none.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub embed_origins: Option<Vec<String>>,
    /// Take the channel and campaign of each view from the page URL's `utm_source` and `utm_campaign` (cut to
    /// [`UTM_MAX_LEN`] of `[A-Za-z0-9_.~-]`), falling back to `channel` and `campaign`. Default false.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub utm: Option<bool>,
    /// Who may get a token from it beyond its audience: `public` (default), `viewer` (a viewer id is required) or
    /// `entitled` (the entitlement backend must allow). The stricter of this and the asset's policy applies.
    #[serde(default, deserialize_with = "not_null", skip_serializing_if = "Option::is_none")]
    pub access: Option<Access>,
}

/// An optional request field that may be left out but not sent as `null`: the schema gives its type, not null, and
/// a `null` read as "absent" would hide a client's bug (a channel it meant to set).
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A stored share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRecord {
    /// `sh_<16 hex>`.
    pub id: String,
    /// Asset id.
    pub asset: String,
    /// Who may open it.
    pub audience: Audience,
    /// Viewer ids, for `invited`.
    pub invited: Vec<String>,
    /// Expiry, unix seconds.
    pub expires_at: Option<u64>,
    /// Attribution: channel.
    pub channel: Option<String>,
    /// Attribution: campaign.
    pub campaign: Option<String>,
    /// Lifetime of each minted token, seconds.
    pub ttl: u32,
    /// Created, unix seconds.
    pub created_at: u64,
    /// API key id of the creator.
    pub created_by: String,
    /// Deleted, unix seconds.
    pub deleted_at: Option<u64>,
    /// The revocation that ended its tokens (set with `deleted_at`).
    pub revocation: Option<String>,
    /// Player title (records written before the player existed have none).
    #[serde(default)]
    pub title: Option<String>,
    /// Branding preset name.
    #[serde(default)]
    pub preset: Option<String>,
    /// Sites that may embed it (`None`: any).
    #[serde(default)]
    pub embed_origins: Option<Vec<String>>,
    /// Whether views take their channel and campaign from the page URL's UTM parameters.
    #[serde(default)]
    pub utm: bool,
    /// Its access policy (records written before access policies are public).
    #[serde(default)]
    pub access: Access,
}

/// A share as the API returns it: the record and its stable URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareResponse {
    /// The link to hand to viewers: a player page in a browser, a redirect to the playlist for players.
    pub url: String,
    /// The player made for an iframe (`<iframe src="…">`); it never carries a credential.
    pub embed_url: String,
    /// The record.
    #[serde(flatten)]
    pub share: ShareRecord,
    /// On delete: the receipt of the revocation of its tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revocation_receipt: Option<Receipt>,
}

/// `DELETE /v1/shares/{id}` query.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    /// Why (kept in the revocation receipt); default `share deleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/shares", axum::routing::post(create))
        .route("/v1/shares/{id}", get(read).delete(delete))
}

/// What a browser needs to follow a share link from another origin, on every `/s/` answer.
///
/// `/s/{id}` is a public redirect: anyone with the link may open it, so any origin may too (`*`). No credentials
/// are allowed (`*` forbids them, and a share never reads cookies); the viewer id comes only from the product's auth
/// proxy, so `x-sharegate-viewer` is deliberately not an allowed request header. The token URL the redirect leads
/// to is on the edge, which sends its own CORS headers.
pub fn cors(headers: &mut HeaderMap) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
}

/// `OPTIONS /s/{id}`: the CORS preflight (public; nothing is looked up, so it says nothing about the share).
pub async fn preflight() -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    cors(h);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))
}

fn parse_record(bytes: &[u8]) -> Result<ShareRecord, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("share record: {e}")))
}

/// Share ids are ours (`sh_` and 16 hex digits); anything else is answered as unknown without a store read.
pub fn well_formed_id(id: &str) -> bool {
    id.strip_prefix("sh_")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

fn response(s: &AppState, share: ShareRecord, revocation_receipt: Option<Receipt>) -> ShareResponse {
    let base = s.config.share_base_url.trim_end_matches('/');
    ShareResponse {
        url: format!("{base}/s/{}", share.id),
        embed_url: format!("{base}/e/{}", share.id),
        share,
        revocation_receipt,
    }
}

fn now32(now: u64) -> Result<u32, ApiError> {
    u32::try_from(now).map_err(|_| ApiError::Internal("clock beyond 2106".into()))
}

/// What a viewer's token is bound to beyond the share's own claims: the page origin its player runs on and the
/// viewer's network (see `player::open`). Tokens from the bare redirect carry only an origin a browser sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Binding {
    /// `scheme://host[:port]` the edge must see in `Origin` (or `Referer`).
    pub origin: Option<String>,
    /// The viewer's network.
    pub network: Option<IpPrefix>,
    /// Attribution of this view from the page URL's UTM parameters, when the share takes them (else the share's).
    pub channel: Option<String>,
    /// Same, campaign.
    pub campaign: Option<String>,
    /// The viewer's country from a trusted header, for the entitlement check (not a token claim).
    pub country: Option<String>,
    /// Whether this is the player's next token (the entitlement check's purpose `refresh`).
    pub refresh: bool,
}

/// Longest channel or campaign taken from a UTM parameter.
pub const UTM_MAX_LEN: usize = 32;

/// The claims a share's token carries at `now` for `viewer` (expiry clamped to the share's).
fn share_claims<'a>(
    share: &'a ShareRecord,
    viewer: Option<&'a str>,
    bind: &'a Binding,
    grant: Option<&Grant>,
    token_id: [u8; 12],
    iat: u32,
) -> Claims<'a> {
    let exp = iat.saturating_add(share.ttl);
    // A token never outlives its share: opening a share a minute before it ends gives a one-minute token.
    let exp = share
        .expires_at
        .map_or(exp, |e| exp.min(u32::try_from(e).unwrap_or(u32::MAX)));
    // Nor the viewer's entitlement.
    let (exp, tier) = grant.map_or((exp, None), |g| g.bound(iat, exp, None));
    Claims {
        tier,
        token_id,
        iat,
        nbf: iat,
        exp,
        permissions: Permissions::PLAYBACK,
        asset: Some(Text::from(share.asset.as_str())),
        share: Some(Text::from(share.id.as_str())),
        viewer: viewer.map(Text::from),
        campaign: bind.campaign.as_deref().or(share.campaign.as_deref()).map(Text::from),
        channel: bind.channel.as_deref().or(share.channel.as_deref()).map(Text::from),
        origin: bind.origin.as_deref().map(Text::from),
        ip: bind.network,
        ..Claims::default()
    }
}

async fn create(
    State(s): State<Arc<AppState>>,
    c: Authorized<ManageShares>,
    JsonBody(req): JsonBody<ShareRequest>,
) -> Result<(StatusCode, Json<ShareResponse>), ApiError> {
    let now = now();
    let iat = now32(now)?;
    // The bounds `POST /v1/links` enforces (the run-time settings, capped by the token policy), enforced the same
    // way: a share cannot hand out tokens a minter could not ask for, and a TTL outside them is refused, not
    // clamped, so the caller never gets a share that behaves differently from what it asked.
    let bounds = super::link_settings(&s).await?;
    let max_ttl = bounds.max_ttl.min(s.policy.max_ttl);
    let min_ttl = bounds.min_ttl.min(max_ttl);
    let ttl = req.ttl.unwrap_or(DEFAULT_SHARE_TTL.clamp(min_ttl, max_ttl));
    if ttl < min_ttl || ttl > max_ttl {
        return Err(ApiError::Invalid(format!(
            "ttl must be between {min_ttl} and {max_ttl} seconds"
        )));
    }
    if req.expires_at.is_some_and(|e| e <= now) {
        return Err(ApiError::Invalid("expires_at is in the past".into()));
    }
    match (req.audience, req.invited.is_empty()) {
        (Audience::Invited, true) => {
            return Err(ApiError::Invalid(
                "an `invited` share needs at least one viewer id in `invited`".into(),
            ));
        }
        (Audience::Public | Audience::SignedIn, false) => {
            return Err(ApiError::Invalid(
                "`invited` is only for shares with audience `invited`".into(),
            ));
        }
        _ => {}
    }
    if req.invited.len() > MAX_INVITED {
        return Err(ApiError::Invalid(format!("at most {MAX_INVITED} invited viewers")));
    }
    if let Some(t) = &req.title {
        super::player::check_title(t)?;
    }
    if let Some(p) = &req.preset {
        super::player::presets::ensure_exists(&s, p).await?;
    }
    let embed_origins = req
        .embed_origins
        .map(|list| super::player::normalise_origins(&list))
        .transpose()?;
    let mut rid = [0u8; 8];
    getrandom::fill(&mut rid).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    let share = ShareRecord {
        id: format!("sh_{}", hex::encode(rid)),
        asset: req.asset,
        audience: req.audience,
        invited: req.invited,
        expires_at: req.expires_at,
        channel: req.channel,
        campaign: req.campaign,
        ttl,
        created_at: now,
        created_by: c.key_id.clone(),
        deleted_at: None,
        revocation: None,
        title: req.title,
        preset: req.preset,
        embed_origins,
        utm: req.utm.unwrap_or(false),
        access: req.access.unwrap_or_default(),
    };
    // Check now what every open will mint (syntax of each claim, and the size with the longest viewer id), so a
    // share that is accepted can always be opened.
    // (with the longest origin binding a player can bring: the longest embed origin or the page's own).
    let longest = share.invited.iter().max_by_key(|v| v.len()).map(String::as_str);
    let widest = Binding {
        origin: share
            .embed_origins
            .iter()
            .flatten()
            .chain([&s.config.share_base_url])
            .max_by_key(|o| o.len())
            .cloned(),
        network: IpPrefix::new(std::net::Ipv6Addr::UNSPECIFIED.into(), 48),
        channel: share
            .utm
            .then(|| "x".repeat(UTM_MAX_LEN.max(share.channel.as_ref().map_or(0, String::len)))),
        campaign: share
            .utm
            .then(|| "x".repeat(UTM_MAX_LEN.max(share.campaign.as_ref().map_or(0, String::len)))),
        ..Binding::default()
    };
    // With a plan in the tier claim, as an entitled open carries.
    let planned = Grant {
        plan: Some("paid".into()),
        ..Grant::default()
    };
    let probe = share_claims(&share, longest, &widest, Some(&planned), [0; 12], iat);
    for viewer in &share.invited {
        share_claims(&share, Some(viewer), &widest, Some(&planned), [0; 12], iat)
            .validate(&s.policy)
            .map_err(|e| ApiError::Invalid(format!("invited viewer {viewer:?}: {e}")))?;
    }
    probe
        .validate(&s.policy)
        .and_then(|()| s.minter.current().minter.signed_len(&probe))
        .map_err(|e| ApiError::Invalid(format!("cannot mint tokens for this share: {e}")))?;
    // Like a minted link, a share is only for a registered asset that passed its readiness check.
    super::assets::ensure_ready(&s, &share.asset).await?;
    let bytes = to_json(&share)?;
    if !s.store.put_if_absent(Ns::Shares, &share.id, &bytes).await? {
        return Err(ApiError::Conflict("share id collision; retry".into()));
    }
    audit(&s, &c, "shares.create", &share.id, "ok").await?;
    Ok((StatusCode::CREATED, Json(response(&s, share, None))))
}

async fn read(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    _: Authorized<ReadShares>,
) -> Result<Json<ShareResponse>, ApiError> {
    if !well_formed_id(&id) {
        return Err(ApiError::NotFound("share"));
    }
    let bytes = s.store.get(Ns::Shares, &id).await?.ok_or(ApiError::NotFound("share"))?;
    Ok(Json(response(&s, parse_record(&bytes)?, None)))
}

async fn delete(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    c: Authorized<DeleteShares>,
    QueryParams(params): QueryParams<DeleteParams>,
) -> Result<Json<ShareResponse>, ApiError> {
    if params.reason.as_ref().is_some_and(|r| r.len() > 1000) {
        return Err(ApiError::Invalid("reason is at most 1000 bytes".into()));
    }
    if !well_formed_id(&id) {
        return Err(ApiError::NotFound("share"));
    }
    // A concurrent change to the record (another delete) or to the generation (another revocation) fails the check;
    // re-read and try again, so two deletes revoke once and both answer with the same receipt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    for attempt in 0u32.. {
        if std::time::Instant::now() >= deadline {
            break;
        }
        let current = s.store.get(Ns::Shares, &id).await?.ok_or(ApiError::NotFound("share"))?;
        let mut share = parse_record(&current)?;
        if share.deleted_at.is_some() {
            let Some(rid) = share.revocation.clone() else {
                return Ok(Json(response(&s, share, None)));
            };
            let Some(bytes) = s.store.get(Ns::Revocations, &rid).await? else {
                return Ok(Json(response(&s, share, None)));
            };
            let mut receipt: Receipt =
                serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(format!("revocation record: {e}")))?;
            if !is_finished(&bytes) {
                // The delete committed, then its process died before publishing and auditing: finish it now.
                let done = Finish {
                    action: "shares.delete",
                    subject: &id,
                    purges: &[],
                    after_publish: None,
                };
                finish_committed(&s, &c, &mut receipt, done).await?;
            }
            return Ok(Json(response(&s, share, Some(receipt))));
        }
        let now = s.now();
        let through = super::snapshot::watermark_through(&s, now32(now)?).await?;
        // The same log entry and receipt `POST /v1/revocations` writes for `{"kind":"share"}`: tokens of this share
        // issued at or before `through` are revoked, and the edge state is rebuilt from this log alone.
        let entry = LogEntry {
            kind: super::revocations::RevocationKind::Share,
            id: id.clone(),
            iat: 0,
            exp: 0,
            through,
        };
        let reason = params.reason.clone().unwrap_or_else(|| "share deleted".into());
        let mut receipt = new_receipt(&entry, Some(reason), now, &c.key_id)?;
        share.deleted_at = Some(now);
        share.revocation = Some(receipt.id.clone());
        let updated = to_json(&share)?;
        // Durable before acknowledged: the revocation and the deleted share in one transaction, if the share is
        // still what was read.
        crate::crash::point("share_delete.before_commit");
        let unchanged = Check::Equals {
            ns: Ns::Shares,
            key: &id,
            value: &current,
        };
        let deleted = Op::Put {
            ns: Ns::Shares,
            key: &id,
            value: &updated,
        };
        if !write_durably(&s, &entry, &mut receipt, &[], &[unchanged], &[deleted]).await? {
            backoff(attempt).await;
            continue;
        }
        crate::crash::point("share_delete.after_commit");
        let done = Finish {
            action: "shares.delete",
            subject: &id,
            purges: &[],
            after_publish: Some("share_delete.after_publish"),
        };
        publish_and_finish(&s, &c, &mut receipt, &entry, through, done).await?;
        return Ok(Json(response(&s, share, Some(receipt))));
    }
    Err(ApiError::Store(crate::store::StoreError::Contention(
        "the share or the state generation kept changing during the delete; retry".into(),
    )))
}

/// Why a viewer's open was refused: the API error shape, plus the statuses only `/s/` gives (410, audience 403).
#[derive(Debug)]
pub enum OpenError {
    /// A failure shaped like any API error.
    Api(ApiError),
    /// A refusal of this share for this viewer.
    Refused {
        /// 403, 404 or 410.
        status: StatusCode,
        /// The reason code (`not_found`, `expired`, `sign_in_required`, `not_invited`, `embed_not_allowed`).
        code: &'static str,
        /// In words.
        message: String,
    },
}

impl From<ApiError> for OpenError {
    fn from(e: ApiError) -> Self {
        OpenError::Api(e)
    }
}

impl From<crate::store::StoreError> for OpenError {
    fn from(e: crate::store::StoreError) -> Self {
        OpenError::Api(e.into())
    }
}

impl OpenError {
    /// Its status, code and message.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            OpenError::Api(ApiError::Refused(m)) => (StatusCode::UNPROCESSABLE_ENTITY, "asset_not_ready", m.clone()),
            OpenError::Api(e) => (e.status(), e.code(), e.to_string()),
            OpenError::Refused { status, code, message } => (*status, code, message.clone()),
        }
    }
}

impl IntoResponse for OpenError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let body = serde_json::json!({ "error": code, "message": message });
        let mut resp = (status, Json(body)).into_response();
        // Refusals depend on who asks (the viewer header): never cache them either.
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // A cross-origin player must be able to read why it was refused.
        cors(resp.headers_mut());
        resp
    }
}

/// A refusal of this share for this viewer.
pub fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> OpenError {
    OpenError::Refused {
        status,
        code,
        message: message.into(),
    }
}

/// The refusal of a share that does not exist (or was deleted: a viewer learns nothing about a withdrawn share).
pub fn unknown() -> OpenError {
    refused(StatusCode::NOT_FOUND, "not_found", "this share link does not exist")
}

/// A share a viewer may open now: found, not deleted, not expired, the viewer in its audience, the asset ready.
#[derive(Debug)]
pub struct Opened {
    /// The stored record as read (a mint from it is refused if it changed meanwhile).
    record: Vec<u8>,
    /// The share.
    pub share: ShareRecord,
    /// The viewer id the product's auth proxy set, if any.
    pub viewer: Option<String>,
}

/// Check that the viewer who sent `headers` may open share `id` now (nothing is written).
pub async fn check_open(s: &AppState, headers: &HeaderMap, id: &str) -> Result<Opened, OpenError> {
    if !well_formed_id(id) {
        return Err(unknown());
    }
    let record = s.store.get(Ns::Shares, id).await?.ok_or_else(unknown)?;
    let share = parse_record(&record)?;
    if share.deleted_at.is_some() {
        return Err(unknown());
    }
    if share.expires_at.is_some_and(|e| now() >= e) {
        return Err(refused(StatusCode::GONE, "expired", "this share link has expired"));
    }
    let viewer = match headers.get(VIEWER_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ApiError::Invalid(format!("{VIEWER_HEADER} must be visible ASCII")))?
                .to_string(),
        ),
    };
    match (share.audience, viewer.as_deref()) {
        (Audience::Public, _) | (Audience::SignedIn, Some(_)) => {}
        (Audience::SignedIn | Audience::Invited, None) => {
            return Err(refused(
                StatusCode::FORBIDDEN,
                "sign_in_required",
                "this share link is only for signed-in viewers",
            ));
        }
        (Audience::Invited, Some(v)) => {
            if !share.invited.iter().any(|i| i == v) {
                return Err(refused(
                    StatusCode::FORBIDDEN,
                    "not_invited",
                    "this share link is only for invited viewers",
                ));
            }
        }
    }
    // Checked on every open, as on every mint: an asset whose re-check failed stops getting new tokens.
    super::assets::ensure_ready(s, &share.asset).await?;
    Ok(Opened { record, share, viewer })
}

/// A token minted for an opened share.
#[derive(Debug, Clone)]
pub struct ViewerToken {
    /// The token.
    pub token: String,
    /// Its id (hex), the support reference's subject.
    pub token_id: String,
    /// Issued at, unix seconds.
    pub iat: u32,
    /// Expires at, unix seconds.
    pub exp: u32,
    /// The multivariant playlist URL on the edge, token in the path.
    pub url: String,
    /// Whether `exp` is the end of the viewer's entitlement (a trial).
    pub ends_entitlement: bool,
}

/// Mint and record a token for an opened share, with `bind`ings. Like `POST /v1/links`, the issued log and a link
/// record are written in one transaction, and only if the share is still as read: a delete acknowledged meanwhile
/// must not be outlived by a token minted after it (its watermark covers only tokens issued before it).
pub async fn mint_for(s: &AppState, opened: &Opened, bind: &Binding) -> Result<ViewerToken, OpenError> {
    let share = &opened.share;
    let token_id = super::revocations::new_token_id()?;
    let unchanged = Check::Equals {
        ns: Ns::Shares,
        key: &share.id,
        value: &opened.record,
    };
    let viewer = opened.viewer.as_deref();
    // The share's and the asset's access policy, and for `entitled` the product's backend.
    let ask = Ask {
        purpose: if bind.refresh {
            Purpose::Refresh
        } else {
            Purpose::ShareOpen
        },
        viewer,
        asset: &share.asset,
        share: Some(&share.id),
        share_access: share.access,
        channel: bind.channel.as_deref().or(share.channel.as_deref()),
        campaign: bind.campaign.as_deref().or(share.campaign.as_deref()),
        country: bind.country.as_deref(),
    };
    let grant = authorize(s, &ask).await.map_err(|d| OpenError::Api(d.into()))?;
    let minted = super::mint_recorded(s, &token_id, &share.asset, Some(&share.id), &[unchanged], |iat| {
        share_claims(share, viewer, bind, grant.as_ref(), token_id, iat)
    })
    .await;
    let (token, claims) = match (minted, &grant) {
        // The entitlement ended between the check and the mint's issue time.
        (Err(_), Some(g)) if g.ended_by(s.now()) => return Err(OpenError::Api(g.ended().into())),
        (r, _) => r.map_err(|e| match e {
            ApiError::Conflict(_) => unknown(),
            e => OpenError::Api(e),
        })?,
    };
    Ok(ViewerToken {
        url: super::link_url(s, &token, &share.asset),
        token_id: hex::encode(token_id),
        iat: claims.iat,
        exp: claims.exp,
        ends_entitlement: sharegate_shared::token::tier::ends_entitlement(claims.tier),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_ids_are_checked_before_any_lookup() {
        assert!(well_formed_id("sh_0123456789abcdef"));
        for bad in [
            "",
            "sh_",
            "sh_0123456789ABCDEF",
            "sh_0123456789abcde",
            "xx_0123456789abcdef",
            "sh_../../x",
        ] {
            assert!(!well_formed_id(bad), "{bad}");
        }
    }

    #[test]
    fn tokens_never_outlive_their_share() {
        let share = ShareRecord {
            id: "sh_0123456789abcdef".into(),
            asset: "demo".into(),
            audience: Audience::Public,
            invited: Vec::new(),
            expires_at: Some(1_000_100),
            channel: None,
            campaign: None,
            ttl: 600,
            created_at: 1_000_000,
            created_by: "k".into(),
            deleted_at: None,
            revocation: None,
            title: None,
            preset: None,
            embed_origins: None,
            utm: false,
            access: Access::Public,
        };
        // Nor the viewer's trial.
        let trial = Grant {
            plan: Some("trial".into()),
            valid_until: Some(1_000_050),
            max_ttl: None,
        };
        let plain = Binding::default();
        let c = share_claims(&share, None, &plain, Some(&trial), [0; 12], 1_000_000);
        assert_eq!(c.exp, 1_000_050);
        assert!(sharegate_shared::token::tier::ends_entitlement(c.tier));
        assert_eq!(
            share_claims(&share, None, &Binding::default(), None, [0; 12], 1_000_000).exp,
            1_000_100
        );
        let open_ended = ShareRecord {
            expires_at: None,
            ..share
        };
        assert_eq!(
            share_claims(&open_ended, None, &Binding::default(), None, [0; 12], 1_000_000).exp,
            1_000_600
        );
    }
}
