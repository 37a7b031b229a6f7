//! What the CDN adapters (Cloudflare Workers, Fastly Compute) share beyond the engine: their runtime settings, read
//! by the same [`ConfigSource`] as the engine's, and small pure helpers for the response side (byte ranges, the
//! client facts a trusted test proxy may supply, the fixed error bodies).
//!
//! The native server takes the same settings as command-line flags; on a CDN they come from `[vars]`/secrets
//! (Cloudflare) or the Config/Secret Store (Fastly), so one parser keeps their meaning identical.

use crate::config::{ConfigError, ConfigSource, flag, num, url, valid_url};
use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// Setting names of the adapters (documented in `docs/edge.md`).
pub mod keys {
    /// Origin base URLs, comma separated, tried in order (`https://origin.example.com`).
    pub const ORIGIN: &str = "SHAREGATE_ORIGIN";
    /// The control plane's state endpoint (`https://cp.example.com/v1/edge/state`).
    pub const STATE_URL: &str = "SHAREGATE_STATE_URL";
    /// The control plane's events endpoint (`https://cp.example.com/v1/edge/events`).
    pub const EVENTS_URL: &str = "SHAREGATE_EVENTS_URL";
    /// Bearer credential for the state and events endpoints. Secret.
    pub const EDGE_TOKEN: &str = "SHAREGATE_EDGE_TOKEN";
    /// Milliseconds a state is used before it is refreshed (1000).
    pub const STATE_REFRESH_MS: &str = "SHAREGATE_STATE_REFRESH_MS";
    /// Seconds segments stay in the CDN cache (86400).
    pub const SEGMENT_TTL: &str = "SHAREGATE_SEGMENT_TTL";
    /// Seconds untokenized origin playlists stay in the CDN cache (1).
    pub const PLAYLIST_TTL: &str = "SHAREGATE_PLAYLIST_TTL";
    /// Events held before a batch is sent (100).
    pub const EVENTS_BATCH: &str = "SHAREGATE_EVENTS_BATCH";
    /// true/false (false). Take the client address from `X-Forwarded-For` and the country from
    /// `X-Sharegate-Country`: only for local runtimes behind a test harness, never on a real CDN.
    pub const TRUST_FORWARDED: &str = "SHAREGATE_TRUST_FORWARDED";
}

/// The adapter's runtime settings.
#[derive(Clone)]
pub struct AdapterSettings {
    /// Origin base URLs (no trailing `/`), tried in order.
    pub origins: Vec<String>,
    /// The state endpoint, if any.
    pub state_url: Option<String>,
    /// The events endpoint, if any.
    pub events_url: Option<String>,
    /// Bearer credential for the control plane.
    pub edge_token: Option<String>,
    /// Freshness window of the state, ms.
    pub state_refresh_ms: u32,
    /// CDN cache lifetime of segments, s.
    pub segment_ttl: u32,
    /// CDN cache lifetime of untokenized origin playlists, s.
    pub playlist_ttl: u32,
    /// Events held before a batch is sent.
    pub events_batch: usize,
    /// Trust `X-Forwarded-For` / `X-Sharegate-Country` (local tests only).
    pub trust_forwarded: bool,
}

impl core::fmt::Debug for AdapterSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AdapterSettings")
            .field("origins", &self.origins)
            .field("state_url", &self.state_url)
            .field("events_url", &self.events_url)
            .field("edge_token", &self.edge_token.as_ref().map(|_| "<set>"))
            .field("state_refresh_ms", &self.state_refresh_ms)
            .field("segment_ttl", &self.segment_ttl)
            .field("playlist_ttl", &self.playlist_ttl)
            .field("events_batch", &self.events_batch)
            .field("trust_forwarded", &self.trust_forwarded)
            .finish()
    }
}

