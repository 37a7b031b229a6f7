#!/usr/bin/env bash
# Local base images for the container tests, made from Debian packages, because CI reaches no image registry:
#
#   localhost/sharegate-test/builder     Debian bookworm + build-essential, ca-certificates, pkg-config. The Rust
#                                        toolchain is NOT inside: `image` mounts the host's (rust-toolchain.toml's
#                                        1.95.0) at /usr/local/rust, and the host's cargo registry, so
#                                        an image build downloads nothing.
#   localhost/sharegate-test/runtime     distroless-like: libc6, libgcc-s1, the CA bundle, base-files, netbase,
#                                        /etc/passwd with nonroot (65532), /tmp; no shell, no package manager.
#   localhost/sharegate-test/redis       Debian's redis-server (stands in for docker.io/library/redis).
#   localhost/sharegate-test/prometheus  Debian's prometheus, with wget for its health check (stands in for
#                                        docker.io/prom/prometheus).
#
# Each is tagged with BASES_VERSION and skipped when that tag exists, so a rerun takes a second. Bump BASES_VERSION
# when a recipe changes.
#
# Usage:
#   bash scripts/container-bases.sh                 make the bases; print BUILDER_IMAGE=, RUNTIME_IMAGE=,
#                                                   REDIS_IMAGE=, PROMETHEUS_IMAGE= and CONTAINERS_CONF= lines
#   bash scripts/container-bases.sh image [TAG]     also build deploy/Containerfile on them (default tag
#                                                   localhost/sharegate-test/sharegate:dev); print SHAREGATE_IMAGE=
#
# Logs go to stderr; stdout carries only the KEY=VALUE lines (the tests read them). Needs root (mmdebstrap, rootful
# podman), mmdebstrap, podman and a Debian mirror (SHAREGATE_DEBIAN_MIRROR, default deb.debian.org).
#
# Podman on these machines: runc, not crun (crun fails on hybrid cgroups), cgroupfs (no systemd), and no default
# ulimits. Unless CONTAINERS_CONF is already set, a containers.conf saying so is written under
# $SHAREGATE_CONTAINERS_DIR (default target/containers) and exported; use the printed CONTAINERS_CONF= for your own
# podman and podman-compose commands on such a machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASES_VERSION=1
SUITE=bookworm
MIRROR=${SHAREGATE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SHAREGATE_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
WORK=${SHAREGATE_CONTAINERS_DIR:-$ROOT/target/containers}
PREFIX=localhost/sharegate-test
TAG=$SUITE-$BASES_VERSION

BUILDER_IMAGE=$PREFIX/builder:$TAG
RUNTIME_IMAGE=$PREFIX/runtime:$TAG
REDIS_IMAGE=$PREFIX/redis:$TAG
PROMETHEUS_IMAGE=$PREFIX/prometheus:$TAG

log() { printf '[container-bases] %s\n' "$*" >&2; }
die() {
    printf '[container-bases] error: %s\n' "$*" >&2
    exit 1
}

sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" "deb $SECURITY_MIRROR $SUITE-security main")
# Smaller images; nothing at run time reads these.
slim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
    --aptopt='Acquire::Retries "3"')

# mmdebstrap SUITE-args... | podman import: a root file system as a one-layer image with `changes` (Containerfile
# instructions: ENV, USER, ENTRYPOINT, ...).
import_tar() {
    local image=$1 tar=$2
    shift 2
    local changes=() c
    for c in "$@"; do changes+=(--change "$c"); done
    podman import --quiet "${changes[@]}" "$tar" "$image" >/dev/null
    [[ -n ${KEEP_TAR:-} ]] || rm -f "$tar"
    log "$image made in $((SECONDS - MAKE_START)) s"
}

have() { podman image exists "$1"; }

# begin IMAGE WHAT: say what is being made, and start its clock (import_tar reports the time).
MAKE_START=0
begin() {
    log "making $1 ($2)"
    MAKE_START=$SECONDS
}

