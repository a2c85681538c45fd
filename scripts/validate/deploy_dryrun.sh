#!/usr/bin/env bash
# scripts/validate/deploy_dryrun.sh: run scripts/deploy.sh in every mode against stub docker/k3d/kubectl/helm
# (no cluster exists here), to prove its control flow under `set -euo pipefail`: prerequisite checks,
# create-then-reuse idempotency, the image tag it imports, the overlay it applies (rendered for real with
# kubectl kustomize), the Argo CD Application it applies (repoURL/targetRevision/image rewritten), the local
# mirror --local-git serves (real git and scripts/gitops/git-http.py on a free port, its hook configured), the
# helm release (rendered for real with helm template), and --destroy. It proves nothing about a real cluster.
# deploy.sh runs from a copy of this working tree (uncommitted changes included): --local-git adds a remote
# to the clone it runs from, which must not be this one.
#
# Usage: scripts/validate/deploy_dryrun.sh [-h|--help]   (needs kubectl, helm, python3 with PyYAML on PATH)

# Stub bodies are single-quoted on purpose: they expand when the stub runs, not here.
# shellcheck disable=SC2016
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0; fi

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SANDBOX="$(mktemp -d)"
GIT_PIDFILE="$SANDBOX/xdg/aside-deploy/git-http.pid"
trap 'if [[ -f "$GIT_PIDFILE" ]]; then kill "$(cat "$GIT_PIDFILE")" 2>/dev/null || true; fi; rm -rf "$SANDBOX"' EXIT
mkdir -p "$SANDBOX/bin" "$SANDBOX/state"
ROOT="$SANDBOX/repo"
git clone -q --shared "$SRC" "$ROOT"
(cd "$SRC" && git ls-files -z -co --exclude-standard | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null) | tar -C "$ROOT" -xf -
export GIT_PORT
GIT_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export STUB_STATE="$SANDBOX/state" STUB_CALLS="$SANDBOX/calls.log" REAL_KUBECTL REAL_HELM STUB_ROOT="$ROOT"
REAL_KUBECTL="$(command -v kubectl)"
REAL_HELM="$(command -v helm)"
export REAL_PY="${PYTHON:-python3}"
: >"$STUB_CALLS"

stub() { # stub NAME BODY: a fake tool that logs its call, then runs BODY
  printf '#!/usr/bin/env bash\nset -euo pipefail\necho "%s $*" >>"$STUB_CALLS"\n%s\n' "$1" "$2" >"$SANDBOX/bin/$1"
  chmod +x "$SANDBOX/bin/$1"
}
# k3d v5 as it really behaves (its default proxy mode): every `-p HOST:CONTAINER@server:0` or `@loadbalancer`
# is published on the load-balancer container k3d-<cluster>-serverlb, never on k3d-<cluster>-server-0. The
# stub records where each port landed, and `docker port` answers only for that container.
stub docker '
case "$1" in
  info|build) exit 0 ;;
  port) grep -qx "$2 ${3%/tcp}" "$STUB_STATE/published" 2>/dev/null && echo "0.0.0.0:${3%/tcp}" ;;
  *) echo "docker stub: unexpected $*" >&2; exit 1 ;;
esac'
stub k3d '
case "$1 $2" in
  "cluster get") [[ -f "$STUB_STATE/cluster" ]] ;;
  "cluster create")
    touch "$STUB_STATE/cluster"; : >"$STUB_STATE/published"; prev=""
    for a in "$@"; do
      if [[ "$prev" == "-p" ]]; then
        spec="${a%@*}"; node="${a##*@}"
        case "$node" in server:0|loadbalancer) echo "k3d-$3-serverlb ${spec##*:}" >>"$STUB_STATE/published" ;;
          *) echo "k3d stub: node filter $node not modelled" >&2; exit 1 ;; esac
      fi
      prev="$a"
    done ;;
  "cluster start") exit 0 ;;
  "cluster delete") rm -f "$STUB_STATE/cluster" "$STUB_STATE/published" ;;
  "image import") [[ "$3" =~ ^aside:[0-9a-f]{12}(-dirty-[0-9]+)?$ ]] || { echo "k3d stub: bad image $3" >&2; exit 1; } ;;
  *) echo "k3d stub: unexpected $*" >&2; exit 1 ;;
