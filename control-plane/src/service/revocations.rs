//! Revocations: durable before acknowledged, then published to edges (`edge_state`).
//!
//! `POST /v1/revocations` (role `responder`) writes the revocation record, its entry in the revocation log and the
//! new state generation in one atomic store transaction (so replicas agree: generation N is revocation-log entry
//! N), then pushes a one-entry delta to every configured edge and returns a receipt saying which generation carries
//! it and where it was pushed. `GET /v1/edge/state` (edge credential) answers an edge at generation N with the
//! delta to N+1, with a full snapshot when it is further behind, or 304 when it is current.
//!
//! With `"purge": true` the revocation also purges what its scope has cached at the CDNs (`docs/purge.md`): the
//! purge jobs are written in that same transaction, so a purge is never acknowledged and then lost, and the
//! receipt (`purges`) shows each job's current status whenever it is read back.

use super::auth::{ReadRevocations, Revoke};
use super::error::ApiError;
use super::extract::{Authorized, JsonBody};
use super::idempotency::{Scope, commit_guard, commit_key, commit_payload, commit_value};
use super::{AppState, audit};
use crate::purge::{JobStatus, Outbox, OutboxStore, PurgeJob, PurgeRequest, Revoked, StoreOutbox};
use crate::store::{Check, Log, Ns, Op};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use sharegate_shared::revocation::{RevokedToken, ScopeKind, Watermark};
use sharegate_shared::token::{TokenBuf, Verifier};
use std::sync::Arc;

/// What a revocation names: one token, or a scope whose tokens issued up to a second are all revoked. The wire
/// names (`token`, `share`, ..., `key_id`, `global`) are stable: requests, stored log entries and receipts use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationKind {
    /// One token, by id (or by the token itself).
    Token,
    /// Every token of a share.
    Share,
    /// Every token of a viewer.
    Viewer,
    /// Every token of a session.
    Session,
    /// Every token of an asset.
    Asset,
    /// Every token of a campaign.
    Campaign,
    /// Every token signed with a key id.
    KeyId,
    /// Every token.
    Global,
}

impl RevocationKind {
    /// The stable wire name.
    pub fn as_str(self) -> &'static str {
        match self.scope() {
            Some(k) => k.as_str(),
            None => "token",
        }
    }

    /// The watermark scope it revokes; `None` for a single token.
    pub const fn scope(self) -> Option<ScopeKind> {
        Some(match self {
            RevocationKind::Token => return None,
            RevocationKind::Share => ScopeKind::Share,
            RevocationKind::Viewer => ScopeKind::Viewer,
            RevocationKind::Session => ScopeKind::Session,
            RevocationKind::Asset => ScopeKind::Asset,
            RevocationKind::Campaign => ScopeKind::Campaign,
            RevocationKind::KeyId => ScopeKind::KeyId,
            RevocationKind::Global => ScopeKind::Global,
        })
    }
}

impl From<ScopeKind> for RevocationKind {
    fn from(k: ScopeKind) -> Self {
        match k {
            ScopeKind::Global => RevocationKind::Global,
            ScopeKind::Share => RevocationKind::Share,
            ScopeKind::Viewer => RevocationKind::Viewer,
            ScopeKind::Session => RevocationKind::Session,
            ScopeKind::Asset => RevocationKind::Asset,
            ScopeKind::Campaign => RevocationKind::Campaign,
            ScopeKind::KeyId => RevocationKind::KeyId,
        }
    }
}

impl std::fmt::Display for RevocationKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /v1/revocations` body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRequest {
    /// What is revoked; each kind takes its own fields (see `RevocationRequest::entry_for`).
    pub kind: RevocationKind,
    /// The scope id (hex token id for `token`, a key id number for `key_id`; none for `global`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// For `token`: the token itself or its URL, instead of `id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Why (kept in the record and the audit log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Also purge the revoked scope's cached objects at every configured CDN (default `false`). Refused with 422
    /// when no CDN purger is configured, before anything is written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
}

/// One entry of the revocation log: what the edge's state is built from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEntry {
    /// What is revoked.
    pub kind: RevocationKind,
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
    /// HTTP status of the last answer, or 0 when unreachable.
    pub status: u16,
    /// What the push achieved (absent in records written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<PushResult>,
}

