#!/usr/bin/env bash
# scripts/supply-chain.sh: the supply-chain gate. cargo deny on the dependency tree, as deny.toml says:
# licences from an explicit list, crates.io as the only source, bans (a second copy of a heavy crate, a
# second TLS stack, gRPC), and RustSec advisories when the advisory database can be had (a git repository on
# GitHub, which this machine kind cannot reach: docs/delivery.md, "Supply chain"). Then the SBOMs and the
# revision label of the aside image, when scripts/images.sh has built one.
#
# Usage: scripts/supply-chain.sh [--no-sbom] [--sbom IMAGE] [-h|--help]
#   (no args)     the cargo deny gate, then a check of the SBOMs in target/sbom/ (said and skipped when no
#                 image was built here yet: scripts/images.sh writes them)
#   --no-sbom     the cargo deny gate only (scripts/validate/planted.sh runs this in its copies)
#   --sbom IMAGE  no gate: write target/sbom/aside-bin.cdx.json (the binary's crates, cargo-cyclonedx) and
#                 target/sbom/aside-image.cdx.json (the image: that binary + its Debian packages) for IMAGE,
#                 then check both (their content, and the CycloneDX 1.5 schema strictly) and the image's revision
#                 label against HEAD (scripts/images.sh runs this)
# Env: ADVISORIES=auto|require|local|off (default auto: checked when the database can be fetched, or against a
#        copy already in deny.toml's db-path (default $CARGO_HOME/advisory-dbs); else skipped, and said. require:
#        fetched or fail (a runner that reaches GitHub). local: the copy only, never fetched (planted.sh).)
#      ASIDE_TOOLS_DIR (tool cache; default ${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools), CARGO_TARGET_DIR,
#      DOCKER (default /usr/bin/docker, for --sbom and the SBOM check).
# Tools, each built once from crates.io with `cargo install --locked` into the tool cache (never target/):
#   cargo-deny 0.20.2 (cold ~5 min on the 2-core machine), cargo-cyclonedx 0.5.9 (cold ~3 min).
# Exit status: 0 when the gate (and the SBOM check, when it ran) passed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS_DIR="${ASIDE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aside-tools}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SBOM_DIR="$TARGET_DIR/sbom"
DOCKER="${DOCKER:-/usr/bin/docker}"
ADVISORIES="${ADVISORIES:-auto}"
CARGO_DENY_VERSION=0.20.2
CARGO_CYCLONEDX_VERSION=0.5.9
MODE=all
IMAGE=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-sbom) MODE=gate ;;
    --sbom)
      [[ $# -ge 2 ]] || die "--sbom needs an image reference"
      MODE=sbom IMAGE="$2"
      shift
      ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[[ "$ADVISORIES" =~ ^(auto|require|local|off)$ ]] || die "ADVISORIES must be auto, require, local or off, got '$ADVISORIES'"
command -v cargo >/dev/null || die "no cargo: install Rust (rustup) first"
cd "$ROOT"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/aside-supply-chain.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# tool NAME VERSION: puts NAME (a cargo subcommand from crates.io) on PATH, building it into the tool cache the
# first time. Its build dir is in the cache too (not target/) and is removed once installed (~300 MB). A lock,
# because planted.sh's copies start this script side by side.
tool() {
  local name="$1" version="$2" root="$TOOLS_DIR/$1-$2"
  mkdir -p "$TOOLS_DIR"
  (
    flock 9
    if [[ ! -x "$root/bin/$name" ]]; then
      log "building $name $version into $root (once; minutes on 2 cores)"
      local start=$SECONDS
      CARGO_TARGET_DIR="$TOOLS_DIR/build/$name-$version" cargo install --quiet --locked "$name@$version" --root "$root" >&2
      rm -rf "$TOOLS_DIR/build/$name-$version"
      log "$name $version built in $((SECONDS - start)) s ($(du -sh "$root/bin/$name" | cut -f1))"
    fi
  ) 9>"$TOOLS_DIR/$name-$version.lock"
  PATH="$root/bin:$PATH"
}

# ---------------------------------------------------------------- the cargo deny gate
advisories() {
  # Where cargo deny keeps its copies: deny.toml's db-path, else its default.
  local dbs copy
  dbs="$(awk -F'"' '$1 ~ /^db-path *= *$/ { print $2; exit }' deny.toml)"
  dbs="${dbs:-${CARGO_HOME:-$HOME/.cargo}/advisory-dbs}"
  case "$ADVISORIES" in
    off)
      echo "advisories: off (ADVISORIES=off)"
      return 0
      ;;
    auto | require)
      if cargo deny --color never fetch db >"$WORK/fetch.log" 2>&1; then
        cargo deny --locked --offline --color never check --hide-inclusion-graph advisories
        return
      fi
      [[ "$ADVISORIES" == require ]] && { cat "$WORK/fetch.log" >&2; die "ADVISORIES=require but the advisory database could not be fetched"; }
      ;;
  esac
  # A copy fetched earlier (or carried in from a connected machine) is checked against, with its date.
  copy="$(find "$dbs" -mindepth 2 -maxdepth 2 -name .git -printf '%h\n' 2>/dev/null | head -n1)"
  if [[ -n "$copy" ]]; then
    log "advisories from the copy in $copy (last commit $(git -C "$copy" log -1 --format=%cs 2>/dev/null || echo unknown)), not fetched"
    cargo deny --locked --offline --color never check --hide-inclusion-graph advisories
    return
  fi
  echo "advisories: SKIPPED: the RustSec advisory database (git, on GitHub) cannot be fetched from here and no copy is in $dbs; on a runner that reaches GitHub: ADVISORIES=require scripts/supply-chain.sh"
}

