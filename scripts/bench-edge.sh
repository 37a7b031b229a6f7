#!/usr/bin/env bash
# Native edge vs nginx `secure_link`, serving the same ~100 KB segment on this machine, loaded by the same tool
# (wrk) in the same run. The edge does more per request than nginx: a binary token with HMAC-SHA256 (nginx: MD5 of
# expiry+URI), scope, permission and IP-binding checks, a revocation lookup in a 1M-issued/100k-revoked state, and it
# serves from its in-memory cache. Reports requests/s of each and the ratio edge/nginx per round, and each server's
# CPU time per request (its processes' user+system time over the requests served: what the load tool, sharing the
# two cores, does not blur).
#
# The same rounds also measure a ceiling: tests/examples/bench_bare_server.rs checks nothing and answers every request
# with the same bytes, by sendfile from a memfd and by one write of a pre-framed buffer. No server sending the
# segment over TCP here can do much better, so bare/nginx bounds what edge/nginx can reach on this machine.
#
#   bash scripts/bench-edge.sh            # 10 s per run, 2 rounds
#   DURATION=30 ROUNDS=3 CONNS=64 bash scripts/bench-edge.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/test.sh
source scripts/test.sh
ensure_apt nginx wrk

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
CONNS=${CONNS:-32}
EDGE_PORT=${EDGE_PORT:-7781}
NGINX_PORT=${NGINX_PORT:-7782}
WORK=$(mktemp -d /tmp/sharegate-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

mkdir -p "$WORK/www/bench/v0"
head -c 102400 /dev/urandom >"$WORK/www/bench/v0/seg_000.ts"
# nginx workers drop to an unprivileged user: let them read the file.
chmod -R a+rX "$WORK"

cargo build --release -q -p sharegate-e2e --example bench_edge_server --example bench_bare_server
BARE_PORT=$((EDGE_PORT + 10))
for mode in sendfile copy; do
    target/release/examples/bench_bare_server --addr "127.0.0.1:$BARE_PORT" --file "$WORK/www/bench/v0/seg_000.ts" \
        --mode "$mode" &
    PIDS+=($!)
    declare "BARE_${mode^^}_PID=$!"
    declare "BARE_${mode^^}_URL=http://127.0.0.1:$BARE_PORT/bench/v0/seg_000.ts"
    BARE_PORT=$((BARE_PORT + 1))
done
target/release/examples/bench_edge_server --origin "$WORK/www" --addr "127.0.0.1:$EDGE_PORT" \
    --token-file "$WORK/token" 2>"$WORK/edge.log" &
PIDS+=($!)
EDGE_PID=$!

# nginx with the secure_link module: the token is base64url(MD5(expires + uri + " secret")).
cat >"$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    client_body_temp_path $WORK/tmp;
    proxy_temp_path $WORK/tmp;
    fastcgi_temp_path $WORK/tmp;
    uwsgi_temp_path $WORK/tmp;
    scgi_temp_path $WORK/tmp;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/www;
        location /bench/ {
            secure_link \$arg_md5,\$arg_expires;
            secure_link_md5 "\$secure_link_expires\$uri secret";
            if (\$secure_link = "") { return 403; }
            if (\$secure_link = "0") { return 410; }
        }
    }
}
CONF
mkdir -p "$WORK/tmp"
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
NGINX_PID=$!

for _ in $(seq 1 300); do
    [[ -s $WORK/token ]] && curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break
    sleep 0.1
done
TOKEN=$(cat "$WORK/token")
EXPIRES=$(($(date +%s) + 3600))
MD5=$(printf '%s' "${EXPIRES}/bench/v0/seg_000.ts secret" | openssl md5 -binary | base64 | tr '+/' '-_' | tr -d '=')
EDGE_URL="http://127.0.0.1:$EDGE_PORT/t/$TOKEN/bench/v0/seg_000.ts"
NGINX_URL="http://127.0.0.1:$NGINX_PORT/bench/v0/seg_000.ts?md5=$MD5&expires=$EXPIRES"

# Both must serve the file, and both must refuse a tampered token, before anything is measured.
cmp -s <(curl -sf "$EDGE_URL") "$WORK/www/bench/v0/seg_000.ts" || { echo "edge does not serve the segment"; exit 1; }
cmp -s <(curl -sf "$NGINX_URL") "$WORK/www/bench/v0/seg_000.ts" || { echo "nginx does not serve the segment"; cat "$WORK/nginx-error.log"; curl -si "$NGINX_URL" | head -5; exit 1; }
BAD_TOKEN="${TOKEN:0:40}$([[ ${TOKEN:40:1} == A ]] && echo B || echo A)${TOKEN:41}"
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$EDGE_PORT/t/$BAD_TOKEN/bench/v0/seg_000.ts") == 403 ]]
[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NGINX_PORT/bench/v0/seg_000.ts?md5=x&expires=$EXPIRES") == 403 ]]

for url in "$BARE_SENDFILE_URL" "$BARE_COPY_URL"; do
    cmp -s <(curl -sf "$url") "$WORK/www/bench/v0/seg_000.ts" || { echo "the bare server does not serve the segment"; exit 1; }
done

# CPU ticks (user + system) of a process and its children's threads so far: nginx's master and workers, the edge.
ticks() {
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)
# One wrk run against $2 (server pid $1): sets RPS and CPU_US (the server's CPU microseconds per request).
RPS= CPU_US=
load() {
    local before out requests
    before=$(ticks "$1")
    out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "$2")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    RPS=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    CPU_US=$(awk -v t=$(($(ticks "$1") - before)) -v hz="$HZ" -v n="$requests" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
}
EDGE=() NGINX=() RATIOS=() CEILINGS=()
for r in $(seq 1 "$ROUNDS"); do
    load "$NGINX_PID" "$NGINX_URL"
    NGINX+=("$RPS") && NGINX_CPU=$CPU_US
    load "$EDGE_PID" "$EDGE_URL"
    EDGE+=("$RPS") && EDGE_CPU=$CPU_US
    load "$BARE_SENDFILE_PID" "$BARE_SENDFILE_URL"
    SF=$RPS && SF_CPU=$CPU_US
    load "$BARE_COPY_PID" "$BARE_COPY_URL"
    COPY=$RPS && COPY_CPU=$CPU_US
    RATIOS+=("$(awk -v e="${EDGE[-1]}" -v n="${NGINX[-1]}" 'BEGIN { printf "%.2f", e / n }')")
    CEILINGS+=("$(awk -v a="$SF" -v b="$COPY" -v n="${NGINX[-1]}" 'BEGIN { printf "%.2f", (a > b ? a : b) / n }')")
    printf 'round %d: req/s (CPU us/request): nginx %.0f (%s), edge %.0f (%s), bare sendfile %.0f (%s), bare copy %.0f (%s); edge/nginx %s, ceiling bare/nginx %s\n' \
        "$r" "${NGINX[-1]}" "$NGINX_CPU" "${EDGE[-1]}" "$EDGE_CPU" "$SF" "$SF_CPU" "$COPY" "$COPY_CPU" "${RATIOS[-1]}" "${CEILINGS[-1]}"
done
best() { printf '%s\n' "$@" | sort -g | tail -n1; }
B_EDGE=$(best "${EDGE[@]}")
B_NGINX=$(best "${NGINX[@]}")
printf '\n%-28s %12s\n' "server (100 KB segment)" "req/s (best)"
printf '%-28s %12.0f\n' "nginx secure_link" "$B_NGINX" "sharegate native edge" "$B_EDGE"
echo "ratio edge/nginx per round: ${RATIOS[*]} (ceiling bare/nginx: ${CEILINGS[*]})"
