#!/usr/bin/env python3
"""Static checks behind scripts/validate.sh that no registry tool does.

  checks.py k8s RENDER.yaml [--label L] [--version 1.32]   strict schema + cross-references + hygiene
  checks.py budget K8S_RENDER.yaml                          resource requests vs the k3d node (ops/budget.yaml)
  checks.py argocd K8S_RENDER.yaml CRD_DIR                  Application + AppProject vs Argo CD's CRDs (strict) + cross-checks
  checks.py argocd-install INSTALL_RENDER.yaml              argocd/install's patches all landed on the upstream objects
  checks.py ops K8S_RENDER.yaml                             ops/ (Prometheus, Grafana) consistent with manifests + compose
  checks.py compose SCHEMA.json                             docker-compose.yml vs compose-spec + cross-checks
  checks.py exprs OUT_RULES.yml                             dashboard PromQL -> a rules file for promtool

Each prints `FINDING <check>: ...` per problem and one summary line; exit 1 on any finding.
"""
import copy
import json
import os
import re
import sys

import jsonschema
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod")
# Secrets created at deploy time by scripts/deploy.sh, never committed (referenced by the Ingress).
DEPLOY_TIME_SECRETS = {"aside-tls"}
CONTRACT_METRICS = {
    "http_server_request_duration_seconds_bucket", "http_server_request_duration_seconds_count",
    "http_server_request_duration_seconds_sum", "aside_cache_lookups_total", "aside_cache_errors_total",
    "aside_cache_invalidations_total", "aside_db_queries_total", "aside_records_created_total",
}
PROM_BUILTIN = {"up"}
CONTRACT_ENV = {"DATABASE_URL", "REDIS_URL", "CACHE_TTL_SECONDS", "CACHE_ENABLED", "CACHE_TIMEOUT_MS", "BIND_ADDR",
                "API_TOKEN", "SHUTDOWN_DRAIN_SECONDS", "MAX_BODY_BYTES", "LOG_FORMAT", "RUST_LOG"}
# The service's additions to the contract's env table (docs/http-contract.md, README, `aside --help`): /metrics on
# its own listener, the only way a NetworkPolicy (ports, not paths) can limit /metrics to Prometheus; and
# DATABASE_POOLER, for a transaction-pooling PgBouncer in front of Postgres (issue 8); and the standard OTEL_*
# variables of the trace export (issue 9; src/config.rs ENV_HELP lists them for `aside --help`).
OTEL_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_SERVICE_NAME",
            "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_BSP_SCHEDULE_DELAY",
            "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER"}
SERVICE_ENV = CONTRACT_ENV | {"METRICS_BIND_ADDR", "DATABASE_POOLER", "CACHE_KEY_PREFIX"} | OTEL_ENV
# The service refuses to start unless these are whole numbers (Helm renders big numbers as 1.048576e+06).
NUMERIC_ENV = {"CACHE_TTL_SECONDS", "CACHE_TIMEOUT_MS", "SHUTDOWN_DRAIN_SECONDS", "MAX_BODY_BYTES"}


class Report:
    def __init__(self, check):
        self.check, self.findings, self.count = check, [], 0

    def add(self, msg):
        self.findings.append(msg)

    def done(self, what):
        for f in self.findings:
            print(f"FINDING {self.check}: {f}")
        print(f"{self.check}: {self.count} {what} checked, {len(self.findings)} findings")
        return 1 if self.findings else 0


def load_yaml_docs(path):
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d]


def kn(o):
    return f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"


def parse_qty(q):
    """Kubernetes quantity -> float (cores for cpu, bytes otherwise)."""
    s = str(q)
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", s)
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def pod_template(o):
    """The pod template of a workload (a CronJob's is inside its jobTemplate); a Pod is its own."""
    if o["kind"] == "Pod":
        return o
    spec = o.get("spec") or {}
    if o["kind"] == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return spec.get("template") or {}


def pod_spec(o):
    return pod_template(o).get("spec") or {}


def pod_labels(o):
    return (pod_template(o).get("metadata") or {}).get("labels") or {}


def all_containers(spec):
    return [("init", c) for c in spec.get("initContainers") or []] + [("main", c) for c in spec.get("containers") or []]


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def selects(label_selector, labels):
    """A NetworkPolicy-style LabelSelector: {} selects every pod (matchExpressions are not evaluated here)."""
    return all(labels.get(k) == v for k, v in ((label_selector or {}).get("matchLabels") or {}).items())


def policy_types(n):
    return n["spec"].get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in n["spec"] else []))


def covers(port_entry, name, number):
    """Does one NetworkPolicy port entry admit TCP to the container port (name, number)?"""
    if (port_entry.get("protocol") or "TCP") != "TCP":
        return False
    if "port" not in port_entry:
        return True
    v = port_entry["port"]
    if isinstance(v, str):
        return v == name
    return v <= number <= port_entry.get("endPort", v)


def ingress_sources(pols, workloads, labels, port_name, port_number):
    """Who may connect to pods with `labels` on one port: (reasons it is open beyond the listed pods, {workload})."""
    isolating = [n for n in pols if selects(n["spec"].get("podSelector"), labels) and "Ingress" in policy_types(n)]
    wide, peers = [], set()
    if not isolating:
        wide.append("no NetworkPolicy isolates these pods for ingress")
    for n in isolating:
        for rule in n["spec"].get("ingress") or []:
            if rule.get("ports") and not any(covers(p, port_name, port_number) for p in rule["ports"]):
                continue
            if not rule.get("from"):
                wide.append(f"{kn(n)} has a rule without `from` (any source)")
                continue
            for peer in rule["from"]:
                if "ipBlock" in peer:
                    wide.append(f"{kn(n)} admits ipBlock {peer['ipBlock'].get('cidr')}")
                elif "namespaceSelector" in peer:
                    wide.append(f"{kn(n)} admits namespaceSelector {peer['namespaceSelector']} (pods of other namespaces)")
                elif (peer.get("podSelector") or {}).get("matchExpressions"):
                    wide.append(f"{kn(n)} admits a podSelector with matchExpressions (not evaluated here)")
                elif not ((peer.get("podSelector") or {}).get("matchLabels")):
                    wide.append(f"{kn(n)} admits podSelector {{}} (every pod in the namespace)")
                else:
                    peers |= {kn(w) for w in workloads if selects(peer["podSelector"], pod_labels(w))}
    return wide, peers


