//! Fuzzes the revocation state decoders: no input may panic, opened or verified, snapshot or delta.
//!
//! Each input is tried twice: as it is (the structural checks of `open`, and `open_verified` refusing it),
//! and with a valid tag appended under the fixed key, so that the MAC passes and the fuzzer reaches the deep
//! validation of the tables, the lookups, the iterators and `apply_deltas` on whatever the structure allows.
//!
//! Properties checked, besides "never panics":
//! - `open_verified` accepts only what `open` accepts;
//! - a verified snapshot re-encoded by `apply_deltas` (no deltas) opens, verifies, and answers every probe the same.
#![no_main]

use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use sharegate_shared::revocation::{ApplyParams, DeltaView, StateKey, StateView, Subject, apply_deltas};

const KEY: [u8; 32] = [0x5A; 32];

/// `body` followed by its HMAC-SHA256 under [`KEY`].
fn signed(body: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&KEY).expect("any key length");
    mac.update(body);
    let mut out = body.to_vec();
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Probes built from the input, so that ids and scopes present in it can be hit.
fn probes(data: &[u8]) -> Vec<([u8; 12], u32, Vec<u8>)> {
    let mut out = vec![([0u8; 12], 0, Vec::new()), ([0xFF; 12], u32::MAX, b"share".to_vec())];
    for chunk in data.chunks(20).take(16) {
        let mut id = [0u8; 12];
        let n = chunk.len().min(12);
        id[..n].copy_from_slice(&chunk[..n]);
        let iat = chunk
            .get(12..16)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        out.push((id, iat, chunk.get(16..).unwrap_or(&[]).to_vec()));
    }
    out
}

fn subject<'a>(p: &'a ([u8; 12], u32, Vec<u8>)) -> Subject<'a> {
    let scope = Some(&p.2[..]);
    Subject {
        token_id: &p.0,
        iat: p.1,
        key_id: u16::from_le_bytes([p.0[0], p.0[1]]),
        share: scope,
        viewer: scope,
        session: scope,
        asset: scope,
        campaign: scope,
    }
}

fn exercise_snapshot(v: &StateView<'_>, probes: &[([u8; 12], u32, Vec<u8>)]) {
    for p in probes {
        let _ = v.is_revoked(&subject(p));
    }
    let _ = v.tokens().count();
    let _ = v.watermarks().count();
    let _ = v.stats();
}

fuzz_target!(|data: &[u8]| {
    let key = StateKey::new(KEY);
    let probes = probes(data);
    let with_tag = signed(data);
    for bytes in [data, &with_tag[..]] {
        let opened = StateView::open(bytes);
        if let Ok(v) = &opened {
            exercise_snapshot(v, &probes);
        }
        if let Ok(v) = StateView::open_verified(bytes, &key, 0) {
            assert!(opened.is_ok(), "open_verified accepted what open refused");
            exercise_snapshot(&v, &probes);
            let params = ApplyParams {
                built_at: 0,
                expire_before: 0,
            };
            let again = apply_deltas(&v, &[], &params, &key).expect("a verified snapshot re-encodes");
            let w = StateView::open_verified(&again, &key, v.generation()).expect("re-encoded snapshot verifies");
            // Re-encoding drops expired entries; with `expire_before = 0` only those with `exp == 0` (or a
            // watermark that covers nothing unexpired), so compare answers only when there are none.
            let lossless =
                v.tokens().all(|t| t.exp > 0) && v.watermarks().all(|m| m.through > 0 || v.max_token_lifetime() > 0);
            for p in probes.iter().filter(|_| lossless) {
                assert_eq!(
                    v.is_revoked(&subject(p)),
                    w.is_revoked(&subject(p)),
                    "re-encoding changed an answer"
                );
            }
        }
        let opened = DeltaView::open(bytes);
        if let Ok(d) = &opened {
            for p in &probes {
                let _ = d.is_revoked(&subject(p));
            }
            let _ = d.tokens().count();
            let _ = d.watermarks().count();
        }
        if let Ok(d) = DeltaView::open_verified(bytes, &key) {
            assert!(opened.is_ok(), "open_verified accepted what open refused");
            for p in &probes {
                let _ = d.is_revoked(&subject(p));
            }
        }
    }
});
