#!/usr/bin/env bash
# scripts/e2e-cluster.sh: the GitOps loop on a real Kubernetes control plane and a real Argo CD, on loopback.
#
# Usage: scripts/e2e-cluster.sh [-h|--help]
#   KEEP=1 leaves the cluster up and prints how to reach it; E2E_TOOLS_BIN=DIR uses binaries built elsewhere.
#
# What runs (all built from Go modules by scripts/cluster-tools.sh, cached outside the checkout):
#   - kwok cluster (kwokctl --runtime binary): etcd 3.6, kube-apiserver with admission and RBAC, the real
#     kube-controller-manager and kube-scheduler, kwok-controller (nodes and pods simulated: pods become
#     Running/Ready without containers) and metrics-server (pod CPU from kwok's resource-usage emulation);
#     one node sized like the k3d node (2 CPU, 4 GiB allocatable, 110 pods), so the real scheduler decides
#     whether the stack fits; a StorageClass "local-path" (default, WaitForFirstConsumer, as in k3s) whose
#     provisioner is a stand-in loop here: it makes a node-pinned hostPath PV for each claim the scheduler
#     placed, the way k3s's local-path provisioner does.
#   - Argo CD: its CRDs and base config (from the pinned Go module) in namespace argocd, argocd-cm patched with
#     argocd/install/config-patch.yaml, repo-server + application-controller as processes (the way Argo CD's
#     own local development runs them), a redis-server for them.
#   - a clone of this repository (HEAD, plus uncommitted changes as one extra commit) and the real
#     `scripts/deploy.sh --argocd --existing-cluster` run from it: deploy.sh serves the clone with git daemon.
# Then the scenarios; each prints PASS/FAIL with a number, and the run fails if any fails.
# Nothing here runs a container: images are never pulled, probes never run, NetworkPolicies are stored but
# not enforced. See docs/delivery.md for what this proves and what it does not.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARGOCD_GOTOOLCHAIN="go1.27.3"
command -v redis-server >/dev/null || apt_install redis-server
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
    kubectl -n argocd get application aside -o jsonpath='{.status.sync.status} {.status.health.status} {.status.conditions}{"\n"}{.status.operationState.message}{"\n"}' >&2 2>/dev/null || true
    kubectl get pods -A -o wide >&2 2>/dev/null || true
    tail -n 20 "$WORK"/*.log >&2 2>/dev/null || true
  fi
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "KEEP=1: cluster left up. export KUBECONFIG=$KUBECONFIG (stop: kill ${PIDS[*]}; KWOK_WORKDIR=$KWOK_WORKDIR kwokctl delete cluster --name $CLUSTER)" >&2
    return
  fi
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -f "$WORK/state/aside-deploy/git-daemon.pid" ]] && kill "$(cat "$WORK/state/aside-deploy/git-daemon.pid")" 2>/dev/null
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
app() { k -n argocd get application aside -o jsonpath="$1" 2>/dev/null; }

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

# Stand-ins for two things k3s ships that kwok has not: the local-path provisioner (the class, and a loop that
# answers the scheduler's choice of node with a PV pinned there) and Traefik's write of an Ingress's
# load-balancer address (Argo CD counts an Ingress without one as Progressing forever).
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
  local ns name node size uid ip
  while sleep 1; do
    k get ingress -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name} {.status.loadBalancer.ingress[0].ip}{"\n"}{end}' 2>/dev/null |
      while read -r ns name ip; do
        [[ -z "$ip" ]] || continue
        k -n "$ns" patch ingress "$name" --subresource=status --type=merge \
          -p '{"status":{"loadBalancer":{"ingress":[{"ip":"127.0.0.1"}]}}}' >/dev/null 2>&1
      done
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

# --- 2. Argo CD beside the cluster --------------------------------------------------------------------------
ARGO_DIR="$(cd "$ROOT/tools/argocd" && GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN" go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)"
ARGO_VERSION="$(argocd version --client --short 2>/dev/null | head -n1 || true)"
log "Argo CD ${ARGO_VERSION:-?}: CRDs + base config from $ARGO_DIR/manifests"
k create namespace argocd >/dev/null
# Server-side: client-side apply's last-applied annotation would exceed 256 KiB on these CRDs.
k apply --server-side -k "$ARGO_DIR/manifests/crds" >/dev/null
k -n argocd apply --server-side -k "$ARGO_DIR/manifests/base/config" >/dev/null
# The same argocd-cm settings deploy.sh's install applies (argocd/install/config-patch.yaml).
awk 'BEGIN { RS = "\n---\n" } /name: argocd-cm/ { print }' "$ROOT/argocd/install/config-patch.yaml" |
  k -n argocd apply --server-side --field-manager=aside-install -f - >/dev/null
established() { [[ "$(k get crd "$1" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]]; }
for crd in applications.argoproj.io appprojects.argoproj.io; do
  wait_until 60 established "$crd" || die "CRD $crd was not established"
done
# Only argocd-server creates the default project; there is no argocd-server here.
k apply -f - >/dev/null <<'YAML'
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: argocd
spec:
  sourceRepos: ["*"]
  destinations: [{server: "*", namespace: "*"}]
  clusterResourceWhitelist: [{group: "*", kind: "*"}]
YAML
cm() { k -n argocd get configmap argocd-cm -o jsonpath="{.data.${1//./\\.}}"; }
REDIS_PORT="$(free_port)"
REPO_PORT="$(free_port)"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/argocd-redis.log" 2>&1 &
PIDS+=($!)
mkdir -p "$WORK/argocd"/{tls,ssh,gpg,bin,tmp}
# Argo CD's image ships this script on PATH; the repo-server runs it for every manifest generation.
install -m 0755 "$ARGO_DIR/hack/git-verify-wrapper.sh" "$WORK/argocd/bin/"
# As upstream's install.yaml maps argocd-cm keys to these variables.
ARGOCD_RECONCILIATION_TIMEOUT="$(cm timeout.reconciliation)"
export ARGOCD_RECONCILIATION_TIMEOUT ARGOCD_GPG_ENABLED=false \
  ARGOCD_TLS_DATA_PATH="$WORK/argocd/tls" ARGOCD_SSH_DATA_PATH="$WORK/argocd/ssh" ARGOCD_GNUPGHOME="$WORK/argocd/gpg"
# The repo-server clones into $TMPDIR/_argocd-repo: a temp dir of this run, not the machine's /tmp.
PATH="$WORK/argocd/bin:$PATH" TMPDIR="$WORK/argocd/tmp" ARGOCD_BINARY_NAME=argocd-repo-server argocd --address 127.0.0.1 --port "$REPO_PORT" --metrics-address 127.0.0.1 \
  --metrics-port "$(free_port)" --redis "127.0.0.1:$REDIS_PORT" --disable-tls --client-ca-path "" >"$WORK/argocd-repo-server.log" 2>&1 &
PIDS+=($!)
ARGOCD_BINARY_NAME=argocd-application-controller ARGOCD_FAKE_IN_CLUSTER=true \
  ARGOCD_RECONCILIATION_JITTER="$(cm timeout.reconciliation.jitter)" \
  ARGOCD_HARD_RECONCILIATION_TIMEOUT="$(cm timeout.hard.reconciliation)" \
  HOSTNAME=argocd-application-controller-0 argocd --namespace argocd --redis "127.0.0.1:$REDIS_PORT" \
  --repo-server "127.0.0.1:$REPO_PORT" --repo-server-plaintext --metrics-port "$(free_port)" \
  >"$WORK/argocd-application-controller.log" 2>&1 &
PIDS+=($!)

# --- 3. the served clone and the real deploy.sh ---------------------------------------------------------
mkdir -p "$WORK/git"
git clone -q "$ROOT" "$WORK/git/aside"
CLONE="$WORK/git/aside"
git -C "$CLONE" config user.email e2e@aside.invalid
git -C "$CLONE" config user.name "aside e2e"
if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
  git -C "$ROOT" diff HEAD | git -C "$CLONE" apply --index
  git -C "$CLONE" commit -qm "e2e: uncommitted changes of $ROOT"
fi
GIT_PORT="$(free_port)"
log "deploy.sh --argocd --existing-cluster from the clone (git daemon on 127.0.0.1:$GIT_PORT)"
start=$SECONDS
if ! (cd "$CLONE" && XDG_STATE_HOME="$WORK/state" GIT_DAEMON_PORT="$GIT_PORT" TIMEOUT=300s \
  scripts/deploy.sh --argocd --existing-cluster) >"$WORK/deploy.log" 2>&1; then
  cat "$WORK/deploy.log" >&2
  die "deploy.sh --argocd --existing-cluster failed"
fi
DEPLOY_S=$((SECONDS - start))
grep -E 'Argo CD follows|not installing' "$WORK/deploy.log" | sed 's/^/    /' >&2
PIDS+=("$(cat "$WORK/state/aside-deploy/git-daemon.pid")")

# --- 4. scenarios ----------------------------------------------------------------------------------------
synced_at() { [[ "$(app '{.status.sync.status} {.status.sync.revision} {.status.health.status}')" == "Synced $1 Healthy" ]]; }
commit() { git -C "$CLONE" commit -qam "$1" && git -C "$CLONE" rev-parse HEAD; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# first sync: Synced + Healthy, every object of k8s/ live and Synced, every pod on the sized node.
want="$(kustomize build "$CLONE/k8s" | grep -c '^kind:')"
synced="$(app '{range .status.resources[?(@.status=="Synced")]}x{end}' | wc -c)"
pending="$(k get pods -A --field-selector=status.phase=Pending -o name | wc -l)"
unscheduled="$(k get pods -n aside -o jsonpath='{range .items[?(@.spec.nodeName=="")]}{.metadata.name}{" "}{end}')"
requests="$(k describe node "$NODE1" | sed -n '/Allocated resources/,/Events/p' | awk '$1 == "cpu" || $1 == "memory" { printf "%s %s %s  ", $1, $2, $3 }')"
if synced_at "$(git -C "$CLONE" rev-parse HEAD)" && [[ "$synced" == "$want" && "$pending" == 0 && -z "$unscheduled" ]]; then
  pass "first sync" "Synced+Healthy in ${DEPLOY_S} s (deploy.sh total); $synced/$want objects Synced; 0 pods Pending; node requests: $requests"
else
  fail "first sync" "state '$(app '{.status.sync.status} {.status.health.status}')', $synced/$want objects Synced, $pending Pending, unscheduled: $unscheduled"
fi

# The AppProject admits every kind in k8s/, the cluster-scoped Namespace included.
denied="$(app '{.status.conditions[*].message}' | grep -io 'not permitted[^;]*' || true)"
ns_ok="$(app '{.status.resources[?(@.kind=="Namespace")].status}')"
kinds="$(kustomize build "$CLONE/k8s" | awk '$1 == "kind:" { print $2 }' | sort -u | wc -l)"
if [[ -z "$denied" && "$ns_ok" == Synced ]]; then
  pass "AppProject admits k8s/" "$kinds kinds, Namespace Synced, 0 'not permitted' conditions"
else
  fail "AppProject admits k8s/" "Namespace '$ns_ok'; $denied"
fi

# live_value KIND NAME JSONPATH WANT: the live object in namespace aside has WANT at JSONPATH.
live_is() { [[ "$(k -n aside get "$1" "$2" -o jsonpath="$3" 2>/dev/null)" == "$4" ]]; }
gone() { ! k -n aside get "$1" "$2" >/dev/null 2>&1; }
# watch_field NAME KIND OBJ JSONPATH: records every value the field takes (a watch: no transition is missed).
watch_field() {
  k -n aside get "$2" "$3" --watch --output-watch-events=false -o jsonpath="$4{\"\n\"}" >"$WORK/watch-$1" 2>/dev/null &
  WATCH_PID=$!
}
watch_min() { kill "$WATCH_PID" 2>/dev/null || true; wait "$WATCH_PID" 2>/dev/null || true; sed 's/^$/0/' "$WORK/watch-$1" | sort -n | head -n1; }

# commit -> live: a ConfigMap value, three commits, each timed from `git commit` to the value in the cluster.
times=()
for ttl in 61 62 63; do
  sed -i "s/^  CACHE_TTL_SECONDS: .*/  CACHE_TTL_SECONDS: '$ttl'/" "$CLONE/k8s/aside-configmap.yaml"
  rev="$(commit "e2e: CACHE_TTL_SECONDS=$ttl")"
  if wait_until 180 live_is configmap aside '{.data.CACHE_TTL_SECONDS}' "$ttl"; then
    t="$WAITED"
    wait_until 60 synced_at "$rev" || t=999
  else
    t=999
  fi
  times+=("$t")
