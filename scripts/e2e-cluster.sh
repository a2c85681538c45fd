#!/usr/bin/env bash
# scripts/e2e-cluster.sh: what needs simulated capacity, on a real Kubernetes control plane with kwok's nodes.
#
# Usage: scripts/e2e-cluster.sh [-h|--help]
#   KEEP=1 leaves the cluster up and prints how to reach it; E2E_TOOLS_BIN=DIR uses binaries built elsewhere.
#
# What runs (all built from Go modules by scripts/cluster-tools.sh, cached outside the checkout):
#   - kwok cluster (kwokctl --runtime binary): etcd 3.6, kube-apiserver with admission and RBAC, the real
#     kube-controller-manager and kube-scheduler, kwok-controller (nodes and pods simulated: pods become
#     Running/Ready without containers) and metrics-server (pod CPU from kwok's resource-usage emulation);
#     nodes sized like the k3d node (2 CPU, 4 GiB allocatable, 110 pods), so the real scheduler decides
#     whether the stack fits; a StorageClass "local-path" (default, WaitForFirstConsumer, as in k3s) whose
#     provisioner is a stand-in loop here: it makes a node-pinned hostPath PV for each claim the scheduler
#     placed, the way k3s's local-path provisioner does.
#   - the real `scripts/deploy.sh --existing-cluster` (plain manifests), then the scenarios that need capacity
#     no single real node here has: the stack fitting a k3d-sized node, the HPA scaling on CPU, a drain onto a
#     second node, and the chart installed beside it (helm install/upgrade/rollback).
# Argo CD and everything GitOps runs in the cluster on a real node (scripts/e2e-gitops.sh); real containers,
# probes, rolls and evictions under load too (scripts/e2e-node.sh). Each scenario prints PASS/FAIL with a
# number, and the run fails if any fails. Nothing here runs a container.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v git >/dev/null || apt_install git
command -v openssl >/dev/null || apt_install openssl

