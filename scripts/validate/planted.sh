#!/usr/bin/env bash
# scripts/validate/planted.sh: show that each check of scripts/validate.sh catches a planted defect. For every
# case: copy the repo (tracked + untracked, not ignored, files as they are in the work tree) to a temp dir,
# plant ONE defect there, run only the check meant to catch it (scripts/validate.sh --only NAME) and require
# that it FAILS with the expected finding text. The repo itself is never edited. First, a baseline: the
# unplanted copy must pass every check the cases use, so a "caught" defect is the defect's doing.
#
# Usage: scripts/validate/planted.sh [-j N] [--static] [--only CASE[,CASE...]] [--check NAME[,NAME...]] [--list] [-h|--help]
#   -j N           cases run at once (default 2; each is one validate.sh process)
#   --static       skip the real-Prometheus case (no cargo build, no Postgres/Redis)
#   --only CASES   only these cases (ids as printed by --list)
#   --check NAMES  only the cases of these validate.sh checks
#   --list         print the cases (id, check, defect, expected finding) and exit
# Env: ASIDE_TOOLS_DIR, K8S_VERSIONS as for scripts/validate.sh;
#      ASIDE_BIN (prebuilt aside for the realscrape case; default: cargo build --bin aside here, once).
# Exit status: 0 when every planted defect was caught, 1 when any was missed (or the baseline failed).

# The planted texts are single-quoted on purpose: they are file contents, never expanded here.
# shellcheck disable=SC2016
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
log() { echo "==> $*" >&2; }

JOBS=2
STATIC=0
ONLY=""
CHECKS=""
LIST=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -j) JOBS="${2:?-j needs a number}"; shift ;;
    --static) STATIC=1 ;;
    --only) ONLY="${2:?--only needs a list}"; shift ;;
    --check) CHECKS="${2:?--check needs a list}"; shift ;;
    --list) LIST=1 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "-j needs a positive number, got $JOBS" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# ---------------------------------------------------------------- edit helpers (run inside the copy)
# sub FILE OLD NEW: replace the first occurrence of the literal OLD; fails when OLD is not there, so a
# case whose edit no longer applies is reported, never silently "caught" or "missed".
sub() {
  python3 - "$@" <<'PY'
import sys
path, old, new = sys.argv[1:4]
text = open(path).read()
if old not in text:
    sys.exit(f"plant: {path} does not contain {old!r}")
open(path, "w").write(text.replace(old, new, 1))
PY
}
# del_line FILE PREFIX: delete the first line that starts with PREFIX.
del_line() {
  python3 - "$@" <<'PY'
import sys
path, prefix = sys.argv[1:3]
lines = open(path).read().splitlines(True)
i = next((i for i, l in enumerate(lines) if l.startswith(prefix)), None)
if i is None:
    sys.exit(f"plant: {path} has no line starting with {prefix!r}")
del lines[i]
open(path, "w").write("".join(lines))
PY
}

# ---------------------------------------------------------------- the cases
# def ID CHECK EXPECTED DEFECT; the edit is the function plant_ID. EXPECTED is a fixed string that must
# appear in the failing check's output.
declare -a IDS=()
declare -A CHECK=() EXPECT=() DEFECT=()
def() { IDS+=("$1"); CHECK[$1]="$2"; EXPECT[$1]="$3"; DEFECT[$1]="$4"; }

def sc2155 shellcheck 'SC2155' 'deploy.sh: local tmp="$(mktemp -d)" (declare and assign at once)'
plant_sc2155() { sub scripts/deploy.sh $'  local tmp\n  tmp="$(mktemp -d)"\n  openssl' $'  local tmp="$(mktemp -d)"\n  openssl'; }

def dup_key yamllint 'key-duplicates' 'argocd/application.yaml: project: twice'
plant_dup_key() { sub argocd/application.yaml $'  project: aside\n' $'  project: aside\n  project: aside\n'; }

def apt_curl hadolint 'DL3008' 'Dockerfile: RUN apt-get install -y curl in the builder stage'
plant_apt_curl() { sub Dockerfile $'FROM chef AS builder\n' $'FROM chef AS builder\nRUN apt-get install -y curl\n'; }

def nil_value helm-lint "can't evaluate field number in type interface {}" 'templates/service.yaml: .Values.service.port.number'
plant_nil_value() { sub charts/aside/templates/service.yaml '{{ .Values.service.port }}' '{{ .Values.service.port.number }}'; }

