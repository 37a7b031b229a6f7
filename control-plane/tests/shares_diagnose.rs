//! Shares (stable links that redirect to a fresh token URL) and diagnosis, through the router in-process.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::{HeaderMap, StatusCode};
use common::service::{World, call, ring, send, world};
use sharegate_control_plane::service::LinkResponse;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::revocations::link_key_hex;
use sharegate_control_plane::store::{Log, Ns};
use sharegate_control_plane::tokens::split_token_url;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{Claims, Minter, Permissions, Policy, Text, TokenBuf, Verifier};

async fn setup() -> World {
    world().await
}

async fn create_share(w: &World, body: &str) -> serde_json::Value {
    let (s, b) = call(&w.app, "POST", "/v1/shares", Some(w.key(Role::Minter)), body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

/// Open a share as a viewer; returns the status, the token of the redirect (if any) and the body.
async fn open(w: &World, id: &str, viewer: Option<&str>) -> (StatusCode, Option<String>, HeaderMap, serde_json::Value) {
    let headers: Vec<(&str, &str)> = viewer.map(|v| ("x-sharegate-viewer", v)).into_iter().collect();
    let (s, h, b) = send(&w.app, "GET", &format!("/s/{id}"), None, &headers, "").await;
    let token = h.get("location").map(|l| split_token_url(l.to_str().unwrap()).0);
    (s, token, h, b)
}

async fn diagnose(w: &World, body: serde_json::Value) -> serde_json::Value {
    let (s, b) = call(
        &w.app,
        "POST",
        "/v1/diagnose",
        Some(w.key(Role::Responder)),
        &body.to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

async fn mint(w: &World, body: &str) -> LinkResponse {
    let (s, b) = call(&w.app, "POST", "/v1/links", Some(w.key(Role::Minter)), body).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    serde_json::from_value(b).unwrap()
}

fn now() -> u64 {
    sharegate_control_plane::service::now()
}

#[tokio::test]
async fn a_share_redirects_each_open_to_a_fresh_token_url() {
    let w = setup().await;
    let share = create_share(
        &w,
        r#"{"asset":"demo","audience":"public","channel":"email","campaign":"spring","ttl":900}"#,
    )
    .await;
    let id = share["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("sh_") && id.len() == 19, "{id}");
    assert_eq!(share["url"], format!("http://127.0.0.1:7700/s/{id}"));
    assert_eq!(
        (share["asset"].as_str(), share["ttl"].as_u64()),
        (Some("demo"), Some(900))
    );

    let (s, token, headers, _) = open(&w, &id, None).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(headers["cache-control"], "no-store");
    let location = headers["location"].to_str().unwrap();
    assert!(location.starts_with("http://127.0.0.1:7701/t/"), "{location}");
    assert!(location.ends_with("/demo/master.m3u8"), "{location}");
    let token = token.unwrap();
    let mut buf = TokenBuf::new();
    let claims = Verifier::new(&ring(), Policy::default())
        .authenticate(&token, &mut buf)
        .unwrap();
    assert_eq!(claims.share.unwrap().as_str(), id);
    assert_eq!(claims.asset.unwrap().as_str(), "demo");
    assert_eq!(claims.channel.unwrap().as_str(), "email");
    assert_eq!(claims.campaign.unwrap().as_str(), "spring");
    assert!(claims.viewer.is_none());
    assert_eq!(claims.exp - claims.iat, 900);
    let token_id = hex::encode(claims.token_id);

    // Every open mints a new token, recorded before the redirect like a minted link.
    let (_, second, _, _) = open(&w, &id, Some("v9")).await;
    assert_ne!(second.unwrap(), token);
    let issued = w.state.store.read_log(Log::Issued, 1, 10).await.unwrap();
    assert_eq!(issued.len(), 2);
    assert_eq!(hex::encode(&issued[0].1[..12]), token_id);
    let link = w
        .state
        .store
        .get(Ns::Links, &link_key_hex(&token_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let link: serde_json::Value = serde_json::from_slice(&link).unwrap();
    assert_eq!(link["share"], id.as_str());

    // Readable by minters and auditors.
    for role in [Role::Minter, Role::Auditor] {
        let (s, b) = call(&w.app, "GET", &format!("/v1/shares/{id}"), Some(w.key(role)), "").await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            (b["id"].as_str(), b["audience"].as_str()),
            (Some(id.as_str()), Some("public"))
        );
    }
    let audit = w.state.store.read_chained(Log::Audit, 1, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| String::from_utf8_lossy(&e.value).contains("shares.create"))
    );

    // Unknown and malformed ids are plain 404s.
    for bad in ["sh_0000000000000000", "nope", "sh_..%2f"] {
        let (s, _, _, b) = open(&w, bad, None).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn audiences_decide_who_may_open() {
    let w = setup().await;
    let signed_in = create_share(&w, r#"{"asset":"demo","audience":"signed_in"}"#).await;
    let signed_in = signed_in["id"].as_str().unwrap();
    let id = signed_in;
    let (s, token, h, b) = open(&w, id, None).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("sign_in_required"))
    );
    assert!(token.is_none());
    assert_eq!(h["cache-control"], "no-store");
    let (s, token, _, _) = open(&w, id, Some("viewer-17")).await;
    assert_eq!(s, StatusCode::FOUND);
    let token = token.unwrap();
    let mut buf = TokenBuf::new();
    let c = Verifier::new(&ring(), Policy::default())
        .authenticate(&token, &mut buf)
        .unwrap();
    assert_eq!(c.viewer.unwrap().as_str(), "viewer-17");
    assert_eq!(c.exp - c.iat, 600, "default share token ttl");

    let invited = create_share(
        &w,
        r#"{"asset":"demo","audience":"invited","invited":["alice","carol"]}"#,
    )
    .await;
    let id = invited["id"].as_str().unwrap();
    assert_eq!(
        open(&w, id, None).await.3["error"],
        "sign_in_required",
        "an invited share needs a viewer"
    );
    let (s, _, _, b) = open(&w, id, Some("bob")).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::FORBIDDEN, Some("not_invited")));
    assert_eq!(open(&w, id, Some("alice")).await.0, StatusCode::FOUND);
    assert_eq!(open(&w, id, Some("carol")).await.0, StatusCode::FOUND);
    // A viewer id that cannot be a claim is a bad request, not a crash.
    let (s, _, _, b) = open(&w, signed_in, Some("al ice")).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{b}"
    );

    // Shares that could never be opened are refused when created: an unregistered asset (422, as for links)...
    let (s, b) = call(
        &w.app,
        "POST",
        "/v1/shares",
        Some(w.key(Role::Minter)),
        r#"{"asset":"nope","audience":"public"}"#,
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("refused")),
        "{b}"
    );
    // ... and anything malformed or out of range (400).
    let past = now() - 10;
    for body in [
        r#"{"asset":"demo","audience":"invited"}"#.to_string(),
        r#"{"asset":"../x","audience":"public"}"#.to_string(),
        r#"{"asset":"demo","audience":"public","invited":["x"]}"#.to_string(),
        r#"{"asset":"demo","audience":"everyone"}"#.to_string(),
        r#"{"asset":"demo","audience":"public","ttl":5}"#.to_string(),
        r#"{"asset":"demo","audience":"public","ttl":999999}"#.to_string(),
        r#"{"asset":"demo","audience":"public","bogus":1}"#.to_string(),
        r#"{"asset":"demo","audience":"invited","invited":["has space"]}"#.to_string(),
        format!(r#"{{"asset":"demo","audience":"public","expires_at":{past}}}"#),
        "{".to_string(),
    ] {
        let (s, b) = call(&w.app, "POST", "/v1/shares", Some(w.key(Role::Minter)), &body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{body}: {b}"
        );
    }
}

#[tokio::test]
async fn an_expired_share_is_gone_and_its_tokens_end_with_it() {
    let w = setup().await;
    let ends = now() + 120;
    let share = create_share(
        &w,
        &format!(r#"{{"asset":"demo","audience":"public","expires_at":{ends},"ttl":3600}}"#),
    )
    .await;
    let id = share["id"].as_str().unwrap();
    let (s, token, _, _) = open(&w, id, None).await;
    assert_eq!(s, StatusCode::FOUND);
    let token = token.unwrap();
    let mut buf = TokenBuf::new();
    let c = Verifier::new(&ring(), Policy::default())
        .authenticate(&token, &mut buf)
        .unwrap();
    assert_eq!(u64::from(c.exp), ends, "a token never outlives its share");

    // Move the expiry into the past (as time would).
    let mut rec: serde_json::Value =
        serde_json::from_slice(&w.state.store.get(Ns::Shares, id).await.unwrap().unwrap()).unwrap();
    rec["expires_at"] = serde_json::json!(now() - 1);
    w.state
        .store
        .put(Ns::Shares, id, &serde_json::to_vec(&rec).unwrap())
        .await
        .unwrap();
    let (s, token, h, b) = open(&w, id, None).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::GONE, Some("expired")));
    assert!(token.is_none());
    assert_eq!(h["cache-control"], "no-store");
}

#[tokio::test]
async fn deleting_a_share_revokes_its_tokens() {
    let w = setup().await;
    let share = create_share(&w, r#"{"asset":"demo","audience":"public"}"#).await;
    let id = share["id"].as_str().unwrap();
    let (_, token, _, _) = open(&w, id, None).await;
    let token = token.unwrap();
    assert_eq!(
        diagnose(&w, serde_json::json!({ "token": token })).await["decision"],
        "allow"
    );
    let before = w.state.store.counter("state_generation").await.unwrap();

    let (s, b) = call(
        &w.app,
        "DELETE",
        &format!("/v1/shares/{id}"),
        Some(w.key(Role::Responder)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["deleted_at"].as_u64().is_some());
    let receipt = &b["revocation_receipt"];
    assert_eq!(
        (receipt["kind"].as_str(), receipt["target"].as_str()),
        (Some("share"), Some(id))
    );
    assert_eq!(receipt["generation"].as_u64(), Some(before + 1));
    assert_eq!(b["revocation"], receipt["id"]);
    let rev_id = receipt["id"].as_str().unwrap().to_string();

    // The watermark is in the revocation log, and the generation is its sequence number.
    let generation = w.state.store.counter("state_generation").await.unwrap();
    assert_eq!(generation, before + 1);
    assert_eq!(w.state.store.last_seq(Log::Revocations).await.unwrap(), generation);
    let log = w.state.store.read_log(Log::Revocations, generation, 1).await.unwrap();
    let entry: serde_json::Value = serde_json::from_slice(&log[0].1).unwrap();
    assert_eq!(
        (entry["kind"].as_str(), entry["id"].as_str()),
        (Some("share"), Some(id))
    );
    assert!(entry["through"].as_u64().unwrap() >= now() - 5);
    // The same receipt is readable where every revocation is.
    let (s, r) = call(
        &w.app,
        "GET",
        &format!("/v1/revocations/{rev_id}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!((s, r["generation"].as_u64()), (StatusCode::OK, Some(generation)));

    // The link is dead, the record stays for the auditors, and a second delete changes nothing.
    assert_eq!(open(&w, id, None).await.0, StatusCode::NOT_FOUND);
    let (s, b) = call(
        &w.app,
        "GET",
        &format!("/v1/shares/{id}"),
        Some(w.key(Role::Auditor)),
        "",
    )
    .await;
    assert_eq!((s, b["revocation"].as_str()), (StatusCode::OK, Some(rev_id.as_str())));
    let (s, b) = call(
        &w.app,
        "DELETE",
        &format!("/v1/shares/{id}"),
        Some(w.key(Role::Minter)),
        "",
    )
    .await;
    assert_eq!(
        (s, b["revocation_receipt"]["id"].as_str()),
        (StatusCode::OK, Some(rev_id.as_str()))
    );
    assert_eq!(w.state.store.counter("state_generation").await.unwrap(), generation);

    // The token it handed out is now refused, and the diagnosis names the revocation.
    let d = diagnose(&w, serde_json::json!({ "token": token })).await;
    assert_eq!(
        (d["decision"].as_str(), d["reason"].as_str()),
        (Some("deny"), Some("revoked")),
        "{d}"
    );
    let text = d["explanation"].as_str().unwrap();
    assert!(
        text.contains(&rev_id) && text.contains("share deleted") && text.contains(id),
        "{text}"
    );

    let (s, _) = call(
        &w.app,
        "DELETE",
        "/v1/shares/sh_0000000000000000",
        Some(w.key(Role::Minter)),
        "",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let audit = w.state.store.read_chained(Log::Audit, 1, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|e| String::from_utf8_lossy(&e.value).contains("shares.delete"))
    );
}

#[tokio::test]
async fn diagnosis_explains_valid_tampered_expired_and_skewed_tokens() {
    let w = setup().await;
    let link = mint(&w, r#"{"asset":"demo","ttl":600,"viewer":"v1"}"#).await;
    let mut buf = TokenBuf::new();
    let c = Verifier::new(&ring(), Policy::default())
        .authenticate(&link.token, &mut buf)
        .unwrap();
    let (iat, exp) = (u64::from(c.iat), u64::from(c.exp));

    let d = diagnose(&w, serde_json::json!({ "url": link.url })).await;
    assert_eq!(
        (d["decision"].as_str(), d["status"].as_u64(), d["reason"].as_str()),
        (Some("allow"), Some(200), Some("ok")),
        "{d}"
    );
    assert_eq!(d["signature_valid"], true);
    assert_eq!(d["claims"]["asset"], "demo");
    assert_eq!(d["claims"]["token_id"], link.token_id.as_str());
    assert_eq!(d["resource"], "multivariant playlist");

    // Altered: one character of the tag changed. The claims still decode, and are shown.
    let mut bytes = link.token.clone().into_bytes();
    let i = bytes.len() - 6;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let d = diagnose(&w, serde_json::json!({ "token": tampered })).await;
    assert_eq!(
        (d["reason"].as_str(), d["status"].as_u64()),
        (Some("bad_signature"), Some(403)),
        "{d}"
    );
    assert_eq!(d["signature_valid"], false);
    assert_eq!(d["claims"]["asset"], "demo");
    assert_eq!(d["claims"]["viewer"], "v1");
    assert!(
        d["explanation"]
            .as_str()
            .unwrap()
            .starts_with("bad signature: the token was altered")
    );

    // Signed with another key under the same key id: also a bad signature, with the claims.
    let other = KeyRing::with_active(4, SecretKey::new([8; 32]), 86_400);
    let now32 = u32::try_from(now()).unwrap();
    let forged = Minter::new(&other, Policy::default())
        .unwrap()
        .mint(&Claims {
            token_id: [1; 12],
            iat: now32,
            nbf: now32,
            exp: now32 + 600,
            permissions: Permissions::PLAYBACK,
            asset: Some(Text::from("demo")),
            ..Claims::default()
        })
        .unwrap();
    let d = diagnose(&w, serde_json::json!({ "token": forged })).await;
    assert_eq!(d["reason"], "bad_signature");
    assert_eq!(d["claims"]["token_id"], hex::encode([1u8; 12]));

    // Expired ten minutes ago.
    let d = diagnose(&w, serde_json::json!({ "url": link.url, "at": exp + 600 })).await;
    assert_eq!(
        (d["reason"].as_str(), d["status"].as_u64()),
        (Some("expired"), Some(410)),
        "{d}"
    );
    let text = d["explanation"].as_str().unwrap();
    assert!(text.starts_with("expired 10 min ago at "), "{text}");
    assert_eq!(d["clock_skew_suspected"], false);

    // Checked two minutes before it was issued: past the minute of leeway, and it smells of clock skew.
    let d = diagnose(&w, serde_json::json!({ "url": link.url, "at": iat - 120 })).await;
    assert_eq!(d["reason"], "not_yet_valid", "{d}");
    assert_eq!(d["clock_skew_suspected"], true);
    let text = d["explanation"].as_str().unwrap();
    assert!(text.contains("valid from") && text.contains("off by 120 s"), "{text}");
    // A day early is not skew.
    let d = diagnose(&w, serde_json::json!({ "url": link.url, "at": iat - 86_400 })).await;
    assert_eq!(
        (d["reason"].as_str(), d["clock_skew_suspected"].as_bool()),
        (Some("not_yet_valid"), Some(false))
    );

    // A tampered token that is also expired says so in a hint.
    let d = diagnose(&w, serde_json::json!({ "token": tampered, "at": exp + 3600 })).await;
    assert_eq!(d["reason"], "bad_signature");
    assert!(
        d["hints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("would also be refused: expired")),
        "{d}"
    );
}

#[tokio::test]
async fn diagnosis_names_the_revocation_and_the_wrong_asset() {
    let w = setup().await;
    let link = mint(&w, r#"{"asset":"demo","ttl":600}"#).await;
    let (s, receipt) = call(
        &w.app,
        "POST",
        "/v1/revocations",
        Some(w.key(Role::Responder)),
        &serde_json::json!({ "kind": "token", "token": link.url, "reason": "leaked on a forum" }).to_string(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{receipt}");
    let rev_id = receipt["id"].as_str().unwrap();
    let d = diagnose(&w, serde_json::json!({ "url": link.url })).await;
    assert_eq!(
        (d["reason"].as_str(), d["status"].as_u64()),
        (Some("revoked"), Some(403)),
        "{d}"
    );
    let text = d["explanation"].as_str().unwrap();
    assert!(text.starts_with("revoked by "), "{text}");
    assert!(text.contains(rev_id) && text.contains("leaked on a forum"), "{text}");
    assert_eq!(d["revocation"]["id"], rev_id);

    // A campaign watermark: the receipt is found by scope, not by token.
    let camp = mint(&w, r#"{"asset":"demo","ttl":600,"campaign":"spring"}"#).await;
    let (_, receipt) = call(
        &w.app,
        "POST",
        "/v1/revocations",
        Some(w.key(Role::Responder)),
        r#"{"kind":"campaign","id":"spring","reason":"campaign over"}"#,
    )
    .await;
    let d = diagnose(&w, serde_json::json!({ "token": camp.token })).await;
    assert_eq!(d["reason"], "revoked");
    assert_eq!(d["revocation"]["id"], receipt["id"]);
    assert!(d["explanation"].as_str().unwrap().contains("campaign spring"), "{d}");

    // The right token for another asset.
    let other = mint(&w, r#"{"asset":"demo","ttl":600}"#).await;
    let wrong_url = other.url.replace("/demo/master.m3u8", "/other/master.m3u8");
    for body in [
        serde_json::json!({ "url": wrong_url }),
        serde_json::json!({ "token": other.token, "path": "/other/v0/seg_001.ts" }),
    ] {
        let d = diagnose(&w, body).await;
        assert_eq!(d["reason"], "out_of_scope", "{d}");
        assert_eq!(d["explanation"], "this token is for asset demo, the URL asks for other");
    }

    // No token; a share link; a bad path; bad input.
    let d = diagnose(
        &w,
        serde_json::json!({ "url": "https://cdn.example.com/demo/master.m3u8" }),
    )
    .await;
    assert_eq!(
        (d["reason"].as_str(), d["status"].as_u64()),
        (Some("missing_token"), Some(401))
    );
    let share = create_share(&w, r#"{"asset":"demo","audience":"public"}"#).await;
    let d = diagnose(&w, serde_json::json!({ "url": share["url"] })).await;
    assert_eq!(d["reason"], "missing_token");
    assert!(d["explanation"].as_str().unwrap().contains("share link"), "{d}");
    assert!(d["hints"][0].as_str().unwrap().contains("is active"), "{d}");
    let d = diagnose(
        &w,
        serde_json::json!({ "token": other.token, "path": "/demo/../x/master.m3u8" }),
    )
    .await;
    assert_eq!(
        (d["reason"].as_str(), d["status"].as_u64()),
        (Some("bad_path"), Some(400))
    );
    let d = diagnose(&w, serde_json::json!({ "token": "not-a-token" })).await;
    assert_eq!(
        (d["reason"].as_str(), d["claims"].is_null()),
        (Some("malformed"), true),
        "{d}"
    );
    // The OpenAPI lists these as required (nullable): present as null, never left out.
    for key in ["claims", "path", "resource", "revocation"] {
        assert!(d.as_object().is_some_and(|o| o.contains_key(key)), "{key} missing: {d}");
    }
    for body in [
        "{}".to_string(),
        serde_json::json!({ "url": other.url, "token": other.token }).to_string(),
        serde_json::json!({ "token": other.token, "client_ip": "nope" }).to_string(),
        serde_json::json!({ "token": other.token, "country": "USA" }).to_string(),
        serde_json::json!({ "token": other.token, "bogus": 1 }).to_string(),
    ] {
        let (s, b) = call(&w.app, "POST", "/v1/diagnose", Some(w.key(Role::Auditor)), &body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
    }
}

#[tokio::test]
async fn bindings_are_explained() {
    let w = setup().await;
    let link = mint(
        &w,
        r#"{"asset":"demo","ttl":600,"ip":"203.0.113.0/24","allow_countries":["FR","DE"]}"#,
    )
    .await;
    let d = diagnose(
        &w,
        serde_json::json!({ "url": link.url, "client_ip": "198.51.100.7", "country": "FR" }),
    )
    .await;
    assert_eq!(d["reason"], "ip_mismatch");
    assert!(d["explanation"].as_str().unwrap().contains("203.0.113.0/24"), "{d}");
    let d = diagnose(
        &w,
        serde_json::json!({ "url": link.url, "client_ip": "203.0.113.7", "country": "us" }),
    )
    .await;
    assert_eq!(d["reason"], "geo_denied");
    assert!(d["explanation"].as_str().unwrap().contains("FR, DE"), "{d}");
    let d = diagnose(
        &w,
        serde_json::json!({ "url": link.url, "client_ip": "203.0.113.7", "country": "DE" }),
    )
    .await;
    assert_eq!(d["decision"], "allow", "{d}");
}

#[tokio::test]
async fn every_keyed_route_checks_key_and_role() {
    let w = setup().await;
    let share = create_share(&w, r#"{"asset":"demo","audience":"public"}"#).await;
    let id = share["id"].as_str().unwrap();
    let link = mint(&w, r#"{"asset":"demo","ttl":600}"#).await;
    let diag = serde_json::json!({ "url": link.url }).to_string();
    let share_body = r#"{"asset":"demo","audience":"public"}"#;
    let item = format!("/v1/shares/{id}");
    let routes: [(&str, &str, &str, &[Role]); 4] = [
        ("POST", "/v1/shares", share_body, &[Role::Minter]),
        ("GET", &item, "", &[Role::Minter, Role::Auditor]),
        (
            "POST",
            "/v1/diagnose",
            &diag,
            &[Role::Responder, Role::Auditor, Role::Minter],
        ),
        // Last: a delete that succeeds ends the share.
        ("DELETE", &item, "", &[Role::Minter, Role::Responder]),
    ];
    for (method, uri, body, allowed) in routes {
        let (s, b) = call(&w.app, method, uri, None, body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{method} {uri}"
        );
        let (s, b) = call(&w.app, method, uri, Some("sg_minter_not-a-real-key"), body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("bad_credential")),
            "{method} {uri}"
        );
        for (role, key) in &w.keys {
            let (s, b) = call(&w.app, method, uri, Some(key), body).await;
            if allowed.contains(role) {
                assert!(s.is_success(), "{method} {uri} as {role:?}: {s} {b}");
            } else {
                assert_eq!(
                    (s, b["error"].as_str()),
                    (StatusCode::FORBIDDEN, Some("forbidden")),
                    "{method} {uri} as {role:?}"
                );
            }
        }
    }
    // The viewer route needs no key, and ignores one.
    let other = create_share(&w, share_body).await;
    let (s, _) = call(
        &w.app,
        "GET",
        &format!("/s/{}", other["id"].as_str().unwrap()),
        None,
        "",
    )
    .await;
    assert_eq!(s, StatusCode::FOUND);
}
