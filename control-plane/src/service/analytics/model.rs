//! The analytics model, without I/O: dimensions and their labels, a view's record, and what each input (a beacon, an
//! edge event, a mint, a conversion) changes in it and in the hourly aggregates. Definitions: docs/analytics.md.
//!
//! Every input is applied as "the record becomes the max/or of what it was and what arrived", and the aggregates
//! get exactly the difference, so a beacon that arrives twice, late or out of order changes nothing the second time
//! (beacons are cumulative snapshots of their view), and a flag (started, completed, failed…) is counted once.

use serde::{Deserialize, Serialize};
use sharegate_shared::Reason;
use std::collections::BTreeMap;

/// Seconds in an aggregation bucket.
pub const HOUR: u64 = 3600;
/// Longest label kept (channel, campaign, asset, share), bytes.
pub const MAX_LABEL: usize = 64;
/// The label of a missing dimension.
pub const NONE: &str = "-";
/// The label of what no longer fits under a cap.
pub const OVERFLOW: &str = "_overflow";
/// Most beacons applied to one view; later ones are ignored (a view can't be made to cost unbounded work).
pub const MAX_BEACONS_PER_VIEW: u32 = 2000;
/// Upper bounds of the startup-time histogram, milliseconds: 50 ms × 1.25^i, so a percentile read from it is
/// within 12 % of the true value (the geometric middle of a bucket is at most √1.25 away from any point in it).
pub static STARTUP_BOUNDS_MS: std::sync::LazyLock<Vec<u64>> = std::sync::LazyLock::new(|| {
    let mut v = Vec::new();
    let mut b = 50.0f64;
    while b < 120_000.0 {
        v.push(b.round() as u64);
        b *= 1.25;
    }
    v
});
/// Technical failure codes the player reports when the edge did not refuse.
pub const PLAYER_CODES: [&str; 5] = ["network", "media", "manifest", "decode", "other"];
/// Conversion kinds.
pub const CONVERSION_KINDS: [&str; 4] = ["trial", "purchase", "signup", "other"];

/// The share's and the access policies' refusal codes a player reports (besides the edge's reasons).
const SHARE_CODES: [&str; 9] = [
    "not_entitled",
    "viewer_required",
    "entitlement_denied",
    "trial_ended",
    "entitlement_ended",
    "sign_in_required",
    "not_invited",
    "embed_not_allowed",
    "not_found",
];

/// Whether a refusal is the policy doing its job (business) rather than something broken (technical).
pub fn is_business(code: &str) -> bool {
    matches!(
        code,
        "revoked"
            | "expired"
            | "geo_denied"
            | "ip_mismatch"
            | "origin_denied"
            | "out_of_scope"
            | "permission_denied"
            | "not_entitled"
            | "entitlement"
            | "viewer_required"
            | "entitlement_denied"
            | "trial_ended"
            | "entitlement_ended"
            | "sign_in_required"
            | "not_invited"
            | "embed_not_allowed"
            | "not_found"
    )
}

/// A failure code as counted: an edge reason code or a player code, else `other` (bounded whatever arrives).
pub fn failure_code(code: &str) -> &'static str {
    if let Some(r) = Reason::ALL.iter().find(|r| r.as_str() == code) {
        return r.as_str();
    }
    SHARE_CODES
        .iter()
        .chain(PLAYER_CODES.iter())
        .find(|c| **c == code)
        .copied()
        .unwrap_or("other")
}

/// Every failure code that can be counted.
pub fn failure_codes() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    v.extend(SHARE_CODES);
    v.extend(PLAYER_CODES);
    v.sort_unstable();
    v.dedup();
    v
}

/// A label safe in counter names and Prometheus text: `[A-Za-z0-9_.~-]`, at most [`MAX_LABEL`] bytes, anything else
/// `_`; empty or missing is [`NONE`].
pub fn label(v: Option<&str>) -> String {
    let s: String = v
        .unwrap_or("")
        .chars()
        .take(MAX_LABEL)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '~') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { NONE.to_string() } else { s }
}

/// The four dimensions of an aggregate row, as labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dims {
    /// Asset.
    pub asset: String,
    /// Share.
    pub share: String,
    /// Channel.
    pub channel: String,
    /// Campaign.
    pub campaign: String,
}

impl Dims {
    /// Dimensions from raw values (labelled).
    pub fn of(asset: Option<&str>, share: Option<&str>, channel: Option<&str>, campaign: Option<&str>) -> Dims {
        Dims {
            asset: label(asset),
            share: label(share),
            channel: label(channel),
            campaign: label(campaign),
        }
    }

