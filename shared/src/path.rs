//! Canonical request-path normalisation and scope matching.
//!
//! [`normalize_path`] turns a raw request path into the one canonical string that is used for the token scope check
//! ([`path_in_scope`]), for the path requested from the origin and for the cache key. Because all three use the same
//! string, what was authorised is exactly what is fetched and cached.
//!
//! The normaliser refuses, it never repairs. Anything that the edge, the CDN, the origin server or the storage layer
//! could read differently is an error with a stable reason code ([`PathError::as_str`]):
//!
//! - dot segments (`.` and `..`, raw or percent-encoded, and `..;x`, which Tomcat-style servers read as `..`) and
//!   empty segments (`//`): a path that passes the prefix check could resolve somewhere else at the origin;
//! - encoded `/` and `\`, raw `\`, and the Unicode look-alikes that NFKC or Windows "best fit" mappings turn into
//!   `/`, `\` or `.`: they change the segment structure once something downstream decodes them;
//! - `%25` (double encoding), malformed escapes, NUL and control characters (also C1 controls such as U+0085),
//!   raw non-ASCII bytes and raw `?`/`#`;
//! - percent-encoded bytes that are not valid shortest-form UTF-8 (overlong forms, surrogates, stray or missing
//!   continuation bytes, code points above U+10FFFF).
//!
//! An accepted path is made canonical: escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, every
//! other escape is written with uppercase hex. Input that is already canonical (the common case) comes back
//! borrowed after one pass over its bytes, without allocating.

use alloc::borrow::Cow;
use alloc::string::String;
use core::fmt;

/// Longest raw path accepted, in bytes. Checked before any other work so a huge input costs nothing.
pub const MAX_PATH_LEN: usize = 2048;

/// Why a path was refused. The codes from [`PathError::as_str`] are stable and safe to log or return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    TooLong,
    /// The path contains `//`.
    EmptySegment,
    /// A segment is `.` or `..` (raw, encoded, or followed by `;` parameters), or a look-alike of one.
    DotSegment,
    /// An encoded `/` (`%2F`), or a Unicode character that normalises to `/`.
    EncodedSlash,
    /// A `\`, raw or encoded, or a Unicode character that normalises to `\`.
    Backslash,
    /// A NUL byte, raw or encoded.
    Nul,
    /// A control character other than NUL, raw or encoded (C0, DEL and C1).
    ControlChar,
    /// A `%` that is not followed by two hex digits.
    BadPercent,
    /// An encoded `%` (`%25`), the tell-tale of double encoding.
    DoubleEncoding,
    /// Percent-encoded bytes that are not valid shortest-form UTF-8.
    InvalidUtf8,
    /// A raw byte at or above 0x80; HTTP paths arrive as ASCII.
    NonAscii,
    /// A raw `?` or `#`; the caller must split off the query before normalising.
    QueryOrFragment,
}

