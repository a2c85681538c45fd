#!/usr/bin/env bash
# scripts/trace-demo.sh: see aside's traces locally without Docker, in one command. Starts the OpenTelemetry
# Collector the tests use (scripts/otelcol.sh: built from tools/otelcol into ~/.cache/aside-tools, Go >= 1.26 the
# first time) on a free port, runs aside against it (embedded SQLite + in-process cache, every request traced),
# sends a POST, a GET (MISS) and a GET (HIT) with a W3C traceparent, and prints each trace as a tree of spans
# with their attributes, as the collector received them. Everything runs in a temp dir and stops on exit.
#
# Usage: scripts/trace-demo.sh [-h|--help]
# Knobs: ASIDE_BIN (an aside binary to use; default: `cargo build --release`, then target/release/aside).
# With Docker, `docker compose up --build` and http://localhost:16686 (Jaeger) show the same spans in a UI.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for tool in curl python3; do command -v "$tool" >/dev/null || die "missing $tool"; done

OTELCOL_BIN="$(scripts/otelcol.sh --print-bin)"
if [[ -z "${ASIDE_BIN:-}" ]]; then
  log "cargo build --release"
  cargo build --release --quiet
  ASIDE_BIN="${CARGO_TARGET_DIR:-target}/release/aside"
fi
# shellcheck source=scripts/services.sh
source scripts/services.sh
SERVICES_DIR="$(mktemp -d)"
PG_PORT=0
APP_PID=""
cleanup() {
  [[ -n "$APP_PID" ]] && kill -TERM "$APP_PID" 2>/dev/null && wait "$APP_PID" 2>/dev/null
  otelcol_stop
  rm -rf "$SERVICES_DIR"
}
trap cleanup EXIT
otelcol_start || die "the collector did not start"
PORT="$(_svc_free_port "$OTLP_PORT")"
DATABASE_URL="sqlite://$SERVICES_DIR/demo.db?mode=rwc" BIND_ADDR="127.0.0.1:$PORT" LOG_FORMAT=json \
  OTEL_EXPORTER_OTLP_ENDPOINT="$TEST_OTLP_ENDPOINT" OTEL_TRACES_SAMPLER=parentbased_always_on \
  OTEL_BSP_SCHEDULE_DELAY=100 "$ASIDE_BIN" >"$SERVICES_DIR/aside.log" 2>&1 &
APP_PID=$!
for ((i = 0; i < 100; i++)); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
base="http://127.0.0.1:$PORT"
tp() { printf '00-%s-%s-01' "$(head -c16 /dev/urandom | od -An -tx1 | tr -d ' \n')" "$(head -c8 /dev/urandom | od -An -tx1 | tr -d ' \n')"; }
id="$(curl -sf -X POST "$base/data" -H 'Content-Type: application/json' -H "traceparent: $(tp)" \
  -d "{\"key\": \"demo:$RANDOM\", \"value\": {\"name\": \"Ada\"}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
for what in MISS HIT; do
  echo "GET /data/$id ($what expected):" >&2
  curl -s -o /dev/null -D - "$base/data/$id" -H "traceparent: $(tp)" | grep -iE '^(x-cache|traceparent|x-request-id):' >&2
done
sleep 1.5 # two export rounds (100 ms) and the collector's file flush
echo "log lines (trace_id next to request_id):" >&2
grep '"route"' "$SERVICES_DIR/aside.log" | cut -c1-220 >&2
python3 - "$TEST_OTLP_FILE" <<'EOF'
import collections, json, sys
spans = []
for line in open(sys.argv[1]):
    for rs in json.loads(line).get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            spans += ss.get("spans", [])
by_trace = collections.defaultdict(list)
for s in spans:
    by_trace[s["traceId"]].append(s)
def val(v):
    return next(iter(v.values())) if v else None
for trace, ss in by_trace.items():
    print(f"\ntrace {trace}")
    ids = {s["spanId"] for s in ss}
    def show(s, depth):
        attrs = ", ".join(f'{a["key"]}={val(a["value"])}' for a in s.get("attributes", []))
        ms = (int(s["endTimeUnixNano"]) - int(s["startTimeUnixNano"])) / 1e6
        status = " ERROR" if s.get("status", {}).get("code") == 2 else ""
        print(f'{"  " * depth}{s["name"]}  {ms:.3f} ms{status}  [{attrs}]')
        for c in sorted((c for c in ss if c.get("parentSpanId") == s["spanId"]), key=lambda c: c["startTimeUnixNano"]):
            show(c, depth + 1)
    for root in (s for s in ss if s.get("parentSpanId") not in ids):
        show(root, 0)
EOF
