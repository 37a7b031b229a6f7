//! Replayed revocation state against the Fastly app in Viceroy (issue 11, item 3): its state URL (backend
//! `control_plane`) turns to MAC-valid replays (older snapshot, older delta, stale "no change", same-generation
//! answers as last signed, a bare 304). None extends the freshness of the state in the POP's Core Cache; the app
//! fails closed once its signed state is older than `SHAREGATE_STATE_MAX_AGE`, and recovers on honest answers.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::replay::{self, ReplayControlPlane};
use sharegate_e2e::viceroy::Viceroy;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_never_extends_the_apps_freshness() {
    let media = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(media.path().join("a")).unwrap();
    std::fs::write(media.path().join("a/seg.ts"), b"segment").unwrap();
    let origin = StaticOrigin::start(media.path().to_path_buf()).await.unwrap();
    let cp = ReplayControlPlane::start().await.unwrap();
    let settings = replay::edge_settings(&origin.base, &cp.state_url(), 300);
    let app = Viceroy::start(&settings).await.unwrap();
    let waited = replay::run(&app.base, &cp, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", app.log_tail()));
    eprintln!(
        "fastly (viceroy): stale {waited}s after the last signed time (limit {}s), replays: {:?}",
        replay::MAX_AGE,
        cp.served()
    );
}
