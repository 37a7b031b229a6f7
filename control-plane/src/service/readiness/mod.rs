//! The asset readiness check: whether links to an asset may be minted, because a player could play it.
//!
//! It fetches the multivariant playlist from the origin (an HTTP(S) base URL or a local directory), every media
//! playlist it names, and asks whether every segment and init section exists, with at most [`CHECK_CONCURRENCY`]
//! requests in flight. Playlists are read through the edge's own HLS reader (the `playlist` module). What it finds is a
//! list of problems with stable codes: `multivariant_unreachable`, `not_multivariant`, `media_playlist_unreachable`,
//! `invalid_media_playlist`, `segment_missing`, `missing_endlist`, `target_duration_out_of_profile`,
//! `segment_count_mismatch`, `too_large` and `unsafe_uri` (a URI with dot segments or other paths the edge's
//! normaliser refuses, or one that resolves outside the asset's directory, where the token's scope would deny it).
//! It does not decode media, check EXT-X-KEY URIs (key servers usually need their own credentials) or follow
//! low-latency part and preload hints. The routes and records that use it are in [`super::assets`].

mod playlist;

use futures_util::stream::{self, StreamExt};
use playlist::{Playlist, RenditionKind};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sharegate_edge::hls::{self, MAX_PLAYLIST_BYTES};
use sharegate_shared::normalize_path;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Shortest EXT-X-TARGETDURATION (seconds) the default profile accepts. Shorter segments multiply the requests
/// every viewer makes through the edge (each one a token check and a cache lookup) for little latency gain.
pub const MIN_TARGET_DURATION: u64 = 1;
/// Longest EXT-X-TARGETDURATION (seconds) the default profile accepts. Longer segments slow start-up and bitrate
/// switching, and players buffer less of a live window.
pub const MAX_TARGET_DURATION: u64 = 10;
/// Origin requests one check keeps in flight, so a check can't flood an origin (or this process).
pub const CHECK_CONCURRENCY: usize = 8;
/// Most distinct segment and init-section URIs one check looks at; beyond it the asset is `too_large`.
pub const MAX_CHECKED_URIS: usize = 100_000;
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

/// One thing that keeps an asset from being ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Stable code (`segment_missing`, ...).
    pub code: String,
    /// What and where, for a human.
    pub detail: String,
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

/// One readiness check of `<origin>/<id>/<multivariant>`.
struct Checker<'a> {
    http: &'a reqwest::Client,
    origin: &'a Origin,
    id: &'a str,
    kind: AssetKind,
    profile: Profile,
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
    let ck = &Checker {
        http,
        origin,
        id,
        kind,
        profile,
    };
    let mut problems = Problems::default();
    let top = ck.multivariant_loc(multivariant);
    let Some(renditions) = ck.renditions(&top, &mut problems).await else {
        return problems.finish(0, 0);
    };
    let n_renditions = renditions.len();
    let mut found = MediaFound::default();
    for (rendition, loc, text) in ck.fetch_in_order(renditions).await {
        ck.read_media(rendition, &loc, text, &mut found, &mut problems);
    }
    ck.variants_line_up(&found.variant_counts, &mut problems);
    ck.find_missing(found.targets, &mut problems).await;
    problems.finish(n_renditions, found.segments)
}

/// What the media playlists listed, gathered as they are read.
#[derive(Default)]
struct MediaFound {
    /// Segments listed across them.
    segments: usize,
    /// Each variant's segment count (only variants must line up).
    variant_counts: Vec<(Loc, usize)>,
    /// Every distinct segment and init section, in playlist order.
    targets: Vec<Loc>,
    seen: HashSet<Loc>,
}