    /// The row where what no longer fits is counted.
    pub fn overflow() -> Dims {
        Dims {
            asset: OVERFLOW.into(),
            share: OVERFLOW.into(),
            channel: OVERFLOW.into(),
            campaign: OVERFLOW.into(),
        }
    }

    /// `asset|share|channel|campaign` (labels hold no `|`).
    pub fn key(&self) -> String {
        format!("{}|{}|{}|{}", self.asset, self.share, self.channel, self.campaign)
    }

    /// The inverse of [`Dims::key`].
    pub fn parse(key: &str) -> Option<Dims> {
        let mut it = key.split('|');
        let d = Dims {
            asset: it.next()?.into(),
            share: it.next()?.into(),
            channel: it.next()?.into(),
            campaign: it.next()?.into(),
        };
        it.next().is_none().then_some(d)
    }
}

/// The hour bucket of a unix time.
pub const fn hour_of(t: u64) -> u64 {
    t - t % HOUR
}

/// The counter of one metric of one row.
pub fn counter(hour: u64, dims: &str, metric: &str) -> String {
    format!("an/{hour}/{dims}/{metric}")
}

/// The metrics every row has, besides the startup buckets (`su/<i>`), failures (`fail/<code>`) and conversion kinds
/// (`conv/<kind>`).
pub const ROW_METRICS: [&str; 16] = [
    "minted",
    "opened",
    "first_segment",
    "views",
    "started",
    "startup_ms",
    "completed",
    "exits",
    "watch_ms",
    "stall_ms",
    "rebuffers",
    "cmcd_sessions",
    "cmcd_stalls",
    "converted",
    "conversions",
    "failed",
];

/// Every metric name of a row, in a fixed order.
pub fn all_metrics() -> Vec<String> {
    let mut v: Vec<String> = ROW_METRICS.iter().map(|m| (*m).to_string()).collect();
    v.extend((0..STARTUP_BOUNDS_MS.len() + 1).map(|i| format!("su/{i}")));
    v.extend(failure_codes().into_iter().map(|c| format!("fail/{c}")));
    v.extend(CONVERSION_KINDS.iter().map(|k| format!("conv/{k}")));
    v
}

/// The startup bucket of a time.
pub fn startup_bucket(ms: u64) -> usize {
    STARTUP_BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(STARTUP_BOUNDS_MS.len())
}

/// Where a view came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Our player page (a signed view id).
    #[default]
    Player,
    /// A client without our page, seen only through the edge (keyed by its token).
    Edge,
}

/// A failure of a view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// `business` or `technical`.
    pub class: String,
    /// The reason code.
    pub code: String,
}

/// One view's record (`Ns::Views`, key `v/<view id>` or `t/<iat>-<token id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ViewRecord {
    /// The hour the view started: all its numbers are counted in this hour's row.
    pub hour: u64,
    /// Its row (a [`Dims::key`], possibly the overflow row).
    pub dims: String,
    /// Where it came from.
    pub source: Source,
    /// The viewer, when the link named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer: Option<String>,
    /// A playlist was opened at the edge.
    pub opened: bool,
    /// A first media segment was served.
    pub first_segment: bool,
    /// Play was requested.
    pub play_requested: bool,
    /// Play requested → first frame moving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_ms: Option<u64>,
    /// Completed (≥ 95 % watched, or ended).
    pub completed: bool,
    /// Play requested, no first frame, no failure, page left.
    pub exited_before_start: bool,
    /// How it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// A conversion was reported against it.
    pub converted: bool,
    /// Watch time (playing or stalled after the first frame), ms.
    pub watch_ms: u64,
    /// Stall time after the first frame, ms.
    pub stall_ms: u64,
    /// Stalls after the first frame.
    pub rebuffers: u64,
    /// Sum of played ranges, ms.
    pub played_ms: u64,
    /// Media duration, ms (0: unknown).
    pub duration_ms: u64,
    /// The edge saw CMCD from this session.
    pub cmcd: bool,
    /// Stalls the edge saw reported in CMCD (`bs`).
    pub cmcd_stalls: u64,
    /// Beacons applied.
    pub beacons: u32,
    /// Highest beacon sequence number seen.
    pub seq: u64,
    /// Unix seconds of the last change.
    pub updated: u64,
}