done
CONFIG_REV="$(git -C "$CLONE" rev-parse HEAD)"

# commit -> live: an image tag, rolled with maxUnavailable 0 (available API pods watched throughout).
cat >>"$CLONE/k8s/kustomization.yaml" <<'YAML'
images:
- name: aside
  newTag: e2e-rollout
YAML
rev="$(commit "e2e: image aside:e2e-rollout")"
rolled() { live_is deployment aside '{.spec.template.spec.containers[0].image} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}' "aside:e2e-rollout 2 2 2"; }
if wait_until 240 rolled; then t="$WAITED"; wait_until 60 synced_at "$rev" || t=999; else t=999; fi
times+=("$t")
IMAGE_REV="$rev"
max="$(printf '%s\n' "${times[@]}" | sort -n | tail -n1)"
if ! printf '%s\n' "${times[@]}" | grep -qx 999; then
  pass "commit -> live" "4 commits (3 ConfigMap values, 1 image tag rolled out): median $(printf '%s\n' "${times[@]}" | median) s, max $max s (${times[*]})"
else
  fail "commit -> live" "times ${times[*]} (999 = not live and Synced in time)"
fi
# Availability through a roll (maxUnavailable 0, preStop, drain) is measured on real pods under load in
# scripts/e2e-node.sh; here the image commit only has to reach the cluster.

