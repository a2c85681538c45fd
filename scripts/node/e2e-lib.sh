# shellcheck shell=bash
# Shared by the real-node e2e scripts (scripts/e2e-node.sh, scripts/e2e-gitops.sh): their set-up, result lines,
# clocks, and the bounded load through the NodePort (needs TOKEN set by the caller).

# e2e_init NAME: the cluster tools on PATH, the run's scratch directory and the names every scenario uses.
# shellcheck disable=SC2034 # ROOT, NODE_DIR, API and NS are the callers'
e2e_init() {
  ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  BIN="${E2E_TOOLS_BIN:-$("$ROOT/scripts/cluster-tools.sh" --print-bin)}"
  export PATH="$BIN:$PATH" E2E_TOOLS_BIN="$BIN"
  WORK="$(mktemp -d "${TMPDIR:-/tmp}/aside-$1.XXXXXX")"
  NODE_DIR="$WORK/node"
  RESULTS="$WORK/results"
  : >"$RESULTS"
  API=http://127.0.0.1:30080
  NS=aside
}

pass() { printf 'PASS  %-36s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
fail() { printf 'FAIL  %-36s %s\n' "$1" "$2" | tee -a "$RESULTS"; }
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | xargs printf '%.1f\n'; }

# load_start NAME [load.py args]: load.py through the NodePort until load_stop NAME.
load_start() {
  local name="$1"
  shift
  rm -f "$WORK/$name.stop" "$WORK/$name.started"
  python3 "$ROOT/scripts/drill/load.py" run --target "$API" --duration 900 --out "$WORK/$name.json" \
    --token "$TOKEN" --records 20 --readers 4 --writers 1 --write-interval 0.05 --timeout 5 \
    --stop-file "$WORK/$name.stop" --started-file "$WORK/$name.started" "$@" 2>"$WORK/$name.log" &
  echo $! >"$WORK/$name.pid"
  wait_until 60 test -f "$WORK/$name.started" || die "load $name did not start: $(cat "$WORK/$name.log")"
}
load_stop() {
  touch "$WORK/$1.stop"
  wait "$(cat "$WORK/$1.pid")" || die "load $1 failed: $(cat "$WORK/$1.log")"
}
# sum NAME [--from T] [--to T]: key=value summary of a load run; field NAME KEY reads one value.
sum() { python3 "$ROOT/scripts/node/loadsum.py" "$WORK/$1.json" "${@:2}"; }
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print $2 }'; }
