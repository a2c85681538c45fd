#!/usr/bin/env bash
# Fault drills for aside (issue 4, part 2). Each drill is bounded (< 60 s), drives steady load
# with scripts/drill/load.py, injects one fault, and prints one PASS/FAIL line per check and
# "NAME: N passed, N failed". Exit status 0 only when every check passed.
#
# Usage: scripts/drill.sh NAME...
#   rolling-restart   two replicas behind haproxy (active check GET /ready); SIGTERM A, wait for
#                     its exit, start it again, then B. Pass: 0 failed requests, exits 0 within
#                     drain + 5 s, /ready 503 within 1 s of SIGTERM, /health 200 and
#                     `Connection: close` during the drain, no stale read.
#   redis-outage      Redis stopped for 5 s, later frozen (SIGSTOP) for 3 s. Pass: 0 failed
#                     requests, p99 <= 50 ms during the outage, every request < 1 s while frozen,
#                     X-Cache HIT again within 5 s each time, no stale read.
#   postgres-outage   Postgres stopped for 5 s. Pass: only 2xx (cache hits) or 503 problem+json
#                     during it, nothing slower than 2 s, 100 % 2xx again within 5 s, /ready 503
#                     then 200 again within 15 s, no stale read.
#   race              writers and readers on two replicas sharing Postgres + Redis for 10 s.
#                     Pass: 0 stale reads (a read that starts after a write's response sees it or
#                     a later one); prints the number of read/write pairs checked.
#   soak              manual, not CI: SOAK_SECONDS (600) of S5 (95 % GET / 5 % PUT) with wrk,
#                     RSS sampled every 10 s. Pass: RSS growth < 10 % after warm-up, 0 errors.
#   all               the CI set: rolling-restart redis-outage postgres-outage race
#
# Knobs (env): SKIP_BUILD=1 (use the built binary), DRAIN=3 (SHUTDOWN_DRAIN_SECONDS of the
#   replicas), SOAK_SECONDS=600, DRILL_DIR (where logs and request records go; default
#   $CARGO_TARGET_DIR/drill).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case "${1:-}" in -h | --help | "")
  usage
  [[ -n "${1:-}" ]] || exit 2
  exit 0
  ;;
esac

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$TARGET_DIR/release/aside"
DRAIN="${DRAIN:-3}"
SOAK_SECONDS="${SOAK_SECONDS:-600}"
DRILL_DIR="${DRILL_DIR:-$TARGET_DIR/drill}"
LOAD=(python3 scripts/drill/load.py)

TOTAL_PASSED=0
TOTAL_FAILED=0
D_PASSED=0
D_FAILED=0
pass() {
  D_PASSED=$((D_PASSED + 1))
  echo "PASS $*"
}
fail() {
  D_FAILED=$((D_FAILED + 1))
  echo "FAIL $*"
}
check() { # COND-EXIT-STATUS NAME DETAIL
  if [[ "$1" == 0 ]]; then pass "$2: $3"; else fail "$2: $3"; fi
}

ensure_tools() {
  local missing=()
  command -v python3 >/dev/null || missing+=(python3)
  command -v curl >/dev/null || missing+=(curl)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  apt_install "${missing[@]}"
}

