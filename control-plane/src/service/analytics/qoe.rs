//! Quality-of-experience series for Prometheus, with bounded labels.
//!
//! The hourly rows are for queries; Prometheus wants monotonic counters with few labels. Every batch that changes
//! the rows also adds to cluster-wide counters per (channel, campaign), in the same transaction, so all replicas
//! report the same values (aggregate with `max`, not `sum`, as for the edge event counters). Channel and campaign
//! labels are registered values: the first [`MAX_CHANNELS`] channels, [`MAX_CAMPAIGNS`] campaigns and [`MAX_COMBOS`]
//! pairs seen are kept, the rest are counted as `_overflow`, so whatever arrives the exposition stays bounded.

use super::AppState;
use super::model::{Deltas, Dims, NONE, OVERFLOW, STARTUP_BOUNDS_MS, failure_codes, is_business};
use crate::service::error::ApiError;
use crate::store::Ns;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Most channel label values.
pub const MAX_CHANNELS: usize = 32;
/// Most campaign label values.
pub const MAX_CAMPAIGNS: usize = 64;
/// Most (channel, campaign) pairs.
pub const MAX_COMBOS: usize = 256;

const REGISTRY: &str = "qoe/combos";
/// Per-pair metrics kept for Prometheus.
const PAIR_METRICS: [&str; 8] = [
    "views",
    "started",
    "startup_ms",
    "rebuffers",
    "stall_ms",
    "watch_ms",
    "opened",
    "first_segment",
];
/// Indices of [`STARTUP_BOUNDS_MS`] exposed as `le` bounds (about ×2 apart, 50 ms to ~80 s).
const EXPOSED_BUCKETS: [usize; 11] = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30];

fn pair_of(dims: &str) -> (String, String) {
    Dims::parse(dims).map_or_else(|| (OVERFLOW.into(), OVERFLOW.into()), |d| (d.channel, d.campaign))
}

/// What one batch adds to the QoE counters, before labels are registered.
#[derive(Debug, Default)]
pub struct Batch {
    pairs: BTreeMap<(String, String), Deltas>,
    failures: Deltas,
}

impl Batch {
    /// Add a row's deltas.
    pub fn add(&mut self, dims: &str, deltas: &Deltas) {
        let pair = self.pairs.entry(pair_of(dims)).or_default();
        for (m, by) in deltas {
            if PAIR_METRICS.contains(&m.as_str()) || m.starts_with("su/") {
                *pair.entry(m.clone()).or_default() += by;
            } else if let Some(code) = m.strip_prefix("fail/") {
                *self.failures.entry(code.to_string()).or_default() += by;
            }
        }
    }

    /// The counters to bump, with the pairs labelled against the registry (registering new ones under the caps).
    pub async fn counters(self, s: &AppState) -> Result<BTreeMap<String, u64>, ApiError> {
        let mut out = BTreeMap::new();
        for (code, by) in self.failures {
            *out.entry(format!("qoe/fail/{code}")).or_default() += by;
        }
        if self.pairs.is_empty() {
            return Ok(out);
        }
        let labelled = register(s, self.pairs.keys().cloned().collect()).await?;
        for (pair, deltas) in self.pairs {
            let (ch, ca) = labelled
                .get(&pair)
                .cloned()
                .unwrap_or((OVERFLOW.into(), OVERFLOW.into()));
            for (m, by) in deltas {
                *out.entry(format!("qoe/{ch}|{ca}/{m}")).or_default() += by;
            }
        }
        Ok(out)
    }
}

