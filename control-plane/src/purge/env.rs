//! Building the outbox from the environment (`sharegate serve`).
//!
//! | variable | meaning |
//! | --- | --- |
//! | `SHAREGATE_CF_ZONE_ID`, `SHAREGATE_CF_API_TOKEN` | purge this Cloudflare zone (token permission: Zone → Cache Purge) |
//! | `SHAREGATE_CF_API_BASE` | default `https://api.cloudflare.com/client/v4` |
//! | `SHAREGATE_FASTLY_SERVICE_ID`, `SHAREGATE_FASTLY_API_KEY` | purge this Fastly service (key scope `purge_select`) |
//! | `SHAREGATE_FASTLY_API_BASE` | default `https://api.fastly.com` |
//! | `SHAREGATE_FASTLY_SOFT_PURGE` | `true`/`1`/`yes` for soft purges; default hard (takedowns must not be served stale) |
//!
//! Each may be given as a file instead, named by `<NAME>_FILE` (the API secrets especially).
//!
//! A CDN is configured when both its id and its secret are set; neither set means "not this CDN". Anything in
//! between (an id without a secret, a base URL or soft flag without the rest) is a configuration error, not a
//! silent "no purges": [`try_outbox_from_env`] reports it so `serve` can refuse to start.

use std::sync::Arc;

use super::{CloudflarePurger, FastlyPurger, Outbox, OutboxConfig, PurgeTarget};
use crate::store::Store;

/// Cloudflare's public API.
pub const CLOUDFLARE_API_BASE: &str = "https://api.cloudflare.com/client/v4";
/// Fastly's public API.
pub const FASTLY_API_BASE: &str = "https://api.fastly.com";

/// Why the purge settings in the environment cannot be used. Messages name variables, never their secret values.
#[derive(Debug, thiserror::Error)]
pub enum PurgeConfigError {
    /// Some of a CDN's variables are set, but not all it needs.
    #[error("{0}")]
    Incomplete(String),
    /// A value is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The HTTP client could not be built.
    #[error("purge http client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The outbox for the CDNs configured in the environment, over `store` (see [`Outbox::over_store`]); `None` when
/// no CDN is configured. A configuration error is logged and also gives `None`: purge requests are then refused
/// with a clear message instead of half of them going out. Prefer [`try_outbox_from_env`] at startup.
pub fn outbox_from_env(store: Arc<dyn Store>) -> Option<Arc<Outbox>> {
    try_outbox_from_env(store).unwrap_or_else(|e| {
        tracing::error!(error = %e, "CDN purges disabled: the purge configuration is incomplete or invalid");
        None
    })
}

/// Like [`outbox_from_env`], but a configuration error is returned.
pub fn try_outbox_from_env(store: Arc<dyn Store>) -> Result<Option<Arc<Outbox>>, PurgeConfigError> {
    outbox_from_vars(store, crate::env::var_or_none)
}

/// The work of [`try_outbox_from_env`] with the variable lookup passed in, so tests need not touch the process
/// environment (shared by every test thread).
fn outbox_from_vars(
    store: Arc<dyn Store>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Arc<Outbox>>, PurgeConfigError> {
    let targets = targets_from_vars(var)?;
    if targets.is_empty() {
        return Ok(None);
    }
    let outbox = targets
        .into_iter()
        .fold(Outbox::over_store(store, OutboxConfig::default()), |o, t| {
            o.with_target(t)
        });
    Ok(Some(Arc::new(outbox)))
}

/// The CDNs the environment configures, by name (`cloudflare`, `fastly`), or why the settings cannot be used:
/// `sharegate check-config` asks this without opening a store.
pub fn check_env() -> Result<Vec<String>, PurgeConfigError> {
    let targets = targets_from_vars(crate::env::var_or_none)?;
    Ok(targets.iter().map(|t| t.name().to_string()).collect())
}

fn targets_from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Vec<Arc<dyn PurgeTarget>>, PurgeConfigError> {
    // Blank counts as unset: an empty `VAR=` in a unit file or manifest means "not configured".
    let get = |name: &str| var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let mut targets: Vec<Arc<dyn PurgeTarget>> = Vec::new();

    if let Some((zone, token)) = pair(
        &get,
        "SHAREGATE_CF_ZONE_ID",
        "SHAREGATE_CF_API_TOKEN",
        &["SHAREGATE_CF_API_BASE"],
    )? {
        check_id("SHAREGATE_CF_ZONE_ID", &zone)?;
        let base = api_base(
            "SHAREGATE_CF_API_BASE",
            get("SHAREGATE_CF_API_BASE"),
            CLOUDFLARE_API_BASE,
        )?;
        targets.push(Arc::new(CloudflarePurger::new(base, zone, token)?));
    }

    if let Some((service, key)) = pair(
        &get,
        "SHAREGATE_FASTLY_SERVICE_ID",
        "SHAREGATE_FASTLY_API_KEY",
        &["SHAREGATE_FASTLY_API_BASE", "SHAREGATE_FASTLY_SOFT_PURGE"],
    )? {
        check_id("SHAREGATE_FASTLY_SERVICE_ID", &service)?;
        let base = api_base(
            "SHAREGATE_FASTLY_API_BASE",
            get("SHAREGATE_FASTLY_API_BASE"),
            FASTLY_API_BASE,
        )?;
        let soft = match get("SHAREGATE_FASTLY_SOFT_PURGE")
            .as_deref()
            .map(str::to_ascii_lowercase)
        {
            None => false,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => {
                return Err(PurgeConfigError::Invalid(format!(
                    "SHAREGATE_FASTLY_SOFT_PURGE={v:?}: want true or false"
                )));
            }
        };
        targets.push(Arc::new(FastlyPurger::new(base, service, key, soft)?));
    }
    Ok(targets)
}

/// A CDN's id and secret: both set, or none of its variables set (`None`).
fn pair(
    get: &impl Fn(&str) -> Option<String>,
    id: &str,
    secret: &str,
    extras: &[&str],
) -> Result<Option<(String, String)>, PurgeConfigError> {
    match (get(id), get(secret)) {
        (Some(i), Some(s)) => Ok(Some((i, s))),
        (Some(_), None) => Err(PurgeConfigError::Incomplete(format!("{id} is set but {secret} is not"))),
        (None, Some(_)) => Err(PurgeConfigError::Incomplete(format!("{secret} is set but {id} is not"))),
        (None, None) => match extras.iter().find(|e| get(e).is_some()) {
            // An API base or flag without the rest is most likely a typo in the id's name.
            Some(extra) => Err(PurgeConfigError::Incomplete(format!(
                "{extra} is set but {id} and {secret} are not"
            ))),
            None => Ok(None),
        },
    }
}

/// Zone and service ids go into API paths as they are: keep them to the characters real ids use, so a stray `/`
/// or `?` cannot address another endpoint.
fn check_id(name: &str, id: &str) -> Result<(), PurgeConfigError> {
    if id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(PurgeConfigError::Invalid(format!(
            "{name} must be 1 to 64 letters, digits, '-' or '_'"
        )))
    }
}

fn api_base(name: &str, value: Option<String>, default: &str) -> Result<String, PurgeConfigError> {
    let Some(v) = value else {
        return Ok(default.to_string());
    };
    match reqwest::Url::parse(&v) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(v),
        _ => Err(PurgeConfigError::Invalid(format!("{name}={v:?} is not an http(s) URL"))),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    async fn build(vars: &[(&str, &str)]) -> Result<Option<Arc<Outbox>>, PurgeConfigError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open_store("", dir.path()).await.unwrap();
        outbox_from_vars(store, |k| vars.get(k).cloned())
    }

