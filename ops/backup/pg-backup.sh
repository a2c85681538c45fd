#!/bin/sh
# pg-backup.sh: the database backups' work inside the cluster, on the chart's postgres image (ConfigMap
# aside-postgres-backup, mounted by the CronJob aside-postgres-backup and by the Jobs scripts/restore.sh
# makes from that CronJob's pod spec; docs/delivery.md "Backups and restore").
#
# Usage: pg-backup.sh dump | list | restore NAME|latest
#   dump     pg_dump --format=custom to $BACKUP_DIR/aside-<UTC start>.dump (written aside, checked with
#            pg_restore --list, then renamed), then deletes all but the newest $KEEP dumps
#   list     the dumps, newest first: name and bytes
#   restore  pg_restore --clean --if-exists --single-transaction of one dump into $PGDATABASE: all of it or,
#            on any error, nothing
# The connection is libpq's PGHOST/PGPORT/PGUSER/PGPASSWORD/PGDATABASE from the Postgres Secret (env): the
# password is never on a command line or in the output. POSIX sh: busybox in the official alpine image,
# dash in local/postgres.
set -eu

DIR="${BACKUP_DIR:-/backups}"
KEEP="${KEEP:-7}"
# A run never outlives its Job's activeDeadlineSeconds: a partial file older than that is a dead run's.
DEADLINE="${DEADLINE_SECONDS:-1800}"

die() {
  echo "pg-backup: $*" >&2
  exit 1
}
# The dump names, newest first (the name is the start time, so it sorts by age).
dumps() {
  for f in "$DIR"/aside-*.dump; do
    [ -f "$f" ] && echo "${f##*/}"
  done | grep -E '^aside-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r || true
}
bytes() { wc -c <"$1" | tr -d ' '; }

dump() {
  case "$KEEP" in '' | *[!0-9]* | 0) die "KEEP must be a whole number >= 1, got '$KEEP'" ;; esac
  umask 077 # a dump holds every record: readable by the postgres uid only
  now="$(date +%s)"
  name="aside-$(date -u +%Y%m%dT%H%M%SZ).dump"
  for f in "$DIR"/.aside-*.partial; do
    [ -e "$f" ] || continue
    started="${f%.partial}"
    started="${started##*.}"
    case "$started" in '' | *[!0-9]*) continue ;; esac
    if [ $((now - started)) -gt "$DEADLINE" ]; then
      rm -f "$f"
      echo "dump: removed ${f##*/} (left by a run that was killed)"
    fi
  done
  tmp="$DIR/.$name.$now.partial"
  pid=""
  trap 'rm -f "$tmp"' EXIT
  # In the background so that SIGTERM (Job deadline, pod deleted) stops pg_dump now, not at its end.
  trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null; exit 143' TERM INT
  pg_dump --format=custom --file="$tmp" &
  pid=$!
  wait "$pid"
  pid=""
  pg_restore --list "$tmp" >/dev/null || die "pg_restore cannot read the new dump; kept none of it"
  mv "$tmp" "$DIR/$name"
  echo "dump: $name $(bytes "$DIR/$name") bytes"
  dumps | tail -n "+$((KEEP + 1))" | while read -r old; do
    rm -f "$DIR/$old"
    echo "dump: removed $old (keeping the newest $KEEP)"
  done
  echo "dump: $(dumps | wc -l | tr -d ' ') dumps kept"
}

list() {
  dumps | while read -r d; do echo "$d $(bytes "$DIR/$d")"; done
  echo "list: $(dumps | wc -l | tr -d ' ') dumps in $DIR"
}

restore() {
  case "${1:-}" in
    latest) name="$(dumps | head -n 1)" ;;
    '' | */* | .*) die "restore needs a dump name from 'list' (or latest), got '${1:-}'" ;;
    *) name="$1" ;;
  esac
  [ -n "$name" ] && [ -f "$DIR/$name" ] || die "no dump '$1' in $DIR"
  echo "restore: $name ($(bytes "$DIR/$name") bytes) into database $PGDATABASE on $PGHOST"
  start="$(date +%s)"
  # Drops and recreates every object the dump holds, in one transaction; --no-owner: owned by whoever
  # restores (the Secret's user), whatever user made the dump.
  pg_restore --clean --if-exists --single-transaction --no-owner --dbname="$PGDATABASE" "$DIR/$name"
  echo "restore: done in $(($(date +%s) - start)) s; $(psql -XAtqc 'SELECT count(*) FROM records') records"
}

case "${1:-}" in
  dump) dump ;;
  list) list ;;
  restore) restore "${2:-}" ;;
  *) die "usage: pg-backup.sh dump | list | restore NAME|latest" ;;
esac
