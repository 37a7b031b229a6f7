//! `GET /v1/analytics` and `GET /v1/analytics/views/{view}`.

use super::AppState;
use super::apply::{apply_pending, hours, rows_of};
use super::model::{Dims, HOUR, NONE, STARTUP_BOUNDS_MS, ViewRecord, all_metrics, counter, is_business, percentile};
use crate::service::auth::ReadAnalytics;
use crate::service::error::ApiError;
use crate::service::extract::{Authorized, QueryParams};
use crate::store::Ns;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest range one query covers.
pub const MAX_RANGE_SECS: u64 = 93 * 86_400;
/// Most counters one query reads (rows × metrics): a query that would read more is asked to narrow.
pub const MAX_COUNTERS: usize = 2_000_000;

const GROUP_KEYS: [&str; 6] = ["hour", "day", "asset", "share", "channel", "campaign"];

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/analytics", get(analytics))
        .route("/v1/analytics/views/{view}", get(view))
}

/// `GET /v1/analytics` query.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    /// Start, unix seconds (rounded down to the hour); default `to` − 24 h.
    pub from: Option<u64>,
    /// End, unix seconds (rounded up to the hour); default now.
    pub to: Option<u64>,
    /// Comma-separated: `hour`, `day`, `asset`, `share`, `channel`, `campaign`.
    pub group_by: Option<String>,
    /// Only this asset.
    pub asset: Option<String>,
    /// Only this share.
    pub share: Option<String>,
    /// Only this channel (`-`: none).
    pub channel: Option<String>,
    /// Only this campaign (`-`: none).
    pub campaign: Option<String>,
}

/// Sums of one group.
#[derive(Debug, Default, Clone)]
struct Acc {
    m: BTreeMap<String, u64>,
}

impl Acc {
    fn add(&mut self, metric: &str, v: u64) {
        if v > 0 {
            *self.m.entry(metric.to_string()).or_default() += v;
        }
    }
    fn get(&self, metric: &str) -> u64 {
        self.m.get(metric).copied().unwrap_or(0)
    }
    fn merge(&mut self, o: &Acc) {
        for (k, v) in &o.m {
            *self.m.entry(k.clone()).or_default() += v;
        }
    }

    fn to_json(&self) -> Map<String, Value> {
        let g = |m: &str| self.get(m);
        let watch = g("watch_ms") as f64 / 1000.0;
        let stall = g("stall_ms") as f64 / 1000.0;
        let buckets: Vec<u64> = (0..=STARTUP_BOUNDS_MS.len()).map(|i| g(&format!("su/{i}"))).collect();
        let mut business = Map::new();
        let mut technical = Map::new();
        for (k, v) in &self.m {
            if let Some(code) = k.strip_prefix("fail/") {
                let into = if is_business(code) {
                    &mut business
                } else {
                    &mut technical
                };
                into.insert(code.to_string(), json!(v));
            }
        }
        let fb: u64 = business.values().filter_map(Value::as_u64).sum();
        let ft: u64 = technical.values().filter_map(Value::as_u64).sum();
        let mut conv = Map::new();
        for (k, v) in &self.m {
            if let Some(kind) = k.strip_prefix("conv/") {
                conv.insert(kind.to_string(), json!(v));
            }
        }
        let ratio = |a: u64, b: u64| {
            if b == 0 {
                Value::Null
            } else {
                json!(a as f64 / b as f64)
            }
        };
        let mut o = Map::new();
        for m in [
            "minted",
            "opened",
            "first_segment",
            "views",
            "started",
            "completed",
            "converted",
            "conversions",
            "exits",
            "rebuffers",
            "cmcd_sessions",
            "cmcd_stalls",
        ] {
            let name = if m == "exits" { "exits_before_start" } else { m };
            o.insert(name.into(), json!(g(m)));
        }
        o.insert("watch_seconds".into(), json!(watch));
        o.insert("stall_seconds".into(), json!(stall));
        o.insert(
            "rebuffer_ratio".into(),
            if g("watch_ms") == 0 {
                Value::Null
            } else {
                json!(stall / watch)
            },
        );
        o.insert("startup_p50_ms".into(), json!(percentile(&buckets, 0.5)));
        o.insert("startup_p95_ms".into(), json!(percentile(&buckets, 0.95)));
        o.insert(
            "startup_mean_ms".into(),
            if g("started") == 0 {
                Value::Null
            } else {
                json!(g("startup_ms") / g("started"))
            },
        );
        o.insert("completion_rate".into(), ratio(g("completed"), g("started")));
        o.insert("conversion_rate".into(), ratio(g("converted"), g("views")));
        o.insert("failures".into(), json!({"business": business, "technical": technical}));
        o.insert("failures_business".into(), json!(fb));
        o.insert("failures_technical".into(), json!(ft));
        o.insert("conversions_by_kind".into(), Value::Object(conv));
        o
    }
}

fn dim_value(v: &str) -> Value {
    if v == NONE { Value::Null } else { json!(v) }
}

