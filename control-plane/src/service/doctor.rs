//! What `sharegate doctor` asks a running deployment (role admin): facts no liveness or readiness probe checks.
//!
//! - `GET /v1/doctor`: this replica's clock and version, the store (reachable, its round trip, its clock, what its
//!   persistence settings promise: [`crate::store::Durability`]), every replica seen through the store in the last
//!   [`REPLICA_WINDOW_SECS`] with its clock's offset from the store's, the revocation generation, and each edge this
//!   replica pushes to as it answers its status endpoint right now.
//! - `POST /v1/doctor/canary`: mints a short-lived canary link (channel `sharegate-doctor`, [`CANARY_TTL`]) for an
//!   asset, and `POST /v1/doctor/canary/{token_id}/revoke` revokes it through the ordinary revocation path (pushed
//!   to the edges like any other). The doctor times how long each edge takes to refuse it. Only canary tokens can be
//!   revoked here, both calls are audited (`doctor.canary`, `doctor.canary_revoke`).
//!
//! Replicas report themselves with a heartbeat ([`spawn_heartbeat`]): every [`HEARTBEAT_SECS`] a record in
//! [`Ns::Leases`] under `replica/<id>` with this replica's clock and the store's, read together. Records older than
//! an hour are removed by whichever replica sees them, so restarts cannot pile them up; so are expired canaries.

use super::auth::{Doctor, RunCanary};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::revocations::{RevocationKind, RevocationRequest};
use super::{AppState, audit, mint_recorded};
use crate::store::{Durability, Ns};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use sharegate_shared::token::{Claims, Permissions, Text};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How often a replica writes its heartbeat.
pub const HEARTBEAT_SECS: u64 = 5;
/// Replicas whose last heartbeat is older than this are not listed.
pub const REPLICA_WINDOW_SECS: u64 = 30;
/// Heartbeats older than this are deleted.
const REPLICA_FORGET_SECS: u64 = 3600;
/// Lifetime of a canary token: long enough for a slow edge, short enough to be harmless if the revoke never comes.
pub const CANARY_TTL: u32 = 120;
/// The channel canary tokens carry (analytics and the audit log can tell them apart).
pub const CANARY_CHANNEL: &str = "sharegate-doctor";

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/doctor", get(report))
        .route("/v1/doctor/canary", post(canary))
        .route("/v1/doctor/canary/{token_id}/revoke", post(canary_revoke))
}

/// This process's replica id: the host name and a random suffix, fixed for the process's life.
pub fn replica_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| {
                h.trim()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
                    .take(63)
                    .collect::<String>()
            })
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".into());
        let mut r = [0u8; 4];
        let suffix = getrandom::fill(&mut r).map_or_else(|_| std::process::id().to_string(), |()| hex::encode(r));
        format!("{host}-{suffix}")
    })
}

/// This replica's clock in Unix milliseconds (with the state's test offset, like [`AppState::now`]).
fn now_ms(s: &AppState) -> u64 {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ms.saturating_add_signed(s.clock_offset_secs.saturating_mul(1000))
}

/// One replica's heartbeat record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// [`replica_id`].
    pub id: String,
    /// The binary's version.
    pub version: String,
    /// When this process started, Unix seconds.
    pub started_at: u64,
    /// The replica's clock when it wrote this, Unix ms.
    pub wall_ms: u64,
    /// The store's clock read just before, corrected by half the round trip (`None`: the store is in-process).
    pub store_ms: Option<u64>,
}

/// The store's clock, as close as one round trip lets us to this replica's `now_ms` (half the round trip added):
/// `(store_ms, round_trip_ms)`.
async fn store_clock(s: &AppState) -> Result<(Option<u64>, u64), crate::store::StoreError> {
    let t = Instant::now();
    let clock = s.store.clock_ms().await?;
    let rtt = u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok((clock.map(|c| c.saturating_add(rtt / 2)), rtt))
}

/// Writes this replica's heartbeat every [`HEARTBEAT_SECS`] and forgets replicas silent for an hour.
pub fn spawn_heartbeat(s: Arc<AppState>) {
    let started_at = s.now();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(HEARTBEAT_SECS));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = beat(&s, started_at).await {
                tracing::debug!(error = %e, "replica heartbeat not written");
            }
        }
    });
}

async fn beat(s: &AppState, started_at: u64) -> Result<(), ApiError> {
    let (store_ms, _) = store_clock(s).await?;
    let hb = Heartbeat {
        id: replica_id().to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at,
        wall_ms: now_ms(s),
        store_ms,
    };
    let value = serde_json::to_vec(&hb).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.put(Ns::Leases, &format!("replica/{}", hb.id), &value).await?;
    for (key, v) in s.store.scan(Ns::Leases, "replica/").await? {
        let stale = serde_json::from_slice::<Heartbeat>(&v).map_or(true, |h| {
            hb.wall_ms.saturating_sub(h.wall_ms) > REPLICA_FORGET_SECS * 1000
        });
        if stale {
            s.store.delete(Ns::Leases, &key).await?;
        }
    }
    // Canaries whose doctor never revoked them (it was interrupted) are forgotten once expired.
    let now = s.now();
    for (key, v) in s.store.scan(Ns::Leases, "canary/").await? {
        let exp = std::str::from_utf8(&v)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .unwrap_or(0);
        if exp < now {
            s.store.delete(Ns::Leases, &key).await?;
        }
    }
    Ok(())
}

