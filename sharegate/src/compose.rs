//! Putting the control plane together (`sharegate serve`), and the whole system on one machine (`sharegate dev`):
//! the store, the secrets, the service's background workers, the listeners, and for `dev` a native edge beside it
//! and the demo asset registered through the API.
//!
//! Secrets come from the environment when set, otherwise from files in the data directory that are created once
//! with mode 0600: the signing keys (`SHAREGATE_SIGNING_KEYS`, `signing.keys`), the revocation state key
//! (`SHAREGATE_STATE_KEY`, `state.key`), the edge credential (`SHAREGATE_EDGE_TOKEN`, `edge.token`) and the
//! bootstrap admin API key (`SHAREGATE_ADMIN_KEY`, `admin.key`). Nothing secret is printed except the path of a
//! newly created admin key file.

use crate::cli::{DevArgs, ServeArgs};
use crate::client::ApiClient;
use crate::edge::{self, DevEdge};
use anyhow::{Context, Result, anyhow};
use sharegate_control_plane::env as cp_env;
use sharegate_control_plane::service::assets::{AssetRecord, RegisterRequest};
use sharegate_control_plane::service::auth::{self, Role};
use sharegate_control_plane::service::shares::{Audience, ShareRequest, ShareResponse};
use sharegate_control_plane::service::{self, AppState, EdgeTarget, ServiceConfig};
use sharegate_control_plane::store::{DurabilityLevel, Ns, RedisSettings, Store, open_store_with};
use sharegate_control_plane::{purge, service::keys};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Options of `sharegate serve`. No `Debug`: `store_url` may carry a Redis password.
#[derive(Clone)]
pub struct ServeOptions {
    /// Data directory (embedded store, secret files).
    pub data_dir: PathBuf,
    /// Store URL: empty for the embedded store, `redis://…` for Redis.
    pub store_url: String,
    /// Base URL of the edge, for link URLs.
    pub edge_base_url: String,
    /// Native edges to push state to.
    pub push_edges: Vec<String>,
    /// Base URL of stable share links (`/s/<id>`), normally this API's public URL.
    pub share_base_url: String,
}

/// Read a secret from `env` (or the file `<env>_FILE` names), else from `file` in the data dir, else create it with
/// `make` (mode 0600).
fn secret(data_dir: &Path, env: &str, file: &str, make: impl FnOnce() -> Result<String>) -> Result<String> {
    if let Some(v) = cp_env::var(env)? {
        return Ok(v);
    }
    let path = data_dir.join(file);
    if let Ok(v) = std::fs::read_to_string(&path) {
        return Ok(v.trim().to_string());
    }
    let v = make()?;
    write_private(&path, &v)?;
    Ok(v)
}

fn write_private(path: &Path, value: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(())
}

fn random_hex() -> Result<String> {
    Ok(hex::encode(crate::offline::random_secret()?.expose()))
}

/// Everything `serve` starts with.
pub struct Started {
    /// The service state.
    pub state: Arc<AppState>,
    /// Path of a newly created admin key file, if one was created now.
    pub new_admin_key_file: Option<PathBuf>,
    /// The signing keys as `id:state:hex` (for an edge started in the same process).
    pub signing_spec: String,
    /// The state key (hex), for a co-located edge.
    pub state_key_hex: String,
    /// The edge credential, for a co-located edge.
    pub edge_token: String,
}

/// The secrets a control plane starts with (see the module header for where each comes from).
struct Secrets {
    /// The signing keys as `id:state:hex`.
    signing_spec: String,
    ring: KeyRing,
    /// The revocation state key, hex.
    state_key_hex: String,
    state_key: StateKey,
    /// The edge credential.
    edge_token: String,
}

