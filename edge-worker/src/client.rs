//! Who the client is: the address and the country an edge decides on, and which source it trusts for them. One
//! reader for every edge: the adapter passes the connection's peer (or the platform's client address) and a lookup of
//! the request's headers, and gets [`ClientFacts`].
//!
//! By default the only fact trusted is the peer's address, and there is no country at all: a client can write any
//! header it likes (`X-Forwarded-For`, `X-Real-IP`, `CF-Connecting-IP`, a country header), so no header moves a
//! decision. Behind a proxy (a load balancer, or a CDN in front of a self-hosted edge) the operator names the headers
//! that proxy sets (`SHAREGATE_CLIENT_IP_HEADER`, `SHAREGATE_COUNTRY_HEADER`) and, so that a client who reaches the
//! edge directly cannot use them, the proxy's addresses (`SHAREGATE_TRUSTED_PROXIES`): the headers are then believed
//! only on connections from those addresses. Cloudflare and Fastly take the platform's facts instead, or, for local
//! test runtimes only, the test harness's headers ([`ClientSources::cdn`]), through the same reader: the platform's
//! facts are the [`Peer`].

use crate::config::{ConfigError, ConfigSource};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use sharegate_shared::token::IpPrefix;

/// Setting names (documented in `docs/edge-config.md`).
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
    /// The header (lower case) a trusted proxy puts the client's address in; `None`: the peer.
    pub ip_header: Option<String>,
    /// The header (lower case) a trusted proxy puts the client's country in; `None`: no country source.
    pub country_header: Option<String>,
    /// Peers whose headers are believed; empty: any peer (the edge must then be reachable only through the proxy).
    pub trusted_proxies: Vec<IpPrefix>,
    /// Which entry of a list-valued address header (`X-Forwarded-For`) is the client.
    pub ip_entry: ListEntry,
}

/// Which entry of an address list names the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListEntry {
    /// The last: what the trusted proxy next to the edge appended (earlier entries are whatever the client sent).
    /// Every real deployment behind a proxy.
    #[default]
    Last,
    /// The first: what the sender wrote itself. Only for a local CDN runtime (workerd, Viceroy) driven by the test
    /// harness, which plays the client and writes the header; should the runtime append its own peer (loopback),
    /// the harness's entry still comes first. (Checked: Viceroy's source and wrangler/miniflare's add none.)
    First,
}

/// What the runtime itself knows of the client: the connection's peer (native), or the platform's client address
/// and its geolocation (Cloudflare's `CF-Connecting-IP` and `request.cf`, Fastly's client address and geo lookup).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer's (the platform's client) address.
    pub ip: Option<IpAddr>,
    /// The platform's country for it, where the platform has one.
    pub country: Option<[u8; 2]>,
}

/// What the edge knows of one request's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFacts {
    /// The client's address.
    pub ip: Option<IpAddr>,
    /// The client's country (upper-case alpha-2).
    pub country: Option<[u8; 2]>,
    /// Whether the request came through the proxy as configured. When it did not, it has no country source at all:
    /// country rules are refused for it (or follow the lenient rule), never read as "unknown country", which passes
    /// every deny list.
    pub vouched: bool,
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

/// An HTTP field name (RFC 9110 §5.1: a token), lower-cased.
fn header_name(v: &str) -> Option<String> {
    let v = v.trim().to_ascii_lowercase();
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!v.is_empty() && v.bytes().all(token)).then_some(v)
}