/// What a push achieved at one edge, read from its answers (`status` alone cannot tell an edge that refused the
/// state from one that already held a newer generation: both answer 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushResult {
    /// The edge took the state (or the keys).
    Applied,
    /// The edge already held this generation or a newer one: nothing to do.
    AlreadyCurrent,
    /// The edge answered, and refused (it catches up at its next pull).
    Refused,
    /// No answer.
    Unreachable,
}

impl PushResult {
    /// From a status alone: 2xx applied, 0 unreachable, anything else refused.
    pub fn from_status(status: u16) -> PushResult {
        match status {
            0 => PushResult::Unreachable,
            200..=299 => PushResult::Applied,
            _ => PushResult::Refused,
        }
    }
}

/// The stored record and the receipt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    /// Revocation id.
    pub id: String,
    /// What was revoked.
    pub kind: RevocationKind,
    /// Scope id.
    pub target: String,
    /// Why.
    pub reason: Option<String>,
    /// When (unix seconds).
    pub at: u64,
    /// Who (API key id).
    pub by: String,
    /// For a scope (watermark): tokens of the scope issued at or before this second are revoked. Usually `at`;
    /// later when replicas re-minted tokens past the issued-log horizon (see docs/revocation.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u32>,
    /// The state generation that carries it.
    pub generation: u64,
    /// Pushes to edges (edges that missed the push get it at their next pull).
    pub pushed: Vec<Push>,
}

/// What `POST /v1/revocations` and `GET /v1/revocations/{id}` answer, and what is stored under the revocation id:
/// the [`Receipt`] fields plus the CDN purges. A separate type (rather than a field of `Receipt`) so code that
/// builds or reads plain receipts (share deletion, diagnosis) is unaffected; it reads this record as a `Receipt`
/// and ignores `purges`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevocationReceipt {
    /// The revocation.
    #[serde(flatten)]
    pub receipt: Receipt,
    /// CDN purges, one per target and API call; empty when no purge was asked for or the scope has nothing cached
    /// of its own (viewer, session, campaign, key id, global). Current as of the answer: `GET` reads them anew.
    #[serde(default)]
    pub purges: Vec<PurgeStatus>,
}

/// Where a purge job stands, as the receipt shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeState {
    /// Not yet confirmed by the CDN (queued, or being retried).
    Pending,
    /// Confirmed by the CDN.
    Done,
    /// Given up (refused by the CDN, or too many attempts).
    Failed,
}

/// One purge job on a receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeStatus {
    /// The CDN (`cloudflare:<zone>`, `fastly:<service>`).
    pub target: String,
    /// Where it stands.
    pub status: PurgeState,
    /// The CDN's purge id(s), once done.
    pub cdn_id: Option<String>,
    /// Calls made so far.
    pub attempts: u32,
    /// The last failure; for a failed job, why it was given up.
    pub last_error: Option<String>,
}

impl From<&PurgeJob> for PurgeStatus {
    fn from(job: &PurgeJob) -> Self {
        let (status, cdn_id, last_error) = match &job.status {
            JobStatus::Pending => (PurgeState::Pending, None, job.last_error.clone()),
            JobStatus::Done { cdn_id, .. } => (PurgeState::Done, Some(cdn_id.clone()), job.last_error.clone()),
            // The status reason says why the job stopped ("gave up after 20 attempts: …"); the last error alone
            // would not.
            JobStatus::Failed { reason } => (PurgeState::Failed, None, Some(reason.clone())),
        };
        PurgeStatus {
            target: job.target.clone(),
            status,
            cdn_id,
            attempts: job.attempts,
            last_error,
        }
    }
}

/// What a revocation purges, as the purge module names it. `share` is the revoked token's share, if any.
fn revoked_scope<'a>(e: &'a LogEntry, share: Option<&'a str>) -> Option<Revoked<'a>> {
    Some(match e.kind {
        RevocationKind::Token => Revoked::Token { share },
        RevocationKind::Share => Revoked::Share(&e.id),
        RevocationKind::Asset => Revoked::Asset(&e.id),
        RevocationKind::Viewer => Revoked::Viewer(&e.id),
        RevocationKind::Session => Revoked::Session(&e.id),
        RevocationKind::Campaign => Revoked::Campaign(&e.id),
        RevocationKind::KeyId => Revoked::KeyId(e.id.parse().ok()?),
        RevocationKind::Global => Revoked::Global,
    })
}

