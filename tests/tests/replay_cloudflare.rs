//! Replayed revocation state against the Cloudflare worker in workerd (issue 11, item 3): its state URL turns to
//! MAC-valid replays (older snapshot, older delta, stale "no change", same-generation answers as last signed, a bare
//! 304). None extends the isolate's freshness, whether fresh from the control plane or from the location's answer
//! cache; the worker fails closed once its signed state is older than `SHAREGATE_STATE_MAX_AGE`, and recovers on
//! honest answers.
#![allow(clippy::unwrap_used)]

use sharegate_e2e::origin::StaticOrigin;
use sharegate_e2e::replay::{self, ReplayControlPlane};
use sharegate_e2e::wrangler::WranglerDev;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_state_never_extends_the_workers_freshness() {
    let media = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(media.path().join("a")).unwrap();
    std::fs::write(media.path().join("a/seg.ts"), b"segment").unwrap();
    let origin = StaticOrigin::start(media.path().to_path_buf()).await.unwrap();
    let cp = ReplayControlPlane::start().await.unwrap();
    let settings = replay::edge_settings(&origin.base, &cp.state_url(), 300);
    let worker = WranglerDev::start(&settings).await.unwrap();
    let waited = replay::run(&worker.base, &cp, None, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", worker.log_tail()));
    eprintln!(
        "cloudflare (workerd): stale {waited}s after the last signed time (limit {}s), replays: {:?}",
        replay::MAX_AGE,
        cp.served()
    );
}
