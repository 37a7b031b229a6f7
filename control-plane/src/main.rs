//! The `sharegate` command.
//!
//! Today: offline token tools (`demo`, `keygen`, `token mint|verify|inspect`). The service (`serve`, `edge`,
//! `dev`) and the API clients (`mint`, `share`, `revoke`, ...) arrive with the control-plane issue.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sharegate_control_plane::offline::{self, CheckRequest, MintRequest};
use sharegate_control_plane::run::EnvSource;
use sharegate_shared::keys::KeyRing;
use sharegate_shared::token::{Policy, TokenBuf, decode_unverified};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "sharegate",
    version,
    about = "Secure share links for HLS video, enforced at the CDN edge"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mint a link for the demo asset with a throwaway key, then show what the edge decides for it and for
    /// tampered, expired, out-of-scope and traversal requests.
    Demo {
        /// The CDN base URL to print links under.
        #[arg(long, default_value = "http://127.0.0.1:7701")]
        base_url: String,
        /// Also run a native edge serving the demo asset, so the links play (ffplay, ffprobe, a browser with hls.js).
        #[arg(long)]
        serve: bool,
        /// Address of the demo edge.
        #[arg(long, default_value = "127.0.0.1:7701")]
        edge_addr: std::net::SocketAddr,
        /// Directory holding the demo asset (`<dir>/demo/master.m3u8`).
        #[arg(long, default_value = "deploy/demo-media")]
        media: std::path::PathBuf,
    },
    /// Print a new random signing key (64 hex digits) for SHAREGATE_SIGNING_KEY.
    Keygen,
    /// Offline token tools; the key comes from SHAREGATE_SIGNING_KEY and SHAREGATE_KEY_ID.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run the control plane (API on --api-addr, embedded store in --data-dir, or Redis with --store redis://…).
    Serve(ServeArgs),
    /// Run the whole system on one machine: control plane, native edge and the demo asset `demo`.
    Dev(DevArgs),
    /// Mint a link through the API (SHAREGATE_API_KEY with role minter).
    Mint(ClientMint),
    /// Revoke through the API (role responder): a token, share, viewer, session, asset, campaign, key id, or all.
    Revoke(ClientRevoke),
    /// Create an API key through the API (role admin); the key is printed once.
    Apikeys(ClientApikeys),
    /// Create a stable share link (role minter).
    Share(ClientShare),
    /// Say what the edge would decide for a link or token, and why (roles responder, auditor, minter).
    Diagnose(ClientDiagnose),
    /// Signing keys: `rotate` (role responder) or `list`.
    #[command(subcommand)]
    Keys(ClientKeys),
    /// Read the audit log (role auditor), with the hash chain verified.
    Audit(ClientAudit),
    /// Run the native edge server. Engine settings come from SHAREGATE_* environment variables
    /// (docs/edge.md, "Settings"): SHAREGATE_SIGNING_KEYS is required.
    Edge(EdgeArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Data directory (embedded store, secret files).
    #[arg(long, default_value = ".sharegate")]
    data_dir: std::path::PathBuf,
    /// API address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api_addr: std::net::SocketAddr,
    /// Store: empty for the embedded store, or redis://host:port.
    #[arg(long, default_value = "")]
    store: String,
    /// Base URL of the edge, used in link URLs.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    edge_url: String,
    /// A native edge to push revocations to (repeatable).
    #[arg(long = "push-edge")]
    push_edges: Vec<String>,
}

#[derive(Args)]
struct DevArgs {
    /// Data directory (embedded store, secret files).
    #[arg(long, default_value = ".sharegate")]
    data_dir: std::path::PathBuf,
    /// API address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    api_addr: std::net::SocketAddr,
    /// Edge address.
    #[arg(long, default_value = "127.0.0.1:7701")]
    edge_addr: std::net::SocketAddr,
    /// Origin of the media (a directory or an http(s) URL); the demo asset by default.
    #[arg(long, default_value = "deploy/demo-media")]
    origin: String,
}

#[derive(Args)]
struct ApiArgs {
    /// Control-plane URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    api: String,
}

