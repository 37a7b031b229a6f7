//! Signing-key rotation: `next` → `active` → `retiring`, secrets encrypted at rest, published to edges before use.
//!
//! `POST /v1/keys/rotate` (role `responder`) moves the ring exactly one step per call:
//! - no `next` key: make one (32 random bytes, the next free id), store it, publish the ring (`staged`);
//! - a `next` key every configured edge accepted: promote it (the old active key retires from now), prune retiring
//!   keys whose last token has expired, and stage a new `next` (`promoted`);
//! - a `next` key some edge did not accept: publish again, promote nothing (`republished`).
//!
//! So a key mints only after every configured edge holds it, and a token signed by the previous key keeps verifying
//! until it expires. Edges that pull rather than receive pushes get the ring from `GET /v1/edge/keys` (edge
//! credential, the native edge's `keys_url`). `GET /v1/keys` lists ids and states, never secrets.
//!
//! At rest the ring is one record in [`Ns::Keys`]: each secret is sealed with XChaCha20-Poly1305 under the master
//! key, with a random 192-bit nonce and the key id as associated data (a sealed secret can't be moved to another
//! id); ids, states and times are in clear. One record makes a rotation one compare-and-swap, so two replicas
//! rotating at once can't fork the ring. The master key comes from [`master_key_from_env_or_file`].
//!
//! What this module does not do: `AppState.minter` is keyed once at startup, so minting with the rotated key needs
//! [`RotatingMinter`] in the state (see its docs). Secrets never appear in responses, errors or logs.

use super::auth::{ListKeys, RotateKeys};
use super::error::ApiError;
use super::extract::Authorized;
use super::idempotency::{Scope, commit_guard, commit_key, commit_payload, commit_value};
use super::revocations::Push;
use super::{AppState, audit, now};
use crate::store::{Check, Ns, Op};
use arc_swap::ArcSwap;
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sharegate_shared::keys::{KeyError, KeyId, KeyRing, KeyState, SECRET_LEN, SecretKey};
use sharegate_shared::token::{Minter, Policy};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroize;

/// The one record in [`Ns::Keys`] that holds the ring.
pub const RING_KEY: &str = "ring";

/// The environment variable that carries the master key (64 hex digits).
pub const MASTER_KEY_ENV: &str = "SHAREGATE_MASTER_KEY";

/// The file under the data directory that holds the master key when the environment does not.
pub const MASTER_KEY_FILE: &str = "master.key";

const NONCE_LEN: usize = 24;
const NO_MASTER_KEY: &str = "key rotation needs a master key to encrypt signing keys at rest, and none is configured \
                             (set SHAREGATE_MASTER_KEY or let the service create <data_dir>/master.key)";

/// The routes this module serves.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/keys", get(list))
        .route("/v1/keys/rotate", post(rotate))
        .route("/v1/edge/keys", get(edge_keys))
}

/// The stored ring: metadata in clear, each secret sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredRing {
    /// Bumped by every write; lets [`RotatingMinter::refresh`] skip unchanged rings.
    version: u64,
    keys: Vec<StoredKey>,
}

/// Where a key stands, as stored and listed: [`KeyState`] without its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStage {
    /// Staged: on the edges, not minting yet.
    Next,
    /// Minting.
    Active,
    /// Verifying only, until its last token expires.
    Retiring,
}

impl From<KeyState> for KeyStage {
    fn from(s: KeyState) -> Self {
        match s {
            KeyState::Next => KeyStage::Next,
            KeyState::Active => KeyStage::Active,
            KeyState::Retiring { .. } => KeyStage::Retiring,
        }
    }
}

/// What a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RotationAction {
    /// A new key was staged as `next` (published to the edges, not minting yet).
    Staged,
    /// The published `next` key became active; a new `next` was staged.
    Promoted,
    /// The staged key is not on every edge yet: the ring was published again, nothing changed.
    Republished,
}

