//! The Fastly Compute app under Viceroy (filled in by the Fastly adapter work).
