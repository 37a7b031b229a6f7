//! The names sharegate's parts agree on, written once: the headers the edge and the control plane exchange, the
//! edge's internal paths, the cache-tag prefixes purges match, the fixed bodies every edge sends, and where Fastly
//! keeps its settings. The edge adapters, the control plane and the tests use these constants instead of retyping
//! the literals, so renaming one is a one-line change that the compiler carries everywhere.
//!
//! Setting names live beside their parsers: [`crate::config::keys`] (the engine's), [`crate::adapter::keys`] (the
//! adapters') and [`crate::client::keys`] (where the client's address and country come from); they are re-exported
//! in [`settings`].

/// HTTP header names (lower case, as HTTP/2 writes them).
pub mod headers {
    /// On a state request: the generation the edge holds (the control plane answers with what is newer).
    pub const GENERATION: &str = "x-sharegate-generation";
    /// On a state request, `1`: a current edge wants a signed freshness message rather than a bare 304.
    pub const FRESHNESS: &str = "x-sharegate-freshness";
    /// On a state request: the edge's id (`SHAREGATE_EDGE_ID`), so the control plane can tell how long ago each edge
    /// last pulled (`sharegate_edge_state_age_seconds{edge}`).
    pub const EDGE_ID: &str = "x-sharegate-edge";
    /// The value of [`FRESHNESS`] that asks for the signed answer.
    pub const FRESHNESS_SIGNED: &str = "1";
    /// On a denial: the reason code (unless switched off with `SHAREGATE_REASON_HEADER=false`).
    pub const REASON: &str = "x-sharegate-reason";
    /// The response headers a browser script may read (`Access-Control-Expose-Headers`).
    pub const EXPOSED: &str = "x-sharegate-reason, content-length, content-range";
    /// The client's country as the test harness supplies it (believed only when the edge is told to).
    pub const TEST_COUNTRY: &str = "x-sharegate-country";
    /// The viewer id a trusted proxy in front of the control plane sets for `signed_in` / `invited` shares.
    pub const VIEWER: &str = "x-sharegate-viewer";
    /// On the Cloudflare worker's cached state answer: when it was fetched (unix milliseconds).
    pub const AT_MS: &str = "x-sharegate-at-ms";
    /// Cloudflare's purge-by-tag header: tags separated by commas.
    pub const CACHE_TAG: &str = "cache-tag";
    /// Fastly's (and the native edge's) purge key header: keys separated by spaces.
    pub const SURROGATE_KEY: &str = "surrogate-key";
}

/// The edge's internal paths. Asset paths never start with [`paths::INTERNAL_PREFIX`]: it carries no token, so the
/// engine would refuse it anyway, and nothing is shadowed.
pub mod paths {
    /// Prefix of every internal path.
    pub const INTERNAL_PREFIX: &str = "/_sharegate/";
    /// `GET`: what the edge holds (generation, state age, key ids, client sources), one shape on every edge.
    pub const STATUS: &str = "/_sharegate/status";
    /// `POST` (native edge, bearer): a pushed snapshot, delta or freshness message.
    pub const STATE: &str = "/_sharegate/state";
    /// `POST` (native edge, bearer): the signing keys, `id:state:hex,...`.
    pub const KEYS: &str = "/_sharegate/keys";
    /// `GET` (Fastly, local runs): answers once the app is up.
    pub const READY: &str = "/_sharegate/ready";
    /// Prefix of the Cloudflare worker's cache entries for state answers (`…/state-cache/v2/<generation|none>`).
    /// `v2`: since edges holding generation 0 say so, the entry for 0 can hold a freshness-only answer; workers of
    /// the previous version, which read `…/state-cache/0` while holding nothing, must never see it during a rollout.
    pub const STATE_CACHE_PREFIX: &str = "/_sharegate/state-cache/v2/";
}

/// Cache tags (Cloudflare) / surrogate keys (Fastly, native): what an allowed response is tagged with, and what a
/// purge names.
pub mod tags {
    use alloc::string::String;