impl RotationAction {
    /// The wire name (also the audit action's suffix, `keys.rotate.<name>`).
    pub fn as_str(self) -> &'static str {
        match self {
            RotationAction::Staged => "staged",
            RotationAction::Promoted => "promoted",
            RotationAction::Republished => "republished",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    id: KeyId,
    state: KeyStage,
    /// For `retiring`: when it stopped minting.
    #[serde(default)]
    since: u64,
    created_at: u64,
    /// When every configured edge accepted a ring holding this key (keys from the startup config count as
    /// published: the edges were configured with them).
    published_at: Option<u64>,
    /// Hex XChaCha20 nonce.
    nonce: String,
    /// Hex ciphertext and tag.
    sealed: String,
}

/// What `POST /v1/keys/rotate` did. Ids and states only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationReceipt {
    /// What the call did.
    pub action: RotationAction,
    /// The key that mints now.
    pub active: KeyId,
    /// The key staged to mint next (already on the edges that accepted the push).
    pub next: Option<KeyId>,
    /// Keys that verify only, until their last token expires.
    pub retiring: Vec<KeyId>,
    /// The push to each configured edge (status 0: unreachable). A `next` key is promoted only once all are 2xx.
    pub published: Vec<Push>,
    /// The stored ring's version after this call.
    pub version: u64,
}

/// One key in `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Key id (tokens name it).
    pub id: KeyId,
    /// Where it stands.
    pub state: KeyStage,
    /// For retiring keys: when they stopped minting.
    pub since: Option<u64>,
    /// For retiring keys: when the last token they signed has expired and they are dropped.
    pub drop_after: Option<u64>,
    /// Whether every configured edge accepted it (always true for keys from the startup config).
    pub published: bool,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

fn ring_error(e: KeyError) -> ApiError {
    ApiError::Internal(format!("key ring: {e}"))
}

fn random<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    Ok(b)
}

/// Associated data of a sealed secret: binds it to its key id (and to this use of the master key).
fn aad(id: KeyId) -> Vec<u8> {
    format!("sharegate/signing-key/v1/{id}").into_bytes()
}

fn seal(master: &[u8; 32], id: KeyId, secret: &SecretKey) -> Result<(String, String), ApiError> {
    let cipher = XChaCha20Poly1305::new(&(*master).into());
    let nonce: [u8; NONCE_LEN] = random()?;
    let aad = aad(id);
    let sealed = cipher
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: secret.expose(),
                aad: &aad,
            },
        )
        .map_err(|_| ApiError::Internal(format!("cannot encrypt signing key {id}")))?;
    Ok((hex::encode(nonce), hex::encode(sealed)))
}

fn unseal(master: &[u8; 32], k: &StoredKey) -> Result<SecretKey, ApiError> {
    let bad = || {
        ApiError::Internal(format!(
            "signing key {} cannot be decrypted: wrong master key or a damaged record",
            k.id
        ))
    };
    let mut nonce = [0u8; NONCE_LEN];
    hex::decode_to_slice(&k.nonce, &mut nonce).map_err(|_| bad())?;
    let sealed = hex::decode(&k.sealed).map_err(|_| bad())?;
    let cipher = XChaCha20Poly1305::new(&(*master).into());
    let aad = aad(k.id);
    let mut plain = cipher
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .map_err(|_| bad())?;
    let out = <[u8; SECRET_LEN]>::try_from(plain.as_slice()).map(SecretKey::new);
    plain.as_mut_slice().zeroize();
    out.map_err(|_| bad())
}

fn state_of(k: &StoredKey) -> KeyState {
    match k.state {
        KeyStage::Next => KeyState::Next,
        KeyStage::Active => KeyState::Active,
        KeyStage::Retiring => KeyState::Retiring { since: k.since },
    }
}

fn decode(bytes: &[u8]) -> Result<StoredRing, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Internal(format!("stored key ring: {e}")))
}

fn ring_of(stored: &StoredRing, master: &[u8; 32], max_ttl: u32) -> Result<KeyRing, ApiError> {
    let mut ring = KeyRing::new(max_ttl);
    for k in &stored.keys {
        ring.insert(k.id, state_of(k), unseal(master, k)?).map_err(ring_error)?;
    }
    Ok(ring)
}

