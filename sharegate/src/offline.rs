//! Offline token tools: mint and check tokens with a key from the environment, no service needed.
//!
//! These are what `sharegate demo`, `sharegate keygen` and `sharegate token ...` run. The signing key comes from
//! `SHAREGATE_SIGNING_KEY` (64 hex digits) and `SHAREGATE_KEY_ID`, never from a flag, so it stays out of shell
//! history and process listings. Nothing here is recorded anywhere: a control plane never hears of these tokens.

use crate::cli::{DemoArgs, MintArgs, TokenCmd, VerifyArgs};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use sharegate_control_plane::tokens::{claims_json, parse_prefix, split_token_url};
use sharegate_shared::keys::{KeyId, KeyRing, SecretKey};
use sharegate_shared::token::{
    Claims, Minter, OwnedClaims, OwnedCountries, Permissions, Policy, RequestFacts, TokenBuf, Verifier,
    decode_unverified,
};
use sharegate_shared::{Reason, normalize_path};
use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now.
pub fn now() -> Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs())
}

/// 32 bytes from the OS CSPRNG.
pub fn random_secret() -> Result<SecretKey> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    Ok(SecretKey::new(b))
}

/// A fresh 96-bit token id from the OS CSPRNG.
pub fn random_token_id() -> Result<[u8; 12]> {
    let mut b = [0u8; 12];
    getrandom::fill(&mut b).map_err(|e| anyhow!("no OS randomness: {e}"))?;
    Ok(b)
}

/// The key ring named by `SHAREGATE_SIGNING_KEY` / `SHAREGATE_KEY_ID`.
pub fn ring_from_env(max_ttl: u32) -> Result<KeyRing> {
    let hex = std::env::var("SHAREGATE_SIGNING_KEY")
        .context("SHAREGATE_SIGNING_KEY is not set (64 hex digits; `sharegate keygen` makes one)")?;
    let secret = SecretKey::from_hex(&hex).context("SHAREGATE_SIGNING_KEY")?;
    let id: KeyId = match std::env::var("SHAREGATE_KEY_ID") {
        Ok(s) => s.parse().context("SHAREGATE_KEY_ID must be an integer 0..=65535")?,
        Err(_) => 1,
    };
    Ok(KeyRing::with_active(id, secret, max_ttl))
}

fn country_codes(list: &str) -> Vec<u8> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .flat_map(|c| c.to_ascii_uppercase().into_bytes())
        .collect()
}

impl MintArgs {
    /// What `sharegate token mint`'s flags put in a token: every claim but its id and times, which [`mint`] sets.
    pub fn claims(&self) -> Result<OwnedClaims> {
        let countries = match (&self.allow_countries, &self.deny_countries) {
            (Some(_), Some(_)) => bail!("give either --allow-countries or --deny-countries, not both"),
            (Some(allow), None) => Some(OwnedCountries::Allow(country_codes(allow))),
            (None, Some(deny)) => Some(OwnedCountries::Deny(country_codes(deny))),
            (None, None) => None,
        };
        let mut permissions = Permissions::PLAYBACK;
        if self.download {
            permissions = permissions.union(Permissions::DOWNLOAD);
        }
        Ok(OwnedClaims {
            permissions,
            asset: self.asset.clone(),
            prefix: self.prefix.clone(),
            share: self.share.clone(),
            viewer: self.viewer.clone(),
            session: self.session.clone(),
            campaign: self.campaign.clone(),
            channel: self.channel.clone(),
            ip: self
                .ip
                .as_deref()
                .map(parse_prefix)
                .transpose()
                .map_err(|e| anyhow!(e))?,
            countries,
            origin: self.origin.clone(),
            watermark: self
                .watermark
                .as_deref()
                .map(hex::decode)
                .transpose()
                .context("--watermark must be hex")?,
            tier: self.tier,
            ..OwnedClaims::default()
        })
    }
}

/// Mint a token with `claims`, valid from `now` for `ttl` seconds, under a fresh random id (the id and times in
/// `claims` are replaced). Returns the token and its claims as JSON.
pub fn mint(ring: &KeyRing, policy: Policy, claims: &OwnedClaims, ttl: u32, now: u64) -> Result<(String, Value)> {
    let minter = Minter::new(ring, policy).context("key ring")?;
    let iat = u32::try_from(now).context("clock beyond 2106")?;
    let exp = iat.checked_add(ttl).context("exp overflows")?;
    let claims = Claims {
        token_id: random_token_id()?,
        iat,
        nbf: iat,
        exp,
        ..claims.as_claims()
    };
    let token = minter.mint(&claims).context("cannot mint")?;
    let mut buf = TokenBuf::new();
    let decoded = decode_unverified(&token, &mut buf).context("minted token does not decode")?;
    Ok((token.clone(), claims_json(&decoded)))
}

