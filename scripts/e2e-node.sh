#!/usr/bin/env bash
# scripts/e2e-node.sh: aside's delivery on a real node — real containers, real kubelet, kube-proxy NodePorts.
#
# Usage: scripts/e2e-node.sh [-h|--help]
#   KEEP=1 leaves the node up at the end (scripts/node.sh down --dir <printed dir> stops it).
#
# Brings up scripts/node.sh (containerd + kubelet + kube-proxy + control plane + CoreDNS + local-path, every
# image built locally by scripts/images.sh), deploys with the real `scripts/deploy.sh --existing-cluster
# --overlay overlays/airgap`, then runs the scenarios below with load through 127.0.0.1:30080 (kube-proxy to
# the real pods); each prints PASS/FAIL with its number, and the run fails if any fails:
#   1 nothing -> all pods Ready (seconds; image sizes)      5 rolling update under load: 0 failed requests
#   2 API through the NodePort, Swagger UI, Prometheus      6 PDB: Eviction API 429, drain stops at the PDB
#   3 securityContext and limits read from the kernel       7 kills: an API container, Redis, Postgres
#   4 two replicas migrating an empty database at once      8 database password rotated in Secret + Postgres
#   9 NetworkPolicy: reported (the bridge CNI does not enforce policies)
#  10 backup: 200 records in the CronJob's pg_dump, the database volume deleted, scripts/restore.sh: 0 lost, later ones 404
# The node is torn down however the run ends.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/node/e2e-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/e2e-lib.sh"
help_exit "$@"
[[ $# == 0 ]] || { usage >&2; die "unknown argument: $1"; }

e2e_init node-e2e
PROM=http://127.0.0.1:30090
MIGRATION_LOCK_ID=107148317320449 # src/migration.rs MIGRATION_LOCK_ID (0x6173_6964_6501)
T0=$SECONDS

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -f "$NODE_DIR/env" ]]; then
    echo "---- e2e-node failed (exit $rc); state:" >&2
    kubectl get pods -A -o wide >&2 2>/dev/null || true
    kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 20 >&2 || true
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "KEEP=1: node left up. source $NODE_DIR/env; stop it with: scripts/node.sh down --dir $NODE_DIR" >&2
    return
  fi
  "$ROOT/scripts/node.sh" down --dir "$NODE_DIR" >&2 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

