#!/usr/bin/env bash
# scripts/cluster-tools.sh: builds the Go programs the cluster e2e runs (scripts/e2e-cluster.sh) from their
# Go modules at the versions pinned in tools/*/go.mod + go.sum, into a cache directory outside the checkout.
#
# Usage: scripts/cluster-tools.sh [--print-bin] [-h|--help]
#   (no args)     build what is missing, then print one line: cache hit or cold build time
#   --print-bin   the same, then print the bin directory (for `PATH="$(scripts/cluster-tools.sh --print-bin):$PATH"`)
#
# What it builds (CGO_ENABLED=0, -trimpath, version-stamped like upstream's own builds):
#   tools/k8s     kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes, its staging
#                 replaces mirrored), etcd (go.etcd.io/etcd/server/v3, the 3.6.x Kubernetes itself requires),
#                 kwok + kwokctl, kustomize — one module, one k8s.io version (0.36.1) for all
#   tools/metrics-server  metrics-server 0.9 (k8s.io 0.36.2: built against 0.36.1 its generated OpenAPI names do
#                 not match and it panics at start, and 0.8 is generated for 0.33 — so a module of its own)
#   tools/argocd  argocd (one binary; Argo CD picks the component from ARGOCD_BINARY_NAME), its replaces mirrored;
#                 needs Go 1.27, fetched once from the Go module proxy (GOTOOLCHAIN)
#   tools/helm    helm v4
#   the real node (scripts/node.sh): kubelet + kube-proxy (tools/k8s, the same k8s.io version as the control
#                 plane), tools/coredns (cluster DNS), tools/local-path (rancher's local-path-provisioner, what
#                 k3s ships for PVCs), tools/prometheus (2.55.1, the version k8s/ names; Debian's build has no
#                 Kubernetes discovery) — each its own module: their k8s.io/prometheus dependencies disagree
# The cache key is a hash of every tools/*/go.mod/go.sum pair (but otelcol's) and this script, so a pin change rebuilds and
# nothing else does. Binaries land in $ASIDE_TOOLS_DIR/cluster/<key>/bin (default ~/.cache/aside-tools);
# Go's own module and build caches (go env GOMODCACHE GOCACHE) are reused across runs and keys.
# Measured on the 2-core build machine: see docs/delivery.md ("Building the cluster tools").
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${ASIDE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools}"
# Argo CD 3.6 needs Go >= 1.27.0 (its go.mod); the go command fetches this toolchain from the module proxy.
ARGOCD_GOTOOLCHAIN="go1.27.3"
PRINT_BIN=0

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --print-bin) PRINT_BIN=1 ;;
  "") ;;
  *) usage >&2; die "unknown argument: $1" ;;
esac

command -v go >/dev/null || die "go not found: install Go >= 1.26 (https://go.dev/doc/install)"


KEY="$(cat "$ROOT"/tools/{k8s,metrics-server,argocd,helm,coredns,local-path,prometheus}/go.{mod,sum} "$ROOT/scripts/cluster-tools.sh" | sha256sum | cut -c1-16)"
OUT="$TOOLS_DIR/cluster/$KEY"
BIN="$OUT/bin"
WANT=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok kwokctl kustomize metrics-server argocd helm
  kubelet kube-proxy coredns local-path-provisioner prometheus)

