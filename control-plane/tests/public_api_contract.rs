//! Small promises of the API that docs/openapi.yaml makes and the code must keep: share links usable from other
//! origins (CORS), the audit log's `role` within its schema, `null` refused where the schema says a type, and share
//! TTLs bounded like link TTLs. Through the service router in-process (`oneshot`).
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{HeaderMap, StatusCode};
use common::service::{World, send, world};
use serde_yaml_ng::Value as Yaml;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::store::Log;

async fn setup() -> World {
    world().await
}

fn doc() -> Yaml {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn share_links_can_be_followed_from_another_origin() {
    let w = setup().await;
    let (s, _, share) = send(
        &w.app,
        "POST",
        "/v1/shares",
        Some(w.key(Role::Minter)),
        &[],
        r#"{"asset":"demo","audience":"public"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{share}");
    let id = share["id"].as_str().unwrap();
    let player = [("origin", "https://player.example.net")];

    // The preflight a player's fetch may send: answered without minting anything or looking the share up.
    let issued = w.state.store.last_seq(Log::Issued).await.unwrap();
    let (s, h, _) = send(
        &w.app,
        "OPTIONS",
        &format!("/s/{id}"),
        None,
        &[player[0], ("access-control-request-method", "GET")],
        "",
    )
    .await;
    assert!(s.is_success(), "preflight: {s}");
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    assert!(header(&h, "access-control-allow-methods").unwrap().contains("GET"));
    assert_eq!(header(&h, "access-control-allow-credentials"), None);
    assert!(
        !header(&h, "access-control-allow-headers")
            .unwrap_or("")
            .contains("x-sharegate-viewer"),
        "the viewer id comes from the auth proxy, never from a browser"
    );
    assert_eq!(w.state.store.last_seq(Log::Issued).await.unwrap(), issued);

    // The redirect, and a refusal a player must be able to read.
    let (s, h, _) = send(&w.app, "GET", &format!("/s/{id}"), None, &player, "").await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&h, "access-control-allow-credentials"), None);
    assert_eq!(header(&h, "cache-control"), Some("no-store"));
    let (s, h, b) = send(&w.app, "GET", "/s/sh_0000000000000000", None, &player, "").await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));

    // The document says so.
    let d = doc();
    let item = &d["paths"]["/s/{id}"];
    assert!(item["options"].is_mapping(), "OPTIONS /s/{{id}} is documented");
    let found = item["get"]["responses"]["302"]["headers"]["Access-Control-Allow-Origin"].is_mapping();
    assert!(found, "the 302's Access-Control-Allow-Origin is documented");
}

