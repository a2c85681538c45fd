#!/usr/bin/env bash
# scripts/promote.sh: promote the image one environment runs to the next, as one git commit
# (docs/delivery.md "Environments"). Argo CD following overlays/TO rolls it out once the commit is pushed.
#
# Usage: scripts/promote.sh [--no-commit] FROM TO      e.g. scripts/promote.sh dev prod
#        scripts/promote.sh [--no-commit] --tag TAG TO   e.g. scripts/promote.sh --tag 4893886a1b2c dev (CI, after a build)
#   Copies the aside image tag of overlays/FROM/kustomization.yaml (its `images:` newTag), or TAG, to
#   overlays/TO/kustomization.yaml and to image.tag in charts/aside/values-TO.yaml, then commits those two
#   files alone ("promote aside:<tag> from FROM to TO"); other changes in the work tree stay uncommitted.
#   --tag TAG     the tag itself instead of another environment's (a build of main entering dev)
#   --no-commit   only edit the two files
#   -h, --help    this text
# scripts/validate.sh (check environments) fails a prod tag that overlays/dev never had, in the work tree or
# in any commit of overlays/dev/kustomization.yaml; dev's own tag is set by CI after each build.
# Needs: git, sed.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
log() { echo "==> $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

COMMIT=1
TAG_ARG=""
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --no-commit) COMMIT=0 ;;
    --tag)
      [[ $# -ge 2 && "$2" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ && "$2" != latest ]] || die "--tag needs an image tag (not latest), got '${2:-}'"
      TAG_ARG="$2"
      shift
      ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
if [[ -n "$TAG_ARG" ]]; then
  [[ ${#ARGS[@]} -eq 1 ]] || { usage >&2; die "with --tag, give one environment: TO"; }
  FROM="" TO="${ARGS[0]}"
else
  [[ ${#ARGS[@]} -eq 2 ]] || { usage >&2; die "give two environments: FROM TO"; }
  FROM="${ARGS[0]}" TO="${ARGS[1]}"
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v git >/dev/null 2>&1 || die "git not found. Install it: apt-get install git  (or: brew install git)"

DST="overlays/$TO/kustomization.yaml"
VALUES="charts/aside/values-$TO.yaml"
for f in "$DST" "$VALUES"; do [[ -f "$f" ]] || die "$f: no such file"; done

# The one line each file holds the tag on; the overlays keep it in this flow form so a line edit is exact.
OVERLAY_LINE='^- {name: aside, newTag: "\([A-Za-z0-9_][A-Za-z0-9_.-]*\)"}$'
if [[ -n "$TAG_ARG" ]]; then
  tag="$TAG_ARG" FROM="a build"
else
  SRC="overlays/$FROM/kustomization.yaml"
  [[ -f "$SRC" ]] || die "$SRC: no such file"
  tag="$(sed -n "s/$OVERLAY_LINE/\1/p" "$SRC")"
  [[ -n "$tag" && "$(grep -c "$OVERLAY_LINE" "$SRC")" == 1 ]] || die "$SRC: no single line '- {name: aside, newTag: \"<tag>\"}'"
fi
[[ "$(grep -c "$OVERLAY_LINE" "$DST")" == 1 ]] || die "$DST: no single line '- {name: aside, newTag: \"<tag>\"}'"
[[ "$(grep -c '^  tag: ' "$VALUES")" == 1 ]] || die "$VALUES: no single 'image: tag:' line"
old="$(sed -n "s/$OVERLAY_LINE/\1/p" "$DST")"
if [[ "$old" == "$tag" ]]; then
  log "$TO already runs aside:$tag (as $FROM): nothing to promote"
  exit 0
fi

sed -i "s/$OVERLAY_LINE/- {name: aside, newTag: \"$tag\"}/" "$DST"
sed -i "s/^  tag: .*\$/  tag: \"$tag\"/" "$VALUES"
log "$TO: aside:$old -> aside:$tag (from $FROM) in $DST and $VALUES"
if ((COMMIT)); then
  git commit -q -m "promote aside:$tag from $FROM to $TO" -- "$DST" "$VALUES"
  log "committed $(git rev-parse --short HEAD): push it, and Argo CD following overlays/$TO rolls it out"
else
  log "not committed (--no-commit): git commit -m 'promote aside:$tag from $FROM to $TO' -- $DST $VALUES"
fi
