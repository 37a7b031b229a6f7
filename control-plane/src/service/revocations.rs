//! Revocations: durable before acknowledged, then published to edges; and the state endpoint edges pull from.
//!
//! `POST /v1/revocations` (role `responder`) writes the revocation record, its entry in the revocation log and the
//! new state generation in one atomic store transaction (so replicas agree: generation N is revocation-log entry
//! N), then pushes a one-entry delta to every configured edge and returns a receipt saying which generation carries
//! it and where it was pushed. `GET /v1/edge/state` (edge credential) answers an edge at generation N with the
//! delta to N+1, with a full snapshot when it is further behind, or 304 when it is current.

use super::auth::Role;
use super::error::ApiError;
use super::{AppState, audit, caller, now};
use crate::store::{Check, Log, Ns, Op};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sharegate_shared::revocation::{
    DeltaParams, IssuedToken, RevokedToken, ScopeKind, SnapshotParams, Watermark, build_delta, build_snapshot,
};
use sharegate_shared::token::{TokenBuf, Verifier};
use std::sync::Arc;

/// `POST /v1/revocations` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// `token`, `share`, `viewer`, `session`, `asset`, `campaign`, `key_id` or `global`.
    pub kind: String,
    /// The scope id (hex token id for `token`, a key id number for `key_id`; none for `global`).
    pub id: Option<String>,
    /// For `token`: the token itself or its URL, instead of `id`.
    pub token: Option<String>,
    /// Why (kept in the record and the audit log).
    pub reason: Option<String>,
}

/// One entry of the revocation log: what the edge's state is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// Scope kind (`token`, `share`, ...).
    pub kind: String,
    /// Scope id (hex token id for tokens).
    pub id: String,
    /// For tokens: issue time and expiry (they decide where the token sits in the state and when it is dropped).
    pub iat: u32,
    /// Expiry (tokens) — unused for watermarks.
    pub exp: u32,
    /// For watermarks: tokens issued at or before this second are revoked.
    pub through: u32,
}

/// Where a revocation was pushed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Push {
    /// Edge URL.
    pub edge: String,
    /// HTTP status, or 0 when unreachable.
    pub status: u16,
}

/// The stored record and the receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// Revocation id.
    pub id: String,
    /// What was revoked.
    pub kind: String,
    /// Scope id.
    pub target: String,
    /// Why.
    pub reason: Option<String>,
    /// When (unix seconds).
    pub at: u64,
    /// Who (API key id).
    pub by: String,
    /// The state generation that carries it.
    pub generation: u64,
    /// Pushes to edges (edges that missed the push get it at their next pull).
    pub pushed: Vec<Push>,
}

fn scope_kind(kind: &str) -> Option<ScopeKind> {
    Some(match kind {
        "share" => ScopeKind::Share,
        "viewer" => ScopeKind::Viewer,
        "session" => ScopeKind::Session,
        "asset" => ScopeKind::Asset,
        "campaign" => ScopeKind::Campaign,
        "key_id" => ScopeKind::KeyId,
        "global" => ScopeKind::Global,
        _ => return None,
    })
}

fn watermark_of(e: &LogEntry) -> Option<Watermark> {
    let kind = scope_kind(&e.kind)?;
    Some(match kind {
        ScopeKind::KeyId => Watermark::key_id(e.id.parse().ok()?, e.through),
        ScopeKind::Global => Watermark::global(e.through),
        k => Watermark::new(k, e.id.as_bytes(), e.through),
    })
}

fn revoked_of(e: &LogEntry) -> Option<RevokedToken> {
    if e.kind != "token" {
        return None;
    }
    let mut id = [0u8; 12];
    hex::decode_to_slice(&e.id, &mut id).ok()?;
    Some(RevokedToken {
        id,
        iat: e.iat,
        exp: e.exp,
    })
}

/// The stored facts of a minted token (written at mint time under its hex id).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkRecord {
    /// Issue time.
    pub iat: u32,
    /// Expiry.
    pub exp: u32,
    /// Asset.
    pub asset: String,
    /// Share, if any.
    pub share: Option<String>,
}