#[derive(Args)]
struct ClientMint {
    #[command(flatten)]
    api: ApiArgs,
    /// Asset id.
    #[arg(long)]
    asset: String,
    /// Lifetime, seconds.
    #[arg(long)]
    ttl: Option<u32>,
    #[arg(long)]
    viewer: Option<String>,
    #[arg(long)]
    share: Option<String>,
    #[arg(long)]
    channel: Option<String>,
    #[arg(long)]
    campaign: Option<String>,
    /// Client IP binding.
    #[arg(long)]
    ip: Option<String>,
}

#[derive(Args)]
struct ClientRevoke {
    #[command(flatten)]
    api: ApiArgs,
    /// token, share, viewer, session, asset, campaign, key_id or global.
    #[arg(long)]
    kind: String,
    /// The scope id (hex token id for tokens).
    #[arg(long)]
    id: Option<String>,
    /// A token or link URL (for --kind token).
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    reason: Option<String>,
    /// Idempotency key, so a retried command does not revoke twice.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Also purge the CDN caches (needs CDN purgers configured on the control plane).
    #[arg(long)]
    purge: bool,
}

#[derive(Args)]
struct ClientApikeys {
    #[command(flatten)]
    api: ApiArgs,
    /// minter, responder, admin or auditor.
    #[arg(long)]
    role: String,
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args)]
struct ClientShare {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long)]
    asset: String,
    /// public, signed_in or invited.
    #[arg(long, default_value = "public")]
    audience: String,
    /// Invited viewer ids (repeatable) for --audience invited.
    #[arg(long = "invite")]
    invited: Vec<String>,
    /// Share expiry, unix seconds.
    #[arg(long)]
    expires_at: Option<u64>,
    #[arg(long)]
    channel: Option<String>,
    #[arg(long)]
    campaign: Option<String>,
}

#[derive(Args)]
struct ClientDiagnose {
    #[command(flatten)]
    api: ApiArgs,
    /// A link URL or a token.
    target: String,
    #[arg(long)]
    client_ip: Option<String>,
    #[arg(long)]
    country: Option<String>,
    #[arg(long)]
    origin: Option<String>,
    /// As of this unix time.
    #[arg(long)]
    at: Option<u64>,
}

#[derive(Subcommand)]
enum ClientKeys {
    /// One rotation step: stage a next key, or promote it once every edge has it.
    Rotate(ApiArgs),
    /// Key ids and states (never secrets).
    List(ApiArgs),
}

#[derive(Args)]
struct ClientAudit {
    #[command(flatten)]
    api: ApiArgs,
    #[arg(long)]
    from: Option<u64>,
    #[arg(long)]
    to: Option<u64>,
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    action: Option<String>,
    #[arg(long)]
    limit: Option<u32>,
}

#[derive(Args)]
struct EdgeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7701")]
    edge_addr: std::net::SocketAddr,
    /// An origin: a directory or an http(s) base URL. Repeat for failover order.
    #[arg(long = "origin", required = true)]
    origins: Vec<String>,
    /// Control-plane URL to pull the revocation state from.
    #[arg(long)]
    state_url: Option<String>,
    /// Pull interval, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pull_interval_ms: u64,
    /// Control-plane URL to send edge events to.
    #[arg(long)]
    events_url: Option<String>,
    /// Per-origin timeout, milliseconds.
    #[arg(long, default_value_t = 5000)]
    origin_timeout_ms: u64,
    /// Segment cache budget, MiB.
    #[arg(long, default_value_t = 256)]
    cache_mib: u64,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Mint a token and print it with its claims as JSON.
    Mint(MintArgs),
    /// Check a token or token URL as the edge would (without revocation); exit 1 when denied.
    Verify(VerifyArgs),
    /// Decode a token's claims WITHOUT checking its signature (for support; never trust the output).
    Inspect {
        /// A token or a token URL.
        token: String,
    },
}

#[derive(Args)]
struct PolicyArgs {
    /// Clock leeway, seconds.
    #[arg(long, default_value_t = 60)]
    leeway: u32,
    /// Maximum token lifetime, seconds.
    #[arg(long, default_value_t = 86_400)]
    max_ttl: u32,
}