# self-heal: a hand edit of a managed object is reverted.
k -n aside patch configmap aside --type merge -p '{"data":{"CACHE_TTL_SECONDS":"999"}}' >/dev/null
if wait_until 120 live_is configmap aside '{.data.CACHE_TTL_SECONDS}' 63; then
  pass "self-heal" "hand-edited ConfigMap restored from Git in $WAITED s"
else
  fail "self-heal" "ConfigMap still '$(k -n aside get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')' after 120 s"
fi

# prune: a manifest removed in a commit is deleted from the cluster.
git -C "$CLONE" rm -q k8s/aside-ingress.yaml
sed -i '/^- aside-ingress.yaml$/d' "$CLONE/k8s/kustomization.yaml"
rev="$(commit "e2e: drop the Ingress")"
if wait_until 180 gone ingress aside; then
  t="$WAITED"
  if wait_until 60 synced_at "$rev"; then
    pass "prune" "Ingress removed from Git -> deleted from the cluster in $t s"
  else
    fail "prune" "Ingress deleted but the app is '$(app '{.status.sync.status} {.status.health.status}')'"
  fi
else
  fail "prune" "Ingress still there 180 s after the commit"
fi

# rollback by git revert: the prune, the image and the ConfigMap values come back as they were.
# (revert walks ranges newest first: prune, image, then the three ConfigMap values)
git -C "$CLONE" revert --no-edit HEAD "$IMAGE_REV" "$CONFIG_REV~3..$CONFIG_REV" >/dev/null
rev="$(git -C "$CLONE" rev-parse HEAD)"
reverted() {
  live_is configmap aside '{.data.CACHE_TTL_SECONDS}' 60 && live_is ingress aside '{.metadata.name}' aside \
    && live_is deployment aside '{.spec.template.spec.containers[0].image} {.status.updatedReplicas} {.status.availableReplicas}' "aside:0.1.0 2 2"
}
if wait_until 240 reverted && t="$WAITED" && wait_until 60 synced_at "$rev"; then
  pass "rollback by git revert" "5 reverts in one push -> ConfigMap 60, Ingress back, image aside:0.1.0 rolled out, in $t s"
