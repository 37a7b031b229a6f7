//! The edge's settings, parsed once from key/value strings by every adapter.
//!
//! Cloudflare passes `[vars]` and secrets from `worker::Env`, Fastly its config and secret stores, the native edge the
//! process environment, and tests a map: all go through [`EdgeConfig::from_source`], so a setting means the same
//! thing on every runtime. Secrets (signing keys, the state key, the watermark key) are read here and never printed.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use sharegate_shared::keys::{KeyRing, KeyState, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;

/// Where settings come from: one lookup by name.
pub trait ConfigSource {
    /// The value of `key`, if set.
    fn get(&self, key: &str) -> Option<String>;
}

impl<S: ConfigSource + ?Sized> ConfigSource for &S {
    fn get(&self, key: &str) -> Option<String> {
        (**self).get(key)
    }
}

impl ConfigSource for alloc::collections::BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        alloc::collections::BTreeMap::get(self, key).cloned()
    }
}

impl ConfigSource for [(&str, &str)] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
    }
}

/// A setting that could not be parsed. Names the setting, never its value (it may be secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's name.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl core::error::Error for ConfigError {}

/// A number setting (`default` when unset). Every edge setting that is a number is read by this one function, so
/// they accept and refuse the same spellings everywhere.
pub fn num<T: core::str::FromStr>(src: &dyn ConfigSource, key: &'static str, default: T) -> Result<T, ConfigError> {
    match src.get(key) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|_| ConfigError {
            key,
            problem: "must be a non-negative integer in range",
        }),
    }
}

/// A true/false setting (`default` when unset): `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`.
pub fn flag(src: &dyn ConfigSource, key: &'static str, default: bool) -> Result<bool, ConfigError> {
    match src.get(key).as_deref().map(str::trim) {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(ConfigError {
            key,
            problem: "must be true or false",
        }),
    }
}

/// An `http://` or `https://` URL setting, trimmed; `None` when unset or empty.
pub fn url(src: &dyn ConfigSource, key: &'static str) -> Result<Option<String>, ConfigError> {
    match src.get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) if valid_url(&v) => Ok(Some(v)),
        Some(_) => Err(ConfigError {
            key,
            problem: "must be an http:// or https:// URL",
        }),
    }
}

/// Whether `u` is an `http://` or `https://` URL with a host and nothing but visible ASCII.
pub fn valid_url(u: &str) -> bool {
    let rest = u.strip_prefix("https://").or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split('/').next().unwrap_or("");
        !host.is_empty() && r.bytes().all(|b| b.is_ascii_graphic())
    })
}

/// What to do when the revocation state is older than its hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StalePolicy {
    /// Refuse every request (`state_stale`, 503): the safe default for paid content.
    FailClosed,
    /// Keep deciding on tokens alone and report it in the event stream: for free content.
    FailOpen,
}

/// Two-tier tokens: the share token opens the multivariant playlist, the edge mints session tokens for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwoTier {
    /// Lifetime of segment tokens in live (reloaded) media playlists, seconds. VOD media playlists are fetched once,
    /// so their segment tokens live as long as the share token (playback never breaks while the share is valid).
    pub session_ttl: u32,
    /// Bind session tokens to the client's IPv4 network of this many bits (0: no binding).
    pub ipv4_prefix: u8,
    /// Bind session tokens to the client's IPv6 network of this many bits (0: no binding).
    pub ipv6_prefix: u8,
}

