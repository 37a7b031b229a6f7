//! Every place `sharegate` wires up the native edge (`sharegate-edge-native`): `sharegate edge`, the edge of
//! `sharegate dev`, and the edge of `sharegate demo --serve`. Kept in one module so a change of the native edge's API
//! is met here alone.
//!
//! The edge's settings are read by the native edge's own entry point (`sharegate_edge_native::settings`: the engine's
//! and the server's parsers, docs/edge-config.md) from the process environment, as every other edge reads its
//! configuration store. This module only lays on top what the command line or the composition knows better: the
//! flags given to `sharegate edge`, and for `sharegate dev` the control plane's secrets, URLs and the origin.

use anyhow::{Context, Result, anyhow};
use sharegate_edge::EdgeConfig;
use sharegate_edge::config::{ConfigSource, keys as edge_keys};
use sharegate_edge_native::origin::Origin;
use sharegate_edge_native::{Edge, NativeOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::EdgeArgs;

/// The process environment as a [`ConfigSource`]: how `sharegate edge` and `sharegate dev` read the edge's settings.
/// Every setting may also be given as a file named by `<NAME>_FILE` (secrets: Kubernetes volumes, compose secrets,
/// systemd credentials); [`SECRETS`] are checked for an unreadable file before the edge starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSource;

impl ConfigSource for EnvSource {
    fn get(&self, key: &str) -> Option<String> {
        sharegate_control_plane::env::var_or_none(key)
    }
}

/// The edge's secret settings.
pub const SECRETS: [&str; 4] = [
    edge_keys::SIGNING_KEYS,
    edge_keys::STATE_KEY,
    "SHAREGATE_EDGE_TOKEN",
    edge_keys::WATERMARK_KEY,
];

/// `sharegate edge`: the native edge alone, until the listener fails.
pub async fn run(a: EdgeArgs) -> Result<()> {
    if let Some(e) = sharegate_control_plane::env::check(&SECRETS).into_iter().next() {
        return Err(anyhow!("{e}"));
    }
    let (config, opts) = edge_settings(&a, &EnvSource)?;
    let listener = tokio::net::TcpListener::bind(a.edge_addr).await?;
    let edge = Edge::new(config, opts);
    sharegate_edge_native::spawn_background(&edge);
    tracing::info!(addr = %listener.local_addr()?, "sharegate edge listening");
    sharegate_edge_native::serve_until(edge, listener, crate::shutdown_signal()).await?;
    Ok(())
}

/// The settings of `sharegate edge`: `env`'s, with each flag given in its place.
pub fn edge_settings(a: &EdgeArgs, env: &dyn ConfigSource) -> Result<(EdgeConfig, NativeOptions)> {
    let (config, mut opts) = sharegate_edge_native::settings(env)?;
    // `--origin` is required, so the flags' origins always replace SHAREGATE_ORIGIN's.
    opts.origins = a.origins.iter().map(|o| Origin::parse(o)).collect();
    if let Some(ms) = a.origin_timeout_ms {
        opts.origin_timeout = Duration::from_millis(ms);
    }
    if let Some(mib) = a.cache_mib {
        opts.cache_bytes = mib.saturating_mul(1024 * 1024);
    }
    if let Some(url) = &a.state_url {
        opts.state_url = Some(url.clone());
    }
    if let Some(ms) = a.pull_interval_ms {
        opts.pull_interval = Duration::from_millis(ms);
    }
    if let Some(url) = &a.events_url {
        opts.events_url = Some(url.clone());
    }
    Ok((config, opts))
}

/// What the edge of `sharegate dev` shares with its control plane.
pub struct DevEdge<'a> {
    /// The control plane's signing keys, `id:state:hex`.
    pub signing_spec: &'a str,
    /// The control plane's revocation state key, hex.
    pub state_key_hex: &'a str,
    /// The edge credential for pulls, pushes and events.
    pub edge_token: &'a str,
    /// The control plane's base URL (`http://addr`).
    pub api_url: &'a str,
    /// The media origin: a directory or an http(s) URL.
    pub origin: &'a str,
}

/// Start the edge of `sharegate dev` on `listener`: the control plane's keys, its state pulled every second and
/// pushed, and every other `SHAREGATE_*` edge setting from the environment, read as `sharegate edge` reads it.
pub fn start_dev(dev: &DevEdge<'_>, listener: tokio::net::TcpListener) -> Result<()> {
    let (config, opts) = dev_settings(dev, &EnvSource)?;
    let edge = Edge::new(config, opts);
    sharegate_edge_native::spawn_background(&edge);
    tokio::spawn(sharegate_edge_native::serve(edge, listener));
    Ok(())
}