    /// Prefix of an asset's tag: `sg-asset-<asset id>`.
    pub const ASSET_PREFIX: &str = "sg-asset-";
    /// Prefix of a share's tag: `sg-share-<share id>`.
    pub const SHARE_PREFIX: &str = "sg-share-";

    /// The tag of an asset.
    pub fn asset(id: &str) -> String {
        let mut s = String::with_capacity(ASSET_PREFIX.len() + id.len());
        s.push_str(ASSET_PREFIX);
        s.push_str(id);
        s
    }

    /// The tag of a share.
    pub fn share(id: &str) -> String {
        let mut s = String::with_capacity(SHARE_PREFIX.len() + id.len());
        s.push_str(SHARE_PREFIX);
        s.push_str(id);
        s
    }
}

/// Fixed JSON bodies every edge sends.
pub mod bodies {
    /// A setting could not be parsed: the edge serves nothing (500), and logs which setting (never its value).
    pub const MISCONFIGURED: &str = r#"{"error":"edge_misconfigured","status":500}"#;
    /// No origin answered an allowed request (503).
    pub const ORIGIN_UNAVAILABLE: &str = r#"{"error":"origin_unavailable","status":503}"#;
    /// The origin's playlist could not be rewritten (502).
    pub const BAD_PLAYLIST: &str = r#"{"error":"bad_playlist","status":502}"#;
}

/// Where the Fastly app finds its settings and state.
pub mod fastly {
    /// Config Store holding the plain settings (`SHAREGATE_ORIGIN`, `SHAREGATE_STATE_URL`, …).
    pub const CONFIG_STORE: &str = "sharegate_config";
    /// Secret Store holding the secrets.
    pub const SECRET_STORE: &str = "sharegate_secrets";
    /// KV store with a prepared state (bench builds).
    pub const STATE_KV_STORE: &str = "sharegate_state_kv";
    /// Settings read from the Secret Store, never from the Config Store (the secrets, and the one-key bundle of them).
    pub const SECRET_NAMES: [&str; 5] = [
        super::settings::SECRETS[0],
        super::settings::SECRETS[1],
        super::settings::SECRETS[2],
        super::settings::SECRETS[3],
        SECRETS_KEY,
    ];
    /// Config Store key holding every plain setting in one value (`NAME=value` lines): one lookup per request
    /// instead of one per setting. When present, the other Config Store keys are not read.
    pub const SETTINGS_KEY: &str = "SHAREGATE_SETTINGS";
    /// Secret Store entry holding every secret in one value (`NAME=value` lines). When present, the other Secret
    /// Store entries are not read.
    pub const SECRETS_KEY: &str = "SHAREGATE_SECRETS";
    /// Setting (`true`/`false`, default false): read the revocation state by shards (a head and one shard per
    /// request, `GET <state URL>/head` and `/shard/<bits>/<index>`) instead of whole.
    pub const STATE_SHARDS: &str = "SHAREGATE_STATE_SHARDS";
    /// Surrogate key on the app's state objects: purging it makes every POP fetch a whole snapshot.
    pub const STATE_SURROGATE_KEY: &str = "sg-edge-state";
    /// The backend that serves `SHAREGATE_STATE_URL` and `SHAREGATE_EVENTS_URL`.
    pub const CONTROL_PLANE_BACKEND: &str = "control_plane";

    /// The backend of the `i`-th origin of `SHAREGATE_ORIGIN` (`origin_0`, `origin_1`, …).
    pub fn origin_backend(i: usize) -> alloc::string::String {
        alloc::format!("origin_{i}")
    }
}

/// Every edge setting name, by the parser that reads it (see `docs/edge-config.md`).
pub mod settings {
    pub use crate::adapter::keys as adapter;
    pub use crate::client::keys as client;
    pub use crate::config::keys as engine;

    /// The secret settings: Worker secrets on Cloudflare, the Secret Store on Fastly, never printed anywhere.
    pub const SECRETS: [&str; 4] = [
        engine::SIGNING_KEYS,
        engine::STATE_KEY,
        engine::WATERMARK_KEY,
        adapter::EDGE_TOKEN,
    ];
}
