//! Assets: registration, and the readiness check that decides whether links to an asset may be minted.
//!
//! `POST /v1/assets` (role `admin`) registers an asset (or re-registers it with a new origin) and runs the readiness
//! check; `POST /v1/assets/{id}/check` (admin) runs it again; `GET /v1/assets/{id}` (admin, minter, auditor) reads the
//! record. Minting calls [`ensure_ready`], so a link is never handed out for an asset a player could not play.
//!
//! The check fetches the multivariant playlist from the origin (an HTTP(S) base URL or a local directory), every
//! media playlist it names, and asks whether every segment and init section exists, with at most
//! [`CHECK_CONCURRENCY`] requests in flight. What it finds is a list of problems with stable codes:
//! `multivariant_unreachable`, `not_multivariant`, `media_playlist_unreachable`, `invalid_media_playlist`,
//! `segment_missing`, `missing_endlist`, `target_duration_out_of_profile`, `segment_count_mismatch`, `too_large`
//! and `unsafe_uri` (a URI with dot segments or other paths the edge's normaliser refuses, or one that resolves
//! outside the asset's directory, where the token's scope would deny it). It does not decode media, check
//! EXT-X-KEY URIs (key servers usually need their own credentials) or follow low-latency part and preload hints.

use super::auth::{CheckAssets, ReadAssets, RegisterAssets};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::{AppState, audit, now};
use crate::store::Ns;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sharegate_shared::normalize_path;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Shortest EXT-X-TARGETDURATION (seconds) the default profile accepts. Shorter segments multiply the requests
/// every viewer makes through the edge (each one a token check and a cache lookup) for little latency gain.
pub const MIN_TARGET_DURATION: u64 = 1;
/// Longest EXT-X-TARGETDURATION (seconds) the default profile accepts. Longer segments slow start-up and bitrate
/// switching, and players buffer less of a live window.
pub const MAX_TARGET_DURATION: u64 = 10;
/// Largest playlist the check reads, bytes. A bigger one is refused (`too_large`) rather than buffered.
pub const MAX_PLAYLIST_BYTES: usize = 4 << 20;
/// Origin requests one check keeps in flight, so a check can't flood an origin (or this process).
pub const CHECK_CONCURRENCY: usize = 8;
/// Most distinct segment and init-section URIs one check looks at; beyond it the asset is `too_large`.
pub const MAX_CHECKED_URIS: usize = 100_000;
/// Longest multivariant playlist name, bytes.
const MAX_NAME_LEN: usize = 255;
/// How many examples one problem's detail lists.
const EXAMPLES: usize = 5;
/// One origin request's deadline.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The packaging profile the check holds playlists to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    /// Shortest target duration, seconds.
    pub min_target_duration: u64,
    /// Longest target duration, seconds.
    pub max_target_duration: u64,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            min_target_duration: MIN_TARGET_DURATION,
            max_target_duration: MAX_TARGET_DURATION,
        }
    }
}

/// Video on demand or a live stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetKind {
    /// Finished: playlists end with EXT-X-ENDLIST and renditions line up.
    #[default]
    Vod,
    /// Live: playlists grow, so neither ENDLIST nor equal segment counts are expected.
    Live,
}

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

/// One thing that keeps an asset from being ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable code (`segment_missing`, ...).
    pub code: String,
    /// What and where, for a human.
    pub detail: String,
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

/// What one readiness check found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Problems, one per code; empty when ready.
    pub problems: Vec<Problem>,
    /// Media playlists named.
    pub renditions: usize,
    /// Segments listed.
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

/// Where an asset's files come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// An HTTP(S) base URL.
    Http(Url),
    /// A local directory.
    Dir(PathBuf),
}

impl Origin {
    /// Parse a registered origin: `http(s)://host[:port][/path]` or an absolute directory path.
    pub fn parse(s: &str) -> Result<Origin, String> {
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let u = Url::parse(s).map_err(|e| format!("origin: {e}"))?;
            if u.host_str().is_none_or(str::is_empty) {
                return Err("origin: the URL has no host".into());
            }
            if u.query().is_some() || u.fragment().is_some() {
                return Err("origin: the URL must not have a query or fragment".into());
            }
            // Records and problem details are shown to minters and auditors; credentials don't belong there.
            if !u.username().is_empty() || u.password().is_some() {
                return Err("origin: the URL must not carry credentials".into());
            }
            return Ok(Origin::Http(u));
        }
        if s.contains("://") {
            return Err("origin: only http:// and https:// URLs or a local directory".into());
        }
        let p = PathBuf::from(s);
        if !p.is_absolute() || s.contains('\0') {
            return Err("origin: a directory origin must be an absolute path".into());
        }
        Ok(Origin::Dir(p))
    }
}

