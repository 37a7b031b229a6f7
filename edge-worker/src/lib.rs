//! sharegate's edge.
//!
//! This crate will hold the one decision engine (`decide(request, now, keys, state) -> Decision`) and the thin
//! adapters that put it on Cloudflare Workers, Fastly Compute and a native server. Until the engine lands it only
//! re-exports the core the engine is built on, so the workspace layout is in place from the start.
#![forbid(unsafe_code)]

pub use sharegate_shared as core;
