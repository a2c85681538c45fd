#!/usr/bin/env bash
# Throwaway PostgreSQL + Redis (and a PgBouncer in front of that Postgres, a 3-master Redis Cluster and a
# Redis master + replica watched by 3 Sentinels) for tests, benchmarks and drills.
#
# Usage (sourced; the normal way):
#   source scripts/services.sh
#   services_start        # starts all three on free 127.0.0.1 ports in a `mktemp -d` dir and exports
#                         #   TEST_DATABASE_URL  postgres://postgres@127.0.0.1:$PG_PORT/aside (superuser)
#                         #   TEST_REDIS_URL     redis://127.0.0.1:$REDIS_PORT
#                         #   TEST_PGBOUNCER_URL postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/aside: the
#                         #     same server through PgBouncer in transaction pooling mode, every database
#                         #     passed through, few server connections per database
#                         #   TEST_REDIS_CLUSTER_URL  redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=…:P3
#                         #     3 masters, no replicas, all 16384 slots assigned (REDIS_CLUSTER_PORTS)
#                         #   TEST_REDIS_SENTINEL_URL redis-sentinel://127.0.0.1:S1/0?node=…:S2&node=…:S3&
#                         #     sentinelServiceName=aside: master + 1 replica, 3 sentinels, quorum 2
#                         #     (REDIS_SENTINEL_PORTS)
#                         #   PG_PORT REDIS_PORT PGBOUNCER_PORT SERVICES_DIR PG_BIN REDIS_SERVER_BIN
#                         #   TEST_OTLP_ENDPOINT http://127.0.0.1:$OTLP_PORT: an OpenTelemetry Collector's OTLP/HTTP
#                         #     receiver, when OTELCOL_BIN names the binary (scripts/otelcol.sh builds it)
#                         #   TEST_OTLP_FILE     where that collector writes every span it receives (fileexporter,
#                         #     OTLP JSON, one export request a line)
#   pg_stop / pg_start    # stop / start Postgres again on the SAME port and data (outage drills)
#   redis_stop / redis_start   # the same for Redis (it keeps nothing on disk: it comes back empty)
#   redis_pause / redis_resume # SIGSTOP / SIGCONT: a frozen Redis that still accepts TCP
#   redis_cluster_start / redis_sentinel_start   # called by services_start (SKIP_REDIS_HA=1: neither)
#   services_stop         # stops all three and deletes the dir (safe to call twice, or after a partial start)
#
# Usage (executed):
#   scripts/services.sh run CMD [ARGS...]   # start, run CMD with the variables above, stop
#   scripts/services.sh -h
#
# Never touches the machine's own Postgres (5432), Redis (6379) or PgBouncer (6432): nothing here uses
# a fixed port, a system data directory or a system service. Missing servers are installed with
# apt-get when running as root; otherwise a clear message says what to install.
#
# Knobs: SERVICES_TMP (parent of the temp dir, default /tmp; must be reachable by the postgres user),
#        PG_MAX_CONNECTIONS (default 200), PGBOUNCER_POOL_SIZE (server connections per database, default 3),
#        SKIP_REDIS_HA=1 (no cluster, no sentinels: the tests that need them then fail saying so),
#        OTELCOL_BIN (path of the collector binary; unset = no collector, the trace tests then fail saying so).
#
# This file only defines functions (and sets no shell options) so it is safe to source from
# scripts that run under `set -euo pipefail`.

_svc_log() { echo "==> services: $*" >&2; }

# Runs CMD... every 50 ms until it succeeds (0) or TRIES attempts failed (1).
_svc_until() {
  local tries="$1" i
  shift
  for ((i = 0; i < tries; i++)); do
    "$@" && return 0
    sleep 0.05
  done
  return 1
}
_svc_dead() { ! kill -0 "$1" 2>/dev/null; }
# The process named in PIDFILE (if any) terminated as above; the file removed.
_svc_stop_pidfile() {
  local pid
  pid="$(cat "$1" 2>/dev/null)"
  [[ -n "$pid" ]] && _svc_terminate "$pid"
  rm -f "$1"
}
# PORT PID: something listens on 127.0.0.1:PORT, or PID is gone (no point waiting then)
_svc_listening_or_dead() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null || _svc_dead "$2"; }

