#!/usr/bin/env bash
# Benchmark suite for aside with in-run ceilings (issue 4, part 1). Not part of the test command.
#
# Usage: scripts/bench.sh [-h]
#
# Starts a throwaway Postgres + Redis (scripts/services.sh), builds the dist binary (Cargo.toml profile.dist, as shipped) and the two
# ceiling examples, seeds SEED records, and drives every target with wrk (1 thread, CONNS
# connections, WARMUP s warm-up then DURATION s measured) on loopback, in ROUNDS interleaved
# rounds (the order rotates each round); medians go into docs/benchmarks.md.
#
# Targets (scenario ids as in issues 4 and 10):
#   C_POEM  ceiling: bare poem answering a fixed ~200-byte JSON       (examples/ceiling_poem.rs)
#   C_FRED  ceiling: poem + fred answering one Redis GET               (examples/ceiling_fred.rs)
#   C_PG    ceiling: pgbench, single-row INSERT ... RETURNING          (scripts/bench/insert.sql)
#   C_DB    ceiling: poem + sqlx, one prepared SELECT by primary key   (examples/ceiling_db.rs, CEILING=db)
#   C_MISS  ceiling: poem + fred + sqlx, MGET + SELECT + EVALSHA fill  (examples/ceiling_db.rs, CEILING=miss)
#   C_PUT   ceiling: the same binary's PUT: UPDATE ... RETURNING + one pipelined invalidation
#   C_POST  ceiling: the same binary's POST: one single-row INSERT ... RETURNING + one SET of the list token
#   S1 GET /data/{id}, 100-id hot set      S2 GET /data/{id} uniform after one cold pass
#   S3 list pages of 50                    S4 POST /data, unique keys
#   S5 95 % GET / 5 % PUT on the hot set   S6 = S1 with CACHE_ENABLED=false
#   S7 PUT /data/{id}, uniform over the SEED ids (each id's turn comes rarely: no row-lock queues)
#   S8 GET /data/{id}, every one a miss: MISS_IDS extra records whose entries were just invalidated the
#      way a write does it (fresh token of the current term, entry deleted), each read once
# Then: latency vs connections (CURVE) for S1, C_FRED and S6 -> an SVG plot; and process start to
# /ready 200 (STARTS times, median).
#
# Knobs (env): DURATION=10 WARMUP=2 ROUNDS=3 CONNS=64 SEED=10000 HOT=100 CURVE="1 8 64 256"
#   CURVE_DURATION=5 STARTS=5 MISS_IDS=150000
#   SCENARIOS="C_POEM C_FRED C_PG C_DB C_MISS C_PUT C_POST S1 S2 S3 S4 S5 S6 S7 S8"
#   BENCH_TTL=3600 (CACHE_TTL_SECONDS of the benchmarked service, so S2's cold pass stays warm)
#   BENCH_RUST_LOG=info (the service's default log level; logs go to /dev/null)
#   OUT_MD=docs/benchmarks.md OUT_PLOT=docs/benchmarks-latency.svg (WRITE_DOCS=0: leave docs alone)
#   SKIP_BUILD=1 (use the binaries already built)
# Raw results: $CARGO_TARGET_DIR/bench/ (results.jsonl, server logs).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
# shellcheck source=scripts/services.sh
source scripts/services.sh
# One Postgres and one Redis: the idle Redis Cluster and Sentinel set (their gossip, pings and
# replication) would only add background load to two busy cores.
export SKIP_REDIS_HA=1

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-64}"
SEED="${SEED:-10000}"
HOT="${HOT:-100}"
CURVE="${CURVE:-1 8 64 256}"
CURVE_DURATION="${CURVE_DURATION:-5}"
STARTS="${STARTS:-5}"
SCENARIOS="${SCENARIOS:-C_POEM C_FRED C_PG C_DB C_MISS C_PUT C_POST S1 S2 S3 S4 S5 S6 S7 S8}"
MISS_IDS="${MISS_IDS:-150000}"
BENCH_TTL="${BENCH_TTL:-3600}"
BENCH_RUST_LOG="${BENCH_RUST_LOG:-info}"
OUT_MD="${OUT_MD:-docs/benchmarks.md}"
OUT_PLOT="${OUT_PLOT:-docs/benchmarks-latency.svg}"
WRITE_DOCS="${WRITE_DOCS:-1}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/dist/aside"
EXAMPLES="$TARGET_DIR/dist/examples"
OUT="$TARGET_DIR/bench"
RESULTS="$OUT/results.jsonl"

