#!/usr/bin/env bash
# scripts/e2e-gitops.sh: the GitOps loop as a user runs it, on a real node: Argo CD inside the cluster (every
# component a pod, images built locally), syncs started by `git push` through Argo CD's webhook.
#
# Usage: scripts/e2e-gitops.sh [-h|--help]
#   KEEP=1 leaves the node up at the end (scripts/node.sh down --dir <printed dir> stops it).
#
# Brings up scripts/node.sh, then runs the real `scripts/deploy.sh --argocd --existing-cluster --overlay
# overlays/airgap` from a clone of this working tree: Argo CD installed from argocd/install over the pinned
# module's install.yaml (ARGOCD_INSTALL_MANIFEST) with overlays/airgap/argocd's images, the clone's mirror served
# over smart HTTP on the bridge address with the post-receive hook that posts signed push events. Then, each a
# PASS/FAIL line with its number (the run fails if any fails):
#    1 first sync from nothing            7 self-heal: a deleted Service, an edited Secret
#    2 UI port, argocd login/app get      8 prune: a manifest dropped from Git, then restored
#    3 webhook refusals (secret, repo)    9 an invalid replicas value is reported, not hidden
#    4 push -> Synced / live (webhook)   10 a broken commit under load, fixed forward (retry.refresh)
#    5 two quick pushes: the second wins 11 argocd app rollback to an earlier revision
#    6 push -> Synced by polling         12 never Degraded during the normal rolls (health sampled every second)
# The node is torn down however the run ends.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/node/e2e-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/node/e2e-lib.sh"
help_exit "$@"
[[ $# == 0 ]] || { usage >&2; die "unknown argument: $1"; }

e2e_init gitops-e2e
ARGOCD=127.0.0.1:30443
CLONE="$WORK/clone"
STATE="$WORK/state/aside-deploy"
T0=$SECONDS

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -f "$NODE_DIR/env" ]]; then
    echo "---- e2e-gitops failed (exit $rc); state:" >&2
    kubectl -n argocd get application aside -o jsonpath='{.status.sync.status} {.status.health.status} {.status.conditions}{"\n"}{.status.operationState.message}{"\n"}' >&2 2>/dev/null || true
    kubectl get pods -A -o wide >&2 2>/dev/null || true
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "KEEP=1: node left up. source $NODE_DIR/env; stop: scripts/node.sh down --dir $NODE_DIR; kill \$(cat $STATE/git-http.pid)" >&2
    return
  fi
  [[ -f "$STATE/git-http.pid" ]] && kill "$(cat "$STATE/git-http.pid")" 2>/dev/null
  "$ROOT/scripts/node.sh" down --dir "$NODE_DIR" >&2 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

k() { kubectl -n "$NS" "$@"; }
app() { kubectl -n argocd get application aside -o jsonpath="$1" 2>/dev/null; }
cli() { argocd --config "$WORK/argocd.cfg" "$@"; }
head_rev() { git -C "$CLONE" rev-parse HEAD; }
synced_at() { [[ "$(app '{.status.sync.status} {.status.sync.revision}')" == "Synced $1" ]]; }
# rollout_done: kubectl's definition of a finished rollout (every wanted pod new and available; old pods may
# still be draining, out of the endpoints already): the new config is what every request meets.
rollout_done() {
  local g gen obs want upd avail total
  g="$(k get deployment aside -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.spec.replicas} {.status.updatedReplicas} {.status.availableReplicas} {.status.replicas}')"
  read -r gen obs want upd avail total <<<"$g"
  [[ "$gen" == "$obs" && "$upd" == "$want" && "$avail" == "$want" && "$total" == "$want" ]]
}
# rolled: the rollout done and nothing old or terminating left.
rolled() {
  rollout_done && [[ "$(k get pods -l app.kubernetes.io/name=aside -o name | wc -l)" == "$(k get deployment aside -o jsonpath='{.spec.replicas}')" ]]
}
live_ttl() { [[ "$(k get configmap aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')" == "$1" ]]; }
# set_ttl N: the config change a user makes: the chart's value, k8s/ re-rendered (ConfigMap + its checksum
# annotation on the pod template, so the pods roll), committed.
set_ttl() {
  sed -i "s/^  cacheTtlSeconds: .*/  cacheTtlSeconds: $1/" "$CLONE/charts/aside/values.yaml"
  (cd "$CLONE" && python3 scripts/validate/render_k8s.py --write >/dev/null)
  git -C "$CLONE" commit -qam "e2e: cache TTL $1"
}
push() { git -C "$CLONE" push -q argocd-local HEAD:main 2>"$WORK/push.log"; }
# health sampling, every second, into WORK/health-NAME (epoch status).
health_start() {
  while :; do printf '%s %s\n' "$(date +%s)" "$(app '{.status.health.status}')"; sleep 1; done >"$WORK/health-$1" &
  echo $! >"$WORK/health-$1.pid"
}
health_stop() { kill "$(cat "$WORK/health-$1.pid")" 2>/dev/null || true; }
# pct P FILE-OF-NUMBERS: nearest-rank percentile.
pct() { sort -n "$2" | awk -v p="$1" '{ a[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i] }'; }
server_log() { kubectl -n argocd logs deployment/argocd-server --since=10m 2>/dev/null; }

