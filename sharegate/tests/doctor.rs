//! `sharegate check-config` and `sharegate doctor` against real processes (issue 16): a control plane (`serve`, the
//! embedded store) and a native edge (`edge`), both configured the way the deployment files configure them, every
//! secret given as a `<NAME>_FILE`.
//!
//! - check-config passes on that configuration, and names the variable of each broken secret (unreadable file,
//!   malformed key) with exit status 1, without starting anything;
//! - doctor reports the deployment healthy (exit 0), its canary refused by the edge after the revocation;
//! - the edge stopped: unhealthy (exit 1), the `edges` finding names it;
//! - the control plane's clock 30 s ahead (simulated with `SHAREGATE_TEST_CLOCK_OFFSET_SECS`): unhealthy, the
//!   `clock` finding says by how much.
#![allow(clippy::unwrap_used)]

mod common;

use common::{free_port, repo_root, sharegate};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN_KEY: &str = "sg_admin_doctor-test-bootstrap-key-0123456789";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deployment's settings: secrets in files (mode 0600), everything else in variables.
struct Setup {
    dir: tempfile::TempDir,
    api_port: u16,
    edge_port: u16,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        let hex = |b: u8| format!("{b:02x}").repeat(32);
        for (name, value) in [
            ("signing_keys", format!("1:active:{}", hex(0x51))),
            ("state_key", hex(0x62)),
            ("master_key", hex(0x73)),
            ("edge_token", hex(0x84)),
            ("admin_key", ADMIN_KEY.to_string()),
        ] {
            std::fs::write(secrets.join(name), format!("{value}\n")).unwrap();
        }
        Setup {
            dir,
            api_port: free_port(),
            edge_port: free_port(),
        }
    }

    fn secret(&self, name: &str) -> PathBuf {
        self.dir.path().join("secrets").join(name)
    }

    fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    fn edge(&self) -> String {
        format!("http://127.0.0.1:{}", self.edge_port)
    }

    fn serve_cmd(&self, args: &[&str]) -> Command {
        let mut c = sharegate();
        c.args(args)
            .env("SHAREGATE_DATA_DIR", self.dir.path().join("data"))
            .env("SHAREGATE_API_ADDR", format!("127.0.0.1:{}", self.api_port))
            .env("SHAREGATE_EDGE_URL", self.edge())
            .env("SHAREGATE_PUSH_EDGES", self.edge())
            .env("SHAREGATE_PUBLIC_URL", self.api())
            .env("SHAREGATE_SIGNING_KEYS_FILE", self.secret("signing_keys"))
            .env("SHAREGATE_STATE_KEY_FILE", self.secret("state_key"))
            .env("SHAREGATE_MASTER_KEY_FILE", self.secret("master_key"))
            .env("SHAREGATE_EDGE_TOKEN_FILE", self.secret("edge_token"))
            .env("SHAREGATE_ADMIN_KEY_FILE", self.secret("admin_key"))
            .env("RUST_LOG", "warn");
        c
    }

    fn edge_cmd(&self, args: &[&str]) -> Command {
        let mut c = sharegate();
        c.args(args)
            .env("SHAREGATE_EDGE_ADDR", format!("127.0.0.1:{}", self.edge_port))
            .env("SHAREGATE_ORIGIN", repo_root().join("deploy/demo-media"))
            .env("SHAREGATE_STATE_URL", format!("{}/v1/edge/state", self.api()))
            .env("SHAREGATE_KEYS_URL", format!("{}/v1/edge/keys", self.api()))
            .env("SHAREGATE_EDGE_ID", "doctor-test-edge")
            .env("SHAREGATE_SIGNING_KEYS_FILE", self.secret("signing_keys"))
            .env("SHAREGATE_STATE_KEY_FILE", self.secret("state_key"))
            .env("SHAREGATE_EDGE_TOKEN_FILE", self.secret("edge_token"))
            .env("RUST_LOG", "warn");
        c
    }

    fn start(&self, mut cmd: Command, ready: &str) -> Killed {
        let child = Killed(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
        wait_200(ready);
        child
    }

    fn serve(&self, extra_env: &[(&str, &str)]) -> Killed {
        let mut cmd = self.serve_cmd(&["serve"]);
        cmd.envs(extra_env.iter().copied());
        self.start(cmd, &format!("{}/healthz", self.api()))
    }

    fn run_edge(&self) -> Killed {
        // Ready = it holds a fresh revocation state pulled from the control plane.
        self.start(self.edge_cmd(&["edge"]), &format!("{}/_sharegate/ready", self.edge()))
    }

    fn doctor(&self) -> (Output, Value) {
        let out = sharegate()
            .args(["doctor", "--api", &self.api(), "--json", "--canary-timeout", "5"])
            .env("SHAREGATE_API_KEY", ADMIN_KEY)
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "doctor --json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out, v)
    }
}

fn wait_200(url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let ok = Command::new(env!("CARGO_BIN_EXE_sharegate"))
            .args(["probe", url, "--timeout-ms", "500"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} never answered 200");
}

fn findings<'a>(v: &'a Value, check: &str, status: &str) -> Vec<&'a str> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["check"] == check && f["status"] == status)
        .map(|f| f["detail"].as_str().unwrap())
        .collect()
}

