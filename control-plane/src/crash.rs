//! Named crash points for the crash tests: `SHAREGATE_CRASH_AT=<point>` makes the process abort (no unwinding,
//! no destructors, no flushing: what `kill -9` does to the store's view of the world) when it reaches that point.
//! Unset, which is every deployment, a point costs one load of a cached `Option`.
//!
//! The points sit between the steps that must survive a crash in any order: before and after a revocation, share
//! deletion or key rotation commits, after it is published, and around the idempotency mark. The list is
//! [`POINTS`]; `sharegate/tests/crash.rs` kills the service at each of them and checks that the retried call
//! completes exactly once.

use std::sync::OnceLock;

/// Every crash point, in the order a call reaches them.
pub const POINTS: &[&str] = &[
    "idempotency.marked",
    "revocation.before_commit",
    "revocation.after_commit",
    "revocation.after_publish",
    "share_delete.before_commit",
    "share_delete.after_commit",
    "share_delete.after_publish",
    "key_rotate.before_commit",
    "key_rotate.after_commit",
    "key_rotate.after_publish",
    "idempotency.before_save",
];

fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| std::env::var("SHAREGATE_CRASH_AT").ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Abort the process here if `SHAREGATE_CRASH_AT` names this point.
pub fn point(name: &'static str) {
    if armed() == Some(name) {
        eprintln!("sharegate: crash point {name} reached (SHAREGATE_CRASH_AT): aborting");
        std::process::abort();
    }
}
