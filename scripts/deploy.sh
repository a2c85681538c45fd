#!/usr/bin/env bash
# scripts/deploy.sh: from nothing to aside on a local k3d cluster in one command (idempotent; re-run to update).
#
# Usage: scripts/deploy.sh [MODE] [-h|--help]
#   (no mode)     plain manifests: kubectl apply -k k8s/ (with the image tag set to the git SHA), wait for rollout
#   --argocd      install Argo CD into the cluster (argocd/install), apply argocd/appproject.yaml + argocd/application.yaml,
#                 wait until the Application is Synced + Healthy and log the revision Argo CD resolved; prints the
#                 Argo CD UI and admin password command. Without REPO_URL, Argo CD follows THIS clone (as --local-git).
#   --local-git   Argo CD follows THIS clone through a local mirror: a bare repository in the state directory,
#                 served read-only over smart HTTP (scripts/gitops/git-http.py) and added to this clone as the
#                 remote `argocd-local`. `git push argocd-local <branch>` runs its post-receive hook, which posts a
#                 signed push event to Argo CD's webhook: the sync starts at once (polling every 20 s stays the
#                 fallback). No GitHub repository needed. (= --argocd without REPO_URL)
#   --existing-cluster
#                 combine with any mode above: deploy into the cluster KUBECONFIG points at instead of k3d. No k3d,
#                 no docker, no image build (the cluster pulls aside:$TAG; TAG unset = the image committed in k8s/),
#                 and no Argo CD install when Argo CD runs beside the cluster (its CRDs served, no argocd-server
#                 in it); an install inside the cluster is re-applied (idempotent).
#   --overlay DIR the kustomize directory to deploy instead of k8s/ (relative to the repository root), e.g.
#                 overlays/airgap for a cluster that runs locally built images (scripts/node.sh); with --argocd
#                 the Application follows that path, and DIR/argocd (a kustomize Component), when present, is
#                 added to the Argo CD install (overlays/airgap/argocd: the locally built Argo CD image)
#   --env NAME    deploy the environment NAME (docs/delivery.md "Environments"): dev, prod, or prod-airgap (prod
#                 on the air-gapped node). The same as --overlay overlays/NAME; with --helm, the values file
#                 charts/aside/values-NAME.yaml instead of values-k3d.yaml. One environment per cluster (each uses
#                 namespace aside and the same NodePorts). On k3d the image deploy.sh builds replaces the
#                 environment's tag; with --existing-cluster the tag committed in overlays/NAME runs (promotion:
#                 scripts/promote.sh dev prod)
#   --helm        helm upgrade --install charts/aside (+ values-k3d.yaml; with --env NAME values-NAME.yaml instead),
#                 then `helm test` (POST -> GET MISS -> GET HIT)
#   --destroy     delete the k3d cluster and stop the git server started by --local-git (with --existing-cluster:
#                 only stop the git server)
#   -h, --help    this text
#
# Every mode (but --destroy) creates or reuses the k3d cluster "$CLUSTER" with the NodePorts mapped to localhost
# (30080 API, 30090 Prometheus, 30030 Grafana, 30443 Argo CD; Traefik HTTPS on 8443), builds the image
# aside:<git-sha> with docker, imports it into k3d, and creates the self-signed TLS Secret for https://aside.localhost:8443.
# Port mappings can only be set when a k3d cluster is created: an existing cluster without them is refused. k3d v5
# publishes `-p PORT@server:0` on its load-balancer container k3d-$CLUSTER-serverlb, so that is where they are checked.
#
# Environment (defaults): CLUSTER=aside  NAMESPACE=aside  K3S_IMAGE=rancher/k3s:v1.32.5-k3s1
#   SERVER_MEMORY=4g  TIMEOUT=600s  TAG=<git short SHA, +-dirty-<time> for uncommitted changes>
#   REPO_URL / REVISION: the Git source Argo CD follows (default: this clone's local mirror, at its current
#   branch)   GIT_PORT=8418: the smart-HTTP port of the mirror   GIT_HOST: the address Argo CD's pods reach the
#   mirror at (default host.k3d.internal; with --existing-cluster 127.0.0.1; scripts/node.sh's env sets its
#   bridge address)   ARGOCD_WEBHOOK_URL (default https://127.0.0.1:30443/api/webhook): where the hook posts
#   ARGOCD_INSTALL_MANIFEST: a local copy of the pinned upstream install.yaml, for a cluster or machine that
#   cannot fetch it from GitHub (default: the URL in argocd/install/kustomization.yaml)
#   SKIP_BUILD=1 reuses an already imported aside:$TAG
# Needs: docker (with a running engine), k3d, kubectl, openssl, git; helm for --helm; python3 for --local-git.
# --existing-cluster needs only kubectl, openssl and git (and helm for --helm, python3 for --local-git).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${CLUSTER:-aside}"
NAMESPACE="${NAMESPACE:-aside}"
K3S_IMAGE="${K3S_IMAGE:-rancher/k3s:v1.32.5-k3s1}"
SERVER_MEMORY="${SERVER_MEMORY:-4g}"
TIMEOUT="${TIMEOUT:-600s}"
GIT_PORT="${GIT_PORT:-8418}"
STATE_DIR="${XDG_STATE_HOME:-$HOME/.local/state}/aside-deploy"
MODE="manifests"
EXISTING=0
CLEANUP=() # temporary kustomize directories inside the repository, removed however the run ends
OVERLAY=k8s
ENV_NAME="" # --env: overlays/$ENV_NAME, and charts/aside/values-$ENV_NAME.yaml for --helm

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
log() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
# image_desc TEXT: "aside:$TAG" when a tag is set, else TEXT (what runs instead).
image_desc() { if [[ -n "${TAG:-}" ]]; then echo "aside:$TAG"; else echo "$1"; fi; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --argocd) MODE="argocd" ;;
    --local-git) MODE="local-git" ;;
    --helm) MODE="helm" ;;
    --destroy) MODE="destroy" ;;
    --existing-cluster) EXISTING=1 ;;
    --overlay)
      [[ $# -ge 2 && -n "$2" ]] || { usage >&2; die "--overlay needs a directory (e.g. overlays/airgap)"; }
      OVERLAY="${2%/}"
      shift
      ;;
    --env)
      [[ $# -ge 2 && "$2" =~ ^[a-z0-9-]+$ ]] || { usage >&2; die "--env needs an environment name (e.g. dev, prod)"; }
      ENV_NAME="$2"
      OVERLAY="overlays/$2"
      shift
      ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

need() {
  local tool="$1" hint="$2"
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found. Install it: $hint"
}

check_prereqs() {
  if [[ -n "$ENV_NAME" ]]; then
    [[ "$OVERLAY" == "overlays/$ENV_NAME" ]] || die "give --env or --overlay, not both"
    local envs=("$ROOT"/overlays/*/kustomization.yaml)
    envs=("${envs[@]%/kustomization.yaml}")
    [[ -f "$ROOT/$OVERLAY/kustomization.yaml" ]] || die "--env $ENV_NAME: no $OVERLAY/kustomization.yaml (have: ${envs[*]##*/})"
    [[ "$MODE" != helm || -f "$ROOT/charts/aside/values-$ENV_NAME.yaml" ]] \
      || die "--helm --env $ENV_NAME: no charts/aside/values-$ENV_NAME.yaml"
  fi
  [[ "$OVERLAY" != /* && -f "$ROOT/$OVERLAY/kustomization.yaml" ]] \
    || die "--overlay $OVERLAY: no kustomization.yaml there (a directory relative to $ROOT)"
  [[ "$MODE" == helm && "$OVERLAY" != k8s && -z "$ENV_NAME" ]] && die "--overlay applies to the manifests and Argo CD modes, not --helm (--env works with --helm)"
  if ((!EXISTING)); then
    need docker "https://docs.docker.com/engine/install/ (the engine, not only the CLI)"
    need k3d "curl -s https://raw.githubusercontent.com/k3d-io/k3d/main/install.sh | bash  (or: brew install k3d)"
  fi
  need kubectl "https://kubernetes.io/docs/tasks/tools/  (or: brew install kubectl)"
  need git "apt-get install git  (or: brew install git)"
  [[ "$MODE" != "destroy" ]] && need openssl "apt-get install openssl  (or: brew install openssl)"
  if [[ "$MODE" != "destroy" ]] && ((!EXISTING)); then
    docker info >/dev/null 2>&1 || die "docker is installed but no engine answers (start Docker; is your user in the docker group?)"
  fi
  if [[ "$MODE" == "helm" ]]; then
    need helm "https://helm.sh/docs/intro/install/  (or: brew install helm)"
  fi
}

# On any failure: what the cluster looked like.
dump_state() {
  local rc=$?
  ((${#CLEANUP[@]})) && rm -rf "${CLEANUP[@]}"
  [[ $rc -eq 0 ]] && return 0
  echo "---- deploy failed (exit $rc); cluster state:" >&2
  kubectl get pods -A -o wide >&2 2>/dev/null || true
  kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 30 >&2 || true
  kubectl -n "$NAMESPACE" logs -l app.kubernetes.io/name=aside --all-containers --prefix --tail=100 >&2 2>/dev/null || true
  if [[ "$MODE" == "argocd" || "$MODE" == "local-git" ]]; then
    kubectl -n argocd get application aside -o jsonpath='{.status.conditions}{"\n"}{.status.operationState.message}{"\n"}' >&2 2>/dev/null || true
  fi
  return "$rc"
}

cluster_up() {
  if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then
    log "reusing k3d cluster $CLUSTER"
    k3d cluster start "$CLUSTER" >/dev/null 2>&1 || true
    local p
    for p in 30080 30090 30030 30443; do
      # `-p PORT@server:0` lands on the load balancer (k3d v5's default proxy), not on server-0 itself.
      docker port "k3d-$CLUSTER-serverlb" "$p/tcp" >/dev/null 2>&1 \
        || die "cluster $CLUSTER has no localhost mapping for NodePort $p (mappings are fixed at creation): run $0 --destroy, then again"
    done
  else
    log "creating k3d cluster $CLUSTER ($K3S_IMAGE, server memory $SERVER_MEMORY)"
    k3d cluster create "$CLUSTER" --image "$K3S_IMAGE" --servers 1 --agents 0 --servers-memory "$SERVER_MEMORY" \
      -p "30080:30080@server:0" -p "30090:30090@server:0" -p "30030:30030@server:0" -p "30443:30443@server:0" \
      -p "8443:443@loadbalancer" --wait
  fi
  kubectl config use-context "k3d-$CLUSTER" >/dev/null
}

# The cluster KUBECONFIG points at, as it is: reachable, and named in the log.
cluster_existing() {
  local ctx server
  ctx="$(kubectl config current-context 2>/dev/null || true)"
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null || true)"
  kubectl get --raw /readyz >/dev/null 2>&1 \
    || die "no Kubernetes API server answers for context '${ctx:-none}' (${server:-no server}); check KUBECONFIG"
  log "using the existing cluster of context ${ctx:-?} ($server): no k3d, no image build"
}

image_tag() {
  if [[ -n "${TAG:-}" ]]; then
    echo "$TAG"
  elif ((EXISTING)); then
    echo "" # nothing built here: the image tag committed in k8s/ (GitOps: CI commits the bump)
  elif [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
    # Uncommitted changes: a fresh tag each run, so IfNotPresent never keeps a stale image.
    echo "$(git -C "$ROOT" rev-parse --short=12 HEAD)-dirty-$(date +%s)"
  else
    git -C "$ROOT" rev-parse --short=12 HEAD
  fi
}

build_and_import() {
  if ((EXISTING)); then
    log "existing cluster: no image build; it runs $(image_desc "the image committed in $OVERLAY/")"
    return 0
  fi
  if [[ "${SKIP_BUILD:-0}" == 1 ]]; then
    log "SKIP_BUILD=1: using aside:$TAG as already imported"
    return 0
  fi
  log "building aside:$TAG"
  docker build -t "aside:$TAG" --build-arg VCS_REF="$(git -C "$ROOT" rev-parse HEAD)" \
    --build-arg CREATED="$(git -C "$ROOT" log -1 --format=%cI HEAD)" "$ROOT"
  log "importing aside:$TAG into k3d cluster $CLUSTER"
  k3d image import "aside:$TAG" -c "$CLUSTER"
}

ensure_namespace() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
}

# Self-signed certificate for the Ingress, made once per cluster and never written into the repo.
ensure_tls() {
  ensure_namespace "$NAMESPACE"
  if kubectl -n "$NAMESPACE" get secret aside-tls >/dev/null 2>&1; then
    return 0
  fi
  log "creating self-signed TLS Secret aside-tls for aside.localhost"
  local tmp
  tmp="$(mktemp -d)"
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=aside.localhost" \
    -addext "subjectAltName=DNS:aside.localhost,DNS:*.aside.localhost" -keyout "$tmp/tls.key" -out "$tmp/tls.crt" 2>/dev/null
  kubectl -n "$NAMESPACE" create secret tls aside-tls --cert="$tmp/tls.crt" --key="$tmp/tls.key" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  rm -rf "$tmp"
}

wait_stack() {
  log "waiting for the rollout"
  kubectl -n "$NAMESPACE" rollout status statefulset/aside-postgres --timeout="$TIMEOUT"
  local d
  for d in aside-redis aside aside-prometheus aside-grafana; do
    kubectl -n "$NAMESPACE" rollout status "deployment/$d" --timeout="$TIMEOUT"
  done
}

deploy_manifests() {
  local overlay
  # A throwaway overlay that only sets the image tag; k8s/ itself stays as committed. Inside the repo
  # because kustomize refuses absolute resource paths (gitignored, removed right after).
  overlay="$(mktemp -d "$ROOT/.deploy-overlay.XXXXXX")"
  CLEANUP+=("$overlay")
  cat >"$overlay/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../$OVERLAY
YAML
  [[ -n "$TAG" ]] && printf 'images:\n  - name: aside\n    newTag: "%s"\n' "$TAG" >>"$overlay/kustomization.yaml"
  log "applying $OVERLAY/ (image $(image_desc "as committed"))"
  kubectl apply -k "$overlay"
  rm -rf "$overlay"
  wait_stack
}

# The mirror Argo CD follows for --local-git: a bare repository in the state directory, served read-only over
# smart HTTP (Argo CD matches push webhooks against http(s) URLs only), with a post-receive hook that posts each
# push to Argo CD's webhook, and a remote `argocd-local` in this clone to push to.
serve_local_git() {
  local name bare pidfile="$STATE_DIR/git-http.pid" host listen branch url
  need python3 "apt-get install python3  (or: brew install python)"
  name="$(basename "$ROOT")"
  bare="$STATE_DIR/git/$name.git"
  host="host.k3d.internal"
  ((EXISTING)) && host=127.0.0.1
  host="${GIT_HOST:-$host}"
  # Listen only where the cluster reaches the host: loopback, or the one address given; k3d's containers come
  # through the Docker bridge, whose address varies, so there every interface (read-only, this repository only).
  case "$host" in
    localhost | 127.0.0.1) listen=127.0.0.1 ;;
    *[!0-9.]*) listen=0.0.0.0 ;;
    *) listen="$host" ;;
  esac
  url="http://$host:$GIT_PORT/$name"
  branch="${REVISION:-$(git -C "$ROOT" rev-parse --abbrev-ref HEAD)}"
  [[ -d "$bare" ]] || git init -q --bare "$bare"
  webhook_secret >/dev/null # the hook signs with it from the first push on
  install -m 0755 "$ROOT/scripts/gitops/post-receive" "$bare/hooks/post-receive"
  git -C "$bare" config hooks.argocd.url "${ARGOCD_WEBHOOK_URL:-https://127.0.0.1:30443/api/webhook}"
  git -C "$bare" config hooks.argocd.weburl "$url"
  git -C "$bare" config hooks.argocd.secretfile "$STATE_DIR/webhook-secret"
  git -C "$bare" symbolic-ref HEAD "refs/heads/$branch"
  if git -C "$ROOT" remote get-url argocd-local >/dev/null 2>&1; then
    git -C "$ROOT" remote set-url argocd-local "$bare"
  else
    git -C "$ROOT" remote add argocd-local "$bare"
    log "added remote argocd-local ($bare) to this clone: git push argocd-local $branch deploys"
  fi
  # The mirror follows this clone: what is committed here is what Argo CD sees.
  git -C "$ROOT" push -q --force argocd-local "HEAD:refs/heads/$branch" 2>&1 | sed 's/^/    /' >&2
  if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "git server already serving (pid $(cat "$pidfile"))"
  else
    log "serving the mirror read-only over smart HTTP on $listen:$GIT_PORT"
    setsid python3 "$ROOT/scripts/gitops/git-http.py" "$STATE_DIR/git" "$listen" "$GIT_PORT" \
      </dev/null >"$STATE_DIR/git-http.log" 2>&1 &
    echo $! >"$pidfile"
    local i
    for i in $(seq 1 50); do
      git ls-remote "http://$([[ $listen == 0.0.0.0 ]] && echo 127.0.0.1 || echo "$listen"):$GIT_PORT/$name.git" HEAD >/dev/null 2>&1 && break
      kill -0 "$(cat "$pidfile")" 2>/dev/null || die "the git server did not start: $(tail -n 3 "$STATE_DIR/git-http.log") (port $GIT_PORT in use? set GIT_PORT)"
      ((i == 50)) && die "the git server on port $GIT_PORT does not answer"
      sleep 0.1
    done
  fi
  REPO_URL="$url.git"
  REVISION="$branch"
  if [[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]]; then
    log "note: uncommitted changes are not served; Argo CD sees commits pushed to argocd-local"
  fi
}

# webhook_secret: the file holding the secret the local hook signs with (made once, mode 0600); prints its path.
webhook_secret() {
  [[ -s "$STATE_DIR/webhook-secret" ]] || (umask 077 && openssl rand -hex 32 >"$STATE_DIR/webhook-secret")
  echo "$STATE_DIR/webhook-secret"
}

# Webhook secrets in argocd-secret (never in Git). The local hook signs with the Gogs key; every other provider
# gets a random secret unless one is set already (an unset secret makes Argo CD accept that provider's events
# unsigned), so a fork's GitHub webhook secret set by hand is kept.
configure_webhooks() {
  kubectl -n argocd get secret argocd-secret >/dev/null 2>&1 || return 0 # Argo CD beside the cluster: no server
  local file patch key have
  file="$(webhook_secret)"
  # shellcheck disable=SC2016 # a Go template, not a shell expansion
  have="$(kubectl -n argocd get secret argocd-secret -o go-template='{{range $k, $v := .data}}{{if $v}}{{$k}} {{end}}{{end}}')"
  patch="$(umask 077 && mktemp)"
  {
    echo "stringData:"
    echo "  webhook.gogs.secret: \"$(cat "$file")\""
    for key in webhook.github.secret webhook.gitlab.secret webhook.bitbucketserver.secret \
      webhook.azuredevops.username webhook.azuredevops.password; do
      [[ " $have " == *" $key "* ]] || echo "  $key: \"$(openssl rand -hex 32)\""
    done
    [[ " $have " == *" webhook.bitbucket.uuid "* ]] || echo "  webhook.bitbucket.uuid: \"$(cat /proc/sys/kernel/random/uuid 2>/dev/null || openssl rand -hex 16)\""
  } >"$patch"
  kubectl -n argocd patch secret argocd-secret --type merge --patch-file "$patch" >/dev/null
  rm -f "$patch"
  log "webhook secrets set in argocd-secret (the local hook signs with webhook.gogs.secret; other providers random unless set)"
}

# Argo CD from argocd/install: upstream's pinned install.yaml (from GitHub, or ARGOCD_INSTALL_MANIFEST) plus the
# project's patches, and the overlay's argocd/ Component when it has one (locally built images).
install_argocd() {
  local dir
  dir="$(mktemp -d "$ROOT/.deploy-argocd.XXXXXX")"
  CLEANUP+=("$dir")
  cp "$ROOT"/argocd/install/*.yaml "$dir/"
  if [[ -n "${ARGOCD_INSTALL_MANIFEST:-}" ]]; then
    [[ -f "$ARGOCD_INSTALL_MANIFEST" ]] || die "ARGOCD_INSTALL_MANIFEST=$ARGOCD_INSTALL_MANIFEST: no such file"
    cp "$ARGOCD_INSTALL_MANIFEST" "$dir/upstream-install.yaml"
    sed -i 's#^  - https://.*/manifests/install\.yaml$#  - upstream-install.yaml#' "$dir/kustomization.yaml"
    grep -qx '  - upstream-install.yaml' "$dir/kustomization.yaml" || die "argocd/install/kustomization.yaml: no upstream install.yaml URL to replace"
  fi
  if [[ -f "$ROOT/$OVERLAY/argocd/kustomization.yaml" ]]; then
    printf 'components:\n  - ../%s/argocd\n' "$OVERLAY" >>"$dir/kustomization.yaml"
  fi
  log "installing Argo CD (argocd/install${ARGOCD_INSTALL_MANIFEST:+ over $ARGOCD_INSTALL_MANIFEST}$([[ -f "$ROOT/$OVERLAY/argocd/kustomization.yaml" ]] && echo " + $OVERLAY/argocd"))"
  ensure_namespace argocd
  # Server-side: client-side apply's last-applied annotation would exceed 256 KiB on the ApplicationSet CRD.
  kubectl apply --server-side --force-conflicts -k "$dir" >/dev/null
  rm -rf "$dir"
  local w
  for w in statefulset/argocd-application-controller deployment/argocd-repo-server deployment/argocd-redis deployment/argocd-server; do
    kubectl -n argocd rollout status "$w" --timeout="$TIMEOUT"
  done
}

# True when the Argo CD API (its CRDs) is already served: an install that runs in the cluster or beside it.
argocd_present() {
  kubectl get crd applications.argoproj.io appprojects.argoproj.io >/dev/null 2>&1
}

deploy_argocd() {
  if ((EXISTING)) && argocd_present && ! kubectl -n argocd get deployment argocd-server >/dev/null 2>&1; then
    log "Argo CD is already running beside the cluster (its CRDs are served, no argocd-server here): not installing it"
  else
    install_argocd
  fi
  # No REPO_URL: follow this clone. The placeholder in argocd/application.yaml is for forks to edit.
  if [[ "$MODE" == "local-git" || -z "${REPO_URL:-}" ]]; then
    serve_local_git
  fi
  configure_webhooks
  local repo="$REPO_URL" rev="${REVISION:-}"
  log "Argo CD follows $repo at ${rev:-the targetRevision in argocd/application.yaml}, path $OVERLAY, image $(image_desc "as committed in $OVERLAY/")"
  # Only the marked lines change: repoURL, targetRevision, the project's source repo; plus an image override
  # for the image built here (none when nothing was built: then Git decides the image, the GitOps way).
  local image_override=()
  [[ -n "$TAG" ]] && image_override=(-e "/^    path: /a\\
    kustomize:\\
      images:\\
        - aside=aside:$TAG")
  sed -e "s#^\(    repoURL: \).*\$#\1$repo#" -e "s#^\(    path: \)k8s\$#\1$OVERLAY#" \
    -e "${rev:+s#^\(    targetRevision: \).*\$#\1$rev#}" \
    "${image_override[@]}" "$ROOT/argocd/application.yaml" >"$STATE_DIR/application.yaml"
  sed -e "s#^\(    - \)[^ ]*\(  \# repoURL\)\$#\1$repo\2#" "$ROOT/argocd/appproject.yaml" >"$STATE_DIR/appproject.yaml"
  kubectl apply -f "$STATE_DIR/appproject.yaml" -f "$STATE_DIR/application.yaml"
  log "waiting for Application aside to be Synced + Healthy"
  local deadline=$((SECONDS + ${TIMEOUT%s})) state=""
  while ((SECONDS < deadline)); do
    state="$(kubectl -n argocd get application aside -o jsonpath='{.status.sync.status} {.status.health.status}' 2>/dev/null || true)"
    [[ "$state" == "Synced Healthy" ]] && break
    sleep 2
  done
  [[ "$state" == "Synced Healthy" ]] || die "Application aside is '$state' after $TIMEOUT"
  # What Argo CD resolved, not what this clone has checked out (they differ whenever REPO_URL is a fork).
  log "Argo CD synced $repo at revision $(kubectl -n argocd get application aside -o jsonpath='{.status.sync.revision}')"
  wait_stack
}

deploy_helm() {
  if kubectl -n "$NAMESPACE" get deployment aside >/dev/null 2>&1 \
    && [[ -z "$(kubectl -n "$NAMESPACE" get deployment aside -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}')" ]]; then
    die "namespace $NAMESPACE already holds aside from plain manifests or Argo CD; run $0 --destroy first"
  fi
  local tag=() values="$ROOT/charts/aside/values-k3d.yaml"
  [[ -n "$TAG" ]] && tag=(--set image.tag="$TAG")
  [[ -n "$ENV_NAME" ]] && values="$ROOT/charts/aside/values-$ENV_NAME.yaml"
  log "helm upgrade --install aside -f ${values#"$ROOT"/} (image $(image_desc "as in the values"))"
  helm upgrade --install aside "$ROOT/charts/aside" -n "$NAMESPACE" --create-namespace \
    -f "$values" "${tag[@]}" --wait --timeout "$TIMEOUT"
  log "helm test aside"
  helm test aside -n "$NAMESPACE" --logs
}

destroy() {
  local pidfile="$STATE_DIR/git-http.pid"
  if [[ -f "$pidfile" ]]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    log "stopped the git server"
  fi
  ((EXISTING)) && return 0
  if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then
    k3d cluster delete "$CLUSTER"
  else
    log "no k3d cluster $CLUSTER"
  fi
}

print_urls() {
  if ((EXISTING)); then
    cat <<TXT

aside is up ($MODE, existing cluster, image $(image_desc "as committed")). NodePorts on the cluster's nodes:
30080 API + Swagger UI (/docs), 30090 Prometheus, 30030 Grafana; or: kubectl -n $NAMESPACE port-forward svc/aside 8080:80
TXT
    [[ -n "${REPO_URL:-}" ]] && echo "  Git source   $REPO_URL @ ${REVISION:-as committed}$(git -C "$ROOT" remote get-url argocd-local >/dev/null 2>&1 && echo ": git push argocd-local ${REVISION:-main} deploys")"
    return 0
  fi
  local host # an environment names its own Ingress host (overlays/dev: dev.aside.localhost)
  host="$(kubectl -n "$NAMESPACE" get ingress aside -o jsonpath='{.spec.rules[0].host}' 2>/dev/null || true)"
  cat <<TXT

aside is up ($MODE${ENV_NAME:+, environment $ENV_NAME}, image aside:$TAG):
  API          http://localhost:30080/data
  Swagger UI   http://localhost:30080/docs
  Ingress TLS  https://${host:-aside.localhost}:8443/docs   (self-signed: curl -k)
  Prometheus   http://localhost:30090/alerts
  Grafana      http://localhost:30030/d/aside   (admin password: kubectl -n $NAMESPACE get secret aside-grafana -o jsonpath='{.data.GF_SECURITY_ADMIN_PASSWORD}' | base64 -d)
  Write token  kubectl -n $NAMESPACE get secret aside -o jsonpath='{.data.API_TOKEN}' | base64 -d
TXT
  if [[ "$MODE" == "argocd" || "$MODE" == "local-git" ]]; then
    cat <<TXT
  Argo CD UI   https://localhost:30443   (user admin)
  password     kubectl -n argocd get secret argocd-initial-admin-secret -o jsonpath='{.data.password}' | base64 -d
TXT
  fi
  if [[ "$MODE" == "argocd" || "$MODE" == "local-git" ]]; then
    echo "  Git source   $REPO_URL @ ${REVISION:-as committed}: push to it (for this clone's mirror: git push argocd-local ${REVISION:-main}) and Argo CD syncs (docs/delivery.md has the measured delay)"
  fi
}

main() {
  check_prereqs
  if [[ "$MODE" == "destroy" ]]; then
    destroy
    return 0
  fi
  trap dump_state EXIT
  mkdir -p "$STATE_DIR"
  TAG="$(image_tag)"
  if ((EXISTING)); then cluster_existing; else cluster_up; fi
  build_and_import
  ensure_tls
  case "$MODE" in
    manifests) deploy_manifests ;;
    argocd | local-git) deploy_argocd ;;
    helm) deploy_helm ;;
  esac
  print_urls
}

main
