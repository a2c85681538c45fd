#!/usr/bin/env bash
# scripts/images.sh: builds every image the air-gapped cluster runs, without a registry, the way an
# air-gapped operator would (nothing is pulled; docs/delivery.md lists what replaces what).
#
# Usage: scripts/images.sh [--tag TAG]... [--list] [-h|--help]
#   (no args)   build what is missing or stale, print one line per image: name, size, built or cached
#   --tag TAG   also tag the aside image aside:TAG (repeatable; e.g. a second tag for a rolling update)
#   --list      print the image references the cluster needs (one per line) and exit
#
# Needs a running Docker engine (DOCKER_HOST; scripts/node.sh starts one) and Debian's docker CLI
# (/usr/bin/docker: its built-in BuildKit is what skips the Dockerfile's Rust stages), debootstrap and gcc.
# Images:
#   local/debian:bookworm      debootstrap --variant=minbase, the machine's own Debian mirror and sources
#   local/distroless-cc:nonroot  images/distroless-cc: glibc/libgcc/libssl/CA certs from Debian, uid 65532
#   aside:0.1.0 (+ --tag)      the project's Dockerfile, runtime stage, BIN_STAGE=prebuilt: the host's dist
#                              binary (target/dist/aside; built with cargo if missing), RUNTIME_BASE above;
#                              labelled with HEAD and its commit time, then its SBOMs written to target/sbom/
#                              (scripts/supply-chain.sh --sbom)
#   local/postgres:15-bookworm, local/redis:7.0-bookworm   images/{postgres,redis}: Debian's packages
#   local/prometheus, local/coredns, local/local-path-provisioner   binaries from scripts/cluster-tools.sh
#   local/pause:1              images/pause/pause.c, static: the pod sandbox image containerd is told to use
#   local/argocd:<pinned>      images/argocd: upstream's Dockerfile recipe on the Debian base, with the argocd,
#                              helm and kustomize binaries of scripts/cluster-tools.sh and the pinned module's scripts
# Docker's own layer cache (its data-root) makes a re-run seconds; the debootstrap root is rebuilt only
# when the mirror or this script's base recipe changes (a label on the image holds the key).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DOCKER="${DOCKER:-/usr/bin/docker}"
TAGS=()
LIST=0
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --tag)
      [[ $# -ge 2 && "$2" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "--tag needs a valid image tag, got '${2:-}'"
      TAGS+=("$2")
      shift
      ;;
    --list) LIST=1 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

ASIDE_VERSION="$(awk -F'"' '/^version *=/ { print $2; exit }' "$ROOT/Cargo.toml")"
PROM_VERSION="$(version_of prometheus github.com/prometheus/prometheus)"
PROM_VERSION="v2.${PROM_VERSION#v0.}"
COREDNS_VERSION="$(version_of coredns github.com/coredns/coredns)"
LOCALPATH_VERSION="$(version_of local-path github.com/rancher/local-path-provisioner)"
ARGOCD_VERSION="$(version_of argocd github.com/argoproj/argo-cd/v3)"
IMAGES=(
  "local/pause:1" "local/debian:bookworm" "local/distroless-cc:nonroot" "aside:$ASIDE_VERSION"
  "local/postgres:15-bookworm" "local/redis:7.0-bookworm" "local/prometheus:$PROM_VERSION"
  "local/coredns:${COREDNS_VERSION#v}" "local/local-path-provisioner:$LOCALPATH_VERSION" "local/argocd:$ARGOCD_VERSION"
)
if ((LIST)); then
  printf '%s\n' "${IMAGES[@]}"
  for t in "${TAGS[@]}"; do echo "aside:$t"; done
  exit 0
fi

[[ -x "$DOCKER" ]] || apt_install docker.io
command -v debootstrap >/dev/null || apt_install debootstrap
command -v gcc >/dev/null || apt_install gcc libc6-dev
"$DOCKER" info >/dev/null 2>&1 || die "no Docker engine answers at ${DOCKER_HOST:-the default socket} (scripts/node.sh up starts one)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/aside-images.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
declare -A HOW

has_label() { # IMAGE KEY: the image exists and carries aside.build-key=KEY
  [[ "$("$DOCKER" image inspect -f '{{ index .Config.Labels "aside.build-key" }}' "$1" 2>/dev/null)" == "$2" ]]
}
# build IMAGE DIR [docker build args...]: classic builder (every stage here is wanted), host network for apt.
build() {
  local image="$1" dir="$2" before after
  shift 2
  before="$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
  DOCKER_BUILDKIT=0 "$DOCKER" build -q --network host -t "$image" "$@" "$dir" >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log" >&2; die "docker build of $image failed"; }
  after="$("$DOCKER" image inspect -f '{{.Id}}' "$image")"
  [[ "$before" == "$after" ]] && HOW[$image]=cached || HOW[$image]=built
}

# 1. The pod sandbox image.
key="$(sha256sum "$ROOT/images/pause/pause.c" | cut -c1-16)"
if has_label local/pause:1 "$key"; then
  HOW[local/pause:1]=cached
else
  mkdir -p "$WORK/pause"
  gcc -static -Os -s -o "$WORK/pause/pause" "$ROOT/images/pause/pause.c"
  tar -C "$WORK/pause" -c pause | "$DOCKER" import -c 'ENTRYPOINT ["/pause"]' -c "LABEL aside.build-key=$key" - local/pause:1 >/dev/null
  HOW[local/pause:1]=built
fi

# 2. The Debian base: debootstrap from the mirror the machine already uses, with its sources (updates and
#    security included, so packages match the host's versions).
SOURCES=/etc/apt/sources.list.d/debian.sources
[[ -f "$SOURCES" ]] || die "$SOURCES not found: the base image takes its Debian mirror from it"
MIRROR="$(awk '$1 == "URIs:" && $2 !~ /security/ { print $2; exit }' "$SOURCES")"
key="$( (echo "$MIRROR"; cat "$SOURCES"; sed -n '/^# 2\./,/^# 3\./p' "$0") | sha256sum | cut -c1-16)"
if has_label local/debian:bookworm "$key"; then
  HOW[local/debian:bookworm]=cached
else
  log "debootstrap bookworm from $MIRROR"
  debootstrap --variant=minbase bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  cp "$SOURCES" "$WORK/rootfs/etc/apt/sources.list.d/debian.sources"
  rm -f "$WORK/rootfs/etc/apt/sources.list"
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  tar -C "$WORK/rootfs" -c . | "$DOCKER" import -c "LABEL aside.build-key=$key" - local/debian:bookworm >/dev/null
  rm -rf "$WORK/rootfs"
  HOW[local/debian:bookworm]=built
fi

# 3. Images from Dockerfiles under images/ (Debian packages) and from the Go-built binaries.
build local/distroless-cc:nonroot "$ROOT/images/distroless-cc"
build local/postgres:15-bookworm "$ROOT/images/postgres"
build local/redis:7.0-bookworm "$ROOT/images/redis"
TOOLS_BIN="${E2E_TOOLS_BIN:-$("$ROOT/scripts/cluster-tools.sh" --print-bin)}"
for spec in "prometheus local/prometheus:$PROM_VERSION" "coredns local/coredns:${COREDNS_VERSION#v}" \
  "local-path local/local-path-provisioner:$LOCALPATH_VERSION"; do
  read -r dir image <<<"$spec"
  mkdir -p "$WORK/ctx-$dir"
  cp "$ROOT/images/$dir/Dockerfile" "$WORK/ctx-$dir/"
  cp "$TOOLS_BIN/$(basename "${image%%:*}")" "$WORK/ctx-$dir/"
  build "$image" "$WORK/ctx-$dir"
done

# Argo CD: upstream's image recipe (images/argocd) around the binaries built above and three scripts from
# the pinned module (the repo-server runs git-verify-wrapper.sh and gpg-wrapper.sh; entrypoint.sh as upstream).
ARGO_DIR="$(argocd_module_dir)"
mkdir -p "$WORK/ctx-argocd"
cp "$ROOT/images/argocd/Dockerfile" "$ARGO_DIR/entrypoint.sh" "$ARGO_DIR/hack/gpg-wrapper.sh" \
  "$ARGO_DIR/hack/git-verify-wrapper.sh" "$WORK/ctx-argocd/"
cp "$TOOLS_BIN/argocd" "$TOOLS_BIN/helm" "$TOOLS_BIN/kustomize" "$WORK/ctx-argocd/"
chmod u+w,a+rx "$WORK/ctx-argocd/"*.sh # module cache files are read-only; the image needs them executable
build "local/argocd:$ARGOCD_VERSION" "$WORK/ctx-argocd"

# 4. aside, from the project's Dockerfile: its runtime stage on the stand-in base, the binary built on the host.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [[ ! -x "$TARGET_DIR/dist/aside" ]]; then
  log "cargo build --profile dist --bin aside"
  (cd "$ROOT" && cargo build --profile dist --bin aside >&2)
fi
# The context is a copy of what the Dockerfile may COPY (.dockerignore would keep target/ out anyway).
mkdir -p "$WORK/ctx-aside/prebuilt"
cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$WORK/ctx-aside/"
cp "$TARGET_DIR/dist/aside" "$WORK/ctx-aside/prebuilt/aside"
image="aside:$ASIDE_VERSION"
before="$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
tags=(-t "$image")
for t in "${TAGS[@]}"; do tags+=(-t "aside:$t"); done
DOCKER_BUILDKIT=1 "$DOCKER" build -q "${tags[@]}" --build-arg BIN_STAGE=prebuilt \
  --build-arg RUNTIME_BASE=local/distroless-cc:nonroot --build-arg VERSION="$ASIDE_VERSION" \
  --build-arg VCS_REF="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(git -C "$ROOT" log -1 --format=%cI HEAD 2>/dev/null || echo unknown)" "$WORK/ctx-aside" >"$WORK/build.log" 2>&1 \
  || { cat "$WORK/build.log" >&2; die "docker build of $image (the project's Dockerfile) failed"; }
[[ "$before" == "$("$DOCKER" image inspect -f '{{.Id}}' "$image")" ]] && HOW[$image]=cached || HOW[$image]=built
# Its revision label checked against HEAD, and its SBOMs (binary, image) written to target/sbom/ and checked.
DOCKER="$DOCKER" "$ROOT/scripts/supply-chain.sh" --sbom "$image" >&2

for image in "${IMAGES[@]}"; do
  printf '%-45s %7.1f MB  %s\n' "$image" "$(echo "$("$DOCKER" image inspect -f '{{.Size}}' "$image") / 1000000" | bc -l)" "${HOW[$image]}"
done
for t in "${TAGS[@]}"; do echo "aside:$t (same image)"; done
log "images ready in $((SECONDS - START)) s"
