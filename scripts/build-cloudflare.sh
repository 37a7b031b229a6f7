#!/usr/bin/env bash
# Build the Cloudflare worker (edge-worker/cloudflare) into edge-worker/cloudflare/build/ with worker-build, offline:
# worker-build would download wasm-bindgen and esbuild, so both are pointed at local copies (the pinned
# wasm-bindgen-cli that scripts/test.sh installs, and the esbuild that wrangler brings). Prints the bundle's size.
#
# `bash scripts/build-cloudflare.sh --phases` builds the benchmark's phase-stop variant (cargo feature
# `bench-phases`, never deployed) into edge-worker/cloudflare/build-phases/ instead.
#
# `wrangler deploy` runs this through the [build] section of the root wrangler.toml. Concurrent callers (test
# binaries running in parallel) are serialised with a lock, and a build that is newer than every source is reused.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRATE=$ROOT/edge-worker/cloudflare
OUT_NAME=build
FEATURES=()
if [[ ${1:-} == --phases ]]; then
    OUT_NAME=build-phases
    FEATURES=(--features bench-phases)
    shift
fi
OUT=$CRATE/$OUT_NAME

mkdir -p "$ROOT/target"
exec 9>"$ROOT/target/.cloudflare-$OUT_NAME.lock"
flock 9

newest_source=$(find "$ROOT/shared/src" "$ROOT/edge-worker/src" "$CRATE/src" "$CRATE/Cargo.toml" "$CRATE/Cargo.lock" "$CRATE/.cargo" \
    "$ROOT/shared/Cargo.toml" "$ROOT/edge-worker/Cargo.toml" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n1)
if [[ ${1:-} != --force && -f $OUT/index_bg.wasm && -f $OUT/index.js ]]; then
    built=$(stat -c '%Y' "$OUT/index_bg.wasm")
    if [[ ${newest_source%.*} -le $built ]]; then
        echo "[build-cloudflare] up to date: $OUT" >&2
        exit 0
    fi
fi

WASM_BINDGEN_BIN=${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || true)}
[[ -x $WASM_BINDGEN_BIN ]] || { echo "wasm-bindgen not found: run bash scripts/test.sh (it installs the pinned one)" >&2; exit 1; }
export WASM_BINDGEN_BIN
ESBUILD_BIN=${ESBUILD_BIN:-$ROOT/node_modules/@esbuild/linux-x64/bin/esbuild}
[[ -x $ESBUILD_BIN ]] || { echo "esbuild not found at $ESBUILD_BIN: run bash scripts/test.sh (wrangler brings it)" >&2; exit 1; }
export ESBUILD_BIN

cd "$CRATE"
worker-build --release --out-dir "$OUT_NAME" . "${FEATURES[@]}"
raw=$(stat -c '%s' "$OUT/index_bg.wasm")
js=$(stat -c '%s' "$OUT/index.js")
gz=$(cat "$OUT/index_bg.wasm" "$OUT/index.js" | gzip -9 | wc -c)
echo "[build-cloudflare] bundle: wasm $raw B + js $js B raw, $gz B gzip" >&2