# --- tools ------------------------------------------------------------------------------------
ensure_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v pgbench >/dev/null || missing+=(postgresql-client)
  command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
  command -v curl >/dev/null || missing+=(curl)
  command -v python3 >/dev/null || missing+=(python3)
  apt_install "${missing[@]}"
}

# --- processes --------------------------------------------------------------------------------
PIDS=()
cleanup() {
  services_stop_after "${PIDS[@]}"
}

wait_http() { # URL [seconds]
  local i
  for ((i = 0; i < ${2:-30} * 20; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null)" == 200 ]] && return 0
    sleep 0.05
  done
  die "$1 did not answer 200"
}

start_aside() { # NAME PORT [ENV=VAL...]; sets LAST_PID
  local name="$1" port="$2"
  shift 2
  env DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    CACHE_TTL_SECONDS="$BENCH_TTL" RUST_LOG="$BENCH_RUST_LOG" LOG_FORMAT=json "$@" \
    "$BIN" serve >/dev/null 2>"$OUT/$name.stderr" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

# Where the rest of the machine's CPU goes during a measured window (issue 10: an S5 request costs
# Postgres and Redis work on the same two cores, which the server's own CPU does not show).
machine_ticks() { # -> busy clock ticks of all cores (user, nice, system, irq, softirq; not idle/iowait/steal)
  local _c user nice system _idle _iow irq softirq _rest
  read -r _c user nice system _idle _iow irq softirq _rest </proc/stat
  echo $((user + nice + system + irq + softirq))
}

pg_ticks() { # the postmaster, every process it runs (backends, autovacuum, WAL writer, ...) and those it
  # reaped (its cutime + cstime: pgbench's backends end inside the window)
  local pm f
  pm="$(head -n1 "$SERVICES_DIR/pg/data/postmaster.pid")"
  read -r -a f < <(sed 's/^.*) //' "/proc/$pm/stat")
  # shellcheck disable=SC2046
  echo $(($(procs_ticks $(pgrep -P "$pm")) + f[11] + f[12] + f[13] + f[14]))
}

procs_ticks() { # PID... -> summed utime+stime in clock ticks (a process gone meanwhile counts 0)
  local pid sum=0 f
  for pid in "$@"; do
    [[ -r "/proc/$pid/stat" ]] || continue
    read -r -a f < <(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}

# Ticks of Postgres, Redis and the machine, for a window's start and end (process sets re-read at each
# end: a backend that ended inside the window loses its share, one that started gains its lifetime).
others_ticks() { # -> "postgres redis machine"
  echo "$(pg_ticks) $(procs_ticks "$(_svc_redis_pid)") $(machine_ticks)"
}

# A child's CPU from bash's `times` output (its second line: children's user and system time).
times_us() { # FILE -> microseconds
  python3 - "$1" <<'PY'
import re, sys
line = open(sys.argv[1]).read().splitlines()[1]
print(int(sum(int(m) * 60e6 + float(s) * 1e6 for m, s in re.findall(r"(\d+)m([0-9.]+)s", line))))
PY
}

metric_sum() { # PORT OUTCOME -> sum of aside_cache_lookups_total{outcome=OUTCOME}
  curl -s "http://127.0.0.1:$1/metrics" |
    awk -v o="outcome=\"$2\"" 'index($0, "aside_cache_lookups_total{") == 1 && index($0, o) { s += $NF } END { printf "%d\n", s }'
}

# --- one measurement --------------------------------------------------------------------------
# measure ROUND SCENARIO CONNS DURATION: warm-up, then a measured wrk run; appends one JSON line.
measure() {
  local round="$1" sc="$2" conns="$3" dur="$4"
  local port pid script name
  case "$sc" in
    C_POEM) port=$P_POEM pid=$PID_POEM script=hot ;;
    C_FRED) port=$P_FRED pid=$PID_FRED script=hot ;;
    C_PG) measure_pgbench "$round" "$conns" "$dur" && return 0 ;;
    S1) port=$P_ASIDE pid=$PID_ASIDE script=hot ;;
    S2) port=$P_ASIDE pid=$PID_ASIDE script=uniform ;;
    S3) port=$P_ASIDE pid=$PID_ASIDE script=list ;;
    S4) port=$P_ASIDE pid=$PID_ASIDE script=post ;;
    S5) port=$P_ASIDE pid=$PID_ASIDE script=mixed ;;
    S6) port=$P_NOCACHE pid=$PID_NOCACHE script=hot ;;
    C_DB) port=$P_CDB pid=$PID_CDB script=hot ;;
    C_MISS) port=$P_CMISS pid=$PID_CMISS script=hot ;;
    C_POST) port=$P_CMISS pid=$PID_CMISS script=post ;;
    C_PUT | S7)
      port=$P_ASIDE pid=$PID_ASIDE script=seq
      [[ "$sc" == C_PUT ]] && port=$P_CMISS pid=$PID_CMISS
      export BENCH_METHOD=PUT BENCH_FROM=$((RANDOM % SEED + 1)) BENCH_IDS="$SEED"
      ;;
    S8)
      port=$P_ASIDE pid=$PID_ASIDE script=seq
      export BENCH_METHOD=GET BENCH_FROM=$((SEED + 1)) BENCH_IDS=$((SEED + MISS_IDS))
      invalidate_miss_ids
      ;;
    *) die "unknown scenario $sc" ;;
  esac
  name="$OUT/lua/$script.lua"
  local url="http://127.0.0.1:$port"
  export BENCH_RUN="r${round}c${conns}$RANDOM"
  wrk -t1 -c"$conns" -d"${WARMUP}s" -s "$name" "$url" >/dev/null 2>&1 || true
  export BENCH_RUN="m${round}c${conns}$RANDOM"
  # S8 reads each id once: the warm-up read some, so invalidate them all again.
  [[ "$sc" == S8 ]] && invalidate_miss_ids

  local h0=0 m0=0 b0=0 h1=0 m1=0 b1=0 t0 t1
  if [[ "$sc" == S* ]]; then
    h0=$(metric_sum "$port" hit) m0=$(metric_sum "$port" miss) b0=$(metric_sum "$port" bypass)
  fi
  # RSS sampled every 200 ms while the measured run lasts
  (while sleep 0.2; do awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || exit 0; done) \
    >"$OUT/rss.tmp" &
  local sampler=$!
  local o0 o1
  o0=$(others_ticks)
  t0=$(procs_ticks "$pid")
  local line
  # `times` in the same subshell: wrk's own CPU (it shares the two cores too)
  line="$(
    set -o pipefail
    wrk -t1 -c"$conns" -d"${dur}s" --timeout 5s -s "$name" "$url" | grep '^RESULT ' && times >"$OUT/wrk.times"
  )" || die "wrk failed for $sc"
  t1=$(procs_ticks "$pid")
  o1=$(others_ticks)
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  if [[ "$sc" == S* ]]; then
    h1=$(metric_sum "$port" hit) m1=$(metric_sum "$port" miss) b1=$(metric_sum "$port" bypass)
  fi
  local rss
  rss=$(sort -n "$OUT/rss.tmp" | tail -n1)
  python3 - "$round" "$sc" "$conns" "$((t1 - t0))" "$(getconf CLK_TCK)" "${rss:-0}" \
    "$((h1 - h0))" "$((m1 - m0))" "$((b1 - b0))" "$line" "$o0" "$o1" "$(times_us "$OUT/wrk.times")" >>"$RESULTS" <<'PY'