esac'
stub kubectl '
args="$*"
case "$args" in
  "config use-context "*) exit 0 ;;
  "config current-context") echo stub-existing ;;
  "config view --minify "*) echo https://127.0.0.1:6443 ;;
  "get --raw /readyz") [[ -f "$STUB_STATE/existing-up" ]] ;;
  "get crd applications.argoproj.io appprojects.argoproj.io") [[ -f "$STUB_STATE/argocd-present" ]] ;;
  "create namespace "*"--dry-run=client -o yaml") printf "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n" "$3" ;;
  *"get secret aside-tls"*) [[ -f "$STUB_STATE/tls" ]] ;;
  *"create secret tls aside-tls"*) grep -q "BEGIN CERTIFICATE" "${args##*--cert=}" 2>/dev/null || true; echo "kind: Secret"; touch "$STUB_STATE/tls" ;;
  "apply -f -") cat >/dev/null ;;
  "apply -k "*) "$REAL_KUBECTL" kustomize "$3" >"$STUB_STATE/applied.yaml"; grep -q "image: aside:$EXPECT_TAG" "$STUB_STATE/applied.yaml" || { echo "kubectl stub: overlay did not set aside:$EXPECT_TAG" >&2; exit 1; } ;;
  "apply --server-side --force-conflicts -k "*) [[ -f "$5/kustomization.yaml" ]] ;;
  "apply -f "*) for f in $(echo "$args" | grep -o "\-f [^ ]*" | cut -c4-); do cp "$f" "$STUB_STATE/"; done ;;
  *"rollout status"*) exit 0 ;;
  *"get application aside -o jsonpath={.status.sync.revision}"*) echo 0123456789abcdef0123456789abcdef01234567 ;;
  *"get application aside -o jsonpath"*) echo "Synced Healthy" ;;
  "-n argocd get secret argocd-secret") exit 1 ;;
  "-n argocd get deployment argocd-server") exit 1 ;;
  *"get deployment aside"*) exit 1 ;;
  "get pods -A -o wide"|*"get events"*|*" logs "*) exit 0 ;;
  *) echo "kubectl stub: unexpected $args" >&2; exit 1 ;;
esac'
stub helm '
case "$1" in
  upgrade)
    vals=(); prev=""; for a in "$@"; do [[ "$prev" == "-f" || "$prev" == "--set" ]] && vals+=("$prev" "$a"); prev="$a"; done
    "$REAL_HELM" template aside "$STUB_ROOT/charts/aside" "${vals[@]}" 2>/dev/null | grep "image: aside:$EXPECT_TAG" >/dev/null ;; # not -q: an early exit would SIGPIPE helm
  test) exit 0 ;;
  *) echo "helm stub: unexpected $*" >&2; exit 1 ;;