impl ClientSources {
    /// Read the sources from `src` (the process environment, or a map in tests).
    pub fn from_source(src: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let header = |key: &'static str| -> Result<Option<String>, ConfigError> {
            match src.get(key).filter(|v| !v.trim().is_empty()) {
                None => Ok(None),
                Some(v) => header_name(&v).map(Some).ok_or(ConfigError {
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
            ip_entry: ListEntry::Last,
        })
    }

    /// The conformance harness's headers (`X-Forwarded-For`, `X-Sharegate-Country`), believed from any peer: for
    /// tests that simulate clients from loopback.
    pub fn test_harness() -> Self {
        ClientSources {
            ip_header: Some("x-forwarded-for".to_string()),
            country_header: Some(crate::contract::headers::TEST_COUNTRY.to_string()),
            trusted_proxies: Vec::new(),
            ip_entry: ListEntry::Last,
        }
    }

    /// A CDN adapter's sources: the platform's facts ([`Peer`]), or with `trust_forwarded`
    /// (`SHAREGATE_TRUST_FORWARDED`, local runtimes behind the test harness only) the harness's headers, the
    /// first `X-Forwarded-For` entry ([`ListEntry::First`]).
    pub fn cdn(trust_forwarded: bool) -> Self {
        if trust_forwarded {
            ClientSources {
                ip_entry: ListEntry::First,
                ..ClientSources::test_harness()
            }
        } else {
            ClientSources::default()
        }
    }

    /// Whether the edge has a country source at all.
    pub fn has_country(&self) -> bool {
        self.country_header.is_some()
    }

    /// Whether a request from `peer` came from a proxy whose headers the edge believes: always when no
    /// `SHAREGATE_TRUSTED_PROXIES` are listed, else only from a listed address.
    pub fn trusted_peer(&self, peer: Option<IpAddr>) -> bool {
        let peer = peer.map(unmapped);
        self.trusted_proxies.is_empty() || peer.is_some_and(|p| self.trusted_proxies.iter().any(|n| n.contains(p)))
    }

    /// Whether a request from `peer` takes its country from the runtime's geolocation of `peer` (no country header is
    /// configured, and the peer may speak for the client): what [`ClientSources::read_peer`] does with
    /// `Peer::country`. An adapter whose lookup costs (Fastly's geo hostcall) then defers it to the decision, which
    /// asks only for a token with a country rule (`Request::country_lookup`).
    pub fn country_from_peer(&self, peer: Option<IpAddr>) -> bool {
        self.country_header.is_none() && self.trusted_peer(peer)
    }

    /// The facts of a request from `peer`; `last` gives the last value of a header (by its lower-case name) as the
    /// runtime received it (the last line: what the proxy next to us wrote).
    ///
    /// From a trusted peer the configured headers count; otherwise the peer's address and no country. A configured
    /// address header that is absent or unreadable leaves the peer's address; a configured country header that is
    /// missing (or unreadable) means the request did not come through the proxy as configured, so it is not
    /// vouched for.
    pub fn read<'h>(&self, peer: Option<IpAddr>, last: impl Fn(&str) -> Option<&'h str>) -> ClientFacts {
        self.read_peer(
            Peer {
                ip: peer,
                country: None,
            },
            last,
        )
    }

    /// [`ClientSources::read`] with what the runtime knows itself: without a configured country header the
    /// peer's (platform's) country counts.
    pub fn read_peer<'h>(&self, peer: Peer, last: impl Fn(&str) -> Option<&'h str>) -> ClientFacts {
        let ip = peer.ip.map(unmapped);
        if !self.trusted_peer(ip) {
            return ClientFacts {
                ip,
                country: None,
                vouched: false,
            };
        }
        // Which entry of a list: see ListEntry (the proxy's own, the last, in every real deployment).
        let entry = |v: &'h str| match self.ip_entry {
            ListEntry::Last => v.rsplit(',').next(),
            ListEntry::First => v.split(',').next(),
        };
        let from_header = self
            .ip_header
            .as_deref()
            .and_then(&last)
            .and_then(entry)
            .and_then(address);
        let country = match self.country_header.as_deref() {
            Some(name) => last(name).and_then(country_code),
            None => peer.country,
        };
        ClientFacts {
            ip: from_header.or(ip),
            country,
            vouched: self.country_header.is_none() || country.is_some(),
        }
    }

    /// [`ClientSources::read_peer`] for a runtime whose header lookup hands out owned copies (`get`: a header's
    /// value by its lower-case name): only the configured headers are looked up.
    pub fn read_owned(&self, peer: Peer, get: impl Fn(&str) -> Option<String>) -> ClientFacts {
        let ip = self.ip_header.as_deref().and_then(&get);
        let country = self.country_header.as_deref().and_then(&get);
        self.read_peer(peer, |name| {
            if Some(name) == self.ip_header.as_deref() {
                ip.as_deref()
            } else if Some(name) == self.country_header.as_deref() {
                country.as_deref()
            } else {
                None
            }
        })
    }

    /// Where the client address comes from, for the status endpoint and the log: `peer` or `header:<name>`.
    pub fn ip_source(&self) -> String {
        self.ip_header
            .as_ref()
            .map_or_else(|| "peer".into(), |h| alloc::format!("header:{h}"))
    }

    /// Where the client country comes from: `none` or `header:<name>`.
    pub fn country_source(&self) -> String {
        self.country_header
            .as_ref()
            .map_or_else(|| "none".into(), |h| alloc::format!("header:{h}"))
    }
}

