//! The `sharegate` command.
//!
//! Today: offline token tools (`demo`, `keygen`, `token mint|verify|inspect`). The service (`serve`, `edge`,
//! `dev`) and the API clients (`mint`, `share`, `revoke`, ...) arrive with the control-plane issue.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use sharegate_control_plane::offline::{self, CheckRequest, MintRequest};
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
    },
    /// Print a new random signing key (64 hex digits) for SHAREGATE_SIGNING_KEY.
    Keygen,
    /// Offline token tools; the key comes from SHAREGATE_SIGNING_KEY and SHAREGATE_KEY_ID.
    #[command(subcommand)]
    Token(TokenCmd),
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

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { base_url } => demo(&base_url),
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
            let (token, url_path) = offline::split_token_url(&a.token);
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
            let (token, _) = offline::split_token_url(&token);
            let mut buf = TokenBuf::new();
            match decode_unverified(&token, &mut buf) {
                Ok(c) => {
                    let out = serde_json::json!({"signature": "NOT CHECKED", "claims": offline::claims_json(&c)});
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

fn demo(base_url: &str) -> Result<()> {
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
    Ok(())
}
