#!/usr/bin/env python3
"""Policy check of rendered Kubernetes manifests (kubectl kustomize output), run by check.sh.

The JSON schemas (kubernetes-validate) say whether each object is well formed; this says whether the objects are
what sharegate promises and whether they fit together, which no schema can:

- every workload (Deployment, DaemonSet, StatefulSet) runs every container, init containers included, as a
  non-root user with a read-only root filesystem, no privilege escalation, every capability dropped and a
  RuntimeDefault seccomp profile; with cpu and memory requests and limits; from a pinned image (never `latest`);
  every long-running container has a liveness and a readiness probe;
- no Service links (they would put `SHAREGATE_*` variables into the environment sharegate reads), no service
  account token, no host namespaces or host paths;
- a PodDisruptionBudget selects every workload, in a form its controller supports, and lets a drain proceed;
- what the pods name exists in the same render: ConfigMaps, Secrets and the keys mounted from them, the files
  `<NAME>_FILE` variables point at, volumes, named ports, the service account; every Service selects a workload
  and targets one of its ports; a setting's URL naming a Service of the cluster names one of its ports (with
  --closed: a Service of the render);
- the custom resources (ServiceMonitor, PrometheusRule, not in the JSON schemas) hold what the Prometheus Operator
  needs, and the PrometheusRule's groups are exactly deploy/prometheus/sharegate-rules.yml's;
- with --ha: at least 3 replicas, required anti-affinity across nodes, a PodDisruptionBudget keeping 2.

Usage:
  policy_check.py [--ha] [--closed] [--rules RULES.yml] [--expect-image IMAGE] RENDER.yaml
  policy_check.py --same-pod-template A.yaml:Kind/name B.yaml:Kind/name
  policy_check.py --self-test      (testdata/bad.yaml, checked with --ha --closed and the project's rules, must
                                    give exactly the findings in testdata/bad.expected)

Exit 0 with a summary when nothing is found, 1 with one line per finding. Needs PyYAML.
"""

import argparse
import copy
import difflib
import os
import sys
import urllib.parse

