//! Stable reason codes for every refusal the edge can give.
//!
//! The codes are a contract: they appear in deny responses (`x-sharegate-reason`), in edge events, in metrics labels
//! and in the control plane's diagnosis. Never rename one; add new ones at the end.

use core::fmt;

/// Why a request was refused. `as_str` gives the stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The request carried no token.
    MissingToken,
    /// The token is not well formed (length, alphabet, encoding, structure or a claim's syntax).
    Malformed,
    /// The token's major version is not one this verifier implements.
    UnsupportedVersion,
    /// The token carries a critical claim this verifier does not know.
    UnsupportedClaim,
    /// The token names a key id the verifier does not hold.
    UnknownKey,
    /// The MAC does not match.
    BadSignature,
    /// The token's expiry (plus leeway) has passed.
    Expired,
    /// The token's not-before (minus leeway) is still ahead.
    NotYetValid,
    /// The token's lifetime is longer than the policy allows.
    TtlTooLong,
    /// The request path is outside the token's asset scope.
    OutOfScope,
    /// The token does not grant access to this kind of resource.
    PermissionDenied,
    /// The client's IP address is outside the token's IP binding.
    IpMismatch,
    /// The client's country is not allowed by the token.
    GeoDenied,
    /// The embedding page's origin does not match the token's embed origin.
    OriginDenied,
    /// The request path is not acceptable (traversal, encoded slash, ...).
    BadPath,
    /// The token was revoked.
    Revoked,
    /// The method is not one the edge serves (GET, HEAD, OPTIONS).
    MethodNotAllowed,
    /// The edge's revocation state is older than its hard limit and policy says fail closed.
    StateStale,
    /// Every origin failed (5xx or timeout).
    OriginUnavailable,
    /// The token has a country rule and this edge has no source for the client's country (a self-hosted edge
    /// without a trusted country header), and the operator did not opt into the lenient rule.
    GeoUnavailable,
}

impl Reason {
    /// Every reason, in declaration order (for tables, metrics and tests).
    pub const ALL: [Reason; 20] = [
        Reason::MissingToken,
        Reason::Malformed,
        Reason::UnsupportedVersion,
        Reason::UnsupportedClaim,
        Reason::UnknownKey,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::TtlTooLong,
        Reason::OutOfScope,
        Reason::PermissionDenied,
        Reason::IpMismatch,
        Reason::GeoDenied,
        Reason::OriginDenied,
        Reason::BadPath,
        Reason::Revoked,
        Reason::MethodNotAllowed,
        Reason::StateStale,
        Reason::OriginUnavailable,
        Reason::GeoUnavailable,
    ];

    /// The stable, machine-readable code.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::MissingToken => "missing_token",
            Reason::Malformed => "malformed",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::UnsupportedClaim => "unsupported_claim",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::TtlTooLong => "ttl_too_long",
            Reason::OutOfScope => "out_of_scope",
            Reason::PermissionDenied => "permission_denied",
            Reason::IpMismatch => "ip_mismatch",
            Reason::GeoDenied => "geo_denied",
            Reason::OriginDenied => "origin_denied",
            Reason::BadPath => "bad_path",
            Reason::Revoked => "revoked",
            Reason::MethodNotAllowed => "method_not_allowed",
            Reason::StateStale => "state_stale",
            Reason::OriginUnavailable => "origin_unavailable",
            Reason::GeoUnavailable => "geo_unavailable",
        }
    }

    /// Parse a code produced by [`Reason::as_str`].
    pub fn from_code(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == code)
    }

    /// The one mapping from a reason to an HTTP status.
    ///
    /// 401 when there is no credential at all, 410 when the credential was good but has run out (players and
    /// support tools treat "gone" differently from "forbidden"), 400 for a request no token could make valid, and
    /// 405 for a method the edge does not serve, 503 when the edge cannot decide safely (stale revocation state
    /// under a fail-closed policy, a country rule and no country source) or no origin answers, and 403 for
    /// everything else: a malformed or forged token is an invalid credential, never a server error.
    pub const fn http_status(self) -> u16 {
        match self {
            Reason::MissingToken => 401,
            Reason::Expired => 410,
            Reason::BadPath => 400,
            Reason::MethodNotAllowed => 405,
            Reason::StateStale | Reason::OriginUnavailable | Reason::GeoUnavailable => 503,
            _ => 403,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// A reason is also an error, so callers can `?` it into `anyhow`/`thiserror` instead of formatting it by hand.
impl core::error::Error for Reason {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(Reason::from_code(r.as_str()), Some(*r));
            for other in &Reason::ALL[i + 1..] {
                assert_ne!(r.as_str(), other.as_str());
            }
        }
        assert_eq!(Reason::from_code("nope"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(Reason::MissingToken.http_status(), 401);
        assert_eq!(Reason::Expired.http_status(), 410);
        assert_eq!(Reason::Revoked.http_status(), 403);
        assert_eq!(Reason::Malformed.http_status(), 403);
        assert_eq!(Reason::BadPath.http_status(), 400);
        assert_eq!(Reason::GeoUnavailable.http_status(), 503);
    }
}