def misspelled_value helm-lint "additional properties 'minReplica' not allowed" 'values.yaml: hpa.minReplica (misspelled nested value)'
plant_misspelled_value() { sub charts/aside/values.yaml $'  minReplicas: 2\n  maxReplicas: 3' $'  minReplica: 2\n  maxReplicas: 3'; }

def hand_edit drift 'k8s/aside-configmap.yaml: differs from the chart render' 'k8s/aside-configmap.yaml edited by hand (LOG_FORMAT text)'
plant_hand_edit() { sub k8s/aside-configmap.yaml 'LOG_FORMAT: json' 'LOG_FORMAT: text'; }

def missing_file manifests 'redis-service.yaml' 'k8s/redis-service.yaml deleted, still listed in kustomization.yaml'
plant_missing_file() { rm k8s/redis-service.yaml; }

def unknown_field manifests "'periodSecond' was unexpected" 'k8s/aside-deployment.yaml: startupProbe periodSecond'
plant_unknown_field() { sub k8s/aside-deployment.yaml 'periodSeconds: 2' 'periodSecond: 2'; }

def removed_api manifests 'no schema for policy/v1beta1 PodDisruptionBudget' 'k8s/aside-pdb.yaml: apiVersion policy/v1beta1 (removed in k8s 1.25)'
plant_removed_api() { sub k8s/aside-pdb.yaml 'apiVersion: policy/v1' 'apiVersion: policy/v1beta1'; }

def unknown_kind manifests 'no schema for policy/v1 PodDisruptionBuget' 'k8s/aside-pdb.yaml: kind PodDisruptionBuget'
plant_unknown_kind() { sub k8s/aside-pdb.yaml 'kind: PodDisruptionBudget' 'kind: PodDisruptionBuget'; }

def secret_key manifests 'missing Secret key aside/REDIS_URI' 'k8s/aside-deployment.yaml: secretKeyRef key REDIS_URI'
plant_secret_key() { sub k8s/aside-deployment.yaml 'key: REDIS_URL' 'key: REDIS_URI'; }

def configmap_key manifests 'references missing ConfigMap key aside/CACHE_TTL' 'k8s/aside-deployment.yaml: env from configMapKeyRef aside/CACHE_TTL (no such key)'
plant_configmap_key() {
  sub k8s/aside-deployment.yaml $'              key: DATABASE_URL\n        - name: REDIS_URL' \
    $'              key: DATABASE_URL\n        - name: CACHE_TTL_SECONDS\n          valueFrom:\n            configMapKeyRef:\n              name: aside\n              key: CACHE_TTL\n        - name: REDIS_URL'
}

def missing_configmap manifests 'references missing ConfigMap aside-redis-config' 'k8s/redis-deployment.yaml: config volume from ConfigMap aside-redis-config'
plant_missing_configmap() { sub k8s/redis-deployment.yaml $'        configMap:\n          name: aside-redis' $'        configMap:\n          name: aside-redis-config'; }

def service_selector manifests 'Service/aside-redis: selector' 'k8s/redis-service.yaml: selector name aside-cache (no such pods)'
plant_service_selector() { sub k8s/redis-service.yaml $'  selector:\n    app.kubernetes.io/name: aside-redis' $'  selector:\n    app.kubernetes.io/name: aside-cache'; }

def target_port manifests "targetPort 'web' is not a named port" 'k8s/aside-service.yaml: targetPort web'
plant_target_port() { sub k8s/aside-service.yaml 'targetPort: http' 'targetPort: web'; }

def nodeport_range manifests 'nodePort 32768 outside 30000-32767' 'k8s/prometheus-service.yaml: nodePort 32768'
plant_nodeport_range() { sub k8s/prometheus-service.yaml 'nodePort: 30090' 'nodePort: 32768'; }

def nodeport_dup manifests 'nodePort 30090 already used' 'k8s/grafana-service.yaml: nodePort 30090 (Prometheus has it)'
plant_nodeport_dup() { sub k8s/grafana-service.yaml 'nodePort: 30030' 'nodePort: 30090'; }

def hpa_target manifests 'scaleTargetRef Deployment/aside-api does not exist' 'k8s/aside-hpa.yaml: scaleTargetRef Deployment/aside-api'
plant_hpa_target() { sub k8s/aside-hpa.yaml $'    kind: Deployment\n    name: aside\n' $'    kind: Deployment\n    name: aside-api\n'; }

