//! The revocation state split by token-id prefix, for edges that read it per request (Fastly): `GET
//! /v1/edge/state/head` and `GET /v1/edge/state/shard/{bits}/{index}` (format: `docs/revocation.md`, "Sharded
//! state"). Both are built from the revocation log, whose sequence number is the generation: each revocation by id
//! is filed under the generation that made it, so a bucket's version is the generation of its newest record and a
//! revocation changes one shard.
//!
//! The head answers like `GET /v1/edge/state`: to an edge that names the current generation and asks for the
//! signed answer, the freshness message (`SGRF`); otherwise the head at the current generation. Its `as_of` is read
//! before the generation, as everywhere. A shard is built at the current generation for the bits and bucket asked
//! (an edge holding an older head gets a shard at least as new as its head needs).

use super::error::ApiError;
use super::keys::require_edge;
use super::revocations::{LogEntry, revoked_of, watermark_of};
use super::{AppState, now};
use crate::store::Log;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sharegate_edge::contract;
use sharegate_shared::revocation::{
    MAX_BITS, RevokedAt, ShardParams, Watermark, bits_for, build_freshness, build_head, build_shard,
};
use std::sync::Arc;

/// Every revocation-log entry: the revocations by id with their generation, the watermarks, and the generation
/// (the last entry read).
async fn read_all(s: &AppState) -> Result<(u64, Vec<RevokedAt>, Vec<Watermark>), ApiError> {
    let mut revoked = Vec::new();
    let mut marks = Vec::new();
    let mut from = 1;
    loop {
        let page = s.store.read_log(Log::Revocations, from, crate::store::MAX_PAGE).await?;
        let Some(last) = page.last().map(|(q, _)| *q) else {
            break;
        };
        for (seq, v) in &page {
            let e: LogEntry = serde_json::from_slice(v).map_err(|e| ApiError::Internal(e.to_string()))?;
            if let Some(token) = revoked_of(&e) {
                revoked.push(RevokedAt {
                    token,
                    generation: *seq,
                });
            }
            marks.extend(watermark_of(&e));
        }
        from = last + 1;
    }
    Ok((from - 1, revoked, marks))
}

/// Params at the current generation: records of tokens expired at every edge are left out (as in a snapshot).
fn params(s: &AppState, generation: u64, as_of: u32, bits: u8) -> ShardParams {
    ShardParams {
        generation,
        as_of,
        bits,
        expire_before: as_of.saturating_sub(s.policy.leeway + 60),
    }
}

fn as_of_now() -> Result<u32, ApiError> {
    u32::try_from(now()).map_err(|_| ApiError::Internal("clock beyond 2106".into()))
}

pub(super) async fn head(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_edge(&s, &headers)?;
    s.edge_contacts.note(&headers);
    // The time first, the generation after (see edge_state).
    let as_of = as_of_now()?;
    let current = s.store.counter("state_generation").await?;
    let held: Option<u64> = headers
        .get(contract::headers::GENERATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let signed = headers
        .get(contract::headers::FRESHNESS)
        .is_some_and(|v| v.as_bytes() == contract::headers::FRESHNESS_SIGNED.as_bytes());
    if held == Some(current) && signed {
        return Ok((
            StatusCode::OK,
            Bytes::copy_from_slice(&build_freshness(current, as_of, &s.state_key)),
        )
            .into_response());
    }
    let (generation, revoked, marks) = read_all(&s).await?;
    let live = revoked
        .iter()
        .filter(|r| r.token.exp > params(&s, generation, as_of, 0).expire_before)
        .count();
    let p = params(&s, generation, as_of, bits_for(live));
    let bytes = build_head(&p, &revoked, &marks, &s.state_key).map_err(|e| ApiError::Internal(format!("head: {e}")))?;
    Ok((StatusCode::OK, Bytes::from(bytes)).into_response())
}

pub(super) async fn shard(
    State(s): State<Arc<AppState>>,
    Path((bits, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The credential before anything the caller wrote: an anonymous caller learns nothing, not even a bad path.
    require_edge(&s, &headers)?;
    s.edge_contacts.note(&headers);
    let (Ok(bits), Ok(index)) = (bits.parse::<u8>(), index.parse::<u32>()) else {
        return Err(ApiError::NotFound("shard"));
    };
    if bits > MAX_BITS || u64::from(index) >> bits != 0 {
        return Err(ApiError::NotFound("shard"));
    }
    let as_of = as_of_now()?;
    let (generation, revoked, _) = read_all(&s).await?;
    let p = params(&s, generation, as_of, bits);
    let bytes = build_shard(&p, index, &revoked, &s.state_key).ok_or(ApiError::NotFound("shard"))?;
    Ok((StatusCode::OK, Bytes::from(bytes)).into_response())
}
