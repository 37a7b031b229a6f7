//! The Redis backend: several control-plane replicas share one Redis and agree on counters, log sequence numbers and
//! the audit chain, because Redis assigns them inside single commands or Lua scripts (which run atomically).
//!
//! Key layout, all under a configurable prefix (default [`DEFAULT_PREFIX`]) so deployments can share a Redis:
//! - `<prefix>ns:<name>`: a hash per [`Ns`], field = key.
//! - `<prefix>counters`: one hash, field = counter name, `HINCRBY`.
//! - `<prefix>log:<name>`: a hash per [`Log`]: field `seq` = last sequence number, field `trim` = highest trimmed
//!   seq, and one field per entry named by its decimal seq. An append bumps `seq` and writes the entries in one
//!   script, so sequence numbers are gap-free across replicas; a page is read by seq in O(page), with no list walk.
//!   Chained logs store `hash (32 bytes) || value` per entry.
//!
//! Each log and namespace is one key, so the layout also fits a Redis Cluster slot per key (scripts touch only keys
//! they are given), though cluster mode is not wired up here.
//!
//! The audit chain needs SHA-256, which Redis Lua lacks, so the hash is computed here and the append is optimistic:
//! a script writes the entry only if the log's last seq is still the one the hash was computed against, else the
//! caller re-reads the head and retries. Appends from one process are group-committed: callers queue their entries
//! and one committer task per log writes everything queued while its previous call was in flight in one script
//! call (and one `WAIT`), with the head cached between calls, so only appends from other replicas cause retries and
//! a burst of audited calls costs one round trip per batch, not one per entry in turn.
//!
//! Production (docs/deploy.md): `rediss://` is TLS (rustls; system roots, or a private CA's PEM), ACL users and
//! passwords ride in the URL, and behind Sentinel ([`RedisTarget::Sentinel`]) the store asks the Sentinels for the
//! primary again after an error that means it may have moved, then reconnects. With `wait_replicas` a write is
//! acknowledged only once that many replicas hold it (`WAIT`), so a failover cannot lose an acknowledged
//! revocation; [`RedisStore::durability`] reports what the server's persistence settings promise.

use super::{
    ChainedEntry, Check, Durability, DurabilityLevel, GENESIS, Log, MAX_PAGE, Ns, Op, Store, StoreError, chain_hash,
    check_kind, validate_ops,
};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use ::redis::{Client, RedisError, Script, TlsCertificates, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Mutex, oneshot};

/// The key prefix used unless one is configured.
pub const DEFAULT_PREFIX: &str = "sharegate:";

/// How often an audit append retries when other replicas keep appending first.
const CHAIN_ATTEMPTS: usize = 100;

/// Entries removed per trim script call, so one call never blocks Redis for long.
const TRIM_CHUNK: u64 = 10_000;

/// Checks, then ops; one key per item. `ARGV[1]` = number of checks, then three args per item: kind, field, value.
/// Kinds: `A` absent, `E` equals, `C` counter at most (checks); `P` put, `D` delete, `I` incr, `R` raise, `L`
/// append (ops).
const ATOMIC_LUA: &str = r"
local nc = tonumber(ARGV[1])
for i = 1, nc do
  local kind, field, value = ARGV[3*i-1], ARGV[3*i], ARGV[3*i+1]
  local cur = redis.call('HGET', KEYS[i], field)
  if kind == 'A' then
    if cur then return false end
  elseif kind == 'C' then
    if tonumber(cur or '0') > tonumber(value) then return false end
  elseif cur ~= value then
    return false
  end
