//! The control plane's storage: one small async interface, two backends that pass the same test suite.
//!
//! [`Store`] is a key/value store with namespaces ([`Ns`]), named monotonic counters, ordered append-only logs
//! ([`Log`]) with gap-free sequence numbers, one hash-chained log kind for the audit trail, and a small multi-key
//! transaction ([`Store::atomic`]). The domain layer (API keys, assets, links, shares, revocations, state generations,
//! encrypted signing keys, audit, purge outbox, idempotency, event counters) is built on these primitives; it owns its
//! value encodings, the store only moves bytes.
//!
//! - [`RedbStore`] (the default) keeps everything in one redb file. Every write is durable before its call returns;
//!   concurrent writes are group-committed by one writer thread, so many callers share one fsync.
//! - [`RedisStore`] (production) lets several control-plane replicas share one Redis: counters, log sequence numbers
//!   and the audit chain are assigned by Redis atomically, so replicas agree on them and see each other's writes.
//!
//! What it does not do: it does not encode domain values, expire keys, encrypt, or page through large namespaces
//! ([`Store::scan`] is for small ones; a growing set belongs in a [`Log`]). It does not make Redis durable: that is
//! the Redis deployment's job (AOF with `appendfsync everysec` or `always`). With Redis a call that fails with
//! [`StoreError::Unavailable`] may or may not have been applied (the reply can be lost after the write); callers
//! that must not double-apply use [`Store::put_if_absent`] or [`Store::atomic`] checks (idempotency keys).
//!
//! Why these primitives and not the obvious smaller set:
//! - [`Store::atomic`] (checks + puts/deletes/counter bumps/log appends in one transaction): "a revocation is durable
//!   before it is acknowledged, and its purge is never dropped" needs the revocation, its log entry, the generation
//!   bump and the outbox row to land together or not at all. `cas` and `put_if_absent` are its one-key special cases.
//! - [`Store::counter`] reads a counter without bumping it (the edge asks "what generation is current?").
//! - [`Store::trim_log`]: the issued-token log grows at mint rate; once its tokens are folded into a filter snapshot
//!   the entries can go. Sequence numbers are never reused, so `last_seq` is not a length.
//! - A [`Log`] is either plain or chained ([`Log::is_chained`]); each kind has its own calls, so one log never mixes
//!   entry formats and the audit chain can't be trimmed.
//!
//! The trait uses `async_trait` so the service can hold an `Arc<dyn Store>` (native `async fn` in traits is not
//! dyn-compatible); one boxed future per call is noise next to an fsync or a network round trip.

mod redb;
mod redis;

pub use self::redb::RedbStore;
pub use self::redis::{DEFAULT_PREFIX, RedisConfig, RedisStore, RedisTarget};

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The most entries one [`Store::read_log`] / [`Store::read_chained`] call returns; page with `last seq + 1`.
pub const MAX_PAGE: usize = 10_000;

/// The previous hash of the first entry of a chained log.
pub const GENESIS: [u8; 32] = [0; 32];

/// A key/value namespace. The names are stable: they are table names (redb) and key names (Redis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Ns {
    /// API keys (by key id).
    ApiKeys,
    /// Assets and their readiness.
    Assets,
    /// Issued links / tokens that need a lookup by id.
    Links,
    /// Shares (stable links).
    Shares,
    /// Current revocations and watermarks.
    Revocations,
    /// Signing keys, encrypted at rest by the caller.
    Keys,
    /// Idempotency keys of API requests.
    Idempotency,
    /// Purge outbox: purges not yet confirmed by the CDN.
    Outbox,
    /// Service settings.
    Settings,
    /// Short leases, e.g. which replica runs the outbox.
    Leases,
    /// Playback analytics: the rows registered per hour, conversion receipts, consumer cursors.
    Analytics,
    /// One record per playback view (player view id or edge session), kept for the raw retention.
    Views,
}

impl Ns {
    /// Every namespace (the redb backend creates their tables when it opens).
    pub const ALL: [Ns; 12] = [
        Ns::ApiKeys,
        Ns::Assets,
        Ns::Links,
        Ns::Shares,
        Ns::Revocations,
        Ns::Keys,
        Ns::Idempotency,
        Ns::Outbox,
        Ns::Settings,
        Ns::Leases,
        Ns::Analytics,
        Ns::Views,
    ];

