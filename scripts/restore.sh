#!/usr/bin/env bash
# scripts/restore.sh: list the database dumps the backup CronJob wrote, or restore one, in the cluster kubectl
# points at (docs/delivery.md "Backups and restore").
#
# Usage: scripts/restore.sh --list | --from DUMP [-h|--help]
#   --list        the dumps on the backup volume, newest first: name and bytes
#   --from DUMP   restore DUMP (a name --list printed, or `latest`):
#     1. finds DUMP on the volume (nothing is stopped when it is not there)
#     2. scales Deployment aside to 0 and waits until no API pod is left: nothing writes to the database or
#        fills the cache while it is restored
#     3. pg_restore --clean --if-exists --single-transaction in a Job made from the CronJob's own pod spec
#        (image, Secret, volume, securityContext, limits): all of the dump or, on any error, nothing
#     4. empties the cache: deletes every key under the ConfigMap's CACHE_KEY_PREFIX in the chart's Redis (an
#        entry cached before the restore may be a record the dump does not have, or a newer version of one);
#        with no Redis in the namespace, waits until CACHE_TTL_SECONDS have passed since the API pods stopped
#     5. scales aside back to its replicas and waits until they are available
#   A failure after step 2 leaves aside at 0 replicas and prints the command that scales it back.
# Env: NS (namespace, default aside), NAME (the release's fullname, prefix of its objects; default aside),
#      TIMEOUT (seconds each wait may take, default 300). Needs kubectl (KUBECONFIG) and python3.
# Prints progress on stderr; --from ends with one line on stdout:
#   restored DUMP (BYTES bytes) in S s: API down D s, pg_restore P s, N cache keys deleted
# Exit codes: 0 ok, 1 failure, 2 bad usage.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS="${NS:-aside}"
NAME="${NAME:-aside}"
TIMEOUT="${TIMEOUT:-300}"
MODE=""
DUMP=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --list) MODE=list ;;
    --from)
      [[ $# -ge 2 && -n "$2" ]] || { usage >&2; echo "restore.sh: --from needs a dump name (see --list)" >&2; exit 2; }
      MODE=restore
      DUMP="$2"
      shift
      ;;
    *) usage >&2; echo "restore.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$MODE" ]] || { usage >&2; echo "restore.sh: say --list or --from DUMP" >&2; exit 2; }
command -v kubectl >/dev/null || die "kubectl not found (scripts/cluster-tools.sh builds one)"
command -v python3 >/dev/null || die "python3 not found"

k() { kubectl -n "$NS" "$@"; }
CRONJOB="$NAME-postgres-backup"
k get cronjob "$CRONJOB" >/dev/null 2>&1 || die "no CronJob $CRONJOB in namespace $NS (chart value backup.enabled)"