gate() {
  tool cargo-deny "$CARGO_DENY_VERSION"
  log "cargo deny check licenses bans sources (deny.toml)"
  # --locked: the Cargo.lock as committed is what is judged; duplicates are warnings unless deny.toml says.
  cargo deny --locked --color never check --hide-inclusion-graph --show-stats licenses bans sources
  advisories
}

# ---------------------------------------------------------------- SBOMs
host_triple() { rustc -vV | awk '$1 == "host:" { print $2 }'; }

# sbom_bin: target/sbom/aside-bin.cdx.json, the crates linked into the aside binary (normal dependencies for the
# host target, no build-only or dev ones), with the commit and the dist binary's hash added.
sbom_bin() {
  tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
  # cargo-cyclonedx writes beside the manifest: it runs on a copy of what cargo metadata reads, so the
  # checkout gets no stray file.
  mkdir -p "$WORK/crate"
  cp Cargo.toml Cargo.lock "$WORK/crate/"
  cp -r src "$WORK/crate/src"
  cargo cyclonedx --manifest-path "$WORK/crate/Cargo.toml" --format json --spec-version 1.5 --describe binaries \
    --target "$(host_triple)" --no-build-deps -q >&2
  [[ -f "$WORK/crate/aside_bin.cdx.json" ]] || die "cargo cyclonedx wrote no aside_bin.cdx.json"
  # What is linked in, with the features cargo resolves (cargo-cyclonedx follows cargo metadata, which also
  # lists optional crates no feature enables, and counts proc macros as normal dependencies).
  cargo tree --locked -e normal,no-proc-macro --target "$(host_triple)" -p aside --prefix none --format '{p}' \
    | awk '{ sub(/^v/, "", $2); print $1 "@" $2 }' | sort -u >"$WORK/linked.txt"
  python3 scripts/supply-chain/sbom.py bin --in "$WORK/crate/aside_bin.cdx.json" --linked "$WORK/linked.txt" \
    --out "$SBOM_DIR/aside-bin.cdx.json" --binary "$TARGET_DIR/dist/aside" --revision "$REVISION" --dirty "$DIRTY"
}