async fn token_entry(s: &AppState, req: &RevocationRequest) -> Result<LogEntry, ApiError> {
    // By token (or URL): the signature proves it is ours, and the claims give iat/exp directly.
    if let Some(t) = &req.token {
        let (token, _) = crate::offline::split_token_url(t);
        let mut buf = TokenBuf::new();
        let c = Verifier::new(&s.minter.current().ring, s.policy)
            .authenticate(&token, &mut buf)
            .map_err(|r| ApiError::Invalid(format!("token: {r}")))?;
        return Ok(LogEntry {
            kind: "token".into(),
            id: hex::encode(c.token_id),
            iat: c.iat,
            exp: c.exp,
            through: 0,
        });
    }
    let id = req
        .id
        .as_deref()
        .ok_or_else(|| ApiError::Invalid("token revocations need `token` or `id`".into()))?;
    let id = id.to_ascii_lowercase();
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Invalid("a token id is 24 hex digits".into()));
    }
    let rec = s
        .store
        .get(Ns::Links, &id)
        .await?
        .ok_or(ApiError::NotFound("token id"))?;
    let rec: LinkRecord = serde_json::from_slice(&rec).map_err(|e| ApiError::Internal(format!("link record: {e}")))?;
    Ok(LogEntry {
        kind: "token".into(),
        id,
        iat: rec.iat,
        exp: rec.exp,
        through: 0,
    })
}

pub(super) async fn create(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<RevocationRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Receipt>), ApiError> {
    let c = caller(&s, &headers).await?;
    c.require(&[Role::Responder], "revoke")?;
    let Json(req) = body.map_err(|e| ApiError::Invalid(e.body_text()))?;
    let now = now();
    let now32 = u32::try_from(now).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    let entry = match req.kind.as_str() {
        "token" => token_entry(&s, &req).await?,
        "global" => LogEntry {
            kind: "global".into(),
            id: String::new(),
            iat: 0,
            exp: 0,
            through: now32,
        },
        k if scope_kind(k).is_some() => {
            let id = req
                .id
                .clone()
                .filter(|i| !i.is_empty() && i.len() <= 255)
                .ok_or_else(|| ApiError::Invalid(format!("`{k}` revocations need an `id` of 1 to 255 bytes")))?;
            if k == "key_id" && id.parse::<u16>().is_err() {
                return Err(ApiError::Invalid("a key id is a number 0..=65535".into()));
            }
            LogEntry {
                kind: k.into(),
                id,
                iat: 0,
                exp: 0,
                through: now32,
            }
        }
        k => return Err(ApiError::Invalid(format!("unknown revocation kind `{k}`"))),
    };
    let mut rid = [0u8; 8];
    getrandom::fill(&mut rid).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    let mut receipt = Receipt {
        id: format!("rev_{}", hex::encode(rid)),
        kind: entry.kind.clone(),
        target: entry.id.clone(),
        reason: req.reason.clone(),
        at: now,
        by: c.key_id.clone(),
        generation: 0,
        pushed: Vec::new(),
    };
    let log_bytes = serde_json::to_vec(&entry).map_err(|e| ApiError::Internal(e.to_string()))?;
    // An idempotency key makes a retried call return the first receipt instead of revoking twice.
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("revocations:{k}"));
    if let Some(k) = &idem
        && let Some(prev) = s.store.get(Ns::Idempotency, k).await?
    {
        let id = String::from_utf8_lossy(&prev).to_string();
        let rec = s
            .store
            .get(Ns::Revocations, &id)
            .await?
            .ok_or(ApiError::NotFound("revocation"))?;
        let r: Receipt = serde_json::from_slice(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
        return Ok((StatusCode::OK, Json(r)));
    }
    // Durable before acknowledged: record, log entry and generation in one transaction.
    let placeholder = serde_json::to_vec(&receipt).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut checks = Vec::new();
    let mut ops = vec![
        Op::Append {
            log: Log::Revocations,
            value: &log_bytes,
        },
        Op::Incr {
            counter: "state_generation",
            by: 1,
        },
        Op::Put {
            ns: Ns::Revocations,
            key: &receipt.id,
            value: &placeholder,
        },
    ];
    if let Some(k) = &idem {
        checks.push(Check::Absent {
            ns: Ns::Idempotency,
            key: k,
        });
        ops.push(Op::Put {
            ns: Ns::Idempotency,
            key: k,
            value: receipt.id.as_bytes(),
        });
    }
    let results = s
        .store
        .atomic(&checks, &ops)
        .await?
        .ok_or_else(|| ApiError::Conflict("this idempotency key is being used by a concurrent request".into()))?;
    let (seq, generation) = (results[0], results[1]);
    if seq != generation {
        return Err(ApiError::Internal(format!(
            "revocation log seq {seq} and generation {generation} diverged"
        )));
    }
    receipt.generation = generation;
    // Publish: a one-entry delta to every configured edge. Edges that miss it catch up at their next pull.
    let delta = delta_for(&s, generation, &entry, now32)?;
    let mut snapshot: Option<Vec<u8>> = None;
    for edge in &s.config.edges {
        let mut status = push(&s, edge, delta.clone()).await;
        // 409: the edge holds another generation, or as many deltas as it keeps; send the whole state instead.
        if status == 409 {
            if snapshot.is_none() {
                snapshot = Some(build_current_snapshot(&s).await?.1);
            }
            if let Some(snap) = &snapshot {
                status = push(&s, edge, snap.clone()).await;
            }
        }
        receipt.pushed.push(Push {
            edge: edge.url.clone(),
            status,
        });
    }
    let rec = serde_json::to_vec(&receipt).map_err(|e| ApiError::Internal(e.to_string()))?;
    s.store.put(Ns::Revocations, &receipt.id, &rec).await?;
    audit(
        &s,
        &c,
        &headers,
        "revocations.create",
        &format!("{}:{}", receipt.kind, receipt.target),
        "ok",
    )
    .await?;
    Ok((StatusCode::CREATED, Json(receipt)))
}