# --- 1. nothing -> Argo CD in the cluster -> aside Synced + Healthy --------------------------------------------
"$ROOT/scripts/node.sh" up --dir "$NODE_DIR"
# shellcheck disable=SC1091
source "$NODE_DIR/env"
NODE_S="$(awk 'END { print $NF == "s" ? $(NF - 1) : $NF }' "$NODE_DIR/timings")"
# The clone deploy.sh runs from: this working tree as one commit (uncommitted changes included).
git clone -q "$ROOT" "$CLONE"
(cd "$ROOT" && git ls-files -z -co --exclude-standard | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) | tar -C "$CLONE" -xf -
git -C "$CLONE" config user.email e2e@aside.invalid
git -C "$CLONE" config user.name "aside e2e"
git -C "$CLONE" checkout -q -B main
git -C "$CLONE" add -A
git -C "$CLONE" diff --cached --quiet || git -C "$CLONE" commit -qm "e2e: the working tree of $ROOT"
ARGOCD_INSTALL_MANIFEST="$(argocd_module_dir)/manifests/install.yaml"
GIT_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
start="$(now)"
(cd "$CLONE" && XDG_STATE_HOME="$WORK/state" GIT_PORT="$GIT_PORT" TIMEOUT=300s ARGOCD_INSTALL_MANIFEST="$ARGOCD_INSTALL_MANIFEST" \
  scripts/deploy.sh --argocd --existing-cluster --overlay overlays/airgap 2>&1) |
  while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done >"$WORK/deploy.log"
[[ "${PIPESTATUS[0]}" == 0 ]] || { cut -d' ' -f2- "$WORK/deploy.log" >&2; die "deploy.sh --argocd --existing-cluster --overlay overlays/airgap failed"; }
FIRST_S="$(since "$start")"
at() { awk -v re="$1" -v t0="$start" '$0 ~ re { printf "%.1f", $1 - t0; exit }' "$WORK/deploy.log"; }
ARGO_READY_S="$(at 'git server|git push argocd-local|added remote')"
resolved="$(sed -n 's/.*Argo CD synced .* at revision \([0-9a-f]*\).*/\1/p' "$WORK/deploy.log")"
components="$(kubectl -n argocd get pods -o jsonpath='{range .items[*]}{.metadata.labels.app\.kubernetes\.io/name} {.status.phase} {.spec.containers[0].image}{"\n"}{end}')"
not_local="$(awk '$2 != "Running" || ($3 !~ /^local\//)' <<<"$components")"
TOKEN="$(k get secret aside -o jsonpath='{.data.API_TOKEN}' | base64 -d)"
api_ok="$(curl -s -o /dev/null -w '%{http_code}' "$API/ready")"
if [[ "$resolved" == "$(head_rev)" && -z "$not_local" && "$api_ok" == 200 ]] && synced_at "$(head_rev)"; then
  pass "first sync from nothing" "node up ${NODE_S} s; deploy.sh --argocd: Argo CD ($(wc -l <<<"$components") pods, local images) Ready at ${ARGO_READY_S:-?} s, aside Synced+Healthy at $FIRST_S s; resolved revision = pushed HEAD ${resolved:0:12}; /ready 200 on :30080"
else
  fail "first sync from nothing" "resolved '${resolved:-none}' (HEAD $(head_rev)), pods not Running/local: ${not_local:-none}, /ready $api_ok, app $(app '{.status.sync.status} {.status.health.status}')"
