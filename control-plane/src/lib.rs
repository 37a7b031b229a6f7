//! sharegate's control plane: the service that mints links and pushes revocations and purges to the edge.
//!
//! For now it holds the offline token tools behind the `sharegate` command (key generation, minting and checking a
//! token with a key from the environment). The HTTP service, stores and publishers come with the control-plane
//! issue. It does not decide requests at the edge: that is `sharegate-edge`.
#![forbid(unsafe_code)]

pub mod crash;
pub mod offline;
pub mod purge;
pub mod run;
pub mod service;
pub mod store;
pub mod tokens;