/// The CDN host of the public edge URL, for prefix purges: objects are cached under `<host>/<asset>/…` (the edge
/// strips the token from the cache key). No host (a malformed setting) means no prefix purge; the tag purge
/// still covers the objects.
fn cdn_hosts(edge_base_url: &str) -> Vec<String> {
    reqwest::Url::parse(edge_base_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .into_iter()
        .collect()
}

/// Replaces a receipt's purge statuses with the current ones. Only receipts that had purges look them up, so
/// reading an ordinary receipt costs no outbox scan.
async fn refresh_purges(s: &AppState, r: &mut RevocationReceipt) -> Result<(), ApiError> {
    if r.purges.is_empty() {
        return Ok(());
    }
    let id = &r.receipt.id;
    let jobs = match &s.outbox {
        Some(o) => o.receipt(id).await.map_err(|e| ApiError::Internal(e.to_string()))?,
        // Purgers unconfigured since: the jobs are still in the service store (and still pending, which is the
        // truth: nothing sends them).
        None => StoreOutbox::new(s.store.clone())
            .jobs_for_revocation(id)
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    };
    r.purges = jobs.iter().map(PurgeStatus::from).collect();
    Ok(())
}

pub(super) fn watermark_of(e: &LogEntry) -> Option<Watermark> {
    Some(match e.kind.scope()? {
        ScopeKind::KeyId => Watermark::key_id(e.id.parse().ok()?, e.through),
        ScopeKind::Global => Watermark::global(e.through),
        k => Watermark::new(k, e.id.as_bytes(), e.through),
    })
}

pub(super) fn revoked_of(e: &LogEntry) -> Option<RevokedToken> {
    if e.kind != RevocationKind::Token {
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

/// A fresh token id: bytes 0–3 and 8–11 from the OS CSPRNG, bytes 4–7 the wall clock in milliseconds (big-endian,
/// wrapping every ~49 days). The time part is there for the store, not for security: link records are keyed by it
/// ([`link_key`]), so a burst of mints lands on the B-tree's last leaves instead of one random leaf each (with random
/// keys each mint dirtied its own 4 KiB page, which bound the embedded mint rate). The leading bytes stay random
/// because edge shards bucket by them, and 64 random bits per millisecond keep ids unique.
pub(crate) fn new_token_id() -> Result<[u8; 12], ApiError> {
    let mut id = [0u8; 12];
    getrandom::fill(&mut id).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    #[allow(clippy::cast_possible_truncation)] // wrapping is intended: only nearby ids need to sort together
    id[4..8].copy_from_slice(&(ms as u32).to_be_bytes());
    Ok(id)
}

/// The `Ns::Links` key of a token's link record (and the suffix of its viewer index entry): `<bytes 4–7 in hex>.<id
/// in hex>`, so records sort by mint time ([`new_token_id`]). The `.` tells it from the bare hex id that records
/// written before this layout are keyed by ([`link_record`] reads both).
pub fn link_key(id: &[u8; 12]) -> String {
    let hex = hex::encode(id);
    format!("{}.{hex}", &hex[8..16])
}

/// [`link_key`] of an id given in hex; `None` unless it is 24 hex digits.
pub fn link_key_hex(id_hex: &str) -> Option<String> {
    let mut id = [0u8; 12];
    hex::decode_to_slice(id_hex, &mut id).ok()?;
    Some(link_key(&id))
}

/// The token id (hex) in a [`link_key`] or a legacy bare-hex key.
pub(crate) fn id_of_link_key(key: &str) -> &str {
    key.rsplit_once('.').map_or(key, |(_, id)| id)
}

/// A token's link record by its id (24 hex digits): under [`link_key`], else under the bare id (records
/// minted before link keys sorted by time).
pub(crate) async fn link_record(s: &AppState, id_hex: &str) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(key) = link_key_hex(id_hex) else {
        return Ok(None);
    };
    if let Some(rec) = s.store.get(Ns::Links, &key).await? {
        return Ok(Some(rec));
    }
    Ok(s.store.get(Ns::Links, id_of_link_key(&key)).await?)
}

/// The stored facts of a minted token (written at mint time under [`link_key`]).
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

/// The log entry of a token revocation, and the token's share (what a purge drops).
async fn token_entry(s: &AppState, req: &RevocationRequest) -> Result<(LogEntry, Option<String>), ApiError> {
    // By token (or URL): the signature proves it is ours, and the claims give iat/exp directly.
    if let Some(t) = &req.token {
        let (token, _) = crate::tokens::split_token_url(t);
        let mut buf = TokenBuf::new();
        let c = Verifier::new(&s.minter.current().ring, s.policy)
            .authenticate(&token, &mut buf)
            .map_err(|r| ApiError::Invalid(format!("token: {r}")))?;
        let entry = LogEntry {
            kind: RevocationKind::Token,
            id: hex::encode(c.token_id),
            iat: c.iat,
            exp: c.exp,
            through: 0,
        };
        return Ok((entry, c.share.map(|t| t.as_str().to_string())));
    }
    let id = req
        .id
        .as_deref()
        .ok_or_else(|| ApiError::Invalid("token revocations need `token` or `id`".into()))?;
    let id = id.to_ascii_lowercase();
    if id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::Invalid("a token id is 24 hex digits".into()));
    }
    let rec = link_record(s, &id).await?.ok_or(ApiError::NotFound("token id"))?;
    let rec: LinkRecord = serde_json::from_slice(&rec).map_err(|e| ApiError::Internal(format!("link record: {e}")))?;
    let entry = LogEntry {
        kind: RevocationKind::Token,
        id,
        iat: rec.iat,
        exp: rec.exp,
        through: 0,
    };
    Ok((entry, rec.share))
}

