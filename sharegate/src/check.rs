//! `sharegate check-config serve|edge`: everything `serve` or `edge` would read at startup, read and judged without
//! starting: no listener bound, no store opened, no file written. For `ExecStartPre=` in the systemd units, init
//! containers and CI, so a bad setting stops a rollout before it replaces a healthy process.
//!
//! Each finding is one line: `ok`, `note` (fine, but worth knowing), `warning` (it would start, but short of what
//! production needs) or `error` (it would not start, or would start wrong). Exit 1 when any error is found. Values of
//! secrets are never printed, only where they come from.

use crate::cli::{EdgeArgs, ServeArgs};
use crate::compose::{self, SECRETS};
use anyhow::Result;
use sharegate_control_plane::env as cp_env;
use sharegate_control_plane::store::StoreUrl;
use sharegate_edge::config::ConfigSource;
use sharegate_shared::keys::SecretKey;
use sharegate_shared::token::Policy;
use std::process::ExitCode;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Note,
    Warning,
    Error,
}

#[derive(Default)]
struct Findings(Vec<(Level, String)>);

impl Findings {
    fn add(&mut self, level: Level, what: impl Into<String>) {
        self.0.push((level, what.into()));
    }

    fn result<T>(&mut self, what: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => {
                self.add(Level::Ok, what);
                Some(v)
            }
            Err(e) => {
                self.add(Level::Error, format!("{what}: {e:#}"));
                None
            }
        }
    }

    fn print(&self, name: &str) -> ExitCode {
        for (level, line) in &self.0 {
            let tag = match level {
                Level::Ok => "ok",
                Level::Note => "note",
                Level::Warning => "warning",
                Level::Error => "error",
            };
            println!("{tag:>7}  {line}");
        }
        let errors = self.0.iter().filter(|(l, _)| *l == Level::Error).count();
        let warnings = self.0.iter().filter(|(l, _)| *l == Level::Warning).count();
        if errors == 0 {
            println!("sharegate check-config {name}: would start ({warnings} warning(s))");
            ExitCode::SUCCESS
        } else {
            eprintln!("sharegate check-config {name}: {errors} error(s), {warnings} warning(s): it would not start");
            ExitCode::FAILURE
        }
    }
}

fn http_url(what: &str, url: &str) -> Result<()> {
    let u = reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("{what} {url:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        anyhow::bail!("{what} {url:?} must be an http(s) URL with a host");
    }
    Ok(())
}

/// Judges one secret's value by its name: an error where the server would refuse it, a warning where it would
/// start but the secret is weak.
fn secret_finding(f: &mut Findings, env: &str, value: &str) {
    let source = source_of(env);
    match secret_refused(env, value) {
        Some(why) => f.add(Level::Error, format!("{env} ({source}): {why}")),
        // The servers take any non-empty credential; a short one is guessable.
        None if matches!(env, "SHAREGATE_EDGE_TOKEN" | "SHAREGATE_ADMIN_KEY") && value.len() < 32 => f.add(
            Level::Warning,
            format!("{env} ({source}) is shorter than 32 characters: easy to guess; `sharegate keygen` makes one"),
        ),
        None => f.add(Level::Ok, format!("{env}: given ({source})")),
    }
}

/// Why the server would refuse this secret's value, if it would.
fn secret_refused(env: &str, value: &str) -> Option<String> {
    match env {
        "SHAREGATE_SIGNING_KEYS" => sharegate_edge::config::parse_signing_keys(value, Policy::default().max_ttl)
            .err()
            .map(|e| e.to_string()),
        "SHAREGATE_STATE_KEY" | "SHAREGATE_MASTER_KEY" | "SHAREGATE_WATERMARK_KEY" => SecretKey::from_hex(value)
            .err()
            .map(|_| "must be 64 hex digits".to_string()),
        _ => None,
    }
}

/// The purge API secrets and ids (read as `<NAME>` or `<NAME>_FILE` like every secret).
const PURGE_SETTINGS: [&str; 4] = [
    "SHAREGATE_CF_ZONE_ID",
    "SHAREGATE_CF_API_TOKEN",
    "SHAREGATE_FASTLY_SERVICE_ID",
    "SHAREGATE_FASTLY_API_KEY",
];

