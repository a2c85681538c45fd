#!/usr/bin/env bash
# scripts/node.sh: a real single-node Kubernetes cluster on this machine, air-gapped: real containers on
# containerd, started by a real kubelet, served by kube-proxy — no k3d, no registry, nothing pulled.
#
# Usage: scripts/node.sh up|down|status [--dir DIR] [-h|--help]
#   up      bring it all up (below) and leave it running; prints how to use it
#   down    stop everything `up` started and remove what it created (safe to repeat; also after a failed up)
#   status  say whether a node from DIR is up
#   --dir DIR   where the node keeps its state (default ${XDG_STATE_HOME:-~/.local/state}/aside-node)
# After `up`: `source DIR/env` sets KUBECONFIG (and DOCKER_HOST, CONTAINERD_ADDRESS, and GIT_HOST for
# deploy.sh --local-git) for this cluster.
#
# What `up` runs (as root; Debian packages installed when missing: docker.io, containerd, runc,
# containernetworking-plugins, debootstrap, gcc, conntrack):
#   - dockerd (its own socket in DIR; its image store in the tool cache, so images are built once per machine)
#     and scripts/images.sh: every image the overlay overlays/airgap names, built locally
#   - the bridge asidebr0 with 10.244.0.1/24: node IP, API server address, pod gateway (bridge + portmap +
#     firewall CNI plugins from Debian); pods reach nothing outside the node (no masquerade)
#   - containerd (Debian's, its own root/state/socket in DIR, local/pause:1 as the sandbox image) with the
#     images imported into its k8s.io namespace
#   - the control plane from scripts/cluster-tools.sh via kwokctl's binary runtime: etcd, kube-apiserver
#     (its port admitted from loopback and the bridge only), controller-manager, scheduler, metrics-server
#     (reading the real kubelet); kwokctl's kwok-controller runs too (metrics-server is linked to it) but is
#     told to manage only nodes annotated as fake, and there are none
#   - kubelet (cgroupfs, cgroup v1 allowed) and kube-proxy (iptables; NodePorts on 127.0.0.1 only), with
#     certificates signed by the cluster CA
#   - CoreDNS (10.0.0.10) and rancher's local-path-provisioner as the default StorageClass `local-path`
#     (volumes under DIR/storage)
# `down` kills those processes by their own PIDs, every pod container, and removes the bridge, the pods'
# network namespaces, the iptables chains that appeared during the run, mounts under DIR, the kubepods
# cgroups, and restores the sysctls it changed. Docker's image store (the cache) is kept.
# Exit codes: 0 ok, 1 failure (the message says what), 2 bad usage.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${ASIDE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools}"
DIR="${XDG_STATE_HOME:-$HOME/.local/state}/aside-node"
CMD=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    up | down | status) [[ -z "$CMD" ]] || { usage >&2; echo "node.sh: one command only" >&2; exit 2; }; CMD="$1" ;;
    --dir)
      [[ $# -ge 2 && -n "$2" ]] || { echo "node.sh: --dir needs a directory" >&2; exit 2; }
      DIR="$2"
      shift
      ;;
    *) usage >&2; echo "node.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$CMD" ]] || { usage >&2; echo "node.sh: say up, down or status" >&2; exit 2; }
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

NODE=aside-node
BRIDGE=asidebr0
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
DNS_IP=10.0.0.10
CLUSTER=aside-node
NODEPORTS=(30080 30090 30030 30443)
export KWOK_WORKDIR="$DIR/kwok"
KUBECONFIG_FILE="$KWOK_WORKDIR/clusters/$CLUSTER/kubeconfig.yaml"
PKI="$KWOK_WORKDIR/clusters/$CLUSTER/pki"
CTRD_SOCK="$DIR/containerd/containerd.sock"
DOCKER_SOCK="$DIR/docker/docker.sock"
DOCKER=/usr/bin/docker

