#!/usr/bin/env bash
# Swagger UI in a real browser (issue 4, part 4): starts aside (with API_TOKEN set) against a
# throwaway Postgres + Redis and runs tests/browser/swagger.mjs, which drives Debian's Chromium
# through npm playwright-core: /docs -> Authorize -> POST /data "Try it out" -> 201 + id ->
# GET /data/{id} -> the value. Screenshots land in $SCREENSHOT_DIR (CI artifacts).
#
# Usage: scripts/browser.sh [-h]
#
# Installs what is missing on a fresh Debian machine (as root): chromium (Debian's package; no tool
# ever downloads a browser of its own), nodejs + npm, and the locked npm packages (npm ci).
# Knobs (env): SCREENSHOT_DIR (default $CARGO_TARGET_DIR/browser, else target/browser),
#   CHROMIUM=/usr/bin/chromium, SKIP_BUILD=1.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
help_exit "$@"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
BIN="$TARGET_DIR/dist/aside"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
SCREENSHOT_DIR="${SCREENSHOT_DIR:-$TARGET_DIR/browser}"
export CHROMIUM
# playwright-core never downloads browsers; this keeps any other playwright package from trying
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

ensure_tools() {
  local missing=()
  [[ -x "$CHROMIUM" ]] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  command -v curl >/dev/null || missing+=(curl)
  apt_install "${missing[@]}"
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
  ensure_tools
  local want have
  want="$(sed -n 's/.*"playwright-core": "\(.*\)".*/\1/p' tests/browser/package.json)"
  have="$(sed -n 's/^  "version": "\(.*\)".*/\1/p' tests/browser/node_modules/playwright-core/package.json 2>/dev/null || true)"
  if [[ "$want" != "$have" ]]; then
    log "npm ci (tests/browser)"
    (cd tests/browser && npm ci --no-audit --no-fund >&2)
  fi
  if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --profile dist --bin aside"
    cargo build --profile dist --bin aside >&2
  fi
  [[ -x "$BIN" ]] || die "$BIN not built"

  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  services_start
  local port i token
  port="$(_svc_free_port)"
  token="browser-token-$RANDOM$RANDOM"
  mkdir -p "$SCREENSHOT_DIR"
  DATABASE_URL="$TEST_DATABASE_URL" REDIS_URL="$TEST_REDIS_URL" BIND_ADDR="127.0.0.1:$port" \
    API_TOKEN="$token" RUST_LOG=info LOG_FORMAT=json "$BIN" serve >"$SCREENSHOT_DIR/aside.log" 2>&1 &
  SERVER_PID=$!
  for ((i = 0; i < 300; i++)); do
    [[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ready")" == 200 ]] && break
    sleep 0.05
  done
  log "Chromium $("$CHROMIUM" --version 2>/dev/null | awk '{ print $2 }'), screenshots in $SCREENSHOT_DIR"
  ASIDE_URL="http://127.0.0.1:$port" API_TOKEN="$token" SCREENSHOT_DIR="$SCREENSHOT_DIR" \
    node tests/browser/swagger.mjs
}

main "$@"