else
  fail "rollback by git revert" "state $(app '{.status.sync.status} {.status.health.status}'), TTL $(k -n aside get cm aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')"
fi

# The HPA scales on real metrics (metrics-server reading kwok's emulated usage) and Argo CD leaves it be.
for p in $(k -n aside get pods -l app.kubernetes.io/name=aside -o name); do
  k -n aside annotate "$p" kwok.x-k8s.io/usage-cpu=250m --overwrite >/dev/null
done
reconciled_since() { [[ "$(app '{.status.reconciledAt}')" != "$1" ]]; }
scaled() { live_is deployment aside '{.spec.replicas} {.status.availableReplicas}' "3 3"; }
if wait_until 180 scaled; then
  t="$WAITED"
  r0="$(app '{.status.reconciledAt}')"
  n=0
  while ((n < 2)); do # two more reconciliations with replicas still 3
    wait_until 120 reconciled_since "$r0" || break
    r0="$(app '{.status.reconciledAt}')"
    n=$((n + 1))
  done
  if live_is deployment aside '{.spec.replicas}' 3 && synced_at "$rev"; then
    pass "HPA vs Argo CD" "HPA 2->3 on metrics-server CPU in $t s; replicas kept at 3 and Synced over $n reconciliations"
  else
    fail "HPA vs Argo CD" "replicas $(k -n aside get deploy aside -o jsonpath='{.spec.replicas}'), app $(app '{.status.sync.status}')"
  fi
