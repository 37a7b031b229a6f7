//! Revoke-and-purge as one act, through the HTTP API: `POST /v1/revocations` with `"purge": true` writes the
//! revocation and its purge jobs in one transaction, the outbox sends them to (strict local fakes of) Cloudflare
//! and Fastly, and `GET /v1/revocations/{id}` shows where each purge stands.
//!
//! The router runs in-process (`oneshot`) over the embedded store, as in `tests/service.rs`; the outbox is the
//! production one (`Outbox::over_store`, i.e. `StoreOutbox` on the service's own store). The CDN fakes are copied
//! from `tests/purge.rs`, which documents what they check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::cdn_fakes::*;
use common::service::{app_state, register_demo, send, world_with, write_demo};

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use sharegate_control_plane::purge::{
    CloudflarePurger, FastlyPurger, JobStatus, MemoryOutboxStore, Outbox, OutboxConfig, OutboxStore, PurgeTarget,
    StoreOutbox, spawn_outbox_worker,
};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Log, Ns, Store};

// ---------------------------------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------------------------------

fn cf(fake: &Fake) -> Arc<dyn PurgeTarget> {
    Arc::new(CloudflarePurger::new(format!("{}/client/v4", fake.base()), ZONE, CF_TOKEN).unwrap())
}

fn fastly(fake: &Fake) -> Arc<dyn PurgeTarget> {
    Arc::new(FastlyPurger::new(fake.base(), SERVICE, FASTLY_KEY, false).unwrap())
}

/// The production outbox (jobs in the service store) with a fixed jitter seed.
fn outbox(store: &Arc<dyn Store>, targets: &[Arc<dyn PurgeTarget>]) -> Arc<Outbox> {
    let cfg = OutboxConfig {
        jitter_seed: Some(7),
        ..OutboxConfig::default()
    };
    Arc::new(
        targets
            .iter()
            .cloned()
            .fold(Outbox::over_store(store.clone(), cfg), Outbox::with_target),
    )
}

struct Svc {
    app: Router,
    state: Arc<AppState>,
    responder: String,
    minter: String,
    _dir: tempfile::TempDir,
}

/// The common service with a ready `demo` asset; links point at `https://cdn.example.com` (the CDN host an asset
/// purge names). `make_outbox` gets the store the service uses.
async fn setup(make_outbox: impl FnOnce(&Arc<dyn Store>) -> Option<Arc<Outbox>>) -> Svc {
    let config = ServiceConfig {
        edge_base_url: "https://cdn.example.com".into(),
        ..ServiceConfig::default()
    };
    let w = world_with(config, |state| state.outbox = make_outbox(&state.store)).await;
    write_demo(&w.media());
    register_demo(&w.app, w.key(Role::Admin), &w.media()).await;
    Svc {
        minter: w.key(Role::Minter).to_string(),
        responder: w.key(Role::Responder).to_string(),
        app: w.app,
        state: w.state,
        _dir: w.dir,
    }
}

/// A call with `key`, and an idempotency key if given.
async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: &str,
    body: &str,
    idempotency_key: Option<&str>,
) -> (StatusCode, Value) {
    let idem: Vec<(&str, &str)> = idempotency_key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let (s, _, b) = send(app, method, uri, Some(key), &idem, body).await;
    (s, b)
}

impl Svc {
    async fn revoke(&self, body: Value) -> (StatusCode, Value) {
        call(
            &self.app,
            "POST",
            "/v1/revocations",
            &self.responder,
            &body.to_string(),
            None,
        )
        .await
    }