/// A beacon's body (see docs/analytics.md).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Beacon {
    /// Format version (1).
    pub v: u32,
    /// The view id.
    pub view: String,
    /// Share id.
    pub share: String,
    /// Asset id.
    pub asset: String,
    /// Channel.
    #[serde(default)]
    pub channel: Option<String>,
    /// Campaign.
    #[serde(default)]
    pub campaign: Option<String>,
    /// 0, 1, 2… per view.
    #[serde(default)]
    pub seq: u64,
    /// Play was requested.
    #[serde(default)]
    pub play_requested: bool,
    /// Startup time, once known.
    #[serde(default)]
    pub startup_ms: Option<u64>,
    /// Watch time so far.
    #[serde(default)]
    pub watch_ms: u64,
    /// Stall time so far.
    #[serde(default)]
    pub stall_ms: u64,
    /// Stalls so far.
    #[serde(default)]
    pub rebuffers: u64,
    /// Played ranges so far.
    #[serde(default)]
    pub played_ms: u64,
    /// Media duration.
    #[serde(default)]
    pub duration_ms: u64,
    /// The media ended.
    #[serde(default)]
    pub ended: bool,
    /// Why playback failed for good.
    #[serde(default)]
    pub failure: Option<BeaconFailure>,
    /// The page is going away.
    #[serde(default, rename = "final")]
    pub last: bool,
}

/// A beacon's failure.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct BeaconFailure {
    /// Reason code.
    pub code: String,
}

/// What an input adds to the aggregates: metric → amount.
pub type Deltas = BTreeMap<String, u64>;

fn bump(d: &mut Deltas, m: &str, by: u64) {
    if by > 0 {
        *d.entry(m.to_string()).or_default() += by;
    }
}

/// Longest a view can have been watched by `now`, ms (an upper bound for every duration a beacon claims, so a
/// valid view id can't push numbers no real page could reach).
fn ceiling_ms(view_issued: u64, now: u64) -> u64 {
    now.saturating_sub(view_issued).saturating_add(120).saturating_mul(1000)
}

fn fail(rec: &mut ViewRecord, d: &mut Deltas, code: &str) {
    if rec.failure.is_some() {
        return;
    }
    let code = failure_code(code);
    let class = if is_business(code) { "business" } else { "technical" };
    rec.failure = Some(Failure {
        class: class.into(),
        code: code.into(),
    });
    bump(d, "failed", 1);
    bump(d, &format!("fail/{code}"), 1);
}

impl ViewRecord {
    /// Apply a (verified) beacon; what it adds to the view's row.
    pub fn apply_beacon(&mut self, b: &Beacon, view_issued: u64, now: u64) -> Deltas {
        let mut d = Deltas::new();
        if self.beacons >= MAX_BEACONS_PER_VIEW {
            return d;
        }
        self.beacons += 1;
        self.seq = self.seq.max(b.seq);
        let cap = ceiling_ms(view_issued, now);
        if b.play_requested && !self.play_requested {
            self.play_requested = true;
            bump(&mut d, "views", 1);
        }
        if let Some(ms) = b
            .startup_ms
            .filter(|_| self.startup_ms.is_none() && self.play_requested)
        {
            let ms = ms.min(cap);
            self.startup_ms = Some(ms);
            bump(&mut d, "started", 1);
            bump(&mut d, "startup_ms", ms);
            bump(&mut d, &format!("su/{}", startup_bucket(ms)), 1);
        }
        let watch = b.watch_ms.min(cap);
        let stall = b.stall_ms.min(watch);
        // A stall shorter than 50 ms isn't one a viewer sees; neither can there be more stalls than that allows.
        let rebuffers = b.rebuffers.min(stall / 50 + u64::from(stall > 0));
        for (field, new, metric) in [
            (&mut self.watch_ms, watch, "watch_ms"),
            (&mut self.stall_ms, stall, "stall_ms"),
            (&mut self.rebuffers, rebuffers, "rebuffers"),
        ] {
            if new > *field {
                bump(&mut d, metric, new - *field);
                *field = new;
            }
        }
        self.duration_ms = self.duration_ms.max(b.duration_ms.min(24 * 3600 * 1000));
        self.played_ms = self.played_ms.max(b.played_ms.min(cap));
        let watched_enough = self.duration_ms > 0 && self.played_ms * 100 >= self.duration_ms * 95;
        if (b.ended || watched_enough) && self.startup_ms.is_some() && !self.completed {
            self.completed = true;
            bump(&mut d, "completed", 1);
        }
        if let Some(f) = &b.failure {
            fail(self, &mut d, &f.code);
        }
        if b.last
            && self.play_requested
            && self.startup_ms.is_none()
            && self.failure.is_none()
            && !self.exited_before_start
        {
            self.exited_before_start = true;
            bump(&mut d, "exits", 1);
        }
        self.updated = now;
        d
    }