pub(super) async fn create(
    State(s): State<Arc<AppState>>,
    c: Authorized<Revoke>,
    scope: Option<Extension<Scope>>,
    JsonBody(req): JsonBody<RevocationRequest>,
) -> Result<(StatusCode, Json<RevocationReceipt>), ApiError> {
    let outbox = purge_outbox(&s, req.purge)?;
    let now = s.now();
    // A call retried after a crash (the middleware let its lapsed lease be taken over) answers with the first
    // receipt instead of revoking twice. Checked before the request is interpreted: a token revocation whose
    // signing key has since been pruned must still get its receipt.
    let scope = scope.map(|Extension(sc)| sc);
    if let Some(sc) = &scope
        && let Some(r) = replay_committed(&s, &c, sc).await?
    {
        return Ok((StatusCode::OK, Json(r)));
    }
    let r = revoke_scoped(&s, &c, &req, outbox, now, scope.as_ref()).await?;
    Ok((StatusCode::CREATED, Json(r)))
}

/// Revoke as `POST /v1/revocations` does, for another endpoint's caller (entitlement invalidation): durable before
/// it returns, pushed to the edges, purged when asked, audited as `revocations.create`.
pub(crate) async fn revoke(
    s: &AppState,
    c: &super::auth::Caller,
    req: &RevocationRequest,
) -> Result<RevocationReceipt, ApiError> {
    let outbox = purge_outbox(s, req.purge)?;
    revoke_scoped(s, c, req, outbox, s.now(), None).await
}

async fn revoke_scoped(
    s: &AppState,
    c: &super::auth::Caller,
    req: &RevocationRequest,
    outbox: Option<Arc<Outbox>>,
    now: u64,
    scope: Option<&Scope>,
) -> Result<RevocationReceipt, ApiError> {
    let now32 = u32::try_from(now).map_err(|_| ApiError::Internal("clock beyond 2106".into()))?;
    // Watermarks cover every token minted before now, re-mints past the horizon included.
    let through = super::snapshot::watermark_through(s, now32).await?;
    let (entry, token_share) = req.entry_for(s, through).await?;
    let mut receipt = new_receipt(&entry, req.reason.clone(), now, &c.key_id)?;
    let purge = PurgePlan::new(s, outbox, &receipt.id, &entry, token_share.as_deref())?;
    commit(s, &entry, &mut receipt, &purge, scope).await?;
    purge.after_commit(&receipt.id).await?;
    let subject = format!("{}:{}", receipt.kind, receipt.target);
    let done = Finish {
        action: "revocations.create",
        subject: &subject,
        purges: &purge.statuses,
        after_publish: Some("revocation.after_publish"),
    };
    publish_and_finish(s, c, &mut receipt, &entry, now32, done).await?;
    // The statuses as planned (all pending): the worker may already be sending, and the next `GET` shows that.
    Ok(RevocationReceipt {
        receipt,
        purges: purge.statuses,
    })
}