# TERM (after CONT: a paused process cannot act on it), up to 10 s to exit, then KILL.
_svc_terminate() {
  kill -CONT "$1" 2>/dev/null || true
  kill -TERM "$1" 2>/dev/null || true
  _svc_until 200 _svc_dead "$1" || kill -KILL "$1" 2>/dev/null || true
}

# Locate initdb/pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin, off PATH.
_svc_find_pg_bin() {
  local best
  best="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n1)"
  if [[ -n "$best" && -x "$best/pg_ctl" && -x "$best/initdb" ]]; then
    echo "$best"
    return 0
  fi
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(readlink -f "$(command -v pg_ctl)")"
    return 0
  fi
  return 1
}

# Debian installs pgbouncer in /usr/sbin, which is not on every user's PATH.
_svc_find_pgbouncer() {
  local p
  for p in "$(command -v pgbouncer 2>/dev/null)" /usr/sbin/pgbouncer /usr/local/sbin/pgbouncer; do
    if [[ -n "$p" && -x "$p" ]]; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Install postgresql / redis-server / pgbouncer when missing (root + apt-get), else explain and fail.
_svc_ensure_installed() {
  local missing=()
  _svc_find_pg_bin >/dev/null 2>&1 || missing+=(postgresql)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  _svc_find_pgbouncer >/dev/null 2>&1 || missing+=(pgbouncer)
  ((${#missing[@]} == 0)) && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    _svc_log "installing ${missing[*]} with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
    return 0
  fi
  echo "services.sh: missing ${missing[*]}." >&2
  echo "  install them first, e.g. (Debian/Ubuntu): sudo apt-get install -y postgresql redis-server pgbouncer" >&2
  return 1
}

# A TCP port on 127.0.0.1 that nothing listens on, below the ephemeral range (32768+) so an
# outgoing connection cannot be holding it when we restart a server on it.
_svc_free_port() {
  local p i avoid="${1:-}"
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ "$p" == "$avoid" ]] && continue
    if command -v ss >/dev/null 2>&1; then
      [[ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]] && continue
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      continue
    fi
    echo "$p"
    return 0
  done
  echo "services.sh: no free port found" >&2
  return 1
}

# Run a command as the postgres user when we are root (Postgres refuses to run as root).
_svc_as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    (cd "$SERVICES_DIR" && runuser -u postgres -- "$@")
  else
    (cd "$SERVICES_DIR" && "$@")
  fi
}

_svc_pg_init() {
  local data="$SERVICES_DIR/pg/data" sock="$SERVICES_DIR/pg/sock"
  mkdir -p "$SERVICES_DIR/pg/sock"
  if [[ "$(id -u)" == 0 ]]; then
    chown -R postgres: "$SERVICES_DIR/pg"
  fi
  _svc_as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C \
    >"$SERVICES_DIR/pg-initdb.log" 2>&1 || {
    cat "$SERVICES_DIR/pg-initdb.log" >&2
    return 1
  }
  # Throwaway and fast: durability off. Port and sockets fixed here so pg_start reuses them.
  cat >>"$data/postgresql.conf" <<EOF

# --- scripts/services.sh (throwaway instance) ---
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sock'
max_connections = ${PG_MAX_CONNECTIONS:-200}
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
logging_collector = off
log_min_messages = warning
EOF
}

pg_start() {
  _svc_as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg/data" -l "$SERVICES_DIR/pg/postgres.log" \
    -w -t 60 start >/dev/null || {
    tail -n 30 "$SERVICES_DIR/pg/postgres.log" >&2
    return 1
  }
}

pg_stop() {
  # fast: disconnect clients, as a crashing/restarting database would
  _svc_as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg/data" -m fast -w -t 60 stop >/dev/null
}

_svc_redis_pid() { cat "$SERVICES_DIR/redis/redis.pid" 2>/dev/null; }

