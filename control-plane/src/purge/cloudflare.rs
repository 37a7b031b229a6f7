//! Cloudflare's "Purge Cached Content": `POST {api_base}/zones/{zone_id}/purge_cache`, Bearer API token, a JSON
//! body with exactly one of `files`, `tags`, `prefixes`, `hosts` or `purge_everything`, and the v4 envelope
//! `{"success":…,"errors":[…],"messages":[…],"result":{"id":…}}` in reply. We send `tags`, `prefixes` and `files`.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::{PurgeOutcome, PurgeRequest, PurgeTarget, Redacted};

/// Entries per call for each purge kind.
///
/// Cloudflare's current limits table allows 100 operations per request on every plan (500 single-file URLs on
/// Enterprise), but its per-kind pages and older accounts still say 30. 30 is accepted everywhere, so it is the
/// default; raise it for a zone known to take more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloudflareLimits {
    /// Cache tags per call.
    pub tags: usize,
    /// Prefixes per call.
    pub prefixes: usize,
    /// URLs per call.
    pub files: usize,
}

impl Default for CloudflareLimits {
    fn default() -> Self {
        Self {
            tags: 30,
            prefixes: 30,
            files: 30,
        }
    }
}

/// Purges one Cloudflare zone.
#[derive(Clone)]
pub struct CloudflarePurger {
    name: String,
    api_base: String,
    zone_id: String,
    api_token: String,
    limits: CloudflareLimits,
    client: reqwest::Client,
}

impl fmt::Debug for CloudflarePurger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudflarePurger")
            .field("api_base", &self.api_base)
            .field("zone_id", &self.zone_id)
            .field("api_token", &Redacted)
            .field("limits", &self.limits)
            .finish()
    }
}

impl CloudflarePurger {
    /// A purger for `zone_id`. `api_base` is `https://api.cloudflare.com/client/v4` in production (a local fake in
    /// tests); `api_token` needs the zone's "Cache Purge" permission.
    pub fn new(
        api_base: impl Into<String>,
        zone_id: impl Into<String>,
        api_token: impl Into<String>,
    ) -> Result<Self, reqwest::Error> {
        let zone_id = zone_id.into();
        Ok(Self {
            name: format!("cloudflare:{zone_id}"),
            api_base: api_base.into().trim_end_matches('/').to_string(),
            zone_id,
            api_token: api_token.into(),
            limits: CloudflareLimits::default(),
            client: super::http_client()?,
        })
    }

    /// Uses other per-call limits (each at least 1).
    pub fn with_limits(mut self, limits: CloudflareLimits) -> Self {
        self.limits = CloudflareLimits {
            tags: limits.tags.max(1),
            prefixes: limits.prefixes.max(1),
            files: limits.files.max(1),
        };
        self
    }

    /// One API call: the batch must hold exactly one non-empty kind within the limits.
    async fn send_one(&self, batch: &PurgeRequest) -> PurgeOutcome {
        let body = match (batch.tags.is_empty(), batch.prefixes.is_empty(), batch.files.is_empty()) {
            (false, true, true) => json!({ "tags": batch.tags }),
            (true, false, true) => json!({ "prefixes": batch.prefixes }),
            (true, true, false) => json!({ "files": batch.files }),
            _ => {
                return PurgeOutcome::Failed {
                    reason: "cloudflare: a call purges exactly one kind".into(),
                };
            }
        };
        let url = format!("{}/zones/{}/purge_cache", self.api_base, self.zone_id);
        let sent = self
            .client
            .post(url)
            .bearer_auth(&self.api_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return super::transport_failure(&e),
        };
        let status = resp.status();
        let wait = super::retry_after(resp.headers(), SystemTime::now());
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return super::transport_failure(&e),
        };
        classify(status, wait, &bytes)
    }
}

/// The v4 envelope, read leniently: only what decides the outcome.
#[derive(Deserialize)]
struct Envelope {
    success: bool,
    #[serde(default)]
    errors: Vec<ApiMessage>,
    result: Option<PurgeResult>,
}