end
local out = {}
for i = nc + 1, #KEYS do
  local kind, field, value = ARGV[3*i-1], ARGV[3*i], ARGV[3*i+1]
  if kind == 'P' then
    redis.call('HSET', KEYS[i], field, value)
    out[#out+1] = 0
  elseif kind == 'D' then
    out[#out+1] = redis.call('HDEL', KEYS[i], field)
  elseif kind == 'I' then
    out[#out+1] = redis.call('HINCRBY', KEYS[i], field, value)
  elseif kind == 'R' then
    local cur = tonumber(redis.call('HGET', KEYS[i], field) or '0')
    if tonumber(value) > cur then
      redis.call('HSET', KEYS[i], field, value)
      cur = tonumber(value)
    end
    out[#out+1] = cur
  elseif kind == 'L' then
    local seq = redis.call('HINCRBY', KEYS[i], 'seq', 1)
    redis.call('HSET', KEYS[i], string.format('%d', seq), value)
    out[#out+1] = seq
  else
    return redis.error_reply('unknown op ' .. kind)
  end
end
return out
";

/// Appends every ARGV to log KEYS[1] with consecutive seqs; returns the last.
const APPEND_LUA: &str = r"
local n = #ARGV
local last = redis.call('HINCRBY', KEYS[1], 'seq', n)
for i = 1, n do
  redis.call('HSET', KEYS[1], string.format('%d', last - n + i), ARGV[i])
end
return last
";

/// Entries of log KEYS[1] with seq >= ARGV[1], at most ARGV[2] of them, as {seq, value} pairs.
const READ_LUA: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local trim = tonumber(redis.call('HGET', KEYS[1], 'trim') or '0')
local from = math.max(tonumber(ARGV[1]), trim + 1)
local to = math.min(last, from + tonumber(ARGV[2]) - 1)
local out = {}
for seq = from, to do
  local v = redis.call('HGET', KEYS[1], string.format('%d', seq))
  if v then out[#out+1] = {seq, v} end
end
return out
";

/// Removes up to ARGV[2] entries of log KEYS[1] with seq < ARGV[1]; returns {trimmed up to, target}.
const TRIM_LUA: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local trim = tonumber(redis.call('HGET', KEYS[1], 'trim') or '0')
local target = math.min(tonumber(ARGV[1]) - 1, last)
local stop = math.min(target, trim + tonumber(ARGV[2]))
for seq = trim + 1, stop do
  redis.call('HDEL', KEYS[1], string.format('%d', seq))
end
if stop > trim then redis.call('HSET', KEYS[1], 'trim', string.format('%d', stop)) end
return {math.max(stop, trim), target}
";

/// The last seq of chained log KEYS[1] and its stored entry (empty if none).
const HEAD_LUA: &str = r"
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return {0, ''} end
return {tonumber(seq), redis.call('HGET', KEYS[1], seq) or ''}
";

/// Appends the entries ARGV[2..] to chained log KEYS[1] if its last seq is still ARGV[1]; returns the new last seq,
/// or -1 if another appender got there first.
const CHAIN_APPEND_LUA: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if cur ~= tonumber(ARGV[1]) then return -1 end
for i = 2, #ARGV do
  redis.call('HSET', KEYS[1], string.format('%d', cur + i - 1), ARGV[i])
end
local last = cur + #ARGV - 1
redis.call('HSET', KEYS[1], 'seq', string.format('%d', last))
return last
";

struct Scripts {
    atomic: Script,
    append: Script,
    read: Script,
    trim: Script,
    head: Script,
    chain_append: Script,
}

/// Where the store finds its Redis primary, and what an acknowledged write waits for.
#[derive(Clone)]
pub struct RedisConfig {
    /// The primary: a URL, or Sentinel.
    pub target: RedisTarget,
    /// Keys under this prefix.
    pub prefix: String,
    /// Acknowledge a write only once this many replicas hold it (`WAIT`); 0 = as soon as the primary has it.
    pub wait_replicas: u32,
    /// How long a write waits for those replicas before it is answered as not confirmed.
    pub wait_timeout: Duration,
    /// PEM roots to trust for `rediss://` instead of the system's (a private CA).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URLs: they may carry a password.
        f.debug_struct("RedisConfig")
            .field("prefix", &self.prefix)
            .field("wait_replicas", &self.wait_replicas)
            .finish_non_exhaustive()
    }
}

/// How the primary is found.
#[derive(Clone)]
pub enum RedisTarget {
    /// `redis://`, `rediss://` or `redis+unix://`: this server is the primary.
    Url(String),
    /// Ask these Sentinels (`redis://host:port` each) for the primary of `master`; after a failover the store asks
    /// again and reconnects to the promoted replica.
    Sentinel {
        /// Sentinel addresses as URLs.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// ACL user and password of the data nodes (not of the Sentinels).
        username: Option<String>,
        /// See `username`.
        password: Option<String>,
        /// TLS to the data nodes (system roots).
        tls: bool,
    },
}

/// How the store finds its primary again after an error that says it may have moved.
enum Reconnect {
    /// A URL: connect to it anew after `READONLY` (a managed Redis that failed over by DNS names another node now;
    /// the open connection would stay on the demoted one).
    Url(Client),
    /// Sentinel: ask for the primary of `master`; `sentinels` are asked one by one to confirm it (see
    /// [`Shared::confirm`]).
    Sentinel {
        client: SentinelClient,
        sentinels: Vec<Client>,
        master: String,
    },
}

/// The reconnect side of a store.
struct Failover {
    reconnect: Mutex<(Reconnect, Option<std::time::Instant>)>,
    /// Set by an error that suggests the primary moved; the next call reconnects first.
    suspect: AtomicBool,
}

/// The shortest pause between two reconnects, so a burst of failing calls reconnects once.
const RESOLVE_EVERY: Duration = Duration::from_millis(200);

/// Connections used for writes that `WAIT` for replicas. `WAIT` blocks the connection it is sent on until the
/// replicas answer, so it must not be the connection reads and health checks share; a few let writes overlap.
const WRITE_CONNECTIONS: usize = 4;

/// What a write's confirmation checks it still speaks about (see [`Shared::confirm`]).
#[derive(Debug, Clone, Copy)]
struct Ticket {
    /// The primary generation when the write was sent.
    generation: u64,
    /// The write connection's `CLIENT ID` just before the write (only when replicas are waited for).
    client_id: Option<i64>,
}

/// Each chained log's cached head: last seq and hash.
type Heads = HashMap<Log, (u64, [u8; 32])>;

/// The connections to one primary.
#[derive(Clone)]
struct Conns {
    /// Reads, health checks, and every write when no `WAIT` is asked for.
    shared: ConnectionManager,
    /// Writes followed by `WAIT` (empty without `wait_replicas`).
    writes: Vec<ConnectionManager>,
}

/// The Redis store. Cloning the connection is cheap (multiplexed connections, reconnected when they drop). The state
/// is shared with the tasks that group-commit chained appends ([`RedisStore::append_chained`]), which must outlive
/// the call that started them.
pub struct RedisStore(Arc<Shared>);

impl std::ops::Deref for RedisStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Chained appends waiting for their log's committer task, and whether one runs (see
/// [`RedisStore::append_chained`]).
#[derive(Default)]
struct ChainQueue {
    pending: Vec<PendingAppend>,
    running: bool,
}

/// One caller's chained append, answered by the committer.
struct PendingAppend {
    value: Vec<u8>,
    reply: oneshot::Sender<Result<(u64, [u8; 32]), StoreError>>,
}

/// The most entries one chained group commit writes (one script call; a few hundred KiB of arguments at most).
const CHAIN_BATCH: usize = 256;

/// What a [`RedisStore`] shares with its committer tasks: the connections, the failover state and the caches.
pub struct Shared {
    conns: RwLock<Conns>,
    /// Bumped each time the store moves to another primary: cached log heads from before are not trusted.
    generation: AtomicU64,
    next_write: AtomicUsize,
    /// `host:port` of the primary now in use (with Sentinel it changes on failover).
    primary: RwLock<String>,
    failover: Failover,
    wait_replicas: u32,
    /// When the primary's online replicas were last counted, and how many.
    replicas_seen: Mutex<Option<(std::time::Instant, u32)>>,
    /// When a Sentinel majority last confirmed the primary, and which one it named.
    confirmed: Mutex<Option<(std::time::Instant, String)>>,
    /// Writes acknowledged with fewer replicas than `wait_replicas`, and when that was last logged.
    degraded: AtomicU64,
    degraded_logged: Mutex<Option<std::time::Instant>>,
    wait_timeout: Duration,
    prefix: String,
    scripts: Scripts,
    /// Serialises this process's chained appends and caches each chained log's head (last seq, hash), for the
    /// primary generation it was read on.
    heads: Mutex<(u64, Heads)>,
    /// Chained appends queued for the next group commit, per log.
    chains: std::sync::Mutex<HashMap<Log, ChainQueue>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() || is_readonly(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// A write sent to a replica: the primary this store knew was demoted by a failover.
fn is_readonly(e: &RedisError) -> bool {
    e.code() == Some("READONLY") || e.to_string().contains("READONLY")
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {v}")))
}

/// Lua numbers are doubles: keep seqs and limits where they are exact.
const LUA_MAX_INT: u64 = 1 << 53;

fn manager_config(sentinel: bool, response: Duration) -> ConnectionManagerConfig {
    // Bounded timeouts: a dead Redis must fail /readyz and API calls, not hang them. Behind Sentinel a dead primary
    // is not coming back at that address: fail fast and ask Sentinel instead of retrying it.
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(if sentinel { 1 } else { 3 })))
        .set_response_timeout(Some(response))
        .set_number_of_retries(if sentinel { 1 } else { 3 })
}

/// Longest answer time of a command (a `WAIT` takes up to its own timeout on top).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections to the primary `client` names.
async fn connect_all(client: &Client, sentinel: bool, wait: Option<Duration>) -> Result<Conns, RedisError> {
    let shared = ConnectionManager::new_with_config(client.clone(), manager_config(sentinel, RESPONSE_TIMEOUT)).await?;
    let mut writes = Vec::new();
    if let Some(wait) = wait {
        for _ in 0..WRITE_CONNECTIONS {
            let config = manager_config(sentinel, RESPONSE_TIMEOUT + wait);
            writes.push(ConnectionManager::new_with_config(client.clone(), config).await?);
        }
    }
    Ok(Conns { shared, writes })
}

fn client_addr(client: &Client) -> String {
    match client.get_connection_info().addr() {
        ::redis::ConnectionAddr::Tcp(h, p) => format!("{h}:{p}"),
        ::redis::ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port}"),
        other => other.to_string(),
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://`, `redis+unix://`) with keys under `prefix`, and checks that the
    /// server answers.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::open(RedisConfig {
            target: RedisTarget::Url(url.to_string()),
            prefix: prefix.to_string(),
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            ca_pem: None,
        })
        .await
    }

    /// Connects as `config` says and checks that the primary answers.
    pub async fn open(config: RedisConfig) -> Result<Self, StoreError> {
        let (client, reconnect) = match &config.target {
            RedisTarget::Url(url) => {
                let client = match &config.ca_pem {
                    Some(pem) if url.starts_with("rediss://") => Client::build_with_tls(
                        url.as_str(),
                        TlsCertificates {
                            client_tls: None,
                            root_cert: Some(pem.clone()),
                        },
                    ),
                    _ => Client::open(url.as_str()),
                }
                .map_err(|e| StoreError::Invalid(format!("redis URL: {e}")))?;
                (client.clone(), Reconnect::Url(client))
            }
            RedisTarget::Sentinel {
                sentinels,
                master,
                username,
                password,
                tls,
            } => {
                let mut info = ::redis::RedisConnectionInfo::default();
                if let Some(u) = username {
                    info = info.set_username(u);
                }
                if let Some(p) = password {
                    info = info.set_password(p);
                }
                let mut node = SentinelNodeConnectionInfo::default().set_redis_connection_info(info);
                if *tls {
                    node = node.set_tls_mode(::redis::TlsMode::Secure);
                }
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(|e| StoreError::Invalid(format!("redis sentinel: {e}")))?;
                let client = sentinel
                    .async_get_client()
                    .await
                    .map_err(|e| StoreError::Open(format!("redis sentinel: no primary for {master:?}: {e}")))?;
                let each = sentinels
                    .iter()
                    .map(|u| Client::open(u.as_str()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| StoreError::Invalid(format!("redis sentinel: {e}")))?;
                (
                    client,
                    Reconnect::Sentinel {
                        client: sentinel,
                        sentinels: each,
                        master: master.clone(),
                    },
                )
            }
        };
        let sentinel = matches!(reconnect, Reconnect::Sentinel { .. });
        let wait = (config.wait_replicas > 0).then_some(config.wait_timeout);
        let primary = client_addr(&client);
        let conns = connect_all(&client, sentinel, wait)
            .await
            .map_err(|e| StoreError::Open(format!("redis: {e}")))?;
        let store = RedisStore(Arc::new(Shared {
            conns: RwLock::new(conns),
            generation: AtomicU64::new(0),
            next_write: AtomicUsize::new(0),
            primary: RwLock::new(primary),
            failover: Failover {
                reconnect: Mutex::new((reconnect, Some(std::time::Instant::now()))),
                suspect: AtomicBool::new(false),
            },
            wait_replicas: config.wait_replicas,
            replicas_seen: Mutex::new(None),
            confirmed: Mutex::new(None),
            degraded: AtomicU64::new(0),
            degraded_logged: Mutex::new(None),
            wait_timeout: config.wait_timeout,
            prefix: config.prefix,
            scripts: Scripts {
                atomic: Script::new(ATOMIC_LUA),
                append: Script::new(APPEND_LUA),
                read: Script::new(READ_LUA),
                trim: Script::new(TRIM_LUA),
                head: Script::new(HEAD_LUA),
                chain_append: Script::new(CHAIN_APPEND_LUA),
            },
            heads: Mutex::new((0, HashMap::new())),
            chains: std::sync::Mutex::new(HashMap::new()),
        }));
        store.ping().await.map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(store)
    }
}

impl Shared {
    /// After an error that suggested the primary moved: reconnect (at most every [`RESOLVE_EVERY`]), to the primary
    /// Sentinel names now, or to the URL anew.
    async fn reconnect_if_suspect(&self) -> Result<(), StoreError> {
        let f = &self.failover;
        if !f.suspect.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut guard = f.reconnect.lock().await;
        let (how, last) = &mut *guard;
        if !f.suspect.load(Ordering::Acquire) || last.is_some_and(|t| t.elapsed() < RESOLVE_EVERY) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        let (client, sentinel) = match how {
            Reconnect::Url(client) => (client.clone(), false),
            Reconnect::Sentinel { client, .. } => (
                client
                    .async_get_client()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("redis sentinel: no primary: {e}")))?,
                true,
            ),
        };
        let addr = client_addr(&client);
        let moved = *self.primary.read().unwrap_or_else(|e| e.into_inner()) != addr;
        // A URL target is only suspect after READONLY: its connection is on a demoted node, whatever the address.
        if moved || !sentinel {
            let wait = (self.wait_replicas > 0).then_some(self.wait_timeout);
            let conns = connect_all(&client, sentinel, wait).await.map_err(map_err)?;
            tracing::warn!(primary = %addr, "redis: the primary moved; reconnected");
            *self.conns.write().unwrap_or_else(|e| e.into_inner()) = conns;
            *self.primary.write().unwrap_or_else(|e| e.into_inner()) = addr;
            self.generation.fetch_add(1, Ordering::AcqRel);
            *self.replicas_seen.lock().await = None;
            *self.confirmed.lock().await = None;
        }
        f.suspect.store(false, Ordering::Release);
        Ok(())
    }

    /// The connection for reads, health checks, and writes that wait for no replica.
    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.reconnect_if_suspect().await?;
        Ok(self.conns.read().unwrap_or_else(|e| e.into_inner()).shared.clone())
    }

    /// The connection for a write that [`Shared::confirm`] follows: one of the write connections when replicas
    /// are waited for, so a `WAIT` never holds up reads and health checks. With them, the ticket names the
    /// connection (`CLIENT ID`) and the primary generation the write goes to, so the confirmation can tell whether
    /// it still speaks about this write.
    async fn write_conn(&self) -> Result<(ConnectionManager, Ticket), StoreError> {
        self.reconnect_if_suspect().await?;
        let generation = self.generation.load(Ordering::Acquire);
        let mut c = {
            let conns = self.conns.read().unwrap_or_else(|e| e.into_inner());
            if conns.writes.is_empty() {
                return Ok((
                    conns.shared.clone(),
                    Ticket {
                        generation,
                        client_id: None,
                    },
                ));
            }
            let i = self.next_write.fetch_add(1, Ordering::Relaxed) % conns.writes.len();
            conns.writes[i].clone()
        };
        let id: i64 = ::redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        Ok((
            c,
            Ticket {
                generation,
                client_id: Some(id),
            },
        ))
    }

    /// Maps a Redis error, and marks the primary as suspect when the error says it may have moved: behind Sentinel
    /// any unavailability, for a URL a `READONLY` answer.
    fn failed(&self, e: RedisError) -> StoreError {
        let readonly = is_readonly(&e);
        let err = map_err(e);
        let sentinel = matches!(err, StoreError::Unavailable(_)) && self.is_sentinel();
        if readonly || sentinel {
            self.failover.suspect.store(true, Ordering::Release);
        }
        err
    }

    fn is_sentinel(&self) -> bool {
        // try_lock: only asked on an error path; a reconnect in progress means Sentinel anyway (URL targets only
        // reconnect after READONLY, which sets the flag itself).
        self.failover
            .reconnect
            .try_lock()
            .map_or(true, |g| matches!(g.0, Reconnect::Sentinel { .. }))
    }

    /// After a write: with `wait_replicas`, wait until that many replicas acknowledge everything this connection
    /// wrote (`WAIT`). Fewer in time, while that many are online, means the write is on the primary only and a
    /// failover could lose it, so it is answered as not done (the caller's retry, with its idempotency key, is safe).
    ///
    /// Fewer replicas *online* than asked for happens after a Sentinel failover, until the old primary returns as a
    /// replica. Refusing every write then would turn one node's loss into an outage; acknowledging on this node
    /// alone is safe only if it really is the primary, not an old one cut off by a partition whose writes the next
    /// resync discards. So such a write is acknowledged (on the primary's own append-only file, counted and logged
    /// as degraded, reported by [`Store::durability`]) only when a majority of the Sentinels name this node as the
    /// primary; otherwise, and always for a URL target, it is answered as not done.
    ///
    /// A confirmation only counts for the write it follows: if the store moved to another primary meanwhile, or the
    /// write connection was replaced (a `WAIT` on a fresh connection would vouch for nothing it wrote), the write is
    /// answered as not done.
    async fn confirm(&self, c: &mut ConnectionManager, ticket: Ticket) -> Result<(), StoreError> {
        if self.wait_replicas == 0 {
            return Ok(());
        }
        if self.generation.load(Ordering::Acquire) != ticket.generation {
            return Err(StoreError::Unavailable(
                "write not confirmed: the store moved to another primary while writing".into(),
            ));
        }
        let online = self.online_replicas().await?;
        let want = self.wait_replicas.min(online);
        if want < self.wait_replicas {
            if !self.sentinels_confirm_primary().await {
                let why = if self.is_sentinel() {
                    "no Sentinel majority names this primary"
                } else {
                    "without Sentinel nothing confirms this is still the primary"
                };
                return Err(StoreError::Unavailable(format!(
                    "write not confirmed: {online} of {} replicas online, and {why}",
                    self.wait_replicas
                )));
            }
            self.degraded.fetch_add(1, Ordering::Relaxed);
            let mut logged = self.degraded_logged.lock().await;
            if logged.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                *logged = Some(std::time::Instant::now());
                tracing::warn!(
                    online,
                    wanted = self.wait_replicas,
                    degraded_writes = self.degraded.load(Ordering::Relaxed),
                    "redis: fewer replicas online than SHAREGATE_REDIS_WAIT_REPLICAS; writes acknowledged on the \
                     Sentinel-confirmed primary alone"
                );
            }
        }
        if want == 0 {
            return Ok(());
        }
        let ms = u64::try_from(self.wait_timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        // WAIT and CLIENT ID in one pipeline: both answered by the same connection.
        let (acked, client_id): (i64, i64) = ::redis::pipe()
            .cmd("WAIT")
            .arg(want)
            .arg(ms)
            .cmd("CLIENT")
            .arg("ID")
            .query_async(c)
            .await
            .map_err(|e| self.failed(e))?;
        if ticket.client_id.is_some_and(|id| id != client_id) {
            return Err(StoreError::Unavailable(
                "write not confirmed: its connection was replaced before the replicas were asked".into(),
            ));
        }
        if acked < i64::from(want) {
            return Err(StoreError::Unavailable(format!(
                "write not confirmed: {acked} of {want} replicas acknowledged it within {ms} ms"
            )));
        }
        Ok(())
    }

    /// Replicas online at the primary (`state=online` in `INFO replication`: one still syncing holds nothing yet),
    /// read at most once a second.
    async fn online_replicas(&self) -> Result<u32, StoreError> {
        {
            let seen = self.replicas_seen.lock().await;
            if let Some((at, n)) = *seen
                && at.elapsed() < Duration::from_secs(1)
            {
                return Ok(n);
            }
        }
        let text: String = ::redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        let n = online_replicas(&info_fields(&text));
        *self.replicas_seen.lock().await = Some((std::time::Instant::now(), n));
        Ok(n)
    }

    /// Whether more than half of the Sentinels name the primary this store writes to (cached for a second).
    async fn sentinels_confirm_primary(&self) -> bool {
        let primary = self.primary();
        {
            let c = self.confirmed.lock().await;
            if let Some((at, p)) = &*c
                && at.elapsed() < Duration::from_secs(1)
            {
                return *p == primary;
            }
        }
        let (sentinels, master) = {
            let g = self.failover.reconnect.lock().await;
            match &g.0 {
                Reconnect::Sentinel { sentinels, master, .. } => (sentinels.clone(), master.clone()),
                Reconnect::Url(_) => return false,
            }
        };
        let mut asks = tokio::task::JoinSet::new();
        for s in sentinels.clone() {
            let master = master.clone();
            asks.spawn(async move {
                let ask = async {
                    let mut c = s.get_multiplexed_async_connection().await.ok()?;
                    let (host, port): (String, String) = ::redis::cmd("SENTINEL")
                        .arg("get-master-addr-by-name")
                        .arg(&master)
                        .query_async(&mut c)
                        .await
                        .ok()?;
                    Some(format!("{host}:{port}"))
                };
                tokio::time::timeout(Duration::from_millis(500), ask)
                    .await
                    .ok()
                    .flatten()
            });
        }
        let mut agree = 0;
        while let Some(named) = asks.join_next().await {
            if named.ok().flatten().as_deref() == Some(primary.as_str()) {
                agree += 1;
            }
        }
        let majority = agree * 2 > sentinels.len();
        let named = if majority { primary } else { String::new() };
        *self.confirmed.lock().await = Some((std::time::Instant::now(), named));
        majority
    }

    /// Writes acknowledged with fewer replicas than asked for (see [`Shared::confirm`]), since start.
    pub fn degraded_writes(&self) -> u64 {
        self.degraded.load(Ordering::Relaxed)
    }

    /// `host:port` of the primary in use.
    pub fn primary(&self) -> String {
        self.primary.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a namespace's hash.
    pub fn ns_key(&self, ns: Ns) -> String {
        format!("{}ns:{}", self.prefix, ns.name())
    }

    /// The Redis key of a log's hash.
    pub fn log_key(&self, log: Log) -> String {
        format!("{}log:{}", self.prefix, log.name())
    }

    fn counters_key(&self) -> String {
        format!("{}counters", self.prefix)
    }

    async fn read_pairs(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let limit = limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let pairs: Vec<(u64, Vec<u8>)> = self
            .scripts
            .read
            .key(self.log_key(log))
            .arg(from_seq.min(LUA_MAX_INT))
            .arg(limit)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(pairs)
    }

    /// The committer task of chained log `log` (one at a time per log, see [`RedisStore::append_chained`]): takes
    /// what is queued, up to [`CHAIN_BATCH`] entries, appends it in one script call, answers each caller with its
    /// own seq and hash or every caller with the call's error (the script is atomic: a batch lands whole or not at
    /// all, so no entry is acknowledged unless all of them are), and stops when the queue is empty.
    async fn commit_chained(self: Arc<Self>, log: Log) {
        // If the task is dropped mid-batch (the runtime stops), its callers are answered by their dropped senders;
        // the queue is reopened so a later append starts a committer again.
        struct Running<'a>(&'a Shared, Log, bool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                if self.2 {
                    let mut chains = self.0.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(q) = chains.get_mut(&self.1) {
                        q.running = false;
                        q.pending.clear();
                    }
                }
            }
        }
        let mut running = Running(&self, log, true);
        loop {
            let batch: Vec<PendingAppend> = {
                let mut chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let q = chains.entry(log).or_default();
                if q.pending.is_empty() {
                    q.running = false;
                    running.2 = false;
                    return;
                }
                let n = q.pending.len().min(CHAIN_BATCH);
                q.pending.drain(..n).collect()
            };
            let values: Vec<&[u8]> = batch.iter().map(|p| p.value.as_slice()).collect();
            match self.append_chained_now(log, &values).await {
                Ok(done) => {
                    for (p, d) in batch.into_iter().zip(done) {
                        let _ = p.reply.send(Ok(d)); // a caller that went away: its entry stands
                    }
                }
                Err(e) => {
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// Appends `values` to chained log `log` in one script call, in order; their seqs and hashes. Optimistic: the
    /// script writes only if the log's last seq is still the one the hashes were chained to, else the head is read
    /// again and the whole batch chained anew.
    async fn append_chained_now(&self, log: Log, values: &[&[u8]]) -> Result<Vec<(u64, [u8; 32])>, StoreError> {
        let mut guard = self.heads.lock().await;
        // Heads read from a primary this store has since left are not trusted: a failover may have lost the last
        // appends, and another replica may have chained different entries at those seqs.
        let generation = self.generation.load(Ordering::Acquire);
        if guard.0 != generation {
            *guard = (generation, HashMap::new());
        }
        let heads = &mut guard.1;
        let key = self.log_key(log);
        let n = u64::try_from(values.len()).map_err(|_| StoreError::Invalid("batch too large".into()))?;
        for attempt in 0..CHAIN_ATTEMPTS {
            let (seq, prev) = match heads.get(&log) {
                Some(h) => *h,
                None => self.load_head(log).await?,
            };
            let mut inv = self.scripts.chain_append.key(key.as_str());
            inv.arg(seq);
            let mut done = Vec::with_capacity(values.len());
            let mut hash = prev;
            for (i, value) in (1..).zip(values) {
                hash = chain_hash(&hash, value);
                let mut stored = Vec::with_capacity(32 + value.len());
                stored.extend_from_slice(&hash);
                stored.extend_from_slice(value);
                inv.arg(stored);
                done.push((seq + i, hash));
            }
            let (mut c, ticket) = self.write_conn().await?;
            let r: Result<i64, _> = inv.invoke_async(&mut c).await;
            match r {
                Ok(-1) => {
                    heads.remove(&log); // another replica appended: re-read the head
                    // After a lost race, back off for a random while that grows with the losses, so a replica
                    // appending in a tight loop cannot starve the others (seen under load with 2 x 200 appenders).
                    if attempt >= 2 {
                        let cap_us = 100u64 << attempt.min(9);
                        let mut r = [0u8; 8];
                        let jitter = getrandom::fill(&mut r).map_or(cap_us / 2, |()| u64::from_le_bytes(r) % cap_us);
                        tokio::time::sleep(std::time::Duration::from_micros(jitter)).await;
                    }
                }
                Ok(new_seq) => {
                    let new_seq = to_u64(new_seq, "chained seq")?;
                    if new_seq != seq + n {
                        heads.remove(&log);
                        return Err(StoreError::Corrupt(format!(
                            "log {}: appending {n} entries after {seq} answered {new_seq}",
                            log.name()
                        )));
                    }
                    heads.insert(log, (new_seq, hash));
                    // One WAIT for the whole batch: it follows the one script call on the same connection.
                    if let Err(e) = self.confirm(&mut c, ticket).await {
                        // Appended here but not confirmed by the replicas: a failover may lose it, so re-read.
                        heads.remove(&log);
                        return Err(e);
                    }
                    return Ok(done);
                }
                Err(e) => {
                    heads.remove(&log); // the append may or may not have landed
                    return Err(self.failed(e));
                }
            }
        }
        Err(StoreError::Contention(format!(
            "log {}: {CHAIN_ATTEMPTS} attempts lost to other appenders",
            log.name()
        )))
    }

    /// The chained log's last seq and hash, as Redis has them now.
    async fn load_head(&self, log: Log) -> Result<(u64, [u8; 32]), StoreError> {
        let (seq, stored): (u64, Vec<u8>) = self
            .scripts
            .head
            .key(self.log_key(log))
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        if seq == 0 {
            return Ok((0, GENESIS));
        }
        match stored.split_first_chunk::<32>() {
            Some((hash, _)) => Ok((seq, *hash)),
            None => Err(StoreError::Corrupt(format!(
                "log {} entry {seq} has no hash",
                log.name()
            ))),
        }
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        ::redis::cmd("HGET")
            .arg(self.ns_key(ns))
            .arg(key)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))
    }

    async fn put(&self, ns: Ns, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let (mut c, ticket) = self.write_conn().await?;
        let () = ::redis::cmd("HSET")
            .arg(self.ns_key(ns))
            .arg(key)
            .arg(value)
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        self.confirm(&mut c, ticket).await
    }

    async fn put_if_absent(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let (mut c, ticket) = self.write_conn().await?;
        let n: i64 = ::redis::cmd("HSETNX")
            .arg(self.ns_key(ns))
            .arg(key)
            .arg(value)
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        self.confirm(&mut c, ticket).await?;
        Ok(n == 1)
    }

    async fn delete(&self, ns: Ns, key: &str) -> Result<bool, StoreError> {
        let (mut c, ticket) = self.write_conn().await?;
        let n: i64 = ::redis::cmd("HDEL")
            .arg(self.ns_key(ns))
            .arg(key)
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        self.confirm(&mut c, ticket).await?;
        Ok(n == 1)
    }

    async fn scan(&self, ns: Ns, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let all: BTreeMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(self.ns_key(ns))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(all.into_iter().filter(|(k, _)| k.starts_with(prefix)).collect())
    }

    async fn incr(&self, counter: &str, by: u64) -> Result<u64, StoreError> {
        validate_ops(&[Op::Incr { counter, by }])?;
        let (mut c, ticket) = self.write_conn().await?;
        let v: i64 = ::redis::cmd("HINCRBY")
            .arg(self.counters_key())
            .arg(counter)
            .arg(by)
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        self.confirm(&mut c, ticket).await?;
        to_u64(v, "counter")
    }

    async fn counters(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        // HMGET in chunks: one round trip per chunk, and no single reply large enough to stall Redis.
        for chunk in names.chunks(4096) {
            let vals: Vec<Option<u64>> = ::redis::cmd("HMGET")
                .arg(self.counters_key())
                .arg(chunk)
                .query_async(&mut self.conn().await?)
                .await
                .map_err(|e| self.failed(e))?;
            out.extend(vals.into_iter().map(|v| v.unwrap_or(0)));
        }
        Ok(out)
    }

    async fn get_many(&self, ns: Ns, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(1024) {
            let vals: Vec<Option<Vec<u8>>> = ::redis::cmd("HMGET")
                .arg(self.ns_key(ns))
                .arg(chunk)
                .query_async(&mut self.conn().await?)
                .await
                .map_err(|e| self.failed(e))?;
            out.extend(vals);
        }
        Ok(out)
    }

    async fn counter(&self, counter: &str) -> Result<u64, StoreError> {
        let v: Option<u64> = ::redis::cmd("HGET")
            .arg(self.counters_key())
            .arg(counter)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(v.unwrap_or(0))
    }

    async fn atomic(&self, checks: &[Check<'_>], ops: &[Op<'_>]) -> Result<Option<Vec<u64>>, StoreError> {
        validate_ops(ops)?;
        let mut inv = self.scripts.atomic.prepare_invoke();
        inv.arg(checks.len());
        for check in checks {
            match *check {
                Check::Absent { ns, key } => inv.key(self.ns_key(ns)).arg("A").arg(key).arg(&b""[..]),
                Check::Equals { ns, key, value } => inv.key(self.ns_key(ns)).arg("E").arg(key).arg(value),
                Check::CounterAtMost { counter, value } => inv
                    .key(self.counters_key())
                    .arg("C")
                    .arg(counter)
                    .arg(value.min(LUA_MAX_INT)),
            };
        }
        let counters = self.counters_key();
        for op in ops {
            match *op {
                Op::Put { ns, key, value } => inv.key(self.ns_key(ns)).arg("P").arg(key).arg(value),
                Op::Delete { ns, key } => inv.key(self.ns_key(ns)).arg("D").arg(key).arg(""),
                Op::Incr { counter, by } => inv.key(counters.as_str()).arg("I").arg(counter).arg(by),
                Op::Raise { counter, to } => inv
                    .key(counters.as_str())
                    .arg("R")
                    .arg(counter)
                    .arg(to.min(LUA_MAX_INT)),
                Op::Append { log, value } => inv.key(self.log_key(log)).arg("L").arg("").arg(value),
            };
        }
        let (mut c, ticket) = self.write_conn().await?;
        let r: Option<Vec<i64>> = inv.invoke_async(&mut c).await.map_err(|e| self.failed(e))?;
        // A refused check wrote nothing: nothing to confirm.
        if r.is_some() {
            self.confirm(&mut c, ticket).await?;
        }
        r.map(|v| v.into_iter().map(|n| to_u64(n, "op result")).collect())
            .transpose()
    }

    async fn append_batch(&self, log: Log, values: &[Vec<u8>]) -> Result<u64, StoreError> {
        check_kind(log, false)?;
        if values.is_empty() {
            return self.last_seq(log).await;
        }
        let mut inv = self.scripts.append.key(self.log_key(log));
        for v in values {
            inv.arg(v.as_slice());
        }
        let (mut c, ticket) = self.write_conn().await?;
        let seq = inv.invoke_async(&mut c).await.map_err(|e| self.failed(e))?;
        self.confirm(&mut c, ticket).await?;
        Ok(seq)
    }

    async fn read_log(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_kind(log, false)?;
        self.read_pairs(log, from_seq, limit).await
    }

    async fn last_seq(&self, log: Log) -> Result<u64, StoreError> {
        let v: Option<u64> = ::redis::cmd("HGET")
            .arg(self.log_key(log))
            .arg("seq")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(v.unwrap_or(0))
    }

    async fn trim_log(&self, log: Log, below: u64) -> Result<(), StoreError> {
        check_kind(log, false)?;
        let key = self.log_key(log);
        loop {
            let (done, target): (i64, i64) = self
                .scripts
                .trim
                .key(key.as_str())
                .arg(below.min(LUA_MAX_INT))
                .arg(TRIM_CHUNK)
                .invoke_async(&mut self.conn().await?)
                .await
                .map_err(|e| self.failed(e))?;
            if done >= target {
                return Ok(());
            }
        }
    }

    async fn append_chained(&self, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), StoreError> {
        check_kind(log, true)?;
        // Group commit: queue the entry; the log's committer task (started here if none runs) writes everything
        // queued while its previous script call was in flight in one call, chained in queue order, and answers each
        // caller after that call (and its WAIT) succeeded. The committer is a task of its own so that a caller
        // that goes away (a client hanging up) never cancels its neighbours' write.
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut chains = self.chains.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let q = chains.entry(log).or_default();
            q.pending.push(PendingAppend {
                value: value.to_vec(),
                reply,
            });
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(Shared::commit_chained(self.0.clone(), log));
        }
        answer.await.map_err(|_| {
            StoreError::Unavailable(format!(
                "log {}: the append's group commit stopped before answering (shutting down?); it may or may not \
                 have been applied",
                log.name()
            ))
        })?
    }

    async fn read_chained(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<ChainedEntry>, StoreError> {
        check_kind(log, true)?;
        self.read_pairs(log, from_seq, limit)
            .await?
            .into_iter()
            .map(|(seq, stored)| match stored.split_first_chunk::<32>() {
                Some((hash, value)) => Ok(ChainedEntry {
                    seq,
                    hash: *hash,
                    value: value.to_vec(),
                }),
                None => Err(StoreError::Corrupt(format!(
                    "log {} entry {seq} has no hash",
                    log.name()
                ))),
            })
            .collect()
    }

    async fn durability(&self) -> Result<Durability, StoreError> {
        let mut c = self.conn().await?;
        let info = |section: &'static str| ::redis::cmd("INFO").arg(section).to_owned();
        let persistence: String = info("persistence")
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        let replication: String = info("replication")
            .query_async(&mut c)
            .await
            .map_err(|e| self.failed(e))?;
        // CONFIG is often refused (managed Redis, ACL users without +config): then the fsync policy is unknown.
        let mut config = BTreeMap::new();
        for name in ["appendfsync", "no-appendfsync-on-rewrite"] {
            let v: Option<String> = ::redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async::<Vec<String>>(&mut c)
                .await
                .ok()
                .and_then(|v| v.get(1).cloned());
            if let Some(v) = v {
                config.insert(name.to_string(), v);
            }
        }
        let mut d = judge_durability(
            &info_fields(&persistence),
            &info_fields(&replication),
            &config,
            self.wait_replicas,
            &self.primary(),
        );
        d.facts
            .insert("degraded_writes".into(), self.degraded_writes().to_string());
        Ok(d)
    }

    async fn clock_ms(&self) -> Result<Option<u64>, StoreError> {
        let (secs, micros): (u64, u64) = ::redis::cmd("TIME")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Some(secs.saturating_mul(1000).saturating_add(micros / 1000)))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let v: Value = ::redis::cmd("PING")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(|e| self.failed(e))?;
        match v {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(StoreError::Backend(format!("PING answered {other:?}"))),
        }
    }
}

