#!/usr/bin/env bash
# Instruction and syscall profile of one request on each path (issue 10): how docs/benchmarks.md's
# "instructions per hit/miss/PUT/POST" and "syscalls per request" tables are made. Not a test and
# not part of scripts/bench.sh; run it by hand before and after a change.
#
# Usage: scripts/bench/profile.sh [-h] [SCENARIO...]     (default: hit miss put post)
#
#   hit   GET /data/{id} over a warm 100-id hot set
#   miss  GET /data/{id} of records whose entries were just invalidated exactly as a write does it
#         (a fresh token of the current master term replaces the record's token, the entry is
#         deleted), each id once: MGET -> SELECT -> fill
#   put   PUT /data/{id}, each id once (commit, then invalidate)
#   post  POST /data, unique keys
#
# Method (instruction counts do not move with machine load; wall-clock does): the `profiling` build
# (release code + symbols) runs under `valgrind --tool=callgrind`; per scenario, a warm-up, then
# `callgrind_control -z`, DURATION s of wrk (1 thread, CONNS connections), `callgrind_control -d`;
# instructions / completed requests. The idle process's own background work (timers, the Redis term
# check every second) is measured the same way over DURATION s and shown separately; it is NOT
# subtracted. Then the same binary runs natively under `strace -f` for STRACE_SECONDS per scenario:
# syscalls per request by name, and writes per request to each peer (client, Redis, Postgres),
# which is the number of round trips (fred and sqlx write one batch per round trip); Redis commands
# per request come from INFO commandstats. (Under valgrind, sha2 cannot use the CPU's SHA extensions
# and computes each ETag in software: ~14 k instructions per miss that real hardware does not spend.)
#
# Knobs (env): DURATION=5 CONNS=8 SEED=60000 STRACE_SECONDS=3 SKIP_BUILD=1 CALLGRIND=0|1 STRACE=0|1
#   BIN (default: the profiling build) DATABASE_POOLER (passed to aside; default none). Output: a markdown table on stdout; raw files
#   in $CARGO_TARGET_DIR/profile/.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
help_exit "$@"

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"
# shellcheck source=scripts/services.sh
source scripts/services.sh

