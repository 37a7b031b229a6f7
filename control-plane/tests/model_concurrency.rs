//! Concurrency model test of the revocation state (issue 11, item 1): many minters (links, share opens) and
//! revokers run against one process (embedded store) and against two replicas on one real `redis-server` (one with
//! its clock 12 s behind), while snapshots and deltas are built and served continuously. Issued-log writes are delayed
//! at random, so a mint's record becomes visible well after its `iat` was chosen.
//!
//! Afterwards an oracle checks every state ever served:
//! - against the durable issued log: every unexpired token with `iat < cutoff` was given to the snapshot's levels
//!   (the snapshot's issued count equals the log's count for its cut-off);
//! - against the edge's answer (the engine's decision, path mode and two-tier mode) for every token minted in the
//!   run: zero false denials and zero missed revocations, at that state's generation.
//!
//! With the cut-off taken from the builder's clock (before the issued-log horizon), this test fails within a
//! second or two of load: snapshots miss late records (`issued` short of the log's count). With a clock cut-off
//! lagging by `CUTOFF_LAG_SECS`, it fails on the replica whose clock is behind by more than that.
#![allow(clippy::unwrap_used)]

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::service::{api_keys, write_demo};
use http_body_util::BodyExt;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{ChainedEntry, Check, Log, Ns, Op, Store, StoreError, open_store};
use sharegate_control_plane::tokens::split_token_url;
use sharegate_edge::engine::{Decision, Request as EdgeRequest, StateInput};
use sharegate_edge::{EdgeConfig, Engine};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{DeltaView, StateKey, StateSet, StateView};
use sharegate_shared::token::Policy;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

const SIGNING: [u8; 32] = [7; 32];
const STATE: [u8; 32] = [9; 32];
const EDGE_TOKEN: &str = "edge-credential-for-the-model-test";
const VIEWERS: usize = 12;

