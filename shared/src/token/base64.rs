//! The token's text form: unpadded base64url, so a token fits in one URL path segment. Canonical both ways: the
//! decoder refuses padding, characters outside the URL-safe alphabet and non-zero trailing bits, so every token has
//! exactly one spelling.

use super::types::TokenBuf;
use super::wire::{HEADER_LEN, MAX_TOKEN_CHARS, TAG_LEN};
use crate::reason::Reason;
use alloc::string::String;

/// Unpadded base64url encoding.
pub(super) fn encode_b64(bytes: &[u8]) -> String {
    base64_simd::URL_SAFE_NO_PAD.encode_to_string(bytes)
}

/// base64url-decode `token` into `buf` after the length checks; returns the byte length.
///
/// The `base64-simd` crate rather than our own loop: it decodes with SSE4.1/AVX2 (picked at run time natively) or
/// wasm `simd128` (when built with it), ~5x faster than a table lookup per character on a 150-character token, and
/// this sits on every request. It is strict the way a token must be: padding, characters outside the URL-safe
/// alphabet and non-zero trailing bits are refused, so every token has exactly one spelling (the tests below hold
/// it to that).
pub(super) fn decode_b64(token: &str, buf: &mut TokenBuf) -> Result<usize, Reason> {
    let t = token.as_bytes();
    if t.len() > MAX_TOKEN_CHARS || t.len() < (HEADER_LEN + TAG_LEN) * 4 / 3 || t.len() % 4 == 1 {
        return Err(Reason::Malformed);
    }
    let n = t.len() / 4 * 3 + (t.len() % 4).saturating_sub(1);
    let out = buf.bytes.get_mut(..n).ok_or(Reason::Malformed)?;
    base64_simd::URL_SAFE_NO_PAD
        .decode(t, base64_simd::Out::from_slice(out))
        .map_err(|_| Reason::Malformed)?;
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn base64_round_trips_and_is_canonical(v in proptest::collection::vec(any::<u8>(), 44..=384)) {
            let text = encode_b64(&v);
            let mut buf = TokenBuf::new();
            let n = decode_b64(&text, &mut buf).unwrap();
            prop_assert_eq!(&buf.bytes[..n], &v[..]);
        }

        /// Any other spelling of the same bytes is refused: a changed last character (non-zero trailing bits or
        /// another value), padding, or a character outside the URL-safe alphabet anywhere.
        #[test]
        fn base64_refuses_every_other_spelling(
            v in proptest::collection::vec(any::<u8>(), 44..=300),
            at in any::<prop::sample::Index>(),
            c in any::<u8>(),
        ) {
            let text = encode_b64(&v);
            let mut buf = TokenBuf::new();
            let mut bytes = text.clone().into_bytes();
            let i = at.index(bytes.len());
            if bytes[i] != c {
                bytes[i] = c;
                // Decoding a changed character either fails or gives different bytes (a valid character in a
                // position that holds only whole bits); it never gives the same bytes back.
                if let Ok(s) = core::str::from_utf8(&bytes) {
                    match decode_b64(s, &mut buf) {
                        Ok(n) => prop_assert_ne!(&buf.bytes[..n], &v[..]),
                        Err(r) => prop_assert_eq!(r, Reason::Malformed),
                    }
                }
            }
            let padded = alloc::format!("{text}=");
            prop_assert_eq!(decode_b64(&padded, &mut buf), Err(Reason::Malformed));
            for bad in ["+", "/", "=", " ", "\n", "."] {
                let mut s = text.clone();
                s.replace_range(i..=i, bad);
                prop_assert_eq!(decode_b64(&s, &mut buf), Err(Reason::Malformed), "{:?}", s);
            }
        }
    }

    #[test]
    fn base64_trailing_bits_must_be_zero() {
        let mut buf = TokenBuf::new();
        let base = "A".repeat(60);
        // 62 characters: the last holds 4 bits that must be zero ("Q" = 16 is canonical, "R" = 17 is not).
        assert!(decode_b64(&alloc::format!("{base}AQ"), &mut buf).is_ok());
        assert_eq!(
            decode_b64(&alloc::format!("{base}AR"), &mut buf),
            Err(Reason::Malformed)
        );
        // 63 characters: the last holds 2 bits that must be zero ("E" = 4 is canonical, "F" = 5 is not).
        assert!(decode_b64(&alloc::format!("{base}AAE"), &mut buf).is_ok());
        assert_eq!(
            decode_b64(&alloc::format!("{base}AAF"), &mut buf),
            Err(Reason::Malformed)
        );
    }
}
