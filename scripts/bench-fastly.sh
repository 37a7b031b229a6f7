#!/usr/bin/env bash
# Per-request cost of the Fastly app in Viceroy: the service against a pass-through app in the same run (ratio),
# and the in-instance cost of reading the settings, opening the revocation state and deciding (a timing build):
# `bash scripts/bench-fastly.sh [--quick]`. Needs viceroy (scripts/test.sh installs it). See docs/fastly.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build-fastly.sh --bench
cargo run --release -q -p sharegate-e2e --example bench_fastly -- "$@"