def pdb_target manifests "PodDisruptionBudget/aside: selector {'app.kubernetes.io/instance': 'aside', 'app.kubernetes.io/name': 'aside-api'} matches no workload's pods" 'k8s/aside-pdb.yaml: selector name aside-api (no such pods)'
plant_pdb_target() { sub k8s/aside-pdb.yaml $'      app.kubernetes.io/name: aside\n' $'      app.kubernetes.io/name: aside-api\n'; }

def hpa_replicas manifests 'sets spec.replicas: Argo CD and the HPA would fight' 'k8s/aside-deployment.yaml: replicas: 2 with the HPA on'
plant_hpa_replicas() { sub k8s/aside-deployment.yaml $'spec:\n  revisionHistoryLimit: 3' $'spec:\n  replicas: 2\n  revisionHistoryLimit: 3'; }

def sts_service manifests "serviceName 'aside-pg' is not a Service here" 'k8s/postgres-statefulset.yaml: serviceName aside-pg'
plant_sts_service() { sub k8s/postgres-statefulset.yaml 'serviceName: aside-postgres' 'serviceName: aside-pg'; }

def sts_not_headless manifests 'serviceName Service aside-postgres is not headless' 'k8s/postgres-service.yaml: clusterIP None removed'
plant_sts_not_headless() { del_line k8s/postgres-service.yaml '  clusterIP: None'; }

def grace_period manifests 'terminationGracePeriodSeconds 10 <= preStop 2 + drain 5 + 5' 'k8s/aside-deployment.yaml: terminationGracePeriodSeconds 10'
plant_grace_period() { sub k8s/aside-deployment.yaml 'terminationGracePeriodSeconds: 20' 'terminationGracePeriodSeconds: 10'; }

def metrics_open manifests 'metrics port 9091 is open beyond Prometheus' 'k8s/aside-networkpolicy.yaml: metrics port from podSelector {} (every pod)'
plant_metrics_open() {
  sub k8s/aside-networkpolicy.yaml $'  - from:\n    - podSelector:\n        matchLabels:\n          app.kubernetes.io/name: aside-prometheus\n          app.kubernetes.io/instance: aside\n    ports:\n    - port: metrics' \
    $'  - from:\n    - podSelector: {}\n    ports:\n    - port: metrics'
}

def metrics_unset manifests 'METRICS_BIND_ADDR unset' 'k8s/aside-configmap.yaml: METRICS_BIND_ADDR removed (/metrics back on the API port)'
plant_metrics_unset() { del_line k8s/aside-configmap.yaml '  METRICS_BIND_ADDR:'; }

def test_tmp manifests 'uses /tmp/ on a read-only root filesystem with no volume mounted at /tmp' 'templates/tests/smoke.yaml: the /tmp emptyDir mount removed'
plant_test_tmp() { sub charts/aside/templates/tests/smoke.yaml $'      volumeMounts:\n        - name: tmp\n          mountPath: /tmp\n' ''; }

def postgres_cpu budget "cpu requests 2.25 exceed the node's 2" 'k8s/postgres-statefulset.yaml: Postgres CPU request 1500m'
plant_postgres_cpu() { sub k8s/postgres-statefulset.yaml 'cpu: 250m' 'cpu: 1500m'; }

def selfheal argocd "'selfheal' was unexpected" 'argocd/application.yaml: selfheal instead of selfHeal'
plant_selfheal() { sub argocd/application.yaml 'selfHeal: true' 'selfheal: true'; }

def project_description argocd 'is too long at /spec/description' 'argocd/appproject.yaml: a 256-character description (the CRD allows 255)'
plant_project_description() { sub argocd/appproject.yaml '  description: aside cache-aside API' "  description: $(printf 'x%.0s' {1..186}) aside cache-aside API"; }

def whitelist argocd 'networking.k8s.io/NetworkPolicy (aside) in k8s/ is not whitelisted' 'argocd/appproject.yaml: NetworkPolicy removed from the whitelist'
plant_whitelist() { sub argocd/appproject.yaml $'    - group: networking.k8s.io\n      kind: NetworkPolicy\n' ''; }

def ignore_diff argocd 'HPA-owned Deployment/aside has no ignoreDifferences for the HPA' 'argocd/application.yaml: ignoreDifferences on Deployment aside-api'
plant_ignore_diff() { sub argocd/application.yaml $'      kind: Deployment\n      name: aside\n' $'      kind: Deployment\n      name: aside-api\n'; }

