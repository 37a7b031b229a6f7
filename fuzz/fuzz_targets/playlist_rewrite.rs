//! Fuzzes HLS playlist URI rewriting: no input may panic, and a rewrite touches the URIs and nothing else.
//!
//! For every UTF-8 input (as is, and with `#EXTM3U` put in front so the body checks pass), rewriting each URI to a
//! numbered marker must:
//! - give back the input byte for byte once each marker is mapped back to the URI it replaced;
//! - leave a playlist whose URIs are exactly the markers, in order and of the same kinds (a rewrite never changes how
//!   the playlist parses);
//! - accept or refuse the input exactly as an identity rewrite does, which returns the input borrowed.
//!
//! Every URI found is also run through `resolve` (a result is an absolute path without dot segments) and
//! `with_query_param` (the parameter ends up in the query).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sharegate_edge::hls::{UriKind, is_multivariant, resolve, rewrite_uris, with_query_param};
use std::borrow::Cow;

// Private-use characters as marker brackets; inputs holding them are skipped, so markers are unambiguous.
const OPEN: char = '\u{e000}';
const CLOSE: char = '\u{e001}';

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = is_multivariant(text);
    if text.contains([OPEN, CLOSE]) {
        return;
    }
    check(text);
    if !text.starts_with("#EXTM3U") {
        check(&format!("#EXTM3U\n{text}"));
    }
});

fn check(text: &str) {
    let mut seen: Vec<(String, UriKind)> = Vec::new();
    let marked = rewrite_uris(text, |uri, kind| {
        seen.push((uri.to_owned(), kind));
        Some(format!("{OPEN}{}{CLOSE}", seen.len() - 1))
    });
    let identity = rewrite_uris(text, |uri, _| Some(uri.to_owned()));
    let marked = match marked {
        Err(e) => {
            assert_eq!(identity, Err(e), "identity and marker rewrites disagree on {text:?}");
            return;
        }
        Ok(marked) => marked,
    };
    assert!(
        matches!(identity, Ok(Cow::Borrowed(_))),
        "identity rewrite copied {text:?}"
    );
    assert_eq!(matches!(marked, Cow::Owned(_)), !seen.is_empty());
    assert_eq!(unmark(&marked, &seen), text, "bytes other than URIs changed");

    let mut again = Vec::new();
    let reparsed = rewrite_uris(&marked, |uri, kind| {
        again.push((uri.to_owned(), kind));
        None
    });
    assert!(reparsed.is_ok(), "rewritten playlist refused: {marked:?}");
    let markers: Vec<_> = seen
        .iter()
        .enumerate()
        .map(|(i, &(_, kind))| (format!("{OPEN}{i}{CLOSE}"), kind))
        .collect();
    assert_eq!(again, markers, "rewrite changed the playlist's structure: {text:?}");

    for (uri, _) in &seen {
        if let Some(resolved) = resolve("/asset/v0/index.m3u8", uri, "cdn.example.com") {
            let path = resolved.split_once('?').map_or(resolved.as_str(), |(path, _)| path);
            assert!(path.starts_with('/'), "not absolute: {uri:?} -> {resolved:?}");
            assert!(
                path.split('/').all(|s| s != "." && s != ".."),
                "dot segment: {uri:?} -> {resolved:?}"
            );
        }
        let with = with_query_param(uri, "sg", "tok");
        let query = with.split('#').next().and_then(|u| u.split_once('?')).map(|(_, q)| q);
        assert!(
            query.is_some_and(|q| q.split('&').any(|p| p == "sg=tok")),
            "{uri:?} -> {with:?}"
        );
    }
}

/// Maps each `OPEN n CLOSE` marker back to the n-th URI.
fn unmark(text: &str, originals: &[(String, UriKind)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        out.push_str(&rest[..i]);
        let after = &rest[i + OPEN.len_utf8()..];
        let j = after.find(CLOSE).expect("marker closed");
        let n: usize = after[..j].parse().expect("marker number");
        out.push_str(&originals[n].0);
        rest = &after[j + CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}
