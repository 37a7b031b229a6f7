//! The container image (deploy/Containerfile) as an operator runs it. Built on local bases
//! (scripts/container-bases.sh: no registry is reachable in CI), then:
//! - its configuration: user 65532, entry point and command, OCI labels, listen addresses, data volume, ports; its
//!   files: the binary and no shell, no demo media;
//! - a control plane (`serve`) with a read-only root, /tmp on tmpfs, its embedded store on a volume and every secret
//!   from a read-only file (`*_FILE`), and an edge (`edge`) serving read-only mounted media, on a bridge network,
//!   published on loopback;
//! - health probes run inside the containers with `sharegate probe` (there is no shell or curl in the image);
//! - the asset registered through the API, a link minted with the image's own CLI, played by ffprobe and ffmpeg on
//!   the host, revoked with the CLI, and refused at the edge (403 `revoked`) within seconds.
//!
//! Needs root, podman (runc), mmdebstrap and ffmpeg. Under CI=true a missing piece fails the test; elsewhere it is
//! skipped with a message. Containers, the network and the volume are removed however the test ends.
#![allow(clippy::unwrap_used)]

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use sha2::Digest;
use sharegate_e2e::{ffmpeg_reads, ffprobe_duration, repo_root};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "localhost/sharegate-test/sharegate:dev";

/// podman, with the containers.conf the base script chose (runc, cgroupfs, no default ulimits on these machines).
#[derive(Clone)]
struct Podman {
    conf: String,
}

