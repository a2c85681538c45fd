#!/usr/bin/env python3
"""The SBOMs against the CycloneDX 1.5 JSON schema, strictly (no property the schema does not define;
formats such as date-time checked), with the schema and its SPDX/JSF references as cyclonedx-python-lib
bundles them: no network. Run by scripts/supply-chain.sh with the tools venv's python
(scripts/validate/requirements.txt pins the library).

Each run also shows the check can fail: a copy of the first file with one component's type made invalid
must be refused, or the run fails."""
import copy
import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator


def first_line(error):
    return str(error).strip().splitlines()[0] if str(error).strip() else repr(error)


def main(paths):
    if not paths:
        sys.exit("usage: schema.py SBOM.cdx.json...")
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    docs = []
    for path in paths:
        with open(path) as f:
            text = f.read()
        error = validator.validate_str(text)
        if error is not None:
            sys.exit(f"FINDING sbom-schema: {path} is not valid CycloneDX 1.5 JSON: {first_line(error)}")
        doc = json.loads(text)
        docs.append(doc)
        print(f"sbom-schema: {path}: CycloneDX {doc.get('specVersion')} strict, valid "
              f"({len(doc.get('components', []))} components)")
    planted = copy.deepcopy(docs[0])
    if not planted.get("components"):
        sys.exit(f"FINDING sbom-schema: {paths[0]} has no components to plant a defect in")
    planted["components"][0]["type"] = "not-a-component-type"
    if validator.validate_str(json.dumps(planted)) is None:
        sys.exit("FINDING sbom-schema: the validator accepted a component of type 'not-a-component-type'")
    print("sbom-schema: a planted invalid component type is refused")


if __name__ == "__main__":
    main(sys.argv[1:])
