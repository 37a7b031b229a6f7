//! Purges against local fakes of Cloudflare's and Fastly's purge APIs.
//!
//! The real APIs cannot be reached from here, so each fake checks a request the way the documented API does
//! (method, path, auth header, content type, body schema, per-call limits) and answers with the documented bodies.
//! A fake can be told to answer 429, a 5xx, or nothing at all for its next valid requests. It counts the valid
//! requests it received, so a test can prove what was (not) sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cdn_fakes::*;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use sharegate_control_plane::purge::{
    CloudflareLimits, CloudflarePurger, FastlyPurger, JobStatus, MemoryOutboxStore, Outbox, OutboxConfig, OutboxStore,
    PurgeJob, PurgeRequest, PurgeTarget, Revoked, spawn_outbox_worker,
};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

fn cf(fake: &Fake) -> CloudflarePurger {
    CloudflarePurger::new(format!("{}/client/v4", fake.base()), ZONE, CF_TOKEN).unwrap()
}

fn fastly(fake: &Fake, soft: bool) -> FastlyPurger {
    FastlyPurger::new(fake.base(), SERVICE, FASTLY_KEY, soft).unwrap()
}

fn config() -> OutboxConfig {
    OutboxConfig {
        jitter_seed: Some(7),
        ..OutboxConfig::default()
    }
}

fn outbox(store: &MemoryOutboxStore, targets: Vec<Arc<dyn PurgeTarget>>) -> Outbox {
    targets
        .into_iter()
        .fold(Outbox::new(Arc::new(store.clone()), config()), Outbox::with_target)
}

fn tags(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("sg-asset-{i:04}")).collect()
}

async fn one_job(store: &MemoryOutboxStore) -> PurgeJob {
    let all = store.all().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    all.into_iter().next().unwrap()
}

fn is_done(job: &PurgeJob) -> bool {
    matches!(job.status, JobStatus::Done { .. })
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn happy_path_both_cdns() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, true))]);

    // An asset takedown: the asset tag, plus its prefix on the CDN host.
    let hosts = vec!["cdn.example.com".to_string()];
    let asset = PurgeRequest::for_revocation(&Revoked::Asset("a1"), &hosts);
    let jobs = ob.enqueue("rev-1", &asset, t0()).await.unwrap();
    // Cloudflare: one call for the tag, one for the prefix. Fastly: one single-key call (no prefix purge).
    assert_eq!(jobs.len(), 3, "{jobs:#?}");

    // A share revocation plus a single file, so Fastly's bulk and URL endpoints are used too.
    let mut share = PurgeRequest::for_revocation(&Revoked::Share("s1"), &hosts);
    share.tags.push("sg-asset-a2".into());
    share.files.push("https://cdn.example.com/a2/master.m3u8".into());
    ob.enqueue("rev-2", &share, t0()).await.unwrap();

    let report = ob.run_due(t0()).await.unwrap();
    assert_eq!((report.due, report.sent, report.done), (7, 7, 7), "{report:?}");

    let receipt = ob.receipt("rev-1").await.unwrap();
    assert!(receipt.iter().all(is_done), "{receipt:#?}");
    let ids: BTreeSet<String> = receipt
        .iter()
        .filter_map(|j| match &j.status {
            JobStatus::Done { cdn_id, at } => {
                assert_eq!(*at, t0());
                Some(cdn_id.clone())
            }
            _ => None,
        })
        .collect();
    assert!(
        ids.iter().any(|i| i.starts_with("cf-purge-")) && ids.iter().any(|i| i.starts_with("fy-")),
        "{ids:?}"
    );

    let cf_bodies: Vec<Value> = cff.seen().into_iter().map(|s| s.body).collect();
    assert!(cf_bodies.contains(&json!({"tags": ["sg-asset-a1"]})));
    assert!(cf_bodies.contains(&json!({"prefixes": ["cdn.example.com/a1/"]})));
    assert!(cf_bodies.contains(&json!({"tags": ["sg-share-s1", "sg-asset-a2"]})));
    assert!(cf_bodies.contains(&json!({"files": ["https://cdn.example.com/a2/master.m3u8"]})));
    assert_eq!(cff.count(), 4);

    let fy = fyf.seen();
    assert!(fy.iter().all(|s| s.soft), "soft purge header on every call");
    let paths: BTreeSet<&str> = fy.iter().map(|s| s.path.as_str()).collect();
    assert!(
        paths.contains(format!("/service/{SERVICE}/purge/sg-asset-a1").as_str()),
        "{paths:?}"
    );
    assert!(paths.contains(format!("/service/{SERVICE}/purge").as_str()));
    assert!(paths.contains("/purge/cdn.example.com/a2/master.m3u8"));
    assert!(
        fy.iter()
            .any(|s| s.body == json!({"surrogate_keys": ["sg-share-s1", "sg-asset-a2"]}))
    );
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());
}