DURATION="${DURATION:-5}"
CONNS="${CONNS:-8}"
SEED="${SEED:-60000}"
STRACE_SECONDS="${STRACE_SECONDS:-3}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${BIN:-$TARGET_DIR/profiling/aside}"
OUT="$TARGET_DIR/profile"
SCENARIOS=("$@")
((${#SCENARIOS[@]})) || SCENARIOS=(hit miss put post)
export SKIP_REDIS_HA=1

for t in valgrind callgrind_control strace wrk psql redis-cli python3 curl; do
  command -v "$t" >/dev/null || die "missing $t"
done

PIDS=()
cleanup() {
  services_stop_after "${PIDS[@]}"
}

wait_ready() { # PORT SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ready" 2>/dev/null)" == 200 ]] && return 0
    sleep 0.1
  done
  die "aside on :$1 never became ready"
}

start_aside() { # PORT WRAPPER... ; sets APID (the aside process itself)
  local port="$1"
  shift
  env DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    CACHE_TTL_SECONDS=3600 RUST_LOG=info LOG_FORMAT=json DATABASE_POOLER="${DATABASE_POOLER:-none}" \
    "$@" "$BIN" serve >/dev/null 2>"$OUT/aside-$port.stderr" &
  APID=$!
  PIDS+=("$APID")
  wait_ready "$port" 120
}

metric() { # PORT NAME-PREFIX -> sum of matching series
  curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 { s += $NF } END { printf "%d\n", s }'
}

# What a write does to each of the ids FROM..FROM+N-1: a fresh token of the current term, entry deleted.
invalidate_ids() { # FROM N
  local ns
  ns="$(redis-cli -p "$REDIS_PORT" INFO replication | tr -d '\r' | awk -F: '$1 == "master_replid" { print substr($2, 1, 16) }')"
  [[ ${#ns} == 16 ]] || die "no master_replid"
  python3 - "$1" "$2" "$ns" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import os, sys
start, n, ns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def cmd(*a):
    out = [f"*{len(a)}\r\n"]
    for x in a:
        out.append(f"${len(x.encode())}\r\n{x}\r\n")
    return "".join(out)
w = sys.stdout.write
for i in range(start, start + n):
    tag = f"aside:v1:{{rec:{i}}}"
    w(cmd("SET", f"{tag}:tok", ns + os.urandom(16).hex(), "EX", "7210"))
    w(cmd("DEL", f"{tag}:body"))
PY
}

lua() { # NAME -> path of common.lua + NAME.lua
  cat scripts/bench/common.lua "scripts/bench/$1.lua" >"$OUT/$1.lua"
  echo "$OUT/$1.lua"
}

# drive SCENARIO PORT SECONDS: runs the scenario's load; sets REQS and MISSES.
NEXT_MISS=1
drive() {
  local sc="$1" port="$2" secs="$3" script from
  local url="http://127.0.0.1:$port"
  case "$sc" in
    hit)
      curl -s "$url/data/[1-100]" >/dev/null
      script=$(lua hot)
      ;;
    miss)
      # Enough invalidated ids that no id is read twice in the window.
      from=$NEXT_MISS
      invalidate_ids "$from" $((SEED - from + 1))
      NEXT_MISS=$((from + 1))
      export BENCH_FROM="$from" BENCH_METHOD=GET
      script=$(lua seq)
      ;;
    put)
      export BENCH_FROM=$((RANDOM % SEED + 1)) BENCH_METHOD=PUT
      script=$(lua seq)
      ;;
    post) script=$(lua post) ;;
    *) die "unknown scenario $sc" ;;
  esac
  export BENCH_IDS="$SEED" BENCH_HOT=100 BENCH_RUN="p$RANDOM$RANDOM"
  local m0 m1 line
  m0=$(metric "$port" 'aside_cache_lookups_total{outcome="miss"}')
  # Only the measured window's commands (the miss preparation above went straight to Redis).
  redis-cli -p "$REDIS_PORT" CONFIG RESETSTAT >/dev/null
  [[ -n "${ZERO:-}" ]] && $ZERO >/dev/null
  line="$(wrk -t1 -c"$CONNS" -d"${secs}s" --timeout 30s -s "$script" "$url" | grep '^RESULT ')"
  [[ -n "${DUMP:-}" ]] && $DUMP >/dev/null
  m1=$(metric "$port" 'aside_cache_lookups_total{outcome="miss"}')
  local reqs non2xx
  [[ "$line" =~ requests=([0-9]+) ]] && reqs=${BASH_REMATCH[1]}
  [[ "$line" =~ non2xx=([0-9]+) ]] && non2xx=${BASH_REMATCH[1]}
  ((non2xx == 0)) || die "$sc: $non2xx non-2xx responses"
  if [[ "$sc" == miss ]]; then
    NEXT_MISS=$((NEXT_MISS + reqs + CONNS))
    ((NEXT_MISS < SEED)) || die "miss: ran out of invalidated ids; raise SEED"
  fi
  REQS=$reqs MISSES=$((m1 - m0))
}

summary_ir() { # callgrind dump file -> total instructions
  awk '/^summary:/ { print $2; exit } /^totals:/ { t = $2 } END { if (t) print t }' "$1" | head -n1
}

callgrind_run() {
  log "callgrind: start aside under valgrind"
  local port
  port="$(_svc_free_port)"
  rm -f "$OUT"/cg.out*
  start_aside "$port" valgrind --tool=callgrind --callgrind-out-file="$OUT/cg.out" --dump-instr=no
  local vg=$APID
  ZERO="callgrind_control -z $vg"
  DUMP="callgrind_control -d $vg"
  local sc n=0 reqs misses ir prev
  echo "| scenario | requests | misses | instructions / request |" >"$OUT/callgrind.md"
  echo "|---|---:|---:|---:|" >>"$OUT/callgrind.md"
  for sc in "${SCENARIOS[@]}"; do
    log "callgrind: $sc (warm-up)"
    ZERO="" DUMP="" drive "$sc" "$port" 2
    log "callgrind: $sc"
    prev=$(find "$OUT" -name 'cg.out.*' | wc -l)
    drive "$sc" "$port" "$DURATION"
    reqs=$REQS misses=$MISSES
    n=$(find "$OUT" -name 'cg.out.*' | wc -l)
    ((n > prev)) || die "callgrind dump missing"
    # dumps are numbered in order (cg.out.1, .2, …; the directory was emptied at start)
    local f="$OUT/cg.out.$n"
    cp "$f" "$OUT/cg.$sc"
    ir=$(summary_ir "$f")
    echo "| $sc | $reqs | $misses | $((ir / reqs)) |" >>"$OUT/callgrind.md"
    log "callgrind: $sc: $reqs requests, $misses misses, $((ir / reqs)) instructions/request"
  done
  # background work of the idle process over the same window
  callgrind_control -z "$vg" >/dev/null
  sleep "$DURATION"
  callgrind_control -d "$vg" >/dev/null
  ir=$(summary_ir "$OUT/cg.out.$(find "$OUT" -name 'cg.out.*' | wc -l)")
  echo "| (idle process, ${DURATION} s) | – | – | $ir in total |" >>"$OUT/callgrind.md"
  kill "$vg"
  wait "$vg" 2>/dev/null || true
  ZERO="" DUMP=""
}

strace_run() {
  log "strace: start aside natively"
  local port
  port="$(_svc_free_port)"
  start_aside "$port"
  local pid=$APID sc
  echo "| scenario | syscalls / request | writes to client / Redis / Postgres per request | Redis commands / request (incl. those a script runs) | top syscalls / request |" >"$OUT/strace.md"
  echo "|---|---:|---|---|---|" >>"$OUT/strace.md"
  for sc in "${SCENARIOS[@]}"; do
    ZERO="" DUMP="" drive "$sc" "$port" 1
    strace -f -qq -o "$OUT/strace.$sc" -p "$pid" &
    local st=$!
    sleep 0.5
    local reqs
    ZERO="" DUMP="" drive "$sc" "$port" "$STRACE_SECONDS"
    reqs=$REQS
    kill -INT "$st"
    wait "$st" 2>/dev/null || true
    redis-cli -p "$REDIS_PORT" INFO commandstats | tr -d '\r' >"$OUT/redis.$sc"
    # fd -> peer, from the process's sockets (remote port Redis/Postgres, local port = ours)
    python3 - "$pid" "$port" "$REDIS_PORT" "$PG_PORT" "$OUT/strace.$sc" "$OUT/redis.$sc" "$reqs" "$sc" \
      >>"$OUT/strace.md" <<'PY'
import collections, os, re, sys
pid, port, rport, pport, trace, redis, reqs, sc = sys.argv[1:]
reqs = int(reqs)
inode_peer = {}
for f in ("/proc/net/tcp", "/proc/net/tcp6"):
    for ln in open(f).readlines()[1:]:
        p = ln.split()
        local, remote, inode = int(p[1].split(":")[1], 16), int(p[2].split(":")[1], 16), p[9]
        if remote == int(rport): inode_peer[inode] = "redis"
        elif remote == int(pport): inode_peer[inode] = "postgres"
        elif local == int(port): inode_peer[inode] = "client"
fd_peer = {}
for fd in os.listdir(f"/proc/{pid}/fd"):
    try:
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        continue
    m = re.match(r"socket:\[(\d+)\]", link)
    if m and m.group(1) in inode_peer:
        fd_peer[int(fd)] = inode_peer[m.group(1)]
    elif not m:
        fd_peer[int(fd)] = "other"  # stdout (batched logs), tokio's eventfd wake-ups
calls = collections.Counter()
writes = collections.Counter()
for ln in open(trace):
    m = re.match(r"(?:\d+\s+)?([a-z_0-9]+)\((\d+)?", ln)
    if not m or "resumed>" in ln[:40]:
        m2 = re.match(r"(?:\d+\s+)?<\.\.\. ([a-z_0-9]+) resumed>", ln)
        if m2: continue
        if not m: continue
    name = m.group(1)
    calls[name] += 1
    if name in ("write", "writev", "sendto", "sendmsg") and m.group(2):
        fd = int(m.group(2))
        # wrk's connections are closed by now; any other socket written to is a client's
        writes[fd_peer.get(fd, "client")] += 1
cmds = 0
for ln in open(redis):
    m = re.match(r"cmdstat_(\w+):calls=(\d+)", ln)
    if m and m.group(1) not in ("config", "info"):
        cmds += int(m.group(2))
total = sum(calls.values())
top = ", ".join(f"{k} {v / reqs:.2f}" for k, v in calls.most_common(6))
print(f"| {sc} | {total / reqs:.1f} | {writes['client'] / reqs:.2f} / {writes['redis'] / reqs:.2f} / "
      f"{writes['postgres'] / reqs:.2f} | {cmds / reqs:.2f} | {top} |")
PY
    log "strace: $sc: $(tail -n1 "$OUT/strace.md")"
  done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}

main() {
  mkdir -p "$OUT"
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --profile profiling --bin aside"
    cargo build --profile profiling --bin aside >&2
  fi
  [[ -x "$BIN" ]] || die "$BIN missing"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  services_start
  DATABASE_URL="$TEST_DATABASE_URL" RUST_LOG=warn "$BIN" migrate >/dev/null
  psql -q -v ON_ERROR_STOP=1 -v n="$SEED" -f scripts/bench/seed.sql "$TEST_DATABASE_URL" >/dev/null
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo n/a)$(git diff --quiet 2>/dev/null || echo '+dirty'), $(date -u '+%Y-%m-%d %H:%M UTC'), load $(cut -d' ' -f1-3 /proc/loadavg), wrk -c$CONNS, $DURATION s per scenario"
  echo
  if [[ "${CALLGRIND:-1}" == 1 ]]; then
    callgrind_run
    cat "$OUT/callgrind.md"
    echo
  fi
  if [[ "${STRACE:-1}" == 1 ]]; then
    NEXT_MISS=1
    strace_run
    cat "$OUT/strace.md"
  fi
}

main