def replicas_path argocd 'jsonPointers /spec/replicas hides an invalid replicas value' 'argocd/application.yaml: the HPA ignore rule by path (/spec/replicas) instead of by writer'
plant_replicas_path() { sub argocd/application.yaml $'      managedFieldsManagers:\n        - kube-controller-manager\n' $'      jsonPointers:\n        - /spec/replicas\n'; }

def airgap_pull argocd 'leaves containers on pulled images' 'overlays/airgap/argocd/pull-policy-patch.yaml: argocd-server left at Always'
plant_airgap_pull() { sub overlays/airgap/argocd/pull-policy-patch.yaml '{containers: [{name: argocd-server, imagePullPolicy: IfNotPresent}]}' '{containers: [{name: argocd-server, imagePullPolicy: Always}]}'; }

def install_patch argocd 'argocd-reposerver' 'argocd/install/resources-patch.yaml: patch names argocd-reposerver'
plant_install_patch() { sub argocd/install/resources-patch.yaml '  name: argocd-repo-server' '  name: argocd-reposerver'; }

def install_nodeport argocd 'the patch sets /spec/ports[https]/nodePort, the render has none' 'argocd/install/config-patch.yaml: protocol removed from the https port (the nodePort no longer lands)'
plant_install_nodeport() { del_line argocd/install/config-patch.yaml '      protocol: TCP'; }

def install_release argocd 'want [https://raw.githubusercontent.com/argoproj/argo-cd/v' 'argocd/install/kustomization.yaml: upstream install.yaml of v3.5.2, not the release tools/argocd/go.mod pins'
plant_install_release() {
  sub argocd/install/kustomization.yaml "/argo-cd/$(awk '$1 == "github.com/argoproj/argo-cd/v3" { print $2 }' tools/argocd/go.mod)/" /argo-cd/v3.5.2/
}

def grid_pos typecheck 'TS2353' 'ops/grafana/dashboards/aside.json: gridPoss in a panel'
plant_grid_pos() { sub ops/grafana/dashboards/aside.json '"gridPos": {' '"gridPoss": {'; }

def graph_tooltip typecheck 'TS2322' 'ops/grafana/dashboards/aside.json: graphTooltip "shared" (an enum number)'
plant_graph_tooltip() { sub ops/grafana/dashboards/aside.json '"graphTooltip": 1' '"graphTooltip": "shared"'; }

def appproject_schema typecheck 'FINDING typecheck: AppProject/aside:' 'argocd/appproject.yaml: orphanedResources.warn "yes" (AppProject runtime schema)'
plant_appproject_schema() { sub argocd/appproject.yaml $'  orphanedResources:\n    warn: true' $'  orphanedResources:\n    warn: "yes"'; }

def unit_test promtool 'FAILED' 'ops/prometheus/alerts.test.yml: wrong expected description (20%)'
plant_unit_test() { sub ops/prometheus/alerts.test.yml "description: '10% of API requests" "description: '20% of API requests"; }

def alert_metric promtool 'alertname: AsideCacheErrors' 'ops/prometheus/alerts.yml: AsideCacheErrors on aside_cache_error_total (no such metric)'
plant_alert_metric() { sub ops/prometheus/alerts.yml 'aside_cache_errors_total{job="aside"}[5m]' 'aside_cache_error_total{job="aside"}[5m]'; }

def dashboard_paren promtool 'dashboard:panel' 'ops/grafana/dashboards/aside.json: unbalanced parenthesis in a panel query'
plant_dashboard_paren() { sub ops/grafana/dashboards/aside.json '"expr": "sum by (http_route, http_request_method) (rate(' '"expr": "sum by (http_route, http_request_method) rate('; }

def instant_rate promtool 'expected type range vector' 'ops/prometheus/alerts.yml: rate() over an instant vector'
plant_instant_rate() { sub ops/prometheus/alerts.yml 'sum(rate(aside_cache_errors_total{job="aside"}[5m]))' 'sum(rate(aside_cache_errors_total{job="aside"}))'; }

def panel_uid ops "datasource uid 'prom' != provisioned 'prometheus'" 'ops/grafana/dashboards/aside.json: a panel on datasource uid prom'
plant_panel_uid() { sub ops/grafana/dashboards/aside.json '"uid": "prometheus"' '"uid": "prom"'; }

