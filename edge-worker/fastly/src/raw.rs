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