    /// The stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Ns::ApiKeys => "api_keys",
            Ns::Assets => "assets",
            Ns::Links => "links",
            Ns::Shares => "shares",
            Ns::Revocations => "revocations",
            Ns::Keys => "keys",
            Ns::Idempotency => "idempotency",
            Ns::Outbox => "outbox",
            Ns::Settings => "settings",
            Ns::Leases => "leases",
            Ns::Analytics => "analytics",
            Ns::Views => "views",
        }
    }
}

/// An append-only log with gap-free sequence numbers starting at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Log {
    /// Tokens issued (the input of the edge's filter snapshot).
    Issued,
    /// Revocations in order (the edge's delta).
    Revocations,
    /// The audit trail: hash-chained.
    Audit,
    /// Edge events (denials, expiries) ingested.
    Events,
    /// Player beacons and conversions accepted, before and after they are applied to the analytics.
    Beacons,
    /// Views created, in order: what the retention sweep deletes when they are older than the raw retention.
    ViewIndex,
}

impl Log {
    /// Every log.
    pub const ALL: [Log; 6] = [
        Log::Issued,
        Log::Revocations,
        Log::Audit,
        Log::Events,
        Log::Beacons,
        Log::ViewIndex,
    ];

    /// The stable name.
    pub const fn name(self) -> &'static str {
        match self {
            Log::Issued => "issued",
            Log::Revocations => "revocations",
            Log::Audit => "audit",
            Log::Events => "events",
            Log::Beacons => "beacons",
            Log::ViewIndex => "view_index",
        }
    }

    /// Chained logs take [`Store::append_chained`] only; plain logs take [`Store::append`] only.
    pub const fn is_chained(self) -> bool {
        matches!(self, Log::Audit)
    }
}

/// Why a store call failed. [`StoreError::code`] is stable (logs, metrics, `/readyz`).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend can't be reached now (connection refused or dropped, timeout). Retry later; with Redis the
    /// failed write may have been applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused or failed the operation.
    #[error("store backend error: {0}")]
    Backend(String),
    /// Stored bytes are not what this code writes.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The request itself is wrong (wrong log kind, counter overflow, bad URL).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Other writers kept winning an optimistic retry loop.
    #[error("store contention: {0}")]
    Contention(String),
    /// The store was closed (its writer is gone).
    #[error("store is closed")]
    Closed,
    /// The store could not be opened (file locked by another process, bad file, unreachable at start).
    #[error("cannot open store: {0}")]
    Open(String),
}

impl StoreError {
    /// A stable machine-readable code.
    pub const fn code(&self) -> &'static str {
        match self {
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Backend(_) => "store_backend",
            StoreError::Corrupt(_) => "store_corrupt",
            StoreError::Invalid(_) => "store_invalid",
            StoreError::Contention(_) => "store_contention",
            StoreError::Closed => "store_closed",
            StoreError::Open(_) => "store_open",
        }
    }

    /// Whether the same call may succeed later.
    pub const fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Contention(_))
    }
}

/// A condition of [`Store::atomic`]; if any fails, nothing is written.
#[derive(Debug, Clone, Copy)]
pub enum Check<'a> {
    /// The key must not exist.
    Absent {
        /// Namespace.
        ns: Ns,
        /// Key.
        key: &'a str,
    },
    /// The key must exist with exactly this value.
    Equals {
        /// Namespace.
        ns: Ns,
        /// Key.
        key: &'a str,
        /// Expected value.
        value: &'a [u8],
    },
    /// The counter (0 if never set) must be at most `value`. Mints use it against the issued-log horizon a
    /// snapshot builder raised with [`Op::Raise`]: the check and the append are one transaction, so every record
    /// is ordered entirely before or entirely after the raise.
    CounterAtMost {
        /// Counter name.
        counter: &'a str,
        /// Largest value that passes.
        value: u64,
    },
}