/// Everything the engine needs besides the request, `now` and the revocation state.
#[derive(Clone)]
pub struct EdgeConfig {
    /// Signing keys (next, active, retiring). The active one also mints session tokens.
    pub keys: KeyRing,
    /// Clock leeway and maximum token lifetime.
    pub policy: Policy,
    /// Key of the revocation state's MAC.
    pub state_key: Option<StateKey>,
    /// Key of the A/B watermark hash.
    pub watermark_key: Option<SecretKey>,
    /// Query parameter that carries a token (`sg`).
    pub token_param: String,
    /// Cookie that carries a token (`sg_token`).
    pub cookie_name: String,
    /// File name of multivariant playlists (`master.m3u8`); other `.m3u8` files are media playlists.
    pub multivariant_name: String,
    /// Send the reason code in an `x-sharegate-reason` header on denials (the body always has it).
    pub reason_header: bool,
    /// `Access-Control-Allow-Origin` on every response, denials included.
    pub cors_origin: String,
    /// Two-tier tokens, if enabled.
    pub two_tier: Option<TwoTier>,
    /// `max-age` of tokenized playlists, which are always `private`.
    pub playlist_max_age: u32,
    /// This edge's name in events.
    pub edge_id: String,
    /// Seconds after which the revocation state is stale.
    pub state_max_age: u32,
    /// What to do then.
    pub stale_policy: StalePolicy,
    /// Whether this edge has a source for the client's country at all. Not a setting: the adapter says. Cloudflare
    /// and Fastly always do (their platform's geo data); the native edge only with a trusted country header from a
    /// proxy in front of it. `true` as parsed; the native edge sets it.
    pub has_country_source: bool,
    /// With no country source, decide country rules by the rule of `docs/token-format.md` §8 (an unknown country
    /// fails an allow list and passes a deny list) instead of refusing such tokens with `geo_unavailable`. Off by
    /// default: that rule would serve a deny-listed link to everyone and refuse an allow-listed one to everyone.
    pub geo_lenient: bool,
}

impl fmt::Debug for EdgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<_> = self.keys.iter().map(|k| (k.id, k.state.as_str())).collect();
        f.debug_struct("EdgeConfig")
            .field("keys", &ids)
            .field("policy", &self.policy)
            .field("state_key", &self.state_key.as_ref().map(|_| "<set>"))
            .field("watermark_key", &self.watermark_key.as_ref().map(|_| "<set>"))
            .field("token_param", &self.token_param)
            .field("cookie_name", &self.cookie_name)
            .field("multivariant_name", &self.multivariant_name)
            .field("reason_header", &self.reason_header)
            .field("cors_origin", &self.cors_origin)
            .field("two_tier", &self.two_tier)
            .field("playlist_max_age", &self.playlist_max_age)
            .field("edge_id", &self.edge_id)
            .field("state_max_age", &self.state_max_age)
            .field("stale_policy", &self.stale_policy)
            .field("has_country_source", &self.has_country_source)
            .field("geo_lenient", &self.geo_lenient)
            .finish()
    }
}

/// Setting names, as documented in `docs/edge.md`.
pub mod keys {
    /// `id:state:hex` entries, comma separated; state is next, active or retiring. Secret.
    pub const SIGNING_KEYS: &str = "SHAREGATE_SIGNING_KEYS";
    /// 64 hex digits. Secret.
    pub const STATE_KEY: &str = "SHAREGATE_STATE_KEY";
    /// 64 hex digits. Secret.
    pub const WATERMARK_KEY: &str = "SHAREGATE_WATERMARK_KEY";
    /// Seconds (60).
    pub const LEEWAY: &str = "SHAREGATE_LEEWAY";
    /// Seconds (86400).
    pub const MAX_TTL: &str = "SHAREGATE_MAX_TTL";
    /// Name (sg).
    pub const TOKEN_PARAM: &str = "SHAREGATE_TOKEN_PARAM";
    /// Name (sg_token).
    pub const COOKIE_NAME: &str = "SHAREGATE_COOKIE_NAME";
    /// File name (master.m3u8).
    pub const MULTIVARIANT_NAME: &str = "SHAREGATE_MULTIVARIANT_NAME";
    /// true/false (true).
    pub const REASON_HEADER: &str = "SHAREGATE_REASON_HEADER";
    /// Origin or * (*).
    pub const CORS_ORIGIN: &str = "SHAREGATE_CORS_ORIGIN";
    /// true/false (false).
    pub const TWO_TIER: &str = "SHAREGATE_TWO_TIER";
    /// Seconds (300).
    pub const SESSION_TTL: &str = "SHAREGATE_SESSION_TTL";
    /// Bits (24; 0 disables).
    pub const SESSION_IPV4_PREFIX: &str = "SHAREGATE_SESSION_IPV4_PREFIX";
    /// Bits (48; 0 disables).
    pub const SESSION_IPV6_PREFIX: &str = "SHAREGATE_SESSION_IPV6_PREFIX";
    /// Seconds (2).
    pub const PLAYLIST_MAX_AGE: &str = "SHAREGATE_PLAYLIST_MAX_AGE";
    /// Name (edge).
    pub const EDGE_ID: &str = "SHAREGATE_EDGE_ID";
    /// Seconds (30).
    pub const STATE_MAX_AGE: &str = "SHAREGATE_STATE_MAX_AGE";
    /// fail_closed or fail_open (fail_closed).
    pub const STALE_POLICY: &str = "SHAREGATE_STALE_POLICY";
    /// true/false (false): with no country source, apply the lenient rule of `docs/token-format.md` §8.
    pub const GEO_LENIENT: &str = "SHAREGATE_GEO_LENIENT";
}

