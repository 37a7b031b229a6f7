//! End-to-end tests for sharegate live in `tests/tests/`; this library holds what they share.
#![forbid(unsafe_code)]
