//! The control-plane router in-process (`oneshot`, no socket): health, the auth matrix, and minting.
#![allow(clippy::unwrap_used)]

mod common;

use axum::http::StatusCode;
use common::service::{call, send, world};
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::revocations::link_key_hex;
use sharegate_control_plane::service::{AppState, LinkResponse};
use sharegate_control_plane::store::{Log, Ns, verify_chain};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::token::{Policy, TokenBuf, Verifier};
use std::sync::Arc;

/// The common service with `demo` registered, taken apart.
async fn setup() -> (axum::Router, Arc<AppState>, Vec<(Role, String)>, tempfile::TempDir) {
    let w = world().await;
    (w.app, w.state, w.keys, w.dir)
}

#[tokio::test]
async fn health_needs_no_key() {
    let (app, _, _, _dir) = setup().await;
    assert_eq!(call(&app, "GET", "/healthz", None, "").await.0, StatusCode::OK);
    let (s, body) = call(&app, "GET", "/readyz", None, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["store"], "redb");
}

#[tokio::test]
async fn links_need_a_minter_key() {
    let (app, _, keys, _dir) = setup().await;
    let body = r#"{"asset":"demo","ttl":600}"#;
    let (s, b) = call(&app, "POST", "/v1/links", None, body).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );
    let (s, b) = call(&app, "POST", "/v1/links", Some("sg_minter_not-a-real-key"), body).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("bad_credential"))
    );
    for (role, key) in &keys {
        let (s, b) = call(&app, "POST", "/v1/links", Some(key), body).await;
        if *role == Role::Minter {
            assert_eq!(s, StatusCode::OK, "{b}");
        } else {
            assert_eq!(
                (s, b["error"].as_str()),
                (StatusCode::FORBIDDEN, Some("forbidden")),
                "{role:?}"
            );
        }
    }
}