fn load_secrets(data_dir: &Path, policy: Policy) -> Result<Secrets> {
    let signing_spec = secret(data_dir, "SHAREGATE_SIGNING_KEYS", "signing.keys", || {
        Ok(format!("1:active:{}", random_hex()?))
    })?;
    let ring = sharegate_edge::config::parse_signing_keys(&signing_spec, policy.max_ttl)
        .map_err(|e| anyhow!("signing keys: {e}"))?;
    let state_key_hex = secret(data_dir, "SHAREGATE_STATE_KEY", "state.key", random_hex)?;
    let state_key = SecretKey::from_hex(&state_key_hex).context("state key")?;
    let edge_token = secret(data_dir, "SHAREGATE_EDGE_TOKEN", "edge.token", random_hex)?;
    Ok(Secrets {
        signing_spec,
        ring,
        state_key_hex,
        state_key: StateKey::new(*state_key.expose()),
        edge_token,
    })
}

/// Open the store, load or create the secrets, make sure an admin key exists, start the background workers.
pub async fn start(opts: &ServeOptions) -> Result<Started> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let store = open_store_with(&opts.store_url, &opts.data_dir, &redis_settings()?).await?;
    // An acknowledged revocation must survive: say so at startup when the store's settings cannot promise it.
    match store.durability().await {
        Ok(d) if d.level == DurabilityLevel::Ok => tracing::info!(store = store.backend(), "durability: {}", d.summary),
        Ok(d) => tracing::warn!(store = store.backend(), level = ?d.level, "durability: {}", d.summary),
        Err(e) => tracing::warn!(
            store = store.backend(),
            "durability: cannot read the store's settings: {e}"
        ),
    }
    if store.backend() != "redb" {
        for (env, file) in SECRETS {
            if !cp_env::is_set(env) {
                tracing::warn!(
                    "{env} is not given: this replica uses {} from its data directory; replicas sharing the store \
                     must all be given the same {env} (or {env}_FILE)",
                    opts.data_dir.join(file).display()
                );
            }
        }
    }
    let policy = Policy::default();
    let secrets = load_secrets(&opts.data_dir, policy)?;
    let config = ServiceConfig {
        edge_base_url: opts.edge_base_url.clone(),
        share_base_url: opts.share_base_url.clone(),
        edges: opts
            .push_edges
            .iter()
            .map(|u| EdgeTarget {
                url: u.clone(),
                token: secrets.edge_token.clone(),
            })
            .collect(),
        edge_token: Some(secrets.edge_token.clone()),
        player: player_settings()?,
        analytics: analytics_settings()?,
        entitlement: entitlement_settings()?,
        ..ServiceConfig::default()
    };
    let mut state = AppState::new(store.clone(), config, &secrets.ring, policy, secrets.state_key)?;
    state.clock_offset_secs = test_clock_offset()?;
    // The master key encrypts rotated signing keys at rest; after a restart the stored active key mints.
    state.master_key = Some(keys::master_key_from_env_or_file(&opts.data_dir).map_err(|e| anyhow!("master key: {e}"))?);
    state.minter = keys::RotatingMinter::from_state(&state).await?;
    // CDN purges: jobs live in the service store, so a revocation and its purges commit in one transaction. A half
    // configuration refuses to start rather than purge only some CDNs.
    state.outbox = purge::try_outbox_from_env(store.clone()).map_err(|e| anyhow!("purge config: {e}"))?;
    let new_admin_key_file = bootstrap_admin(store.as_ref(), &opts.data_dir).await?;

    let state = Arc::new(state);
    if let Some(outbox) = &state.outbox {
        // New revocations wake the worker at once; the tick only paces retries.
        purge::spawn_outbox_worker(outbox.clone(), std::time::Duration::from_secs(5));
    }
    keys::RotatingMinter::spawn_refresh(state.clone(), |s| &s.minter, std::time::Duration::from_secs(1));
    service::analytics::spawn_background(state.clone());
    service::doctor::spawn_heartbeat(state.clone());
    Ok(Started {
        state,
        new_admin_key_file,
        signing_spec: secrets.signing_spec,
        state_key_hex: secrets.state_key_hex,
        edge_token: secrets.edge_token,
    })
}

