//! Assets: registration and the records that say whether links to an asset may be minted.
//!
//! `POST /v1/assets` (role `admin`) registers an asset (or re-registers it with a new origin) and runs the readiness
//! check ([`super::readiness`]); `POST /v1/assets/{id}/check` (admin) runs it again; `GET /v1/assets/{id}` (admin,
//! minter, auditor) reads the record. Minting calls [`ensure_ready`], so a link is never handed out for an asset a
//! player could not play.

use super::auth::{CheckAssets, ReadAssets, RegisterAssets};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::readiness::{Origin, Profile, check};
use super::{AppState, audit, now};
use crate::store::Ns;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sharegate_shared::normalize_path;
use std::sync::Arc;

pub use super::readiness::{AssetKind, Problem};

/// Longest multivariant playlist name, bytes.
const MAX_NAME_LEN: usize = 255;

/// `POST /v1/assets` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Asset id (what tokens name).
    pub id: String,
    /// An `http(s)://` base URL or an absolute local directory; the asset lives under `<origin>/<id>/`.
    pub origin: String,
    /// `vod` (default) or `live`.
    #[serde(default)]
    pub kind: AssetKind,
    /// The multivariant playlist's name under the asset (default: the name link URLs use).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multivariant: Option<String>,
}

/// The stored asset record, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    /// Asset id.
    pub id: String,
    /// Origin, as registered.
    pub origin: String,
    /// VOD or live.
    pub kind: AssetKind,
    /// Multivariant playlist name under the asset.
    pub multivariant: String,
    /// First registered, unix seconds.
    pub registered_at: u64,
    /// No problems at the last check.
    pub ready: bool,
    /// What the last check found.
    pub problems: Vec<Problem>,
    /// Last checked, unix seconds.
    pub checked_at: u64,
    /// Media playlists the multivariant playlist names.
    pub renditions: usize,
    /// Segments listed across those media playlists.
    pub segments: usize,
}

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/assets", post(register))
        .route("/v1/assets/{id}", get(get_asset))
        .route("/v1/assets/{id}/check", post(recheck))
}

/// Refuse to mint for `asset` unless it is registered and passed its last readiness check.
pub async fn ensure_ready(s: &AppState, asset: &str) -> Result<(), ApiError> {
    // Through the hot cache: this runs on every mint; a re-registration applies within a second on every replica.
    let rec = if valid_asset_id(asset) {
        s.get_hot(Ns::Assets, asset).await?.as_deref().map(decode).transpose()?
    } else {
        None
    };
    let Some(rec) = rec else {
        return Err(ApiError::Refused(format!("asset `{asset}` is not registered")));
    };
    if rec.ready {
        return Ok(());
    }
    let problems = rec
        .problems
        .iter()
        .map(|p| format!("{} ({})", p.code, p.detail))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ApiError::Refused(format!("asset `{asset}` is not ready: {problems}")))
}

async fn register(
    State(s): State<Arc<AppState>>,
    c: Authorized<RegisterAssets>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<AssetRecord>), ApiError> {
    if !valid_asset_id(&req.id) {
        return Err(ApiError::Invalid(
            "an asset id is 1 to 64 characters of A-Z a-z 0-9 - . _ ~, and not `.` or `..`".into(),
        ));
    }
    let origin = Origin::parse(&req.origin).map_err(ApiError::Invalid)?;
    let multivariant = req.multivariant.unwrap_or_else(|| s.config.multivariant_name.clone());
    if !valid_name(&multivariant) {
        return Err(ApiError::Invalid(
            "`multivariant` must be a relative path without dot segments, `//`, `?` or `#`".into(),
        ));
    }
    let existing = load(&s, &req.id).await?;
    let found = check(&s.http, &origin, &req.id, &multivariant, req.kind, Profile::default()).await;
    let at = now();
    let rec = AssetRecord {
        id: req.id,
        origin: req.origin,
        kind: req.kind,
        multivariant,
        registered_at: existing.as_ref().map_or(at, |e| e.registered_at),
        ready: found.problems.is_empty(),
        problems: found.problems,
        checked_at: at,
        renditions: found.renditions,
        segments: found.segments,
    };
    let bytes = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Re-registering is an update (last writer wins: it is the admin's latest word); `put_if_absent` only decides
    // whether this call created the asset, so two concurrent first registrations don't both answer 201.
    let created = existing.is_none() && s.store.put_if_absent(Ns::Assets, &rec.id, &bytes).await?;
    if !created {
        s.store.put(Ns::Assets, &rec.id, &bytes).await?;
    }
    s.invalidate_hot(Ns::Assets, &rec.id);
    audit(&s, &c, "assets.register", &rec.id, "ok").await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(rec)))
}

async fn get_asset(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    _: Authorized<ReadAssets>,
) -> Result<Json<AssetRecord>, ApiError> {
    Ok(Json(load(&s, &id).await?.ok_or(ApiError::NotFound("asset"))?))
}

async fn recheck(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    c: Authorized<CheckAssets>,
) -> Result<Json<AssetRecord>, ApiError> {
    let before = s.store.get(Ns::Assets, &id).await?.ok_or(ApiError::NotFound("asset"))?;
    let mut rec = decode(&before)?;
    let origin = Origin::parse(&rec.origin).map_err(|e| ApiError::Internal(format!("stored origin: {e}")))?;
    let found = check(
        &s.http,
        &origin,
        &rec.id,
        &rec.multivariant,
        rec.kind,
        Profile::default(),
    )
    .await;
    rec.ready = found.problems.is_empty();
    rec.problems = found.problems;
    rec.renditions = found.renditions;
    rec.segments = found.segments;
    rec.checked_at = now();
    let after = serde_json::to_vec(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    // A check takes a while; if the asset was re-registered meanwhile, this result describes the old origin.
    if !s.store.cas(Ns::Assets, &id, Some(&before), Some(&after)).await? {
        return Err(ApiError::Conflict(
            "the asset changed while it was being checked; check again".into(),
        ));
    }
    s.invalidate_hot(Ns::Assets, &id);
    audit(&s, &c, "assets.check", &rec.id, "ok").await?;
    Ok(Json(rec))
}

/// A registered asset, or 404.
pub(crate) async fn registered(s: &AppState, id: &str) -> Result<AssetRecord, ApiError> {
    load(s, id).await?.ok_or(ApiError::NotFound("asset"))
}

async fn load(s: &AppState, id: &str) -> Result<Option<AssetRecord>, ApiError> {
    // An id that can't be an asset can't be stored either; don't send arbitrary keys to the store.
    if !valid_asset_id(id) {
        return Ok(None);
    }
    s.store.get(Ns::Assets, id).await?.as_deref().map(decode).transpose()
}

fn decode(bytes: &[u8]) -> Result<AssetRecord, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("asset record: {e}")))
}

/// The token format's asset id rule (the edge matches it as the first path segment).
fn valid_asset_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// A multivariant name is a relative path the edge would accept as is.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('/')
        && matches!(normalize_path(&format!("/{name}")), Ok(std::borrow::Cow::Borrowed(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ids_names() {
        assert!(valid_asset_id("demo-1.a_b~c"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_asset_id(bad), "{bad}");
        }
        assert!(valid_name("master.m3u8") && valid_name("hls/master.m3u8"));
        for bad in ["", "/master.m3u8", "../m.m3u8", "a//m.m3u8", "m.m3u8?x"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