/// `field:value` lines of an `INFO` section.
fn info_fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Replicas in `state=online` among the `slaveN:` lines of `INFO replication` (one still syncing holds nothing yet).
fn online_replicas(replication: &BTreeMap<String, String>) -> u32 {
    let n = replication
        .iter()
        .filter(|(k, v)| {
            k.starts_with("slave") && k[5..].bytes().all(|b| b.is_ascii_digit()) && v.contains("state=online")
        })
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What Redis's settings promise about an acknowledged write (docs/deploy.md, "Durability"). `config` holds what
/// `CONFIG GET` answered (`appendfsync`, `no-appendfsync-on-rewrite`), nothing when it was refused.
fn judge_durability(
    persistence: &BTreeMap<String, String>,
    replication: &BTreeMap<String, String>,
    config: &BTreeMap<String, String>,
    wait_replicas: u32,
    primary: &str,
) -> Durability {
    let get = |m: &BTreeMap<String, String>, k: &str| m.get(k).cloned().unwrap_or_else(|| "unknown".into());
    let aof = persistence.get("aof_enabled").map(String::as_str) == Some("1");
    let aof_ok = persistence.get("aof_last_write_status").is_none_or(|s| s == "ok");
    let role = get(replication, "role");
    let replicas = online_replicas(replication);
    let fsync = get(config, "appendfsync");
    let rewrite_pause = config.get("no-appendfsync-on-rewrite").map(String::as_str) == Some("yes");
    let onoff = if aof { "yes" } else { "no" };
    let facts = BTreeMap::from([
        ("primary".to_string(), primary.to_string()),
        ("role".to_string(), role.clone()),
        ("appendonly".to_string(), onoff.to_string()),
        ("appendfsync".to_string(), fsync.clone()),
        (
            "no_appendfsync_on_rewrite".to_string(),
            get(config, "no-appendfsync-on-rewrite"),
        ),
        (
            "aof_last_write_status".to_string(),
            get(persistence, "aof_last_write_status"),
        ),
        ("online_replicas".to_string(), replicas.to_string()),
        ("wait_replicas".to_string(), wait_replicas.to_string()),
    ]);
    let warning = DurabilityLevel::Warning;
    let (level, summary) = if role != "master" {
        (
            DurabilityLevel::Error,
            format!("connected to a Redis whose role is {role}, not the primary: writes are refused"),
        )
    } else if aof && !aof_ok {
        (
            DurabilityLevel::Error,
            "Redis cannot write its append-only file (aof_last_write_status is not ok): check its disk".into(),
        )
    } else if !aof && wait_replicas <= replicas && wait_replicas > 0 {
        (
            warning,
            format!(
                "{replicas} replica(s) hold every acknowledged write (WAIT), but the primary keeps no append-only \
                 file: if it restarts faster than Sentinel fails it over it comes back empty and its replicas \
                 resync to empty; set appendonly yes"
            ),
        )
    } else if !aof {
        (
            DurabilityLevel::Error,
            "Redis runs without its append-only file (appendonly no) and no replica acknowledges writes: a \
             restart loses every revocation acknowledged since the last snapshot; set appendonly yes"
                .into(),
        )
    } else if wait_replicas > replicas {
        (
            warning,
            format!(
                "degraded: writes should wait for {wait_replicas} replica(s) but {replicas} are online, so they are \
                 acknowledged on the primary's append-only file alone (appendfsync {fsync}) while a Sentinel \
                 majority names it the primary, refused otherwise, until a replica is back"
            ),
        )
    } else if wait_replicas > 0 {
        (
            DurabilityLevel::Ok,
            format!(
                "every acknowledged write is held by the primary and {wait_replicas} replica(s) (WAIT); \
                 appendonly yes, appendfsync {fsync}"
            ),
        )
    } else {
        match fsync.as_str() {
            "always" if rewrite_pause => (
                warning,
                "appendfsync always, but no-appendfsync-on-rewrite yes suspends the fsync during AOF rewrites: a \
                 machine crash then can lose acknowledged writes; set it to no"
                    .into(),
            ),
            "always" => (
                DurabilityLevel::Ok,
                "appendonly yes, appendfsync always: every acknowledged write is on disk".into(),
            ),
            "everysec" => (
                warning,
                "appendonly yes, appendfsync everysec: a machine crash or power loss can lose about the last second \
                 of acknowledged writes (a Redis crash loses nothing unless a slow disk had delayed the write, by up \
                 to 2 s); use appendfsync always, or replicas with SHAREGATE_REDIS_WAIT_REPLICAS"
                    .into(),
            ),
            "no" => (
                warning,
                "appendonly yes, appendfsync no: a machine crash can lose the last ~30 s of acknowledged writes; \
                 use appendfsync always or everysec"
                    .into(),
            ),
            _ => (
                warning,
                "appendonly yes, but appendfsync cannot be read (CONFIG refused): make sure it is always or everysec"
                    .into(),
            ),
        }
    };
    Durability { level, summary, facts }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn durability_is_judged_from_the_settings_that_keep_an_acknowledged_write() {
        let aof_on = fields(&[("aof_enabled", "1"), ("aof_last_write_status", "ok")]);
        let aof_off = fields(&[("aof_enabled", "0")]);
        let online = "ip=10.0.0.2,port=6379,state=online,offset=1,lag=0";
        let syncing = "ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=0";
        let primary = |n: usize| {
            let mut f = fields(&[("role", "master"), ("connected_slaves", &n.to_string())]);
            for i in 0..n {
                f.insert(format!("slave{i}"), online.to_string());
            }
            f
        };
        let fsync = |v: &str| fields(&[("appendfsync", v), ("no-appendfsync-on-rewrite", "no")]);
        let level = |p: &BTreeMap<String, String>,
                     r: &BTreeMap<String, String>,
                     c: &BTreeMap<String, String>,
                     w: u32| { judge_durability(p, r, c, w, "h:1").level };
        let refused = BTreeMap::new();
        assert_eq!(level(&aof_on, &primary(0), &fsync("always"), 0), DurabilityLevel::Ok);
        assert_eq!(
            level(&aof_on, &primary(0), &fsync("everysec"), 0),
            DurabilityLevel::Warning
        );
        assert_eq!(level(&aof_on, &primary(0), &refused, 0), DurabilityLevel::Warning);
        assert_eq!(
            level(&aof_off, &primary(0), &fsync("everysec"), 0),
            DurabilityLevel::Error
        );
        // fsync suspended during rewrites undoes `always`.
        let paused = fields(&[("appendfsync", "always"), ("no-appendfsync-on-rewrite", "yes")]);
        assert_eq!(level(&aof_on, &primary(0), &paused, 0), DurabilityLevel::Warning);
        // Replicas that acknowledge every write make up for a lazy fsync, not for missing replicas.
        assert_eq!(level(&aof_on, &primary(1), &fsync("everysec"), 1), DurabilityLevel::Ok);
        assert_eq!(
            level(&aof_on, &primary(0), &fsync("always"), 1),
            DurabilityLevel::Warning
        );
        assert_eq!(
            level(&aof_off, &primary(0), &fsync("always"), 1),
            DurabilityLevel::Error
        );
        // Replicas without a primary AOF: an auto-restarted empty primary would wipe them.
        assert_eq!(
            level(&aof_off, &primary(1), &fsync("always"), 1),
            DurabilityLevel::Warning
        );
        // A replica still syncing holds nothing yet: degraded, not ok.
        let mut resyncing = primary(0);
        resyncing.insert("connected_slaves".into(), "1".into());
        resyncing.insert("slave0".into(), syncing.into());
        assert_eq!(online_replicas(&resyncing), 0);
        assert_eq!(
            level(&aof_on, &resyncing, &fsync("everysec"), 1),
            DurabilityLevel::Warning
        );
        let replica = fields(&[("role", "slave"), ("connected_slaves", "0")]);
        assert_eq!(level(&aof_on, &replica, &fsync("always"), 0), DurabilityLevel::Error);
        // A broken AOF is an error even while degraded.
        let broken = fields(&[("aof_enabled", "1"), ("aof_last_write_status", "err")]);
        assert_eq!(level(&broken, &primary(0), &fsync("always"), 0), DurabilityLevel::Error);
        assert_eq!(level(&broken, &primary(0), &fsync("always"), 1), DurabilityLevel::Error);
        let d = judge_durability(&aof_on, &primary(0), &fsync("everysec"), 0, "h:1");
        assert!(d.summary.contains("power loss"), "{}", d.summary);
        assert_eq!(d.facts["appendfsync"], "everysec");
    }
}