impl PathError {
    /// Stable `snake_case` reason code, e.g. `"dot_segment"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "not_absolute",
            PathError::TooLong => "too_long",
            PathError::EmptySegment => "empty_segment",
            PathError::DotSegment => "dot_segment",
            PathError::EncodedSlash => "encoded_slash",
            PathError::Backslash => "backslash",
            PathError::Nul => "nul",
            PathError::ControlChar => "control_char",
            PathError::BadPercent => "bad_percent",
            PathError::DoubleEncoding => "double_encoding",
            PathError::InvalidUtf8 => "invalid_utf8",
            PathError::NonAscii => "non_ascii",
            PathError::QueryOrFragment => "query_or_fragment",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for PathError {}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved characters: the only ones whose escapes are decoded, because decoding them cannot change
/// how any component splits or interprets the path.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Refusals for a raw (unescaped) byte.
fn check_raw_byte(b: u8) -> Result<(), PathError> {
    match b {
        0 => Err(PathError::Nul),
        0x01..=0x1F | 0x7F => Err(PathError::ControlChar),
        b'\\' => Err(PathError::Backslash),
        b'?' | b'#' => Err(PathError::QueryOrFragment),
        0x80..=0xFF => Err(PathError::NonAscii),
        _ => Ok(()),
    }
}

/// Refusals for an ASCII byte that arrived percent-encoded.
fn check_escaped_ascii(b: u8) -> Result<(), PathError> {
    match b {
        0 => Err(PathError::Nul),
        0x01..=0x1F | 0x7F => Err(PathError::ControlChar),
        b'/' => Err(PathError::EncodedSlash),
        b'\\' => Err(PathError::Backslash),
        b'%' => Err(PathError::DoubleEncoding),
        _ => Ok(()),
    }
}

/// Refusals for a decoded non-ASCII code point: C1 controls, and characters that NFKC (or Windows "best fit")
/// turns into `/` or `\`, so an origin that normalises Unicode would see a different structure than we checked.
fn check_code_point(cp: u32) -> Result<(), PathError> {
    match cp {
        0x80..=0x9F => Err(PathError::ControlChar),
        // FULLWIDTH SOLIDUS, DIVISION SLASH
        0xFF0F | 0x2215 => Err(PathError::EncodedSlash),
        // FULLWIDTH REVERSE SOLIDUS, SMALL REVERSE SOLIDUS
        0xFF3C | 0xFE68 => Err(PathError::Backslash),
        _ => Ok(()),
    }
}

/// How many `.` a code point becomes under NFKC, for dot-segment detection (`．．` must count as `..`).
fn dot_weight(cp: u32) -> u8 {
    match cp {
        // FULL STOP, FULLWIDTH FULL STOP, SMALL FULL STOP, ONE DOT LEADER
        0x2E | 0xFF0E | 0xFE52 | 0x2024 => 1,
        // TWO DOT LEADER
        0x2025 => 2,
        _ => 0,
    }
}

/// What we need to know about the current segment to spot `.`/`..`.
///
/// Only the part before the first `;` (raw or `%3B`) counts: servers that support path parameters read `..;x` as
/// `..`.
#[derive(Default)]
struct Segment {
    nonempty: bool,
    in_params: bool,
    dots: u8,
    other: bool,
}

impl Segment {
    fn push(&mut self, cp: u32) {
        self.nonempty = true;
        if self.in_params {
            return;
        }
        if cp == u32::from(b';') {
            self.in_params = true;
            return;
        }
        match dot_weight(cp) {
            0 => self.other = true,
            n => self.dots = self.dots.saturating_add(n),
        }
    }

    fn check(&self) -> Result<(), PathError> {
        if !self.other && (self.dots == 1 || self.dots == 2) {
            Err(PathError::DotSegment)
        } else {
            Ok(())
        }
    }
}

/// Incremental UTF-8 validator for percent-decoded bytes, following the well-formed byte sequence table of the
/// Unicode standard (table 3-7). Narrowing the range of the first continuation byte is what rejects overlong forms,
/// surrogates and code points above U+10FFFF.
#[derive(Default)]
struct Utf8 {
    need: u8,
    lo: u8,
    hi: u8,
    cp: u32,
}

impl Utf8 {
    fn idle(&self) -> Result<(), PathError> {
        if self.need == 0 {
            Ok(())
        } else {
            Err(PathError::InvalidUtf8)
        }
    }

