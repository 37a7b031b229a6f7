//! The full revocation snapshot: every revocation-log entry folded into the filter levels over the issued log.
//!
//! The snapshot's cut-off is not a clock reading but the issued-log horizon: the builder raises the
//! [`ISSUED_HORIZON`] counter to its cut-off *before* it reads the issued log, and every mint appends its record
//! only if its `iat` is not below that counter, in the same store transaction (`mint_recorded`). The store
//! orders the two, so a record with `iat < cutoff` is either in the log when the builder reads it or was refused
//! (and minted again at a later `iat`). That holds for one process and for replicas on one Redis, whatever their
//! clocks say and however long a mint's write takes to land.

/// The counter under which the issued-log horizon is kept: no record with `iat` below it is appended any more.
pub const ISSUED_HORIZON: &str = "issued_horizon";

/// How far behind its own clock a builder puts the cut-off. Mints whose write takes up to this long (a slow store,
/// a loaded replica) and replicas whose clock is up to this far behind pass the horizon check at once instead of
/// being minted again. It costs next to nothing: a token with `iat >= cutoff` is answered by the exact list, which
/// holds only revoked tokens, so the lag moves no unrevoked token anywhere.
pub const CUTOFF_LAG_SECS: u32 = 10;

/// The `through` of a watermark made now: the current second, or later if a replica behind the horizon may have
/// re-minted tokens with a later `iat` (up to half a lag past the horizon, see `mint_recorded`), so that every
/// token minted before the revocation is covered whatever the replicas' clocks. (A later token minted in that
/// window is refused too: when in doubt, the revocation wins.)
pub async fn watermark_through(s: &AppState, now32: u32) -> Result<u32, ApiError> {
    let horizon = s.store.counter(ISSUED_HORIZON).await?;
    let remint = horizon.saturating_add(u64::from(CUTOFF_LAG_SECS / 2));
    Ok(now32.max(u32::try_from(remint).unwrap_or(u32::MAX)))
}

use super::AppState;
use super::error::ApiError;
use super::revocations::{LogEntry, revoked_of, watermark_of};
use crate::store::{Log, Op};
use sharegate_shared::revocation::{IssuedToken, RevokedToken, SnapshotParams, Watermark, build_snapshot};

/// Build the snapshot at the current generation from the issued log and every revocation-log entry.
pub async fn build_current_snapshot(s: &AppState) -> Result<(u64, Vec<u8>), ApiError> {
    let now32 = u32::try_from(s.now()).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    // Seal first, read after: see the module docs. The horizon never goes down, so a builder whose clock is behind
    // another's uses the higher cut-off, which is as safe (it was sealed before this read too).
    let horizon = s
        .store
        .atomic(
            &[],
            &[Op::Raise {
                counter: ISSUED_HORIZON,
                to: u64::from(now32.saturating_sub(CUTOFF_LAG_SECS)),
            }],
        )
        .await?
        .and_then(|r| r.first().copied())
        .ok_or_else(|| ApiError::Internal("raising the issued horizon returned nothing".into()))?;
    let cutoff = u32::try_from(horizon).map_err(|_| ApiError::Internal("issued horizon beyond 2106".into()))?;
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
    // Tokens expired at every edge (`exp <= expire_before`, the bound the snapshot drops them by) are never needed
    // again: the leading run of them is trimmed from the log below, so it does not grow with every mint ever made.
    let expire_before = now32.saturating_sub(s.policy.leeway + 60);
    let mut issued = Vec::new();
    let mut from = 1;
    let mut expired_through = 0;
    let mut leading = true;
    loop {
        let page = s.store.read_log(Log::Issued, from, crate::store::MAX_PAGE).await?;
        let Some(last) = page.last().map(|(q, _)| *q) else {
            break;
        };
        for (seq, v) in &page {
            if v.len() == 20 {
                let mut id = [0u8; 12];
                id.copy_from_slice(&v[..12]);
                let iat = u32::from_be_bytes([v[12], v[13], v[14], v[15]]);
                let exp = u32::from_be_bytes([v[16], v[17], v[18], v[19]]);
                leading &= exp <= expire_before;
                if leading {
                    expired_through = *seq;
                    continue;
                }
                issued.push(IssuedToken { id, iat, exp });
            }
        }
        from = last + 1;
    }
    if expired_through > 0 {
        s.store.trim_log(Log::Issued, expired_through + 1).await?;
    }
    let revoked: Vec<RevokedToken> = entries.iter().filter_map(revoked_of).collect();
    let marks: Vec<Watermark> = entries.iter().filter_map(watermark_of).collect();
    // Tokens with `iat >= cutoff` are answered by the exact list (deltas), never by the filter levels.
    let params = SnapshotParams {
        generation,
        built_at: now32,
        cutoff,
        expire_before,
        max_token_lifetime: s.policy.max_ttl,
    };
    let bytes = build_snapshot(&params, issued, &revoked, &marks, &s.state_key)
        .map_err(|e| ApiError::Internal(format!("snapshot: {e}")))?;
    Ok((generation, bytes))
}