/// `sharegate check-config serve`.
pub fn serve(a: &ServeArgs) -> ExitCode {
    let mut f = Findings::default();
    let Some(opts) = f.result("settings read", compose::serve_options(a)) else {
        return f.print("serve");
    };
    let store = match StoreUrl::parse(&opts.store_url) {
        Ok(s) => {
            f.add(Level::Ok, format!("store: {}", s.describe()));
            Some(s)
        }
        Err(e) => {
            f.add(Level::Error, format!("store: {e}"));
            None
        }
    };
    let shared_store = matches!(store, Some(StoreUrl::Redis(..)));
    if let Some(settings) = f.result("Redis settings (SHAREGATE_REDIS_*)", compose::redis_settings())
        && shared_store
        && settings.wait_replicas == 0
    {
        f.add(
            Level::Note,
            "SHAREGATE_REDIS_WAIT_REPLICAS is 0: with Sentinel or replicas, a failover can lose writes the primary \
             acknowledged but had not yet replicated (docs/deploy.md, Durability)",
        );
    }
    // The data directory: the embedded store and generated secrets live there.
    match std::fs::metadata(&opts.data_dir) {
        Ok(m) if m.is_dir() => f.add(Level::Ok, format!("data directory {}", opts.data_dir.display())),
        Ok(_) => f.add(
            Level::Error,
            format!("data directory {} is not a directory", opts.data_dir.display()),
        ),
        Err(_) => f.add(
            Level::Note,
            format!("data directory {} will be created", opts.data_dir.display()),
        ),
    }
    for e in cp_env::check(&SECRETS.map(|(env, _)| env)) {
        f.add(Level::Error, e.to_string());
    }
    for e in cp_env::check(&PURGE_SETTINGS) {
        f.add(Level::Error, e.to_string());
    }
    if cp_env::is_set("SHAREGATE_TEST_CLOCK_OFFSET_SECS") {
        f.add(
            Level::Warning,
            "SHAREGATE_TEST_CLOCK_OFFSET_SECS is set: this replica's clock is shifted (for rehearsing sharegate \
             doctor only); unset it in production",
        );
    }
    if let Some(StoreUrl::Redis(sharegate_control_plane::store::RedisTarget::Sentinel { tls: true, .. }, _)) = &store
        && std::env::var_os("SHAREGATE_REDIS_CA_FILE").is_some()
    {
        f.add(
            Level::Warning,
            "SHAREGATE_REDIS_CA_FILE is not used with rediss+sentinel://: the data nodes' certificates are checked \
             against the system's roots",
        );
    }
    for (env, file) in SECRETS {
        let path = opts.data_dir.join(file);
        match cp_env::var(env) {
            Err(_) => {} // reported just above
            Ok(Some(v)) => secret_finding(&mut f, env, &v),
            Ok(None) => match std::fs::read_to_string(&path) {
                Ok(v) => match secret_refused(env, v.trim()).map_or(Ok(()), |why| Err(anyhow::anyhow!(why))) {
                    Ok(()) if shared_store => f.add(
                        Level::Warning,
                        format!(
                            "{env} not given: this replica would use {} from its data directory; every replica on \
                             a shared store must be given the same value ({env} or {env}_FILE)",
                            path.display()
                        ),
                    ),
                    Ok(()) => f.add(Level::Ok, format!("{env}: from {}", path.display())),
                    Err(e) => f.add(Level::Error, format!("{}: {e:#}", path.display())),
                },
                Err(_) if shared_store => f.add(
                    Level::Warning,
                    format!(
                        "{env} not given: it would be created in {}, different on every replica; replicas on a shared \
                         store must be given the same value ({env} or {env}_FILE)",
                        path.display()
                    ),
                ),
                Err(_) => f.add(
                    Level::Note,
                    format!("{env} not given: it would be created in {}", path.display()),
                ),
            },
        }
    }
    f.result(
        "edge URL (SHAREGATE_EDGE_URL)",
        http_url("edge URL", &opts.edge_base_url),
    );
    f.result(
        "public URL (SHAREGATE_PUBLIC_URL)",
        http_url("public URL", &opts.share_base_url),
    );
    if a.public_url.is_none() && !a.api_addr.ip().is_loopback() {
        f.add(
            Level::Warning,
            format!(
                "SHAREGATE_PUBLIC_URL is not set: share links would point at {}, this process's own address",
                opts.share_base_url
            ),
        );
    }
    for e in &opts.push_edges {
        f.result(&format!("push edge {e}"), http_url("push edge", e));
    }
    f.result("player settings", compose::player_settings().map(|_| ()));
    f.result("analytics settings", compose::analytics_settings().map(|_| ()));
    f.result("entitlement settings", compose::entitlement_settings().map(|_| ()));
    match sharegate_control_plane::purge::check_env() {
        Ok(cdns) if cdns.is_empty() => f.add(Level::Note, "CDN purges: none configured"),
        Ok(cdns) => f.add(Level::Ok, format!("CDN purges: {}", cdns.join(", "))),
        Err(e) => f.add(Level::Error, format!("CDN purge settings: {e}")),
    }
    f.print("serve")
}

/// Where a given secret came from, in words (never its value).
fn source_of(env: &str) -> String {
    if std::env::var(env).is_ok_and(|v| !v.trim().is_empty()) {
        "environment".into()
    } else {
        let path = std::env::var(format!("{env}_FILE")).unwrap_or_default();
        format!("file {path}")
    }
}

/// `sharegate check-config edge`.
pub fn edge(a: &EdgeArgs) -> ExitCode {
    let mut f = Findings::default();
    for e in cp_env::check(&crate::edge::SECRETS) {
        f.add(Level::Error, e.to_string());
    }
    let env = crate::edge::EnvSource;
    for name in crate::edge::SECRETS {
        if let Some(v) = env.get(name) {
            secret_finding(&mut f, name, &v);
        }
    }
    let Some((config, opts)) = f.result(
        "edge settings (docs/edge-config.md)",
        crate::edge::edge_settings(a, &env),
    ) else {
        return f.print("edge");
    };
    f.add(Level::Ok, format!("{} signing key(s)", config.keys.iter().count()));
    for o in &opts.origins {
        f.add(Level::Ok, format!("origin {o:?}"));
    }
    for dir in a
        .origins
        .iter()
        .filter(|o| !o.starts_with("http://") && !o.starts_with("https://"))
    {
        if !std::path::Path::new(dir).is_dir() {
            f.add(Level::Error, format!("origin directory {dir} does not exist"));
        }
    }
    match (&opts.state_url, env.get("SHAREGATE_EDGE_TOKEN")) {
        (None, _) => f.add(
            Level::Warning,
            "no SHAREGATE_STATE_URL: this edge learns of revocations only from pushes (and refuses everything once \
             its state is stale)",
        ),
        (Some(u), None) => f.add(
            Level::Error,
            format!("SHAREGATE_STATE_URL {u} is set but SHAREGATE_EDGE_TOKEN is not"),
        ),
        (Some(u), Some(_)) => {
            f.result("state URL", http_url("SHAREGATE_STATE_URL", u));
        }
    }
    f.print("edge")
}