    async fn receipt(&self, id: &str) -> Value {
        let (s, b) = call(
            &self.app,
            "GET",
            &format!("/v1/revocations/{id}"),
            &self.responder,
            "",
            None,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    fn outbox(&self) -> &Arc<Outbox> {
        self.state.outbox.as_ref().unwrap()
    }

    async fn outbox_keys(&self) -> Vec<String> {
        let rows = self.state.store.scan(Ns::Outbox, "").await.unwrap();
        rows.into_iter().map(|(k, _)| k).collect()
    }
}

fn purges(receipt: &Value) -> Vec<Value> {
    receipt["purges"].as_array().unwrap().clone()
}

/// The receipt's purge for a target whose name starts with `prefix`.
fn purge_for(receipt: &Value, prefix: &str) -> Value {
    let all = purges(receipt);
    let mut hits = all.iter().filter(|p| p["target"].as_str().unwrap().starts_with(prefix));
    let hit = hits
        .next()
        .unwrap_or_else(|| panic!("no {prefix} purge in {receipt}"))
        .clone();
    assert!(hits.next().is_none(), "one {prefix} purge expected: {receipt}");
    hit
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[tokio::test]
async fn share_revocation_purges_both_cdns_and_the_receipt_follows() {
    let (cff, fyf) = (cloudflare_fake().await, fastly_fake().await);
    let svc = setup(|store| Some(outbox(store, &[cf(&cff), fastly(&fyf)]))).await;

    let (s, r) = svc
        .revoke(json!({"kind": "share", "id": "sh-1", "reason": "leaked", "purge": true}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["generation"], 1);
    let id = r["id"].as_str().unwrap().to_string();
    // Acknowledged with one pending job per CDN, already durable next to the revocation, not yet sent.
    assert_eq!(purges(&r).len(), 2, "{r}");
    for p in purges(&r) {
        assert_eq!(
            (&p["status"], &p["attempts"], &p["cdn_id"], &p["last_error"]),
            (&json!("pending"), &json!(0), &Value::Null, &Value::Null),
            "{p}"
        );
    }
    assert_eq!(
        svc.outbox_keys().await,
        [
            format!("{id}/cloudflare:{ZONE}/0000"),
            format!("{id}/fastly:{SERVICE}/0000")
        ]
    );
    assert_eq!((cff.count(), fyf.count()), (0, 0));

    let report = svc.outbox().run_due(SystemTime::now()).await.unwrap();
    assert_eq!((report.sent, report.done), (2, 2), "{report:?}");

    // The receipt now shows what the CDNs confirmed, with their purge ids.
    let r = svc.receipt(&id).await;
    assert_eq!(r["kind"], "share");
    assert_eq!(r["generation"], 1);
    let cfp = purge_for(&r, "cloudflare:");
    assert_eq!(
        (&cfp["status"], &cfp["cdn_id"], &cfp["attempts"]),
        (&json!("done"), &json!("cf-purge-0"), &json!(1)),
        "{r}"
    );
    let fyp = purge_for(&r, "fastly:");
    assert_eq!(
        (&fyp["status"], &fyp["cdn_id"], &fyp["attempts"]),
        (&json!("done"), &json!("fy-0"), &json!(1)),
        "{r}"
    );
    // Exactly the documented calls: Cloudflare's tag purge, Fastly's single-key hard purge.
    let seen = cff.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/client/v4/zones/{ZONE}/purge_cache"));
    assert_eq!(seen[0].body, json!({"tags": ["sg-share-sh-1"]}));
    let seen = fyf.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, format!("/service/{SERVICE}/purge/sg-share-sh-1"));
    assert!(!seen[0].soft);
    assert!(cff.rejected().is_empty() && fyf.rejected().is_empty());

    // Done is done: later runs send nothing.
    let later = SystemTime::now() + Duration::from_secs(86_400);
    assert_eq!(svc.outbox().run_due(later).await.unwrap().sent, 0);
    assert_eq!((cff.count(), fyf.count()), (1, 1));
}

#[tokio::test]
async fn each_kind_purges_what_docs_say() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;

    // A takedown: the asset tag, and its prefix on the CDN host of the link URLs.
    let (s, r) = svc.revoke(json!({"kind": "asset", "id": "demo", "purge": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(purges(&r).len(), 2, "{r}");
    // A token minted for a share purges the share's tag, by id or by the token itself.
    let (s, link) = call(
        &svc.app,
        "POST",
        "/v1/links",
        &svc.minter,
        r#"{"asset":"demo","share":"sh-7"}"#,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{link}");
    let (s, r) = svc
        .revoke(json!({"kind": "token", "id": link["token_id"], "purge": true}))
        .await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    let (s, r) = svc
        .revoke(json!({"kind": "token", "token": link["token"], "purge": true}))
        .await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    // Cached bytes are shared by every viewer: a viewer revocation has nothing of its own to purge.
    let (s, r) = svc.revoke(json!({"kind": "viewer", "id": "v-1", "purge": true})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 0), "{r}");
    // Without `purge`, nothing is planned even where something could be.
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-9"})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 0), "{r}");

    assert_eq!(svc.outbox().run_due(SystemTime::now()).await.unwrap().done, 4);
    let bodies: Vec<Value> = cff.seen().into_iter().map(|s| s.body).collect();
    assert_eq!(
        bodies,
        [
            json!({"tags": ["sg-asset-demo"]}),
            json!({"prefixes": ["cdn.example.com/demo/"]}),
            json!({"tags": ["sg-share-sh-7"]}),
            json!({"tags": ["sg-share-sh-7"]}),
        ]
    );
    assert!(cff.rejected().is_empty(), "{:?}", cff.rejected());
}

#[tokio::test]
async fn purge_without_purgers_is_refused_and_nothing_is_written() {
    // No outbox at all, and an outbox with no CDN: both refuse.
    let empty = |store: &Arc<dyn Store>| Some(outbox(store, &[]));
    for svc in [setup(|_| None).await, setup(empty).await] {
        let (s, b) = svc.revoke(json!({"kind": "share", "id": "sh-1", "purge": true})).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("refused")),
            "{b}"
        );
        let msg = b["message"].as_str().unwrap();
        assert!(
            msg.contains("no CDN purger") && msg.contains("SHAREGATE_CF_ZONE_ID"),
            "{msg}"
        );
        // Nothing written: no generation, no log entry, no record, no job.
        assert_eq!(svc.state.store.counter("state_generation").await.unwrap(), 0);
        assert_eq!(svc.state.store.last_seq(Log::Revocations).await.unwrap(), 0);
        assert!(svc.state.store.scan(Ns::Revocations, "").await.unwrap().is_empty());
        assert!(svc.outbox_keys().await.is_empty());

        // The same revocation without a purge goes through.
        let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-1", "purge": false})).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!((r["generation"].as_u64(), purges(&r).len()), (Some(1), 0));
    }
}

#[tokio::test]
async fn pending_purge_survives_a_restart() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-2", "purge": true})).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    // The process dies before its worker ran: nothing was sent.
    assert_eq!(cff.count(), 0);

    // "Restart": a new outbox, with new purger instances, over the same store, and a service using it.
    let store = svc.state.store.clone();
    let after = outbox(&store, &[cf(&cff)]);
    let jobs = StoreOutbox::new(store.clone()).jobs_for_revocation(&id).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Pending);
    let report = after.run_due(SystemTime::now()).await.unwrap();
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(cff.count(), 1);
    assert_eq!(cff.seen()[0].body, json!({"tags": ["sg-share-sh-2"]}));

    // Both the old and the new service answer with the confirmed purge: the status lives in the store.
    let r = svc.receipt(&id).await;
    assert_eq!(purge_for(&r, "cloudflare:")["status"], "done", "{r}");
    let mut state2 = app_state(store, ServiceConfig::default());
    state2.outbox = Some(after);
    let app2 = router(Arc::new(state2));
    let (s, r) = call(&app2, "GET", &format!("/v1/revocations/{id}"), &svc.responder, "", None).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(purge_for(&r, "cloudflare:")["cdn_id"], "cf-purge-0", "{r}");
}

#[tokio::test]
async fn rate_limited_purge_is_retried_and_the_receipt_counts_attempts() {
    let cff = cloudflare_fake().await;
    cff.script(&[Scripted::RateLimit(2), Scripted::Status(503)]);
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    let body = json!({"kind": "share", "id": "sh-3", "purge": true}).to_string();
    let (s, r) = call(
        &svc.app,
        "POST",
        "/v1/revocations",
        &svc.responder,
        &body,
        Some("inc-7"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();

    let t = SystemTime::now();
    let report = svc.outbox().run_due(t).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1), "{report:?}");
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("pending"), &json!(1)), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("rate limited"), "{p}");

    // Not before Retry-After; then a 503, retried after a backoff of 1 to 2 s; then confirmed.
    assert_eq!(svc.outbox().run_due(t + Duration::from_secs(1)).await.unwrap().sent, 0);
    let report = svc.outbox().run_due(t + Duration::from_secs(2)).await.unwrap();
    assert_eq!((report.sent, report.retried), (1, 1), "{report:?}");
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("pending"), &json!(2)), "{p}");
    assert!(p["last_error"].as_str().unwrap().contains("503"), "{p}");
    let report = svc.outbox().run_due(t + Duration::from_secs(4)).await.unwrap();
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(cff.count(), 3);
    let p = purge_for(&svc.receipt(&id).await, "cloudflare:");
    assert_eq!(
        (&p["status"], &p["attempts"], &p["cdn_id"]),
        (&json!("done"), &json!(3), &json!("cf-purge-2")),
        "{p}"
    );
    // A retried POST with the same idempotency key revokes and purges nothing twice (it replays the first answer;
    // `GET` is where the current purge status is read).
    let (s, again) = call(
        &svc.app,
        "POST",
        "/v1/revocations",
        &svc.responder,
        &body,
        Some("inc-7"),
    )
    .await;
    assert!(s.is_success(), "{again}");
    assert_eq!(again["id"].as_str(), Some(id.as_str()), "{again}");
    assert_eq!(svc.outbox_keys().await.len(), 1);
    assert_eq!(
        svc.outbox().run_due(t + Duration::from_secs(3600)).await.unwrap().sent,
        0
    );
    assert_eq!(cff.count(), 3);
    assert_eq!(svc.state.store.counter("state_generation").await.unwrap(), 1);
}

