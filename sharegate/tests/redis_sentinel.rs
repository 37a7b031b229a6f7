//! Redis Sentinel failover under load (issue 16): one primary, one replica and three Sentinels, all Debian's
//! `redis-server`/`redis-sentinel` on loopback; `sharegate serve` on `redis+sentinel://…/mymaster` with
//! `SHAREGATE_REDIS_WAIT_REPLICAS=1`. Minters and responders keep minting and revoking (every revocation with its
//! own `Idempotency-Key`, retried until acknowledged) while the primary is killed with SIGKILL. The Sentinels promote
//! the replica; the control plane must serve again within 10 s of the kill (it asks the Sentinels for the new
//! primary after the errors), and every revocation acknowledged before, during or after the failover must be found
//! afterwards: by the API, and in the revocation log read straight from the promoted primary.
//!
//! Also: TLS (`rediss://`) with a private CA and an ACL user, the store's durability report on both setups.
#![allow(clippy::unwrap_used)]

mod common;

use common::{free_port, repo_root};
use serde_json::{Value, json};
use sharegate_control_plane::store::{Log, RedisStore, Store};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SIGNING_HEX: &str = "5151515151515151515151515151515151515151515151515151515151515151";
const STATE_HEX: &str = "6262626262626262626262626262626262626262626262626262626262626262";
const MASTER_HEX: &str = "7373737373737373737373737373737373737373737373737373737373737373";
const EDGE_TOKEN: &str = "edge-credential-of-the-sentinel-test-0123456789";
const ADMIN_KEY: &str = "sg_admin_sentinel-test-bootstrap-key-0123456789";

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Option<Child>);

impl Proc {
    fn kill9(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn need(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is missing (scripts/test.sh installs it under CI)"
        );
        eprintln!("skipping: {tool} is not installed (apt-get install redis-server redis-sentinel)");
    }
    found
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the server on `port` is `child`: a port picked free can be taken by another test's Redis before ours binds
/// it, and that one would answer a PING just the same.
fn answers_as(port: u16, child: &std::process::Child) -> bool {
    cli(port, &["INFO", "server"]).contains(&format!("process_id:{}", child.id()))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn redis_server(dir: &Path, port: u16, extra: &[&str]) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(&format!("redis on {port}"), Duration::from_secs(10), || {
        answers_as(port, &child)
    });
    Proc(Some(child))
}

fn sentinel(dir: &Path, port: u16, primary: u16) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("sentinel.conf");
    // Sentinel rewrites its own file: it must be writable, one per Sentinel.
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {primary} 2\n\
             sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 4000\n\
             sentinel parallel-syncs mymaster 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(&format!("sentinel on {port}"), Duration::from_secs(10), || {
        answers_as(port, &child)
    });
    Proc(Some(child))
}

struct Serve {
    _proc: Proc,
    api: String,
}

fn serve(data: &Path, store: &str, env: &[(&str, &str)]) -> Serve {
    let port = free_port();
    let log = std::fs::File::create(data.with_extension("log")).unwrap();
    let mut cmd = common::sharegate();
    cmd.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--api-addr", &format!("127.0.0.1:{port}"), "--store", store])
        .env("SHAREGATE_SIGNING_KEYS", format!("1:active:{SIGNING_HEX}"))
        .env("SHAREGATE_STATE_KEY", STATE_HEX)
        .env("SHAREGATE_MASTER_KEY", MASTER_HEX)
        .env("SHAREGATE_EDGE_TOKEN", EDGE_TOKEN)
        .env("SHAREGATE_ADMIN_KEY", ADMIN_KEY)
        .env("SHAREGATE_IDEMPOTENCY_LEASE_MS", "700")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let health = format!("{api}/healthz");
    wait_until("serve to answer", Duration::from_secs(30), || get_ok(&health));
    Serve {
        _proc: Proc(Some(child)),
        api,
    }
}

/// A blocking GET answered 200, for start-up polls outside the runtime.
fn get_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let url = url.trim_start_matches("http://");
    let Some((host, path)) = url.split_once('/') else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    let mut buf = String::new();
    s.write_all(req.as_bytes()).is_ok() && s.read_to_string(&mut buf).is_ok() && buf.starts_with("HTTP/1.1 200")
}

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    key: &str,
    body: Option<&Value>,
    idem: Option<&str>,
) -> Result<Value, String> {
    let mut req = http
        .request(method, url)
        .bearer_auth(key)
        .timeout(Duration::from_secs(8));
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(k) = idem {
        req = req.header("idempotency-key", k);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        Err(format!("{status}: {text}"))
    }
}