impl AdapterSettings {
    /// Parse the adapter settings from `src` (the same source as [`crate::EdgeConfig::from_source`]).
    pub fn from_source(src: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let mut origins = Vec::new();
        for o in src
            .get(keys::ORIGIN)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
        {
            if !valid_url(o) {
                return Err(ConfigError {
                    key: keys::ORIGIN,
                    problem: "origins are http:// or https:// URLs, comma separated",
                });
            }
            origins.push(o.trim_end_matches('/').to_string());
        }
        if origins.is_empty() {
            return Err(ConfigError {
                key: keys::ORIGIN,
                problem: "not set",
            });
        }
        let trust_forwarded = flag(src, keys::TRUST_FORWARDED, false)?;
        let state_refresh_ms = num(src, keys::STATE_REFRESH_MS, 1000u32)?;
        if state_refresh_ms == 0 {
            return Err(ConfigError {
                key: keys::STATE_REFRESH_MS,
                problem: "must be at least 1",
            });
        }
        Ok(AdapterSettings {
            origins,
            state_url: url(src, keys::STATE_URL)?,
            events_url: url(src, keys::EVENTS_URL)?,
            edge_token: src.get(keys::EDGE_TOKEN).filter(|t| !t.is_empty()),
            state_refresh_ms,
            segment_ttl: num(src, keys::SEGMENT_TTL, 86_400)?,
            playlist_ttl: num(src, keys::PLAYLIST_TTL, 1)?,
            events_batch: num(src, keys::EVENTS_BATCH, 100usize)?.clamp(1, crate::events::EventBatch::CAPACITY),
            trust_forwarded,
        })
    }
}

pub use crate::response::{parse_range, try_next_origin};

pub use crate::client::country_code;

/// The path and query of a request target, absolute (`http://host/path?q`) or origin-form (`/path?q`), untouched:
/// no decoding and no dot-segment resolution (the engine refuses `..` and `%2e%2e` itself). A fragment is dropped.
pub fn split_target(uri: &str) -> (&str, Option<&str>) {
    let target = if uri.starts_with('/') {
        uri
    } else {
        let after_scheme = uri.split_once("://").map_or(uri, |(_, r)| r);
        after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
    };
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    }
}

/// The body of `GET /_sharegate/status`, one shape on every edge: what the edge holds, for support (key ids and
/// states, never key material). `state_as_of` is the held state's signed as-of time and `now` the edge's clock (unix
/// seconds); the age shown is the one the engine decides on (see `held`). `extra` adds runtime-specific numeric
/// fields.
pub fn status_json(
    runtime: &str,
    generation: Option<u64>,
    state_as_of: Option<u64>,
    now: u64,
    keys: &sharegate_shared::keys::KeyRing,
    extra: &[(&str, u64)],
) -> String {
    use core::fmt::Write;
    let opt = |v: Option<u64>| v.map_or_else(|| "null".to_string(), |v| v.to_string());
    let mut out = alloc::format!(
        r#"{{"runtime":"{runtime}","generation":{},"state_as_of":{},"state_age_s":{},"keys":["#,
        opt(generation),
        opt(state_as_of),
        opt(state_as_of.map(|t| now.saturating_sub(t)))
    );
    for (i, k) in keys.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, r#"{sep}{{"id":{},"state":"{}"}}"#, k.id, k.state.as_str());
    }
    out.push(']');
    for (name, value) in extra {
        let _ = write!(out, r#","{name}":{value}"#);
    }
    out.push('}');
    out
}

/// A status body (from [`status_json`]) with the edge's trusted client sources added: `client_ip_source`,
/// `country_source` (each a short name such as `peer`, `header:cf-ipcountry`, `cf-connecting-ip`, `none`) and
/// `country_rules` (`enforced`, `refused`: no source, such tokens get `geo_unavailable`, or `lenient`). Support reads
/// here why a geo- or IP-bound link behaves as it does.
pub fn with_client_sources(mut status: String, client_ip: &str, country: &str, country_rules: &str) -> String {
    use core::fmt::Write;
    if status.ends_with('}') {
        status.pop();
        // The names are ours (fixed strings and validated header names): no escaping needed.
        let _ = write!(
            status,
            r#","client_ip_source":"{client_ip}","country_source":"{country}","country_rules":"{country_rules}"}}"#
        );
    }
    status
}