/// Redis settings beside the URL: `SHAREGATE_REDIS_WAIT_REPLICAS` (0; writes are acknowledged once that many
/// replicas hold them), `SHAREGATE_REDIS_WAIT_TIMEOUT_MS` (1000) and `SHAREGATE_REDIS_CA_FILE` (a PEM bundle of the CA
/// that signed the server's certificate, for `rediss://` with a private CA).
pub fn redis_settings() -> Result<RedisSettings> {
    let num = |name: &str, max: u64| -> Result<Option<u64>> {
        cp_env::var(name)?
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| anyhow!("{name} must be a number from 0 to {max}, not {v:?}"))
            })
            .transpose()
    };
    let ca_pem = match std::env::var_os("SHAREGATE_REDIS_CA_FILE").filter(|p| !p.is_empty()) {
        None => None,
        Some(path) => {
            let pem = std::fs::read(&path)
                .with_context(|| format!("cannot read SHAREGATE_REDIS_CA_FILE {}", path.to_string_lossy()))?;
            if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                return Err(anyhow!("SHAREGATE_REDIS_CA_FILE holds no PEM certificate"));
            }
            Some(pem)
        }
    };
    Ok(RedisSettings {
        wait_replicas: u32::try_from(num("SHAREGATE_REDIS_WAIT_REPLICAS", 16)?.unwrap_or(0)).unwrap_or(0),
        wait_timeout_ms: num("SHAREGATE_REDIS_WAIT_TIMEOUT_MS", 60_000)?.filter(|n| *n > 0),
        ca_pem,
    })
}

/// `SHAREGATE_TEST_CLOCK_OFFSET_SECS`: shift this replica's clock by so many seconds (negative: behind). For
/// rehearsing clock-skew findings (`sharegate doctor`) and tests only; never set it in production.
fn test_clock_offset() -> Result<i64> {
    match cp_env::var("SHAREGATE_TEST_CLOCK_OFFSET_SECS")? {
        None => Ok(0),
        Some(v) => {
            let n: i64 = v
                .parse()
                .ok()
                .filter(|n: &i64| n.unsigned_abs() <= 86_400)
                .ok_or_else(|| anyhow!("SHAREGATE_TEST_CLOCK_OFFSET_SECS must be seconds within a day, not {v:?}"))?;
            tracing::warn!(
                offset_secs = n,
                "SHAREGATE_TEST_CLOCK_OFFSET_SECS shifts this replica's clock (testing only)"
            );
            Ok(n)
        }
    }
}

/// How player tokens are bound to the viewer's network: `SHAREGATE_PLAYER_IPV4_PREFIX` (default 24) and
/// `SHAREGATE_PLAYER_IPV6_PREFIX` (default 48), 0 to bind no network of that family; behind a proxy or CDN,
/// `SHAREGATE_CLIENT_IP_HEADER` names the header whose last entry is the viewer's address.
pub fn player_settings() -> Result<service::player::PlayerSettings> {
    let mut p = service::player::PlayerSettings::default();
    for (name, max, slot) in [
        ("SHAREGATE_PLAYER_IPV4_PREFIX", 32, &mut p.bind_ipv4_prefix),
        ("SHAREGATE_PLAYER_IPV6_PREFIX", 128, &mut p.bind_ipv6_prefix),
    ] {
        if let Ok(v) = std::env::var(name) {
            *slot = v
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| anyhow!("{name} must be a prefix length from 0 to {max}, not {v:?}"))?;
        }
    }
    if let Ok(h) = std::env::var("SHAREGATE_CLIENT_IP_HEADER") {
        let h = h.trim().to_ascii_lowercase();
        axum::http::HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| anyhow!("SHAREGATE_CLIENT_IP_HEADER {h:?} is not a header name"))?;
        p.client_ip_header = (!h.is_empty()).then_some(h);
    }
    if let Ok(h) = std::env::var("SHAREGATE_CLIENT_COUNTRY_HEADER") {
        let h = h.trim().to_ascii_lowercase();
        axum::http::HeaderName::from_bytes(h.as_bytes())
            .map_err(|_| anyhow!("SHAREGATE_CLIENT_COUNTRY_HEADER {h:?} is not a header name"))?;
        p.client_country_header = (!h.is_empty()).then_some(h);
    }
    Ok(p)
}

