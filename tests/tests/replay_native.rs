//! Replayed revocation state against the native edge (issue 11, item 3): pulled from a state URL that turns to
//! replays, and pushed to `POST /_sharegate/state`. Older snapshots, older deltas and stale "no change" answers are
//! refused with 409 (saying which generation the edge holds) and extend nothing; same-generation replays are taken
//! but move nothing; the edge fails closed once its signed state is older than `SHAREGATE_STATE_MAX_AGE`.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::replay::{self, PushTarget, ReplayControlPlane};
use sharegate_e2e::start_native_edge;
use sharegate_edge_native::NativeOptions;
use sharegate_edge_native::origin::Origin;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_pulled_or_pushed_never_extend_freshness_and_the_edge_goes_stale_on_time() {
    let media = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(media.path().join("a")).unwrap();
    std::fs::write(media.path().join("a/seg.ts"), b"segment").unwrap();
    let cp = ReplayControlPlane::start().await.unwrap();
    let settings = replay::edge_settings("http://127.0.0.1:9", &cp.state_url(), 200);
    let opts = NativeOptions {
        origins: vec![Origin::Dir(media.path().to_path_buf())],
        state_url: Some(cp.state_url()),
        pull_interval: Duration::from_millis(200),
        edge_token: Some(replay::EDGE_TOKEN.into()),
        ..NativeOptions::default()
    };
    let edge = start_native_edge(&settings, opts).await.unwrap();
    sharegate_edge_native::spawn_background(&edge.edge);
    let base = format!("http://{}", edge.addr);
    let push_url = format!("{base}/_sharegate/state");
    let push = PushTarget {
        url: &push_url,
        token: replay::EDGE_TOKEN,
    };
    let waited = replay::run(&base, &cp, Some(push), Duration::from_secs(3))
        .await
        .unwrap();
    eprintln!(
        "native: stale {waited}s after the last signed time (limit {}s), replays: {:?}",
        replay::MAX_AGE,
        cp.served()
    );
}