/// The settings of `sharegate dev`'s edge: every `SHAREGATE_*` edge setting from `env`, except what it shares with
/// this control plane, which is the control plane's own: the secrets (an edge with other keys would refuse every link
/// it mints), the credential, the state, keys and events URLs, and the origin the demo asset was registered with.
fn dev_settings(dev: &DevEdge<'_>, env: &dyn ConfigSource) -> Result<(EdgeConfig, NativeOptions)> {
    struct WithSecrets<'a> {
        env: &'a dyn ConfigSource,
        dev: &'a DevEdge<'a>,
    }
    impl ConfigSource for WithSecrets<'_> {
        fn get(&self, key: &str) -> Option<String> {
            match key {
                edge_keys::SIGNING_KEYS => Some(self.dev.signing_spec.to_string()),
                edge_keys::STATE_KEY => Some(self.dev.state_key_hex.to_string()),
                _ => self.env.get(key),
            }
        }
    }
    let (config, mut opts) =
        sharegate_edge_native::settings(&WithSecrets { env, dev }).map_err(|e| anyhow!("edge setting {e}"))?;
    let api = dev.api_url;
    opts.origins = vec![Origin::parse(dev.origin)];
    opts.state_url = Some(format!("{api}/v1/edge/state"));
    opts.keys_url = Some(format!("{api}/v1/edge/keys"));
    opts.events_url = Some(format!("{api}/v1/edge/events"));
    opts.edge_token = Some(dev.edge_token.to_string());
    Ok((config, opts))
}

