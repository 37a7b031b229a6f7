//! The embedded backend: everything in one redb file, every write durable before its call returns.
//!
//! All writes go through one writer thread (redb has one write transaction at a time anyway). The thread takes every
//! request queued while the previous commit was running, applies them in one write transaction in arrival order and
//! commits it with immediate durability (one fsync); then it answers each caller. So under load many callers share
//! one fsync (group commit) and an idle store answers after one commit, with no timer: the batching window is the
//! previous commit. A request that fails on its own (a counter overflow, a corrupt entry) is dropped from the batch,
//! which is then retried without it, so it never fails or half-applies its batch-mates. A storage error fails the
//! whole batch.
//!
//! Reads run in their own read transactions (redb is MVCC: readers never wait for the writer) and see every write
//! whose call has returned: point lookups on the calling thread, ranges and scans on tokio's blocking pool.
//!
//! File layout (tables): `ns:<name>` (`&str` → bytes) per [`Ns`]; `counters` (`&str` → `u64`); `log:<name>`
//! (`u64` seq → bytes; chained logs store `hash (32 bytes) || value`) per [`Log`]; `log_seq` (log name → last seq).
//!
//! Not done here: another process can't open the file while this one has it (redb locks it), and a call whose
//! future is dropped after it was queued may still be committed.

use super::{
    ChainedEntry, Check, GENESIS, Log, MAX_PAGE, Ns, Op, Store, StoreError, chain_hash, check_kind, validate_ops,
};
use ::redb::{
    Builder, Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition,
    WriteTransaction,
};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use tokio::sync::oneshot;

const COUNTERS: TableDefinition<'static, &str, u64> = TableDefinition::new("counters");
const LOG_SEQ: TableDefinition<'static, &str, u64> = TableDefinition::new("log_seq");

/// Most requests in one group commit (bounds the time a batch holds its callers).
const MAX_BATCH: usize = 4096;

/// redb's page cache: a bound, not an allocation; the working set is small except the issued log, which is written
/// more than read.
const CACHE_BYTES: usize = 128 << 20;

fn ns_table(ns: Ns) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(match ns {
        Ns::ApiKeys => "ns:api_keys",
        Ns::Assets => "ns:assets",
        Ns::Links => "ns:links",
        Ns::Shares => "ns:shares",
        Ns::Revocations => "ns:revocations",
        Ns::Keys => "ns:keys",
        Ns::Idempotency => "ns:idempotency",
        Ns::Outbox => "ns:outbox",
        Ns::Settings => "ns:settings",
        Ns::Leases => "ns:leases",
        Ns::Analytics => "ns:analytics",
        Ns::Views => "ns:views",
    })
}

