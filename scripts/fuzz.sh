#!/usr/bin/env bash
# API fuzzing with schemathesis (issue 4, part 3): every operation of the running service's own
# /openapi.json, a bounded number of generated requests each, against a throwaway Postgres + Redis.
#
# Usage: scripts/fuzz.sh [-h] [EXTRA SCHEMATHESIS ARGS...]
#
# Checks: not_a_server_error (no 5xx), status_code_conformance (only documented statuses),
# content_type_conformance, response_schema_conformance, response_headers_conformance,
# negative_data_rejection (schema-invalid input is a 4xx), ignored_auth (writes without the token
# are refused), use_after_free and ensure_resource_availability (a created record can be read, a
# deleted one is gone). The service runs with API_TOKEN set and schemathesis sends the token.
# Afterwards the service must still be alive and /health 200. Prints "fuzz: N passed, N failed"
# per operation from schemathesis's JUnit report; exit status 0 only with 0 failures.
#
# Knobs (env): FUZZ_EXAMPLES=200 (max examples per operation), FUZZ_MAX_TIME=180 (s, whole run),
#   FUZZ_SEED (random seed; default random, printed so a failure can be replayed),
#   FUZZ_PHASES=examples,fuzzing,stateful (schemathesis 4.32.5's "coverage" phase crashes inside
#   hypothesis on this machine's CPython 3.11 with "AST constructor recursion depth mismatch", a
#   tool error, not a finding; add it back with FUZZ_PHASES when that is fixed), FUZZ_VENV (schemathesis virtualenv, default
#   ~/.cache/aside/schemathesis-$SCHEMATHESIS_VERSION), SKIP_BUILD=1.
# Reports: $CARGO_TARGET_DIR/fuzz/ (junit.xml, service log).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

SCHEMATHESIS_VERSION="4.32.5"
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$TARGET_DIR/dist/aside"
OUT="$TARGET_DIR/fuzz"
FUZZ_EXAMPLES="${FUZZ_EXAMPLES:-200}"
FUZZ_MAX_TIME="${FUZZ_MAX_TIME:-180}"
FUZZ_SEED="${FUZZ_SEED:-$RANDOM$RANDOM}"
FUZZ_PHASES="${FUZZ_PHASES:-examples,fuzzing,stateful}"
FUZZ_VENV="${FUZZ_VENV:-$HOME/.cache/aside/schemathesis-$SCHEMATHESIS_VERSION}"
TOKEN="fuzz-token-$RANDOM$RANDOM"
CHECKS="not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,ignored_auth,use_after_free,ensure_resource_availability"

ensure_schemathesis() {
  if [[ -x "$FUZZ_VENV/bin/schemathesis" ]] &&
    "$FUZZ_VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    return 0
  fi
  command -v python3 >/dev/null || {
    [[ "$(id -u)" == 0 ]] || die "python3 missing: sudo apt-get install -y python3 python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv >&2
  }
  if ! python3 -m venv "$FUZZ_VENV" >&2; then
    [[ "$(id -u)" == 0 ]] || die "python3 -m venv failed: sudo apt-get install -y python3-venv"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
    python3 -m venv "$FUZZ_VENV" >&2
  fi
  log "pip install schemathesis==$SCHEMATHESIS_VERSION into $FUZZ_VENV"
  "$FUZZ_VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
}

SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  services_stop
}

main() {
  command -v curl >/dev/null || die "curl missing"
  ensure_schemathesis
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --profile dist --bin aside"
    cargo build --profile dist --bin aside >&2
  fi
  [[ -x "$BIN" ]] || die "$BIN not built"
  rm -rf "$OUT"
  mkdir -p "$OUT"

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  services_start
  local port i
  port="$(_svc_free_port)"
  DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    API_TOKEN="$TOKEN" RUST_LOG=warn LOG_FORMAT=json "$BIN" serve >"$OUT/aside.log" 2>&1 &
  SERVER_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" == 200 ]] && break
    sleep 0.05
  done
  curl -sf "http://127.0.0.1:$port/openapi.json" >"$OUT/openapi.json" || die "no /openapi.json"

  log "schemathesis $SCHEMATHESIS_VERSION, seed $FUZZ_SEED, <= $FUZZ_EXAMPLES examples per operation, <= $FUZZ_MAX_TIME s"
  local rc=0
  (cd "$OUT" && "$FUZZ_VENV/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --checks "$CHECKS" --phases "$FUZZ_PHASES" \
    --max-examples "$FUZZ_EXAMPLES" --max-time "$FUZZ_MAX_TIME" --seed "$FUZZ_SEED" \
    --header "Authorization: Bearer $TOKEN" --request-timeout 5 --workers 2 \
    --suppress-health-check all --no-color \
    --report junit --report-junit-path "$OUT/junit.xml" "$@") || rc=$?

  local alive=0
  kill -0 "$SERVER_PID" 2>/dev/null || alive=1
  [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health")" == 200 ]] || alive=1

  local passed=0 failed=0
  if [[ -f "$OUT/junit.xml" ]]; then
    read -r passed failed < <(python3 - "$OUT/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
p = f = 0
for c in cases:
    if c.find("failure") is not None or c.find("error") is not None:
        f += 1
    elif c.find("skipped") is None:
        p += 1
print(p, f)
PY
    )
  fi
  if ((alive != 0)); then
    echo "FAIL the service survived the fuzzing: it is gone or /health is not 200 (see $OUT/aside.log)"
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
  if ((rc != 0 && failed == 0)); then
    echo "FAIL schemathesis exited $rc without a failing operation in its report"
    failed=$((failed + 1))
  fi
  echo "(replay with FUZZ_SEED=$FUZZ_SEED scripts/fuzz.sh)"
  echo "fuzz: $passed passed, $failed failed"
  ((failed == 0))
}

main "$@"
