//! Who the client is: the address and the country the native edge decides on, and which source it trusts for them.
//!
//! By default the only fact the edge trusts is the TCP peer's address, and it has no country at all: a client can
//! write any header it likes (`X-Forwarded-For`, `X-Real-IP`, `CF-Connecting-IP`, a country header), so no header
//! moves a decision. Behind a proxy (a load balancer, or a CDN in front of a self-hosted edge) the operator names
//! the headers that proxy sets (`SHAREGATE_CLIENT_IP_HEADER`, `SHAREGATE_COUNTRY_HEADER`) and, so that a client who
//! reaches the edge directly cannot use them, the proxy's addresses (`SHAREGATE_TRUSTED_PROXIES`): the headers are
//! then believed only on connections from those addresses. These are read through the same [`ConfigSource`] as the
//! engine's settings (`sharegate edge` and `sharegate dev` alike).

use axum::http::{HeaderMap, HeaderName};
use sharegate_edge::adapter::country_code;
use sharegate_edge::config::{ConfigError, ConfigSource};
use sharegate_shared::token::IpPrefix;
use std::net::{IpAddr, SocketAddr};

/// Setting names (documented in `docs/edge.md`).
pub mod keys {
    /// A header name (none): the header a trusted proxy in front of the edge sets to the client's address. For
    /// `X-Forwarded-For`, its last entry (the one that proxy appended) is used.
    pub const CLIENT_IP_HEADER: &str = "SHAREGATE_CLIENT_IP_HEADER";
    /// A header name (none): the header a trusted proxy sets to the client's ISO 3166-1 alpha-2 country (for
    /// example `CF-IPCountry`). Without it the edge has no country source.
    pub const COUNTRY_HEADER: &str = "SHAREGATE_COUNTRY_HEADER";
    /// CIDRs, comma separated (none: any peer): the proxies whose headers are believed.
    pub const TRUSTED_PROXIES: &str = "SHAREGATE_TRUSTED_PROXIES";
}

/// The trusted sources of the client's address and country.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSources {
    /// The header a trusted proxy puts the client's address in; `None`: the TCP peer.
    pub ip_header: Option<HeaderName>,
    /// The header a trusted proxy puts the client's country in; `None`: no country source.
    pub country_header: Option<HeaderName>,
    /// Peers whose headers are believed; empty: any peer (the edge must then be reachable only through the proxy).
    pub trusted_proxies: Vec<IpPrefix>,
}

fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// One address as proxies write it: `203.0.113.7`, `2001:db8::1`, or with a port (`203.0.113.7:443`,
/// `[2001:db8::1]:443`).
fn address(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    v.parse::<IpAddr>()
        .ok()
        .or_else(|| v.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(unmapped)
}

impl ClientSources {
    /// Read the sources from `src` (the process environment, or a map in tests).
    pub fn from_source(src: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let header = |key: &'static str| -> Result<Option<HeaderName>, ConfigError> {
            match src
                .get(key)
                .map(|v| v.trim().to_ascii_lowercase())
                .filter(|v| !v.is_empty())
            {
                None => Ok(None),
                Some(v) => HeaderName::from_bytes(v.as_bytes()).map(Some).map_err(|_| ConfigError {
                    key,
                    problem: "must be an HTTP header name",
                }),
            }
        };
        let mut trusted_proxies = Vec::new();
        for cidr in src
            .get(keys::TRUSTED_PROXIES)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
            let addr: Option<IpAddr> = addr.parse().ok().map(unmapped);
            let prefix = addr.and_then(|a| {
                let full = if a.is_ipv4() { 32 } else { 128 };
                let len = if len.is_empty() { Some(full) } else { len.parse().ok() };
                len.and_then(|l| IpPrefix::new(a, l))
            });
            trusted_proxies.push(prefix.ok_or(ConfigError {
                key: keys::TRUSTED_PROXIES,
                problem: "must be addresses or CIDRs (203.0.113.0/24, 2001:db8::/32), comma separated",
            })?);
        }
        Ok(ClientSources {
            ip_header: header(keys::CLIENT_IP_HEADER)?,
            country_header: header(keys::COUNTRY_HEADER)?,
            trusted_proxies,
        })
    }

    /// The conformance harness's headers (`X-Forwarded-For`, `X-Sharegate-Country`), believed from any peer: for
    /// tests that simulate clients from loopback.
    pub fn test_harness() -> Self {
        ClientSources {
            ip_header: Some(HeaderName::from_static("x-forwarded-for")),
            country_header: Some(HeaderName::from_static(sharegate_edge::contract::headers::TEST_COUNTRY)),
            trusted_proxies: Vec::new(),
        }
    }

    /// Whether the edge has a country source at all.
    pub fn has_country(&self) -> bool {
        self.country_header.is_some()
    }

    /// Whether a request from `peer` came through a proxy whose headers the edge believes: always when no
    /// `SHAREGATE_TRUSTED_PROXIES` are listed, else only from a listed address. A request that bypassed the proxy has
    /// no country source at all (not "unknown country", which would let it pass every deny list).
    pub fn vouched(&self, peer: Option<IpAddr>) -> bool {
        let peer = peer.map(unmapped);
        self.trusted_proxies.is_empty() || peer.is_some_and(|p| self.trusted_proxies.iter().any(|n| n.contains(p)))
    }

    /// The client's address and country for a request from `peer` with `headers`: the configured headers when the
    /// peer is a trusted proxy, else the peer and no country. A configured header that is absent or unreadable
    /// leaves the peer's address (the connection did not come through the proxy as expected) and no country.
    pub fn facts(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> (Option<IpAddr>, Option<[u8; 2]>) {
        if !self.vouched(peer) {
            return (peer.map(unmapped), None);
        }
        let peer = peer.map(unmapped);
        let ip = self.ip_header.as_ref().and_then(|name| {
            // The last line and, in a list, the last entry: what the proxy next to us wrote. Earlier entries of
            // X-Forwarded-For are whatever the client sent.
            let last = headers.get_all(name).iter().next_back()?.to_str().ok()?;
            address(last.rsplit(',').next()?)
        });
        let country = self
            .country_header
            .as_ref()
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(country_code);
        (ip.or(peer), country)
    }

    /// Where the client address comes from, for the status endpoint and the log: `peer` or `header:<name>`.
    pub fn ip_source(&self) -> String {
        self.ip_header
            .as_ref()
            .map_or_else(|| "peer".into(), |h| format!("header:{h}"))
    }

    /// Where the client country comes from: `none` or `header:<name>`.
    pub fn country_source(&self) -> String {
        self.country_header
            .as_ref()
            .map_or_else(|| "none".into(), |h| format!("header:{h}"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const SPOOF: &[(&str, &str)] = &[
        ("x-forwarded-for", "203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
        ("cf-connecting-ip", "203.0.113.7"),
        ("true-client-ip", "203.0.113.7"),
        ("fastly-client-ip", "203.0.113.7"),
        ("x-sharegate-country", "DE"),
        ("cf-ipcountry", "DE"),
    ];

    #[test]
    fn by_default_only_the_peer_counts() {
        let src: &[(&str, &str)] = &[];
        let s = ClientSources::from_source(&src).unwrap();
        let peer = Some("198.51.100.1".parse().unwrap());
        assert_eq!(s.facts(peer, &headers(SPOOF)), (peer, None));
        assert_eq!((s.ip_source().as_str(), s.country_source().as_str()), ("peer", "none"));
        assert!(!s.has_country());
    }

    #[test]
    fn a_configured_header_counts_only_from_trusted_proxies() {
        let src: &[(&str, &str)] = &[
            (keys::CLIENT_IP_HEADER, "X-Forwarded-For"),
            (keys::COUNTRY_HEADER, "CF-IPCountry"),
            (keys::TRUSTED_PROXIES, "10.0.0.0/8, ::1"),
        ];
        let s = ClientSources::from_source(&src).unwrap();
        assert_eq!(s.ip_source(), "header:x-forwarded-for");
        // Through the proxy: the entry it appended, not the one the client wrote first.
        let h = headers(&[("x-forwarded-for", "192.0.2.66, 203.0.113.7"), ("cf-ipcountry", "at")]);
        let via = Some("10.1.2.3".parse().unwrap());
        assert_eq!(s.facts(via, &h), (Some("203.0.113.7".parse().unwrap()), Some(*b"AT")));
        let mapped = Some("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(s.facts(mapped, &h).1, Some(*b"AT"));
        // Straight to the edge: the same headers move nothing.
        let direct = Some("198.51.100.1".parse().unwrap());
        assert_eq!(s.facts(direct, &h), (direct, None));
        assert_eq!(s.facts(direct, &headers(SPOOF)), (direct, None));
        // Other spoofable headers are never read, even from the proxy.
        let only_others = headers(&[("x-real-ip", "203.0.113.7"), ("x-sharegate-country", "DE")]);
        assert_eq!(s.facts(via, &only_others), (via, None));
        // Ports and IPv6 as proxies write them.
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:4711")]);
        assert_eq!(s.facts(via, &h).0, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn bad_settings_are_refused() {
        for (k, v) in [
            (keys::CLIENT_IP_HEADER, "not a header"),
            (keys::COUNTRY_HEADER, "x:y"),
            (keys::TRUSTED_PROXIES, "10.0.0.0/33"),
            (keys::TRUSTED_PROXIES, "proxy.example.com"),
        ] {
            let src: &[(&str, &str)] = &[(k, v)];
            assert_eq!(ClientSources::from_source(&src).unwrap_err().key, k, "{k}={v}");
        }
    }
}