def check_metrics_access(by, workloads, api, c, env, rep):
    """Contract: only Prometheus reaches /metrics. NetworkPolicies see ports, not paths, so /metrics needs its own
    port (METRICS_BIND_ADDR, a container port named metrics), kept off NodePorts and Ingresses, and the API pods'
    ingress policy must admit Prometheus pods, and nothing else, to it; Prometheus' egress must allow it."""
    where = kn(api)
    mba = env.get("METRICS_BIND_ADDR")
    if not mba:
        rep.add(f"{where}: METRICS_BIND_ADDR unset: /metrics shares the API port, so no NetworkPolicy can limit it to Prometheus")
        return
    m = re.fullmatch(r"(.+):(\d+)", mba)
    bind = re.fullmatch(r"(.+):(\d+)", env.get("BIND_ADDR") or "0.0.0.0:8080")
    if not m or not bind or m.group(2) == bind.group(2):
        rep.add(f"{where}: METRICS_BIND_ADDR {mba!r} is not host:port on a port of its own (BIND_ADDR {env.get('BIND_ADDR')!r})")
        return
    mport = int(m.group(2))
    if not any(p.get("name") == "metrics" and p.get("containerPort") == mport for p in c.get("ports") or []):
        rep.add(f"{where}: no container port {mport} named metrics (METRICS_BIND_ADDR={mba})")
    labels = pod_labels(api)
    svcs = by.get("Service", {})
    for s in svcs.values():
        if not matches(s["spec"].get("selector"), labels):
            continue
        for p in s["spec"].get("ports") or []:
            if p.get("targetPort", p.get("port")) in ("metrics", mport) and \
                    (s["spec"].get("type", "ClusterIP") != "ClusterIP" or "nodePort" in p):
                rep.add(f"{kn(s)}: exposes the metrics port {mport} as {s['spec'].get('type')}: only Prometheus may reach /metrics")
    for i in by.get("Ingress", {}).values():
        for r in i["spec"].get("rules") or []:
            for p in (r.get("http") or {}).get("paths") or []:
                b = p["backend"]["service"]
                for sp in (svcs.get(b["name"]) or {}).get("spec", {}).get("ports") or []:
                    if (sp.get("name") == b["port"].get("name") or sp.get("port") == b["port"].get("number")) \
                            and sp.get("targetPort") in ("metrics", mport):
                        rep.add(f"{kn(i)}: routes to the metrics port {mport} outside the cluster")
    pols = list(by.get("NetworkPolicy", {}).values())
    if not pols:
        return  # a render with networkPolicies off: nothing enforces anything (documented)
    prom = {kn(w): w for w in workloads
            if any(ct.get("image", "").split(":")[0].endswith("/prometheus") for _, ct in all_containers(pod_spec(w)))}
    wide, peers = ingress_sources(pols, workloads, labels, "metrics", mport)
    if wide or peers - set(prom):
        rep.add(f"{where}: metrics port {mport} is open beyond Prometheus: " + "; ".join(wide + sorted(peers - set(prom))))
    if prom and not wide and not peers & set(prom):
        rep.add(f"{where}: no NetworkPolicy admits Prometheus {sorted(prom)} to the metrics port: nothing can scrape it")
    for name, pw in prom.items():
        eg = [n for n in pols if selects(n["spec"].get("podSelector"), pod_labels(pw)) and "Egress" in policy_types(n)]
        ok = not eg or any(
            (not rule.get("ports") or any(covers(p, "metrics", mport) for p in rule["ports"]))
            and (not rule.get("to") or any("namespaceSelector" not in t and "ipBlock" not in t and selects(t.get("podSelector"), labels)
                                           for t in rule["to"]))
            for n in eg for rule in n["spec"].get("egress") or [])
        if not ok:
            rep.add(f"{name}: its NetworkPolicy egress does not allow the API pods' metrics port {mport}: nothing can scrape it")
    wide_http, _ = ingress_sources(pols, workloads, labels, "http", 8080)
    if not wide_http:
        rep.add(f"{where}: the API port http is not open to every source (the NodePort and Traefik need it)")


# ---------------------------------------------------------------- k8s: schema + cross-references + hygiene
def check_k8s(path, label, version):
    import kubernetes_validate
    objs = load_yaml_docs(path)
    rep = Report(f"k8s[{label}]")
    rep.count = len(objs)
    for o in objs:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path_s = "/".join(str(p) for p in e.path)
            rep.add(f"{kn(o)}: schema (k8s {version}, strict): {e.message} at /{path_s}")
        except kubernetes_validate.SchemaNotFoundError:
            rep.add(f"{kn(o)}: no schema for {o.get('apiVersion')} {o.get('kind')} in k8s {version} (removed API or unknown kind)")
        except Exception as e:  # noqa: BLE001 - any other failure is a finding too
            rep.add(f"{kn(o)}: schema validation error: {e}")
    crossref(objs, rep)
    return rep.done("objects")