/// `GET /v1/doctor`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DoctorReport {
    /// The replica that answered.
    pub replica: ReplicaNow,
    /// The store as this replica sees it.
    pub store: StoreReport,
    /// Replicas whose heartbeat is recent, this one included once it has beaten.
    pub replicas: Vec<ReplicaSeen>,
    /// The revocation state's current generation.
    pub generation: Option<u64>,
    /// The base URL links are minted under (the edge or the CDN in front).
    pub edge_base_url: String,
    /// Longest token lifetime, seconds (retiring keys must be kept this long).
    pub max_ttl: u32,
    /// The edges this replica pushes to, as they answer now.
    pub edges: Vec<EdgeSeen>,
}

/// The answering replica.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaNow {
    /// [`replica_id`].
    pub id: String,
    /// Version.
    pub version: String,
    /// Its clock, Unix ms.
    pub now_ms: u64,
}

/// The store.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreReport {
    /// `redb` or `redis`.
    pub backend: String,
    /// Whether it answered.
    pub reachable: bool,
    /// Why not.
    pub error: Option<String>,
    /// One round trip, ms.
    pub round_trip_ms: Option<u64>,
    /// Its clock minus this replica's, ms (`None`: in-process, or unreachable).
    pub skew_ms: Option<i64>,
    /// What its settings promise.
    pub durability: Option<Durability>,
}

/// A replica from its heartbeat.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplicaSeen {
    /// Its id.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Seconds since its heartbeat (by the answering replica's clock, corrected by that replica's skew).
    pub last_seen_s: u64,
    /// Its clock minus the store's when it beat, ms (`None` with the embedded store).
    pub skew_ms: Option<i64>,
}

/// An edge's status, asked by this replica.
#[derive(Debug, Serialize, Deserialize)]
pub struct EdgeSeen {
    /// Its base URL.
    pub url: String,
    /// Whether its status endpoint answered 200.
    pub reachable: bool,
    /// Its status body (generation, state age, keys, its clock), as it sent it.
    pub status: Option<serde_json::Value>,
}

fn signed_diff(a: u64, b: u64) -> i64 {
    i64::try_from(i128::from(a) - i128::from(b)).unwrap_or(i64::MAX)
}

async fn report(State(s): State<Arc<AppState>>, _: Authorized<Doctor>) -> Json<DoctorReport> {
    // The clock as the call arrives: the doctor compares it with the middle of its call, so the time spent asking
    // edges below must not count as skew.
    let arrived_ms = now_ms(&s);
    // Each part answers for itself: an unreachable store is a finding, not a 5xx.
    let store = match store_clock(&s).await {
        Ok((clock, rtt)) => {
            let durability = s.store.durability().await;
            StoreReport {
                backend: s.store.backend().into(),
                reachable: true,
                error: durability.as_ref().err().map(|e| e.code().to_string()),
                round_trip_ms: Some(rtt),
                skew_ms: clock.map(|c| signed_diff(c, now_ms(&s))),
                durability: durability.ok(),
            }
        }
        Err(e) => StoreReport {
            backend: s.store.backend().into(),
            reachable: false,
            error: Some(e.to_string()),
            round_trip_ms: None,
            skew_ms: None,
            durability: None,
        },
    };
    let mut replicas = Vec::new();
    if let Ok(beats) = s.store.scan(Ns::Leases, "replica/").await {
        // "Now" on the store's clock when there is one, so a skewed answering replica does not age the others.
        let now = match store.skew_ms {
            Some(skew) => now_ms(&s).saturating_add_signed(skew),
            None => now_ms(&s),
        };
        for (_, v) in beats {
            let Ok(h) = serde_json::from_slice::<Heartbeat>(&v) else {
                continue;
            };
            let seen_at = h.store_ms.unwrap_or(h.wall_ms);
            let age = now.saturating_sub(seen_at) / 1000;
            if age <= REPLICA_WINDOW_SECS {
                replicas.push(ReplicaSeen {
                    skew_ms: h.store_ms.map(|st| signed_diff(h.wall_ms, st)),
                    id: h.id,
                    version: h.version,
                    last_seen_s: age,
                });
            }
        }
    }
    replicas.sort_by(|a, b| a.id.cmp(&b.id));
    // The edges at once, so a hanging one costs its timeout once, not once per edge.
    let mut asks = tokio::task::JoinSet::new();
    for (i, e) in s.config.edges.iter().enumerate() {
        let url = format!(
            "{}{}",
            e.url.trim_end_matches('/'),
            sharegate_edge::contract::paths::STATUS
        );
        let http = s.http.clone();
        asks.spawn(async move {
            let status = match http.get(&url).timeout(Duration::from_secs(2)).send().await {
                // A status body is small; cap what a misbehaving endpoint can make us hold.
                Ok(r) if r.status().is_success() => Some(
                    super::read_capped(r, 64 * 1024)
                        .await
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok()),
                ),
                _ => None,
            };
            (i, status)
        });
    }
    let mut seen: Vec<Option<Option<serde_json::Value>>> = vec![None; s.config.edges.len()];
    while let Some(Ok((i, status))) = asks.join_next().await {
        seen[i] = status;
    }
    let edges = s
        .config
        .edges
        .iter()
        .zip(seen)
        .map(|(e, status)| EdgeSeen {
            url: e.url.clone(),
            reachable: status.is_some(),
            status: status.flatten(),
        })
        .collect();
    Json(DoctorReport {
        replica: ReplicaNow {
            id: replica_id().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            now_ms: arrived_ms,
        },
        generation: s.store.counter("state_generation").await.ok(),
        store,
        replicas,
        edge_base_url: s.config.edge_base_url.clone(),
        max_ttl: s.policy.max_ttl,
        edges,
    })
}