async fn api_key(http: &reqwest::Client, api: &str, role: &str) -> String {
    let v = call(
        http,
        reqwest::Method::POST,
        &format!("{api}/v1/apikeys"),
        ADMIN_KEY,
        Some(&json!({ "role": role })),
        None,
    )
    .await
    .unwrap();
    v["key"].as_str().unwrap().to_string()
}

async fn register_demo(http: &reqwest::Client, api: &str) {
    let origin = std::fs::canonicalize(repo_root().join("deploy/demo-media")).unwrap();
    let v = call(
        http,
        reqwest::Method::POST,
        &format!("{api}/v1/assets"),
        ADMIN_KEY,
        Some(&json!({ "id": "demo", "origin": origin })),
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["ready"], true, "{v}");
}

/// What the workload saw acknowledged.
#[derive(Default)]
struct Acked {
    /// Token id → revocation receipt id, for every revocation answered 2xx.
    revocations: BTreeMap<String, String>,
    /// When each successful call completed (for the recovery time).
    successes: Vec<Instant>,
    failures: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_primary_killed_mid_revocations_fails_over_within_10s_and_loses_no_acknowledged_revocation() {
    if !need("redis-server") || !need("redis-sentinel") || !need("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (p_port, r_port) = (free_port(), free_port());
    let mut primary = redis_server(&dir.path().join("primary"), p_port, &[]);
    let _replica = redis_server(
        &dir.path().join("replica"),
        r_port,
        &["--replicaof", "127.0.0.1", &p_port.to_string()],
    );
    wait_until("the replica to sync", Duration::from_secs(15), || {
        cli(r_port, &["INFO", "replication"]).contains("master_link_status:up")
    });
    let s_ports = [free_port(), free_port(), free_port()];
    let mut sentinels: Vec<Proc> = s_ports
        .iter()
        .enumerate()
        .map(|(i, p)| sentinel(&dir.path().join(format!("sentinel{i}")), *p, p_port))
        .collect();
    wait_until(
        "the Sentinels to know the replica and each other",
        Duration::from_secs(20),
        || {
            s_ports.iter().all(|p| {
                let replicas = cli(*p, &["SENTINEL", "replicas", "mymaster"]);
                let peers = cli(*p, &["SENTINEL", "sentinels", "mymaster"]);
                replicas.contains(&r_port.to_string()) && peers.matches("127.0.0.1").count() >= 2
            })
        },
    );

    let store = format!(
        "redis+sentinel://{}/mymaster",
        s_ports.map(|p| format!("127.0.0.1:{p}")).join(",")
    );
    let serve = serve(
        &dir.path().join("data"),
        &store,
        &[
            ("SHAREGATE_REDIS_WAIT_REPLICAS", "1"),
            ("SHAREGATE_REDIS_WAIT_TIMEOUT_MS", "1000"),
        ],
    );
    let http = reqwest::Client::new();
    register_demo(&http, &serve.api).await;
    let minter = api_key(&http, &serve.api, "minter").await;
    let responder = api_key(&http, &serve.api, "responder").await;

    // The doctor's view before: durable with one replica waited for.
    let report = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/v1/doctor", serve.api),
        ADMIN_KEY,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report["store"]["durability"]["level"], "ok", "{report}");
    assert_eq!(
        report["store"]["durability"]["facts"]["online_replicas"], "1",
        "{report}"
    );

    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (http, api, minter, responder) = (http.clone(), serve.api.clone(), minter.clone(), responder.clone());
        let (acked, stop) = (acked.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                // Mint (retried until it works: a failed mint leaves nothing to check).
                let link = loop {
                    let r = call(
                        &http,
                        reqwest::Method::POST,
                        &format!("{api}/v1/links"),
                        &minter,
                        Some(&json!({ "asset": "demo", "ttl": 600 })),
                        None,
                    )
                    .await;
                    match r {
                        Ok(v) => {
                            acked.lock().unwrap().successes.push(Instant::now());
                            break v;
                        }
                        Err(_) => {
                            acked.lock().unwrap().failures += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                };
                let token_id = link["token_id"].as_str().unwrap().to_string();
                // Revoke with one idempotency key, retried until acknowledged.
                let key = format!("sentinel-test-{w}-{n}");
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let r = call(
                        &http,
                        reqwest::Method::POST,
                        &format!("{api}/v1/revocations"),
                        &responder,
                        Some(&json!({ "kind": "token", "id": token_id, "reason": "sentinel test" })),
                        Some(&key),
                    )
                    .await;
                    match r {
                        Ok(v) => {
                            let id = v["id"].as_str().unwrap().to_string();
                            let mut a = acked.lock().unwrap();
                            a.revocations.insert(token_id.clone(), id);
                            a.successes.push(Instant::now());
                            break;
                        }
                        Err(e) => {
                            assert!(Instant::now() < deadline, "revocation {key} never acknowledged: {e}");
                            acked.lock().unwrap().failures += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = acked.lock().unwrap().revocations.len();
    assert!(before_kill > 0, "no revocation acknowledged before the kill");
    let killed_at = Instant::now();
    primary.kill9();
    // Serve until the Sentinels have promoted the replica and the control plane has found it.
    let recovered = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first_after = acked
            .lock()
            .unwrap()
            .successes
            .iter()
            .copied()
            .filter(|t| *t > killed_at + Duration::from_millis(1100))
            .min();
        if let Some(t) = first_after {
            break t.duration_since(killed_at);
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(30),
            "never recovered from the failover"
        );
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "failover: {} revocations acknowledged ({before_kill} before the kill), {} failed attempts retried, \
         serving again {:.2} s after the primary was killed",
        acked.revocations.len(),
        acked.failures,
        recovered.as_secs_f64()
    );
    assert!(
        recovered <= Duration::from_secs(10),
        "the control plane took {recovered:?} to serve again after the failover"
    );
    // The replica is the primary now.
    assert!(cli(r_port, &["INFO", "replication"]).contains("role:master"));

    // Every acknowledged revocation is there: by the API...
    for id in acked.revocations.values() {
        let r = call(
            &http,
            reqwest::Method::GET,
            &format!("{}/v1/revocations/{id}", serve.api),
            &responder,
            None,
            None,
        )
        .await;
        assert!(r.is_ok(), "acknowledged revocation {id} lost: {r:?}");
    }
    // ...and in the log on the promoted primary, read directly (each target exactly once).
    let direct = RedisStore::connect(&format!("redis://127.0.0.1:{r_port}/"), "sharegate:")
        .await
        .unwrap();
    let mut targets: BTreeMap<String, usize> = BTreeMap::new();
    let mut from = 1;
    loop {
        let page = direct.read_log(Log::Revocations, from, 1000).await.unwrap();
        let Some(last) = page.last().map(|(s, _)| *s) else {
            break;
        };
        for (_, v) in &page {
            let e: Value = serde_json::from_slice(v).unwrap();
            *targets
                .entry(e["id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
        from = last + 1;
    }
    for token in acked.revocations.keys() {
        assert_eq!(
            targets.get(token),
            Some(&1),
            "token {token}: acknowledged revocation not exactly once in the promoted primary's log"
        );
    }
    // The doctor says the store is degraded now (no replica to wait for), not that all is well.
    let report = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/v1/doctor", serve.api),
        ADMIN_KEY,
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report["store"]["durability"]["level"], "warning", "{report}");
    assert_eq!(
        report["store"]["durability"]["facts"]["primary"],
        format!("127.0.0.1:{r_port}"),
        "{report}"
    );

    // Degraded writes are acknowledged only while a Sentinel majority names this primary: with two of the three
    // Sentinels gone (as seen from a node cut off by a partition), a write is refused, not acknowledged on a
    // primary whose writes a resync might discard.
    sentinels[0].kill9();
    sentinels[1].kill9();
    tokio::time::sleep(Duration::from_millis(1200)).await; // past the cached confirmation
    let link = call(
        &http,
        reqwest::Method::POST,
        &format!("{}/v1/links", serve.api),
        &minter,
        Some(&json!({ "asset": "demo", "ttl": 600 })),
        None,
    )
    .await;
    let err = link.expect_err("a degraded write was acknowledged without a Sentinel majority");
    assert!(err.starts_with("503") && err.contains("store_unavailable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_replica_that_a_plain_url_lacks_refuses_writes_and_says_why() {
    if !need("redis-server") || !need("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _redis = redis_server(&dir.path().join("redis"), port, &[]);
    // Nothing can be confirmed by a replica, and a plain URL has no Sentinel to vouch for the primary: even the
    // bootstrap admin key cannot be stored, so serve stops at once and says why, rather than serve unconfirmed.
    let out = common::sharegate()
        .args([
            "serve",
            "--api-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .args(["--store", &format!("redis://127.0.0.1:{port}/")])
        .env("SHAREGATE_SIGNING_KEYS", format!("1:active:{SIGNING_HEX}"))
        .env("SHAREGATE_STATE_KEY", STATE_HEX)
        .env("SHAREGATE_MASTER_KEY", MASTER_HEX)
        .env("SHAREGATE_EDGE_TOKEN", EDGE_TOKEN)
        .env("SHAREGATE_ADMIN_KEY", ADMIN_KEY)
        .env("SHAREGATE_REDIS_WAIT_REPLICAS", "1")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "serve started with writes nobody can confirm");
    assert!(
        text.contains("write not confirmed") && text.contains("0 of 1 replicas online"),
        "{text}"
    );
    // Its startup warning said why before that.
    assert!(text.contains("degraded"), "{text}");
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl").args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command.
fn make_certs(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sharegate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        dir,
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.pem",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    dir.join("ca.pem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_an_acl_user_serves_and_reports_durability() {
    if !need("redis-server") || !need("openssl") || !need("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = make_certs(&dir.path().join("tls"));
    let tls = dir.path().join("tls");
    let port = free_port();
    let acl = dir.path().join("users.acl");
    // The ACL user docs/deploy.md suggests (no CONFIG): the durability report must cope with CONFIG refused.
    std::fs::write(
        &acl,
        "user default off\nuser sharegate on >s3cret-pass ~sharegate:* +@all -@dangerous +info +time +wait +client|id\n",
    )
    .unwrap();
    let child = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--tls-auth-clients",
            "no",
        ])
        .arg("--tls-cert-file")
        .arg(tls.join("server.pem"))
        .arg("--tls-key-file")
        .arg(tls.join("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .arg("--aclfile")
        .arg(&acl)
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _redis = Proc(Some(child));
    let store = format!("rediss://sharegate:s3cret-pass@127.0.0.1:{port}/");
    let ca_s = ca.to_string_lossy().to_string();
    let serve = serve(&dir.path().join("data"), &store, &[("SHAREGATE_REDIS_CA_FILE", &ca_s)]);
    let http = reqwest::Client::new();
    register_demo(&http, &serve.api).await;
    let minter = api_key(&http, &serve.api, "minter").await;
    let link = call(
        &http,
        reqwest::Method::POST,
        &format!("{}/v1/links", serve.api),
        &minter,
        Some(&json!({ "asset": "demo", "ttl": 600 })),
        None,
    )
    .await
    .unwrap();
    assert!(link["token_id"].is_string());
    let report = call(
        &http,
        reqwest::Method::GET,
        &format!("{}/v1/doctor", serve.api),
        ADMIN_KEY,
        None,
        None,
    )
    .await
    .unwrap();
    // CONFIG is refused to this user: appendfsync unknown, so a warning that says why, never a false "ok".
    let d = &report["store"]["durability"];
    assert_eq!(d["facts"]["appendonly"], "yes", "{report}");
    assert_eq!(d["facts"]["appendfsync"], "unknown", "{report}");
    assert_eq!(d["level"], "warning", "{report}");
    assert!(report["store"]["skew_ms"].is_i64(), "{report}");
    // A wrong CA is refused (the certificate is checked, not merely encrypted).
    let other = make_certs(&dir.path().join("other"));
    let out = common::sharegate()
        .args(["check-config", "serve", "--store", &store])
        .env("SHAREGATE_REDIS_CA_FILE", &other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check-config does not connect: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let bad = common::sharegate()
        .args([
            "serve",
            "--api-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--store",
            &store,
            "--data-dir",
        ])
        .arg(dir.path().join("data2"))
        .env("SHAREGATE_REDIS_CA_FILE", &other)
        .env("SHAREGATE_SIGNING_KEYS", format!("1:active:{SIGNING_HEX}"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "serve trusted a certificate its CA did not sign");
    assert!(stderr.contains("redis"), "refused for another reason: {stderr}");
}
