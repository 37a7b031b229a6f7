//! [`StoreOutbox`]: purge jobs kept in the service's own [`Store`], namespace [`Ns::Outbox`].
//!
//! Each job is one key, its id (`<revocation id>/<target>/<batch>`), holding the job as JSON. Keeping jobs in the
//! same store as revocations is what lets `POST /v1/revocations` write the revocation and its purge jobs in one
//! [`Store::atomic`] transaction (see [`StoreOutbox::record`]): after a crash either both exist or neither does.
//!
//! - `put` is `put_if_absent`, so re-planning a revocation writes nothing new;
//! - `update` is a compare-and-swap loop that applies [`may_replace`], so a `Done` job is never turned back into
//!   `Pending` even when two replicas write at once (a plain read-then-write could interleave);
//! - `due` scans the whole namespace. The store has no secondary index, and jobs stay after they are done (the
//!   receipt reads them), so this costs one read of every job per worker tick: fine for thousands of jobs, not
//!   for millions (see "Open points" in `docs/purge.md`);
//! - `jobs_for_revocation` is a prefix scan on `<revocation id>/`.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::outbox::{JobStatus, OutboxStore, PurgeJob, StoreError, may_replace};
use crate::store::{Ns, Store};

/// How many times `update` re-reads and retries when another writer changed the job between its read and its
/// compare-and-swap. Writers of one job are the worker of each replica and nothing else, so a handful is plenty.
const CAS_ROUNDS: usize = 8;

/// An [`OutboxStore`] over the control plane's [`Store`] (redb or Redis). Cheap to clone.
#[derive(Clone)]
pub struct StoreOutbox {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for StoreOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOutbox")
            .field("backend", &self.store.backend())
            .finish()
    }
}

impl StoreOutbox {
    /// The namespace jobs are kept in.
    pub const NS: Ns = Ns::Outbox;

    /// Jobs in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The stored form of a job: the bytes a caller puts under `job.id` in [`StoreOutbox::NS`] when it writes
    /// jobs in its own transaction (the revocation handler does).
    pub fn record(job: &PurgeJob) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(job).map_err(|e| StoreError(format!("encode job {}: {e}", job.id)))
    }

    fn decode(key: &str, bytes: &[u8]) -> Result<PurgeJob, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError(format!("decode job {key}: {e}")))
    }
}

fn backend(e: crate::store::StoreError) -> StoreError {
    StoreError(e.to_string())
}

#[async_trait]
impl OutboxStore for StoreOutbox {
    async fn put(&self, job: &PurgeJob) -> Result<bool, StoreError> {
        let bytes = Self::record(job)?;
        self.store
            .put_if_absent(Self::NS, &job.id, &bytes)
            .await
            .map_err(backend)
    }

    async fn due(&self, now: SystemTime, limit: usize) -> Result<Vec<PurgeJob>, StoreError> {
        let mut due = Vec::new();
        for (key, bytes) in self.store.scan(Self::NS, "").await.map_err(backend)? {
            match Self::decode(&key, &bytes) {
                Ok(job) if job.status == JobStatus::Pending && job.next_attempt_at <= now => due.push(job),
                Ok(_) => {}
                // One unreadable record must not stop every other purge: skip it, loudly. It stays in the store
                // for an operator to inspect.
                Err(e) => tracing::error!(job = %key, error = %e, "unreadable purge job skipped"),
            }
        }
        due.sort_by(|a, b| a.next_attempt_at.cmp(&b.next_attempt_at).then_with(|| a.id.cmp(&b.id)));
        due.truncate(limit);
        Ok(due)
    }

    async fn update(&self, job: &PurgeJob) -> Result<(), StoreError> {
        let new = Self::record(job)?;
        for _ in 0..CAS_ROUNDS {
            let Some(current) = self.store.get(Self::NS, &job.id).await.map_err(backend)? else {
                return Err(StoreError(format!("no job {}", job.id)));
            };
            let stored = Self::decode(&job.id, &current)?;
            if !may_replace(&stored.status, &job.status) || current == new {
                return Ok(());
            }
            // Swap only if nobody wrote since our read; otherwise read again and re-apply the rule, so a `Done`
            // written in between is seen and kept.
            if self
                .store
                .cas(Self::NS, &job.id, Some(&current), Some(&new))
                .await
                .map_err(backend)?
            {
                return Ok(());
            }
        }
        Err(StoreError(format!(
            "job {}: other writers kept changing it ({CAS_ROUNDS} rounds)",
            job.id
        )))
    }

