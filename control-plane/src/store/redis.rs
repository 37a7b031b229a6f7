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
//! caller re-reads the head and retries. Appends from one process are serialised by a local lock that also caches
//! the head, so only appends from other replicas cause retries.
//!
//! `rediss://` URLs are passed to the client as they are; they need the `redis` crate's TLS feature, which this
//! crate does not enable yet.

use super::{
    ChainedEntry, Check, GENESIS, Log, MAX_PAGE, Ns, Op, Store, StoreError, chain_hash, check_kind, validate_ops,
};
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::Mutex;

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

/// The Redis store. Cloning the connection is cheap (one multiplexed connection, reconnected when it drops).
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Scripts,
    /// Serialises this process's chained appends and caches each chained log's head (last seq, hash).
    heads: Mutex<HashMap<Log, (u64, [u8; 32])>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn map_err(e: RedisError) -> StoreError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} is negative: {v}")))
}

/// Lua numbers are doubles: keep seqs and limits where they are exact.
const LUA_MAX_INT: u64 = 1 << 53;

impl RedisStore {
    /// Connects to `url` (`redis://`, `rediss://`, `redis+unix://`) with keys under `prefix`, and checks that the
    /// server answers.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = Client::open(url).map_err(|e| StoreError::Invalid(format!("redis URL: {e}")))?;
        // Bounded timeouts: a dead Redis must fail /readyz and API calls, not hang them.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(3)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| StoreError::Open(format!("redis: {e}")))?;
        let store = RedisStore {
            conn,
            prefix: prefix.to_string(),
            scripts: Scripts {
                atomic: Script::new(ATOMIC_LUA),
                append: Script::new(APPEND_LUA),
                read: Script::new(READ_LUA),
                trim: Script::new(TRIM_LUA),
                head: Script::new(HEAD_LUA),
                chain_append: Script::new(CHAIN_APPEND_LUA),
            },
            heads: Mutex::new(HashMap::new()),
        };
        store.ping().await.map_err(|e| StoreError::Open(e.to_string()))?;
        Ok(store)
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
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(pairs)
    }

    /// The chained log's last seq and hash, as Redis has them now.
    async fn load_head(&self, log: Log) -> Result<(u64, [u8; 32]), StoreError> {
        let (seq, stored): (u64, Vec<u8>) = self
            .scripts
            .head
            .key(self.log_key(log))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
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
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn put(&self, ns: Ns, key: &str, value: &[u8]) -> Result<(), StoreError> {
        ::redis::cmd("HSET")
            .arg(self.ns_key(ns))
            .arg(key)
            .arg(value)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)
    }

    async fn put_if_absent(&self, ns: Ns, key: &str, value: &[u8]) -> Result<bool, StoreError> {
        let n: i64 = ::redis::cmd("HSETNX")
            .arg(self.ns_key(ns))
            .arg(key)
            .arg(value)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn delete(&self, ns: Ns, key: &str) -> Result<bool, StoreError> {
        let n: i64 = ::redis::cmd("HDEL")
            .arg(self.ns_key(ns))
            .arg(key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(n == 1)
    }

    async fn scan(&self, ns: Ns, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let all: BTreeMap<String, Vec<u8>> = ::redis::cmd("HGETALL")
            .arg(self.ns_key(ns))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        Ok(all.into_iter().filter(|(k, _)| k.starts_with(prefix)).collect())
    }

    async fn incr(&self, counter: &str, by: u64) -> Result<u64, StoreError> {
        validate_ops(&[Op::Incr { counter, by }])?;
        let v: i64 = ::redis::cmd("HINCRBY")
            .arg(self.counters_key())
            .arg(counter)
            .arg(by)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        to_u64(v, "counter")
    }

    async fn counters(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        let mut out = Vec::with_capacity(names.len());
        // HMGET in chunks: one round trip per chunk, and no single reply large enough to stall Redis.
        for chunk in names.chunks(4096) {
            let vals: Vec<Option<u64>> = ::redis::cmd("HMGET")
                .arg(self.counters_key())
                .arg(chunk)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(map_err)?;
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
                .query_async(&mut self.conn.clone())
                .await
                .map_err(map_err)?;
            out.extend(vals);
        }
        Ok(out)
    }

    async fn counter(&self, counter: &str) -> Result<u64, StoreError> {
        let v: Option<u64> = ::redis::cmd("HGET")
            .arg(self.counters_key())
            .arg(counter)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
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
        let r: Option<Vec<i64>> = inv.invoke_async(&mut self.conn.clone()).await.map_err(map_err)?;
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
        inv.invoke_async(&mut self.conn.clone()).await.map_err(map_err)
    }

    async fn read_log(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_kind(log, false)?;
        self.read_pairs(log, from_seq, limit).await
    }

    async fn last_seq(&self, log: Log) -> Result<u64, StoreError> {
        let v: Option<u64> = ::redis::cmd("HGET")
            .arg(self.log_key(log))
            .arg("seq")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
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
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(map_err)?;
            if done >= target {
                return Ok(());
            }
        }
    }

    async fn append_chained(&self, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), StoreError> {
        check_kind(log, true)?;
        let mut heads = self.heads.lock().await;
        let key = self.log_key(log);
        for attempt in 0..CHAIN_ATTEMPTS {
            let (seq, prev) = match heads.get(&log) {
                Some(h) => *h,
                None => self.load_head(log).await?,
            };
            let hash = chain_hash(&prev, value);
            let mut stored = Vec::with_capacity(32 + value.len());
            stored.extend_from_slice(&hash);
            stored.extend_from_slice(value);
            let r: Result<i64, _> = self
                .scripts
                .chain_append
                .key(key.as_str())
                .arg(seq)
                .arg(stored)
                .invoke_async(&mut self.conn.clone())
                .await;
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
                    heads.insert(log, (new_seq, hash));
                    return Ok((new_seq, hash));
                }
                Err(e) => {
                    heads.remove(&log); // the append may or may not have landed
                    return Err(map_err(e));
                }
            }
        }
        Err(StoreError::Contention(format!(
            "log {}: {CHAIN_ATTEMPTS} attempts lost to other appenders",
            log.name()
        )))
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

    async fn ping(&self) -> Result<(), StoreError> {
        let v: Value = ::redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(map_err)?;
        match v {
            Value::SimpleString(s) if s == "PONG" => Ok(()),
            other => Err(StoreError::Backend(format!("PING answered {other:?}"))),
        }
    }
}