fn log_table(log: Log) -> TableDefinition<'static, u64, &'static [u8]> {
    TableDefinition::new(match log {
        Log::Issued => "log:issued",
        Log::Revocations => "log:revocations",
        Log::Audit => "log:audit",
        Log::Events => "log:events",
        Log::Beacons => "log:beacons",
        Log::ViewIndex => "log:view_index",
    })
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Splits a stored chained entry into its hash and value.
fn split_chained(stored: &[u8]) -> Result<([u8; 32], &[u8]), StoreError> {
    match stored.split_first_chunk::<32>() {
        Some((hash, value)) => Ok((*hash, value)),
        None => Err(StoreError::Corrupt(format!("chained entry of {} bytes", stored.len()))),
    }
}

/// The embedded store. Cheap to share behind an `Arc`; dropping it stops the writer thread (waiting for a commit in
/// progress) and closes the file.
pub struct RedbStore {
    db: Arc<Database>,
    jobs: Option<mpsc::Sender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

/// A write request, owned so it can cross to the writer thread.
enum Req {
    /// Checks, ops, and an entry to append to a chained log if the checks hold (see [`Store::atomic_chained`]).
    Atomic {
        checks: Vec<OwnedCheck>,
        ops: Vec<OwnedOp>,
        chain: Option<(Log, Vec<u8>)>,
    },
    AppendChained {
        log: Log,
        value: Vec<u8>,
    },
    Trim {
        log: Log,
        below: u64,
    },
}

enum OwnedCheck {
    Absent(Ns, String),
    Equals(Ns, String, Vec<u8>),
    CounterAtMost(String, u64),
}

enum OwnedOp {
    Put(Ns, String, Vec<u8>),
    Delete(Ns, String),
    Incr(String, u64),
    Raise(String, u64),
    Append(Log, Vec<Vec<u8>>),
}

enum Out {
    /// The ops' results and, if one was asked for, the chained entry's seq and hash; `None` when a check failed.
    Atomic(Option<(Vec<u64>, Option<Chained>)>),
    Chained(u64, [u8; 32]),
    Done,
}

/// A chained entry's seq and hash.
type Chained = (u64, [u8; 32]);

struct Job {
    req: Req,
    reply: oneshot::Sender<Result<Out, StoreError>>,
}

/// How applying one request failed: alone, or taking the whole transaction with it.
enum Fail {
    Request(StoreError),
    Batch(StoreError),
}

impl From<::redb::StorageError> for Fail {
    fn from(e: ::redb::StorageError) -> Self {
        Fail::Batch(backend(e))
    }
}

impl From<::redb::TableError> for Fail {
    fn from(e: ::redb::TableError) -> Self {
        Fail::Batch(backend(e))
    }
}

impl RedbStore {
    /// Opens (or creates) the database file and starts its writer thread. Blocking: call it from
    /// `spawn_blocking` in async code ([`super::open_store`] does).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
        // Create every table now so read transactions never meet a missing one.
        let txn = db.begin_write().map_err(backend)?;
        {
            for ns in Ns::ALL {
                txn.open_table(ns_table(ns)).map_err(backend)?;
            }
            for log in Log::ALL {
                txn.open_table(log_table(log)).map_err(backend)?;
            }
            txn.open_table(COUNTERS).map_err(backend)?;
            txn.open_table(LOG_SEQ).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;

        let db = Arc::new(db);
        let (jobs, rx) = mpsc::channel();
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("sharegate-redb-writer".into())
            .spawn(move || writer_loop(&writer_db, &rx))
            .map_err(|e| StoreError::Open(format!("cannot start the writer thread: {e}")))?;
        Ok(RedbStore {
            db,
            jobs: Some(jobs),
            writer: Some(writer),
        })
    }

    async fn submit(&self, req: Req) -> Result<Out, StoreError> {
        let (reply, rx) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or(StoreError::Closed)?;
        jobs.send(Job { req, reply }).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(backend)?;
            f(&txn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("read task failed: {e}")))?
    }

    /// A read of a few keys, on the calling thread: a point lookup in a read transaction is a few microseconds of
    /// work on cached pages (redb's commit releases its locks before it flushes, so a reader never waits for an
    /// fsync), less than handing it to the blocking pool and back costs (two thread switches; the largest cost of
    /// an API key lookup under load). Ranges and scans, which may touch many pages, go through [`Self::read`].
    fn read_now<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        f(&txn)
    }

    async fn read_range(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let limit = limit.min(MAX_PAGE);
        self.read(move |txn| {
            let t = txn.open_table(log_table(log)).map_err(backend)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for item in t.range(from_seq..).map_err(backend)?.take(limit) {
                let (k, v) = item.map_err(backend)?;
                out.push((k.value(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once the queue is drained; joining it means the file is closed
        // (or about to be, when the last reader finishes) when drop returns, so a restart can reopen it.
        self.jobs.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn writer_loop(db: &Database, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit_batch(db, batch);
    }
}

fn commit_batch(db: &Database, mut batch: Vec<Job>) {
    while !batch.is_empty() {
        match try_commit(db, &batch) {
            Ok(outs) => {
                for (job, out) in batch.into_iter().zip(outs) {
                    let _ = job.reply.send(Ok(out)); // the caller may have gone; its write stands
                }
                return;
            }
            Err((Some(i), e)) => {
                let job = batch.remove(i);
                let _ = job.reply.send(Err(e));
            }
            Err((None, e)) => {
                for job in batch {
                    let _ = job.reply.send(Err(e.clone()));
                }
                return;
            }
        }
    }
}

/// One write transaction for the batch. On failure: the index of the request at fault, if it was one request.
fn try_commit(db: &Database, batch: &[Job]) -> Result<Vec<Out>, (Option<usize>, StoreError)> {
    let mut txn = db.begin_write().map_err(|e| (None, backend(e)))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| (None, backend(e)))?;
    let mut outs = Vec::with_capacity(batch.len());
    let failed = {
        let mut tables = Tables::new(&txn);
        batch
            .iter()
            .enumerate()
            .find_map(|(i, job)| match apply(&mut tables, &job.req) {
                Ok(out) => {
                    outs.push(out);
                    None
                }
                Err(fail) => Some((i, fail)),
            })
        // The tables close here, before the transaction ends.
    };
    if let Some((i, fail)) = failed {
        let _ = txn.abort();
        return Err(match fail {
            Fail::Request(e) => (Some(i), e),
            Fail::Batch(e) => (None, e),
        });
    }
    txn.commit().map_err(|e| (None, backend(e)))?;
    Ok(outs)
}

/// The tables a batch's transaction has opened, kept open until it ends: opening a table is a lookup in redb's
/// table tree and closing it writes its root back, which per op (a mint has eight) was a tenth of the writer's work.
struct Tables<'t> {
    txn: &'t WriteTransaction,
    ns: HashMap<Ns, Table<'t, &'static str, &'static [u8]>>,
    logs: HashMap<Log, Table<'t, u64, &'static [u8]>>,
    counters: Option<Table<'t, &'static str, u64>>,
    seqs: Option<Table<'t, &'static str, u64>>,
}

impl<'t> Tables<'t> {
    fn new(txn: &'t WriteTransaction) -> Self {
        Tables {
            txn,
            ns: HashMap::new(),
            logs: HashMap::new(),
            counters: None,
            seqs: None,
        }
    }

    fn ns(&mut self, ns: Ns) -> Result<&mut Table<'t, &'static str, &'static [u8]>, Fail> {
        Ok(match self.ns.entry(ns) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.txn.open_table(ns_table(ns))?),
        })
    }

    fn log(&mut self, log: Log) -> Result<&mut Table<'t, u64, &'static [u8]>, Fail> {
        Ok(match self.logs.entry(log) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.txn.open_table(log_table(log))?),
        })
    }

    fn counters(&mut self) -> Result<&mut Table<'t, &'static str, u64>, Fail> {
        Ok(match &mut self.counters {
            Some(t) => t,
            slot => slot.insert(self.txn.open_table(COUNTERS)?),
        })
    }

    fn seqs(&mut self) -> Result<&mut Table<'t, &'static str, u64>, Fail> {
        Ok(match &mut self.seqs {
            Some(t) => t,
            slot => slot.insert(self.txn.open_table(LOG_SEQ)?),
        })
    }
}

