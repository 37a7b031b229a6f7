//! The purge outbox: durable jobs, sent until the CDN confirms.
//!
//! A revocation writes its purge jobs (one per target and API call) through [`OutboxStore`] before it is
//! acknowledged; [`Outbox::run_due`] then sends the jobs that are due. The rules that make it safe across
//! crashes and restarts:
//!
//! - only `Pending` jobs are ever loaded, so a job marked `Done` is never sent again;
//! - before sending, a job is *leased*: its `next_attempt_at` moves `lease` ahead and is written back. If the
//!   process dies mid-call, the job is still `Pending` and becomes due again when the lease ends, so it is re-sent
//!   (purges are idempotent at the CDN, so a second purge is harmless; a lost one is not);
//! - job ids are derived from the revocation id, the target and the batch index, so planning the same revocation
//!   twice (a retry after a crash between the revocation and its jobs) writes nothing new.
//!
//! Retries use exponential backoff with "equal jitter" (half the step fixed, half random) from a seedable
//! generator, never sooner than a 429's `Retry-After`, and give up after `max_attempts` (the job is then `Failed`
//! and shows so on the receipt). The engine knows nothing about the storage backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{PurgeOutcome, PurgeRequest, PurgeTarget};

/// Where a job stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    /// Not yet confirmed by the CDN; sent when `next_attempt_at` has passed.
    Pending,
    /// Confirmed by the CDN.
    Done {
        /// The CDN's purge id(s).
        cdn_id: String,
        /// When the confirmation arrived.
        at: SystemTime,
    },
    /// Given up: a permanent refusal, or too many attempts.
    Failed {
        /// Why.
        reason: String,
    },
}

/// One purge call to one CDN for one revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeJob {
    /// `<revocation_id>/<target>/<batch index, 4 digits>`: stable, so re-planning a revocation is idempotent.
    pub id: String,
    /// The revocation this purge belongs to (the receipt lists jobs by it).
    pub revocation_id: String,
    /// [`PurgeTarget::name`] of the CDN to call.
    pub target: String,
    /// What this call purges (one batch, within the target's per-call limits).
    pub request: PurgeRequest,
    /// Calls made so far.
    pub attempts: u32,
    /// Not sent before this instant (backoff, `Retry-After`, or the lease of a call in flight).
    pub next_attempt_at: SystemTime,
    /// Where the job stands.
    pub status: JobStatus,
    /// The last failure, for the receipt and diagnosis.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the job was planned.
    pub created_at: SystemTime,
}

/// A storage failure, with the backend's message.
#[derive(Debug, thiserror::Error)]
#[error("outbox store: {0}")]
pub struct StoreError(pub String);

/// What can go wrong in the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// The store failed; nothing is lost (jobs stay pending and are retried).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Persistence for purge jobs. Implementations must be durable before returning `Ok` from `put`/`update`.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Inserts `job` unless a job with its id exists. Returns whether it was inserted.
    async fn put(&self, job: &PurgeJob) -> Result<bool, StoreError>;
    /// `Pending` jobs with `next_attempt_at <= now`, earliest first, at most `limit`.
    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<PurgeJob>, StoreError>;
    /// Replaces the job with the same id. A job already `Done` must stay `Done`: a late writer (another replica,
    /// a call that outlived its lease) must not bring it back. A write refused by [`may_replace`] is dropped
    /// without an error.
    async fn update(&self, job: &PurgeJob) -> Result<(), StoreError>;
    /// Every job of a revocation, in id order (for the receipt).
    async fn jobs_for_revocation(&self, revocation_id: &str) -> Result<Vec<PurgeJob>, StoreError>;
}

/// Whether a stored job whose status is `current` may be overwritten by a write carrying `new`: the rule every
/// [`OutboxStore::update`] applies. `Done` is final (the CDN confirmed; a late writer must not re-open it and get it
/// sent again). `Failed` gives way only to `Done`: a call that outlived its lease and then succeeded is better news
/// than another replica's refusal, but a stale `Pending` copy must not resurrect a job that was given up.
pub fn may_replace(current: &JobStatus, new: &JobStatus) -> bool {
    match current {
        JobStatus::Pending => true,
        JobStatus::Failed { .. } => matches!(new, JobStatus::Done { .. }),
        JobStatus::Done { .. } => false,
    }
}