/// A playlist, segment or init section: a URL, or a normalised path (`/asset/...`) under a directory origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Loc {
    Http(Url),
    File(String),
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Http(u) => write!(f, "{u}"),
            Loc::File(p) => f.write_str(p),
        }
    }
}

/// Problems grouped by code, in the order the codes first turned up.
#[derive(Default)]
struct Problems(Vec<(&'static str, Vec<String>)>);

impl Problems {
    fn add(&mut self, code: &'static str, detail: String) {
        match self.0.iter_mut().find(|(c, _)| *c == code) {
            Some((_, d)) => d.push(detail),
            None => self.0.push((code, vec![detail])),
        }
    }

    /// One problem per code; the detail lists the first [`EXAMPLES`] occurrences and counts the rest.
    fn finish(self, renditions: usize, segments: usize) -> Readiness {
        let problems = self
            .0
            .into_iter()
            .map(|(code, details)| {
                let n = details.len();
                let shown = details.iter().take(EXAMPLES).cloned().collect::<Vec<_>>().join("; ");
                let detail = match n {
                    1 => shown,
                    _ if n > EXAMPLES => format!("{n} found: {shown}; and {} more", n - EXAMPLES),
                    _ => format!("{n} found: {shown}"),
                };
                Problem {
                    code: code.into(),
                    detail,
                }
            })
            .collect();
        Readiness {
            problems,
            renditions,
            segments,
        }
    }
}

enum FetchError {
    Unreachable(String),
    TooLarge,
}

/// What the multivariant playlist names, with the tag that named it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenditionKind {
    /// EXT-X-STREAM-INF: the variants a player switches between.
    Variant,
    /// EXT-X-MEDIA: alternative audio, subtitles, ...
    Media,
    /// EXT-X-I-FRAME-STREAM-INF.
    IFrame,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct MultivariantPlaylist {
    renditions: Vec<(RenditionKind, String)>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct MediaPlaylist {
    /// The EXT-X-TARGETDURATION value as written; `None` when the tag is absent.
    target_duration: Option<String>,
    segments: Vec<String>,
    maps: Vec<String>,
    endlist: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Playlist {
    Multivariant(MultivariantPlaylist),
    Media(MediaPlaylist),
    /// No `#EXTM3U` header, or a mix of multivariant and media tags.
    Neither,
}

/// Parse an M3U8 playlist: just what the check needs (URIs, target duration, ENDLIST); other tags are skipped.
fn parse_playlist(text: &str) -> Playlist {
    let mut lines = text
        .trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty());
    if lines.next() != Some("#EXTM3U") {
        return Playlist::Neither;
    }
    let (mut mv, mut media) = (MultivariantPlaylist::default(), MediaPlaylist::default());
    let (mut mv_tags, mut media_tags) = (false, false);
    let mut next_is_variant = false;
    for line in lines {
        if let Some(tag) = line.strip_prefix('#') {
            let (name, value) = tag.split_once(':').unwrap_or((tag, ""));
            match name {
                "EXT-X-STREAM-INF" => {
                    mv_tags = true;
                    next_is_variant = true;
                }
                "EXT-X-MEDIA" | "EXT-X-I-FRAME-STREAM-INF" => {
                    mv_tags = true;
                    let kind = if name == "EXT-X-MEDIA" {
                        RenditionKind::Media
                    } else {
                        RenditionKind::IFrame
                    };
                    // EXT-X-MEDIA without a URI is carried inside the variants' own segments.
                    if let Some(uri) = attribute(value, "URI") {
                        mv.renditions.push((kind, uri.to_string()));
                    }
                }
                "EXT-X-TARGETDURATION" => {
                    media_tags = true;
                    media.target_duration = Some(value.trim().to_string());
                }
                "EXTINF" => media_tags = true,
                "EXT-X-ENDLIST" => {
                    media_tags = true;
                    media.endlist = true;
                }
                "EXT-X-MAP" => {
                    media_tags = true;
                    if let Some(uri) = attribute(value, "URI") {
                        media.maps.push(uri.to_string());
                    }
                }
                _ => {}
            }
        } else if next_is_variant {
            mv.renditions.push((RenditionKind::Variant, line.to_string()));
            next_is_variant = false;
        } else {
            media_tags = true;
            media.segments.push(line.to_string());
        }
    }
    match (mv_tags, media_tags) {
        (true, false) => Playlist::Multivariant(mv),
        (false, true) => Playlist::Media(media),
        _ => Playlist::Neither,
    }
}

/// One attribute of an HLS attribute list (`KEY=value,KEY="quoted, value"`), unquoted.
fn attribute<'a>(list: &'a str, want: &str) -> Option<&'a str> {
    let mut rest = list.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let (v, t) = quoted.split_once('"')?;
            (v, t)
        } else {
            after.split_once(',').map_or((after, ""), |(v, t)| (v, t))
        };
        if key.trim() == want {
            return Some(value);
        }
        rest = tail.trim_start_matches([',', ' ']);
    }
    None
}

