#!/usr/bin/env bash
# Offline check of deploy/kubernetes: no cluster, no helm. Run from anywhere: `bash deploy/kubernetes/check.sh`
# (tests/tests/deploy_kubernetes.rs runs it).
#
#  1. components/monitoring/prometheusrule.yaml is what gen-prometheusrule.sh makes of the project's rules;
#  2. every committed kustomization builds as a user would build it (`kubectl kustomize <dir>`), and the renders
#     equal the ones committed under testdata/renders/ (SHAREGATE_K8S_UPDATE=1 rewrites them). kubectl is not in
#     Debian's archive nor on every machine: without it, steps 3 and 4 run on the committed renders and the script
#     says so (the drift check needs kubectl; run it where kubectl is, before committing a manifest change);
#  3. the renders base, edge, ha, ha+monitoring, ha+redis-ca, edge-daemonset and full (ha, edge-daemonset and
#     monitoring together), each with the example Secrets and CA (secret.example.yaml, redis-ca.example.yaml) added
#     in a temporary copy (nothing secret is committed), are valid against the Kubernetes $K8S_VERSION JSON schemas
#     (kubernetes-validate, strict: unknown fields are errors). Its schemas lack the Prometheus Operator's
#     ServiceMonitor and PrometheusRule; those two kinds alone may be skipped, and policy_check.py checks them;
#  4. policy_check.py passes every render (hardening, probes, resources, budgets, references; --ha for the HA
#     ones; --closed for full), the DaemonSet's pod template is the Deployment's, and the policy check's self-test
#     still finds every fault in testdata/bad.yaml.
#
# kubernetes-validate (pinned below) is installed with pip into target/kubernetes-validate-venv once and reused.
# A missing prerequisite (python3 with venv, PyPI unreachable) exits 77 with a line saying what is missing; anything
# else that fails exits 1.
#
# Environment: K8S_VERSION (default 1.31.0); SHAREGATE_IMAGE (when set, the image every container must run);
# SHAREGATE_K8S_RENDERS (where the renders are left; default target/kubernetes-renders).
set -Eeuo pipefail
# Nothing fails silently: a command that stops the script says which one.
trap 'printf "[check.sh] FAILED at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

KUBERNETES_VALIDATE_VERSION=1.37.0
K8S_VERSION=${K8S_VERSION:-1.31.0}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=$root/target/kubernetes-validate-venv
out=${SHAREGATE_K8S_RENDERS:-$root/target/kubernetes-renders}

say() { printf '[check.sh] %s\n' "$*"; }
missing() {
    printf '[check.sh] MISSING PREREQUISITE: %s\n' "$*" >&2
    exit 77
}
fail() {
    printf '[check.sh] FAILED: %s\n' "$*" >&2
    exit 1
}

have_kubectl=
command -v kubectl >/dev/null && have_kubectl=1
committed=$here/testdata/renders
command -v python3 >/dev/null ||
    missing "python3 (for kubernetes-validate and policy_check.py): apt-get install python3 python3-venv"