/// A two-letter country code, upper-cased; anything else is `None`.
pub fn country_code(c: &str) -> Option<[u8; 2]> {
    let b: [u8; 2] = c.trim().as_bytes().try_into().ok()?;
    b.iter()
        .all(u8::is_ascii_alphabetic)
        .then(|| b.map(|x| x.to_ascii_uppercase()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The last value of each header, as a runtime's lookup gives it.
    fn lookup<'h>(pairs: &'h [(&'h str, &'h str)]) -> impl Fn(&str) -> Option<&'h str> {
        move |name| pairs.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
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

    fn pair(f: ClientFacts) -> (Option<IpAddr>, Option<[u8; 2]>) {
        (f.ip, f.country)
    }

    #[test]
    fn by_default_only_the_peer_counts() {
        let src: &[(&str, &str)] = &[];
        let s = ClientSources::from_source(&src).unwrap();
        let peer = Some("198.51.100.1".parse().unwrap());
        assert_eq!(pair(s.read(peer, lookup(SPOOF))), (peer, None));
        assert!(s.read(peer, lookup(SPOOF)).vouched);
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
        let h = [("x-forwarded-for", "192.0.2.66, 203.0.113.7"), ("cf-ipcountry", "at")];
        let via = Some("10.1.2.3".parse().unwrap());
        assert_eq!(
            pair(s.read(via, lookup(&h))),
            (Some("203.0.113.7".parse().unwrap()), Some(*b"AT"))
        );
        assert!(s.read(via, lookup(&h)).vouched);
        let mapped = Some("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(s.read(mapped, lookup(&h)).country, Some(*b"AT"));
        // Straight to the edge: the same headers move nothing, and it has no country source.
        let direct = Some("198.51.100.1".parse().unwrap());
        assert_eq!(pair(s.read(direct, lookup(&h))), (direct, None));
        assert_eq!(pair(s.read(direct, lookup(SPOOF))), (direct, None));
        assert!(!s.read(direct, lookup(&h)).vouched);
        // Other spoofable headers are never read, even from the proxy; the missing country header means the
        // request did not come through the proxy as configured.
        let only_others = [("x-real-ip", "203.0.113.7"), ("x-sharegate-country", "DE")];
        assert_eq!(pair(s.read(via, lookup(&only_others))), (via, None));
        assert!(!s.read(via, lookup(&only_others)).vouched);
        // Ports and IPv6 as proxies write them.
        let h = [("x-forwarded-for", "[2001:db8::1]:4711")];
        assert_eq!(s.read(via, lookup(&h)).ip, Some("2001:db8::1".parse().unwrap()));
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

    #[test]
    fn forwarded() {
        // A CDN behind the test harness: the harness's (first) entry and its country header.
        let s = ClientSources::cdn(true);
        let platform = Peer {
            ip: Some("127.0.0.1".parse().unwrap()),
            country: None,
        };
        let h = [
            ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
            ("x-sharegate-country", "de"),
        ];
        assert_eq!(
            pair(s.read_peer(platform, lookup(&h))),
            (Some("203.0.113.9".parse().unwrap()), Some(*b"DE"))
        );
        let bad = [("x-forwarded-for", "nope"), ("x-sharegate-country", "DEU")];
        assert_eq!(pair(s.read_peer(platform, lookup(&bad))), (platform.ip, None));
        assert_eq!(country_code("1A"), None);
        // On the real platform: the platform's facts, whatever the client wrote.
        let s = ClientSources::cdn(false);
        let platform = Peer {
            ip: Some("198.51.100.1".parse().unwrap()),
            country: Some(*b"AT"),
        };
        assert_eq!(pair(s.read_peer(platform, lookup(SPOOF))), (platform.ip, Some(*b"AT")));
    }

    /// A deferred lookup (`country_from_peer`) is used exactly where `read_peer` would have taken the peer's
    /// country: every source configuration, from trusted and untrusted peers, with and without the headers.
    #[test]
    fn the_peer_country_is_deferred_exactly_where_read_peer_takes_it() {
        let configs: [&[(&str, &str)]; 4] = [
            &[],
            &[(keys::TRUSTED_PROXIES, "10.0.0.0/8")],
            &[(keys::COUNTRY_HEADER, "CF-IPCountry")],
            &[
                (keys::CLIENT_IP_HEADER, "X-Forwarded-For"),
                (keys::TRUSTED_PROXIES, "10.0.0.0/8, ::1"),
            ],
        ];
        let peers = [
            None,
            Some("10.1.2.3"),
            Some("198.51.100.1"),
            Some("::ffff:10.1.2.3"),
            Some("::1"),
        ];
        let headers: [&[(&str, &str)]; 2] = [&[], &[("cf-ipcountry", "AT"), ("x-forwarded-for", "203.0.113.7")]];
        for src in configs {
            let s = ClientSources::from_source(&src).unwrap();
            for peer in peers.map(|p| p.map(|a| a.parse::<IpAddr>().unwrap())) {
                for h in headers {
                    let platform = Peer {
                        ip: peer,
                        country: Some(*b"JP"),
                    };
                    let took_peers = s.read_peer(platform, lookup(h)).country == Some(*b"JP");
                    assert_eq!(s.country_from_peer(peer), took_peers, "{src:?} {peer:?} {h:?}");
                }
            }
        }
    }
}
