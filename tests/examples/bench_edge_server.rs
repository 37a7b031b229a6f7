//! A native edge for load tests: loads a realistic revocation state (100k revoked among 1M issued, 1,000 viewer
//! watermarks), serves `--origin DIR` on `--addr`, and writes a valid token for asset `bench` to `--token-file`.
//! Used by `scripts/bench-edge.sh` (native edge vs nginx `secure_link`, same file, same load tool).
#![allow(clippy::unwrap_used)]

use sharegate_e2e::{arg, unix_now};
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;
use sharegate_shared::revocation::StateKey;
use sharegate_shared::token::{Claims, IpPrefix};

/// The `sharegate` binary's allocator (sharegate/src/main.rs), so this measures the edge as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The synthetic world every bench shares; included by path (see the header of shared/testkit.rs).
#[path = "../../shared/testkit.rs"]
mod testkit;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let origin = arg("--origin").expect("--origin DIR");
    let addr = arg("--addr").unwrap_or_else(|| "127.0.0.1:7781".into());
    let token_file = arg("--token-file").expect("--token-file PATH");
    let signing = [0x42u8; 32];
    let state_key = [0x33u8; 32];
    let now = u32::try_from(unix_now()).unwrap();
    let state = testkit::edge_snapshot(1_000_000, now, now + 7200, &StateKey::new(state_key));

    let mut settings = testkit::edge_settings(signing, state_key);
    settings.insert("SHAREGATE_STATE_MAX_AGE".to_string(), "86400".to_string());
    let opts = NativeOptions {
        origins: vec![Origin::Dir(origin.into())],
        ..NativeOptions::default()
    };
    let config = sharegate_edge::EdgeConfig::from_source(&settings).unwrap();
    let edge = sharegate_edge_native::Edge::new(config, opts);
    edge.offer_state(&state).unwrap();
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();

    // The typical link, for the asset this edge serves and a loopback client.
    let claims = Claims {
        asset: Some("bench".into()),
        ip: IpPrefix::new("127.0.0.0".parse().unwrap(), 8),
        ..testkit::typical_claims(testkit::mixed_id(1), now - 100, now + 7000)
    };
    let token = testkit::mint(signing, &claims);
    std::fs::write(&token_file, &token).unwrap();
    eprintln!("bench edge on {addr}, state generation 1 ({} bytes)", state.len());
    sharegate_edge_native::serve(edge, listener).await.unwrap();
}
