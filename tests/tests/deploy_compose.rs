//! The compose stack (deploy/compose.yaml) with podman-compose and the local images: Redis with an fsynced
//! append-only file, two control-plane replicas on it, the native edge and Prometheus, started from the file as an
//! operator would, with secrets made by deploy/compose/secrets.sh. Then:
//! - links minted and revoked through both replicas are refused at the edge;
//! - while a client keeps minting and revoking through cp1, cp2 is killed (SIGKILL), Redis is restarted, then
//!   killed too; every revocation that was acknowledged (2xx) is still in effect afterwards, in
//!   `GET /v1/revocations/{id}` on both replicas and at a restarted edge (which holds only what the control plane
//!   builds from the store), and the stack serves again (a new link plays, and is refused once revoked);
//! - Prometheus scrapes both replicas with the auditor key from its file, with the SLO rules loaded;
//! - `sharegate doctor` (the image's CLI on the stack's network) reports the stack healthy (durable Redis, both
//!   replicas, the canary refused at the edge), then unhealthy with the right finding when cp2's clock runs 30 s
//!   ahead (recreated with `SHAREGATE_TEST_CLOCK_OFFSET_SECS` from an override file) and when the edge is stopped.
//!
//! podman-compose 1.0.3 (Debian 12) neither waits for `condition: service_healthy` nor runs a health check of a
//! shell-less image (it wraps every check in `/bin/sh -c`), so this test waits for health itself: it runs each
//! service's check as the compose file declares it, `sharegate probe` inside the sharegate containers and
//! `podman healthcheck run` for Redis and Prometheus, in the file's order.
//!
//! Needs root, podman, podman-compose, mmdebstrap and ffmpeg. Under CI=true a missing piece fails the test; elsewhere
//! it is skipped with a message. `podman-compose down -v` runs however the test ends.
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sharegate_e2e::{ffprobe_duration, repo_root};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/sharegate-test/sharegate:dev";

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