# sbom_image: target/sbom/aside-image.cdx.json from what IMAGE holds (read with docker cp, no shell needed):
# its Debian packages' dpkg status (the base writes one per package, as distroless does), os-release, the binary.
sbom_image() {
  local cid
  cid="$("$DOCKER" create "$IMAGE")"
  mkdir -p "$WORK/rootfs"
  local ok=1
  for p in /var/lib/dpkg/status.d /etc/os-release /usr/local/bin/aside; do
    "$DOCKER" cp -L "$cid:$p" - 2>>"$WORK/cp.log" | tar -x -C "$WORK/rootfs" || ok=0
  done
  "$DOCKER" rm "$cid" >/dev/null
  ((ok)) || { cat "$WORK/cp.log" >&2; die "could not read the image's dpkg status, os-release or binary"; }
  "$DOCKER" image inspect -f '{{json .}}' "$IMAGE" >"$WORK/inspect.json"
  python3 scripts/supply-chain/sbom.py image --bin-sbom "$SBOM_DIR/aside-bin.cdx.json" --rootfs "$WORK/rootfs" \
    --inspect "$WORK/inspect.json" --image "$IMAGE" --out "$SBOM_DIR/aside-image.cdx.json"
}

# labels IMAGE: org.opencontainers.image.revision is HEAD and .created the commit's time (scripts/images.sh).
labels() {
  local rev created
  rev="$("$DOCKER" image inspect -f '{{ index .Config.Labels "org.opencontainers.image.revision" }}' "$1")"
  created="$("$DOCKER" image inspect -f '{{ index .Config.Labels "org.opencontainers.image.created" }}' "$1")"
  [[ "$rev" == "$REVISION" ]] || die "$1: label org.opencontainers.image.revision is '$rev', HEAD is $REVISION"
  [[ "$created" == "$(git log -1 --format=%cI HEAD)" ]] || die "$1: label org.opencontainers.image.created is '$created', HEAD's commit time is $(git log -1 --format=%cI HEAD)"
  echo "labels: $1 revision $rev (HEAD), created $created"
}

# sbom_check [IMAGE]: both SBOMs are CycloneDX JSON with components, name aside at Cargo.toml's version and
# one commit; the binary's crates are Cargo.lock's; the image SBOM names the image's own binary by hash.
sbom_check() {
  local args=(--dir "$SBOM_DIR" --version "$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)" --lock Cargo.lock
    --head "$REVISION")
  [[ -n "${1:-}" ]] && args+=(--inspect "$WORK/inspect.json")
  python3 scripts/supply-chain/sbom.py check "${args[@]}"
  # And the CycloneDX 1.5 schema, strictly (cyclonedx-python-lib, pinned in the validation tools' venv).
  # shellcheck source=scripts/validate/tools.sh
  source "$ROOT/scripts/validate/tools.sh"
  tools_python
  "$TOOLS_DIR/venv/bin/python" scripts/supply-chain/schema.py "$SBOM_DIR/aside-bin.cdx.json" "$SBOM_DIR/aside-image.cdx.json"
}

REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
DIRTY="$([[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] && echo true || echo false)"
case "$MODE" in
  gate) gate ;;
  sbom)
    [[ -x "$TARGET_DIR/dist/aside" ]] || die "no $TARGET_DIR/dist/aside: scripts/images.sh builds it"
    "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE: scripts/images.sh builds it"
    # A failed run leaves no SBOM behind that could pass for this image's.
    rm -f "$SBOM_DIR/aside-bin.cdx.json" "$SBOM_DIR/aside-image.cdx.json"
    mkdir -p "$SBOM_DIR"
    labels "$IMAGE"
    sbom_bin
    sbom_image
    sbom_check "$IMAGE"
    ;;
  all)
    gate
    if [[ -f "$SBOM_DIR/aside-image.cdx.json" ]]; then
      sbom_check
    else
      echo "sbom: SKIPPED: no $SBOM_DIR/aside-image.cdx.json yet (scripts/images.sh writes it when it builds the aside image)"
    fi
    ;;
esac
echo "supply-chain: passed"