#[tokio::test]
async fn fakes_are_strict() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let http = reqwest::Client::new();
    let cf_url = format!("{}/client/v4/zones/{ZONE}/purge_cache", cff.base());
    let cf_send = |body: String, auth: Option<&str>, ctype: &str| {
        let mut r = http.post(&cf_url).header("content-type", ctype).body(body);
        if let Some(a) = auth {
            r = r.header("authorization", format!("Bearer {a}"));
        }
        r.send()
    };
    let json = "application/json";
    let bad_bodies = [
        json!({"tags": ["a"], "files": ["https://x/1"]}),
        json!({}),
        json!({"tags": []}),
        json!({"tags": tags(CF_MAX_PER_CALL + 1)}),
        json!({"prefixes": ["https://cdn.example.com/a1/"]}),
        json!({"files": ["/relative"]}),
        json!({"tags": "sg-asset-a1"}),
        json!({"purge_everything": false}),
        json!({"everything": true}),
    ];
    for body in &bad_bodies {
        let resp = cf_send(body.to_string(), Some(CF_TOKEN), json).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: Value = resp.json_or_panic().await;
        assert_eq!(v["success"], json!(false));
        assert!(v["errors"][0]["code"].is_number(), "{v}");
    }
    let ok = json!({"tags": ["sg-asset-a1"]}).to_string();
    assert_eq!(cf_send(ok.clone(), None, json).await.unwrap().status(), 403);
    assert_eq!(cf_send(ok.clone(), Some("wrong"), json).await.unwrap().status(), 403);
    assert_eq!(
        cf_send(ok.clone(), Some(CF_TOKEN), "text/plain")
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        cf_send("{not json".into(), Some(CF_TOKEN), json)
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(http.get(&cf_url).send().await.unwrap().status(), 405);
    assert_eq!(cff.count(), 0, "nothing malformed was accepted");
    assert_eq!(cff.rejected().len(), bad_bodies.len() + 4);
    let good = cf_send(ok, Some(CF_TOKEN), json).await.unwrap();
    assert_eq!(good.status(), 200);
    let v: Value = good.json_or_panic().await;
    assert_eq!(v["success"], json!(true));
    assert!(v["result"]["id"].is_string());
    assert_eq!(v["errors"], json!([]));

    let fy_bulk = format!("{}/service/{SERVICE}/purge", fyf.base());
    let fy_send = |url: String, body: Option<Value>, key: Option<&str>| {
        let mut r = http.post(url);
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_string());
        }
        if let Some(k) = key {
            r = r.header("Fastly-Key", k);
        }
        r.send()
    };
    let keys = json!({"surrogate_keys": ["sg-asset-a1"]});
    assert_eq!(
        fy_send(fy_bulk.clone(), Some(keys.clone()), None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        fy_send(fy_bulk.clone(), Some(keys.clone()), Some("wrong"))
            .await
            .unwrap()
            .status(),
        401
    );
    for body in [
        json!({"surrogate_keys": []}),
        json!({"surrogate_keys": tags(FASTLY_MAX_KEYS + 1)}),
        json!({"surrogate_keys": ["has space"]}),
        json!({"surrogate_keys": [""]}),
        json!({"surrogate_keys": ["a"], "extra": 1}),
        json!({"keys": ["a"]}),
    ] {
        assert_eq!(
            fy_send(fy_bulk.clone(), Some(body.clone()), Some(FASTLY_KEY))
                .await
                .unwrap()
                .status(),
            400,
            "{body}"
        );
    }
    let other_service = format!("{}/service/nope/purge/sg-asset-a1", fyf.base());
    assert_eq!(
        fy_send(other_service, None, Some(FASTLY_KEY)).await.unwrap().status(),
        404
    );
    assert_eq!(fyf.count(), 0);
    let single = fy_send(format!("{fy_bulk}/sg-asset-a1"), None, Some(FASTLY_KEY))
        .await
        .unwrap();
    assert_eq!(single.status(), 200);
    let v: Value = single.json_or_panic().await;
    assert_eq!(v["status"], json!("ok"));
    assert!(v["id"].is_string());
}