/// The purge outbox, when the request asks for a purge. A purge that cannot be carried out is refused before
/// anything is written: acknowledging the revocation while silently dropping its purge would break
/// "revoke-and-purge is one act".
fn purge_outbox(s: &AppState, purge: bool) -> Result<Option<Arc<Outbox>>, ApiError> {
    match &s.outbox {
        Some(o) if purge && o.has_targets() => Ok(Some(o.clone())),
        _ if purge => Err(ApiError::Refused(
            "purge requested but no CDN purger is configured (SHAREGATE_CF_ZONE_ID + SHAREGATE_CF_API_TOKEN or \
             SHAREGATE_FASTLY_SERVICE_ID + SHAREGATE_FASTLY_API_KEY); nothing was revoked — retry without \
             \"purge\" to revoke only"
                .into(),
        )),
        _ => Ok(None),
    }
}

/// The receipt of this call's idempotency key if a first run committed it, finishing that run's publish and audit
/// if it stopped after its commit (its process died).
async fn replay_committed(
    s: &AppState,
    c: &super::auth::Caller,
    sc: &Scope,
) -> Result<Option<RevocationReceipt>, ApiError> {
    let Some(prev) = s.store.get(Ns::Idempotency, &commit_key(sc)).await? else {
        return Ok(None);
    };
    let id = String::from_utf8_lossy(commit_payload(sc, &prev)?).to_string();
    let (rec, mut r) = load_receipt(s, &id).await?;
    if !is_finished(&rec) {
        let subject = format!("{}:{}", r.receipt.kind, r.receipt.target);
        let done = Finish {
            action: "revocations.create",
            subject: &subject,
            purges: &r.purges,
            after_publish: None,
        };
        finish_committed(s, c, &mut r.receipt, done).await?;
    }
    refresh_purges(s, &mut r).await?;
    Ok(Some(r))
}