/// `POST /v1/doctor/canary` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// A registered, ready asset to mint the canary for; default: the first ready one by id.
    #[serde(default)]
    pub asset: Option<String>,
}

/// `POST /v1/doctor/canary` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct CanaryLink {
    /// The link, under the edge base URL.
    pub url: String,
    /// Its token id (hex), to revoke it.
    pub token_id: String,
    /// Its expiry, Unix seconds.
    pub expires_at: u64,
    /// The asset it is for.
    pub asset: String,
}

async fn canary(
    State(s): State<Arc<AppState>>,
    c: Authorized<RunCanary>,
    JsonBody(req): JsonBody<CanaryRequest>,
) -> Result<Json<CanaryLink>, ApiError> {
    let asset = match req.asset {
        Some(a) => a,
        None => first_ready_asset(&s).await?.ok_or(ApiError::NotFound(
            "no ready asset to run the canary on: register one first",
        ))?,
    };
    super::assets::ensure_ready(&s, &asset).await?;
    let token_id = super::revocations::new_token_id()?;
    let build = |iat: u32| Claims {
        token_id,
        iat,
        nbf: iat,
        exp: iat + CANARY_TTL,
        permissions: Permissions::PLAYBACK,
        asset: Some(Text::from(asset.as_str())),
        channel: Some(Text::from(CANARY_CHANNEL)),
        ..Claims::default()
    };
    let (token, claims) = mint_recorded(&s, &token_id, &asset, None, &[], build).await?;
    let id = hex::encode(token_id);
    // Remember it as a canary until it expires: only these may be revoked through the doctor's endpoint.
    s.store
        .put(Ns::Leases, &format!("canary/{id}"), claims.exp.to_string().as_bytes())
        .await?;
    audit(&s, &c, "doctor.canary", &asset, "ok").await?;
    Ok(Json(CanaryLink {
        url: super::link_url(&s, &token, &asset),
        token_id: id,
        expires_at: u64::from(claims.exp),
        asset,
    }))
}

/// The first registered asset (by id) whose last readiness check passed.
async fn first_ready_asset(s: &AppState) -> Result<Option<String>, ApiError> {
    let mut ready: Vec<String> = s
        .store
        .scan(Ns::Assets, "")
        .await?
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_slice::<super::assets::AssetRecord>(&v).ok())
        .filter(|a| a.ready)
        .map(|a| a.id)
        .collect();
    ready.sort();
    Ok(ready.into_iter().next())
}

async fn canary_revoke(
    State(s): State<Arc<AppState>>,
    c: Authorized<RunCanary>,
    Path(token_id): Path<String>,
) -> Result<Json<super::revocations::RevocationReceipt>, ApiError> {
    let key = format!("canary/{token_id}");
    if token_id.len() != 24 || s.store.get(Ns::Leases, &key).await?.is_none() {
        return Err(ApiError::NotFound(
            "no such canary token (only canaries are revoked here)",
        ));
    }
    let req = RevocationRequest {
        kind: RevocationKind::Token,
        id: Some(token_id.clone()),
        token: None,
        reason: Some("sharegate doctor canary".into()),
        purge: false,
    };
    let receipt = super::revocations::revoke(&s, &c, &req).await?;
    s.store.delete(Ns::Leases, &key).await?;
    audit(&s, &c, "doctor.canary_revoke", &token_id, "ok").await?;
    Ok(Json(receipt))
}