/// Decrypt a stored ring record (the bytes under [`RING_KEY`] in [`Ns::Keys`]) with `master`. Fails without
/// revealing anything when the master key is wrong or the record was altered.
pub fn open_ring(bytes: &[u8], master: &[u8; 32], max_ttl: u32) -> Result<KeyRing, ApiError> {
    ring_of(&decode(bytes)?, master, max_ttl)
}

/// Retiring keys live at least as long as the longest token either side allows.
fn max_ttl(s: &AppState) -> u32 {
    s.policy.max_ttl.max(s.keys.max_ttl())
}

async fn load_stored(s: &AppState) -> Result<Option<(Vec<u8>, StoredRing)>, ApiError> {
    let Some(bytes) = s.store.get(Ns::Keys, RING_KEY).await? else {
        return Ok(None);
    };
    let stored = decode(&bytes)?;
    Ok(Some((bytes, stored)))
}

/// The stored ring, decrypted; `None` before the first rotation (the startup keys are then the ring).
///
/// Fails if a ring is stored but no master key is configured, or the master key does not open it.
pub async fn load_ring(s: &AppState) -> Result<Option<KeyRing>, ApiError> {
    let Some((_, stored)) = load_stored(s).await? else {
        return Ok(None);
    };
    let master = s.master_key.as_ref().ok_or_else(|| {
        ApiError::Internal("signing keys are stored encrypted but no master key is configured".into())
    })?;
    ring_of(&stored, master, max_ttl(s)).map(Some)
}

/// The ring edges should hold now: the stored one, or the startup keys before the first rotation.
pub async fn current_ring(s: &AppState) -> Result<KeyRing, ApiError> {
    Ok(load_ring(s).await?.unwrap_or_else(|| s.keys.clone()))
}

/// The edge key format, `id:state:hex,...` (what the native edge's `POST /_sharegate/keys` and `keys_url` take).
/// It carries secrets: only ever send it to an edge.
fn edge_spec(ring: &KeyRing) -> String {
    ring.iter()
        .map(|e| format!("{}:{}:{}", e.id, e.state.as_str(), hex::encode(e.secret.expose())))
        .collect::<Vec<_>>()
        .join(",")
}

/// The first rotation starts from the startup keys: seal them as they are.
fn seed(keys: &KeyRing, master: &[u8; 32], now: u64) -> Result<StoredRing, ApiError> {
    let mut out = Vec::new();
    for e in keys.iter() {
        let (nonce, sealed) = seal(master, e.id, &e.secret)?;
        let since = if let KeyState::Retiring { since } = e.state {
            since
        } else {
            0
        };
        out.push(StoredKey {
            id: e.id,
            state: e.state.into(),
            since,
            created_at: now,
            published_at: Some(now),
            nonce,
            sealed,
        });
    }
    Ok(StoredRing { version: 0, keys: out })
}

/// Rebuild the stored record from the ring after a change: known keys keep their sealed secret and times, new keys
/// are sealed now, dropped keys are gone.
fn restate(prev: &StoredRing, ring: &KeyRing, master: &[u8; 32], now: u64) -> Result<StoredRing, ApiError> {
    let mut keys = Vec::new();
    for e in ring.iter() {
        let since = if let KeyState::Retiring { since } = e.state {
            since
        } else {
            0
        };
        let k = match prev.keys.iter().find(|k| k.id == e.id) {
            Some(k) => StoredKey {
                state: e.state.into(),
                since,
                ..k.clone()
            },
            None => {
                let (nonce, sealed) = seal(master, e.id, &e.secret)?;
                StoredKey {
                    id: e.id,
                    state: e.state.into(),
                    since,
                    created_at: now,
                    published_at: None,
                    nonce,
                    sealed,
                }
            }
        };
        keys.push(k);
    }
    Ok(StoredRing {
        version: prev.version + 1,
        keys,
    })
}