#[tokio::test]
async fn permanent_refusal_shows_as_failed() {
    let cff = cloudflare_fake().await;
    let bad: Arc<dyn PurgeTarget> =
        Arc::new(CloudflarePurger::new(format!("{}/client/v4", cff.base()), ZONE, "revoked-token").unwrap());
    let svc = setup(|store| Some(outbox(store, &[bad]))).await;
    let (_, r) = svc.revoke(json!({"kind": "share", "id": "sh-4", "purge": true})).await;
    svc.outbox().run_due(SystemTime::now()).await.unwrap();
    let p = purge_for(&svc.receipt(r["id"].as_str().unwrap()).await, "cloudflare:");
    assert_eq!((&p["status"], &p["attempts"]), (&json!("failed"), &json!(1)), "{p}");
    let why = p["last_error"].as_str().unwrap();
    assert!(why.contains("403") && !why.contains("revoked-token"), "{why}");
}

#[tokio::test]
async fn the_worker_is_woken_by_the_revocation() {
    let cff = cloudflare_fake().await;
    let svc = setup(|store| Some(outbox(store, &[cf(&cff)]))).await;
    // A tick far away: the purge must go out because the revocation wakes the worker.
    let worker = spawn_outbox_worker(svc.outbox().clone(), Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, r) = svc.revoke(json!({"kind": "share", "id": "sh-5", "purge": true})).await;
    let id = r["id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if purge_for(&svc.receipt(&id).await, "cloudflare:")["status"] == "done" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker did not send the purge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.abort();
    assert_eq!(cff.count(), 1);
}

#[tokio::test]
async fn an_outbox_over_another_store_still_gets_the_jobs() {
    // Not the production wiring (jobs are then written right after the revocation, not in its transaction), but
    // it must not lose purges.
    let cff = cloudflare_fake().await;
    let memory = MemoryOutboxStore::new();
    let ob = Arc::new(
        Outbox::new(
            Arc::new(memory.clone()),
            OutboxConfig {
                jitter_seed: Some(7),
                ..OutboxConfig::default()
            },
        )
        .with_target(cf(&cff)),
    );
    let svc = setup(|_| Some(ob.clone())).await;
    let (s, r) = svc.revoke(json!({"kind": "share", "id": "sh-6", "purge": true})).await;
    assert_eq!((s, purges(&r).len()), (StatusCode::CREATED, 1), "{r}");
    assert!(svc.outbox_keys().await.is_empty());
    assert_eq!(memory.all().unwrap().len(), 1);
    assert_eq!(ob.run_due(SystemTime::now()).await.unwrap().done, 1);
    let r = svc.receipt(r["id"].as_str().unwrap()).await;
    assert_eq!(purge_for(&r, "cloudflare:")["status"], "done", "{r}");
}
