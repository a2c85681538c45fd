#!/usr/bin/env bash
# A/B of two aside binaries (or one binary under two environments) in the same minutes: how the
# allocator, its purge delay and the release profile were chosen (issue 10; docs/benchmarks.md notes).
# Not a test and not part of scripts/bench.sh, whose ratios are to ceilings, not to another build.
#
# Usage: scripts/bench/ab.sh [-h] BINARY_A BINARY_B
#
# Starts its own Postgres and Redis (scripts/services.sh, SKIP_REDIS_HA=1), seeds RECORDS records, runs
# both binaries side by side, then for each round and scenario a 1 s warm-up and DURATION s of wrk
# (1 thread, 64 connections) against A, then against B. Per run it prints req/s, p99, the server's CPU
# per request, its RSS and its peak RSS so far (VmHWM); at the end the sums of CPU per request and of
# req/s over all runs of each side. The machine is shared and noisy: read the sums over many
# interleaved runs, not one pair.
#
# Knobs (env): ENV_A, ENV_B (extra NAME=VALUE words for that side, e.g. ENV_B=MIMALLOC_PURGE_DELAY=10),
#   SCENARIOS="list hot mixed" (scripts/bench/*.lua), ROUNDS=3, DURATION=5, RECORDS=10000, CONNS=64.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
help_exit "$@"
(($# == 2)) || {
  usage >&2
  exit 2
}
A="$(readlink -f "$1")"
B="$(readlink -f "$2")"
[[ -x "$A" && -x "$B" ]] || die "both arguments must be executables"
for tool in wrk psql curl; do
  command -v "$tool" >/dev/null || die "missing $tool (apt-get install wrk postgresql-client curl)"
done

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export SKIP_REDIS_HA=1
# shellcheck source=scripts/services.sh
source scripts/services.sh

SCENARIOS="${SCENARIOS:-list hot mixed}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5}"
RECORDS="${RECORDS:-10000}"
CONNS="${CONNS:-64}"
OUT="$(mktemp -d)"

PIDS=()
cleanup() {
  services_stop_after "${PIDS[@]}"
  rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

services_start >/dev/null
DATABASE_URL="$TEST_DATABASE_URL" RUST_LOG=warn "$A" migrate >/dev/null
psql -q -v ON_ERROR_STOP=1 -v n="$RECORDS" -f scripts/bench/seed.sql "$TEST_DATABASE_URL" >/dev/null

start() { # BINARY "ENV WORDS" -> "PID PORT"
  local port
  port="$(_svc_free_port)"
  # shellcheck disable=SC2086 # the extra environment is a list of words on purpose
  env $2 DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    CACHE_TTL_SECONDS=3600 RUST_LOG=info LOG_FORMAT=json "$1" serve >/dev/null 2>&1 &
  echo "$! $port"
}
read -r PID_A PORT_A < <(start "$A" "${ENV_A:-}")
read -r PID_B PORT_B < <(start "$B" "${ENV_B:-}")
PIDS+=("$PID_A" "$PID_B")
for port in "$PORT_A" "$PORT_B"; do
  _svc_until 100 curl -sf -o /dev/null "http://127.0.0.1:$port/ready" || die "aside on $port never became ready"
done

for s in $SCENARIOS; do
  [[ -f "scripts/bench/$s.lua" ]] || die "no scripts/bench/$s.lua"
  cat scripts/bench/common.lua "scripts/bench/$s.lua" >"$OUT/$s.lua"
done
export BENCH_IDS="$RECORDS" BENCH_HOT=100

ticks() { # PID -> utime + stime in clock ticks
  local f
  read -r -a f < <(sed 's/^.*) //' "/proc/$1/stat")
  echo $((f[11] + f[12]))
}

one() { # SIDE PID PORT SCENARIO: prints one result line
  local url="http://127.0.0.1:$3" t0 t1 line
  wrk -t1 -c"$CONNS" -d1s -s "$OUT/$4.lua" "$url" >/dev/null
  t0=$(ticks "$2")
  line="$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$OUT/$4.lua" "$url" | grep '^RESULT ')" || die "wrk failed"
  t1=$(ticks "$2")
  python3 - "$1" "$4" "$((t1 - t0))" "$(getconf CLK_TCK)" "$line" \
    "$(awk '/^VmRSS/ { print $2 }' "/proc/$2/status")" "$(awk '/^VmHWM/ { print $2 }' "/proc/$2/status")" <<'PY'
import sys
side, sc, ticks, hz, line, rss, hwm = sys.argv[1:]
kv = dict(p.split("=") for p in line.split()[1:])
reqs = int(kv["requests"])
print(f"{side} {sc} rps={float(kv['rps']):.0f} p99_ms={int(kv['p99_us']) / 1000:.2f} "
      f"cpu_us={int(ticks) / int(hz) * 1e6 / reqs:.1f} rss_mb={int(rss) / 1024:.1f} hwm_mb={int(hwm) / 1024:.1f}")
PY
}

for ((r = 1; r <= ROUNDS; r++)); do
  for s in $SCENARIOS; do
    one A "$PID_A" "$PORT_A" "$s"
    one B "$PID_B" "$PORT_B" "$s"
  done
done | tee "$OUT/runs.txt"
python3 - "$OUT/runs.txt" <<'PY'
import re, sys
cpu, rps = {"A": 0.0, "B": 0.0}, {"A": 0.0, "B": 0.0}
for line in open(sys.argv[1]):
    m = re.match(r"(A|B) \S+ rps=(\d+) .*cpu_us=([\d.]+)", line)
    if m:
        rps[m.group(1)] += float(m.group(2))
        cpu[m.group(1)] += float(m.group(3))
print(f"sum of CPU µs per request: A {cpu['A']:.1f}, B {cpu['B']:.1f} (B/A {cpu['B'] / cpu['A']:.3f}); "
      f"sum of req/s: A {rps['A']:.0f}, B {rps['B']:.0f} (B/A {rps['B'] / rps['A']:.3f})")
PY