esac'
export PATH="$SANDBOX/bin:$PATH" XDG_STATE_HOME="$SANDBOX/xdg"
export TAG EXPECT_TAG
TAG="$(git -C "$ROOT" rev-parse --short=12 HEAD)"
EXPECT_TAG="$TAG"
failures=0
mode_run() { # mode_run LABEL ARGS...: deploy.sh must exit 0
  local label="$1"
  shift
  if "$ROOT/scripts/deploy.sh" "$@" >"$SANDBOX/out-$label.log" 2>&1; then
    echo "ok    deploy.sh ${*:-(default)}"
  else
    echo "FINDING deploy-dryrun: deploy.sh ${*:-(default)} failed:"
    tail -n 15 "$SANDBOX/out-$label.log"
    failures=$((failures + 1))
  fi
}
mode_run default1
mode_run default2
[[ "$(grep -c '^k3d cluster create' "$STUB_CALLS")" == 1 ]] || { echo "FINDING deploy-dryrun: cluster created more than once (not idempotent)"; failures=$((failures + 1)); }
[[ "$(grep -c 'create secret tls' "$STUB_CALLS")" == 1 ]] || { echo "FINDING deploy-dryrun: TLS Secret regenerated on re-run"; failures=$((failures + 1)); }
grep -q "^k3d image import aside:$TAG -c aside" "$STUB_CALLS" || { echo "FINDING deploy-dryrun: image aside:$TAG not imported"; failures=$((failures + 1)); }
mode_run helm --helm
# --env: the environment's overlay is what gets applied (its ConfigMap, not k8s/'s), and --helm takes its values file.
mode_run env-prod --env prod
[[ "$(grep CACHE_TTL_SECONDS "$STUB_STATE/applied.yaml")" == "$("$REAL_KUBECTL" kustomize "$ROOT/overlays/prod" | grep CACHE_TTL_SECONDS)" ]] \
  || { echo "FINDING deploy-dryrun: --env prod did not apply overlays/prod"; failures=$((failures + 1)); }
mode_run env-helm --helm --env dev
grep -q -- "^helm upgrade .* -f $ROOT/charts/aside/values-dev.yaml " "$STUB_CALLS" \
  || { echo "FINDING deploy-dryrun: --helm --env dev did not install with charts/aside/values-dev.yaml"; failures=$((failures + 1)); }
# check_app REPO REVISION IMAGE-OVERRIDE|-: the Application/AppProject deploy.sh applied last.
check_app() {
  "$REAL_PY" - "$STUB_STATE/application.yaml" "$STUB_STATE/appproject.yaml" "$@" <<'PY'
import sys, yaml
app, proj = yaml.safe_load(open(sys.argv[1])), yaml.safe_load(open(sys.argv[2]))
repo, rev, image = sys.argv[3:6]
s = app["spec"]["source"]
want = (repo, rev, [] if image == "-" else [image])
got = (s["repoURL"], s["targetRevision"], (s.get("kustomize") or {}).get("images") or [])
if got != want or repo not in proj["spec"]["sourceRepos"]:
    print(f"FINDING deploy-dryrun: applied {got}, project repos {proj['spec']['sourceRepos']}; want {want}")
    sys.exit(1)
print(f"ok    Application follows {repo} @ {rev}, image override {want[2] or 'none (as committed)'}")
PY
}
REPO_URL=https://example.invalid/fork/aside.git REVISION=feature mode_run argocd --argocd
check_app https://example.invalid/fork/aside.git feature "aside=aside:$TAG" || failures=$((failures + 1))
REPO_URL=https://example.invalid/fork/aside.git mode_run argocd-env --argocd --env dev
grep -qx '    path: overlays/dev' "$STUB_STATE/application.yaml" \
  || { echo "FINDING deploy-dryrun: --argocd --env dev: the Application does not follow overlays/dev"; failures=$((failures + 1)); }
BRANCH="$(git -C "$ROOT" rev-parse --abbrev-ref HEAD)"
# The newcomer's command: no REPO_URL -> this clone's mirror, served over smart HTTP, named in the output.
NAME="$(basename "$ROOT")"
mode_run argocd-noremote --argocd
check_app "http://host.k3d.internal:$GIT_PORT/$NAME.git" "$BRANCH" "aside=aside:$TAG" || failures=$((failures + 1))
grep -q "Argo CD follows http://host.k3d.internal:$GIT_PORT/$NAME.git at $BRANCH" "$SANDBOX/out-argocd-noremote.log" \
  || { echo "FINDING deploy-dryrun: --argocd without REPO_URL did not say which repo and revision it follows"; failures=$((failures + 1)); }
grep -q "Argo CD synced .* at revision 0123456789abcdef" "$SANDBOX/out-argocd-noremote.log" \
  || { echo "FINDING deploy-dryrun: --argocd did not log the revision Argo CD resolved"; failures=$((failures + 1)); }
