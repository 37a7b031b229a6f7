//! The pure core of sharegate, shared by the edge and the control plane.
//!
//! It holds the token format (mint and verify), path normalisation and scope matching, the key ring, and the
//! revocation state. It does **not** do I/O, read a clock, read the environment, or make random numbers: callers pass
//! `now`, keys, random bytes and state in. That keeps it identical on every runtime it runs on (Cloudflare Workers
//! on `wasm32-unknown-unknown`, Fastly Compute on `wasm32-wasip1`, the native edge and the control plane), and makes
//! every decision reproducible in a test.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

mod hmac256;
pub mod keys;
pub mod path;
pub mod reason;
pub mod revocation;
pub mod token;

pub use keys::{KeyId, KeyRing, KeyState, SecretKey};
pub use path::{PathError, normalize_path, path_in_scope};
pub use reason::Reason;
pub use token::{Claims, Minter, Policy, RequestFacts, Resource, TokenBuf, Verifier};
