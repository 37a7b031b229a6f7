//! Helpers shared by the token tests: a JSON form of claims, used by the test vectors.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{Value, json};
use sharegate_shared::token::{Claims, Countries, IpPrefix, Permissions};
use std::net::IpAddr;

/// Owned storage that JSON claims borrow from.
pub struct Owned {
    pub strs: Vec<String>,
    pub blobs: Vec<Vec<u8>>,
    pub countries: Vec<u8>,
}

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

/// Parse the JSON form into owned parts, then borrow claims from them with [`claims_from`].
pub fn owned_from_json(v: &Value) -> Owned {
    let keys = [
        "asset", "prefix", "share", "viewer", "session", "campaign", "channel", "origin",
    ];
    let strs = keys
        .iter()
        .map(|k| v.get(*k).and_then(Value::as_str).unwrap_or("").to_string())
        .collect();
    let blob = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(|h| hex::decode(h).unwrap())
            .unwrap_or_default()
    };
    let mut countries = Vec::new();
    if let Some(obj) = v.get("countries") {
        let list = obj.get("allow").or_else(|| obj.get("deny")).unwrap();
        for c in list.as_array().unwrap() {
            countries.extend_from_slice(c.as_str().unwrap().as_bytes());
        }
    }
    Owned {
        strs,
        blobs: vec![blob("watermark"), blob("data")],
        countries,
    }
}

pub fn claims_from<'a>(v: &Value, o: &'a Owned) -> Claims<'a> {
    let s = |i: usize| (!o.strs[i].is_empty()).then_some(o.strs[i].as_str().into());
    let b = |i: usize| (!o.blobs[i].is_empty()).then_some(o.blobs[i].as_slice());
    let mut token_id = [0u8; 12];
    token_id.copy_from_slice(&hex::decode(v["token_id"].as_str().unwrap()).unwrap());
    let ip = v.get("ip").and_then(Value::as_str).map(|s| {
        let (a, l) = s.split_once('/').unwrap();
        IpPrefix::new(a.parse::<IpAddr>().unwrap(), l.parse().unwrap()).unwrap()
    });
    let countries = v.get("countries").map(|obj| {
        if obj.get("allow").is_some() {
            Countries::Allow(&o.countries)
        } else {
            Countries::Deny(&o.countries)
        }
    });
    Claims {
        minor: 0,
        key_id: v["key_id"].as_u64().unwrap() as u16,
        token_id,
        iat: v["iat"].as_u64().unwrap() as u32,
        nbf: v["nbf"].as_u64().unwrap() as u32,
        exp: v["exp"].as_u64().unwrap() as u32,
        permissions: Permissions(v["permissions"].as_u64().unwrap() as u8),
        asset: s(0),
        prefix: s(1),
        share: s(2),
        viewer: s(3),
        session: s(4),
        campaign: s(5),
        channel: s(6),
        origin: s(7),
        ip,
        countries,
        watermark: b(0),
        tier: v.get("tier").and_then(Value::as_u64).map(|t| t as u8),
        data: b(1),
    }
}
