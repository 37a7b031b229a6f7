//! The control plane in-process on a real socket, as the CDN end-to-end tests drive it: role keys, an asset, links,
//! revocations measured to the moment an edge enforces them, and the edge events it received.

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::open_store;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The secrets an end-to-end test shares between its control plane and its edge.
#[derive(Debug, Clone, Copy)]
pub struct Secrets {
    /// The signing key (id 1, active).
    pub signing: [u8; 32],
    /// The revocation state's MAC key.
    pub state: [u8; 32],
    /// The edge's bearer credential.
    pub edge_token: &'static str,
}

impl Secrets {
    /// Settings of a CDN edge (Cloudflare, Fastly) that pulls state from and reports events to the control plane at
    /// `cp`, fetches from `origin`, and keeps its state for `window_ms`.
    pub fn cdn_edge_settings(&self, origin: &str, cp: &str, window_ms: u64, edge_id: &str) -> BTreeMap<String, String> {
        let mut s = BTreeMap::new();
        s.insert(
            "SHAREGATE_SIGNING_KEYS".into(),
            format!("1:active:{}", hex::encode(self.signing)),
        );
        s.insert("SHAREGATE_STATE_KEY".into(), hex::encode(self.state));
        s.insert("SHAREGATE_EDGE_TOKEN".into(), self.edge_token.into());
        s.insert("SHAREGATE_ORIGIN".into(), origin.into());
        s.insert("SHAREGATE_STATE_URL".into(), format!("{cp}/v1/edge/state"));
        s.insert("SHAREGATE_EVENTS_URL".into(), format!("{cp}/v1/edge/events"));
        s.insert("SHAREGATE_STATE_REFRESH_MS".into(), window_ms.to_string());
        s.insert("SHAREGATE_EDGE_ID".into(), edge_id.into());
        s
    }
}

/// A bound socket for the control plane: its URL is known before the edge starts, it serves once the edge's URL
/// (which links point at) is known.
pub struct ControlPlaneSocket {
    listener: tokio::net::TcpListener,
    /// `http://127.0.0.1:port`.
    pub url: String,
}

impl ControlPlaneSocket {
    /// Bind an ephemeral loopback port.
    pub async fn bind() -> Result<ControlPlaneSocket> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        Ok(ControlPlaneSocket { listener, url })
    }

    /// Serve a control plane (embedded store under `data`) whose links point at `edge_base_url`, with an API key
    /// per role: `backend` (minter), `oncall` (responder), `ops` (admin). Edges pull; nothing is pushed.
    pub async fn serve(self, data: &Path, secrets: Secrets, edge_base_url: &str) -> Result<TestControlPlane> {
        let store = open_store("", data).await?;
        let ring = KeyRing::with_active(1, SecretKey::new(secrets.signing), 86_400);
        let config = ServiceConfig {
            edge_base_url: edge_base_url.into(),
            edges: Vec::new(),
            edge_token: Some(secrets.edge_token.into()),
            ..ServiceConfig::default()
        };
        let state = Arc::new(AppState::new(
            store.clone(),
            config,
            &ring,
            Policy::default(),
            StateKey::new(secrets.state),
        )?);
        let mut keys = BTreeMap::new();
        for (role, name) in [
            (Role::Minter, "backend"),
            (Role::Responder, "oncall"),
            (Role::Admin, "ops"),
        ] {
            let (key, rec) = new_key(role, name, 0)?;
            store_key(store.as_ref(), &key, &rec).await?;
            keys.insert(name, key);
        }
        let listener = self.listener;
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        Ok(TestControlPlane {
            url: self.url,
            keys,
            http: reqwest::Client::new(),
        })
    }
}

/// A serving control plane and its role keys.
pub struct TestControlPlane {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// API keys by name: `backend`, `oncall`, `ops`.
    pub keys: BTreeMap<&'static str, String>,
    /// A client for the tests' own requests.
    pub http: reqwest::Client,
}