fn apply(t: &mut Tables<'_>, req: &Req) -> Result<Out, Fail> {
    match req {
        Req::Atomic { checks, ops, chain } => {
            for check in checks {
                let (ns, key, expected) = match check {
                    OwnedCheck::Absent(ns, key) => (*ns, key, None),
                    OwnedCheck::Equals(ns, key, v) => (*ns, key, Some(v.as_slice())),
                    OwnedCheck::CounterAtMost(name, max) => {
                        if t.counters()?.get(name.as_str())?.map_or(0, |g| g.value()) > *max {
                            return Ok(Out::Atomic(None));
                        }
                        continue;
                    }
                };
                let holds = match (t.ns(ns)?.get(key.as_str())?, expected) {
                    (None, None) => true,
                    (Some(cur), Some(want)) => cur.value() == want,
                    _ => false,
                };
                if !holds {
                    return Ok(Out::Atomic(None));
                }
            }
            let mut results = Vec::with_capacity(ops.len());
            for op in ops {
                results.push(apply_op(t, op)?);
            }
            let chained = match chain {
                Some((log, value)) => Some(append_chained(t, *log, value)?),
                None => None,
            };
            Ok(Out::Atomic(Some((results, chained))))
        }
        Req::AppendChained { log, value } => {
            let (seq, hash) = append_chained(t, *log, value)?;
            Ok(Out::Chained(seq, hash))
        }
        Req::Trim { log, below } => {
            check_kind(*log, false).map_err(Fail::Request)?;
            t.log(*log)?.retain_in(..*below, |_, _| false)?;
            Ok(Out::Done)
        }
    }
}