fn ring() -> KeyRing {
    KeyRing::with_active(4, SecretKey::new(SIGNING), 86_400)
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// A store whose issued-log writes land late: each waits a random time before it is sent, after the mint chose its
/// `iat`. This is what a slow network round trip, a GC pause or a busy Redis does to a real replica.
struct SlowIssued {
    inner: Arc<dyn Store>,
    max_delay_ms: u64,
}

#[async_trait::async_trait]
impl Store for SlowIssued {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, ns: Ns, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(ns, key).await
    }
    async fn scan(&self, ns: Ns, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(ns, prefix).await
    }
    async fn counter(&self, counter: &str) -> Result<u64, StoreError> {
        self.inner.counter(counter).await
    }
    async fn atomic(&self, checks: &[Check<'_>], ops: &[Op<'_>]) -> Result<Option<Vec<u64>>, StoreError> {
        if ops.iter().any(|op| matches!(op, Op::Append { log: Log::Issued, .. })) {
            // Most writes land at once; one in eight lands up to `max_delay_ms` late (past the builder's lag).
            let r = rand_u64();
            let delay = if r.is_multiple_of(8) {
                r % (self.max_delay_ms + 1)
            } else {
                r % 20
            };
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        self.inner.atomic(checks, ops).await
    }
    async fn append_batch(&self, log: Log, values: &[Vec<u8>]) -> Result<u64, StoreError> {
        self.inner.append_batch(log, values).await
    }
    async fn read_log(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_log(log, from_seq, limit).await
    }
    async fn last_seq(&self, log: Log) -> Result<u64, StoreError> {
        self.inner.last_seq(log).await
    }
    async fn trim_log(&self, log: Log, below: u64) -> Result<(), StoreError> {
        self.inner.trim_log(log, below).await
    }
    async fn append_chained(&self, log: Log, value: &[u8]) -> Result<(u64, [u8; 32]), StoreError> {
        self.inner.append_chained(log, value).await
    }
    async fn read_chained(&self, log: Log, from_seq: u64, limit: usize) -> Result<Vec<ChainedEntry>, StoreError> {
        self.inner.read_chained(log, from_seq, limit).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// One control-plane replica: its router and its keys (every replica shares the store, so keys work anywhere).
#[derive(Clone)]
struct Replica {
    app: axum::Router,
}

async fn send(
    r: &Replica,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    headers: &[(&str, String)],
    body: String,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(k) = auth {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        b = b.header(*k, v);
    }
    if !body.is_empty() {
        b = b.header("content-type", "application/json");
    }
    let resp = r.app.clone().oneshot(b.body(Body::from(body)).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).unwrap_or(serde_json::Value::Null)
}

/// What the oracle knows of a minted token.
#[derive(Clone)]
struct Minted {
    token: String,
    id: [u8; 12],
    iat: u32,
    viewer: Option<String>,
}

/// Acknowledged revocations, with the generation that carries each.
#[derive(Default)]
struct Revoked {
    tokens: HashMap<[u8; 12], u64>,
    /// viewer → (generation, through) for each watermark.
    viewers: HashMap<String, Vec<(u64, u32)>>,
}

impl Revoked {
    fn expect(&self, t: &Minted, generation: u64) -> bool {
        self.tokens.get(&t.id).is_some_and(|g| *g <= generation)
            || t.viewer.as_ref().is_some_and(|v| {
                self.viewers
                    .get(v)
                    .is_some_and(|marks| marks.iter().any(|(g, through)| *g <= generation && t.iat <= *through))
            })
    }
}

/// A state served to an edge: a snapshot and the deltas on top of it.
struct Served {
    snapshot: Arc<Vec<u8>>,
    deltas: Vec<Arc<Vec<u8>>>,
}

#[derive(Default)]
struct Record {
    minted: Vec<Minted>,
    revoked: Revoked,
    served: Vec<Served>,
}

struct Keys {
    minter: String,
    responder: String,
}

async fn replica(store: Arc<dyn Store>, clock_offset_secs: i64) -> Replica {
    let config = ServiceConfig {
        edge_token: Some(EDGE_TOKEN.into()),
        ..ServiceConfig::default()
    };
    let mut state = AppState::new(store, config, &ring(), Policy::default(), StateKey::new(STATE)).unwrap();
    state.clock_offset_secs = clock_offset_secs;
    Replica {
        app: router(Arc::new(state)),
    }
}

/// Keys, a ready asset and a public share, written once through the first replica.
async fn setup(store: &Arc<dyn Store>, first: &Replica, media: &std::path::Path) -> (Keys, String) {
    let keys = api_keys(store.as_ref(), &[Role::Minter, Role::Responder, Role::Admin]).await;
    let [minter, responder, admin] = <[(Role, String); 3]>::try_from(keys).unwrap().map(|(_, k)| k);
    write_demo(media);
    let body = serde_json::json!({"id": "demo", "origin": media.to_str().unwrap()}).to_string();
    let (s, _, b) = send(first, "POST", "/v1/assets", Some(&admin), &[], body).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let body = serde_json::json!({"asset": "demo", "audience": "signed_in"}).to_string();
    let (s, _, b) = send(first, "POST", "/v1/shares", Some(&minter), &[], body).await;
    assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
    let share = json(&b)["id"].as_str().unwrap().to_string();
    (Keys { minter, responder }, share)
}

fn claims_of(token: &str) -> ([u8; 12], u32) {
    let mut buf = sharegate_shared::token::TokenBuf::new();
    let c = sharegate_shared::token::Verifier::new(&ring(), Policy::default())
        .authenticate(token, &mut buf)
        .unwrap();
    (c.token_id, c.iat)
}

async fn minter(r: Replica, keys: Arc<Keys>, share: Arc<String>, log: Arc<Mutex<Record>>, until: Instant) {
    while Instant::now() < until {
        let viewer = format!("v{}", rand_u64() % VIEWERS as u64);
        let roll = rand_u64() % 6;
        let token = if roll == 0 {
            // The player page's token request (`POST /v1/shares/{id}/playback`): the same share, another route.
            let (s, _, b) = send(
                &r,
                "POST",
                &format!("/v1/shares/{share}/playback"),
                None,
                &[("x-sharegate-viewer", viewer.clone())],
                String::new(),
            )
            .await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            json(&b)["token"].as_str().unwrap().to_string()
        } else if roll == 1 {
            // A share open by a signed-in viewer: a fresh token from the stable link.
            let (s, h, b) = send(
                &r,
                "GET",
                &format!("/s/{share}"),
                None,
                &[("x-sharegate-viewer", viewer.clone())],
                String::new(),
            )
            .await;
            assert_eq!(s, StatusCode::FOUND, "{}", String::from_utf8_lossy(&b));
            split_token_url(h["location"].to_str().unwrap()).0
        } else {
            let body = serde_json::json!({"asset": "demo", "ttl": 600, "viewer": viewer}).to_string();
            let (s, _, b) = send(&r, "POST", "/v1/links", Some(&keys.minter), &[], body).await;
            assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&b));
            json(&b)["token"].as_str().unwrap().to_string()
        };
        let (id, iat) = claims_of(&token);
        log.lock().unwrap().minted.push(Minted {
            token,
            id,
            iat,
            viewer: Some(viewer),
        });
    }
}

async fn revoker(r: Replica, keys: Arc<Keys>, log: Arc<Mutex<Record>>, until: Instant) {
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(40)).await;
        n += 1;
        let body = if n.is_multiple_of(15) {
            serde_json::json!({"kind": "viewer", "id": format!("v{}", rand_u64() % VIEWERS as u64)})
        } else {
            let target = {
                let l = log.lock().unwrap();
                if l.minted.is_empty() {
                    continue;
                }
                l.minted[(rand_u64() % l.minted.len() as u64) as usize].id
            };
            serde_json::json!({"kind": "token", "id": hex::encode(target)})
        };
        let (s, _, b) = send(
            &r,
            "POST",
            "/v1/revocations",
            Some(&keys.responder),
            &[],
            body.to_string(),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{}", String::from_utf8_lossy(&b));
        let rec = json(&b);
        let generation = rec["generation"].as_u64().unwrap();
        let mut l = log.lock().unwrap();
        if body["kind"] == "viewer" {
            // Tokens of the viewer issued at or before `through` are revoked (the receipt says which second).
            let through = u32::try_from(rec["through"].as_u64().unwrap()).unwrap();
            let v = body["id"].as_str().unwrap().to_string();
            l.revoked.viewers.entry(v).or_default().push((generation, through));
        } else {
            let mut id = [0u8; 12];
            hex::decode_to_slice(body["id"].as_str().unwrap(), &mut id).unwrap();
            l.revoked
                .tokens
                .entry(id)
                .and_modify(|g| *g = (*g).min(generation))
                .or_insert(generation);
        }
    }
}