impl Podman {
    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf).stdin(Stdio::null());
        c
    }

    /// Run `podman args`; its stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.cmd().args(args).output().context("running podman")?;
        if !out.status.success() {
            bail!(
                "podman {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Everything this test creates, removed when dropped (also on a failed assertion); on failure the containers' last
/// log lines are printed first.
struct Cleanup {
    podman: Podman,
    containers: Vec<String>,
    networks: Vec<String>,
    volumes: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for c in &self.containers {
                if let Ok(out) = self.podman.cmd().args(["logs", "--tail", "40", c]).output() {
                    eprintln!(
                        "---- podman logs {c}\n{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        for c in &self.containers {
            let _ = self.podman.run(&["rm", "-f", "-v", "-t", "0", c]);
        }
        for n in &self.networks {
            let _ = self.podman.run(&["network", "rm", "-f", n]);
        }
        for v in &self.volumes {
            let _ = self.podman.run(&["volume", "rm", "-f", v]);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn is_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Whether this machine can run the test; under CI it must.
fn runnable() -> bool {
    let podman = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let root = rustix::process::geteuid().is_root();
    if podman && root {
        return true;
    }
    let why = if podman {
        "it needs root (rootful podman, mmdebstrap)"
    } else {
        "podman is not installed"
    };
    assert!(
        !is_ci(),
        "CI=true: {why}; install podman, runc and mmdebstrap (apt) and run as root"
    );
    eprintln!("skipping the container image test: {why}");
    false
}

/// The local bases, and the image built on them: `KEY=VALUE` lines from scripts/container-bases.sh.
fn build_image() -> Result<BTreeMap<String, String>> {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/container-bases.sh"))
        .args(["image", IMAGE])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running scripts/container-bases.sh")?;
    ensure!(
        out.status.success(),
        "scripts/container-bases.sh image failed ({})",
        out.status
    );
    let vars: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    eprintln!("bases and image ready in {:.0?}", started.elapsed());
    Ok(vars)
}

/// A loopback port free right now (the container's published port is bound by podman a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 64 hex digits, different on every run (test secrets; the product's `sharegate keygen` uses the OS's random source).
fn test_secret(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    hex::encode(sha2::Sha256::digest(format!("{name}:{}:{nanos}", std::process::id())))
}

/// The secret files a control plane reads through `*_FILE`, in a directory the container's user can read (mounted
/// read-only at /run/secrets).
fn write_secrets(dir: &Path) -> Result<BTreeMap<&'static str, String>> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut values = BTreeMap::new();
    values.insert("signing_keys", format!("1:active:{}", test_secret("signing")));
    for name in ["state_key", "edge_token", "admin_key", "master_key"] {
        values.insert(name, test_secret(name));
    }
    for (name, value) in &values {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(values)
}

/// Wait until `check` holds, or fail after `limit` with what `check` last said.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => return Ok(()),
            Err(e) if start.elapsed() > limit => bail!("{what}: not within {limit:?}: {e:#}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// `sharegate probe <url>` inside a container: the health check of an image without a shell.
fn probe_inside(podman: &Podman, container: &str, url: &str) -> Result<()> {
    podman
        .run(&["exec", container, "/usr/local/bin/sharegate", "probe", url])
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_runs_the_control_plane_and_the_edge_read_only_and_a_revoked_link_stops_playing() {
    if !runnable() {
        return;
    }
    let vars = build_image().unwrap();
    let podman = Podman {
        conf: vars.get("CONTAINERS_CONF").cloned().unwrap_or_default(),
    };
    let id = format!("sgt-{}", std::process::id());
    let tmp = std::env::temp_dir().join(format!("{id}-deploy-container"));
    let mut cleanup = Cleanup {
        podman: podman.clone(),
        containers: Vec::new(),
        networks: Vec::new(),
        volumes: Vec::new(),
        dirs: vec![tmp.clone()],
    };

    // ---- The image's configuration.
    let inspect: Value = serde_json::from_str(&podman.run(&["image", "inspect", IMAGE]).unwrap()).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "65532:65532", "{config}");
    assert_eq!(config["Entrypoint"], json!(["/usr/local/bin/sharegate"]));
    assert_eq!(config["Cmd"], json!(["serve"]));
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for want in [
        "SHAREGATE_API_ADDR=0.0.0.0:7700",
        "SHAREGATE_EDGE_ADDR=0.0.0.0:7701",
        "SHAREGATE_DATA_DIR=/var/lib/sharegate",
    ] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    assert!(config["ExposedPorts"].get("7700/tcp").is_some() && config["ExposedPorts"].get("7701/tcp").is_some());
    // The data directory is a documented mount, not a VOLUME (which would leave an anonymous volume behind every
    // edge and CLI container).
    assert!(config["Volumes"].as_object().is_none_or(|v| v.is_empty()), "{config}");
    let labels = &config["Labels"];
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(labels["org.opencontainers.image.title"], "sharegate");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    assert_eq!(labels["org.opencontainers.image.version"], version);
    for l in ["description", "source", "revision"] {
        let v = labels[format!("org.opencontainers.image.{l}")].as_str().unwrap_or("");
        assert!(!v.is_empty(), "label {l} missing: {labels}");
    }
    let size = inspect[0]["Size"].as_u64().unwrap_or(0);
    eprintln!("image {IMAGE}: {:.1} MB", size as f64 / 1e6);

    // ---- Its files: the binary, no shell or interpreter, no media.
    let lister = format!("{id}-files");
    podman.run(&["create", "--name", &lister, IMAGE]).unwrap();
    cleanup.containers.push(lister.clone());
    let export = tmp.join("rootfs.tar");
    std::fs::create_dir_all(&tmp).unwrap();
    podman
        .run(&["export", "-o", export.to_str().unwrap(), &lister])
        .unwrap();
    let listing = Command::new("tar").arg("-tf").arg(&export).output().unwrap();
    assert!(listing.status.success());
    let files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    assert!(
        files.iter().any(|f| f == "usr/local/bin/sharegate"),
        "no binary in the image"
    );
    let shells: Vec<&String> = files
        .iter()
        .filter(|f| {
            let name = f.rsplit('/').next().unwrap_or("");
            ["sh", "bash", "dash", "ash", "busybox", "perl", "python3", "awk", "mawk"].contains(&name)
        })
        .collect();
    assert!(shells.is_empty(), "the image holds a shell or interpreter: {shells:?}");
    assert!(
        !files
            .iter()
            .any(|f| f.ends_with(".m3u8") || f.ends_with(".ts") || f.contains("demo-media")),
        "media in the image"
    );
    std::fs::remove_file(&export).unwrap();
    let no_shell = podman
        .cmd()
        .args(["run", "--rm", "--entrypoint", "/bin/sh", IMAGE, "-c", "true"])
        .output()
        .unwrap();
    assert!(!no_shell.status.success(), "/bin/sh ran in the image");
    let version_out = podman.run(&["run", "--rm", IMAGE, "--version"]).unwrap();
    assert!(version_out.contains(version), "{version_out}");

    // ---- A control plane and an edge on a bridge network, published on loopback.
    let secrets_dir = tmp.join("secrets");
    let secrets = write_secrets(&secrets_dir).unwrap();
    let media = repo_root().join("deploy/demo-media");
    assert!(
        media.join("demo/master.m3u8").is_file(),
        "deploy/demo-media/demo is missing"
    );
    let network = id.clone();
    podman.run(&["network", "create", &network]).unwrap();
    cleanup.networks.push(network.clone());
    let volume = format!("{id}-data");
    podman.run(&["volume", "create", &volume]).unwrap();
    cleanup.volumes.push(volume.clone());
    let (cp, edge) = (format!("{id}-cp"), format!("{id}-edge"));
    let (cp_port, edge_port) = (free_port(), free_port());
    let secrets_mount = format!("{}:/run/secrets:ro", secrets_dir.display());
    let media_mount = format!("{}:/srv/media:ro", media.display());
    let edge_url = format!("http://127.0.0.1:{edge_port}");

    let cp_env = [
        "SHAREGATE_SIGNING_KEYS_FILE=/run/secrets/signing_keys".to_string(),
        "SHAREGATE_STATE_KEY_FILE=/run/secrets/state_key".into(),
        "SHAREGATE_EDGE_TOKEN_FILE=/run/secrets/edge_token".into(),
        "SHAREGATE_ADMIN_KEY_FILE=/run/secrets/admin_key".into(),
        "SHAREGATE_MASTER_KEY_FILE=/run/secrets/master_key".into(),
        format!("SHAREGATE_EDGE_URL={edge_url}"),
        format!("SHAREGATE_PUSH_EDGES=http://{edge}:7701"),
        format!("SHAREGATE_PUBLIC_URL=http://127.0.0.1:{cp_port}"),
    ];
    // Read-only root, /tmp in memory, on the test's network.
    let hardened = ["--read-only", "--tmpfs", "/tmp", "--network", network.as_str()].map(String::from);
    let mut cp_opts: Vec<String> = hardened.to_vec();
    cp_opts.extend(["-v".into(), format!("{volume}:/var/lib/sharegate")]);
    cp_opts.extend(["-v".into(), secrets_mount.clone(), "-v".into(), media_mount.clone()]);
    for e in &cp_env {
        cp_opts.extend(["-e".into(), e.clone()]);
    }
    // `check-config serve` first, with the same settings: what an init container or ExecStartPre= would run.
    let mut check = vec!["run".to_string(), "--rm".into()];
    check.extend(cp_opts.iter().cloned());
    check.extend([IMAGE.to_string(), "check-config".into(), "serve".into()]);
    let verdict = podman.cmd().args(&check).output().unwrap();
    assert!(
        verdict.status.success(),
        "check-config serve: {}{}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );
    let mut run = vec!["run".to_string(), "-d".into(), "--name".into(), cp.clone()];
    run.extend(cp_opts);
    run.extend(["-p".into(), format!("127.0.0.1:{cp_port}:7700"), IMAGE.into()]);
    podman.run(&run.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    cleanup.containers.push(cp.clone());

    let edge_env = [
        "SHAREGATE_ORIGIN=/srv/media".to_string(),
        format!("SHAREGATE_STATE_URL=http://{cp}:7700/v1/edge/state"),
        format!("SHAREGATE_KEYS_URL=http://{cp}:7700/v1/edge/keys"),
        format!("SHAREGATE_EVENTS_URL=http://{cp}:7700/v1/edge/events"),
        "SHAREGATE_SIGNING_KEYS_FILE=/run/secrets/signing_keys".into(),
        "SHAREGATE_STATE_KEY_FILE=/run/secrets/state_key".into(),
        "SHAREGATE_EDGE_TOKEN_FILE=/run/secrets/edge_token".into(),
        "SHAREGATE_EDGE_ID=edge-container".into(),
    ];
    let mut run = vec!["run".to_string(), "-d".into(), "--name".into(), edge.clone()];
    run.extend(hardened);
    run.extend(["-v".into(), secrets_mount, "-v".into(), media_mount]);
    run.extend(["-p".into(), format!("127.0.0.1:{edge_port}:7701")]);
    for e in &edge_env {
        run.extend(["-e".into(), e.clone()]);
    }
    run.extend([IMAGE.into(), "edge".into()]);
    podman.run(&run.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    cleanup.containers.push(edge.clone());

    // ---- Health, from outside (the published ports) and inside (`sharegate probe`, as an orchestrator runs it).
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let api = format!("http://127.0.0.1:{cp_port}");
    let started = Instant::now();
    wait_for("the control plane's /healthz", Duration::from_secs(60), || {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let r = http.get(format!("{api}/healthz")).send().await?;
            ensure!(r.status() == 200, "{}", r.status());
            Ok(())
        }
    })
    .await
    .unwrap();
    wait_for("readiness inside both containers", Duration::from_secs(60), || {
        let podman = podman.clone();
        let (cp, edge) = (cp.clone(), edge.clone());
        async move {
            probe_inside(&podman, &cp, "http://127.0.0.1:7700/healthz")?;
            probe_inside(&podman, &cp, "http://127.0.0.1:7700/readyz")?;
            probe_inside(&podman, &edge, "http://127.0.0.1:7701/_sharegate/status")?;
            probe_inside(&podman, &edge, "http://127.0.0.1:7701/_sharegate/ready")
        }
    })
    .await
    .unwrap();
    eprintln!("control plane and edge ready {:.1?} after start", started.elapsed());
    // A probe of something that is not there fails: the exit status means something.
    assert!(probe_inside(&podman, &cp, "http://127.0.0.1:7700/no-such-path").is_err());

    // The read-only root held, and the embedded store lives on the volume, owned by the image's user.
    let inspect: Value = serde_json::from_str(&podman.run(&["inspect", &cp]).unwrap()).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["ReadonlyRootfs"], true);
    let mountpoint = podman
        .run(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume])
        .unwrap();
    let stored: Vec<_> = std::fs::read_dir(&mountpoint).unwrap().filter_map(Result::ok).collect();
    assert!(!stored.is_empty(), "nothing written to the data volume");
    for entry in &stored {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            entry.metadata().unwrap().uid(),
            65532,
            "{:?} not owned by 65532",
            entry.path()
        );
    }
    // Secrets given as files are not written to the data directory.
    assert!(
        !stored.iter().any(
            |e| ["signing.keys", "state.key", "edge.token", "admin.key", "master.key"]
                .contains(&e.file_name().to_string_lossy().as_ref())
        ),
        "a secret file was created in the data directory: {stored:?}"
    );

    // ---- The asset, and keys for the CLI (the admin key is the bootstrap one from the secret file).
    let admin = &secrets["admin_key"];
    let r = http
        .post(format!("{api}/v1/assets"))
        .bearer_auth(admin)
        .json(&json!({ "id": "demo", "origin": "/srv/media" }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let asset: Value = r.json().await.unwrap();
    assert!(status.is_success() && asset["ready"] == true, "{status} {asset}");
    let new_key = |role: &'static str| {
        let (http, api, admin) = (http.clone(), api.clone(), admin.clone());
        async move {
            let r = http
                .post(format!("{api}/v1/apikeys"))
                .bearer_auth(admin)
                .json(&json!({ "role": role, "label": "deploy-container test" }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "apikeys {role}: {}", r.status());
            r.json::<Value>().await.unwrap()["key"].as_str().unwrap().to_string()
        }
    };
    let minter = new_key("minter").await;
    let responder = new_key("responder").await;

    // The image's own CLI as the client, on the network (the key travels in the environment, not the command line).
    let cli = |key: &str, cli_args: &[&str]| -> Result<Value> {
        let cp_api = format!("http://{cp}:7700");
        let mut c = podman.cmd();
        c.env("SHAREGATE_API_KEY", key)
            .args(["run", "--rm", "--network", &network, "-e", "SHAREGATE_API_KEY", IMAGE])
            .args(&cli_args[..1])
            .args(["--api", &cp_api])
            .args(&cli_args[1..]);
        let out = c.output()?;
        ensure!(
            out.status.success(),
            "sharegate {}: {}{}",
            cli_args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let link = cli(&minter, &["mint", "--asset", "demo", "--ttl", "600"]).unwrap();
    let url = link["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&edge_url) && url.ends_with("/demo/master.m3u8"),
        "{link}"
    );

    // ---- ffprobe and ffmpeg on the host play it through the edge container.
    let probe_url = url.clone();
    let duration = tokio::task::spawn_blocking(move || ffprobe_duration(&probe_url))
        .await
        .unwrap();
    assert!(
        duration.is_some_and(|d| (5.0..=7.0).contains(&d)),
        "ffprobe read {duration:?} s of {url}"
    );
    let read_url = url.clone();
    let (ok, err) = tokio::task::spawn_blocking(move || ffmpeg_reads(&read_url))
        .await
        .unwrap();
    assert!(ok, "ffmpeg could not read {url}: {err}");

    // ---- Revoked with the CLI; the edge refuses within seconds, with the reason.
    let receipt = cli(
        &responder,
        &["revoke", "--kind", "token", "--token", &url, "--reason", "deploy test"],
    )
    .unwrap();
    let acknowledged = Instant::now();
    assert_eq!(receipt["kind"], "token", "{receipt}");
    assert_eq!(receipt["target"], link["token_id"], "{receipt}");
    wait_for("the edge's refusal of the revoked link", Duration::from_secs(5), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await?;
            let reason = r
                .headers()
                .get("x-sharegate-reason")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            ensure!(r.status() == 403 && reason == "revoked", "{} {reason}", r.status());
            let body = r.text().await?;
            ensure!(body.contains("\"error\":\"revoked\""), "{body}");
            Ok(())
        }
    })
    .await
    .unwrap();
    eprintln!(
        "revocation enforced {:.0?} after it was acknowledged",
        acknowledged.elapsed()
    );
    let read_url = url.clone();
    let (ok, _) = tokio::task::spawn_blocking(move || ffmpeg_reads(&read_url))
        .await
        .unwrap();
    assert!(!ok, "the revoked link still played");
    drop(cleanup);
}
