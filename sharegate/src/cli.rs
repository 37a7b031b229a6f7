//! The command line: what `sharegate` accepts, and how the API commands' flags become the service's own requests.
//!
//! The subcommands, flags, defaults and accepted values are a contract with scripts (README, "The `sharegate`
//! command"): renaming one breaks someone's automation. The value enums here mirror the library's wire enums
//! ([`RevocationKind`], [`Role`], [`Audience`]) because the library does not depend on clap; the `From` impls are the
//! one place the two meet, and the tests pin every wire name.

use clap::{Args, Parser, Subcommand, ValueEnum};
use sharegate_control_plane::service::audit_events::AuditQuery;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::entitlement::{Access, AssetAccess, InvalidateRequest};
use sharegate_control_plane::service::observe::diagnose::DiagnoseRequest;
use sharegate_control_plane::service::revocations::{RevocationKind, RevocationRequest};
use sharegate_control_plane::service::shares::{Audience, ShareRequest};
use sharegate_control_plane::service::{ApiKeyRequest, LinkRequest};
use sharegate_shared::token::Policy;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "sharegate",
    version,
    about = "Secure share links for HLS video, enforced at the CDN edge"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Mint a link for the demo asset with a throwaway key, then show what the edge decides for it and for
    /// tampered, expired, out-of-scope and traversal requests.
    Demo(DemoArgs),
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
    /// Set an asset's access policy (role admin): `public`, `viewer` or `entitled` (docs/entitlement.md).
    Access(ClientAccess),
    /// Drop a viewer's cached entitlement decisions on every replica (roles responder, entitlement), optionally
    /// revoking (and purging) their tokens.
    Invalidate(ClientInvalidate),
    /// Validate a server's settings and secrets without starting it (for `ExecStartPre=`, init containers, CI):
    /// exit 0 when it would start, 1 with a line per problem.
    #[command(subcommand)]
    CheckConfig(CheckConfigCmd),
    /// Preflight of a running deployment (role admin): store durability, clocks, key ring, every edge's state, and
    /// an end-to-end revocation canary. Exit 0 healthy, 1 not; `--json` for scripts.
    Doctor(DoctorArgs),
    /// GET a URL and exit 0 on a 2xx answer, 1 otherwise: a container health check for images without a shell.
    Probe(ProbeArgs),
    /// Run the native edge server. Its settings come from SHAREGATE_* environment variables
    /// (docs/edge-config.md): SHAREGATE_SIGNING_KEYS is required; a flag given replaces its setting.
    Edge(EdgeArgs),
}

#[derive(Args)]
pub struct DemoArgs {
    /// The CDN base URL to print links under.
    #[arg(long, default_value = "http://127.0.0.1:7701")]
    pub base_url: String,
    /// Also run a native edge serving the demo asset, so the links play (ffplay, ffprobe, a browser with hls.js).
    #[arg(long)]
    pub serve: bool,
    /// Address of the demo edge.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub edge_addr: SocketAddr,
    /// Directory holding the demo asset (`<dir>/demo/master.m3u8`).
    #[arg(long, default_value = "deploy/demo-media")]
    pub media: PathBuf,
}

/// `sharegate serve`'s settings. Each flag may come from the environment variable named beside it (containers,
/// systemd `EnvironmentFile=`, Kubernetes ConfigMaps); a flag given wins. docs/deploy.md lists them all.
#[derive(Args, Clone)]
pub struct ServeArgs {
    /// Data directory (embedded store, generated secret files).
    #[arg(long, env = "SHAREGATE_DATA_DIR", default_value = ".sharegate")]
    pub data_dir: PathBuf,
    /// API address.
    #[arg(long, env = "SHAREGATE_API_ADDR", default_value = "127.0.0.1:7700")]
    pub api_addr: SocketAddr,
    /// Store: empty for the embedded store, or redis://, rediss:// or redis+sentinel://… (docs/deploy.md); also
    /// SHAREGATE_STORE_FILE, since a Redis URL may carry a password.
    #[arg(long, env = "SHAREGATE_STORE", default_value = "", hide_env_values = true)]
    pub store: String,
    /// Base URL of the edge, used in link URLs.
    #[arg(long, env = "SHAREGATE_EDGE_URL", default_value = "http://127.0.0.1:7701")]
    pub edge_url: String,
    /// A native edge to push revocations to (repeatable; comma separated in the variable).
    #[arg(long = "push-edge", env = "SHAREGATE_PUSH_EDGES", value_delimiter = ',')]
    pub push_edges: Vec<String>,
    /// Public base URL of this API, used in share-page links [default: http://<api-addr>].
    #[arg(long, env = "SHAREGATE_PUBLIC_URL")]
    pub public_url: Option<String>,
}