/// A stored revocation record, as bytes (they say whether its call finished) and as a receipt.
async fn load_receipt(s: &AppState, id: &str) -> Result<(Vec<u8>, RevocationReceipt), ApiError> {
    let rec = s
        .store
        .get(Ns::Revocations, id)
        .await?
        .ok_or(ApiError::NotFound("revocation"))?;
    let r = serde_json::from_slice(&rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((rec, r))
}

impl RevocationRequest {
    /// The log entry this request makes (watermarks at `through`), after checking the fields fit the kind; for a
    /// token, also the token's share (what a purge drops).
    async fn entry_for(&self, s: &AppState, through: u32) -> Result<(LogEntry, Option<String>), ApiError> {
        let watermark = |kind, id| LogEntry {
            kind,
            id,
            iat: 0,
            exp: 0,
            through,
        };
        match self.kind {
            RevocationKind::Token => {
                if self.token.is_some() == self.id.is_some() {
                    return Err(ApiError::InvalidScope(
                        "a `token` revocation takes exactly one of `token` (the token or its URL) and `id` (its \
                         24-hex token id)"
                            .into(),
                    ));
                }
                token_entry(s, self).await
            }
            RevocationKind::Global => {
                // Refused rather than ignored: a caller who sent an id meant a narrower scope, and "everything" is
                // the one revocation that cannot be made narrower afterwards.
                if self.id.is_some() || self.token.is_some() {
                    return Err(ApiError::InvalidScope(
                        "a `global` revocation revokes every token and takes no `id` or `token`; to revoke one \
                         scope, name its kind (share, viewer, session, asset, campaign, key_id)"
                            .into(),
                    ));
                }
                Ok((watermark(RevocationKind::Global, String::new()), None))
            }
            k => {
                if self.token.is_some() {
                    return Err(ApiError::InvalidScope(format!(
                        "`token` is only for `token` revocations; a `{k}` revocation takes an `id`"
                    )));
                }
                let id = self
                    .id
                    .clone()
                    .filter(|i| !i.is_empty() && i.len() <= 255)
                    .ok_or_else(|| {
                        ApiError::InvalidScope(format!("a `{k}` revocation needs an `id` of 1 to 255 bytes"))
                    })?;
                if k == RevocationKind::KeyId && id.parse::<u16>().is_err() {
                    return Err(ApiError::InvalidScope("a key id is a number 0..=65535".into()));
                }
                Ok((watermark(k, id), None))
            }
        }
    }
}

/// A new receipt (fresh random id) for a log entry made at `now` by API key `by`; its generation is set when it
/// commits ([`write_durably`]).
pub(crate) fn new_receipt(entry: &LogEntry, reason: Option<String>, now: u64, by: &str) -> Result<Receipt, ApiError> {
    let mut rid = [0u8; 8];
    getrandom::fill(&mut rid).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    Ok(Receipt {
        id: format!("rev_{}", hex::encode(rid)),
        kind: entry.kind,
        target: entry.id.clone(),
        reason,
        at: now,
        by: by.to_string(),
        through: (entry.kind != RevocationKind::Token).then_some(entry.through),
        generation: 0,
        pushed: Vec::new(),
    })
}

/// A revocation's CDN purge, planned (not yet written) under its id before the commit: one job per CDN and API
/// call.
struct PurgePlan {
    outbox: Option<Arc<Outbox>>,
    request: Option<PurgeRequest>,
    jobs: Vec<PurgeJob>,
    statuses: Vec<PurgeStatus>,
    /// Whether the jobs go into the revocation's transaction: when the outbox reads them from this store (the
    /// production wiring); an outbox over another store gets them through `enqueue` right after the commit.
    in_transaction: bool,
    /// The job records that transaction writes, by key.
    records: Vec<(String, Vec<u8>)>,
}

impl PurgePlan {
    fn new(
        s: &AppState,
        outbox: Option<Arc<Outbox>>,
        rid: &str,
        entry: &LogEntry,
        token_share: Option<&str>,
    ) -> Result<Self, ApiError> {
        let request = outbox.as_ref().map(|_| {
            revoked_scope(entry, token_share).map_or_else(PurgeRequest::default, |scope| {
                PurgeRequest::for_revocation(&scope, &cdn_hosts(&s.config.edge_base_url))
            })
        });
        let jobs = match (&outbox, &request) {
            (Some(o), Some(request)) => o.plan(rid, request, std::time::SystemTime::now()),
            _ => Vec::new(),
        };
        let statuses = jobs.iter().map(PurgeStatus::from).collect();
        let in_transaction = outbox.as_ref().is_some_and(|o| o.shares_store(&s.store));
        let records = if in_transaction {
            jobs.iter()
                .map(|j| StoreOutbox::record(j).map(|bytes| (j.id.clone(), bytes)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::Internal(e.to_string()))?
        } else {
            Vec::new()
        };
        Ok(PurgePlan {
            outbox,
            request,
            jobs,
            statuses,
            in_transaction,
            records,
        })
    }

    /// Once the revocation is durable: wake the worker for jobs written with it, or write them now.
    async fn after_commit(&self, rid: &str) -> Result<(), ApiError> {
        let (Some(o), Some(request)) = (&self.outbox, &self.request) else {
            return Ok(());
        };
        if self.jobs.is_empty() {
            return Ok(());
        }
        if self.in_transaction {
            // Already durable; only wake the worker so the purge goes out now rather than at its next tick.
            o.notify();
            return Ok(());
        }
        tracing::warn!(
            revocation = %rid,
            "purge outbox is not over the service store; purge jobs written after the revocation"
        );
        o.enqueue(rid, request, std::time::SystemTime::now())
            .await
            .map_err(|e| {
                ApiError::Internal(format!(
                    "revocation {rid} is recorded, but its purge jobs could not be stored: {e}"
                ))
            })?;
        Ok(())
    }
}

/// Make a `POST /v1/revocations` durable before it is acknowledged: [`write_durably`] with the call's commit
/// record and its purge jobs. Every lost race means another revocation committed, so a burst drains one commit per
/// round; the deadline (not a count) keeps a burst of hundreds from failing its tail.
async fn commit(
    s: &AppState,
    entry: &LogEntry,
    receipt: &mut Receipt,
    purge: &PurgePlan,
    scope: Option<&Scope>,
) -> Result<(), ApiError> {
    let idem = scope.map(commit_key);
    let commit = scope
        .map(|sc| commit_value(sc, receipt.id.as_bytes()))
        .unwrap_or_default();
    let mut checks = Vec::new();
    let mut ops = Vec::new();
    if let Some(k) = &idem {
        let (check, op) = commit_guard(k, &commit);
        checks.push(check);
        ops.push(op);
    }
    for (key, value) in &purge.records {
        // Fresh random revocation id, so these keys cannot exist yet: no `Absent` check needed.
        ops.push(Op::Put {
            ns: StoreOutbox::NS,
            key,
            value,
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        crate::crash::point("revocation.before_commit");
        if write_durably(s, entry, receipt, &purge.statuses, &checks, &ops).await? {
            break;
        }
        if let Some(k) = &idem
            && s.store.get(Ns::Idempotency, k).await?.is_some()
        {
            return Err(ApiError::Conflict(
                "this idempotency key is being used by a concurrent request".into(),
            ));
        }
        // Another revocation took the generation: read it again and retry, after a short random pause so that a
        // burst of revocations does not retry in lock step.
        if std::time::Instant::now() >= deadline {
            return Err(ApiError::Store(crate::store::StoreError::Contention(
                "revocations kept racing for the next generation".into(),
            )));
        }
        backoff(attempt).await;
    }
    crate::crash::point("revocation.after_commit");
    Ok(())
}

/// The state generation counter: one step per revocation log entry.
const GENERATION: &str = "state_generation";

/// One attempt at making a revocation durable, shared by `POST /v1/revocations` and share deletion: its log entry,
/// the next state generation and its record (unfinished, naming that generation) in one transaction, with the
/// caller's own `checks` and `ops`. The transaction only commits if the generation is still the one read just
/// before, so a receipt read back after a crash is as complete as the first answer would have been. False when a
/// check failed (another revocation took the generation, or one of the caller's).
pub(crate) async fn write_durably(
    s: &AppState,
    entry: &LogEntry,
    receipt: &mut Receipt,
    purges: &[PurgeStatus],
    checks: &[Check<'_>],
    ops: &[Op<'_>],
) -> Result<bool, ApiError> {
    let log_bytes = serde_json::to_vec(entry).map_err(|e| ApiError::Internal(e.to_string()))?;
    let before = s.store.counter(GENERATION).await?;
    receipt.generation = before + 1;
    let placeholder = record_bytes(receipt, purges, false)?;
    let checks: Vec<Check<'_>> = [Check::CounterAtMost {
        counter: GENERATION,
        value: before,
    }]
    .into_iter()
    .chain(checks.iter().copied())
    .collect();
    let ops: Vec<Op<'_>> = [
        Op::Append {
            log: Log::Revocations,
            value: &log_bytes,
        },
        Op::Incr {
            counter: GENERATION,
            by: 1,
        },
        Op::Put {
            ns: Ns::Revocations,
            key: &receipt.id,
            value: &placeholder,
        },
    ]
    .into_iter()
    .chain(ops.iter().copied())
    .collect();
    let Some(results) = s.store.atomic(&checks, &ops).await? else {
        return Ok(false);
    };
    let [seq, generation, ..] = results[..] else {
        return Err(ApiError::Internal(
            "the revocation transaction returned too few results".into(),
        ));
    };
    if seq != generation || generation != receipt.generation {
        return Err(ApiError::Internal(format!(
            "revocation log seq {seq}, generation {generation} and receipt generation {} diverged",
            receipt.generation
        )));
    }
    Ok(true)
}

/// The stored record: the receipt with its purges, so a later read knows there are purges to look up, and whether
/// the call that made it finished (published and audited) or was cut short after its commit.
pub(crate) fn record_bytes(receipt: &Receipt, purges: &[PurgeStatus], finished: bool) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    struct Record<'a> {
        #[serde(flatten)]
        receipt: &'a Receipt,
        purges: &'a [PurgeStatus],
        finished: bool,
    }
    serde_json::to_vec(&Record {
        receipt,
        purges,
        finished,
    })
    .map_err(|e| ApiError::Internal(e.to_string()))
}

/// Whether a stored revocation record says its call finished. Records written before the flag existed finished.
pub(crate) fn is_finished(record: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default = "finished_by_default")]
        finished: bool,
    }
    fn finished_by_default() -> bool {
        true
    }
    serde_json::from_slice::<Flag>(record).is_ok_and(|f| f.finished)
}

