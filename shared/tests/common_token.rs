//! Helpers shared by the token tests: a JSON form of claims, used by the test vectors.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{Value, json};
use sharegate_shared::token::{Claims, Countries, IpPrefix, OwnedClaims, OwnedCountries, Permissions};
use std::net::IpAddr;

pub fn claims_to_json(c: &Claims<'_>) -> Value {
    let mut v = json!({
        "key_id": c.key_id,
        "token_id": hex::encode(c.token_id),
        "iat": c.iat, "nbf": c.nbf, "exp": c.exp,
        "permissions": c.permissions.0,
    });
    let m = v.as_object_mut().unwrap();
    let strs = [
        ("asset", c.asset),
        ("prefix", c.prefix),
        ("share", c.share),
        ("viewer", c.viewer),
        ("session", c.session),
        ("campaign", c.campaign),
        ("channel", c.channel),
        ("origin", c.origin),
    ];
    for (k, s) in strs {
        if let Some(s) = s {
            m.insert(k.into(), json!(s.as_str()));
        }
    }
    if let Some(ip) = c.ip {
        m.insert("ip".into(), json!(format!("{}/{}", ip.addr, ip.len)));
    }
    if let Some(rule) = c.countries {
        let (k, codes) = match rule {
            Countries::Allow(c) => ("allow", c),
            Countries::Deny(c) => ("deny", c),
        };
        let list: Vec<String> = codes
            .chunks(2)
            .map(|p| String::from_utf8(p.to_vec()).unwrap())
            .collect();
        m.insert("countries".into(), json!({ k: list }));
    }
    if let Some(w) = c.watermark {
        m.insert("watermark".into(), json!(hex::encode(w)));
    }
    if let Some(t) = c.tier {
        m.insert("tier".into(), json!(t));
    }
    if let Some(d) = c.data {
        m.insert("data".into(), json!(hex::encode(d)));
    }
    v
}

/// Parse the JSON form into owned claims; borrow them with [`OwnedClaims::as_claims`]. An empty or absent field is
/// no claim.
pub fn claims_from_json(v: &Value) -> OwnedClaims {
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let blob = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|h| hex::decode(h).unwrap())
            .filter(|b| !b.is_empty())
    };
    let countries = v.get("countries").map(|obj| {
        let (allow, list) = match obj.get("allow") {
            Some(list) => (true, list),
            None => (false, obj.get("deny").unwrap()),
        };
        let codes: Vec<u8> = list
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|c| c.as_str().unwrap().bytes())
            .collect();
        if allow {
            OwnedCountries::Allow(codes)
        } else {
            OwnedCountries::Deny(codes)
        }
    });
    let mut token_id = [0u8; 12];
    token_id.copy_from_slice(&hex::decode(v["token_id"].as_str().unwrap()).unwrap());
    let ip = v.get("ip").and_then(Value::as_str).map(|s| {
        let (a, l) = s.split_once('/').unwrap();
        IpPrefix::new(a.parse::<IpAddr>().unwrap(), l.parse().unwrap()).unwrap()
    });
    OwnedClaims {
        minor: 0,
        key_id: v["key_id"].as_u64().unwrap() as u16,
        token_id,
        iat: v["iat"].as_u64().unwrap() as u32,
        nbf: v["nbf"].as_u64().unwrap() as u32,
        exp: v["exp"].as_u64().unwrap() as u32,
        permissions: Permissions(v["permissions"].as_u64().unwrap() as u8),
        asset: text("asset"),
        prefix: text("prefix"),
        share: text("share"),
        viewer: text("viewer"),
        session: text("session"),
        campaign: text("campaign"),
        channel: text("channel"),
        origin: text("origin"),
        ip,
        countries,
        watermark: blob("watermark"),
        tier: v.get("tier").and_then(Value::as_u64).map(|t| t as u8),
        data: blob("data"),
    }
}