async fn analytics(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReadAnalytics>,
    QueryParams(q): QueryParams<AnalyticsQuery>,
) -> Result<Json<Value>, ApiError> {
    // Read what was accepted before this call (bounded: a backlog is the background applier's job).
    if let (Some(f), Some(t)) = (q.from, q.to)
        && f >= t
    {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    apply_pending(&s, 4).await?;
    let now = s.now();
    let to = q.to.unwrap_or(now);
    let to = to.div_ceil(HOUR).saturating_mul(HOUR).max(HOUR);
    let from = q.from.map_or(to.saturating_sub(86_400), |f| f - f % HOUR);
    if from >= to {
        return Err(ApiError::Invalid("from must be before to".into()));
    }
    if to - from > MAX_RANGE_SECS {
        return Err(ApiError::Invalid(format!(
            "a query covers at most {} days; narrow from/to",
            MAX_RANGE_SECS / 86_400
        )));
    }
    let group_by: Vec<String> = q
        .group_by
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(bad) = group_by.iter().find(|g| !GROUP_KEYS.contains(&g.as_str())) {
        return Err(ApiError::Invalid(format!(
            "cannot group by {bad:?}; use {}",
            GROUP_KEYS.join(", ")
        )));
    }
    let filter = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
    let hs = hours(from, to);
    let metrics = all_metrics();
    let mut selected: Vec<(u64, Dims)> = Vec::new();
    for (h, rows) in rows_of(&s, &hs).await? {
        for r in rows {
            let Some(d) = Dims::parse(&r) else { continue };
            if filter(&q.asset, &d.asset)
                && filter(&q.share, &d.share)
                && filter(&q.channel, &d.channel)
                && filter(&q.campaign, &d.campaign)
            {
                selected.push((h, d));
            }
        }
    }
    if selected.len().saturating_mul(metrics.len()) > MAX_COUNTERS {
        return Err(ApiError::Invalid(
            "the query spans too many rows; narrow the range or filter by asset, share, channel or campaign".into(),
        ));
    }
    let names: Vec<String> = selected
        .iter()
        .flat_map(|(h, d)| {
            let k = d.key();
            metrics.iter().map(move |m| counter(*h, &k, m))
        })
        .collect();
    let vals = s.store.counters(&names).await?;

    let mut groups: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let mut totals = Acc::default();
    for (i, (h, d)) in selected.iter().enumerate() {
        let mut acc = Acc::default();
        for (j, m) in metrics.iter().enumerate() {
            acc.add(m, vals.get(i * metrics.len() + j).copied().unwrap_or(0));
        }
        if acc.m.is_empty() {
            continue;
        }
        let key: Vec<String> = group_by
            .iter()
            .map(|g| match g.as_str() {
                "hour" => h.to_string(),
                "day" => (h - h % 86_400).to_string(),
                "asset" => d.asset.clone(),
                "share" => d.share.clone(),
                "channel" => d.channel.clone(),
                _ => d.campaign.clone(),
            })
            .collect();
        totals.merge(&acc);
        groups.entry(key).or_default().merge(&acc);
    }
    let rows: Vec<Value> = groups
        .into_iter()
        .map(|(key, acc)| {
            let mut o = Map::new();
            for (g, v) in group_by.iter().zip(key) {
                let val = if g == "hour" || g == "day" {
                    json!(v.parse::<u64>().unwrap_or(0))
                } else {
                    dim_value(&v)
                };
                o.insert(g.clone(), val);
            }
            o.extend(acc.to_json());
            Value::Object(o)
        })
        .collect();
    let funnel: Vec<Value> = ["minted", "opened", "first_segment", "started", "completed", "converted"]
        .iter()
        .map(|st| json!({"stage": st, "count": totals.get(st)}))
        .collect();
    Ok(Json(json!({
        "from": from,
        "to": to,
        "group_by": group_by,
        "rows": rows,
        "totals": Value::Object(totals.to_json()),
        "funnel": funnel,
    })))
}

/// `GET /v1/analytics/views/{view}`: a view id (our player's) or `t:<iat>-<token id>` (a session seen only at the
/// edge).
async fn view(
    State(s): State<Arc<AppState>>,
    _: Authorized<ReadAnalytics>,
    Path(view): Path<String>,
) -> Result<Json<Value>, ApiError> {
    apply_pending(&s, 4).await?;
    let key = match view.strip_prefix("t:") {
        Some(t) => format!("t/{t}"),
        None => format!("v/{view}"),
    };
    if key.len() > 128 {
        return Err(ApiError::NotFound("view"));
    }
    let raw = s.store.get(Ns::Views, &key).await?.ok_or(ApiError::NotFound("view"))?;
    let rec: ViewRecord = serde_json::from_slice(&raw).map_err(|e| ApiError::Internal(format!("stored view: {e}")))?;
    let dims = Dims::parse(&rec.dims).unwrap_or_else(Dims::overflow);
    let mut o = match serde_json::to_value(&rec) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    o.remove("dims");
    o.insert("view".into(), json!(view));
    o.insert("asset".into(), dim_value(&dims.asset));
    o.insert("share".into(), dim_value(&dims.share));
    o.insert("channel".into(), dim_value(&dims.channel));
    o.insert("campaign".into(), dim_value(&dims.campaign));
    o.insert(
        "rebuffer_ratio".into(),
        if rec.watch_ms == 0 {
            Value::Null
        } else {
            json!(rec.stall_ms as f64 / rec.watch_ms as f64)
        },
    );
    Ok(Json(Value::Object(o)))
}