BIN="${E2E_TOOLS_BIN:-$("$ROOT/scripts/cluster-tools.sh" --print-bin)}"
export PATH="$BIN:$PATH"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/aside-e2e.XXXXXX")"
CLUSTER=aside-e2e
export KWOK_WORKDIR="$WORK/kwok"
export KUBECONFIG="$KWOK_WORKDIR/clusters/$CLUSTER/kubeconfig.yaml"
PIDS=()
RESULTS="$WORK/results"
: >"$RESULTS"
T0=$SECONDS

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -f "$KUBECONFIG" ]]; then
    echo "---- e2e failed (exit $rc); state:" >&2
    kubectl get pods -A -o wide >&2 2>/dev/null || true
    tail -n 20 "$WORK"/*.log >&2 2>/dev/null || true
  fi
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "KEEP=1: cluster left up. export KUBECONFIG=$KUBECONFIG (stop: kill ${PIDS[*]}; KWOK_WORKDIR=$KWOK_WORKDIR kwokctl delete cluster --name $CLUSTER)" >&2
    return
  fi
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kwokctl delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pass() { printf 'PASS  %-34s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
fail() { printf 'FAIL  %-34s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
k() { kubectl "$@"; }

# --- 1. the control plane ---------------------------------------------------------------------------------
log "kwok cluster $CLUSTER (kube-apiserver $(kube-apiserver --version | cut -d' ' -f2), etcd $(etcd --version | sed -n 's/^etcd Version: //p'), kwok $(kwok --version | awk '{ print $3 }'))"
cat >"$WORK/kwok.yaml" <<YAML
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  kwokControllerBinary: $BIN/kwok
  etcdBinary: $BIN/etcd
  metricsServerBinary: $BIN/metrics-server
  kubectlBinary: $BIN/kubectl
  # kwokctl would fetch metrics-server's RBAC/APIService from GitHub; the pinned module carries the same base.
  metricsServerManifests:
    - $(cd "$ROOT/tools/metrics-server" && go list -m -f '{{.Dir}}' sigs.k8s.io/metrics-server)/manifests/base
YAML
kwokctl -c "$WORK/kwok.yaml" create cluster --name "$CLUSTER" --runtime binary --kubeconfig "" \
  --enable metrics-server --wait 3m >"$WORK/kwokctl.log" 2>&1 || { cat "$WORK/kwokctl.log" >&2; die "kwokctl create cluster failed"; }
# add_node NAME: a kwok node sized like the k3d server node (2 CPU, 4 GiB, 110 pods), as kwokctl's own node
# template makes it, but with its InternalIP on loopback: metrics-server scrapes each node's kubelet endpoint
# (kwok-controller, bound to 127.0.0.1) at that address.
add_node() {
  k apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/$1/metrics/resource
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: $1
    type: kwok
status:
  addresses:
    - {type: InternalIP, address: 127.0.0.1}
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  nodeInfo: {architecture: amd64, operatingSystem: linux}
YAML
}
# One node first: the scheduler must fit the whole stack into 2 CPU / 4 GiB.
NODE1=kwok-node-1
add_node "$NODE1"
node_ready() { [[ "$(k get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
wait_until 60 node_ready "$NODE1" || die "node $NODE1 never became Ready"
log "node $NODE1: allocatable $(k get node "$NODE1" -o jsonpath='{.status.allocatable.cpu} CPU, {.status.allocatable.memory}')"

# A stand-in for what k3s ships and kwok has not: the local-path provisioner (the class, and a loop that
# answers the scheduler's choice of node with a PV pinned there).
k apply -f - >/dev/null <<'YAML'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
YAML
provision_loop() {
  set +e # a failed round (API server busy, object gone) must not end the loop
  local ns name node size uid
  while sleep 1; do
    k get pvc -A -o jsonpath='{range .items[?(@.status.phase=="Pending")]}{.metadata.namespace} {.metadata.name} {.metadata.annotations.volume\.kubernetes\.io/selected-node} {.spec.resources.requests.storage} {.metadata.uid}{"\n"}{end}' 2>/dev/null |
      while read -r ns name node size uid; do
        [[ -n "$node" ]] || continue
        k apply -f - >/dev/null 2>&1 <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pvc-$uid
  annotations:
    pv.kubernetes.io/provisioned-by: rancher.io/local-path
spec:
  capacity:
    storage: $size
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: local-path
  claimRef:
    namespace: $ns
    name: $name
    uid: $uid
  hostPath:
    path: /var/lib/local-path/pvc-$uid
  nodeAffinity:
    required:
      nodeSelectorTerms:
        - matchExpressions:
            - key: kubernetes.io/hostname
              operator: In
              values: [$node]
YAML
      done
  done
}
provision_loop &
PIDS+=($!)

# --- 2. the real deploy.sh, plain manifests ---------------------------------------------------------------
log "deploy.sh --existing-cluster"
start=$SECONDS
if ! (cd "$ROOT" && XDG_STATE_HOME="$WORK/state" TIMEOUT=300s scripts/deploy.sh --existing-cluster) >"$WORK/deploy.log" 2>&1; then
  cat "$WORK/deploy.log" >&2
  die "deploy.sh --existing-cluster failed"
fi
DEPLOY_S=$((SECONDS - start))

# --- 3. scenarios ----------------------------------------------------------------------------------------
live_is() { [[ "$(k -n aside get "$1" "$2" -o jsonpath="$3" 2>/dev/null)" == "$4" ]]; }
# watch_field NAME KIND OBJ JSONPATH: records every value the field takes (a watch: no transition is missed).
watch_field() {
  k -n aside get "$2" "$3" --watch --output-watch-events=false -o jsonpath="$4{\"\n\"}" >"$WORK/watch-$1" 2>/dev/null &
  WATCH_PID=$!
}
watch_min() { kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; sed 's/^$/0/' "$WORK/watch-$1" | sort -n | head -n1; }

# The whole stack fits one k3d-sized node: every object of k8s/ created, every pod scheduled there and Ready.
want="$(kustomize build "$ROOT/k8s" | grep -c '^kind:')"
pending="$(k get pods -A --field-selector=status.phase=Pending -o name | wc -l)"
unscheduled="$(k get pods -n aside -o jsonpath='{range .items[?(@.spec.nodeName=="")]}{.metadata.name}{" "}{end}')"
not_ready="$(k get pods -n aside -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | awk '$2 != "True"' | wc -l)"
requests="$(k describe node "$NODE1" | sed -n '/Allocated resources/,/Events/p' | awk '$1 == "cpu" || $1 == "memory" { printf "%s %s %s  ", $1, $2, $3 }')"
if [[ "$pending" == 0 && -z "$unscheduled" && "$not_ready" == 0 ]]; then
  pass "stack fits a 2 CPU / 4 GiB node" "deploy.sh in ${DEPLOY_S} s ($want objects); 0 pods Pending; node requests: $requests"
else
  fail "stack fits a 2 CPU / 4 GiB node" "$pending Pending, unscheduled: $unscheduled, $not_ready not Ready"
fi

# The HPA scales on real metrics (metrics-server reading kwok's emulated usage): 2 -> 3 at 250m each.
for p in $(k -n aside get pods -l app.kubernetes.io/name=aside -o name); do
  k -n aside annotate "$p" kwok.x-k8s.io/usage-cpu=250m --overwrite >/dev/null
done
scaled() { live_is deployment aside '{.spec.replicas} {.status.availableReplicas}' "3 3"; }
if wait_until 180 scaled; then
  pass "HPA scales on CPU" "2 -> 3 replicas on metrics-server CPU (250m of 250m requested) in $WAITED s"
else
  fail "HPA scales on CPU" "no scale-up in 180 s: $(k -n aside get hpa aside -o jsonpath='{.status.currentMetrics} {.status.conditions[*].message}')"
fi

# kubectl drain of the node running the API pods: evictions go through the PDB (minAvailable 1), so the PDB's
# own count of healthy API pods never reaches 0. A second node (same size) gives the evicted pods a place.
NODE2=kwok-node-2
add_node "$NODE2"
wait_until 60 node_ready "$NODE2" || die "node $NODE2 never became Ready"
API_NODE="$(k -n aside get pods -l app.kubernetes.io/name=aside -o jsonpath='{.items[0].spec.nodeName}')"
watch_field healthy pdb aside '{.status.currentHealthy}'
start=$SECONDS
if k drain "$API_NODE" --ignore-daemonsets --delete-emptydir-data --timeout=180s >"$WORK/drain.log" 2>&1; then
  drained=1
else
  drained=0
fi
drain_s=$((SECONDS - start))
sleep 2 # the last status update after the last eviction
min_healthy="$(watch_min healthy)"
on_new="$(k -n aside get pods -l app.kubernetes.io/name=aside --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -cx "$NODE2" || true)"
blocked="$(grep -c 'violate the pod' "$WORK/drain.log" || true)"
if [[ "$drained" == 1 && "$min_healthy" -ge 1 ]]; then
  pass "drain honours the PDB" "drained $API_NODE in $drain_s s; healthy API pods never below $min_healthy; $on_new API pods Running on $NODE2; $blocked evictions refused by the PDB and retried"
else
  fail "drain honours the PDB" "drain ok=$drained, healthy API pods fell to $min_healthy (see $(tail -n 3 "$WORK/drain.log"))"
fi
# The PDB refusing the last API pod (Eviction API 429, a drain stopping at minAvailable) runs on real pods in
# scripts/e2e-node.sh; here only what needs simulated capacity: a second node to drain onto.
k uncordon "$API_NODE" >/dev/null

# helm install, upgrade and rollback of charts/aside against the same API server (its own namespace and
# NodePorts, beside the copy deploy.sh applied).
H=(helm -n aside-helm --kube-context "$(k config current-context)")
hv=(--set service.nodePort=30180 --set prometheus.nodePort=30190 --set grafana.nodePort=30130)
start=$SECONDS
if "${H[@]}" install aside "$ROOT/charts/aside" --create-namespace "${hv[@]}" --wait --timeout 300s >"$WORK/helm.log" 2>&1 \
  && "${H[@]}" upgrade aside "$ROOT/charts/aside" "${hv[@]}" --set config.cacheTtlSeconds=90 --wait --timeout 300s >>"$WORK/helm.log" 2>&1 \
  && [[ "$(k -n aside-helm get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')" == 90 ]] \
  && "${H[@]}" rollback aside 1 --wait --timeout 300s >>"$WORK/helm.log" 2>&1 \
  && [[ "$(k -n aside-helm get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')" == 60 ]] \
  && [[ "$("${H[@]}" history aside -o json | grep -o '"revision":[0-9]*' | wc -l)" == 3 ]]; then
  pass "helm install/upgrade/rollback" "revisions 1 -> 2 (TTL 90) -> 3 (rollback to 1, TTL 60), each --wait Ready, $((SECONDS - start)) s in all"
else
  fail "helm install/upgrade/rollback" "$(tail -n 5 "$WORK/helm.log")"
fi

echo
echo "e2e-cluster: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed, $((SECONDS - T0)) s (Kubernetes $(k version -o json | grep -o '"gitVersion": "[^"]*"' | tail -n1 | cut -d'"' -f4), kwok nodes 2 CPU / 4 GiB)"
! grep -q '^FAIL' "$RESULTS"