    fn targets(o: &Outbox) -> String {
        format!("{o:?}")
    }

    #[tokio::test]
    async fn none_when_nothing_is_set() {
        assert!(build(&[]).await.unwrap().is_none());
        assert!(
            build(&[("SHAREGATE_CF_ZONE_ID", "  ")]).await.unwrap().is_none(),
            "blank is unset"
        );
    }

    #[tokio::test]
    async fn each_cdn_from_its_pair() {
        let cf = build(&[("SHAREGATE_CF_ZONE_ID", "z1"), ("SHAREGATE_CF_API_TOKEN", "secret-cf")])
            .await
            .unwrap()
            .unwrap();
        assert!(targets(&cf).contains("cloudflare:z1"), "{cf:?}");
        assert!(!targets(&cf).contains("fastly"));
        let both = build(&[
            ("SHAREGATE_CF_ZONE_ID", "z1"),
            ("SHAREGATE_CF_API_TOKEN", "secret-cf"),
            ("SHAREGATE_CF_API_BASE", "http://127.0.0.1:9/client/v4"),
            ("SHAREGATE_FASTLY_SERVICE_ID", "svc"),
            ("SHAREGATE_FASTLY_API_KEY", "secret-fy"),
            ("SHAREGATE_FASTLY_SOFT_PURGE", "TRUE"),
        ])
        .await
        .unwrap()
        .unwrap();
        let dbg = targets(&both);
        assert!(dbg.contains("cloudflare:z1") && dbg.contains("fastly:svc"), "{dbg}");
        assert!(!dbg.contains("secret"), "no secret in Debug: {dbg}");
    }

    #[tokio::test]
    async fn half_configurations_are_errors() {
        for vars in [
            &[("SHAREGATE_CF_ZONE_ID", "z1")][..],
            &[("SHAREGATE_CF_API_TOKEN", "t")],
            &[("SHAREGATE_CF_API_BASE", "http://x")],
            &[("SHAREGATE_FASTLY_SOFT_PURGE", "1")],
            &[
                ("SHAREGATE_FASTLY_SERVICE_ID", "s"),
                ("SHAREGATE_FASTLY_API_KEY", "k"),
                ("SHAREGATE_FASTLY_SOFT_PURGE", "maybe"),
            ],
            &[("SHAREGATE_CF_ZONE_ID", "z/../x"), ("SHAREGATE_CF_API_TOKEN", "t")],
            &[
                ("SHAREGATE_CF_ZONE_ID", "z"),
                ("SHAREGATE_CF_API_TOKEN", "t"),
                ("SHAREGATE_CF_API_BASE", "ftp://x"),
            ],
        ] {
            let err = build(vars).await.map(|_| ()).unwrap_err().to_string();
            assert!(err.contains("SHAREGATE_"), "{vars:?}: {err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }
}