# The mirror: served over HTTP, at this clone's HEAD, its hook configured, the clone's remote pointing at it.
MIRROR="$(git -C "$ROOT" remote get-url argocd-local 2>/dev/null || true)"
if [[ "$(git ls-remote "http://127.0.0.1:$GIT_PORT/$NAME.git" "refs/heads/$BRANCH" | cut -f1)" == "$(git -C "$ROOT" rev-parse HEAD)" \
  && -x "$MIRROR/hooks/post-receive" && "$(git -C "$MIRROR" config hooks.argocd.weburl)" == "http://host.k3d.internal:$GIT_PORT/$NAME" ]]; then
  echo "ok    mirror served over smart HTTP at HEAD, post-receive hook configured, remote argocd-local"
else
  echo "FINDING deploy-dryrun: the --local-git mirror is not served at HEAD with its hook (remote: ${MIRROR:-none})"; failures=$((failures + 1))
fi
mode_run local-git --local-git
check_app "http://host.k3d.internal:$GIT_PORT/$NAME.git" "$BRANCH" "aside=aside:$TAG" || failures=$((failures + 1))
# --existing-cluster: no k3d and no docker call at all, no Argo CD install when its CRDs are served, the
# image as committed, the clone served on loopback.
: >"$STUB_CALLS"
if "$ROOT/scripts/deploy.sh" --existing-cluster >"$SANDBOX/out-existing-down.log" 2>&1 || ! grep -q "no Kubernetes API server answers" "$SANDBOX/out-existing-down.log"; then
  echo "FINDING deploy-dryrun: --existing-cluster with no API server did not stop with a clear error"; failures=$((failures + 1))
fi
touch "$STUB_STATE/existing-up" "$STUB_STATE/argocd-present"
saved_tag="$TAG"
unset TAG
mode_run existing --argocd --existing-cluster
TAG="$saved_tag"
export TAG
check_app "http://127.0.0.1:$GIT_PORT/$NAME.git" "$BRANCH" - || failures=$((failures + 1))
if grep -qE '^(k3d|docker) |apply --server-side --force-conflicts -k' "$STUB_CALLS"; then
  echo "FINDING deploy-dryrun: --existing-cluster called k3d/docker or installed Argo CD:"; grep -E '^(k3d|docker) |apply --server-side' "$STUB_CALLS" | head -n 5
  failures=$((failures + 1))
else
  echo "ok    --existing-cluster: no k3d, no docker, no Argo CD install, image as committed, clone served on 127.0.0.1"
fi
rm -f "$STUB_STATE/argocd-present"
git_pid="$(cat "$GIT_PIDFILE")"
mode_run destroy --destroy
[[ ! -f "$STUB_STATE/cluster" ]] || { echo "FINDING deploy-dryrun: --destroy left the cluster"; failures=$((failures + 1)); }
daemon_alive() { # alive and not a zombie (an orphan may wait a moment for its reaper)
  local st
  st="$(ps -o stat= -p "$git_pid" 2>/dev/null || true)"
  [[ -n "$st" && "$st" != Z* ]]
}
for _ in 1 2 3 4 5 6 7 8 9 10; do daemon_alive || break; sleep 0.3; done
if daemon_alive; then echo "FINDING deploy-dryrun: --destroy left the git server running"; failures=$((failures + 1)); fi
# No engine: a clear refusal, non-zero.
stub docker 'exit 1'
if "$ROOT/scripts/deploy.sh" >"$SANDBOX/out-noengine.log" 2>&1 || ! grep -q "no engine answers" "$SANDBOX/out-noengine.log"; then
  echo "FINDING deploy-dryrun: without a Docker engine deploy.sh did not stop with a clear error"
  failures=$((failures + 1))
else
  echo "ok    no Docker engine -> $(cat "$SANDBOX/out-noengine.log")"
fi
echo "deploy-dryrun: 11 runs (default x2, helm, --env prod, --helm --env dev, argocd with/without REPO_URL and --env dev, local-git, existing-cluster, destroy) + idempotency + refusals against stub tools, $failures findings"
[[ $failures -eq 0 ]]