job_done() { k get job "$1" -o jsonpath='{.status.conditions[?(@.status=="True")].type}' | grep -qwE 'Complete|Failed'; }
# task ACTION [ARG]: runs pg-backup.sh ACTION [ARG] in a Job made from the CronJob's pod spec, waits for it,
# prints its log; false if it failed. The pods keep the CronJob's labels, which its NetworkPolicy admits.
task() {
  local job
  job="$NAME-postgres-$1-$(date -u +%Y%m%d%H%M%S)"
  k get cronjob "$CRONJOB" -o json | python3 -c '
import json, sys
cj = json.load(sys.stdin)
job, args = sys.argv[1], sys.argv[2:]
tpl = cj["spec"]["jobTemplate"]
spec = tpl["spec"]
spec["backoffLimit"] = 0  # a failed restore is for the operator to look at, not to run again
spec["ttlSecondsAfterFinished"] = 86400
spec["template"]["spec"]["containers"][0]["args"] = args
labels = dict((tpl.get("metadata") or {}).get("labels") or {})
labels["aside.dev/task"] = args[0]
print(json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": job, "labels": labels}, "spec": spec}))
' "$job" "$@" | k create -f - >/dev/null || return 1
  wait_until "$TIMEOUT" job_done "$job" || { k logs "job/$job" >&2 || true; die "Job $job did not finish in $TIMEOUT s"; }
  k logs "job/$job"
  [[ "$(k get job "$job" -o jsonpath='{.status.succeeded}')" == 1 ]] || return 1
  # A listing is done with; a restore's Job stays a day (ttlSecondsAfterFinished) for its record.
  [[ "$1" != list ]] || k delete job "$job" --wait=false >/dev/null
}

if [[ "$MODE" == list ]]; then
  task list || die "listing the dumps failed (the Job's log is above)"
  exit 0
fi

T0="$(date +%s.%N)"
log "looking for $DUMP on the backup volume"
listing="$(task list)" || { echo "$listing" >&2; die "listing the dumps failed"; }
if [[ "$DUMP" == latest ]]; then
  DUMP="$(awk '/^aside-.*\.dump / { print $1; exit }' <<<"$listing")"
  [[ -n "$DUMP" ]] || die "there is no dump on the backup volume yet"
fi
BYTES="$(awk -v d="$DUMP" '$1 == d { print $2 }' <<<"$listing")"
[[ -n "$BYTES" ]] || die "no dump '$DUMP' on the backup volume; there are: $(awk '/^aside-/ { printf "%s ", $1 }' <<<"$listing")"

replicas="$(k get deployment "$NAME" -o jsonpath='{.spec.replicas}')"
# shellcheck disable=SC2016 # a Go template, not shell
selector="$(k get deployment "$NAME" -o go-template='{{range $k, $v := .spec.selector.matchLabels}}{{$k}}={{$v}},{{end}}')"
selector="${selector%,}"
scaled_down=0
on_exit() {
  local rc=$?
  if ((rc != 0 && scaled_down)); then
    echo "restore.sh: failed with Deployment $NAME at 0 replicas; once the database is what you want:" >&2
    echo "  kubectl -n $NS scale deployment $NAME --replicas=$replicas" >&2
  fi
}
trap on_exit EXIT

log "scaling Deployment $NAME from $replicas to 0 replicas"
k scale deployment "$NAME" --replicas=0 >/dev/null
scaled_down=1
t_down="$(date +%s.%N)"
no_api_pods() { [[ -z "$(k get pods -l "$selector" -o name)" ]]; } # terminating ones too
wait_until "$TIMEOUT" no_api_pods || die "API pods still running after $TIMEOUT s"
t_stopped="$(date +%s)"

log "restoring $DUMP ($BYTES bytes)"
t_restore="$(date +%s.%N)"
task restore "$DUMP" >&2 || die "pg_restore failed; the database is as it was before (one transaction)"
restore_s="$(echo "$(date +%s.%N) - $t_restore" | bc | xargs printf '%.1f')"

# Every key under the prefix: the entries and the generation tokens (src/cache/mod.rs). With no API pod left
# nothing writes them again before the pods that start below read the restored database.
prefix="$(k get configmap "$NAME" -o jsonpath='{.data.CACHE_KEY_PREFIX}')"
[[ -n "$prefix" ]] || die "ConfigMap $NAME has no CACHE_KEY_PREFIX"
if k get deployment "$NAME-redis" >/dev/null 2>&1; then
  log "deleting the cache keys under '$prefix' in $NAME-redis"
  # SCAN + UNLINK in one script (MATCH with the prefix's glob characters escaped); REDISCLI_AUTH is the pod's.
  keys="$(k exec "deployment/$NAME-redis" -c redis -- redis-cli EVAL '
local pattern = (string.gsub(ARGV[1], "[%*%?%[%]\\]", "\\%0")) .. "*"
local cursor, n = "0", 0
repeat
  local r = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
  cursor = r[1]
  for _, key in ipairs(r[2]) do redis.call("UNLINK", key); n = n + 1 end
until cursor == "0"
return n' 0 "$prefix")"
  [[ "$keys" =~ ^[0-9]+$ ]] || die "deleting the cache keys failed: $keys"
else
  # No Redis here: the in-process caches left with their pods; an external Redis's entries expire after the TTL.
  ttl="$(k get configmap "$NAME" -o jsonpath='{.data.CACHE_TTL_SECONDS}')"
  left=$((t_stopped + ${ttl:-60} + 1 - $(date +%s)))
  keys=0
  if ((left > 0)); then
    log "no $NAME-redis in $NS: waiting $left s more, until every entry cached before the restore has expired"
    sleep "$left"
  fi
fi

log "scaling Deployment $NAME back to $replicas replicas"
k scale deployment "$NAME" --replicas="$replicas" >/dev/null
k rollout status deployment "$NAME" --timeout="${TIMEOUT}s" >&2 || die "aside did not become available again"
scaled_down=0
down_s="$(echo "$(date +%s.%N) - $t_down" | bc | xargs printf '%.1f')"
total_s="$(echo "$(date +%s.%N) - $T0" | bc | xargs printf '%.1f')"
echo "restored $DUMP ($BYTES bytes) in $total_s s: API down $down_s s, pg_restore $restore_s s, $keys cache keys deleted"