impl AdapterSettings {
    /// Where a CDN adapter takes the client's address and country from, as named in its status: the platform's
    /// (named by the adapter) or, with [`AdapterSettings::trust_forwarded`], the test harness's headers.
    pub fn client_sources(
        &self,
        platform_ip: &'static str,
        platform_country: &'static str,
    ) -> (&'static str, &'static str) {
        if self.trust_forwarded {
            (
                "header:x-forwarded-for (test harness)",
                // The harness's country header, named as `contract::headers::TEST_COUNTRY`.
                "header:x-sharegate-country (test harness)",
            )
        } else {
            (platform_ip, platform_country)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn settings_defaults_and_errors() {
        let src: &[(&str, &str)] = &[(keys::ORIGIN, "https://a.example.com/, http://127.0.0.1:9000")];
        let s = AdapterSettings::from_source(&src).unwrap();
        assert_eq!(s.origins, ["https://a.example.com", "http://127.0.0.1:9000"]);
        assert_eq!(s.state_refresh_ms, 1000);
        assert!(!s.trust_forwarded);
        assert_eq!(s.events_batch, 100);
        let src: &[(&str, &str)] = &[];
        assert_eq!(AdapterSettings::from_source(&src).unwrap_err().key, keys::ORIGIN);
        for (k, v) in [
            (keys::ORIGIN, "ftp://x"),
            (keys::STATE_URL, "cp.example.com"),
            (keys::STATE_REFRESH_MS, "0"),
            (keys::TRUST_FORWARDED, "perhaps"),
            (keys::SEGMENT_TTL, "-5"),
        ] {
            let src: &[(&str, &str)] = &[(k, v), (keys::ORIGIN, "https://o.example.com")];
            assert_eq!(AdapterSettings::from_source(&src).unwrap_err().key, k, "{k}={v}");
        }
        let src: &[(&str, &str)] = &[(keys::ORIGIN, "https://o"), (keys::EDGE_TOKEN, "sekrit-token")];
        let d = alloc::format!("{:?}", AdapterSettings::from_source(&src).unwrap());
        assert!(!d.contains("sekrit"), "{d}");
    }

    #[test]
    fn targets_stay_verbatim() {
        assert_eq!(
            split_target("http://h:8787/t/x/demo/../a.ts?sg=1"),
            ("/t/x/demo/../a.ts", Some("sg=1"))
        );
        assert_eq!(split_target("https://h/%2e%2e/x\\y"), ("/%2e%2e/x\\y", None));
        assert_eq!(split_target("https://h"), ("/", None));
        assert_eq!(split_target("https://h/a#frag"), ("/a", None));
        assert_eq!(split_target("/only/path?q"), ("/only/path", Some("q")));
    }

    #[test]
    fn status_shape() {
        let ring = crate::config::parse_signing_keys(
            "1:active:1111111111111111111111111111111111111111111111111111111111111111",
            60,
        )
        .unwrap();
        let j = status_json("native", Some(7), None, 100, &ring, &[("events_pending", 2)]);
        assert_eq!(
            j,
            r#"{"runtime":"native","generation":7,"state_as_of":null,"state_age_s":null,"keys":[{"id":1,"state":"active"}],"events_pending":2}"#
        );
        let j = status_json("fastly", Some(7), Some(90), 100, &ring, &[]);
        assert!(j.contains(r#""state_as_of":90,"state_age_s":10,"#), "{j}");
        assert!(!j.contains("1111"));
    }

    #[test]
    fn client_sources_in_the_status() {
        let s = with_client_sources(r#"{"runtime":"x"}"#.into(), "peer", "none", "refused");
        assert_eq!(
            s,
            r#"{"runtime":"x","client_ip_source":"peer","country_source":"none","country_rules":"refused"}"#
        );
        let src: &[(&str, &str)] = &[(keys::ORIGIN, "https://o.example.com")];
        let settings = AdapterSettings::from_source(&src).unwrap();
        assert_eq!(
            settings.client_sources("cf-connecting-ip", "cf.country"),
            ("cf-connecting-ip", "cf.country")
        );
    }
}
