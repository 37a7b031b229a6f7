//! The store contract, run against both backends: redb in a temporary directory and Redis on a `redis-server` that
//! this file starts on a free port (killed on drop). A missing `redis-server` fails the Redis tests: CI installs it.
//! `SHAREGATE_REDIS_SERVER` names another binary.
//!
//! Throughput figures: `cargo test --release -p sharegate-control-plane --test store -- --ignored --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use redb::ReadableTable;
use sharegate_control_plane::store::{
    ChainedEntry, Check, Log, Ns, Op, RedbStore, RedisStore, Store, StoreError, open_store, verify_chain,
};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------------------------
// Harness

use common::RedisServer;

async fn redis_store(server: &RedisServer, prefix: &str) -> Arc<dyn Store> {
    Arc::new(RedisStore::connect(&server.url(), prefix).await.unwrap())
}

fn tmpdir() -> tempfile::TempDir {
    // Under the target dir, not /tmp: that may be tmpfs, where fsync costs nothing and durability is not tested.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

/// Every entry of a chained log, page by page.
async fn read_all_chained(store: &dyn Store, log: Log, page: usize) -> Vec<ChainedEntry> {
    let mut out: Vec<ChainedEntry> = Vec::new();
    loop {
        let from = out.last().map_or(1, |e| e.seq + 1);
        let got = store.read_chained(log, from, page).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// Every entry of a plain log from `from`, page by page.
async fn read_all(store: &dyn Store, log: Log, from: u64, page: usize) -> Vec<(u64, Vec<u8>)> {
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    loop {
        let next = out.last().map_or(from, |e| e.0 + 1);
        let got = store.read_log(log, next, page).await.unwrap();
        if got.is_empty() {
            return out;
        }
        assert!(got.len() <= page);
        out.extend(got);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The suite both backends pass

async fn suite(store: Arc<dyn Store>) {
    store.ping().await.unwrap();
    kv(&*store).await;
    cas_race(store.clone()).await;
    atomic(&*store).await;
    counters(store.clone()).await;
    logs(store.clone()).await;
    chained(store.clone()).await;
    wrong_kinds(&*store).await;
}

async fn kv(s: &dyn Store) {
    assert_eq!(s.get(Ns::Assets, "a").await.unwrap(), None);
    for k in ["b", "a", "c/2", "c/1", "d"] {
        s.put(Ns::Assets, k, k.as_bytes()).await.unwrap();
    }
    s.put(Ns::Assets, "d", b"d2").await.unwrap();
    assert_eq!(s.get(Ns::Assets, "d").await.unwrap().as_deref(), Some(&b"d2"[..]));
    // Namespaces are separate.
    assert_eq!(s.get(Ns::Shares, "a").await.unwrap(), None);
    s.put(Ns::Shares, "a", b"share").await.unwrap();

    let all = s.scan(Ns::Assets, "").await.unwrap();
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b", "c/1", "c/2", "d"]);
    let c = s.scan(Ns::Assets, "c/").await.unwrap();
    assert_eq!(
        c,
        vec![
            ("c/1".to_string(), b"c/1".to_vec()),
            ("c/2".to_string(), b"c/2".to_vec())
        ]
    );
    assert!(s.scan(Ns::Assets, "zz").await.unwrap().is_empty());

    assert!(s.delete(Ns::Assets, "b").await.unwrap());
    assert!(!s.delete(Ns::Assets, "b").await.unwrap());
    assert_eq!(s.get(Ns::Assets, "b").await.unwrap(), None);
    assert_eq!(s.scan(Ns::Assets, "").await.unwrap().len(), 4);

    // Binary values and an empty value survive as they are.
    let bin: Vec<u8> = (0..=255u8).collect();
    s.put(Ns::Keys, "bin", &bin).await.unwrap();
    assert_eq!(s.get(Ns::Keys, "bin").await.unwrap(), Some(bin));
    s.put(Ns::Keys, "empty", b"").await.unwrap();
    assert_eq!(s.get(Ns::Keys, "empty").await.unwrap(), Some(Vec::new()));

    assert!(s.put_if_absent(Ns::Idempotency, "req-1", b"first").await.unwrap());
    assert!(!s.put_if_absent(Ns::Idempotency, "req-1", b"second").await.unwrap());
    assert_eq!(
        s.get(Ns::Idempotency, "req-1").await.unwrap().as_deref(),
        Some(&b"first"[..])
    );

    // CAS: absent → create, wrong expectation → no change, right one → swap, then compare-and-delete.
    assert!(s.cas(Ns::Leases, "outbox", None, Some(b"r1")).await.unwrap());
    assert!(!s.cas(Ns::Leases, "outbox", None, Some(b"r2")).await.unwrap());
    assert!(!s.cas(Ns::Leases, "outbox", Some(b"r2"), Some(b"r3")).await.unwrap());
    assert_eq!(s.get(Ns::Leases, "outbox").await.unwrap().as_deref(), Some(&b"r1"[..]));
    assert!(s.cas(Ns::Leases, "outbox", Some(b"r1"), Some(b"r2")).await.unwrap());
    assert!(s.cas(Ns::Leases, "outbox", Some(b"r2"), None).await.unwrap());
    assert_eq!(s.get(Ns::Leases, "outbox").await.unwrap(), None);
    assert!(!s.cas(Ns::Leases, "outbox", Some(b"r2"), None).await.unwrap());
}

async fn cas_race(s: Arc<dyn Store>) {
    s.put(Ns::Settings, "race", b"v0").await.unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            let me = format!("w{i}");
            (
                me.clone(),
                s.cas(Ns::Settings, "race", Some(b"v0"), Some(me.as_bytes()))
                    .await
                    .unwrap(),
            )
        });
    }
    let results = tasks.join_all().await;
    let winners: Vec<&String> = results.iter().filter(|(_, won)| *won).map(|(me, _)| me).collect();
    assert_eq!(winners.len(), 1, "exactly one CAS wins: {winners:?}");
    assert_eq!(
        s.get(Ns::Settings, "race").await.unwrap().unwrap(),
        winners[0].as_bytes()
    );

    // Same for put_if_absent.
    let mut tasks = JoinSet::new();
    for i in 0..32 {
        let s = s.clone();
        tasks.spawn(async move {
            s.put_if_absent(Ns::Shares, "unique", format!("{i}").as_bytes())
                .await
                .unwrap()
        });
    }
    assert_eq!(tasks.join_all().await.into_iter().filter(|w| *w).count(), 1);
}

async fn atomic(s: &dyn Store) {
    let before = s.last_seq(Log::Revocations).await.unwrap();
    // A revocation: record, log entry, generation bump and purge outbox row, together.
    let r = s
        .atomic(
            &[Check::Absent {
                ns: Ns::Revocations,
                key: "tok-1",
            }],
            &[
                Op::Put {
                    ns: Ns::Revocations,
                    key: "tok-1",
                    value: b"revoked",
                },
                Op::Append {
                    log: Log::Revocations,
                    value: b"tok-1",
                },
                Op::Incr {
                    counter: "generation",
                    by: 1,
                },
                Op::Put {
                    ns: Ns::Outbox,
                    key: "purge-1",
                    value: b"/a/",
                },
                Op::Delete {
                    ns: Ns::Outbox,
                    key: "nothing",
                },
            ],
        )
        .await
        .unwrap()
        .expect("checks hold");
    assert_eq!(r, vec![0, before + 1, 1, 0, 0]);
    assert_eq!(
        s.get(Ns::Outbox, "purge-1").await.unwrap().as_deref(),
        Some(&b"/a/"[..])
    );

    // A failed check writes nothing.
    let r = s
        .atomic(
            &[
                Check::Equals {
                    ns: Ns::Revocations,
                    key: "tok-1",
                    value: b"revoked",
                },
                Check::Absent {
                    ns: Ns::Revocations,
                    key: "tok-1",
                },
            ],
            &[
                Op::Append {
                    log: Log::Revocations,
                    value: b"again",
                },
                Op::Incr {
                    counter: "generation",
                    by: 1,
                },
                Op::Delete {
                    ns: Ns::Outbox,
                    key: "purge-1",
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(r, None);
    assert_eq!(s.last_seq(Log::Revocations).await.unwrap(), before + 1);
    assert_eq!(s.counter("generation").await.unwrap(), 1);
    assert!(s.get(Ns::Outbox, "purge-1").await.unwrap().is_some());

    let r = s
        .atomic(
            &[Check::Equals {
                ns: Ns::Revocations,
                key: "tok-1",
                value: b"revoked",
            }],
            &[Op::Delete {
                ns: Ns::Outbox,
                key: "purge-1",
            }],
        )
        .await
        .unwrap();
    assert_eq!(r, Some(vec![1]));
    assert_eq!(s.atomic(&[], &[]).await.unwrap(), Some(vec![]));

    // A horizon: raised, never lowered; an append guarded by `CounterAtMost` passes at or above it only.
    let raise = |to| [Op::Raise { counter: "horizon", to }];
    assert_eq!(s.atomic(&[], &raise(100)).await.unwrap(), Some(vec![100]));
    assert_eq!(
        s.atomic(&[], &raise(90)).await.unwrap(),
        Some(vec![100]),
        "never lowered"
    );
    assert_eq!(s.counter("horizon").await.unwrap(), 100);
    let guarded = |value| {
        [Check::CounterAtMost {
            counter: "horizon",
            value,
        }]
    };
    let append = [Op::Append {
        log: Log::Revocations,
        value: b"guarded",
    }];
    let last = s.last_seq(Log::Revocations).await.unwrap();
    assert_eq!(
        s.atomic(&guarded(99), &append).await.unwrap(),
        None,
        "below the horizon"
    );
    assert_eq!(s.last_seq(Log::Revocations).await.unwrap(), last, "nothing written");
    assert_eq!(s.atomic(&guarded(100), &append).await.unwrap(), Some(vec![last + 1]));
    assert_eq!(
        s.atomic(
            &[Check::CounterAtMost {
                counter: "never-set",
                value: 0
            }],
            &[]
        )
        .await
        .unwrap(),
        Some(vec![]),
        "an absent counter is 0"
    );
    assert_eq!(
        s.atomic(&[], &raise(u64::MAX)).await.unwrap_err().code(),
        "store_invalid"
    );
}

async fn counters(s: Arc<dyn Store>) {
    assert_eq!(s.counter("ids").await.unwrap(), 0);
    let mut tasks = JoinSet::new();
    for _ in 0..200 {
        let s = s.clone();
        tasks.spawn(async move { s.incr("ids", 1).await.unwrap() });
    }
    let got: BTreeSet<u64> = tasks.join_all().await.into_iter().collect();
    assert_eq!(got, (1..=200).collect(), "unique and gap-free");
    assert_eq!(s.counter("ids").await.unwrap(), 200);
    assert_eq!(s.incr("ids", 5).await.unwrap(), 205);
    assert_eq!(s.incr("ids", 0).await.unwrap(), 205);
    assert_eq!(s.counter("other").await.unwrap(), 0);
    assert_eq!(s.incr("ids", u64::MAX).await.unwrap_err().code(), "store_invalid");
}

async fn logs(s: Arc<dyn Store>) {
    let log = Log::Issued;
    assert_eq!(s.last_seq(log).await.unwrap(), 0);
    assert!(s.read_log(log, 1, 10).await.unwrap().is_empty());

    // 200 concurrent single appends and 10 concurrent batches of 5.
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.spawn(async move {
            vec![(
                s.append(log, format!("one-{i}").as_bytes()).await.unwrap(),
                format!("one-{i}"),
            )]
        });
    }
    for b in 0..10 {
        let s = s.clone();
        tasks.spawn(async move {
            let values: Vec<Vec<u8>> = (0..5).map(|j| format!("batch-{b}-{j}").into_bytes()).collect();
            let last = s.append_batch(log, &values).await.unwrap();
            (0..5).map(|j| (last - 4 + j, format!("batch-{b}-{j}"))).collect()
        });
    }
    let claimed: HashMap<u64, String> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(claimed.len(), 250, "no seq handed out twice");
    assert_eq!(
        claimed.keys().copied().collect::<BTreeSet<_>>(),
        (1..=250).collect(),
        "gap-free"
    );
    assert_eq!(s.last_seq(log).await.unwrap(), 250);
    assert_eq!(s.append_batch(log, &[]).await.unwrap(), 250);

    // Paging returns every entry once, in order, with the value its appender was told.
    let all = read_all(&*s, log, 1, 64).await;
    assert_eq!(all.len(), 250);
    for (seq, value) in &all {
        assert_eq!(value, claimed[seq].as_bytes(), "seq {seq}");
    }
    let page = s.read_log(log, 100, 3).await.unwrap();
    assert_eq!(page.iter().map(|e| e.0).collect::<Vec<_>>(), [100, 101, 102]);
    assert!(s.read_log(log, 251, 10).await.unwrap().is_empty());
    assert!(s.read_log(log, 1, 0).await.unwrap().is_empty());
    assert_eq!(s.read_log(log, 1, usize::MAX).await.unwrap().len(), 250);

    // Trimming drops the head; sequence numbers carry on.
    let events: Vec<Vec<u8>> = (0..30).map(|i| vec![i]).collect();
    assert_eq!(s.append_batch(Log::Events, &events).await.unwrap(), 30);
    s.trim_log(Log::Events, 11).await.unwrap();
    s.trim_log(Log::Events, 5).await.unwrap(); // below what is already trimmed: no-op
    let rest = s.read_log(Log::Events, 1, 5).await.unwrap();
    assert_eq!(rest.iter().map(|e| e.0).collect::<Vec<_>>(), [11, 12, 13, 14, 15]);
    assert_eq!(rest[0].1, vec![10]);
    assert_eq!(s.last_seq(Log::Events).await.unwrap(), 30);
    assert_eq!(s.append(Log::Events, b"x").await.unwrap(), 31);
    s.trim_log(Log::Events, 1000).await.unwrap();
    assert!(s.read_log(Log::Events, 1, 10).await.unwrap().is_empty());
    assert_eq!(s.append(Log::Events, b"y").await.unwrap(), 32);
    assert_eq!(s.read_log(Log::Events, 1, 10).await.unwrap(), vec![(32, b"y".to_vec())]);
}

async fn chained(s: Arc<dyn Store>) {
    let log = Log::Audit;
    assert!(s.read_chained(log, 1, 10).await.unwrap().is_empty());
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.spawn(async move {
            let value = format!("audit-{i}");
            let (seq, hash) = s.append_chained(log, value.as_bytes()).await.unwrap();
            (seq, hash, value)
        });
    }
    let appended = tasks.join_all().await;
    let seqs: BTreeSet<u64> = appended.iter().map(|a| a.0).collect();
    assert_eq!(seqs, (1..=200).collect());

    let entries = read_all_chained(&*s, log, 37).await;
    assert_eq!(entries.len(), 200);
    let head = verify_chain(&entries).expect("chain verifies");
    assert_eq!(head, entries[199].hash);
    for (seq, hash, value) in &appended {
        let e = &entries[*seq as usize - 1];
        assert_eq!((&e.hash, &e.value), (hash, &value.clone().into_bytes()), "seq {seq}");
    }
    assert_eq!(s.last_seq(log).await.unwrap(), 200);
    assert_eq!(s.read_chained(log, 150, 10).await.unwrap()[0].seq, 150);
}

async fn wrong_kinds(s: &dyn Store) {
    for e in [
        s.append(Log::Audit, b"x").await.unwrap_err(),
        s.append_batch(Log::Audit, &[b"x".to_vec()]).await.unwrap_err(),
        s.read_log(Log::Audit, 1, 1).await.unwrap_err(),
        s.trim_log(Log::Audit, 10).await.unwrap_err(),
        s.append_chained(Log::Issued, b"x").await.map(|_| ()).unwrap_err(),
        s.read_chained(Log::Issued, 1, 1).await.map(|_| ()).unwrap_err(),
        s.atomic(
            &[],
            &[Op::Append {
                log: Log::Audit,
                value: b"x",
            }],
        )
        .await
        .map(|_| ())
        .unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::Invalid(_)), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// redb

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_suite() {
    let dir = tmpdir();
    let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
    assert_eq!(store.backend(), "redb");
    suite(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_survives_restart() {
    let dir = tmpdir();
    let path = dir.path().join("s.redb");
    let head = {
        let s = RedbStore::open(&path).unwrap();
        s.put(Ns::Keys, "k1", b"sealed").await.unwrap();
        assert_eq!(s.incr("generation", 7).await.unwrap(), 7);
        s.append_batch(Log::Revocations, &[b"a".to_vec(), b"b".to_vec()])
            .await
            .unwrap();
        s.append_chained(Log::Audit, b"one").await.unwrap();
        s.append_chained(Log::Audit, b"two").await.unwrap().1
    }; // dropped: writer stopped, file closed

    let s = RedbStore::open(&path).unwrap();
    assert_eq!(s.get(Ns::Keys, "k1").await.unwrap().as_deref(), Some(&b"sealed"[..]));
    assert_eq!(s.counter("generation").await.unwrap(), 7);
    assert_eq!(s.incr("generation", 1).await.unwrap(), 8);
    assert_eq!(
        s.read_log(Log::Revocations, 1, 10).await.unwrap(),
        vec![(1, b"a".to_vec()), (2, b"b".to_vec())]
    );
    assert_eq!(s.append(Log::Revocations, b"c").await.unwrap(), 3);
    let (seq, _) = s.append_chained(Log::Audit, b"three").await.unwrap();
    assert_eq!(seq, 3);
    let entries = s.read_chained(Log::Audit, 1, 10).await.unwrap();
    assert_eq!(entries[1].hash, head);
    verify_chain(&entries).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_tampering_is_detected() {
    let dir = tmpdir();
    let path = dir.path().join("s.redb");
    {
        let s = RedbStore::open(&path).unwrap();
        for i in 0..10 {
            s.append_chained(Log::Audit, format!("entry {i}").as_bytes())
                .await
                .unwrap();
        }
    }
    {
        // Edit entry 7's value behind the store's back, keeping its stored hash.
        let table = redb::TableDefinition::<u64, &[u8]>::new("log:audit");
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(table).unwrap();
            let mut stored = t.get(7).unwrap().unwrap().value().to_vec();
            stored[32..].copy_from_slice(b"ENTRY 6");
            t.insert(7, stored.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let s = RedbStore::open(&path).unwrap();
    let entries = s.read_chained(Log::Audit, 1, 100).await.unwrap();
    assert_eq!(entries.len(), 10);
    assert_eq!(verify_chain(&entries), Err(7));
}

#[tokio::test]
async fn redb_file_is_held_by_one_store() {
    let dir = tmpdir();
    let path = dir.path().join("s.redb");
    let _s = RedbStore::open(&path).unwrap();
    assert_eq!(RedbStore::open(&path).unwrap_err().code(), "store_open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_store_picks_the_backend() {
    let dir = tmpdir();
    let data = dir.path().join("data");
    {
        let s = open_store("", &data).await.unwrap();
        assert_eq!(s.backend(), "redb");
        s.put(Ns::Settings, "x", b"1").await.unwrap();
    }
    assert!(data.join("sharegate.redb").exists());
    let s = open_store("redb", &data).await.unwrap();
    assert_eq!(s.get(Ns::Settings, "x").await.unwrap().as_deref(), Some(&b"1"[..]));
    drop(s);
    let e = open_store("reddis://typo:6379", &data).await.map(|_| ()).unwrap_err();
    assert_eq!(e.code(), "store_invalid");

    let server = RedisServer::start();
    let url = format!("{}?key_prefix=deploy-a:", server.url());
    let s = open_store(&url, Path::new("/nonexistent")).await.unwrap();
    assert_eq!(s.backend(), "redis");
    s.put(Ns::Settings, "x", b"a").await.unwrap();
    let b = redis_store(&server, "deploy-a:").await;
    assert_eq!(b.get(Ns::Settings, "x").await.unwrap().as_deref(), Some(&b"a"[..]));
}

// ---------------------------------------------------------------------------------------------------------------
// Redis

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_suite() {
    let server = RedisServer::start();
    let store = redis_store(&server, "suite:").await;
    assert_eq!(store.backend(), "redis");
    suite(store).await;
}

/// Two stores on one Redis stand for two control-plane replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_replicas_agree() {
    let server = RedisServer::start();
    let a = redis_store(&server, "sharegate:").await;
    let b = redis_store(&server, "sharegate:").await;

    // Each sees the other's writes, revocations included.
    a.put(Ns::Revocations, "viewer:42", b"T").await.unwrap();
    assert_eq!(
        b.get(Ns::Revocations, "viewer:42").await.unwrap().as_deref(),
        Some(&b"T"[..])
    );
    assert_eq!(b.scan(Ns::Revocations, "viewer:").await.unwrap().len(), 1);
    assert!(!b.put_if_absent(Ns::Revocations, "viewer:42", b"other").await.unwrap());
    assert!(b.delete(Ns::Revocations, "viewer:42").await.unwrap());
    assert_eq!(a.get(Ns::Revocations, "viewer:42").await.unwrap(), None);

    // Counters, log sequences and the audit chain from both at once.
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        for (name, s) in [("a", a.clone()), ("b", b.clone())] {
            tasks.spawn(async move {
                let gen_ = s.incr("generation", 1).await.unwrap();
                let seq = s
                    .append(Log::Revocations, format!("{name}{i}").as_bytes())
                    .await
                    .unwrap();
                let (chained, _) = s
                    .append_chained(Log::Audit, format!("{name}{i}").as_bytes())
                    .await
                    .unwrap();
                (gen_, seq, chained)
            });
        }
    }
    let results = tasks.join_all().await;
    let all = |f: fn(&(u64, u64, u64)) -> u64| results.iter().map(f).collect::<BTreeSet<u64>>();
    assert_eq!(
        all(|r| r.0),
        (1..=400).collect(),
        "generations unique and gap-free across replicas"
    );
    assert_eq!(
        all(|r| r.1),
        (1..=400).collect(),
        "log seqs unique and gap-free across replicas"
    );
    assert_eq!(
        all(|r| r.2),
        (1..=400).collect(),
        "audit seqs unique and gap-free across replicas"
    );
    assert_eq!(a.counter("generation").await.unwrap(), 400);
    assert_eq!(b.last_seq(Log::Revocations).await.unwrap(), 400);

    // One chain, no fork, whichever replica reads it.
    let from_a = read_all_chained(&*a, Log::Audit, 100).await;
    let from_b = read_all_chained(&*b, Log::Audit, 1000).await;
    assert_eq!(from_a.len(), 400);
    assert_eq!(from_a, from_b);
    let head = verify_chain(&from_a).unwrap();
    // B appends after A's last: the chain continues from A's head.
    let (seq, hash) = b.append_chained(Log::Audit, b"after").await.unwrap();
    assert_eq!(seq, 401);
    assert_eq!(hash, sharegate_control_plane::store::chain_hash(&head, b"after"));
    let (seq, _) = a.append_chained(Log::Audit, b"after 2").await.unwrap();
    assert_eq!(seq, 402);
    verify_chain(&read_all_chained(&*b, Log::Audit, 1000).await).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tampering_is_detected() {
    let server = RedisServer::start();
    let s = redis_store(&server, "t:").await;
    for i in 0..10 {
        s.append_chained(Log::Audit, format!("entry {i}").as_bytes())
            .await
            .unwrap();
    }
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut stored: Vec<u8> = redis::cmd("HGET")
        .arg("t:log:audit")
        .arg("7")
        .query_async(&mut conn)
        .await
        .unwrap();
    stored[32..].copy_from_slice(b"ENTRY 6");
    let _: () = redis::cmd("HSET")
        .arg("t:log:audit")
        .arg("7")
        .arg(stored)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(verify_chain(&read_all_chained(&*s, Log::Audit, 100).await), Err(7));

    // A deleted entry shows as a break at its seq.
    let _: () = redis::cmd("HDEL")
        .arg("t:log:audit")
        .arg("4")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(verify_chain(&read_all_chained(&*s, Log::Audit, 100).await), Err(4));
}

/// Chained appends are group-committed on Redis (one script call per batch of queued callers). A batch whose call
/// fails must fail every caller in it, and no caller may be answered before its batch is written: so, under
/// concurrent appends with the log key made unwritable for a while (a foreign type under it, which fails the
/// script before it writes anything), every acknowledged entry is in the chain at the seq and hash it was answered
/// with, and no refused entry is in it at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_chained_group_commit_acknowledges_only_what_it_wrote() {
    let server = RedisServer::start();
    let s = redis_store(&server, "g:").await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Appenders run until told to stop; the log is unwritable from the first acknowledgement until the first
    // refusal has been seen (however slow the machine), then writable again for a while.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = Arc::new([
        std::sync::atomic::AtomicUsize::new(0),
        std::sync::atomic::AtomicUsize::new(0),
    ]);
    let mut tasks = JoinSet::new();
    for t in 0..32u32 {
        let (s, stop, seen) = (s.clone(), stop.clone(), seen.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let value = format!("entry-{t}-{i}");
                let r = s.append_chained(Log::Audit, value.as_bytes()).await;
                seen[usize::from(r.is_err())].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                out.push((value, r));
            }
            out
        });
    }
    let until = |i: usize, n: usize| {
        let seen = seen.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while seen[i].load(std::sync::atomic::Ordering::Relaxed) < n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    };
    until(0, 1).await;
    // In one transaction: between a separate RENAME and SET, an appender that found the log gone started a fresh one
    // (seq 1), had entries acknowledged, and the SET then destroyed them. That is the test deleting acknowledged
    // data, not the store losing it.
    let _: () = redis::pipe()
        .atomic()
        .cmd("RENAME")
        .arg("g:log:audit")
        .arg("g:log:audit.aside")
        .ignore()
        .cmd("SET")
        .arg("g:log:audit")
        .arg("not a hash")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    until(1, 1).await;
    let _: () = redis::cmd("RENAME")
        .arg("g:log:audit.aside")
        .arg("g:log:audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    let acked_before = seen[0].load(std::sync::atomic::Ordering::Relaxed);
    until(0, acked_before + 200).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();

    let entries = read_all_chained(&*s, Log::Audit, 1000).await;
    verify_chain(&entries).expect("one unbroken chain");
    let stored: HashMap<Vec<u8>, &ChainedEntry> = entries.iter().map(|e| (e.value.clone(), e)).collect();
    let (mut acked, mut refused) = (0, 0);
    for (value, r) in &results {
        match r {
            Ok((seq, hash)) => {
                acked += 1;
                let e = stored
                    .get(value.as_bytes())
                    .unwrap_or_else(|| panic!("{value} acknowledged, not stored"));
                assert_eq!((e.seq, e.hash), (*seq, *hash), "{value}");
            }
            Err(e) => {
                refused += 1;
                assert!(
                    !stored.contains_key(value.as_bytes()),
                    "{value} refused ({e}) but stored"
                );
            }
        }
    }
    assert_eq!(acked, entries.len(), "every stored entry was acknowledged once");
    assert!(acked > 200, "too little got through: {acked}");
    assert!(refused > 0, "no append met the unwritable log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_prefixes_keep_deployments_apart() {
    let server = RedisServer::start();
    let a = redis_store(&server, "a:").await;
    let b = redis_store(&server, "b:").await;
    a.put(Ns::Assets, "x", b"1").await.unwrap();
    a.incr("c", 3).await.unwrap();
    a.append(Log::Issued, b"t").await.unwrap();
    assert_eq!(b.get(Ns::Assets, "x").await.unwrap(), None);
    assert_eq!(b.counter("c").await.unwrap(), 0);
    assert_eq!(b.last_seq(Log::Issued).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_an_error_not_a_hang() {
    let server = RedisServer::start();
    let s = redis_store(&server, "d:").await;
    drop(server);
    let started = Instant::now();
    let e = s.ping().await.unwrap_err();
    assert!(e.is_retryable() || e.code() == "store_backend", "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let e = RedisStore::connect("redis://127.0.0.1:1/", "x:").await.unwrap_err();
    assert_eq!(e.code(), "store_open");
}

// ---------------------------------------------------------------------------------------------------------------
// Throughput (not part of the normal run)

async fn appends_per_second(store: Arc<dyn Store>, appenders: usize, each: usize) -> f64 {
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for t in 0..appenders {
        let s = store.clone();
        tasks.spawn(async move {
            for i in 0..each {
                s.append(
                    Log::Issued,
                    format!("token-{t}-{i}-padding-to-about-64-bytes-of-entry").as_bytes(),
                )
                .await
                .unwrap();
            }
        });
    }
    tasks.join_all().await;
    let n = appenders * each;
    assert_eq!(store.last_seq(Log::Issued).await.unwrap(), n as u64);
    n as f64 / started.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput report; run with --ignored --nocapture"]
async fn throughput_report() {
    for (appenders, each) in [(1, 300), (64, 500)] {
        let dir = tmpdir();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("t.redb")).unwrap());
        let rate = appends_per_second(store, appenders, each).await;
        println!("redb  group-commit appends/s, {appenders:>2} concurrent appenders: {rate:>9.0}");
    }
    let server = RedisServer::start();
    for (appenders, each) in [(1, 2000), (64, 500)] {
        let store = redis_store(&server, &format!("bench{appenders}:")).await;
        let rate = appends_per_second(store, appenders, each).await;
        println!("redis appends/s, {appenders:>2} concurrent appenders: {rate:>9.0}");
    }
    let store = redis_store(&server, "benchchain:").await;
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for t in 0..64 {
        let s = store.clone();
        tasks.spawn(async move {
            for i in 0..50 {
                s.append_chained(Log::Audit, format!("audit-{t}-{i}").as_bytes())
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    println!(
        "redis chained appends/s, 64 concurrent: {:>9.0}",
        3200.0 / started.elapsed().as_secs_f64()
    );
}

/// The harness takes a Redis for the one it started only if that process answers: another test's Redis on the port
/// (which can take it between the pick and the bind) is not.
#[test]
fn the_harness_knows_its_own_redis() {
    let redis = RedisServer::start();
    assert!(common::answers_as(redis.port(), redis.pid()));
    assert!(!common::answers_as(redis.port(), std::process::id()));
}