fn parse_hex32(key: &'static str, v: &str) -> Result<[u8; 32], ConfigError> {
    SecretKey::from_hex(v).map(|k| *k.expose()).map_err(|_| ConfigError {
        key,
        problem: "must be 64 hex digits",
    })
}

/// Parse `id:state:hex[,id:state:hex...]` into a key ring.
pub fn parse_signing_keys(v: &str, max_ttl: u32) -> Result<KeyRing, ConfigError> {
    let err = |problem| ConfigError {
        key: keys::SIGNING_KEYS,
        problem,
    };
    let mut ring = KeyRing::new(max_ttl);
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(id), Some(state), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(err("entries are id:state:hex"));
        };
        let id: u16 = id.parse().map_err(|_| err("key id must be 0..=65535"))?;
        let state = match state {
            "next" => KeyState::Next,
            "active" => KeyState::Active,
            // The retirement time only matters to whoever removes keys (the control plane); an edge just verifies.
            "retiring" => KeyState::Retiring { since: 0 },
            _ => return Err(err("state must be next, active or retiring")),
        };
        let secret = SecretKey::from_hex(hex).map_err(|_| err("secret must be 64 hex digits"))?;
        ring.insert(id, state, secret)
            .map_err(|_| err("duplicate id, or a second active/next key"))?;
    }
    if ring.iter().next().is_none() {
        return Err(err("no keys"));
    }
    Ok(ring)
}