def contract_metric ops "metric 'aside_cache_error_total' is not one the contract promises" 'ops/prometheus/alerts.yml: AsideCacheErrors on aside_cache_error_total'
plant_contract_metric() { plant_alert_metric; }

def keep_http ops "keeps Service/aside port 'http'" 'ops/prometheus/prometheus.yml: keep regex aside;api;http (the API port)'
plant_keep_http() { sub ops/prometheus/prometheus.yml 'regex: aside;api;metrics' 'regex: aside;api;http'; }

def keep_none ops 'the keep rules drop every Service port in k8s/: nothing would be scraped' 'ops/prometheus/prometheus.yml: keep regex aside;api;metrix'
plant_keep_none() { sub ops/prometheus/prometheus.yml 'regex: aside;api;metrics' 'regex: aside;api;metrix'; }

def rule_path ops 'differ outside the service-discovery block' 'ops/prometheus/prometheus-compose.yml: rule_files path changed'
plant_rule_path() { sub ops/prometheus/prometheus-compose.yml '  - /etc/prometheus/alerts.yml' '  - /etc/prometheus/rules.yml'; }

def bind_source compose 'bind mount source ./ops/grafana/dashboard does not exist' 'docker-compose.yml: mount ./ops/grafana/dashboard'
plant_bind_source() { sub docker-compose.yml '      - ./ops/grafana/dashboards:' '      - ./ops/grafana/dashboard:'; }

def healthchek compose "'healthchek' does not match any of the regexes" 'docker-compose.yml: healthchek: on aside'
plant_healthchek() { sub docker-compose.yml $'    healthcheck:\n      test: ["CMD", "/usr/local/bin/aside"' $'    healthchek:\n      test: ["CMD", "/usr/local/bin/aside"'; }

def latest_image compose "image 'redis:latest' not pinned" 'docker-compose.yml: redis:latest'
plant_latest_image() { sub docker-compose.yml 'image: redis:7.4.2-alpine' 'image: redis:latest'; }

def scrape_target compose 'want the metrics listener aside:9091' 'ops/prometheus/prometheus-compose.yml: target aside:8080 (the API port)'
plant_scrape_target() { sub ops/prometheus/prometheus-compose.yml '"aside:9091"' '"aside:8080"'; }

def metrics_published compose 'publishes the metrics port 9091 (9091:9091) to the host' 'docker-compose.yml: 9091:9091 published'
plant_metrics_published() { sub docker-compose.yml $'      - "8080:8080"\n' $'      - "8080:8080"\n      - "9091:9091"\n'; }

def job_needs workflow 'job "image" needs job "rusty" which does not exist' '.github/workflows/ci.yml: needs: [rusty]'
plant_job_needs() { sub .github/workflows/ci.yml $'  image:\n    name: image build + Trivy scan\n' $'  image:\n    name: image build + Trivy scan\n    needs: [rusty]\n'; }

def untrusted_input workflow 'github.head_ref' '.github/workflows/ci.yml: ${{ github.head_ref }} in run:'
plant_untrusted_input() { sub .github/workflows/ci.yml 'run: scripts/test.sh' 'run: echo "${{ github.head_ref }}" && scripts/test.sh'; }

def unpinned_uses workflow 'unpinned-uses' '.github/workflows/ci.yml: uses: example-org/setup-thing@main'
plant_unpinned_uses() { sub .github/workflows/ci.yml $'      - name: scripts/test.sh\n' $'      - uses: example-org/setup-thing@main\n      - name: scripts/test.sh\n'; }

def help_mode deploy-help 'does not document --local-git' 'scripts/deploy.sh: the --local-git usage line removed'
plant_help_mode() { del_line scripts/deploy.sh '#   --local-git'; }

def not_idempotent deploy-dryrun 'cluster created more than once (not idempotent)' 'scripts/deploy.sh: cluster_up always creates the cluster'
plant_not_idempotent() { sub scripts/deploy.sh $'cluster_up() {\n  if k3d cluster get "$CLUSTER" >/dev/null 2>&1; then' $'cluster_up() {\n  if false; then'; }

def overlay_tag deploy-dryrun 'overlay did not set aside:' 'scripts/deploy.sh: overlay newTag left at 0.1.0'
plant_overlay_tag() { sub scripts/deploy.sh '"$TAG" >>"$overlay/kustomization.yaml"' '"0.1.0" >>"$overlay/kustomization.yaml"'; }