/// Appends `value` to chained log `log` in the writer's transaction; its seq and hash.
fn append_chained(t: &mut Tables<'_>, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), Fail> {
    check_kind(log, true).map_err(Fail::Request)?;
    let last = t.seqs()?.get(log.name())?.map(|g| g.value()).unwrap_or(0);
    let prev = if last == 0 {
        GENESIS
    } else {
        let stored = t.log(log)?.get(last)?.map(|g| g.value().to_vec());
        let stored = stored
            .ok_or_else(|| Fail::Request(StoreError::Corrupt(format!("log {} has no entry {last}", log.name()))))?;
        split_chained(&stored).map_err(Fail::Request)?.0
    };
    let hash = chain_hash(&prev, value);
    let mut stored = Vec::with_capacity(32 + value.len());
    stored.extend_from_slice(&hash);
    stored.extend_from_slice(value);
    let seq = last + 1;
    t.log(log)?.insert(seq, stored.as_slice())?;
    t.seqs()?.insert(log.name(), seq)?;
    Ok((seq, hash))
}

fn apply_op(t: &mut Tables<'_>, op: &OwnedOp) -> Result<u64, Fail> {
    match op {
        OwnedOp::Put(ns, key, value) => {
            t.ns(*ns)?.insert(key.as_str(), value.as_slice())?;
            Ok(0)
        }
        OwnedOp::Delete(ns, key) => {
            let existed = t.ns(*ns)?.remove(key.as_str())?.is_some();
            Ok(u64::from(existed))
        }
        OwnedOp::Incr(name, by) => {
            let counters = t.counters()?;
            let cur = counters.get(name.as_str())?.map(|g| g.value()).unwrap_or(0);
            let new = cur
                .checked_add(*by)
                .ok_or_else(|| Fail::Request(StoreError::Invalid(format!("counter {name} would overflow"))))?;
            counters.insert(name.as_str(), new)?;
            Ok(new)
        }
        OwnedOp::Raise(name, to) => {
            let counters = t.counters()?;
            let cur = counters.get(name.as_str())?.map(|g| g.value()).unwrap_or(0);
            if *to > cur {
                counters.insert(name.as_str(), *to)?;
            }
            Ok(cur.max(*to))
        }
        OwnedOp::Append(log, values) => {
            check_kind(*log, false).map_err(Fail::Request)?;
            let mut last = t.seqs()?.get(log.name())?.map(|g| g.value()).unwrap_or(0);
            let table = t.log(*log)?;
            for v in values {
                last += 1;
                table.insert(last, v.as_slice())?;
            }
            t.seqs()?.insert(log.name(), last)?;
            Ok(last)
        }
    }
}