#[derive(Deserialize)]
struct ApiMessage {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct PurgeResult {
    id: String,
}

fn classify(status: reqwest::StatusCode, wait: Option<std::time::Duration>, body: &[u8]) -> PurgeOutcome {
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return PurgeOutcome::RetryAfter(wait.unwrap_or(super::DEFAULT_RATE_LIMIT_WAIT));
    }
    let envelope = serde_json::from_slice::<Envelope>(body).ok();
    let errors = envelope.as_ref().map(|e| {
        e.errors
            .iter()
            .map(|m| format!("{} {}", m.code, m.message))
            .collect::<Vec<_>>()
            .join("; ")
    });
    let reason = || match &errors {
        Some(e) if !e.is_empty() => format!("cloudflare {status}: {e}"),
        _ => format!("cloudflare {status}: {}", super::snippet(body)),
    };
    if status.is_success() {
        return match envelope {
            Some(Envelope {
                success: true,
                result: Some(r),
                ..
            }) => PurgeOutcome::Done { cdn_id: r.id },
            // A 200 that says `success: false` is Cloudflare refusing the request.
            Some(Envelope { success: false, .. }) => PurgeOutcome::Failed { reason: reason() },
            // A 2xx we cannot read may or may not have purged; purges are idempotent, so ask again.
            _ => PurgeOutcome::Transient {
                reason: format!("cloudflare {status}: unreadable answer"),
            },
        };
    }
    if super::is_transient_status(status) {
        PurgeOutcome::Transient { reason: reason() }
    } else {
        PurgeOutcome::Failed { reason: reason() }
    }
}

fn chunks(items: &[String], size: usize, make: impl Fn(Vec<String>) -> PurgeRequest) -> Vec<PurgeRequest> {
    items.chunks(size).map(|c| make(c.to_vec())).collect()
}

#[async_trait]
impl PurgeTarget for CloudflarePurger {
    fn name(&self) -> &str {
        &self.name
    }

    fn split(&self, request: &PurgeRequest) -> Vec<PurgeRequest> {
        let r = request.deduped();
        let mut out = chunks(&r.tags, self.limits.tags, |tags| PurgeRequest {
            tags,
            ..Default::default()
        });
        out.extend(chunks(&r.prefixes, self.limits.prefixes, |prefixes| PurgeRequest {
            prefixes,
            ..Default::default()
        }));
        out.extend(chunks(&r.files, self.limits.files, |files| PurgeRequest {
            files,
            ..Default::default()
        }));
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
    use std::time::Duration;

    #[test]
    fn split_one_kind_per_call_within_limits() {
        let p = CloudflarePurger::new("http://x", "z", "t").map(|p| {
            p.with_limits(CloudflareLimits {
                tags: 2,
                prefixes: 30,
                files: 1,
            })
        });
        let Ok(p) = p else { panic!("client") };
        let req = PurgeRequest {
            tags: vec!["a".into(), "b".into(), "c".into(), "a".into()],
            prefixes: vec!["h/p/".into()],
            files: vec!["https://h/1".into(), "https://h/2".into()],
        };
        let batches = p.split(&req);
        assert_eq!(batches.len(), 5);
        assert_eq!(batches[0].tags, vec!["a", "b"]);
        assert_eq!(batches[1].tags, vec!["c"]);
        assert_eq!(batches[2].prefixes, vec!["h/p/"]);
        assert!(batches.iter().all(|b| {
            [&b.tags, &b.prefixes, &b.files]
                .iter()
                .filter(|v| !v.is_empty())
                .count()
                == 1
        }));
    }

    #[test]
    fn debug_redacts_token() {
        let Ok(p) = CloudflarePurger::new("http://x", "zone", "s3cret-token") else {
            panic!("client")
        };
        let dbg = format!("{p:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn classification() {
        let ok = br#"{"success":true,"errors":[],"messages":[],"result":{"id":"abc"}}"#;
        assert_eq!(
            classify(StatusCode::OK, None, ok),
            PurgeOutcome::Done { cdn_id: "abc".into() }
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(3)), b""),
            PurgeOutcome::RetryAfter(Duration::from_secs(3))
        );
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, None, b"<html>"),
            PurgeOutcome::Transient { .. }
        ));
        let bad = br#"{"success":false,"errors":[{"code":1012,"message":"Request must contain one of"}],"messages":[],"result":null}"#;
        let PurgeOutcome::Failed { reason } = classify(StatusCode::BAD_REQUEST, None, bad) else {
            panic!()
        };
        assert!(reason.contains("1012"), "{reason}");
        assert!(matches!(
            classify(StatusCode::OK, None, b"nope"),
            PurgeOutcome::Transient { .. }
        ));
    }
}