/// The entitlement backend (docs/entitlement.md): `SHAREGATE_ENTITLEMENT_URL` (http or https), its secret in
/// `SHAREGATE_ENTITLEMENT_SECRET` or a file named by `SHAREGATE_ENTITLEMENT_SECRET_FILE` (at least 32 bytes),
/// `SHAREGATE_ENTITLEMENT_TIMEOUT_MS` (300), `SHAREGATE_ENTITLEMENT_FAILURE_POLICY` (`deny`, `allow`,
/// `cached_only`), `SHAREGATE_ENTITLEMENT_CACHE_SECS` (300), `SHAREGATE_ENTITLEMENT_NEGATIVE_SECS` (10),
/// `SHAREGATE_ENTITLEMENT_BREAKER_FAILURES` (5) and `SHAREGATE_ENTITLEMENT_BREAKER_SECS` (5).
pub fn entitlement_settings() -> Result<service::entitlement::EntitlementSettings> {
    let mut e = service::entitlement::EntitlementSettings::default();
    if let Ok(u) = std::env::var("SHAREGATE_ENTITLEMENT_URL") {
        service::entitlement::check_url(u.trim()).map_err(|e| anyhow!("SHAREGATE_ENTITLEMENT_URL: {e}"))?;
        e.hook.url = Some(u.trim().to_string());
    }
    let secret = match (
        std::env::var("SHAREGATE_ENTITLEMENT_SECRET"),
        std::env::var_os("SHAREGATE_ENTITLEMENT_SECRET_FILE"),
    ) {
        (Ok(s), _) => Some(s.trim().as_bytes().to_vec()),
        (Err(_), Some(path)) => Some(
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "cannot read SHAREGATE_ENTITLEMENT_SECRET_FILE {}",
                        path.to_string_lossy()
                    )
                })?
                .trim()
                .as_bytes()
                .to_vec(),
        ),
        _ => None,
    };
    if let Some(s) = secret {
        if s.len() < 32 {
            return Err(anyhow!("the entitlement secret must be at least 32 bytes"));
        }
        e.hook.secret = Some(s.into());
    }
    let num = |name: &str, min: u64, max: u64| -> Result<Option<u64>> {
        match std::env::var(name) {
            Err(_) => Ok(None),
            Ok(v) => v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .map(Some)
                .ok_or_else(|| anyhow!("{name} must be a number from {min} to {max}, not {v:?}")),
        }
    };
    use std::time::Duration;
    if let Some(ms) = num("SHAREGATE_ENTITLEMENT_TIMEOUT_MS", 10, 10_000)? {
        e.hook.timeout = Duration::from_millis(ms);
    }
    if let Some(s) = num("SHAREGATE_ENTITLEMENT_CACHE_SECS", 0, 86_400)? {
        e.hook.cache_max = Duration::from_secs(s);
    }
    if let Some(s) = num("SHAREGATE_ENTITLEMENT_NEGATIVE_SECS", 0, 3600)? {
        e.hook.negative_ttl = Duration::from_secs(s);
    }
    if let Some(n) = num("SHAREGATE_ENTITLEMENT_BREAKER_FAILURES", 1, 1000)? {
        e.hook.breaker_threshold = u32::try_from(n).unwrap_or(5);
    }
    if let Some(s) = num("SHAREGATE_ENTITLEMENT_BREAKER_SECS", 1, 3600)? {
        e.hook.breaker_cool_down = Duration::from_secs(s);
    }
    if let Ok(p) = std::env::var("SHAREGATE_ENTITLEMENT_FAILURE_POLICY") {
        e.failure_policy = service::entitlement::FailurePolicy::parse(p.trim()).ok_or_else(|| {
            anyhow!("SHAREGATE_ENTITLEMENT_FAILURE_POLICY must be deny, allow or cached_only, not {p:?}")
        })?;
    }
    Ok(e)
}