make_builder() {
    have "$BUILDER_IMAGE" && { log "$BUILDER_IMAGE present"; return 0; }
    begin "$BUILDER_IMAGE" "mmdebstrap: build-essential"
    mmdebstrap --quiet --variant=apt --include=build-essential,ca-certificates,pkg-config "${slim[@]}" \
        "$SUITE" "$WORK/builder.tar" "${sources[@]}"
    # The official rust image's layout: RUSTUP_HOME, CARGO_HOME and PATH. /usr/local/rust/bin is where the host's
    # toolchain is mounted (see `image`); an image that installs its own toolchain under /usr/local/cargo/bin
    # would be found first.
    import_tar "$BUILDER_IMAGE" "$WORK/builder.tar" \
        'ENV RUSTUP_HOME=/usr/local/rustup' 'ENV CARGO_HOME=/usr/local/cargo' \
        'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'CMD ["/bin/bash"]'
}

# Distroless-like, built the way distroless is: the chosen packages' files alone (dpkg-deb -x), no maintainer
# scripts, no dependencies pulled in (ca-certificates would bring openssl, debconf and mawk). mmdebstrap only
# resolves and downloads them from the signed archive.
make_runtime() {
    have "$RUNTIME_IMAGE" && { log "$RUNTIME_IMAGE present"; return 0; }
    begin "$RUNTIME_IMAGE" "libc6, libgcc-s1, CA bundle; no shell"
    local stage=$WORK/runtime-stage root=$WORK/runtime-root deb pkg
    rm -rf "$stage" "$root"
    mmdebstrap --quiet --variant=extract --include=base-files,libc6,libgcc-s1,gcc-12-base,netbase,ca-certificates \
        --skip=cleanup/apt/cache "$SUITE" "$stage" "${sources[@]}"
    mkdir -p "$root"
    for pkg in base-files libc6 libgcc-s1 gcc-12-base netbase ca-certificates; do
        deb=$(find "$stage/var/cache/apt/archives" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
        [[ -n $deb ]] || die "mmdebstrap did not download $pkg"
        dpkg-deb -x "$deb" "$root"
    done
    rm -rf "$stage"
    # What update-ca-certificates would write (ca-certificates' postinst, which extraction does not run).
    mkdir -p "$root/etc/ssl/certs"
    cat "$root"/usr/share/ca-certificates/mozilla/*.crt >"$root/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$root"/usr/share/{doc,man,info,locale,lintian,ca-certificates} "$root"/usr/sbin "$root"/etc/ca-certificates* \
        "$root"/usr/lib/x86_64-linux-gnu/gconv "$root"/etc/update-motd.d "$root"/etc/profile.d
    cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
EOF
    install -d -m 0700 "$root/root"
    install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
    install -d -m 1777 "$root/tmp"
    install -d -m 0755 "$root/var/lib" "$root/run"
    # What distroless promises: no shell, no interpreter.
    local found
    found=$(find "$root" \( -name sh -o -name bash -o -name dash -o -name busybox -o -name 'perl*' -o -name 'python*' \
        -o -name mawk -o -name awk \) -print | head -n3)
    [[ -z $found ]] || die "the runtime base holds $found"
    tar -C "$root" --numeric-owner -cf "$WORK/runtime.tar" .
    rm -rf "$root"
    import_tar "$RUNTIME_IMAGE" "$WORK/runtime.tar" \
        'ENV PATH=/usr/local/bin:/usr/bin:/bin' 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        'USER 65532:65532' 'WORKDIR /home/nonroot'
}

# Redis and Prometheus share one root file system (one bootstrap instead of two; podman stores the layer once), as
# two images that differ in user, entry point and command: the official images' interfaces.
make_services() {
    have "$REDIS_IMAGE" && have "$PROMETHEUS_IMAGE" && {
        log "$REDIS_IMAGE and $PROMETHEUS_IMAGE present"
        return 0
    }
    begin "$REDIS_IMAGE and $PROMETHEUS_IMAGE" "Debian redis-server, prometheus"
    # /data and /prometheus as in the official images, owned by the users the images run as; wget for Prometheus'
    # health check, as busybox gives the official image. The JavaScript of Debian's classic Prometheus web UI is
    # 220 MB (libjs-*); the API and the rules need none of it.
    mmdebstrap --quiet --variant=essential --include=redis-server,prometheus,wget,ca-certificates "${slim[@]}" \
        --dpkgopt='path-exclude=/usr/share/javascript/*' --dpkgopt='path-exclude=/usr/share/nodejs/*' \
        --customize-hook='chroot "$1" install -d -o redis -g redis -m 0750 /data' \
        --customize-hook='chroot "$1" install -d -o prometheus -g prometheus /prometheus' \
        "$SUITE" "$WORK/services.tar" "${sources[@]}"
    local path='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    KEEP_TAR=1 import_tar "$REDIS_IMAGE" "$WORK/services.tar" "$path" 'USER redis' 'WORKDIR /data' 'VOLUME /data' \
        'EXPOSE 6379' 'CMD ["redis-server", "--protected-mode", "no"]'
    import_tar "$PROMETHEUS_IMAGE" "$WORK/services.tar" "$path" 'USER prometheus' 'WORKDIR /prometheus' \
        'VOLUME /prometheus' 'EXPOSE 9090' 'ENTRYPOINT ["/usr/bin/prometheus"]' \
        'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

# Build deploy/Containerfile on the local bases. The host's toolchain and cargo registry are mounted, and cargo runs
# offline: the host has already fetched every crate of Cargo.lock (it builds the workspace). Layers are cached, so a
# rebuild after a source change compiles only the workspace's own crates.
build_image() {
    local tag=$1 sysroot registry version revision jobs=()
    sysroot=$(cd "$ROOT" && realpath "$(rustc --print sysroot)")
    [[ -x $sysroot/bin/cargo ]] || die "no cargo in the host toolchain $sysroot"
    registry=${CARGO_HOME:-$HOME/.cargo}/registry
    [[ -d $registry ]] || die "no cargo registry at $registry: run a cargo build on the host first"
    if ! (cd "$ROOT" && { cargo fetch --locked --offline --quiet 2>/dev/null || cargo fetch --locked --quiet; }); then
        die "cargo fetch --locked failed: the image build runs offline and needs every crate of Cargo.lock"
    fi
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -n1)
    revision=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
    [[ -n ${CARGO_BUILD_JOBS:-} ]] && jobs=(--build-arg "CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS")
    log "building $tag from deploy/Containerfile (toolchain $sysroot, registry $registry)"
    # nice: the release build takes both cores for minutes; tests running beside it keep their timing.
    (cd "$ROOT" && nice -n 10 podman build --layers -f deploy/Containerfile \
        --build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE" \
        --build-arg "VERSION=$version" --build-arg "REVISION=$revision" "${jobs[@]}" \
        --volume "$sysroot:/usr/local/rust:ro" \
        --volume "$registry:/host-cargo/registry" --build-arg CARGO_HOME_MOUNT=/host-cargo \
        --build-arg CARGO_NET_OFFLINE=true \
        --network=none -t "$tag" . >&2)
}

main() {
    [[ $(id -u) -eq 0 ]] || die "run as root: mmdebstrap and rootful podman need it"
    local cmd
    for cmd in podman mmdebstrap dpkg-deb; do
        command -v "$cmd" >/dev/null || die "$cmd not found (apt-get install podman runc mmdebstrap)"
    done
    mkdir -p "$WORK"
    if [[ -z ${CONTAINERS_CONF:-} ]]; then
        printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' \
            >"$WORK/containers.conf"
        export CONTAINERS_CONF=$WORK/containers.conf
    fi
    # One maker at a time (tests run in parallel): the second waits, then finds everything made.
    exec 9>"$WORK/lock"
    flock 9
    make_builder
    make_runtime
    make_services
    printf 'BUILDER_IMAGE=%s\nRUNTIME_IMAGE=%s\nREDIS_IMAGE=%s\nPROMETHEUS_IMAGE=%s\nCONTAINERS_CONF=%s\n' \
        "$BUILDER_IMAGE" "$RUNTIME_IMAGE" "$REDIS_IMAGE" "$PROMETHEUS_IMAGE" "$CONTAINERS_CONF"
    case ${1:-} in
    '') ;;
    image)
        local tag=${2:-$PREFIX/sharegate:dev}
        build_image "$tag"
        printf 'SHAREGATE_IMAGE=%s\n' "$tag"
        ;;
    *) die "usage: $0 [image [TAG]]" ;;
    esac
}

main "$@"
