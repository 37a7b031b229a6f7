//! The raw event stream, for teams whose warehouse outgrows the hourly rows: `GET /v1/analytics/stream` (pull, with a
//! cursor) and, when `SHAREGATE_ANALYTICS_WEBHOOK` is set, an NDJSON push to that URL.
//!
//! Both read the logs the applier reads: `player` is [`Log::Beacons`] (beacons, mints, conversions as accepted) and
//! `edge` is [`Log::Events`] (edge events as ingested). Each line is the stored JSON with `seq` and `source` added;
//! `(source, seq)` identifies an event for good, so a consumer dedupes by it. The push is at least once: its cursor
//! (per source, in the store) advances only after the receiver answered 2xx, so a crash between the two resends a
//! batch. One replica pushes at a time (a lease), so two replicas do not interleave batches.

use super::AppState;
use crate::service::auth::ReadAnalytics;
use crate::service::error::ApiError;
use crate::service::extract::{Authorized, QueryParams};
use crate::store::{Log, Ns};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Most lines one stream call returns.
pub const MAX_LIMIT: usize = 5000;
/// Most lines one webhook POST carries.
pub const PUSH_BATCH: usize = 1000;
/// Most bytes one webhook POST carries.
pub const PUSH_BYTES: usize = 1 << 20;
/// How long a replica holds the push lease.
const LEASE_SECS: u64 = 30;

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/v1/analytics/stream", get(stream))
}

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Beacons, mints, conversions.
    Player,
    /// Edge events.
    Edge,
}

impl Source {
    const fn log(self) -> Log {
        match self {
            Source::Player => Log::Beacons,
            Source::Edge => Log::Events,
        }
    }
    const fn name(self) -> &'static str {
        match self {
            Source::Player => "player",
            Source::Edge => "edge",
        }
    }
}

/// `GET /v1/analytics/stream` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    source: Source,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

/// One stored entry as an NDJSON line with its `seq` and `source` (an unreadable entry is passed as a string).
fn line(source: Source, seq: u64, raw: &[u8], out: &mut Vec<u8>) {
    let mut v = match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(o)) => o,
        _ => {
            let mut o = serde_json::Map::new();
            o.insert("raw".into(), String::from_utf8_lossy(raw).into_owned().into());
            o
        }
    };
    v.insert("seq".into(), seq.into());
    v.insert("source".into(), source.name().into());
    if serde_json::to_writer(&mut *out, &v).is_ok() {
        out.push(b'\n');
    }
}

/// Entries of `source` after `after`, at most `limit`: the NDJSON body, the last seq, and whether entries right
/// after `after` were already trimmed by retention.
async fn read(s: &AppState, source: Source, after: u64, limit: usize) -> Result<(Vec<u8>, u64, bool), ApiError> {
    let entries = s.store.read_log(source.log(), after + 1, limit).await?;
    let gap = entries.first().is_some_and(|(seq, _)| *seq > after + 1);
    let mut body = Vec::with_capacity(entries.len() * 160);
    let mut last = after;
    for (seq, raw) in &entries {
        line(source, *seq, raw, &mut body);
        last = *seq;
    }
    Ok((body, last, gap))
}

async fn stream(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReadAnalytics>,
    QueryParams(q): QueryParams<StreamQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::Invalid(format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let (body, last, gap) = read(&s, q.source, q.after, limit).await?;
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&last.to_string()) {
        h.insert("x-sharegate-next-cursor", v);
    }
    if gap {
        h.insert("x-sharegate-gap", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

fn cursor_key(source: Source) -> String {
    format!("export/cursor/{}", source.name())
}

/// The push cursor of a source (0: nothing pushed yet).
pub async fn push_cursor(s: &AppState, source: Source) -> Result<u64, ApiError> {
    Ok(s.store
        .get(Ns::Analytics, &cursor_key(source))
        .await?
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Take or renew the push lease for `owner` until `now + LEASE_SECS`; whether this replica holds it.
async fn lease(s: &AppState, owner: &str, now: u64) -> Result<bool, ApiError> {
    let key = "analytics-export";
    let current = s.store.get(Ns::Leases, key).await?;
    let mine = format!("{owner} {}", now + LEASE_SECS);
    let free = match current.as_deref().and_then(|v| std::str::from_utf8(v).ok()) {
        None => true,
        Some(v) => {
            let mut it = v.split(' ');
            let holder = it.next().unwrap_or("");
            let until: u64 = it.next().and_then(|t| t.parse().ok()).unwrap_or(0);
            holder == owner || until < now
        }
    };
    Ok(free
        && s.store
            .cas(Ns::Leases, key, current.as_deref(), Some(mine.as_bytes()))
            .await?)
}

/// Push what is after each source's cursor to `url`, one batch per source; the number of lines delivered.
pub async fn push_once(s: &AppState, http: &reqwest::Client, url: &str) -> Result<usize, String> {
    let mut delivered = 0;
    for source in [Source::Player, Source::Edge] {
        let after = push_cursor(s, source).await.map_err(|e| e.to_string())?;
        let (mut body, mut last, _) = read(s, source, after, PUSH_BATCH).await.map_err(|e| e.to_string())?;
        if body.is_empty() {
            continue;
        }
        if body.len() > PUSH_BYTES {
            // Cut at the last whole line within the limit (an entry is at most a few KB).
            let cut = body[..PUSH_BYTES]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            body.truncate(cut);
            last = body
                .rsplit(|b| *b == b'\n')
                .nth(1)
                .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                .and_then(|v| v["seq"].as_u64())
                .unwrap_or(after);
        }
        let first = serde_json::from_slice::<serde_json::Value>(body.split(|b| *b == b'\n').next().unwrap_or(b""))
            .ok()
            .and_then(|v| v["seq"].as_u64())
            .unwrap_or(after + 1);
        let lines = body.iter().filter(|b| **b == b'\n').count();
        let resp = http
            .post(url)
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .header("x-sharegate-source", source.name())
            .header("x-sharegate-first-seq", first.to_string())
            .header("x-sharegate-last-seq", last.to_string())
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await
            .map_err(|e| format!("webhook unreachable: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("webhook answered {}", resp.status()));
        }
        // After the receiver has it: a crash before this line resends the batch (at least once).
        let key = cursor_key(source);
        let prev = (after > 0).then(|| after.to_string());
        if !s
            .store
            .cas(
                Ns::Analytics,
                &key,
                prev.as_deref().map(str::as_bytes),
                Some(last.to_string().as_bytes()),
            )
            .await
            .map_err(|e| e.to_string())?
        {
            return Err("the export cursor moved under this replica (lease lost)".into());
        }
        delivered += lines;
    }
    Ok(delivered)
}

/// Start the webhook pusher, when one is configured.
pub fn spawn(s: Arc<AppState>) {
    let Some(url) = s.config.analytics.webhook.clone() else {
        return;
    };
    let mut owner = [0u8; 8];
    let _ = getrandom::fill(&mut owner);
    let owner = hex::encode(owner);
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut backoff = Duration::from_secs(1);
        loop {
            let held = lease(&s, &owner, s.now()).await.unwrap_or(false);
            let wait = if !held {
                Duration::from_secs(5)
            } else {
                match push_once(&s, &http, &url).await {
                    Ok(n) if n > 0 => {
                        backoff = Duration::from_secs(1);
                        Duration::ZERO
                    }
                    Ok(_) => Duration::from_secs(2),
                    Err(e) => {
                        tracing::warn!(error = %e, "analytics webhook: will retry");
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                        backoff
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
}