/// A write of [`Store::atomic`]. Its result in the returned vector is given with each variant.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// Insert or overwrite; result 0.
    Put {
        /// Namespace.
        ns: Ns,
        /// Key.
        key: &'a str,
        /// Value.
        value: &'a [u8],
    },
    /// Remove; result 1 if the key existed, else 0.
    Delete {
        /// Namespace.
        ns: Ns,
        /// Key.
        key: &'a str,
    },
    /// Add to a counter; result the new value.
    Incr {
        /// Counter name.
        counter: &'a str,
        /// Amount (at most `i64::MAX`, a Redis limit).
        by: u64,
    },
    /// Raise a counter to at least `to` (never lowers it); result the counter's value afterwards.
    Raise {
        /// Counter name.
        counter: &'a str,
        /// The value to raise it to.
        to: u64,
    },
    /// Append to a plain log; result the entry's sequence number.
    Append {
        /// The log (not a chained one).
        log: Log,
        /// Entry.
        value: &'a [u8],
    },
}

/// One entry of a chained log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedEntry {
    /// Sequence number (1-based, gap-free).
    pub seq: u64,
    /// `SHA-256(previous entry's hash || value)`, with [`GENESIS`] before the first entry.
    pub hash: [u8; 32],
    /// The appended bytes.
    pub value: Vec<u8>,
}

/// The hash of a chained entry: `SHA-256(prev || value)`. `prev` has a fixed length, so the input is unambiguous.
pub fn chain_hash(prev: &[u8; 32], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(value);
    h.finalize().into()
}

/// Verifies a chained log read from its start (seq 1). Returns the hash of the last entry (the head; [`GENESIS`]
/// for no entries), or the first sequence number at which the chain breaks: a modified value or hash, a missing
/// entry (the missing seq), or entries out of order.
///
/// Dropping entries from the end can't be seen from the entries alone: compare the returned head (or the length)
/// with one recorded elsewhere (a receipt, a periodic checkpoint) to catch that.
pub fn verify_chain(entries: &[ChainedEntry]) -> Result<[u8; 32], u64> {
    verify_chain_from(0, GENESIS, entries)
}

/// Like [`verify_chain`] for a page that continues after entry `prev_seq` whose hash is `prev_hash` (as returned by
/// the previous page's verification), so a long chain can be verified page by page.
pub fn verify_chain_from(prev_seq: u64, prev_hash: [u8; 32], entries: &[ChainedEntry]) -> Result<[u8; 32], u64> {
    let mut seq = prev_seq;
    let mut head = prev_hash;
    for e in entries {
        seq += 1;
        if e.seq != seq || chain_hash(&head, &e.value) != e.hash {
            return Err(seq);
        }
        head = e.hash;
    }
    Ok(head)
}