impl Checker<'_> {
    /// The renditions the multivariant playlist at `top` names, resolved and without repeats; `None` when the
    /// playlist cannot be read at all.
    async fn renditions(&self, top: &Loc, problems: &mut Problems) -> Option<Vec<(RenditionKind, Loc)>> {
        let text = match self.fetch(top).await {
            Ok(t) => t,
            Err(FetchError::Unreachable(why)) => {
                problems.add("multivariant_unreachable", format!("{top}: {why}"));
                return None;
            }
            Err(FetchError::TooLarge) => {
                problems.add("too_large", format!("{top} is larger than {MAX_PLAYLIST_BYTES} bytes"));
                return None;
            }
        };
        let mv = match playlist::read(&text) {
            Playlist::Multivariant(mv) => mv,
            Playlist::Unreadable(e) => {
                problems.add(
                    "not_multivariant",
                    format!("{top} is not a playlist the edge can read ({e})"),
                );
                return None;
            }
            Playlist::Media(_) | Playlist::Neither => {
                problems.add(
                    "not_multivariant",
                    format!("{top} is not a multivariant playlist (no EXT-X-STREAM-INF, or media playlist tags)"),
                );
                return None;
            }
        };
        if !mv.renditions.iter().any(|(k, _)| *k == RenditionKind::Variant) {
            problems.add("not_multivariant", format!("{top} names no variant stream"));
        }
        let mut seen = HashSet::new();
        let mut renditions = Vec::new();
        for (kind, uri) in &mv.renditions {
            match self.resolve(top, uri) {
                Ok(loc) if seen.insert(loc.clone()) => renditions.push((*kind, loc)),
                Ok(_) => {}
                Err(why) => problems.add("unsafe_uri", format!("{top}: {why}")),
            }
        }
        Some(renditions)
    }

    /// Fetch every rendition's playlist concurrently; the answers come back in playlist order, so problem details
    /// are stable from one check to the next.
    async fn fetch_in_order(
        &self,
        renditions: Vec<(RenditionKind, Loc)>,
    ) -> Vec<(RenditionKind, Loc, Result<String, FetchError>)> {
        let mut fetched = stream::iter(renditions.into_iter().enumerate())
            .map(|(i, (k, loc))| async move {
                let r = self.fetch(&loc).await;
                (i, k, loc, r)
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        fetched.sort_by_key(|(i, ..)| *i);
        fetched.into_iter().map(|(_, k, loc, r)| (k, loc, r)).collect()
    }

    /// Hold one media playlist to the profile and gather what it lists.
    fn read_media(
        &self,
        rendition: RenditionKind,
        loc: &Loc,
        text: Result<String, FetchError>,
        found: &mut MediaFound,
        problems: &mut Problems,
    ) {
        let text = match text {
            Ok(t) => t,
            Err(FetchError::Unreachable(why)) => {
                return problems.add("media_playlist_unreachable", format!("{loc}: {why}"));
            }
            Err(FetchError::TooLarge) => {
                return problems.add("too_large", format!("{loc} is larger than {MAX_PLAYLIST_BYTES} bytes"));
            }
        };
        let media = match playlist::read(&text) {
            Playlist::Media(media) => media,
            Playlist::Unreadable(e) => {
                return problems.add(
                    "invalid_media_playlist",
                    format!("{loc} is not a playlist the edge can read ({e})"),
                );
            }
            Playlist::Multivariant(_) | Playlist::Neither => {
                return problems.add("invalid_media_playlist", format!("{loc} is not a media playlist"));
            }
        };
        if media.segments.is_empty() {
            problems.add("invalid_media_playlist", format!("{loc} lists no segments"));
        }
        let profile = self.profile;
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
        if self.kind == AssetKind::Vod && !media.endlist {
            problems.add("missing_endlist", format!("{loc} has no EXT-X-ENDLIST"));
        }
        found.segments += media.segments.len();
        if rendition == RenditionKind::Variant {
            found.variant_counts.push((loc.clone(), media.segments.len()));
        }
        // Byte-range segments share one resource: look at each once.
        for uri in media.maps.iter().chain(&media.segments) {
            match self.resolve(loc, uri) {
                Ok(t) if found.seen.insert(t.clone()) => found.targets.push(t),
                Ok(_) => {}
                Err(why) => problems.add("unsafe_uri", format!("{loc}: {why}")),
            }
        }
    }

    /// Only the variants must line up: a player switches between them segment by segment. Audio, subtitle and
    /// I-frame renditions are segmented on their own terms; a live playlist's window moves.
    fn variants_line_up(&self, variant_counts: &[(Loc, usize)], problems: &mut Problems) {
        if self.kind == AssetKind::Vod
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
    }

    /// Ask whether every segment and init section exists (at most [`MAX_CHECKED_URIS`] of them).
    async fn find_missing(&self, mut targets: Vec<Loc>, problems: &mut Problems) {
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
                let gone = self.missing(&loc).await;
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
    }
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
        // The file a directory origin serves for this path, decoded as the native edge's directory origin
        // decodes it (`a%20b.ts` is the file `a b.ts`); a name no origin would serve is refused, not joined.
        let file = hls::origin_file_path(p).ok_or_else(|| {
            "not a file name an origin would serve (bad percent-encoding, %2F, NUL or a dot segment)".to_string()
        })?;
        Ok(root.join(file))
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
    fn resolves_inside_the_asset_only() {
        let http = reqwest::Client::new();
        let checker = |origin| Checker {
            http: &http,
            origin,
            id: "demo",
            kind: AssetKind::Vod,
            profile: Profile::default(),
        };
        let origin = Origin::Dir(PathBuf::from("/srv"));
        let ck = checker(&origin);
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
        let ck = checker(&origin);
        let top = ck.multivariant_loc("master.m3u8");
        assert_eq!(top.to_string(), "http://o.example:8080/base/demo/master.m3u8");
        assert!(ck.resolve(&top, "v0/i.m3u8").is_ok());
        assert!(ck.resolve(&top, "/base/other/i.m3u8").is_err());
        assert!(ck.resolve(&top, "http://o.example:8080/elsewhere/x.ts").is_err());
        assert!(ck.resolve(&top, "http://other.example/elsewhere/x.ts").is_ok());
    }

    #[test]
    fn parses_origins() {
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
