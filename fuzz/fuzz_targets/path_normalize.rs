//! Fuzzes request-path normalisation: no input may panic, and every accepted path must be canonical.
//!
//! Properties of an `Ok` output:
//! - idempotent: normalising it again gives it back unchanged, borrowed (canonical input is not copied);
//! - no dot segment (`/./`, `/../`, or one at the end), no empty segment (`//`);
//! - no encoded slash or encoded `%` in either hex case (`%2F`, `%25`): nothing downstream can decode it into a
//!   different segment structure;
//! - still absolute, and no longer than the input (normalising only decodes or re-cases escapes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sharegate_shared::path::normalize_path;
use std::borrow::Cow;

fuzz_target!(|data: &[u8]| {
    // Paths reach the normaliser as `&str` (the runtimes hand over decoded-as-UTF-8 URLs); raw non-ASCII is refused
    // by it anyway.
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(norm) = normalize_path(raw) else {
        return;
    };
    let norm: &str = &norm;

    assert!(norm.starts_with('/'), "not absolute: {norm:?}");
    assert!(
        norm.len() <= raw.len(),
        "normalising grew the path: {raw:?} -> {norm:?}"
    );
    let upper = norm.to_ascii_uppercase();
    for bad in ["/../", "//", "%2F", "%25"] {
        assert!(!upper.contains(bad), "{bad} in normalised {norm:?} (from {raw:?})");
    }
    assert!(
        norm.split('/').skip(1).all(|seg| seg != "." && seg != ".."),
        "dot segment in normalised {norm:?} (from {raw:?})"
    );

    match normalize_path(norm) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, norm, "not idempotent (from {raw:?})"),
        Ok(Cow::Owned(again)) => panic!("normalised path is not canonical: {norm:?} -> {again:?} (from {raw:?})"),
        Err(e) => panic!("normalised path refused: {norm:?}: {e} (from {raw:?})"),
    }
});