fn register_demo(s: &Setup) {
    let origin = std::fs::canonicalize(repo_root().join("deploy/demo-media")).unwrap();
    let body = serde_json::json!({ "id": "demo", "origin": origin }).to_string();
    let out = Command::new("curl")
        .args(["-sf", "-X", "POST", &format!("{}/v1/assets", s.api())])
        .args([
            "-H",
            &format!("authorization: Bearer {ADMIN_KEY}"),
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", &body])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "register: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_config_judges_settings_and_secret_files_without_starting() {
    let s = Setup::new();
    let ok = s.serve_cmd(&["check-config", "serve"]).output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("SHAREGATE_STATE_KEY: given (file "), "{}", text(&ok));
    // Nothing started, nothing written: no data directory, no listener.
    assert!(
        !s.dir.path().join("data").exists(),
        "check-config wrote the data directory"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", s.api_port)).is_err());
    let ok = s.edge_cmd(&["check-config", "edge"]).output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok));

    // A secret file that cannot be read, and one that holds a malformed key: each named, exit 1.
    let bad = s
        .serve_cmd(&["check-config", "serve"])
        .env("SHAREGATE_STATE_KEY_FILE", s.dir.path().join("missing"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("SHAREGATE_STATE_KEY_FILE: cannot read"),
        "{}",
        text(&bad)
    );
    std::fs::write(s.secret("signing_keys"), "1:active:nothex\n").unwrap();
    let bad = s.edge_cmd(&["check-config", "edge"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("SHAREGATE_SIGNING_KEYS"), "{}", text(&bad));
    // A store URL of an unknown scheme, and an edge URL that is not one.
    let bad = s
        .serve_cmd(&["check-config", "serve"])
        .env("SHAREGATE_STORE", "mysql://db/x")
        .env("SHAREGATE_EDGE_URL", "not a url")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(text(&bad).contains("unknown store URL scheme"), "{}", text(&bad));
    assert!(text(&bad).contains("edge URL"), "{}", text(&bad));
    // The secret's value never appears in the output.
    assert!(!text(&bad).contains(&"62".repeat(32)));
}

#[test]
fn doctor_finds_a_healthy_deployment_then_a_stopped_edge_and_a_skewed_clock() {
    let s = Setup::new();
    let serve = s.serve(&[]);
    let edge = s.run_edge();
    register_demo(&s);

    let (out, v) = s.doctor();
    assert!(out.status.success(), "{v:#}");
    assert_eq!(v["healthy"], true);
    for check in ["api", "store", "clock", "edges", "keys", "canary"] {
        assert!(!findings(&v, check, "ok").is_empty(), "no ok {check} finding: {v:#}");
    }
    let canary = &v["canary"]["edges"][0];
    assert_eq!(canary["before"], 200, "{v:#}");
    assert!(canary["refused_after_ms"].as_u64().unwrap() < 5000, "{v:#}");
    assert_eq!(canary["reason"], "revoked", "{v:#}");

    // The edge stopped: unhealthy, and the finding says which edge.
    drop(edge);
    let (out, v) = s.doctor();
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    assert_eq!(v["healthy"], false);
    let edges = findings(&v, "edges", "fail");
    assert!(
        edges
            .iter()
            .any(|d| d.contains(&s.edge()) && d.contains("does not answer")),
        "{v:#}"
    );
    // Plain words too.
    let words = sharegate()
        .args(["doctor", "--api", &s.api(), "--no-canary"])
        .env("SHAREGATE_API_KEY", ADMIN_KEY)
        .output()
        .unwrap();
    assert_eq!(words.status.code(), Some(1));
    assert!(text(&words).contains("UNHEALTHY"), "{}", text(&words));

    // The control plane's clock 30 s ahead: unhealthy, by how much.
    drop(serve);
    let _serve = s.serve(&[("SHAREGATE_TEST_CLOCK_OFFSET_SECS", "30")]);
    // Not waited on for readiness: its state, signed 30 s in the future, may well be refused (that is the point).
    let _edge = s.start(s.edge_cmd(&["edge"]), &format!("{}/_sharegate/status", s.edge()));
    let (out, v) = s.doctor();
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let clock = findings(&v, "clock", "fail");
    assert!(clock.iter().any(|d| d.contains("30.0 s ahead of this host's")), "{v:#}");
}

/// SIGTERM (what a container runtime, systemd or Kubernetes sends) stops `serve` and `edge` at once and cleanly:
/// as PID 1 in a container a process that ignored it would be killed mid-request at the end of the grace period.
#[test]
fn sigterm_stops_serve_and_edge_cleanly() {
    let s = Setup::new();
    let mut serve = s.serve(&[]);
    let mut edge = s.run_edge();
    for (name, child) in [("serve", &mut serve.0), ("edge", &mut edge.0)] {
        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(Instant::now() < deadline, "{name} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{name} exited with {status} on SIGTERM");
    }
}
