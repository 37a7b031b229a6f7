#!/usr/bin/env bash
# Mint throughput over HTTP: `sharegate serve` on the embedded store, then on Redis, loaded by wrk with POST
# /v1/links (each mint is recorded durably in the issued log before it returns). Reports links/s for each.
# Then the entitlement check (docs/entitlement.md) on each store, in the same run: the asset public (off), entitled
# with one viewer (every check a cache hit) and entitled with a new viewer per mint (every check a call to a backend
# answering after 5 ms, tests/examples/entitlement_backend.rs); links/s, p99, and the ratios to off.
#
#   bash scripts/bench-mint.sh                 # 10 s per store and mode
#   ENTITLEMENT=0 bash scripts/bench-mint.sh   # without the entitlement modes
#   DURATION=30 CONNS=64 bash scripts/bench-mint.sh
#   BASELINE_BIN=/path/to/old/sharegate bash scripts/bench-mint.sh
#                                              # also run another build on each store, alternating with this one
#                                              # (same run, same machine), and print the ratio this/baseline
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/test.sh
source scripts/test.sh
ensure_apt wrk redis-server

DURATION=${DURATION:-10}
CONNS=${CONNS:-64}
API_PORT=${API_PORT:-7790}
REDIS_PORT=${REDIS_PORT:-7791}
WORK=$(mktemp -d /tmp/sharegate-mint.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p sharegate
BIN=$PWD/target/release/sharegate
BASELINE_BIN=${BASELINE_BIN:-}
ENTITLEMENT=${ENTITLEMENT:-1}
BACKEND_PORT=${BACKEND_PORT:-7796}
BACKEND_DELAY_MS=${BACKEND_DELAY_MS:-5}
export SHAREGATE_ENTITLEMENT_SECRET=bench-entitlement-secret-0123456789abcdef

cat >"$WORK/mint.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"asset":"demo","ttl":600,"viewer":"viewer-1","channel":"email"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MINTER_KEY")
LUA

