//! A typed client of the control-plane API: each call sends the service's own request type (so a field the service
//! does not read cannot be sent) and hands back the answer's status and body, which the commands print as they are.
//!
//! It does not retry, and it does not judge answers: an error status is the service's answer, shown to the caller,
//! not an error of the client. Errors here are the ones where there is no answer (cannot connect, bad URL).

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sharegate_control_plane::service::assets::RegisterRequest;
use sharegate_control_plane::service::audit_events::AuditQuery;
use sharegate_control_plane::service::entitlement::{AssetAccess, InvalidateRequest};
use sharegate_control_plane::service::observe::diagnose::DiagnoseRequest;
use sharegate_control_plane::service::revocations::RevocationRequest;
use sharegate_control_plane::service::shares::ShareRequest;
use sharegate_control_plane::service::{ApiKeyRequest, LinkRequest};

/// The control plane at one base URL, called with one API key.
pub struct ApiClient {
    http: reqwest::Client,
    /// The base URL without a trailing `/`; endpoints are appended to it, so a base with a path (behind a proxy)
    /// keeps it.
    base: String,
    key: String,
}

/// What the service answered.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body as sent (JSON for every `/v1` answer, errors included).
    pub body: String,
}

impl Answer {
    /// The body read as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.body).with_context(|| format!("unexpected answer ({}): {}", self.status, self.body))
    }

    /// The body for people: pretty JSON, or the text as it came when it is not JSON.
    pub fn pretty(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| self.body.clone())
    }
}

impl ApiClient {
    /// A client of the API at `base` (e.g. `http://127.0.0.1:7700`) calling with `key`.
    pub fn new(base: &str, key: impl Into<String>) -> ApiClient {
        ApiClient {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
            key: key.into(),
        }
    }

    /// A client with the key from `SHAREGATE_API_KEY`: a flag would leave it in shell history and process listings.
    pub fn from_env(base: &str) -> Result<ApiClient> {
        let key = std::env::var("SHAREGATE_API_KEY").context("SHAREGATE_API_KEY is not set")?;
        Ok(ApiClient::new(base, key))
    }

    /// `POST /v1/links` (role minter).
    pub async fn mint_link(&self, req: &LinkRequest) -> Result<Answer> {
        self.send(Method::POST, "/v1/links", Some(req), None).await
    }

    /// `POST /v1/revocations` (role responder), with an idempotency key so a retried command revokes once.
    pub async fn revoke(&self, req: &RevocationRequest, idempotency_key: Option<&str>) -> Result<Answer> {
        self.send(Method::POST, "/v1/revocations", Some(req), idempotency_key)
            .await
    }

    /// `PUT /v1/assets/{id}/access` (role admin).
    pub async fn put_access(&self, asset: &str, req: &AssetAccess) -> Result<Answer> {
        self.send(Method::PUT, &format!("/v1/assets/{asset}/access"), Some(req), None)
            .await
    }

    /// `POST /v1/entitlements/invalidate` (roles responder, entitlement), with an idempotency key so a retried
    /// command revokes once.
    pub async fn invalidate(&self, req: &InvalidateRequest, idempotency_key: Option<&str>) -> Result<Answer> {
        self.send(Method::POST, "/v1/entitlements/invalidate", Some(req), idempotency_key)
            .await
    }

    /// `POST /v1/apikeys` (role admin).
    pub async fn create_api_key(&self, req: &ApiKeyRequest) -> Result<Answer> {
        self.send(Method::POST, "/v1/apikeys", Some(req), None).await
    }

    /// `POST /v1/shares` (role minter).
    pub async fn create_share(&self, req: &ShareRequest) -> Result<Answer> {
        self.send(Method::POST, "/v1/shares", Some(req), None).await
    }

    /// `GET /v1/shares/{id}` (roles minter, auditor).
    pub async fn read_share(&self, id: &str) -> Result<Answer> {
        self.send::<()>(Method::GET, &format!("/v1/shares/{id}"), None, None)
            .await
    }

    /// `POST /v1/diagnose` (roles responder, auditor, minter).
    pub async fn diagnose(&self, req: &DiagnoseRequest) -> Result<Answer> {
        self.send(Method::POST, "/v1/diagnose", Some(req), None).await
    }

    /// `POST /v1/assets` (role admin): register an asset and check it is ready.
    pub async fn register_asset(&self, req: &RegisterRequest) -> Result<Answer> {
        self.send(Method::POST, "/v1/assets", Some(req), None).await
    }

