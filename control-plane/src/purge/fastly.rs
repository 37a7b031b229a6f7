//! Fastly's purge API, authenticated with the `Fastly-Key` header:
//!
//! - one surrogate key: `POST {api_base}/service/{service_id}/purge/{key}` → `{"status":"ok","id":"…"}`;
//! - several keys (up to 256): `POST {api_base}/service/{service_id}/purge` with `{"surrogate_keys":[…]}` →
//!   `{"<key>":"<purge id>",…}`;
//! - one URL: `POST {api_base}/purge/{host}/{path}` → `{"status":"ok","id":"…"}`.
//!
//! `Fastly-Soft-Purge: 1` marks objects stale instead of removing them. Fastly has no prefix purge: the surrogate
//! keys the edge sets cover the same objects, so prefixes are dropped when keys or URLs are present.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{PurgeOutcome, PurgeRequest, PurgeTarget, Redacted};

/// Surrogate keys per bulk call, as documented for `POST /service/{id}/purge`.
pub const FASTLY_MAX_KEYS_PER_REQUEST: usize = 256;

/// Purges one Fastly service.
#[derive(Clone)]
pub struct FastlyPurger {
    name: String,
    api_base: String,
    service_id: String,
    api_key: String,
    soft: bool,
    client: reqwest::Client,
}

impl fmt::Debug for FastlyPurger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FastlyPurger")
            .field("api_base", &self.api_base)
            .field("service_id", &self.service_id)
            .field("api_key", &Redacted)
            .field("soft", &self.soft)
            .finish()
    }
}

impl FastlyPurger {
    /// A purger for `service_id`. `api_base` is `https://api.fastly.com` in production; `api_key` needs the
    /// `purge_select` scope. `soft` sends `Fastly-Soft-Purge: 1` (objects go stale and may still be served
    /// stale-while-revalidate; use hard purges for takedowns).
    pub fn new(
        api_base: impl Into<String>,
        service_id: impl Into<String>,
        api_key: impl Into<String>,
        soft: bool,
    ) -> Result<Self, reqwest::Error> {
        let service_id = service_id.into();
        Ok(Self {
            name: format!("fastly:{service_id}"),
            api_base: api_base.into().trim_end_matches('/').to_string(),
            service_id,
            api_key: api_key.into(),
            soft,
            client: super::http_client()?,
        })
    }

    fn post(&self, url: reqwest::Url) -> reqwest::RequestBuilder {
        let req = self
            .client
            .post(url)
            .header("Fastly-Key", &self.api_key)
            .header(reqwest::header::ACCEPT, "application/json");
        if self.soft {
            req.header("Fastly-Soft-Purge", "1")
        } else {
            req
        }
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, PurgeOutcome> {
        let mut url = reqwest::Url::parse(&self.api_base).map_err(|e| PurgeOutcome::Failed {
            reason: format!("fastly: bad api base: {e}"),
        })?;
        {
            let Ok(mut path) = url.path_segments_mut() else {
                return Err(PurgeOutcome::Failed {
                    reason: "fastly: api base cannot take a path".into(),
                });
            };
            path.pop_if_empty();
            // `push` percent-encodes, so a key or path can never reach another endpoint.
            for s in segments {
                path.push(s);
            }
        }
        Ok(url)
    }

    /// One API call for a batch from [`split`](PurgeTarget::split).
    async fn send_one(&self, batch: &PurgeRequest) -> PurgeOutcome {
        let (req, kind) = if let [key] = batch.tags.as_slice() {
            match self.url(&["service", &self.service_id, "purge", key]) {
                Ok(url) => (self.post(url), Kind::Single),
                Err(o) => return o,
            }
        } else if !batch.tags.is_empty() {
            match self.url(&["service", &self.service_id, "purge"]) {
                Ok(url) => (
                    self.post(url)
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(json!({ "surrogate_keys": batch.tags }).to_string()),
                    Kind::Bulk,
                ),
                Err(o) => return o,
            }
        } else if let [file] = batch.files.as_slice() {
            let Ok(target) = reqwest::Url::parse(file) else {
                return PurgeOutcome::Failed {
                    reason: format!("fastly: not a URL: {file}"),
                };
            };
            let Some(host) = target.host_str() else {
                return PurgeOutcome::Failed {
                    reason: format!("fastly: URL without host: {file}"),
                };
            };
            let mut path: Vec<&str> = vec!["purge", host];
            path.extend(target.path().trim_start_matches('/').split('/'));
            match self.url(&path) {
                Ok(mut url) => {
                    url.set_query(target.query());
                    (self.post(url), Kind::Single)
                }
                Err(o) => return o,
            }
        } else if !batch.prefixes.is_empty() {
            return PurgeOutcome::Failed {
                reason: "fastly: no prefix purge; purge the surrogate key instead".into(),
            };
        } else {
            return PurgeOutcome::Failed {
                reason: "fastly: a call purges one key set or one URL".into(),
            };
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return super::transport_failure(&e),
        };
        let status = resp.status();
        let now = SystemTime::now();
        let wait = super::retry_after(resp.headers(), now).or_else(|| rate_limit_reset(resp.headers(), now));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return super::transport_failure(&e),
        };
        classify(status, wait, &bytes, kind)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Single,
    Bulk,
}

/// `Fastly-RateLimit-Reset` is the end of the rate-limit window in unix seconds.
fn rate_limit_reset(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let secs = headers
        .get("fastly-ratelimit-reset")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct Single {
    status: String,
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    msg: String,
    #[serde(default)]
    detail: String,
}

fn classify(status: reqwest::StatusCode, wait: Option<Duration>, body: &[u8], kind: Kind) -> PurgeOutcome {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return PurgeOutcome::RetryAfter(wait.unwrap_or(super::DEFAULT_RATE_LIMIT_WAIT));
    }
    if status.is_success() {
        let cdn_id = match kind {
            Kind::Single => serde_json::from_slice::<Single>(body)
                .ok()
                .filter(|s| s.status == "ok")
                .map(|s| s.id),
            // Key → purge id; sorted by key so the joined id is stable.
            Kind::Bulk => serde_json::from_slice::<BTreeMap<String, String>>(body)
                .ok()
                .filter(|m| !m.is_empty())
                .map(|m| m.into_values().collect::<Vec<_>>().join(",")),
        };
        return match cdn_id {
            Some(cdn_id) => PurgeOutcome::Done { cdn_id },
            // Purges are idempotent: an answer we cannot read is asked again rather than assumed.
            None => PurgeOutcome::Transient {
                reason: format!("fastly {status}: unreadable answer"),
            },
        };
    }
    let reason = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.msg.is_empty() => format!("fastly {status}: {} {}", e.msg, e.detail)
            .trim_end()
            .to_string(),
        _ => format!("fastly {status}: {}", super::snippet(body)),
    };
    if super::is_transient_status(status) {
        PurgeOutcome::Transient { reason }
    } else {
        PurgeOutcome::Failed { reason }
    }
}