def k3d_port_container deploy-dryrun 'FINDING deploy-dryrun: deploy.sh (default) failed' 'scripts/deploy.sh: re-run checks the port mappings on k3d-<cluster>-server-0 (k3d v5 publishes them on -serverlb)'
plant_k3d_port_container() { sub scripts/deploy.sh 'docker port "k3d-$CLUSTER-serverlb"' 'docker port "k3d-$CLUSTER-server-0"'; }

def argocd_placeholder deploy-dryrun 'FINDING deploy-dryrun: deploy.sh --argocd failed' 'scripts/deploy.sh: --argocd without REPO_URL no longer serves this clone'
plant_argocd_placeholder() { sub scripts/deploy.sh 'if [[ "$MODE" == "local-git" || -z "${REPO_URL:-}" ]]; then' 'if [[ "$MODE" == "local-git" ]]; then'; }

def existing_k3d deploy-dryrun '--existing-cluster called k3d/docker or installed Argo CD' 'scripts/deploy.sh: --existing-cluster still creates/reuses a k3d cluster'
plant_existing_k3d() { sub scripts/deploy.sh 'if ((EXISTING)); then cluster_existing; else cluster_up; fi' 'cluster_up'; }

# The environments (docs/delivery.md "Environments"): a broken one fails validate.sh like k8s/ would.
def env_hpa_bounds manifests 'minReplicas 5 > maxReplicas 4' 'overlays/prod: HPA minReplicas 5 above maxReplicas 4'
plant_env_hpa_bounds() { sub overlays/prod/kustomization.yaml 'path: /spec/minReplicas, value: 3}' 'path: /spec/minReplicas, value: 5}'; }

def env_budget budget "the node's 2" 'overlays/dev: API CPU request 600m (over the node with 2 + 1 surge pods)'
plant_env_budget() { sub overlays/dev/kustomization.yaml $'            resources:\n              requests: {cpu: 50m,' $'            resources:\n              requests: {cpu: 600m,'; }

def env_promote environments 'is not a tag overlays/dev has had' 'overlays/prod + values-prod.yaml: aside tag 9f8e7d6c5b4a, which dev never ran'
plant_env_promote() {
  sub overlays/prod/kustomization.yaml '- {name: aside, newTag: "0.1.0"}' '- {name: aside, newTag: "9f8e7d6c5b4a"}'
  sub charts/aside/values-prod.yaml 'tag: "0.1.0"' 'tag: "9f8e7d6c5b4a"'
}

def env_config_roll environments 'without it a config change rolls no pod' 'overlays/prod + values-prod.yaml: TTL 600, checksum/config left as it was'
plant_env_config_roll() {
  sub overlays/prod/kustomization.yaml 'CACHE_TTL_SECONDS, value: "300"}' 'CACHE_TTL_SECONDS, value: "600"}'
  sub charts/aside/values-prod.yaml 'cacheTtlSeconds: 300' 'cacheTtlSeconds: 600'
}

def scrape_metric realscrape 'metric aside_cache_error_total (used by an alert/dashboard or promised by the contract) is not in the scrape' 'ops/prometheus/alerts.yml: AsideCacheErrors on aside_cache_error_total (real scrape has no such metric)'
plant_scrape_metric() { plant_alert_metric; }

# supply-chain is scripts/supply-chain.sh's cargo deny gate (its own script in .ci/run, not a validate.sh check).
# path_crate NAME LICENSE: a crate vendored into the copy as a path dependency of aside; cargo metadata --offline
# takes it into the copy's Cargo.lock (the gate runs --locked).
path_crate() {
  mkdir -p "vendor/$1/src"
  printf '[package]\nname = "%s"\nversion = "0.9.99"\nedition = "2021"\nlicense = "%s"\n' "$1" "$2" >"vendor/$1/Cargo.toml"
  : >"vendor/$1/src/lib.rs"
  sub Cargo.toml $'[dependencies]\n' "$(printf '[dependencies]\n%s = { path = "vendor/%s" }' "$1" "$1")"$'\n'
  cargo metadata --offline --format-version 1 >/dev/null
}

def gpl_dep supply-chain 'rejected: license is not explicitly allowed' 'Cargo.toml: a vendored path dependency under GPL-3.0-only'
plant_gpl_dep() { path_crate copyleft GPL-3.0-only; }