#[derive(Args)]
pub struct DevArgs {
    /// Data directory (embedded store, secret files).
    #[arg(long, default_value = ".sharegate")]
    pub data_dir: PathBuf,
    /// API address.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub api_addr: SocketAddr,
    /// Edge address.
    #[arg(long, default_value = "127.0.0.1:7701")]
    pub edge_addr: SocketAddr,
    /// Origin of the media (a directory or an http(s) URL); the demo asset by default.
    #[arg(long, default_value = "deploy/demo-media")]
    pub origin: String,
}

#[derive(Args)]
pub struct ApiArgs {
    /// Control-plane URL.
    #[arg(long, default_value = "http://127.0.0.1:7700")]
    pub api: String,
}

#[derive(Args)]
pub struct ClientMint {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Asset id.
    #[arg(long)]
    pub asset: String,
    /// Lifetime, seconds.
    #[arg(long)]
    pub ttl: Option<u32>,
    #[arg(long)]
    pub viewer: Option<String>,
    #[arg(long)]
    pub share: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long)]
    pub campaign: Option<String>,
    /// Client IP binding.
    #[arg(long)]
    pub ip: Option<String>,
}

/// What `sharegate revoke --kind` names; the wire names of [`RevocationKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Token,
    Share,
    Viewer,
    Session,
    Asset,
    Campaign,
    // clap would spell it `key-id`; the API and the documented command say `key_id`.
    #[value(name = "key_id")]
    KeyId,
    Global,
}

impl From<KindArg> for RevocationKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Token => RevocationKind::Token,
            KindArg::Share => RevocationKind::Share,
            KindArg::Viewer => RevocationKind::Viewer,
            KindArg::Session => RevocationKind::Session,
            KindArg::Asset => RevocationKind::Asset,
            KindArg::Campaign => RevocationKind::Campaign,
            KindArg::KeyId => RevocationKind::KeyId,
            KindArg::Global => RevocationKind::Global,
        }
    }
}

#[derive(Args)]
pub struct ClientRevoke {
    #[command(flatten)]
    pub api: ApiArgs,
    /// What to revoke.
    #[arg(long, value_enum)]
    pub kind: KindArg,
    /// The scope id (hex token id for tokens).
    #[arg(long)]
    pub id: Option<String>,
    /// A token or link URL (for --kind token).
    #[arg(long)]
    pub token: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Idempotency key, so a retried command does not revoke twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Also purge the CDN caches (needs CDN purgers configured on the control plane).
    #[arg(long)]
    pub purge: bool,
}

#[derive(Args)]
pub struct ClientAccess {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The asset.
    pub asset: String,
    /// Who may get a token for it.
    #[arg(long, value_enum)]
    pub access: AccessArg,
    /// The asset's own entitlement backend, instead of the deployment's.
    #[arg(long)]
    pub entitlement_url: Option<String>,
}

impl ClientAccess {
    pub fn request(&self) -> AssetAccess {
        AssetAccess {
            access: self.access.into(),
            entitlement_url: self.entitlement_url.clone(),
        }
    }
}