    /// Apply an edge event of this session.
    pub fn apply_edge(&mut self, e: &EdgeInput, now: u64) -> Deltas {
        let mut d = Deltas::new();
        match e.kind.as_str() {
            "playlist_open" if !self.opened => {
                self.opened = true;
                bump(&mut d, "opened", 1);
            }
            "segment" if !self.first_segment => {
                self.first_segment = true;
                bump(&mut d, "first_segment", 1);
                // A client without our page: its first segment is its view (it can't say it asked to play).
                if self.source == Source::Edge && !self.play_requested {
                    self.play_requested = true;
                    bump(&mut d, "views", 1);
                }
            }
            "deny" | "expiry" if self.source == Source::Edge && !self.first_segment => {
                // Our player says itself whether a refusal ended the view (it refreshes expired tokens); for other
                // clients a refusal before any segment is the session's failure.
                if let Some(r) = &e.reason {
                    fail(self, &mut d, r);
                }
            }
            _ => {}
        }
        if e.cmcd && !self.cmcd {
            self.cmcd = true;
            bump(&mut d, "cmcd_sessions", 1);
        }
        if e.bs {
            self.cmcd_stalls += 1;
            bump(&mut d, "cmcd_stalls", 1);
        }
        self.updated = now;
        d
    }

    /// Apply a conversion reported against this view.
    pub fn apply_conversion(&mut self, kind: &str, now: u64) -> Deltas {
        let mut d = conversion_deltas(kind);
        if !self.converted {
            self.converted = true;
            bump(&mut d, "converted", 1);
        }
        self.updated = now;
        d
    }
}

/// What a conversion adds to its row (besides `converted`, counted once per view).
pub fn conversion_deltas(kind: &str) -> Deltas {
    let mut d = Deltas::new();
    let kind = CONVERSION_KINDS
        .iter()
        .find(|k| **k == kind)
        .copied()
        .unwrap_or("other");
    bump(&mut d, "conversions", 1);
    bump(&mut d, &format!("conv/{kind}"), 1);
    d
}

/// The part of an edge event analytics uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeInput {
    /// Event kind.
    pub kind: String,
    /// Reason code.
    pub reason: Option<String>,
    /// The event carried CMCD data.
    pub cmcd: bool,
    /// CMCD buffer starvation.
    pub bs: bool,
}

