//! Starting the control plane (`sharegate serve`) and the whole system on one machine (`sharegate dev`).
//!
//! Secrets come from the environment when set, otherwise from files in the data directory that are created once
//! with mode 0600: the signing keys (`SHAREGATE_SIGNING_KEYS`, `signing.keys`), the revocation state key
//! (`SHAREGATE_STATE_KEY`, `state.key`), the edge credential (`SHAREGATE_EDGE_TOKEN`, `edge.token`) and the
//! bootstrap admin API key (`SHAREGATE_ADMIN_KEY`, `admin.key`). Nothing secret is printed except the path of a
//! newly created admin key file.

use crate::service::auth::{self, Role};
use crate::service::{AppState, EdgeTarget, ServiceConfig};
use crate::store::{Ns, open_store};
use anyhow::{Context, Result, anyhow};
use sharegate_edge::config::ConfigSource;
use sharegate_edge::{EdgeConfig, config::keys as edge_keys};
use sharegate_edge_native::client::ClientSources;
use sharegate_shared::keys::KeyRing;
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Options of `sharegate serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Data directory (embedded store, secret files).
    pub data_dir: std::path::PathBuf,
    /// Store URL: empty for the embedded store, `redis://…` for Redis.
    pub store_url: String,
    /// Base URL of the edge, for link URLs.
    pub edge_base_url: String,
    /// Native edges to push state to.
    pub push_edges: Vec<String>,
    /// Base URL of stable share links (`/s/<id>`), normally this API's public URL.
    pub share_base_url: String,
}

/// Read a secret from `env`, else from `file` in the data dir, else create it with `make` (mode 0600).
pub fn secret(data_dir: &Path, env: &str, file: &str, make: impl FnOnce() -> Result<String>) -> Result<String> {
    if let Ok(v) = std::env::var(env) {
        return Ok(v.trim().to_string());
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
    pub new_admin_key_file: Option<std::path::PathBuf>,
    /// The signing keys as `id:state:hex` (for an edge started in the same process).
    pub signing_spec: String,
    /// The state key (hex), for a co-located edge.
    pub state_key_hex: String,
    /// The edge credential, for a co-located edge.
    pub edge_token: String,
}

/// The process environment as a [`ConfigSource`]: how `sharegate edge` and `sharegate dev` read the edge's settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvSource;

impl ConfigSource for EnvSource {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// The edge settings of `sharegate dev`'s edge: every `SHAREGATE_*` edge setting from `env`, read by the same parsers
/// as `sharegate edge` (`EdgeConfig::from_source`, `ClientSources::from_source`), except the secrets the edge shares
/// with this control plane (signing keys, state key), which are the control plane's own: an edge with other keys
/// would refuse every link it mints.
pub fn dev_edge_settings(started: &Started, env: &dyn ConfigSource) -> Result<(EdgeConfig, ClientSources)> {
    edge_settings_with_secrets(&started.signing_spec, &started.state_key_hex, env)
}

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

/// Open the store, load or create the secrets, make sure an admin key exists.
pub async fn start(opts: &ServeOptions) -> Result<Started> {
    std::fs::create_dir_all(&opts.data_dir).with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
    let store = open_store(&opts.store_url, &opts.data_dir)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let policy = Policy::default();
    let signing_spec = secret(&opts.data_dir, "SHAREGATE_SIGNING_KEYS", "signing.keys", || {
        Ok(format!("1:active:{}", random_hex()?))
    })?;
    let ring: KeyRing = sharegate_edge::config::parse_signing_keys(&signing_spec, policy.max_ttl)
        .map_err(|e| anyhow!("signing keys: {e}"))?;
    let state_key_hex = secret(&opts.data_dir, "SHAREGATE_STATE_KEY", "state.key", random_hex)?;
    let state_key =
        sharegate_shared::keys::SecretKey::from_hex(&state_key_hex).map_err(|e| anyhow!("state key: {e}"))?;
    let edge_token = secret(&opts.data_dir, "SHAREGATE_EDGE_TOKEN", "edge.token", random_hex)?;
    let config = ServiceConfig {
        edge_base_url: opts.edge_base_url.clone(),
        share_base_url: opts.share_base_url.clone(),
        edges: opts
            .push_edges
            .iter()
            .map(|u| EdgeTarget {
                url: u.clone(),
                token: edge_token.clone(),
            })
            .collect(),
        edge_token: Some(edge_token.clone()),
        ..ServiceConfig::default()
    };
    let mut state = AppState::new(store.clone(), config, &ring, policy, StateKey::new(*state_key.expose()))
        .map_err(|e| anyhow!("{e}"))?;
    // The master key encrypts rotated signing keys at rest; after a restart the stored active key mints.
    state.master_key = Some(
        crate::service::keys::master_key_from_env_or_file(&opts.data_dir).map_err(|e| anyhow!("master key: {e}"))?,
    );
    state.minter = crate::service::keys::RotatingMinter::from_state(&state)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    // CDN purges: jobs live in the service store, so a revocation and its purges commit in one transaction. A half
    // configuration refuses to start rather than purge only some CDNs.
    state.outbox = crate::purge::try_outbox_from_env(store.clone()).map_err(|e| anyhow!("purge config: {e}"))?;

    // The bootstrap admin key: from the environment (its hash is stored), or created once into a 0600 file.
    let mut new_admin_key_file = None;
    if let Ok(k) = std::env::var("SHAREGATE_ADMIN_KEY") {
        if store
            .get(Ns::ApiKeys, &auth::key_hash(&k))
            .await
            .map_err(|e| anyhow!("{e}"))?
            .is_none()
        {
            let rec = auth::ApiKeyRecord {
                id: auth::key_hash(&k)[..12].to_string(),
                role: Role::Admin,
                label: "bootstrap (SHAREGATE_ADMIN_KEY)".into(),
                created_at: crate::service::now(),
                disabled: false,
            };
            auth::store_key(store.as_ref(), &k, &rec)
                .await
                .map_err(|e| anyhow!("{e}"))?;
        }
    } else {
        let path = opts.data_dir.join("admin.key");
        if !path.exists() {
            let (key, rec) =
                auth::new_key(Role::Admin, "bootstrap", crate::service::now()).map_err(|e| anyhow!("{e}"))?;
            auth::store_key(store.as_ref(), &key, &rec)
                .await
                .map_err(|e| anyhow!("{e}"))?;
            write_private(&path, &key)?;
            new_admin_key_file = Some(path);
        }
    }
    let state = Arc::new(state);
    if let Some(outbox) = &state.outbox {
        // New revocations wake the worker at once; the tick only paces retries.
        crate::purge::spawn_outbox_worker(outbox.clone(), std::time::Duration::from_secs(5));
    }
    crate::service::keys::RotatingMinter::spawn_refresh(
        state.clone(),
        |s| &s.minter,
        std::time::Duration::from_secs(1),
    );
    Ok(Started {
        state,
        new_admin_key_file,
        signing_spec,
        state_key_hex,
        edge_token,
    })
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
