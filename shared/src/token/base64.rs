//! The token's text form: unpadded base64url, so a token fits in one URL path segment. Canonical both ways: the
//! decoder refuses padding, characters outside the URL-safe alphabet and non-zero trailing bits, so every token has
//! exactly one spelling.

use super::types::TokenBuf;
use super::wire::{HEADER_LEN, MAX_TOKEN_CHARS, TAG_LEN};
use crate::reason::Reason;
use alloc::string::String;

const B64_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Per position in a 4-character group, each character's sextet already shifted into place in a 24-bit word; bit
/// 31 marks a character outside the alphabet. Four lookups and three ORs decode a group, and one test at the end
/// catches any bad character.
static B64_DECODE: [[u32; 256]; 4] = {
    let mut t = [[1u32 << 31; 256]; 4];
    let mut i = 0;
    while i < 64 {
        let c = B64_ALPHABET[i] as usize;
        let v = i as u32;
        t[0][c] = v << 18;
        t[1][c] = v << 12;
        t[2][c] = v << 6;
        t[3][c] = v;
        i += 1;
    }
    t
};

/// Unpadded base64url encoding.
pub(super) fn encode_b64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    let sym = |v: u32| char::from(B64_ALPHABET[(v & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        if chunk.len() > 1 {
            out.push(sym(n >> 6));
        }
        if chunk.len() > 2 {
            out.push(sym(n));
        }
    }
    out
}

/// base64url-decode `token` into `buf` after the length checks; returns the byte length.
///
/// Our own decoder rather than the `base64` crate's: a table lookup per character with one validity check at the
/// end is ~2x faster on a 150-character token, and this sits on every request. It refuses padding, characters
/// outside the URL-safe alphabet and non-zero trailing bits, so every token has exactly one spelling.
pub(super) fn decode_b64(token: &str, buf: &mut TokenBuf) -> Result<usize, Reason> {
    let t = token.as_bytes();
    if t.len() > MAX_TOKEN_CHARS || t.len() < (HEADER_LEN + TAG_LEN) * 4 / 3 || t.len() % 4 == 1 {
        return Err(Reason::Malformed);
    }
    let d = |pos: usize, c: u8| B64_DECODE[pos][usize::from(c)];
    let mut bad = 0u32;
    let quads = t.chunks_exact(4);
    let tail = quads.remainder();
    let full = t.len() / 4 * 3;
    for (q, o) in quads.zip(buf.bytes[..full].chunks_exact_mut(3)) {
        let n = d(0, q[0]) | d(1, q[1]) | d(2, q[2]) | d(3, q[3]);
        bad |= n;
        o.copy_from_slice(&n.to_be_bytes()[1..]);
    }
    let n = match *tail {
        [] => full,
        [a, b] => {
            let n = d(0, a) | d(1, b);
            // Canonical: the bits that do not fit in the last byte must be zero.
            bad |= n | ((n & 0xFFFF) << 16);
            buf.bytes[full] = (n >> 16) as u8;
            full + 1
        }
        [a, b, c] => {
            let n = d(0, a) | d(1, b) | d(2, c);
            bad |= n | ((n & 0xFF) << 24);
            buf.bytes[full] = (n >> 16) as u8;
            buf.bytes[full + 1] = (n >> 8) as u8;
            full + 2
        }
        _ => return Err(Reason::Malformed),
    };
    if bad & 0xFF00_0000 != 0 {
        return Err(Reason::Malformed);
    }
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
    }
}
