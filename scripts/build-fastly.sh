#!/usr/bin/env bash
# Build the Fastly Compute app (edge-worker/fastly) for wasm32-wasip1 into edge-worker/fastly/bin/: main.wasm (the
# service; `fastly compute build` packages it from there, running this script through [scripts].build in the
# package's fastly.toml) and passthrough.wasm (the baseline of scripts/bench-fastly.sh). Prints the sizes.
#
#   bash scripts/build-fastly.sh            # release build, reused when newer than every source
#   bash scripts/build-fastly.sh --force    # rebuild regardless
#   bash scripts/build-fastly.sh --bench    # also bin/bench-timing.wasm: main.wasm plus a server-timing header
#
# Offline once the registry cache holds the locked dependencies (`--locked`: the versions in
# edge-worker/fastly/Cargo.lock). Concurrent callers (test binaries running in parallel) are serialised by a lock.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRATE=$ROOT/edge-worker/fastly
OUT=$CRATE/bin
force=false
bench=false
for arg in "$@"; do
    case $arg in
    --force) force=true ;;
    --bench) bench=true ;;
    *)
        echo "usage: $0 [--force] [--bench]" >&2
        exit 2
        ;;
    esac
done

mkdir -p "$ROOT/target" "$OUT"
exec 9>"$ROOT/target/.fastly-build.lock"
flock 9

newest_source=$(find "$ROOT/shared/src" "$ROOT/edge-worker/src" "$CRATE/src" "$CRATE/Cargo.toml" "$CRATE/Cargo.lock" \
    "$ROOT/shared/Cargo.toml" "$ROOT/edge-worker/Cargo.toml" -type f -printf '%T@\n' 2>/dev/null | sort -n | tail -n1)
fresh() { [[ $force == false && -f $1 && ${newest_source%.*} -le $(stat -c '%Y' "$1") ]]; }

report() {
    local f=$1 raw gz
    raw=$(stat -c '%s' "$f")
    gz=$(gzip -9 <"$f" | wc -c)
    echo "[build-fastly] $(basename "$f"): $raw B raw, $gz B gzip" >&2
}

cd "$CRATE"
if fresh "$OUT/main.wasm" && fresh "$OUT/passthrough.wasm"; then
    echo "[build-fastly] up to date: $OUT/main.wasm" >&2
else
    cargo build --release --locked --target wasm32-wasip1 --bins
    cp target/wasm32-wasip1/release/sharegate-edge-fastly.wasm "$OUT/main.wasm"
    cp target/wasm32-wasip1/release/passthrough.wasm "$OUT/passthrough.wasm"
fi
report "$OUT/main.wasm"
report "$OUT/passthrough.wasm"

if [[ $bench == true ]]; then
    if fresh "$OUT/bench-timing.wasm"; then
        echo "[build-fastly] up to date: $OUT/bench-timing.wasm" >&2
    else
        # Its own target directory, so the two feature sets do not rebuild each other.
        cargo build --release --locked --target wasm32-wasip1 --bin sharegate-edge-fastly --features bench-timing \
            --target-dir target/bench
        cp target/bench/wasm32-wasip1/release/sharegate-edge-fastly.wasm "$OUT/bench-timing.wasm"
    fi
    report "$OUT/bench-timing.wasm"
fi
