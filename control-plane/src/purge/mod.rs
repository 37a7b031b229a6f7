//! Cache purges at the CDNs, sent through a durable outbox.
//!
//! Revoking a link is enforced by the edge before its cache is consulted, so a purge is not what stops a revoked
//! viewer. Purges take the *content* off the CDN: an asset taken down must not stay cached, and objects cached
//! under a revoked share's tag are dropped. This module holds:
//!
//! - the model of what to purge ([`PurgeRequest`]: cache tags / surrogate keys, URL prefixes, files) and what a
//!   revocation purges ([`Revoked`], [`PurgeRequest::for_revocation`]);
//! - one client per CDN behind the [`PurgeTarget`] trait ([`CloudflarePurger`], [`FastlyPurger`]), each splitting
//!   work to its API's per-request limits and classifying the answer as done, retry later, or failed for good;
//! - the [`Outbox`] that makes "revoke-and-purge is one act" hold across restarts: jobs are persisted through
//!   [`OutboxStore`] before anything is sent, retried with jittered exponential backoff, and never re-sent once
//!   the CDN confirmed them.
//!
//! - [`StoreOutbox`], the [`OutboxStore`] over the service's own store, and [`Outbox::over_store`], which lets
//!   `POST /v1/revocations` write a revocation and its purge jobs in one transaction;
//! - [`outbox_from_env`]: the CDNs configured by `SHAREGATE_CF_*` / `SHAREGATE_FASTLY_*`.
//!
//! It does not decide what a revocation *is* (that is the revocation handler) nor which store holds the jobs: the
//! store behind [`OutboxStore`] does. See `docs/purge.md`.

mod cloudflare;
mod env;
mod fastly;
mod outbox;
mod store_outbox;

use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use cloudflare::{CloudflareLimits, CloudflarePurger};
pub use env::{
    CLOUDFLARE_API_BASE, FASTLY_API_BASE, PurgeConfigError, check_env, outbox_from_env, try_outbox_from_env,
};
pub use fastly::{FASTLY_MAX_KEYS_PER_REQUEST, FastlyPurger};
pub use outbox::{
    Jitter, JobStatus, MemoryOutboxStore, Outbox, OutboxConfig, OutboxError, OutboxStore, PurgeJob, RunReport,
    StoreError, may_replace, spawn_outbox_worker,
};
pub use store_outbox::StoreOutbox;

/// Prefixes of the cache tag / surrogate key the edge puts on every object of an asset, and on objects fetched
/// through a share (defined once, in the edge's contract).
pub use sharegate_edge::contract::tags::{ASSET_PREFIX as ASSET_TAG_PREFIX, SHARE_PREFIX as SHARE_TAG_PREFIX};

/// How long to wait after a 429 that names no delay. Both CDNs refill their buckets within seconds.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(5);
/// How long one call to a CDN's API may take before it counts as a transient failure.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The cache tag of an asset (`sg-asset-<id>`, as the edge sets it in `Cache-Tag` / `Surrogate-Key`) and of a
/// share (`sg-share-<id>`).
pub use sharegate_edge::contract::tags::{asset as asset_tag, share as share_tag};