def banned_tls supply-chain "crate 'openssl-sys = 0.9.99' is explicitly banned" 'Cargo.toml: a dependency on openssl-sys (a second TLS stack)'
plant_banned_tls() { path_crate openssl-sys MIT; }

# A RustSec-format database in the copy with one advisory against the subtle in Cargo.lock (the real database
# cannot be fetched here); deny.toml's db-path points at it. The directory name is cargo-deny's for the default URL.
def advisory supply-chain 'error[vulnerability]: Planted advisory against subtle' 'an advisory database (in deny.toml db-path) with RUSTSEC-2099-0001 against subtle'
plant_advisory() {
  local db=.advisory-dbs/advisory-db-3157b0e258782691
  mkdir -p "$db/crates/subtle"
  printf '```toml\n[advisory]\nid = "RUSTSEC-2099-0001"\npackage = "subtle"\ndate = "2099-01-01"\nurl = "https://example.invalid/planted"\n\n[versions]\npatched = [">= 99.0.0"]\n```\n\n# Planted advisory against subtle\n\nNot a real advisory.\n' >"$db/crates/subtle/RUSTSEC-2099-0001.md"
  git -C "$db" init -q
  git -C "$db" add -A
  git -C "$db" -c user.name=planted -c user.email=planted@localhost commit -q -m planted
  sub deny.toml $'[advisories]\n' "$(printf '[advisories]\ndb-path = "%s/.advisory-dbs"' "$PWD")"$'\n'
}

# ---------------------------------------------------------------- selection
selected=()
for id in "${IDS[@]}"; do
  [[ -n "$ONLY" && ",$ONLY," != *",$id,"* ]] && continue
  [[ -n "$CHECKS" && ",$CHECKS," != *",${CHECK[$id]},"* ]] && continue
  [[ $STATIC -eq 1 && "${CHECK[$id]}" == realscrape ]] && continue
  selected+=("$id")
done
if [[ $LIST -eq 1 ]]; then
  for id in "${selected[@]}"; do printf '%-18s %-13s %s\n%33s-> %s\n' "$id" "${CHECK[$id]}" "${DEFECT[$id]}" '' "${EXPECT[$id]}"; done
  exit 0