#[derive(Args)]
pub struct ClientInvalidate {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The viewer whose decisions are dropped.
    #[arg(long)]
    pub viewer: String,
    /// Only this asset's (default: every asset's).
    #[arg(long)]
    pub asset: Option<String>,
    /// Also revoke the viewer's live tokens (for the asset, if given) at the edge.
    #[arg(long)]
    pub revoke: bool,
    /// With --revoke: purge the CDN caches too.
    #[arg(long, requires = "revoke")]
    pub purge: bool,
    #[arg(long)]
    pub reason: Option<String>,
    /// Idempotency key, so a retried command does not revoke twice.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

impl ClientInvalidate {
    pub fn request(&self) -> InvalidateRequest {
        InvalidateRequest {
            viewer: self.viewer.clone(),
            asset: self.asset.clone(),
            revoke: self.revoke,
            purge: self.purge,
            reason: self.reason.clone(),
        }
    }
}

/// What `sharegate apikeys --role` names; the wire names of [`Role`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    Minter,
    Responder,
    Admin,
    Auditor,
    Entitlement,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Minter => Role::Minter,
            RoleArg::Responder => Role::Responder,
            RoleArg::Admin => Role::Admin,
            RoleArg::Auditor => Role::Auditor,
            RoleArg::Entitlement => Role::Entitlement,
        }
    }
}

#[derive(Args)]
pub struct ClientApikeys {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The new key's role.
    #[arg(long, value_enum)]
    pub role: RoleArg,
    #[arg(long)]
    pub label: Option<String>,
}

/// What `sharegate share --audience` names; the wire names of [`Audience`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AudienceArg {
    Public,
    // clap would spell it `signed-in`; the API says `signed_in`.
    #[value(name = "signed_in")]
    SignedIn,
    Invited,
}

/// What `sharegate share --access` names; the wire names of [`Access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccessArg {
    Public,
    Viewer,
    Entitled,
}

impl From<AccessArg> for Access {
    fn from(a: AccessArg) -> Self {
        match a {
            AccessArg::Public => Access::Public,
            AccessArg::Viewer => Access::Viewer,
            AccessArg::Entitled => Access::Entitled,
        }
    }
}

impl From<AudienceArg> for Audience {
    fn from(a: AudienceArg) -> Self {
        match a {
            AudienceArg::Public => Audience::Public,
            AudienceArg::SignedIn => Audience::SignedIn,
            AudienceArg::Invited => Audience::Invited,
        }
    }
}

#[derive(Args)]
pub struct ClientShare {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub asset: String,
    /// Who may open it.
    #[arg(long, value_enum, default_value = "public")]
    pub audience: AudienceArg,
    /// Invited viewer ids (repeatable) for --audience invited.
    #[arg(long = "invite")]
    pub invited: Vec<String>,
    /// Share expiry, unix seconds.
    #[arg(long)]
    pub expires_at: Option<u64>,
    #[arg(long)]
    pub channel: Option<String>,
    #[arg(long)]
    pub campaign: Option<String>,
    /// Lifetime of each token a viewer gets, seconds (default: the service's, 600 within the bounds).
    #[arg(long)]
    pub ttl: Option<u32>,
    /// What the share page and the embed show as the title (default: the asset id).
    #[arg(long)]
    pub title: Option<String>,
    /// The branding preset of its player (default: `default`).
    #[arg(long)]
    pub preset: Option<String>,
    /// A site that may embed its player, as an origin like https://example.com (repeatable; default: any site).
    #[arg(long = "embed-origin")]
    pub embed_origins: Vec<String>,
    /// No site may embed its player.
    #[arg(long, conflicts_with = "embed_origins")]
    pub no_embed: bool,
    /// Credit each view to the page URL's `utm_source` (channel) and `utm_campaign` (campaign) when present.
    #[arg(long)]
    pub utm: bool,
    /// Who may get a token beyond the audience: `public`, `viewer` (a viewer id is required) or `entitled` (the
    /// entitlement backend must allow). The stricter of this and the asset's policy applies.
    #[arg(long, value_enum)]
    pub access: Option<AccessArg>,
}