redis_start() {
  mkdir -p "$SERVICES_DIR/redis"
  # maxmemory + allkeys-lru as in every deployment of the service (contract: Redis is a cache)
  "$REDIS_SERVER_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$SERVICES_DIR/redis/redis.pid" --dir "$SERVICES_DIR/redis" \
    --logfile "$SERVICES_DIR/redis/redis.log" --maxmemory 256mb --maxmemory-policy allkeys-lru \
    >/dev/null
  _svc_wait_ping "$REDIS_PORT" && return 0
  tail -n 20 "$SERVICES_DIR/redis/redis.log" >&2 || true
  return 1
}

redis_stop() {
  _svc_stop_pidfile "$SERVICES_DIR/redis/redis.pid"
}

redis_pause() { kill -STOP "$(_svc_redis_pid)"; }
redis_resume() { kill -CONT "$(_svc_redis_pid)"; }

# A redis-server of the cluster or the sentinel set, daemonized in $SERVICES_DIR/<name> (pidfile there).
# Extra arguments go to redis-server after the common ones, so they win.
_svc_redis_node() {
  local name="$1" port="$2"
  shift 2
  mkdir -p "$SERVICES_DIR/$name"
  "$REDIS_SERVER_BIN" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile "$SERVICES_DIR/$name/redis.pid" --dir "$SERVICES_DIR/$name" \
    --logfile "$SERVICES_DIR/$name/redis.log" "$@" >/dev/null
}

