#!/usr/bin/env bash
# scripts/validate/realscrape.sh: a real Prometheus (Debian's build) scrapes a real aside with the scrape config
# and alert rules the manifests ship (ops/prometheus/prometheus-compose.yml with the target, intervals and rule
# path set for this run), against throwaway Postgres + Redis from scripts/services.sh. Then: target up, every
# dashboard query and alert metric has data, and AsideHighErrorRatio fires with Postgres stopped.
#
# Usage: scripts/validate/realscrape.sh [-h|--help]
# Env: ASIDE_BIN (prebuilt binary; default: cargo build --bin aside into $CARGO_TARGET_DIR or target/),
#      SERVICES_SH (default scripts/services.sh).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
log() { echo "==> $*" >&2; }
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/validate/tools.sh
source "$ROOT/scripts/validate/tools.sh"
tools_install
PY="$TOOLS_DIR/venv/bin/python"
SERVICES_SH="${SERVICES_SH:-$ROOT/scripts/services.sh}"
if [[ ! -f "$SERVICES_SH" ]]; then
  echo "FINDING realscrape: $SERVICES_SH (the throwaway Postgres + Redis helper) is missing"
  exit 1
fi
# shellcheck source=/dev/null
source "$SERVICES_SH"

WORK="$(mktemp -d)"
APP_PID=""
PROM_PID=""
cleanup() {
  local rc=$?
  [[ -n "$APP_PID" ]] && kill "$APP_PID" 2>/dev/null && wait "$APP_PID" 2>/dev/null
  [[ -n "$PROM_PID" ]] && kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
  services_stop >/dev/null 2>&1 || true
  if [[ $rc -ne 0 ]]; then
    echo "---- aside log (last 30 lines)"; tail -n 30 "$WORK/aside.log" 2>/dev/null || true
    echo "---- prometheus log (last 15 lines)"; tail -n 15 "$WORK/prometheus.log" 2>/dev/null || true
  fi
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_http() {
  local url="$1" secs="$2" i
  for ((i = 0; i < secs * 4; i++)); do
    if "$PY" -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then return 0; fi
    sleep 0.25
  done
  echo "FINDING realscrape: $url did not answer 200 within ${secs}s"
  return 1
}

if [[ -n "${ASIDE_BIN:-}" ]]; then
  BIN="$ASIDE_BIN"
else
  log "cargo build --bin aside (debug profile: shares the test build's artifacts)"
  cargo build --locked --quiet --bin aside
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/aside"
fi

log "starting throwaway Postgres + Redis"
services_start >/dev/null
APP_PORT="$(free_port)"
PROM_PORT="$(free_port)"
TOKEN="validate-local-token"
APP="http://127.0.0.1:$APP_PORT"
PROM="http://127.0.0.1:$PROM_PORT"

log "starting aside on $APP"
DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$APP_PORT" API_TOKEN="$TOKEN" \
  CACHE_TTL_SECONDS=60 CACHE_TIMEOUT_MS=100 SHUTDOWN_DRAIN_SECONDS=1 LOG_FORMAT=json RUST_LOG=warn \
  "$BIN" serve >"$WORK/aside.log" 2>&1 &
APP_PID=$!
wait_http "$APP/ready" 60

# The shipped compose config, with only the target, the intervals (2 s, so the run is short) and the rule path changed.
"$PY" - "$WORK/prometheus.yml" "127.0.0.1:$APP_PORT" <<'PY'
import os, sys, yaml
c = yaml.safe_load(open("ops/prometheus/prometheus-compose.yml"))
c["global"]["scrape_interval"] = c["global"]["evaluation_interval"] = "2s"
c["rule_files"] = [os.path.abspath("ops/prometheus/alerts.yml")]
job = next(j for j in c["scrape_configs"] if j["job_name"] == "aside")
job["scrape_interval"] = "2s"
job["static_configs"][0]["targets"] = [sys.argv[2]]
yaml.safe_dump(c, open(sys.argv[1], "w"), sort_keys=False)
PY
promtool check config "$WORK/prometheus.yml" >/dev/null
log "starting Prometheus on $PROM"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
wait_http "$PROM/-/ready" 30

"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN"
log "stopping Redis for BYPASS traffic and cache errors"
redis_stop >/dev/null
"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN" --bypass
redis_start >/dev/null
sleep 6 # contract: the cache is used again within 5 s
"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN"
"$PY" scripts/validate/realscrape.py check "$PROM"

log "stopping Postgres: AsideHighErrorRatio must fire"
pg_stop >/dev/null
"$PY" scripts/validate/realscrape.py fire "$PROM" "$APP" "$TOKEN" AsideHighErrorRatio
pg_start >/dev/null
echo "realscrape: real Prometheus scraped real aside; dashboard + alert metrics present; AsideHighErrorRatio fired, 0 findings"