now() { date +%s.%N; }
event() { echo "$1 $(now)" >>"$DIR/events"; }
elapsed_since() { python3 -c "import sys,time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }

# --- processes ----------------------------------------------------------------------------------
declare -A PID PORT
PIDS=()
start_replica() { # NAME [PORT]: start `aside serve` (same port again on restart)
  local name="$1"
  PORT[$name]="${2:-${PORT[$name]:-$(_svc_free_port)}}"
  env DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:${PORT[$name]}" \
    SHUTDOWN_DRAIN_SECONDS="$DRAIN" CACHE_TTL_SECONDS="${DRILL_TTL:-60}" RUST_LOG=info LOG_FORMAT=json \
    "$BIN" serve >>"$DIR/$name.log" 2>&1 &
  PID[$name]=$!
  PIDS+=("${PID[$name]}")
}
url_of() { echo "http://127.0.0.1:${PORT[$1]}"; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" 2>/dev/null || true; }
wait_ready() { # NAME
  local i
  for ((i = 0; i < 300; i++)); do
    [[ "$(http_code "$(url_of "$1")/ready")" == 200 ]] && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || {
      tail -n 20 "$DIR/$1.log" >&2
      die "replica $1 exited during start-up"
    }
    sleep 0.05
  done
  die "replica $1 not ready after 15 s"
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  services_stop
}

# Start the load in the background; waits until its threads run. Sets LOAD_PID.
start_load() { # load.py run args...
  rm -f "$DIR/started" "$DIR/stop"
  "${LOAD[@]}" run --out "$DIR/requests.json" --started-file "$DIR/started" --stop-file "$DIR/stop" \
    "$@" 2>>"$DIR/load.log" &
  LOAD_PID=$!
  local i
  for ((i = 0; i < 600; i++)); do
    [[ -f "$DIR/started" ]] && return 0
    kill -0 "$LOAD_PID" 2>/dev/null || die "load generator exited: $(tail -n 5 "$DIR/load.log")"
    sleep 0.05
  done
  die "load generator did not start"
}

finish_load() { # DRILL: stop the load, wait for it and run the checks
  touch "$DIR/stop"
  wait "$LOAD_PID" || die "load generator failed: $(tail -n 5 "$DIR/load.log")"
  local out
  out="$("${LOAD[@]}" check --drill "$1" --data "$DIR/requests.json" --events "$DIR/events" || true)"
  echo "$out" | grep -E '^(PASS|FAIL|INFO) '
  D_PASSED=$((D_PASSED + $(echo "$out" | grep -c '^PASS ' || true)))
  D_FAILED=$((D_FAILED + $(echo "$out" | grep -c '^FAIL ' || true)))
  echo "$out" | grep -qE '^[a-z-]+: [0-9]+ passed, [0-9]+ failed$' || fail "$1: checker crashed (see $DIR)"
}

# SIGTERM a replica and check the contract's drain behaviour on it directly.
terminate_and_check() { # NAME
  local name="$1" pid="${PID[$1]}" url t0 i code ready_at="" hdr
  url="$(url_of "$name")"
  t0=$(now)
  kill -TERM "$pid"
  event "sigterm_$name"
  for ((i = 0; i < 40; i++)); do
    code="$(http_code "$url/ready")"
    if [[ "$code" == 503 ]]; then
      ready_at="$(elapsed_since "$t0")"
      break
    fi
    sleep 0.025
  done
  if [[ -n "$ready_at" ]]; then
    check "$(python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 1 else 1)" "$ready_at"; echo $?)" \
      "$name /ready 503 within 1 s of SIGTERM" "after ${ready_at} s"
  else
    fail "$name /ready 503 within 1 s of SIGTERM: still '$code' after 1 s"
  fi
  code="$(http_code "$url/health")"
  check "$([[ "$code" == 200 ]] && echo 0 || echo 1)" "$name /health 200 during the drain" "got $code"
  # a new connection during the drain is still served, and told to close
  hdr="$(curl -s -m 2 -D - -o /dev/null "$url/data/1" 2>/dev/null | tr -d '\r' || true)"
  if grep -qiE '^HTTP/[0-9.]+ 2' <<<"$hdr" && grep -qi '^connection: *close' <<<"$hdr"; then
    pass "$name serves new connections during the drain with Connection: close"
  else
    fail "$name serves new connections during the drain with Connection: close: got $(head -n1 <<<"$hdr"), $(grep -i '^connection' <<<"$hdr" || echo 'no Connection header')"
  fi
  local rc=0
  wait "$pid" || rc=$?
  local took
  took="$(elapsed_since "$t0")"
  event "exit_$name"
  check "$rc" "$name exits 0 after SIGTERM" "exit status $rc"
  check "$(python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) + 5 else 1)" "$took" "$DRAIN"; echo $?)" \
    "$name exits within drain + 5 s" "${took} s (drain ${DRAIN} s)"
}