/// Percentile `q` (0..1) of a startup histogram (counts per bucket of [`STARTUP_BOUNDS_MS`], the last one open),
/// read at the geometric middle of its bucket; `None` when empty.
pub fn percentile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let hi = STARTUP_BOUNDS_MS.get(i).copied().unwrap_or(120_000) as f64;
            let lo = if i == 0 {
                hi / 1.25
            } else {
                STARTUP_BOUNDS_MS[i - 1] as f64
            };
            return Some((lo * hi).sqrt().round() as u64);
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn beacon() -> Beacon {
        Beacon {
            v: 1,
            view: "v".into(),
            share: "s".into(),
            asset: "a".into(),
            ..Beacon::default()
        }
    }

    #[test]
    fn replayed_and_reordered_beacons_count_once() {
        let t0 = 1_800_000_000;
        let mut r = ViewRecord::default();
        let b1 = Beacon {
            seq: 1,
            play_requested: true,
            startup_ms: Some(800),
            watch_ms: 10_000,
            stall_ms: 500,
            rebuffers: 1,
            ..beacon()
        };
        let b2 = Beacon {
            seq: 2,
            watch_ms: 20_000,
            stall_ms: 500,
            rebuffers: 1,
            played_ms: 19_500,
            duration_ms: 20_000,
            ended: true,
            ..b1.clone()
        };
        let mut total = Deltas::new();
        for b in [&b1, &b2, &b1, &b2, &b1] {
            for (k, v) in r.apply_beacon(b, t0, t0 + 60) {
                *total.entry(k).or_default() += v;
            }
        }
        assert_eq!(total["views"], 1);
        assert_eq!(total["started"], 1);
        assert_eq!(total["startup_ms"], 800);
        assert_eq!(total["watch_ms"], 20_000);
        assert_eq!(total["stall_ms"], 500);
        assert_eq!(total["rebuffers"], 1);
        assert_eq!(total["completed"], 1);
        assert_eq!(total[&format!("su/{}", startup_bucket(800))], 1);
    }

    #[test]
    fn claims_beyond_what_a_page_could_reach_are_clamped() {
        let t0 = 1_800_000_000;
        let mut r = ViewRecord::default();
        let b = Beacon {
            play_requested: true,
            startup_ms: Some(u64::MAX),
            watch_ms: u64::MAX,
            stall_ms: u64::MAX,
            rebuffers: u64::MAX,
            played_ms: u64::MAX,
            duration_ms: u64::MAX,
            ..beacon()
        };
        let d = r.apply_beacon(&b, t0, t0 + 10);
        assert_eq!(d["watch_ms"], 130_000, "10 s since the view + 120 s slack");
        assert!(d["rebuffers"] <= 130_000 / 50 + 1);
        assert!(d.values().all(|v| *v < 1 << 40));
    }

    #[test]
    fn failures_and_exits_are_classified_once() {
        let mut r = ViewRecord::default();
        let b = Beacon {
            play_requested: true,
            failure: Some(BeaconFailure { code: "revoked".into() }),
            last: true,
            ..beacon()
        };
        let d = r.apply_beacon(&b, 0, 10);
        assert_eq!(d.get("fail/revoked"), Some(&1));
        assert_eq!(d.get("exits"), None, "a failure is not an exit before start");
        assert_eq!(r.failure.as_ref().unwrap().class, "business");
        let d = r.apply_beacon(
            &Beacon {
                failure: Some(BeaconFailure { code: "network".into() }),
                ..b
            },
            0,
            10,
        );
        assert!(d.is_empty(), "{d:?}");

        let mut r = ViewRecord::default();
        let d = r.apply_beacon(
            &Beacon {
                play_requested: true,
                failure: Some(BeaconFailure {
                    code: "<script>".into(),
                }),
                ..beacon()
            },
            0,
            10,
        );
        assert_eq!(d.get("fail/other"), Some(&1), "an unknown code is folded");
        assert_eq!(r.failure.unwrap().class, "technical");

        let mut r = ViewRecord::default();
        let d = r.apply_beacon(
            &Beacon {
                play_requested: true,
                last: true,
                ..beacon()
            },
            0,
            10,
        );
        assert_eq!(d.get("exits"), Some(&1));
    }

    #[test]
    fn edge_sessions_count_views_at_the_first_segment() {
        let mut r = ViewRecord {
            source: Source::Edge,
            ..ViewRecord::default()
        };
        let open = EdgeInput {
            kind: "playlist_open".into(),
            cmcd: true,
            ..EdgeInput::default()
        };
        let seg = EdgeInput {
            kind: "segment".into(),
            cmcd: true,
            bs: true,
            ..EdgeInput::default()
        };
        let mut total = Deltas::new();
        for e in [&open, &open, &seg, &seg] {
            for (k, v) in r.apply_edge(e, 1) {
                *total.entry(k).or_default() += v;
            }
        }
        assert_eq!(total["opened"], 1);
        assert_eq!(total["first_segment"], 1);
        assert_eq!(total["views"], 1);
        assert_eq!(total["cmcd_sessions"], 1);
        assert_eq!(total["cmcd_stalls"], 2);
    }

    #[test]
    fn percentiles_are_within_twelve_percent() {
        for ms in [60u64, 333, 640, 1234, 5000, 29_000] {
            let mut b = vec![0; STARTUP_BOUNDS_MS.len() + 1];
            b[startup_bucket(ms)] += 1;
            let p = percentile(&b, 0.5).unwrap() as f64;
            assert!((p / ms as f64 - 1.0).abs() <= 0.12, "{ms} → {p}");
        }
        assert_eq!(percentile(&[0, 0], 0.5), None);
    }

    #[test]
    fn dims_round_trip_and_labels_are_safe() {
        let d = Dims::of(Some("demo"), None, Some("em|ail/x\n"), Some(&"c".repeat(200)));
        assert_eq!(d.channel, "em_ail_x_");
        assert_eq!(d.share, NONE);
        assert_eq!(d.campaign.len(), MAX_LABEL);
        assert_eq!(Dims::parse(&d.key()), Some(d));
        assert_eq!(Dims::parse("a|b|c"), None);
    }
}