fn parse_registry(raw: Option<&[u8]>) -> BTreeSet<(String, String)> {
    raw.map(String::from_utf8_lossy)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Label each pair: itself if registered or if it fits under the caps (then registered), else with `_overflow` in
/// place of what doesn't fit.
async fn register(
    s: &AppState,
    pairs: Vec<(String, String)>,
) -> Result<BTreeMap<(String, String), (String, String)>, ApiError> {
    for _ in 0..16 {
        let raw = s.store.get(Ns::Analytics, REGISTRY).await?;
        let mut set = parse_registry(raw.as_deref());
        let mut out = BTreeMap::new();
        let mut changed = false;
        for p in &pairs {
            let label = if set.contains(p) {
                p.clone()
            } else {
                let channels: BTreeSet<&String> = set.iter().map(|(c, _)| c).collect();
                let campaigns: BTreeSet<&String> = set.iter().map(|(_, c)| c).collect();
                let ch = if channels.contains(&p.0) || channels.len() < MAX_CHANNELS {
                    p.0.clone()
                } else {
                    OVERFLOW.into()
                };
                let ca = if campaigns.contains(&p.1) || campaigns.len() < MAX_CAMPAIGNS {
                    p.1.clone()
                } else {
                    OVERFLOW.into()
                };
                let mut l = (ch, ca);
                if !set.contains(&l) && set.len() >= MAX_COMBOS {
                    l = (OVERFLOW.into(), OVERFLOW.into());
                }
                if set.insert(l.clone()) {
                    changed = true;
                }
                l
            };
            out.insert(p.clone(), label);
        }
        if !changed {
            return Ok(out);
        }
        let text: Vec<String> = set.iter().map(|(a, b)| format!("{a}|{b}")).collect();
        if s.store
            .cas(
                Ns::Analytics,
                REGISTRY,
                raw.as_deref(),
                Some(text.join("\n").as_bytes()),
            )
            .await?
        {
            return Ok(out);
        }
    }
    Err(ApiError::Store(crate::store::StoreError::Contention(
        "QoE label registry kept changing".into(),
    )))
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Append the QoE series to a Prometheus exposition.
pub async fn render(s: &AppState, out: &mut String) -> Result<(), ApiError> {
    let raw = s.store.get(Ns::Analytics, REGISTRY).await?;
    let pairs: Vec<(String, String)> = parse_registry(raw.as_deref()).into_iter().collect();
    let nb = STARTUP_BOUNDS_MS.len() + 1;
    let mut names = Vec::new();
    for (ch, ca) in &pairs {
        for m in PAIR_METRICS {
            names.push(format!("qoe/{ch}|{ca}/{m}"));
        }
        for i in 0..nb {
            names.push(format!("qoe/{ch}|{ca}/su/{i}"));
        }
    }
    let codes = failure_codes();
    for c in &codes {
        names.push(format!("qoe/fail/{c}"));
    }
    let vals = s.store.counters(&names).await?;
    let per_pair = PAIR_METRICS.len() + nb;
    let lbl = |ch: &str, ca: &str| {
        let ch = if ch == NONE { "_none" } else { ch };
        let ca = if ca == NONE { "_none" } else { ca };
        format!("channel=\"{}\",campaign=\"{}\"", esc(ch), esc(ca))
    };
    let counters: [(&str, &str, &str, f64); 6] = [
        (
            "sharegate_views_total",
            "views",
            "Player views (play requested) and edge-only sessions that got a first segment.",
            1.0,
        ),
        (
            "sharegate_rebuffers_total",
            "rebuffers",
            "Stalls after the first frame, as the player reported them.",
            1.0,
        ),
        (
            "sharegate_stall_seconds_total",
            "stall_ms",
            "Time stalled after the first frame.",
            0.001,
        ),
        (
            "sharegate_watch_seconds_total",
            "watch_ms",
            "Watch time (playing or stalled after the first frame).",
            0.001,
        ),
        (
            "sharegate_playlist_opens_total",
            "opened",
            "Sessions whose multivariant playlist the edge served.",
            1.0,
        ),
        (
            "sharegate_first_segments_total",
            "first_segment",
            "Sessions whose first media segment the edge served.",
            1.0,
        ),
    ];
    for (name, metric, help, scale) in counters {
        let idx = PAIR_METRICS.iter().position(|m| *m == metric).unwrap_or(0);
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (i, (ch, ca)) in pairs.iter().enumerate() {
            let v = vals.get(i * per_pair + idx).copied().unwrap_or(0) as f64 * scale;
            let _ = writeln!(out, "{name}{{{}}} {v}", lbl(ch, ca));
        }
    }
    let name = "sharegate_video_startup_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Video startup time: play requested to first frame moving.\n# TYPE {name} histogram"
    );
    let started = PAIR_METRICS.iter().position(|m| *m == "started").unwrap_or(0);
    let sum = PAIR_METRICS.iter().position(|m| *m == "startup_ms").unwrap_or(0);
    for (i, (ch, ca)) in pairs.iter().enumerate() {
        let base = i * per_pair;
        let buckets = &vals[(base + PAIR_METRICS.len()).min(vals.len())..(base + per_pair).min(vals.len())];
        let l = lbl(ch, ca);
        for &b in &EXPOSED_BUCKETS {
            let Some(bound) = STARTUP_BOUNDS_MS.get(b) else {
                continue;
            };
            let cum: u64 = buckets.iter().take(b + 1).sum();
            let _ = writeln!(out, "{name}_bucket{{{l},le=\"{}\"}} {cum}", *bound as f64 / 1000.0);
        }
        let count = vals.get(base + started).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {count}",
            vals.get(base + sum).copied().unwrap_or(0) as f64 / 1000.0
        );
    }
    let name = "sharegate_playback_failures_total";
    let _ = writeln!(
        out,
        "# HELP {name} Views that failed for good: business (refused by policy) or technical (anything else).\n# TYPE {name} counter"
    );
    let off = pairs.len() * per_pair;
    for (i, c) in codes.iter().enumerate() {
        let v = vals.get(off + i).copied().unwrap_or(0);
        let class = if is_business(c) { "business" } else { "technical" };
        let _ = writeln!(out, "{name}{{class=\"{class}\",reason=\"{c}\"}} {v}");
    }
    Ok(())
}