fi
[[ ${#selected[@]} -gt 0 ]] || { echo "no case selected" >&2; exit 2; }
used_checks="$(for id in "${selected[@]}"; do echo "${CHECK[$id]}"; done | awk '!seen[$0]++' | paste -sd, -)"

# ---------------------------------------------------------------- setup
if [[ ",$used_checks," == *",realscrape,"* && -z "${ASIDE_BIN:-}" ]]; then
  log "cargo build --bin aside (once, for the realscrape case)"
  (cd "$ROOT" && cargo build --locked --quiet --bin aside)
  export ASIDE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/aside"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# The pristine copy: a git repo of its own (deploy.sh tags images by commit), committed so the tree is clean.
BASE="$WORK/base"
mkdir -p "$BASE"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$BASE"
git -C "$BASE" init -q
git -C "$BASE" add -A
git -C "$BASE" -c user.name=planted -c user.email=planted@localhost commit -q -m "copy of $ROOT"

# run_checks DIR NAMES: runs these checks in the copy DIR. supply-chain is scripts/supply-chain.sh's gate (advisories
# from a copy of the database only, never fetched), printing a PASS/FAIL line as validate.sh's summary does.
run_checks() {
  if [[ "$2" == supply-chain ]]; then
    if ADVISORIES=local "$1/scripts/supply-chain.sh" --no-sbom; then echo "PASS supply-chain"; else echo "FAIL supply-chain"; return 1; fi
  else
    "$1/scripts/validate.sh" --only "$2"
  fi
}

# baseline NAMES: the unplanted copy runs these checks (its own copy: validate.sh may leave transient files);
# writes one "PASS|FAIL NAME" line per check to $WORK/baseline-<first name>.status.
baseline() {
  local dir="$WORK/baseline-${1%%,*}"
  cp -a "$BASE" "$dir"
  run_checks "$dir" "$1" >"$dir.log" 2>&1 || true
  awk '$1 == "PASS" || $1 == "FAIL" { print $1, $2 }' "$dir.log" >"$dir.status"
  rm -rf "$dir"
}

# run_case ID: plant, run the one check, write "<verdict>\t<seconds>\t<evidence>" to $WORK/ID.result.
run_case() {
  local id="$1" dir="$WORK/case-$1" t0=$SECONDS rc=0 verdict evidence
  cp -a "$BASE" "$dir"
  if ! (cd "$dir" && "plant_$id") >"$WORK/$id.plant" 2>&1; then
    printf 'missed\t0\tthe defect could not be planted: %s\n' "$(tr '\n' ' ' <"$WORK/$id.plant")" >"$WORK/$id.result"
    rm -rf "$dir"
    return 0
  fi
  git -C "$dir" -c user.name=planted -c user.email=planted@localhost commit -q -a -m "plant $id" >/dev/null 2>&1 || true
  run_checks "$dir" "${CHECK[$id]}" >"$WORK/$id.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    verdict=missed evidence="${CHECK[$id]} passed with the defect planted"
  elif evidence="$(grep -F -m1 -- "${EXPECT[$id]}" "$WORK/$id.out")"; then
    verdict=caught
  else
    verdict=missed evidence="${CHECK[$id]} failed (exit $rc) but without \"${EXPECT[$id]}\"; see below"
  fi
  evidence="$(echo "$evidence" | sed -e 's/^[[:space:]]*//' | cut -c1-220)"
  printf '%s\t%s\t%s\n' "$verdict" "$((SECONDS - t0))" "$evidence" >"$WORK/$id.result"
  rm -rf "$dir"
}

# -j limits the CPU-bound jobs. The real-Prometheus ones (baseline and case) mostly wait on Prometheus and
# timers, so they start first and run beside the others, outside the limit.
declare -a LIMITED=()
running() {
  local n=0 pid
  for pid in "${LIMITED[@]}"; do kill -0 "$pid" 2>/dev/null && n=$((n + 1)); done
  echo "$n"
}
launch() {
  while [[ "$(running)" -ge "$JOBS" ]]; do wait -n || true; done
  "$@" &
  LIMITED+=("$!")
}

start=$SECONDS
static_checks="$(tr ',' '\n' <<<"$used_checks" | grep -vx -e realscrape -e supply-chain | paste -sd, - || true)"
log "${#selected[@]} cases, $JOBS at a time, plus a baseline of the unplanted copy ($used_checks)"
if [[ ",$used_checks," == *",realscrape,"* ]]; then
  baseline realscrape &
  for id in "${selected[@]}"; do [[ "${CHECK[$id]}" == realscrape ]] && { run_case "$id" & }; done
fi
[[ -n "$static_checks" ]] && launch baseline "$static_checks"
[[ ",$used_checks," == *",supply-chain,"* ]] && launch baseline supply-chain
for id in "${selected[@]}"; do
  [[ "${CHECK[$id]}" == realscrape ]] || launch run_case "$id"
done
wait

# A case counts as caught only if its check passed on the unplanted copy.
cat "$WORK"/baseline-*.status >"$WORK/baseline.status" 2>/dev/null || true
caught=0
missed=0
echo
echo "== baseline: the unplanted copy =="
base_bad=0
for c in ${used_checks//,/ }; do
  if [[ "$(awk -v c="$c" '$2 == c { print $1 }' "$WORK/baseline.status")" != PASS ]]; then
    echo "FAIL $c on the unplanted copy: its cases show nothing"
    base_bad=1
  fi
done
if [[ $base_bad -eq 0 ]]; then
  echo "PASS $used_checks"
else
  sed -e 's/^/       | /' "$WORK"/baseline-*.log | tail -n 40
fi
echo
echo "== planted defects (each in its own copy, one check run) =="
for id in "${selected[@]}"; do
  IFS=$'\t' read -r verdict secs evidence <"$WORK/$id.result"
  if [[ "$(awk -v c="${CHECK[$id]}" '$2 == c { print $1 }' "$WORK/baseline.status")" != PASS ]]; then
    verdict=missed evidence="${CHECK[$id]} fails on the unplanted copy too: this case shows nothing"
  fi
  printf '%-6s %-13s %-18s %3ss  %s\n' "$verdict" "${CHECK[$id]}" "$id" "$secs" "${DEFECT[$id]}"
  printf '%47s-> %s\n' '' "$evidence"
  if [[ "$verdict" == caught ]]; then
    caught=$((caught + 1))
  else
    missed=$((missed + 1))
    [[ -f "$WORK/$id.out" ]] && sed -e 's/^/       | /' "$WORK/$id.out" | tail -n 25
  fi
done
echo "planted: $caught caught, $missed missed ($((SECONDS - start))s, -j $JOBS)"
[[ $missed -eq 0 ]]