fn owned_checks(checks: &[Check<'_>]) -> Vec<OwnedCheck> {
    checks
        .iter()
        .map(|c| match *c {
            Check::Absent { ns, key } => OwnedCheck::Absent(ns, key.to_string()),
            Check::Equals { ns, key, value } => OwnedCheck::Equals(ns, key.to_string(), value.to_vec()),
            Check::CounterAtMost { counter, value } => OwnedCheck::CounterAtMost(counter.to_string(), value),
        })
        .collect()
}

fn owned_ops(ops: &[Op<'_>]) -> Vec<OwnedOp> {
    ops.iter()
        .map(|op| match *op {
            Op::Put { ns, key, value } => OwnedOp::Put(ns, key.to_string(), value.to_vec()),
            Op::Delete { ns, key } => OwnedOp::Delete(ns, key.to_string()),
            Op::Incr { counter, by } => OwnedOp::Incr(counter.to_string(), by),
            Op::Raise { counter, to } => OwnedOp::Raise(counter.to_string(), to),
            Op::Append { log, value } => OwnedOp::Append(log, vec![value.to_vec()]),
        })
        .collect()
}

#[async_trait::async_trait]
impl Store for RedbStore {
    fn backend(&self) -> &'static str {
        "redb"
    }

    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read_now(|txn| {
            let t = txn.open_table(ns_table(ns)).map_err(backend)?;
            Ok(t.get(key).map_err(backend)?.map(|g| g.value().to_vec()))
        })
    }

    async fn counters(&self, names: &[String]) -> Result<Vec<u64>, StoreError> {
        let names = names.to_vec();
        self.read(move |txn| {
            let t = txn.open_table(COUNTERS).map_err(backend)?;
            let mut out = Vec::with_capacity(names.len());
            for n in &names {
                out.push(t.get(n.as_str()).map_err(backend)?.map(|g| g.value()).unwrap_or(0));
            }
            Ok(out)
        })
        .await
    }

    async fn get_many(&self, ns: Ns, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let keys = keys.to_vec();
        self.read(move |txn| {
            let t = txn.open_table(ns_table(ns)).map_err(backend)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                out.push(t.get(k.as_str()).map_err(backend)?.map(|g| g.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn scan(&self, ns: Ns, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |txn| {
            let t = txn.open_table(ns_table(ns)).map_err(backend)?;
            let mut out = Vec::new();
            for item in t.range(prefix.as_str()..).map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let k = k.value();
                if !k.starts_with(prefix.as_str()) {
                    break; // keys are sorted: past the prefix
                }
                out.push((k.to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn counter(&self, counter: &str) -> Result<u64, StoreError> {
        self.read_now(|txn| {
            let t = txn.open_table(COUNTERS).map_err(backend)?;
            Ok(t.get(counter).map_err(backend)?.map(|g| g.value()).unwrap_or(0))
        })
    }

    async fn atomic(&self, checks: &[Check<'_>], ops: &[Op<'_>]) -> Result<Option<Vec<u64>>, StoreError> {
        validate_ops(ops)?;
        let (checks, ops) = (owned_checks(checks), owned_ops(ops));
        match self
            .submit(Req::Atomic {
                checks,
                ops,
                chain: None,
            })
            .await?
        {
            Out::Atomic(r) => Ok(r.map(|(results, _)| results)),
            _ => Err(StoreError::Backend("writer answered another request kind".into())),
        }
    }

    async fn atomic_chained(
        &self,
        checks: &[Check<'_>],
        ops: &[Op<'_>],
        log: Log,
        entry: &[u8],
    ) -> Result<Option<(Vec<u64>, (u64, [u8; 32]))>, StoreError> {
        validate_ops(ops)?;
        check_kind(log, true)?;
        let req = Req::Atomic {
            checks: owned_checks(checks),
            ops: owned_ops(ops),
            chain: Some((log, entry.to_vec())),
        };
        match self.submit(req).await? {
            Out::Atomic(None) => Ok(None),
            Out::Atomic(Some((results, Some(chained)))) => Ok(Some((results, chained))),
            _ => Err(StoreError::Backend("writer answered another request kind".into())),
        }
    }

    async fn append_batch(&self, log: Log, values: &[Vec<u8>]) -> Result<u64, StoreError> {
        check_kind(log, false)?;
        if values.is_empty() {
            return self.last_seq(log).await;
        }
        let req = Req::Atomic {
            checks: Vec::new(),
            ops: vec![OwnedOp::Append(log, values.to_vec())],
            chain: None,
        };
        match self.submit(req).await? {
            Out::Atomic(Some((r, _))) => r.first().copied().ok_or_else(|| StoreError::Backend("no seq".into())),
            _ => Err(StoreError::Backend("writer answered another request kind".into())),
        }
    }

    async fn read_log(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        check_kind(log, false)?;
        self.read_range(log, from_seq, limit).await
    }

    async fn last_seq(&self, log: Log) -> Result<u64, StoreError> {
        self.read_now(|txn| {
            let t = txn.open_table(LOG_SEQ).map_err(backend)?;
            Ok(t.get(log.name()).map_err(backend)?.map(|g| g.value()).unwrap_or(0))
        })
    }

    async fn trim_log(&self, log: Log, below: u64) -> Result<(), StoreError> {
        check_kind(log, false)?;
        self.submit(Req::Trim { log, below }).await.map(|_| ())
    }

    async fn append_chained(&self, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), StoreError> {
        check_kind(log, true)?;
        match self
            .submit(Req::AppendChained {
                log,
                value: value.to_vec(),
            })
            .await?
        {
            Out::Chained(seq, hash) => Ok((seq, hash)),
            _ => Err(StoreError::Backend("writer answered another request kind".into())),
        }
    }

    async fn read_chained(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<ChainedEntry>, StoreError> {
        check_kind(log, true)?;
        self.read_range(log, from_seq, limit)
            .await?
            .into_iter()
            .map(|(seq, stored)| {
                let (hash, value) = split_chained(&stored)?;
                Ok(ChainedEntry {
                    seq,
                    hash,
                    value: value.to_vec(),
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.jobs.is_none() || self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::Closed);
        }
        self.read(|txn| txn.open_table(COUNTERS).map(|_| ()).map_err(backend))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::redb::TableHandle;

    #[test]
    fn table_names_follow_the_stable_names() {
        for ns in Ns::ALL {
            assert_eq!(ns_table(ns).name(), format!("ns:{}", ns.name()));
        }
        for log in Log::ALL {
            assert_eq!(log_table(log).name(), format!("log:{}", log.name()));
        }
    }
}