/// The next free key id: one above the highest, or the lowest unused one when the ids ran out.
fn next_id(ring: &KeyRing) -> Result<KeyId, ApiError> {
    let max = ring.iter().map(|e| e.id).max();
    match max.map_or(Some(1), |m| m.checked_add(1)) {
        Some(id) => Ok(id),
        None => (1..=KeyId::MAX)
            .find(|id| ring.get(*id).is_none())
            .ok_or_else(|| ApiError::Conflict("every key id is in use".into())),
    }
}

fn stage_next(ring: &mut KeyRing) -> Result<KeyId, ApiError> {
    let id = next_id(ring)?;
    let mut bytes: [u8; SECRET_LEN] = random()?;
    let secret = SecretKey::new(bytes);
    bytes.zeroize();
    ring.add_next(id, secret).map_err(ring_error)?;
    Ok(id)
}

async fn publish(s: &AppState, ring: &KeyRing) -> Vec<Push> {
    let mut spec = edge_spec(ring);
    let mut out = Vec::with_capacity(s.config.edges.len());
    for edge in &s.config.edges {
        let status = s
            .http
            .post(format!(
                "{}{}",
                edge.url.trim_end_matches('/'),
                sharegate_edge::contract::paths::KEYS
            ))
            .bearer_auth(&edge.token)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(spec.clone())
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        out.push(Push {
            edge: edge.url.clone(),
            status,
            result: Some(super::revocations::PushResult::from_status(status)),
        });
    }
    spec.zeroize();
    out
}

fn summary(ring: &KeyRing) -> (KeyId, Option<KeyId>, Vec<KeyId>) {
    let mut active = 0;
    let mut next = None;
    let mut retiring = Vec::new();
    for e in ring.iter() {
        match e.state {
            KeyState::Active => active = e.id,
            KeyState::Next => next = Some(e.id),
            KeyState::Retiring { .. } => retiring.push(e.id),
        }
    }
    (active, next, retiring)
}

async fn rotate(
    State(s): State<Arc<AppState>>,
    c: Authorized<RotateKeys>,
    scope: Option<Extension<Scope>>,
) -> Result<Json<RotationReceipt>, ApiError> {
    let master = s.master_key.ok_or_else(|| ApiError::Refused(NO_MASTER_KEY.into()))?;
    let now = now();
    let max_ttl = max_ttl(&s);
    let scope = scope.map(|Extension(sc)| sc);
    if let Some(sc) = &scope
        && let Some(r) = replay_rotation(&s, &c, sc, &master, now).await?
    {
        return Ok(Json(r));
    }
    let (prev_bytes, prev) = match load_stored(&s).await? {
        Some((b, r)) => (Some(b), r),
        None => (None, seed(&s.keys, &master, now)?),
    };
    let mut ring = ring_of(&prev, &master, max_ttl)?;
    let action = advance(&mut ring, &prev, now)?;
    let (stored, written) = if action != RotationAction::Republished || prev_bytes.is_none() {
        // Durable before published: an edge must never hold a key the control plane could lose.
        let stored = restate(&prev, &ring, &master, now)?;
        let bytes = commit_ring(&s, prev_bytes.as_deref(), &stored, &ring, action, scope.as_ref()).await?;
        (stored, Some(bytes))
    } else {
        (prev, prev_bytes)
    };
    let done = Rotated {
        ring: &ring,
        stored,
        written,
        action,
        now,
    };
    finish_rotation(&s, &c, done, scope.as_ref()).await.map(Json)
}