/// What to remove from a CDN's cache. Each list may be empty; a request with all lists empty purges nothing.
///
/// A target sends each kind in its own API calls (Cloudflare takes exactly one kind per call) and drops what it
/// cannot express (Fastly has no prefix purge; the surrogate keys cover the same objects).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeRequest {
    /// Cache tags (Cloudflare) / surrogate keys (Fastly), e.g. `sg-asset-<id>`, `sg-share-<id>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// URL prefixes as `host/path` without a scheme, e.g. `cdn.example.com/<asset>/` (Cloudflare only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefixes: Vec<String>,
    /// Absolute URLs of single cached objects, e.g. `https://cdn.example.com/<asset>/master.m3u8`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// What was revoked, with the ids the purge needs. Built by the revocation path from its records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked<'a> {
    /// One token; `share` is the share it was minted for, if any.
    Token {
        /// The token's share id.
        share: Option<&'a str>,
    },
    /// Every token of a share.
    Share(&'a str),
    /// Every token of an asset (a takedown).
    Asset(&'a str),
    /// Every token bound to a viewer.
    Viewer(&'a str),
    /// Every token bound to a session.
    Session(&'a str),
    /// Every token of a campaign.
    Campaign(&'a str),
    /// Every token signed with a key id.
    KeyId(u16),
    /// Every token.
    Global,
}

impl PurgeRequest {
    /// Whether there is nothing to purge.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.prefixes.is_empty() && self.files.is_empty()
    }

    /// What a revocation purges. `cdn_hosts` are the public CDN host names (for the asset prefix purge).
    ///
    /// Cached objects carry no token (the edge strips it from the cache key), so they are shared by every viewer:
    /// a viewer, session, campaign, key or global revocation purges nothing — purging would only reload the
    /// origin, and the edge already refuses those tokens before reading its cache. A token or share revocation
    /// purges the share's tag; an asset revocation purges the asset's tag and, where the CDN supports it, the
    /// asset's path prefix on each host (belt and braces for objects cached before they were tagged).
    pub fn for_revocation(revoked: &Revoked<'_>, cdn_hosts: &[String]) -> PurgeRequest {
        let mut req = PurgeRequest::default();
        match *revoked {
            Revoked::Token { share: Some(share) } | Revoked::Share(share) => req.tags.push(share_tag(share)),
            Revoked::Asset(asset) => {
                req.tags.push(asset_tag(asset));
                for host in cdn_hosts {
                    req.prefixes.push(format!("{}/{asset}/", host.trim_end_matches('/')));
                }
            }
            Revoked::Token { share: None }
            | Revoked::Viewer(_)
            | Revoked::Session(_)
            | Revoked::Campaign(_)
            | Revoked::KeyId(_)
            | Revoked::Global => {}
        }
        req
    }

    /// The same request with duplicates removed (first occurrence kept), so a batch never repeats an entry.
    pub fn deduped(&self) -> PurgeRequest {
        fn dedup(v: &[String]) -> Vec<String> {
            let mut seen = std::collections::HashSet::with_capacity(v.len());
            v.iter().filter(|s| seen.insert(s.as_str())).cloned().collect()
        }
        PurgeRequest {
            tags: dedup(&self.tags),
            prefixes: dedup(&self.prefixes),
            files: dedup(&self.files),
        }
    }
}

/// The answer to one purge call, as the outbox needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// The CDN accepted the purge; `cdn_id` is its purge id (several joined by `,` for a bulk call).
    Done {
        /// The CDN's purge id(s).
        cdn_id: String,
    },
    /// Rate limited (429): try again no sooner than this.
    RetryAfter(Duration),
    /// A failure that may pass (5xx, timeout, connection refused, unreadable answer): retry with backoff.
    Transient {
        /// What happened, for the job's `last_error`.
        reason: String,
    },
    /// A failure that retrying will not fix (bad credentials, request refused as malformed, unknown zone).
    Failed {
        /// What happened.
        reason: String,
    },
}

/// A CDN that can purge. Implementations are cheap to share (`Arc`) and safe to call concurrently.
#[async_trait]
pub trait PurgeTarget: Send + Sync {
    /// Stable name of this target, stored in each job (`cloudflare:<zone>`, `fastly:<service>`). It must not
    /// change across restarts, or persisted jobs find no target.
    fn name(&self) -> &str;

    /// Splits a request into batches that each fit in one API call of this CDN. Pure; an empty result means
    /// there is nothing this CDN can purge for the request.
    fn split(&self, request: &PurgeRequest) -> Vec<PurgeRequest>;

    /// Sends a purge. A batch from [`split`](Self::split) is one API call; a larger request is split and sent
    /// call by call, stopping at the first call that is not done.
    async fn purge(&self, request: &PurgeRequest) -> PurgeOutcome;
}

/// Reads `Retry-After` as delta-seconds or an HTTP date. `None` if absent or unreadable.
fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Classifies a non-success HTTP status that is not a 429: server errors and timeouts pass, the rest does not.
fn is_transient_status(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// A transport error as an outcome. Every transport failure may pass; the reason names no secret (tokens travel in
/// headers, which reqwest's errors do not print).
fn transport_failure(err: &reqwest::Error) -> PurgeOutcome {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    PurgeOutcome::Transient {
        reason: format!("{kind}: {err}"),
    }
}

/// The HTTP client both purgers use: bounded time per call so a hung CDN cannot hold a job past its lease.
fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(DEFAULT_HTTP_TIMEOUT).build()
}

/// Keeps secrets out of `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// Trims a response body for an error message, so a large HTML error page does not flood the job record.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn revocation_purges() {
        let hosts = vec!["cdn.example.com".to_string()];
        let share = PurgeRequest::for_revocation(&Revoked::Share("s1"), &hosts);
        assert_eq!(share.tags, vec!["sg-share-s1"]);
        assert!(share.prefixes.is_empty());
        let token = PurgeRequest::for_revocation(&Revoked::Token { share: Some("s1") }, &hosts);
        assert_eq!(token, share);
        let asset = PurgeRequest::for_revocation(&Revoked::Asset("a1"), &hosts);
        assert_eq!(asset.tags, vec!["sg-asset-a1"]);
        assert_eq!(asset.prefixes, vec!["cdn.example.com/a1/"]);
        for r in [
            Revoked::Viewer("v"),
            Revoked::Global,
            Revoked::KeyId(3),
            Revoked::Token { share: None },
        ] {
            assert!(PurgeRequest::for_revocation(&r, &hosts).is_empty());
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(
            reqwest::header::RETRY_AFTER,
            reqwest::header::HeaderValue::from_static("7"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(reqwest::header::RETRY_AFTER, later.parse().unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
    }

    #[test]
    fn dedup_keeps_order() {
        let r = PurgeRequest {
            tags: vec!["b".into(), "a".into(), "b".into()],
            ..Default::default()
        };
        assert_eq!(r.deduped().tags, vec!["b", "a"]);
    }
}
