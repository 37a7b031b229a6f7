#!/usr/bin/env bash
# Token verify benchmark (shared/examples/wasm_verify_bench.rs) on wasm32-wasip1 under Node's WASI, with and
# without simd128, and natively for comparison; prints each run, then one table.
#
# Usage: bash scripts/bench-wasm.sh [--quick | --iters N --rounds N]
#   --quick is what .ci/run uses: it proves the benchmark still builds and runs, the figures mean little.
# Node runs the wasm (node:wasi is built in), so no wasmtime or other runtime is installed.
set -euo pipefail

# shellcheck source=scripts/test.sh
source "$(dirname "${BASH_SOURCE[0]}")/test.sh" # the ensure_* helpers
cd "$SHAREGATE_ROOT"

EXAMPLE=wasm_verify_bench
TARGET_DIR=${CARGO_TARGET_DIR:-$SHAREGATE_ROOT/target}
# simd128 changes RUSTFLAGS, which would rebuild every dependency on each switch: give it a target dir of its own.
SIMD_TARGET_DIR=$TARGET_DIR/wasm-simd128

ensure_rust_toolchain
if ! command -v node >/dev/null; then
    ensure_apt nodejs
fi
# node:wasi's getImportObject() and version: 'preview1' arrived in Node 18.16/20.
node_major=$(node -p 'process.versions.node.split(".")[0]')
((node_major >= 18)) || die "Node $(node --version) is too old for node:wasi; need 18.16 or newer"

build() {
    log "build: $*"
    cargo build --quiet -p sharegate-shared --release --example "$EXAMPLE" "$@"
}

build --target wasm32-wasip1
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128" build --target wasm32-wasip1 --target-dir "$SIMD_TARGET_DIR"
build

# --no-warnings: Node 20 flags node:wasi as experimental on every start.
runs=(
    "node --no-warnings scripts/bench-wasm.mjs $TARGET_DIR/wasm32-wasip1/release/examples/$EXAMPLE.wasm"
    "node --no-warnings scripts/bench-wasm.mjs $SIMD_TARGET_DIR/wasm32-wasip1/release/examples/$EXAMPLE.wasm"
    "$TARGET_DIR/release/examples/$EXAMPLE"
)
results=()
for cmd in "${runs[@]}"; do
    echo
    # Word splitting of $cmd is intended: the paths have no spaces (target dirs are ours).
    # shellcheck disable=SC2086
    out=$($cmd "$@")
    echo "$out"
    results+=("$(grep '^RESULT ' <<<"$out")") || die "no RESULT line from: $cmd"
done

echo
echo "== token verify: median ns/op (lower is better); verify/raw is the median of the rounds' own ratios"
printf '%-24s %14s %14s %11s\n' target "raw HMAC ns" "verify ns" verify/raw
for r in "${results[@]}"; do
    # RESULT target=T raw_ns=R verify_ns=V ratio=Q
    read -r _ t raw ver ratio <<<"$r"
    printf '%-24s %14s %14s %11s\n' "${t#target=}" "${raw#raw_ns=}" "${ver#verify_ns=}" "${ratio#ratio=}"
done
