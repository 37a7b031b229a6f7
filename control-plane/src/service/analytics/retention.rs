//! Raw retention: beacons, mints, conversions, edge events and view records older than
//! `SHAREGATE_ANALYTICS_RETENTION_HOURS` are deleted; the hourly rows (and the QoE counters) stay.
//!
//! Never past what is not yet applied (the applier's cursors) and, with a webhook, not past what is not yet pushed
//! unless it is twice the retention old (a receiver down for that long loses the oldest, rather than the store
//! growing without bound).

use super::AppState;
use super::apply::{Input, cursor_of};
use super::export::{Source, push_cursor};
use super::model::HOUR;
use crate::service::error::ApiError;
use crate::store::{Log, MAX_PAGE, Ns, Op};
use std::sync::Arc;
use std::time::Duration;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// View records deleted.
    pub views: usize,
    /// Log entries trimmed below: (beacons, events).
    pub beacons_below: u64,
    /// Same, edge events.
    pub events_below: u64,
}

/// The first seq of `log` whose entry is at least `cutoff` old-or-newer (by its `at`), scanning from the start, but
/// never above `limit + 1`.
async fn first_kept(s: &AppState, log: Log, cutoff: u64, limit: u64) -> Result<u64, ApiError> {
    let mut from = 1;
    loop {
        let page = s.store.read_log(log, from, MAX_PAGE.min(2000)).await?;
        let Some(&(last, _)) = page.last() else {
            return Ok(from.min(limit + 1));
        };
        for (seq, raw) in &page {
            let at = serde_json::from_slice::<serde_json::Value>(raw)
                .ok()
                .and_then(|v| v["at"].as_u64())
                .unwrap_or(u64::MAX);
            if at >= cutoff || *seq > limit {
                return Ok((*seq).min(limit + 1));
            }
        }
        from = last + 1;
    }
}

/// One sweep at `now`.
pub async fn sweep(s: &AppState, now: u64) -> Result<SweepReport, ApiError> {
    let keep = s.config.analytics.raw_retention_secs;
    let cutoff = now.saturating_sub(keep);
    let mut report = SweepReport::default();

    // Views, oldest first, through their index.
    loop {
        let page = s.store.read_log(Log::ViewIndex, 1, 1000).await?;
        let mut old: Vec<String> = Vec::new();
        let mut below = None;
        for (seq, raw) in &page {
            let text = String::from_utf8_lossy(raw);
            let (hour, key) = text.split_once(' ').unwrap_or(("0", ""));
            let hour: u64 = hour.parse().unwrap_or(0);
            if hour + HOUR > cutoff {
                break;
            }
            if !key.is_empty() {
                old.push(key.to_string());
            }
            below = Some(*seq + 1);
        }
        let Some(below) = below else { break };
        let ops: Vec<Op<'_>> = old.iter().map(|k| Op::Delete { ns: Ns::Views, key: k }).collect();
        if !ops.is_empty() {
            s.store.atomic(&[], &ops).await?;
        }
        s.store.trim_log(Log::ViewIndex, below).await?;
        report.views += old.len();
        if page.len() < 1000 || below <= page.last().map_or(0, |(seq, _)| *seq) {
            break;
        }
    }

    // Raw logs: not past the applier, nor (with a webhook) past the push unless twice the retention old.
    for (input, source) in [(Input::Beacons, Source::Player), (Input::Events, Source::Edge)] {
        let applied = cursor_of(s, input).await?;
        let mut below = first_kept(s, input.log(), cutoff, applied).await?;
        if s.config.analytics.webhook.is_some() {
            let pushed = push_cursor(s, source).await?;
            let hard = first_kept(s, input.log(), now.saturating_sub(2 * keep), applied).await?;
            below = below.min((pushed + 1).max(hard));
        }
        if below > 1 {
            s.store.trim_log(input.log(), below).await?;
        }
        match input {
            Input::Beacons => report.beacons_below = below,
            Input::Events => report.events_below = below,
        }
    }
    Ok(report)
}

/// Start the retention sweep: 30 s after start, then every 10 minutes.
pub fn spawn(s: Arc<AppState>) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(30)).await;
        loop {
            if let Err(e) = sweep(&s, s.now()).await {
                tracing::warn!(error = %e, "analytics retention sweep failed; will retry");
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    });
}
