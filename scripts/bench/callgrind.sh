#!/usr/bin/env bash
# scripts/bench/callgrind.sh: instructions per request of an aside binary under valgrind's callgrind, the
# method of docs/benchmarks.md's notes ("How profiled"): warm up with wrk, zero the counters, wrk for a
# while (8 connections), dump, instructions of the whole process (every thread, the span exporter's too)
# divided by the requests wrk completed.
#
# Usage: scripts/bench/callgrind.sh BINARY hit|miss [NAME=VALUE...]
#   hit    GET /data/{id} over the 100-id hot set (S1): every measured request a cache HIT
#   miss   GET /data/{id}, each id once, none read before: every measured request a MISS (database read + fill)
#   NAME=VALUE  extra environment for aside, e.g. OTEL_TRACES_SAMPLER=always_on; the literal value
#          OTLP makes OTEL_EXPORTER_OTLP_ENDPOINT point at a real OpenTelemetry Collector (scripts/otelcol.sh)
#
# Starts its own Postgres and Redis (scripts/services.sh, SKIP_REDIS_HA=1), seeds 40000 records, and stops
# everything however it ends. Build the binary with `cargo build --profile profiling`. Prints one line:
#   <mode> <instructions per request> (<requests> requests, X-Cache deltas from /metrics)
# Knobs: DURATION (seconds of measured wrk, default 5), WARMUP (seconds, default 3), KEEP_DUMP=path (copy the
# callgrind dump there, for callgrind_annotate).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
help_exit "$@"
(($# >= 2)) || {
  usage >&2
  exit 2
}
BIN="$(readlink -f "$1")"
MODE="$2"
shift 2
[[ -x "$BIN" ]] || die "not an executable: $BIN"
[[ "$MODE" == hit || "$MODE" == miss ]] || die "mode must be hit or miss"
for tool in valgrind callgrind_control wrk psql curl; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install valgrind wrk postgresql-client curl)"
done

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export SKIP_REDIS_HA=1
for kv in "$@"; do
  [[ "$kv" == *=OTLP ]] && OTELCOL_BIN="$(scripts/otelcol.sh --print-bin)" && export OTELCOL_BIN
done
# shellcheck source=scripts/services.sh
source scripts/services.sh
WORK="$(mktemp -d)"
VG_PID=""
cleanup() {
  [[ -n "$VG_PID" ]] && kill -TERM "$VG_PID" 2>/dev/null && wait "$VG_PID" 2>/dev/null
  services_stop
  rm -rf "$WORK"
}
trap cleanup EXIT
services_start

PORT="$(_svc_free_port "$PG_PORT")"
envs=(DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$PORT" LOG_FORMAT=json)
for kv in "$@"; do
  if [[ "$kv" == *=OTLP ]]; then envs+=("${kv%%=*}=$TEST_OTLP_ENDPOINT"); else envs+=("$kv"); fi
done
(cd "$WORK" && exec env "${envs[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.%p" "$BIN" \
  >"$WORK/aside.log" 2>"$WORK/valgrind.log") &
VG_PID=$!
for ((i = 0; i < 600; i++)); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null || die "aside did not get ready under valgrind: $(tail -5 "$WORK/valgrind.log")"
psql -q "$TEST_DATABASE_URL" -c "INSERT INTO records (key, value, created_at, updated_at)
  SELECT 'bench:' || g, jsonb_build_object('n', g, 'name', 'record ' || g), now(), now()
  FROM generate_series(1, 40000) g" >/dev/null

# hit: ids 1..100 (warm-up fills them); miss: warm-up reads 39001..40000, the measured run walks up from 101.
cat >"$WORK/hit.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/data/" .. (n % 100 + 1))
end
EOF
cat >"$WORK/warm-miss.lua" <<'EOF'
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/data/" .. (39001 + n % 1000))
end
EOF
cat >"$WORK/miss.lua" <<'EOF'
local n = 100
request = function()
  n = n + 1
  return wrk.format("GET", "/data/" .. n)
end
EOF
warm="$WORK/hit.lua"
[[ "$MODE" == miss ]] && warm="$WORK/warm-miss.lua"
wrk -t1 -c8 -d"${WARMUP:-3}s" -s "$warm" "http://127.0.0.1:$PORT" >/dev/null
lookups() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v o="$1" '$1 == "aside_cache_lookups_total{outcome=\"" o "\"}" { print $2 }'; }
hits0="$(lookups hit)" miss0="$(lookups miss)"
# The /metrics scrapes before -z and after -d fall outside the measured window.
callgrind_control -z "$VG_PID" >/dev/null
out="$(wrk -t1 -c8 -d"${DURATION:-5}s" -s "$WORK/$MODE.lua" "http://127.0.0.1:$PORT")"
callgrind_control -d "$VG_PID" >/dev/null
hits="$(($(lookups hit) - hits0))" misses="$(($(lookups miss) - miss0))"
requests="$(echo "$out" | awk '/requests in/ { print $1 }')"
sleep 1
dumps=("$WORK"/cg.*.1) # callgrind_control -d: the first dump of the process
dump="${dumps[0]}"
[[ -n "${KEEP_DUMP:-}" ]] && cp "$dump" "$KEEP_DUMP"
total="$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")"
echo "$MODE $((total / requests)) instructions per request ($requests requests; X-Cache: $hits hit, $misses miss)"
