#!/usr/bin/env bash
# The one test command: formatting, lints, and the whole test suite against a throwaway
# PostgreSQL and Redis (scripts/services.sh) that are stopped again however the run ends; then the
# integration suite (tests/api) once more with every app reaching Postgres through the throwaway
# PgBouncer in transaction pooling mode.
#
# Usage: scripts/test.sh [TEST-RUNNER ARGS...]
#   scripts/test.sh                     # everything
#   scripts/test.sh cache               # only tests whose name contains "cache"
#   scripts/test.sh -- --nocapture      # (cargo test) arguments after -- go to the test binary
#
# Runs, in order: the throwaway services (so a missing one fails in seconds); cargo fmt --check;
# cargo clippy --all-targets -- -D warnings;
# cargo nextest run (or cargo test when cargo-nextest is not installed), with
#   TEST_DATABASE_URL  superuser URL of the throwaway Postgres (tests CREATE DATABASE per test)
#   TEST_REDIS_URL     URL of the throwaway Redis
#   TEST_PGBOUNCER_URL the same Postgres through PgBouncer (pool_mode = transaction)
#   REDIS_SERVER_BIN   path of redis-server, for tests that start (and kill) their own Redis
#   TEST_OTLP_ENDPOINT an OpenTelemetry Collector's OTLP/HTTP receiver (built by scripts/otelcol.sh from
#                      tools/otelcol, cached in ~/.cache/aside-tools; needs Go >= 1.26 the first time)
#   TEST_OTLP_FILE     the JSON-lines file that collector writes every received span to
# exported; then the same runner on tests/api with TEST_THROUGH_PGBOUNCER=1 (the apps' DATABASE_URL
# goes through PgBouncer; CREATE DATABASE still goes straight to Postgres). Respects CARGO_TARGET_DIR.
# On a fresh Debian machine (as root) missing postgresql / redis-server / pgbouncer / rustfmt / clippy
# are installed first.
#
# Knobs: TEST_RUNNER=nextest|cargo (default: nextest when available), SKIP_LINT=1 (skip fmt+clippy),
#        SKIP_PGBOUNCER_RUN=1 (skip the second run through PgBouncer).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

help_exit "$@"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
source scripts/services.sh

command -v cargo >/dev/null || {
  echo "cargo not found: install rustup (https://rustup.rs); rust-toolchain.toml then picks the version" >&2
  exit 1
}
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "installing $component"
    rustup component add "$component"
  fi
done

# Services first: a missing Postgres/Redis/PgBouncer (installed via apt as root, otherwise named with the
# command that installs it) must stop the run before minutes of clippy build, not after.
trap services_stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# The trace tests' real OTLP receiver (a cache hit after the first build).
OTELCOL_BIN="$(scripts/otelcol.sh --print-bin)"
export OTELCOL_BIN
services_start
export TEST_DATABASE_URL TEST_REDIS_URL TEST_PGBOUNCER_URL REDIS_SERVER_BIN TEST_OTLP_ENDPOINT TEST_OTLP_FILE

runner="${TEST_RUNNER:-}"
if [[ -z "$runner" ]]; then
  if cargo nextest --version >/dev/null 2>&1; then runner=nextest; else runner=cargo; fi
fi

if [[ "${SKIP_LINT:-0}" != 1 ]]; then
  log "cargo fmt --check"
  cargo fmt --check
  log "cargo clippy --all-targets -- -D warnings"
  cargo clippy --all-targets -- -D warnings
fi

if [[ "$runner" == nextest ]]; then
  log "cargo nextest run $*"
  cargo nextest run "$@"
else
  log "cargo test $*"
  cargo test "$@"
fi

# Issue 8: aside behind a transaction-pooling PgBouncer, every contract test again.
if [[ "${SKIP_PGBOUNCER_RUN:-0}" != 1 ]]; then
  export TEST_THROUGH_PGBOUNCER=1
  if [[ "$runner" == nextest ]]; then
    log "cargo nextest run --test api $* (through PgBouncer, pool_mode = transaction)"
    cargo nextest run --test api "$@"
  else
    log "cargo test --test api $* (through PgBouncer, pool_mode = transaction)"
    cargo test --test api "$@"
  fi
fi
