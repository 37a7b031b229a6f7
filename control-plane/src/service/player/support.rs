//! Support references: what the player page shows a refused viewer (`sg-<token id>-<unix seconds>`, or
//! `sg-<share id>-<unix seconds>` when the share itself refused), and what `POST /v1/diagnose {"reference": …}`
//! makes of one. The page never shows the token (a credential); the token id and the time are enough to find the
//! link record, its share and every revocation that covers it.

use super::super::AppState;
use super::super::error::ApiError;
use super::super::observe::diagnose::{Diagnosis, Verdict, fmt_time};
use super::super::revocations::{LinkRecord, Receipt, RevocationKind};
use super::super::shares::ShareRecord;
use crate::store::Ns;

/// What a reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A token, by its id (24 hex digits).
    Token(String),
    /// A share.
    Share(String),
}

/// Read `sg-<subject>-<unix seconds>`.
pub fn parse(reference: &str) -> Option<(Subject, u64)> {
    let rest = reference.trim().strip_prefix("sg-")?;
    let (subject, at) = rest.rsplit_once('-')?;
    let at = at.parse().ok()?;
    if subject.len() == 24 && subject.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some((Subject::Token(subject.to_ascii_lowercase()), at));
    }
    super::super::shares::well_formed_id(subject).then(|| (Subject::Share(subject.to_string()), at))
}

async fn share(s: &AppState, id: &str) -> Result<Option<ShareRecord>, ApiError> {
    s.store
        .get(Ns::Shares, id)
        .await?
        .map(|b| serde_json::from_slice(&b).map_err(|e| ApiError::Internal(format!("share record: {e}"))))
        .transpose()
}

/// The revocations that cover a token of `link` (id `token_id`) at `at`: by id, or a watermark of its share,
/// asset or campaign, or a global one, made at or before `at` and covering its issue time. Earliest first.
async fn covering(
    s: &AppState,
    token_id: &str,
    link: &LinkRecord,
    campaign: Option<&str>,
    at: u64,
) -> Result<Vec<Receipt>, ApiError> {
    let mut out = Vec::new();
    for (_, v) in s.store.scan(Ns::Revocations, "").await? {
        let r: Receipt =
            serde_json::from_slice(&v).map_err(|e| ApiError::Internal(format!("revocation record: {e}")))?;
        if r.at > at {
            continue;
        }
        let through = r.through.map_or(r.at, u64::from);
        let covers_iat = through >= u64::from(link.iat);
        let hit = match r.kind {
            RevocationKind::Token => r.target == token_id,
            RevocationKind::Share => covers_iat && link.share.as_deref() == Some(r.target.as_str()),
            RevocationKind::Asset => covers_iat && r.target == link.asset,
            RevocationKind::Campaign => covers_iat && campaign == Some(r.target.as_str()),
            RevocationKind::Global => covers_iat,
            // Viewer, session and key-id watermarks need claims the link record does not keep.
            RevocationKind::Viewer | RevocationKind::Session | RevocationKind::KeyId => false,
        };
        if hit {
            out.push(r);
        }
    }
    out.sort_by_key(|r| r.at);
    Ok(out)
}

fn answer(
    at: u64,
    deny: Option<(&str, u16)>,
    explanation: String,
    revocation: Option<Receipt>,
    hints: Vec<String>,
) -> Diagnosis {
    Diagnosis {
        decision: if deny.is_some() { Verdict::Deny } else { Verdict::Allow },
        status: deny.map_or(200, |(_, s)| s),
        reason: deny.map_or("ok", |(r, _)| r).to_string(),
        explanation,
        claims: None,
        signature_valid: true,
        clock_skew_suspected: false,
        path: None,
        resource: None,
        at,
        revocation,
        hints,
    }
}

/// Explain `reference`.
pub async fn explain(s: &AppState, reference: &str) -> Result<Diagnosis, ApiError> {
    let (subject, at) = parse(reference).ok_or_else(|| {
        ApiError::Invalid("a support reference looks like sg-<24 hex digits or share id>-<unix seconds>".into())
    })?;
    match subject {
        Subject::Share(id) => explain_share(s, &id, at).await,
        Subject::Token(id) => explain_token(s, &id, at).await,
    }
}