complete() {
  local b
  for b in "${WANT[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

build_k8s() {
  local k minor v
  k="$(version_of k8s k8s.io/kubernetes)"
  minor="$(echo "$k" | cut -d. -f2)"
  # The version is unset without these (v0.0.0-master); upstream stamps both packages (hack/lib/version.sh).
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    v+=" -X $pkg.gitVersion=$k -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  log "building Kubernetes $k control plane + kubectl"
  (cd "$ROOT/tools/k8s" && go build -trimpath -ldflags "-s -w$v" -o "$OUT/tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  log "building etcd $(version_of k8s go.etcd.io/etcd/server/v3), kwok $(version_of k8s sigs.k8s.io/kwok), kustomize $(version_of k8s sigs.k8s.io/kustomize/kustomize/v5)"
  # kwok, etcd and kustomize carry their versions as source constants.
  (cd "$ROOT/tools/k8s" && go build -trimpath -ldflags "-s -w" -o "$OUT/tmp/" \
    sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl)
  (cd "$ROOT/tools/k8s" && go build -trimpath -ldflags "-s -w" -o "$OUT/tmp/kustomize" sigs.k8s.io/kustomize/kustomize/v5)
  (cd "$ROOT/tools/k8s" && go build -trimpath -ldflags "-s -w" -o "$OUT/tmp/etcd" go.etcd.io/etcd/server/v3)
  local ms
  ms="$(version_of metrics-server sigs.k8s.io/metrics-server)"
  log "building metrics-server $ms"
  # metrics-server's Makefile stamps client-go's version package (its PKG).
  (cd "$ROOT/tools/metrics-server" && go build -trimpath -o "$OUT/tmp/metrics-server" \
    -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$ms" sigs.k8s.io/metrics-server/cmd/metrics-server)
}

build_argocd() {
  local a
  a="$(version_of argocd github.com/argoproj/argo-cd/v3)"
  log "building Argo CD $a (Go toolchain $ARGOCD_GOTOOLCHAIN)"
  (cd "$ROOT/tools/argocd" && GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN" go build -trimpath -o "$OUT/tmp/argocd" \
    -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${a#v} -X github.com/argoproj/argo-cd/v3/common.gitTreeState=clean" \
    github.com/argoproj/argo-cd/v3/cmd)
}

# The real node's add-ons, each from its own module.
build_node_addons() {
  local c l p
  c="$(version_of coredns github.com/coredns/coredns)"
  log "building CoreDNS $c"
  (cd "$ROOT/tools/coredns" && go build -trimpath -ldflags "-s -w" -o "$OUT/tmp/coredns" github.com/coredns/coredns)
  l="$(version_of local-path github.com/rancher/local-path-provisioner)"
  log "building local-path-provisioner $l"
  (cd "$ROOT/tools/local-path" && go build -trimpath -ldflags "-s -w -X main.VERSION=$l" -o "$OUT/tmp/local-path-provisioner" \
    github.com/rancher/local-path-provisioner)
  # Module v0.55.1 is Prometheus 2.55.1; stamped as its Makefile (promu) stamps release builds.
  p="$(version_of prometheus github.com/prometheus/prometheus)"
  p="2.${p#v0.}"
  log "building Prometheus $p"
  (cd "$ROOT/tools/prometheus" && go build -trimpath -o "$OUT/tmp/prometheus" \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$p -X github.com/prometheus/common/version.Branch=release-${p%.*}" \
    github.com/prometheus/prometheus/cmd/prometheus)
}

build_helm() {
  local h
  h="$(version_of helm helm.sh/helm/v4)"
  log "building helm $h"
  (cd "$ROOT/tools/helm" && go build -trimpath -o "$OUT/tmp/helm" \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$h -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    helm.sh/helm/v4/cmd/helm)
}

mkdir -p "$TOOLS_DIR/cluster"
exec 9>"$TOOLS_DIR/cluster/.lock"
flock 9 # two runs at once (CI + a developer) build once
if complete; then
  echo "cluster tools: cache hit ($BIN)" >&2
else
  export CGO_ENABLED=0
  start=$SECONDS
  rm -rf "$OUT/tmp"
  mkdir -p "$OUT/tmp"
  build_k8s
  build_argocd
  build_helm
  build_node_addons
  rm -rf "$BIN"
  mv "$OUT/tmp" "$BIN"
  echo "$((SECONDS - start))" >"$OUT/build-seconds"
  echo "cluster tools: built in $((SECONDS - start)) s into $BIN (Go build cache: $(go env GOCACHE))" >&2
  # Older keys are dead weight (each ~1 GB of binaries).
  find "$TOOLS_DIR/cluster" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" -exec rm -rf {} +
fi
((PRINT_BIN)) && echo "$BIN"
exit 0