#[async_trait]
impl PurgeTarget for FastlyPurger {
    fn name(&self) -> &str {
        &self.name
    }

    fn split(&self, request: &PurgeRequest) -> Vec<PurgeRequest> {
        let r = request.deduped();
        let mut out: Vec<PurgeRequest> = r
            .tags
            .chunks(FASTLY_MAX_KEYS_PER_REQUEST)
            .map(|c| PurgeRequest {
                tags: c.to_vec(),
                ..Default::default()
            })
            .collect();
        out.extend(r.files.iter().map(|f| PurgeRequest {
            files: vec![f.clone()],
            ..Default::default()
        }));
        if out.is_empty() && !r.prefixes.is_empty() {
            // Only prefixes: keep them so the job fails visibly instead of vanishing from the receipt.
            out.push(PurgeRequest {
                prefixes: r.prefixes,
                ..Default::default()
            });
        }
        out
    }

    async fn purge(&self, request: &PurgeRequest) -> PurgeOutcome {
        let mut ids = Vec::new();
        for batch in self.split(request) {
            match self.send_one(&batch).await {
                PurgeOutcome::Done { cdn_id } => ids.push(cdn_id),
                other => return other,
            }
        }
        PurgeOutcome::Done { cdn_id: ids.join(",") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn purger() -> FastlyPurger {
        match FastlyPurger::new("http://127.0.0.1:1/", "svc", "k3y-secret", true) {
            Ok(p) => p,
            Err(e) => panic!("client: {e}"),
        }
    }

    #[test]
    fn split_keys_files_and_prefixes() {
        let p = purger();
        let tags: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
        let req = PurgeRequest {
            tags,
            prefixes: vec!["h/a/".into()],
            files: vec!["https://h/a/1.ts".into()],
        };
        let b = p.split(&req);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0].tags.len(), 256);
        assert_eq!(b[1].tags.len(), 44);
        assert_eq!(b[2].files, vec!["https://h/a/1.ts"]);
        let only_prefix = PurgeRequest {
            prefixes: vec!["h/a/".into()],
            ..Default::default()
        };
        assert_eq!(p.split(&only_prefix).len(), 1);
    }

    #[test]
    fn urls_are_encoded() {
        let p = purger();
        let Ok(u) = p.url(&["service", "svc", "purge", "a/b c"]) else {
            panic!()
        };
        assert_eq!(u.as_str(), "http://127.0.0.1:1/service/svc/purge/a%2Fb%20c");
    }

    #[test]
    fn debug_redacts_key() {
        let dbg = format!("{:?}", purger());
        assert!(!dbg.contains("k3y-secret"), "{dbg}");
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(StatusCode::OK, None, br#"{"status":"ok","id":"p1"}"#, Kind::Single),
            PurgeOutcome::Done { cdn_id: "p1".into() }
        );
        assert_eq!(
            classify(StatusCode::OK, None, br#"{"k2":"p2","k1":"p1"}"#, Kind::Bulk),
            PurgeOutcome::Done { cdn_id: "p1,p2".into() }
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, None, b"", Kind::Bulk),
            PurgeOutcome::RetryAfter(super::super::DEFAULT_RATE_LIMIT_WAIT)
        );
        assert!(matches!(
            classify(
                StatusCode::UNAUTHORIZED,
                None,
                br#"{"msg":"Provided credentials are missing or invalid"}"#,
                Kind::Single
            ),
            PurgeOutcome::Failed { .. }
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, b"", Kind::Single),
            PurgeOutcome::Transient { .. }
        ));
    }
}
