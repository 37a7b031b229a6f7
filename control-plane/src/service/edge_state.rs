//! What edges get: the one-entry deltas pushed after each revocation (`publish`) and the state endpoint they
//! pull from (`GET /v1/edge/state`): the delta to the next generation, a full snapshot when further behind, or,
//! when current, a signed freshness message (`SGRF`, `sharegate_shared::revocation::build_freshness`).
//!
//! Every answer carries a signed "as of" time (a snapshot's or delta's `built_at`, the freshness message's `as_of`),
//! from which edges measure the age of their state; a bare `304` would be replayable, so it is only given to edges
//! that do not ask for the signed answer (`x-sharegate-freshness: 1`), i.e. edges from before it existed. The time
//! is read before the generation: everything acknowledged by then is in the generation vouched for.

use super::error::ApiError;
use super::revocations::{LogEntry, Push, PushResult, revoked_of, watermark_of};
use super::snapshot::build_current_snapshot;
use super::{AppState, now};
use crate::store::Log;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sharegate_edge::contract;
use sharegate_shared::revocation::{DeltaParams, RevokedToken, Watermark, build_delta, build_freshness};
use std::sync::Arc;

/// Push the one-entry delta of `generation` to every configured edge, with the whole state to edges that answer
/// 409 for another reason than already holding `generation` or a newer one (a gap, or as many deltas as they keep).
/// Edges that miss it catch up at their next pull. Each receipt line says what happened (`PushResult`).
pub(crate) async fn publish(
    s: &AppState,
    generation: u64,
    entry: &LogEntry,
    now32: u32,
) -> Result<Vec<Push>, ApiError> {
    if s.config.edges.is_empty() {
        return Ok(Vec::new());
    }
    let delta = delta_for(s, generation, entry, now32)?;
    let mut snapshot: Option<(u64, Vec<u8>)> = None;
    let mut pushed = Vec::with_capacity(s.config.edges.len());
    for edge in &s.config.edges {
        let mut answer = push(s, edge, delta.clone()).await;
        if answer.status == 409 && answer.result(generation) != PushResult::AlreadyCurrent {
            if snapshot.is_none() {
                snapshot = Some(build_current_snapshot(s).await?);
            }
            if let Some((snap_generation, snap)) = &snapshot {
                answer = push(s, edge, snap.clone()).await;
                pushed.push(Push {
                    edge: edge.url.clone(),
                    status: answer.status,
                    result: Some(answer.result(*snap_generation)),
                });
                continue;
            }
        }
        pushed.push(Push {
            edge: edge.url.clone(),
            status: answer.status,
            result: Some(answer.result(generation)),
        });
    }
    Ok(pushed)
}

/// An edge's answer to a push: its status and, from its JSON body, what it did or the generation it holds.
struct PushAnswer {
    status: u16,
    /// `accepted` of a 200 (`snapshot`, `delta`, `current`).
    accepted: Option<String>,
    /// `held` of a 409: the generation the edge holds.
    held: Option<u64>,
}

impl PushAnswer {
    /// What pushing `generation` achieved.
    fn result(&self, generation: u64) -> PushResult {
        match self.status {
            200..=299 if self.accepted.as_deref() == Some("current") => PushResult::AlreadyCurrent,
            409 if self.held.is_some_and(|h| h >= generation) => PushResult::AlreadyCurrent,
            status => PushResult::from_status(status),
        }
    }
}

async fn push(s: &AppState, edge: &super::EdgeTarget, body: Vec<u8>) -> PushAnswer {
    let sent = s
        .http
        .post(format!("{}{}", edge.url.trim_end_matches('/'), contract::paths::STATE))
        .bearer_auth(&edge.token)
        .body(body)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    let Ok(resp) = sent else {
        return PushAnswer {
            status: 0,
            accepted: None,
            held: None,
        };
    };
    let status = resp.status().as_u16();
    // The body is the edge's word, not trusted for anything but this receipt; an unreadable one tells nothing.
    let body: serde_json::Value = match resp.bytes().await {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_default(),
        Err(_) => serde_json::Value::Null,
    };
    PushAnswer {
        status,
        accepted: body["accepted"].as_str().map(str::to_string),
        held: body["held"].as_u64(),
    }
}