fi

# --- 2. the UI port and the argocd CLI --------------------------------------------------------------------------
PW="$(kubectl -n argocd get secret argocd-initial-admin-secret -o jsonpath='{.data.password}' | base64 -d)"
version="$(curl -sk "https://$ARGOCD/api/version" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Version"])' 2>/dev/null || echo none)"
ui="$(curl -sk -o "$WORK/ui.html" -w '%{http_code}' "https://$ARGOCD/")"
ui_note="web UI bundle absent (the Go module ships none: / answers $ui)"
grep -qi '<div id="app"' "$WORK/ui.html" 2>/dev/null && ui_note="web UI served (/ 200)"
if cli login "$ARGOCD" --username admin --password "$PW" --insecure >"$WORK/login.log" 2>&1 \
  && cli app get aside -o json >"$WORK/app.json" 2>"$WORK/cli.err" && cli app history aside >"$WORK/history.txt" 2>>"$WORK/cli.err"; then
  got="$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["status"]; print(s["sync"]["status"], s["health"]["status"])' "$WORK/app.json")"
  pass "UI port + argocd CLI" "https://$ARGOCD/api/version $version; argocd login --insecure, app get ($got), app history ($(($(wc -l <"$WORK/history.txt") - 1)) entries); $ui_note"
else
  fail "UI port + argocd CLI" "version '$version'; $(cat "$WORK/login.log" "$WORK/cli.err" 2>/dev/null | tail -n 3)"
fi