impl PolicyArgs {
    fn policy(&self) -> Policy {
        Policy {
            leeway: self.leeway,
            max_ttl: self.max_ttl,
        }
    }
}

#[derive(Args)]
struct MintArgs {
    /// Asset id: the token opens paths under /<asset>/.
    #[arg(long)]
    asset: Option<String>,
    /// Path prefix scope (normalised, segment boundary).
    #[arg(long)]
    prefix: Option<String>,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 600)]
    ttl: u32,
    #[arg(long)]
    share: Option<String>,
    #[arg(long)]
    viewer: Option<String>,
    #[arg(long)]
    session: Option<String>,
    #[arg(long)]
    campaign: Option<String>,
    #[arg(long)]
    channel: Option<String>,
    /// Client IP binding, e.g. 203.0.113.0/24 or 2001:db8::/48.
    #[arg(long)]
    ip: Option<String>,
    /// Allowed countries, e.g. DE,FR.
    #[arg(long)]
    allow_countries: Option<String>,
    /// Denied countries.
    #[arg(long)]
    deny_countries: Option<String>,
    /// Embed origin, e.g. https://player.example.com.
    #[arg(long)]
    origin: Option<String>,
    /// Watermark id, hex.
    #[arg(long)]
    watermark: Option<String>,
    #[arg(long)]
    tier: Option<u8>,
    /// Also allow whole-file download.
    #[arg(long)]
    download: bool,
    /// Print the link under this base URL (…/t/<token>/<asset>/master.m3u8).
    #[arg(long)]
    base_url: Option<String>,
    #[command(flatten)]
    policy: PolicyArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// A token, or a token URL (…/t/<token>/<asset path>).
    token: String,
    /// The asset path requested (taken from the URL when one is given).
    #[arg(long)]
    path: Option<String>,
    #[arg(long)]
    ip: Option<IpAddr>,
    #[arg(long)]
    country: Option<String>,
    #[arg(long)]
    origin: Option<String>,
    /// Check as of this unix time instead of now.
    #[arg(long)]
    at: Option<u64>,
    #[command(flatten)]
    policy: PolicyArgs,
}

fn now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs())
}

fn run_edge(a: EdgeArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = sharegate_edge::EdgeConfig::from_source(&EnvSource).map_err(|e| anyhow::anyhow!("{e}"))?;
    let client_sources =
        sharegate_edge_native::client::ClientSources::from_source(&EnvSource).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = sharegate_edge_native::NativeOptions {
        origins: a
            .origins
            .iter()
            .map(|o| sharegate_edge_native::origin::Origin::parse(o))
            .collect(),
        origin_timeout: std::time::Duration::from_millis(a.origin_timeout_ms),
        cache_bytes: a.cache_mib * 1024 * 1024,
        state_url: a.state_url,
        pull_interval: std::time::Duration::from_millis(a.pull_interval_ms),
        edge_token: std::env::var("SHAREGATE_EDGE_TOKEN").ok(),
        events_url: a.events_url,
        client_sources,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(a.edge_addr).await?;
        let edge = sharegate_edge_native::Edge::new(config, opts);
        sharegate_edge_native::spawn_background(&edge);
        tracing::info!(addr = %listener.local_addr()?, "sharegate edge listening");
        sharegate_edge_native::serve(edge, listener).await?;
        Ok(())
    })
}

/// Call the API with SHAREGATE_API_KEY; print the JSON answer; fail on an error status.
fn api_call(method: &str, url: &str, body: serde_json::Value, idem: Option<&str>) -> Result<()> {
    let key = std::env::var("SHAREGATE_API_KEY").context("SHAREGATE_API_KEY is not set")?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse()?, url).bearer_auth(key);
        if !body.is_null() {
            // Leave unset options out rather than sending nulls the API would have to interpret.
            let mut body = body;
            if let Some(m) = body.as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body)?);
        }
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let text: String = resp.text().await?;
        let pretty = serde_json::from_str::<serde_json::Value>(&text)
            .map(|v| serde_json::to_string_pretty(&v).unwrap_or(text.clone()))
            .unwrap_or(text);
        println!("{pretty}");
        if !status.is_success() {
            // The JSON error above says why; the exit status tells scripts.
            eprintln!("sharegate: {status}");
            std::process::exit(1);
        }
        Ok(())
    })
}