fn delta_for(s: &AppState, generation: u64, e: &LogEntry, now32: u32) -> Result<Vec<u8>, ApiError> {
    let revoked: Vec<RevokedToken> = revoked_of(e).into_iter().collect();
    let marks: Vec<Watermark> = watermark_of(e).into_iter().collect();
    build_delta(
        &DeltaParams {
            base_generation: generation - 1,
            generation,
            built_at: now32,
        },
        &revoked,
        &marks,
        &s.state_key,
    )
    .map_err(|e| ApiError::Internal(format!("delta: {e}")))
}

pub(super) async fn edge_state(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(want) = s.config.edge_token.as_deref() else {
        return Err(ApiError::BadCredential);
    };
    let ok = auth.and_then(|a| a.strip_prefix("Bearer ")).is_some_and(|t| {
        t.len() == want.len() && t.bytes().zip(want.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if !ok {
        return Err(if auth.is_none() {
            ApiError::Unauthenticated
        } else {
            ApiError::BadCredential
        });
    }
    s.edge_contacts.note(&headers);
    // The time first, the generation after (see the module docs). A clock past 2106 is an error, not a far
    // future "as of" that would keep every edge fresh.
    let as_of = u32::try_from(now()).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    let current = s.store.counter("state_generation").await?;
    let held: Option<u64> = headers
        .get(contract::headers::GENERATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let signed = headers
        .get(contract::headers::FRESHNESS)
        .is_some_and(|v| v.as_bytes() == contract::headers::FRESHNESS_SIGNED.as_bytes());
    if held == Some(current) {
        if signed {
            return Ok((
                StatusCode::OK,
                Bytes::copy_from_slice(&build_freshness(current, as_of, &s.state_key)),
            )
                .into_response());
        }
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    if let Some(g) = held
        && g + 1 == current
        && let Some((_, v)) = s.store.read_log(Log::Revocations, current, 1).await?.first()
    {
        let e: LogEntry = serde_json::from_slice(v).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok((StatusCode::OK, Bytes::from(delta_for(&s, current, &e, as_of)?)).into_response());
    }
    let (_, bytes) = build_current_snapshot(&s).await?;
    Ok((StatusCode::OK, Bytes::from(bytes)).into_response())
}

/// The header an edge names itself with when it pulls state (its `SHAREGATE_EDGE_ID`).
pub const EDGE_ID_HEADER: &str = "x-sharegate-edge";
/// Most edges tracked; later ones are `_overflow`.
pub const MAX_TRACKED_EDGES: usize = 256;

/// When each edge last pulled state from this replica, for `sharegate_edge_state_age_seconds{edge}` (an edge
/// polls, so the time since its last pull bounds how stale its state can be). Replica-local: an edge may pull from
/// any replica, so aggregate with `min by (edge)`.
#[derive(Debug, Default)]
pub struct EdgeContacts(std::sync::Mutex<std::collections::BTreeMap<String, std::time::Instant>>);

impl EdgeContacts {
    pub(super) fn note(&self, headers: &HeaderMap) {
        let name = headers
            .get(EDGE_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.chars()
                    .take(64)
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect::<String>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "_unnamed".into());
        if let Ok(mut m) = self.0.lock() {
            let name = if m.contains_key(&name) || m.len() < MAX_TRACKED_EDGES {
                name
            } else {
                "_overflow".into()
            };
            m.insert(name, std::time::Instant::now());
        }
    }

    /// Each edge and the seconds since its last pull.
    pub fn ages(&self) -> Vec<(String, f64)> {
        self.0
            .lock()
            .map(|m| m.iter().map(|(k, t)| (k.clone(), t.elapsed().as_secs_f64())).collect())
            .unwrap_or_default()
    }
}