# --- 3. the webhook refuses what it must, and logs it -------------------------------------------------------------
# post_event HEADER-NAME HEADER-VALUE... -- BODY: POST to /api/webhook; prints the HTTP code.
post_event() {
  local hdr=() body
  while [[ "$1" != -- ]]; do hdr+=(-H "$1"); shift; done
  body="$2"
  curl -sk -o /dev/null -w '%{http_code}' -X POST "https://$ARGOCD/api/webhook" -H 'Content-Type: application/json' "${hdr[@]}" --data-binary "$body"
}
sign() { printf '%s' "$2" | openssl dgst -sha256 -hmac "$1" -r | cut -d' ' -f1; }
WEB_URL="$(git -C "$(git -C "$CLONE" remote get-url argocd-local)" config hooks.argocd.weburl)"
SECRET="$(cat "$STATE/webhook-secret")"
event() { printf '{"ref":"refs/heads/main","before":"%s","after":"%s","commits":[],"repository":{"name":"aside","html_url":"%s","default_branch":"main"}}' "$(head_rev)" "$(head_rev)" "$1"; }
refreshes() { server_log | grep -c "Requested app 'aside' refresh" || true; }
before="$(refreshes)"
b="$(event "$WEB_URL")"
codes=(
  "$(post_event 'X-Gogs-Event: push' "X-Gogs-Signature: $(sign wrong-secret "$b")" -- "$b")"
  "$(post_event 'X-Gogs-Event: push' -- "$b")"
  "$(post_event 'X-GitHub-Event: push' -- "$b")"
  "$(post_event 'X-Gitlab-Event: Push Hook' 'X-Gitlab-Token: guessed' -- "$b")"
)
other="$(event "${WEB_URL%/*}/someone-else")"
codes+=("$(post_event 'X-Gogs-Event: push' "X-Gogs-Signature: $(sign "$SECRET" "$other")" -- "$other")")
sleep 3
after="$(refreshes)"
logged="$(server_log | grep -cE 'HMAC verification failed|missing X-Gogs-Signature|missing X-Hub-Signature|token verification failed|Received push event repo: .*someone-else' || true)"
if [[ "${codes[*]}" == "400 400 400 400 200" && "$after" == "$before" && "$logged" -ge 5 ]]; then
  pass "webhook refusals" "wrong Gogs secret, unsigned Gogs, unsigned GitHub, wrong GitLab token -> 400; signed push of another repo -> 200, no app refreshed; $logged log lines"
else
  fail "webhook refusals" "codes ${codes[*]} (want 400 400 400 400 200), refreshes $before -> $after, $logged log lines"
fi

# --- 4. push -> Synced and push -> live, through the webhook --------------------------------------------------------
health_start pushes
: >"$WORK/synced.txt"
: >"$WORK/live.txt"
hook_ok=0
for ttl in 61 62 63 64 65; do
  set_ttl "$ttl"
  rev="$(head_rev)"
  t="$(now)"
  push
  grep -q 'argocd webhook: refs/heads/main .* -> HTTP 200' "$WORK/push.log" && hook_ok=$((hook_ok + 1))
  if wait_until 120 synced_at "$rev"; then since "$t" >>"$WORK/synced.txt"; else echo 999 >>"$WORK/synced.txt"; fi
  if wait_until 180 live_ttl "$ttl" && wait_until 180 rollout_done; then since "$t" >>"$WORK/live.txt"; else echo 999 >>"$WORK/live.txt"; fi
  wait_until 60 rolled || true # the old pods gone too, before the next push
done
health_stop pushes
s50="$(pct 50 "$WORK/synced.txt")" s95="$(pct 95 "$WORK/synced.txt")" l50="$(pct 50 "$WORK/live.txt")" l95="$(pct 95 "$WORK/live.txt")"
if [[ "$hook_ok" == 5 ]] && ! grep -qx 999 "$WORK/synced.txt" "$WORK/live.txt"; then
  pass "push -> Synced (webhook)" "5 pushes: Synced p50 $s50 s, p95 $s95 s; live (ConfigMap changed, every pod new and Ready) p50 $l50 s, p95 $l95 s [$(tr '\n' ' ' <"$WORK/synced.txt")| $(tr '\n' ' ' <"$WORK/live.txt")]"
else
  fail "push -> Synced (webhook)" "hook answered 200 for $hook_ok/5 pushes; synced $(tr '\n' ' ' <"$WORK/synced.txt"), live $(tr '\n' ' ' <"$WORK/live.txt") (999 = timeout); $(cat "$WORK/push.log")"
fi

# --- 5. two quick pushes: the second wins -----------------------------------------------------------------------
health_start quick
set_ttl 71
push
set_ttl 72
t="$(now)"
push
rev="$(head_rev)"
if wait_until 120 synced_at "$rev" && wait_until 180 live_ttl 72 && wait_until 180 rolled; then
  pass "two quick pushes" "TTL 71 then 72 pushed back to back: Synced at the second ($(git -C "$CLONE" rev-parse --short HEAD)), ConfigMap 72, pods rolled $(since "$t") s after it"
else
  fail "two quick pushes" "app at $(app '{.status.sync.revision}') (want $rev), TTL $(k get cm aside -o jsonpath='{.data.CACHE_TTL_SECONDS}')"
fi
health_stop quick

# --- 6. the same push with the webhook off: Argo CD's polling (timeout.reconciliation 20 s) ------------------------
MIRROR="$(git -C "$CLONE" remote get-url argocd-local)"
HOOK_URL="$(git -C "$MIRROR" config hooks.argocd.url)"
git -C "$MIRROR" config --unset hooks.argocd.url
: >"$WORK/polled.txt"
for ttl in 66 67; do
  set_ttl "$ttl"
  rev="$(head_rev)"
  t="$(now)"
  push
  if wait_until 120 synced_at "$rev"; then since "$t" >>"$WORK/polled.txt"; else echo 999 >>"$WORK/polled.txt"; fi
  wait_until 180 rolled || true
done
git -C "$MIRROR" config hooks.argocd.url "$HOOK_URL"
if ! grep -qx 999 "$WORK/polled.txt"; then
  pass "push -> Synced (polling, no webhook)" "2 pushes: $(tr '\n' ' ' <"$WORK/polled.txt")s (webhook p50 $s50 s)"
else
  fail "push -> Synced (polling, no webhook)" "$(tr '\n' ' ' <"$WORK/polled.txt") (999 = not Synced in 120 s)"
fi

# --- 7. self-heal: a Service deleted and a Secret edited by hand ------------------------------------------------
serving() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$API/ready")" == 200 ]]; }
k delete service aside --wait=false >/dev/null
t="$(now)"
if wait_until 120 k get service aside && wait_until 60 serving; then svc_s="$(since "$t")"; else svc_s=timeout; fi
want_token="$(k get secret aside -o jsonpath='{.data.API_TOKEN}')"
k patch secret aside --type merge -p '{"stringData":{"API_TOKEN":"edited-by-hand"}}' >/dev/null
t="$(now)"
token_back() { [[ "$(k get secret aside -o jsonpath='{.data.API_TOKEN}')" == "$want_token" ]]; }
if wait_until 120 token_back; then sec_s="$(since "$t")"; else sec_s=timeout; fi
if [[ "$svc_s" != timeout && "$sec_s" != timeout ]]; then
  pass "self-heal" "deleted Service aside recreated and :30080 serving again in $svc_s s; hand-edited Secret restored in $sec_s s"
else
  fail "self-heal" "Service back: $svc_s, Secret back: $sec_s"
fi

# --- 8. prune: a manifest dropped from Git is deleted, and comes back with the revert ----------------------------
git -C "$CLONE" rm -q k8s/metrics-service.yaml
sed -i '/^- metrics-service.yaml$/d' "$CLONE/k8s/kustomization.yaml"
git -C "$CLONE" commit -qam "e2e: drop the metrics Service"
t="$(now)"
push
gone() { ! k get service aside-metrics >/dev/null 2>&1; }
if wait_until 120 gone; then pruned_s="$(since "$t")"; else pruned_s=timeout; fi
git -C "$CLONE" revert --no-edit HEAD >/dev/null
t="$(now)"
push
if wait_until 120 k get service aside-metrics && wait_until 60 synced_at "$(head_rev)"; then back_s="$(since "$t")"; else back_s=timeout; fi
if [[ "$pruned_s" != timeout && "$back_s" != timeout ]]; then
  pass "prune and restore" "Service aside-metrics removed from Git -> deleted in $pruned_s s; git revert -> back in $back_s s"
else
  fail "prune and restore" "pruned: $pruned_s, restored: $back_s"
fi

# --- 9. an invalid value on the path the HPA owns is an error the user sees -------------------------------------
python3 - "$CLONE/k8s/aside-deployment.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("\nspec:\n", "\nspec:\n  replicas: \"two\"\n", 1)
open(p, "w").write(s)
PY
git -C "$CLONE" commit -qam "e2e: replicas: \"two\""
BAD="$(head_rev)"
t="$(now)"
push
error_shown() {
  [[ "$(app '{.status.sync.revision}')" == "$BAD" || "$(app '{.status.operationState.syncResult.revision}')" == "$BAD" ]] || return 1
  [[ "$(app '{.status.sync.status}')" != Synced || -n "$(app '{.status.conditions[*].message}')" ]] || return 1
  app '{.status.conditions[*].message} {.status.operationState.message}' | grep -qiE 'replicas|two|invalid|cannot|error'
}
if wait_until 120 error_shown; then
  shown_s="$(since "$t")"
  msg="$(app '{.status.conditions[*].message} {.status.operationState.message}' | tr -s ' \n' ' ' | cut -c1-160)"
  replicas="$(k get deployment aside -o jsonpath='{.spec.replicas}')"
  pass "invalid replicas reported" "replicas: \"two\" -> $(app '{.status.sync.status}') with the error in $shown_s s (\"$msg\"); live replicas stay $replicas"
else
  fail "invalid replicas reported" "app $(app '{.status.sync.status} {.status.health.status}') at $(app '{.status.sync.revision}'), conditions '$(app '{.status.conditions[*].message}')'"
fi
git -C "$CLONE" revert --no-edit HEAD >/dev/null
push
# applied_at REV: the sync operation finished and applied REV (the operation that retried a failed commit ends
# only when a retry applies the newest commit: retry.refresh).
applied_at() { [[ "$(app '{.status.sync.status} {.status.operationState.phase} {.status.operationState.syncResult.revision}')" == "Synced Succeeded $1" ]]; }
wait_until 180 applied_at "$(head_rev)" || die "the revert of replicas: \"two\" was never applied: $(app '{.status.conditions[*].message} {.status.operationState.message}')"

# --- 10. a broken commit under load, then fixed forward ------------------------------------------------------------
load_start broken
health_start broken
sed -i 's/nodePort: 30080/nodePort: 99999/' "$CLONE/k8s/aside-service.yaml"
git -C "$CLONE" commit -qam "e2e: a NodePort out of range"
BAD="$(head_rev)"
t="$(now)"
push
failed_sync() { [[ "$(app '{.status.operationState.syncResult.revision} {.status.operationState.phase}')" =~ ^$BAD\ (Failed|Error|Running) ]] && app '{.status.operationState.message}' | grep -qiE 'nodePort|99999|invalid'; }
if wait_until 120 failed_sync; then broken_s="$(since "$t")"; else broken_s=timeout; fi
broken_msg="$(app '{.status.operationState.message}' | tr -s ' \n' ' ' | cut -c1-140)"
sleep 15 # a retry or two against the broken revision (backoff 10 s)
git -C "$CLONE" revert --no-edit HEAD >/dev/null
FIX="$(head_rev)"
t="$(now)"
push
# Done when the operation that kept retrying the broken commit applied the fix (retry.refresh), not merely when
# the fix compares equal to the live state (which it does at once: nothing of the broken commit was applied).
if wait_until 240 applied_at "$FIX"; then fixed_s="$(since "$t")"; else fixed_s=timeout; fi
sleep 2
load_stop broken
health_stop broken
s="$(sum broken)"
if [[ "$broken_s" != timeout && "$fixed_s" != timeout && "$(field "$s" failed)" == 0 ]]; then
  pass "broken commit, fixed forward" "error shown in $broken_s s (\"$broken_msg\"); fix pushed -> Synced+Succeeded in $fixed_s s; 0 failed of $(field "$s" total) requests through :30080 meanwhile"
else
  fail "broken commit, fixed forward" "error shown: $broken_s, fixed: $fixed_s, load $s; app $(app '{.status.operationState.phase} {.status.operationState.message}')"
fi

# --- 11. argocd app rollback to the previous revision (auto-sync off for it, as Argo CD requires) ----------------
health_start rollback
set_ttl 68
push
if ! wait_until 120 synced_at "$(head_rev)" || ! wait_until 180 live_ttl 68 || ! wait_until 180 rolled; then
  die "TTL 68 never went live: $(app '{.status.sync.status} {.status.operationState.message}')"
fi
# The history entry before the newest: the fix of scenario 10, TTL 67 (the history keeps revisionHistoryLimit 5).
hist_id="$(cli app history aside 2>/dev/null | awk '$1 ~ /^[0-9]+$/ { id[n++] = $1 } END { if (n >= 2) print id[n - 2] }')"
t="$(now)"
if [[ -n "$hist_id" ]] && cli app set aside --sync-policy none >/dev/null 2>"$WORK/rollback.err" \
  && cli app rollback aside "$hist_id" --timeout 180 >"$WORK/rollback.log" 2>>"$WORK/rollback.err" \
  && wait_until 60 live_ttl 67 && wait_until 180 rollout_done; then
  rb_s="$(since "$t")"
  wait_until 60 rolled || true
  cli app set aside --sync-policy automated --auto-prune --self-heal >/dev/null 2>>"$WORK/rollback.err"
  t="$(now)"
  if wait_until 120 live_ttl 68 && wait_until 180 rollout_done && wait_until 60 synced_at "$(head_rev)"; then
    pass "argocd app rollback" "history id $hist_id (TTL 67): rolled back, pods new and Ready in $rb_s s; auto-sync on again -> HEAD (TTL 68) in $(since "$t") s"
  else
    fail "argocd app rollback" "rolled back, but auto-sync did not return to HEAD: $(app '{.status.sync.status} {.status.sync.revision}')"
  fi
  wait_until 60 rolled || true
else
  fail "argocd app rollback" "history id '${hist_id:-none}': $(tail -n 3 "$WORK/rollback.err" "$WORK/rollback.log" 2>/dev/null)"
fi
health_stop rollback

# --- 12. health through the normal rolls ---------------------------------------------------------------------------
cat "$WORK"/health-{pushes,quick,rollback} >"$WORK/health-rolls"
samples="$(wc -l <"$WORK/health-rolls")"
degraded="$(grep -c ' Degraded$' "$WORK/health-rolls" || true)"
states="$(awk '{ n[$2]++ } END { for (s in n) printf "%s %d, ", s, n[s] }' "$WORK/health-rolls")"
if [[ "$degraded" == 0 && "$samples" -gt 30 ]]; then
  pass "never Degraded during rolls" "$samples samples (1/s) across the rolls of scenarios 4, 5 and 11: ${states%, }"
else
  fail "never Degraded during rolls" "$degraded of $samples samples Degraded: ${states%, }"
fi

echo
echo "e2e-gitops: $(grep -c '^PASS' "$RESULTS") passed, $(grep -c '^FAIL' "$RESULTS") failed, $((SECONDS - T0)) s (Argo CD $version in the cluster, webhook-triggered syncs)"
! grep -q '^FAIL' "$RESULTS"
