//! Who the client is, on the native edge: the one reader of `sharegate_edge::client` (its settings, its rules),
//! fed with the TCP peer and the request's headers. Read the rules there; this module only looks headers up.

use axum::http::HeaderMap;
pub use sharegate_edge::client::{ClientFacts, ClientSources, keys};
use std::net::IpAddr;

/// The facts of a request from `peer` with `headers`. A header sent on several lines counts by its last line: what
/// the proxy next to us wrote.
pub fn facts(sources: &ClientSources, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientFacts {
    sources.read(peer, |name| headers.get_all(name).iter().next_back()?.to_str().ok())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_header_on_several_lines_counts_by_its_last() {
        let src: &[(&str, &str)] = &[
            (keys::CLIENT_IP_HEADER, "X-Forwarded-For"),
            (keys::COUNTRY_HEADER, "CF-IPCountry"),
            (keys::TRUSTED_PROXIES, "10.0.0.0/8"),
        ];
        let s = ClientSources::from_source(&src).unwrap();
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", HeaderValue::from_static("192.0.2.66"));
        h.append("x-forwarded-for", HeaderValue::from_static("198.51.100.9, 203.0.113.7"));
        h.append("cf-ipcountry", HeaderValue::from_static("DE"));
        h.append("cf-ipcountry", HeaderValue::from_static("at"));
        let via = Some("10.1.2.3".parse().unwrap());
        let f = facts(&s, via, &h);
        assert_eq!(
            (f.ip, f.country, f.vouched),
            (Some("203.0.113.7".parse().unwrap()), Some(*b"AT"), true)
        );
    }
}