/// Playback analytics: `SHAREGATE_ANALYTICS=off` turns view ids and beacons off; `SHAREGATE_ANALYTICS_RETENTION_HOURS`
/// (default 168) is how long raw inputs and view records are kept (the hourly rows stay);
/// `SHAREGATE_BEACON_INTERVAL_MS` (default 10000, at least 2000) paces a playing page's beacons;
/// `SHAREGATE_ANALYTICS_WEBHOOK` is a URL that receives the raw events as NDJSON, at least once.
pub fn analytics_settings() -> Result<service::analytics::AnalyticsSettings> {
    let mut a = service::analytics::AnalyticsSettings::default();
    if let Ok(v) = std::env::var("SHAREGATE_ANALYTICS") {
        a.enabled = match v.trim() {
            "on" | "1" | "true" => true,
            "off" | "0" | "false" => false,
            other => return Err(anyhow!("SHAREGATE_ANALYTICS must be on or off, not {other:?}")),
        };
    }
    if let Ok(v) = std::env::var("SHAREGATE_ANALYTICS_RETENTION_HOURS") {
        let h: u64 = v
            .trim()
            .parse()
            .ok()
            .filter(|h| (1..=24 * 400).contains(h))
            .ok_or_else(|| anyhow!("SHAREGATE_ANALYTICS_RETENTION_HOURS must be 1 to 9600, not {v:?}"))?;
        a.raw_retention_secs = h * 3600;
    }
    if let Ok(v) = std::env::var("SHAREGATE_BEACON_INTERVAL_MS") {
        a.beacon_interval_ms = v
            .trim()
            .parse()
            .ok()
            .filter(|ms| (2000..=600_000).contains(ms))
            .ok_or_else(|| anyhow!("SHAREGATE_BEACON_INTERVAL_MS must be 2000 to 600000, not {v:?}"))?;
    }
    if let Ok(v) = std::env::var("SHAREGATE_ANALYTICS_WEBHOOK") {
        let v = v.trim();
        if !(v.starts_with("https://") || v.starts_with("http://")) {
            return Err(anyhow!("SHAREGATE_ANALYTICS_WEBHOOK must be an http(s) URL"));
        }
        a.webhook = Some(v.to_string());
    }
    Ok(a)
}

/// The bootstrap admin key: from `SHAREGATE_ADMIN_KEY` (its hash is stored), or created once into a 0600 file in
/// the data directory, whose path is returned when it was created now.
async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<PathBuf>> {
    if let Some(k) = cp_env::var("SHAREGATE_ADMIN_KEY")? {
        let hash = auth::key_hash(&k);
        if store.get(Ns::ApiKeys, &hash).await?.is_none() {
            let rec = auth::ApiKeyRecord {
                id: hash.chars().take(12).collect(),
                role: Role::Admin,
                label: "bootstrap (SHAREGATE_ADMIN_KEY)".into(),
                created_at: service::now(),
                disabled: false,
            };
            auth::store_key(store, &k, &rec).await?;
        }
        return Ok(None);
    }
    let path = data_dir.join("admin.key");
    if path.exists() {
        return Ok(None);
    }
    let (key, rec) = auth::new_key(Role::Admin, "bootstrap", service::now())?;
    auth::store_key(store, &key, &rec).await?;
    write_private(&path, &key)?;
    Ok(Some(path))
}

/// The router, told each connection's peer address (the player binds viewer tokens to the viewer's network).
fn with_peer(
    router: axum::Router,
) -> axum::extract::connect_info::IntoMakeServiceWithConnectInfo<axum::Router, std::net::SocketAddr> {
    router.into_make_service_with_connect_info::<std::net::SocketAddr>()
}

/// The secrets a control plane reads (each also as `<NAME>_FILE`), and the data-directory file it otherwise keeps
/// each in. Replicas on one shared store must be given the same values.
pub const SECRETS: [(&str, &str); 5] = [
    ("SHAREGATE_SIGNING_KEYS", "signing.keys"),
    ("SHAREGATE_STATE_KEY", "state.key"),
    ("SHAREGATE_EDGE_TOKEN", "edge.token"),
    ("SHAREGATE_MASTER_KEY", "master.key"),
    ("SHAREGATE_ADMIN_KEY", "admin.key"),
];