#[derive(Args)]
pub struct ClientDiagnose {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A link URL, a token or a support reference; with `--viewer`, an asset id.
    pub target: String,
    /// Explain this viewer's access to the asset named as the target (its access policy and what the entitlement
    /// backend answers now) instead of a link.
    #[arg(long)]
    pub viewer: Option<String>,
    #[arg(long)]
    pub client_ip: Option<String>,
    #[arg(long)]
    pub country: Option<String>,
    #[arg(long)]
    pub origin: Option<String>,
    /// As of this unix time.
    #[arg(long)]
    pub at: Option<u64>,
}

#[derive(Subcommand)]
pub enum ClientKeys {
    /// One rotation step: stage a next key, or promote it once every edge has it.
    Rotate(ApiArgs),
    /// Key ids and states (never secrets).
    List(ApiArgs),
}

#[derive(Args)]
pub struct ClientAudit {
    #[command(flatten)]
    pub api: ApiArgs,
    #[arg(long)]
    pub from: Option<u64>,
    #[arg(long)]
    pub to: Option<u64>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
}

/// `sharegate edge`'s flags. Each one given replaces the setting of the same meaning from the environment
/// (docs/edge-config.md); the defaults are the settings' defaults.
#[derive(Args, Clone)]
pub struct EdgeArgs {
    /// Address to listen on.
    #[arg(long, env = "SHAREGATE_EDGE_ADDR", default_value = "127.0.0.1:7701")]
    pub edge_addr: SocketAddr,
    /// An origin: a directory or an http(s) base URL. Repeat for failover order (comma separated in the variable).
    #[arg(long = "origin", env = "SHAREGATE_ORIGIN", value_delimiter = ',', required = true)]
    pub origins: Vec<String>,
    /// Control-plane URL to pull the revocation state from [default: SHAREGATE_STATE_URL, else none].
    #[arg(long)]
    pub state_url: Option<String>,
    /// Pull interval, milliseconds [default: SHAREGATE_STATE_REFRESH_MS, else 1000].
    #[arg(long)]
    pub pull_interval_ms: Option<u64>,
    /// Control-plane URL to send edge events to [default: SHAREGATE_EVENTS_URL, else none].
    #[arg(long)]
    pub events_url: Option<String>,
    /// Per-origin timeout, milliseconds [default: SHAREGATE_ORIGIN_TIMEOUT_MS, else 5000].
    #[arg(long)]
    pub origin_timeout_ms: Option<u64>,
    /// Segment cache budget, MiB [default: SHAREGATE_CACHE_MIB, else 256].
    #[arg(long)]
    pub cache_mib: Option<u64>,
}

#[derive(Subcommand)]
pub enum CheckConfigCmd {
    /// The control plane's settings (`sharegate serve`'s flags and environment).
    Serve(ServeArgs),
    /// The native edge's settings (`sharegate edge`'s flags and environment).
    Edge(EdgeArgs),
}

#[derive(Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// An edge to check (its status endpoint, and the canary's refusal there). Repeatable; default: the edges the
    /// control plane pushes to.
    #[arg(long = "edge")]
    pub edges: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip the end-to-end canary (it mints and revokes a token on the asset given by --canary-asset).
    #[arg(long)]
    pub no_canary: bool,
    /// The asset the canary mints for [default: the first registered asset].
    #[arg(long)]
    pub canary_asset: Option<String>,
    /// Largest clock difference tolerated between this host, the replicas and the store, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub max_skew_ms: u64,
    /// How long the canary waits for every edge to refuse, seconds.
    #[arg(long, default_value_t = 15)]
    pub canary_timeout: u64,
}

#[derive(Args)]
pub struct ProbeArgs {
    /// The URL to GET (http only: probes run on loopback or a pod network).
    pub url: String,
    /// Timeout, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
}