impl TestControlPlane {
    /// Register an asset served from `origin` (a directory the control plane checks for readiness).
    pub async fn register_asset(&self, id: &str, origin: &Path) -> Result<()> {
        let asset: Value = self
            .http
            .post(format!("{}/v1/assets", self.url))
            .bearer_auth(&self.keys["ops"])
            .json(&json!({"id": id, "origin": origin.to_str().context("origin path")?}))
            .send()
            .await?
            .json()
            .await?;
        ensure!(asset["ready"] == true, "asset not ready: {asset}");
        Ok(())
    }

    /// Mint a link (`POST /v1/links` with this body) as the backend.
    pub async fn mint(&self, body: Value) -> Result<Value> {
        let r = self
            .http
            .post(format!("{}/v1/links", self.url))
            .bearer_auth(&self.keys["backend"])
            .json(&body)
            .send()
            .await?;
        ensure!(r.status().is_success(), "mint: {}", r.text().await?);
        Ok(r.json().await?)
    }

    /// Revoke a token by id as the on-call responder.
    pub async fn revoke_token(&self, token_id: &Value) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/revocations", self.url))
            .bearer_auth(&self.keys["oncall"])
            .json(&json!({"kind": "token", "id": token_id, "reason": "e2e"}))
            .send()
            .await?;
        ensure!(r.status().is_success(), "revoke: {}", r.text().await?);
        Ok(())
    }

    /// `n` times: mint a link for `asset` (with `extra` fields), see its segment served, revoke it, and time until
    /// the edge refuses it (`403 revoked`, polled every 20 ms). Fails when one takes longer than `limit`, with
    /// `log()` for context. Returns the latencies, sorted.
    pub async fn revoke_to_enforced(
        &self,
        n: usize,
        asset: &str,
        extra: Value,
        limit: Duration,
        log: impl Fn() -> String,
    ) -> Result<Vec<Duration>> {
        let mut latencies = Vec::with_capacity(n);
        for i in 0..n {
            let mut body = json!({"asset": asset, "viewer": format!("v{i}")});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            let link = self.mint(body).await?;
            let seg = link["url"]
                .as_str()
                .context("url")?
                .replace("master.m3u8", "v0/seg_000.ts");
            let first = self.http.get(&seg).send().await?.status();
            ensure!(first == 200, "revocation {i}: the fresh link answered {first}");
            let start = Instant::now();
            self.revoke_token(&link["token_id"]).await?;
            loop {
                let r = self.http.get(&seg).send().await?;
                if r.status() == 403 {
                    ensure!(
                        r.headers()[sharegate_edge::contract::headers::REASON] == "revoked",
                        "{:?}",
                        r.headers()
                    );
                    break;
                }
                ensure!(r.status() == 200, "revocation {i}: {}", r.status());
                if start.elapsed() > limit {
                    bail!("revocation {i} not enforced after {:?}\n{}", start.elapsed(), log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies.push(start.elapsed());
        }
        latencies.sort();
        Ok(latencies)
    }

    /// Poll `/metrics` until `done(metrics)` holds, for at most `limit`.
    pub async fn wait_metrics(&self, limit: Duration, done: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            let metrics = self
                .http
                .get(format!("{}/metrics", self.url))
                .bearer_auth(&self.keys["ops"])
                .send()
                .await?
                .text()
                .await?;
            if done(&metrics) {
                return Ok(metrics);
            }
            if Instant::now() > deadline {
                bail!("metrics did not get there within {limit:?}:\n{metrics}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The sum of the Prometheus samples whose line starts with `prefix`.
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `p50 …, p99 …, max …` of sorted latencies.
pub fn percentiles(sorted: &[Duration]) -> String {
    let Some(max) = sorted.last() else {
        return "no samples".into();
    };
    let p = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)];
    format!("p50 {:?}, p99 {:?}, max {max:?}", p(0.5), p(0.99))
}

/// An edge's `GET /_sharegate/status`.
pub async fn edge_status(http: &reqwest::Client, base: &str) -> Result<Value> {
    Ok(http
        .get(format!("{base}{}", sharegate_edge::contract::paths::STATUS))
        .send()
        .await?
        .json()
        .await?)
}

impl TestControlPlane {
    /// CMCD through an edge (issue 14): a segment requested by two viewers, one with CMCD in the query (startup, a
    /// session id), the other in headers (a stall): both served, the origin never sees CMCD (in the query or as a
    /// header) and is asked at most once (the cache key has no CMCD: the second viewer is a hit), and the control
    /// plane's raw edge stream and aggregates show both sessions and the stall. `cached`: the edge's cache is
    /// observable here (Fastly's Core Cache in Viceroy, the native edge); workerd does not emulate the zone cache a
    /// Cloudflare `fetch` goes through, so there both requests must instead reach the origin as the identical,
    /// CMCD-free URL the zone cache keys on.
    pub async fn check_cmcd(
        &self,
        origin: &crate::origin::StaticOrigin,
        cached: bool,
        log: impl Fn() -> String,
    ) -> Result<()> {
        let a = self.mint(json!({"asset": "demo", "viewer": "cmcd-a"})).await?;
        let b = self.mint(json!({"asset": "demo", "viewer": "cmcd-b"})).await?;
        let seg = |l: &Value| l["url"].as_str().unwrap_or("").replace("master.m3u8", "v0/seg_001.ts");
        origin.clear();
        let q = "CMCD=bl%3D0%2Cbr%3D800%2Ccid%3D%22demo%22%2Cot%3Dv%2Csid%3D%22cmcd-view-a%22%2Csu";
        let r = self.http.get(format!("{}?{q}", seg(&a))).send().await?;
        ensure!(
            r.status() == 200,
            "CMCD query request answered {}: {}",
            r.status(),
            log()
        );
        let first = r.bytes().await?;
        let r = self
            .http
            .get(seg(&b))
            .header("CMCD-Session", "sid=\"cmcd-view-b\",cid=\"demo\"")
            .header("CMCD-Status", "bs")
            .header("CMCD-Object", "ot=v")
            .header("CMCD-Request", "bl=0")
            .send()
            .await?;
        ensure!(
            r.status() == 200,
            "CMCD header request answered {}: {}",
            r.status(),
            log()
        );
        ensure!(r.bytes().await? == first, "the two viewers got different bytes");
        let seen = origin.requests();
        ensure!(
            seen.iter().all(|t| !t.to_ascii_lowercase().contains("cmcd")),
            "CMCD reached the origin: {seen:?}"
        );
        let fetched: Vec<&String> = seen.iter().filter(|t| t.contains("seg_001.ts")).collect();
        if cached {
            ensure!(
                fetched.len() <= 1,
                "the second viewer was not a cache hit (CMCD in the cache key?): {seen:?}"
            );
        } else {
            ensure!(
                fetched.iter().all(|t| t.as_str() == "/demo/v0/seg_001.ts"),
                "the origin URL (the zone cache's key) varies with CMCD: {seen:?}"
            );
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self
                .http
                .get(format!("{}/v1/analytics/stream?source=edge&limit=5000", self.url))
                .bearer_auth(&self.keys["ops"])
                .send()
                .await?
                .text()
                .await?;
            let a_ok = text.lines().any(|l| {
                l.contains("\"sid\":\"cmcd-view-a\"") && l.contains("\"su\":true") && l.contains("\"kind\":\"segment\"")
            });
            let b_ok = text
                .lines()
                .any(|l| l.contains("\"sid\":\"cmcd-view-b\"") && l.contains("\"bs\":true"));
            if a_ok && b_ok {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the CMCD sessions did not reach the control plane: a={a_ok} b={b_ok}\n{text}\n{}",
                    log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let totals: Value = self
            .http
            .get(format!("{}/v1/analytics", self.url))
            .bearer_auth(&self.keys["ops"])
            .send()
            .await?
            .json()
            .await?;
        let t = &totals["totals"];
        ensure!(
            t["cmcd_sessions"].as_u64() >= Some(2) && t["cmcd_stalls"].as_u64() >= Some(1),
            "sessions and stalls not in the aggregates: {t}"
        );
        Ok(())
    }
}