haproxy_up() { # SERVER-NAME: is it UP in haproxy's stats?
  curl -s "http://127.0.0.1:$HA_STATS/stats;csv" | awk -F, -v s="$1" '$1 == "be" && $2 == s { print $18 }' | grep -q '^UP'
}
wait_haproxy_up() {
  local i
  for ((i = 0; i < 100; i++)); do
    haproxy_up "$1" && return 0
    sleep 0.05
  done
  fail "haproxy marks $1 UP again within 5 s"
  return 0
}

# --- drills ---------------------------------------------------------------------------------------
drill_rolling_restart() {
  start_replica a
  start_replica b
  wait_ready a
  wait_ready b
  local fe
  fe="$(_svc_free_port)"
  HA_STATS="$(_svc_free_port "$fe")"
  # haproxy stands in for Kubernetes endpoints: active readiness check, no request retries
  # beyond haproxy's default reconnect on connection failure, no redispatch.
  cat >"$DIR/haproxy.cfg" <<EOF
global
  maxconn 2000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend fe
  bind 127.0.0.1:$fe
  default_backend be
backend be
  balance roundrobin
  option httpchk GET /ready
  http-check expect status 200
  default-server inter 200ms fastinter 100ms downinter 200ms fall 1 rise 1
  server a 127.0.0.1:${PORT[a]} check
  server b 127.0.0.1:${PORT[b]} check
listen stats
  bind 127.0.0.1:$HA_STATS
  stats enable
  stats uri /stats
EOF
  haproxy -f "$DIR/haproxy.cfg" -db >"$DIR/haproxy.log" 2>&1 &
  PIDS+=("$!")
  wait_haproxy_up a
  wait_haproxy_up b

  start_load --target "http://127.0.0.1:$fe" --duration 55 --readers 6 --writers 2 \
    --write-interval 0.02
  sleep 2
  local name
  for name in a b; do
    terminate_and_check "$name"
    start_replica "$name" "${PORT[$name]}"
    wait_ready "$name"
    event "restarted_$name"
    wait_haproxy_up "$name"
    sleep 2
  done
  finish_load rolling-restart
  local stot
  stot="$(curl -s "http://127.0.0.1:$HA_STATS/stats;csv" | awk -F, '$1 == "be" && ($2 == "a" || $2 == "b") { printf "%s=%s ", $2, $8 }')"
  if haproxy_up a && haproxy_up b; then
    pass "both replicas UP in haproxy at the end: requests per server $stot"
  else
    fail "both replicas UP in haproxy at the end: $stot"
  fi
}

drill_redis_outage() {
  start_replica a
  wait_ready a
  start_load --target "$(url_of a)" --duration 40 --readers 6 --writers 1 --write-interval 0.05
  sleep 2
  event redis_stop
  redis_stop
  sleep 5
  redis_start
  event redis_start
  sleep 4
  event redis_pause
  redis_pause
  sleep 3
  redis_resume
  event redis_resume
  sleep 5
  finish_load redis-outage
}

drill_postgres_outage() {
  start_replica a
  wait_ready a
  start_load --target "$(url_of a)" --duration 40 --readers 6 --writers 1 --write-interval 0.1 \
    --read-kinds id,id,key,misskey --timeout 10 --probe "$(url_of a)/ready"
  sleep 3
  event pg_stop
  pg_stop
  sleep 5
  pg_start
  event pg_start
  # long enough to see the 5 s recovery promise kept (or not)
  sleep 8
  finish_load postgres-outage
}

drill_race() {
  start_replica a
  start_replica b
  wait_ready a
  wait_ready b
  start_load --target "$(url_of a)" --target "$(url_of b)" --duration 30 --records 16 \
    --readers 8 --writers 4 --write-interval 0
  sleep 10
  finish_load race
}