/// What `serve`'s flags and environment mean (shared with `check-config serve`).
pub fn serve_options(a: &ServeArgs) -> Result<ServeOptions> {
    // The flag or SHAREGATE_STORE, else SHAREGATE_STORE_FILE (a Redis URL may carry its password).
    let store_url = if a.store.trim().is_empty() {
        cp_env::var("SHAREGATE_STORE")?.unwrap_or_default()
    } else {
        a.store.trim().to_string()
    };
    let public = a.public_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    Ok(ServeOptions {
        data_dir: a.data_dir.clone(),
        store_url,
        edge_base_url: a.edge_url.clone(),
        push_edges: a
            .push_edges
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect(),
        share_base_url: public.map_or_else(
            || format!("http://{}", a.api_addr),
            |u| u.trim_end_matches('/').to_string(),
        ),
    })
}

/// `sharegate serve`: the control plane alone, until its listener fails.
pub async fn serve(a: ServeArgs) -> Result<()> {
    let opts = serve_options(&a)?;
    let started = start(&opts).await?;
    if let Some(p) = &started.new_admin_key_file {
        println!("created the bootstrap admin API key in {} (mode 0600)", p.display());
    }
    let listener = tokio::net::TcpListener::bind(a.api_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, store = started.state.store.backend(), "sharegate control plane listening");
    axum::serve(listener, with_peer(service::router(started.state)))
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    Ok(())
}