async fn explain_share(s: &AppState, id: &str, at: u64) -> Result<Diagnosis, ApiError> {
    let Some(sh) = share(s, id).await? else {
        return Ok(answer(
            at,
            Some(("not_found", 404)),
            format!("share {id} does not exist: the viewer opened a mistyped or invented link"),
            None,
            Vec::new(),
        ));
    };
    if let Some(d) = sh.deleted_at.filter(|d| *d <= at) {
        return Ok(answer(
            at,
            Some(("not_found", 404)),
            format!("share {id} was deleted at {}, before the viewer opened it", fmt_time(d)),
            None,
            vec!["a deleted share stays deleted: create a new share for this viewer".into()],
        ));
    }
    if let Some(e) = sh.expires_at.filter(|e| *e <= at) {
        return Ok(answer(
            at,
            Some(("expired", 410)),
            format!("share {id} expired at {}", fmt_time(e)),
            None,
            vec!["shares cannot be extended: create a new one".into()],
        ));
    }
    let audience = serde_json::to_value(sh.audience)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(answer(
        at,
        None,
        format!(
            "share {id} was live at {} (audience {audience}, embed origins {}); a refusal then came from the \
             viewer's identity (sign_in_required, not_invited), the embedding site (embed_not_allowed) or the asset's \
             readiness",
            fmt_time(at),
            sh.embed_origins.map_or("any".to_string(), |l| if l.is_empty() {
                "none".into()
            } else {
                l.join(", ")
            })
        ),
        None,
        vec![format!("check the asset: GET /v1/assets/{}", sh.asset)],
    ))
}

async fn explain_token(s: &AppState, id: &str, at: u64) -> Result<Diagnosis, ApiError> {
    let Some(bytes) = super::super::revocations::link_record(s, id).await? else {
        return Ok(answer(
            at,
            Some(("unknown_token", 404)),
            format!("no token with id {id} was issued by this deployment"),
            None,
            vec!["check the reference was copied whole".into()],
        ));
    };
    let link: LinkRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Internal(format!("link record: {e}")))?;
    let sh = match &link.share {
        Some(sid) => share(s, sid).await?,
        None => None,
    };
    let campaign = sh.as_ref().and_then(|x| x.campaign.as_deref());
    let of = match &link.share {
        Some(sid) => format!("token {id} (share {sid}, asset {})", link.asset),
        None => format!("token {id} (asset {})", link.asset),
    };
    let revoked = covering(s, id, &link, campaign, at).await?;
    if let Some(r) = revoked.into_iter().next() {
        let why = r.reason.clone().map(|w| format!(" ({w})")).unwrap_or_default();
        return Ok(answer(
            at,
            Some(("revoked", 403)),
            format!(
                "{of} was revoked by {} {} at {}{why}",
                r.kind.as_str(),
                r.target,
                fmt_time(r.at)
            ),
            Some(r),
            vec!["a revoked viewer needs a new link or share; reloading the share page mints one if the share is still live".into()],
        ));
    }
    if at >= u64::from(link.exp) {
        return Ok(answer(
            at,
            Some(("expired", 410)),
            format!(
                "{of} expired at {}; the player should have fetched a new one before then",
                fmt_time(u64::from(link.exp))
            ),
            None,
            vec!["a player that stops refreshing (a sleeping laptop, a blocked request to /v1/shares/{id}/playback) meets this; reloading the page fixes it".into()],
        ));
    }
    if at < u64::from(link.iat) {
        return Ok(answer(
            at,
            Some(("not_yet_valid", 403)),
            format!(
                "{of} was issued at {}, after the reference's time",
                fmt_time(u64::from(link.iat))
            ),
            None,
            vec!["a clock is off: the viewer's device or an edge".into()],
        ));
    }
    Ok(answer(
        at,
        None,
        format!(
            "{of} was issued at {}, valid until {} and not revoked by id, share, asset or campaign at {}: a refusal \
             then came from a binding (the viewer's network, the page origin, a country rule) or the edge's state",
            fmt_time(u64::from(link.iat)),
            fmt_time(u64::from(link.exp)),
            fmt_time(at)
        ),
        None,
        vec!["for a binding, diagnose the token URL with client_ip, origin and country".into()],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        assert_eq!(
            parse("sg-8ec41c2f1ed18d54f3f2941a-1796226066"),
            Some((Subject::Token("8ec41c2f1ed18d54f3f2941a".into()), 1_796_226_066))
        );
        assert_eq!(
            parse("sg-sh_0123456789abcdef-17"),
            Some((Subject::Share("sh_0123456789abcdef".into()), 17))
        );
        for bad in [
            "",
            "sg-",
            "sg-xyz-1",
            "sg-sh_0123456789abcdef-",
            "8ec41c2f1ed18d54f3f2941a-1",
            "sg-sh_../x-1",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