#[tokio::test]
async fn refused_calls_are_audited_with_a_role_the_schema_allows() {
    let w = setup().await;
    // A call without a key, and one with an unknown key: both audited as refusals, by a caller with no role.
    let (s, _, _) = send(&w.app, "POST", "/v1/links", None, &[], r#"{"asset":"demo"}"#).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = send(
        &w.app,
        "POST",
        "/v1/links",
        Some("sg_minter_nope"),
        &[],
        r#"{"asset":"demo"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, b) = send(&w.app, "GET", "/v1/audit", Some(w.key(Role::Auditor)), &[], "").await;
    assert_eq!(s, StatusCode::OK, "{b}");

    let d = doc();
    let role = &d["components"]["schemas"]["AuditRecord"]["properties"]["role"];
    let roles: Vec<String> = d["components"]["schemas"]["Role"]["enum"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();

    let entries = b["entries"].as_array().unwrap();
    let anonymous: Vec<_> = entries.iter().filter(|e| e["actor"] == "anonymous").collect();
    // Two anonymous refusals within a minute: the first is audited in full, the second only counted (it is
    // written with the next window's first), so anonymous callers cannot grow the log without bound.
    assert_eq!(anonymous.len(), 1, "{b}");
    for e in entries {
        match &e["role"] {
            serde_json::Value::Null => assert_eq!(e["actor"], "anonymous", "{e}"),
            serde_json::Value::String(r) => assert!(roles.contains(r), "role {r} is not in the Role enum"),
            other => panic!("role {other}"),
        }
    }
    assert!(anonymous.iter().all(|e| e["role"].is_null()), "{b}");
    let any_of = role["anyOf"].as_sequence().cloned().unwrap_or_default();
    let null_allowed = any_of.iter().any(|s| s["type"].as_str() == Some("null"));
    assert!(null_allowed, "AuditRecord.role allows null: {role:?}");
}

#[tokio::test]
async fn null_is_refused_where_the_schema_says_a_type() {
    let w = setup().await;
    let admin = w.key(Role::Admin).to_string();
    let (s, _, b) = send(
        &w.app,
        "POST",
        "/v1/apikeys",
        Some(&admin),
        &[],
        r#"{"role":"auditor","label":null}"#,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{b}"
    );
    assert!(b["message"].as_str().unwrap().contains("label"), "{b}");
    // Left out, it is the empty label the answer's schema (a string) promises.
    let (s, _, b) = send(
        &w.app,
        "POST",
        "/v1/apikeys",
        Some(&admin),
        &[],
        r#"{"role":"auditor"}"#,
    )
    .await;
    assert_eq!((s, b["label"].as_str()), (StatusCode::CREATED, Some("")), "{b}");

    let minter = w.key(Role::Minter).to_string();
    for field in ["channel", "campaign", "expires_at", "ttl"] {
        let body = format!(r#"{{"asset":"demo","audience":"public","{field}":null}}"#);
        let (s, _, b) = send(&w.app, "POST", "/v1/shares", Some(&minter), &[], &body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{field}: {b}"
        );
    }
    // The schemas these bodies are checked against say a type, not null.
    let d = doc();
    let label = &d["paths"]["/v1/apikeys"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
        ["label"];
    assert_eq!(label["type"].as_str(), Some("string"));
    let share = &d["components"]["schemas"]["ShareRequest"]["properties"];
    for field in ["channel", "campaign", "ttl"] {
        assert!(share[field]["type"].is_string(), "{field}: {:?}", share[field]);
    }
}

#[tokio::test]
async fn share_ttls_are_bounded_like_link_ttls() {
    let w = setup().await;
    let minter = w.key(Role::Minter).to_string();
    // An admin narrows the link TTL bounds at run time.
    let (s, _, b) = send(
        &w.app,
        "PUT",
        "/v1/settings",
        Some(w.key(Role::Admin)),
        &[],
        r#"{"min_ttl":600,"max_ttl":1200,"default_ttl":900}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for ttl in [3600, 300] {
        let (s, _, link) = send(
            &w.app,
            "POST",
            "/v1/links",
            Some(&minter),
            &[],
            &format!(r#"{{"asset":"demo","ttl":{ttl}}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "link ttl {ttl}: {link}");
        let body = format!(r#"{{"asset":"demo","audience":"public","ttl":{ttl}}}"#);
        let (s, _, share) = send(&w.app, "POST", "/v1/shares", Some(&minter), &[], &body).await;
        assert_eq!(
            (s, share["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "share ttl {ttl}, refused like a link's: {share}"
        );
        assert!(
            share["message"].as_str().unwrap().contains("between 600 and 1200"),
            "{share}"
        );
    }
    let (s, _, share) = send(
        &w.app,
        "POST",
        "/v1/shares",
        Some(&minter),
        &[],
        r#"{"asset":"demo","audience":"public","ttl":1200}"#,
    )
    .await;
    assert_eq!((s, share["ttl"].as_u64()), (StatusCode::CREATED, Some(1200)), "{share}");

    // The document says the same: refused, not clamped.
    let d = doc();
    let text = format!(
        "{} {}",
        d["paths"]["/v1/shares"]["post"]["description"].as_str().unwrap(),
        d["components"]["schemas"]["ShareRequest"]["properties"]["ttl"]["description"]
            .as_str()
            .unwrap()
    );
    assert!(!text.contains("clamped to"), "{text}");
    assert!(text.contains("400"), "{text}");
}