/// The receipt of this call's idempotency key if a first run committed its rotation (rotating again would
/// advance the ring a second step). If that run stopped after its commit, first publish what is stored (the edges
/// may have missed it), mark and audit as it would have.
async fn replay_rotation(
    s: &AppState,
    c: &super::auth::Caller,
    sc: &Scope,
    master: &[u8; 32],
    now: u64,
) -> Result<Option<RotationReceipt>, ApiError> {
    let Some(prev) = s.store.get(Ns::Idempotency, &commit_key(sc)).await? else {
        return Ok(None);
    };
    let prev = commit_payload(sc, &prev)?;
    let r: RotationReceipt = serde_json::from_slice(prev).map_err(internal)?;
    if super::revocations::is_finished(prev) {
        return Ok(Some(r));
    }
    let (bytes, stored) = load_stored(s)
        .await?
        .ok_or_else(|| ApiError::Internal("a committed rotation left no key ring".into()))?;
    let ring = ring_of(&stored, master, max_ttl(s))?;
    let done = Rotated {
        ring: &ring,
        stored,
        written: Some(bytes),
        action: r.action,
        now,
    };
    finish_rotation(s, c, done, Some(sc)).await.map(Some)
}

/// One step of the rotation: promote a `next` key every edge has and stage a new one, stage one if there is none,
/// or (a staged key not yet on every edge) change nothing and publish again.
fn advance(ring: &mut KeyRing, prev: &StoredRing, now: u64) -> Result<RotationAction, ApiError> {
    let pending = prev
        .keys
        .iter()
        .find(|k| k.state == KeyStage::Next)
        .map(|k| k.published_at.is_some());
    Ok(match pending {
        Some(true) => {
            ring.promote(now).map_err(ring_error)?;
            ring.prune(now);
            stage_next(ring)?;
            RotationAction::Promoted
        }
        Some(false) => RotationAction::Republished,
        None => {
            ring.prune(now);
            stage_next(ring)?;
            RotationAction::Staged
        }
    })
}

/// Write the new ring if the stored one is still `prev_bytes`, with the call's commit record (unfinished) when it
/// has an idempotency key; returns the bytes written.
async fn commit_ring(
    s: &AppState,
    prev_bytes: Option<&[u8]>,
    stored: &StoredRing,
    ring: &KeyRing,
    action: RotationAction,
    scope: Option<&Scope>,
) -> Result<Vec<u8>, ApiError> {
    let bytes = serde_json::to_vec(stored).map_err(internal)?;
    let (active, next, retiring) = summary(ring);
    let commit = commit_record(
        &RotationReceipt {
            action,
            active,
            next,
            retiring,
            published: Vec::new(),
            version: stored.version,
        },
        false,
    )?;
    let unchanged = match prev_bytes {
        None => Check::Absent {
            ns: Ns::Keys,
            key: RING_KEY,
        },
        Some(value) => Check::Equals {
            ns: Ns::Keys,
            key: RING_KEY,
            value,
        },
    };
    let mut checks = vec![unchanged];
    let mut ops = vec![Op::Put {
        ns: Ns::Keys,
        key: RING_KEY,
        value: &bytes,
    }];
    let idem = scope.map(commit_key);
    let commit = scope.map(|sc| commit_value(sc, &commit)).unwrap_or_default();
    if let Some(k) = &idem {
        // A run that took over this key too early (the first one was alive after all) must not rotate a second
        // time.
        let (check, op) = commit_guard(k, &commit);
        checks.push(check);
        ops.push(op);
    }
    crate::crash::point("key_rotate.before_commit");
    if s.store.atomic(&checks, &ops).await?.is_none() {
        return Err(ApiError::Conflict(
            "another key rotation ran at the same time; retry".into(),
        ));
    }
    crate::crash::point("key_rotate.after_commit");
    Ok(bytes)
}

/// A rotation whose ring is durable (or that changed nothing), still to be published, marked and audited.
struct Rotated<'a> {
    ring: &'a KeyRing,
    stored: StoredRing,
    written: Option<Vec<u8>>,
    action: RotationAction,
    now: u64,
}