/// The storage interface of the control plane. See the module docs for the model.
///
/// Keys are compared as bytes (UTF-8 order). All writes are durable (redb) or applied by Redis before they return.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The backend's name: `"redb"` or `"redis"`.
    fn backend(&self) -> &'static str;

    /// The value of a key.
    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Inserts or overwrites a key.
    async fn put(&self, ns: Ns, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.atomic(&[], &[Op::Put { ns, key, value }]).await.map(|_| ())
    }

    /// Inserts a key unless it exists; `false` if it existed (its value is unchanged). For uniqueness and
    /// idempotency keys.
    async fn put_if_absent(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let r = self
            .atomic(&[Check::Absent { ns, key }], &[Op::Put { ns, key, value }])
            .await?;
        Ok(r.is_some())
    }

    /// Compare-and-swap on one key: if its value is `expected` (`None`: absent), set it to `new` (`None`: delete) and
    /// return `true`; otherwise change nothing and return `false`.
    async fn cas(&self, ns: Ns, key: &str, expected: Option<&[u8]>, new: Option<&[u8]>) -> Result<bool, StoreError> {
        let check = match expected {
            None => Check::Absent { ns, key },
            Some(value) => Check::Equals { ns, key, value },
        };
        let op = match new {
            None => Op::Delete { ns, key },
            Some(value) => Op::Put { ns, key, value },
        };
        Ok(self.atomic(&[check], &[op]).await?.is_some())
    }

    /// Removes a key; `false` if it did not exist.
    async fn delete(&self, ns: Ns, key: &str) -> Result<bool, StoreError> {
        let r = self.atomic(&[], &[Op::Delete { ns, key }]).await?;
        Ok(r.and_then(|v| v.first().copied()) == Some(1))
    }

    /// All keys of a namespace that start with `prefix` (`""`: all), in key order. For small namespaces: it reads
    /// the whole namespace on Redis.
    async fn scan(&self, ns: Ns, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Adds `by` to a counter shared by all replicas (created at 0) and returns the new value. Values handed out to
    /// concurrent callers are unique; with `by = 1` they are gap-free.
    async fn incr(&self, counter: &str, by: u64) -> Result<u64, StoreError> {
        let r = self.atomic(&[], &[Op::Incr { counter, by }]).await?;
        r.and_then(|v| v.first().copied())
            .ok_or_else(|| StoreError::Backend("incr returned no value".into()))
    }

    /// The current value of a counter (0 if never incremented).
    async fn counter(&self, counter: &str) -> Result<u64, StoreError>;

    /// The current values of many counters, in the order asked (one read, not one call per counter, where the
    /// backend allows: analytics queries read thousands).
    async fn counters(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            out.push(self.counter(n).await?);
        }
        Ok(out)
    }

    /// The values of many keys of one namespace, in the order asked.
    async fn get_many(&self, ns: Ns, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(self.get(ns, k).await?);
        }
        Ok(out)
    }

    /// Checks, then writes, in one transaction: if every check holds, applies `ops` in order and returns one result
    /// per op (see [`Op`]); if any check fails, writes nothing and returns `None`. A Redis script error half-way
    /// (only possible if someone wrote a foreign type under our keys) is not rolled back.
    async fn atomic(&self, checks: &[Check<'_>], ops: &[Op<'_>]) -> Result<Option<Vec<u64>>, StoreError>;

    /// [`Store::atomic`] and, if it wrote, [`Store::append_chained`] of `entry` to the chained `log`: a call's
    /// effect and its audit entry. The result is the ops' results and the entry's seq and hash; `None` (nothing
    /// written, no entry) if a check failed. The embedded store does both in one transaction, so they survive a
    /// crash together or not at all, and a mint costs one group commit, not two. The default, Redis's (the chain's
    /// hash is computed outside the script), appends right after the transaction, as two calls would: an error
    /// between them leaves the effect without its entry.
    async fn atomic_chained(
        &self,
        checks: &[Check<'_>],
        ops: &[Op<'_>],
        log: Log,
        entry: &[u8],
    ) -> Result<Option<(Vec<u64>, (u64, [u8; 32]))>, StoreError> {
        check_kind(log, true)?;
        let Some(results) = self.atomic(checks, ops).await? else {
            return Ok(None);
        };
        let chained = self.append_chained(log, entry).await?;
        Ok(Some((results, chained)))
    }

    /// Appends to a plain log; returns the entry's sequence number (gap-free, agreed by all replicas).
    async fn append(&self, log: Log, value: &[u8]) -> Result<u64, StoreError> {
        self.append_batch(log, &[value.to_vec()]).await
    }

    /// Appends several entries with consecutive sequence numbers; returns the last one (the current last seq if
    /// `values` is empty).
    async fn append_batch(&self, log: Log, values: &[Vec<u8>]) -> Result<u64, StoreError>;

    /// Up to `limit` (at most [`MAX_PAGE`]) entries of a plain log with `seq >= from_seq`, in order. Trimmed
    /// entries are skipped, so the first returned seq may be above `from_seq`.
    async fn read_log(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;

    /// The highest sequence number handed out in a log (0 if none). Not a count once the log is trimmed.
    async fn last_seq(&self, log: Log) -> Result<u64, StoreError>;

    /// Drops the entries of a plain log with `seq < below`. Sequence numbers are not reused.
    async fn trim_log(&self, log: Log, below: u64) -> Result<(), StoreError>;

    /// Appends to a chained log: stores the entry with `hash = SHA-256(prev hash || value)`, atomically with respect
    /// to every other appender (replicas included), so the chain never forks. Returns the entry's seq and hash.
    async fn append_chained(&self, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), StoreError>;

    /// Up to `limit` (at most [`MAX_PAGE`]) entries of a chained log with `seq >= from_seq`, in order.
    async fn read_chained(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<ChainedEntry>, StoreError>;

    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// What the store's settings promise about acknowledged writes: the startup warning and `sharegate doctor`
    /// read it. The default is the embedded store's: every commit is on disk before it is acknowledged.
    async fn durability(&self) -> Result<Durability, StoreError> {
        Ok(Durability {
            level: DurabilityLevel::Ok,
            summary: "every commit is synced to disk before it is acknowledged (embedded store, one replica)".into(),
            facts: BTreeMap::from([("fsync".to_string(), "every commit".to_string())]),
        })
    }

    /// The store's clock, Unix milliseconds, for clock-skew checks; `None` when the store shares this process's
    /// clock (the embedded store).
    async fn clock_ms(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
}

/// How far a store's settings keep the promise that an acknowledged write (a revocation) survives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Durability {
    /// `ok`, `warning` (survives a process crash, not every machine failure) or `error` (a restart can lose
    /// acknowledged writes, or writes will be refused).
    pub level: DurabilityLevel,
    /// In plain words, what the settings promise and, if short of the promise, what to change.
    pub summary: String,
    /// What it was judged from (`appendonly`, `appendfsync`, `role`, `connected_replicas`, `wait_replicas`, ...).
    pub facts: BTreeMap<String, String>,
}

/// See [`Durability::level`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityLevel {
    /// Every acknowledged write survives a crash of the store's process and of its machine.
    Ok,
    /// Survives a process crash; a machine crash or power loss may lose the last moments.
    Warning,
    /// A restart can lose acknowledged writes, or the settings make writes fail.
    Error,
}

/// Opens the store named by `url`: `redis://…`, `rediss://…` or `redis+unix://…` for Redis (keys under
/// [`DEFAULT_PREFIX`], or the prefix given as a `key_prefix=` query parameter); `""`, `redb` or `embedded` for redb at
/// `data_dir/sharegate.redb` (the directory is created). Anything else is refused rather than silently opening a
/// local store, which would split a replicated deployment.
pub async fn open_store(url: &str, data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, data_dir, &RedisSettings::default()).await
}

/// Redis settings that are not part of the store URL (`sharegate serve` reads them from the environment).
#[derive(Debug, Clone, Default)]
pub struct RedisSettings {
    /// Acknowledge writes once this many replicas hold them (`SHAREGATE_REDIS_WAIT_REPLICAS`).
    pub wait_replicas: u32,
    /// How long to wait for them (`SHAREGATE_REDIS_WAIT_TIMEOUT_MS`, default 1000 ms).
    pub wait_timeout_ms: Option<u64>,
    /// A private CA's PEM for `rediss://` (`SHAREGATE_REDIS_CA_FILE`).
    pub ca_pem: Option<Vec<u8>>,
}

/// A parsed store URL (no connection made): what `sharegate check-config` validates.
#[derive(Clone)]
pub enum StoreUrl {
    /// The embedded store in the data directory.
    Embedded,
    /// Redis, with its key prefix.
    Redis(RedisTarget, String),
}

impl StoreUrl {
    /// Parses `url` (see [`open_store`]; also `redis+sentinel://[user:pass@]host:port,host:port/<master>`, or
    /// `rediss+sentinel://` for TLS to the data nodes).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let url = url.trim();
        if matches!(url, "" | "redb" | "redb:" | "embedded") {
            return Ok(StoreUrl::Embedded);
        }
        let (base, prefix) = split_prefix(url);
        let prefix = prefix.unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = base.strip_prefix(scheme) {
                return Ok(StoreUrl::Redis(parse_sentinel(rest, tls)?, prefix));
            }
        }
        if base.starts_with("redis://") || base.starts_with("rediss://") || base.starts_with("redis+unix://") {
            ::redis::Client::open(base.as_str()).map_err(|e| StoreError::Invalid(format!("redis URL: {}", e)))?;
            return Ok(StoreUrl::Redis(RedisTarget::Url(base), prefix));
        }
        Err(StoreError::Invalid(
            "unknown store URL scheme (want redis://, rediss://, redis+unix://, redis+sentinel:// or redb)".into(),
        ))
    }

    /// In words, without any password: for logs and `check-config`.
    pub fn describe(&self) -> String {
        match self {
            StoreUrl::Embedded => "the embedded store (redb) in the data directory".into(),
            StoreUrl::Redis(RedisTarget::Url(u), p) => {
                // Scheme and host (or socket path) only: the user and password ride in the authority, and for
                // `redis+unix://` in the query.
                let (scheme, rest) = u.split_once("://").unwrap_or(("redis", ""));
                let rest = rest.split(['?', '#']).next().unwrap_or("");
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("Redis at {scheme}://{host} (keys under {p:?})")
            }
            StoreUrl::Redis(
                RedisTarget::Sentinel {
                    sentinels, master, tls, ..
                },
                p,
            ) => format!(
                "Redis primary {master:?} via {} Sentinel(s) ({}){} (keys under {p:?})",
                sentinels.len(),
                sentinels
                    .iter()
                    .map(|s| s.trim_start_matches("redis://"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if *tls { ", TLS to the data nodes" } else { "" }
            ),
        }
    }
}

/// `[user[:pass]@]host:port,host:port/master` of a Sentinel URL. The credentials are found first (a password
/// may hold a `/` or `@` its writer did not escape), and no error repeats any part of the URL.
fn parse_sentinel(rest: &str, tls: bool) -> Result<RedisTarget, StoreError> {
    let invalid = |why: &str| StoreError::Invalid(format!("redis+sentinel URL: {why}"));
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (creds, after) = match rest.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, rest),
    };
    let (hosts, master) = after.split_once('/').ok_or_else(|| invalid("no /<master name>"))?;
    let master = pct_decode(master.trim_end_matches('/')).map_err(|_| invalid("the master name is not UTF-8"))?;
    if master.is_empty() || master.contains('/') {
        return Err(invalid("want one master name after the hosts"));
    }
    let decode = |v: &str, what: &str| pct_decode(v).map_err(|_| invalid(&format!("the {what} is not UTF-8")));
    let (username, password) = match creds {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (
                Some(decode(u, "user")?).filter(|u| !u.is_empty()),
                Some(decode(p, "password")?),
            ),
            None => (Some(decode(c, "user")?).filter(|u| !u.is_empty()), None),
        },
    };
    let mut sentinels = Vec::new();
    for (i, h) in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).enumerate() {
        let (host, port) = h.rsplit_once(':').unwrap_or((h, "26379"));
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(&format!("Sentinel address {} has no valid port", i + 1)))?;
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(invalid(&format!("Sentinel address {} has no valid host", i + 1)));
        }
        sentinels.push(format!("redis://{host}:{port}"));
    }
    if sentinels.is_empty() {
        return Err(invalid("no Sentinel addresses"));
    }
    Ok(RedisTarget::Sentinel {
        sentinels,
        master,
        username,
        password,
        tls,
    })
}

