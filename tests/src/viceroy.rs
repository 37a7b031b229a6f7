//! The Fastly Compute app under Viceroy (Fastly's local runtime): build it once, run it on the package's own
//! `fastly.toml` with test settings, stop it when dropped.
//!
//! Each instance gets a temporary directory with a copy of `edge-worker/fastly/fastly.toml` whose `[local_server]`
//! section is rewritten: backends `origin_<i>` for the URLs of `SHAREGATE_ORIGIN`, `control_plane` for the state and
//! events URLs, the Config Store with the plain settings and the Secret Store with the secrets — the same split as
//! in production (`docs/fastly.md`). Everything above `[local_server]` is kept as it is.

use crate::process::{Ready, RuntimeProcess};
use crate::repo_root;
use crate::wrangler::free_port;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Settings that live in the Secret Store, never in the Config Store, and the stores' names: the app's own.
pub use sharegate_edge::contract::fastly::{
    CONFIG_STORE, CONTROL_PLANE_BACKEND, SECRET_NAMES, SECRET_STORE, STATE_KV_STORE, origin_backend,
};

/// The package directory.
pub fn package_dir() -> PathBuf {
    repo_root().join("edge-worker/fastly")
}

/// The service's wasm, as `scripts/build-fastly.sh` leaves it.
pub fn app_wasm() -> PathBuf {
    package_dir().join("bin/main.wasm")
}

/// The pass-through app (the benchmark's baseline).
pub fn passthrough_wasm() -> PathBuf {
    package_dir().join("bin/passthrough.wasm")
}

