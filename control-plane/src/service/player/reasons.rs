//! What a viewer reads when playback is refused: one plain-words title and sentence per reason code, for the
//! edge's codes (`sharegate_shared::Reason`) and the share's own (`not_found`, `sign_in_required`, …). The pages
//! carry this table, so the server-rendered refusal and the one the player shows mid-play say the same thing.

use serde::Serialize;

/// A refusal in words.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Message {
    /// A short heading.
    pub title: &'static str,
    /// What happened and what the viewer can do.
    pub body: &'static str,
}

const fn m(title: &'static str, body: &'static str) -> Message {
    Message { title, body }
}

const ASK: &str =
    "If you think this is a mistake, contact whoever shared it with you and give them the support reference below.";

/// Every code a viewer can meet, and its words. `default` covers anything else.
pub const MESSAGES: &[(&str, Message)] = &[
    // The edge's reasons.
    (
        "missing_token",
        m(
            "This link is incomplete",
            "The video address is missing its access code. Open the link you were given again, in full.",
        ),
    ),
    (
        "malformed",
        m(
            "This link is damaged",
            "The video address was changed or cut short, so it cannot be checked. Open the link you were given again, in full.",
        ),
    ),
    (
        "unsupported_version",
        m(
            "This link is from a newer version",
            "The video service cannot read this link yet. Try again later.",
        ),
    ),
    (
        "unsupported_claim",
        m(
            "This link is from a newer version",
            "The video service cannot read this link yet. Try again later.",
        ),
    ),
    (
        "unknown_key",
        m(
            "This link can no longer be checked",
            "It was signed with a key the video service no longer holds. Ask for a new link.",
        ),
    ),
    (
        "bad_signature",
        m(
            "This link is not genuine",
            "The video address was altered, so it is refused. Open the link you were given again, in full.",
        ),
    ),
    (
        "expired",
        m(
            "This link has expired",
            "Access through this link has ended. Reload the page to try again, or ask for a new link.",
        ),
    ),
    (
        "not_yet_valid",
        m(
            "This video is not available yet",
            "Access through this link has not started. Check your device's clock, or try again later.",
        ),
    ),
    (
        "ttl_too_long",
        m(
            "This link is not accepted",
            "It was made to last longer than this service allows. Ask for a new link.",
        ),
    ),
    (
        "out_of_scope",
        m(
            "This link is for another video",
            "The link you opened does not give access to this video.",
        ),
    ),
    (
        "permission_denied",
        m(
            "This link does not allow playback",
            "It gives access to this video, but not to play it this way.",
        ),
    ),
    (
        "ip_mismatch",
        m(
            "This link is tied to another network",
            "It was issued for a different internet connection. Reload the page on the network you are using now.",
        ),
    ),
    (
        "geo_denied",
        m(
            "Not available in your country",
            "The owner of this video has not made it available where you are.",
        ),
    ),
    (
        "origin_denied",
        m(
            "This video cannot be played on this site",
            "The link only works on the site it was shared for.",
        ),
    ),
    (
        "bad_path",
        m(
            "This address is not valid",
            "The video address is malformed. Open the link you were given again, in full.",
        ),
    ),
    (
        "revoked",
        m(
            "Access to this video was withdrawn",
            "The owner has revoked this link. It no longer plays anywhere.",
        ),
    ),
    (
        "method_not_allowed",
        m(
            "This request is not supported",
            "The video service only serves video to players.",
        ),
    ),
    (
        "state_stale",
        m(
            "Temporarily unavailable",
            "The video service cannot confirm access right now. Try again in a minute.",
        ),
    ),
    (
        "origin_unavailable",
        m(
            "Temporarily unavailable",
            "The video could not be fetched right now. Try again in a minute.",
        ),
    ),
    (
        "geo_unavailable",
        m(
            "Temporarily unavailable",
            "Your location could not be determined, which this video needs. Try again later.",
        ),
    ),
    // The share's own.
    (
        "not_found",
        m(
            "This link does not exist",
            "It may have been mistyped or withdrawn by its owner.",
        ),
    ),
    (
        "sign_in_required",
        m(
            "Sign in to watch",
            "This video is shared with signed-in viewers only. Sign in, then open the link again.",
        ),
    ),
    // Access policies and the product's entitlement check.
    (
        "viewer_required",
        m(
            "Sign in to watch",
            "This video is for signed-in viewers only. Sign in, then open the link again.",
        ),
    ),
    (
        "trial_ended",
        m(
            "Your trial has ended",
            "Your free trial of this video has ended. Subscribe to keep watching, then open the link again.",
        ),
    ),
    (
        "entitlement_ended",
        m(
            "Your access has ended",
            "The period you had access to this video for has ended. Renew your access, then open the link again.",
        ),
    ),
    (
        "entitlement_denied",
        m(
            "This video needs a subscription",
            "Your account does not include this video. Check your plan, then open the link again.",
        ),
    ),
    (
        "entitlement_unavailable",
        m(
            "We cannot check your access right now",
            "The service that confirms your access is not answering. Try again in a minute.",
        ),
    ),
    (
        "not_invited",
        m(
            "This video was shared with someone else",
            "Your account is not on the list of viewers it was shared with.",
        ),
    ),
    (
        "embed_not_allowed",
        m(
            "This video cannot be played on this site",
            "Its owner allows it to be embedded on other sites only. Open it on the site that shared it.",
        ),
    ),
    (
        "asset_not_ready",
        m(
            "This video is not ready",
            "It is still being prepared or failed its checks. Try again later.",
        ),
    ),
    (
        "unavailable",
        m(
            "Temporarily unavailable",
            "The video service could not be reached. Check your connection and try again.",
        ),
    ),
    (
        "unsupported_browser",
        m(
            "Your browser cannot play this video",
            "Try a current version of Chrome, Edge, Firefox or Safari.",
        ),
    ),
    (
        "default",
        m(
            "This video cannot be played",
            "Something went wrong while playing it. Reload the page to try again.",
        ),
    ),
];

/// The words for `code` (`default` for unknown codes).
pub fn message(code: &str) -> Message {
    MESSAGES
        .iter()
        .find(|(c, _)| *c == code)
        .or_else(|| MESSAGES.iter().find(|(c, _)| *c == "default"))
        .map_or(m("This video cannot be played", ASK), |(_, msg)| *msg)
}

/// Whether `code` has its own words.
pub fn known(code: &str) -> bool {
    MESSAGES.iter().any(|(c, _)| *c == code)
}

/// The closing sentence every refusal shows above its support reference.
pub const CONTACT: &str = ASK;

#[cfg(test)]
mod tests {
    use super::*;
    use sharegate_shared::Reason;

    #[test]
    fn every_edge_reason_has_words() {
        for r in Reason::ALL {
            assert!(known(r.as_str()), "{} has no message", r.as_str());
        }
        assert_eq!(message("no such code").title, message("default").title);
    }
}
