//! Replayed revocation state, against any edge: a stand-in control plane that can switch from honest answers to
//! replays of MAC-valid state, and the scenario every edge must pass (issue 11, item 3).
//!
//! Honest, it answers like the real control plane: a snapshot of generation [`GENERATION`] signed now, or, to an edge
//! that holds it and asks, a freshness message signed now. Replaying, it answers what an attacker between edge and
//! control plane (or a lagging replica) could send, each MAC-valid under the state key: an older snapshot, an older
//! delta, a freshness message for an older generation (all three signed *now*, so only the generation rule stands
//! between them and freshness), the held generation's snapshot, delta and freshness message as last signed while
//! honest, and a bare `304`. None of them may extend the edge's freshness: the edge must apply its stale policy once
//! `SHAREGATE_STATE_MAX_AGE` has passed since the last honest answer's signed time, replays notwithstanding.

use crate::unix_now;
use anyhow::{Result, bail, ensure};
use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    DeltaParams, IssuedToken, RevokedToken, SnapshotParams, StateKey, build_delta, build_freshness, build_snapshot,
};
use sharegate_shared::token::{Claims, Minter, Permissions, Policy};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The generation the honest control plane is at.
pub const GENERATION: u64 = 6;
/// The token signing key (id 1) of the scenario.
pub const SIGNING: [u8; 32] = [0x71; 32];
/// The state MAC key of the scenario.
pub const STATE: [u8; 32] = [0x72; 32];
/// The edge credential of the scenario.
pub const EDGE_TOKEN: &str = "replay-edge-credential";
/// The state age limit the edges run with, seconds (small, so the test is short).
pub const MAX_AGE: u64 = 3;

fn now32() -> u32 {
    u32::try_from(unix_now()).unwrap_or(u32::MAX)
}

fn key() -> StateKey {
    StateKey::new(STATE)
}

/// A snapshot of `generation` signed at `as_of`.
pub fn snapshot(generation: u64, as_of: u32) -> Vec<u8> {
    let p = SnapshotParams {
        generation,
        built_at: as_of,
        cutoff: as_of,
        expire_before: as_of.saturating_sub(60),
        max_token_lifetime: 86_400,
    };
    build_snapshot(&p, std::iter::empty::<IssuedToken>(), &[], &[], &key()).unwrap_or_default()
}

/// The delta to `generation` (revoking an unrelated token) signed at `as_of`.
pub fn delta(generation: u64, as_of: u32) -> Vec<u8> {
    let p = DeltaParams {
        base_generation: generation - 1,
        generation,
        built_at: as_of,
    };
    let revoked = [RevokedToken {
        id: [0xee; 12],
        iat: as_of.saturating_sub(10),
        exp: as_of + 3_600,
    }];
    build_delta(&p, &revoked, &[], &key()).unwrap_or_default()
}

/// What the stand-in serves: honest answers, or replays in turn.
struct Inner {
    replaying: AtomicBool,
    /// The signed time of the last honest answer.
    last_honest: AtomicU32,
    /// Replays served so far (the next one is `REPLAYS[served % len]`).
    served: AtomicU64,
    /// Kinds of replays served, for the failure message.
    kinds: Mutex<BTreeMap<&'static str, u64>>,
}

/// The replays, in the order they are served.
const REPLAYS: [&str; 7] = [
    "older_snapshot",
    "older_delta",
    "stale_freshness",
    "same_generation_freshness",
    "same_generation_snapshot",
    "same_generation_delta",
    "bare_304",
];

/// The replay for `kind`: older generations signed now, the held generation as last signed while honest.
pub fn replay(kind: &str, last_honest: u32) -> Option<Vec<u8>> {
    let now = now32();
    Some(match kind {
        "older_snapshot" => snapshot(GENERATION - 1, now),
        "older_delta" => delta(GENERATION - 1, now),
        "stale_freshness" => build_freshness(GENERATION - 1, now, &key()).to_vec(),
        "same_generation_freshness" => build_freshness(GENERATION, last_honest, &key()).to_vec(),
        "same_generation_snapshot" => snapshot(GENERATION, last_honest),
        "same_generation_delta" => delta(GENERATION, last_honest),
        _ => return None,
    })
}