/// `sharegate dev`: the control plane, a native edge pulling from it and receiving its pushes, and the demo asset
/// registered through the API; prints this run's API keys and what to try, then runs until Ctrl-C.
pub async fn dev(a: DevArgs) -> Result<()> {
    let api_url = format!("http://{}", a.api_addr);
    let edge_url = format!("http://{}", a.edge_addr);
    let opts = ServeOptions {
        data_dir: a.data_dir.clone(),
        store_url: String::new(),
        edge_base_url: edge_url.clone(),
        push_edges: vec![edge_url.clone()],
        share_base_url: api_url.clone(),
    };
    let started = start(&opts).await?;
    let api = tokio::net::TcpListener::bind(a.api_addr).await?;
    let edge_listener = tokio::net::TcpListener::bind(a.edge_addr).await?;
    let dev_edge = DevEdge {
        signing_spec: &started.signing_spec,
        state_key_hex: &started.state_key_hex,
        edge_token: &started.edge_token,
        api_url: &api_url,
        origin: &a.origin,
    };
    edge::start_dev(&dev_edge, edge_listener)?;
    let state = started.state.clone();
    tokio::spawn(async move { axum::serve(api, with_peer(service::router(state))).await });

    let store = started.state.store.as_ref();
    let minter = dev_key(store, Role::Minter, "dev").await?;
    // Register the demo asset (readiness-checked) through the API, as an admin would.
    let admin = dev_key(store, Role::Admin, "dev (this run)").await?;
    register_demo(&ApiClient::new(&api_url, admin), &a.origin).await?;
    let responder = dev_key(store, Role::Responder, "dev (this run)").await?;
    let auditor = dev_key(store, Role::Auditor, "dev (this run)").await?;
    let share = demo_share(&ApiClient::new(&api_url, minter.clone()), &a.data_dir).await?;

    let admin_file = a.data_dir.join("admin.key");
    println!(
        "sharegate dev: control plane {api_url}, edge {edge_url}, data in {}",
        a.data_dir.display()
    );
    println!("  open in a browser: {}   (the demo's share page)", share.url);
    println!(
        "  embed:   <iframe src=\"{}\" allow=\"autoplay; fullscreen\"></iframe>",
        share.embed_url
    );
    // Local development only: show the bootstrap admin key itself (it also sits in the 0600 file). A key from
    // SHAREGATE_ADMIN_KEY is never written to a file, so name none.
    if cp_env::is_set("SHAREGATE_ADMIN_KEY") {
        println!("  admin API key: the one in SHAREGATE_ADMIN_KEY (not written to any file)");
    } else {
        let admin =
            std::fs::read_to_string(&admin_file).with_context(|| format!("cannot read {}", admin_file.display()))?;
        println!(
            "  admin API key: {}   (kept in {}, mode 0600)",
            admin.trim(),
            admin_file.display()
        );
    }
    println!("  API docs: {api_url}/v1/openapi.yaml");
    println!("  minter API key (this run): {minter}");
    println!("  mint:    SHAREGATE_API_KEY={minter} sharegate mint --asset demo --ttl 600");
    println!("  play:    ffplay \"<url printed by mint>\"   (or ffprobe, or hls.js in a browser)");
    println!("  responder API key (this run): {responder}");
    println!("  revoke:  SHAREGATE_API_KEY={responder} sharegate revoke --kind token --token \"<link>\" --reason test");
    println!("  auditor API key (this run): {auditor}");
    println!("  dashboard: {api_url}/dashboard   (sign in with the auditor key)");
    println!(
        "  analytics: curl -H \"authorization: Bearer {auditor}\" {api_url}/v1/analytics?group_by=channel,campaign"
    );
    println!("  health:  curl {api_url}/healthz   edge status: curl {edge_url}/_sharegate/status");
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// The demo asset's share: the one this data directory made before (`demo.share`) while it is still live, else a
/// new public one, so the printed page URL stays the same across restarts.
async fn demo_share(minter: &ApiClient, data_dir: &Path) -> Result<ShareResponse> {
    let file = data_dir.join("demo.share");
    if let Ok(id) = std::fs::read_to_string(&file) {
        let answer = minter.read_share(id.trim()).await?;
        if let Ok(s) = answer.json::<ShareResponse>()
            && answer.status.is_success()
            && s.share.deleted_at.is_none()
        {
            return Ok(s);
        }
    }
    let req = ShareRequest {
        asset: "demo".into(),
        audience: Audience::Public,
        invited: Vec::new(),
        expires_at: None,
        channel: Some("dev".into()),
        campaign: Some("demo".into()),
        ttl: None,
        title: Some("sharegate demo".into()),
        preset: None,
        embed_origins: None,
        // Views opened with ?utm_source=…&utm_campaign=… are credited to those (try it on the dashboard).
        utm: Some(true),
        access: None,
    };
    let answer = minter.create_share(&req).await?;
    let share: ShareResponse = answer
        .json()
        .ok()
        .filter(|_| answer.status.is_success())
        .ok_or_else(|| anyhow!("cannot create the demo share: {}", answer.body))?;
    std::fs::write(&file, &share.share.id).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(share)
}

/// A new API key of `role` for this run of `sharegate dev`, stored directly (there is no admin to ask yet).
async fn dev_key(store: &dyn Store, role: Role, label: &str) -> Result<String> {
    let (key, rec) = auth::new_key(role, label, service::now())?;
    auth::store_key(store, &key, &rec).await?;
    Ok(key)
}

/// Register `origin` (a directory or an http(s) URL) as the asset `demo`; fail unless the readiness check passes.
async fn register_demo(admin: &ApiClient, origin: &str) -> Result<()> {
    // The service wants an absolute directory; `--origin` is usually relative to the repository root.
    let origin = if origin.starts_with("http://") || origin.starts_with("https://") {
        origin.to_string()
    } else {
        std::fs::canonicalize(origin)
            .with_context(|| format!("origin {origin} not found (run from the repository root or pass --origin)"))?
            .to_string_lossy()
            .into_owned()
    };
    let req = RegisterRequest {
        id: "demo".into(),
        origin,
        kind: Default::default(),
        multivariant: None,
    };
    let answer = admin.register_asset(&req).await?;
    let ready = answer.status.is_success() && answer.json::<AssetRecord>().is_ok_and(|r| r.ready);
    if !ready {
        anyhow::bail!("the demo asset is not ready: {}", answer.body);
    }
    Ok(())
}