/// `%XX` escapes of a URL's user, password or name; invalid UTF-8 is an error, never silently replaced (that would
/// change a password).
fn pct_decode(s: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
}

/// Like [`open_store`], with the Redis settings that are not in the URL.
pub async fn open_store_with(
    url: &str,
    data_dir: &Path,
    settings: &RedisSettings,
) -> Result<Arc<dyn Store>, StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Redis(target, prefix) => {
            let store = RedisStore::open(RedisConfig {
                target,
                prefix,
                wait_replicas: settings.wait_replicas,
                wait_timeout: std::time::Duration::from_millis(settings.wait_timeout_ms.unwrap_or(1000).max(1)),
                ca_pem: settings.ca_pem.clone(),
            })
            .await?;
            Ok(Arc::new(store))
        }
        StoreUrl::Embedded => {
            std::fs::create_dir_all(data_dir)
                .map_err(|e| StoreError::Open(format!("cannot create {}: {e}", data_dir.display())))?;
            let path = data_dir.join("sharegate.redb");
            let store = tokio::task::spawn_blocking(move || RedbStore::open(&path))
                .await
                .map_err(|e| StoreError::Open(format!("open task failed: {e}")))??;
            Ok(Arc::new(store))
        }
    }
}

/// Refuses a chained log where a plain one is needed, and the reverse.
fn check_kind(log: Log, chained: bool) -> Result<(), StoreError> {
    if log.is_chained() == chained {
        return Ok(());
    }
    let want = if chained { "chained" } else { "plain" };
    Err(StoreError::Invalid(format!("log {} is not a {want} log", log.name())))
}