def crossref(objs, rep):
    by = {}
    for o in objs:
        by.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = [o for o in objs if o["kind"] in WORKLOADS]
    cms, secrets = by.get("ConfigMap", {}), by.get("Secret", {})
    sas = by.get("ServiceAccount", {})

    def secret_keys(name):
        s = secrets.get(name) or {}
        return set((s.get("data") or {}).keys()) | set((s.get("stringData") or {}).keys())

    def cm_keys(name):
        c = cms.get(name) or {}
        return set((c.get("data") or {}).keys()) | set((c.get("binaryData") or {}).keys())

    def container_ports(w):
        return {p.get("name") for _, c in all_containers(pod_spec(w)) for p in c.get("ports") or [] if p.get("name")}

    for w in workloads:
        spec, labels = pod_spec(w), pod_labels(w)
        sel = ((w.get("spec") or {}).get("selector") or {}).get("matchLabels")
        if w["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            if not matches(sel, labels):
                rep.add(f"{kn(w)}: selector {sel} does not match its pod template labels {labels}")
            if sel and set(sel) - {"app.kubernetes.io/name", "app.kubernetes.io/instance"}:
                rep.add(f"{kn(w)}: selector must be name + instance only (house style), got {sorted(sel)}")
        if w["kind"] == "StatefulSet":
            svc = by.get("Service", {}).get(w["spec"].get("serviceName"))
            if not svc:
                rep.add(f"{kn(w)}: serviceName {w['spec'].get('serviceName')!r} is not a Service here")
            elif (svc.get("spec") or {}).get("clusterIP") != "None":
                rep.add(f"{kn(w)}: serviceName Service {svc['metadata']['name']} is not headless")
        san = spec.get("serviceAccountName")
        if san and san != "default" and san not in sas:
            rep.add(f"{kn(w)}: serviceAccountName {san!r} does not exist")
        psc = spec.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True:
            rep.add(f"{kn(w)}: pod securityContext.runAsNonRoot is not true")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            rep.add(f"{kn(w)}: pod seccompProfile is not RuntimeDefault")
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        vct = {t["metadata"]["name"] for t in (w.get("spec") or {}).get("volumeClaimTemplates") or []}
        for v in vols.values():
            if "configMap" in v:
                n = v["configMap"]["name"]
                if n not in cms and not v["configMap"].get("optional"):
                    rep.add(f"{kn(w)}: volume {v['name']} references missing ConfigMap {n}")
                for it in v["configMap"].get("items") or []:
                    if it["key"] not in cm_keys(n):
                        rep.add(f"{kn(w)}: volume {v['name']} references missing key {n}/{it['key']}")
            if "secret" in v:
                n = v["secret"]["secretName"]
                if n not in secrets and n not in DEPLOY_TIME_SECRETS and not v["secret"].get("optional"):
                    rep.add(f"{kn(w)}: volume {v['name']} references missing Secret {n}")
            if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in by.get("PersistentVolumeClaim", {}):
                rep.add(f"{kn(w)}: volume {v['name']} references missing PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']}")
        if w["kind"] == "CronJob":
            # Allow (the default) starts a run while the last one still works on the same data; a run with no
            # deadline that hangs holds off every later one under Forbid.
            if w["spec"].get("concurrencyPolicy") not in ("Forbid", "Replace"):
                rep.add(f"{kn(w)}: concurrencyPolicy {w['spec'].get('concurrencyPolicy', 'Allow')}: runs may overlap")
            if not ((w["spec"].get("jobTemplate") or {}).get("spec") or {}).get("activeDeadlineSeconds"):
                rep.add(f"{kn(w)}: jobTemplate has no activeDeadlineSeconds: a hung run is never stopped")
        ports = container_ports(w)
        for role, c in all_containers(spec):
            where = f"{kn(w)} container {c['name']}"
            img = c.get("image", "")
            if ":" not in img.split("/")[-1] and "@" not in img or img.endswith(":latest"):
                rep.add(f"{where}: image {img!r} is untagged or :latest (k3d-imported images must be pinned)")
            if c.get("imagePullPolicy") not in ("IfNotPresent", None) and w["metadata"]["name"].startswith("aside"):
                rep.add(f"{where}: imagePullPolicy {c.get('imagePullPolicy')} (k3d-imported images need IfNotPresent)")
            sc = c.get("securityContext") or {}
            if sc.get("readOnlyRootFilesystem") is not True:
                rep.add(f"{where}: readOnlyRootFilesystem is not true")
            # A read-only root means a script that writes under /tmp needs a volume there (the helm test pod's did not).
            script = " ".join(str(a) for a in (c.get("command") or []) + (c.get("args") or []))
            if sc.get("readOnlyRootFilesystem") is True and re.search(r"/tmp/", script) and \
                    not any(m.get("mountPath", "").rstrip("/") == "/tmp" for m in c.get("volumeMounts") or []):
                rep.add(f"{where}: its command uses /tmp/ on a read-only root filesystem with no volume mounted at /tmp")
            if sc.get("allowPrivilegeEscalation") is not False:
                rep.add(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                rep.add(f"{where}: capabilities do not drop ALL")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        rep.add(f"{where}: no {kind}.{r}")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols and m["name"] not in vct:
                    rep.add(f"{where}: volumeMount {m['name']} has no volume")
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                if "configMapKeyRef" in vf:
                    r = vf["configMapKeyRef"]
                    if not r.get("optional") and r["key"] not in cm_keys(r["name"]):
                        rep.add(f"{where}: env {e['name']} references missing ConfigMap key {r['name']}/{r['key']}")
                if "secretKeyRef" in vf:
                    r = vf["secretKeyRef"]
                    if not r.get("optional") and r["key"] not in secret_keys(r["name"]):
                        rep.add(f"{where}: env {e['name']} references missing Secret key {r['name']}/{r['key']}")
            for ef in c.get("envFrom") or []:
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in cms and not ef["configMapRef"].get("optional"):
                    rep.add(f"{where}: envFrom references missing ConfigMap {ef['configMapRef']['name']}")
                if "secretRef" in ef and ef["secretRef"]["name"] not in secrets and not ef["secretRef"].get("optional"):
                    rep.add(f"{where}: envFrom references missing Secret {ef['secretRef']['name']}")
            for pn in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(pn) or {}
                for h in ("httpGet", "tcpSocket", "grpc"):
                    port = (p.get(h) or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        rep.add(f"{where}: {pn} uses port {port!r}, not a named container port")

    # The API Deployment: the contract's probes, drain arithmetic, HPA ownership of replicas.
    api = by.get("Deployment", {}).get("aside")
    if api:
        c = next(c for c in pod_spec(api)["containers"] if c["name"] == "aside")
        want = {"readinessProbe": "/ready", "livenessProbe": "/health", "startupProbe": "/health"}
        for pn, path in want.items():
            got = ((c.get(pn) or {}).get("httpGet") or {}).get("path")
            if got != path:
                rep.add(f"Deployment/aside: {pn} path {got!r}, contract wants {path}")
        if not any(p.get("name") == "http" and p.get("containerPort") == 8080 for p in c.get("ports") or []):
            rep.add("Deployment/aside: no container port 8080 named http (contract)")
        ru = ((api["spec"].get("strategy") or {}).get("rollingUpdate") or {})
        if ru.get("maxUnavailable") not in (0, "0", "0%"):
            rep.add(f"Deployment/aside: rollingUpdate.maxUnavailable is {ru.get('maxUnavailable')!r}, want 0")
        drain = None
        for ef in c.get("envFrom") or []:
            name = (ef.get("configMapRef") or {}).get("name")
            if name in cms and "SHUTDOWN_DRAIN_SECONDS" in (cms[name].get("data") or {}):
                drain = int(cms[name]["data"]["SHUTDOWN_DRAIN_SECONDS"])
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds")
        grace = pod_spec(api).get("terminationGracePeriodSeconds", 30)
        if pre is None:
            rep.add("Deployment/aside: no preStop sleep")
        if drain is None:
            rep.add("Deployment/aside: SHUTDOWN_DRAIN_SECONDS not set from a ConfigMap")
        if pre is not None and drain is not None and grace <= pre + drain + 5:
            rep.add(f"Deployment/aside: terminationGracePeriodSeconds {grace} <= preStop {pre} + drain {drain} + 5")
        if not pod_spec(api).get("initContainers") and "aside-migrate" not in by.get("Job", {}):
            rep.add("Deployment/aside: no migration init container or Job before serving")
        env = {}
        for ef in c.get("envFrom") or []:
            env.update({k: str(v) for k, v in ((cms.get((ef.get("configMapRef") or {}).get("name")) or {}).get("data") or {}).items()})
        env.update({e["name"]: str(e["value"]) if "value" in e else None for e in c.get("env") or []})
        for k, v in env.items():
            if k not in SERVICE_ENV:
                rep.add(f"Deployment/aside: env {k} is not one the service reads")
            if k in NUMERIC_ENV and v is not None and not re.fullmatch(r"[0-9]+", v):
                rep.add(f"Deployment/aside: {k}={v!r} is not a whole number: the service would refuse to start")
        check_metrics_access(by, workloads, api, c, env, rep)
    for h in by.get("HorizontalPodAutoscaler", {}).values():
        ref = h["spec"]["scaleTargetRef"]
        tgt = by.get(ref["kind"], {}).get(ref["name"])
        if not tgt:
            rep.add(f"{kn(h)}: scaleTargetRef {ref['kind']}/{ref['name']} does not exist")
        elif "replicas" in tgt["spec"]:
            rep.add(f"{kn(h)}: target {kn(tgt)} sets spec.replicas: Argo CD and the HPA would fight over it")
        if h["spec"].get("minReplicas", 1) < 2:
            rep.add(f"{kn(h)}: minReplicas < 2")
        # No schema states it (the API server's validation does): an environment's bounds are set apart.
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            rep.add(f"{kn(h)}: minReplicas {h['spec']['minReplicas']} > maxReplicas {h['spec']['maxReplicas']} "
                    "(the API server refuses it)")
    for p in by.get("PodDisruptionBudget", {}).values():
        sel = p["spec"].get("selector", {}).get("matchLabels")
        if not any(matches(sel, pod_labels(w)) for w in workloads):
            rep.add(f"{kn(p)}: selector {sel} matches no workload's pods")
    svcs = by.get("Service", {})
    nodeports = {}
    for s in svcs.values():
        sel = s["spec"].get("selector")
        targets = [w for w in workloads if w["kind"] != "Pod" and matches(sel, pod_labels(w))]
        if not targets:
            rep.add(f"{kn(s)}: selector {sel} matches no workload's pods")
        for port in s["spec"].get("ports") or []:
            tp = port.get("targetPort")
            if isinstance(tp, str) and targets and not all(tp in container_ports(w) for w in targets):
                rep.add(f"{kn(s)}: targetPort {tp!r} is not a named port of {[kn(w) for w in targets]}")
            np_ = port.get("nodePort")
            if np_ is not None:
                if not 30000 <= np_ <= 32767:
                    rep.add(f"{kn(s)}: nodePort {np_} outside 30000-32767")
                if np_ in nodeports:
                    rep.add(f"{kn(s)}: nodePort {np_} already used by {nodeports[np_]}")
                nodeports[np_] = kn(s)
    for i in by.get("Ingress", {}).values():
        for t in i["spec"].get("tls") or []:
            if t.get("secretName") not in secrets and t.get("secretName") not in DEPLOY_TIME_SECRETS:
                rep.add(f"{kn(i)}: TLS secret {t.get('secretName')!r} neither in the manifests nor created by deploy.sh")
        for r in i["spec"].get("rules") or []:
            for p in (r.get("http") or {}).get("paths") or []:
                b = p["backend"]["service"]
                s = svcs.get(b["name"])
                if not s:
                    rep.add(f"{kn(i)}: backend Service {b['name']} does not exist")
                    continue
                pn = b["port"].get("name")
                pnum = b["port"].get("number")
                if not any((pn and sp.get("name") == pn) or (pnum and sp.get("port") == pnum) for sp in s["spec"]["ports"]):
                    rep.add(f"{kn(i)}: backend port {b['port']} not on {kn(s)}")
                if p.get("path", "").startswith("/metrics"):
                    rep.add(f"{kn(i)}: routes /metrics outside the cluster")
    for n in by.get("NetworkPolicy", {}).values():
        sel = n["spec"].get("podSelector", {}).get("matchLabels")
        selected = workloads if not sel else [w for w in workloads if matches(sel, pod_labels(w))]
        if sel and not selected:
            rep.add(f"{kn(n)}: podSelector {sel} matches no workload's pods")
        for rule in n["spec"].get("ingress") or []:
            for port in rule.get("ports") or []:
                if isinstance(port.get("port"), str) and sel and not any(port["port"] in container_ports(w) for w in selected):
                    rep.add(f"{kn(n)}: ingress port {port['port']!r} is not a named port of the selected pods")
        for rule in n["spec"].get("egress") or []:
            peers = [w for to in rule.get("to") or [] if "podSelector" in to and "namespaceSelector" not in to
                     for w in workloads if matches(to["podSelector"].get("matchLabels"), pod_labels(w))]
            for to in rule.get("to") or []:
                ps = (to.get("podSelector") or {}).get("matchLabels")
                if ps and "namespaceSelector" not in to and not any(matches(ps, pod_labels(w)) for w in workloads):
                    rep.add(f"{kn(n)}: egress peer {ps} matches no workload's pods")
            for port in rule.get("ports") or []:
                if isinstance(port.get("port"), str) and peers and not any(port["port"] in container_ports(w) for w in peers):
                    rep.add(f"{kn(n)}: egress port {port['port']!r} is not a named port of the peer pods")
    for rb in by.get("RoleBinding", {}).values():
        if rb["roleRef"]["kind"] == "Role" and rb["roleRef"]["name"] not in by.get("Role", {}):
            rep.add(f"{kn(rb)}: roleRef Role {rb['roleRef']['name']} does not exist")
        for s in rb.get("subjects") or []:
            if s["kind"] == "ServiceAccount" and s["name"] not in sas:
                rep.add(f"{kn(rb)}: subject ServiceAccount {s['name']} does not exist")
    for ss in by.get("StatefulSet", {}).values():
        for t in ss["spec"].get("volumeClaimTemplates") or []:
            ann = (t["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-options", "")
            if "Delete=false" not in ann:
                rep.add(f"{kn(ss)}: volumeClaimTemplate {t['metadata']['name']} lacks argocd.argoproj.io/sync-options: Delete=false")
    for s in secrets.values():
        if (s["metadata"].get("annotations") or {}).get("aside.dev/local-dev-values") != "true":
            rep.add(f"{kn(s)}: committed Secret not marked aside.dev/local-dev-values: \"true\"")


# ---------------------------------------------------------------- budget
def check_budget(path):
    objs = load_yaml_docs(path)
    rep = Report("budget")
    budget = yaml.safe_load(open(os.path.join(ROOT, "ops", "budget.yaml")))
    by = {}
    for o in objs:
        by.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by.get("HorizontalPodAutoscaler", {}).values()}

    def pod_res(spec, kind="requests"):
        tot = {"cpu": 0.0, "memory": 0.0}
        for c in spec.get("containers") or []:
            for r in tot:
                tot[r] += parse_qty(((c.get("resources") or {}).get(kind) or {}).get(r, 0))
        for c in spec.get("initContainers") or []:  # init containers run alone: the pod needs the max
            for r in tot:
                tot[r] = max(tot[r], parse_qty(((c.get("resources") or {}).get(kind) or {}).get(r, 0)))
        return tot

    def pod_req(spec):
        return pod_res(spec) | {"limits": pod_res(spec, "limits")}

    rows, disk = [], 0.0
    for w in (o for o in objs if o["kind"] in ("Deployment", "StatefulSet", "CronJob")):
        name, spec = w["metadata"]["name"], w["spec"]
        if w["kind"] == "CronJob":
            # One run at a time (the k8s check wants Forbid or Replace), and it may start at the worst moment.
            n = n_max = 1
            note = "1 run at a time"
        elif name in hpas:
            surge = int(str(((spec.get("strategy") or {}).get("rollingUpdate") or {}).get("maxSurge", 1)).rstrip("%"))
            n = hpas[name]["spec"]["minReplicas"] + surge
            n_max = hpas[name]["spec"]["maxReplicas"] + surge
            note = f"{hpas[name]['spec']['minReplicas']} + {surge} surge (HPA max {n_max} incl. surge)"
        else:
            n = spec.get("replicas", 1)
            n_max, note = n, f"{n}"
        req = pod_req(pod_spec(w))
        rows.append((kn(w), n, n_max, req, note))
        rep.count += 1
        for v in pod_spec(w).get("volumes") or []:
            if "emptyDir" in v:
                sl = v["emptyDir"].get("sizeLimit")
                if sl is None:
                    rep.add(f"{kn(w)}: emptyDir {v['name']} without sizeLimit (unbounded disk)")
                else:
                    disk += parse_qty(sl) * n_max
        for t in spec.get("volumeClaimTemplates") or []:
            disk += parse_qty(t["spec"]["resources"]["requests"]["storage"]) * spec.get("replicas", 1)
    for pvc in by.get("PersistentVolumeClaim", {}).values():  # claims of their own (the backups')
        disk += parse_qty(pvc["spec"]["resources"]["requests"]["storage"])
    argo = []
    for p in load_yaml_docs(os.path.join(ROOT, "argocd", "install", "resources-patch.yaml")):
        if p["spec"].get("replicas", 1) == 0:
            continue
        argo.append((kn(p), 1, 1, pod_req(p["spec"]["template"]["spec"]), "argocd"))
    cap = {"cpu": parse_qty(budget["node"]["cpu"]), "memory": parse_qty(budget["node"]["memory"])}
    sysr = {"cpu": parse_qty(budget["system"]["cpu"]), "memory": parse_qty(budget["system"]["memory"])}

    def total(rs, use_max=False, kind=None):
        def per_pod(row):
            return row[3]["limits"] if kind == "limits" else row[3]
        return {r: sum(per_pod(row)[r] * (row[2] if use_max else row[1]) for row in rs) for r in ("cpu", "memory")}

    print("budget: requests per workload (pods x per-pod request)")
    for name, n, _, req, note in rows + argo:
        print(f"  {name:48s} {note:38s} cpu {req['cpu'] * n * 1000:6.0f}m  mem {req['memory'] * n / 2**20:6.0f}Mi")
    app, app_max, ar = total(rows), total(rows, True), total(argo)
    img = sum(parse_qty(v) for v in budget["images"].values())
    argo_img = sum(parse_qty(v) for v in budget["argocd_images"].values())
    lines = [
        ("stack, rolling update at HPA min", app, False),
        ("stack + Argo CD (--argocd), rolling update", {r: app[r] + ar[r] for r in app}, True),
        ("stack + Argo CD at HPA max + surge", {r: app_max[r] + ar[r] for r in app}, True),
    ]
    for label, t, with_argo in lines:
        t = {r: t[r] + sysr[r] for r in t}
        print(f"  TOTAL {label:44s} cpu {t['cpu'] * 1000:5.0f}m of {cap['cpu'] * 1000:.0f}m  "
              f"mem {t['memory'] / 2**20:5.0f}Mi of {cap['memory'] / 2**20:.0f}Mi (incl. k3s system {sysr['cpu'] * 1000:.0f}m/{sysr['memory'] / 2**20:.0f}Mi)")
        for r in ("cpu", "memory"):
            if t[r] > cap[r]:
                rep.add(f"{label}: {r} requests {t[r]:.3g} exceed the node's {cap[r]:.3g}")
    # Limits may overcommit the node, but only where overcommitting is safe: CPU above its limit is
    # throttled, never killed, so CPU limits may sum past the node; memory cannot be taken back, so the
    # memory limits of everything that can run at once (Argo CD, HPA max + surge, k3s system) must fit.
    lim_app_max, lim_argo = total(rows, True, "limits"), total(argo, kind="limits")
    unlimited = [row[0] for row in rows + argo if not row[3]["limits"]["memory"]]
    for name in unlimited:
        rep.add(f"{name}: no memory limit (the limits sum below would be a lie)")
    lim = {r: lim_app_max[r] + lim_argo[r] + sysr[r] for r in ("cpu", "memory")}
    allowed = parse_qty(budget.get("limits_overcommit", {}).get("memory", 0))
    print("budget: limits per workload (pods at HPA max + surge x per-pod limit)")
    for name, _, n_max, req, note in rows + argo:
        print(f"  {name:48s} {n_max:2d} pod(s){'':29s} cpu {req['limits']['cpu'] * n_max * 1000:6.0f}m  "
              f"mem {req['limits']['memory'] * n_max / 2**20:6.0f}Mi")
    stack_lim = {r: lim_app_max[r] + sysr[r] for r in ("cpu", "memory")}
    print(f"  TOTAL {'limits: stack at HPA max + surge':44s} cpu {stack_lim['cpu'] * 1000:5.0f}m  "
          f"mem {stack_lim['memory'] / 2**20:5.0f}Mi of {cap['memory'] / 2**20:.0f}Mi")
    print(f"  TOTAL {'limits: stack + Argo CD at HPA max + surge':44s} cpu {lim['cpu'] * 1000:5.0f}m of "
          f"{cap['cpu'] * 1000:.0f}m (throttled, may overcommit)  mem {lim['memory'] / 2**20:5.0f}Mi of "
          f"{cap['memory'] / 2**20:.0f}Mi (allowed: node + {allowed / 2**20:.0f}Mi limits_overcommit; k3s system at its requests)")
    if lim["memory"] > cap["memory"] + allowed:
        rep.add(f"memory limits {lim['memory'] / 2**20:.0f}Mi exceed the node's {cap['memory'] / 2**20:.0f}Mi by more "
                f"than the {allowed / 2**20:.0f}Mi ops/budget.yaml allows (limits_overcommit, see docs/delivery.md)")
    # Every image the stack runs has a size line (the figures themselves are estimates: see budget.yaml).
    used = {c["image"] for w in objs if w["kind"] in WORKLOADS and w["kind"] != "Pod"
            for c in (pod_spec(w).get("containers") or []) + (pod_spec(w).get("initContainers") or [])}
    for image in sorted(used):
        if image not in budget["images"] and image.split(":")[0] not in budget["images"]:
            rep.add(f"image {image} has no size line in ops/budget.yaml images")
    d = disk + img + argo_img
    print(f"  TOTAL disk: volumes {disk / 1e9:.2f}G + images {img / 1e9:.2f}G + Argo CD images {argo_img / 1e9:.2f}G "
          f"= {d / 1e9:.2f}G of {parse_qty(budget['node']['disk']) / 1e9:.0f}G (image sizes are estimates, ops/budget.yaml)")
    if d > parse_qty(budget["node"]["disk"]):
        rep.add(f"disk {d / 1e9:.2f}G exceeds the node's {budget['node']['disk']}")
    return rep.done("workloads")


# ---------------------------------------------------------------- Argo CD
def strictify(schema):
    """Turn a CRD openAPIV3Schema strict: no unknown fields where the CRD lists properties."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        for v in schema.values():
            strictify(v)
    elif isinstance(schema, list):
        for v in schema:
            strictify(v)
    return schema


def check_crd_schema(obj, crd_path, rep):
    """obj against the v1alpha1 schema of the CRD at crd_path, made strict, with a strict metadata of our own
    (a CRD's schema leaves metadata to the API server): unknown fields, wrong types, violated constraints."""
    if not os.path.isfile(crd_path):
        rep.add(f"Argo CD CRD {crd_path} not found")
        return
    crd = yaml.safe_load(open(crd_path))
    kind = crd["spec"]["names"]["kind"]
    ver = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema = strictify(copy.deepcopy(ver["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {
        "type": "object", "additionalProperties": False, "required": ["name", "namespace"],
        "properties": {"name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                       "namespace": {"type": "string"}, "finalizers": {"type": "array", "items": {"type": "string"}},
                       "labels": {"type": "object"}, "annotations": {"type": "object"}}}
    name = (obj.get("metadata") or {}).get("name")
    for e in sorted(jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(map(str, e.path))):
        msg = e.message if len(e.message) <= 160 else f"{e.message[:60]}…{e.message[-60:]}"  # long values quoted
        rep.add(f"{kind}/{name}: CRD schema: {msg} at /{'/'.join(map(str, e.path))}")
    if obj.get("apiVersion") != f"{crd['spec']['group']}/v1alpha1" or obj.get("kind") != kind:
        rep.add(f"{kind}: apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')} is not the CRD's")


def check_argocd(k8s_render, crd_dir):
    """crd_dir: manifests/crds of the Argo CD release tools/argocd/go.mod pins (validate.sh fetches it)."""
    rep = Report("argocd")
    app = yaml.safe_load(open(os.path.join(ROOT, "argocd", "application.yaml")))
    proj = yaml.safe_load(open(os.path.join(ROOT, "argocd", "appproject.yaml")))
    rep.count = 2
    check_crd_schema(app, os.path.join(crd_dir, "application-crd.yaml"), rep)
    check_crd_schema(proj, os.path.join(crd_dir, "appproject-crd.yaml"), rep)
    s, spec = app["spec"].get("source") or {}, app["spec"]
    src = os.path.join(ROOT, s.get("path", ""))
    if not os.path.isfile(os.path.join(src, "kustomization.yaml")):
        rep.add(f"Application: source.path {s.get('path')!r} has no kustomization.yaml")
    objs = load_yaml_docs(k8s_render)
    nss = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    if nss != {spec["destination"].get("namespace")}:
        rep.add(f"Application: destination namespace {spec['destination'].get('namespace')!r} but k8s/ objects use {nss}")
    sp = spec.get("syncPolicy") or {}
    auto = sp.get("automated") or {}
    if not (auto.get("prune") and auto.get("selfHeal")):
        rep.add("Application: automated sync needs prune and selfHeal")
    for opt in ("CreateNamespace=true", "RespectIgnoreDifferences=true"):
        if opt not in (sp.get("syncOptions") or []):
            rep.add(f"Application: syncOptions lacks {opt}")
    if not sp.get("retry"):
        rep.add("Application: no retry policy")
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    hpa_targets = {o["spec"]["scaleTargetRef"]["name"] for o in objs if o["kind"] == "HorizontalPodAutoscaler"}
    # The HPA's replica count is ignored by its writer (managedFieldsManagers: kube-controller-manager). A path
    # rule on /spec/replicas would also strip an invalid value from Git (replicas: "two" shown Synced + Healthy).
    ignored = {i.get("name") for i in spec.get("ignoreDifferences") or []
               if i.get("kind") == "Deployment" and "kube-controller-manager" in (i.get("managedFieldsManagers") or [])}
    for i in spec.get("ignoreDifferences") or []:
        if any(p.startswith("/spec/replicas") for p in i.get("jsonPointers") or []):
            rep.add(f"Application: ignoreDifferences on {i.get('kind')}/{i.get('name')} jsonPointers /spec/replicas hides an "
                    "invalid replicas value from Git (use managedFieldsManagers: [kube-controller-manager])")
    for t in hpa_targets - ignored:
        rep.add(f"Application: HPA-owned Deployment/{t} has no ignoreDifferences for the HPA's writes "
                "(managedFieldsManagers: [kube-controller-manager])")
    for t in ignored:
        if ("Deployment", t) not in by:
            rep.add(f"Application: ignoreDifferences names Deployment/{t}, which k8s/ does not have")
    for img in (s.get("kustomize") or {}).get("images") or []:
        name = img.split("=")[0]
        if not any(c.get("image", "").split(":")[0] == name for o in objs if o["kind"] in WORKLOADS
                   for _, c in all_containers(pod_spec(o))):
            rep.add(f"Application: kustomize image override {img!r} matches no container image in k8s/")
    # AppProject: the Application may use it, and it allows everything k8s/ holds.
    if spec.get("project") != proj["metadata"]["name"]:
        rep.add(f"Application: project {spec.get('project')!r} is not the AppProject {proj['metadata']['name']!r}")
    ps = proj["spec"]
    if s.get("repoURL") not in ps.get("sourceRepos", []):
        rep.add(f"AppProject: sourceRepos lacks the Application's repoURL {s.get('repoURL')}")
    if not any(d.get("namespace") == spec["destination"]["namespace"] and d.get("server") == spec["destination"].get("server")
               for d in ps.get("destinations", [])):
        rep.add("AppProject: no destination matches the Application's")
    allowed_ns = {(w["group"], w["kind"]) for w in ps.get("namespaceResourceWhitelist", [])}
    allowed_cl = {(w["group"], w["kind"]) for w in ps.get("clusterResourceWhitelist", [])}
    for o in objs:
        group = o["apiVersion"].split("/")[0] if "/" in o["apiVersion"] else ""
        ok = (group, o["kind"]) in (allowed_cl if o["kind"] == "Namespace" else allowed_ns)
        if not ok:
            rep.add(f"AppProject: {group or 'core'}/{o['kind']} ({o['metadata']['name']}) in k8s/ is not whitelisted")
    return rep.done("objects")


def landed(patch, got, path, what, rep):
    """Every value a strategic-merge patch sets is in the rendered object; lists of named items (containers,
    ports) are matched by name, as the merge does."""
    if isinstance(patch, dict):
        if not isinstance(got, dict):
            rep.add(f"{what}: {path or '/'} is not an object in the render")
            return
        for key, value in patch.items():
            if key not in got:
                rep.add(f"{what}: the patch sets {path}/{key}, the render has none")
            else:
                landed(value, got[key], f"{path}/{key}", what, rep)
    elif isinstance(patch, list) and patch and all(isinstance(i, dict) and "name" in i for i in patch):
        items = {i.get("name"): i for i in got or [] if isinstance(i, dict)}
        for item in patch:
            if item["name"] not in items:
                rep.add(f"{what}: the patch sets {path}[{item['name']}], the render has none")
            else:
                landed(item, items[item["name"]], f"{path}[{item['name']}]", what, rep)
    elif patch != got:
        rep.add(f"{what}: the patch sets {path} to {patch!r}, the render has {got!r}")


def check_argocd_install(render):
    """The install overlay rendered over the upstream install.yaml of the pinned release: every patch found its
    object and every value it sets is there (a misnamed container or a port the merge does not match would
    otherwise be added beside the real one, or dropped), and every workload container has an image and the
    requests and limits the budget counts on."""
    rep = Report("argocd")
    kdir = os.path.join(ROOT, "argocd", "install")
    with open(render) as fh:  # ~2 MB with the CRDs: the C loader when PyYAML has it
        objs = [d for d in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) if d]
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for p in yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml"))).get("patches") or []:
        for patch in load_yaml_docs(os.path.join(kdir, p["path"])):
            rep.count += 1
            got = by.get((patch["kind"], patch["metadata"]["name"]))
            if got is None:
                rep.add(f"{kn(patch)} ({p['path']}): no such object in the upstream install.yaml")
            else:
                landed(patch, got, "", f"{kn(patch)} ({p['path']})", rep)
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        for c in pod_spec(o).get("containers") or []:
            res = c.get("resources") or {}
            if not c.get("image"):
                rep.add(f"{kn(o)} container {c['name']}: no image (a patch named a container upstream does not have)")
            if not all((res.get(k) or {}).get(r) for k in ("requests", "limits") for r in ("cpu", "memory")):
                rep.add(f"{kn(o)} container {c['name']}: no cpu/memory requests and limits (argocd/install/resources-patch.yaml)")
    return rep.done("patches")


# ---------------------------------------------------------------- ops/ consistency
def promql_metrics(expr):
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?=\{|\[)", expr))


def check_ops(k8s_render):
    rep = Report("ops")
    ops = os.path.join(ROOT, "ops")
    prom = yaml.safe_load(open(os.path.join(ops, "prometheus", "prometheus.yml")))
    comp = yaml.safe_load(open(os.path.join(ops, "prometheus", "prometheus-compose.yml")))
    sd_keys = {"kubernetes_sd_configs", "relabel_configs", "static_configs"}

    def strip_sd(cfg):
        c = copy.deepcopy(cfg)
        for sc in c.get("scrape_configs", []):
            for k in sd_keys:
                sc.pop(k, None)
        return c
    rep.count += 1
    if strip_sd(prom) != strip_sd(comp):
        rep.add("prometheus.yml and prometheus-compose.yml differ outside the service-discovery block")
    objs = load_yaml_docs(k8s_render)
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    # The cluster job's SD block (Debian's promtool is built without Kubernetes SD, so it is checked here).
    job = next((j for j in prom.get("scrape_configs", []) if j.get("job_name") == "aside"), None)
    if not job:
        rep.add("prometheus.yml has no job aside (alerts and dashboards select job=\"aside\")")
        return rep.done("files")
    sds = job.get("kubernetes_sd_configs") or []
    if len(sds) != 1 or sds[0].get("role") != "endpointslice" or set(sds[0]) - {"role", "namespaces"} \
            or set(sds[0].get("namespaces") or {}) - {"own_namespace", "names"}:
        rep.add(f"job aside: unexpected kubernetes_sd_configs {sds}")
    api = by.get(("Deployment", "aside"))
    kept = []  # (Service, port) pairs whose endpoints the keep rules let through, evaluated over every Service port
    for s in (o for o in objs if o["kind"] == "Service"):
        for port in s["spec"].get("ports") or []:
            kept.append((s, port))
    for rc in job.get("relabel_configs") or []:
        if rc.get("action", "replace") not in ("replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep", "hashmod"):
            rep.add(f"job aside: bad relabel action {rc.get('action')}")
        for sl in rc.get("source_labels") or []:
            if not sl.startswith(("__meta_kubernetes_endpointslice_", "__meta_kubernetes_service_", "__meta_kubernetes_pod_", "__meta_kubernetes_namespace")):
                rep.add(f"job aside: source label {sl} is not produced by role endpointslice")
        if rc.get("action") == "keep":
            def value(svc, port, sl):
                m = re.fullmatch(r"__meta_kubernetes_service_label_(.+)", sl)
                if m:
                    labels = svc["metadata"].get("labels") or {}
                    key = next((k for k in labels if re.sub(r"[^a-zA-Z0-9_]", "_", k) == m.group(1)), None)
                    return labels.get(key, "")
                return {"__meta_kubernetes_endpointslice_port_name": port.get("name", ""),
                        "__meta_kubernetes_service_name": svc["metadata"]["name"]}.get(sl, "")
            kept = [(svc, port) for svc, port in kept
                    if re.fullmatch(rc.get("regex", "(.*)"), rc.get("separator", ";").join(value(svc, port, sl) for sl in rc["source_labels"]))]
    # What is scraped must be the API pods' metrics port (METRICS_BIND_ADDR), nothing else: /metrics is not on http.
    names = [f"{kn(svc)} port {port.get('name')}" for svc, port in kept]
    if not kept:
        rep.add("job aside: the keep rules drop every Service port in k8s/: nothing would be scraped")
    for svc, port in kept:
        if not api or not matches(svc["spec"].get("selector"), pod_labels(api)) or port.get("targetPort") != "metrics":
            rep.add(f"job aside: keeps {kn(svc)} port {port.get('name')!r} (targetPort {port.get('targetPort')!r}), "
                    "not the API pods' metrics port: /metrics is served only there")
    if len(kept) > 1:
        rep.add(f"job aside: keeps {len(kept)} Service ports ({', '.join(names)}): each pod would be scraped more than once")
    # Rule files: where the cluster mounts them.
    dep = by.get(("Deployment", "aside-prometheus"))
    if dep:
        mounts = {m["mountPath"]: m["name"] for m in pod_spec(dep)["containers"][0].get("volumeMounts", [])}
        cm = by.get(("ConfigMap", "aside-prometheus"))
        for rf in prom.get("rule_files", []):
            d, f = os.path.split(rf)
            if d not in mounts or not cm or f not in cm.get("data", {}):
                rep.add(f"rule file {rf} is not mounted from ConfigMap aside-prometheus in Deployment/aside-prometheus")
        if cm:
            for key, src in (("prometheus.yml", "prometheus/prometheus.yml"), ("alerts.yml", "prometheus/alerts.yml")):
                rep.count += 1
                if cm["data"].get(key) != open(os.path.join(ops, src)).read():
                    rep.add(f"ConfigMap aside-prometheus {key} differs from ops/{src}")
    # Grafana: datasource uid used by every panel; URL points at the Prometheus Service; provider path mounted.
    ds = yaml.safe_load(open(os.path.join(ops, "grafana", "datasource.yml")))["datasources"][0]
    dash = json.load(open(os.path.join(ops, "grafana", "dashboards", "aside.json")))
    rep.count += 2
    if dash.get("uid") != "aside":
        rep.add(f"dashboard uid is {dash.get('uid')!r}, want the fixed 'aside'")
    psvc = by.get(("Service", "aside-prometheus"))
    m = re.fullmatch(r"http://([^:/]+):(\d+)", ds.get("url", ""))
    if not m or not psvc or m.group(1) != "aside-prometheus" or int(m.group(2)) not in [p["port"] for p in psvc["spec"]["ports"]]:
        rep.add(f"datasource url {ds.get('url')!r} is not the aside-prometheus Service")
    exprs = []
    for p in dash.get("panels", []):
        if (p.get("datasource") or {}).get("uid") != ds["uid"]:
            rep.add(f"panel {p.get('title')!r}: datasource uid {(p.get('datasource') or {}).get('uid')!r} != provisioned {ds['uid']!r}")
        if not p.get("targets"):
            rep.add(f"panel {p.get('title')!r}: no queries")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != ds["uid"]:
                rep.add(f"panel {p.get('title')!r} query {t.get('refId')}: datasource uid mismatch")
            exprs.append((p.get("title"), t.get("expr", "")))
    titles = " | ".join(p.get("title", "").lower() for p in dash.get("panels", []))
    for want in ("request rate", "latency", "error ratio", "hit ratio", "outcomes", "db query", "records created", "ready replicas"):
        if want not in titles:
            rep.add(f"dashboard has no panel for {want!r}")
    alerts = yaml.safe_load(open(os.path.join(ops, "prometheus", "alerts.yml")))
    for g in alerts["groups"]:
        for r in g["rules"]:
            exprs.append((r.get("alert"), r["expr"]))
    for name, e in exprs:
        for metric in promql_metrics(e) - CONTRACT_METRICS - PROM_BUILTIN:
            rep.add(f"{name!r}: metric {metric!r} is not one the contract promises")
    prov = yaml.safe_load(open(os.path.join(ops, "grafana", "dashboards.yml")))["providers"][0]["options"]["path"]
    gdep = by.get(("Deployment", "aside-grafana"))
    if gdep and prov not in [m["mountPath"] for m in pod_spec(gdep)["containers"][0].get("volumeMounts", [])]:
        rep.add(f"dashboard provider path {prov} is not mounted in Deployment/aside-grafana")
    link = os.path.join(ROOT, "charts", "aside", "files")
    if not os.path.islink(link) or os.path.realpath(link) != os.path.realpath(ops):
        rep.add("charts/aside/files must be a symlink to ../../ops (one source of truth)")
    return rep.done("files")


# ---------------------------------------------------------------- compose
def check_compose(schema_path):
    rep = Report("compose")
    doc = yaml.safe_load(open(os.path.join(ROOT, "docker-compose.yml")))
    schema = json.load(open(schema_path))
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        rep.add(f"compose-spec: {e.message} at /{'/'.join(map(str, e.path))}")
    services = doc.get("services", {})
    rep.count = len(services)
    for want in ("aside", "aside-postgres", "aside-redis", "aside-prometheus", "aside-grafana"):
        if want not in services:
            rep.add(f"no service {want}")
    for name, s in services.items():
        img = s.get("image", "")
        if img.endswith(":latest") or (":" not in img.split("/")[-1] and "build" not in s):
            rep.add(f"service {name}: image {img!r} not pinned")
        for v in s.get("volumes") or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith("."):
                if not os.path.exists(os.path.join(ROOT, src)):
                    rep.add(f"service {name}: bind mount source {src} does not exist")
            elif src not in (doc.get("volumes") or {}):
                rep.add(f"service {name}: named volume {src} not declared")
        for dep in s.get("depends_on") or []:
            if dep not in services:
                rep.add(f"service {name}: depends_on unknown service {dep}")
    app = services.get("aside", {})
    env = app.get("environment") or {}
    for k in set(env) - SERVICE_ENV:
        rep.add(f"service aside: env {k} is not one the service reads (contract + METRICS_BIND_ADDR, DATABASE_POOLER, OTEL_*)")
    # /metrics on its own listener, scraped there by aside-prometheus, never published to the host.
    m = re.fullmatch(r".+:(\d+)", str(env.get("METRICS_BIND_ADDR", "")))
    if not m:
        rep.add("service aside: METRICS_BIND_ADDR unset: /metrics would share the published API port")
    else:
        mport = m.group(1)
        for pub in app.get("ports") or []:
            if str(pub).rsplit(":", 1)[-1].split("/")[0] == mport:
                rep.add(f"service aside: publishes the metrics port {mport} ({pub}) to the host")
        pc = yaml.safe_load(open(os.path.join(ROOT, "ops", "prometheus", "prometheus-compose.yml")))
        job = next((j for j in pc.get("scrape_configs", []) if j.get("job_name") == "aside"), {})
        targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
        if targets != [f"aside:{mport}"]:
            rep.add(f"prometheus-compose.yml job aside targets {targets}, want the metrics listener aside:{mport}")
    if app.get("healthcheck", {}).get("test") != ["CMD", "/usr/local/bin/aside", "healthcheck"]:
        rep.add("service aside: healthcheck is not the shell-free `aside healthcheck`")
    return rep.done("services")


# ---------------------------------------------------------------- dashboard expressions -> rules file
def dump_exprs(out):
    dash = json.load(open(os.path.join(ROOT, "ops", "grafana", "dashboards", "aside.json")))
    rules = []
    for p in dash["panels"]:
        for t in p["targets"]:
            expr = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "15s").replace("$__range", "1h")
            rules.append({"record": f"dashboard:panel{p['id']}:{t['refId'].lower()}", "expr": expr})
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(out, "w"), sort_keys=False)
    print(f"dashboard: {len(rules)} queries written to {out}")
    return 0


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(argv) >= 2 else 2
    cmd, args = argv[1], argv[2:]
    if cmd == "k8s":
        label = args[args.index("--label") + 1] if "--label" in args else os.path.basename(args[0])
        version = args[args.index("--version") + 1] if "--version" in args else os.environ.get("K8S_VERSION", "1.32")
        return check_k8s(args[0], label, version)
    if cmd == "budget":
        return check_budget(args[0])
    if cmd == "argocd":
        return check_argocd(args[0], args[1])
    if cmd == "argocd-install":
        return check_argocd_install(args[0])
    if cmd == "ops":
        return check_ops(args[0])
    if cmd == "compose":
        return check_compose(args[0])
    if cmd == "exprs":
        return dump_exprs(args[0])
    print(f"unknown check {cmd}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