# --- kubernetes-validate, pinned, in a venv under target/ (one install at a time) ----------------------------------
mkdir -p "$root/target"
installed_version() {
    "$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null ||
        true
}
exec 9>"$root/target/kubernetes-validate-venv.lock"
command -v flock >/dev/null && flock 9
if [[ $(installed_version) != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    say "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 || missing "the python3 venv module: apt-get install python3-venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2 ||
        missing "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI (no network or no PyPI mirror?)"
fi
flock -u 9 2>/dev/null || true
py=$venv/bin/python
validate=$venv/bin/kubernetes-validate
# sed, not head: head would stop reading early, and with pipefail kubectl's SIGPIPE would end the script.
kubectl_version=none
[[ -n $have_kubectl ]] && kubectl_version=$(kubectl version --client 2>/dev/null | sed -n '1s/^Client Version: //p' || true)
say "kubectl ${kubectl_version:-?}, kubernetes-validate $(installed_version), schemas of Kubernetes $K8S_VERSION"

# --- 1. the PrometheusRule is generated from the rules file ---------------------------------------------------------
bash "$here/gen-prometheusrule.sh" --check || fail "components/monitoring/prometheusrule.yaml has drifted"

# --- 2. the committed kustomizations build on their own ------------------------------------------------------------
mkdir -p "$out"
rm -f "$out"/*.yaml
if [[ -n $have_kubectl ]]; then
    for dir in base edge overlays/ha overlays/edge-daemonset; do
        kubectl kustomize "$here/$dir" >/dev/null || fail "kubectl kustomize deploy/kubernetes/$dir"
    done
    say "kubectl kustomize builds base, edge, overlays/ha, overlays/edge-daemonset"
fi

# --- 3. + 4. renders with the example Secrets: schemas, then policy ------------------------------------------------
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here" "$work/tree"

# render NAME NAMESPACE "RESOURCE_DIR..." [COMPONENT_DIR...]: the resources plus components, with the example
# Secrets, rendered from a kustomization in the temporary copy.
render() {
    local name=$1 namespace=$2 resources=$3 r
    shift 3
    local dir=$work/tree/renders/$name
    mkdir -p "$dir"
    cp "$here/secret.example.yaml" "$dir/secrets.yaml"
    cp "$here/redis-ca.example.yaml" "$dir/redis-ca.yaml"
    {
        echo "apiVersion: kustomize.config.k8s.io/v1beta1"
        echo "kind: Kustomization"
        [[ -n $namespace ]] && echo "namespace: $namespace"
        echo "resources:"
        for r in $resources; do echo "  - ../../$r"; done
        echo "  - secrets.yaml"
        [[ " $* " == *" components/redis-ca "* ]] && echo "  - redis-ca.yaml"
        if [[ $# -gt 0 ]]; then
            echo "components:"
            for c in "$@"; do echo "  - ../../$c"; done
        fi
    } >"$dir/kustomization.yaml"
    kubectl kustomize "$dir" >"$out/$name.yaml" || fail "render $name"
}

if [[ -n $have_kubectl ]]; then
    render base "" base
    render edge "" edge
    render ha sharegate overlays/ha
    render ha-monitoring sharegate overlays/ha components/monitoring
    render ha-redis-ca sharegate overlays/ha components/redis-ca
    render edge-daemonset sharegate overlays/edge-daemonset
    # Everything in one namespace, as README.md's example overlay: the edges' URLs must name the control plane's
    # Service.
    render full sharegate "overlays/ha overlays/edge-daemonset" components/monitoring
    if [[ ${SHAREGATE_K8S_UPDATE:-} == 1 ]]; then
        mkdir -p "$committed"
        rm -f "$committed"/*.yaml
        cp "$out"/*.yaml "$committed/"
        say "rewrote testdata/renders/ from this render"
    fi
    diff -r "$committed" "$out" >&2 ||
        fail "the renders differ from testdata/renders/: after a manifest change, run SHAREGATE_K8S_UPDATE=1 bash deploy/kubernetes/check.sh and commit testdata/renders/"
    say "renders equal the committed testdata/renders/"
else
    say "NOTE: no kubectl here: the kustomizations are not rendered; validating the committed testdata/renders/" \
        "(their drift from the manifests is checked wherever kubectl is installed)"
    cp "$committed"/*.yaml "$out/"
fi

# kubernetes-validate prints one line per document: only kinds it has no schema for may be skipped, and only the
# two custom resources policy_check.py checks instead.
schema_check() {
    local file=$1 log
    log=$("$validate" --strict -k "$K8S_VERSION" "$file" 2>&1) || {
        printf '%s\n' "$log" >&2
        fail "kubernetes-validate: $file"
    }
    local unexpected
    local crd="Couldn't find schema for kind \(ServiceMonitor\|PrometheusRule\)"
    crd+=" with api version monitoring.coreos.com/v1 "
    unexpected=$(printf '%s\n' "$log" | grep -v '^INFO ' | grep -v "$crd" || true)
    if [[ -n $unexpected ]]; then
        printf '%s\n' "$unexpected" >&2
        fail "kubernetes-validate warned about $file"
    fi
    local n skipped
    n=$(printf '%s\n' "$log" | grep -c '^INFO .* passed for resource ' || true)
    skipped=$(printf '%s\n' "$log" | grep -c "Couldn't find schema" || true)
    local note=""
    [[ $skipped -gt 0 ]] && note=", $skipped custom resource(s) left to the policy check"
    say "schemas: $(basename "$file"): $n object(s) valid$note"
}

for f in "$out"/*.yaml; do schema_check "$f"; done
schema_check "$here/secret.example.yaml"
schema_check "$here/redis-ca.example.yaml"
# The self-test's manifest is schema-valid on purpose: its faults are the ones only the policy check can see.
schema_check "$here/testdata/bad.yaml"

image_flag=()
[[ -n ${SHAREGATE_IMAGE:-} ]] && image_flag=(--expect-image "$SHAREGATE_IMAGE")
rules=$root/deploy/prometheus/sharegate-rules.yml
policy() { "$py" "$here/policy_check.py" "${image_flag[@]}" "$@" || fail "policy check: $*"; }
policy "$out/base.yaml"
policy "$out/edge.yaml"
policy --ha "$out/ha.yaml"
policy --ha --rules "$rules" "$out/ha-monitoring.yaml"
policy --ha "$out/ha-redis-ca.yaml"
policy "$out/edge-daemonset.yaml"
policy --ha --closed --rules "$rules" "$out/full.yaml"
"$py" "$here/policy_check.py" --same-pod-template "$out/edge.yaml:Deployment/sharegate-edge" \
    "$out/edge-daemonset.yaml:DaemonSet/sharegate-edge" ||
    fail "overlays/edge-daemonset/daemonset.yaml and edge/deployment.yaml have different pod templates"
"$py" "$here/policy_check.py" --self-test || fail "policy_check.py --self-test"

say "ok: renders in $out/"