fn run_serve(a: ServeArgs) -> Result<()> {
    init_tracing();
    let opts = sharegate_control_plane::run::ServeOptions {
        data_dir: a.data_dir,
        store_url: a.store,
        edge_base_url: a.edge_url,
        push_edges: a.push_edges,
        share_base_url: format!("http://{}", a.api_addr),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let started = sharegate_control_plane::run::start(&opts).await?;
        if let Some(p) = &started.new_admin_key_file {
            println!("created the bootstrap admin API key in {} (mode 0600)", p.display());
        }
        let listener = tokio::net::TcpListener::bind(a.api_addr).await?;
        tracing::info!(addr = %listener.local_addr()?, store = started.state.store.backend(), "sharegate control plane listening");
        axum::serve(listener, sharegate_control_plane::service::router(started.state)).await?;
        Ok(())
    })
}

fn run_dev(a: DevArgs) -> Result<()> {
    init_tracing();
    let api_url = format!("http://{}", a.api_addr);
    let edge_url = format!("http://{}", a.edge_addr);
    let opts = sharegate_control_plane::run::ServeOptions {
        data_dir: a.data_dir.clone(),
        store_url: String::new(),
        edge_base_url: edge_url.clone(),
        push_edges: vec![edge_url.clone()],
        share_base_url: api_url.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let started = sharegate_control_plane::run::start(&opts).await?;
        // The edge: same keys, pulls from the control plane every second, accepts its pushes; every other
        // SHAREGATE_* edge setting from the environment, read as `sharegate edge` reads it.
        let (config, client_sources) = sharegate_control_plane::run::dev_edge_settings(&started, &EnvSource)?;
        let edge = sharegate_edge_native::Edge::new(
            config,
            sharegate_edge_native::NativeOptions {
                origins: vec![sharegate_edge_native::origin::Origin::parse(&a.origin)],
                state_url: Some(format!("{api_url}/v1/edge/state")),
                keys_url: Some(format!("{api_url}/v1/edge/keys")),
                events_url: Some(format!("{api_url}/v1/edge/events")),
                edge_token: Some(started.edge_token.clone()),
                client_sources,
                ..Default::default()
            },
        );
        let api = tokio::net::TcpListener::bind(a.api_addr).await?;
        let edge_listener = tokio::net::TcpListener::bind(a.edge_addr).await?;
        let state = started.state.clone();
        tokio::spawn(async move { axum::serve(api, sharegate_control_plane::service::router(state)).await });
        sharegate_edge_native::spawn_background(&edge);
        tokio::spawn(sharegate_edge_native::serve(edge, edge_listener));
        // A minter key for the demo, and a first link.
        let (minter, rec) = sharegate_control_plane::service::auth::new_key(
            sharegate_control_plane::service::auth::Role::Minter,
            "dev",
            sharegate_control_plane::service::now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        sharegate_control_plane::service::auth::store_key(started.state.store.as_ref(), &minter, &rec)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Register the demo asset (readiness-checked) through the API, as an admin would.
        let (admin_key, rec) = sharegate_control_plane::service::auth::new_key(
            sharegate_control_plane::service::auth::Role::Admin,
            "dev (this run)",
            sharegate_control_plane::service::now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        sharegate_control_plane::service::auth::store_key(started.state.store.as_ref(), &admin_key, &rec)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let origin = if a.origin.starts_with("http://") || a.origin.starts_with("https://") {
            a.origin.clone()
        } else {
            std::fs::canonicalize(&a.origin)
                .with_context(|| {
                    format!(
                        "origin {} not found (run from the repository root or pass --origin)",
                        a.origin
                    )
                })?
                .to_string_lossy()
                .into_owned()
        };
        let asset: serde_json::Value = reqwest::Client::new()
            .post(format!("{api_url}/v1/assets"))
            .bearer_auth(&admin_key)
            .header("content-type", "application/json")
            .body(serde_json::json!({"id": "demo", "origin": origin}).to_string())
            .send()
            .await?
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t)))?;
        if asset["ready"] != true {
            anyhow::bail!("the demo asset is not ready: {asset}");
        }
        let admin_file = a.data_dir.join("admin.key");
        println!(
            "sharegate dev: control plane {api_url}, edge {edge_url}, data in {}",
            a.data_dir.display()
        );
        // Local development only: show the bootstrap admin key itself (it also sits in the 0600 file). A key from
        // SHAREGATE_ADMIN_KEY is never written to a file, so name none.
        if std::env::var_os("SHAREGATE_ADMIN_KEY").is_some() {
            println!("  admin API key: the one in SHAREGATE_ADMIN_KEY (not written to any file)");
        } else {
            let admin = std::fs::read_to_string(&admin_file)
                .with_context(|| format!("cannot read {}", admin_file.display()))?;
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
        let (responder, rec) = sharegate_control_plane::service::auth::new_key(
            sharegate_control_plane::service::auth::Role::Responder,
            "dev (this run)",
            sharegate_control_plane::service::now(),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        sharegate_control_plane::service::auth::store_key(started.state.store.as_ref(), &responder, &rec)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("  responder API key (this run): {responder}");
        println!(
            "  revoke:  SHAREGATE_API_KEY={responder} sharegate revoke --kind token --token \"<link>\" --reason test"
        );
        println!("  health:  curl {api_url}/healthz   edge status: curl {edge_url}/_sharegate/status");
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .try_init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => run_serve(a),
        Cmd::Dev(a) => run_dev(a),
        Cmd::Mint(m) => api_call(
            "POST",
            &format!("{}/v1/links", m.api.api.trim_end_matches('/')),
            serde_json::json!({"asset": m.asset, "ttl": m.ttl, "viewer": m.viewer, "share": m.share,
                               "channel": m.channel, "campaign": m.campaign, "ip": m.ip}),
            None,
        ),
        Cmd::Revoke(r) => {
            let mut body = serde_json::json!({"kind": r.kind, "id": r.id, "token": r.token, "reason": r.reason});
            if r.purge {
                body["purge"] = serde_json::Value::Bool(true);
            }
            api_call(
                "POST",
                &format!("{}/v1/revocations", r.api.api.trim_end_matches('/')),
                body,
                r.idempotency_key.as_deref(),
            )
        }
        Cmd::Share(x) => api_call(
            "POST",
            &format!("{}/v1/shares", x.api.api.trim_end_matches('/')),
            serde_json::json!({"asset": x.asset, "audience": x.audience,
                "invited": (!x.invited.is_empty()).then_some(x.invited), "expires_at": x.expires_at,
                "channel": x.channel, "campaign": x.campaign}),
            None,
        ),
        Cmd::Diagnose(d) => {
            let key = if d.target.contains("://") { "url" } else { "token" };
            let mut body =
                serde_json::json!({"client_ip": d.client_ip, "country": d.country, "origin": d.origin, "at": d.at});
            body[key] = serde_json::Value::String(d.target);
            api_call(
                "POST",
                &format!("{}/v1/diagnose", d.api.api.trim_end_matches('/')),
                body,
                None,
            )
        }
        Cmd::Keys(ClientKeys::Rotate(a)) => api_call(
            "POST",
            &format!("{}/v1/keys/rotate", a.api.trim_end_matches('/')),
            serde_json::json!({}),
            None,
        ),
        Cmd::Keys(ClientKeys::List(a)) => api_call(
            "GET",
            &format!("{}/v1/keys", a.api.trim_end_matches('/')),
            serde_json::Value::Null,
            None,
        ),
        Cmd::Audit(q) => {
            let mut params = Vec::new();
            for (k, v) in [
                ("from", q.from.map(|v| v.to_string())),
                ("to", q.to.map(|v| v.to_string())),
                ("subject", q.subject),
                ("action", q.action),
                ("limit", q.limit.map(|v| v.to_string())),
            ] {
                if let Some(v) = v {
                    let enc: String = v
                        .bytes()
                        .map(|b| {
                            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                                (b as char).to_string()
                            } else {
                                format!("%{b:02X}")
                            }
                        })
                        .collect();
                    params.push(format!("{k}={enc}"));
                }
            }
            let url = format!("{}/v1/audit?{}", q.api.api.trim_end_matches('/'), params.join("&"));
            api_call("GET", &url, serde_json::Value::Null, None)
        }
        Cmd::Apikeys(k) => api_call(
            "POST",
            &format!("{}/v1/apikeys", k.api.api.trim_end_matches('/')),
            serde_json::json!({"role": k.role, "label": k.label}),
            None,
        ),
        Cmd::Edge(a) => run_edge(a),
        Cmd::Demo {
            base_url,
            serve,
            edge_addr,
            media,
        } => {
            let (ring, token) = demo(&base_url)?;
            if serve {
                serve_demo(ring, &token, edge_addr, &media)?;
            }
            Ok(())
        }
        Cmd::Keygen => {
            println!("{}", hex::encode(offline::random_secret()?.expose()));
            Ok(())
        }
        Cmd::Token(TokenCmd::Mint(a)) => {
            let ring = offline::ring_from_env(a.policy.max_ttl)?;
            let req = MintRequest {
                asset: a.asset.clone(),
                prefix: a.prefix,
                ttl: a.ttl,
                nbf_delay: 0,
                share: a.share,
                viewer: a.viewer,
                session: a.session,
                campaign: a.campaign,
                channel: a.channel,
                ip: a.ip,
                allow_countries: a.allow_countries,
                deny_countries: a.deny_countries,
                origin: a.origin,
                watermark: a.watermark,
                tier: a.tier,
                download: a.download,
            };
            let (token, claims) = offline::mint(&ring, a.policy.policy(), &req, now()?)?;
            let url = match (a.base_url, a.asset) {
                (Some(base), Some(asset)) => {
                    Some(format!("{}/t/{token}/{asset}/master.m3u8", base.trim_end_matches('/')))
                }
                _ => None,
            };
            let out = serde_json::json!({"token": token, "url": url, "claims": claims});
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(())
        }
        Cmd::Token(TokenCmd::Verify(a)) => {
            let ring = offline::ring_from_env(a.policy.max_ttl)?;
            let (token, url_path) = sharegate_control_plane::tokens::split_token_url(&a.token);
            let path = a.path.or(url_path).context("give --path or a token URL")?;
            let req = CheckRequest {
                path,
                ip: a.ip,
                country: a.country,
                origin: a.origin,
            };
            let at = match a.at {
                Some(t) => t,
                None => now()?,
            };
            let out = offline::check(&ring, a.policy.policy(), &token, &req, at);
            println!("{}", serde_json::to_string_pretty(&out)?);
            if out["decision"] != "allow" {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Token(TokenCmd::Inspect { token }) => {
            let (token, _) = sharegate_control_plane::tokens::split_token_url(&token);
            let mut buf = TokenBuf::new();
            match decode_unverified(&token, &mut buf) {
                Ok(c) => {
                    let out = serde_json::json!({"signature": "NOT CHECKED", "claims": sharegate_control_plane::tokens::claims_json(&c)});
                    println!("{}", serde_json::to_string_pretty(&out)?);
                    Ok(())
                }
                Err(r) => {
                    println!("{}", serde_json::json!({"error": r.as_str()}));
                    std::process::exit(1);
                }
            }
        }
    }
}

fn demo(base_url: &str) -> Result<(KeyRing, String)> {
    let policy = Policy::default();
    let ring = KeyRing::with_active(1, offline::random_secret()?, policy.max_ttl);
    let now = now()?;
    let req = MintRequest {
        asset: Some("demo".into()),
        ttl: 600,
        viewer: Some("viewer-1".into()),
        channel: Some("demo".into()),
        ..MintRequest::default()
    };
    let (token, claims) = offline::mint(&ring, policy, &req, now)?;
    let base = base_url.trim_end_matches('/');
    println!("sharegate demo: a throwaway key (id 1), asset `demo`, 10 minute link\n");
    println!("link:   {base}/t/{token}/demo/master.m3u8");
    println!(
        "token:  {} characters; claims: {}\n",
        token.len(),
        serde_json::to_string(&claims)?
    );
    let mut tampered = token.clone().into_bytes();
    tampered[token.len() / 2] = if tampered[token.len() / 2] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered)?;
    let cases: [(&str, &str, &str, u64); 6] = [
        ("multivariant playlist", &token, "/demo/master.m3u8", now),
        ("segment", &token, "/demo/v0/seg_000.ts", now),
        ("tampered token", &tampered, "/demo/v0/seg_000.ts", now),
        ("other asset", &token, "/other/master.m3u8", now),
        ("path traversal", &token, "/demo/../other/master.m3u8", now),
        ("11 minutes later", &token, "/demo/v0/seg_000.ts", now + 660),
    ];
    println!("{:<24} {:<30} {:<6} reason", "request", "path", "status");
    for (what, tok, path, at) in cases {
        let req = CheckRequest {
            path: path.into(),
            ..CheckRequest::default()
        };
        let out = offline::check(&ring, policy, tok, &req, at);
        println!(
            "{:<24} {:<30} {:<6} {}",
            what,
            path,
            out["status"],
            out["reason"].as_str().unwrap_or("-")
        );
    }
    Ok((ring, token))
}

/// Run a native edge on the demo asset with the demo's key, a revocation state that knows the demo token, and a
/// refresher standing in for the control plane (so the state never goes stale), until interrupted.
fn serve_demo(ring: KeyRing, token: &str, addr: std::net::SocketAddr, media: &std::path::Path) -> Result<()> {
    use sharegate_shared::revocation::{IssuedToken, SnapshotParams, StateKey, build_freshness, build_snapshot};
    if !media.join("demo/master.m3u8").is_file() {
        anyhow::bail!(
            "{} has no demo/master.m3u8: run from the repository root or pass --media",
            media.display()
        );
    }
    let active = ring.active().context("demo key")?;
    let state_key = offline::random_secret()?;
    let mut settings = std::collections::BTreeMap::new();
    settings.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("{}:active:{}", active.id, hex::encode(active.secret.expose())),
    );
    settings.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(state_key.expose()));
    let config = sharegate_edge::EdgeConfig::from_source(&settings).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut buf = TokenBuf::new();
    let claims = decode_unverified(token, &mut buf).map_err(|r| anyhow::anyhow!("{r}"))?;
    let issued = [IssuedToken {
        id: claims.token_id,
        iat: claims.iat,
        exp: claims.exp,
    }];
    let now32 = u32::try_from(now()?)?;
    let params = SnapshotParams {
        generation: 1,
        built_at: now32,
        cutoff: now32 + 1,
        expire_before: now32.saturating_sub(120),
        max_token_lifetime: 86_400,
    };
    let key = StateKey::new(*state_key.expose());
    let snapshot = build_snapshot(&params, issued, &[], &[], &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let opts = sharegate_edge_native::NativeOptions {
        origins: vec![sharegate_edge_native::origin::Origin::Dir(media.to_path_buf())],
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let edge = sharegate_edge_native::Edge::new(config, opts);
        edge.offer_state(&snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
        let refresher = std::sync::Arc::clone(&edge);
        // The edge measures the state's age from signed times only: vouch for generation 1 anew every 5 s.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let as_of = now().ok().and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
                let _ = refresher.offer_state(&build_freshness(1, as_of, &key));
            }
        });
        let base = format!("http://{}", listener.local_addr()?);
        println!("\nedge serving {} on {base} (Ctrl-C to stop)", media.display());
        println!("  play:   ffplay '{base}/t/{token}/demo/master.m3u8'");
        println!("  probe:  ffprobe -v error -show_entries format=duration '{base}/t/{token}/demo/master.m3u8'");
        println!("  query:  curl -s '{base}/demo/master.m3u8?sg={token}'");
        println!("  denied: curl -si '{base}/demo/v0/seg_000.ts' | head -12");
        println!("  status: curl -s {base}/_sharegate/status");
        sharegate_edge_native::serve(edge, listener).await?;
        Ok(())
    })
}