/// Facts of a request to check a token against.
#[derive(Debug, Clone, Default)]
pub struct CheckRequest {
    /// Raw request path (normalised here).
    pub path: String,
    /// Client IP.
    pub ip: Option<IpAddr>,
    /// Client country.
    pub country: Option<String>,
    /// Embedding origin.
    pub origin: Option<String>,
}

/// Check a token as the edge would (minus revocation) and say what it decides and why.
pub fn check(ring: &KeyRing, policy: Policy, token: &str, req: &CheckRequest, now: u64) -> Value {
    let path = match normalize_path(&req.path) {
        Ok(p) => p,
        Err(e) => {
            return json!({"decision": "deny", "reason": Reason::BadPath.as_str(), "status": 400, "detail": e.as_str()});
        }
    };
    let country = req
        .country
        .as_deref()
        .and_then(|c| <[u8; 2]>::try_from(c.to_ascii_uppercase().as_bytes()).ok());
    let facts = RequestFacts {
        path: &path,
        resource: sharegate_edge::engine::classify(&path, "master.m3u8"),
        now,
        client_ip: req.ip,
        country,
        origin: req.origin.as_deref(),
    };
    let verifier = Verifier::new(ring, policy);
    let mut buf = TokenBuf::new();
    match verifier.verify(token, &facts, &mut buf) {
        Ok(c) => {
            json!({"decision": "allow", "status": 200, "path": path, "claims": claims_json(&c)})
        }
        Err(r) => {
            let mut dbuf = TokenBuf::new();
            let claims = decode_unverified(token, &mut dbuf).ok().map(|c| claims_json(&c));
            json!({"decision": "deny", "reason": r.as_str(), "status": r.http_status(), "path": path,
                   "unverified_claims": claims})
        }
    }
}

/// `sharegate keygen`: a new signing key, 64 hex digits.
pub fn keygen() -> Result<ExitCode> {
    println!("{}", hex::encode(random_secret()?.expose()));
    Ok(ExitCode::SUCCESS)
}

/// `sharegate token mint|verify|inspect`. Verify and inspect exit 1 when the token does not pass, for scripts.
pub fn token(cmd: TokenCmd) -> Result<ExitCode> {
    match cmd {
        TokenCmd::Mint(a) => token_mint(a),
        TokenCmd::Verify(a) => token_verify(a),
        TokenCmd::Inspect { token } => Ok(token_inspect(&token)),
    }
}

fn token_mint(a: MintArgs) -> Result<ExitCode> {
    let ring = ring_from_env(a.policy.max_ttl)?;
    let (token, claims) = mint(&ring, a.policy.policy(), &a.claims()?, a.ttl, now()?)?;
    let url = match (&a.base_url, &a.asset) {
        (Some(base), Some(asset)) => Some(format!("{}/t/{token}/{asset}/master.m3u8", base.trim_end_matches('/'))),
        _ => None,
    };
    let out = json!({"token": token, "url": url, "claims": claims});
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(ExitCode::SUCCESS)
}