/// The request checks both backends make before writing, so they fail the same way.
fn validate_ops(ops: &[Op<'_>]) -> Result<(), StoreError> {
    for op in ops {
        match *op {
            Op::Append { log, .. } => check_kind(log, false)?,
            Op::Incr { by, .. } if by > i64::MAX as u64 => {
                return Err(StoreError::Invalid(format!("counter increment {by} is above i64::MAX")));
            }
            Op::Raise { to, .. } if to > i64::MAX as u64 => {
                return Err(StoreError::Invalid(format!("counter value {to} is above i64::MAX")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Takes our `key_prefix=` query parameter out of a Redis URL (the Redis client does not know it).
fn split_prefix(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut prefix = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix("key_prefix=") {
            Some(p) => prefix = Some(p.to_string()),
            None if !pair.is_empty() => rest.push(pair),
            None => {}
        }
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, prefix)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chain(values: &[&[u8]]) -> Vec<ChainedEntry> {
        let mut prev = GENESIS;
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let hash = chain_hash(&prev, v);
            out.push(ChainedEntry {
                seq: i as u64 + 1,
                hash,
                value: v.to_vec(),
            });
            prev = hash;
        }
        out
    }

    #[test]
    fn verify_detects_modified_removed_reordered() {
        let good = chain(&[b"a", b"b", b"c", b"d"]);
        assert_eq!(verify_chain(&good), Ok(good[3].hash));
        assert_eq!(verify_chain(&[]), Ok(GENESIS));

        let mut modified = good.clone();
        modified[2].value = b"x".to_vec();
        assert_eq!(verify_chain(&modified), Err(3));

        let mut rehashed = modified.clone();
        rehashed[2].hash = chain_hash(&good[1].hash, b"x"); // fixing its own hash breaks the next link
        assert_eq!(verify_chain(&rehashed), Err(4));

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify_chain(&removed), Err(2));

        let mut reordered = good.clone();
        reordered.swap(1, 2);
        assert_eq!(verify_chain(&reordered), Err(2));

        assert_eq!(verify_chain_from(2, good[1].hash, &good[2..]), Ok(good[3].hash));
        assert_eq!(verify_chain_from(2, GENESIS, &good[2..]), Err(3));
    }

    #[test]
    fn prefix_is_taken_out_of_the_url() {
        assert_eq!(split_prefix("redis://h:1/0"), ("redis://h:1/0".into(), None));
        assert_eq!(
            split_prefix("redis://h/0?key_prefix=a:"),
            ("redis://h/0".into(), Some("a:".into()))
        );
        assert_eq!(
            split_prefix("redis://h/0?protocol=resp3&key_prefix=b:"),
            ("redis://h/0?protocol=resp3".into(), Some("b:".into()))
        );
    }

    #[test]
    fn store_urls_parse_and_describe_without_secrets() {
        let d = |u: &str| StoreUrl::parse(u).map(|s| s.describe());
        let sentinel = StoreUrl::parse("redis+sentinel://u:p%2Fa@ss@h1:26379,h2/mymaster?key_prefix=x:").unwrap();
        match &sentinel {
            StoreUrl::Redis(
                RedisTarget::Sentinel {
                    sentinels,
                    master,
                    username,
                    password,
                    ..
                },
                prefix,
            ) => {
                assert_eq!(sentinels, &["redis://h1:26379", "redis://h2:26379"]);
                assert_eq!(master, "mymaster");
                assert_eq!(username.as_deref(), Some("u"));
                assert_eq!(password.as_deref(), Some("p/a@ss"));
                assert_eq!(prefix, "x:");
            }
            _ => panic!("not a sentinel target"),
        }
        // An unescaped '/' in the password: still found, never echoed.
        let s = d("redis+sentinel://u:pa/ss@h:26379/m").unwrap();
        assert!(!s.contains("pa/ss") && s.contains("primary \"m\""), "{s}");
        for bad in [
            "redis+sentinel://u:secret@h:x/m",
            "redis+sentinel://u:secret@/m",
            "redis+sentinel://u:secret@h:1/",
        ] {
            let e = StoreUrl::parse(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!e.is_empty() && !e.contains("secret"), "{bad}: {e}");
        }
        assert!(StoreUrl::parse("redis+sentinel://u:%FF@h:1/m").is_err());
        for (url, secret) in [
            ("redis://user:hunter2@db:6379/0", "hunter2"),
            ("rediss://:hunter2@db:6380/", "hunter2"),
            ("redis+unix:///run/redis.sock?pass=hunter2&user=u", "hunter2"),
        ] {
            let text = d(url).unwrap();
            assert!(!text.contains(secret), "{url}: {text}");
        }
    }

    #[test]
    fn codes_are_stable() {
        assert_eq!(StoreError::Closed.code(), "store_closed");
        assert!(StoreError::Unavailable(String::new()).is_retryable());
        assert!(!StoreError::Invalid(String::new()).is_retryable());
    }
}