impl EdgeConfig {
    /// Parse every setting from `src`, with the documented defaults.
    pub fn from_source(src: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let text = |key: &str, default: &str| src.get(key).unwrap_or_else(|| default.to_string());
        let policy = Policy {
            leeway: num(src, keys::LEEWAY, 60)?,
            max_ttl: num(src, keys::MAX_TTL, 86_400)?,
        };
        let signing = src.get(keys::SIGNING_KEYS).ok_or(ConfigError {
            key: keys::SIGNING_KEYS,
            problem: "not set",
        })?;
        let keys = parse_signing_keys(&signing, policy.max_ttl)?;
        let state_key = src
            .get(keys::STATE_KEY)
            .map(|v| parse_hex32(keys::STATE_KEY, &v).map(StateKey::new))
            .transpose()?;
        let watermark_key = src
            .get(keys::WATERMARK_KEY)
            .map(|v| parse_hex32(keys::WATERMARK_KEY, &v).map(SecretKey::new))
            .transpose()?;
        let two_tier = if flag(src, keys::TWO_TIER, false)? {
            let t = TwoTier {
                session_ttl: num(src, keys::SESSION_TTL, 300)?,
                ipv4_prefix: num(src, keys::SESSION_IPV4_PREFIX, 24)?,
                ipv6_prefix: num(src, keys::SESSION_IPV6_PREFIX, 48)?,
            };
            if t.ipv4_prefix > 32 || t.ipv6_prefix > 128 {
                return Err(ConfigError {
                    key: keys::SESSION_IPV4_PREFIX,
                    problem: "prefix longer than the address",
                });
            }
            if t.session_ttl == 0 {
                return Err(ConfigError {
                    key: keys::SESSION_TTL,
                    problem: "must be at least 1",
                });
            }
            if keys.active().is_none() {
                return Err(ConfigError {
                    key: keys::SIGNING_KEYS,
                    problem: "two-tier tokens need an active key to mint session tokens",
                });
            }
            Some(t)
        } else {
            None
        };
        let stale_policy = match text(keys::STALE_POLICY, "fail_closed").as_str() {
            "fail_closed" => StalePolicy::FailClosed,
            "fail_open" => StalePolicy::FailOpen,
            _ => {
                return Err(ConfigError {
                    key: keys::STALE_POLICY,
                    problem: "must be fail_closed or fail_open",
                });
            }
        };
        let token_param = text(keys::TOKEN_PARAM, "sg");
        let cookie_name = text(keys::COOKIE_NAME, "sg_token");
        let valid_name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name(&token_param) || !valid_name(&cookie_name) {
            return Err(ConfigError {
                key: keys::TOKEN_PARAM,
                problem: "token parameter and cookie names are [A-Za-z0-9_]+",
            });
        }
        Ok(EdgeConfig {
            keys,
            policy,
            state_key,
            watermark_key,
            token_param,
            cookie_name,
            multivariant_name: text(keys::MULTIVARIANT_NAME, "master.m3u8"),
            reason_header: flag(src, keys::REASON_HEADER, true)?,
            cors_origin: text(keys::CORS_ORIGIN, "*"),
            two_tier,
            playlist_max_age: num(src, keys::PLAYLIST_MAX_AGE, 2)?,
            edge_id: text(keys::EDGE_ID, "edge"),
            state_max_age: num(src, keys::STATE_MAX_AGE, 30)?,
            stale_policy,
            has_country_source: true,
            geo_lenient: flag(src, keys::GEO_LENIENT, false)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::format;

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn defaults_and_overrides() {
        let keys = format!("1:active:{K1},2:next:{K2}");
        let src: &[(&str, &str)] = &[(keys::SIGNING_KEYS, &keys)];
        let c = EdgeConfig::from_source(&src).unwrap();
        assert_eq!(c.token_param, "sg");
        assert_eq!(c.policy, Policy::default());
        assert!(c.two_tier.is_none());
        assert_eq!(c.keys.active().unwrap().id, 1);
        assert_eq!(c.stale_policy, StalePolicy::FailClosed);
        assert!(c.has_country_source && !c.geo_lenient);
        let src: &[(&str, &str)] = &[
            (keys::SIGNING_KEYS, &keys),
            (keys::TWO_TIER, "true"),
            (keys::SESSION_TTL, "120"),
            (keys::LEEWAY, "5"),
            (keys::REASON_HEADER, "off"),
            (keys::GEO_LENIENT, "true"),
        ];
        let c = EdgeConfig::from_source(&src).unwrap();
        assert!(c.geo_lenient);
        assert_eq!(c.two_tier.unwrap().session_ttl, 120);
        assert_eq!(c.policy.leeway, 5);
        assert!(!c.reason_header);
    }

    #[test]
    fn edge_errors_are_errors() {
        // So callers can use `?` into anyhow or thiserror instead of formatting them by hand.
        fn is_error<E: core::error::Error + Send + Sync + 'static>() {}
        is_error::<ConfigError>();
        is_error::<crate::held::OfferError>();
        is_error::<crate::hls::PlaylistError>();
    }

    #[test]
    fn errors_name_the_setting_not_the_secret() {
        let bad = "1:active:nothex";
        let src: &[(&str, &str)] = &[(keys::SIGNING_KEYS, bad)];
        let e = EdgeConfig::from_source(&src).unwrap_err();
        assert_eq!(e.key, keys::SIGNING_KEYS);
        assert!(!format!("{e}").contains("nothex"));
        let keys_ok = format!("1:active:{K1}");
        for (k, v) in [
            (keys::LEEWAY, "-1"),
            (keys::TWO_TIER, "maybe"),
            (keys::STATE_KEY, "abc"),
            (keys::STALE_POLICY, "sometimes"),
            (keys::TOKEN_PARAM, "a b"),
            (keys::GEO_LENIENT, "sometimes"),
        ] {
            let src: &[(&str, &str)] = &[(keys::SIGNING_KEYS, &keys_ok), (k, v)];
            assert!(EdgeConfig::from_source(&src).is_err(), "{k}={v}");
        }
        let src: &[(&str, &str)] = &[];
        assert_eq!(EdgeConfig::from_source(&src).unwrap_err().problem, "not set");
        let dup = format!("1:active:{K1},2:active:{K2}");
        assert!(parse_signing_keys(&dup, 60).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let keys = format!("1:active:{K1}");
        let src: &[(&str, &str)] = &[(keys::SIGNING_KEYS, &keys), (keys::STATE_KEY, K2)];
        let c = EdgeConfig::from_source(&src).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("1111") && !d.contains("2222"), "{d}");
    }
}