    async fn jobs_for_revocation(&self, revocation_id: &str) -> Result<Vec<PurgeJob>, StoreError> {
        let mut jobs = Vec::new();
        for (key, bytes) in self
            .store
            .scan(Self::NS, &format!("{revocation_id}/"))
            .await
            .map_err(backend)?
        {
            // Unlike `due`, a receipt reports an unreadable job rather than silently leaving it out.
            let job = Self::decode(&key, &bytes)?;
            // The prefix alone would also match a revocation whose id extends this one with `/…`.
            if job.revocation_id == revocation_id {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::purge::PurgeRequest;
    use std::time::Duration;

    fn job(id: &str, rev: &str, at: SystemTime) -> PurgeJob {
        PurgeJob {
            id: id.into(),
            revocation_id: rev.into(),
            target: "t".into(),
            request: PurgeRequest {
                tags: vec!["sg-share-x".into()],
                ..Default::default()
            },
            attempts: 0,
            next_attempt_at: at,
            status: JobStatus::Pending,
            last_error: None,
            created_at: at,
        }
    }

    async fn store() -> (StoreOutbox, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::open_store("", dir.path()).await.unwrap();
        (StoreOutbox::new(s), dir)
    }

    #[tokio::test]
    async fn put_due_update_and_receipt() {
        let (s, _dir) = store().await;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut a = job("r1/t/0000", "r1", t + Duration::from_secs(5));
        let b = job("r1/t/0001", "r1", t);
        let other = job("r1/x/t/0000", "r1/x", t);
        assert!(s.put(&a).await.unwrap());
        assert!(!s.put(&a).await.unwrap(), "put never replaces");
        assert!(s.put(&b).await.unwrap());
        assert!(s.put(&other).await.unwrap());

        let due = s.due(t, 10).await.unwrap();
        assert_eq!(
            due.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["r1/t/0001", "r1/x/t/0000"]
        );
        let due = s.due(t + Duration::from_secs(5), 1).await.unwrap();
        assert_eq!(due.len(), 1, "limit");
        assert_eq!(due[0].id, "r1/t/0001", "earliest first");

        let ids: Vec<String> = s
            .jobs_for_revocation("r1")
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(
            ids,
            ["r1/t/0000", "r1/t/0001"],
            "another revocation's jobs are not on this receipt"
        );

        a.status = JobStatus::Done {
            cdn_id: "c".into(),
            at: t,
        };
        s.update(&a).await.unwrap();
        let mut stale = a.clone();
        stale.status = JobStatus::Pending;
        stale.attempts = 9;
        s.update(&stale).await.unwrap();
        let stored = s.jobs_for_revocation("r1").await.unwrap().remove(0);
        assert_eq!(stored, a, "a stale writer cannot re-open a done job");
        assert!(
            s.due(t + Duration::from_secs(3600), 10)
                .await
                .unwrap()
                .iter()
                .all(|j| j.id != a.id)
        );
        assert!(s.update(&job("nope", "r", t)).await.is_err());
    }

    #[tokio::test]
    async fn failed_gives_way_only_to_done() {
        let (s, _dir) = store().await;
        let t = SystemTime::UNIX_EPOCH;
        let mut j = job("r/t/0000", "r", t);
        s.put(&j).await.unwrap();
        j.status = JobStatus::Failed { reason: "403".into() };
        s.update(&j).await.unwrap();
        let mut pending = j.clone();
        pending.status = JobStatus::Pending;
        s.update(&pending).await.unwrap();
        assert!(matches!(
            s.jobs_for_revocation("r").await.unwrap()[0].status,
            JobStatus::Failed { .. }
        ));
        j.status = JobStatus::Done {
            cdn_id: "late".into(),
            at: t,
        };
        s.update(&j).await.unwrap();
        assert!(matches!(
            s.jobs_for_revocation("r").await.unwrap()[0].status,
            JobStatus::Done { .. }
        ));
    }

    #[tokio::test]
    async fn unreadable_job_does_not_block_others() {
        let (s, _dir) = store().await;
        let t = SystemTime::UNIX_EPOCH;
        s.store.put(StoreOutbox::NS, "bad/t/0000", b"{not json").await.unwrap();
        s.put(&job("good/t/0000", "good", t)).await.unwrap();
        let due = s.due(t, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert!(s.jobs_for_revocation("bad").await.is_err());
    }
}
