#!/usr/bin/env bash
# scripts/otelcol.sh: builds the OpenTelemetry Collector the trace tests send spans to (tools/otelcol: the OTLP
# receiver and the file exporter, composed by our own main.go) from its Go modules at the versions pinned in
# tools/otelcol/go.mod + go.sum, into a cache directory outside the checkout.
#
# Usage: scripts/otelcol.sh [--print-bin] [-h|--help]
#   (no args)     build it when missing, then print one line: cache hit or cold build time
#   --print-bin   the same, then print the path of the binary (scripts/test.sh: OTELCOL_BIN="$(… --print-bin)")
#
# The cache key is a hash of tools/otelcol/{go.mod,go.sum,main.go} and this script, kept apart from
# scripts/cluster-tools.sh's key, so a collector pin change rebuilds only the collector. The binary lands in
# $ASIDE_TOOLS_DIR/otelcol/<key>/otelcol (default ~/.cache/aside-tools); Go's own module and build caches
# (go env GOMODCACHE GOCACHE) are reused across runs and keys. Two runs at once build once (flock).
# Measured cold build on the 2-core build machine: see docs/contract-tests.md ("Traces").
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${ASIDE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools}"
PRINT_BIN=0

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --print-bin) PRINT_BIN=1 ;;
  "") ;;
  *) usage >&2; die "unknown argument: $1" ;;
esac

command -v go >/dev/null || die "go not found: install Go >= 1.26 (https://go.dev/doc/install)"

KEY="$(cat "$ROOT"/tools/otelcol/{go.mod,go.sum,main.go} "$ROOT/scripts/otelcol.sh" | sha256sum | cut -c1-16)"
OUT="$TOOLS_DIR/otelcol/$KEY"
BIN="$OUT/otelcol"

mkdir -p "$TOOLS_DIR/otelcol"
exec 9>"$TOOLS_DIR/otelcol/.lock"
flock 9
if [[ -x "$BIN" ]]; then
  echo "otelcol: cache hit ($BIN)" >&2
else
  # The collector release is the version go.mod requires of go.opentelemetry.io/collector/otelcol.
  version="$(awk '$1 == "go.opentelemetry.io/collector/otelcol" { print $2; exit }' "$ROOT/tools/otelcol/go.mod")"
  log "building the OpenTelemetry Collector $version (otlpreceiver + fileexporter)"
  start=$SECONDS
  mkdir -p "$OUT"
  (cd "$ROOT/tools/otelcol" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${version#v}" \
    -o "$OUT/otelcol.tmp" .)
  mv "$OUT/otelcol.tmp" "$BIN"
  echo "$((SECONDS - start))" >"$OUT/build-seconds"
  echo "otelcol: built in $((SECONDS - start)) s into $BIN (Go build cache: $(go env GOCACHE))" >&2
  # Older keys are dead weight (~40 MB each).
  find "$TOOLS_DIR/otelcol" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" -exec rm -rf {} +
fi
((PRINT_BIN)) && echo "$BIN"
exit 0
