#!/usr/bin/env bash
# Beacon ingestion over HTTP: `sharegate serve` on the embedded store, then on Redis, loaded by wrk with POST
# /v1/beacons from many views (real view ids, from the share page) and many client addresses
# (SHAREGATE_CLIENT_IP_HEADER=x-forwarded-for; ADDRS addresses, fewer than the limiter tracks, so the per-address
# limit is not what is measured). Each beacon is a cumulative snapshot with a rising seq, as a playing page sends.
# Reports requests/s, accepted beacons/s, latency percentiles, refusals, and how long the applier then takes to fold
# everything into the hourly rows.
#
#   bash scripts/bench-beacons.sh               # 10 s per store
#   DURATION=30 CONNS=32 VIEWS=2000 bash scripts/bench-beacons.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/test.sh
source scripts/test.sh
ensure_apt wrk redis-server

DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
VIEWS=${VIEWS:-500}
# Distinct client addresses: below the limiter's 50,000 tracked (past it new addresses share one bucket, which
# would measure refusals); each sees well under its 10 beacons/s at these rates.
ADDRS=${ADDRS:-40000}
API_PORT=${API_PORT:-7792}
REDIS_PORT=${REDIS_PORT:-7793}
WORK=$(mktemp -d /tmp/sharegate-beacons.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

cargo build --release -q -p sharegate
BIN=$PWD/target/release/sharegate

run_one() {
    local name=$1 store=$2 dir
    dir=$WORK/$(tr -c 'a-z0-9' '_' <<<"$name")
    mkdir -p "$dir"
    (SHAREGATE_CLIENT_IP_HEADER=x-forwarded-for exec "$BIN" serve --data-dir "$dir/data" \
        --api-addr "127.0.0.1:$API_PORT" --store "$store") >"$dir/serve.log" 2>&1 &
    local pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$API_PORT/healthz" >/dev/null && break; sleep 0.1; done
    local admin minter auditor share
    admin=$(cat "$dir/data/admin.key")
    key() {
        curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/apikeys" -H "Authorization: Bearer $admin" \
            -H 'Content-Type: application/json' -d "{\"role\":\"$1\"}" | sed 's/.*"key":"\([^"]*\)".*/\1/'
    }
    minter=$(key minter)
    auditor=$(key auditor)
    curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/assets" -H "Authorization: Bearer $admin" \
        -H 'Content-Type: application/json' -d "{\"id\":\"demo\",\"origin\":\"$PWD/deploy/demo-media\"}" | grep -q '"ready":true'
    share=$(curl -sf -X POST "http://127.0.0.1:$API_PORT/v1/shares" -H "Authorization: Bearer $minter" \
        -H 'Content-Type: application/json' \
        -d '{"asset":"demo","audience":"public","channel":"email","campaign":"spring"}' | sed 's/.*"id":"\(sh_[^"]*\)".*/\1/')
    # Real view ids, one per page load.
    {
        echo "views = {"
        for _ in $(seq 1 "$VIEWS"); do
            curl -sf -H 'Accept: text/html' "http://127.0.0.1:$API_PORT/s/$share" |
                grep -o '"view":"[^"]*"' | head -1 | sed 's/"view":\("[^"]*"\)/  \1,/'
        done
        echo "}"
    } >"$dir/views.lua"
    cat "$dir/views.lua" - >"$dir/beacons.lua" <<LUA
local share, n, addrs = "$share", #views, $ADDRS
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain;charset=UTF-8"
function setup(thread) counter = counter + 1; thread:set("id", counter) end
function init(args) i = id * 7919 end
function request()
  i = i + 1
  local v = views[(i % n) + 1]
  local seq = math.floor(i / n) + 1
  local a = i % addrs
  wrk.headers["X-Forwarded-For"] = string.format("10.%d.%d.%d", math.floor(a / 65536) % 256, math.floor(a / 256) % 256, a % 256)
  local body = string.format(
    '{"v":1,"view":"%s","share":"%s","asset":"demo","channel":"email","campaign":"spring","seq":%d,' ..
    '"play_requested":true,"startup_ms":%d,"watch_ms":%d,"stall_ms":%d,"rebuffers":%d,"played_ms":%d,' ..
    '"duration_ms":6000,"ended":false,"failure":null,"final":false}',
    v, share, seq, 300 + (i % 700), seq * 2000, (seq % 3) * 100, seq % 3, seq * 1900)
  return wrk.format(nil, nil, nil, body)
end
LUA
    local out started caught
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "$dir/beacons.lua" "http://127.0.0.1:$API_PORT/v1/beacons")
    echo "$out" >"$dir/wrk.txt"
    started=$(date +%s.%N)
    # Caught up when every view's play request is counted.
    for _ in $(seq 1 600); do
        # The totals come last in the answer: the last `"views":N`.
        caught=$(curl -sf -H "Authorization: Bearer $auditor" "http://127.0.0.1:$API_PORT/v1/analytics" |
            grep -o '"views":[0-9]*' | tail -1 | cut -d: -f2)
        [[ $caught == "$VIEWS" ]] && break
        sleep 0.1
    done
    local took
    took=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    awk -v name="$name" -v took="$took" -v views="$caught/$VIEWS" -v secs="$DURATION" '
        /Requests\/sec/ { rps = $2 }
        / requests in / { total = $1 }
        /^ +50%/ { p50 = $2 } /^ +90%/ { p90 = $2 } /^ +99%/ { p99 = $2 }
        /Non-2xx/ { bad = $NF }
        END { bad = (bad == "" ? 0 : bad)
              printf "%-16s %9.0f req/s  %9.0f accepted/s  p50 %8s  p90 %8s  p99 %8s  refused %s  all views applied (%s) %ss after the load\n",
              name, rps, (total - bad) / secs, p50, p90, p99, bad, views, took }' "$dir/wrk.txt"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "beacon ingestion, ${DURATION}s each, $CONNS connections (wrk -t2), $VIEWS views, addresses spread over 10.0.0.0/8:"
run_one "embedded (redb)" ""
run_one "redis" "redis://127.0.0.1:$REDIS_PORT"
