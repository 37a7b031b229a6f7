//! The verifier's (and minter's) policy: the clock leeway and the longest lifetime, and the checks of authenticated
//! claims against one request — time, scope, permission, IP, country, origin — each failing with one stable reason.

use super::types::{Claims, RequestFacts};
use crate::path::path_in_scope;
use crate::reason::Reason;

/// Default clock leeway, in seconds.
pub const DEFAULT_LEEWAY: u32 = 60;
/// Default maximum lifetime (`exp - iat`), in seconds.
pub const DEFAULT_MAX_TTL: u32 = 24 * 3600;

/// Verification and minting policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Clock leeway, seconds, applied to both `nbf` and `exp`.
    pub leeway: u32,
    /// Longest lifetime (`exp - iat`) accepted when minting and verifying.
    pub max_ttl: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            leeway: DEFAULT_LEEWAY,
            max_ttl: DEFAULT_MAX_TTL,
        }
    }
}

fn in_asset(path: &str, asset: &[u8]) -> bool {
    // "/<asset>/..." : the asset is exactly the first segment, and something follows it.
    let p = path.as_bytes();
    p.len() > asset.len() + 2 && p[0] == b'/' && p[1..].starts_with(asset) && p[asset.len() + 1] == b'/'
}

impl Policy {
    /// Check the time window and lifetime alone (what diagnosis reports first).
    pub fn check_time(&self, c: &Claims<'_>, now: u64) -> Result<(), Reason> {
        if u64::from(c.exp) - u64::from(c.iat) > u64::from(self.max_ttl) {
            return Err(Reason::TtlTooLong);
        }
        let leeway = u64::from(self.leeway);
        if now.saturating_add(leeway) < u64::from(c.nbf) {
            return Err(Reason::NotYetValid);
        }
        // Valid while now < exp + leeway: at exactly exp + leeway the token is expired. An entitlement's end gets
        // no leeway: a trial ends when the product said, not a minute later.
        let exp_leeway = if super::types::tier::ends_entitlement(c.tier) {
            0
        } else {
            leeway
        };
        if now >= u64::from(c.exp) + exp_leeway {
            return Err(Reason::Expired);
        }
        Ok(())
    }

    /// Check authenticated claims against a request: time, scope, permission, IP, country, origin, in that order.
    pub fn check(&self, c: &Claims<'_>, facts: &RequestFacts<'_>) -> Result<(), Reason> {
        self.check_time(c, facts.now)?;
        if c.asset.is_some_and(|a| !in_asset(facts.path, a.as_bytes()))
            || c.prefix.is_some_and(|p| !path_in_scope(facts.path, p.as_str()))
        {
            return Err(Reason::OutOfScope);
        }
        if !c.permissions.contains(facts.resource.permission()) {
            return Err(Reason::PermissionDenied);
        }
        if let Some(net) = c.ip
            && !facts.client_ip.is_some_and(|ip| net.contains(ip))
        {
            return Err(Reason::IpMismatch);
        }
        if let Some(rule) = c.countries
            && !rule.permits(facts.country)
        {
            return Err(Reason::GeoDenied);
        }
        if let Some(want) = c.origin
            && !facts
                .origin
                .is_some_and(|got| got.as_bytes().eq_ignore_ascii_case(want.as_bytes()))
        {
            return Err(Reason::OriginDenied);
        }
        Ok(())
    }
}