drill_soak() {
  local seed=1000
  DATABASE_URL="$TEST_DATABASE_URL" RUST_LOG=warn "$BIN" migrate >/dev/null
  psql -q -v ON_ERROR_STOP=1 "$TEST_DATABASE_URL" -c "INSERT INTO records (key, value, created_at, updated_at)
    SELECT 'soak:' || n, jsonb_build_object('n', n), now(), now() FROM generate_series(1, $seed) n" >/dev/null
  start_replica a
  wait_ready a
  local pid="${PID[a]}" lua="$DIR/mixed.lua"
  cat scripts/bench/common.lua scripts/bench/mixed.lua >"$lua"
  BENCH_IDS=$seed BENCH_HOT=100 wrk -t1 -c64 -d"${SOAK_SECONDS}s" --timeout 5s -s "$lua" "$(url_of a)" \
    >"$DIR/wrk.txt" 2>&1 &
  local wrk_pid=$! t=0
  echo "seconds rss_kb" >"$DIR/rss.txt"
  while kill -0 "$wrk_pid" 2>/dev/null; do
    echo "$t $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")" >>"$DIR/rss.txt"
    sleep 10
    t=$((t + 10))
  done
  wait "$wrk_pid" || true
  local line
  line="$(grep '^RESULT ' "$DIR/wrk.txt" || true)"
  [[ -n "$line" ]] || die "wrk produced no result: $(cat "$DIR/wrk.txt")"
  python3 - "$DIR/rss.txt" "$line" <<'PY'
import sys
rows = [tuple(map(int, l.split())) for l in open(sys.argv[1]).read().splitlines()[1:] if l.strip()]
kv = dict(p.split("=") for p in sys.argv[2].split()[1:])
base = next((r for s, r in rows if s >= 60), rows[0][1])  # after a one-minute warm-up
last = rows[-1][1]
growth = (last - base) / base * 100
errors = sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout", "non2xx"))
print(f"{'PASS' if growth < 10 else 'FAIL'} RSS growth < 10 %: {base / 1024:.1f} MB after warm-up -> "
      f"{last / 1024:.1f} MB at the end ({growth:+.1f} %), peak {max(r for _, r in rows) / 1024:.1f} MB")
print(f"{'PASS' if errors == 0 else 'FAIL'} no errors: {errors} of {kv['requests']} requests "
      f"({float(kv['rps']):.0f} req/s, p99 {int(kv['p99_us']) / 1000:.1f} ms)")
PY
}

run_drill() { # NAME
  local name="$1" fn
  fn="drill_${name//-/_}"
  declare -F "$fn" >/dev/null || die "unknown drill '$name' (try -h)"
  DIR="$DRILL_DIR/$name"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  : >"$DIR/events"
  PORT=()
  D_PASSED=0
  D_FAILED=0
  log "drill $name (logs in $DIR)"
  local t0=$SECONDS out
  services_start 2>>"$DIR/services.log"
  # the drill's own PASS/FAIL lines; soak's come from its python summary
  if [[ "$name" == soak ]]; then
    "$fn" >"$DIR/summary.txt"
    cat "$DIR/summary.txt"
    D_PASSED=$((D_PASSED + $(grep -c '^PASS ' "$DIR/summary.txt" || true)))
    D_FAILED=$((D_FAILED + $(grep -c '^FAIL ' "$DIR/summary.txt" || true)))
  else
    "$fn"
  fi
  cleanup
  echo "$name: $D_PASSED passed, $D_FAILED failed ($((SECONDS - t0)) s)"
  TOTAL_PASSED=$((TOTAL_PASSED + D_PASSED))
  TOTAL_FAILED=$((TOTAL_FAILED + D_FAILED))
}

main() {
  local n
  for n in "$@"; do
    [[ "$n" == all ]] || declare -F "drill_${n//-/_}" >/dev/null || die "unknown drill '$n' (try -h)"
  done
  ensure_tools
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release --bin aside"
    cargo build --release --bin aside >&2
  fi
  [[ -x "$BIN" ]] || die "$BIN not built"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local names=()
  for n in "$@"; do
    if [[ "$n" == all ]]; then
      names+=(rolling-restart redis-outage postgres-outage race)
    else
      names+=("$n")
    fi
  done
  for n in "${names[@]}"; do run_drill "$n"; done
  if ((${#names[@]} > 1)); then
    echo "drills: $TOTAL_PASSED passed, $TOTAL_FAILED failed"
  fi
  ((TOTAL_FAILED == 0))
}

main "$@"
