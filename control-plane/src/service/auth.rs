//! API keys and roles. Every control-plane endpoint but `/healthz` and `/readyz` needs a key with a role.
//!
//! Keys are `sg_<role>_<43 base64url chars>` (256 random bits), shown once when created and stored only as
//! SHA-256 hashes: a fast hash is enough for a 256-bit random secret (there is nothing to brute-force), and it keeps
//! the per-request check at one hash and one lookup. Edges use their own credential (`SHAREGATE_EDGE_TOKEN`).

use super::error::ApiError;
use crate::store::{Check, Ns, Store};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Mint links and manage shares (product backends).
    Minter,
    /// Revoke, purge, rotate keys (incident responders).
    Responder,
    /// API keys, assets, settings.
    Admin,
    /// Read the audit log (read-only).
    Auditor,
    /// Invalidate cached entitlement decisions (the product's billing system, when a subscription changes).
    Entitlement,
}

impl Role {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Minter => "minter",
            Role::Responder => "responder",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::Entitlement => "entitlement",
        }
    }

    /// Parse a role name.
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Minter,
            Role::Responder,
            Role::Admin,
            Role::Auditor,
            Role::Entitlement,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A stored API key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Public id (first 12 hex digits of the hash), for listings and the audit log.
    pub id: String,
    /// Role.
    pub role: Role,
    /// A human label.
    pub label: String,
    /// Created, unix seconds.
    pub created_at: u64,
    /// Disabled keys are refused.
    pub disabled: bool,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Key id.
    pub key_id: String,
    /// Role.
    pub role: Role,
    /// The request's `x-request-id`, if it sent one (audited with what it did).
    pub request_id: Option<String>,
    /// The key's record as this caller was authenticated with it.
    pub key: StoredKey,
}

/// An API key's stored record, as read when its caller was authenticated: a write can require it unchanged
/// ([`StoredKey::unchanged`]) so it commits only while the key is still what authorised it.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// The store key ([`key_hash`]).
    pub hash: String,
    /// The record's bytes.
    pub record: std::sync::Arc<[u8]>,
}

impl StoredKey {
    /// The check that the key's record is still these bytes: not deleted, not disabled, not changed.
    pub fn unchanged(&self) -> Check<'_> {
        Check::Equals {
            ns: Ns::ApiKeys,
            key: &self.hash,
            value: &self.record,
        }
    }
}

/// Key records this replica read, by hash, for the calls whose commit re-checks the record
/// ([`Permission::CHECKED_AT_COMMIT`]): they skip the store read, and a record changed or deleted since (on any
/// replica) fails their commit's check instead. Bounded, and only valid keys enter it.
pub type KeyCache = moka::sync::Cache<String, std::sync::Arc<[u8]>>;

/// A [`KeyCache`] of at most 10,000 keys, each kept at most 10 minutes after it was read.
pub fn key_cache() -> KeyCache {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(std::time::Duration::from_secs(600))
        .build()
}

impl Caller {
    /// Refuse unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role], action: &'static str) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        Err(ApiError::Forbidden {
            have: self.role.as_str(),
            action,
            need: roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// What an endpoint needs of its caller: the roles that may call it and how a refusal names the call. Each
/// endpoint's permission is a type (below), so a handler's signature says who may call it
/// (`Authorized<MintLinks>`, see [`super::extract::Authorized`]).
pub trait Permission {
    /// Roles that may.
    const ROLES: &'static [Role];
    /// What is attempted, as the 403 message says it: "role `x` may not *action*".
    const ACTION: &'static str;
    /// The caller may be authenticated from this replica's [`KeyCache`]: every handler of this permission commits
    /// its write with [`StoredKey::unchanged`] among its checks, and re-authenticates from the store when that check
    /// fails. Off unless a permission's line says `checked at commit`.
    const CHECKED_AT_COMMIT: bool;
}

/// Declares one uninhabited marker type per permission.
macro_rules! permissions {
    (@commit) => { false };
    (@commit checked at commit) => { true };
    ($($(#[$doc:meta])* $name:ident: [$($role:ident),+] => $action:literal $(, $($flag:ident)+)?;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl Permission for $name {
            const ROLES: &'static [Role] = &[$(Role::$role),+];
            const ACTION: &'static str = $action;
            const CHECKED_AT_COMMIT: bool = permissions!(@commit $($($flag)+)?);
        }
    )*};
}

// The role matrix, one line per endpoint (docs/openapi.yaml's `x-roles` say the same; tests/auth_matrix.rs checks).
permissions! {
    /// `POST /v1/links` (`mint_link` commits with the key's record unchanged).
    MintLinks: [Minter] => "mint links", checked at commit;
    /// `POST /v1/apikeys`, `DELETE /v1/apikeys/{id}`.
    ManageApiKeys: [Admin] => "manage API keys";
    /// `GET /v1/apikeys`.
    ListApiKeys: [Admin, Auditor] => "list API keys";
    /// `GET /v1/settings`.
    ReadSettings: [Admin, Auditor] => "read settings";
    /// `PUT /v1/settings`.
    ChangeSettings: [Admin] => "change settings";
    /// `POST /v1/assets`.
    RegisterAssets: [Admin] => "register assets";
    /// `GET /v1/assets/{id}`.
    ReadAssets: [Admin, Minter, Auditor] => "read assets";
    /// `POST /v1/assets/{id}/check`.
    CheckAssets: [Admin] => "check assets";
    /// `GET /v1/audit`.
    ReadAuditLog: [Auditor, Admin] => "read the audit log";
    /// `GET /metrics` (unless metrics are public).
    ReadMetrics: [Auditor, Admin] => "read metrics";
    /// `POST /v1/keys/rotate`.
    RotateKeys: [Responder] => "rotate signing keys";
    /// `GET /v1/keys`.
    ListKeys: [Responder, Admin, Auditor] => "list signing keys";
    /// `POST /v1/revocations`.
    Revoke: [Responder] => "revoke";
    /// `GET /v1/revocations/{id}`.
    ReadRevocations: [Responder, Auditor] => "read revocations";
    /// `POST /v1/shares`.
    ManageShares: [Minter] => "manage shares";
    /// `GET /v1/shares/{id}`.
    ReadShares: [Minter, Auditor] => "read shares";
    /// `DELETE /v1/shares/{id}`.
    DeleteShares: [Minter, Responder] => "delete shares";
    /// `POST /v1/diagnose`.
    Diagnose: [Responder, Auditor, Minter] => "diagnose links";
    /// `PUT /v1/presets/{name}`, `DELETE /v1/presets/{name}`.
    ManagePresets: [Admin] => "manage player presets";
    /// `GET /v1/presets`, `GET /v1/presets/{name}`.
    ReadPresets: [Admin, Minter, Auditor] => "read player presets";
    /// `GET /v1/analytics`, `GET /v1/analytics/views/{view}`, `GET /v1/analytics/stream`.
    ReadAnalytics: [Auditor, Admin] => "read playback analytics";
    /// `POST /v1/conversions`.
    ReportConversions: [Minter, Admin] => "report conversions";
    /// `POST /v1/entitlements/invalidate`.
    InvalidateEntitlements: [Responder, Entitlement] => "invalidate entitlement decisions";
    /// `GET /v1/doctor`.
    Doctor: [Admin] => "run the deployment checks";
    /// `POST /v1/doctor/canary`, `POST /v1/doctor/canary/{token_id}/revoke`.
    RunCanary: [Admin] => "run the revocation canary";
}

/// The store key of an API key: the hex SHA-256 of the whole key string.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Make a new key for `role`: returns the key (show it once) and its record.
pub fn new_key(role: Role, label: &str, now: u64) -> Result<(String, ApiKeyRecord), ApiError> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| ApiError::Internal(format!("no OS randomness: {e}")))?;
    let key = format!("sg_{}_{}", role.as_str(), b64url(&b));
    let hash = key_hash(&key);
    let rec = ApiKeyRecord {
        id: hash[..12].to_string(),
        role,
        label: label.to_string(),
        created_at: now,
        disabled: false,
    };
    Ok((key, rec))
}

