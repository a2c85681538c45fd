#!/usr/bin/env bash
# scripts/validate/realscrape.sh: a real Prometheus (Debian's build) scrapes a real aside with the scrape config
# and alert rules the manifests ship (ops/prometheus/prometheus-compose.yml with the target, intervals and rule
# path set for this run), against throwaway Postgres + Redis from scripts/services.sh. aside runs with the env
# of the shipped ConfigMap (k8s/aside-configmap.yaml), METRICS_BIND_ADDR included, so Prometheus scrapes the
# separate metrics listener as in the cluster. Then: /metrics is 404 on the API port and served on the metrics
# port, target up, every dashboard query and alert metric has data, AsideHighErrorRatio fires with Postgres stopped.
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
  local url="$1" secs="$2" pid="${3:-}" i
  for ((i = 0; i < secs * 4; i++)); do
    if "$PY" -c "import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url" 2>/dev/null; then return 0; fi
    if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "FINDING realscrape: the process serving $url exited (log below)"
      return 1
    fi
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
METRICS_PORT="$(free_port)"
PROM_PORT="$(free_port)"
TOKEN="validate-local-token"
APP="http://127.0.0.1:$APP_PORT"
METRICS="http://127.0.0.1:$METRICS_PORT"
PROM="http://127.0.0.1:$PROM_PORT"

# The API pods' environment exactly as k8s/ ships it (the ConfigMap, METRICS_BIND_ADDR included), with only
# these changed for a local run: both listen addresses moved to free loopback ports (same shape: a separate
# metrics listener), a 1 s drain, warn-level logs; the Secret's keys point at the throwaway services.
"$PY" - "$WORK/aside.env" "$APP_PORT" "$METRICS_PORT" "$TEST_DATABASE_URL" "$TEST_REDIS_URL" "$TOKEN" <<'PY'
import sys, yaml
out, app_port, metrics_port, db, redis, token = sys.argv[1:]
cm = next(d for d in yaml.safe_load_all(open("k8s/aside-configmap.yaml")) if d)
env = {k: str(v) for k, v in cm["data"].items()}
if "METRICS_BIND_ADDR" not in env:
    sys.exit("FINDING realscrape: k8s/aside-configmap.yaml sets no METRICS_BIND_ADDR: /metrics would share the API port")
if env["METRICS_BIND_ADDR"].rsplit(":", 1)[1] == env.get("BIND_ADDR", "0.0.0.0:8080").rsplit(":", 1)[1]:
    sys.exit(f"FINDING realscrape: METRICS_BIND_ADDR {env['METRICS_BIND_ADDR']} uses the API port")
changed = {"BIND_ADDR": f"127.0.0.1:{app_port}", "METRICS_BIND_ADDR": f"127.0.0.1:{metrics_port}",
           "SHUTDOWN_DRAIN_SECONDS": "1", "RUST_LOG": "warn"}
print("ConfigMap env " + " ".join(f"{k}={v}" for k, v in env.items()) + "; changed for this run: "
      + " ".join(f"{k}={v}" for k, v in changed.items()))
env.update(changed, DATABASE_URL=db, REDIS_URL=redis, API_TOKEN=token)
with open(out, "w") as fh:
    fh.writelines(f"{k}={v}\n" for k, v in env.items())
PY
mapfile -t APP_ENV <"$WORK/aside.env"

log "starting aside: API on $APP, /metrics on $METRICS"
env -i PATH="$PATH" "${APP_ENV[@]}" "$BIN" serve >"$WORK/aside.log" 2>&1 &
APP_PID=$!
wait_http "$APP/ready" 60 "$APP_PID"
"$PY" scripts/validate/realscrape.py ports "$APP" "$METRICS"

# The shipped compose config, with only the target, the intervals (2 s, so the run is short) and the rule path changed.
"$PY" - "$WORK/prometheus.yml" "127.0.0.1:$METRICS_PORT" <<'PY'
import os, sys, yaml
c = yaml.safe_load(open("ops/prometheus/prometheus-compose.yml"))
c["global"]["scrape_interval"] = c["global"]["evaluation_interval"] = "2s"
c["rule_files"] = [os.path.abspath("ops/prometheus/alerts.yml")]
job = next(j for j in c["scrape_configs"] if j["job_name"] == "aside")
job["scrape_interval"] = "2s"
job["static_configs"][0]["targets"] = [sys.argv[2]]  # the metrics listener, as aside:9091 in compose
yaml.safe_dump(c, open(sys.argv[1], "w"), sort_keys=False)
PY
promtool check config "$WORK/prometheus.yml" >/dev/null
log "starting Prometheus on $PROM"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
wait_http "$PROM/-/ready" 30 "$PROM_PID"

"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN"
log "stopping Redis for BYPASS traffic and cache errors"
redis_stop >/dev/null
"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN" --bypass
redis_start >/dev/null
sleep 6 # contract: the cache is used again within 5 s
"$PY" scripts/validate/realscrape.py traffic "$APP" "$TOKEN"
"$PY" scripts/validate/realscrape.py check "$PROM" "$METRICS/metrics"

log "stopping Postgres: AsideHighErrorRatio must fire"
pg_stop >/dev/null
"$PY" scripts/validate/realscrape.py fire "$PROM" "$APP" "$TOKEN" AsideHighErrorRatio
pg_start >/dev/null
echo "realscrape: real Prometheus scraped real aside's metrics port (ConfigMap env); all queries have data; alert fired; 0 findings"
