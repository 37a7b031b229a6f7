//! HLS playlist URI rewriting: find every URI an RFC 8216 / rfc8216bis playlist carries and let the caller swap it,
//! so that each variant playlist, segment, key and interstitial request carries the right token (query-parameter mode
//! and the two-tier share-token → session-token exchange). It does no I/O and keeps no state; it is not a validating
//! parser either: it reads only what locates URIs, and every byte it does not rewrite goes through untouched (a BOM,
//! mixed LF/CRLF, a missing final newline, unknown tags, comments). A playlist with nothing to rewrite comes back
//! borrowed, and the walk itself does not allocate; [`resolve`] and [`with_query_param`] are the helpers a caller
//! needs to decide what each URI becomes.

use alloc::borrow::Cow;
use alloc::string::String;
use core::fmt;

/// The largest playlist [`rewrite_uris`] accepts. Real playlists are kilobytes; a long live DVR window of short
/// LL-HLS parts stays well under a megabyte.
pub const MAX_PLAYLIST_BYTES: usize = 4 * 1024 * 1024;

const BOM: &str = "\u{feff}";

/// What kind of place a URI was found in (lets the caller pick the permission / token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UriKind {
    /// The URI line after `EXT-X-STREAM-INF`, or the `URI` of `EXT-X-I-FRAME-STREAM-INF`: a variant playlist.
    Variant,
    /// The `URI` of `EXT-X-MEDIA`: an alternative rendition's playlist (audio, subtitles).
    Media,
    /// A URI line in a media playlist, or the `URI` of `EXT-X-PART`.
    Segment,
    /// The `URI` of `EXT-X-MAP`: a media initialisation section.
    Map,
    /// The `URI` of `EXT-X-KEY` or `EXT-X-SESSION-KEY`.
    Key,
    /// The `URI` of `EXT-X-PRELOAD-HINT` (a part or a map the server is about to publish).
    PreloadHint,
    /// The `URI` of `EXT-X-RENDITION-REPORT`: another rendition's media playlist.
    RenditionReport,
    /// The `URI` of `EXT-X-SESSION-DATA` (a JSON document).
    SessionData,
    /// The `SERVER-URI` of `EXT-X-CONTENT-STEERING`: the steering manifest.
    ContentSteering,
    /// A URI-valued client attribute of `EXT-X-DATERANGE` (`X-ASSET-URI`, `X-ASSET-LIST`, `X-…URI`).
    DateRange,
}

/// Why a playlist was not rewritten. `as_str` gives a stable snake_case code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PlaylistError {
    /// The body does not start with `#EXTM3U` (after an optional BOM).
    NotM3u8,
    /// The body is larger than [`MAX_PLAYLIST_BYTES`].
    TooLarge,
    /// A URI-bearing tag has a quoted string with no closing quote on its line, so where its URI ends is unknowable.
    UnterminatedQuote,
}

impl PlaylistError {
    /// The stable, machine-readable code.
    pub const fn as_str(self) -> &'static str {
        match self {
            PlaylistError::NotM3u8 => "not_m3u8",
            PlaylistError::TooLarge => "too_large",
            PlaylistError::UnterminatedQuote => "unterminated_quote",
        }
    }
}

impl fmt::Display for PlaylistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::error::Error for PlaylistError {}

/// Rewrite every URI; `f(uri, kind)` returns `Some(replacement)` or `None` to keep it. Returns `Cow::Borrowed` when
/// nothing changed.
///
/// URIs are visited once each, in document order. A URI line's URI excludes blanks (space, tab) around it, which stay
/// in place; a quoted attribute value is taken verbatim; empty values and unquoted `URI=` values are not URIs. A
/// replacement is refused (the original is kept) when it would change how the playlist parses: it is empty or holds
/// `"`, CR or LF, or, on a URI line, it starts with `#` or has blanks at either end.
///
/// On `Err(UnterminatedQuote)`, `f` has already seen the URIs before the faulty line.
pub fn rewrite_uris<'a, F>(playlist: &'a str, mut f: F) -> Result<Cow<'a, str>, PlaylistError>
where
    F: FnMut(&str, UriKind) -> Option<String>,
{
    let mut out: Option<String> = None;
    let mut copied = 0;
    walk(playlist, |span| {
        let uri = &playlist[span.start..span.end];
        let Some(new) = f(uri, span.kind) else { return };
        if new == uri || !is_safe_replacement(&new, span.on_uri_line) {
            return;
        }
        // Headroom for a token on most URIs without regrowing.
        let buf = out.get_or_insert_with(|| String::with_capacity(playlist.len() + playlist.len() / 2));
        buf.push_str(&playlist[copied..span.start]);
        buf.push_str(&new);
        copied = span.end;
    })?;
    Ok(match out {
        None => Cow::Borrowed(playlist),
        Some(mut buf) => {
            buf.push_str(&playlist[copied..]);
            Cow::Owned(buf)
        }
    })
}

/// Whether this is a multivariant (master) playlist: it has `EXT-X-STREAM-INF` or `EXT-X-I-FRAME-STREAM-INF` and no
/// `EXTINF`.
pub fn is_multivariant(playlist: &str) -> bool {
    let mut variants = false;
    for line in playlist.split('\n') {
        let Some(tag) = line.strip_prefix('#') else { continue };
        let name = tag.split_once(':').map_or(tag, |(name, _)| name).trim_end_matches('\r');
        match name {
            "EXTINF" => return false,
            "EXT-X-STREAM-INF" | "EXT-X-I-FRAME-STREAM-INF" => variants = true,
            _ => {}
        }
    }
    variants
}

/// Resolve a URI found in a playlist served at `playlist_path` (an absolute path, e.g. `/demo/v0/index.m3u8`) on host
/// `our_host` (`cdn.example.com`, or `host:port` when not on a default port).
///
/// - A relative reference (`seg1.ts`, `../v1/a.ts`, `/abs/x.ts`, `?v=2`) gives `Some(absolute path)` with dot segments
///   removed per RFC 3986 §5.2.4 (`..` above the root stays at the root) and its query kept.
/// - An absolute `http`/`https` URL or a protocol-relative `//host/…` naming our host (compared ASCII
///   case-insensitively; a default port counts as none) gives `Some(path + query)`.
/// - Anything else gives `None` (leave it alone): another host, another scheme (`data:`, `skd:`), userinfo, a bad port.
///
/// The fragment is dropped: it never reaches a server. Percent-encoding is left as it is; the edge's path normaliser
/// judges the result.
pub fn resolve(playlist_path: &str, uri: &str, our_host: &str) -> Option<String> {
    let uri = uri.split_once('#').map_or(uri, |(before, _)| before);
    if let Some((scheme, rest)) = split_scheme(uri) {
        let default_port: &[u16] = if scheme.eq_ignore_ascii_case("https") {
            &[443]
        } else if scheme.eq_ignore_ascii_case("http") {
            &[80]
        } else {
            return None;
        };
        // `http:x.ts` (a scheme without an authority) is legal RFC 3986 but no player's idea of our origin.
        return same_host_path(rest.strip_prefix("//")?, our_host, default_port);
    }
    if let Some(rest) = uri.strip_prefix("//") {
        // The playlist's own scheme is not known here, so either default port counts.
        return same_host_path(rest, our_host, &[80, 443]);
    }

    let (path, query) = split_query(uri);
    let base = playlist_path
        .split_once('#')
        .map_or(playlist_path, |(before, _)| before);
    let (base_path, base_query) = split_query(base);
    let mut out = String::with_capacity(base_path.len() + uri.len() + 1);
    if path.is_empty() {
        // RFC 3986 §5.2.2: the base path, with the reference's query if it has one, else the base's.
        push_path(&mut out, segments(base_path));
        push_query(&mut out, query.or(base_query));
        return Some(out);
    }
    if path.starts_with('/') {
        push_path(&mut out, segments(path));
    } else {
        // §5.2.3 merge: everything of the base path up to its last '/', then the reference.
        let dir = &base_path[..base_path.rfind('/').unwrap_or(0)];
        push_path(&mut out, segments(dir).chain(path.split('/')));
    }
    push_query(&mut out, query);
    Some(out)
}

