//! Token helpers the service and the `sharegate` command share: reading token URLs and IP prefixes, and showing
//! claims to people and scripts.

use serde_json::{Value, json};
use sharegate_shared::token::{Claims, Countries, IpPrefix, Permissions, Text};
use std::net::IpAddr;

/// Parse `addr/len` (or a bare address, meaning a host route).
pub fn parse_prefix(s: &str) -> Result<IpPrefix, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| format!("bad IP address {addr:?}"))?;
    let len = match (len, addr) {
        (Some(l), _) => l.parse().map_err(|_| format!("bad prefix length {l:?}"))?,
        (None, IpAddr::V4(_)) => 32,
        (None, IpAddr::V6(_)) => 128,
    };
    IpPrefix::new(addr, len).ok_or_else(|| format!("prefix length {len} too long for {addr}"))
}

/// Claims as JSON for people and scripts (ids in hex).
pub fn claims_json(c: &Claims<'_>) -> Value {
    let t = |v: Option<Text<'_>>| v.map(|s| s.as_str().to_owned());
    let mut perms = Vec::new();
    for (bit, name) in [
        (Permissions::MULTIVARIANT, "multivariant_playlist"),
        (Permissions::MEDIA, "media_playlist"),
        (Permissions::SEGMENT, "segment"),
        (Permissions::INIT, "init"),
        (Permissions::KEY, "key"),
        (Permissions::DOWNLOAD, "download"),
    ] {
        if c.permissions.contains(bit) {
            perms.push(name);
        }
    }
    json!({
        "version": format!("1.{}", c.minor),
        "key_id": c.key_id,
        "token_id": hex::encode(c.token_id),
        "iat": c.iat, "nbf": c.nbf, "exp": c.exp,
        "permissions": perms,
        "asset": t(c.asset), "prefix": t(c.prefix), "share": t(c.share), "viewer": t(c.viewer),
        "session": t(c.session), "campaign": t(c.campaign), "channel": t(c.channel),
        "ip": c.ip.map(|p| format!("{}/{}", p.addr, p.len)),
        "countries": c.countries.map(|r| match r {
            Countries::Allow(c) => json!({"allow": String::from_utf8_lossy(c)}),
            Countries::Deny(c) => json!({"deny": String::from_utf8_lossy(c)}),
        }),
        "origin": t(c.origin),
        "watermark": c.watermark.map(hex::encode),
        "tier": c.tier,
        "data": c.data.map(hex::encode),
    })
}

/// Split a token URL (`.../t/<token>/<asset path>`) into token and asset path; a bare token passes through.
pub fn split_token_url(s: &str) -> (String, Option<String>) {
    let path = s
        .split_once("://")
        .map_or(s, |(_, rest)| rest.find('/').map_or("", |i| &rest[i..]));
    let path = path.split(['?', '#']).next().unwrap_or("");
    if let Some(i) = path.find("/t/") {
        let rest = &path[i + 3..];
        let (token, asset_path) = rest.split_once('/').unwrap_or((rest, ""));
        return (token.to_string(), Some(format!("/{asset_path}")));
    }
    (s.to_string(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_urls_split() {
        let (t, p) = split_token_url("https://cdn.example.com/t/abc_-/demo/master.m3u8?x=1");
        assert_eq!(t, "abc_-");
        assert_eq!(p.as_deref(), Some("/demo/master.m3u8"));
        let (t, p) = split_token_url("abc");
        assert_eq!((t.as_str(), p), ("abc", None));
    }
}