#[tokio::test]
async fn minting_records_the_token_and_audits() {
    let (app, state, keys, _dir) = setup().await;
    let minter = &keys[0].1;
    let (s, b) = call(
        &app,
        "POST",
        "/v1/links",
        Some(minter),
        r#"{"asset":"demo","ttl":900,"viewer":"v1","ip":"203.0.113.0/24"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let link: LinkResponse = serde_json::from_value(b).unwrap();
    assert!(link.url.ends_with(&format!("/t/{}/demo/master.m3u8", link.token)));
    let ring = KeyRing::with_active(4, SecretKey::new([7; 32]), 86_400);
    let mut buf = TokenBuf::new();
    let claims = Verifier::new(&ring, Policy::default())
        .authenticate(&link.token, &mut buf)
        .unwrap();
    assert_eq!(hex::encode(claims.token_id), link.token_id);
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(u64::from(claims.exp), link.expires_at);
    // The issued log has the token id before the link was returned.
    let issued = state.store.read_log(Log::Issued, 1, 10).await.unwrap();
    assert_eq!(issued.len(), 1);
    assert_eq!(hex::encode(&issued[0].1[..12]), link.token_id);
    let audit = state.store.read_chained(Log::Audit, 1, 10).await.unwrap();
    assert!(verify_chain(&audit).is_ok());
    assert!(
        audit
            .iter()
            .any(|e| String::from_utf8_lossy(&e.value).contains("links.mint"))
    );

    // Minting for an unknown asset is refused with the reason.
    let (s, b) = call(&app, "POST", "/v1/links", Some(minter), r#"{"asset":"nope"}"#).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("refused")),
        "{b}"
    );
    // Bad input: clear errors, nothing recorded.
    for body in [
        r#"{"asset":"demo","ttl":5}"#,
        r#"{"asset":"demo","ip":"nope"}"#,
        r#"{"asset":"demo","bogus":1}"#,
        "{",
    ] {
        let (s, b) = call(&app, "POST", "/v1/links", Some(minter), body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert_eq!(b["error"], "invalid_request");
    }
    assert_eq!(state.store.read_log(Log::Issued, 1, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn revocations_are_durable_numbered_idempotent_and_role_scoped() {
    let (app, state, keys, _dir) = setup().await;
    let key = |r: Role| keys.iter().find(|(k, _)| *k == r).map(|(_, v)| v.clone()).unwrap();
    let (s, b) = call(
        &app,
        "POST",
        "/v1/links",
        Some(&key(Role::Minter)),
        r#"{"asset":"demo","share":"sh-1"}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let token_id = b["token_id"].as_str().unwrap().to_string();
    let token = b["token"].as_str().unwrap().to_string();

    let body = format!(r#"{{"kind":"token","id":"{token_id}","reason":"leaked"}}"#);
    assert_eq!(
        call(&app, "POST", "/v1/revocations", None, &body).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "POST", "/v1/revocations", Some("sg_responder_nope"), &body)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    for r in [Role::Minter, Role::Admin, Role::Auditor] {
        assert_eq!(
            call(&app, "POST", "/v1/revocations", Some(&key(r)), &body).await.0,
            StatusCode::FORBIDDEN,
            "{r:?}"
        );
    }
    let (s, r1) = call(&app, "POST", "/v1/revocations", Some(&key(Role::Responder)), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{r1}");
    assert_eq!(r1["generation"], 1);
    assert_eq!(r1["target"], token_id.as_str());
    // By the token itself, and by share: the generation counts every revocation.
    let by_token = format!(r#"{{"kind":"token","token":"{token}"}}"#);
    let (_, r2) = call(&app, "POST", "/v1/revocations", Some(&key(Role::Responder)), &by_token).await;
    assert_eq!(r2["generation"], 2);
    let (_, r3) = call(
        &app,
        "POST",
        "/v1/revocations",
        Some(&key(Role::Responder)),
        r#"{"kind":"share","id":"sh-1"}"#,
    )
    .await;
    assert_eq!(r3["generation"], 3);
    // Receipts are readable by responders and auditors, not minters.
    let path = format!("/v1/revocations/{}", r1["id"].as_str().unwrap());
    assert_eq!(
        call(&app, "GET", &path, Some(&key(Role::Auditor)), "").await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "GET", &path, Some(&key(Role::Minter)), "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "GET", "/v1/revocations/rev_nope", Some(&key(Role::Auditor)), "")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Bad input is refused with a reason and changes nothing.
    for bad in [
        r#"{"kind":"token","id":"xyz"}"#,
        r#"{"kind":"bogus","id":"a"}"#,
        r#"{"kind":"share"}"#,
        r#"{"kind":"key_id","id":"70000"}"#,
        r#"{"kind":"token","token":"not-a-token"}"#,
    ] {
        let (s, b) = call(&app, "POST", "/v1/revocations", Some(&key(Role::Responder)), bad).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
    }
    assert_eq!(state.store.counter("state_generation").await.unwrap(), 3);
}

#[tokio::test]
async fn idempotency_key_returns_the_first_receipt() {
    let (app, state, keys, _dir) = setup().await;
    let responder = keys.iter().find(|(k, _)| *k == Role::Responder).unwrap().1.clone();
    let revoke = || {
        send(
            &app,
            "POST",
            "/v1/revocations",
            Some(&responder),
            &[("idempotency-key", "incident-42")],
            r#"{"kind":"viewer","id":"v-9"}"#,
        )
    };
    let (_, _, a) = revoke().await;
    let (_, _, b) = revoke().await;
    assert!(a["id"].is_string(), "{a}");
    assert_eq!(a["id"], b["id"]);
    assert_eq!(state.store.counter("state_generation").await.unwrap(), 1);
}

#[tokio::test]
async fn idempotency_keys_cover_every_mutating_call() {
    let (app, state, keys, _dir) = setup().await;
    let minter = keys.iter().find(|(k, _)| *k == Role::Minter).unwrap().1.clone();
    // (status, whether it was a replay, body)
    let mint = |body: &'static str, idem: &'static str| {
        let (app, minter) = (app.clone(), minter.clone());
        async move {
            let (s, h, b) = send(
                &app,
                "POST",
                "/v1/links",
                Some(&minter),
                &[("idempotency-key", idem)],
                body,
            )
            .await;
            (s, h.contains_key("idempotent-replay"), b)
        }
    };
    let (s1, r1, a) = mint(r#"{"asset":"demo"}"#, "k1").await;
    let (s2, r2, b) = mint(r#"{"asset":"demo"}"#, "k1").await;
    assert_eq!((s1, r1, s2, r2), (StatusCode::OK, false, StatusCode::OK, true));
    assert!(a["token"].is_string(), "{a}");
    assert_eq!(a["token"], b["token"], "a retry returns the first link");
    assert_eq!(
        state
            .store
            .read_log(sharegate_control_plane::store::Log::Issued, 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let (s3, _, c) = mint(r#"{"asset":"demo","ttl":900}"#, "k1").await;
    assert_eq!((s3, c["error"].as_str()), (StatusCode::CONFLICT, Some("conflict")));
    // A failed call is not remembered: the same key may be retried.
    let (s4, _, _) = mint(r#"{"asset":"nope"}"#, "k2").await;
    assert_eq!(s4, StatusCode::UNPROCESSABLE_ENTITY);
    let (s5, _, _) = mint(r#"{"asset":"demo"}"#, "k2").await;
    assert_eq!(s5, StatusCode::OK);
}

#[tokio::test]
async fn admins_change_link_settings_and_refused_calls_are_audited() {
    let (app, state, keys, _dir) = setup().await;
    let key = |r: Role| keys.iter().find(|(k, _)| *k == r).map(|(_, v)| v.clone()).unwrap();
    let (s, b) = call(&app, "GET", "/v1/settings", Some(&key(Role::Auditor)), "").await;
    assert_eq!((s, b["min_ttl"].as_u64()), (StatusCode::OK, Some(600)));
    let (s, _) = call(
        &app,
        "PUT",
        "/v1/settings",
        Some(&key(Role::Admin)),
        r#"{"min_ttl":60,"max_ttl":7200,"default_ttl":120}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = call(
        &app,
        "POST",
        "/v1/links",
        Some(&key(Role::Minter)),
        r#"{"asset":"demo","ttl":61}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, _) = call(
        &app,
        "POST",
        "/v1/links",
        Some(&key(Role::Minter)),
        r#"{"asset":"demo","ttl":7201}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for bad in [
        r#"{"min_ttl":0,"max_ttl":10,"default_ttl":5}"#,
        r#"{"min_ttl":10,"max_ttl":999999,"default_ttl":20}"#,
        r#"{"min_ttl":10,"max_ttl":20,"default_ttl":30}"#,
    ] {
        assert_eq!(
            call(&app, "PUT", "/v1/settings", Some(&key(Role::Admin)), bad).await.0,
            StatusCode::BAD_REQUEST,
            "{bad}"
        );
    }
    assert_eq!(
        call(
            &app,
            "PUT",
            "/v1/settings",
            Some(&key(Role::Auditor)),
            r#"{"min_ttl":1,"max_ttl":2,"default_ttl":1}"#
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    // Refused mutating calls are in the audit log too, with who tried.
    let audit = state
        .store
        .read_chained(sharegate_control_plane::store::Log::Audit, 1, 1000)
        .await
        .unwrap();
    assert!(verify_chain(&audit).is_ok());
    let text: Vec<String> = audit
        .iter()
        .map(|e| String::from_utf8_lossy(&e.value).to_string())
        .collect();
    assert!(text.iter().any(|t| t.contains("settings.update")));
    assert!(
        text.iter()
            .any(|t| t.contains("PUT /v1/settings") && t.contains("refused:403") && t.contains("auditor")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("POST /v1/links") && t.contains("refused:400"))
    );
}

/// Link records are keyed `<token id bytes 4–7>.<token id>` (hex), and a token id's bytes 4–7 are its mint time in
/// milliseconds, so records minted one after another sort one after another (the embedded store appends them
/// instead of writing a random B-tree leaf per mint). Records written under the earlier layout (the bare hex id)
/// are still found: revocation by id resolves them.
#[tokio::test]
async fn link_records_sort_by_mint_time_and_bare_id_records_still_resolve() {
    let (app, state, keys, _dir) = setup().await;
    let key = |r: Role| keys.iter().find(|(k, _)| *k == r).map(|(_, v)| v.clone()).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let (s, b) = call(
            &app,
            "POST",
            "/v1/links",
            Some(&key(Role::Minter)),
            r#"{"asset":"demo","viewer":"v1"}"#,
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        ids.push(b["token_id"].as_str().unwrap().to_string());
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let stored: Vec<String> = state
        .store
        .scan(Ns::Links, "")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let records: Vec<&String> = stored.iter().filter(|k| !k.starts_with("vt/")).collect();
    let expected: Vec<String> = ids.iter().map(|id| link_key_hex(id).unwrap()).collect();
    assert!(
        expected
            .iter()
            .zip(&ids)
            .all(|(k, id)| *k == format!("{}.{id}", &id[8..16])),
        "{expected:?}"
    );
    assert_eq!(records, expected.iter().collect::<Vec<_>>(), "records in mint order");
    // The viewer's index entries end with the same keys, in the same order.
    let index: Vec<&str> = stored
        .iter()
        .filter_map(|k| k.strip_prefix("vt/"))
        .map(|k| &k[k.len() - 33..])
        .collect();
    assert_eq!(index, expected.iter().map(String::as_str).collect::<Vec<_>>());

    // A record under the earlier layout: revocation by id still finds its iat, exp and share.
    let legacy = &ids[1];
    let rec = state.store.get(Ns::Links, &expected[1]).await.unwrap().unwrap();
    state.store.delete(Ns::Links, &expected[1]).await.unwrap();
    state.store.put(Ns::Links, legacy, &rec).await.unwrap();
    let body = format!(
        r#"{{"kind":"token","id":"{}","reason":"leaked"}}"#,
        legacy.to_uppercase()
    );
    let (s, b) = call(&app, "POST", "/v1/revocations", Some(&key(Role::Responder)), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Neither layout holds this one.
    let body = r#"{"kind":"token","id":"00000000000000000000000a","reason":"leaked"}"#;
    let (s, b) = call(&app, "POST", "/v1/revocations", Some(&key(Role::Responder)), body).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{b}"
    );
}
