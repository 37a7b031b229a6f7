//! sharegate's edge: one decision engine, pure and runtime-free.
//!
//! [`engine::Engine::decide`] turns a request's facts, `now` and the revocation state into allow-or-deny, and
//! [`engine::Engine::rewrite_playlist`] rewrites a fetched playlist; [`response`] plans the whole answer to an allowed
//! request (origin URL and failover, CDN TTL, status, every header, the body: whole, sliced, rewritten or none) and
//! [`held`] how a state answer is read and kept. Response headers are decided in `engine.rs` (denials) and
//! `response.rs` (allowed requests), their names in [`contract`]. The adapters for each runtime (the native server
//! in `edge-worker/native`, Cloudflare Workers, Fastly Compute) only translate requests, responses, storage and
//! time; any logic they would need belongs here. This crate does no I/O and reads no clock.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod adapter;
pub mod client;
pub mod cmcd;
pub mod config;
pub mod contract;
pub mod engine;
pub mod events;
pub mod held;
pub mod hls;
pub mod response;
pub mod watermark;

pub use config::{ConfigSource, EdgeConfig};
pub use engine::{Decision, Engine, Request, StateInput};
pub use sharegate_shared as core;
