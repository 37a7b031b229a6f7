//! Every public error type of the core is a `core::error::Error` whose message is its stable text, so callers can
//! use `?` into `anyhow`/`thiserror` (or `Box<dyn Error>`) and keep the exact wording they logged before.

use sharegate_shared::keys::KeyError;
use sharegate_shared::path::PathError;
use sharegate_shared::reason::Reason;
use sharegate_shared::revocation::{BuildError, StateError};
use sharegate_shared::token::MintError;
use std::error::Error;

fn fails<E: Error + Send + Sync + 'static>(e: E) -> Result<(), Box<dyn Error + Send + Sync>> {
    Err(e)?;
    Ok(())
}

fn message<E: Error + Send + Sync + 'static + Clone>(e: E) -> String {
    let display = e.to_string();
    let boxed = fails(e).expect_err("an error");
    assert_eq!(boxed.to_string(), display, "boxing keeps the message");
    assert!(boxed.source().is_none(), "core errors are leaves");
    display
}

#[test]
fn core_errors_are_errors_with_their_display_kept() {
    assert_eq!(message(Reason::Expired), "expired");
    assert_eq!(message(Reason::Revoked), Reason::Revoked.as_str());
    assert_eq!(message(KeyError::StillInUse), "key_still_in_use");
    assert_eq!(message(MintError::InvalidClaim("asset")), "invalid claim: asset");
    assert_eq!(message(MintError::TtlTooLong), "ttl_too_long");
    assert_eq!(message(MintError::TooLarge), "token too large");
    assert_eq!(message(StateError::BadMac), "bad_mac");
    assert_eq!(message(BuildError::BrokenChain), "broken_chain");
    assert_eq!(message(PathError::DotSegment), PathError::DotSegment.to_string());
}