fn found(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether this machine can run the test; under CI it must.
fn runnable() -> bool {
    let why = if !found("podman") {
        "podman is not installed"
    } else if !found("podman-compose") {
        "podman-compose is not installed"
    } else if !rustix::process::geteuid().is_root() {
        "it needs root (rootful podman, mmdebstrap)"
    } else {
        return true;
    };
    assert!(
        !is_ci(),
        "CI=true: {why}; install podman, runc, podman-compose and mmdebstrap (apt) and run as root"
    );
    eprintln!("skipping the compose test: {why}");
    false
}

/// The stack: its project name and the environment podman-compose and podman run with.
struct Stack {
    project: String,
    env: BTreeMap<String, String>,
    secrets: PathBuf,
}

impl Stack {
    fn podman(&self) -> Command {
        let mut c = Command::new("podman");
        c.envs(&self.env).stdin(Stdio::null());
        c
    }

    /// podman-compose in deploy/ (secret and bind-mount paths in the file are relative to it).
    fn compose(&self, args: &[&str]) -> Result<()> {
        self.compose_files(None, args)
    }

    /// podman-compose with `override_file` laid over compose.yaml (a test's variation of one service).
    fn compose_with(&self, override_file: &std::path::Path, args: &[&str]) -> Result<()> {
        self.compose_files(Some(override_file), args)
    }

    fn compose_files(&self, override_file: Option<&std::path::Path>, args: &[&str]) -> Result<()> {
        let mut cmd = Command::new("podman-compose");
        cmd.current_dir(repo_root().join("deploy"))
            .envs(&self.env)
            .args(["-p", &self.project, "-f", "compose.yaml"]);
        if let Some(f) = override_file {
            cmd.arg("-f").arg(f);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running podman-compose")?;
        ensure!(
            out.status.success(),
            "podman-compose {}: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `sharegate doctor --json` from the image, on the stack's network, against cp1 and the edge: its exit status
    /// and report.
    fn doctor(&self, admin: &str, extra: &[&str]) -> (i32, Value) {
        let out = self
            .podman()
            .args(["run", "--rm", "--network", &format!("{}_default", self.project)])
            .args(["-e", &format!("SHAREGATE_API_KEY={admin}"), IMAGE])
            .args([
                "doctor",
                "--api",
                "http://cp1:7700",
                "--edge",
                "http://edge:7701",
                "--json",
            ])
            .args(["--canary-timeout", "10"])
            .args(extra)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor printed no report ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), report)
    }

    /// `podman args`: stdout, or an error with stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.podman().args(args).output()?;
        ensure!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// podman-compose 1.0.3's name for a service's container.
    fn container(&self, service: &str) -> String {
        format!("{}_{service}_1", self.project)
    }

    /// The service's health check, as deploy/compose.yaml declares it (see the module header for why not
    /// `podman healthcheck run` on the sharegate containers).
    fn healthy(&self, service: &str) -> Result<()> {
        let c = self.container(service);
        let url = match service {
            "cp1" | "cp2" => "http://127.0.0.1:7700/readyz",
            "edge" => "http://127.0.0.1:7701/_sharegate/ready",
            _ => return self.run(&["healthcheck", "run", &c]).map(drop),
        };
        self.run(&["exec", &c, "/usr/local/bin/sharegate", "probe", url])
            .map(drop)
    }

    /// A crash of `service`: SIGKILL to its process from outside, then wait until its restart policy has started
    /// it again. (`podman kill -s KILL` sends the same signal, but podman then counts the container as stopped by its
    /// operator, and `restart: unless-stopped` rightly leaves it down.)
    async fn crash(&self, service: &str) -> Result<()> {
        let c = self.container(service);
        let restarts = || self.run(&["inspect", "--format", "{{.RestartCount}}", &c]);
        let before = restarts()?;
        let pid: i32 = self.run(&["inspect", "--format", "{{.State.Pid}}", &c])?.parse()?;
        let pid = rustix::process::Pid::from_raw(pid).context("no process")?;
        rustix::process::kill_process(pid, rustix::process::Signal::KILL)?;
        let start = Instant::now();
        while restarts()? == before {
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "{service} was not restarted by its restart policy"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Wait until every one of `services` is healthy.
    async fn wait_healthy(&self, services: &[&str], limit: Duration) -> Result<()> {
        let start = Instant::now();
        for s in services {
            loop {
                match self.healthy(s) {
                    Ok(()) => break,
                    Err(e) if start.elapsed() > limit => bail!("{s} not healthy within {limit:?}: {e:#}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
                }
            }
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for s in ["redis", "cp1", "cp2", "edge", "prometheus"] {
                if let Ok(out) = self
                    .podman()
                    .args(["logs", "--tail", "30", &self.container(s)])
                    .output()
                {
                    eprintln!(
                        "---- {s}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        let down = Instant::now();
        if let Err(e) = self.compose(&["down", "-v"]) {
            eprintln!("podman-compose down -v: {e:#}");
        }
        eprintln!("podman-compose down -v took {:.1?}", down.elapsed());
        // podman-compose 1.0.3 leaves the project's network behind.
        let _ = self.run(&["network", "rm", "-f", &format!("{}_default", self.project)]);
        let _ = std::fs::remove_dir_all(&self.secrets);
    }
}

/// The bases and the image (scripts/container-bases.sh), as `KEY=VALUE`.
fn build_image() -> Result<BTreeMap<String, String>> {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/container-bases.sh"))
        .args(["image", IMAGE])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(
        out.status.success(),
        "scripts/container-bases.sh image failed ({})",
        out.status
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An API caller.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, url: String, key: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut r = self.http.request(method, url).bearer_auth(key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Mint a link for `demo` at `base`: (url, token id).
    async fn mint(&self, base: &str, minter: &str) -> Result<(String, String)> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                format!("{base}/v1/links"),
                minter,
                Some(json!({ "asset": "demo", "ttl": 900 })),
            )
            .await?;
        ensure!(status == 200, "mint: {status} {v}");
        Ok((
            v["url"].as_str().context("url")?.into(),
            v["token_id"].as_str().context("token_id")?.into(),
        ))
    }

    /// Revoke a token at `base`: the revocation id when acknowledged (2xx).
    async fn revoke(&self, base: &str, responder: &str, token_id: &str) -> Result<String> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                format!("{base}/v1/revocations"),
                responder,
                Some(json!({ "kind": "token", "id": token_id, "reason": "compose test" })),
            )
            .await?;
        ensure!((200..300).contains(&status), "revoke: {status} {v}");
        Ok(v["id"].as_str().context("revocation id")?.into())
    }

    /// The edge's answer to a link: (status, reason header).
    async fn edge(&self, url: &str) -> Result<(u16, String)> {
        let r = self.http.get(url).send().await?;
        let reason = r
            .headers()
            .get("x-sharegate-reason")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        Ok((r.status().as_u16(), reason))
    }

    /// Wait until the edge refuses `url` as revoked.
    async fn refused(&self, url: &str, limit: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let got = self.edge(url).await;
            if matches!(&got, Ok((403, reason)) if reason == "revoked") {
                return Ok(());
            }
            if start.elapsed() > limit {
                bail!("{url} not refused as revoked within {limit:?}: {got:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One acknowledged revocation of the client's loop.
struct Acked {
    url: String,
    revocation: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_keeps_every_acknowledged_revocation_through_a_replica_kill_and_a_redis_restart() {
    if !runnable() {
        return;
    }
    let vars = build_image().unwrap();
    let started = Instant::now();
    let project = format!("sgtc{}", std::process::id());
    let secrets = std::env::temp_dir().join(format!("{project}-secrets"));
    let (cp1_port, cp2_port, edge_port, prom_port) = (free_port(), free_port(), free_port(), free_port());
    let mut env = BTreeMap::new();
    for k in ["CONTAINERS_CONF", "REDIS_IMAGE", "PROMETHEUS_IMAGE"] {
        env.insert(k.to_string(), vars.get(k).cloned().unwrap_or_default());
    }
    env.insert("SHAREGATE_IMAGE".into(), IMAGE.into());
    env.insert("SHAREGATE_SECRETS".into(), secrets.display().to_string());
    env.insert("SHAREGATE_CP1_PORT".into(), cp1_port.to_string());
    env.insert("SHAREGATE_CP2_PORT".into(), cp2_port.to_string());
    env.insert("SHAREGATE_EDGE_PORT".into(), edge_port.to_string());
    env.insert("PROMETHEUS_PORT".into(), prom_port.to_string());
    let stack = Stack {
        project,
        env,
        secrets: secrets.clone(),
    };

    // ---- Secrets, by the script an operator runs (`sharegate keygen` from the image when none is on PATH).
    let script = repo_root().join("deploy/compose/secrets.sh");
    let out = Command::new("bash")
        .arg(&script)
        .envs(&stack.env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "secrets.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = |name: &str| std::fs::read_to_string(secrets.join(name)).unwrap().trim().to_string();
    assert!(secret("signing_keys").starts_with("1:active:") && secret("state_key").len() == 64);

    // ---- Up, and healthy in the file's order.
    stack.compose(&["up", "-d"]).unwrap();
    stack
        .wait_healthy(&["redis", "cp1", "cp2", "edge", "prometheus"], Duration::from_secs(90))
        .await
        .unwrap();
    eprintln!("stack healthy {:.1?} after up", started.elapsed());
    let (cp1, cp2) = (
        format!("http://127.0.0.1:{cp1_port}"),
        format!("http://127.0.0.1:{cp2_port}"),
    );

    // ---- Keys and the asset, through cp1 (the store is shared: cp2 knows them too).
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    };
    let admin = secret("admin_key");
    let (status, asset) = api
        .call(
            reqwest::Method::POST,
            format!("{cp1}/v1/assets"),
            &admin,
            Some(json!({ "id": "demo", "origin": "/srv/media" })),
        )
        .await
        .unwrap();
    assert!(status == 200 || status == 201, "{status} {asset}");
    assert_eq!(asset["ready"], true, "{asset}");
    let mut keys = BTreeMap::new();
    for role in ["minter", "responder"] {
        let (status, v) = api
            .call(
                reqwest::Method::POST,
                format!("{cp1}/v1/apikeys"),
                &admin,
                Some(json!({ "role": role, "label": "compose test" })),
            )
            .await
            .unwrap();
        assert!((200..300).contains(&status), "{role}: {status} {v}");
        keys.insert(role, v["key"].as_str().unwrap().to_string());
    }
    let (minter, responder) = (keys["minter"].clone(), keys["responder"].clone());
    // Prometheus' auditor key, by the script (through the API with the admin key).
    let mut auditor_env = stack.env.clone();
    auditor_env.insert("SHAREGATE_API".into(), cp1.clone());
    let out = Command::new("bash")
        .arg(&script)
        .arg("auditor")
        .envs(&auditor_env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "secrets.sh auditor: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(secret("auditor_key").starts_with("sg_"), "no auditor key written");

    // ---- Minted on one replica, revoked on the other, both ways; played first.
    let (url, _) = api.mint(&cp2, &minter).await.unwrap();
    let play = url.clone();
    let d = tokio::task::spawn_blocking(move || ffprobe_duration(&play))
        .await
        .unwrap();
    assert!(
        d.is_some_and(|d| (5.0..=7.0).contains(&d)),
        "ffprobe read {d:?} s of {url}"
    );
    for (mint_on, revoke_on) in [(&cp1, &cp2), (&cp2, &cp1)] {
        let (url, token_id) = api.mint(mint_on, &minter).await.unwrap();
        assert_eq!(api.edge(&url).await.unwrap().0, 200, "{url}");
        api.revoke(revoke_on, &responder, &token_id).await.unwrap();
        api.refused(&url, Duration::from_secs(5)).await.unwrap();
    }

    // ---- A client mints and revokes through cp1 without pause; meanwhile cp2 is killed and Redis restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (api, cp1, minter, responder, stop) = (
            api.clone(),
            cp1.clone(),
            minter.clone(),
            responder.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                let Ok((url, token_id)) = api.mint(&cp1, &minter).await else {
                    failed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match api.revoke(&cp1, &responder, &token_id).await {
                    Ok(revocation) => acked.push(Acked { url, revocation }),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = Instant::now();
    stack.crash("cp2").await.unwrap();
    stack.wait_healthy(&["cp2"], Duration::from_secs(60)).await.unwrap();
    eprintln!("cp2 killed, restarted and ready again in {:.1?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Redis stops (SIGTERM: it finishes its append-only file) and starts again; the replicas reconnect.
    let t = Instant::now();
    stack.run(&["restart", "-t", "10", &stack.container("redis")]).unwrap();
    stack
        .wait_healthy(&["redis", "cp1", "cp2"], Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("redis restarted and the replicas ready again in {:.1?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    // And Redis crashes (SIGKILL: no shutdown save). What it acknowledged is in the append-only file, fsynced.
    let t = Instant::now();
    stack.crash("redis").await.unwrap();
    stack
        .wait_healthy(&["redis", "cp1", "cp2"], Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!(
        "redis killed, restarted and the replicas ready again in {:.1?}",
        t.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = client.await.unwrap();
    eprintln!(
        "client: {} revocations acknowledged, {failed} calls failed",
        acked.len()
    );
    assert!(
        acked.len() >= 10,
        "the client got only {} revocations through",
        acked.len()
    );

    // A fresh edge holds only what the control plane now builds from the store.
    stack.run(&["restart", "-t", "10", &stack.container("edge")]).unwrap();
    stack.wait_healthy(&["edge"], Duration::from_secs(60)).await.unwrap();

    // ---- Every acknowledged revocation holds: on both replicas, and at the edge.
    for a in &acked {
        for base in [&cp1, &cp2] {
            let (status, v) = api
                .call(
                    reqwest::Method::GET,
                    format!("{base}/v1/revocations/{}", a.revocation),
                    &responder,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(status, 200, "revocation {} on {base}: {v}", a.revocation);
        }
        api.refused(&a.url, Duration::from_secs(5)).await.unwrap();
    }

    // ---- The stack serves again: a new link plays, and is refused once revoked.
    let (url, token_id) = api.mint(&cp2, &minter).await.unwrap();
    let play = url.clone();
    let d = tokio::task::spawn_blocking(move || ffprobe_duration(&play))
        .await
        .unwrap();
    assert!(d.is_some(), "a link minted after the restarts does not play: {url}");
    api.revoke(&cp1, &responder, &token_id).await.unwrap();
    api.refused(&url, Duration::from_secs(5)).await.unwrap();

    // ---- Prometheus scrapes both replicas with the auditor key, and has the SLO rules.
    let prom = format!("http://127.0.0.1:{prom_port}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let targets: Value = api
            .http
            .get(format!("{prom}/api/v1/targets"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let up: Vec<String> = targets["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(String::from))
            .collect();
        if up.contains(&"cp1:7700".to_string()) && up.contains(&"cp2:7700".to_string()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus does not scrape both replicas: {targets}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let rules: Value = api
        .http
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = rules["data"]["groups"].as_array().map_or(0, Vec::len);
    assert!(groups > 0, "no rule groups loaded: {rules}");

    // ---- sharegate doctor: healthy, then each fault named -----------------------------------------------------
    // The image's own CLI on the stack's network, as an operator would run it beside the stack.
    let (code, report) = stack.doctor(&admin, &[]);
    assert_eq!(code, 0, "doctor on the healthy stack: {report:#}");
    assert_eq!(report["healthy"], true, "{report:#}");
    let finding = |r: &Value, check: &str, status: &str| -> Vec<String> {
        r["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["check"] == check && f["status"] == status)
            .filter_map(|f| f["detail"].as_str().map(String::from))
            .collect()
    };
    // Redis with appendfsync always: durable; both replicas seen by their heartbeats; the canary refused at the edge.
    assert!(
        finding(&report, "store", "ok")
            .iter()
            .any(|d| d.contains("appendfsync always")),
        "{report:#}"
    );
    // Both replicas (cp2's process before its crash may still be listed: its heartbeat is under 30 s old).
    let replicas = report["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["check"] == "replicas")
        .and_then(|f| f["detail"].as_str())
        .and_then(|d| d.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    assert!(replicas >= 2, "{report:#}");
    assert!(report["canary"]["edges"][0]["refused_after_ms"].is_u64(), "{report:#}");

    // A replica's clock 30 s ahead (cp2 recreated with the rehearsal offset): unhealthy, and the finding names it.
    let override_file = secrets.join("clock-skew.yaml");
    std::fs::write(
        &override_file,
        "services:\n  cp2:\n    environment:\n      SHAREGATE_TEST_CLOCK_OFFSET_SECS: \"30\"\n",
    )
    .unwrap();
    stack.run(&["rm", "-f", "-t", "5", &stack.container("cp2")]).unwrap();
    stack
        .compose_with(&override_file, &["up", "-d", "--no-deps", "cp2"])
        .unwrap();
    stack.wait_healthy(&["cp2"], Duration::from_secs(60)).await.unwrap();
    // Its heartbeat (every 5 s) carries its clock and the store's.
    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let (code, report) = stack.doctor(&admin, &["--no-canary"]);
        let skewed = finding(&report, "clock", "fail")
            .iter()
            .any(|d| d.contains("30.") && d.contains("ahead of the store's"));
        if code == 1 && skewed {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "doctor did not find cp2's clock skew: {report:#}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    eprintln!("doctor, clock skewed: {}", finding(&report, "clock", "fail").join("; "));

    // The edge stopped: unhealthy, the edges finding names it.
    stack.run(&["stop", "-t", "5", &stack.container("edge")]).unwrap();
    let (code, report) = stack.doctor(&admin, &["--no-canary"]);
    assert_eq!(code, 1, "doctor with the edge stopped: {report:#}");
    assert!(
        finding(&report, "edges", "fail")
            .iter()
            .any(|d| d.contains("http://edge:7701") && d.contains("does not answer")),
        "{report:#}"
    );

    eprintln!("compose test done {:.1?} after up", started.elapsed());
    drop(stack);
}
