#!/usr/bin/env bash
# Native edge vs nginx `secure_link`, serving the same ~100 KB segment on this machine, loaded by the same tool
# (wrk) in the same run. The edge does more per request than nginx: a binary token with HMAC-SHA256 (nginx: MD5 of
# expiry+URI), scope, permission and IP-binding checks, a revocation lookup in a 1M-issued/100k-revoked state, and it
# serves from its in-memory cache. Reports requests/s of each and the ratio edge/nginx.
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

cargo build --release -q -p sharegate-e2e --example bench_edge_server
target/release/examples/bench_edge_server --origin "$WORK/www" --addr "127.0.0.1:$EDGE_PORT" \
    --token-file "$WORK/token" 2>"$WORK/edge.log" &
PIDS+=($!)

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

rps() { wrk -t1 -c"$CONNS" -d"${DURATION}s" "$1" | awk '/Requests\/sec/ {print $2}'; }
EDGE=()
NGINX=()
for r in $(seq 1 "$ROUNDS"); do
    NGINX+=("$(rps "$NGINX_URL")")
    EDGE+=("$(rps "$EDGE_URL")")
    echo "round $r: nginx ${NGINX[-1]} req/s, edge ${EDGE[-1]} req/s"
done
best() { printf '%s\n' "$@" | sort -g | tail -n1; }
B_EDGE=$(best "${EDGE[@]}")
B_NGINX=$(best "${NGINX[@]}")
printf '\n%-28s %12s\n' "server (100 KB segment)" "req/s (best)"
printf '%-28s %12.0f\n' "nginx secure_link" "$B_NGINX" "sharegate native edge" "$B_EDGE"
awk -v e="$B_EDGE" -v n="$B_NGINX" 'BEGIN { printf "ratio edge/nginx: %.2f\n", e / n }'