import yaml

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet")
HOSTNAME = "kubernetes.io/hostname"


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def ident(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def ns_of(obj):
    return obj.get("metadata", {}).get("namespace", "")


def selects(selector, labels):
    """Does a LabelSelector match these labels? (An empty selector matches everything, as in the API.)"""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


class Render:
    """One render: its objects, indexed for the cross-reference checks."""

    def __init__(self, docs):
        self.docs = docs
        self.by = {(d.get("kind"), ns_of(d), d.get("metadata", {}).get("name")): d for d in docs}

    def of_kind(self, *kinds):
        return [d for d in self.docs if d.get("kind") in kinds]

    def get(self, kind, ns, name):
        return self.by.get((kind, ns, name))


def template_labels(workload):
    return (((workload.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def secret_keys(secret):
    return set((secret.get("data") or {}).keys()) | set((secret.get("stringData") or {}).keys())


class Checker:
    def __init__(self, render, ha=False, rules=None, expect_image=None, closed=False):
        self.r = render
        self.ha = ha
        self.closed = closed
        self.rules = rules
        self.expect_image = expect_image
        self.findings = []

    def find(self, where, what):
        self.findings.append(f"{where}: {what}")

    # -- workloads -------------------------------------------------------------------------------------------------

    def check_workload(self, w):
        wid = ident(w)
        ns = ns_of(w)
        spec = w.get("spec") or {}
        labels = template_labels(w)
        pod = (spec.get("template") or {}).get("spec") or {}
        psc = pod.get("securityContext") or {}

        if pod.get("enableServiceLinks") is not False:
            self.find(wid, "enableServiceLinks is not false (Service links add SHAREGATE_* variables)")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(host):
                self.find(wid, f"{host} is true")
        sa_name = pod.get("serviceAccountName") or "default"
        sa = self.r.get("ServiceAccount", ns, sa_name)
        if sa_name != "default" and sa is None:
            self.find(wid, f"service account {sa_name} is not in the render (the pods would never be created)")
        if pod.get("automountServiceAccountToken") is not False and not (
            pod.get("automountServiceAccountToken") is None and sa and sa.get("automountServiceAccountToken") is False
        ):
            self.find(wid, "a service account token is mounted (automountServiceAccountToken is not false)")

        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for name, v in volumes.items():
            if "hostPath" in v:
                self.find(wid, f"volume {name} is a hostPath")
        provided = self.check_volumes(wid, ns, volumes)

        inits = pod.get("initContainers") or []
        mains = pod.get("containers") or []
        if not mains:
            self.find(wid, "no containers")
        for c, long_running in [(c, c.get("restartPolicy") == "Always") for c in inits] + [(c, True) for c in mains]:
            self.check_container(wid, ns, c, psc, volumes, provided, long_running)

        self.check_pdb(w, wid, ns, labels, spec)
        if self.ha and w.get("kind") != "DaemonSet":
            self.check_ha(w, wid, labels, pod)

    def check_volumes(self, wid, ns, volumes):
        """Which files each volume provides ({volume: set of relative paths} or None for 'any'); reports volumes
        whose ConfigMap or Secret is not in the render, or whose items name keys it lacks."""
        provided = {}
        for name, v in volumes.items():
            sources = []
            if "secret" in v:
                sources.append(("Secret", v["secret"].get("secretName"), v["secret"]))
            if "configMap" in v:
                sources.append(("ConfigMap", v["configMap"].get("name"), v["configMap"]))
            for p in (v.get("projected") or {}).get("sources") or []:
                if "secret" in p:
                    sources.append(("Secret", p["secret"].get("name"), p["secret"]))
                if "configMap" in p:
                    sources.append(("ConfigMap", p["configMap"].get("name"), p["configMap"]))
            if not sources:
                # An emptyDir starts empty; other kinds (a PVC, a CSI volume) may hold anything.
                provided[name] = set() if "emptyDir" in v else None
                continue
            files = set()
            for kind, obj_name, src in sources:
                obj = self.r.get(kind, ns, obj_name)
                if obj is None:
                    if not src.get("optional"):
                        self.find(wid, f"volume {name}: {kind} {obj_name} is not in the render")
                    continue
                keys = secret_keys(obj) if kind == "Secret" else set((obj.get("data") or {}).keys())
                if src.get("items"):
                    for it in src["items"]:
                        if it.get("key") not in keys:
                            self.find(wid, f"volume {name}: {kind} {obj_name} has no key {it.get('key')}")
                        files.add(it.get("path"))
                else:
                    files |= keys
            provided[name] = files
        return provided

    def check_container(self, wid, ns, c, psc, volumes, provided, long_running):
        where = f"{wid} container {c.get('name')}"
        sc = c.get("securityContext") or {}

        def eff(key):
            return sc[key] if key in sc else psc.get(key)

        if eff("runAsNonRoot") is not True:
            self.find(where, "runAsNonRoot is not true")
        if not eff("runAsUser"):
            self.find(where, "runAsUser is not set to a non-zero uid")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.find(where, "readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            self.find(where, "allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            self.find(where, "privileged is true")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            self.find(where, "capabilities do not drop ALL")
        if caps.get("add"):
            self.find(where, f"capabilities add {', '.join(caps['add'])}")
        seccomp = (eff("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            self.find(where, "seccompProfile is not RuntimeDefault")

        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    self.find(where, f"no {r} {kind[:-1]}")

        image = c.get("image") or ""
        last = image.rsplit("/", 1)[-1]
        if "@" not in last and (":" not in last or last.endswith(":latest")):
            self.find(where, f"image {image or '(none)'} is not pinned (no tag, or latest)")
        elif self.expect_image and image != self.expect_image:
            self.find(where, f"image {image} is not {self.expect_image}")

        ports = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            p = c.get(probe)
            if p is None:
                if long_running and probe != "startupProbe":
                    self.find(where, f"no {probe}")
                continue
            port = (p.get("httpGet") or p.get("tcpSocket") or p.get("grpc") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                self.find(where, f"{probe} names port {port}, which the container does not declare")

        mounts = {}
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                self.find(where, f"mounts volume {m.get('name')}, which the pod does not declare")
            mounts[m.get("mountPath", "").rstrip("/")] = m.get("name")

        settings = {}
        for ef in c.get("envFrom") or []:
            for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                ref = ef.get(key)
                obj = self.r.get(kind, ns, ref.get("name")) if ref else None
                if ref and obj is None and not ref.get("optional"):
                    self.find(where, f"envFrom {kind} {ref.get('name')} is not in the render")
                if obj is not None and kind == "ConfigMap":
                    settings.update(obj.get("data") or {})
        settings.update({e["name"]: e["value"] for e in c.get("env") or [] if isinstance(e.get("value"), str)})
        for name, value in sorted(settings.items()):
            self.check_urls(where, ns, name, value)
        for e in c.get("env") or []:
            vf = e.get("valueFrom") or {}
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = vf.get(key)
                if not ref or ref.get("optional"):
                    continue
                obj = self.r.get(kind, ns, ref.get("name"))
                if obj is None:
                    self.find(where, f"env {e.get('name')}: {kind} {ref.get('name')} is not in the render")
                elif ref.get("key") not in (secret_keys(obj) if kind == "Secret" else (obj.get("data") or {})):
                    self.find(where, f"env {e.get('name')}: {kind} {ref.get('name')} has no key {ref.get('key')}")
            # The <NAME>_FILE convention: the file must be one a mounted volume provides.
            name, value = e.get("name", ""), e.get("value")
            if name.endswith("_FILE") and isinstance(value, str) and value.startswith("/"):
                if not self.file_provided(value, mounts, provided):
                    self.find(where, f"{name} names {value}, which no mounted volume provides")

    def check_urls(self, where, ns, name, value):
        """A setting's http(s) URLs that name a Service of the cluster (`name`, `name.ns.svc[.cluster.local]`) must
        name one of its ports; with --closed the Service must be in the render."""
        for url in value.split(","):
            u = urllib.parse.urlsplit(url.strip())
            if u.scheme not in ("http", "https") or not u.hostname:
                continue
            parts = u.hostname.split(".")
            if len(parts) == 1:
                svc, svc_ns = parts[0], ns
            elif len(parts) >= 3 and parts[2] == "svc" and parts[3:] in ([], ["cluster", "local"]):
                svc, svc_ns = parts[0], parts[1]
            else:
                continue  # outside the cluster
            port = u.port or (443 if u.scheme == "https" else 80)
            service = self.r.get("Service", svc_ns, svc)
            if service is None:
                if self.closed:
                    self.find(where, f"{name} names {url.strip()}, but Service {svc} is not in the render")
            elif port not in [p.get("port") for p in (service.get("spec") or {}).get("ports") or []]:
                self.find(where, f"{name} names {url.strip()}, but Service {svc} has no port {port}")

    @staticmethod
    def file_provided(path, mounts, provided):
        for mount_path, vol in mounts.items():
            if path.startswith(mount_path + "/"):
                files = provided.get(vol)
                rel = path[len(mount_path) + 1 :]
                return files is None or rel in files
        return False

    def check_pdb(self, w, wid, ns, labels, spec):
        pdbs = [
            p
            for p in self.r.of_kind("PodDisruptionBudget")
            if ns_of(p) == ns and selects(p["spec"].get("selector"), labels)
        ]
        if not pdbs:
            self.find(wid, "no PodDisruptionBudget selects its pods")
            return
        for p in pdbs:
            ps = p.get("spec") or {}
            pid = ident(p)
            if w.get("kind") == "DaemonSet":
                # Without a scale subresource only an integer minAvailable works (the disruption controller says so).
                if "maxUnavailable" in ps or not isinstance(ps.get("minAvailable"), int):
                    self.find(wid, f"{pid} must use an integer minAvailable for DaemonSet pods")
                continue
            replicas = spec.get("replicas", 1)
            if isinstance(ps.get("minAvailable"), int) and ps["minAvailable"] >= replicas:
                self.find(wid, f"{pid} minAvailable {ps['minAvailable']} >= {replicas} replicas blocks every eviction")
            if ps.get("maxUnavailable") in (0, "0%"):
                self.find(wid, f"{pid} maxUnavailable 0 blocks every eviction")
            if self.ha and isinstance(ps.get("minAvailable"), int) and ps["minAvailable"] < 2:
                self.find(wid, f"{pid} minAvailable {ps['minAvailable']} < 2 in the HA render")

    def check_ha(self, w, wid, labels, pod):
        replicas = (w.get("spec") or {}).get("replicas", 1)
        if replicas < 3:
            self.find(wid, f"{replicas} replicas, fewer than 3 in the HA render")
        terms = (((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or [])
        if not any(t.get("topologyKey") == HOSTNAME and selects(t.get("labelSelector"), labels) for t in terms):
            self.find(wid, f"no required podAntiAffinity on {HOSTNAME} selecting its own pods in the HA render")

    # -- services and custom resources -----------------------------------------------------------------------------

    def check_service(self, s):
        sid = ident(s)
        spec = s.get("spec") or {}
        sel = spec.get("selector")
        if not sel:
            return  # headless or external: nothing to match
        targets = [
            w
            for w in self.r.of_kind(*WORKLOADS)
            if ns_of(w) == ns_of(s) and selects({"matchLabels": sel}, template_labels(w))
        ]
        if not targets:
            self.find(sid, "selects no workload in the render")
            return
        for port in spec.get("ports") or []:
            tp = port.get("targetPort", port.get("port"))
            for w in targets:
                containers = w["spec"]["template"]["spec"].get("containers") or []
                cports = [p for c in containers for p in c.get("ports") or []]
                if not any(p.get("name") == tp or p.get("containerPort") == tp for p in cports):
                    self.find(sid, f"port {port.get('name')} targets {tp}, which {ident(w)} does not declare")

    def check_service_monitor(self, m):
        mid = ident(m)
        spec = m.get("spec") or {}
        services = [s for s in self.r.of_kind("Service") if ns_of(s) == ns_of(m) and
                    selects(spec.get("selector"), s.get("metadata", {}).get("labels") or {})]
        if not services:
            self.find(mid, "selects no Service in the render")
        endpoints = spec.get("endpoints") or []
        if not endpoints:
            self.find(mid, "no endpoints")
        for i, ep in enumerate(endpoints):
            where = f"{mid} endpoint {i}"
            if not any(ep.get("port") == p.get("name") for s in services for p in s["spec"].get("ports") or []):
                self.find(where, f"port {ep.get('port')} is not a named port of the Services it selects")
            if ep.get("path") != "/metrics":
                self.find(where, f"path is {ep.get('path')}, not /metrics")
            auth = ep.get("authorization") or {}
            ref = auth.get("credentials") or ep.get("bearerTokenSecret")
            if not ref or auth.get("type", "Bearer") != "Bearer":
                self.find(where, "no bearer token (the control plane answers /metrics only with an auditor API key)")
                continue
            secret = self.r.get("Secret", ns_of(m), ref.get("name"))
            if secret is None:
                self.find(where, f"token Secret {ref.get('name')} is not in the render")
            elif ref.get("key") not in secret_keys(secret):
                self.find(where, f"token Secret {ref.get('name')} has no key {ref.get('key')}")

    def check_prometheus_rule(self, p):
        pid = ident(p)
        groups = (p.get("spec") or {}).get("groups")
        if not isinstance(groups, list) or not groups:
            self.find(pid, "spec.groups is empty")
            return
        names = [g.get("name") for g in groups]
        if len(set(names)) != len(names) or None in names:
            self.find(pid, "group names are missing or repeated")
        for g in groups:
            for i, rule in enumerate(g.get("rules") or []):
                kinds = [k for k in ("record", "alert") if k in rule]
                if len(kinds) != 1 or not isinstance(rule.get("expr"), str):
                    self.find(pid, f"group {g.get('name')} rule {i}: needs exactly one of record/alert and an expr")
        if self.rules is not None and groups != self.rules:
            self.find(pid, "spec.groups differ from deploy/prometheus/sharegate-rules.yml (run gen-prometheusrule.sh)")

    # -- all -------------------------------------------------------------------------------------------------------

    def run(self):
        workloads = self.r.of_kind(*WORKLOADS)
        if not workloads:
            self.find("render", "no workloads")
        for w in workloads:
            self.check_workload(w)
        for s in self.r.of_kind("Service"):
            self.check_service(s)
        for d in self.r.docs:
            if (d.get("apiVersion"), d.get("kind")) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
                self.check_service_monitor(d)
            elif (d.get("apiVersion"), d.get("kind")) == ("monitoring.coreos.com/v1", "PrometheusRule"):
                self.check_prometheus_rule(d)
        if self.rules is not None and not self.r.of_kind("PrometheusRule"):
            self.find("render", "no PrometheusRule, though --rules was given")
        return self.findings


def pod_template(path, spec):
    kind, name = spec.split("/", 1)
    for d in load(path):
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            t = copy.deepcopy(d["spec"]["template"])
            # What a DaemonSet needs no part of: one pod per node already.
            t.get("spec", {}).pop("affinity", None)
            t.get("spec", {}).pop("topologySpreadConstraints", None)
            return t
    raise SystemExit(f"policy_check: {path} holds no {spec}")


def same_pod_template(a, b, show_diff=False):
    (pa, sa), (pb, sb) = a.rsplit(":", 1), b.rsplit(":", 1)
    ta, tb = pod_template(pa, sa), pod_template(pb, sb)
    if ta == tb:
        return []
    if show_diff:
        dump = lambda t: yaml.safe_dump(t, sort_keys=True).splitlines()
        for line in difflib.unified_diff(dump(ta), dump(tb), sa, sb, lineterm="", n=2):
            print(line, file=sys.stderr)
    return [f"{sb}: pod template differs from {sa}'s (beyond affinity and topologySpreadConstraints)"]


def check_file(path, ha=False, rules_path=None, expect_image=None, closed=False):
    rules = None
    if rules_path:
        with open(rules_path, encoding="utf-8") as f:
            rules = yaml.safe_load(f)["groups"]
    return Checker(Render(load(path)), ha=ha, rules=rules, expect_image=expect_image, closed=closed).run()


def self_test(here):
    """The check must be able to fail: a manifest with every fault must give exactly the expected findings."""
    bad = os.path.join(here, "testdata", "bad.yaml")
    with open(os.path.join(here, "testdata", "bad.expected"), encoding="utf-8") as f:
        expected = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    rules = os.path.join(here, "..", "prometheus", "sharegate-rules.yml")
    got = check_file(bad, ha=True, rules_path=rules, closed=True)
    got += same_pod_template(f"{bad}:Deployment/bad-edge", f"{bad}:DaemonSet/bad-edge")
    missing = [l for l in expected if l not in got]
    extra = [l for l in got if l not in expected]
    for l in missing:
        print(f"policy self-test: expected, not found: {l}", file=sys.stderr)
    for l in extra:
        print(f"policy self-test: found, not expected: {l}", file=sys.stderr)
    if missing or extra:
        return 1
    print(f"policy self-test: testdata/bad.yaml gives the {len(expected)} expected findings")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("render", nargs="?")
    ap.add_argument("--ha", action="store_true", help="also the HA rules: >=3 replicas, required anti-affinity")
    ap.add_argument("--rules", help="Prometheus rules file the PrometheusRule must carry")
    ap.add_argument("--expect-image", help="the image every container must run")
    ap.add_argument("--closed", action="store_true", help="in-cluster URLs must name Services of this render")
    ap.add_argument("--same-pod-template", nargs=2, metavar="FILE:Kind/name")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    if a.self_test:
        return self_test(here)
    if a.same_pod_template:
        findings = same_pod_template(*a.same_pod_template, show_diff=True)
        label = " and ".join(a.same_pod_template)
    elif a.render:
        findings = check_file(a.render, a.ha, a.rules, a.expect_image, a.closed)
        label = a.render
    else:
        ap.error("a render, --same-pod-template or --self-test")
    for f in findings:
        print(f"policy: {f}", file=sys.stderr)
    if findings:
        print(f"policy: {label}: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print(f"policy: {label}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
