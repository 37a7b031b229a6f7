//! Every place `sharegate` wires up the native edge (`sharegate-edge-native`): `sharegate edge`, the edge of
//! `sharegate dev`, and the edge of `sharegate demo --serve`. Kept in one module so a change of the native edge's API
//! is met here alone.
//!
//! The edge's settings are read by the edge's own parsers (`EdgeConfig::from_source`, `ClientSources::from_source`)
//! from the process environment, as every other edge reads its configuration store: this module adds no setting of
//! its own, except that a co-located edge takes the control plane's secrets.

use anyhow::{Context, Result, anyhow};
use sharegate_edge::EdgeConfig;
use sharegate_edge::config::{ConfigSource, keys as edge_keys};
use sharegate_edge_native::client::ClientSources;
use sharegate_edge_native::origin::Origin;
use sharegate_edge_native::{Edge, NativeOptions};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::EdgeArgs;

/// The process environment as a [`ConfigSource`]: how `sharegate edge` and `sharegate dev` read the edge's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSource;

impl ConfigSource for EnvSource {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// `sharegate edge`: the native edge alone, until the listener fails.
pub async fn run(a: EdgeArgs) -> Result<()> {
    let config = EdgeConfig::from_source(&EnvSource).map_err(|e| anyhow!("{e}"))?;
    let client_sources = ClientSources::from_source(&EnvSource).map_err(|e| anyhow!("{e}"))?;
    let opts = NativeOptions {
        origins: a.origins.iter().map(|o| Origin::parse(o)).collect(),
        origin_timeout: Duration::from_millis(a.origin_timeout_ms),
        cache_bytes: a.cache_mib * 1024 * 1024,
        state_url: a.state_url,
        pull_interval: Duration::from_millis(a.pull_interval_ms),
        edge_token: std::env::var("SHAREGATE_EDGE_TOKEN").ok(),
        events_url: a.events_url,
        client_sources,
        ..Default::default()
    };
    let listener = tokio::net::TcpListener::bind(a.edge_addr).await?;
    let edge = Edge::new(config, opts);
    sharegate_edge_native::spawn_background(&edge);
    tracing::info!(addr = %listener.local_addr()?, "sharegate edge listening");
    sharegate_edge_native::serve(edge, listener).await?;
    Ok(())
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
    let (config, client_sources) = edge_settings_with_secrets(dev.signing_spec, dev.state_key_hex, &EnvSource)?;
    let api = dev.api_url;
    let edge = Edge::new(
        config,
        NativeOptions {
            origins: vec![Origin::parse(dev.origin)],
            state_url: Some(format!("{api}/v1/edge/state")),
            keys_url: Some(format!("{api}/v1/edge/keys")),
            events_url: Some(format!("{api}/v1/edge/events")),
            edge_token: Some(dev.edge_token.to_string()),
            client_sources,
            ..Default::default()
        },
    );
    sharegate_edge_native::spawn_background(&edge);
    tokio::spawn(sharegate_edge_native::serve(edge, listener));
    Ok(())
}

/// The edge settings of a co-located edge: every `SHAREGATE_*` edge setting from `env`, except the secrets the edge
/// shares with this control plane (signing keys, state key), which are the control plane's own: an edge with other
/// keys would refuse every link it mints.
fn edge_settings_with_secrets(
    signing_spec: &str,
    state_key_hex: &str,
    env: &dyn ConfigSource,
) -> Result<(EdgeConfig, ClientSources)> {
    struct WithSecrets<'a> {
        env: &'a dyn ConfigSource,
        signing_spec: &'a str,
        state_key_hex: &'a str,
    }
    impl ConfigSource for WithSecrets<'_> {
        fn get(&self, key: &str) -> Option<String> {
            match key {
                edge_keys::SIGNING_KEYS => Some(self.signing_spec.to_string()),
                edge_keys::STATE_KEY => Some(self.state_key_hex.to_string()),
                _ => self.env.get(key),
            }
        }
    }
    let src = WithSecrets {
        env,
        signing_spec,
        state_key_hex,
    };
    let config = EdgeConfig::from_source(&src).map_err(|e| anyhow!("edge setting {e}"))?;
    let sources = ClientSources::from_source(&src).map_err(|e| anyhow!("edge setting {e}"))?;
    Ok((config, sources))
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
    let config = EdgeConfig::from_source(&settings).map_err(|e| anyhow!("{e}"))?;
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

    #[test]
    fn the_dev_edge_reads_every_edge_setting_but_the_shared_secrets() {
        let mine = format!("1:active:{}", "1".repeat(64));
        let state = "3".repeat(64);
        let env: &[(&str, &str)] = &[
            ("SHAREGATE_TWO_TIER", "true"),
            ("SHAREGATE_SESSION_TTL", "120"),
            ("SHAREGATE_EDGE_ID", "dev-edge-7"),
            ("SHAREGATE_STALE_POLICY", "fail_open"),
            ("SHAREGATE_GEO_LENIENT", "true"),
            ("SHAREGATE_COUNTRY_HEADER", "CF-IPCountry"),
            ("SHAREGATE_CLIENT_IP_HEADER", "X-Real-IP"),
            // Another key ring in the environment must not replace the control plane's own.
            (
                "SHAREGATE_SIGNING_KEYS",
                "9:active:9999999999999999999999999999999999999999999999999999999999999999",
            ),
        ];
        let (c, sources) = edge_settings_with_secrets(&mine, &state, &env).unwrap();
        assert_eq!(c.two_tier.map(|t| t.session_ttl), Some(120));
        assert_eq!(c.edge_id, "dev-edge-7");
        assert_eq!(c.stale_policy, sharegate_edge::config::StalePolicy::FailOpen);
        assert!(c.geo_lenient && c.state_key.is_some());
        assert_eq!(c.keys.active().map(|k| k.id), Some(1));
        assert_eq!(sources.country_source(), "header:cf-ipcountry");
        assert_eq!(sources.ip_source(), "header:x-real-ip");
        // A bad setting stops the dev edge as it stops `sharegate edge`, naming the setting.
        let bad: &[(&str, &str)] = &[("SHAREGATE_TWO_TIER", "maybe")];
        let e = edge_settings_with_secrets(&mine, &state, &bad).unwrap_err();
        assert!(e.to_string().contains("SHAREGATE_TWO_TIER"), "{e}");
    }
}