import json, sys
rnd, sc, conns, ticks, hz, rss, hit, miss, byp, line, o0, o1, wrk_us = sys.argv[1:]
kv = dict(p.split("=") for p in line.split()[1:])
reqs = int(kv["requests"])
lookups = int(hit) + int(miss) + int(byp)
pg, redis, machine = (int(b) - int(a) for a, b in zip(o0.split(), o1.split()))
def per_req_ticks(t):
    return (t / int(hz) * 1e6 / reqs) if reqs else None
print(json.dumps({
    "round": int(rnd), "scenario": sc, "conns": int(conns),
    "requests": reqs, "rps": float(kv["rps"]),
    "p50_ms": int(kv["p50_us"]) / 1000, "p99_ms": int(kv["p99_us"]) / 1000,
    "max_ms": int(kv["max_us"]) / 1000,
    "non2xx": int(kv["non2xx"]),
    "socket_errors": sum(int(kv[k]) for k in ("err_connect", "err_read", "err_write", "err_timeout")),
    "hit_ratio": (int(hit) / lookups) if lookups else None,
    "lookups": lookups, "bypass": int(byp),
    "cpu_us_per_req": per_req_ticks(int(ticks)),
    "pg_us_per_req": per_req_ticks(pg), "redis_us_per_req": per_req_ticks(redis),
    "wrk_us_per_req": (int(wrk_us) / reqs) if reqs else None,
    "machine_us_per_req": per_req_ticks(machine),
    "peak_rss_mb": int(rss) / 1024,
}))
PY
  tail -n1 "$RESULTS" >&2
  export BENCH_IDS="$SEED"
  unset BENCH_METHOD BENCH_FROM
}

