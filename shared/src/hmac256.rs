//! HMAC-SHA256 (RFC 2104) straight on SHA-256's compression function, keyed once.
//!
//! Why not the `hmac` crate on the hot path: a pre-keyed `Hmac<Sha256>` is cloned per token (two hash states with
//! their 64-byte block buffers), and the message goes through the digest's block buffer before it is compressed.
//! A token's MAC (and a Fastly state shard's) is one short message, so here the full blocks are compressed in place,
//! the last one or two are padded on the stack, and the outer hash is one block: the same three compressions (for a
//! token of up to 119 signed bytes), without the copies around them. The compression is `sha2`'s own (SHA-NI natively
//! when the CPU has it, `simd128` in wasm when built with it), and the tests hold the output to the `hmac` crate's
//! for every key and message length that matters.

use sha2::block_api::compress256;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

const BLOCK: usize = 64;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// The hash states after the key's inner and outer padded blocks. They stand in for the key (anyone holding them
/// can compute tags), so they are wiped on drop.
#[derive(Clone)]
pub(crate) struct PrekeyedHmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl Drop for PrekeyedHmac {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

impl PrekeyedHmac {
    /// Key once: a key longer than a block is hashed first, as RFC 2104 says.
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k = [0u8; BLOCK];
        if key.len() > BLOCK {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let padded = |byte: u8| {
            let mut block = [0u8; BLOCK];
            // By reference: iterating `k` by value would leave a copy of the key on the stack, unwiped.
            for (b, kb) in block.iter_mut().zip(&k) {
                *b = kb ^ byte;
            }
            let mut state = IV;
            compress256(&mut state, &[block]);
            block.zeroize();
            state
        };
        let keyed = PrekeyedHmac {
            inner: padded(0x36),
            outer: padded(0x5c),
        };
        k.zeroize();
        keyed
    }

    /// The full 32-byte tag of `msg`.
    pub(crate) fn tag(&self, msg: &[u8]) -> [u8; 32] {
        let mut state = self.inner;
        let (blocks, rest) = msg.as_chunks::<BLOCK>();
        if !blocks.is_empty() {
            compress256(&mut state, blocks);
        }
        // The rest, the 0x80 marker and the length in bits (the key block counts: it was hashed first).
        let mut tail = [[0u8; BLOCK]; 2];
        let n = if rest.len() + 9 <= BLOCK { 1 } else { 2 };
        let flat = tail.as_flattened_mut();
        flat[..rest.len()].copy_from_slice(rest);
        flat[rest.len()] = 0x80;
        let bits = (BLOCK as u64 + msg.len() as u64) * 8;
        flat[n * BLOCK - 8..n * BLOCK].copy_from_slice(&bits.to_be_bytes());
        compress256(&mut state, &tail[..n]);

        // Outer: the inner digest, padded, in one block.
        let mut block = [0u8; BLOCK];
        for (b, w) in block.chunks_exact_mut(4).zip(state) {
            b.copy_from_slice(&w.to_be_bytes());
        }
        block[32] = 0x80;
        block[BLOCK - 8..].copy_from_slice(&((BLOCK as u64 + 32) * 8).to_be_bytes());
        let mut outer = self.outer;
        compress256(&mut outer, &[block]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(outer) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use proptest::prelude::*;

    fn reference(key: &[u8], msg: &[u8]) -> [u8; 32] {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(msg);
        m.finalize().into_bytes().into()
    }

    /// Every message length across the padding boundaries (55/56 and 119/120 bytes, where the tail needs a second
    /// block) and past the largest token, with keys shorter than, equal to and longer than a block.
    #[test]
    fn matches_the_hmac_crate_at_every_length() {
        let msg: alloc::vec::Vec<u8> = (0..400u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0usize, 1, 16, 32, 63, 64, 65, 100, 200] {
            let key: alloc::vec::Vec<u8> = (0..key_len).map(|i| (i * 13 + 1) as u8).collect();
            let keyed = PrekeyedHmac::new(&key);
            for len in 0..=msg.len() {
                assert_eq!(
                    keyed.tag(&msg[..len]),
                    reference(&key, &msg[..len]),
                    "key {key_len}, msg {len}"
                );
            }
        }
    }

    /// RFC 4231 test case 2 ("Jefe"), a known answer independent of any crate.
    #[test]
    fn rfc4231_case_2() {
        let tag = PrekeyedHmac::new(b"Jefe").tag(b"what do ya want for nothing?");
        let hex: alloc::string::String = tag.iter().map(|b| alloc::format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    proptest! {
        #[test]
        fn matches_the_hmac_crate(key in proptest::collection::vec(any::<u8>(), 0..160),
                                  msg in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert_eq!(PrekeyedHmac::new(&key).tag(&msg), reference(&key, &msg));
        }
    }
}