/// Publish the ring to every edge, mark a staged key published once every edge has it, audit, and record the
/// call's commit as finished: what follows the commit, shared by the first run and a retry after a crash.
async fn finish_rotation(
    s: &AppState,
    c: &super::auth::Caller,
    r: Rotated<'_>,
    scope: Option<&Scope>,
) -> Result<RotationReceipt, ApiError> {
    let Rotated {
        ring,
        mut stored,
        written,
        action,
        now,
    } = r;
    let published = publish(s, ring).await;
    crate::crash::point("key_rotate.after_publish");
    let everywhere = published.iter().all(|p| (200..300).contains(&p.status));
    let unpublished = stored
        .keys
        .iter()
        .any(|k| k.state == KeyStage::Next && k.published_at.is_none());
    if everywhere && unpublished {
        let mut marked = stored.clone();
        marked.version += 1;
        for k in &mut marked.keys {
            if k.state == KeyStage::Next {
                k.published_at = Some(now);
            }
        }
        let bytes = serde_json::to_vec(&marked).map_err(internal)?;
        // Losing this race only means the next call publishes again instead of promoting.
        if s.store
            .cas(Ns::Keys, RING_KEY, written.as_deref(), Some(&bytes))
            .await?
        {
            stored = marked;
        }
    }
    let (active, next, retiring) = summary(ring);
    let subject = format!(
        "active={active} next={}",
        next.map_or("-".to_string(), |n| n.to_string())
    );
    audit(s, c, &format!("keys.rotate.{}", action.as_str()), &subject, "ok").await?;
    tracing::info!(
        action = action.as_str(),
        active,
        next,
        version = stored.version,
        "signing keys rotated"
    );
    let receipt = RotationReceipt {
        action,
        active,
        next,
        retiring,
        published,
        version: stored.version,
    };
    if let Some(sc) = scope
        && action != RotationAction::Republished
    {
        // Audited: a retry from here on answers from this record alone.
        let record = commit_value(sc, &commit_record(&receipt, true)?);
        s.store.put(Ns::Idempotency, &commit_key(sc), &record).await?;
    }
    Ok(receipt)
}

/// The commit record of a rotation: its receipt, and whether the call finished (published, marked, audited).
fn commit_record(r: &RotationReceipt, finished: bool) -> Result<Vec<u8>, ApiError> {
    #[derive(Serialize)]
    struct Record<'a> {
        #[serde(flatten)]
        receipt: &'a RotationReceipt,
        finished: bool,
    }
    serde_json::to_vec(&Record { receipt: r, finished }).map_err(internal)
}

async fn list(State(s): State<Arc<AppState>>, _: Authorized<ListKeys>) -> Result<Json<serde_json::Value>, ApiError> {
    let max_ttl = u64::from(max_ttl(&s));
    let info = |id, state: KeyStage, since: u64, published| {
        let retiring = state == KeyStage::Retiring;
        KeyInfo {
            id,
            state,
            since: retiring.then_some(since),
            drop_after: retiring.then_some(since.saturating_add(max_ttl)),
            published,
        }
    };
    // Metadata is in clear at rest: listing needs no master key and decrypts nothing.
    let (source, version, keys) = match load_stored(&s).await? {
        Some((_, r)) => (
            "store",
            r.version,
            r.keys
                .iter()
                .map(|k| info(k.id, k.state, k.since, k.published_at.is_some()))
                .collect::<Vec<_>>(),
        ),
        None => (
            "config",
            0,
            s.keys
                .iter()
                .map(|e| {
                    let since = if let KeyState::Retiring { since } = e.state {
                        since
                    } else {
                        0
                    };
                    info(e.id, e.state.into(), since, true)
                })
                .collect(),
        ),
    };
    Ok(Json(
        serde_json::json!({ "source": source, "version": version, "keys": keys }),
    ))
}

/// Check the edge credential (`Authorization: Bearer <config.edge_token>`). Both sides are hashed first so the
/// comparison is constant-time and fixed-length (it leaks neither content nor length).
pub(crate) fn require_edge(s: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let Some(want) = s.config.edge_token.as_deref() else {
        return Err(ApiError::BadCredential);
    };
    let Some(got) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
        return Err(if auth.is_none() {
            ApiError::Unauthenticated
        } else {
            ApiError::BadCredential
        });
    };
    let (a, b) = (Sha256::digest(got.trim().as_bytes()), Sha256::digest(want.as_bytes()));
    if a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) != 0 {
        return Err(ApiError::BadCredential);
    }
    Ok(())
}

