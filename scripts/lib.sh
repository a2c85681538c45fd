# shellcheck shell=bash
# Shared plumbing for the scripts in scripts/: the usage text (the script's header comment), progress
# lines and fatal errors. Source it first, before any `cd`: it resolves the calling script's path.

ASIDE_SCRIPT="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"

# Prints the header comment of the calling script (line 2 up to `set -euo pipefail`).
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$ASIDE_SCRIPT"; }
# Prints the usage and exits when the first argument asks for help; call as `help_exit "$@"`.
help_exit() {
  case "${1:-}" in -h | --help)
    usage
    exit 0
    ;;
  esac
}
log() { echo "==> $*" >&2; }
die() {
  echo "$(basename "$ASIDE_SCRIPT"): $*" >&2
  exit 1
}

# Installs the given Debian packages (as root with apt-get) or stops, saying how to install them.
apt_install() {
  (($# == 0)) && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >&2
  else
    die "missing $*: sudo apt-get install -y $*"
  fi
}

# version_of MODULE-DIR MODULE-PATH: the version tools/MODULE-DIR/go.mod requires of MODULE-PATH (the single
# source of the pins; a `tool` block line names the module without a version, hence the /^v/). Needs $ROOT.
version_of() {
  awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' "$ROOT/tools/$1/go.mod"
}

# Argo CD 3.6 needs Go >= 1.27.0 (its go.mod); the go command fetches this toolchain from the module proxy.
ARGOCD_GOTOOLCHAIN="go1.27.3"
# argocd_module_dir: the pinned Argo CD module's directory in the Go module cache (downloaded if missing), for
# its manifests/install.yaml and the scripts its image ships. Needs $ROOT.
argocd_module_dir() {
  (cd "$ROOT/tools/argocd" && GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN" go mod download github.com/argoproj/argo-cd/v3 \
    && GOTOOLCHAIN="$ARGOCD_GOTOOLCHAIN" go list -m -f '{{.Dir}}' github.com/argoproj/argo-cd/v3)
}

# wait_until TIMEOUT-S CMD...: polls CMD every 0.25 s; sets WAITED (seconds, 0.1 s resolution) for the caller;
# false on timeout. Used by the e2e scripts.
# shellcheck disable=SC2034
wait_until() {
  local limit="$1" start now
  shift
  start="$(date +%s.%N)"
  while true; do
    if "$@" >/dev/null 2>&1; then
      now="$(date +%s.%N)"
      WAITED="$(echo "$now - $start" | bc | xargs printf '%.1f')"
      return 0
    fi
    now="$(date +%s.%N)"
    (($(echo "$now - $start > $limit" | bc))) && { WAITED="$limit"; return 1; }
    sleep 0.25
  done
}