#[derive(Subcommand)]
pub enum TokenCmd {
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
pub struct PolicyArgs {
    /// Clock leeway, seconds.
    #[arg(long, default_value_t = 60)]
    pub leeway: u32,
    /// Maximum token lifetime, seconds.
    #[arg(long, default_value_t = 86_400)]
    pub max_ttl: u32,
}

impl PolicyArgs {
    pub fn policy(&self) -> Policy {
        Policy {
            leeway: self.leeway,
            max_ttl: self.max_ttl,
        }
    }
}

#[derive(Args)]
pub struct MintArgs {
    /// Asset id: the token opens paths under /<asset>/.
    #[arg(long)]
    pub asset: Option<String>,
    /// Path prefix scope (normalised, segment boundary).
    #[arg(long)]
    pub prefix: Option<String>,
    /// Lifetime, seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl: u32,
    #[arg(long)]
    pub share: Option<String>,
    #[arg(long)]
    pub viewer: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    #[arg(long)]
    pub campaign: Option<String>,
    #[arg(long)]
    pub channel: Option<String>,
    /// Client IP binding, e.g. 203.0.113.0/24 or 2001:db8::/48.
    #[arg(long)]
    pub ip: Option<String>,
    /// Allowed countries, e.g. DE,FR.
    #[arg(long)]
    pub allow_countries: Option<String>,
    /// Denied countries.
    #[arg(long)]
    pub deny_countries: Option<String>,
    /// Embed origin, e.g. https://player.example.com.
    #[arg(long)]
    pub origin: Option<String>,
    /// Watermark id, hex.
    #[arg(long)]
    pub watermark: Option<String>,
    #[arg(long)]
    pub tier: Option<u8>,
    /// Also allow whole-file download.
    #[arg(long)]
    pub download: bool,
    /// Print the link under this base URL (…/t/<token>/<asset>/master.m3u8).
    #[arg(long)]
    pub base_url: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Args)]