    /// Feeds a decoded byte that is either >= 0x80 or arrives while a sequence is open. Returns the code point once
    /// its last byte has arrived.
    fn feed(&mut self, b: u8) -> Result<Option<u32>, PathError> {
        if self.need == 0 {
            let (need, lo, hi, bits) = match b {
                0xC2..=0xDF => (1, 0x80, 0xBF, b & 0x1F),
                0xE0 => (2, 0xA0, 0xBF, b & 0x0F),
                0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF, b & 0x0F),
                0xED => (2, 0x80, 0x9F, b & 0x0F),
                0xF0 => (3, 0x90, 0xBF, b & 0x07),
                0xF1..=0xF3 => (3, 0x80, 0xBF, b & 0x07),
                0xF4 => (3, 0x80, 0x8F, b & 0x07),
                // Stray continuation bytes, overlong leads (C0, C1) and leads beyond U+10FFFF.
                _ => return Err(PathError::InvalidUtf8),
            };
            *self = Utf8 {
                need,
                lo,
                hi,
                cp: u32::from(bits),
            };
            return Ok(None);
        }
        if b < self.lo || b > self.hi {
            return Err(PathError::InvalidUtf8);
        }
        self.cp = (self.cp << 6) | u32::from(b & 0x3F);
        self.need -= 1;
        self.lo = 0x80;
        self.hi = 0xBF;
        Ok((self.need == 0).then_some(self.cp))
    }
}

/// Bytes a path may hold raw that need no further thought: allowed unescaped, and neither a separator (`/`), an
/// escape (`%`), a dot (dot segments) nor a `;` (path parameters).
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 0x7F {
        t[b] = !matches!(b as u8, b'\\' | b'?' | b'#' | b'%' | b'/' | b'.' | b';');
        b += 1;
    }
    t[0x20] = true;
    t
};

/// The common case, decided in one pass with a table lookup per byte: `bytes` (starting with `/`) holds only plain
/// bytes, dots and separators, no empty segment but a trailing one, and no `.`/`..` segment — so it is canonical as
/// it is. `false` means "not decided here": the full walk gives the answer (and the reason).
fn plainly_canonical(bytes: &[u8]) -> bool {
    let (mut len, mut dots) = (0usize, 0usize);
    let dot_segment = |len: usize, dots: usize| dots == len && (dots == 1 || dots == 2);
    for &b in bytes.get(1..).unwrap_or(&[]) {
        if PLAIN[usize::from(b)] {
            len += 1;
        } else if b == b'.' {
            len += 1;
            dots += 1;
        } else if b == b'/' && len != 0 && !dot_segment(len, dots) {
            len = 0;
            dots = 0;
        } else {
            return false;
        }
    }
    !dot_segment(len, dots)
}

/// Normalise a raw request path (query already split off by the caller).
///
/// Returns the canonical path, borrowed when `raw` is already canonical, or the first reason it was refused. See
/// the module documentation for the rules.
///
/// # Errors
///
/// The [`PathError`] for the first thing in `raw` that is refused (a too-long path is refused before anything else
/// is looked at).
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if plainly_canonical(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    walk(raw)
}

/// The full normalisation of an absolute path within the length limit, byte by byte.
fn walk(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    // Built lazily, only once an escape has to change; `copied` is how much of `raw` it already covers.
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut seg = Segment::default();
    let mut utf8 = Utf8::default();
    let mut i = 1;

    while let Some(&b) = bytes.get(i) {
        match b {
            b'/' => {
                utf8.idle()?;
                if !seg.nonempty {
                    return Err(PathError::EmptySegment);
                }
                seg.check()?;
                seg = Segment::default();
                i += 1;
            }
            b'%' => {
                let Some(&[h, l]) = bytes.get(i + 1..i + 3) else {
                    return Err(PathError::BadPercent);
                };
                let v = match (hex_val(h), hex_val(l)) {
                    (Some(h), Some(l)) => (h << 4) | l,
                    _ => return Err(PathError::BadPercent),
                };
                let decode = if utf8.need > 0 || v >= 0x80 {
                    if let Some(cp) = utf8.feed(v)? {
                        check_code_point(cp)?;
                        seg.push(cp);
                    }
                    false
                } else {
                    check_escaped_ascii(v)?;
                    seg.push(u32::from(v));
                    is_unreserved(v)
                };
                if decode || h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                    let buf = out.get_or_insert_with(|| String::with_capacity(raw.len()));
                    // Every byte before `i` has been checked to be ASCII, so this slice is always on a char
                    // boundary; `get` keeps the function panic-free regardless.
                    buf.push_str(raw.get(copied..i).ok_or(PathError::NonAscii)?);
                    if decode {
                        buf.push(char::from(v));
                    } else {
                        buf.push('%');
                        buf.push(char::from(HEX_UPPER[usize::from(v >> 4)]));
                        buf.push(char::from(HEX_UPPER[usize::from(v & 0x0F)]));
                    }
                    copied = i + 3;
                }
                i += 3;
            }
            _ => {
                check_raw_byte(b)?;
                utf8.idle()?;
                seg.push(u32::from(b));
                i += 1;
            }
        }
    }
    utf8.idle()?;
    // The last segment may be empty: a single trailing '/' is a boundary, not an empty segment.
    seg.check()?;

    match out {
        None => Ok(Cow::Borrowed(raw)),
        Some(mut buf) => {
            buf.push_str(raw.get(copied..).ok_or(PathError::NonAscii)?);
            Ok(Cow::Owned(buf))
        }
    }
}