    /// `POST /v1/keys/rotate` (role responder): one rotation step. It takes no body.
    pub async fn rotate_keys(&self) -> Result<Answer> {
        self.send::<()>(Method::POST, "/v1/keys/rotate", None, None).await
    }

    /// `GET /v1/doctor` (role admin).
    pub async fn doctor(&self) -> Result<Answer> {
        self.send::<()>(Method::GET, "/v1/doctor", None, None).await
    }

    /// `POST /v1/doctor/canary` (role admin).
    pub async fn doctor_canary(&self, asset: Option<&str>) -> Result<Answer> {
        let body = serde_json::json!({ "asset": asset });
        self.send(Method::POST, "/v1/doctor/canary", Some(&body), None).await
    }

    /// `POST /v1/doctor/canary/{token_id}/revoke` (role admin).
    pub async fn doctor_canary_revoke(&self, token_id: &str) -> Result<Answer> {
        let path = format!("/v1/doctor/canary/{token_id}/revoke");
        self.send::<()>(Method::POST, &path, None, None).await
    }

    /// `GET /v1/keys`.
    pub async fn list_keys(&self) -> Result<Answer> {
        self.send::<()>(Method::GET, "/v1/keys", None, None).await
    }

    /// `GET /v1/audit` (role auditor); the query is encoded by serde, unset fields left out.
    pub async fn audit(&self, query: &AuditQuery) -> Result<Answer> {
        let (req, url) = self.request(Method::GET, "/v1/audit")?;
        Self::answer(req.query(query), &url).await
    }