/// Add or replace a query parameter `name=value` on a URI (`value` already URL-safe), keeping any other parameters
/// (in order, byte for byte) and any fragment. The first `name` parameter is replaced in place and any later ones
/// dropped, so the URI ends up with exactly one; empty parameters (`a&&b`) are dropped.
pub fn with_query_param(uri: &str, name: &str, value: &str) -> String {
    let (rest, fragment) = uri.split_at(uri.find('#').unwrap_or(uri.len()));
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut out = String::with_capacity(uri.len() + name.len() + value.len() + 2);
    out.push_str(path);
    let mut sep = '?';
    let mut placed = false;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let key = param.split_once('=').map_or(param, |(key, _)| key);
        if key == name {
            if placed {
                continue;
            }
            placed = true;
            out.push(sep);
            push_param(&mut out, name, value);
        } else {
            out.push(sep);
            out.push_str(param);
        }
        sep = '&';
    }
    if !placed {
        out.push(sep);
        push_param(&mut out, name, value);
    }
    out.push_str(fragment);
    out
}

fn push_param(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push('=');
    out.push_str(value);
}

/// The file an origin serving a directory holds for a request path: `/a/a%20b.ts` → `a/a b.ts`, relative to the
/// origin's root. Percent-escapes are decoded the way an HTTP file server decodes them before it opens a file, so the
/// native edge's directory origin and the control plane's readiness check (which resolves playlist URIs with
/// [`resolve`] and then asks this function) name the same file for the same URI.
///
/// `None` for a path no file server would map to a file inside its root: a malformed escape, a decoded NUL, a `/`
/// produced by `%2F` (it would change the segment structure), a segment that decodes to `.` or `..` or is empty (it
/// would leave the directory it names), or bytes that are not UTF-8. Paths the edge normalised never hit these; the
/// checks are here because the function is also handed URIs read from playlists.
pub fn origin_file_path(uri_path: &str) -> Option<String> {
    let path = uri_path.strip_prefix('/').unwrap_or(uri_path);
    let mut out = alloc::vec::Vec::with_capacity(path.len());
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        let start = out.len();
        let bytes = segment.as_bytes();
        let mut at = 0;
        while let Some(&b) = bytes.get(at) {
            if b == b'%' {
                let hex = bytes.get(at + 1..at + 3)?;
                let decoded = (hex_digit(*hex.first()?)? << 4) | hex_digit(*hex.get(1)?)?;
                if decoded == 0 || decoded == b'/' {
                    return None;
                }
                out.push(decoded);
                at += 3;
            } else if b == 0 {
                return None;
            } else {
                out.push(b);
                at += 1;
            }
        }
        if matches!(out.get(start..)?, b"" | b"." | b"..") {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A URI's place in the playlist, as byte offsets.
struct Span {
    start: usize,
    end: usize,
    kind: UriKind,
    on_uri_line: bool,
}

/// Where a tag keeps its URIs.
#[derive(Clone, Copy)]
enum Place {
    /// One attribute of this name.
    Attr(&'static str, UriKind),
    /// `EXT-X-DATERANGE`: any client attribute named like a URI.
    DateRange,
}

impl Place {
    fn of_tag(name: &str) -> Option<Place> {
        Some(match name {
            "EXT-X-I-FRAME-STREAM-INF" => Place::Attr("URI", UriKind::Variant),
            "EXT-X-MEDIA" => Place::Attr("URI", UriKind::Media),
            "EXT-X-KEY" | "EXT-X-SESSION-KEY" => Place::Attr("URI", UriKind::Key),
            "EXT-X-MAP" => Place::Attr("URI", UriKind::Map),
            "EXT-X-PART" => Place::Attr("URI", UriKind::Segment),
            "EXT-X-PRELOAD-HINT" => Place::Attr("URI", UriKind::PreloadHint),
            "EXT-X-RENDITION-REPORT" => Place::Attr("URI", UriKind::RenditionReport),
            "EXT-X-SESSION-DATA" => Place::Attr("URI", UriKind::SessionData),
            "EXT-X-CONTENT-STEERING" => Place::Attr("SERVER-URI", UriKind::ContentSteering),
            "EXT-X-DATERANGE" => Place::DateRange,
            _ => return None,
        })
    }

    fn kind_of(self, attr: &str) -> Option<UriKind> {
        match self {
            Place::Attr(name, kind) => (attr == name).then_some(kind),
            // Interstitials (X-ASSET-URI, X-ASSET-LIST) and any other client attribute that names itself a URI: a
            // player may fetch it, so it must carry a token too.
            Place::DateRange => {
                (attr.ends_with("-URI") || (attr.starts_with("X-") && attr.ends_with("URI")) || attr == "X-ASSET-LIST")
                    .then_some(UriKind::DateRange)
            }
        }
    }
}

/// The offset just past the BOM, once the cheap checks pass.
fn body_start(playlist: &str) -> Result<usize, PlaylistError> {
    if playlist.len() > MAX_PLAYLIST_BYTES {
        return Err(PlaylistError::TooLarge);
    }
    let start = if playlist.starts_with(BOM) { BOM.len() } else { 0 };
    if !playlist[start..].starts_with("#EXTM3U") {
        return Err(PlaylistError::NotM3u8);
    }
    Ok(start)
}

/// Calls `visit` for every URI, in document order, without allocating.
fn walk(playlist: &str, mut visit: impl FnMut(Span)) -> Result<(), PlaylistError> {
    let bytes = playlist.as_bytes();
    let mut pos = body_start(playlist)?;
    let mut after_stream_inf = false;
    while pos < bytes.len() {
        let line_end = playlist[pos..].find('\n').map_or(bytes.len(), |i| pos + i);
        // CR belongs to the line ending, also on a last line without LF.
        let end = if line_end > pos && bytes[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let line = &playlist[pos..end];
        if let Some(tag) = line.strip_prefix('#') {
            // Anything starting with '#' is a tag or a comment; only the tags we know carry URIs.
            let (name, attrs) = match tag.find(':') {
                Some(colon) => (&tag[..colon], Some(pos + 1 + colon + 1)),
                None => (tag, None),
            };
            if name == "EXT-X-STREAM-INF" {
                after_stream_inf = true;
            } else if let (Some(place), Some(attrs)) = (Place::of_tag(name), attrs) {
                scan_attributes(bytes, attrs, end, place, &mut visit)?;
            }
        } else {
            let (start, stop) = trim_blanks(bytes, pos, end);
            if start < stop {
                let kind = if after_stream_inf {
                    UriKind::Variant
                } else {
                    UriKind::Segment
                };
                after_stream_inf = false;
                visit(Span {
                    start,
                    end: stop,
                    kind,
                    on_uri_line: true,
                });
            }
        }
        pos = line_end + 1;
    }
    Ok(())
}

/// Reads the attribute list `bytes[pos..end]` and visits the quoted values `place` says are URIs. Lenient about blanks
/// and stray bytes: a player that tolerates them would still fetch the URI, so it must still be found.
fn scan_attributes(
    bytes: &[u8],
    mut pos: usize,
    end: usize,
    place: Place,
    visit: &mut impl FnMut(Span),
) -> Result<(), PlaylistError> {
    while pos < end {
        let name_start = pos;
        while pos < end && bytes[pos] != b'=' && bytes[pos] != b',' {
            pos += 1;
        }
        if pos == end || bytes[pos] == b',' {
            // A bare word with no value: nothing to find in it.
            pos += 1;
            continue;
        }
        let (ns, ne) = trim_blanks(bytes, name_start, pos);
        // Names are ASCII by grammar; a non-UTF-8 boundary here just means "not a URI attribute".
        let name = core::str::from_utf8(&bytes[ns..ne]).unwrap_or("");
        pos = trim_blanks(bytes, pos + 1, end).0;
        if pos < end && bytes[pos] == b'"' {
            let close = closing_quote(bytes, pos + 1, end)?;
            if let Some(kind) = place.kind_of(name)
                && close > pos + 1
            {
                visit(Span {
                    start: pos + 1,
                    end: close,
                    kind,
                    on_uri_line: false,
                });
            }
            pos = close + 1;
        }
        // The rest of an unquoted value, or stray bytes after a closing quote, up to the next separator. A quote in
        // there still pairs up: where a comma inside it belongs is ambiguous, and ambiguity is refused, not guessed.
        while pos < end && bytes[pos] != b',' {
            if bytes[pos] == b'"' {
                pos = closing_quote(bytes, pos + 1, end)?;
            }
            pos += 1;
        }
        pos += 1;
    }
    Ok(())
}

/// The offset of the first '"' in `bytes[from..end]`.
fn closing_quote(bytes: &[u8], from: usize, end: usize) -> Result<usize, PlaylistError> {
    bytes[from..end]
        .iter()
        .position(|&b| b == b'"')
        .map(|i| from + i)
        .ok_or(PlaylistError::UnterminatedQuote)
}

/// Narrows `start..end` to exclude spaces and tabs at either end.
fn trim_blanks(bytes: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && matches!(bytes[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(bytes[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    (start, end)
}

fn is_safe_replacement(new: &str, on_uri_line: bool) -> bool {
    if new.is_empty() || new.contains(['"', '\r', '\n']) {
        return false;
    }
    // On a URI line, a leading '#' would turn the URI into a comment and edge blanks would be trimmed off by the
    // next reader; neither is a URI a caller means to write.
    !on_uri_line || (!new.starts_with('#') && trim_blanks(new.as_bytes(), 0, new.len()) == (0, new.len()))
}

/// `Some((scheme, rest))` if `uri` starts with an RFC 3986 scheme and ':'.
fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    for (i, b) in uri.bytes().enumerate() {
        match b {
            b':' if i > 0 => return Some((&uri[..i], &uri[i + 1..])),
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            _ => return None,
        }
    }
    None
}

/// For `authority/path?query` (after `//`): `Some(path + query)` if the authority is our host.
fn same_host_path(rest: &str, our_host: &str, default_port: &[u16]) -> Option<String> {
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        // Userinfo has no place in a media URL; do not vouch for one.
        return None;
    }
    let (host, port) = split_host_port(authority)?;
    let (ours, our_port) = split_host_port(our_host)?;
    if host.is_empty() || !host.eq_ignore_ascii_case(ours) {
        return None;
    }
    if effective_port(port, default_port)? != effective_port(our_port, default_port)? {
        return None;
    }
    let (path, query) = split_query(tail);
    let mut out = String::with_capacity(tail.len() + 1);
    push_path(&mut out, segments(path));
    push_query(&mut out, query);
    Some(out)
}

/// `host[:port]` or `[v6]:port`; `None` if malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let (host, after) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        authority.split_at(close + 1)
    } else {
        authority.split_at(authority.find(':').unwrap_or(authority.len()))
    };
    match after {
        "" => Some((host, None)),
        _ => Some((host, Some(after.strip_prefix(':')?))),
    }
}

/// `Some(None)` for a missing, empty or default port, `Some(Some(n))` for another, `None` if it is not a port.
fn effective_port(port: Option<&str>, default_port: &[u16]) -> Option<Option<u16>> {
    let Some(port) = port.filter(|p| !p.is_empty()) else {
        return Some(None);
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u16 = port.parse().ok()?;
    Some((!default_port.contains(&n)).then_some(n))
}

/// `(path, Some(query))` split at the first '?'.
fn split_query(uri: &str) -> (&str, Option<&str>) {
    match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    }
}

fn push_query(out: &mut String, query: Option<&str>) {
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
}

/// The segments after a path's leading '/': none for "", one empty one for "/".
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    (!path.is_empty()).then(|| inner.split('/')).into_iter().flatten()
}

/// Appends '/' + the segments with dot segments removed (RFC 3986 §5.2.4, for an absolute path): "." is dropped,
/// ".." drops the segment before it (none above the root), and a final "." or ".." leaves a trailing '/'.
fn push_path<'s>(out: &mut String, segments: impl Iterator<Item = &'s str>) {
    let start = out.len();
    let mut segments = segments.peekable();
    while let Some(segment) = segments.next() {
        match segment {
            "." => {}
            ".." => {
                let cut = out[start..].rfind('/').map_or(start, |i| start + i);
                out.truncate(cut);
            }
            _ => {
                out.push('/');
                out.push_str(segment);
                continue;
            }
        }
        if segments.peek().is_none() {
            out.push('/');
        }
    }
    if out.len() == start {
        out.push('/');
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;
    use alloc::format;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    const HOST: &str = "cdn.example.com";

    #[test]
    fn origin_file_path_decodes_like_a_file_server() {
        let cases: &[(&str, Option<&str>)] = &[
            ("/a/a%20b.ts", Some("a/a b.ts")),
            ("/a/plain.ts", Some("a/plain.ts")),
            ("a/rel.ts", Some("a/rel.ts")),
            ("/a/%C3%A9t%C3%A9.ts", Some("a/\u{e9}t\u{e9}.ts")),
            ("/a/%41%62c.ts", Some("a/Abc.ts")),
            ("/a/x%2Fy.ts", None),
            ("/a/x%2fy.ts", None),
            ("/a/nul%00.ts", None),
            ("/a/nul\0.ts", None),
            ("/a/%FF.ts", None),
            ("/a/%C3.ts", None),
            ("/a/%2E%2E/secret", None),
            ("/a/%2e/x.ts", None),
            ("/a//x.ts", None),
            ("/a/..", None),
            ("/a/%", None),
            ("/a/%4", None),
            ("/a/%zz.ts", None),
        ];
        for (path, want) in cases {
            assert_eq!(origin_file_path(path).as_deref(), *want, "{path:?}");
        }
    }

    /// Every URI with its kind, in visiting order.
    fn visits(playlist: &str) -> Vec<(String, UriKind)> {
        let mut seen = Vec::new();
        rewrite_uris(playlist, |uri, kind| {
            seen.push((uri.to_owned(), kind));
            None
        })
        .unwrap();
        seen
    }

    /// Query-parameter mode: every URI on our host gets `t=TOK`, others are left alone.
    fn tokenise(playlist_path: &str, playlist: &str) -> String {
        rewrite_uris(playlist, |uri, _| {
            resolve(playlist_path, uri, HOST).map(|_| with_query_param(uri, "t", "TOK"))
        })
        .unwrap()
        .into_owned()
    }

    fn owned(list: &[(&str, UriKind)]) -> Vec<(String, UriKind)> {
        list.iter().map(|&(uri, kind)| (uri.to_owned(), kind)).collect()
    }

    const MULTIVARIANT: &str = r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-CONTENT-STEERING:SERVER-URI="/steering?video=abc",PATHWAY-ID="CDN-A"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",URI="meta/title.json"
#EXT-X-SESSION-DATA:DATA-ID="com.example.lang",VALUE="en",LANGUAGE="en"
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key-42",KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/en/index.m3u8"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="Deutsch, URI=Untertitel",LANGUAGE="de",URI="subs/de/index.m3u8?lang=de&t=old"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="English",INSTREAM-ID="CC1"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AVERAGE-BANDWIDTH=1000000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=640x360,AUDIO="aud",SUBTITLES="subs",CLOSED-CAPTIONS="cc"
v0/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2560000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,AUDIO="aud",SUBTITLES="subs"
https://CDN.example.com/demo/v1/index.m3u8?x=1
#EXT-X-STREAM-INF:BANDWIDTH=640000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=480x270,PATHWAY-ID="CDN-B"
https://backup.example.net/demo/v2/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,CODECS="avc1.4d401f",RESOLUTION=640x360,URI="v0/iframes.m3u8"
"#;

    #[test]
    fn multivariant_playlist() {
        // Served with CRLF line endings, which must survive.
        let input = MULTIVARIANT.replace('\n', "\r\n");
        assert!(is_multivariant(&input));
        assert_eq!(
            visits(&input),
            owned(&[
                ("/steering?video=abc", UriKind::ContentSteering),
                ("meta/title.json", UriKind::SessionData),
                ("skd://key-42", UriKind::Key),
                ("audio/en/index.m3u8", UriKind::Media),
                ("subs/de/index.m3u8?lang=de&t=old", UriKind::Media),
                ("v0/index.m3u8", UriKind::Variant),
                ("https://CDN.example.com/demo/v1/index.m3u8?x=1", UriKind::Variant),
                ("https://backup.example.net/demo/v2/index.m3u8", UriKind::Variant),
                ("v0/iframes.m3u8", UriKind::Variant),
            ])
        );
        let expected = r#"#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-CONTENT-STEERING:SERVER-URI="/steering?video=abc&t=TOK",PATHWAY-ID="CDN-A"
#EXT-X-SESSION-DATA:DATA-ID="com.example.title",URI="meta/title.json?t=TOK"
#EXT-X-SESSION-DATA:DATA-ID="com.example.lang",VALUE="en",LANGUAGE="en"
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI="skd://key-42",KEYFORMAT="com.apple.streamingkeydelivery",KEYFORMATVERSIONS="1"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="aud",NAME="English",LANGUAGE="en",DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="audio/en/index.m3u8?t=TOK"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="Deutsch, URI=Untertitel",LANGUAGE="de",URI="subs/de/index.m3u8?lang=de&t=TOK"
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID="cc",NAME="English",INSTREAM-ID="CC1"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,AVERAGE-BANDWIDTH=1000000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=640x360,AUDIO="aud",SUBTITLES="subs",CLOSED-CAPTIONS="cc"
v0/index.m3u8?t=TOK
#EXT-X-STREAM-INF:BANDWIDTH=2560000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=1280x720,AUDIO="aud",SUBTITLES="subs"
https://CDN.example.com/demo/v1/index.m3u8?x=1&t=TOK
#EXT-X-STREAM-INF:BANDWIDTH=640000,CODECS="avc1.4d401f,mp4a.40.2",RESOLUTION=480x270,PATHWAY-ID="CDN-B"
https://backup.example.net/demo/v2/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,CODECS="avc1.4d401f",RESOLUTION=640x360,URI="v0/iframes.m3u8?t=TOK"
"#
        .replace('\n', "\r\n");
        assert_eq!(tokenise("/demo/master.m3u8", &input), expected);
    }

    // With a BOM, a title holding quotes and a decoy `URI=`, a comment, blanks around a URI line, and no final newline.
    const VOD: &str = "\u{feff}#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"
#EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.example.net/k/1?kid=7\",IV=0x00000000000000000000000000000001
#EXTINF:6.000,
#EXT-X-BYTERANGE:100000@720
main.mp4
#EXTINF:6.000,Title with \"quotes, URI=\"x.ts\"
#EXT-X-BYTERANGE:98000
main.mp4
#EXT-X-DISCONTINUITY
#EXT-X-KEY:METHOD=NONE
#EXTINF:4.500,
../ads/ad1.ts
# a plain comment, URI=\"not-a-uri\"
#EXT-X-KEY:METHOD=AES-128,URI=\"/keys/k2.key\"
#EXTINF:6.000,
  seg3.ts\t
#EXT-X-ENDLIST";

    #[test]
    fn vod_media_playlist() {
        assert!(!is_multivariant(VOD));
        assert_eq!(
            visits(VOD),
            owned(&[
                ("init.mp4", UriKind::Map),
                ("https://keys.example.net/k/1?kid=7", UriKind::Key),
                ("main.mp4", UriKind::Segment),
                ("main.mp4", UriKind::Segment),
                ("../ads/ad1.ts", UriKind::Segment),
                ("/keys/k2.key", UriKind::Key),
                ("seg3.ts", UriKind::Segment),
            ])
        );
        let expected = "\u{feff}#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:6
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-MAP:URI=\"init.mp4?t=TOK\",BYTERANGE=\"720@0\"
#EXT-X-KEY:METHOD=AES-128,URI=\"https://keys.example.net/k/1?kid=7\",IV=0x00000000000000000000000000000001
#EXTINF:6.000,
#EXT-X-BYTERANGE:100000@720
main.mp4?t=TOK
#EXTINF:6.000,Title with \"quotes, URI=\"x.ts\"
#EXT-X-BYTERANGE:98000
main.mp4?t=TOK
#EXT-X-DISCONTINUITY
#EXT-X-KEY:METHOD=NONE
#EXTINF:4.500,
../ads/ad1.ts?t=TOK
# a plain comment, URI=\"not-a-uri\"
#EXT-X-KEY:METHOD=AES-128,URI=\"/keys/k2.key?t=TOK\"
#EXTINF:6.000,
  seg3.ts?t=TOK\t
#EXT-X-ENDLIST";
        assert_eq!(tokenise("/demo/v0/index.m3u8", VOD), expected);
    }

    const LL_HLS: &str = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXT-X-MAP:URI="init.mp4"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:00:00.000Z
#EXTINF:4.00008,
fileSequence269.mp4
#EXT-X-PART:DURATION=0.33334,URI="filePart270.0.mp4",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart270.1.mp4"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart270.2.mp4"
#EXT-X-RENDITION-REPORT:URI="../1M/index.m3u8",LAST-MSN=270,LAST-PART=2
#EXT-X-RENDITION-REPORT:URI="../4M/index.m3u8",LAST-MSN=270,LAST-PART=1
"#;

    #[test]
    fn ll_hls_live_playlist() {
        assert!(!is_multivariant(LL_HLS));
        assert_eq!(
            visits(LL_HLS),
            owned(&[
                ("init.mp4", UriKind::Map),
                ("fileSequence269.mp4", UriKind::Segment),
                ("filePart270.0.mp4", UriKind::Segment),
                ("filePart270.1.mp4", UriKind::Segment),
                ("filePart270.2.mp4", UriKind::PreloadHint),
                ("../1M/index.m3u8", UriKind::RenditionReport),
                ("../4M/index.m3u8", UriKind::RenditionReport),
            ])
        );
        let expected = r#"#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:4
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0,CAN-SKIP-UNTIL=24.0
#EXT-X-PART-INF:PART-TARGET=0.33334
#EXT-X-MEDIA-SEQUENCE:266
#EXT-X-SKIP:SKIPPED-SEGMENTS=3
#EXT-X-MAP:URI="init.mp4?t=TOK"
#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:00:00.000Z
#EXTINF:4.00008,
fileSequence269.mp4?t=TOK
#EXT-X-PART:DURATION=0.33334,URI="filePart270.0.mp4?t=TOK",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.33334,URI="filePart270.1.mp4?t=TOK"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="filePart270.2.mp4?t=TOK"
#EXT-X-RENDITION-REPORT:URI="../1M/index.m3u8?t=TOK",LAST-MSN=270,LAST-PART=2
#EXT-X-RENDITION-REPORT:URI="../4M/index.m3u8?t=TOK",LAST-MSN=270,LAST-PART=1
"#;
        assert_eq!(tokenise("/live/720p/index.m3u8", LL_HLS), expected);
    }

    // Mixed CRLF and LF; a decoy `X-ASSET-URI=` inside a quoted note; SCTE-35 hex that is not a URI.
    const INTERSTITIAL: &str = concat!(
        "#EXTM3U\r\n",
        "#EXT-X-VERSION:7\n",
        "#EXT-X-TARGETDURATION:6\r\n",
        "#EXT-X-PROGRAM-DATE-TIME:2024-05-01T10:00:00.000Z\n",
        "#EXT-X-DATERANGE:ID=\"ad1\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"2024-05-01T10:00:10.000Z\",",
        "DURATION=15.0,X-ASSET-URI=\"https://cdn.example.com/ads/a1/index.m3u8\",X-RESUME-OFFSET=0,",
        "X-RESTRICT=\"SKIP,JUMP\"\r\n",
        "#EXT-X-DATERANGE:ID=\"ad2\",CLASS=\"com.apple.hls.interstitial\",START-DATE=\"2024-05-01T10:00:40.000Z\",",
        "X-ASSET-LIST=\"ads/list.json?p=1\",X-COM-EXAMPLE-BEACON-URI=\"https://beacon.example.org/b?e=start\",",
        "X-COM-EXAMPLE-NOTE=\"a=b, X-ASSET-URI=c\",X-PLAYOUT-LIMIT=30.0\n",
        "#EXT-X-DATERANGE:ID=\"splice\",START-DATE=\"2024-05-01T10:01:00.000Z\",PLANNED-DURATION=30.0,",
        "SCTE35-OUT=0xFC002F0000000000FF\r\n",
        "#EXTINF:6.0,\r\n",
        "main0.ts\r\n",
        "#EXTINF:6.0,\n",
        "main1.ts\n",
    );

    #[test]
    fn daterange_interstitials() {
        assert_eq!(
            visits(INTERSTITIAL),
            owned(&[
                ("https://cdn.example.com/ads/a1/index.m3u8", UriKind::DateRange),
                ("ads/list.json?p=1", UriKind::DateRange),
                ("https://beacon.example.org/b?e=start", UriKind::DateRange),
                ("main0.ts", UriKind::Segment),
                ("main1.ts", UriKind::Segment),
            ])
        );
        let expected = INTERSTITIAL
            .replace("a1/index.m3u8\"", "a1/index.m3u8?t=TOK\"")
            .replace("list.json?p=1\"", "list.json?p=1&t=TOK\"")
            .replace("main0.ts\r\n", "main0.ts?t=TOK\r\n")
            .replace("main1.ts\n", "main1.ts?t=TOK\n");
        assert_eq!(tokenise("/vod/show/index.m3u8", INTERSTITIAL), expected);
    }

    #[test]
    fn two_tier_swap_to_absolute_paths() {
        // The edge may instead put a session token in the path of each resolved URI.
        let out = rewrite_uris(LL_HLS, |uri, _| {
            resolve("/t/SHARE/live/720p/index.m3u8", uri, HOST).map(|p| p.replacen("/t/SHARE/", "/t/SESS/", 1))
        })
        .unwrap();
        assert!(out.contains("#EXT-X-MAP:URI=\"/t/SESS/live/720p/init.mp4\"\n"));
        assert!(out.contains("\n/t/SESS/live/720p/fileSequence269.mp4\n"));
        assert!(out.contains("URI=\"/t/SESS/live/1M/index.m3u8\",LAST-MSN=270"));
    }

    #[test]
    fn cheap_checks() {
        assert_eq!(rewrite_uris("", |_, _| None), Err(PlaylistError::NotM3u8));
        assert_eq!(rewrite_uris("\u{feff}", |_, _| None), Err(PlaylistError::NotM3u8));
        assert_eq!(rewrite_uris("<html>#EXTM3U", |_, _| None), Err(PlaylistError::NotM3u8));
        assert_eq!(rewrite_uris("\n#EXTM3U\n", |_, _| None), Err(PlaylistError::NotM3u8));
        assert_eq!(rewrite_uris("\u{feff}#EXTM3U", |_, _| None).unwrap(), "\u{feff}#EXTM3U");
        let mut big = String::from("#EXTM3U\n");
        big.push_str(&"#".repeat(MAX_PLAYLIST_BYTES - big.len()));
        assert!(rewrite_uris(&big, |_, _| None).is_ok());
        big.push('\n');
        assert_eq!(rewrite_uris(&big, |_, _| None), Err(PlaylistError::TooLarge));
        assert_eq!(PlaylistError::NotM3u8.as_str(), "not_m3u8");
        assert_eq!(PlaylistError::TooLarge.to_string(), "too_large");
        assert_eq!(PlaylistError::UnterminatedQuote.as_str(), "unterminated_quote");
    }

    #[test]
    fn unterminated_quote_only_matters_in_uri_tags() {
        for bad in [
            "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.key\n",
            "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,NAME=\"English,URI=\"a.m3u8\"\n",
            "#EXTM3U\r\n#EXT-X-MAP:URI=\"init.mp4\r\n",
            "#EXTM3U\n#EXT-X-DATERANGE:ID=\"x",
        ] {
            assert_eq!(
                rewrite_uris(bad, |_, _| None),
                Err(PlaylistError::UnterminatedQuote),
                "{bad:?}"
            );
        }
        // Titles, comments, STREAM-INF and unknown tags are not read as attribute lists.
        let fine = "#EXTM3U\n#EXTINF:4,\"oops\n#X \"\n#EXT-X-STREAM-INF:CODECS=\"avc1\nv.m3u8\n#EXT-X-FOO:URI=\"\n";
        assert_eq!(visits(fine), owned(&[("v.m3u8", UriKind::Variant)]));
    }

    #[test]
    fn nothing_changed_is_borrowed() {
        for playlist in [MULTIVARIANT, VOD, LL_HLS, INTERSTITIAL] {
            assert!(matches!(rewrite_uris(playlist, |_, _| None), Ok(Cow::Borrowed(_))));
            assert!(matches!(
                rewrite_uris(playlist, |uri, _| Some(uri.to_owned())),
                Ok(Cow::Borrowed(_))
            ));
        }
    }

    #[test]
    fn unsafe_replacements_are_refused() {
        let playlist = "#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"k.key\"\n#EXTINF:4,\nseg.ts\n";
        for evil in ["k\"\n#EXT-X-ENDLIST", "a\nb", "a\rb", "x\"", ""] {
            let out = rewrite_uris(playlist, |_, _| Some(evil.to_owned())).unwrap();
            assert!(matches!(out, Cow::Borrowed(_)), "{evil:?} accepted");
        }
        // Only on a URI line: '#' would make a comment, edge blanks would be read as not part of the URI.
        for line_only in ["#seg.ts", " seg.ts", "seg.ts\t"] {
            let out = rewrite_uris(playlist, |_, _| Some(line_only.to_owned())).unwrap();
            assert_eq!(
                out,
                format!("#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI=\"{line_only}\"\n#EXTINF:4,\nseg.ts\n")
            );
        }
    }

    #[test]
    fn lines_and_variants() {
        // A comment or a blank line between STREAM-INF and its URI; a URI line only counts for the one after it.
        let playlist =
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n\n# note\n  a.m3u8  \nb.ts\n#EXT-X-STREAM-INF-X:A=1\nc.ts";
        assert_eq!(
            visits(playlist),
            owned(&[
                ("a.m3u8", UriKind::Variant),
                ("b.ts", UriKind::Segment),
                ("c.ts", UriKind::Segment)
            ])
        );
        // Blank-only lines are not URIs; a lone CR at the end counts as a line ending.
        assert_eq!(
            visits("#EXTM3U\n \t\r\n\r\nseg.ts\r"),
            owned(&[("seg.ts", UriKind::Segment)])
        );
        assert_eq!(
            rewrite_uris("#EXTM3U\n \t\r\n\r\nseg.ts\r", |_, _| Some("x".to_owned())).unwrap(),
            "#EXTM3U\n \t\r\n\r\nx\r"
        );
        // Lenient attribute lists: blanks around names and '=', bare words, junk after a closing quote.
        assert_eq!(
            visits("#EXTM3U\n#EXT-X-MAP: BYTERANGE=\"1@0\" , junk, URI = \"i.mp4\"x,URI=u.mp4,URI=\"\"\n"),
            owned(&[("i.mp4", UriKind::Map)])
        );
        // Tags without an attribute list, and look-alike names.
        assert!(visits("#EXTM3U\n#EXT-X-KEY\n#EXT-X-MAPS:URI=\"a\"\n#EXT-X-PART-INF:URI=\"b\"\n").is_empty());
        // CONTENT-STEERING's URI is SERVER-URI, not URI.
        assert_eq!(
            visits("#EXTM3U\n#EXT-X-CONTENT-STEERING:URI=\"a\",SERVER-URI=\"b\"\n"),
            owned(&[("b", UriKind::ContentSteering)])
        );
        // DATERANGE: X-…URI, …-URI and X-ASSET-LIST, quoted only.
        assert_eq!(
            visits(
                "#EXTM3U\n#EXT-X-DATERANGE:ID=\"u\",X-URI=\"a\",END-URI=\"b\",X-URI-NOTE=\"c\",X-ASSET-URI=d,\
                 X-ASSET-LIST=\"e\",URI=\"f\",X-ASSET-LISTS=\"g\"\n"
            ),
            owned(&[
                ("a", UriKind::DateRange),
                ("b", UriKind::DateRange),
                ("e", UriKind::DateRange)
            ])
        );
    }

    #[test]
    fn multivariant_detection() {
        assert!(is_multivariant("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"));
        assert!(is_multivariant(
            "#EXTM3U\r\n#EXT-X-I-FRAME-STREAM-INF:URI=\"i.m3u8\"\r\n"
        ));
        assert!(!is_multivariant("#EXTM3U\n#EXTINF:4,\ns.ts\n"));
        assert!(!is_multivariant(
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n#EXTINF:4,\ns.ts\n"
        ));
        assert!(!is_multivariant("#EXTM3U\n#EXT-X-STREAM-INF-LIKE:A=1\n"));
        assert!(!is_multivariant(""));
    }

    #[test]
    fn resolve_relative() {
        let base = "/demo/v0/index.m3u8";
        let r = |uri| resolve(base, uri, HOST);
        assert_eq!(r("seg1.ts").as_deref(), Some("/demo/v0/seg1.ts"));
        assert_eq!(r("../v1/a.ts").as_deref(), Some("/demo/v1/a.ts"));
        assert_eq!(r("/abs/x.ts").as_deref(), Some("/abs/x.ts"));
        assert_eq!(
            r("./a/./b/../c.ts?x=1&y=../2").as_deref(),
            Some("/demo/v0/a/c.ts?x=1&y=../2")
        );
        assert_eq!(r("seg.ts#t=10").as_deref(), Some("/demo/v0/seg.ts"));
        assert_eq!(r("a/b/..").as_deref(), Some("/demo/v0/a/"));
        assert_eq!(r("a/.").as_deref(), Some("/demo/v0/a/"));
        assert_eq!(r(".").as_deref(), Some("/demo/v0/"));
        assert_eq!(r("..").as_deref(), Some("/demo/"));
        assert_eq!(r("a//../b").as_deref(), Some("/demo/v0/a/b"));
        assert_eq!(r("dir/").as_deref(), Some("/demo/v0/dir/"));
        assert_eq!(r("a/b:c.ts").as_deref(), Some("/demo/v0/a/b:c.ts"));
        assert_eq!(r("./x:y.ts").as_deref(), Some("/demo/v0/x:y.ts"));
        // Above the root: clamped at the root (RFC 3986 §5.2.4, and §5.4.2's "../../../g" example).
        assert_eq!(r("../../../../x.ts").as_deref(), Some("/x.ts"));
        assert_eq!(r("/../x.ts").as_deref(), Some("/x.ts"));
        assert_eq!(r("../../..").as_deref(), Some("/"));
        assert_eq!(resolve("/index.m3u8", "../a.ts", HOST).as_deref(), Some("/a.ts"));
        // Empty path: the playlist itself, with the reference's query, else the base's.
        assert_eq!(r("?v=2").as_deref(), Some("/demo/v0/index.m3u8?v=2"));
        assert_eq!(r("").as_deref(), Some("/demo/v0/index.m3u8"));
        assert_eq!(resolve("/a/i.m3u8?x=1", "", HOST).as_deref(), Some("/a/i.m3u8?x=1"));
        assert_eq!(resolve("/a/i.m3u8?x=1", "s.ts", HOST).as_deref(), Some("/a/s.ts"));
        // RFC 3986 §5.4.1 normal examples, path-only (base "/b/c/d;p?q").
        let rfc = |uri| resolve("/b/c/d;p?q", uri, HOST);
        for (uri, want) in [
            ("g", "/b/c/g"),
            ("./g", "/b/c/g"),
            ("g/", "/b/c/g/"),
            ("/g", "/g"),
            ("?y", "/b/c/d;p?y"),
            ("g?y", "/b/c/g?y"),
            ("#s", "/b/c/d;p?q"),
            (";x", "/b/c/;x"),
            ("g;x?y#s", "/b/c/g;x?y"),
            ("", "/b/c/d;p?q"),
            ("./", "/b/c/"),
            ("..", "/b/"),
            ("../", "/b/"),
            ("../g", "/b/g"),
            ("../..", "/"),
            ("../../g", "/g"),
            ("../../../g", "/g"),
            ("/./g", "/g"),
            ("g.", "/b/c/g."),
            ("..g", "/b/c/..g"),
            ("./../g", "/b/g"),
            ("g/./h", "/b/c/g/h"),
            ("g/../h", "/b/c/h"),
            ("g;x=1/../y", "/b/c/y"),
        ] {
            assert_eq!(rfc(uri).as_deref(), Some(want), "{uri:?}");
        }
    }

    #[test]
    fn resolve_absolute() {
        let r = |uri| resolve("/demo/v0/index.m3u8", uri, HOST);
        assert_eq!(
            r("https://cdn.example.com/demo/v1/a.ts?x=1").as_deref(),
            Some("/demo/v1/a.ts?x=1")
        );
        assert_eq!(r("HTTPS://CDN.Example.COM/a/../b.ts#f").as_deref(), Some("/b.ts"));
        assert_eq!(r("http://cdn.example.com:80/x").as_deref(), Some("/x"));
        assert_eq!(r("https://cdn.example.com:443/x").as_deref(), Some("/x"));
        assert_eq!(r("https://cdn.example.com:/x").as_deref(), Some("/x"));
        assert_eq!(r("https://cdn.example.com").as_deref(), Some("/"));
        assert_eq!(r("https://cdn.example.com?q").as_deref(), Some("/?q"));
        assert_eq!(r("//cdn.example.com/x/../y.ts").as_deref(), Some("/y.ts"));
        assert_eq!(r("//cdn.example.com:443/y.ts").as_deref(), Some("/y.ts"));
        for other in [
            "https://other.example.com/x",
            "https://cdn.example.com.evil.net/x",
            "https://cdn.example.com:8443/x",
            "http://cdn.example.com:443/x",
            "https://cdn.example.com:+443/x",
            "https://cdn.example.com:99999/x",
            "https://user@cdn.example.com/x",
            "https://evil.net@cdn.example.com/x",
            "https:cdn.example.com/x",
            "//other.example.com/x",
            "//cdn.example.com:8080/x",
            "data:text/plain,hi",
            "skd://cdn.example.com/key",
            "ftp://cdn.example.com/x",
            "javascript:alert(1)",
        ] {
            assert_eq!(r(other), None, "{other:?}");
        }
        // Our host on a non-default port.
        assert_eq!(
            resolve("/i.m3u8", "http://LOCALHOST:8080/a", "localhost:8080").as_deref(),
            Some("/a")
        );
        assert_eq!(resolve("/i.m3u8", "http://localhost/a", "localhost:8080"), None);
        assert_eq!(
            resolve("/i.m3u8", "https://cdn.example.com/a", "cdn.example.com:443").as_deref(),
            Some("/a")
        );
        assert_eq!(
            resolve("/i.m3u8", "http://[::1]:8080/a", "[::1]:8080").as_deref(),
            Some("/a")
        );
        assert_eq!(resolve("/i.m3u8", "http://[::1]/a", "[::1]:8080"), None);
    }

    #[test]
    fn query_param() {
        let q = |uri| with_query_param(uri, "t", "abc");
        assert_eq!(q("seg.ts"), "seg.ts?t=abc");
        assert_eq!(q("seg.ts?a=1"), "seg.ts?a=1&t=abc");
        assert_eq!(q("seg.ts?t=old&a=1"), "seg.ts?t=abc&a=1");
        assert_eq!(q("seg.ts?a=1&t=old&t=x#f"), "seg.ts?a=1&t=abc#f");
        assert_eq!(q("seg.ts?tt=1&t"), "seg.ts?tt=1&t=abc");
        assert_eq!(q("seg.ts?"), "seg.ts?t=abc");
        assert_eq!(q("seg.ts?a=1&&b&"), "seg.ts?a=1&b&t=abc");
        assert_eq!(q("seg.ts#f?t=1"), "seg.ts?t=abc#f?t=1");
        assert_eq!(q("https://h/x?a=%26t%3D1"), "https://h/x?a=%26t%3D1&t=abc");
        assert_eq!(q(""), "?t=abc");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod props {
    //! Round trips over playlists generated from a grammar of HLS lines, and no panics on anything at all.
    use super::*;
    use alloc::borrow::ToOwned;
    use alloc::vec::Vec;
    use alloc::{format, vec};
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// Part of a generated playlist: its lines, and the URIs in it, in order, with their kinds.
    #[derive(Debug, Clone)]
    struct Piece {
        lines: Vec<String>,
        uris: Vec<(String, UriKind)>,
    }

    fn line(text: String) -> Piece {
        Piece {
            lines: vec![text],
            uris: vec![],
        }
    }

    /// No quote, CR or LF; no blank or '#' at the start, no blank at the end.
    fn uri() -> impl Strategy<Value = String> {
        "[a-z]|[A-Za-z0-9._~/-][A-Za-z0-9._~/?=&%:,;+# é-]{0,16}[A-Za-z0-9._~/=é-]"
    }

    fn blanks() -> impl Strategy<Value = String> {
        "[ \t]{0,2}"
    }

    /// An attribute that is never a URI: quoted text with commas and '=' (and decoy `URI=`s), or unquoted.
    fn filler_attr() -> impl Strategy<Value = String> {
        let names = select(
            &[
                "CODECS",
                "NAME",
                "TYPE",
                "GROUP-ID",
                "BYTERANGE",
                "X-NOTE",
                "PATHWAY-ID",
                "X-URI-NOTE",
            ][..],
        );
        let quoted = prop_oneof![
            3 => "[A-Za-z0-9 ,=.:/_-]{0,12}",
            1 => Just("x,URI=decoy.ts".to_owned()),
            1 => Just("a, X-ASSET-URI=b".to_owned()),
        ];
        prop_oneof![
            (names.clone(), quoted).prop_map(|(n, v)| format!("{n}=\"{v}\"")),
            (names, "[A-Za-z0-9.-]{1,8}").prop_map(|(n, v)| format!("{n}={v}")),
            "[A-Za-z0-9.-]{1,8}".prop_map(|v| format!("URI={v}")),
        ]
    }

    fn non_uri_line() -> impl Strategy<Value = String> {
        let fixed = select(
            &[
                "#EXT-X-KEY:METHOD=NONE",
                "#EXT-X-DISCONTINUITY",
                "#EXT-X-ENDLIST",
                "#EXT-X-SKIP:SKIPPED-SEGMENTS=3",
                "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.0",
                "#EXT-X-PART-INF:PART-TARGET=0.33334",
                "#EXT-X-STREAM-INF-LIKE:URI=\"no.ts\"",
                "#EXT-X-KEY",
                "#EXT-X-MEDIA:",
                "#EXT-X-MAP:URI=\"\"",
                "#EXT-X-TARGETDURATION:6",
            ][..],
        )
        .prop_map(String::from);
        prop_oneof![
            blanks(),
            // A comment, never "#EXT…".
            "#( [A-Za-z0-9 ,=\"]{0,20})?",
            "#EXTINF:[0-9]\\.[0-9]{1,3},[A-Za-z0-9 ,=\"]{0,16}",
            "#EXT-X-BYTERANGE:[0-9]{1,5}(@[0-9]{1,5})?",
            uri().prop_map(|u| format!("#EXT-X-UNKNOWN:URI=\"{u}\"")),
            fixed,
        ]
    }

    fn segment() -> impl Strategy<Value = Piece> {
        (blanks(), uri(), blanks()).prop_map(|(a, u, b)| Piece {
            lines: vec![format!("{a}{u}{b}")],
            uris: vec![(u, UriKind::Segment)],
        })
    }

    fn stream_inf() -> impl Strategy<Value = Piece> {
        (
            vec(filler_attr(), 0..3),
            proptest::option::of(non_uri_line()),
            blanks(),
            uri(),
        )
            .prop_map(|(attrs, between, pad, u)| {
                let mut lines = vec![format!(
                    "#EXT-X-STREAM-INF:BANDWIDTH=1{}{}",
                    if attrs.is_empty() { "" } else { "," },
                    attrs.join(",")
                )];
                lines.extend(between);
                lines.push(format!("{u}{pad}"));
                Piece {
                    lines,
                    uris: vec![(u, UriKind::Variant)],
                }
            })
    }

    const URI_TAGS: &[(&str, &str, UriKind)] = &[
        ("EXT-X-I-FRAME-STREAM-INF", "URI", UriKind::Variant),
        ("EXT-X-MEDIA", "URI", UriKind::Media),
        ("EXT-X-KEY", "URI", UriKind::Key),
        ("EXT-X-SESSION-KEY", "URI", UriKind::Key),
        ("EXT-X-MAP", "URI", UriKind::Map),
        ("EXT-X-PART", "URI", UriKind::Segment),
        ("EXT-X-PRELOAD-HINT", "URI", UriKind::PreloadHint),
        ("EXT-X-RENDITION-REPORT", "URI", UriKind::RenditionReport),
        ("EXT-X-SESSION-DATA", "URI", UriKind::SessionData),
        ("EXT-X-CONTENT-STEERING", "SERVER-URI", UriKind::ContentSteering),
    ];

    fn uri_tag() -> impl Strategy<Value = Piece> {
        (
            select(URI_TAGS),
            vec(filler_attr(), 0..3),
            vec(filler_attr(), 0..3),
            uri(),
            select(&[",", ", "][..]),
        )
            .prop_map(|((tag, attr, kind), mut attrs, after, u, sep)| {
                attrs.push(format!("{attr}=\"{u}\""));
                attrs.extend(after);
                Piece {
                    lines: vec![format!("#{tag}:{}", attrs.join(sep))],
                    uris: vec![(u, kind)],
                }
            })
    }

    fn daterange() -> impl Strategy<Value = Piece> {
        let uri_names = select(
            &[
                "X-ASSET-URI",
                "X-ASSET-LIST",
                "X-COM-EXAMPLE-BEACON-URI",
                "X-URI",
                "END-URI",
            ][..],
        );
        let attr = prop_oneof![
            (uri_names.clone(), uri()).prop_map(|(n, u)| (format!("{n}=\"{u}\""), Some(u))),
            filler_attr().prop_map(|a| (a, None)),
            (uri_names, "[A-Za-z0-9.-]{1,8}").prop_map(|(n, v)| (format!("{n}={v}"), None)),
        ];
        vec(attr, 0..5).prop_map(|attrs| {
            let mut text = String::from("#EXT-X-DATERANGE:ID=\"d\"");
            let mut uris = Vec::new();
            for (a, u) in attrs {
                text.push(',');
                text.push_str(&a);
                uris.extend(u.map(|u| (u, UriKind::DateRange)));
            }
            Piece {
                lines: vec![text],
                uris,
            }
        })
    }

    /// A playlist (optional BOM, LF/CRLF per line, the last line with LF, CRLF or nothing) and its URIs in order.
    fn playlist() -> impl Strategy<Value = (String, Vec<(String, UriKind)>)> {
        let piece = prop_oneof![
            3 => non_uri_line().prop_map(line),
            3 => segment(),
            1 => stream_inf(),
            2 => uri_tag(),
            1 => daterange(),
        ];
        (any::<bool>(), vec(piece, 0..24), vec(any::<bool>(), 1..16), 0..3usize).prop_map(
            |(bom, pieces, crlf, last)| {
                let mut lines = vec!["#EXTM3U".to_owned()];
                let mut uris = Vec::new();
                for p in pieces {
                    lines.extend(p.lines);
                    uris.extend(p.uris);
                }
                let mut text = String::from(if bom { BOM } else { "" });
                for (i, l) in lines.iter().enumerate() {
                    text.push_str(l);
                    text.push_str(if i + 1 == lines.len() {
                        ["\n", "\r\n", ""][last]
                    } else if crlf[i % crlf.len()] {
                        "\r\n"
                    } else {
                        "\n"
                    });
                }
                (text, uris)
            },
        )
    }

    // Private-use characters: neither the grammar nor real playlists use them; arbitrary inputs holding them are
    // skipped.
    const OPEN: char = '\u{e000}';
    const CLOSE: char = '\u{e001}';

    /// Replaces each `OPEN n CLOSE` marker in `text` by the n-th original URI.
    fn unmark(text: &str, originals: &[(String, UriKind)]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find(OPEN) {
            out.push_str(&rest[..i]);
            let after = &rest[i + OPEN.len_utf8()..];
            let j = after.find(CLOSE).unwrap();
            out.push_str(&originals[after[..j].parse::<usize>().unwrap()].0);
            rest = &after[j + CLOSE.len_utf8()..];
        }
        out.push_str(rest);
        out
    }

    /// Rewrites every URI to a marker; checks that mapping the markers back gives the input byte for byte, that the
    /// output holds exactly the markers as its URIs (same kinds), and that an identity rewrite borrows. Returns the
    /// visited URIs, or `None` if the input was refused.
    fn round_trip(text: &str) -> Result<Option<Vec<(String, UriKind)>>, TestCaseError> {
        let mut seen: Vec<(String, UriKind)> = Vec::new();
        let marked = rewrite_uris(text, |uri, kind| {
            seen.push((uri.to_owned(), kind));
            Some(format!("{OPEN}{}{CLOSE}", seen.len() - 1))
        });
        let identity = rewrite_uris(text, |uri, _| Some(uri.to_owned()));
        let marked = match marked {
            Err(e) => {
                prop_assert_eq!(identity, Err(e));
                return Ok(None);
            }
            Ok(marked) => marked,
        };
        prop_assert!(matches!(identity, Ok(Cow::Borrowed(_))));
        prop_assert_eq!(matches!(marked, Cow::Owned(_)), !seen.is_empty());
        prop_assert_eq!(&unmark(&marked, &seen), text);
        let mut again = Vec::new();
        rewrite_uris(&marked, |uri, kind| {
            again.push((uri.to_owned(), kind));
            None
        })
        .unwrap();
        let markers: Vec<_> = seen
            .iter()
            .enumerate()
            .map(|(i, &(_, kind))| (format!("{OPEN}{i}{CLOSE}"), kind))
            .collect();
        prop_assert_eq!(again, markers);
        Ok(Some(seen))
    }

    /// Fragments that make arbitrary soup look like a playlist often enough to reach every branch.
    const SOUP: &[&str] = &[
        "#EXTM3U",
        "#EXT-X-KEY:",
        "#EXT-X-STREAM-INF:",
        "#EXT-X-DATERANGE:",
        "#EXT-X-MAP:",
        "#EXT-X-CONTENT-STEERING:",
        "#EXTINF:1,",
        "URI=",
        "SERVER-URI=",
        "X-ASSET-URI=",
        "X-ASSET-LIST=",
        "\"",
        ",",
        "=",
        "\n",
        "\r\n",
        "\r",
        " ",
        "\t",
        "a.ts",
        "../",
        "./",
        "//",
        "?t=1",
        "#",
        "é",
        "\u{feff}",
        "https://cdn.example.com/",
        "http:",
        ":",
        "[",
    ];

    proptest! {
        #[test]
        fn grammar_round_trip((text, expected) in playlist()) {
            let seen = round_trip(&text)?;
            prop_assert_eq!(seen, Some(expected));
            prop_assert!(matches!(rewrite_uris(&text, |_, _| None), Ok(Cow::Borrowed(_))));
        }

        #[test]
        fn arbitrary_input_never_panics(
            any_text in any::<String>(),
            soup in vec(select(SOUP), 0..60).prop_map(|v| v.concat()),
            header in any::<bool>(),
        ) {
            for raw in [any_text, soup] {
                let text = if header { format!("#EXTM3U\n{raw}") } else { raw.clone() };
                if !text.contains([OPEN, CLOSE]) {
                    round_trip(&text)?;
                }
                let _ = is_multivariant(&text);
                let _ = with_query_param(&raw, "t", "v");
                if let Some(path) = resolve("/a/b/c.m3u8", &raw, "cdn.example.com") {
                    prop_assert!(path.starts_with('/'));
                    let path = path.split_once('?').map_or(path.as_str(), |(p, _)| p);
                    prop_assert!(path.split('/').all(|s| s != "." && s != ".."), "dot segment in {:?}", path);
                }
            }
        }
    }
}