/// An edge that pulls: a full snapshot when it holds nothing, then deltas (or a snapshot when it fell behind).
/// Every state it ends up holding is recorded for the oracle.
async fn puller(r: Replica, log: Arc<Mutex<Record>>, until: Instant, fresh_every: u32) {
    let mut held: Option<Served> = None;
    let mut n = 0u32;
    while Instant::now() < until {
        n += 1;
        // Now and then start over, so full snapshots are built throughout the run, not only at its start.
        if n.is_multiple_of(fresh_every) {
            held = None;
        }
        let generation = held.as_ref().map(|h| {
            h.deltas.last().map_or_else(
                || StateView::open(&h.snapshot).unwrap().generation(),
                |d| DeltaView::open(d).unwrap().generation(),
            )
        });
        let headers: Vec<(&str, String)> = generation
            .map(|g| ("x-sharegate-generation", g.to_string()))
            .into_iter()
            .collect();
        let (s, _, b) = send(&r, "GET", "/v1/edge/state", Some(EDGE_TOKEN), &headers, String::new()).await;
        assert!(s == StatusCode::OK || s == StatusCode::NOT_MODIFIED, "state answer {s}");
        let next = if b.starts_with(b"SGRS") {
            Some(Served {
                snapshot: Arc::new(b),
                deltas: Vec::new(),
            })
        } else if b.starts_with(b"SGRD") {
            let mut h = held.take().expect("a delta only for an edge that holds a state");
            h.deltas.push(Arc::new(b));
            Some(h)
        } else {
            // Current (304, or a signed "no change"): nothing new to check.
            None
        };
        if let Some(h) = next {
            log.lock().unwrap().served.push(Served {
                snapshot: h.snapshot.clone(),
                deltas: h.deltas.clone(),
            });
            held = Some(h);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn engine(two_tier: bool) -> Engine {
    let mut m = BTreeMap::new();
    m.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("4:active:{}", hex::encode(SIGNING)),
    );
    m.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(STATE));
    if two_tier {
        m.insert("SHAREGATE_TWO_TIER".to_string(), "true".to_string());
    }
    Engine::new(EdgeConfig::from_source(&m).unwrap())
}

/// Checks every served state; returns (states checked, token decisions checked).
async fn check(store: &Arc<dyn Store>, log: &Record) -> (usize, usize) {
    // The durable issued log as it stands now: every record any state could have needed has landed.
    let mut issued: Vec<(u32, u32)> = Vec::new();
    let mut from = 1;
    loop {
        let page = store.read_log(Log::Issued, from, 10_000).await.unwrap();
        let Some(last) = page.last().map(|(q, _)| *q) else {
            break;
        };
        for (_, v) in &page {
            let iat = u32::from_be_bytes(v[12..16].try_into().unwrap());
            let exp = u32::from_be_bytes(v[16..20].try_into().unwrap());
            issued.push((iat, exp));
        }
        from = last + 1;
    }
    assert_eq!(
        issued.len(),
        log.minted.len(),
        "every handed-out token has exactly one issued record"
    );
    let engines = [engine(false), engine(true)];
    let now = u64::from(log.minted.iter().map(|t| t.iat).max().unwrap_or(0)) + 5;
    let mut decisions = 0;
    let mut checked_snapshots = std::collections::HashSet::new();
    for (i, s) in log.served.iter().enumerate() {
        let view = StateView::open(&s.snapshot).unwrap();
        if checked_snapshots.insert(Arc::as_ptr(&s.snapshot)) {
            let want = issued
                .iter()
                .filter(|(iat, exp)| *iat < view.cutoff() && *exp > view.expire_before())
                .count();
            assert_eq!(
                view.stats().issued as usize,
                want,
                "served state #{i} (generation {}, cut-off {}): its levels were built over {} issued tokens, but \
                 the durable issued log holds {want} unexpired tokens with iat < cut-off",
                view.generation(),
                view.cutoff(),
                view.stats().issued
            );
        }
        let deltas: Vec<DeltaView<'_>> = s.deltas.iter().map(|d| DeltaView::open(d).unwrap()).collect();
        let set = StateSet::new(view, &deltas).unwrap();
        let generation = set.generation();
        let (mut false_denials, mut missed) = (Vec::new(), Vec::new());
        for t in &log.minted {
            let expect_revoked = log.revoked.expect(t, generation);
            for e in &engines {
                let path = format!("/t/{}/demo/master.m3u8", t.token);
                let req = EdgeRequest {
                    method: "GET",
                    host: "edge.test",
                    path: &path,
                    query: None,
                    cookie: None,
                    origin: None,
                    referer: None,
                    client_ip: Some("203.0.113.9".parse().unwrap()),
                    country: None,
                    country_lookup: None,
                    cmcd_headers: [None; 4],
                };
                let d = e.decide(
                    &req,
                    now,
                    StateInput {
                        state: Some(&set),
                        age: 0,
                    },
                );
                decisions += 1;
                let revoked = match &d {
                    Decision::Allow(_) => false,
                    Decision::Deny(deny) => {
                        assert!(
                            deny.reason.as_str().starts_with("revoked"),
                            "unexpected refusal {:?}",
                            deny.reason.as_str()
                        );
                        true
                    }
                    Decision::Preflight(_) => panic!("preflight for a GET"),
                };
                match (expect_revoked, revoked) {
                    (false, true) => false_denials.push(hex::encode(t.id)),
                    (true, false) => missed.push(hex::encode(t.id)),
                    _ => {}
                }
            }
        }
        assert!(
            false_denials.is_empty() && missed.is_empty(),
            "served state #{i} at generation {generation}: {} false denials {:?}, {} missed revocations {:?}",
            false_denials.len(),
            &false_denials[..false_denials.len().min(5)],
            missed.len(),
            &missed[..missed.len().min(5)]
        );
    }
    (log.served.len(), decisions)
}

async fn run_model(store: Arc<dyn Store>, replicas: Vec<Replica>, media: &std::path::Path, secs: u64) {
    let (keys, share) = setup(&store, &replicas[0], media).await;
    let (keys, share) = (Arc::new(keys), Arc::new(share));
    let log = Arc::new(Mutex::new(Record::default()));
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in replicas.iter().enumerate() {
        for _ in 0..12 {
            tasks.spawn(minter(r.clone(), keys.clone(), share.clone(), log.clone(), until));
        }
        tasks.spawn(revoker(r.clone(), keys.clone(), log.clone(), until));
        tasks.spawn(puller(r.clone(), log.clone(), until, 7 + i as u32));
        tasks.spawn(puller(r.clone(), log.clone(), until, 1));
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let elapsed = start.elapsed();
    let log = std::mem::take(&mut *log.lock().unwrap());
    let minted = log.minted.len();
    let revocations = log.revoked.tokens.len() + log.revoked.viewers.values().map(Vec::len).sum::<usize>();
    assert!(minted > 200, "too little load to mean anything: {minted} mints");
    assert!(log.served.len() > 20, "too few states served: {}", log.served.len());
    let (states, decisions) = check(&store, &log).await;
    eprintln!(
        "model: {} replica(s), {minted} tokens minted, {revocations} revocations, {states} states served and \
         checked, {decisions} edge decisions, in {:.1} s of load",
        replicas.len(),
        elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_process_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let inner = open_store("", dir.path()).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(SlowIssued {
        inner,
        max_delay_ms: 2_500,
    });
    let r = replica(store.clone(), 0).await;
    run_model(store, vec![r], &dir.path().join("media"), 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_redis_one_clock_12s_behind() {
    let server = common::RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = open_store(&server.url(), dir.path()).await.unwrap();
    let b = open_store(&server.url(), dir.path()).await.unwrap();
    let slow = |inner| -> Arc<dyn Store> {
        Arc::new(SlowIssued {
            inner,
            max_delay_ms: 2_500,
        })
    };
    let (a, b) = (slow(a), slow(b));
    // Replica b's clock is twelve seconds behind: more than the builder's cut-off lag, so its mints meet the
    // horizon and are minted again, and its snapshots use a cut-off another replica already raised.
    let replicas = vec![replica(a.clone(), 0).await, replica(b, -12).await];
    run_model(a, replicas, &dir.path().join("media"), 6).await;
}