/// The stand-in control plane's state endpoint on a loopback socket.
pub struct ReplayControlPlane {
    /// `http://127.0.0.1:port`: the state URL is `{url}/v1/edge/state`.
    pub url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplayControlPlane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReplayControlPlane {
    /// Bind and serve, honest.
    pub async fn start() -> Result<ReplayControlPlane> {
        let inner = Arc::new(Inner {
            replaying: AtomicBool::new(false),
            last_honest: AtomicU32::new(0),
            served: AtomicU64::new(0),
            kinds: Mutex::default(),
        });
        let state = Arc::clone(&inner);
        let app = Router::new().route(
            "/v1/edge/state",
            get(move |h: HeaderMap| {
                let s = Arc::clone(&state);
                async move { answer(&s, &h) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ReplayControlPlane { url, inner, task })
    }

    /// The state URL.
    pub fn state_url(&self) -> String {
        format!("{}/v1/edge/state", self.url)
    }

    /// Switch to replays (`true`) or back to honest answers.
    pub fn set_replaying(&self, on: bool) {
        self.inner.replaying.store(on, Ordering::SeqCst);
    }

    /// The signed time of the last honest answer.
    pub fn last_honest(&self) -> u32 {
        self.inner.last_honest.load(Ordering::SeqCst)
    }

    /// Replays served so far, by kind.
    pub fn served(&self) -> BTreeMap<&'static str, u64> {
        self.inner.kinds.lock().map(|k| k.clone()).unwrap_or_default()
    }
}

fn answer(s: &Inner, h: &HeaderMap) -> (StatusCode, Vec<u8>) {
    if h.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {EDGE_TOKEN}")) {
        return (StatusCode::UNAUTHORIZED, Vec::new());
    }
    if s.replaying.load(Ordering::SeqCst) {
        let n = s.served.fetch_add(1, Ordering::SeqCst);
        let kind = REPLAYS[usize::try_from(n).unwrap_or(0) % REPLAYS.len()];
        if let Ok(mut k) = s.kinds.lock() {
            *k.entry(kind).or_default() += 1;
        }
        return match replay(kind, s.last_honest.load(Ordering::SeqCst)) {
            Some(bytes) => (StatusCode::OK, bytes),
            None => (StatusCode::NOT_MODIFIED, Vec::new()),
        };
    }
    let now = now32();
    s.last_honest.store(now, Ordering::SeqCst);
    let held = h
        .get(sharegate_edge::contract::headers::GENERATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let signed = h
        .get(sharegate_edge::contract::headers::FRESHNESS)
        .is_some_and(|v| v == sharegate_edge::contract::headers::FRESHNESS_SIGNED);
    match held {
        Some(GENERATION) if signed => (StatusCode::OK, build_freshness(GENERATION, now, &key()).to_vec()),
        Some(GENERATION) => (StatusCode::NOT_MODIFIED, Vec::new()),
        _ => (StatusCode::OK, snapshot(GENERATION, now)),
    }
}

/// Settings of an edge under the scenario (the CDN adapters' and the native edge's shared ones): the stand-in at
/// `state_url`, origin `origin`, state age limit [`MAX_AGE`], fail closed.
pub fn edge_settings(origin: &str, state_url: &str, refresh_ms: u64) -> BTreeMap<String, String> {
    let mut s = BTreeMap::new();
    s.insert(
        "SHAREGATE_SIGNING_KEYS".into(),
        format!("1:active:{}", hex::encode(SIGNING)),
    );
    s.insert("SHAREGATE_STATE_KEY".into(), hex::encode(STATE));
    s.insert("SHAREGATE_EDGE_TOKEN".into(), EDGE_TOKEN.into());
    s.insert("SHAREGATE_ORIGIN".into(), origin.into());
    s.insert("SHAREGATE_STATE_URL".into(), state_url.into());
    s.insert("SHAREGATE_STATE_REFRESH_MS".into(), refresh_ms.to_string());
    s.insert("SHAREGATE_STATE_MAX_AGE".into(), MAX_AGE.to_string());
    s.insert("SHAREGATE_STALE_POLICY".into(), "fail_closed".into());
    s
}

/// A valid link for asset `a` (ten minutes).
pub fn token() -> Result<String> {
    let now = now32();
    let ring = KeyRing::with_active(1, SecretKey::new(SIGNING), 86_400);
    let c = Claims {
        token_id: [0x0a; 12],
        iat: now,
        nbf: now,
        exp: now + 600,
        permissions: Permissions::PLAYBACK,
        asset: Some("a".into()),
        ..Claims::default()
    };
    Minter::new(&ring, Policy::default())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?
        .mint(&c)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Where the replays are also pushed (the native edge's `POST /_sharegate/state`).
pub struct PushTarget<'a> {
    /// `http://host:port/_sharegate/state`.
    pub url: &'a str,
    /// The edge credential.
    pub token: &'a str,
}

/// The scenario, against the edge at `base` whose state comes from `cp` (and, with `push`, is also pushed to):
///
/// 1. honest: the edge gets generation [`GENERATION`] and serves a valid link;
/// 2. replaying (pulled, and pushed when `push` is given): the edge keeps serving while its signed state is younger
///    than [`MAX_AGE`], and refuses the link with `503 state_stale` once it is older, never earlier than the policy
///    says and at most `slack` later; its status still shows the last honest signed time;
/// 3. honest again: the edge serves the link again.
///
/// Returns the seconds from the last honest signed time to the first refusal.
pub async fn run(base: &str, cp: &ReplayControlPlane, push: Option<PushTarget<'_>>, slack: Duration) -> Result<u64> {
    let http = reqwest::Client::new();
    let link = format!("{base}/t/{}/a/seg.ts", token()?);
    let status = |http: reqwest::Client| async move {
        let v: serde_json::Value = http
            .get(format!("{base}{}", sharegate_edge::contract::paths::STATUS))
            .send()
            .await?
            .json()
            .await?;
        Ok::<_, anyhow::Error>(v)
    };

    // 1. Honest until the edge holds the generation and serves the link.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(&link).send().await?;
        let st = status(http.clone()).await?;
        if r.status() == 200 && st["generation"] == GENERATION {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the edge did not take the honest state within 30 s: last answer {}, status {st}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 2. Replays only, from now on. An honest answer in flight at the switch, or one cached by the edge's runtime for
    // a fraction of its refresh window, may still land: read what the edge holds once those are over.
    cp.set_replaying(true);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let last_honest = u64::from(cp.last_honest());
    let held_as_of = status(http.clone()).await?["state_as_of"].as_u64().unwrap_or(0);
    ensure!(
        held_as_of <= last_honest && held_as_of + 2 >= last_honest,
        "the edge holds as_of {held_as_of}, the last honest answer was signed at {last_honest}"
    );
    let give_up = Instant::now() + Duration::from_secs(MAX_AGE) + Duration::from_secs(1) + slack;
    let mut pushes = 0;
    let first_refusal = loop {
        if let Some(p) = &push {
            for kind in REPLAYS {
                let Some(bytes) = replay(kind, u32::try_from(held_as_of).unwrap_or(0)) else {
                    continue;
                };
                let r = http.post(p.url).bearer_auth(p.token).body(bytes).send().await?;
                let code = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                let expected = if kind.starts_with("same_generation") { 200 } else { 409 };
                ensure!(
                    code == expected,
                    "pushed replay {kind}: expected {expected}, got {code} {body}"
                );
                if expected == 409 {
                    ensure!(
                        body.contains("\"stale_generation\"") && body.contains(&format!("\"held\":{GENERATION}")),
                        "pushed replay {kind}: {body}"
                    );
                }
                pushes += 1;
            }
        }
        let r = http.get(&link).send().await?;
        let now = unix_now();
        let code = r.status().as_u16();
        let reason = r
            .headers()
            .get(sharegate_edge::contract::headers::REASON)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match (code, reason.as_str()) {
            (200, _) => {}
            (503, "state_stale") => break now,
            _ => bail!("unexpected answer while replaying: {code} {reason}"),
        }
        if Instant::now() > give_up {
            let st = status(http.clone()).await?;
            bail!(
                "still serving {}s after the signed time the edge held (limit {MAX_AGE}s): replays kept it fresh. \
                 replays pulled: {:?}, pushed: {pushes}; status {st}",
                now.saturating_sub(held_as_of),
                cp.served()
            );
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    let waited = first_refusal.saturating_sub(held_as_of);
    // The policy bound, both ways: not stale before MAX_AGE has passed (ages are whole seconds: stale once the age
    // exceeds MAX_AGE).
    ensure!(
        waited > MAX_AGE,
        "refused {waited}s after the signed time the edge held, before the {MAX_AGE}s limit"
    );
    let st = status(http.clone()).await?;
    // Either the same signed time, or no state at all (a Fastly POP whose cached state expired and whose refreshes
    // were all refused): never a later one.
    ensure!(
        st["state_as_of"].as_u64() == Some(held_as_of) || st["state_as_of"].is_null(),
        "replays moved the signed time (held {held_as_of} at the switch): {st}"
    );
    let served = cp.served();
    ensure!(
        served.values().sum::<u64>() + pushes >= 3,
        "too few replays reached the edge to prove anything: pulled {served:?}, pushed {pushes}"
    );

    // 3. Honest again: fresh evidence brings the edge back.
    cp.set_replaying(false);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http.get(&link).send().await?;
        if r.status() == 200 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the edge did not recover within 15 s of honest answers: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(waited)
}