fn token_verify(a: VerifyArgs) -> Result<ExitCode> {
    let ring = ring_from_env(a.policy.max_ttl)?;
    let (token, url_path) = split_token_url(&a.token);
    let req = CheckRequest {
        path: a.path.or(url_path).context("give --path or a token URL")?,
        ip: a.ip,
        country: a.country,
        origin: a.origin,
    };
    let at = match a.at {
        Some(t) => t,
        None => now()?,
    };
    let out = check(&ring, a.policy.policy(), &token, &req, at);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(if out["decision"] == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn token_inspect(token: &str) -> ExitCode {
    let (token, _) = split_token_url(token);
    let mut buf = TokenBuf::new();
    match decode_unverified(&token, &mut buf) {
        Ok(c) => {
            let out = json!({"signature": "NOT CHECKED", "claims": claims_json(&c)});
            // A `Value` always renders; the compact form is the fallback of a fallback.
            println!(
                "{}",
                serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string())
            );
            ExitCode::SUCCESS
        }
        Err(r) => {
            println!("{}", json!({"error": r.as_str()}));
            ExitCode::FAILURE
        }
    }
}

/// `sharegate demo`: a link for the demo asset under a throwaway key, what the edge decides for it and for hostile
/// requests, and with `--serve` a native edge that plays it.
pub async fn demo(a: DemoArgs) -> Result<ExitCode> {
    let (ring, token) = demo_decisions(&a.base_url)?;
    if a.serve {
        crate::edge::serve_demo(&ring, &token, a.edge_addr, &a.media).await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn demo_decisions(base_url: &str) -> Result<(KeyRing, String)> {
    let policy = Policy::default();
    let ring = KeyRing::with_active(1, random_secret()?, policy.max_ttl);
    let now = now()?;
    let claims = OwnedClaims {
        permissions: Permissions::PLAYBACK,
        asset: Some("demo".into()),
        viewer: Some("viewer-1".into()),
        channel: Some("demo".into()),
        ..OwnedClaims::default()
    };
    let (token, claims) = mint(&ring, policy, &claims, 600, now)?;
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
        let out = check(&ring, policy, tok, &req, at);
        println!(
            "{:<24} {:<30} {:<6} {}",
            what,
            path,
            out["status"],
            out["reason"].as_str().unwrap_or("-")
        );
    }
    Ok((ring, token))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `sharegate token mint <flags>` as parsed.
    fn mint_args(flags: &str) -> MintArgs {
        let line = format!("sharegate token mint {flags}");
        match crate::cli::Cli::try_parse_from(line.split_whitespace()).map(|c| c.cmd) {
            Ok(crate::cli::Cmd::Token(TokenCmd::Mint(a))) => a,
            _ => panic!("not token mint: {line}"),
        }
    }

    #[test]
    fn token_mint_flags_become_claims() {
        let c = mint_args("--asset demo --allow-countries de,fr --watermark 0a0b --download --tier 2")
            .claims()
            .unwrap();
        assert_eq!(c.asset.as_deref(), Some("demo"));
        assert_eq!(c.countries, Some(OwnedCountries::Allow(b"DEFR".to_vec())));
        assert_eq!(c.watermark, Some(vec![0x0a, 0x0b]));
        assert_eq!(c.tier, Some(2));
        assert!(
            c.permissions
                .contains(Permissions::PLAYBACK.union(Permissions::DOWNLOAD))
        );
        let c = mint_args("--deny-countries US").claims().unwrap();
        assert_eq!(c.countries, Some(OwnedCountries::Deny(b"US".to_vec())));
        assert!(!c.permissions.contains(Permissions::DOWNLOAD));
        // Refused before anything is minted.
        for bad in [
            "--allow-countries DE --deny-countries FR",
            "--watermark xyz",
            "--ip 300.1.1.1",
        ] {
            assert!(mint_args(bad).claims().is_err(), "{bad}");
        }
    }

    #[test]
    fn mint_then_check_allows_and_tamper_denies() {
        let ring = KeyRing::with_active(3, random_secret().unwrap(), 86_400);
        // The claims as `sharegate token mint` reads them from its flags.
        let args =
            crate::cli::Cli::try_parse_from("sharegate token mint --asset demo --ttl 600 --ip 192.0.2.0/24".split(' '));
        let Ok(crate::cli::Cli {
            cmd: crate::cli::Cmd::Token(TokenCmd::Mint(args)),
        }) = args
        else {
            panic!("not token mint");
        };
        let now = 1_800_000_000;
        let (token, claims) = mint(&ring, Policy::default(), &args.claims().unwrap(), args.ttl, now).unwrap();
        assert_eq!(claims["asset"], "demo");
        let check_req = CheckRequest {
            path: "/demo/v0/seg_000.ts".into(),
            ip: Some("192.0.2.9".parse().unwrap()),
            ..CheckRequest::default()
        };
        let ok = check(&ring, Policy::default(), &token, &check_req, now + 1);
        assert_eq!(ok["decision"], "allow", "{ok}");
        let mut bad = token.clone().into_bytes();
        bad[20] = if bad[20] == b'A' { b'B' } else { b'A' };
        let denied = check(
            &ring,
            Policy::default(),
            std::str::from_utf8(&bad).unwrap(),
            &check_req,
            now + 1,
        );
        assert_eq!(denied["reason"], "bad_signature");
        let expired = check(&ring, Policy::default(), &token, &check_req, now + 600 + 60);
        assert_eq!(expired["reason"], "expired");
        assert_eq!(expired["status"], 410);
        let traversal = CheckRequest {
            path: "/demo/../other/x.ts".into(),
            ..check_req
        };
        assert_eq!(
            check(&ring, Policy::default(), &token, &traversal, now)["reason"],
            "bad_path"
        );
    }
}