async fn push(s: &AppState, edge: &super::EdgeTarget, body: Vec<u8>) -> u16 {
    s.http
        .post(format!("{}/_sharegate/state", edge.url.trim_end_matches('/')))
        .bearer_auth(&edge.token)
        .body(body)
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
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

pub(super) async fn get(
    State(s): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Receipt>, ApiError> {
    let c = caller(&s, &headers).await?;
    c.require(&[Role::Responder, Role::Auditor], "read revocations")?;
    let rec = s
        .store
        .get(Ns::Revocations, &id)
        .await?
        .ok_or(ApiError::NotFound("revocation"))?;
    Ok(Json(
        serde_json::from_slice(&rec).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}

/// Build the snapshot at the current generation from the issued log and every revocation-log entry.
pub async fn build_current_snapshot(s: &AppState) -> Result<(u64, Vec<u8>), ApiError> {
    let now32 = u32::try_from(now()).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    // Read the revocations first: the generation is the last entry read, so the snapshot is exactly that state.
    let mut entries = Vec::new();
    let mut from = 1;
    loop {
        let page = s.store.read_log(Log::Revocations, from, crate::store::MAX_PAGE).await?;
        let Some(last) = page.last().map(|(q, _)| *q) else {
            break;
        };
        for (_, v) in &page {
            entries.push(serde_json::from_slice::<LogEntry>(v).map_err(|e| ApiError::Internal(e.to_string()))?);
        }
        from = last + 1;
    }
    let generation = from - 1;
    let mut issued = Vec::new();
    let mut from = 1;
    loop {
        let page = s.store.read_log(Log::Issued, from, crate::store::MAX_PAGE).await?;
        let Some(last) = page.last().map(|(q, _)| *q) else {
            break;
        };
        for (_, v) in &page {
            if v.len() == 20 {
                let mut id = [0u8; 12];
                id.copy_from_slice(&v[..12]);
                let iat = u32::from_be_bytes([v[12], v[13], v[14], v[15]]);
                let exp = u32::from_be_bytes([v[16], v[17], v[18], v[19]]);
                issued.push(IssuedToken { id, iat, exp });
            }
        }
        from = last + 1;
    }
    let revoked: Vec<RevokedToken> = entries.iter().filter_map(revoked_of).collect();
    let marks: Vec<Watermark> = entries.iter().filter_map(watermark_of).collect();
    // Tokens minted from now on are answered by the exact list (deltas), never by the filter levels.
    let params = SnapshotParams {
        generation,
        built_at: now32,
        cutoff: now32,
        expire_before: now32.saturating_sub(s.policy.leeway + 60),
        max_token_lifetime: s.policy.max_ttl,
    };
    let bytes = build_snapshot(&params, issued, &revoked, &marks, &s.state_key)
        .map_err(|e| ApiError::Internal(format!("snapshot: {e}")))?;
    Ok((generation, bytes))
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
    let current = s.store.counter("state_generation").await?;
    let held: Option<u64> = headers
        .get("x-sharegate-generation")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if held == Some(current) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    if let Some(g) = held
        && g + 1 == current
        && let Some((_, v)) = s.store.read_log(Log::Revocations, current, 1).await?.first()
    {
        let e: LogEntry = serde_json::from_slice(v).map_err(|e| ApiError::Internal(e.to_string()))?;
        let now32 = u32::try_from(now()).unwrap_or(u32::MAX);
        return Ok((StatusCode::OK, Bytes::from(delta_for(&s, current, &e, now32)?)).into_response());
    }
    let (_, bytes) = build_current_snapshot(&s).await?;
    Ok((StatusCode::OK, Bytes::from(bytes)).into_response())
}