/// Build the app (scripts/build-fastly.sh; `--bench` also builds the timing variant) once per test process.
pub fn build_app(bench: bool) -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    static BUILT_BENCH: OnceLock<Result<(), String>> = OnceLock::new();
    let cell = if bench { &BUILT_BENCH } else { &BUILT };
    cell.get_or_init(|| {
        let mut cmd = Command::new("bash");
        cmd.arg(repo_root().join("scripts/build-fastly.sh"));
        if bench {
            cmd.arg("--bench");
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/build-fastly.sh failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The viceroy executable. Tests never skip: missing is a failure that says how to get it.
pub fn viceroy_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("viceroy"))
            .find(|p| p.is_file())
    });
    let in_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/viceroy"));
    match on_path.or(in_cargo.filter(|p| p.is_file())) {
        Some(p) => p,
        None => {
            panic!("`viceroy` (Fastly's local runtime) is not installed: run `bash scripts/test.sh`, which installs it")
        }
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `scheme://authority` of a URL.
fn base_of(url: &str) -> Result<String> {
    let (scheme, rest) = url.split_once("://").context("URL without a scheme")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        bail!("URL without a host: {url}");
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The package manifest with `[local_server]` replaced for these settings: secrets to the Secret Store, the rest
/// to the Config Store, a backend per origin and one for the control plane, and KV Store entries from files.
pub fn derived_config(root: &str, settings: &BTreeMap<String, String>, kv: &[(&str, &Path)]) -> Result<String> {
    let mut out: Vec<String> = root
        .lines()
        .take_while(|l| !l.trim_start().starts_with("[local_server"))
        .map(str::to_string)
        .collect();
    while out
        .last()
        .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        out.pop();
    }
    out.push(String::new());
    out.push("[local_server]".into());
    let origins = settings.get("SHAREGATE_ORIGIN").map(String::as_str).unwrap_or("");
    for (i, o) in origins.split(',').map(str::trim).filter(|o| !o.is_empty()).enumerate() {
        out.push(format!("[local_server.backends.{}]", origin_backend(i)));
        out.push(format!("url = {}", toml_str(&base_of(o)?)));
        out.push("first_byte_timeout_ms = 5000".into());
    }
    let cp: Vec<String> = ["SHAREGATE_STATE_URL", "SHAREGATE_EVENTS_URL"]
        .iter()
        .filter_map(|k| settings.get(*k).filter(|v| !v.is_empty()))
        .map(|u| base_of(u))
        .collect::<Result<_>>()?;
    if let Some(first) = cp.first() {
        if cp.iter().any(|c| c != first) {
            bail!("the state and events URLs must share one backend (control_plane): {cp:?}");
        }
        out.push(format!("[local_server.backends.{CONTROL_PLANE_BACKEND}]"));
        out.push(format!("url = {}", toml_str(first)));
        out.push("first_byte_timeout_ms = 2000".into());
    }
    out.push(format!("[local_server.config_stores.{CONFIG_STORE}]"));
    out.push("format = \"inline-toml\"".into());
    out.push(format!("[local_server.config_stores.{CONFIG_STORE}.contents]"));
    for (k, v) in settings.iter().filter(|(k, _)| !SECRET_NAMES.contains(&k.as_str())) {
        out.push(format!("{k} = {}", toml_str(v)));
    }
    out.push("[local_server.secret_stores]".into());
    let secrets: Vec<String> = settings
        .iter()
        .filter(|(k, _)| SECRET_NAMES.contains(&k.as_str()))
        .map(|(k, v)| format!("{{ key = {}, data = {} }}", toml_str(k), toml_str(v)))
        .collect();
    out.push(format!("{SECRET_STORE} = [{}]", secrets.join(", ")));
    out.push("[local_server.kv_stores]".into());
    let entries: Vec<String> = kv
        .iter()
        .map(|(k, f)| format!("{{ key = {}, file = {} }}", toml_str(k), toml_str(&f.to_string_lossy())))
        .collect();
    out.push(format!("{STATE_KV_STORE} = [{}]", entries.join(", ")));
    Ok(out.join("\n") + "\n")
}

/// A running `viceroy serve` (its address, log and stop come from [`RuntimeProcess`]).
pub struct Viceroy(RuntimeProcess);

impl std::ops::Deref for Viceroy {
    type Target = RuntimeProcess;
    fn deref(&self) -> &RuntimeProcess {
        &self.0
    }
}

impl Viceroy {
    /// Build the app if needed and serve it with these settings.
    pub async fn start(settings: &BTreeMap<String, String>) -> Result<Viceroy> {
        build_app(false)?;
        Self::start_wasm(&app_wasm(), settings, &[]).await
    }

    /// Serve the app with these settings, its geolocation data replaced by `countries` (address, ISO country code;
    /// every other address, loopback included, has none), and wait until it answers.
    pub async fn start_with_geo(settings: &BTreeMap<String, String>, countries: &[(&str, &str)]) -> Result<Viceroy> {
        build_app(false)?;
        let mut geo = vec![
            "[local_server.geolocation]".to_string(),
            "format = \"inline-toml\"".to_string(),
            "use_default_loopback = false".to_string(),
        ];
        for (addr, country) in countries {
            geo.push(format!("[local_server.geolocation.addresses.{}]", toml_str(addr)));
            geo.push(format!("country_code = {}", toml_str(country)));
        }
        Self::start_configured(&app_wasm(), settings, &[], &geo.join("\n")).await
    }

    /// Serve `wasm` (already built) with these settings and KV Store entries, and wait until it answers.
    pub async fn start_wasm(wasm: &Path, settings: &BTreeMap<String, String>, kv: &[(&str, &Path)]) -> Result<Viceroy> {
        Self::start_configured(wasm, settings, kv, "").await
    }

    /// [`Viceroy::start_wasm`] with `extra` appended to the derived `fastly.toml` (more `[local_server]` tables).
    async fn start_configured(
        wasm: &Path,
        settings: &BTreeMap<String, String>,
        kv: &[(&str, &Path)],
        extra: &str,
    ) -> Result<Viceroy> {
        crate::process::on_fresh_ports("viceroy", || Self::start_once(wasm, settings, kv, extra)).await
    }

    async fn start_once(
        wasm: &Path,
        settings: &BTreeMap<String, String>,
        kv: &[(&str, &Path)],
        extra: &str,
    ) -> Result<Viceroy> {
        let viceroy = viceroy_bin();
        let dir = tempfile::tempdir()?;
        let root = std::fs::read_to_string(package_dir().join("fastly.toml"))?;
        let config = dir.path().join("fastly.toml");
        std::fs::write(&config, format!("{}\n{extra}\n", derived_config(&root, settings, kv)?))?;
        let port = free_port()?;
        let mut cmd = Command::new(viceroy);
        cmd.current_dir(dir.path())
            .arg("serve")
            .arg("-C")
            .arg(&config)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(wasm);
        let p = RuntimeProcess::spawn(
            "viceroy",
            cmd,
            dir,
            port,
            Ready {
                probe: sharegate_edge::contract::paths::READY,
                // Any answer: the apps answer the probe in different ways (a refusal, a misconfigured 500, the
                // pass-through app's origin 404). `RuntimeProcess` tells Viceroy's answer from that of another
                // process that took the port.
                ours: |_| true,
                limit: Duration::from_secs(60),
            },
        )
        .await?;
        Ok(Viceroy(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_config_keeps_the_manifest_and_splits_secrets() {
        let root = "manifest_version = 3\nname = \"x\"\n[setup.backends.origin_0]\naddress = \"o\"\n\n# viceroy\n[local_server]\n[local_server.backends.origin_0]\nurl = \"http://old\"\n";
        let mut s = BTreeMap::new();
        s.insert(
            "SHAREGATE_ORIGIN".to_string(),
            "http://127.0.0.1:1/a/, http://127.0.0.1:2".to_string(),
        );
        s.insert(
            "SHAREGATE_STATE_URL".to_string(),
            "http://127.0.0.1:3/v1/edge/state".to_string(),
        );
        s.insert("SHAREGATE_SIGNING_KEYS".to_string(), "1:active:ab\"c".to_string());
        let d = derived_config(root, &s, &[("state", Path::new("/tmp/s.bin"))]).unwrap();
        assert!(d.starts_with("manifest_version = 3\nname = \"x\"\n[setup.backends.origin_0]"));
        assert!(!d.contains("http://old") && !d.contains("# viceroy"));
        assert!(d.contains("[local_server.backends.origin_0]\nurl = \"http://127.0.0.1:1\""));
        assert!(d.contains("[local_server.backends.origin_1]\nurl = \"http://127.0.0.1:2\""));
        assert!(d.contains("[local_server.backends.control_plane]\nurl = \"http://127.0.0.1:3\""));
        assert!(d.contains("SHAREGATE_ORIGIN = \"http://127.0.0.1:1/a/, http://127.0.0.1:2\""));
        assert!(d.contains("{ key = \"SHAREGATE_SIGNING_KEYS\", data = \"1:active:ab\\\"c\" }"));
        assert!(!d.contains("SHAREGATE_SIGNING_KEYS = "));
        assert!(d.contains("{ key = \"state\", file = \"/tmp/s.bin\" }"));
        let mut bad = s.clone();
        bad.insert(
            "SHAREGATE_EVENTS_URL".to_string(),
            "http://127.0.0.1:4/v1/edge/events".to_string(),
        );
        assert!(derived_config(root, &bad, &[]).is_err());
    }
}