else
  fail "HPA vs Argo CD" "no scale-up in 180 s: $(k -n aside get hpa aside -o jsonpath='{.status.currentMetrics} {.status.conditions[*].message}')"
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

# No OutOfSync loop: over three more reconciliations nothing (Secrets included) leaves Synced and no sync runs.
ops0="$(app '{.status.operationState.startedAt}')"
rev="$(git -C "$CLONE" rev-parse HEAD)"
n=0 flaps=0
while ((n < 3)); do
  r0="$(app '{.status.reconciledAt}')"
  wait_until 120 reconciled_since "$r0" || break
  n=$((n + 1))
  out="$(app '{range .status.resources[?(@.status!="Synced")]}{.kind}/{.name} {end}')"
  [[ -z "$out" && "$(app '{.status.sync.status}')" == Synced ]] || flaps=$((flaps + 1))
done
secrets="$(app '{range .status.resources[?(@.kind=="Secret")]}{.status}{" "}{end}' | wc -w)"
if [[ "$n" == 3 && "$flaps" == 0 && "$(app '{.status.operationState.startedAt}')" == "$ops0" ]]; then
  pass "no OutOfSync loop" "3 reconciliations: every object Synced ($secrets Secrets), no sync operation started"
else
  fail "no OutOfSync loop" "$n reconciliations, $flaps not Synced (${out:-}), last sync started $(app '{.status.operationState.startedAt}') (was $ops0)"
fi

# helm install, upgrade and rollback of charts/aside against the same API server (its own namespace and
# NodePorts, beside the Argo CD-managed copy).
H=(helm -n aside-helm --kube-context "$(k config current-context)")
hv=(--set service.nodePort=30180 --set prometheus.nodePort=30190 --set grafana.nodePort=30130)
start=$SECONDS
if "${H[@]}" install aside "$CLONE/charts/aside" --create-namespace "${hv[@]}" --wait --timeout 300s >"$WORK/helm.log" 2>&1 \
  && "${H[@]}" upgrade aside "$CLONE/charts/aside" "${hv[@]}" --set config.cacheTtlSeconds=90 --wait --timeout 300s >>"$WORK/helm.log" 2>&1 \
  && [[ "$(k -n aside-helm get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')" == 90 ]] \
  && "${H[@]}" rollback aside 1 --wait --timeout 300s >>"$WORK/helm.log" 2>&1 \
  && [[ "$(k -n aside-helm get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')" == 60 ]] \
  && [[ "$("${H[@]}" history aside -o json | grep -o '"revision":[0-9]*' | wc -l)" == 3 ]]; then
  pass "helm install/upgrade/rollback" "revisions 1 -> 2 (TTL 90) -> 3 (rollback to 1, TTL 60), each --wait Ready, $((SECONDS - start)) s in all"
else
  fail "helm install/upgrade/rollback" "$(tail -n 5 "$WORK/helm.log")"
fi

echo
echo "e2e-cluster: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed, $((SECONDS - T0)) s (Kubernetes $(k version -o json | grep -o '"gitVersion": "[^"]*"' | tail -n1 | cut -d'"' -f4), Argo CD ${ARGO_VERSION:-?}, kwok nodes 2 CPU / 4 GiB)"
! grep -q '^FAIL' "$RESULTS"