k() { kubectl -n "$NS" "$@"; }
available() { [[ "$(k get deployment aside -o jsonpath='{.status.availableReplicas} {.status.updatedReplicas} {.status.replicas}')" == "$1 $1 $1" ]]; }
# settled: every replica the Deployment wants (whatever the HPA made it) updated and available, none terminating.
settled() {
  local n
  n="$(k get deployment aside -o jsonpath='{.spec.replicas}')"
  available "$n" && [[ "$(api_pods | wc -l)" == "$n" ]]
}
pg() { k exec aside-postgres-0 -c postgres -- psql -h /var/run/postgresql -U aside -d aside -Atqc "$1"; }
# api_pods_listed: "NAME [DELETION-TIMESTAMP]" per API pod that still exists.
api_pods_listed() { k get pods -l app.kubernetes.io/name=aside -o jsonpath='{range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}'; }
# api_pods: the API pods that are not terminating.
api_pods() { api_pods_listed | awk 'NF == 1 { print $1 }'; }
# any_api_pods: every API pod that still exists, terminating ones included (they drain on kept-alive
# connections after they leave the Service).
any_api_pods() { api_pods_listed | awk '{ print $1 }'; }
# container_pid POD CONTAINER: the container's main process on this machine, from containerd.
container_pid() {
  local id
  id="$(k get pod "$1" -o jsonpath="{.status.containerStatuses[?(@.name==\"$2\")].containerID}")"
  id="${id#containerd://}"
  [[ -n "$id" ]] || return 1
  ctr --address "$CONTAINERD_ADDRESS" -n k8s.io tasks ls | awk -v id="$id" '$1 == id { print $2 }'
}

# --- 0. bad input to the node scripts: a clear message and exit code, nothing created -----------------------------
bad=()
expect() { # WANT-RC WANT-TEXT CMD...: CMD exits WANT-RC and says WANT-TEXT on stderr
  local want_rc="$1" want_text="$2" rc=0
  shift 2
  "$@" >/dev/null 2>"$WORK/bad.err" || rc=$?
  [[ "$rc" == "$want_rc" ]] && grep -q -- "$want_text" "$WORK/bad.err" || bad+=("'$*' -> rc $rc: $(head -c 200 "$WORK/bad.err")")
}
expect 2 "unknown argument: --frobnicate" "$ROOT/scripts/node.sh" up --frobnicate
expect 2 "say up, down or status" "$ROOT/scripts/node.sh"
expect 1 "valid image tag" "$ROOT/scripts/images.sh" --tag 'no spaces allowed'
expect 1 "no kustomization.yaml there" "$ROOT/scripts/deploy.sh" --existing-cluster --overlay overlays/nowhere
python3 -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 30080)); s.listen(); time.sleep(60)' &
squatter=$!
sleep 0.5
expect 1 "port 127.0.0.1:30080 is in use" "$ROOT/scripts/node.sh" up --dir "$WORK/busy"
kill "$squatter"
wait "$squatter" 2>/dev/null || true
ip link show asidebr0 >/dev/null 2>&1 && bad+=("a refused 'up' left the bridge behind")
if ((${#bad[@]} == 0)); then
  pass "bad input to the node scripts" "unknown flag / no command -> exit 2, bad tag / missing overlay / NodePort in use -> exit 1 with the reason, nothing created"
else
  fail "bad input to the node scripts" "${bad[*]}"
fi

# --- 1. nothing -> all pods Ready -------------------------------------------------------------------------
IMAGE_TAGS=roll "$ROOT/scripts/node.sh" up --dir "$NODE_DIR"
# shellcheck disable=SC1091
source "$NODE_DIR/env"
NODE_S="$(awk 'END { print $NF == "s" ? $(NF - 1) : $NF }' "$NODE_DIR/timings")"
start="$(now)"
(cd "$ROOT" && TIMEOUT=300s scripts/deploy.sh --existing-cluster --overlay overlays/airgap) >"$WORK/deploy.log" 2>&1 \
  || { cat "$WORK/deploy.log" >&2; die "deploy.sh --existing-cluster --overlay overlays/airgap failed"; }
wait_until 180 available 2 || die "aside never reached 2 available replicas: $(k get deploy,hpa,pods)"
DEPLOY_S="$(since "$start")"
TOKEN="$(k get secret aside -o jsonpath='{.data.API_TOKEN}' | base64 -d)"
# Every pod's status is the kubelet's: IPs on the node's bridge only, and kwok-controller (kwokctl's, kept for
# metrics-server) never touched a pod (it fakes Ready and pod IPs on the nodes it manages).
foreign_ips() {
  kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.podIP}{"\n"}{end}' |
    awk '$2 != "" && $2 !~ /^10\.244\.0\./'
  grep -h '"msg":"Patch pod"' "$NODE_DIR"/kwok/clusters/*/logs/kwok-controller.log 2>/dev/null | head -n 3
}
[[ -z "$(foreign_ips)" ]] || die "pods not run by the kubelet: $(foreign_ips)"
not_ready="$(kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | awk '$2 != "True"' | wc -l)"
running="$(k get pods --field-selector=status.phase=Running -o name | wc -l)"
sizes="$(awk '/ MB / { printf "%s %s MB, ", $1, $2 }' "$NODE_DIR/images.txt")"
if [[ "$not_ready" == 0 ]]; then
  pass "nothing -> all pods Ready" "node up in ${NODE_S} s, deploy.sh -> aside x2 + postgres + redis + prometheus Ready in ${DEPLOY_S} s ($running pods in $NS); images: ${sizes%, }"
else
  fail "nothing -> all pods Ready" "$not_ready pods not Ready: $(kubectl get pods -A | grep -v Running)"
fi

# --- 2. the API through kube-proxy's NodePort ----------------------------------------------------------------
req() { # METHOD PATH [BODY]: prints "STATUS X-CACHE" and leaves the body in $WORK/body
  curl -sS -o "$WORK/body" -D "$WORK/headers" -w '%{http_code}' -X "$1" "$API$2" \
    -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" ${3:+-d "$3"}
  printf ' %s' "$(awk -F': ' 'tolower($1) == "x-cache" { gsub(/\r/, "", $2); print $2 }' "$WORK/headers")"
}
key="e2e-node:$(date +%s%N)"
flow=()
flow+=("$(req POST /data "{\"key\": \"$key\", \"value\": {\"seq\": 1}}")")
id="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/body" 2>/dev/null || echo 0)"
flow+=("$(req GET "/data/$id")" "$(req GET "/data/$id")")
flow+=("$(req PUT "/data/$id" '{"value": {"seq": 2}}')")
flow+=("$(req GET "/data/$id")")
v2="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["value"]["seq"])' "$WORK/body" 2>/dev/null || echo '?')"
got="$(printf '%s|' "${flow[@]}")"
if [[ "$got" == "201 |200 MISS|200 HIT|200 |200 MISS|" && "$v2" == 2 ]]; then
  pass "API via 127.0.0.1:30080" "POST 201 -> GET MISS -> GET HIT -> PUT 200 -> GET MISS with the new value"
else
  fail "API via 127.0.0.1:30080" "got ${got//|/, } value $v2"
fi
docs="$(curl -sS -o "$WORK/docs" -w '%{http_code} %{content_type}' "$API/docs")"
spec="$(curl -sS "$API/openapi.json" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["openapi"], len(d["paths"]))' 2>/dev/null || echo none)"
ready="$(curl -sS "$API/ready")"
if [[ "$docs" == "200 text/html"* ]] && grep -qi swagger "$WORK/docs" && [[ "$spec" == 3.* && "$ready" == *'"status":"ready"'* ]]; then
  pass "Swagger UI, OpenAPI, /ready" "/docs 200 Swagger UI, /openapi.json $spec paths, /ready $ready"
else
  fail "Swagger UI, OpenAPI, /ready" "/docs '$docs', openapi '$spec', ready '$ready'"
fi
targets_up() {
  curl -sS "$PROM/api/v1/targets?state=active" | python3 -c '
import json, sys
t = [x for x in json.load(sys.stdin)["data"]["activeTargets"] if x["labels"].get("job") == "aside"]
up = [x for x in t if x["health"] == "up"]
print(len(up), len(t))
sys.exit(0 if len(up) == 2 and len(t) == 2 else 1)'
}
if wait_until 90 targets_up; then
  pass "Prometheus scrapes the API pods" "2/2 aside targets up (in-cluster Prometheus, endpointslice discovery) after $WAITED s"
else
  fail "Prometheus scrapes the API pods" "targets (up, total): $(targets_up || true)"
fi

# --- 3. what the runtime enforces, read from the kernel ------------------------------------------------------
# For every running container in the namespace: uid/gid, no_new_privs, capabilities, read-only root mount,
# cgroup memory limit and CPU quota — compared with what the pod spec asks for.
sec_report="$WORK/security.txt"
: >"$sec_report"
sec_bad=0
for pod in $(k get pods --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'); do
  k get pod "$pod" -o json >"$WORK/pod.json"
  for c in $(python3 -c 'import json,sys; print(" ".join(c["name"] for c in json.load(open(sys.argv[1]))["spec"]["containers"]))' "$WORK/pod.json"); do
    pid="$(container_pid "$pod" "$c")" || true
    [[ -n "$pid" ]] || { echo "$pod/$c: no task" >>"$sec_report"; sec_bad=$((sec_bad + 1)); continue; }
    cg_mem="$(awk -F: '$2 == "memory" { print $3 }' "/proc/$pid/cgroup")"
    cg_cpu="$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ { print $3 }' "/proc/$pid/cgroup")"
    cpu_ctrl="$(find /sys/fs/cgroup -maxdepth 1 -name 'cpu,cpuacct' -o -maxdepth 1 -name cpu | head -n1)"
    if ! python3 - "$WORK/pod.json" "$c" "$pid" "/sys/fs/cgroup/memory$cg_mem" "$cpu_ctrl$cg_cpu" >>"$sec_report" <<'PY'; then
import json, sys
pod, name, pid, mem_cg, cpu_cg = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
spec = next(c for c in pod["spec"]["containers"] if c["name"] == name)
psc, csc = pod["spec"].get("securityContext", {}), spec.get("securityContext", {})
want_uid = csc.get("runAsUser", psc.get("runAsUser"))
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
uid = int(status["Uid"].split()[1])
nnp = status["NoNewPrivs"].strip() == "1"
capeff = int(status["CapEff"].strip(), 16)
root_opts = next(l.split()[5] for l in open(f"/proc/{pid}/mountinfo") if l.split()[4] == "/")
ro = "ro" in root_opts.split(",")
mem = int(open(f"{mem_cg}/memory.limit_in_bytes").read())
quota, period = int(open(f"{cpu_cg}/cpu.cfs_quota_us").read()), int(open(f"{cpu_cg}/cpu.cfs_period_us").read())
def bytes_of(q):
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    return int(q[:-2]) * units[q[-2:]] if q[-2:] in units else int(q)
def millis(q):
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)
lim = spec.get("resources", {}).get("limits", {})
checks = {
    "uid": (want_uid is None or uid == want_uid, f"uid {uid}"),
    "non-root": (uid != 0, ""),
    "no_new_privs": (nnp == (csc.get("allowPrivilegeEscalation") is False) or nnp, f"NoNewPrivs {int(nnp)}"),
    "caps": (capeff == 0 or "ALL" not in csc.get("capabilities", {}).get("drop", []), f"CapEff {capeff:x}"),
    "ro-root": (ro == bool(csc.get("readOnlyRootFilesystem")), f"root {'ro' if ro else 'rw'}"),
    "memory": ("memory" not in lim or mem == bytes_of(lim["memory"]), f"mem {mem // 1024**2} Mi"),
    "cpu": ("cpu" not in lim or quota * 1000 // period == millis(lim["cpu"]), f"cpu quota {quota * 1000 // period}m"),
}
bad = [k for k, (ok, _) in checks.items() if not ok]
print(f"{pod['metadata']['name']}/{name}: " + ", ".join(d for _, d in checks.values() if d) + (f"  MISMATCH {bad}" if bad else ""))
sys.exit(1 if bad else 0)
PY
      sec_bad=$((sec_bad + 1))
    fi
  done
done
aside_line="$(grep -m1 '^aside-[a-z0-9]*-[a-z0-9]*/aside:' "$sec_report" | cut -d: -f2- || true)"
if [[ "$sec_bad" == 0 && -s "$sec_report" ]]; then
  pass "securityContext + limits enforced" "$(wc -l <"$sec_report") containers match their spec in the kernel; aside:$aside_line"
else
  fail "securityContext + limits enforced" "$sec_bad mismatches: $(grep -E 'MISMATCH|no task' "$sec_report" | tr '\n' ';')"
fi

# --- 4. two replicas, one empty database, at once ---------------------------------------------------------------
# Scaled to 0 (the HPA stands aside at 0), the schema dropped, then two pods started together while a psql
# session holds the migration lock: both init containers are provably waiting at once; then it is released.
migrations_before="$(pg "SELECT count(*) FROM seaql_migrations")"
k scale deployment aside --replicas=0 >/dev/null
no_api_pods() { [[ -z "$(k get pods -l app.kubernetes.io/name=aside -o name)" ]]; } # terminating ones too
wait_until 60 no_api_pods || die "aside pods did not stop"
pg "DROP SCHEMA public CASCADE; CREATE SCHEMA public AUTHORIZATION aside;" >/dev/null
mkfifo "$WORK/lock.in"
k exec -i aside-postgres-0 -c postgres -- psql -h /var/run/postgresql -U aside -d aside -Atq <"$WORK/lock.in" >"$WORK/lock.out" 2>&1 &
LOCK_PID=$!
exec 7>"$WORK/lock.in"
echo "BEGIN; SELECT pg_advisory_xact_lock($MIGRATION_LOCK_ID); SELECT 'locked';" >&7
wait_until 20 grep -qx locked "$WORK/lock.out" || die "could not take the migration lock: $(cat "$WORK/lock.out")"
k scale deployment aside --replicas=2 >/dev/null
two_waiting() { [[ "$(pg "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")" == 2 ]]; }
if wait_until 90 two_waiting; then both_waited=1; else both_waited=0; fi
echo "COMMIT;" >&7
exec 7>&-
wait "$LOCK_PID" || true
migrate_ok() {
  local p codes=""
  for p in $(api_pods); do codes+="$(k get pod "$p" -o jsonpath='{.status.initContainerStatuses[0].state.terminated.exitCode}') "; done
  [[ "$codes" == "0 0 " ]]
}
if wait_until 120 available 2 && migrate_ok; then
  migrations_after="$(pg "SELECT count(*) FROM seaql_migrations")"
  tables="$(pg "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'records'")"
  if [[ "$both_waited" == 1 && "$migrations_after" == "$migrations_before" && "$tables" == 1 ]]; then
    pass "2 replicas, empty database, at once" "both migrate init containers waited on the lock together; one applied $migrations_after migrations, the other found them applied; 1 records table; both Ready in $WAITED s after release"
  else
    fail "2 replicas, empty database, at once" "waited together=$both_waited, migrations $migrations_after (want $migrations_before), records tables $tables"
  fi
else
  fail "2 replicas, empty database, at once" "init containers: $(k get pods -l app.kubernetes.io/name=aside -o jsonpath='{.items[*].status.initContainerStatuses[0].state}')"
fi

# --- 5. rolling update under load -------------------------------------------------------------------------------
load_start roll
t_roll="$(now)"
k set image deployment/aside aside=aside:roll migrate=aside:roll >/dev/null
rolled() { [[ "$(k get deployment aside -o jsonpath='{.spec.template.spec.containers[0].image}')" == aside:roll ]] && settled; }
if wait_until 180 rolled; then roll_s="$WAITED"; else roll_s=timeout; fi
sleep 3 # requests to the last old pod's drain are counted too
load_stop roll
s="$(sum roll)"
during="$(sum roll --from "$t_roll")"
if [[ "$roll_s" != timeout && "$(field "$s" failed)" == 0 && "$(field "$s" total)" -gt 100 ]]; then
  pass "rolling update under load" "aside:0.1.0 -> aside:roll in $roll_s s: 0 failed of $(field "$s" total) requests ($(field "$during" total) during the roll, $(field "$s" put_ok) writes acknowledged)"
else
  fail "rolling update under load" "roll $roll_s s; $s"
fi

# --- 6. the PDB, for real -----------------------------------------------------------------------------------------
evict() { # POD: prints the HTTP outcome of an Eviction (201 or the refusal)
  if kubectl create --raw "/api/v1/namespaces/$NS/pods/$1/eviction" -f - >"$WORK/evict.out" 2>&1 <<JSON; then
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "$1", "namespace": "$NS"}}
JSON
    echo 201
  else
    grep -q 'TooManyRequests\|disruption budget' "$WORK/evict.out" && echo 429 || echo "error: $(cat "$WORK/evict.out")"
  fi
}
# The HPA is pinned at 2 for this scenario (the load would scale it to 3, and the budget is about the
# manifest's 2-replica floor); the evictions start from a settled state the PDB controller has counted.
hpa0="$(k get hpa aside -o jsonpath='{"{"}"spec": {"{"}"minReplicas": {.spec.minReplicas}, "maxReplicas": {.spec.maxReplicas}{"}}"}')"
k patch hpa aside -p '{"spec": {"minReplicas": 2, "maxReplicas": 2}}' >/dev/null
pdb_state() { k get pdb aside -o jsonpath='{.status.expectedPods} {.status.currentHealthy} {.status.disruptionsAllowed}'; }
budget_ready() { settled && [[ "$(pdb_state)" == "2 2 1" ]]; }
load_start pdb
wait_until 120 budget_ready || die "the PDB never settled at 2 healthy / 1 allowed: $(pdb_state); $(k get pods)"
mapfile -t pods < <(api_pods)
before="pdb $(pdb_state), ready $(k get pods -l app.kubernetes.io/name=aside -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{" "}{end}')"
first="$(evict "${pods[0]}")"
mid="pdb $(pdb_state)"
second="$(evict "${pods[1]}")"
wait_until 120 budget_ready && replaced="$WAITED" || replaced=timeout
again="$(evict "${pods[1]}")"
wait_until 120 budget_ready || true
start="$(now)"
if kubectl drain aside-node --pod-selector=app.kubernetes.io/name=aside --delete-emptydir-data --timeout=20s >"$WORK/drain.log" 2>&1; then
  drained=1
else
  drained=0
fi
refused="$(grep -c 'violate the pod' "$WORK/drain.log" || true)"
kubectl uncordon aside-node >/dev/null
wait_until 120 budget_ready && back="$WAITED" || back=timeout
load_stop pdb
k patch hpa aside -p "$hpa0" >/dev/null
s="$(sum pdb)"
if [[ "$first" == 201 && "$second" == 429 && "$again" == 201 && "$drained" == 0 && "$refused" -ge 1 && "$(field "$s" failed)" == 0 ]]; then
  pass "PDB: evictions and drain" "evict #1 201, #2 429 while its replacement was not Ready (Ready in $replaced s), then 201; drain refused $refused times and timed out; back to 2 in $back s after uncordon; 0 failed of $(field "$s" total) requests"
else
  fail "PDB: evictions and drain" "evictions $first/$second/$again (before: $before; after the first: $mid), drain rc-ok=$drained refused=$refused; load $s"
fi

# --- 7. kills at the runtime ------------------------------------------------------------------------------------------
# a. An API container SIGKILLed by containerd (not through Kubernetes) under load.
load_start kill
sleep 2
victim="$(api_pods | head -n1)"
restarts0="$(k get pod "$victim" -o jsonpath='{.status.containerStatuses[0].restartCount}')"
t_kill="$(now)"
ctr --address "$CONTAINERD_ADDRESS" -n k8s.io tasks kill -s SIGKILL "$(k get pod "$victim" -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|containerd://||')"
back_ready() { [[ "$(k get pod "$victim" -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}')" == "$((restarts0 + 1)) true" ]]; }
wait_until 120 back_ready && kill_back="$WAITED" || kill_back=timeout
sleep 2
load_stop kill
s="$(sum kill --from "$t_kill")"
last_fail="$(field "$s" last_fail)"
if [[ "$kill_back" != timeout && ("$last_fail" == - || $(echo "$last_fail <= 10" | bc) == 1) ]]; then
  pass "API container killed" "restarted and Ready in $kill_back s; $(field "$s" failed) of $(field "$s" total) requests failed ($(field "$s" failed_kinds)), the last $(field "$s" last_fail) s after the kill"
else
  fail "API container killed" "back in $kill_back s; $s"
fi

# b. Redis killed: reads go on (BYPASS), hits come back.
load_start redis
sleep 2
rpod="$(k get pods -l app.kubernetes.io/name=aside-redis -o jsonpath='{.items[0].metadata.name}')"
t_kill="$(now)"
ctr --address "$CONTAINERD_ADDRESS" -n k8s.io tasks kill -s SIGKILL "$(k get pod "$rpod" -o jsonpath='{.status.containerStatuses[0].containerID}' | sed 's|containerd://||')"
redis_ready() { [[ "$(k get pod "$rpod" -o jsonpath='{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].ready}')" == "1 true" ]]; }
wait_until 120 redis_ready && redis_back="$WAITED" || redis_back=timeout
t_back="$(now)"
hit_again() { [[ "$(req GET "/data/$id")" == "200 HIT" ]]; }
req GET "/data/$id" >/dev/null
wait_until 30 hit_again && hit_s="$WAITED" || hit_s=timeout
load_stop redis
s="$(sum redis --from "$t_kill")"
out="$(sum redis --from "$t_kill" --to "$t_back")"
if [[ "$redis_back" != timeout && "$hit_s" != timeout && "$(field "$s" failed)" == 0 && "$(field "$out" bypass)" -gt 0 ]]; then
  pass "Redis killed" "0 failed of $(field "$s" total) requests; $(field "$out" bypass) BYPASS answers while Redis was down ($redis_back s to Ready); HIT again $hit_s s later"
else
  fail "Redis killed" "Redis back $redis_back s, HIT $hit_s s; $s; down: $out"
fi

# c. Postgres restarted (the pod deleted; the StatefulSet brings it back on the same PVC) under load.
load_start pg --probe "$API/ready"
sleep 2
pv0="$(k get pvc data-aside-postgres-0 -o jsonpath='{.spec.volumeName}')"
pg_uid="$(k get pod aside-postgres-0 -o jsonpath='{.metadata.uid}')"
pg_gone() { [[ "$(k get pod aside-postgres-0 -o jsonpath='{.metadata.uid}' 2>/dev/null)" != "$pg_uid" ]]; }
t_stop="$(now)"
k delete pod aside-postgres-0 --wait=false >/dev/null
pg_ready() { pg_gone && [[ "$(k get pod aside-postgres-0 -o jsonpath='{.status.containerStatuses[0].ready}')" == true ]]; }
wait_until 120 pg_ready && pg_back="$WAITED" || pg_back=timeout
ready_again() { [[ "$(curl -s -o /dev/null -w '%{http_code}' "$API/ready")" == 200 ]]; }
wait_until 60 ready_again || true
t_ready="$(now)"
sleep 8
load_stop pg
during="$(sum pg --from "$t_stop" --to "$t_ready")"
after="$(sum pg --from "$t_ready")"
# Every acknowledged write is in the database: per record, the stored seq >= the last acknowledged one.
lost="$(pg "SELECT id, value->>'seq' FROM records WHERE key LIKE 'drill:%'" | python3 -c '
import json, sys
stored = {int(i): int(s) for i, s in (l.strip().split("|") for l in sys.stdin if l.strip())}
acked = {}
for r in json.load(open(sys.argv[1]))["reqs"]:
    if r[0] == "put" and 200 <= r[5] <= 299 and r[10] is None:
        acked[r[2]] = max(acked.get(r[2], 0), list(r[9].values())[0])
print(sum(1 for i, s in acked.items() if stored.get(i, -1) < s), sum(1 for _ in acked))' "$WORK/pg.json")"
wrong="$(python3 -c '
import json, sys
t0, t1 = float(sys.argv[2]), float(sys.argv[3])
bad = [r for r in json.load(open(sys.argv[1]))["reqs"] if t0 <= r[3] < t1 and not (200 <= r[5] <= 299)
       and not (r[5] == 503 and (r[7] or "").startswith("application/problem+json"))]
print(len(bad))' "$WORK/pg.json" "$t_stop" "$t_ready")"
pv1="$(k get pvc data-aside-postgres-0 -o jsonpath='{.spec.volumeName}')"
if [[ "$pg_back" != timeout && "$wrong" == 0 && "$(field "$after" failed)" == 0 && "${lost%% *}" == 0 && "$pv0" == "$pv1" ]]; then
  pass "Postgres restarted" "back in $pg_back s on the same PVC; during: $(field "$during" 5xx) clear 503s, 0 other failures; after /ready 200: 0 failed of $(field "$after" total); 0 of ${lost##* } written records lost"
else
  fail "Postgres restarted" "back $pg_back s, PV $pv0 -> $pv1; during: $wrong not 2xx/503-problem ($during); after: $after; lost/records $lost"
fi

# --- 8. database password rotation ------------------------------------------------------------------------------------
load_start rotate
newpw="rotated-$(openssl rand -hex 12)"
oldurl="$(k get secret aside -o jsonpath='{.data.DATABASE_URL}' | base64 -d)"
newurl="$(sed -E "s#^(postgres://[^:]+:)[^@]*@#\1$newpw@#" <<<"$oldurl")"
pg "ALTER USER aside PASSWORD '$newpw'" >/dev/null
k create secret generic aside-postgres --dry-run=client -o yaml --from-literal=POSTGRES_USER=aside \
  --from-literal=POSTGRES_PASSWORD="$newpw" --from-literal=POSTGRES_DB=aside | k apply -f - >/dev/null 2>&1
k patch secret aside --type merge -p "{\"stringData\": {\"DATABASE_URL\": \"$newurl\"}}" >/dev/null
old_pods="$(api_pods | sort | tr '\n' ' ')"
k rollout restart deployment/aside >/dev/null
t_roll="$(now)"
# Rolled = the old pods are gone, not merely terminating: while one drains it still answers on kept-alive
# connections, and a statement there that needs a new connection still uses the old password (a 503).
rotated() { settled && [[ -z "$(comm -12 <(any_api_pods | sort) <(tr ' ' '\n' <<<"$old_pods" | sort))" ]]; }
wait_until 180 rotated && rot_s="$WAITED" || rot_s=timeout
t_done="$(now)"
sleep 5
load_stop rotate
s="$(sum rotate)"
past="$(sum rotate --from "$t_done")"
old_refused="$(k exec aside-postgres-0 -c postgres -- env PGPASSWORD=local-dev-postgres-password psql -h 127.0.0.1 -U aside -d aside -Atc 'SELECT 1' 2>&1 | grep -c 'password authentication failed' || true)"
if [[ "$rot_s" != timeout && "$(field "$past" 5xx)" == 0 && "$(field "$past" total)" -gt 0 && "$old_refused" == 1 ]]; then
  pass "database password rotation" "Secret + Postgres changed, pods rolled in $rot_s s and reconnected; 0 5xx of $(field "$past" total) requests after the roll ($(field "$s" 5xx) 5xx during it: $(field "$s" failed_kinds), old pods opening connections with the old password); the old password is refused"
else
  fail "database password rotation" "roll $rot_s s, old password refused=$old_refused; all: $s; after the roll: $past"
fi

# --- 9. NetworkPolicy -----------------------------------------------------------------------------------------------------
policies="$(k get networkpolicy -o name | wc -l)"
if k exec aside-postgres-0 -c postgres -- bash -c 'exec 3<>/dev/tcp/aside-redis/6379' 2>/dev/null; then
  echo "INFO  NetworkPolicy                         $policies policies applied but NOT enforced: the bridge CNI has no policy engine (postgres -> redis:6379 connected although no policy allows it)" | tee -a "$RESULTS"
else
  echo "INFO  NetworkPolicy                         postgres -> redis:6379 refused" | tee -a "$RESULTS"
fi

# --- 10. backup -> the database volume lost -> restore -----------------------------------------------------------
# 200 records written and read (so cached), the CronJob's Job run; then 5 more written and one of the 200 changed,
# all read (cached too); then the Postgres volume deleted (an empty database comes up) and the dump restored with
# the operator's own scripts/restore.sh: the 200 are back with their backed-up values, the 5 are 404, and no read
# is served from what the cache held before the restore.
records() { # CMD ARGS...: the drill's bulk requests through the NodePort (one process, not a curl per request)
  python3 - "$API" "$TOKEN" "$@" <<'PY'
import json, sys, time, urllib.error, urllib.request
api, token, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def call(method, path, body=None):
    for attempt in range(3):  # a connection refused while kube-proxy's endpoints settle; HTTP answers are final
        req = urllib.request.Request(api + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers.get("X-Cache", ""), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("X-Cache", ""), None
        except OSError:
            if attempt == 2:
                raise
            time.sleep(1)
if cmd == "write":  # PREFIX N OUT: POST N records, GET each twice; OUT gets "id i" lines
    prefix, n, out = args[0], int(args[1]), args[2]
    created = hits = 0
    with open(out, "w") as f:
        for i in range(n):
            st, _, body = call("POST", "/data", {"key": f"{prefix}{i}", "value": {"i": i}})
            if st != 201:
                continue
            created += 1
            call("GET", f"/data/{body['id']}")
            hits += call("GET", f"/data/{body['id']}")[1] == "HIT"
            f.write(f"{body['id']} {i}\n")
    print(f"created={created} hit={hits}")
elif cmd == "change":  # ID I: PUT value {"i": I}, GET it twice
    st = call("PUT", f"/data/{args[0]}", {"value": {"i": int(args[1])}})[0]
    call("GET", f"/data/{args[0]}")
    print(st, call("GET", f"/data/{args[0]}")[1])
elif cmd == "check":  # KEPT GONE: every KEPT id 200 with its value, every GONE id 404; X-Cache of the first reads
    kept = [l.split() for l in open(args[0])]
    gone = [l.split()[0] for l in open(args[1])]
    lost = wrong = served = hits = 0
    for i, v in kept:
        st, xc, body = call("GET", f"/data/{i}")
        hits += xc == "HIT"
        if st != 200:
            lost += 1
        elif body["value"] != {"i": int(v)}:
            wrong += 1
    for i in gone:
        st, xc, _ = call("GET", f"/data/{i}")
        hits += xc == "HIT"
        served += st != 404
    print(f"kept={len(kept)} lost={lost} wrong={wrong} gone={len(gone)} served={served} hit={hits}")
elif cmd == "reuse":  # GONE: a new record; if it got the id of a lost one, is its own value what a GET reads?
    gone = {l.split()[0] for l in open(args[0])}
    st, _, body = call("POST", "/data", {"key": f"after-restore-{time.time_ns()}", "value": {"new": True}})
    got = call("GET", f"/data/{body['id']}")[2] if st == 201 else None
    print(f"{st} {body['id'] if body else '-'} {'reused' if st == 201 and str(body['id']) in gone else 'fresh'} "
          f"{'own' if got and got['value'] == {'new': True} else 'stale'}")
PY
}
run_id="$(date +%s)"
wrote="$(records write "backup:$run_id:" 200 "$WORK/kept.txt")"
job_done() { k get job "$1" -o jsonpath='{.status.conditions[?(@.status=="True")].type}' | grep -qwE 'Complete|Failed'; }
backup_job="aside-postgres-backup-e2e-$run_id"
t_backup="$(now)"
k create job --from=cronjob/aside-postgres-backup "$backup_job" >/dev/null
wait_until 180 job_done "$backup_job" || true
backup_s="$(since "$t_backup")"
backup_log="$(k logs "job/$backup_job" 2>&1 || true)"
read -r dump dump_bytes < <(awk '$1 == "dump:" && $3 ~ /^[0-9]+$/ { print $2, $3 }' <<<"$backup_log") || true
after="$(records write "after-backup:$run_id:" 5 "$WORK/gone.txt")"
changed="$(records change "$(head -n1 "$WORK/kept.txt" | cut -d' ' -f1)" -1)"
# The volume lost: the StatefulSet at 0, its PVC deleted (retention Retain keeps it otherwise), back at 1 on a new
# empty volume, where the entrypoint creates an empty database.
pv_old="$(k get pvc data-aside-postgres-0 -o jsonpath='{.spec.volumeName}')"
k scale statefulset aside-postgres --replicas=0 >/dev/null
pg_pod_gone() { ! k get pod aside-postgres-0 >/dev/null 2>&1; }
wait_until 120 pg_pod_gone || die "aside-postgres-0 did not stop"
k delete pvc data-aside-postgres-0 --wait=true --timeout=60s >/dev/null
k scale statefulset aside-postgres --replicas=1 >/dev/null
pg_up() { [[ "$(k get pod aside-postgres-0 -o jsonpath='{.status.containerStatuses[0].ready}' 2>/dev/null)" == true ]]; }
wait_until 120 pg_up || die "Postgres did not come back on a new volume: $(k get pod,pvc)"
pv_new="$(k get pvc data-aside-postgres-0 -o jsonpath='{.spec.volumeName}')"
tables_left="$(pg "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")"
t_restore="$(now)"
restored="$(TIMEOUT=180 "$ROOT/scripts/restore.sh" --from "${dump:-none}" 2>"$WORK/restore.log")" || true
restore_s="$(since "$t_restore")"
checked="$(records check "$WORK/kept.txt" "$WORK/gone.txt")"
reuse="$(records reuse "$WORK/gone.txt")"
echo "backup drill: wrote $wrote; backup $(tr '\n' ' ' <<<"$backup_log"); after the backup $after, changed $changed; PV $pv_old -> $pv_new, $tables_left tables; $restored; $checked; new record: $reuse" >"$WORK/backup-drill.txt"
if [[ "$wrote" == "created=200 hit=200" && -n "${dump:-}" && "$after" == "created=5 hit=5" && "$changed" == "200 HIT" \
  && "$pv_new" != "$pv_old" && "$tables_left" == 0 && "$restored" == restored* \
  && "$checked" == "kept=200 lost=0 wrong=0 gone=5 served=0 hit=0" && "$reuse" == 201*" own" ]]; then
  pass "backup -> volume lost -> restore" "200 records (read back as HITs) in a pg_dump of $dump_bytes bytes (Job $backup_s s); 5 written + 1 changed after it, cached; PVC deleted -> empty database; restore.sh $restore_s s (${restored#*: }): 200 back, 0 lost, 0 wrong (the changed one at its backed-up value), the 5 later ones 404, 0 of the first 205 reads a HIT; a new record ($(cut -d' ' -f3 <<<"$reuse") id) reads its own value"
else
  fail "backup -> volume lost -> restore" "$(cat "$WORK/backup-drill.txt"); restore.sh: $(tail -n 5 "$WORK/restore.log" | tr '\n' ' ')"
fi

if [[ -z "$(foreign_ips)" ]]; then
  pass "every pod run by the kubelet" "all pod IPs on the node bridge 10.244.0.0/24, no pod status written by kwok-controller"
else
  fail "every pod run by the kubelet" "$(foreign_ips | tr '\n' ';')"
fi

echo
echo "e2e-node: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed, $((SECONDS - T0)) s (real node: kubelet $(kubelet --version 2>/dev/null | awk '{ print $2 }'), containerd $(containerd --version | awk '{ print $3 }'))"
! grep -q '^FAIL' "$RESULTS"