pidfile() { echo "$DIR/pids/$1.pid"; }
alive() { [[ -f "$(pidfile "$1")" ]] && kill -0 "$(cat "$(pidfile "$1")")" 2>/dev/null; }
# start NAME CMD...: runs CMD in the background, logging to DIR/logs/NAME.log, its PID in DIR/pids.
start() {
  local name="$1"
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  echo $! >"$(pidfile "$name")"
}
# stop NAME: SIGTERM, up to 10 s, then SIGKILL; by the PID `start` recorded.
stop() {
  local f pid
  f="$(pidfile "$1")"
  [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
# wait_for SECONDS WHAT CMD...: polls CMD every 0.2 s or dies naming WHAT and the last log lines.
wait_for() {
  local limit="$1" what="$2" deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 15 "$DIR"/logs/*.log >&2 2>/dev/null || true
      die "$what not ready after $limit s"
    fi
    sleep 0.2
  done
}
stamp() { printf '%-44s %6.1f s\n' "$1" "$(echo "$(date +%s.%N) - $T0" | bc)" | tee -a "$DIR/timings" >&2; }
k() { kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

status() {
  if alive kubelet && [[ -f "$KUBECONFIG_FILE" ]] && k get node "$NODE" >/dev/null 2>&1; then
    echo "node $NODE is up (state in $DIR; source $DIR/env)"
  else
    echo "no node is up from $DIR"
    return 1
  fi
}

# --- down ------------------------------------------------------------------------------------------------
# new_chains TOOL TABLE: user chains in TABLE now that were not there before `up` (DIR/TOOL.before);
# built-in chains (those with a policy) are never touched.
new_chains() {
  comm -13 <(awk -v t="*$2" '/^\*/ { in_t = ($0 == t) } in_t && /^:/ { print substr($1, 2) }' "$DIR/$1.before" | sort) \
    <("$1-save" -t "$2" 2>/dev/null | awk '/^:/ && $2 == "-" { print substr($1, 2) }' | sort)
}
iptables_restore_state() {
  local tool table chain rule
  for tool in iptables ip6tables; do
    [[ -f "$DIR/$tool.before" ]] || continue
    for table in filter nat mangle raw; do
      mapfile -t chains < <(new_chains "$tool" "$table")
      ((${#chains[@]})) || continue
      # Jumps into the new chains first (from any chain), then the chains themselves.
      for chain in "${chains[@]}"; do
        { "$tool-save" -t "$table" | grep -E -- "^-A [^ ]+ .*-j $chain( |\$)" || true; } | while read -r rule; do
          eval "$tool -t $table -D ${rule#-A }" 2>/dev/null || true
        done
      done
      for chain in "${chains[@]}"; do "$tool" -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in "${chains[@]}"; do "$tool" -t "$table" -X "$chain" 2>/dev/null || true; done
    done
  done
}
down() {
  local ns c pid cg m
  log "stopping the node in $DIR"
  stop kube-proxy
  stop kubelet
  if [[ -x "$DIR/bin/kwokctl" ]]; then
    "$DIR/bin/kwokctl" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  # Every pod container: the kubelet is gone, so nothing restarts them.
  if alive containerd; then
    for c in $(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CTRD_SOCK" -n k8s.io tasks kill -s SIGKILL "$c" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for c in $(ctr --address "$CTRD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$CTRD_SOCK" -n k8s.io tasks delete -f "$c" >/dev/null 2>&1 || true
    done
  fi
  stop containerd
  # Whatever is left in the pods' cgroups (shims, stragglers), then the cgroups themselves, deepest first.
  if [[ -f "$DIR/cgroups.before" ]] && ! grep -qx kubepods "$DIR/cgroups.before"; then
    for cg in /sys/fs/cgroup/*/kubepods; do
      [[ -d "$cg" ]] || continue
      find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do kill -9 "$pid" 2>/dev/null || true; done
    done
    sleep 0.3
    for cg in /sys/fs/cgroup/*/kubepods; do
      [[ -d "$cg" ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  fi
  for c in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" || true); do kill -9 "$c" 2>/dev/null || true; done
  # The pods' network namespaces (their veths go with them), made by the CRI plugin during this run.
  if [[ -f "$DIR/netns.before" ]]; then
    for ns in $(comm -13 <(sort "$DIR/netns.before") <(ip netns list 2>/dev/null | awk '{ print $1 }' | sort)); do
      ip netns delete "$ns" 2>/dev/null || true
    done
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE"
  [[ -x "$DIR/bin/kube-proxy" ]] && "$DIR/bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  iptables_restore_state
  stop dockerd
  # Mounts under DIR (kubelet volumes, container rootfs, dockerd's exec root), deepest first.
  for m in $(findmnt -rn -o TARGET | grep -E "^$DIR(/|\$)" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if [[ -f "$DIR/sysctl.before" ]]; then
    while read -r key value; do sysctl -qw "$key=$value" 2>/dev/null || true; done <"$DIR/sysctl.before"
  fi
  rm -rf "$DIR"
  log "node down: processes stopped, bridge $BRIDGE, pod netns, new iptables chains, mounts and cgroups removed"
}

# --- up --------------------------------------------------------------------------------------------------
preflight() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (it starts containerd and a kubelet, and creates a bridge)"
  if [[ -f "$DIR/pids/kubelet.pid" || -d "$DIR/pids" && -n "$(ls -A "$DIR/pids" 2>/dev/null)" ]]; then
    die "a node from $DIR is already up or was not torn down: run scripts/node.sh down${DIR:+ --dir $DIR} first"
  fi
  ip link show "$BRIDGE" >/dev/null 2>&1 && die "bridge $BRIDGE exists: another node is up (scripts/node.sh down --dir <its dir>)"
  ip -4 route show | grep -q "^${POD_CIDR%/*}" && die "$POD_CIDR is already routed on this machine; the node needs it for its pods"
  local p
  for p in "${NODEPORTS[@]}"; do
    if python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $p))" 2>/dev/null; then
      continue
    fi
    die "port 127.0.0.1:$p is in use: the cluster's NodePorts (${NODEPORTS[*]}) need it free"
  done
  local pkgs=()
  [[ -x /usr/sbin/dockerd && -x "$DOCKER" ]] || pkgs+=(docker.io)
  command -v containerd >/dev/null || pkgs+=(containerd)
  command -v runc >/dev/null || pkgs+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || pkgs+=(containernetworking-plugins)
  command -v debootstrap >/dev/null || pkgs+=(debootstrap)
  command -v gcc >/dev/null || pkgs+=(gcc libc6-dev)
  command -v conntrack >/dev/null || pkgs+=(conntrack)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v bc >/dev/null || pkgs+=(bc)
  apt_install "${pkgs[@]}"
}

dockerd_up() {
  mkdir -p "$TOOLS_DIR/docker" "$DIR/docker"
  # One dockerd per image store: the lock (inherited by dockerd) is held while it runs.
  exec 8>"$TOOLS_DIR/docker.lock"
  flock -n 8 || die "another run's dockerd uses the image cache $TOOLS_DIR/docker (wait for it, or stop it)"
  start dockerd /usr/sbin/dockerd --data-root "$TOOLS_DIR/docker" --exec-root "$DIR/docker/exec" \
    --pidfile "$DIR/docker/dockerd.pid" -H "unix://$DOCKER_SOCK" --bridge=none --iptables=false \
    --ip6tables=false --ip-forward=false --ip-masq=false
  exec 8>&-
  export DOCKER_HOST="unix://$DOCKER_SOCK"
  wait_for 60 dockerd "$DOCKER" info
}

network_up() {
  sysctl -n net.ipv4.ip_forward | xargs printf 'net.ipv4.ip_forward %s\n' >"$DIR/sysctl.before"
  sysctl -n net.ipv4.conf.all.route_localnet | xargs printf 'net.ipv4.conf.all.route_localnet %s\n' >>"$DIR/sysctl.before"
  ip netns list 2>/dev/null | awk '{ print $1 }' >"$DIR/netns.before"
  iptables-save >"$DIR/iptables.before"
  ip6tables-save >"$DIR/ip6tables.before" 2>/dev/null || true
  ls /sys/fs/cgroup/cpu/ 2>/dev/null >"$DIR/cgroups.before" || true
  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1
  mkdir -p "$DIR/cni/net.d" "$DIR/cni/ipam"
  # bridge + portmap + firewall: the firewall plugin accepts the pods' traffic in FORWARD, whose policy
  # may be DROP (Docker sets it when it manages iptables). No masquerade: pods talk only inside the node.
  cat >"$DIR/cni/net.d/10-aside.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "aside-pods",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$DIR/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall", "backend": "iptables"}
  ]
}
JSON
}

containerd_up() {
  mkdir -p "$DIR/containerd"
  cat >"$DIR/containerd/config.toml" <<TOML
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$CTRD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "local/pause:1"       # imported below: nothing can be pulled
  restrict_oom_score_adj = true         # no CAP_SYS_RESOURCE on this kind of machine
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false           # the kubelet's cgroupDriver is cgroupfs
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"            # Debian's CNI plugins
    conf_dir = "$DIR/cni/net.d"
[plugins."io.containerd.internal.v1.opt"]
  path = "$DIR/containerd/opt"
TOML
  start containerd containerd --config "$DIR/containerd/config.toml"
  wait_for 30 containerd ctr --address "$CTRD_SOCK" version
}

control_plane_up() {
  local bin="$1" ms_dir
  ms_dir="$(cd "$ROOT/tools/metrics-server" && go list -m -f '{{.Dir}}' sigs.k8s.io/metrics-server)/manifests/base"
  mkdir -p "$DIR/bin"
  # down needs these even when the tool cache moved on.
  cp "$bin/kwokctl" "$bin/kube-proxy" "$DIR/bin/"
  # The API server must be reachable from the pods (the `kubernetes` Service points at the node address), but
  # kwokctl wires etcd and its components through 127.0.0.1: so it listens on every address, and an INPUT
  # chain of this run's admits only loopback and the node bridge to its port.
  APISERVER_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("0.0.0.0", 0)); print(s.getsockname()[1])')"
  iptables -N ASIDE-NODE-APISERVER
  iptables -A ASIDE-NODE-APISERVER -i lo -j RETURN
  iptables -A ASIDE-NODE-APISERVER -i "$BRIDGE" -j RETURN
  iptables -A ASIDE-NODE-APISERVER -j DROP
  iptables -I INPUT -p tcp --dport "$APISERVER_PORT" -j ASIDE-NODE-APISERVER
  cat >"$DIR/kwok.yaml" <<YAML
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  bindAddress: 127.0.0.1
  kubeApiserverPort: $APISERVER_PORT
  kubeApiserverCertSANs: ["10.0.0.1", "$NODE_IP"]
  kubeApiserverBinary: $bin/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kwokControllerBinary: $bin/kwok
  etcdBinary: $bin/etcd
  kubectlBinary: $bin/kubectl
  metricsServerBinary: $bin/metrics-server
  metricsServerManifests:
    - $ms_dir
componentsPatches:
# kwokctl's kwok-controller (kept: kwokctl links metrics-server to it) would otherwise manage every node, the
# real one included: it fakes pod status (instant Ready, pod IPs outside the node's bridge) over the kubelet's.
# Here it manages only nodes annotated as fake, and there are none.
- name: kwok-controller
  extraArgs:
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: kwok.x-k8s.io/node=fake}
- name: kube-apiserver
  extraArgs:
  - {key: bind-address, value: 0.0.0.0}
  - {key: advertise-address, value: $NODE_IP}
  # logs, exec and metrics go through the kubelet's authenticated port
  - {key: kubelet-client-certificate, value: $PKI/admin.crt}
  - {key: kubelet-client-key, value: $PKI/admin.key}
  - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
YAML
  "$bin/kwokctl" -c "$DIR/kwok.yaml" create cluster --name "$CLUSTER" --runtime binary --kubeconfig "" \
    --enable metrics-server --wait 3m >"$DIR/logs/kwokctl.log" 2>&1 \
    || { tail -n 30 "$DIR/logs/kwokctl.log" >&2; die "kwokctl create cluster failed"; }
}

# sign NAME SUBJECT: a client certificate signed by the cluster CA, and a kubeconfig using it.
sign() {
  local name="$1" subj="$2" server
  server="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$DIR/node/$name.key" -subj "$subj" -out "$DIR/node/$name.csr" 2>/dev/null
  openssl x509 -req -in "$DIR/node/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial -days 2 \
    -out "$DIR/node/$name.crt" 2>/dev/null
  KUBECONFIG="$DIR/node/$name.kubeconfig" kubectl config set-cluster node --server="$server" \
    --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
  KUBECONFIG="$DIR/node/$name.kubeconfig" kubectl config set-credentials "$name" \
    --client-certificate="$DIR/node/$name.crt" --client-key="$DIR/node/$name.key" --embed-certs >/dev/null
  KUBECONFIG="$DIR/node/$name.kubeconfig" kubectl config set-context node --cluster=node --user="$name" >/dev/null
  KUBECONFIG="$DIR/node/$name.kubeconfig" kubectl config use-context node >/dev/null
}

node_up() {
  local bin="$1"
  mkdir -p "$DIR/node" "$DIR/kubelet"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE"
  sign kube-proxy "/CN=system:kube-proxy"
  # Pods get cluster names only: never the host's resolver (a private address this run did not make).
  echo "search cluster.local" >"$DIR/node/resolv.conf"
  cat >"$DIR/node/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
failCgroupV1: false        # this kind of machine boots cgroup v1
failSwapOn: false
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $DIR/node/kubelet.crt
tlsPrivateKeyFile: $DIR/node/kubelet.key
clusterDomain: cluster.local
clusterDNS: ["$DNS_IP"]
resolvConf: $DIR/node/resolv.conf
serializeImagePulls: false
maxPods: 110
nodeStatusReportFrequency: 10s
evictionHard: {memory.available: "100Mi", nodefs.available: "5%", imagefs.available: "5%"}
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
YAML
  start kubelet "$bin/kubelet" --config="$DIR/node/kubelet.yaml" --kubeconfig="$DIR/node/kubelet.kubeconfig" \
    --hostname-override="$NODE" --node-ip="$NODE_IP" --root-dir="$DIR/kubelet" --v=1
  cat >"$DIR/node/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $DIR/node/kube-proxy.kubeconfig}
hostnameOverride: $NODE
clusterCIDR: $POD_CIDR
nodePortAddresses: ["127.0.0.1/32"]   # NodePorts answer on loopback only
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {maxPerCore: 0}            # leave nf_conntrack_max alone (no CAP_SYS_RESOURCE)
iptables: {localhostNodePorts: true}
YAML
  start kube-proxy "$bin/kube-proxy" --config="$DIR/node/kube-proxy.yaml"
}

addons_up() {
  local coredns_tag lp_dir lp_tag
  coredns_tag="$(version_of coredns github.com/coredns/coredns)"
  coredns_tag="${coredns_tag#v}"
  sed "s|image: local/coredns:TAG|image: local/coredns:$coredns_tag|" "$ROOT/scripts/node/coredns.yaml" | k apply -f - >/dev/null
  # local-path-provisioner from its module's own manifest: the local image, the default class, volumes in DIR,
  # and the helper pod (which makes and removes volume directories; its spec is a string in the ConfigMap, out
  # of reach of kustomize's images:) on the local Debian image.
  lp_dir="$(cd "$ROOT/tools/local-path" && go list -m -f '{{.Dir}}' github.com/rancher/local-path-provisioner)"
  lp_tag="$(version_of local-path github.com/rancher/local-path-provisioner)"
  mkdir -p "$DIR/local-path" "$DIR/storage"
  cp "$lp_dir/deploy/local-path-storage.yaml" "$DIR/local-path/"
  cat >"$DIR/local-path/kustomization.yaml" <<YAML
resources: [local-path-storage.yaml]
images:
- {name: rancher/local-path-provisioner, newName: local/local-path-provisioner, newTag: $lp_tag}
patches:
- target: {kind: StorageClass, name: local-path}
  patch: |
    - {op: add, path: /metadata/annotations, value: {storageclass.kubernetes.io/is-default-class: "true"}}
- target: {kind: ConfigMap, name: local-path-config}
  patch: |
    - op: replace
      path: /data/config.json
      value: '{"nodePathMap":[{"node":"DEFAULT_PATH_FOR_NON_LISTED_NODES","paths":["$DIR/storage"]}]}'
    - op: replace
      path: /data/helperPod.yaml
      value: |
$(sed -n '/helperPod.yaml: |-/,$p' "$lp_dir/deploy/local-path-storage.yaml" | tail -n +2 | sed 's/image: busybox/image: local\/debian:bookworm/; s/^    /        /')
YAML
  k apply -k "$DIR/local-path" >/dev/null
  k -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
  k -n local-path-storage rollout status deployment/local-path-provisioner --timeout=120s >/dev/null
}

up_failed() {
  local rc=$?
  ((rc == 0)) && return 0
  echo "node.sh up failed (exit $rc); tearing down" >&2
  tail -n 20 "$DIR"/logs/*.log >&2 2>/dev/null || true
  down
}

up() {
  local bin images tag_args=() t
  T0="$(date +%s.%N)"
  preflight
  mkdir -p "$DIR/pids" "$DIR/logs"
  : >"$DIR/timings"
  # A failed `up` leaves nothing behind.
  trap up_failed EXIT
  bin="${E2E_TOOLS_BIN:-$("$ROOT/scripts/cluster-tools.sh" --print-bin)}"
  export PATH="$bin:$PATH"
  stamp "cluster tools ready"
  dockerd_up
  stamp "dockerd up"
  for t in ${IMAGE_TAGS:-}; do tag_args+=(--tag "$t"); done
  "$ROOT/scripts/images.sh" "${tag_args[@]}" | tee "$DIR/images.txt" >&2
  stamp "images built"
  network_up
  containerd_up
  mapfile -t images < <("$ROOT/scripts/images.sh" --list "${tag_args[@]}")
  "$DOCKER" save "${images[@]}" | ctr --address "$CTRD_SOCK" -n k8s.io images import - >"$DIR/logs/import.log" 2>&1 \
    || { cat "$DIR/logs/import.log" >&2; die "importing the images into containerd failed"; }
  stamp "containerd up, ${#images[@]} images imported"
  control_plane_up "$bin"
  stamp "control plane ready"
  node_up "$bin"
  wait_for 120 "node $NODE" sh -c "kubectl --kubeconfig '$KUBECONFIG_FILE' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  stamp "node $NODE Ready"
  addons_up
  stamp "CoreDNS + local-path Ready"
  cat >"$DIR/env" <<ENV
export KUBECONFIG=$KUBECONFIG_FILE
export DOCKER_HOST=unix://$DOCKER_SOCK
export CONTAINERD_ADDRESS=$CTRD_SOCK
# deploy.sh --local-git serves its mirror here: the host address the pods reach (the bridge).
export GIT_HOST=$NODE_IP
ENV
  trap - EXIT
  cat >&2 <<TXT

node $NODE is up ($(k version -o json | grep -o '"gitVersion": "[^"]*"' | tail -n1 | cut -d'"' -f4), containerd $(containerd --version | awk '{ print $3 }')):
  source $DIR/env            # KUBECONFIG, DOCKER_HOST, CONTAINERD_ADDRESS, GIT_HOST
  scripts/deploy.sh --existing-cluster --overlay overlays/airgap   # plain manifests; or Argo CD in the cluster:
  ARGOCD_INSTALL_MANIFEST=<argo-cd module>/manifests/install.yaml scripts/deploy.sh --argocd --existing-cluster --overlay overlays/airgap
  scripts/node.sh down --dir $DIR
TXT
}

case "$CMD" in
  up) up ;;
  down) down ;;
  status) status ;;
esac