/// The edge of `sharegate demo --serve`: the demo asset under `media`, the demo's key, a revocation state that knows
/// the demo token, and a refresher standing in for the control plane (so the state never goes stale), until the
/// listener fails.
pub async fn serve_demo(
    ring: &sharegate_shared::keys::KeyRing,
    token: &str,
    addr: SocketAddr,
    media: &Path,
) -> Result<()> {
    use sharegate_shared::revocation::{IssuedToken, SnapshotParams, StateKey, build_freshness, build_snapshot};
    use sharegate_shared::token::{TokenBuf, decode_unverified};
    if !media.join("demo/master.m3u8").is_file() {
        anyhow::bail!(
            "{} has no demo/master.m3u8: run from the repository root or pass --media",
            media.display()
        );
    }
    let active = ring.active().context("demo key")?;
    let state_key = crate::offline::random_secret()?;
    let settings = BTreeMap::from([
        (
            edge_keys::SIGNING_KEYS.to_string(),
            format!("{}:active:{}", active.id, hex::encode(active.secret.expose())),
        ),
        (edge_keys::STATE_KEY.to_string(), hex::encode(state_key.expose())),
    ]);
    let config = EdgeConfig::from_source(&settings)?;
    let mut buf = TokenBuf::new();
    let claims = decode_unverified(token, &mut buf)?;
    let issued = [IssuedToken {
        id: claims.token_id,
        iat: claims.iat,
        exp: claims.exp,
    }];
    let now32 = u32::try_from(crate::offline::now()?)?;
    let params = SnapshotParams {
        generation: 1,
        built_at: now32,
        cutoff: now32 + 1,
        expire_before: now32.saturating_sub(120),
        max_token_lifetime: 86_400,
    };
    let key = StateKey::new(*state_key.expose());
    let snapshot = build_snapshot(&params, issued, &[], &[], &key)?;
    let opts = NativeOptions {
        origins: vec![Origin::Dir(media.to_path_buf())],
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let edge = Edge::new(config, opts);
    edge.offer_state(&snapshot)?;
    let refresher = Arc::clone(&edge);
    // The edge measures the state's age from signed times only: vouch for generation 1 anew every 5 s.
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let as_of = crate::offline::now()
                .ok()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_dev_edge_reads_every_edge_setting_but_the_shared_secrets() {
        let mine = format!("1:active:{}", "1".repeat(64));
        let state = "3".repeat(64);
        let dev = |signing_spec| DevEdge {
            signing_spec,
            state_key_hex: &state,
            edge_token: "dev-token",
            api_url: "http://127.0.0.1:7700",
            origin: "deploy/demo-media",
        };
        let env: &[(&str, &str)] = &[
            ("SHAREGATE_TWO_TIER", "true"),
            ("SHAREGATE_SESSION_TTL", "120"),
            ("SHAREGATE_EDGE_ID", "dev-edge-7"),
            ("SHAREGATE_STALE_POLICY", "fail_open"),
            ("SHAREGATE_GEO_LENIENT", "true"),
            ("SHAREGATE_COUNTRY_HEADER", "CF-IPCountry"),
            ("SHAREGATE_CLIENT_IP_HEADER", "X-Real-IP"),
            ("SHAREGATE_CACHE_MIB", "64"),
            // Another key ring, credential or control plane in the environment must not replace the dev one's.
            (
                "SHAREGATE_SIGNING_KEYS",
                "9:active:9999999999999999999999999999999999999999999999999999999999999999",
            ),
            ("SHAREGATE_EDGE_TOKEN", "someone-elses"),
            ("SHAREGATE_STATE_URL", "https://elsewhere.example/v1/edge/state"),
        ];
        let (c, opts) = dev_settings(&dev(&mine), &env).unwrap();
        let sources = &opts.client_sources;
        assert_eq!(c.two_tier.map(|t| t.session_ttl), Some(120));
        assert_eq!(c.edge_id, "dev-edge-7");
        assert_eq!(c.stale_policy, sharegate_edge::config::StalePolicy::FailOpen);
        assert!(c.geo_lenient && c.state_key.is_some());
        assert_eq!(c.keys.active().map(|k| k.id), Some(1));
        assert_eq!(sources.country_source(), "header:cf-ipcountry");
        assert_eq!(sources.ip_source(), "header:x-real-ip");
        assert_eq!(opts.cache_bytes, 64 << 20);
        assert_eq!(opts.edge_token.as_deref(), Some("dev-token"));
        assert_eq!(opts.state_url.as_deref(), Some("http://127.0.0.1:7700/v1/edge/state"));
        assert_eq!(opts.keys_url.as_deref(), Some("http://127.0.0.1:7700/v1/edge/keys"));
        assert_eq!(opts.origins.len(), 1);
        // A bad setting stops the dev edge as it stops `sharegate edge`, naming the setting.
        let bad: &[(&str, &str)] = &[("SHAREGATE_TWO_TIER", "maybe")];
        let e = dev_settings(&dev(&mine), &bad).unwrap_err();
        assert!(e.to_string().contains("SHAREGATE_TWO_TIER"), "{e}");
    }

    #[test]
    fn edge_flags_replace_the_environments_settings() {
        let keys = format!("1:active:{}", "1".repeat(64));
        let env: &[(&str, &str)] = &[
            ("SHAREGATE_SIGNING_KEYS", &keys),
            ("SHAREGATE_ORIGIN", "https://env-origin.example"),
            ("SHAREGATE_ORIGIN_TIMEOUT_MS", "700"),
            ("SHAREGATE_STATE_URL", "https://cp.example/v1/edge/state"),
            ("SHAREGATE_EDGE_TOKEN", "edge-secret"),
            ("SHAREGATE_KEYS_URL", "https://cp.example/v1/edge/keys"),
        ];
        let args = |line: &str| match crate::cli::Cli::try_parse_from(line.split_whitespace()).map(|c| c.cmd) {
            Ok(crate::cli::Cmd::Edge(a)) => a,
            _ => panic!("not edge: {line}"),
        };
        // Flags not given: the environment's settings, else the settings' defaults (the flags' old defaults).
        let (_, opts) = edge_settings(&args("sharegate edge --origin media"), &env).unwrap();
        assert_eq!(opts.origin_timeout, Duration::from_millis(700));
        assert_eq!(opts.state_url.as_deref(), Some("https://cp.example/v1/edge/state"));
        assert_eq!(opts.keys_url.as_deref(), Some("https://cp.example/v1/edge/keys"));
        assert_eq!(opts.edge_token.as_deref(), Some("edge-secret"));
        assert_eq!(
            (opts.cache_bytes, opts.pull_interval),
            (256 << 20, Duration::from_millis(1000))
        );
        assert!(matches!(&opts.origins[..], [Origin::Dir(d)] if d == Path::new("media")));
        // Flags given: theirs.
        let line = "sharegate edge --origin https://a.example --origin https://b.example --origin-timeout-ms 900 \
                    --cache-mib 8 --pull-interval-ms 250 --state-url http://cp:7700/v1/edge/state \
                    --events-url http://cp:7700/v1/edge/events";
        let (_, opts) = edge_settings(&args(line), &env).unwrap();
        assert_eq!(opts.origins.len(), 2);
        assert_eq!(opts.origin_timeout, Duration::from_millis(900));
        assert_eq!(
            (opts.cache_bytes, opts.pull_interval),
            (8 << 20, Duration::from_millis(250))
        );
        assert_eq!(opts.state_url.as_deref(), Some("http://cp:7700/v1/edge/state"));
        assert_eq!(opts.events_url.as_deref(), Some("http://cp:7700/v1/edge/events"));
        // The engine's settings are required as before.
        let none: &[(&str, &str)] = &[];
        assert!(edge_settings(&args("sharegate edge --origin m"), &none).is_err());
    }
}
