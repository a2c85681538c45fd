#!/usr/bin/env python3
"""The aside SBOMs (CycloneDX 1.5 JSON), written and checked by scripts/supply-chain.sh --sbom.

  bin    cargo-cyclonedx's SBOM of the aside binary, cut down to the crates linked into it (its raw output
         follows `cargo metadata`, which also lists optional crates no feature enables and proc macros), with
         the commit, the dist binary's hash and the cut recorded.
  image  the image: the binary's SBOM + the Debian packages of its base (the dpkg status entries the base
         ships per package, as distroless does) + its OS, tied to the image id and labels.
  check  both files: CycloneDX JSON with components; aside at Cargo.toml's version and one commit; the
         binary's crates exactly Cargo.lock's versions; the image's binary is the one the binary SBOM hashes.
Standard library only: it runs with the system python3.
"""
import argparse
import hashlib
import json
import os
import re
import sys
import uuid
from datetime import datetime, timezone
from urllib.parse import quote

REV = "aside:vcs-revision"
DIRTY = "aside:vcs-dirty"
CARGO_REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def fail(msg):
    sys.exit(f"FINDING sbom: {msg}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prop(component, name):
    return next((p["value"] for p in component.get("properties", []) if p["name"] == name), None)


def write(path, bom):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(bom, f, indent=1, sort_keys=False)
        f.write("\n")


def bin_sbom(a):
    bom = json.load(open(a.raw))
    linked = set(open(a.linked).read().split())
    keep = [c for c in bom["components"] if f"{c['name']}@{c['version']}" in linked]
    missing = linked - {f"{c['name']}@{c['version']}" for c in keep} - {"aside@" + bom["metadata"]["component"]["version"]}
    if missing:
        fail(f"cargo tree lists crates cargo-cyclonedx did not: {sorted(missing)}")
    refs = {c["bom-ref"] for c in keep}
    app = bom["metadata"]["component"]
    # The raw refs and purl carry the temp dir cargo-cyclonedx ran in; name the crate as published instead.
    old_ref, app["bom-ref"] = app["bom-ref"], f"pkg:cargo/aside@{app['version']}"
    app["purl"] = f"pkg:cargo/aside@{app['version']}"
    refs.add(app["bom-ref"])
    app["hashes"] = [{"alg": "SHA-256", "content": sha256(a.binary)}]
    app["properties"] = [{"name": REV, "value": a.revision}, {"name": DIRTY, "value": a.dirty},
                         {"name": "aside:cargo-profile", "value": "dist"}]
    deps = []
    for d in bom.get("dependencies", []):
        ref = app["bom-ref"] if d["ref"] == old_ref else d["ref"]
        if ref in refs:
            deps.append({"ref": ref, "dependsOn": [x for x in d.get("dependsOn", []) if x in refs]})
    bom["components"], bom["dependencies"] = keep, deps
    bom["metadata"].setdefault("properties", []).append(
        {"name": "aside:components", "value": "crates linked into the binary: cargo tree -e normal,no-proc-macro "
                                              "for this target (no build scripts, proc macros or dev-dependencies)"})
    write(a.out, bom)
    print(f"sbom: {a.out}: aside {app['version']} at {a.revision[:12]}, {len(keep)} crates")


def dpkg_status(path):
    fields, key = {}, None
    for line in open(path, encoding="utf-8", errors="replace"):
        if line[:1] in (" ", "\t") and key:
            continue  # a continuation line (Description's long text, Conffiles): not needed here
        m = re.match(r"([A-Za-z0-9-]+):\s*(.*)", line)
        if m:
            key, fields[m.group(1)] = m.group(1), m.group(2).strip()
    return fields


def os_release(path):
    out = {}
    for line in open(path):
        if "=" in line:
            k, v = line.strip().split("=", 1)
            out[k] = v.strip('"')
    return out


def image_sbom(a):
    b = json.load(open(a.bin_sbom))
    inspect = json.load(open(a.inspect))
    labels = inspect["Config"].get("Labels") or {}
    osr = os_release(os.path.join(a.rootfs, "os-release"))
    distro = f"{osr.get('ID', 'debian')}-{osr.get('VERSION_ID', '')}"
    app = b["metadata"]["component"]
    in_image = sha256(os.path.join(a.rootfs, "aside"))
    debs = []
    status_dir = os.path.join(a.rootfs, "status.d")
    for name in sorted(os.listdir(status_dir)):
        f = dpkg_status(os.path.join(status_dir, name))
        if "Package" not in f or "Version" not in f:
            fail(f"status.d/{name} has no Package/Version")
        purl = (f"pkg:deb/{osr.get('ID', 'debian')}/{f['Package']}@{quote(f['Version'], safe='')}"
                f"?arch={f.get('Architecture', '')}&distro={distro}")
        c = {"type": "library", "bom-ref": purl, "name": f["Package"], "version": f["Version"], "purl": purl,
             "properties": [{"name": "aside:dpkg-status", "value": f"/var/lib/dpkg/status.d/{name}"}]}
        if f.get("Source"):
            c["properties"].append({"name": "aside:deb-source", "value": f["Source"]})
        debs.append(c)
    if not debs:
        fail("the image has no dpkg status entries")
    os_ref = f"os:{distro}"
    image_ref = f"image:{inspect['Id']}"
    binary = dict(app, hashes=[{"alg": "SHA-256", "content": in_image}])
    binary["properties"] = app.get("properties", []) + [{"name": "aside:path", "value": "/usr/local/bin/aside"}]
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": [{"name": "scripts/supply-chain.sh"}] + b["metadata"].get("tools", []),
            "component": {
                "type": "container", "bom-ref": image_ref, "name": "aside", "version": app["version"],
                "hashes": [{"alg": "SHA-256", "content": inspect["Id"].split(":", 1)[-1]}],
                "properties": [{"name": "aside:image", "value": a.image}, {"name": "aside:image-id", "value": inspect["Id"]}]
                + [{"name": f"label:{k}", "value": v} for k, v in sorted(labels.items())]
                + [{"name": REV, "value": prop(app, REV)}],
            },
        },
        "components": [binary] + b["components"] + debs
        + [{"type": "operating-system", "bom-ref": os_ref, "name": osr.get("ID", "debian"),
            "version": osr.get("VERSION_ID", ""), "description": osr.get("PRETTY_NAME", "")}],
        "dependencies": [{"ref": image_ref, "dependsOn": [app["bom-ref"], os_ref] + [d["bom-ref"] for d in debs]}]
        + b["dependencies"],
    }
    write(a.out, bom)
    print(f"sbom: {a.out}: image {inspect['Id'][:19]}, {len(bom['components'])} components "
          f"(aside + {len(b['components'])} crates + {len(debs)} Debian packages + {distro})")


