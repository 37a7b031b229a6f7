//! `sharegate doctor`: a preflight of a running deployment, for operators before and after a change, and for
//! scripts (`--json`, exit status 0 healthy / 1 not). It checks what no liveness or readiness probe does:
//!
//! - the store answers, and its persistence settings keep an acknowledged revocation (`store`);
//! - the clocks of this host, the replicas and the store agree within `--max-skew-ms` (`clock`): tokens expire and
//!   edges age their state by wall clocks;
//! - the key ring can rotate (`keys`): one active key, a next key published, every edge holding the keys that sign
//!   live tokens;
//! - every edge answers, holds the current revocation generation and a fresh state (`edges`);
//! - end to end (`canary`): a canary link is minted, played at every edge, revoked, and each edge is timed until it
//!   refuses it.
//!
//! The control plane's side is `GET /v1/doctor` and the canary endpoints (control-plane `service::doctor`).

use crate::cli::DoctorArgs;
use crate::client::ApiClient;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use sharegate_control_plane::service::doctor::{CanaryLink, DoctorReport};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    Warning,
    Fail,
}

#[derive(Debug, Serialize)]
struct Finding {
    check: &'static str,
    status: Status,
    detail: String,
}

#[derive(Debug, Serialize)]
struct EdgeCanary {
    edge: String,
    /// Served before the revocation (status of the playlist request).
    before: Option<u16>,
    /// Milliseconds from the revocation's acknowledgement to this edge's first refusal.
    refused_after_ms: Option<u64>,
    /// The reason code it refused with.
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Canary {
    asset: String,
    token_id: String,
    /// Milliseconds the revocation call took (the control plane pushes to its edges before answering).
    revoke_ms: Option<u64>,
    edges: Vec<EdgeCanary>,
}

#[derive(Debug, Serialize)]
struct Output {
    healthy: bool,
    api: String,
    findings: Vec<Finding>,
    canary: Option<Canary>,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, check: &'static str, status: Status, detail: impl Into<String>) {
        self.0.push(Finding {
            check,
            status,
            detail: detail.into(),
        });
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn secs(ms: i64) -> String {
    format!("{:.1} s", ms.unsigned_abs() as f64 / 1000.0)
}

fn ahead_or_behind(ms: i64) -> &'static str {
    if ms >= 0 { "ahead of" } else { "behind" }
}

/// `sharegate doctor`.
pub async fn run(a: DoctorArgs) -> Result<ExitCode> {
    let client = ApiClient::from_env(&a.api.api)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .context("http client")?;
    let mut f = Findings::default();
    let mut canary = None;
    match fetch_report(&client).await {
        Err(NoReport::Api(why)) => f.add("api", Status::Fail, why),
        Err(NoReport::Store(why)) => f.add("store", Status::Fail, why),
        Ok((report, host_ms)) => {
            f.add(
                "api",
                Status::Ok,
                format!(
                    "{} answered (replica {}, version {})",
                    a.api.api, report.replica.id, report.replica.version
                ),
            );
            store_checks(&mut f, &report);
            clock_checks(&mut f, &report, host_ms, a.max_skew_ms);
            let edges = edge_list(&a, &report);
            let statuses = edge_checks(&mut f, &http, &report, &edges, a.max_skew_ms).await;
            key_checks(&mut f, &client, &edges, &statuses, &report).await;
            if !a.no_canary {
                canary = run_canary(&mut f, &client, &http, &report, &edges, &a).await;
            }
        }
    }
    let healthy = f.0.iter().all(|x| x.status != Status::Fail);
    let out = Output {
        healthy,
        api: a.api.api.clone(),
        findings: f.0,
        canary,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_words(&out);
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn print_words(out: &Output) {
    for x in &out.findings {
        let tag = match x.status {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Fail => "FAIL",
        };
        println!("{tag:>7}  {:<8} {}", x.check, x.detail);
    }
    let fails = out.findings.iter().filter(|x| x.status == Status::Fail).count();
    let warns = out.findings.iter().filter(|x| x.status == Status::Warning).count();
    if out.healthy {
        println!("sharegate doctor: healthy ({warns} warning(s))");
    } else {
        println!("sharegate doctor: UNHEALTHY: {fails} check(s) failed, {warns} warning(s)");
    }
}

/// Why `GET /v1/doctor` gave no report.
enum NoReport {
    /// The store is down: authentication itself needs it.
    Store(String),
    /// Anything else (unreachable API, wrong key).
    Api(String),
}

/// `GET /v1/doctor`, and this host's clock when the request left (the replica stamps its clock as the call
/// arrives, before it asks its store and edges, so the one-way trip is all that separates the two).
async fn fetch_report(client: &ApiClient) -> std::result::Result<(DoctorReport, u64), NoReport> {
    let sent = now_ms();
    let answer = client.doctor().await.map_err(|e| NoReport::Api(format!("{e:#}")))?;
    let status = answer.status.as_u16();
    if status == 503 && answer.body.contains("store_") {
        return Err(NoReport::Store(format!(
            "the control plane answers 503 because its store does not answer: {}",
            answer.body
        )));
    }
    if !answer.status.is_success() {
        let hint = if matches!(status, 401 | 403) {
            " (an admin API key is needed in SHAREGATE_API_KEY)"
        } else {
            ""
        };
        return Err(NoReport::Api(format!(
            "GET /v1/doctor answered {}: {}{hint}",
            answer.status, answer.body
        )));
    }
    let report = answer.json().map_err(|e| NoReport::Api(format!("{e:#}")))?;
    Ok((report, sent))
}

fn store_checks(f: &mut Findings, r: &DoctorReport) {
    let s = &r.store;
    if !s.reachable {
        f.add(
            "store",
            Status::Fail,
            format!(
                "the {} store does not answer: {}",
                s.backend,
                s.error.as_deref().unwrap_or("?")
            ),
        );
        return;
    }
    let rtt = s
        .round_trip_ms
        .map_or_else(String::new, |ms| format!(", round trip {ms} ms"));
    match &s.durability {
        None => f.add(
            "store",
            Status::Warning,
            format!(
                "{} answers{rtt}, but its persistence settings cannot be read",
                s.backend
            ),
        ),
        Some(d) => {
            use sharegate_control_plane::store::DurabilityLevel as L;
            let status = match d.level {
                L::Ok => Status::Ok,
                L::Warning => Status::Warning,
                L::Error => Status::Fail,
            };
            f.add("store", status, format!("{}{rtt}: {}", s.backend, d.summary));
        }
    }
}

fn clock_checks(f: &mut Findings, r: &DoctorReport, host_ms: u64, max_skew_ms: u64) {
    let max = i64::try_from(max_skew_ms).unwrap_or(i64::MAX);
    let mut bad = false;
    let replica_vs_host = i64::try_from(i128::from(r.replica.now_ms) - i128::from(host_ms)).unwrap_or(i64::MAX);
    if replica_vs_host.abs() > max {
        bad = true;
        f.add(
            "clock",
            Status::Fail,
            format!(
                "replica {}'s clock is {} {} this host's",
                r.replica.id,
                secs(replica_vs_host),
                ahead_or_behind(replica_vs_host)
            ),
        );
    }
    if let Some(store_vs_replica) = r.store.skew_ms
        && store_vs_replica.abs() > max
    {
        bad = true;
        f.add(
            "clock",
            Status::Fail,
            format!(
                "the store's clock is {} {} replica {}'s",
                secs(store_vs_replica),
                ahead_or_behind(store_vs_replica),
                r.replica.id
            ),
        );
    }
    for rep in &r.replicas {
        if let Some(skew) = rep.skew_ms
            && skew.abs() > max
        {
            bad = true;
            f.add(
                "clock",
                Status::Fail,
                format!(
                    "replica {}'s clock is {} {} the store's",
                    rep.id,
                    secs(skew),
                    ahead_or_behind(skew)
                ),
            );
        }
    }
    if !bad {
        f.add(
            "clock",
            Status::Ok,
            format!(
                "this host, {} replica(s){} agree within {} ms",
                r.replicas.len().max(1),
                if r.store.skew_ms.is_some() {
                    " and the store"
                } else {
                    ""
                },
                max_skew_ms
            ),
        );
    }
    let ids: Vec<&str> = r.replicas.iter().map(|x| x.id.as_str()).collect();
    f.add(
        "replicas",
        Status::Ok,
        if ids.is_empty() {
            "no heartbeat yet (a replica writes one within 5 s of starting)".to_string()
        } else {
            format!("{} seen in the last 30 s: {}", ids.len(), ids.join(", "))
        },
    );
}

/// The edges to check: `--edge` given, else the ones the control plane pushes to.
fn edge_list(a: &DoctorArgs, r: &DoctorReport) -> Vec<String> {
    if a.edges.is_empty() {
        r.edges
            .iter()
            .map(|e| e.url.trim_end_matches('/').to_string())
            .collect()
    } else {
        a.edges.iter().map(|e| e.trim_end_matches('/').to_string()).collect()
    }
}

/// Each edge's status as this host sees it (`None`: unreachable).
async fn edge_checks(
    f: &mut Findings,
    http: &reqwest::Client,
    r: &DoctorReport,
    edges: &[String],
    max_skew_ms: u64,
) -> Vec<Option<Value>> {
    if edges.is_empty() {
        f.add(
            "edges",
            Status::Warning,
            "no edge to check: the control plane pushes to none; pass --edge <url> for each edge (or CDN hostname)",
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in edges {
        let url = format!("{e}{}", sharegate_edge::contract::paths::STATUS);
        let host_before = now_ms();
        let status: Option<Value> = match http.get(&url).send().await {
            Ok(resp) if resp.status().is_success() => resp.json().await.ok(),
            _ => None,
        };
        let Some(st) = status else {
            f.add(
                "edges",
                Status::Fail,
                format!("edge {e} does not answer its status endpoint: is it running?"),
            );
            out.push(None);
            continue;
        };
        let gen_edge = st["generation"].as_u64();
        let age = st["state_age_s"].as_u64();
        let current = r.generation.unwrap_or(0);
        match (gen_edge, age) {
            (None, _) => f.add(
                "edges",
                Status::Fail,
                format!("edge {e} holds no revocation state: it refuses (or, failing open, serves) without one"),
            ),
            (Some(g), Some(age)) if age > 30 => f.add(
                "edges",
                Status::Fail,
                format!("edge {e}'s state is {age} s old (generation {g}, current {current}): it cannot reach the control plane"),
            ),
            (Some(g), _) if g < current => f.add(
                "edges",
                Status::Warning,
                format!("edge {e} is {} generation(s) behind ({g} of {current}); it catches up at its next pull", current - g),
            ),
            (Some(g), age) => f.add(
                "edges",
                Status::Ok,
                format!("edge {e} at generation {g} (current {current}), state {} s old", age.unwrap_or(0)),
            ),
        }
        if let Some(edge_ms) = st["now_ms"].as_u64() {
            let skew = i64::try_from(i128::from(edge_ms) - i128::from(host_before)).unwrap_or(i64::MAX);
            // The status call's own time is part of the difference: allow for it.
            if skew.abs() > i64::try_from(max_skew_ms).unwrap_or(i64::MAX) + 500 {
                f.add(
                    "clock",
                    Status::Fail,
                    format!(
                        "edge {e}'s clock is {} {} this host's",
                        secs(skew),
                        ahead_or_behind(skew)
                    ),
                );
            }
        }
        out.push(Some(st));
    }
    out
}

async fn key_checks(
    f: &mut Findings,
    client: &ApiClient,
    edges: &[String],
    statuses: &[Option<Value>],
    r: &DoctorReport,
) {
    let answer = match client.list_keys().await {
        Ok(a) if a.status.is_success() => a,
        Ok(a) => {
            f.add("keys", Status::Fail, format!("GET /v1/keys answered {}", a.status));
            return;
        }
        Err(e) => {
            f.add("keys", Status::Fail, format!("{e:#}"));
            return;
        }
    };
    let Ok(list) = answer.json::<Value>() else {
        f.add("keys", Status::Fail, "GET /v1/keys: unreadable answer");
        return;
    };
    let keys = list["keys"].as_array().cloned().unwrap_or_default();
    let of = |state: &str| keys.iter().filter(|k| k["state"] == state).cloned().collect::<Vec<_>>();
    let (active, next, retiring) = (of("active"), of("next"), of("retiring"));
    let now = now_ms() / 1000;
    match active.len() {
        1 => f.add("keys", Status::Ok, format!("active key {}", active[0]["id"])),
        0 => f.add("keys", Status::Fail, "no active signing key: nothing can be minted"),
        n => f.add("keys", Status::Fail, format!("{n} active signing keys")),
    }
    match next.first() {
        None => f.add(
            "keys",
            Status::Warning,
            "no next key staged: `sharegate keys rotate` stages one (edges learn it before it signs)",
        ),
        Some(k) if k["published"] == false => f.add(
            "keys",
            Status::Fail,
            format!(
                "next key {} is not yet accepted by every edge: a promotion now would be refused",
                k["id"]
            ),
        ),
        Some(k) => f.add(
            "keys",
            Status::Ok,
            format!("next key {} published to every edge", k["id"]),
        ),
    }
    for k in &retiring {
        let (since, drop) = (k["since"].as_u64().unwrap_or(0), k["drop_after"].as_u64().unwrap_or(0));
        if drop < since.saturating_add(u64::from(r.max_ttl)) {
            f.add(
                "keys",
                Status::Fail,
                format!("retiring key {} is dropped before the tokens it signed expire", k["id"]),
            );
        } else {
            f.add(
                "keys",
                Status::Ok,
                format!(
                    "retiring key {} kept until {} ({} s from now, ≥ max TTL)",
                    k["id"],
                    drop,
                    drop.saturating_sub(now)
                ),
            );
        }
    }
    // Every edge must hold the keys that sign or verify live tokens: active, next, and retiring not yet dropped.
    let needed: Vec<u64> = active
        .iter()
        .chain(next.iter().filter(|k| k["published"] == true))
        .chain(retiring.iter().filter(|k| k["drop_after"].as_u64().unwrap_or(0) > now))
        .filter_map(|k| k["id"].as_u64())
        .collect();
    for (e, st) in edges.iter().zip(statuses) {
        let Some(st) = st else { continue };
        let held: Vec<u64> = st["keys"]
            .as_array()
            .map(|a| a.iter().filter_map(|k| k["id"].as_u64()).collect())
            .unwrap_or_default();
        let missing: Vec<String> = needed
            .iter()
            .filter(|id| !held.contains(id))
            .map(u64::to_string)
            .collect();
        if !missing.is_empty() {
            f.add(
                "keys",
                Status::Fail,
                format!(
                    "edge {e} lacks signing key(s) {}: links they sign are refused there",
                    missing.join(", ")
                ),
            );
        }
    }
}

/// The canary link as served by `edge`: the link's edge base replaced by the edge's URL.
fn at_edge(link: &str, base: &str, edge: &str) -> String {
    match link.strip_prefix(base.trim_end_matches('/')) {
        Some(rest) => format!("{edge}{rest}"),
        None => link.to_string(),
    }
}

async fn run_canary(
    f: &mut Findings,
    client: &ApiClient,
    http: &reqwest::Client,
    r: &DoctorReport,
    edges: &[String],
    a: &DoctorArgs,
) -> Option<Canary> {
    if edges.is_empty() {
        return None;
    }
    let link: CanaryLink = match client.doctor_canary(a.canary_asset.as_deref()).await {
        Ok(ans) if ans.status.is_success() => match ans.json() {
            Ok(l) => l,
            Err(e) => {
                f.add("canary", Status::Fail, format!("{e:#}"));
                return None;
            }
        },
        Ok(ans) => {
            f.add(
                "canary",
                Status::Fail,
                format!("could not mint the canary: {} {}", ans.status, ans.body),
            );
            return None;
        }
        Err(e) => {
            f.add("canary", Status::Fail, format!("{e:#}"));
            return None;
        }
    };
    let mut results: Vec<EdgeCanary> = Vec::new();
    for e in edges {
        let url = at_edge(&link.url, &r.edge_base_url, e);
        let before = http.get(&url).send().await.ok().map(|resp| resp.status().as_u16());
        results.push(EdgeCanary {
            edge: e.clone(),
            before,
            refused_after_ms: None,
            reason: None,
        });
    }
    for c in &results {
        if c.before != Some(200) {
            f.add(
                "canary",
                Status::Fail,
                format!(
                    "edge {} did not serve the canary link before its revocation ({}): check the edge's origin and keys",
                    c.edge,
                    c.before.map_or_else(|| "no answer".to_string(), |s| s.to_string())
                ),
            );
        }
    }
    let t0 = Instant::now();
    let revoke = client.doctor_canary_revoke(&link.token_id).await;
    let revoke_ms = u64::try_from(t0.elapsed().as_millis()).ok();
    match revoke {
        Ok(ans) if ans.status.is_success() => {}
        Ok(ans) => {
            f.add(
                "canary",
                Status::Fail,
                format!("revoking the canary failed: {} {}", ans.status, ans.body),
            );
            return Some(Canary {
                asset: link.asset,
                token_id: link.token_id,
                revoke_ms: None,
                edges: results,
            });
        }
        Err(e) => {
            f.add("canary", Status::Fail, format!("revoking the canary failed: {e:#}"));
            return None;
        }
    }
    let acked = Instant::now();
    let deadline = acked + Duration::from_secs(a.canary_timeout);
    loop {
        let mut pending = false;
        for c in results
            .iter_mut()
            .filter(|c| c.refused_after_ms.is_none() && c.before == Some(200))
        {
            let url = at_edge(&link.url, &r.edge_base_url, &c.edge);
            if let Ok(resp) = http.get(&url).send().await
                && resp.status().as_u16() == 403
            {
                c.refused_after_ms = u64::try_from(acked.elapsed().as_millis()).ok();
                c.reason = resp
                    .headers()
                    .get(sharegate_edge::contract::headers::REASON)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
            } else {
                pending = true;
            }
        }
        if !pending || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in &results {
        match (c.before, c.refused_after_ms) {
            (b, _) if b != Some(200) => {}
            (_, Some(ms)) if c.reason.as_deref() == Some("revoked") => f.add(
                "canary",
                Status::Ok,
                format!(
                    "edge {} refused the revoked canary {ms} ms after the revocation was acknowledged",
                    c.edge
                ),
            ),
            (_, Some(ms)) => f.add(
                "canary",
                Status::Fail,
                format!(
                    "edge {} refused the canary {ms} ms after its revocation, but for another reason ({}): check \
                     its clock and keys",
                    c.edge,
                    c.reason.as_deref().unwrap_or("no reason header")
                ),
            ),
            (_, None) => f.add(
                "canary",
                Status::Fail,
                format!(
                    "edge {} still serves the revoked canary after {} s",
                    c.edge, a.canary_timeout
                ),
            ),
        }
    }
    Some(Canary {
        asset: link.asset,
        token_id: link.token_id,
        revoke_ms,
        edges: results,
    })
}