RPS=
# Start `serve` (binary $1) on store $2 in a fresh directory $3 with the demo asset registered; sets PID, ADMIN and
# MINTER.
PID= ADMIN= MINTER=
start_serve() {
    local bin=$1 store=$2 dir=$3
    mkdir -p "$dir"
    (exec "$bin" serve --data-dir "$dir/data" --api-addr "127.0.0.1:$API_PORT" --store "$store") \
        >"$dir/serve.log" 2>&1 &
    PID=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null && break; sleep 0.1; done
    ADMIN=$(cat "$dir/data/admin.key")
    MINTER=$(curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/apikeys" -H "Authorization: Bearer $ADMIN" \
        -H 'Content-Type: application/json' -d '{"role":"minter"}' | sed 's/.*"key":"\([^"]*\)".*/\1/')
    curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/assets" -H "Authorization: Bearer $ADMIN" \
        -H 'Content-Type: application/json' -d "{\"id\":\"demo\",\"origin\":\"$PWD/deploy/demo-media\"}" | grep -q '"ready":true'
}

run_one() {
    local name=$1 store=$2 bin=${3:-$BIN} dir
    dir=$WORK/$(tr -c 'a-z0-9' '_' <<<"$name")
    start_serve "$bin" "$store" "$dir"
    local pid=$PID minter=$MINTER
    # One mint must work before anything is measured.
    curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/links" -H "Authorization: Bearer $minter" \
        -H 'Content-Type: application/json' -d '{"asset":"demo"}' | grep -q '"token_id"'
    local rps
    rps=$(MINTER_KEY=$minter wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$WORK/mint.lua" "http://127.0.0.1:$API_PORT/v1/links" |
        tee "$dir/wrk.txt" | awk '/Requests\/sec/ {print $2}')
    grep -E "Non-2xx|Socket errors" "$dir/wrk.txt" && { echo "$name: errors during the run"; exit 1; }
    printf '%-34s %10.0f links/s\n' "$name" "$rps"
    RPS=$rps
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# One entitlement mode on one store: `off` (public asset), `cached` (entitled, one viewer), `uncached` (entitled, a new
# viewer per mint). Sets RPS and P99 (ms).
P99=
run_entitled() {
    local name=$1 store=$2 mode=$3 dir
    dir=$WORK/ent_$(tr -c 'a-z0-9' '_' <<<"$name$mode")
    SHAREGATE_ENTITLEMENT_URL="http://127.0.0.1:$BACKEND_PORT/check" start_serve "$BIN" "$store" "$dir"
    local pid=$PID admin=$ADMIN minter=$MINTER
    if [[ $mode != off ]]; then
        curl -sf -X PUT "http://127.0.0.1:$API_PORT/v1/assets/demo/access" -H "Authorization: Bearer $admin" \
            -H 'Content-Type: application/json' -d '{"access":"entitled"}' | grep -q entitled
        sleep 1.1
    fi
    # The mint must work (and, entitled, carry the backend's plan) before anything is measured.
    curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/links" -H "Authorization: Bearer $minter" \
        -H 'Content-Type: application/json' -d '{"asset":"demo","viewer":"viewer-1"}' | grep -q '"token_id"'
    local rps out
    out=$(MINTER_KEY=$minter MODE=$mode wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$WORK/mint_ent.lua" \
        "http://127.0.0.1:$API_PORT/v1/links" | tee "$dir/wrk.txt")
    grep -E "Non-2xx|Socket errors" "$dir/wrk.txt" && { echo "$name $mode: errors during the run"; exit 1; }
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    P99=$(awk '/^ +99%/ { v = $2; if (v ~ /ms$/) { sub(/ms$/, "", v); print v } else if (v ~ /us$/) { sub(/us$/, "", v); print v / 1000 } else { sub(/s$/, "", v); print v * 1000 } }' <<<"$out")
    printf '%-34s %10.0f links/s  p99 %8.2f ms\n' "$name, entitlement $mode" "$rps" "$P99"
    RPS=$rps
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

cat >"$WORK/mint_ent.lua" <<'LUA'
local counter = 0
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) n = 0 end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("MINTER_KEY")
local mode = os.getenv("MODE")
function request()
  n = n + 1
  local viewer = "viewer-1"
  if mode == "uncached" then viewer = string.format("v-%d-%d", id, n) end
  return wrk.format(nil, nil, nil, string.format('{"asset":"demo","ttl":600,"viewer":"%s","channel":"email"}', viewer))
end
LUA

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "mint throughput, ${DURATION}s each, $CONNS connections (wrk -t2), this machine:"
if [[ -z $BASELINE_BIN ]]; then
    run_one "embedded (redb)" ""
    run_one "redis" "redis://127.0.0.1:$REDIS_PORT"
    [[ $ENTITLEMENT == 1 ]] || exit 0
    cargo build --release -q -p sharegate-e2e --example entitlement_backend
    "$PWD/target/release/examples/entitlement_backend" --addr "127.0.0.1:$BACKEND_PORT" --delay-ms "$BACKEND_DELAY_MS" \
        2>"$WORK/backend.log" &
    PIDS+=($!)
    for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$BACKEND_PORT") 2>/dev/null && break; sleep 0.1; done
    echo "entitlement check at mint (backend answers after ${BACKEND_DELAY_MS} ms):"
    for store in "" "redis://127.0.0.1:$REDIS_PORT"; do
        label=${store:+redis}
        label=${label:-embedded (redb)}
        [[ -n $store ]] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
        run_entitled "$label" "$store" off
        off=$RPS off99=$P99
        [[ -n $store ]] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
        run_entitled "$label" "$store" cached
        cached=$RPS cached99=$P99
        [[ -n $store ]] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
        run_entitled "$label" "$store" uncached
        awk -v n="$label" -v o="$off" -v c="$cached" -v u="$RPS" -v o99="$off99" -v c99="$cached99" -v u99="$P99" 'BEGIN {
            printf "%-34s cached/off %.3f  uncached/off %.3f  added p99: cached %+.2f ms, uncached %+.2f ms\n",
                n, c / o, u / o, c99 - o99, u99 - o99 }'
    done
    exit 0
fi
# Alternate baseline and this build, twice per store, so drift in the machine's load hits both alike.
n=0
for store in "" "redis://127.0.0.1:$REDIS_PORT"; do
    label=${store:+redis}
    label=${label:-embedded (redb)}
    base=0 this=0
    for round in 1 2; do
        n=$((n + 1))
        [[ -n $store ]] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
        run_one "$label, baseline #$round" "$store" "$BASELINE_BIN"
        base=$(awk -v a="$base" -v b="$RPS" 'BEGIN { print a + b }')
        [[ -n $store ]] && redis-cli -p "$REDIS_PORT" flushall >/dev/null
        run_one "$label, this build #$round" "$store" "$BIN"
        this=$(awk -v a="$this" -v b="$RPS" 'BEGIN { print a + b }')
    done
    awk -v n="$label" -v a="$this" -v b="$base" 'BEGIN { printf "%-34s %10.3f (this build / baseline)\n", n, a / b }'
done