#[tokio::test]
async fn rate_limit_honours_retry_after() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::RateLimit(3)]);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(cf(&cff))]);
    // 40 tags at 30 per call: two jobs for the same zone.
    ob.enqueue(
        "rev-rl",
        &PurgeRequest {
            tags: tags(40),
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    let r = ob.run_due(t0()).await.unwrap();
    // The first call is rate limited; the second job is not even sent (same bucket) and waits as long.
    assert_eq!((r.sent, r.retried, r.deferred), (1, 1, 1), "{r:?}");
    assert_eq!(cff.count(), 1);
    let jobs = store.all().unwrap();
    assert!(
        jobs.iter().all(|j| j.next_attempt_at == t0() + Duration::from_secs(3)),
        "{jobs:#?}"
    );
    assert_eq!(jobs[0].attempts, 1);
    assert_eq!(jobs[1].attempts, 0, "a job not sent is not an attempt");
    assert!(jobs[0].last_error.as_deref().unwrap().contains("rate limited"));

    // Not before Retry-After.
    let r = ob.run_due(t0() + Duration::from_millis(2999)).await.unwrap();
    assert_eq!((r.due, r.sent), (0, 0));
    assert_eq!(cff.count(), 1);

    let r = ob.run_due(t0() + Duration::from_secs(3)).await.unwrap();
    assert_eq!((r.sent, r.done), (2, 2), "{r:?}");
    assert_eq!(cff.count(), 3);
    assert!(store.all().unwrap().iter().all(is_done));
}

#[tokio::test]
async fn fastly_rate_limit_reads_reset_header() {
    let fyf = fastly_fake().await;
    fyf.script(&[Scripted::RateLimit(4)]);
    let store = MemoryOutboxStore::new();
    let ob = outbox(&store, vec![Arc::new(fastly(&fyf, false))]);
    ob.enqueue(
        "rev-f",
        &PurgeRequest {
            tags: vec!["sg-share-s9".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    ob.run_due(t0()).await.unwrap();
    let job = one_job(&store).await;
    // Fastly sends Fastly-RateLimit-Reset (epoch seconds, against the real clock): about 4 s from now.
    let wait = job.next_attempt_at.duration_since(t0()).unwrap();
    assert!(
        wait >= Duration::from_secs(2) && wait <= Duration::from_secs(5),
        "{wait:?}"
    );
    assert!(!fyf.seen()[0].soft);
    ob.run_due(job.next_attempt_at).await.unwrap();
    assert!(is_done(&one_job(&store).await));
    assert_eq!(fyf.count(), 2);
}

/// Runs a request against a Cloudflare fake that answers 503 twice, returning the two backoff delays.
async fn backoff_delays(seed: u64) -> (Duration, Duration) {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::Status(503), Scripted::Status(503)]);
    let store = MemoryOutboxStore::new();
    let cfg = OutboxConfig {
        jitter_seed: Some(seed),
        ..OutboxConfig::default()
    };
    let ob = Outbox::new(Arc::new(store.clone()), cfg).with_target(Arc::new(cf(&cff)));
    ob.enqueue(
        "rev-5xx",
        &PurgeRequest {
            tags: vec!["sg-asset-x".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    ob.run_due(t0()).await.unwrap();
    let job = one_job(&store).await;
    assert_eq!((job.attempts, &job.status), (1, &JobStatus::Pending));
    assert!(job.last_error.as_deref().unwrap().contains("503"), "{job:?}");
    let first = job.next_attempt_at;
    let d1 = first.duration_since(t0()).unwrap();
    assert!(
        d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1),
        "{d1:?}"
    );

    // Not sent before the backoff has passed.
    assert_eq!(ob.run_due(first - Duration::from_millis(1)).await.unwrap().sent, 0);
    ob.run_due(first).await.unwrap();
    let job = one_job(&store).await;
    let d2 = job.next_attempt_at.duration_since(first).unwrap();
    assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2), "{d2:?}");

    ob.run_due(job.next_attempt_at).await.unwrap();
    let job = one_job(&store).await;
    assert!(is_done(&job));
    assert_eq!(job.attempts, 3);
    assert_eq!(cff.count(), 3);
    (d1, d2)
}

#[tokio::test]
async fn server_errors_retried_with_reproducible_backoff() {
    let a = backoff_delays(11).await;
    let b = backoff_delays(11).await;
    assert_eq!(a, b, "the same seed gives the same jitter");
}

#[tokio::test]
async fn permanent_refusals_fail_without_retrying() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let bad_cf = CloudflarePurger::new(format!("{}/client/v4", cff.base()), ZONE, "revoked-token").unwrap();
    let bad_fy = FastlyPurger::new(fyf.base(), SERVICE, "wrong-key", false).unwrap();
    let ob = outbox(&store, vec![Arc::new(bad_cf), Arc::new(bad_fy)]);
    ob.enqueue(
        "rev-403",
        &PurgeRequest {
            tags: vec!["sg-share-s1".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();

    let r = ob.run_due(t0()).await.unwrap();
    assert_eq!((r.sent, r.failed, r.retried), (2, 2, 0), "{r:?}");
    for job in store.all().unwrap() {
        let JobStatus::Failed { reason } = &job.status else {
            panic!("{job:?}")
        };
        assert!(reason.contains("403") || reason.contains("401"), "{reason}");
        assert!(
            !reason.contains("revoked-token") && !reason.contains("wrong-key"),
            "no secret in {reason}"
        );
        assert_eq!(job.attempts, 1);
    }
    // An hour later, nothing is sent again.
    assert_eq!(ob.run_due(t0() + Duration::from_secs(3600)).await.unwrap().sent, 0);
    assert_eq!((cff.rejected().len(), fyf.rejected().len()), (1, 1));

    // A failure that may pass is retried, but not forever.
    let cff2 = cloudflare_fake().await;
    cff2.script(&[Scripted::Status(502); 10]);
    let store2 = MemoryOutboxStore::new();
    let cfg = OutboxConfig {
        max_attempts: 3,
        jitter_seed: Some(1),
        ..OutboxConfig::default()
    };
    let ob2 = Outbox::new(Arc::new(store2.clone()), cfg).with_target(Arc::new(cf(&cff2)));
    ob2.enqueue(
        "rev-502",
        &PurgeRequest {
            tags: vec!["t".into()],
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    let mut now = t0();
    for _ in 0..10 {
        ob2.run_due(now).await.unwrap();
        now += Duration::from_secs(600);
    }
    let job = one_job(&store2).await;
    let JobStatus::Failed { reason } = &job.status else {
        panic!("{job:?}")
    };
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");
    assert_eq!(cff2.count(), 3);
}

#[tokio::test]
async fn batches_respect_per_call_limits() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let wide_cf = cf(&cff).with_limits(CloudflareLimits {
        tags: 100,
        prefixes: 100,
        files: 100,
    });
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    let all = tags(600);
    let jobs = ob
        .enqueue(
            "rev-big",
            &PurgeRequest {
                tags: all.clone(),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    let cf_jobs = jobs.iter().filter(|j| j.target.starts_with("cloudflare:")).count();
    let fy_jobs = jobs.iter().filter(|j| j.target.starts_with("fastly:")).count();
    assert_eq!((cf_jobs, fy_jobs), (20, 3)); // 600/30; 256 + 256 + 88

    let r = ob.run_due(t0()).await.unwrap();
    assert_eq!((r.due, r.done), (23, 23), "{r:?}");
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());
    let cf_tags: Vec<String> = cff
        .seen()
        .iter()
        .flat_map(|s| {
            let t = s.body["tags"].as_array().unwrap().clone();
            assert!(t.len() <= 30);
            t.into_iter().map(|v| v.as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(cf_tags, all, "every tag once, in order");
    let fy_sizes: Vec<usize> = fyf
        .seen()
        .iter()
        .map(|s| s.body["surrogate_keys"].as_array().unwrap().len())
        .collect();
    assert_eq!(fy_sizes, vec![256, 256, 88]);

    // A zone known to take Cloudflare's current 100 per call: fewer calls, all accepted.
    let before = cff.count();
    let wide_store = MemoryOutboxStore::new();
    let ob = outbox(&wide_store, vec![Arc::new(wide_cf)]);
    ob.enqueue(
        "rev-wide",
        &PurgeRequest {
            tags: tags(250),
            ..Default::default()
        },
        t0(),
    )
    .await
    .unwrap();
    assert_eq!(ob.run_due(t0()).await.unwrap().done, 3);
    assert_eq!(cff.count() - before, 3);
    assert!(cff.rejected().is_empty());
}

#[tokio::test]
async fn pending_job_survives_restart() {
    let cff = cloudflare_fake().await;
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Share("s7"), &[]);
    {
        // The revocation is written, then the process dies before the worker ran.
        let before = outbox(&store, vec![Arc::new(cf(&cff))]);
        before.enqueue("rev-restart", &req, t0()).await.unwrap();
    }
    assert_eq!(cff.count(), 0);
    let after = outbox(&store, vec![Arc::new(cf(&cff))]);
    let r = after.run_due(t0() + Duration::from_secs(5)).await.unwrap();
    assert_eq!(r.done, 1);
    assert!(is_done(&one_job(&store).await));
    assert_eq!(cff.count(), 1);
}

#[tokio::test]
async fn job_in_flight_at_crash_is_resent_after_its_lease() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::Hang]);
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Asset("a3"), &[]);
    {
        let before = outbox(&store, vec![Arc::new(cf(&cff))]);
        before.enqueue("rev-crash", &req, t0()).await.unwrap();
        // The call reaches the CDN, then the process dies before the answer.
        let run = tokio::time::timeout(Duration::from_millis(300), before.run_due(t0())).await;
        assert!(run.is_err(), "the fake hangs");
    }
    assert_eq!(cff.count(), 1);
    let job = one_job(&store).await;
    assert_eq!(job.status, JobStatus::Pending);
    let lease = config().lease;
    assert_eq!(job.next_attempt_at, t0() + lease);

    let after = outbox(&store, vec![Arc::new(cf(&cff))]);
    // Still leased: another run (or replica) does not send it twice at once.
    assert_eq!(after.run_due(t0() + Duration::from_secs(1)).await.unwrap().sent, 0);
    let r = after.run_due(t0() + lease).await.unwrap();
    assert_eq!(r.done, 1);
    assert_eq!(cff.count(), 2, "re-sent once after the lease");
}

#[tokio::test]
async fn done_jobs_are_never_resent() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let store = MemoryOutboxStore::new();
    let req = PurgeRequest::for_revocation(&Revoked::Token { share: Some("s2") }, &[]);
    let ob = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    ob.enqueue("rev-once", &req, t0()).await.unwrap();
    assert_eq!(ob.run_due(t0()).await.unwrap().done, 2);
    assert_eq!((cff.count(), fyf.count()), (1, 1));

    // Later runs, a restart, and planning the same revocation again send nothing.
    assert_eq!(ob.run_due(t0() + Duration::from_secs(86_400)).await.unwrap().sent, 0);
    let restarted = outbox(&store, vec![Arc::new(cf(&cff)), Arc::new(fastly(&fyf, false))]);
    let again = restarted
        .enqueue("rev-once", &req, t0() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(again.len(), 2);
    assert!(again.iter().all(is_done), "re-planning keeps the stored status");
    assert_eq!(
        restarted
            .run_due(t0() + Duration::from_secs(86_400))
            .await
            .unwrap()
            .sent,
        0
    );
    assert_eq!((cff.count(), fyf.count()), (1, 1));

    // A stale writer cannot bring a Done job back.
    let mut stale = store.all().unwrap().remove(0);
    stale.status = JobStatus::Pending;
    store.update(&stale).await.unwrap();
    assert!(is_done(&store.all().unwrap()[0]));
}

#[tokio::test]
async fn worker_sends_new_jobs_promptly() {
    let cff = cloudflare_fake().await;
    let store = MemoryOutboxStore::new();
    let ob = Arc::new(outbox(&store, vec![Arc::new(cf(&cff))]));
    // A long tick: the job must go out because enqueue wakes the worker, not because the tick came round.
    let worker = spawn_outbox_worker(ob.clone(), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let req = PurgeRequest::for_revocation(&Revoked::Share("s3"), &[]);
    ob.enqueue("rev-worker", &req, SystemTime::now()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if ob.receipt("rev-worker").await.unwrap().iter().all(is_done) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "worker did not send the job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    assert_eq!(cff.count(), 1);
}

/// `reqwest` here has no `json` feature; read bodies through serde_json.
trait JsonBody {
    async fn json_or_panic(self) -> Value;
}

impl JsonBody for reqwest::Response {
    async fn json_or_panic(self) -> Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}