/// Store a key's record under its hash.
pub async fn store_key(store: &dyn Store, key: &str, rec: &ApiKeyRecord) -> Result<(), ApiError> {
    let value = serde_json::to_vec(rec).map_err(|e| ApiError::Internal(e.to_string()))?;
    store.put(Ns::ApiKeys, &key_hash(key), &value).await?;
    Ok(())
}

/// Authenticate an `Authorization` header value against the store.
pub async fn authenticate(store: &dyn Store, header: Option<&str>) -> Result<Caller, ApiError> {
    authenticate_hash(store, key_hash(bearer(header)?)).await
}

/// [`authenticate`], taking the record from `cache` when this replica has read it (only for calls whose commit
/// re-checks it: [`Permission::CHECKED_AT_COMMIT`]).
pub async fn authenticate_cached(
    store: &dyn Store,
    cache: &KeyCache,
    header: Option<&str>,
) -> Result<Caller, ApiError> {
    let hash = key_hash(bearer(header)?);
    match cache.get(&hash) {
        Some(record) => caller_from(StoredKey { hash, record }),
        None => {
            let caller = authenticate_hash(store, hash).await?;
            cache.insert(caller.key.hash.clone(), caller.key.record.clone());
            Ok(caller)
        }
    }
}

/// Authenticate the key whose hash is `hash`, reading its record from the store.
pub async fn authenticate_hash(store: &dyn Store, hash: String) -> Result<Caller, ApiError> {
    let Some(bytes) = store.get(Ns::ApiKeys, &hash).await? else {
        return Err(ApiError::BadCredential);
    };
    caller_from(StoredKey {
        hash,
        record: bytes.into(),
    })
}

/// The key of an `Authorization: Bearer` header.
fn bearer(header: Option<&str>) -> Result<&str, ApiError> {
    let key = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .ok_or(ApiError::Unauthenticated)?;
    // Bound the work an unauthenticated request can cause.
    if key.len() > 200 {
        return Err(ApiError::BadCredential);
    }
    Ok(key)
}

/// The caller a key's record makes: refused when the key is disabled.
fn caller_from(key: StoredKey) -> Result<Caller, ApiError> {
    let rec: ApiKeyRecord =
        serde_json::from_slice(&key.record).map_err(|e| ApiError::Internal(format!("api key record: {e}")))?;
    if rec.disabled {
        return Err(ApiError::BadCredential);
    }
    Ok(Caller {
        key_id: rec.id,
        role: rec.role,
        request_id: None,
        key,
    })
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for c in bytes.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        let take = c.len() + 1;
        for i in 0..take {
            out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (k1, r1) = new_key(Role::Minter, "a", 0).unwrap_or_else(|e| panic!("{e}"));
        let (k2, _) = new_key(Role::Minter, "b", 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(k1.starts_with("sg_minter_") && k1.len() == "sg_minter_".len() + 43);
        assert_ne!(k1, k2);
        assert_eq!(r1.id, key_hash(&k1)[..12]);
        assert!(!serde_json::to_string(&r1).unwrap_or_default().contains(&k1));
    }
}