    fn request(&self, method: Method, path: &str) -> Result<(reqwest::RequestBuilder, Url)> {
        let url = format!("{}{path}", self.base);
        let url = Url::parse(&url).with_context(|| format!("bad API URL {url}"))?;
        Ok((self.http.request(method, url.clone()).bearer_auth(&self.key), url))
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Result<Answer> {
        let (mut req, url) = self.request(method, path)?;
        if let Some(body) = body {
            req = req.json(body);
        }
        if let Some(k) = idempotency_key {
            req = req.header("idempotency-key", k);
        }
        Self::answer(req, &url).await
    }

    async fn answer(req: reqwest::RequestBuilder, url: &Url) -> Result<Answer> {
        let resp = req.send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The client against the real service: the library's router on a local socket, called over HTTP.

    use super::*;
    use sharegate_control_plane::service::auth::Role;
    use sharegate_control_plane::service::revocations::RevocationKind;
    use sharegate_control_plane::service::{ApiKeyCreated, LinkResponse, router};

    /// The repository's demo asset as an admin registers it (the service wants an absolute origin directory).
    fn demo_asset() -> RegisterRequest {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo-media");
        RegisterRequest {
            id: "demo".into(),
            origin: std::fs::canonicalize(dir).unwrap().to_string_lossy().into_owned(),
            kind: Default::default(),
            multivariant: None,
        }
    }

    struct Service {
        base: String,
        keys: Vec<(Role, String)>,
        _dir: tempfile::TempDir,
    }

    impl Service {
        fn key(&self, role: Role) -> &str {
            &self.keys.iter().find(|(r, _)| *r == role).unwrap().1
        }

        fn client(&self, role: Role) -> ApiClient {
            // A trailing `/` on the base, as people type it.
            ApiClient::new(&format!("{}/", self.base), self.key(role))
        }
    }

    /// The service as `sharegate serve` starts it (fresh secrets in a temporary data directory), on a local socket;
    /// an API key per role, made through the client with the bootstrap admin key.
    async fn service() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let opts = crate::compose::ServeOptions {
            data_dir: dir.path().to_path_buf(),
            store_url: String::new(),
            edge_base_url: "http://127.0.0.1:7701".into(),
            push_edges: Vec::new(),
            share_base_url: base.clone(),
        };
        let started = crate::compose::start(&opts).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, router(started.state)).await });
        let admin = std::fs::read_to_string(dir.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_string();
        let mut keys = vec![(Role::Admin, admin.clone())];
        for role in [Role::Minter, Role::Responder, Role::Auditor] {
            let req = ApiKeyRequest {
                role,
                label: "test".into(),
            };
            let a = ApiClient::new(&base, &admin).create_api_key(&req).await.unwrap();
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
            let created: ApiKeyCreated = a.json().unwrap();
            assert_eq!(created.role, role);
            keys.push((role, created.key));
        }
        Service { base, keys, _dir: dir }
    }

    #[tokio::test]
    async fn mint_and_revoke_through_the_client() {
        let svc = service().await;
        let a = svc.client(Role::Admin).register_asset(&demo_asset()).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.json::<serde_json::Value>().unwrap()["ready"], true);

        let minter = svc.client(Role::Minter);
        let link = LinkRequest {
            asset: "demo".into(),
            ttl: Some(600),
            viewer: Some("v1".into()),
            session: None,
            share: None,
            ip: None,
            allow_countries: None,
            deny_countries: None,
            embed_origin: None,
            channel: None,
            campaign: None,
            watermark: None,
            entitlement: None,
        };
        let a = minter.mint_link(&link).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let link: LinkResponse = a.json().unwrap();
        assert!(
            link.url.contains("/t/") && link.url.ends_with("/demo/master.m3u8"),
            "{}",
            link.url
        );

        // A minter may not revoke: the service's refusal comes back as an answer, not a client error.
        let revoke = RevocationRequest {
            kind: RevocationKind::Token,
            id: None,
            token: Some(link.url.clone()),
            reason: Some("leaked".into()),
            purge: false,
        };
        let a = minter.revoke(&revoke, None).await.unwrap();
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

        let responder = svc.client(Role::Responder);
        let first = responder.revoke(&revoke, Some("revoke-1")).await.unwrap();
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let receipt: serde_json::Value = first.json().unwrap();
        assert_eq!(receipt["kind"], "token");
        // The idempotency key reaches the service: the retry is a replay of the same receipt.
        let again = responder.revoke(&revoke, Some("revoke-1")).await.unwrap();
        assert_eq!(again.status, StatusCode::OK, "{}", again.body);
        assert_eq!(again.json::<serde_json::Value>().unwrap()["id"], receipt["id"]);

        // Diagnose says the link is revoked.
        let d = DiagnoseRequest {
            url: Some(link.url.clone()),
            ..DiagnoseRequest::default()
        };
        let a = responder.diagnose(&d).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(
            a.json::<serde_json::Value>().unwrap()["reason"],
            "revoked",
            "{}",
            a.pretty()
        );

        // The audit log has the revocation.
        let auditor = svc.client(Role::Auditor);
        let q = AuditQuery {
            from: None,
            to: None,
            subject: None,
            action: Some("revocations.".into()),
            limit: Some(10),
        };
        let a = auditor.audit(&q).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.contains("revocations."), "{}", a.pretty());
    }

    #[tokio::test]
    async fn audit_keys_and_shares_through_the_client() {
        let svc = service().await;
        // The query is URL-encoded by serde: unencoded, the `&` would cut the subject short and add a parameter the
        // service refuses (400).
        let query = AuditQuery {
            from: None,
            to: None,
            subject: Some("ops & more/x y".into()),
            action: None,
            limit: None,
        };
        let a = svc.client(Role::Auditor).audit(&query).await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);

        // `serve` starts with a master key, so a responder can rotate: a next key is staged and listed.
        let responder = svc.client(Role::Responder);
        let a = responder.rotate_keys().await.unwrap();
        assert!(a.status.is_success(), "{}", a.body);
        let a = responder.list_keys().await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.contains("next"), "{}", a.pretty());

        // A share of an unregistered asset is refused by the service: an answer, not a client error.
        let mut share = ShareRequest {
            asset: "nope".into(),
            audience: sharegate_control_plane::service::shares::Audience::Public,
            invited: Vec::new(),
            expires_at: None,
            channel: None,
            campaign: None,
            ttl: None,
            title: None,
            preset: None,
            embed_origins: None,
            utm: None,
            access: None,
        };
        let minter = svc.client(Role::Minter);
        let a = minter.create_share(&share).await.unwrap();
        assert!(a.status.is_client_error(), "{}", a.body);
        let a = svc.client(Role::Admin).register_asset(&demo_asset()).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        share.asset = "demo".into();
        let a = minter.create_share(&share).await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert!(a.body.contains("/s/"), "{}", a.pretty());

        // Nothing listens: that is a client error, not an answer.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let e = ApiClient::new(&format!("http://{addr}"), "k")
            .list_keys()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("cannot reach"), "{e}");
    }
}