/// `GET /v1/edge/keys` (edge credential): the ring in the edge format, for edges that pull.
async fn edge_keys(State(s): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    require_edge(&s, &headers)?;
    let ring = current_ring(&s).await?;
    let mut resp = edge_spec(&ring).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The master key that seals signing keys at rest: `SHAREGATE_MASTER_KEY` (64 hex digits, or a file named by
/// `SHAREGATE_MASTER_KEY_FILE`), else
/// `<data_dir>/master.key` (64 hex digits), else that file is created once, mode 0600, from 32 random bytes.
///
/// Losing it loses the stored signing keys (tokens they signed stop verifying after a restart): back it up with the
/// data directory's secrets, not with the store.
pub fn master_key_from_env_or_file(data_dir: &Path) -> Result<[u8; 32], ApiError> {
    if let Some(v) = crate::env::var(MASTER_KEY_ENV).map_err(|e| ApiError::Invalid(e.0))? {
        return parse_master(&v).ok_or_else(|| ApiError::Invalid(format!("{MASTER_KEY_ENV} must be 64 hex digits")));
    }
    master_key_from_file(data_dir)
}

fn parse_master(v: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(v.trim(), &mut out).ok()?;
    Some(out)
}

/// The file half of [`master_key_from_env_or_file`] (tests use it without touching the environment).
pub fn master_key_from_file(data_dir: &Path) -> Result<[u8; 32], ApiError> {
    use std::io::{ErrorKind, Write};
    let path = data_dir.join(MASTER_KEY_FILE);
    let read = |path: &Path| -> Result<[u8; 32], ApiError> {
        let mut text = std::fs::read_to_string(path)
            .map_err(|e| ApiError::Internal(format!("cannot read {}: {e}", path.display())))?;
        let key = parse_master(&text);
        text.zeroize();
        key.ok_or_else(|| ApiError::Internal(format!("{} must hold 64 hex digits", path.display())))
    };
    match std::fs::metadata(&path) {
        Ok(_) => return read(&path),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(ApiError::Internal(format!("cannot read {}: {e}", path.display()))),
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", data_dir.display())))?;
    let mut opts = std::fs::OpenOptions::new();
    // create_new: two processes starting at once can't both write a key; the loser reads the winner's.
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = match opts.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return read(&path),
        Err(e) => return Err(ApiError::Internal(format!("cannot create {}: {e}", path.display()))),
    };
    let mut key: [u8; 32] = random()?;
    let mut text = hex::encode(key);
    text.push('\n');
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    text.zeroize();
    if let Err(e) = written {
        key.zeroize();
        return Err(ApiError::Internal(format!("cannot write {}: {e}", path.display())));
    }
    Ok(key)
}

/// The minting key, swapped when the stored ring changes: what `AppState.minter` becomes so links are signed with
/// the rotated active key.
///
/// Every replica calls [`RotatingMinter::refresh`] on an interval (one small store read when nothing changed), so a
/// rotation on one replica reaches the others within that interval; until then they mint with the previous key,
/// which stays valid as `retiring` on every edge.
#[derive(Debug)]
pub struct RotatingMinter {
    policy: Policy,
    current: ArcSwap<Signing>,
}

/// The keys one replica signs and verifies with at a given ring version.
#[derive(Debug)]
pub struct Signing {
    /// The stored ring version (0: the startup keys).
    pub version: u64,
    /// Mints with the active key.
    pub minter: Minter,
    /// Every key (for verifying tokens named in revocations).
    pub ring: KeyRing,
}

impl RotatingMinter {
    /// Start from a ring (the stored one from [`load_ring`] if there is one, else the startup keys).
    pub fn new(ring: &KeyRing, policy: Policy, version: u64) -> Result<Self, ApiError> {
        let minter =
            Minter::new(ring, policy).map_err(|e| ApiError::Internal(format!("no active signing key: {e}")))?;
        Ok(RotatingMinter {
            policy,
            current: ArcSwap::from_pointee(Signing {
                version,
                minter,
                ring: ring.clone(),
            }),
        })
    }

    /// Build from the state: the stored ring if any, else `s.keys`.
    pub async fn from_state(s: &AppState) -> Result<Self, ApiError> {
        match load_stored(s).await? {
            Some((_, stored)) => {
                let master = s.master_key.as_ref().ok_or_else(|| {
                    ApiError::Internal("signing keys are stored encrypted but no master key is configured".into())
                })?;
                RotatingMinter::new(&ring_of(&stored, master, max_ttl(s))?, s.policy, stored.version)
            }
            None => RotatingMinter::new(&s.keys, s.policy, 0),
        }
    }

    /// The keys in force (cheap; hold the `Arc` for one request, not longer).
    pub fn current(&self) -> Arc<Signing> {
        self.current.load_full()
    }

    /// Reload from the store if the ring's version changed; `true` if the keys were swapped.
    pub async fn refresh(&self, s: &AppState) -> Result<bool, ApiError> {
        let Some((_, stored)) = load_stored(s).await? else {
            return Ok(false);
        };
        if stored.version == self.current.load().version {
            return Ok(false);
        }
        let master = s.master_key.as_ref().ok_or_else(|| {
            ApiError::Internal("signing keys are stored encrypted but no master key is configured".into())
        })?;
        let ring = ring_of(&stored, master, max_ttl(s))?;
        let minter =
            Minter::new(&ring, self.policy).map_err(|e| ApiError::Internal(format!("no active signing key: {e}")))?;
        self.current.store(Arc::new(Signing {
            version: stored.version,
            minter,
            ring,
        }));
        Ok(true)
    }

    /// Refresh every `every` until the task is aborted. `pick` finds the minter in the state (e.g. `|s| &s.minter`).
    pub fn spawn_refresh(
        state: Arc<AppState>,
        pick: fn(&AppState) -> &RotatingMinter,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match pick(&state).refresh(&state).await {
                    Ok(true) => tracing::info!("signing keys reloaded from the store"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot reload signing keys"),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_id() -> Result<(), ApiError> {
        let master = [3u8; 32];
        let secret = SecretKey::new([0xAB; 32]);
        let (nonce, sealed) = seal(&master, 7, &secret)?;
        assert!(!sealed.contains(&hex::encode([0xAB; 32])));
        let k = StoredKey {
            id: 7,
            state: KeyStage::Active,
            since: 0,
            created_at: 0,
            published_at: None,
            nonce,
            sealed,
        };
        assert_eq!(unseal(&master, &k)?.expose(), secret.expose());
        assert!(unseal(&[4u8; 32], &k).is_err());
        // Moved to another id: the associated data no longer matches.
        let moved = StoredKey { id: 8, ..k.clone() };
        let err = unseal(&master, &moved).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("cannot be decrypted") && !err.to_lowercase().contains("abab"));
        Ok(())
    }

    #[test]
    fn next_id_skips_used_ids() -> Result<(), ApiError> {
        let mut ring = KeyRing::with_active(KeyId::MAX, SecretKey::new([1; 32]), 10);
        assert_eq!(next_id(&ring)?, 1);
        ring.add_next(1, SecretKey::new([2; 32])).map_err(ring_error)?;
        assert_eq!(next_id(&ring)?, 2);
        assert_eq!(next_id(&KeyRing::with_active(4, SecretKey::new([1; 32]), 10))?, 5);
        Ok(())
    }

    #[test]
    fn master_key_file_is_created_once_private() -> Result<(), ApiError> {
        let dir = std::env::temp_dir().join(format!("sg-master-{}", hex::encode(random::<8>()?)));
        let a = master_key_from_file(&dir)?;
        let b = master_key_from_file(&dir)?;
        assert_eq!(a, b);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(MASTER_KEY_FILE))
                .map_err(internal)?
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(MASTER_KEY_FILE), "nothex").map_err(internal)?;
        assert!(master_key_from_file(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(parse_master(&"0f".repeat(32)), Some([0x0f; 32]));
        assert_eq!(parse_master("0f"), None);
        Ok(())
    }
}