pub struct VerifyArgs {
    /// A token, or a token URL (…/t/<token>/<asset path>).
    pub token: String,
    /// The asset path requested (taken from the URL when one is given).
    #[arg(long)]
    pub path: Option<String>,
    #[arg(long)]
    pub ip: Option<IpAddr>,
    #[arg(long)]
    pub country: Option<String>,
    #[arg(long)]
    pub origin: Option<String>,
    /// Check as of this unix time instead of now.
    #[arg(long)]
    pub at: Option<u64>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

// ---------------------------------------------------------------------------------------------------------------
// The API commands' flags as the service's request types: the CLI cannot send a field the service does not read.

impl ClientMint {
    pub fn request(&self) -> LinkRequest {
        LinkRequest {
            asset: self.asset.clone(),
            ttl: self.ttl,
            viewer: self.viewer.clone(),
            session: None,
            share: self.share.clone(),
            ip: self.ip.clone(),
            allow_countries: None,
            deny_countries: None,
            embed_origin: None,
            channel: self.channel.clone(),
            campaign: self.campaign.clone(),
            watermark: None,
            entitlement: None,
        }
    }
}

impl ClientRevoke {
    pub fn request(&self) -> RevocationRequest {
        RevocationRequest {
            kind: self.kind.into(),
            id: self.id.clone(),
            token: self.token.clone(),
            reason: self.reason.clone(),
            purge: self.purge,
        }
    }
}

impl ClientApikeys {
    pub fn request(&self) -> ApiKeyRequest {
        ApiKeyRequest {
            role: self.role.into(),
            // The service's default for a key without a label.
            label: self.label.clone().unwrap_or_default(),
        }
    }
}

impl ClientShare {
    pub fn request(&self) -> ShareRequest {
        ShareRequest {
            asset: self.asset.clone(),
            audience: self.audience.into(),
            invited: self.invited.clone(),
            expires_at: self.expires_at,
            channel: self.channel.clone(),
            campaign: self.campaign.clone(),
            ttl: self.ttl,
            title: self.title.clone(),
            preset: self.preset.clone(),
            embed_origins: match (self.no_embed, self.embed_origins.is_empty()) {
                (true, _) => Some(Vec::new()),
                (false, true) => None,
                (false, false) => Some(self.embed_origins.clone()),
            },
            utm: self.utm.then_some(true),
            access: self.access.map(Access::from),
        }
    }
}

impl ClientDiagnose {
    pub fn request(&self) -> DiagnoseRequest {
        // One argument takes any of: a URL has a scheme, a support reference starts `sg-`, a token has neither
        // (a v1 token's first character encodes its version byte: `E`).
        if let Some(viewer) = &self.viewer {
            return DiagnoseRequest {
                viewer: Some(viewer.clone()),
                asset: Some(self.target.clone()),
                ..DiagnoseRequest::default()
            };
        }
        let reference = self.target.starts_with("sg-").then(|| self.target.clone());
        let (url, token) = if reference.is_some() {
            (None, None)
        } else if self.target.contains("://") {
            (Some(self.target.clone()), None)
        } else {
            (None, Some(self.target.clone()))
        };
        DiagnoseRequest {
            url,
            token,
            client_ip: self.client_ip.clone(),
            country: self.country.clone(),
            origin: self.origin.clone(),
            at: self.at,
            path: None,
            reference,
            viewer: None,
            asset: None,
        }
    }
}

impl ClientAudit {
    pub fn query(&self) -> AuditQuery {
        AuditQuery {
            from: self.from,
            to: self.to,
            subject: self.subject.clone(),
            action: self.action.clone(),
            limit: self.limit,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use serde_json::json;

    /// `line` as the command line after `sharegate` (words split on spaces).
    fn parse(line: &str) -> Cmd {
        Cli::try_parse_from(std::iter::once("sharegate").chain(line.split_whitespace()))
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .cmd
    }

    fn body(req: impl serde::Serialize) -> serde_json::Value {
        serde_json::to_value(req).unwrap()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_kind_role_and_audience_keeps_its_wire_name() {
        // The CLI's names are the API's: a value enum that drifted from the library's serde names would send a value
        // the service refuses.
        let name = |v: Option<clap::builder::PossibleValue>| v.unwrap().get_name().to_string();
        for k in KindArg::value_variants() {
            assert_eq!(json!(name(k.to_possible_value())), body(RevocationKind::from(*k)));
        }
        assert_eq!(KindArg::value_variants().len(), 8);
        for r in RoleArg::value_variants() {
            assert_eq!(json!(name(r.to_possible_value())), body(Role::from(*r)));
        }
        for a in AudienceArg::value_variants() {
            assert_eq!(json!(name(a.to_possible_value())), body(Audience::from(*a)));
        }
    }

    #[test]
    fn revoke_parses_into_the_services_request() {
        let Cmd::Invalidate(i) = parse("invalidate --viewer u-1 --asset demo --revoke --reason cancelled") else {
            panic!("not invalidate");
        };
        assert_eq!(
            body(i.request()),
            json!({"viewer": "u-1", "asset": "demo", "revoke": true, "reason": "cancelled"})
        );
        // --purge only with --revoke.
        assert!(Cli::try_parse_from("sharegate invalidate --viewer u --purge".split(' ')).is_err());
        let Cmd::Access(a) = parse("access demo --access entitled --entitlement-url https://billing.example/check")
        else {
            panic!("not access");
        };
        assert_eq!(
            body(a.request()),
            json!({"access": "entitled", "entitlement_url": "https://billing.example/check"})
        );
        let Cmd::Diagnose(d) = parse("diagnose demo --viewer u-1") else {
            panic!("not diagnose");
        };
        assert_eq!(body(d.request()), json!({"viewer": "u-1", "asset": "demo"}));
        let Cmd::Revoke(r) = parse("revoke --kind key_id --id 3 --reason leak --purge --idempotency-key k1") else {
            panic!("not revoke");
        };
        assert_eq!(r.api.api, "http://127.0.0.1:7700");
        assert_eq!(r.idempotency_key.as_deref(), Some("k1"));
        assert_eq!(
            body(r.request()),
            json!({"kind": "key_id", "id": "3", "reason": "leak", "purge": true})
        );
        // An unknown kind is refused here, before anything is sent.
        let e = Cli::try_parse_from("sharegate revoke --kind everything".split(' '))
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn mint_share_apikeys_diagnose_and_audit_parse() {
        let Cmd::Mint(m) = parse("mint --asset demo --ttl 600 --ip 192.0.2.0/24") else {
            panic!("not mint");
        };
        assert_eq!(
            body(m.request()),
            json!({"asset": "demo", "ttl": 600, "ip": "192.0.2.0/24"})
        );

        let Cmd::Share(s) =
            parse("share --api http://cp:7700/ --asset demo --audience invited --invite v1 --invite v2")
        else {
            panic!("not share");
        };
        assert_eq!(s.api.api, "http://cp:7700/");
        assert_eq!(
            body(s.request()),
            json!({"asset": "demo", "audience": "invited", "invited": ["v1", "v2"]})
        );
        let Cmd::Share(s) = parse("share --asset demo") else {
            panic!("not share");
        };
        assert_eq!(s.audience, AudienceArg::Public);
        let Cmd::Share(s) = parse("share --asset demo --audience signed_in") else {
            panic!("not share");
        };
        assert_eq!(s.request().audience, Audience::SignedIn);

        let Cmd::Apikeys(k) = parse("apikeys --role auditor") else {
            panic!("not apikeys");
        };
        assert_eq!(body(k.request()), json!({"role": "auditor", "label": ""}));

        let Cmd::Diagnose(d) = parse("diagnose https://cdn.example.com/t/abc/demo/master.m3u8 --at 5") else {
            panic!("not diagnose");
        };
        assert_eq!(
            body(d.request()),
            json!({"url": "https://cdn.example.com/t/abc/demo/master.m3u8", "at": 5})
        );
        let Cmd::Diagnose(d) = parse("diagnose abc --client-ip 192.0.2.1") else {
            panic!("not diagnose");
        };
        assert_eq!(body(d.request()), json!({"token": "abc", "client_ip": "192.0.2.1"}));

        let Cmd::Audit(a) = parse("audit --subject demo --action links. --limit 10") else {
            panic!("not audit");
        };
        assert_eq!(
            body(a.query()),
            json!({"subject": "demo", "action": "links.", "limit": 10})
        );
    }

    #[test]
    fn service_commands_keep_their_defaults() {
        let Cmd::Dev(d) = parse("dev") else {
            panic!("not dev");
        };
        assert_eq!(d.data_dir, PathBuf::from(".sharegate"));
        assert_eq!(d.api_addr.to_string(), "127.0.0.1:7700");
        assert_eq!(d.edge_addr.to_string(), "127.0.0.1:7701");
        assert_eq!(d.origin, "deploy/demo-media");
        let Cmd::Serve(s) = parse("serve --store redis://r:6379 --push-edge http://e1 --push-edge http://e2") else {
            panic!("not serve");
        };
        assert_eq!(s.store, "redis://r:6379");
        assert_eq!(s.push_edges, ["http://e1", "http://e2"]);
        assert_eq!(s.edge_url, "http://127.0.0.1:7701");
        let Cmd::Edge(e) = parse("edge --origin a --origin https://b") else {
            panic!("not edge");
        };
        assert_eq!(e.origins, ["a", "https://b"]);
        // Unset, the environment's settings or their defaults apply (edge::tests).
        assert_eq!(
            (e.pull_interval_ms, e.origin_timeout_ms, e.cache_mib),
            (None, None, None)
        );
        // `edge` needs an origin.
        assert!(Cli::try_parse_from(["sharegate", "edge"]).is_err());
        let Cmd::Token(TokenCmd::Mint(m)) = parse("token mint --asset demo --download --max-ttl 60") else {
            panic!("not token mint");
        };
        assert_eq!(
            (m.ttl, m.download, m.policy.policy().max_ttl, m.policy.leeway),
            (600, true, 60, 60)
        );
        assert!(matches!(parse("keys rotate"), Cmd::Keys(ClientKeys::Rotate(_))));
        assert!(matches!(parse("keygen"), Cmd::Keygen));
    }
}
