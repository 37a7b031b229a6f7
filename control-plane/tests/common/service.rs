//! The service in-process, as most of these tests drive it (axum's `examples/testing`): the router over the
//! embedded store with one API key per role and, for most, a tiny ready VOD asset `demo`; requests go through
//! `oneshot`, no socket.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use sharegate_control_plane::service::auth::{Role, new_key, store_key};
use sharegate_control_plane::service::{AppState, ServiceConfig, router};
use sharegate_control_plane::store::{Store, open_store};
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::Policy;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

/// Every role, in the order [`World::keys`] lists them.
pub const ROLES: [Role; 5] = [
    Role::Minter,
    Role::Responder,
    Role::Admin,
    Role::Auditor,
    Role::Entitlement,
];

/// The signing secret of [`ring`]'s key.
pub const SECRET: [u8; 32] = [7; 32];

/// The startup signing ring: key id 4 with [`SECRET`], tokens up to a day.
pub fn ring() -> KeyRing {
    KeyRing::with_active(4, SecretKey::new(SECRET), 86_400)
}

/// The revocation state's MAC key.
pub fn state_key() -> StateKey {
    StateKey::new([9; 32])
}

/// Service state over `store` with `config`, the test [`ring`], the default policy and [`state_key`].
pub fn app_state(store: Arc<dyn Store>, config: ServiceConfig) -> AppState {
    AppState::new(store, config, &ring(), Policy::default(), state_key()).unwrap()
}

/// A new API key for each of `roles`, stored.
pub async fn api_keys(store: &dyn Store, roles: &[Role]) -> Vec<(Role, String)> {
    let mut keys = Vec::new();
    for &role in roles {
        let (key, rec) = new_key(role, "test", 0).unwrap();
        store_key(store, &key, &rec).await.unwrap();
        keys.push((role, key));
    }
    keys
}

/// The key of `role` in a list from [`api_keys`].
pub fn key_of(keys: &[(Role, String)], role: Role) -> &str {
    &keys.iter().find(|(r, _)| *r == role).unwrap().1
}

/// Write the tiny ready VOD `demo` (one variant, one two-second segment) under `media/demo/`.
pub fn write_demo(media: &Path) {
    for (path, body) in [
        (
            "demo/master.m3u8",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nv0/index.m3u8\n",
        ),
        (
            "demo/v0/index.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\nseg_000.ts\n#EXT-X-ENDLIST\n",
        ),
        ("demo/v0/seg_000.ts", "segment"),
    ] {
        let p = media.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }
}

/// Register `demo` from the directory origin `media` through the API as `admin`; it must be created ready (links
/// and shares need a ready asset).
pub async fn register_demo(app: &Router, admin: &str, media: &Path) {
    let body = serde_json::json!({"id": "demo", "origin": media.to_str().unwrap()}).to_string();
    let (s, b) = call(app, "POST", "/v1/assets", Some(admin), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["ready"], true, "{b}");
}

/// A service: its router, state, one key per role ([`ROLES`]) and the directory its store (and media) live in.
pub struct World {
    pub app: Router,
    pub state: Arc<AppState>,
    pub keys: Vec<(Role, String)>,
    pub dir: tempfile::TempDir,
}

impl World {
    /// The API key of `role`.
    pub fn key(&self, role: Role) -> &str {
        key_of(&self.keys, role)
    }

    /// Where [`world`] wrote the `demo` asset.
    pub fn media(&self) -> PathBuf {
        self.dir.path().join("media")
    }
}

/// A service over a fresh embedded store with `config`; `adjust` sets what `AppState::new` leaves at its default
/// (an outbox, a master key, a clock offset). No asset is registered.
pub async fn world_with(config: ServiceConfig, adjust: impl FnOnce(&mut AppState)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store("", dir.path()).await.unwrap();
    let mut state = app_state(store.clone(), config);
    adjust(&mut state);
    let state = Arc::new(state);
    let keys = api_keys(store.as_ref(), &ROLES).await;
    World {
        app: router(state.clone()),
        state,
        keys,
        dir,
    }
}

/// A service with `config` and the `demo` asset registered ready, over `store` (Redis, say) or, when none, a fresh
/// embedded store; one key per role ([`ROLES`]).
pub async fn world_on(config: ServiceConfig, store: Option<Arc<dyn Store>>) -> World {
    let w = world_with(config.clone(), |_| {}).await;
    let w = match store {
        None => w,
        Some(store) => {
            let state = Arc::new(app_state(store.clone(), config));
            let keys = api_keys(store.as_ref(), &ROLES).await;
            World {
                app: router(state.clone()),
                state,
                keys,
                dir: w.dir,
            }
        }
    };
    write_demo(&w.media());
    register_demo(&w.app, w.key(Role::Admin), &w.media()).await;
    w
}

/// A service with the default config and the `demo` asset registered ready.
pub async fn world() -> World {
    let w = world_with(ServiceConfig::default(), |_| {}).await;
    write_demo(&w.media());
    register_demo(&w.app, w.key(Role::Admin), &w.media()).await;
    w
}

/// One request: `key` as the bearer token, extra headers as (name, value), a JSON content type. The answer's body
/// as JSON (`Null` when it is not JSON).
pub async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// [`send`] without extra headers, when only the status and body matter.
pub async fn call(app: &Router, method: &str, uri: &str, key: Option<&str>, body: &str) -> (StatusCode, Value) {
    let (s, _, b) = send(app, method, uri, key, &[], body).await;
    (s, b)
}
