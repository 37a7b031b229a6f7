//! A native edge for load tests: loads a realistic revocation state (100k revoked among 1M issued, 1,000 viewer
//! watermarks), serves `--origin DIR` on `--addr`, and writes a valid token for asset `bench` to `--token-file`.
//! Used by `scripts/bench-edge.sh` (native edge vs nginx `secure_link`, same file, same load tool).
#![allow(clippy::unwrap_used)]

use sharegate_e2e::unix_now;
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;
use sharegate_shared::keys::{KeyRing, SecretKey};
use sharegate_shared::revocation::{
    IssuedToken, RevokedToken, ScopeKind, SnapshotParams, StateKey, Watermark, build_snapshot,
};
use sharegate_shared::token::{Claims, IpPrefix, Minter, Permissions, Policy};
use std::collections::BTreeMap;

fn id(i: u64) -> [u8; 12] {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut out = [0u8; 12];
    for chunk in out.chunks_mut(4) {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&x.to_le_bytes()[..4]);
    }
    out
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let origin = arg("--origin").expect("--origin DIR");
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:7781".into());
    let token_file = arg("--token-file").expect("--token-file PATH");
    let signing = [0x42u8; 32];
    let state_key = [0x33u8; 32];
    let now = u32::try_from(unix_now()).unwrap();
    let issued: Vec<IssuedToken> = (0..1_000_000u64)
        .map(|i| IssuedToken {
            id: id(i),
            iat: now - 100,
            exp: now + 7200,
        })
        .collect();
    let revoked: Vec<RevokedToken> = (0..1_000_000u64)
        .step_by(10)
        .map(|i| RevokedToken {
            id: id(i),
            iat: now - 100,
            exp: now + 7200,
        })
        .collect();
    let watermarks: Vec<Watermark> = (0..1000)
        .map(|i| Watermark::new(ScopeKind::Viewer, format!("viewer-{i}").as_bytes(), now - 50))
        .collect();
    let params = SnapshotParams {
        generation: 1,
        built_at: now,
        cutoff: now,
        expire_before: now - 60,
        max_token_lifetime: 86_400,
    };
    let state = build_snapshot(
        &params,
        issued.iter().copied(),
        &revoked,
        &watermarks,
        &StateKey::new(state_key),
    )
    .unwrap();

    let mut settings = BTreeMap::new();
    settings.insert(
        "SHAREGATE_SIGNING_KEYS".to_string(),
        format!("1:active:{}", hex::encode(signing)),
    );
    settings.insert("SHAREGATE_STATE_KEY".to_string(), hex::encode(state_key));
    settings.insert("SHAREGATE_STATE_MAX_AGE".to_string(), "86400".to_string());
    let opts = NativeOptions {
        origins: vec![Origin::Dir(origin.into())],
        ..NativeOptions::default()
    };
    let config = sharegate_edge::EdgeConfig::from_source(&settings).unwrap();
    let edge = sharegate_edge_native::Edge::new(config, opts);
    edge.offer_state(&state).unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();

    let ring = KeyRing::with_active(1, SecretKey::new(signing), 86_400);
    let claims = Claims {
        token_id: id(1),
        iat: now - 100,
        nbf: now - 100,
        exp: now + 7000,
        permissions: Permissions::PLAYBACK,
        asset: Some("bench".into()),
        share: Some("sh_8f3a2b1c".into()),
        viewer: Some("v_1234567890".into()),
        channel: Some("email".into()),
        campaign: Some("spring-26".into()),
        ip: IpPrefix::new("127.0.0.0".parse().unwrap(), 8),
        ..Claims::default()
    };
    let token = Minter::new(&ring, Policy::default()).unwrap().mint(&claims).unwrap();
    std::fs::write(&token_file, &token).unwrap();
    eprintln!("bench edge on {addr}, state generation 1 ({} bytes)", state.len());
    sharegate_edge_native::serve(edge, listener).await.unwrap();
}