/// How a committed but unfinished revocation is audited when a retry finishes it.
pub(crate) struct Finish<'a> {
    /// Audit action.
    pub action: &'a str,
    /// Audit subject.
    pub subject: &'a str,
    /// The record's purges, kept in it.
    pub purges: &'a [PurgeStatus],
    /// The crash point between publishing and auditing, on a first run (the crash tests stop there).
    pub after_publish: Option<&'static str>,
}

/// Finish a revocation (or share deletion) whose call committed and then stopped before publishing and auditing
/// (its process died): publish its delta, vouching for the time the revocation was made and not for now (later
/// revocations may exist), audit it, and mark its record finished.
pub(crate) async fn finish_committed(
    s: &AppState,
    c: &super::auth::Caller,
    receipt: &mut Receipt,
    done: Finish<'_>,
) -> Result<(), ApiError> {
    let (_, entry) = s
        .store
        .read_log(Log::Revocations, receipt.generation, 1)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal(format!("revocation log has no entry {}", receipt.generation)))?;
    let entry: LogEntry = serde_json::from_slice(&entry).map_err(|e| ApiError::Internal(format!("log entry: {e}")))?;
    let at = u32::try_from(receipt.at).unwrap_or(u32::MAX);
    publish_and_finish(s, c, receipt, &entry, at, done).await
}

