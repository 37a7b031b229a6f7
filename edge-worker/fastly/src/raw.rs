//! The client's request target exactly as Fastly received it.
//!
//! `fastly::Request::get_url` parses the URI with the `url` crate, which resolves `..` and `%2e%2e` segments and
//! turns `\` into `/` before any of our code can look (checked under Viceroy 0.22: `GET /t/x/demo/../other/m.m3u8`
//! reads back as `/t/x/other/m.m3u8`). The engine refuses such paths itself (`bad_path`, the same answer as the
//! native edge), so it must see them raw: the crate exposes the unparsed URI only through the `uri_get` hostcall,
//! which is the one `unsafe` call of this adapter.

use fastly::Request;
use fastly_shared::FastlyStatus;

/// Longest URI read (Fastly itself refuses request lines beyond 8 KiB).
const MAX_URI: usize = 16 * 1024;

/// The client request's URI (`http://host/path?query`) unparsed, or `None` if the host would not give it.
#[allow(unsafe_code)]
pub fn client_uri(req: &Request) -> Option<String> {
    let (handle, _) = req.as_handles();
    let handle = handle.as_u32();
    let mut buf = vec![0u8; 2048];
    for _ in 0..2 {
        let mut written = 0usize;
        // SAFETY: `buf` is a live, writable allocation of `buf.len()` bytes and `written` a live usize; the host
        // writes at most `buf.len()` bytes into `buf` and the length into `written`, and keeps neither pointer.
        let status = unsafe { fastly_sys::fastly_http_req::uri_get(handle, buf.as_mut_ptr(), buf.len(), &mut written) };
        if status == FastlyStatus::OK && written <= buf.len() {
            buf.truncate(written);
            return String::from_utf8(buf).ok();
        }
        if status != FastlyStatus::BUFLEN || written <= buf.len() || written > MAX_URI {
            return None;
        }
        // Too small: the host said how much it needs.
        buf.resize(written, 0);
    }
    None
}

/// The client's address, by the one hostcall (the crate's `get_client_ip_addr` fetches every client fact first,
/// measured at ~18 µs in Viceroy).
#[allow(unsafe_code)]
pub fn client_ip(req: &Request) -> Option<std::net::IpAddr> {
    let (handle, _) = req.as_handles();
    let mut octets = [0u8; 16];
    let mut written = 0usize;
    // SAFETY: `octets` is a live, writable 16-byte buffer (the longest address, IPv6) and `written` a live usize; the
    // host writes at most 16 bytes and the length, and keeps neither pointer.
    let status = unsafe {
        fastly_sys::fastly_http_downstream::downstream_client_ip_addr(
            handle.as_u32(),
            octets.as_mut_ptr(),
            &mut written,
        )
    };
    if status != FastlyStatus::OK {
        return None;
    }
    match written {
        4 => Some(std::net::IpAddr::from([octets[0], octets[1], octets[2], octets[3]])),
        16 => Some(std::net::IpAddr::from(octets)),
        _ => None,
    }
}

/// The country code of `ip` from Fastly's geolocation, by the one hostcall and a scan of its JSON for the one field
/// (`fastly::geo::geo_lookup` parses the whole record with serde, measured at ~50 µs in Viceroy).
#[allow(unsafe_code)]
pub fn country(ip: std::net::IpAddr) -> Option<[u8; 2]> {
    let v4;
    let v6;
    let addr: &[u8] = match ip {
        std::net::IpAddr::V4(a) => {
            v4 = a.octets();
            &v4
        }
        std::net::IpAddr::V6(a) => {
            v6 = a.octets();
            &v6
        }
    };
    let mut buf = vec![0u8; 1024];
    for _ in 0..2 {
        let mut written = 0usize;
        // SAFETY: `addr` is live for `addr.len()` bytes, `buf` writable for `buf.len()` bytes, `written` a live usize;
        // the host reads the address, writes at most `buf.len()` bytes and the length, and keeps no pointer.
        let status = unsafe {
            fastly_sys::fastly_geo::lookup(addr.as_ptr(), addr.len(), buf.as_mut_ptr(), buf.len(), &mut written)
        };
        if status == FastlyStatus::OK && written <= buf.len() {
            return country_code_in(&buf[..written]);
        }
        if status != FastlyStatus::BUFLEN || written <= buf.len() || written > 64 * 1024 {
            return None;
        }
        buf.resize(written, 0);
    }
    None
}

/// The value of the `"country_code"` field of a geolocation record (JSON), if it is two ASCII letters.
pub fn country_code_in(json: &[u8]) -> Option<[u8; 2]> {
    const FIELD: &[u8] = b"\"country_code\"";
    let at = json.windows(FIELD.len()).position(|w| w == FIELD)?;
    let rest = &json[at + FIELD.len()..];
    let rest = rest.trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    match rest {
        [a, b, b'"', ..] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::country_code_in;

    #[test]
    fn the_country_code_field_is_found_and_nothing_else() {
        let j = br#"{"as_name":"x","country_code3":"USA","country_code" : "us","country_name":"United States"}"#;
        assert_eq!(country_code_in(j), Some(*b"US"));
        assert_eq!(country_code_in(br#"{"country_code3":"USA"}"#), None);
        assert_eq!(country_code_in(br#"{"country_code":"**"}"#), None);
        assert_eq!(country_code_in(br#"{"country_code":"USA"}"#), None);
        assert_eq!(country_code_in(br#"{"country_code":null}"#), None);
        assert_eq!(country_code_in(b""), None);
    }
}