# What a write does to the S8 records: a fresh token of the current master term, the entry deleted.
invalidate_miss_ids() {
  local ns
  ns="$(redis-cli -p "$REDIS_PORT" INFO replication | tr -d '\r' | awk -F: '$1 == "master_replid" { print substr($2, 1, 16) }')"
  [[ ${#ns} == 16 ]] || die "no master_replid"
  python3 - "$((SEED + 1))" "$MISS_IDS" "$ns" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import os, sys
start, n, ns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def cmd(*a):
    return f"*{len(a)}\r\n" + "".join(f"${len(x)}\r\n{x}\r\n" for x in a)
out = []
for i in range(start, start + n):
    tag = f"aside:v1:{{rec:{i}}}"
    out.append(cmd("SET", f"{tag}:tok", ns + os.urandom(16).hex(), "EX", "7210"))
    out.append(cmd("DEL", f"{tag}:body"))
sys.stdout.write("".join(out))
PY
}

# pgbench: the same single-row insert at the same concurrency; latencies from its per-txn log.
measure_pgbench() {
  local round="$1" conns="$2" dur="$3"
  local url="$TEST_DATABASE_URL"
  pgbench -n -c "$conns" -j 1 -T "$WARMUP" -f "$OUT/insert.sql" "$url" >/dev/null 2>&1 || true
  rm -f "$OUT"/pgb_log*
  local txt o0 o1
  o0=$(others_ticks)
  txt="$(cd "$OUT" && pgbench -n -c "$conns" -j 1 -T "$dur" -f "$OUT/insert.sql" -l \
    --log-prefix=pgb_log "$url" 2>&1 && times >"$OUT/wrk.times")" || die "pgbench failed: $txt"
  o1=$(others_ticks)
  python3 - "$round" "$conns" "$OUT" "$txt" "$o0" "$o1" "$(getconf CLK_TCK)" "$(times_us "$OUT/wrk.times")" >>"$RESULTS" <<'PY'
import glob, json, re, sys
rnd, conns, out, txt, o0, o1, hz, client_us = sys.argv[1:]
pg, redis, machine = (int(b) - int(a) for a, b in zip(o0.split(), o1.split()))
lat = []
for f in glob.glob(out + "/pgb_log*"):
    for ln in open(f):
        parts = ln.split()
        if len(parts) >= 3:
            lat.append(int(parts[2]))
lat.sort()
def pct(p):
    return lat[min(len(lat) - 1, int(len(lat) * p / 100))] / 1000 if lat else None
tps = float(re.search(r"tps = ([0-9.]+) \(without initial connection time\)", txt).group(1))
failed = re.search(r"number of failed transactions: (\d+)", txt)
print(json.dumps({
    "round": int(rnd), "scenario": "C_PG", "conns": int(conns), "requests": len(lat),
    "rps": tps, "p50_ms": pct(50), "p99_ms": pct(99), "max_ms": (lat[-1] / 1000) if lat else None,
    "non2xx": int(failed.group(1)) if failed else 0, "socket_errors": 0, "hit_ratio": None,
    "lookups": 0, "bypass": 0, "cpu_us_per_req": None, "peak_rss_mb": None,
    # the server here is Postgres; "wrk" is pgbench, the client
    "pg_us_per_req": (pg / int(hz) * 1e6 / len(lat)) if lat else None, "redis_us_per_req": None,
    "wrk_us_per_req": (int(client_us) / len(lat)) if lat else None,
    "machine_us_per_req": (machine / int(hz) * 1e6 / len(lat)) if lat else None,
}))
PY
  rm -f "$OUT"/pgb_log*
  tail -n1 "$RESULTS" >&2
}

# process start -> /ready 200, in ms, with Postgres and Redis up and the schema migrated
measure_start() {
  local port
  port="$(_svc_free_port)"
  DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    RUST_LOG=warn python3 scripts/bench/start_ready.py "$port" "$BIN" serve ||
    die "aside never became ready"
}

# --- main -------------------------------------------------------------------------------------
main() {
  ensure_tools
  mkdir -p "$OUT/lua"
  : >"$RESULTS"
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --profile dist --bin aside --examples"
    cargo build --profile dist --bin aside --examples >&2
  fi
  [[ -x "$BIN" && -x "$EXAMPLES/ceiling_poem" && -x "$EXAMPLES/ceiling_fred" && -x "$EXAMPLES/ceiling_db" ]] ||
    die "binaries missing under $TARGET_DIR/dist"
  local s
  for s in hot uniform list post mixed seq; do
    cat scripts/bench/common.lua "scripts/bench/$s.lua" >"$OUT/lua/$s.lua"
  done
  cp scripts/bench/insert.sql "$OUT/insert.sql"

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  services_start

  # machine state before we start loading it
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "memory: $(free -m | awk '/^Mem/ { print $2 " MB total, " $7 " MB available" }')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "busiest other processes before: $(ps -eo pcpu,comm --sort=-pcpu --no-headers | head -n3 | awk '{ printf "%s %s%%; ", $2, $1 }')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version 2>/dev/null || echo n/a)"
    echo "wrk: $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
    echo "postgres: $("$PG_BIN/postgres" --version)"
    echo "redis: $(redis-server --version | cut -d' ' -f3)"
    echo "aside commit: $(git rev-parse --short HEAD 2>/dev/null || echo n/a)"
  } >"$OUT/machine.txt" 2>/dev/null || true

  log "migrate + seed $SEED records (+ $MISS_IDS for S8)"
  DATABASE_URL="$TEST_DATABASE_URL" RUST_LOG=warn "$BIN" migrate >/dev/null
  psql -q -v ON_ERROR_STOP=1 -v n="$((SEED + MISS_IDS))" -f scripts/bench/seed.sql "$TEST_DATABASE_URL" >/dev/null
  local minid maxid
  read -r minid maxid < <(psql -tA -F' ' "$TEST_DATABASE_URL" -c 'SELECT min(id), max(id) FROM records')
  [[ "$minid" == 1 && "$maxid" == $((SEED + MISS_IDS)) ]] ||
    die "seeded ids are $minid..$maxid, expected 1..$((SEED + MISS_IDS))"
  export BENCH_IDS="$SEED" BENCH_HOT="$HOT"

  P_ASIDE=$(_svc_free_port)
  start_aside aside "$P_ASIDE"
  PID_ASIDE=$LAST_PID
  P_NOCACHE=$(_svc_free_port "$P_ASIDE")
  start_aside aside-nocache "$P_NOCACHE" CACHE_ENABLED=false
  PID_NOCACHE=$LAST_PID
  P_POEM=$(_svc_free_port "$P_NOCACHE")
  BIND_ADDR="127.0.0.1:$P_POEM" "$EXAMPLES/ceiling_poem" >"$OUT/ceiling_poem.log" 2>&1 &
  PID_POEM=$!
  PIDS+=("$PID_POEM")
  P_FRED=$(_svc_free_port "$P_POEM")
  REDIS_URL="$TEST_REDIS_URL" CEILING_KEYS="$SEED" BIND_ADDR="127.0.0.1:$P_FRED" \
    "$EXAMPLES/ceiling_fred" >"$OUT/ceiling_fred.log" 2>&1 &
  PID_FRED=$!
  PIDS+=("$PID_FRED")
  P_CDB=$(_svc_free_port "$P_FRED")
  DATABASE_URL="$TEST_DATABASE_URL" CEILING=db BIND_ADDR="127.0.0.1:$P_CDB" \
    "$EXAMPLES/ceiling_db" >"$OUT/ceiling_db.log" 2>&1 &
  PID_CDB=$!
  PIDS+=("$PID_CDB")
  P_CMISS=$(_svc_free_port "$P_CDB")
  DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" CEILING=miss BIND_ADDR="127.0.0.1:$P_CMISS" \
    "$EXAMPLES/ceiling_db" >"$OUT/ceiling_miss.log" 2>&1 &
  PID_CMISS=$!
  PIDS+=("$PID_CMISS")
  wait_http "http://127.0.0.1:$P_ASIDE/ready"
  wait_http "http://127.0.0.1:$P_CDB/data/1"
  wait_http "http://127.0.0.1:$P_CMISS/data/1"
  wait_http "http://127.0.0.1:$P_NOCACHE/ready"
  wait_http "http://127.0.0.1:$P_POEM/data/1"
  wait_http "http://127.0.0.1:$P_FRED/data/1"
  local bytes_aside bytes_fred
  bytes_aside=$(curl -s "http://127.0.0.1:$P_ASIDE/data/4242" | wc -c)
  bytes_fred=$(curl -s "http://127.0.0.1:$P_FRED/data/4242" | wc -c)
  log "body sizes: aside $bytes_aside bytes, ceiling_fred $bytes_fred bytes"
  echo "body bytes: aside GET /data/4242 $bytes_aside, ceiling_fred $bytes_fred, ceiling_poem $(curl -s "http://127.0.0.1:$P_POEM/data/1" | wc -c)" >>"$OUT/machine.txt"

  # S2's cold pass: every id once (4 parallel keep-alive curls), so S2 measures a warm cache
  log "cold pass over $SEED ids"
  local q=$((SEED / 4)) k
  for k in 0 1 2 3; do
    curl -s "http://127.0.0.1:$P_ASIDE/data/[$((k * q + 1))-$(((k + 1) * q))]" >/dev/null &
  done
  wait_jobs_quiet

  local -a order
  read -r -a order <<<"$SCENARIOS"
  local n=${#order[@]} r i
  for ((r = 1; r <= ROUNDS; r++)); do
    log "round $r/$ROUNDS"
    for ((i = 0; i < n; i++)); do
      s="${order[$(((i + r - 1) % n))]}"
      log "round $r: $s"
      measure "$r" "$s" "$CONNS" "$DURATION"
    done
  done

  local c
  for c in $CURVE; do
    for s in S1 C_FRED S6; do
      log "curve: $s at $c connections"
      measure 0 "$s" "$c" "$CURVE_DURATION"
    done
  done

  log "start -> ready, $STARTS times"
  : >"$OUT/starts.txt"
  for ((i = 0; i < STARTS; i++)); do measure_start >>"$OUT/starts.txt"; done
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/machine.txt"

  local cmd="scripts/bench.sh"
  [[ "$DURATION/$WARMUP/$ROUNDS/$CONNS/$SEED" == "10/2/3/64/10000" ]] ||
    cmd="DURATION=$DURATION WARMUP=$WARMUP ROUNDS=$ROUNDS CONNS=$CONNS SEED=$SEED scripts/bench.sh"
  local md="$OUT/benchmarks.md" plot="$OUT/benchmarks-latency.svg"
  python3 scripts/bench/report.py --results "$RESULTS" --machine "$OUT/machine.txt" \
    --starts "$OUT/starts.txt" --command "$cmd" --conns "$CONNS" --plot-data "$OUT/curve.dat" \
    --plot-name "$(basename "$OUT_PLOT")" >"$md"
  gnuplot -e "datafile='$OUT/curve.dat'; outfile='$plot'" scripts/bench/plot.gp
  if [[ "$WRITE_DOCS" == 1 ]]; then
    mkdir -p "$(dirname "$OUT_MD")" "$(dirname "$OUT_PLOT")"
    cp "$md" "$OUT_MD"
    cp "$plot" "$OUT_PLOT"
    log "wrote $OUT_MD and $OUT_PLOT"
  fi
  cat "$md"
}

wait_jobs_quiet() {
  local j
  for j in $(jobs -rp); do
    # only the cold-pass curls are plain background jobs of this shell besides the servers
    if ! printf '%s\n' "${PIDS[@]}" | grep -qx "$j"; then wait "$j" || true; fi
  done
}

main "$@"
