#!/usr/bin/env bash
# Per-request latency added by the sharegate worker over a pass-through worker, both in workerd via wrangler dev,
# in the same run (ratio), then each phase's cost from a phase-stop build of the same worker:
# `bash scripts/bench-cloudflare.sh [--quick]`. Needs what scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build-cloudflare.sh
bash scripts/build-cloudflare.sh --phases
cargo run --release -q -p sharegate-e2e --example bench_cloudflare -- "$@"
