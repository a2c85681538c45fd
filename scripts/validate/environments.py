#!/usr/bin/env python3
"""The environments (docs/delivery.md "Environments"): overlays/<env> and charts/aside/values-<env>.yaml.

  environments.py [--helm HELM] [--kubectl KUBECTL]

An environment is a name with both overlays/<env>/kustomization.yaml and charts/aside/values-<env>.yaml.
  - parity: `kubectl kustomize overlays/<env>` equals the chart rendered with values-<env>.yaml the way
    render_k8s.py renders k8s/ (then kustomized), object for object, but for what kustomize cannot reproduce:
    the app.kubernetes.io/version label (the chart writes the image tag there) and the chart's checksum/* pod
    annotations (sha256 of templates that hold that label). So the two forms of an environment never drift.
  - rollout: every overlay whose ConfigMap aside differs from k8s/'s carries checksum/config = sha256 of that
    data (canonical JSON) on the Deployment's pod template: a ConfigMap change that leaves the pod template
    alone rolls no pod, and kustomize cannot recompute the chart's checksum.
  - promotion: overlays/prod's aside tag is one overlays/dev has had (its tag now, or in any commit of
    overlays/dev/kustomization.yaml): prod runs only what ran in dev first (scripts/promote.sh dev prod).
Prints `FINDING environments: ...` per problem and one summary line; exit 1 on any finding.
"""
import argparse
import copy
import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_k8s  # noqa: E402 - the one definition of how the chart becomes k8s/

ROOT = render_k8s.ROOT
# (from, to): to's image must be one from has had.
PROMOTIONS = [("dev", "prod")]


def kustomize(kubectl, path):
    res = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"FINDING environments: kubectl kustomize {os.path.relpath(path, ROOT)} failed:\n{res.stderr}")
    return {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(res.stdout) if o}


def chart_render(kubectl, helm, values):
    """The chart with one values file, through render_k8s.render and kustomize, as k8s/ is made."""
    with tempfile.TemporaryDirectory() as d:
        for fn, text in render_k8s.render(helm, ["-f", values]).items():
            with open(os.path.join(d, fn), "w") as fh:
                fh.write(text)
        return kustomize(kubectl, d)


def normalized(obj):
    """Without the version label and checksum annotations (see the module docstring)."""
    obj = copy.deepcopy(obj)

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "labels" and isinstance(value, dict):
                    value.pop("app.kubernetes.io/version", None)
                elif key == "annotations" and isinstance(value, dict):
                    for a in [a for a in value if a.startswith("checksum/")]:
                        del value[a]
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(obj)
    return obj


def config_hash(data):
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def aside_tag(text, where, findings):
    images = (yaml.safe_load(text) or {}).get("images") or []
    tags = [i.get("newTag") for i in images if i.get("name") == "aside"]
    if len(tags) != 1 or not tags[0]:
        findings.append(f"{where}: no images entry for aside with a newTag (the promotion handle)")
        return None
    return str(tags[0])


def tags_had(env, findings):
    """Every aside tag overlays/<env> has had: the work tree's and each committed version's."""
    rel = f"overlays/{env}/kustomization.yaml"
    tags = {aside_tag(open(os.path.join(ROOT, rel)).read(), rel, findings)}
    log = subprocess.run(["git", "-C", ROOT, "log", "--format=%H", "--", rel], capture_output=True, text=True, check=False)
    for commit in log.stdout.split() if log.returncode == 0 else []:
        show = subprocess.run(["git", "-C", ROOT, "show", f"{commit}:{rel}"], capture_output=True, text=True, check=False)
        if show.returncode == 0:
            tags.add(aside_tag(show.stdout, f"{rel} at {commit[:12]}", []))
    return tags - {None}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--helm", default=os.environ.get("HELM", "helm"))
    ap.add_argument("--kubectl", default="kubectl")
    args = ap.parse_args()
    findings, notes = [], []
    overlays = sorted(d for d in os.listdir(os.path.join(ROOT, "overlays"))
                      if os.path.isfile(os.path.join(ROOT, "overlays", d, "kustomization.yaml")))
    envs = [e for e in overlays if os.path.isfile(os.path.join(ROOT, "charts", "aside", f"values-{e}.yaml"))]
    base = kustomize(args.kubectl, os.path.join(ROOT, "k8s"))
    base_cm = (base.get(("ConfigMap", "aside")) or {}).get("data")
    renders = {o: kustomize(args.kubectl, os.path.join(ROOT, "overlays", o)) for o in overlays}

    for e in envs:
        have = renders[e]
        want = chart_render(args.kubectl, args.helm, os.path.join(ROOT, "charts", "aside", f"values-{e}.yaml"))
        for key in sorted(set(have) | set(want)):
            what = f"{key[0]}/{key[1]}"
            if key not in have:
                findings.append(f"overlays/{e}: no {what}, which the chart renders with values-{e}.yaml")
            elif key not in want:
                findings.append(f"overlays/{e}: {what} is not in the chart's render with values-{e}.yaml")
            else:
                a, b = normalized(have[key]), normalized(want[key])
                if a != b:
                    diff = list(difflib.unified_diff(
                        yaml.safe_dump(a, sort_keys=True).splitlines(), yaml.safe_dump(b, sort_keys=True).splitlines(),
                        f"overlays/{e}", f"charts/aside -f values-{e}.yaml", n=1, lineterm=""))
                    findings.append(f"overlays/{e}: {what} differs from the chart rendered with values-{e}.yaml:\n"
                                    + "\n".join(diff[:40]))
        notes.append(f"overlays/{e} == chart -f values-{e}.yaml ({len(have)} objects)")

    for o in overlays:
        objs = renders[o]
        cm = (objs.get(("ConfigMap", "aside")) or {}).get("data")
        dep = objs.get(("Deployment", "aside"))
        if cm is None or dep is None or cm == base_cm:
            continue
        got = ((dep["spec"]["template"]["metadata"].get("annotations")) or {}).get("checksum/config")
        want = config_hash(cm)
        if got != want:
            findings.append(f"overlays/{o}: ConfigMap aside differs from k8s/'s but Deployment/aside's pod template "
                            f"annotation checksum/config is {got!r}, want {want} (sha256 of the data as canonical "
                            "JSON): without it a config change rolls no pod")
        notes.append(f"overlays/{o} config rolls the pods")

    for src, dst in PROMOTIONS:
        if src not in overlays or dst not in overlays:
            findings.append(f"promotion {src} -> {dst}: overlays/{src} or overlays/{dst} missing")
            continue
        rel = f"overlays/{dst}/kustomization.yaml"
        tag = aside_tag(open(os.path.join(ROOT, rel)).read(), rel, findings)
        had = tags_had(src, findings)
        if tag is not None and tag not in had:
            findings.append(f"{rel}: aside:{tag} is not a tag overlays/{src} has had ({', '.join(sorted(had))}): "
                            f"promote with scripts/promote.sh {src} {dst}")
        else:
            notes.append(f"{dst} runs aside:{tag}, which {src} had ({len(had)} tag(s) in its history)")

    for f in findings:
        print(f"FINDING environments: {f}")
    print(f"environments: {'; '.join(notes)}; {len(findings)} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
