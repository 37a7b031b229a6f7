//! sharegate's control plane, as a library: the HTTP service that registers assets, mints links and shares, keeps
//! API keys and signing keys, records revocations and publishes the revocation state and purges to the edges.
//!
//! [`service::router`] is the whole API as an axum `Router` over an [`service::AppState`]; [`store`] holds its state
//! (embedded redb or Redis), [`purge`] drives CDN purges through a durable outbox, [`tokens`] reads token URLs and
//! shows claims, and [`crash`] names the points the crash tests kill the process at.
//!
//! It is not a program: it parses no command line, and putting a process together (opening the store, loading or
//! creating the secrets, binding listeners, tracing, a native edge beside it) is the job of the `sharegate` crate,
//! its composition root. Nor does it decide requests at the edge: to diagnose a link it asks the edge's own engine
//! (`sharegate-edge`), so the answer cannot drift from what edges do.
#![forbid(unsafe_code)]

pub mod crash;
pub mod env;
pub mod purge;
pub mod service;
pub mod store;
pub mod tokens;