def check(a):
    want_version = a.version
    lock = {}
    for m in re.finditer(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"\n(source = "([^"]+)")?', open(a.lock).read()):
        lock.setdefault(m.group(1), set()).add((m.group(2), m.group(4)))
    boms = {}
    for name in ("aside-bin.cdx.json", "aside-image.cdx.json"):
        path = os.path.join(a.dir, name)
        try:
            bom = json.load(open(path))
        except (OSError, ValueError) as e:
            fail(f"{path}: not readable JSON: {e}")
        if bom.get("bomFormat") != "CycloneDX" or not bom.get("specVersion"):
            fail(f"{path}: not a CycloneDX document")
        if not bom.get("components"):
            fail(f"{path}: no components")
        boms[name] = bom
    b, i = boms["aside-bin.cdx.json"], boms["aside-image.cdx.json"]
    app = b["metadata"]["component"]
    if app.get("name") != "aside" or app.get("version") != want_version:
        fail(f"aside-bin: component {app.get('name')} {app.get('version')}, want aside {want_version} (Cargo.toml)")
    rev = prop(app, REV)
    if not rev or not re.fullmatch(r"[0-9a-f]{40}", rev):
        fail(f"aside-bin: no commit ({REV} is {rev!r})")
    for c in b["components"]:
        versions = lock.get(c["name"], set())
        if not any(v == c["version"] and s == CARGO_REGISTRY for v, s in versions):
            fail(f"aside-bin: {c['name']} {c['version']} is not a crates.io package of Cargo.lock")
        if not c.get("purl", "").startswith(f"pkg:cargo/{c['name']}@{c['version']}"):
            fail(f"aside-bin: {c['name']} {c['version']} has purl {c.get('purl')!r}")
    img = i["metadata"]["component"]
    if img.get("version") != want_version or prop(img, REV) != rev:
        fail(f"aside-image: version {img.get('version')} at {prop(img, REV)}, the binary SBOM says {want_version} at {rev}")
    if prop(img, "label:org.opencontainers.image.revision") != rev:
        fail(f"aside-image: the image's revision label is {prop(img, 'label:org.opencontainers.image.revision')!r}, "
             f"the binary SBOM's commit {rev}")
    binary = next((c for c in i["components"] if c.get("bom-ref") == app["bom-ref"]), None)
    if binary is None:
        fail("aside-image: no aside component")
    if binary["hashes"] != app["hashes"]:
        fail(f"aside-image: the image's /usr/local/bin/aside ({binary['hashes'][0]['content'][:16]}) is not the binary "
             f"the binary SBOM describes ({app['hashes'][0]['content'][:16]})")
    debs = [c for c in i["components"] if c.get("purl", "").startswith("pkg:deb/")]
    if not any(c["name"] == "libc6" for c in debs):
        fail("aside-image: libc6 is not among the Debian packages")
    crates = {c["bom-ref"] for c in b["components"]}
    if not crates <= {c["bom-ref"] for c in i["components"]}:
        fail("aside-image: some of the binary's crates are missing")
    if a.inspect:
        inspect = json.load(open(a.inspect))
        if prop(img, "aside:image-id") != inspect["Id"]:
            fail(f"aside-image: describes image {prop(img, 'aside:image-id')}, the image is {inspect['Id']}")
    if a.head and a.head != rev:
        print(f"note: the SBOMs are of {rev[:12]}, HEAD is {a.head[:12]} (scripts/images.sh writes them anew)")
    print(f"sbom check: aside {want_version} at {rev[:12]}: aside-bin {len(b['components'])} crates; aside-image "
          f"{len(i['components'])} components ({len(debs)} Debian packages), binary sha256 {app['hashes'][0]['content'][:16]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("bin")
    s.add_argument("--in", dest="raw", required=True)
    s.add_argument("--linked", required=True, help="name@version per line: the crates linked into the binary")
    s.add_argument("--out", required=True)
    s.add_argument("--binary", required=True)
    s.add_argument("--revision", required=True)
    s.add_argument("--dirty", required=True)
    s = sub.add_parser("image")
    for opt in ("--bin-sbom", "--rootfs", "--inspect", "--image", "--out"):
        s.add_argument(opt, required=True)
    s = sub.add_parser("check")
    for opt in ("--dir", "--version", "--lock"):
        s.add_argument(opt, required=True)
    s.add_argument("--inspect")
    s.add_argument("--head")
    a = p.parse_args()
    {"bin": bin_sbom, "image": image_sbom, "check": check}[a.cmd](a)


if __name__ == "__main__":
    main()
