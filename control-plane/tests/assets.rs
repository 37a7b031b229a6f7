//! Asset registration and the readiness check, driven through the router in-process (`oneshot`): crafted origins
//! in temporary directories for every problem code, an HTTP origin served by a small axum server (which also
//! counts requests in flight to prove the check's concurrency bound), the auth matrix, and `ensure_ready`.
#![allow(clippy::unwrap_used)]

mod common;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::service::{call, key_of as key, world_with};
use sharegate_control_plane::service::assets::ensure_ready;
use sharegate_control_plane::service::auth::Role;
use sharegate_control_plane::service::error::ApiError;
use sharegate_control_plane::service::readiness::CHECK_CONCURRENCY;
use sharegate_control_plane::service::{AppState, ServiceConfig};
use sharegate_control_plane::store::Log;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// The common service, without the `demo` asset (these tests register their own).
async fn setup() -> (axum::Router, Arc<AppState>, Vec<(Role, String)>, tempfile::TempDir) {
    let w = world_with(ServiceConfig::default(), |_| {}).await;
    (w.app, w.state, w.keys, w.dir)
}

async fn register(app: &axum::Router, admin: &str, body: serde_json::Value) -> (StatusCode, serde_json::Value) {
    call(app, "POST", "/v1/assets", Some(admin), &body.to_string()).await
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn media(target: u32, segments: &[&str], endlist: bool) -> String {
    let mut s = format!("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-PLAYLIST-TYPE:VOD\n");
    for seg in segments {
        s.push_str(&format!("#EXTINF:4.0,\n{seg}\n"));
    }
    if endlist {
        s.push_str("#EXT-X-ENDLIST\n");
    }
    s
}

const MASTER: &str = "#EXTM3U\n\
    #EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nv0/index.m3u8\n\
    #EXT-X-STREAM-INF:BANDWIDTH=2000000,RESOLUTION=1280x720\nv1/index.m3u8\n";

/// A good two-rendition VOD of `n` segments per rendition under `root/id/`; rendition v1 uses an init section.
fn write_vod(root: &Path, id: &str, n: usize) {
    write(root, &format!("{id}/master.m3u8"), MASTER);
    let names: Vec<String> = (0..n).map(|i| format!("seg{i}.ts")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    write(root, &format!("{id}/v0/index.m3u8"), &media(4, &names, true));
    let v1 = media(4, &names, true).replace(
        "#EXT-X-PLAYLIST-TYPE:VOD\n",
        "#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n",
    );
    write(root, &format!("{id}/v1/index.m3u8"), &v1);
    write(root, &format!("{id}/v1/init.mp4"), "init");
    for v in ["v0", "v1"] {
        for name in &names {
            write(root, &format!("{id}/{v}/{name}"), "x");
        }
    }
}

fn codes(rec: &serde_json::Value) -> Vec<String> {
    rec["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap().to_string())
        .collect()
}

fn detail<'a>(rec: &'a serde_json::Value, code: &str) -> &'a str {
    rec["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["code"] == code)
        .and_then(|p| p["detail"].as_str())
        .unwrap_or_else(|| panic!("no `{code}` in {rec}"))
}

fn origin(dir: &Path) -> String {
    dir.to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_good_vod_is_ready_and_registration_is_idempotent() {
    let (app, state, keys, _dir) = setup().await;
    let admin = key(&keys, Role::Admin);
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(media_dir.path(), "demo", 3);
    let body = serde_json::json!({ "id": "demo", "origin": origin(media_dir.path()) });
    let (s, rec) = register(&app, admin, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["ready"], true, "{rec}");
    assert_eq!(rec["kind"], "vod");
    assert_eq!(rec["multivariant"], "master.m3u8");
    assert_eq!(
        (rec["renditions"].as_u64(), rec["segments"].as_u64()),
        (Some(2), Some(6))
    );
    assert!(codes(&rec).is_empty());
    ensure_ready(&state, "demo").await.unwrap();

    // Again, with another origin: an update (200), same registration time, new origin, checked again.
    let other = tempfile::tempdir().unwrap();
    let (s, rec2) = register(
        &app,
        admin,
        serde_json::json!({ "id": "demo", "origin": origin(other.path()) }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rec2}");
    assert_eq!(rec2["registered_at"], rec["registered_at"]);
    assert_eq!(rec2["origin"], origin(other.path()));
    assert_eq!(codes(&rec2), ["multivariant_unreachable"]);
    assert!(matches!(ensure_ready(&state, "demo").await, Err(ApiError::Refused(_))));

    // Readable by the roles that need it; the store holds what the API returned.
    let (s, got) = call(&app, "GET", "/v1/assets/demo", Some(key(&keys, Role::Minter)), "").await;
    assert_eq!((s, &got), (StatusCode::OK, &rec2));

    // Both registrations are in the audit log.
    let audit = state.store.read_chained(Log::Audit, 1, 10).await.unwrap();
    let n = audit
        .iter()
        .filter(|e| String::from_utf8_lossy(&e.value).contains("\"assets.register\""))
        .count();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_recheck_sees_a_fixed_origin() {
    let (app, state, keys, _dir) = setup().await;
    let admin = key(&keys, Role::Admin);
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(media_dir.path(), "demo", 3);
    std::fs::remove_file(media_dir.path().join("demo/v1/seg1.ts")).unwrap();
    let (s, rec) = register(
        &app,
        admin,
        serde_json::json!({ "id": "demo", "origin": origin(media_dir.path()) }),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(codes(&rec), ["segment_missing"]);
    assert!(detail(&rec, "segment_missing").contains("/demo/v1/seg1.ts"), "{rec}");
    let Err(ApiError::Refused(msg)) = ensure_ready(&state, "demo").await else {
        panic!("not refused")
    };
    assert!(
        msg.contains("not ready") && msg.contains("segment_missing") && msg.contains("seg1.ts"),
        "{msg}"
    );

    write(media_dir.path(), "demo/v1/seg1.ts", "x");
    let (s, rec) = call(&app, "POST", "/v1/assets/demo/check", Some(admin), "").await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["ready"], true, "{rec}");
    ensure_ready(&state, "demo").await.unwrap();
    let audit = state.store.read_chained(Log::Audit, 1, 10).await.unwrap();
    assert!(String::from_utf8_lossy(&audit[1].value).contains("assets.check"));

    let (s, _) = call(&app, "POST", "/v1/assets/nope/check", Some(admin), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ensure_ready_refuses_unknown_assets() {
    let (_, state, _, _dir) = setup().await;
    for asset in ["nope", "../x", ""] {
        match ensure_ready(&state, asset).await {
            Err(e @ ApiError::Refused(_)) => {
                assert_eq!(e.to_string(), format!("asset `{asset}` is not registered"));
                assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
            }
            other => panic!("{other:?}"),
        }
    }
}

/// One crafted origin per problem code: `(what to do to a good VOD, kind, expected codes)`.
#[tokio::test]
async fn each_problem_code_is_flagged() {
    let (app, _state, keys, _dir) = setup().await;
    let admin = key(&keys, Role::Admin);
    type Craft = fn(&Path);
    let cases: Vec<(&str, Craft, &str, &[&str])> = vec![
        (
            "missing-seg",
            |r| std::fs::remove_file(r.join("v0/seg2.ts")).unwrap(),
            "vod",
            &["segment_missing"],
        ),
        (
            "missing-init",
            |r| std::fs::remove_file(r.join("v1/init.mp4")).unwrap(),
            "vod",
            &["segment_missing"],
        ),
        (
            "no-endlist",
            |r| write(r, "v1/index.m3u8", &media(4, &["seg0.ts", "seg1.ts", "seg2.ts"], false)),
            "vod",
            &["missing_endlist"],
        ),
        (
            "live-no-endlist",
            |r| {
                write(r, "v0/index.m3u8", &media(4, &["seg0.ts", "seg1.ts"], false));
                write(r, "v1/index.m3u8", &media(4, &["seg0.ts", "seg1.ts", "seg2.ts"], false));
            },
            "live",
            &[],
        ),
        (
            "mismatch",
            |r| write(r, "v1/index.m3u8", &media(4, &["seg0.ts", "seg1.ts"], true)),
            "vod",
            &["segment_count_mismatch"],
        ),
        (
            "long-target",
            |r| write(r, "v0/index.m3u8", &media(30, &["seg0.ts", "seg1.ts", "seg2.ts"], true)),
            "vod",
            &["target_duration_out_of_profile"],
        ),
        (
            "no-target",
            |r| {
                let m = media(4, &["seg0.ts", "seg1.ts", "seg2.ts"], true).replace("#EXT-X-TARGETDURATION:4\n", "");
                write(r, "v0/index.m3u8", &m);
            },
            "vod",
            &["target_duration_out_of_profile"],
        ),
        (
            "unreachable",
            |r| std::fs::remove_file(r.join("master.m3u8")).unwrap(),
            "vod",
            &["multivariant_unreachable"],
        ),
        (
            "media-master",
            |r| write(r, "master.m3u8", &media(4, &["v0/seg0.ts"], true)),
            "vod",
            &["not_multivariant"],
        ),
        (
            "garbage-master",
            |r| write(r, "master.m3u8", "<html>hello</html>"),
            "vod",
            &["not_multivariant"],
        ),
        (
            "no-variant",
            |r| {
                write(
                    r,
                    "master.m3u8",
                    &MASTER.replace("v0/index.m3u8", "").replace("v1/index.m3u8", ""),
                )
            },
            "vod",
            &["not_multivariant"],
        ),
        (
            "no-media",
            |r| std::fs::remove_file(r.join("v1/index.m3u8")).unwrap(),
            "vod",
            &["media_playlist_unreachable"],
        ),
        (
            "invalid-media",
            |r| write(r, "v1/index.m3u8", MASTER),
            "vod",
            &["invalid_media_playlist"],
        ),
        (
            "dotdot",
            |r| {
                // The target exists: the `..` is refused for what it is, not because the file is absent.
                write(r, "../secret.ts", "s");
                write(
                    r,
                    "v0/index.m3u8",
                    &media(4, &["seg0.ts", "seg1.ts", "../../secret.ts"], true),
                );
            },
            "vod",
            &["unsafe_uri"],
        ),
        (
            "outside-asset",
            |r| {
                write(
                    r,
                    "master.m3u8",
                    &MASTER.replace("v1/index.m3u8", "/other/v1/index.m3u8"),
                )
            },
            "vod",
            &["unsafe_uri"],
        ),
        (
            "too-large",
            |r| write(r, "master.m3u8", &format!("{MASTER}#{}\n", "x".repeat(4 << 20))),
            "vod",
            &["too_large"],
        ),
    ];
    for (id, craft, kind, want) in cases {
        let media_dir = tempfile::tempdir().unwrap();
        write_vod(media_dir.path(), id, 3);
        craft(&media_dir.path().join(id));
        let (s, rec) = register(
            &app,
            admin,
            serde_json::json!({ "id": id, "origin": origin(media_dir.path()), "kind": kind }),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{id}: {rec}");
        assert_eq!(codes(&rec), want, "{id}: {rec}");
        assert_eq!(rec["ready"], want.is_empty(), "{id}: {rec}");
    }
}

#[tokio::test]
async fn a_dotdot_uri_never_reaches_outside_the_origin() {
    let (app, _state, keys, _dir) = setup().await;
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(media_dir.path(), "demo", 2);
    write(
        media_dir.path(),
        "demo/v0/index.m3u8",
        &media(4, &["seg0.ts", "..%2F..%2Fx.ts", "%2e%2e/seg1.ts"], true),
    );
    let (_, rec) = register(
        &app,
        key(&keys, Role::Admin),
        serde_json::json!({ "id": "demo", "origin": origin(media_dir.path()) }),
    )
    .await;
    let d = detail(&rec, "unsafe_uri");
    assert!(d.starts_with("2 found"), "{d}");
    assert!(d.contains("encoded_slash") && d.contains("dot_segment"), "{d}");
}

#[tokio::test]
async fn bad_registrations_are_invalid_requests() {
    let (app, _state, keys, _dir) = setup().await;
    let admin = key(&keys, Role::Admin);
    let long = "x".repeat(65);
    for body in [
        serde_json::json!({ "id": "..", "origin": "/srv" }),
        serde_json::json!({ "id": "a/b", "origin": "/srv" }),
        serde_json::json!({ "id": long, "origin": "/srv" }),
        serde_json::json!({ "id": "demo", "origin": "ftp://example.com" }),
        serde_json::json!({ "id": "demo", "origin": "relative/dir" }),
        serde_json::json!({ "id": "demo", "origin": "https://u:p@example.com" }),
        serde_json::json!({ "id": "demo", "origin": "/srv", "kind": "podcast" }),
        serde_json::json!({ "id": "demo", "origin": "/srv", "multivariant": "../m.m3u8" }),
        serde_json::json!({ "id": "demo", "origin": "/srv", "bogus": 1 }),
    ] {
        let (s, b) = register(&app, admin, body.clone()).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_request")),
            "{body}"
        );
    }
    let (s, _) = call(&app, "POST", "/v1/assets", Some(admin), "{").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call(&app, "GET", "/v1/assets/nope", Some(admin), "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_route_checks_key_and_role() {
    let (app, _state, keys, _dir) = setup().await;
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(media_dir.path(), "demo", 1);
    let body = serde_json::json!({ "id": "demo", "origin": origin(media_dir.path()) }).to_string();
    let routes: [(&str, &str, &str, &[Role]); 3] = [
        ("POST", "/v1/assets", body.as_str(), &[Role::Admin]),
        (
            "GET",
            "/v1/assets/demo",
            "",
            &[Role::Admin, Role::Minter, Role::Auditor],
        ),
        ("POST", "/v1/assets/demo/check", "", &[Role::Admin]),
    ];
    for (method, uri, body, allowed) in routes {
        let (s, b) = call(&app, method, uri, None, body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{uri}"
        );
        let (s, b) = call(&app, method, uri, Some("sg_admin_not-a-real-key"), body).await;
        assert_eq!(
            (s, b["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("bad_credential")),
            "{uri}"
        );
        for (role, key) in &keys {
            let (s, b) = call(&app, method, uri, Some(key), body).await;
            if allowed.contains(role) {
                assert!(s.is_success(), "{method} {uri} as {role:?}: {s} {b}");
            } else {
                assert_eq!(
                    (s, b["error"].as_str()),
                    (StatusCode::FORBIDDEN, Some("forbidden")),
                    "{uri} {role:?}"
                );
            }
        }
    }
}

/// A test origin: serves `root`, sleeps a little per request so requests overlap, and records the most in flight.
#[derive(Clone)]
struct Origin {
    root: PathBuf,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    ranged_gets: Arc<AtomicUsize>,
    refuse_head: Arc<AtomicBool>,
}

async fn serve(State(o): State<Origin>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let now = o.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    o.max_in_flight.fetch_max(now, Ordering::SeqCst);
    o.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(15)).await;
    let resp = if method == Method::HEAD && o.refuse_head.load(Ordering::SeqCst) {
        StatusCode::METHOD_NOT_ALLOWED.into_response()
    } else {
        match std::fs::read(o.root.join(uri.path().trim_start_matches('/'))) {
            Ok(bytes) if headers.contains_key("range") => {
                o.ranged_gets.fetch_add(1, Ordering::SeqCst);
                (StatusCode::PARTIAL_CONTENT, bytes[..1].to_vec()).into_response()
            }
            Ok(bytes) => bytes.into_response(),
            Err(_) => StatusCode::NOT_FOUND.into_response(),
        }
    };
    o.in_flight.fetch_sub(1, Ordering::SeqCst);
    resp
}

async fn start_origin(root: &Path) -> (String, Origin) {
    let o = Origin {
        root: root.to_path_buf(),
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
        requests: Arc::default(),
        ranged_gets: Arc::default(),
        refuse_head: Arc::default(),
    };
    let app = axum::Router::new().fallback(serve).with_state(o.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http_origin_is_checked_with_bounded_concurrency() {
    let (app, _state, keys, _dir) = setup().await;
    let admin = key(&keys, Role::Admin);
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(&media_dir.path().join("base"), "demo", 20);
    let (url, o) = start_origin(media_dir.path()).await;
    let body = serde_json::json!({ "id": "demo", "origin": format!("{url}/base/") });
    let (s, rec) = register(&app, admin, body.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{rec}");
    assert_eq!(rec["ready"], true, "{rec}");
    assert_eq!(rec["segments"], 40);
    // Master, 2 media playlists, 40 segments and an init section.
    assert_eq!(o.requests.load(Ordering::SeqCst), 44);
    let max = o.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=CHECK_CONCURRENCY).contains(&max), "max in flight {max}");

    // An origin that refuses HEAD is asked for one byte instead.
    o.refuse_head.store(true, Ordering::SeqCst);
    let (s, rec) = register(&app, admin, body.clone()).await;
    assert_eq!(
        (s, &rec["ready"]),
        (StatusCode::OK, &serde_json::Value::Bool(true)),
        "{rec}"
    );
    assert_eq!(o.ranged_gets.load(Ordering::SeqCst), 41);
    assert!(o.max_in_flight.load(Ordering::SeqCst) <= CHECK_CONCURRENCY);
    o.refuse_head.store(false, Ordering::SeqCst);

    // Missing segments over HTTP, listed in playlist order, the first few only.
    for i in 3..10 {
        std::fs::remove_file(media_dir.path().join(format!("base/demo/v0/seg{i}.ts"))).unwrap();
    }
    let (_, rec) = register(&app, admin, body).await;
    assert_eq!(codes(&rec), ["segment_missing"]);
    let d = detail(&rec, "segment_missing");
    assert!(d.starts_with("7 found: ") && d.ends_with("and 2 more"), "{d}");
    assert!(
        d.contains("/base/demo/v0/seg3.ts (HTTP 404)") && !d.contains("seg9.ts"),
        "{d}"
    );

    // A media playlist that isn't there, and an origin that isn't listening.
    std::fs::remove_file(media_dir.path().join("base/demo/v1/index.m3u8")).unwrap();
    let (_, rec) = register(
        &app,
        admin,
        serde_json::json!({ "id": "demo", "origin": format!("{url}/base") }),
    )
    .await;
    assert!(codes(&rec).contains(&"media_playlist_unreachable".to_string()), "{rec}");
    assert!(detail(&rec, "media_playlist_unreachable").contains("HTTP 404"), "{rec}");
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_, rec) = register(&app, admin, serde_json::json!({ "id": "demo", "origin": dead })).await;
    assert_eq!(codes(&rec), ["multivariant_unreachable"], "{rec}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_uris_on_other_hosts_are_checked_as_they_are() {
    let (app, _state, keys, _dir) = setup().await;
    let cdn = tempfile::tempdir().unwrap();
    write(cdn.path(), "shared/seg0.ts", "x");
    let (url, o) = start_origin(cdn.path()).await;
    let media_dir = tempfile::tempdir().unwrap();
    write_vod(media_dir.path(), "demo", 1);
    let abs = |name: &str| format!("{url}/shared/{name}");
    for v in ["v0", "v1"] {
        write(
            media_dir.path(),
            &format!("demo/{v}/index.m3u8"),
            &media(4, &[&abs("seg0.ts"), &abs("seg1.ts")], true),
        );
    }
    let (_, rec) = register(
        &app,
        key(&keys, Role::Admin),
        serde_json::json!({ "id": "demo", "origin": origin(media_dir.path()) }),
    )
    .await;
    assert_eq!(codes(&rec), ["segment_missing"], "{rec}");
    // Each distinct URI once, though both renditions list it.
    assert_eq!(
        detail(&rec, "segment_missing"),
        format!("{} (HTTP 404)", abs("seg1.ts"))
    );
    assert_eq!(o.requests.load(Ordering::SeqCst), 2);
}
