#!/usr/bin/env bash
# The secrets of deploy/compose.yaml, as files (never values in the compose file):
#
#   bash deploy/compose/secrets.sh            make every missing secret; existing ones are kept (new keys would
#                                             orphan the data and the links made with the old ones)
#   bash deploy/compose/secrets.sh auditor    once the stack is up: an auditor API key for Prometheus, made through
#                                             the API with the admin key (Prometheus reads the file at each scrape)
#
# Where: $SHAREGATE_SECRETS, default deploy/compose/secrets/ (gitignored). The directory is 0700 and the files 0644:
# compose mounts each file into the containers, whose users (65532, redis, prometheus) must read it, while no other
# user of this host can reach it through the directory.
#
# Keys come from `sharegate keygen` (64 hex digits from the OS's random source): the `sharegate` on PATH, else the
# image ($SHAREGATE_IMAGE, run with podman or docker). The auditor key comes from `sharegate apikeys` against
# $SHAREGATE_API (default http://127.0.0.1:${SHAREGATE_CP1_PORT:-7700}).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=${SHAREGATE_SECRETS:-$here/secrets}
image=${SHAREGATE_IMAGE:-ghcr.io/sharegate/sharegate:0.1.0}

die() {
    printf 'secrets.sh: %s\n' "$*" >&2
    exit 1
}

# sharegate ARGS...: the host's binary, else the image (host network, so 127.0.0.1 is this host's).
sharegate() {
    local bin
    if bin=$(type -P sharegate); then
        "$bin" "$@"
        return
    fi
    local engine
    engine=$(command -v podman || command -v docker) || die "no sharegate on PATH and neither podman nor docker"
    "$engine" run --rm --network=host ${SHAREGATE_API_KEY:+-e SHAREGATE_API_KEY} "$image" "$@"
}

# put NAME VALUE: write a secret file unless it exists.
put() {
    local file=$dir/$1
    if [[ -s $file ]]; then
        printf 'kept    %s\n' "$file"
        return
    fi
    (umask 022 && printf '%s\n' "$2" >"$file")
    chmod 0644 "$file"
    printf 'created %s\n' "$file"
}

key() {
    local k
    k=$(sharegate keygen)
    [[ $k =~ ^[0-9a-f]{64}$ ]] || die "sharegate keygen printed something else than 64 hex digits"
    printf '%s' "$k"
}

generate() {
    mkdir -p "$dir"
    chmod 0700 "$dir"
    # Each value is made before it is written: a failed keygen stops the script (set -e) instead of writing junk.
    local name value password
    for name in signing_keys state_key edge_token master_key admin_key redis_password; do
        [[ -s $dir/$name ]] && { put "$name" ""; continue; }
        value=$(key)
        # The signing key ring's syntax; the admin key in the API's key format (any 32+ characters would do).
        [[ $name == signing_keys ]] && value="1:active:$value"
        [[ $name == admin_key ]] && value="sg_admin_$value"
        put "$name" "$value"
    done
    password=$(<"$dir/redis_password")
    put store_url "redis://:$password@redis:6379/0"
    # Filled by `secrets.sh auditor` once the API runs; until then Prometheus' scrapes are refused (401).
    [[ -e $dir/auditor_key ]] || { : >"$dir/auditor_key" && chmod 0644 "$dir/auditor_key"; }
}

auditor() {
    [[ -s $dir/admin_key ]] || die "no admin key in $dir: run $0 first"
    local api=${SHAREGATE_API:-http://127.0.0.1:${SHAREGATE_CP1_PORT:-7700}} answer auditor_key
    answer=$(SHAREGATE_API_KEY=$(<"$dir/admin_key") sharegate apikeys --api "$api" --role auditor --label prometheus)
    auditor_key=$(sed -n 's/^ *"key": *"\([^"]*\)".*/\1/p' <<<"$answer")
    [[ -n $auditor_key ]] || die "no key in the API's answer: $answer"
    # Rewrite the file in place (same inode): compose bind-mounted this very file into Prometheus.
    printf '%s\n' "$auditor_key" >"$dir/auditor_key"
    printf 'wrote an auditor key to %s\n' "$dir/auditor_key"
}

case ${1:-generate} in
generate) generate ;;
auditor) auditor ;;
*) die "usage: $0 [generate|auditor]" ;;
esac