/// What follows a revocation's commit, on a first run and on a retry alike: publish its one-entry delta to every
/// configured edge (edges that miss it catch up at their next pull), vouching for time `at`; audit; then mark the
/// record finished. A crash between the last two audits the call twice on retry, never not at all.
pub(crate) async fn publish_and_finish(
    s: &AppState,
    c: &super::auth::Caller,
    receipt: &mut Receipt,
    entry: &LogEntry,
    at: u32,
    done: Finish<'_>,
) -> Result<(), ApiError> {
    receipt.pushed = super::edge_state::publish(s, receipt.generation, entry, at).await?;
    if let Some(point) = done.after_publish {
        crate::crash::point(point);
    }
    audit(s, c, done.action, done.subject, "ok").await?;
    s.store
        .put(Ns::Revocations, &receipt.id, &record_bytes(receipt, done.purges, true)?)
        .await?;
    Ok(())
}

/// A short random pause after losing the race for the next generation, growing with the attempt, so a burst of
/// revocations does not retry in lock step.
pub(crate) async fn backoff(attempt: u32) {
    let mut jitter = [0u8; 1];
    let _ = getrandom::fill(&mut jitter);
    let ms = u64::from(jitter[0] % 4) * u64::from(attempt.min(4));
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
}

pub(super) async fn get(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    _: Authorized<ReadRevocations>,
) -> Result<Json<RevocationReceipt>, ApiError> {
    let (_, mut r) = load_receipt(&s, &id).await?;
    refresh_purges(&s, &mut r).await?;
    Ok(Json(r))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn link_keys_lead_with_the_time_part_and_give_back_the_id() {
        let id = [0xa0, 1, 2, 3, 0x12, 0x34, 0x56, 0x78, 9, 10, 11, 0xff];
        let key = link_key(&id);
        assert_eq!(key, "12345678.a001020312345678090a0bff");
        assert_eq!(id_of_link_key(&key), hex::encode(id));
        // Keys written before the time-ordered layout are the bare id.
        assert_eq!(id_of_link_key(&hex::encode(id)), hex::encode(id));
    }

    #[test]
    fn fresh_ids_differ_and_sort_by_mint_time() {
        let a = new_token_id().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(3));
        let b = new_token_id().unwrap();
        assert_ne!(a, b);
        // The clock part moved forward (it wraps every ~49 days; a wrap between these two calls is not worth a retry).
        assert!(link_key(&a) < link_key(&b), "{} !< {}", link_key(&a), link_key(&b));
        // The random parts are not constant.
        let ids: Vec<[u8; 12]> = (0..64).map(|_| new_token_id().unwrap()).collect();
        assert!(ids.iter().any(|x| x[..4] != ids[0][..4]));
        assert!(ids.iter().any(|x| x[8..] != ids[0][8..]));
    }
}