/// One readiness check of `<origin>/<id>/<multivariant>`.
struct Checker<'a> {
    http: &'a reqwest::Client,
    origin: &'a Origin,
    id: &'a str,
}

/// Run the readiness check (at most [`CHECK_CONCURRENCY`] origin requests in flight).
pub async fn check(
    http: &reqwest::Client,
    origin: &Origin,
    id: &str,
    multivariant: &str,
    kind: AssetKind,
    profile: Profile,
) -> Readiness {
    let ck = &Checker { http, origin, id };
    let mut problems = Problems::default();
    let top = ck.multivariant_loc(multivariant);
    let text = match ck.fetch(&top).await {
        Ok(t) => t,
        Err(FetchError::Unreachable(why)) => {
            problems.add("multivariant_unreachable", format!("{top}: {why}"));
            return problems.finish(0, 0);
        }
        Err(FetchError::TooLarge) => {
            problems.add("too_large", format!("{top} is larger than {MAX_PLAYLIST_BYTES} bytes"));
            return problems.finish(0, 0);
        }
    };
    let Playlist::Multivariant(mv) = parse_playlist(&text) else {
        problems.add(
            "not_multivariant",
            format!("{top} is not a multivariant playlist (no EXT-X-STREAM-INF, or media playlist tags)"),
        );
        return problems.finish(0, 0);
    };
    if !mv.renditions.iter().any(|(k, _)| *k == RenditionKind::Variant) {
        problems.add("not_multivariant", format!("{top} names no variant stream"));
    }

    let mut seen = HashSet::new();
    let mut renditions = Vec::new();
    for (kind, uri) in &mv.renditions {
        match ck.resolve(&top, uri) {
            Ok(loc) if seen.insert(loc.clone()) => renditions.push((*kind, loc)),
            Ok(_) => {}
            Err(why) => problems.add("unsafe_uri", format!("{top}: {why}")),
        }
    }
    let n_renditions = renditions.len();

    let mut fetched = stream::iter(renditions.into_iter().enumerate())
        .map(|(i, (k, loc))| async move {
            let r = ck.fetch(&loc).await;
            (i, k, loc, r)
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    // Back in playlist order, so problem details are stable from one check to the next.
    fetched.sort_by_key(|(i, ..)| *i);

    let mut segments = 0;
    let mut variant_counts = Vec::new();
    let mut targets = Vec::new();
    let mut seen = HashSet::new();
    for (_, rendition, loc, r) in fetched {
        let text = match r {
            Ok(t) => t,
            Err(FetchError::Unreachable(why)) => {
                problems.add("media_playlist_unreachable", format!("{loc}: {why}"));
                continue;
            }
            Err(FetchError::TooLarge) => {
                problems.add("too_large", format!("{loc} is larger than {MAX_PLAYLIST_BYTES} bytes"));
                continue;
            }
        };
        let Playlist::Media(media) = parse_playlist(&text) else {
            problems.add("invalid_media_playlist", format!("{loc} is not a media playlist"));
            continue;
        };
        if media.segments.is_empty() {
            problems.add("invalid_media_playlist", format!("{loc} lists no segments"));
        }
        match media.target_duration.as_deref().map(str::parse::<u64>) {
            Some(Ok(t)) if (profile.min_target_duration..=profile.max_target_duration).contains(&t) => {}
            Some(Ok(t)) => problems.add(
                "target_duration_out_of_profile",
                format!(
                    "{loc}: {t} s (profile: {} to {} s)",
                    profile.min_target_duration, profile.max_target_duration
                ),
            ),
            Some(Err(_)) => problems.add(
                "target_duration_out_of_profile",
                format!("{loc}: EXT-X-TARGETDURATION is not a whole number of seconds"),
            ),
            None => problems.add(
                "target_duration_out_of_profile",
                format!("{loc}: no EXT-X-TARGETDURATION"),
            ),
        }
        if kind == AssetKind::Vod && !media.endlist {
            problems.add("missing_endlist", format!("{loc} has no EXT-X-ENDLIST"));
        }
        segments += media.segments.len();
        if rendition == RenditionKind::Variant {
            variant_counts.push((loc.clone(), media.segments.len()));
        }
        // Byte-range segments share one resource: look at each once.
        for uri in media.maps.iter().chain(&media.segments) {
            match ck.resolve(&loc, uri) {
                Ok(t) if seen.insert(t.clone()) => targets.push(t),
                Ok(_) => {}
                Err(why) => problems.add("unsafe_uri", format!("{loc}: {why}")),
            }
        }
    }

    // Only the variants must line up: a player switches between them segment by segment. Audio, subtitle and
    // I-frame renditions are segmented on their own terms.
    if kind == AssetKind::Vod
        && let Some((_, first)) = variant_counts.first()
        && variant_counts.iter().any(|(_, n)| n != first)
    {
        let counts = variant_counts
            .iter()
            .map(|(l, n)| format!("{l}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        problems.add("segment_count_mismatch", format!("variants differ: {counts}"));
    }

    if targets.len() > MAX_CHECKED_URIS {
        problems.add(
            "too_large",
            format!(
                "{} segment and init URIs; the check looks at the first {MAX_CHECKED_URIS}",
                targets.len()
            ),
        );
        targets.truncate(MAX_CHECKED_URIS);
    }
    let mut missing = stream::iter(targets.into_iter().enumerate())
        .map(|(i, loc)| async move {
            let gone = ck.missing(&loc).await;
            (i, loc, gone)
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .filter_map(|(i, loc, gone)| async move { gone.map(|why| (i, loc, why)) })
        .collect::<Vec<_>>()
        .await;
    missing.sort_by_key(|(i, ..)| *i);
    for (_, loc, why) in missing {
        problems.add("segment_missing", format!("{loc} ({why})"));
    }
    problems.finish(n_renditions, segments)
}

impl Checker<'_> {
    fn multivariant_loc(&self, name: &str) -> Loc {
        match self.origin {
            Origin::Http(base) => {
                let mut u = base.clone();
                u.set_path(&format!("{}/{}/{name}", base.path().trim_end_matches('/'), self.id));
                Loc::Http(u)
            }
            Origin::Dir(_) => Loc::File(format!("/{}/{name}", self.id)),
        }
    }

    /// Resolve `uri` against the playlist at `base`, refusing what the edge would refuse or deny.
    fn resolve(&self, base: &Loc, uri: &str) -> Result<Loc, String> {
        // An absolute URI is checked where it points (another host, a CDN); only http(s) can be checked.
        let loc = match Url::parse(uri) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Loc::Http(u),
            Ok(u) => return Err(format!("`{uri}`: scheme `{}` cannot be checked", u.scheme())),
            Err(_) => self.resolve_relative(base, uri)?,
        };
        if self.in_asset(&loc) {
            Ok(loc)
        } else {
            Err(format!(
                "`{uri}` resolves to {loc}, outside the asset (the token's scope would deny it)"
            ))
        }
    }

    fn resolve_relative(&self, base: &Loc, uri: &str) -> Result<Loc, String> {
        // The edge normalises request paths and refuses dot segments, `//`, encoded slashes, ...: a playlist that
        // relies on any of them (`../x.ts`) would fail at the edge or escape the asset, so it is not ready.
        let path = uri.split(['?', '#']).next().unwrap_or_default();
        let rooted = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let rooted = normalize_path(&rooted).map_err(|e| format!("`{uri}`: {e}"))?;
        Ok(match base {
            Loc::Http(b) => Loc::Http(b.join(uri).map_err(|e| format!("`{uri}`: {e}"))?),
            Loc::File(_) if path.starts_with('/') => Loc::File(rooted.into_owned()),
            Loc::File(b) => {
                let dir = b.rfind('/').map_or("", |i| &b[..i]);
                Loc::File(format!("{dir}{rooted}"))
            }
        })
    }

    /// Whether a resolved location on the origin stays under `<origin>/<id>/`; other hosts are not ours to scope.
    fn in_asset(&self, loc: &Loc) -> bool {
        match (loc, self.origin) {
            (Loc::File(p), _) => p
                .strip_prefix('/')
                .and_then(|p| p.strip_prefix(self.id))
                .is_some_and(|p| p.starts_with('/')),
            (Loc::Http(u), Origin::Http(base)) if same_origin(u, base) => {
                let prefix = format!("{}/{}/", base.path().trim_end_matches('/'), self.id);
                u.path().starts_with(&prefix)
            }
            (Loc::Http(_), _) => true,
        }
    }

    fn file_path(&self, p: &str) -> Result<PathBuf, String> {
        let Origin::Dir(root) = self.origin else {
            return Err("not a directory origin".into());
        };
        // `p` is normalised (no dot or empty segments, no encoded slashes), so joining it can't leave `root`;
        // the origin server would decode the remaining escapes, so the file name is the decoded form.
        let decoded = percent_decode(p.trim_start_matches('/')).ok_or_else(|| "bad percent-encoding".to_string())?;
        Ok(root.join(decoded))
    }

    async fn fetch(&self, loc: &Loc) -> Result<String, FetchError> {
        let bytes = match loc {
            Loc::Http(u) => {
                let mut resp = self
                    .http
                    .get(u.clone())
                    .timeout(FETCH_TIMEOUT)
                    .send()
                    .await
                    .map_err(|e| FetchError::Unreachable(reqwest_reason(e)))?;
                if !resp.status().is_success() {
                    return Err(FetchError::Unreachable(format!("HTTP {}", resp.status().as_u16())));
                }
                if resp.content_length().is_some_and(|n| n > MAX_PLAYLIST_BYTES as u64) {
                    return Err(FetchError::TooLarge);
                }
                let mut body = Vec::new();
                while let Some(chunk) = resp
                    .chunk()
                    .await
                    .map_err(|e| FetchError::Unreachable(reqwest_reason(e)))?
                {
                    if body.len() + chunk.len() > MAX_PLAYLIST_BYTES {
                        return Err(FetchError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                body
            }
            Loc::File(p) => {
                let path = self.file_path(p).map_err(FetchError::Unreachable)?;
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| FetchError::Unreachable(io_reason(&e)))?;
                let mut body = Vec::new();
                // Read one byte past the limit to tell "exactly the limit" from "larger".
                file.take(MAX_PLAYLIST_BYTES as u64 + 1)
                    .read_to_end(&mut body)
                    .await
                    .map_err(|e| FetchError::Unreachable(io_reason(&e)))?;
                if body.len() > MAX_PLAYLIST_BYTES {
                    return Err(FetchError::TooLarge);
                }
                body
            }
        };
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `None` if the segment exists; otherwise why not.
    async fn missing(&self, loc: &Loc) -> Option<String> {
        match loc {
            Loc::Http(u) => {
                let head = self.http.head(u.clone()).timeout(FETCH_TIMEOUT).send().await;
                match head {
                    Ok(r) if r.status().is_success() => return None,
                    Ok(r) if matches!(r.status().as_u16(), 404 | 410) => {
                        return Some(format!("HTTP {}", r.status().as_u16()));
                    }
                    // Some origins (signed object-store URLs, some CDNs) refuse HEAD: ask for one byte instead.
                    _ => {}
                }
                match self
                    .http
                    .get(u.clone())
                    .header(reqwest::header::RANGE, "bytes=0-0")
                    .timeout(FETCH_TIMEOUT)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
                    Err(e) => Some(reqwest_reason(e)),
                }
            }
            Loc::File(p) => match self.file_path(p) {
                Ok(path) => match tokio::fs::metadata(&path).await {
                    Ok(m) if m.is_file() => None,
                    Ok(_) => Some("not a file".into()),
                    Err(e) => Some(io_reason(&e)),
                },
                Err(why) => Some(why),
            },
        }
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// Decode `%XX` escapes (the input is normalised, so every escape is well-formed UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn reqwest_reason(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // Without the URL: details already name the location.
        e.without_url().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multivariant_and_media_playlists() {
        let mv = "#EXTM3U\r\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en, main\",URI=\"audio/en.m3u8\"\r\n\
                  #EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\"\r\nv0/index.m3u8\r\n\
                  #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=9000,URI=\"v0/iframes.m3u8\"\r\n";
        assert_eq!(
            parse_playlist(mv),
            Playlist::Multivariant(MultivariantPlaylist {
                renditions: vec![
                    (RenditionKind::Media, "audio/en.m3u8".into()),
                    (RenditionKind::Variant, "v0/index.m3u8".into()),
                    (RenditionKind::IFrame, "v0/iframes.m3u8".into()),
                ]
            })
        );
        let media = "\u{feff}#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:6.0,\n\
                     s0.m4s\n#EXTINF:6.0,\ns1.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            parse_playlist(media),
            Playlist::Media(MediaPlaylist {
                target_duration: Some("6".into()),
                segments: vec!["s0.m4s".into(), "s1.m4s".into()],
                maps: vec!["init.mp4".into()],
                endlist: true,
            })
        );
        assert_eq!(parse_playlist("hello"), Playlist::Neither);
        assert_eq!(parse_playlist(""), Playlist::Neither);
    }

    #[test]
    fn attributes_respect_quotes() {
        assert_eq!(attribute(r#"A=1,URI="x,y.m3u8",B=2"#, "URI"), Some("x,y.m3u8"));
        assert_eq!(attribute(r#"A="u,URI=no",B=2"#, "URI"), None);
        assert_eq!(attribute("A=1, B=2", "B"), Some("2"));
        assert_eq!(attribute("A", "A"), None);
    }

    #[test]
    fn resolves_inside_the_asset_only() {
        let origin = Origin::Dir(PathBuf::from("/srv"));
        let http = reqwest::Client::new();
        let ck = Checker {
            http: &http,
            origin: &origin,
            id: "demo",
        };
        let base = Loc::File("/demo/v0/index.m3u8".into());
        assert_eq!(ck.resolve(&base, "s0.ts?x=1"), Ok(Loc::File("/demo/v0/s0.ts".into())));
        assert_eq!(ck.resolve(&base, "/demo/s0.ts"), Ok(Loc::File("/demo/s0.ts".into())));
        assert!(ck.resolve(&base, "../s0.ts").is_err());
        assert!(ck.resolve(&base, "/other/s0.ts").is_err());
        assert!(ck.resolve(&base, "/demox/s0.ts").is_err());
        assert!(ck.resolve(&base, "a%2Fb.ts").is_err());
        assert!(ck.resolve(&base, "skd://key").is_err());
        assert!(matches!(
            ck.resolve(&base, "https://cdn.example/x.ts"),
            Ok(Loc::Http(_))
        ));

        let origin = Origin::parse("http://o.example:8080/base/").unwrap_or_else(|e| panic!("{e}"));
        let ck = Checker {
            http: &http,
            origin: &origin,
            id: "demo",
        };
        let top = ck.multivariant_loc("master.m3u8");
        assert_eq!(top.to_string(), "http://o.example:8080/base/demo/master.m3u8");
        assert!(ck.resolve(&top, "v0/i.m3u8").is_ok());
        assert!(ck.resolve(&top, "/base/other/i.m3u8").is_err());
        assert!(ck.resolve(&top, "http://o.example:8080/elsewhere/x.ts").is_err());
        assert!(ck.resolve(&top, "http://other.example/elsewhere/x.ts").is_ok());
    }

    #[test]
    fn validates_ids_names_and_origins() {
        assert!(valid_asset_id("demo-1.a_b~c"));
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_asset_id(bad), "{bad}");
        }
        assert!(valid_name("master.m3u8") && valid_name("hls/master.m3u8"));
        for bad in ["", "/master.m3u8", "../m.m3u8", "a//m.m3u8", "m.m3u8?x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(Origin::parse("https://o.example/base").is_ok());
        assert!(Origin::parse("/srv/media").is_ok());
        for bad in [
            "ftp://o",
            "relative/dir",
            "http://",
            "http://u:p@o.example",
            "http://o.example/?q",
        ] {
            assert!(Origin::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn problems_group_by_code() {
        let mut p = Problems::default();
        for i in 0..7 {
            p.add("segment_missing", format!("s{i}"));
        }
        p.add("missing_endlist", "x".into());
        let r = p.finish(2, 7);
        assert_eq!(r.problems.len(), 2);
        assert_eq!(r.problems[0].detail, "7 found: s0; s1; s2; s3; s4; and 2 more");
        assert_eq!(r.problems[1].detail, "x");
    }
}
