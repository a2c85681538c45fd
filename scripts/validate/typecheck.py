#!/usr/bin/env python3
"""Type-check the Grafana dashboard and the Argo CD objects with TypeScript, and validate the AppProject at run time.

  typecheck.py NODE_DIR

NODE_DIR holds node_modules with typescript, @grafana/schema and @kubernetes-models/argo-cd (tools.sh installs
them). The JSON/YAML is embedded as object literals with `satisfies`, so `tsc --noEmit --strict` rejects
misspelled or unknown keys (excess-property checks) and wrong value types. Both Argo CD objects are also run
through @kubernetes-models/argo-cd's own JSON-schema validator. This is a second opinion: the strict check of
both against the CRD schemas of the pinned Argo CD release is `checks.py argocd`.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    node_dir = sys.argv[1]
    # Inside NODE_DIR so that imports resolve to its node_modules; one directory per run, so concurrent runs
    # (scripts/validate/planted.sh -j) never overwrite each other's files.
    work = tempfile.mkdtemp(prefix="check-", dir=node_dir)
    try:
        return run(node_dir, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(node_dir, work):
    dash = json.load(open(os.path.join(ROOT, "ops", "grafana", "dashboards", "aside.json")))
    app = yaml.safe_load(open(os.path.join(ROOT, "argocd", "application.yaml")))
    proj = yaml.safe_load(open(os.path.join(ROOT, "argocd", "appproject.yaml")))
    files = {
        "dashboard.ts": "import type { Dashboard } from '@grafana/schema';\n"
                        f"export const dashboard = {json.dumps(dash, indent=2)} satisfies Dashboard;\n",
        "argocd.ts": "import type { IApplication } from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1/Application';\n"
                     "import type { IAppProject } from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1/AppProject';\n"
                     f"export const application = {json.dumps(app, indent=2)} satisfies IApplication;\n"
                     f"export const project = {json.dumps(proj, indent=2)} satisfies IAppProject;\n",
        "tsconfig.json": json.dumps({"compilerOptions": {
            "strict": True, "noEmit": True, "target": "ES2022", "module": "NodeNext", "moduleResolution": "NodeNext",
            "skipLibCheck": True, "exactOptionalPropertyTypes": False, "types": []},
            "files": ["dashboard.ts", "argocd.ts"]}),
        "validate.mjs": "import { AppProject } from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1/AppProject';\n"
                        "import { Application } from '@kubernetes-models/argo-cd/argoproj.io/v1alpha1/Application';\n"
                        "import { readFileSync } from 'node:fs';\n"
                        "const objs = JSON.parse(readFileSync(process.argv[2], 'utf8'));\n"
                        "let bad = 0;\n"
                        "for (const [Cls, o] of [[AppProject, objs.project], [Application, objs.application]]) {\n"
                        "  try { new Cls(o).validate(); } catch (e) { bad++; console.log(`FINDING typecheck: ${o.kind}/${o.metadata.name}: ${e.message}`); }\n"
                        "}\n"
                        "process.exit(bad ? 1 : 0);\n",
        "objs.json": json.dumps({"project": proj, "application": app}),
    }
    for name, text in files.items():
        with open(os.path.join(work, name), "w") as fh:
            fh.write(text)
    findings = 0
    tsc = subprocess.run([os.path.join(node_dir, "node_modules", ".bin", "tsc"), "-p", work], capture_output=True, text=True)
    for line in (tsc.stdout + tsc.stderr).splitlines():
        if line.strip():
            print(f"FINDING typecheck: {line}")
            findings += line.count("error TS")
    if tsc.returncode != 0 and findings == 0:
        findings = 1
    rt = subprocess.run(["node", os.path.join(work, "validate.mjs"), os.path.join(work, "objs.json")], capture_output=True, text=True, cwd=work)
    out = (rt.stdout + rt.stderr).strip()
    if rt.returncode != 0:
        print(out or "FINDING typecheck: AppProject/Application runtime validation failed")
        findings += max(1, out.count("FINDING"))
    print(f"typecheck: 3 objects checked (dashboard vs @grafana/schema Dashboard, Application + AppProject vs "
          f"@kubernetes-models/argo-cd), {findings} findings")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