/// An in-memory [`OutboxStore`] for tests and local runs. Jobs are kept as JSON, as a real store would keep
/// them, so anything that does not survive serialisation shows up here first. Clones share the same jobs, which
/// is how a test simulates a restart: a new [`Outbox`] over a clone of the store.
#[derive(Clone, Debug, Default)]
pub struct MemoryOutboxStore {
    jobs: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryOutboxStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with_jobs<T>(&self, f: impl FnOnce(&mut BTreeMap<String, Vec<u8>>) -> T) -> Result<T, StoreError> {
        let mut guard = self
            .jobs
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        Ok(f(&mut guard))
    }

    fn decode(bytes: &[u8]) -> Result<PurgeJob, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError(format!("decode job: {e}")))
    }

    fn encode(job: &PurgeJob) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(job).map_err(|e| StoreError(format!("encode job: {e}")))
    }

    /// Every job, in id order.
    pub fn all(&self) -> Result<Vec<PurgeJob>, StoreError> {
        self.with_jobs(|m| m.values().map(|b| Self::decode(b)).collect())?
    }
}

#[async_trait]
impl OutboxStore for MemoryOutboxStore {
    async fn put(&self, job: &PurgeJob) -> Result<bool, StoreError> {
        let bytes = Self::encode(job)?;
        self.with_jobs(|m| {
            if m.contains_key(&job.id) {
                false
            } else {
                m.insert(job.id.clone(), bytes);
                true
            }
        })
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<PurgeJob>, StoreError> {
        let mut due = Vec::new();
        for job in self.all()? {
            if job.status == JobStatus::Pending && job.next_attempt_at <= now {
                due.push(job);
            }
        }
        due.sort_by(|a, b| a.next_attempt_at.cmp(&b.next_attempt_at).then_with(|| a.id.cmp(&b.id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn update(&self, job: &PurgeJob) -> Result<(), StoreError> {
        let bytes = Self::encode(job)?;
        self.with_jobs(|m| {
            let current = m.get(&job.id).map(|b| Self::decode(b)).transpose()?;
            match current {
                None => Err(StoreError(format!("no job {}", job.id))),
                Some(c) if !may_replace(&c.status, &job.status) => Ok(()),
                Some(_) => {
                    m.insert(job.id.clone(), bytes);
                    Ok(())
                }
            }
        })?
    }

    async fn jobs_for_revocation(&self, revocation_id: &str) -> Result<Vec<PurgeJob>, StoreError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|j| j.revocation_id == revocation_id)
            .collect())
    }
}

/// A small seedable generator (SplitMix64) for backoff jitter. Not for secrets: it only spreads retries.
#[derive(Clone, Debug)]
pub struct Jitter {
    state: u64,
}

impl Jitter {
    /// A generator with a fixed seed: the same seed gives the same delays (tests).
    pub fn seeded(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the OS, falling back to the clock (jitter needs spread, not secrecy).
    pub fn from_entropy() -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Self::seeded(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A duration uniformly in `[0, max]` (millisecond steps).
    fn up_to(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis().min(u128::from(u64::MAX)) as u64;
        Duration::from_millis(self.next_u64() % (ms + 1))
    }
}

/// Operator knobs of the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Backoff step after the first failed attempt (doubles each attempt).
    pub base_backoff: Duration,
    /// Largest backoff step.
    pub max_backoff: Duration,
    /// Attempts before a job is marked `Failed` (at least 1).
    pub max_attempts: u32,
    /// How long a job being sent is hidden from other runs; must exceed the HTTP timeout.
    pub lease: Duration,
    /// Jobs loaded per `run_due`.
    pub batch: usize,
    /// Seed for the jitter; `None` seeds from the OS.
    pub jitter_seed: Option<u64>,
}

impl Default for OutboxConfig {
    /// 1 s doubling to 5 min, 20 attempts (about an hour of retries), 60 s lease, 64 jobs per run.
    fn default() -> Self {
        Self {
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: 20,
            lease: Duration::from_secs(60),
            batch: 64,
            jitter_seed: None,
        }
    }
}

impl OutboxConfig {
    /// The backoff step after `attempts` calls: `min(max, base·2^(attempts-1))`. The delay drawn is in
    /// `[step/2, step]`.
    pub fn backoff_step(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        self.base_backoff.saturating_mul(1u32 << exp).min(self.max_backoff)
    }
}

/// What one [`Outbox::run_due`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Jobs that were due.
    pub due: usize,
    /// Calls made to CDNs.
    pub sent: usize,
    /// Jobs confirmed.
    pub done: usize,
    /// Jobs rescheduled after a failure that may pass.
    pub retried: usize,
    /// Jobs given up.
    pub failed: usize,
    /// Jobs moved later without a call (target rate limited, or not configured).
    pub deferred: usize,
}

/// The outbox engine. Share it behind an `Arc`; see the module docs for its guarantees.
pub struct Outbox {
    store: Arc<dyn OutboxStore>,
    targets: BTreeMap<String, Arc<dyn PurgeTarget>>,
    config: OutboxConfig,
    jitter: Mutex<Jitter>,
    /// Targets that answered 429, until when. In memory only: after a restart, the next call asks again.
    paused: Mutex<HashMap<String, SystemTime>>,
    wake: Notify,
    /// The service store the jobs live in, when built with [`Outbox::over_store`]: lets the revocation handler
    /// write jobs in its own transaction instead of through [`Outbox::enqueue`].
    backing: Option<Arc<dyn crate::store::Store>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("targets", &self.targets.keys().collect::<Vec<_>>())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// An outbox over `store`, with no targets yet.
    pub fn new(store: Arc<dyn OutboxStore>, config: OutboxConfig) -> Self {
        let jitter = config.jitter_seed.map_or_else(Jitter::from_entropy, Jitter::seeded);
        Self {
            store,
            targets: BTreeMap::new(),
            config,
            jitter: Mutex::new(jitter),
            paused: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            backing: None,
        }
    }

    /// An outbox whose jobs live in the service's own store (namespace `outbox`, see [`StoreOutbox`]). This is the
    /// production setup: a revocation and its purge jobs can then be written in one transaction.
    ///
    /// [`StoreOutbox`]: super::StoreOutbox
    pub fn over_store(store: Arc<dyn crate::store::Store>, config: OutboxConfig) -> Self {
        let mut outbox = Self::new(Arc::new(super::StoreOutbox::new(store.clone())), config);
        outbox.backing = Some(store);
        outbox
    }

    /// When the oldest job not yet confirmed was planned (`None`: nothing pending): the purge backlog's age, for
    /// `sharegate_purge_backlog_oldest_seconds`.
    pub async fn oldest_pending(&self) -> Result<Option<SystemTime>, OutboxError> {
        // Every pending job is "due" by the end of time; the outbox is small (jobs leave once confirmed).
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 4);
        Ok(self
            .store
            .due(end, usize::MAX)
            .await?
            .iter()
            .map(|j| j.created_at)
            .min())
    }

    /// Whether this outbox reads its jobs from `store` itself, so jobs written into `store`'s `outbox` namespace
    /// by another transaction are the jobs it sends. Compared by identity: a second handle on the same database
    /// does not count (the caller then falls back to [`enqueue`](Self::enqueue)).
    pub fn shares_store(&self, store: &Arc<dyn crate::store::Store>) -> bool {
        self.backing
            .as_ref()
            .is_some_and(|b| std::ptr::addr_eq(Arc::as_ptr(b), Arc::as_ptr(store)))
    }

    /// Whether any CDN is configured.
    pub fn has_targets(&self) -> bool {
        !self.targets.is_empty()
    }

    /// Adds a CDN to purge, under its [`PurgeTarget::name`].
    pub fn with_target(mut self, target: Arc<dyn PurgeTarget>) -> Self {
        self.targets.insert(target.name().to_string(), target);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OutboxConfig {
        &self.config
    }

    /// The jobs for a revocation, without writing them: one per target and API call, due at `now`. For a store
    /// that writes them in the same transaction as the revocation itself.
    pub fn plan(&self, revocation_id: &str, request: &PurgeRequest, now: SystemTime) -> Vec<PurgeJob> {
        let mut jobs = Vec::new();
        for (name, target) in &self.targets {
            for (i, batch) in target.split(request).into_iter().enumerate() {
                jobs.push(PurgeJob {
                    // Zero-padded so id order (the store's tie-break) is batch order.
                    id: format!("{revocation_id}/{name}/{i:04}"),
                    revocation_id: revocation_id.to_string(),
                    target: name.clone(),
                    request: batch,
                    attempts: 0,
                    next_attempt_at: now,
                    status: JobStatus::Pending,
                    last_error: None,
                    created_at: now,
                });
            }
        }
        jobs
    }

    /// Plans and writes the jobs for a revocation (jobs that already exist are left as they are), wakes the
    /// worker, and returns the revocation's jobs as stored.
    pub async fn enqueue(
        &self,
        revocation_id: &str,
        request: &PurgeRequest,
        now: SystemTime,
    ) -> Result<Vec<PurgeJob>, OutboxError> {
        for job in self.plan(revocation_id, request, now) {
            self.store.put(&job).await?;
        }
        self.wake.notify_one();
        Ok(self.store.jobs_for_revocation(revocation_id).await?)
    }

    /// The purge part of a revocation's receipt: each job and its status.
    pub async fn receipt(&self, revocation_id: &str) -> Result<Vec<PurgeJob>, OutboxError> {
        Ok(self.store.jobs_for_revocation(revocation_id).await?)
    }

    /// Wakes the worker so new jobs go out now rather than at the next tick.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    fn paused_until(&self, target: &str, now: SystemTime) -> Option<SystemTime> {
        let paused = self.paused.lock().ok()?;
        paused.get(target).copied().filter(|until| *until > now)
    }

    fn pause(&self, target: &str, until: SystemTime) {
        if let Ok(mut paused) = self.paused.lock() {
            let entry = paused.entry(target.to_string()).or_insert(until);
            *entry = (*entry).max(until);
        }
    }

    fn backoff(&self, attempts: u32) -> Duration {
        let step = self.config.backoff_step(attempts);
        let half = step / 2;
        let extra = self.jitter.lock().map_or(Duration::ZERO, |mut j| j.up_to(step - half));
        half + extra
    }

    /// Sends every job due at `now`: per target in order, targets in parallel. A target that answers 429 gets no
    /// more calls until its `Retry-After` has passed. Store failures are returned after every result that could
    /// be written was written; jobs whose result was not written are re-sent when their lease ends.
    pub async fn run_due(&self, now: SystemTime) -> Result<RunReport, OutboxError> {
        let due = self.store.due(now, self.config.batch.max(1)).await?;
        let mut report = RunReport {
            due: due.len(),
            ..RunReport::default()
        };
        let mut groups: BTreeMap<String, (Arc<dyn PurgeTarget>, Vec<PurgeJob>)> = BTreeMap::new();
        for mut job in due {
            let Some(target) = self.targets.get(&job.target) else {
                // Keep the job: the target may be configured again; look again after the longest backoff.
                job.next_attempt_at = now + self.config.max_backoff;
                job.last_error = Some(format!("no purge target named {} is configured", job.target));
                tracing::warn!(job = %job.id, target = %job.target, "purge job for an unconfigured target");
                self.store.update(&job).await?;
                report.deferred += 1;
                continue;
            };
            if let Some(until) = self.paused_until(&job.target, now) {
                job.next_attempt_at = until;
                self.store.update(&job).await?;
                report.deferred += 1;
                continue;
            }
            job.next_attempt_at = now + self.config.lease;
            self.store.update(&job).await?;
            groups
                .entry(job.target.clone())
                .or_insert_with(|| (target.clone(), Vec::new()))
                .1
                .push(job);
        }

        let mut tasks = tokio::task::JoinSet::new();
        for (_, (target, jobs)) in groups {
            tasks.spawn(async move {
                let mut results = Vec::with_capacity(jobs.len());
                let mut limited = false;
                for job in jobs {
                    if limited {
                        // Same account, same bucket: calling again now would only earn another 429.
                        results.push((job, None));
                        continue;
                    }
                    let outcome = target.purge(&job.request).await;
                    limited = matches!(outcome, PurgeOutcome::RetryAfter(_));
                    results.push((job, Some(outcome)));
                }
                results
            });
        }

        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            let results = match joined {
                Ok(r) => r,
                Err(e) => {
                    // The jobs of that task stay leased and are re-sent when the lease ends.
                    tracing::error!(error = %e, "purge task ended abnormally");
                    continue;
                }
            };
            let wait = results.iter().find_map(|(_, o)| match o {
                Some(PurgeOutcome::RetryAfter(d)) => Some(*d),
                _ => None,
            });
            for (job, outcome) in results {
                let written = match outcome {
                    Some(outcome) => {
                        report.sent += 1;
                        self.apply(job, outcome, now, &mut report).await
                    }
                    None => {
                        report.deferred += 1;
                        let mut job = job;
                        job.next_attempt_at = now + wait.unwrap_or(super::DEFAULT_RATE_LIMIT_WAIT);
                        self.store.update(&job).await
                    }
                };
                if let Err(e) = written {
                    tracing::error!(error = %e, "purge job result not written; re-sent after its lease");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(report),
        }
    }

    async fn apply(
        &self,
        mut job: PurgeJob,
        outcome: PurgeOutcome,
        now: SystemTime,
        report: &mut RunReport,
    ) -> Result<(), StoreError> {
        job.attempts = job.attempts.saturating_add(1);
        let retry = |job: &mut PurgeJob, reason: String, delay: Duration, report: &mut RunReport| {
            if job.attempts >= self.config.max_attempts.max(1) {
                tracing::warn!(job = %job.id, attempts = job.attempts, %reason, "purge job given up");
                job.status = JobStatus::Failed {
                    reason: format!("gave up after {} attempts: {reason}", job.attempts),
                };
                report.failed += 1;
            } else {
                tracing::debug!(job = %job.id, attempts = job.attempts, ?delay, %reason, "purge job retried later");
                job.next_attempt_at = now + delay;
                report.retried += 1;
            }
            job.last_error = Some(reason);
        };
        match outcome {
            PurgeOutcome::Done { cdn_id } => {
                tracing::info!(job = %job.id, revocation = %job.revocation_id, %cdn_id, "purge confirmed");
                job.status = JobStatus::Done { cdn_id, at: now };
                report.done += 1;
            }
            PurgeOutcome::RetryAfter(wait) => {
                self.pause(&job.target, now + wait);
                // Never sooner than the CDN asked; later if our own backoff has grown past it.
                let delay = wait.max(self.backoff(job.attempts));
                retry(
                    &mut job,
                    format!("rate limited (retry after {}s)", wait.as_secs()),
                    delay,
                    report,
                );
            }
            PurgeOutcome::Transient { reason } => {
                let delay = self.backoff(job.attempts);
                retry(&mut job, reason, delay, report);
            }
            PurgeOutcome::Failed { reason } => {
                tracing::warn!(job = %job.id, revocation = %job.revocation_id, %reason, "purge refused");
                job.status = JobStatus::Failed { reason: reason.clone() };
                job.last_error = Some(reason);
                report.failed += 1;
            }
        }
        self.store.update(&job).await
    }
}

/// Runs [`Outbox::run_due`] every `tick` (and at once when [`Outbox::notify`] is called, or while a full batch
/// came back). Abort the handle to stop: a job in flight then stays leased and is re-sent after the lease.
pub fn spawn_outbox_worker(outbox: Arc<Outbox>, tick: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let more = match outbox.run_due(SystemTime::now()).await {
                Ok(report) => {
                    if report.due > 0 {
                        tracing::debug!(?report, "purge outbox run");
                    }
                    report.due >= outbox.config.batch.max(1)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "purge outbox run failed");
                    false
                }
            };
            if more {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                () = outbox.wake.notified() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_bounds() {
        let cfg = OutboxConfig {
            jitter_seed: Some(7),
            ..OutboxConfig::default()
        };
        assert_eq!(cfg.backoff_step(1), Duration::from_secs(1));
        assert_eq!(cfg.backoff_step(4), Duration::from_secs(8));
        assert_eq!(cfg.backoff_step(40), Duration::from_secs(300));
        let outbox = Outbox::new(Arc::new(MemoryOutboxStore::new()), cfg.clone());
        for attempts in 1..25 {
            let step = cfg.backoff_step(attempts);
            let d = outbox.backoff(attempts);
            assert!(d >= step / 2 && d <= step, "{attempts}: {d:?} vs {step:?}");
        }
    }

    #[test]
    fn same_seed_same_jitter() {
        let mut a = Jitter::seeded(42);
        let mut b = Jitter::seeded(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[tokio::test]
    async fn memory_store_never_regresses_done() {
        let store = MemoryOutboxStore::new();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut job = PurgeJob {
            id: "r/t/0".into(),
            revocation_id: "r".into(),
            target: "t".into(),
            request: PurgeRequest {
                tags: vec!["sg-share-x".into()],
                ..Default::default()
            },
            attempts: 0,
            next_attempt_at: now,
            status: JobStatus::Pending,
            last_error: None,
            created_at: now,
        };
        assert!(matches!(store.put(&job).await, Ok(true)));
        assert!(matches!(store.put(&job).await, Ok(false)));
        job.status = JobStatus::Done {
            cdn_id: "c".into(),
            at: now,
        };
        assert!(store.update(&job).await.is_ok());
        job.status = JobStatus::Pending;
        assert!(store.update(&job).await.is_ok());
        let Ok(all) = store.all() else { panic!("store") };
        assert!(matches!(all[0].status, JobStatus::Done { .. }));
        assert!(matches!(store.due(now, 10).await, Ok(v) if v.is_empty()));
    }
}