_svc_pong() { [[ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" == PONG ]]; }
_svc_wait_ping() {
  _svc_until 100 _svc_pong "$1" && return 0
  echo "services.sh: redis on port $1 did not answer" >&2
  return 1
}

# A free port not yet handed out in this run (the probe alone cannot see ports picked but not bound
# yet), whose cluster bus port (+10000) clashes with none of ours either.
_svc_taken=""
_svc_new_port() {
  local p i ephemeral
  # A cluster node also binds its bus port, port + 10000: keep that below the kernel's ephemeral range, where
  # the drills' own client connections take ports (a bus port taken that way stopped a node from starting).
  read -r ephemeral _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || ephemeral=32768
  for ((i = 0; i < 200; i++)); do
    p="$(_svc_free_port)" || return 1
    ((p + 10000 < ephemeral)) || continue
    if [[ " $_svc_taken " != *" $p "* && " $_svc_taken " != *" $((p + 10000)) "* && " $_svc_taken " != *" $((p - 10000)) "* ]]; then
      _svc_taken="$_svc_taken $p"
      echo "$p"
      return 0
    fi
  done
  return 1
}

# Three masters, no replicas; `redis-cli --cluster create` assigns the slots. allkeys-lru as in every
# deployment of the service. Node timeout: Redis' default 15 s. With no replicas a shorter one detects nothing
# useful, and on a loaded 2-core machine a master busy migrating a slot for 2 s was voted FAIL and took the
# whole cluster down mid-reshard (CLUSTERDOWN from the target; drill reshard, cold CI run of 9752cbe).
redis_cluster_start() {
  local ports=() nodes=() p i
  for i in 1 2 3; do
    p="$(_svc_new_port)" || return 1
    _svc_taken="$_svc_taken $((p + 10000))"
    ports+=("$p")
    nodes+=("127.0.0.1:$p")
    _svc_redis_node "cluster-$p" "$p" --cluster-enabled yes --cluster-config-file nodes.conf \
      --cluster-node-timeout 15000 --maxmemory 64mb --maxmemory-policy allkeys-lru
  done
  for p in "${ports[@]}"; do _svc_wait_ping "$p" || return 1; done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes \
    >"$SERVICES_DIR/cluster-create.log" 2>&1 || {
    cat "$SERVICES_DIR/cluster-create.log" >&2
    return 1
  }
  # `create` returns once the slots are assigned; every node must agree before clients connect.
  _svc_until 200 _svc_cluster_ok "${ports[@]}" || {
    echo "services.sh: the redis cluster never reached cluster_state:ok" >&2
    return 1
  }
  export REDIS_CLUSTER_PORTS="${ports[*]}"
  export TEST_REDIS_CLUSTER_URL="redis-cluster://127.0.0.1:${ports[0]}?node=127.0.0.1:${ports[1]}&node=127.0.0.1:${ports[2]}"
}
_svc_cluster_ok() { # PORT...: every node says cluster_state:ok
  local p
  for p in "$@"; do
    redis-cli -h 127.0.0.1 -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
  done
}

# Master + one replica + three sentinels (quorum 2) for the service name `aside`. Tests that kill a
# master start a set of their own (tests/api/helpers.rs): this one is shared and never fails over.
redis_sentinel_start() {
  local master replica s i sentinels=()
  master="$(_svc_new_port)" || return 1
  replica="$(_svc_new_port)" || return 1
  _svc_redis_node "sentinel-master" "$master" --maxmemory 64mb --maxmemory-policy allkeys-lru
  _svc_redis_node "sentinel-replica" "$replica" --maxmemory 64mb --maxmemory-policy allkeys-lru \
    --replicaof 127.0.0.1 "$master"
  _svc_wait_ping "$master" || return 1
  _svc_wait_ping "$replica" || return 1
  for i in 1 2 3; do
    s="$(_svc_new_port)" || return 1
    sentinels+=("$s")
    mkdir -p "$SERVICES_DIR/sentinel-$s"
    # Sentinel rewrites its config file (it keeps its state there), so each gets a writable one.
    cat >"$SERVICES_DIR/sentinel-$s/sentinel.conf" <<EOF
port $s
bind 127.0.0.1
daemonize yes
pidfile $SERVICES_DIR/sentinel-$s/redis.pid
logfile $SERVICES_DIR/sentinel-$s/sentinel.log
dir $SERVICES_DIR/sentinel-$s
sentinel monitor aside 127.0.0.1 $master 2
sentinel down-after-milliseconds aside 1000
sentinel failover-timeout aside 5000
EOF
    "$REDIS_SERVER_BIN" "$SERVICES_DIR/sentinel-$s/sentinel.conf" --sentinel >/dev/null
  done
  for s in "${sentinels[@]}"; do
    _svc_until 100 _svc_sentinel_names "$s" "$master" || {
      echo "services.sh: the sentinel on port $s does not know the master" >&2
      return 1
    }
  done
  export REDIS_SENTINEL_PORTS="${sentinels[*]}"
  export REDIS_SENTINEL_MASTER_PORT="$master" REDIS_SENTINEL_REPLICA_PORT="$replica"
  export TEST_REDIS_SENTINEL_URL="redis-sentinel://127.0.0.1:${sentinels[0]}/0?node=127.0.0.1:${sentinels[1]}&node=127.0.0.1:${sentinels[2]}&sentinelServiceName=aside"
}

_svc_sentinel_names() { # SENTINEL-PORT MASTER-PORT: the sentinel names that port as the master
  [[ "$(redis-cli -h 127.0.0.1 -p "$1" sentinel get-master-addr-by-name aside 2>/dev/null | tail -n1)" == "$2" ]]
}

# The OpenTelemetry Collector the trace tests export to: OTLP over HTTP on a free port, every span written to
# a JSON-lines file. Its own telemetry is off (by default it would serve metrics on the fixed port 8888).
otelcol_start() {
  local dir="$SERVICES_DIR/otelcol"
  mkdir -p "$dir"
  OTLP_PORT="$(_svc_free_port "$PG_PORT")" || return 1
  cat >"$dir/config.yaml" <<EOF
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$OTLP_PORT
exporters:
  file:
    path: $dir/spans.jsonl
    flush_interval: 50ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
EOF
  "$OTELCOL_BIN" --config "file:$dir/config.yaml" >"$dir/otelcol.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/otelcol.pid"
  if _svc_until 200 _svc_listening_or_dead "$OTLP_PORT" "$pid" && ! _svc_dead "$pid"; then
    export OTLP_PORT TEST_OTLP_ENDPOINT="http://127.0.0.1:$OTLP_PORT" TEST_OTLP_FILE="$dir/spans.jsonl"
    return 0
  fi
  echo "services.sh: the OpenTelemetry Collector did not listen on port $OTLP_PORT" >&2
  tail -n 20 "$dir/otelcol.log" >&2 || true
  return 1
}

otelcol_stop() { _svc_stop_pidfile "$SERVICES_DIR/otelcol/otelcol.pid"; }

# Stops the cluster nodes and the sentinel set (KILL: they hold nothing worth a clean shutdown).
_svc_redis_ha_stop() { # [KIND...]: cluster, sentinel (default both); their dirs go too
  local f pid kind kinds=("$@")
  ((${#kinds[@]})) || kinds=(cluster sentinel)
  for kind in "${kinds[@]}"; do
    for f in "$SERVICES_DIR/$kind"-*/redis.pid; do
      [[ -f "$f" ]] || continue
      pid="$(cat "$f" 2>/dev/null)"
      if [[ -n "$pid" ]]; then
        kill -CONT "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
      fi
      rm -rf "$(dirname "$f")"
    done
  done
}

# PgBouncer as Debian 12 ships it (1.18: no prepared-statement support in transaction mode) in front of
# the throwaway Postgres: pool_mode = transaction and only a few server connections per database, so
# consecutive statements of one client really do land on different server connections. The wildcard
# entry passes every database through (tests CREATE DATABASE per test, directly on Postgres).
_svc_pgbouncer_init() {
  local dir="$SERVICES_DIR/pgbouncer"
  mkdir -p "$dir"
  # auth_type = trust still needs the user listed in auth_file; the password is not checked
  echo '"postgres" ""' >"$dir/userlist.txt"
  cat >"$dir/pgbouncer.ini" <<EOF
[databases]
* = host=127.0.0.1 port=$PG_PORT

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
max_client_conn = 2000
default_pool_size = ${PGBOUNCER_POOL_SIZE:-3}
; every test has its own database, so its own pool: close idle server connections soon, or the
; finished tests' pools add up to Postgres' max_connections
server_idle_timeout = 5
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
  if [[ "$(id -u)" == 0 ]]; then
    chown -R postgres: "$dir"
  fi
}

pgbouncer_start() {
  # -d: daemonize (after writing the pidfile); as the postgres user, since PgBouncer refuses root
  _svc_as_pg "$PGBOUNCER_BIN" -d "$SERVICES_DIR/pgbouncer/pgbouncer.ini" >/dev/null 2>&1 || {
    tail -n 20 "$SERVICES_DIR/pgbouncer/pgbouncer.log" >&2 || true
    return 1
  }
  _svc_until 100 psql -qAt -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d aside -c 'SELECT 1' \
    >/dev/null 2>&1 && return 0
  echo "services.sh: pgbouncer did not answer on port $PGBOUNCER_PORT" >&2
  tail -n 20 "$SERVICES_DIR/pgbouncer/pgbouncer.log" >&2 || true
  return 1
}

# TERM is PgBouncer's immediate shutdown (INT would wait for clients)
pgbouncer_stop() { _svc_stop_pidfile "$SERVICES_DIR/pgbouncer/pgbouncer.pid"; }

services_start() {
  _svc_ensure_installed
  PG_BIN="$(_svc_find_pg_bin)"
  REDIS_SERVER_BIN="$(command -v redis-server)"
  PGBOUNCER_BIN="$(_svc_find_pgbouncer)"
  SERVICES_DIR="$(mktemp -d "${SERVICES_TMP:-/tmp}/aside-services.XXXXXX")"
  chmod 755 "$SERVICES_DIR" # the postgres user must reach its data dir inside
  export PG_BIN REDIS_SERVER_BIN PGBOUNCER_BIN SERVICES_DIR

  local try
  for try in 1 2 3; do
    PG_PORT="$(_svc_free_port)"
    export PG_PORT
    if [[ ! -d "$SERVICES_DIR/pg/data" ]]; then
      _svc_pg_init
    else
      sed -i "s/^port = .*/port = $PG_PORT/" "$SERVICES_DIR/pg/data/postgresql.conf"
    fi
    pg_start && break
    [[ "$try" == 3 ]] && return 1
    _svc_log "postgres failed on port $PG_PORT, retrying"
  done
  _svc_as_pg psql -q -h "$SERVICES_DIR/pg/sock" -p "$PG_PORT" -U postgres -d postgres \
    -c 'CREATE DATABASE aside' >/dev/null

  for try in 1 2 3; do
    REDIS_PORT="$(_svc_free_port "$PG_PORT")"
    export REDIS_PORT
    redis_start && break
    [[ "$try" == 3 ]] && return 1
    _svc_log "redis failed on port $REDIS_PORT, retrying"
  done

  for try in 1 2 3; do
    PGBOUNCER_PORT="$(_svc_free_port "$PG_PORT")"
    [[ "$PGBOUNCER_PORT" == "$REDIS_PORT" ]] && continue
    export PGBOUNCER_PORT
    _svc_pgbouncer_init
    pgbouncer_start && break
    [[ "$try" == 3 ]] && return 1
    _svc_log "pgbouncer failed on port $PGBOUNCER_PORT, retrying"
  done

  if [[ "${SKIP_REDIS_HA:-0}" != 1 ]]; then
    _svc_taken="$PG_PORT $REDIS_PORT $PGBOUNCER_PORT"
    # A port picked free can be taken before redis-server binds it (another run on the machine):
    # each set gets three tries on new ports, like the single servers above.
    for try in 1 2 3; do
      redis_cluster_start && break
      _svc_redis_ha_stop cluster
      [[ "$try" == 3 ]] && return 1
      _svc_log "the redis cluster failed to start, retrying on new ports"
    done
    for try in 1 2 3; do
      redis_sentinel_start && break
      _svc_redis_ha_stop sentinel
      [[ "$try" == 3 ]] && return 1
      _svc_log "the sentinel set failed to start, retrying on new ports"
    done
    _svc_log "redis cluster on ${REDIS_CLUSTER_PORTS// /,}, sentinels on ${REDIS_SENTINEL_PORTS// /,}"
  fi

  if [[ -n "${OTELCOL_BIN:-}" ]]; then
    otelcol_start || return 1
    _svc_log "otelcol OTLP/HTTP on 127.0.0.1:$OTLP_PORT, spans to $TEST_OTLP_FILE"
  fi

  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/aside"
  export TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
  export TEST_PGBOUNCER_URL="postgres://postgres@127.0.0.1:$PGBOUNCER_PORT/aside"
  _svc_log "postgres 127.0.0.1:$PG_PORT, redis 127.0.0.1:$REDIS_PORT, pgbouncer 127.0.0.1:$PGBOUNCER_PORT, dir $SERVICES_DIR"
}

# Ends the given processes (a script's own servers) and waits for them, then stops the services: the EXIT
# trap of the benchmark scripts.
services_stop_after() {
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  services_stop
}

services_stop() {
  [[ -n "${SERVICES_DIR:-}" && -d "$SERVICES_DIR" ]] || return 0
  pgbouncer_stop || true
  otelcol_stop || true
  redis_stop || true
  _svc_redis_ha_stop || true
  if [[ -f "$SERVICES_DIR/pg/data/postmaster.pid" ]]; then
    _svc_as_pg "$PG_BIN/pg_ctl" -D "$SERVICES_DIR/pg/data" -m immediate -w -t 30 stop \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$SERVICES_DIR"
  unset SERVICES_DIR
}

# Executed rather than sourced: a small CLI around the functions.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  case "${1:-}" in
    run)
      shift
      (($# > 0)) || {
        echo "usage: $0 run CMD [ARGS...]" >&2
        exit 2
      }
      trap services_stop EXIT
      services_start
      "$@"
      ;;
    -h | --help | "")
      sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
      [[ -n "${1:-}" ]] || exit 2
      ;;
    *)
      echo "unknown command: $1 (try -h)" >&2
      exit 2
      ;;
  esac
fi