/// Segment-boundary prefix match on normalised paths.
///
/// Prefix `/v/1` matches `/v/1` and `/v/1/x` but not `/v/10`; prefix `/v/1/` matches `/v/1/x` (and `/v/1/`) but not
/// `/v/1`. An empty prefix or `/` matches every path. Fails closed: a `path` that is not already canonical (as
/// returned by [`normalize_path`]) or a non-empty prefix that is not absolute never matches.
#[must_use]
pub fn path_in_scope(path: &str, prefix: &str) -> bool {
    // String comparison is only meaningful between canonical forms; refuse anything the caller forgot to normalise.
    if !matches!(normalize_path(path), Ok(Cow::Borrowed(_))) {
        return false;
    }
    if prefix.is_empty() || prefix == "/" {
        return true;
    }
    if !prefix.starts_with('/') {
        return false;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::string::{String, ToString};
    use std::vec::Vec;

    /// Attack paths and the reason each must be refused with.
    const ATTACKS: &[(&str, PathError)] = {
        use PathError::*;
        &[
            // Traversal, raw and encoded.
            ("/a/../b", DotSegment),
            ("/a/%2e%2e/b", DotSegment),
            ("/a/%2E%2e/b", DotSegment),
            ("/a/%2E./b", DotSegment),
            ("/a/.%2e/b", DotSegment),
            ("/a/%2e/b", DotSegment),
            ("/a/./b", DotSegment),
            ("/..", DotSegment),
            ("/.", DotSegment),
            ("/a/.", DotSegment),
            ("/a/..", DotSegment),
            ("/a/../", DotSegment),
            ("/./a", DotSegment),
            ("/%2e%2e/etc/passwd", DotSegment),
            ("/a/%2e%2e", DotSegment),
            // Path parameters: Tomcat & co. read "..;x" as "..".
            ("/a/..;/b", DotSegment),
            ("/a/.;x/b", DotSegment),
            ("/a/..%3b/b", DotSegment),
            // Unicode look-alikes that NFKC turns into dots.
            ("/a/%EF%BC%8E%EF%BC%8E/b", DotSegment),
            ("/a/%E2%80%A5/b", DotSegment),
            ("/a/.%EF%B9%92/b", DotSegment),
            // Encoded slashes and backslashes.
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a/..%2f", EncodedSlash),
            ("/a/%2e%2e%2fb", EncodedSlash),
            ("/a/%EF%BC%8F/b", EncodedSlash),
            ("/a/%E2%88%95etc", EncodedSlash),
            ("/a/b%5c..%5cc", Backslash),
            ("/a\\b", Backslash),
            ("/a/..\\b", Backslash),
            ("/a/%EF%BC%BC..", Backslash),
            // Empty segments.
            ("//a", EmptySegment),
            ("/a//b", EmptySegment),
            ("//", EmptySegment),
            ("/a/b//", EmptySegment),
            // NUL and control characters, raw and encoded.
            ("/a/b%00.ts", Nul),
            ("/a/b\0.ts", Nul),
            ("/a/\u{7f}", ControlChar),
            ("/a/b\r\nX: y", ControlChar),
            ("/a/%09", ControlChar),
            ("/a/%0d%0aSet-Cookie:%20x", ControlChar),
            ("/a/%7F", ControlChar),
            ("/a/b\t", ControlChar),
            ("/a/%C2%85", ControlChar),
            // Double encoding.
            ("/a/%252e%252e/b", DoubleEncoding),
            ("/a/%255c", DoubleEncoding),
            ("/a/%25", DoubleEncoding),
            ("/a/%252F", DoubleEncoding),
            // Malformed escapes, including nested and IIS-style %u.
            ("/a/%", BadPercent),
            ("/a/%2", BadPercent),
            ("/a/%zz", BadPercent),
            ("/a/%%32%65%%32%65/b", BadPercent),
            ("/a/%u002e%u002e/b", BadPercent),
            ("/a/% 2f", BadPercent),
            ("/a/%g0", BadPercent),
            // Invalid or non-shortest-form UTF-8.
            ("/a/%c0%ae%c0%ae/b", InvalidUtf8),
            ("/a/%e0%80%ae/", InvalidUtf8),
            ("/a/%C0%AF", InvalidUtf8),
            ("/a/%E0%80%AF", InvalidUtf8),
            ("/a/%F0%80%80%AF", InvalidUtf8),
            ("/a/%ED%A0%80", InvalidUtf8),
            ("/a/%ED%BF%BF", InvalidUtf8),
            ("/a/%80", InvalidUtf8),
            ("/a/%BF", InvalidUtf8),
            ("/a/%C3", InvalidUtf8),
            ("/a/%C3/b", InvalidUtf8),
            ("/a/%C3x", InvalidUtf8),
            ("/a/%E2%82", InvalidUtf8),
            ("/a/%C3%A9%A9", InvalidUtf8),
            ("/a/%C3%2F", InvalidUtf8),
            ("/a/%F4%90%80%80", InvalidUtf8),
            ("/a/%F5%80%80%80", InvalidUtf8),
            ("/a/%FF", InvalidUtf8),
            // Not absolute.
            ("a/b", NotAbsolute),
            ("", NotAbsolute),
            ("\\a\\b", NotAbsolute),
            ("http://evil.example/a", NotAbsolute),
            (" /a", NotAbsolute),
            ("%2Fa", NotAbsolute),
            // Raw non-ASCII.
            ("/é", NonAscii),
            ("/a/b\u{200b}.ts", NonAscii),
            ("/a/\u{ff0e}\u{ff0e}/b", NonAscii),
            // Query or fragment smuggled into the path.
            ("/a?b", QueryOrFragment),
            ("/a#b", QueryOrFragment),
            ("/a/seg.ts?x=/../b", QueryOrFragment),
        ]
    };

    fn long_path(len: usize) -> String {
        let mut s = String::from("/");
        while s.len() < len {
            s.push('a');
        }
        s
    }

    #[test]
    fn attack_table() {
        assert!(ATTACKS.len() >= 45);
        let mut seen = std::collections::BTreeSet::new();
        for &(input, want) in ATTACKS {
            assert!(seen.insert(input), "duplicate attack {input:?}");
            assert_eq!(normalize_path(input), Err(want), "input {input:?}");
            assert!(!path_in_scope(input, ""), "input {input:?}");
        }
        let too_long = long_path(MAX_PATH_LEN + 1);
        assert_eq!(normalize_path(&too_long), Err(PathError::TooLong));
        // Length is checked before anything else.
        let mut bad_tail = long_path(MAX_PATH_LEN);
        bad_tail.push_str("/../\0");
        assert_eq!(normalize_path(&bad_tail), Err(PathError::TooLong));
        assert_eq!(normalize_path(&"x".repeat(100_000)), Err(PathError::TooLong));
    }

    #[test]
    fn length_limit_is_inclusive() {
        let max = long_path(MAX_PATH_LEN);
        assert!(matches!(normalize_path(&max), Ok(Cow::Borrowed(_))));
        // Length counts raw bytes, before decoding shrinks anything.
        let mut encoded = long_path(MAX_PATH_LEN - 3);
        encoded.push_str("%41");
        assert_eq!(encoded.len(), MAX_PATH_LEN);
        assert!(normalize_path(&encoded).is_ok());
        encoded.push('a');
        assert_eq!(normalize_path(&encoded), Err(PathError::TooLong));
    }

    #[test]
    fn accepted_table() {
        // (input, canonical output, borrowed)
        let cases: &[(&str, &str, bool)] = &[
            ("/", "/", true),
            ("/a", "/a", true),
            ("/a/b/", "/a/b/", true),
            ("/v/1/seg-00001.ts", "/v/1/seg-00001.ts", true),
            ("/v/1/index.m3u8", "/v/1/index.m3u8", true),
            ("/a/%7euser", "/a/~user", false),
            ("/a/%7Euser", "/a/~user", false),
            ("/a/%c3%a9", "/a/%C3%A9", false),
            ("/a/%C3%A9", "/a/%C3%A9", true),
            ("/a/%C3%a9x", "/a/%C3%A9x", false),
            ("/a%20b", "/a%20b", true),
            ("/a%3fb", "/a%3Fb", false),
            ("/a%23b", "/a%23b", true),
            ("/a/%41%42%43", "/a/ABC", false),
            ("/a/%5F%2D%2e%30", "/a/_-.0", false),
            ("/a/%2e%2e%2e", "/a/...", false),
            ("/a/%2ehidden/x", "/a/.hidden/x", false),
            ("/a/.hidden", "/a/.hidden", true),
            ("/a/a..b", "/a/a..b", true),
            ("/a/...", "/a/...", true),
            ("/a/..../b", "/a/..../b", true),
            ("/a/.x/", "/a/.x/", true),
            ("/a/%E2%82%AC", "/a/%E2%82%AC", true),
            ("/a/%F0%9F%98%80.ts", "/a/%F0%9F%98%80.ts", true),
            ("/a/%f4%8f%bf%bf", "/a/%F4%8F%BF%BF", false),
            ("/a/%EF%BC%8Ex", "/a/%EF%BC%8Ex", true),
            ("/a/%E2%80%A6", "/a/%E2%80%A6", true),
            ("/a/b;c", "/a/b;c", true),
            ("/a/x;..", "/a/x;..", true),
            ("/a/%3B", "/a/%3B", true),
            ("/a/!$&'()*+,;=:@", "/a/!$&'()*+,;=:@", true),
            ("/a/%7e%2e%2e", "/a/~..", false),
        ];
        assert!(cases.len() >= 15);
        for &(input, want, borrowed) in cases {
            let got = normalize_path(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
            assert_eq!(got, want, "input {input:?}");
            assert_eq!(matches!(got, Cow::Borrowed(_)), borrowed, "borrowed-ness of {input:?}");
            assert_eq!(
                normalize_path(&got),
                Ok(Cow::Borrowed(want)),
                "idempotence of {input:?}"
            );
        }
    }

    #[test]
    fn error_codes() {
        use PathError::*;
        let all = [
            (NotAbsolute, "not_absolute"),
            (TooLong, "too_long"),
            (EmptySegment, "empty_segment"),
            (DotSegment, "dot_segment"),
            (EncodedSlash, "encoded_slash"),
            (Backslash, "backslash"),
            (Nul, "nul"),
            (ControlChar, "control_char"),
            (BadPercent, "bad_percent"),
            (DoubleEncoding, "double_encoding"),
            (InvalidUtf8, "invalid_utf8"),
            (NonAscii, "non_ascii"),
            (QueryOrFragment, "query_or_fragment"),
        ];
        for (e, code) in all {
            assert_eq!(e.as_str(), code);
            assert_eq!(e.to_string(), code);
        }
    }

    #[test]
    fn scope_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/v/1", "/v/1", true),
            ("/v/1/x", "/v/1", true),
            ("/v/1/", "/v/1", true),
            ("/v/1/a/b.ts", "/v/1", true),
            ("/v/10", "/v/1", false),
            ("/v/10/x", "/v/1", false),
            ("/v/1x", "/v/1", false),
            ("/v/1;x/y", "/v/1", false),
            ("/v", "/v/1", false),
            ("/v/1/x", "/v/1/", true),
            ("/v/1/", "/v/1/", true),
            ("/v/1", "/v/1/", false),
            ("/v/10/x", "/v/1/", false),
            ("/", "/", true),
            ("/anything/at/all", "/", true),
            ("/", "", true),
            ("/anything", "", true),
            ("/V/1/x", "/v/1", false),
            ("/w/1/x", "/v/1", false),
            // Relative prefixes never match.
            ("/v/1/x", "v/1", false),
            // Non-canonical paths never match, whatever the prefix.
            ("/v/1/../2/x", "/v/1", false),
            ("/v/1/%2e%2e/2/x", "/v/1", false),
            ("/v/1/%7ex", "/v/1", false),
            ("/v/1%2f..%2f2", "/v/1", false),
            ("v/1/x", "", false),
            ("", "", false),
            ("//v/1", "/", false),
        ];
        for &(path, prefix, want) in cases {
            assert_eq!(path_in_scope(path, prefix), want, "path {path:?} prefix {prefix:?}");
        }
    }

    /// Strings built from pieces that are dense in the characters attacks are made of, plus enough well-formed
    /// pieces (whole UTF-8 sequences, escapes of unreserved characters) that a fair share of them is accepted and
    /// the output properties are exercised too.
    fn attacky() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            6 => prop::sample::select(&[
                "/", ".", "%", "2", "e", "E", "f", "F", "5", "c", "C", "0", "\\", "a", ";", "~",
            ][..]).prop_map(String::from),
            2 => prop::sample::select(&[
                "%2e", "%2E", "%2f", "%2F", "%25", "%5c", "%00", "%c0", "%ae", "%e0", "%80", "%C3", "%A9", "%7e",
                "%3b", "%ED", "%A0", "%F0", "%9F", "%98", "%EF", "%BC", "%8E", "%8F", "..", "/..", "/.", "//",
            ][..]).prop_map(String::from),
            3 => prop::sample::select(&[
                "%2e", "%2E", "%7e", "%41", "%3b", "%3f", "%20", "%c3%a9", "%C3%A9", "%e2%82%ac", "%EF%BC%8E",
                "%E2%80%A5", "%F0%9F%98%80", "%C2%85", "%EF%BC%8F", "seg", "/v/1/", ".ts",
            ][..]).prop_map(String::from),
            1 => any::<char>().prop_map(String::from),
        ];
        (prop::bool::weighted(0.9), prop::collection::vec(piece, 0..24)).prop_map(|(slash, v)| {
            let mut s = String::from(if slash { "/" } else { "" });
            s.extend(v);
            s
        })
    }

    fn check_output(out: &str) {
        assert!(out.starts_with('/'));
        assert!(out.len() <= MAX_PATH_LEN);
        for bad in ["/../", "/./", "//", "%2F", "%2f", "%25", "\\"] {
            assert!(!out.contains(bad), "{out:?} contains {bad:?}");
        }
        assert!(!out.ends_with("/..") && !out.ends_with("/."), "{out:?}");
        assert!(out.bytes().all(|b| (0x20..0x7F).contains(&b)), "{out:?}");
        // Escapes are uppercase and never of unreserved characters.
        let bytes = out.as_bytes();
        for (i, _) in out.match_indices('%') {
            let h = &bytes[i + 1..i + 3];
            assert!(
                h.iter().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                "{out:?}"
            );
            let v = u8::from_str_radix(core::str::from_utf8(h).unwrap(), 16).unwrap();
            assert!(!is_unreserved(v), "{out:?}");
        }
        // Fully decoded, the path is valid UTF-8 and has no dot segments.
        let decoded = percent_decode(out);
        let decoded = core::str::from_utf8(&decoded).unwrap();
        assert!(decoded.split('/').all(|s| s != "." && s != ".."), "{out:?}");
    }

    fn percent_decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                out.push(u8::from_str_radix(core::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    fn check_property(input: &str) {
        if let Ok(out) = normalize_path(input) {
            check_output(&out);
            assert_eq!(
                normalize_path(&out),
                Ok(Cow::Borrowed(&*out)),
                "not idempotent: {input:?}"
            );
            assert!(path_in_scope(&out, "/"));
            assert!(path_in_scope(&out, &out));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn arbitrary_strings(s in any::<String>()) {
            check_property(&s);
            let slashed = format!("/{s}");
            check_property(&slashed);
        }

        #[test]
        fn attack_alphabet(s in attacky()) {
            check_property(&s);
        }

        /// The one-pass fast path says "canonical" only when the full walk returns the path unchanged, and always
        /// does for paths without `;` or `%` (which it leaves to the walk).
        #[test]
        fn fast_path_agrees_with_the_walk(s in "/[./;%a-c ]{0,24}") {
            let fast = plainly_canonical(s.as_bytes());
            let unchanged = matches!(walk(&s), Ok(Cow::Borrowed(_)));
            prop_assert!(!fast || unchanged, "{:?}", s);
            if !s.contains([';', '%']) {
                prop_assert_eq!(fast, unchanged, "{:?}", s);
            }
        }

        #[test]
        fn ascii_strings(s in "[ -~]{0,64}") {
            check_property(&s);
            check_property(&format!("/{s}"));
        }

        /// The UTF-8 validator agrees with the standard library on arbitrary byte sequences.
        #[test]
        fn utf8_matches_std(bytes in prop::collection::vec(
            prop_oneof![3 => 0x80u8..=0xFF, 1 => Just(b'a')], 1..10)) {
            let mut path = String::from("/x/");
            for b in &bytes {
                path.push_str(&format!("%{b:02X}"));
            }
            let want_ok = match core::str::from_utf8(&bytes) {
                Ok(s) => s.chars().all(|c| {
                    check_code_point(u32::from(c)).is_ok() && dot_weight(u32::from(c)) == 0
                }),
                Err(_) => false,
            };
            let got = normalize_path(&path);
            prop_assert_eq!(got.is_ok(), want_ok, "{:?} -> {:?}", path, got);
            if want_ok {
                prop_assert_eq!(percent_decode(&got.unwrap()), percent_decode(&path));
            }
        }

        /// Fully percent-encoding any harmless text is accepted and decodes back to the same text.
        #[test]
        fn encoded_text_round_trips(s in "[^/;\\\\%\u{0}-\u{1f}\u{7f}-\u{9f}]{1,16}") {
            prop_assume!(s != "." && s != "..");
            prop_assume!(s.chars().all(|c| {
                check_code_point(u32::from(c)).is_ok() && (c.is_ascii() || dot_weight(u32::from(c)) == 0)
            }));
            let mut path = String::from("/v/");
            for b in s.bytes() {
                path.push_str(&format!("%{b:02x}"));
            }
            let out = normalize_path(&path).unwrap();
            prop_assert_eq!(percent_decode(&out), format!("/v/{s}").into_bytes());
        }
    }
}
