#!/usr/bin/env python3
"""Summarise a scripts/drill/load.py run for scripts/e2e-node.sh (standard library only).

  loadsum.py FILE [--from EPOCH] [--to EPOCH]

Prints one line of key=value pairs for the requests that started inside the window (default: all):
total, failed (not 2xx, or no answer), 5xx, conn (no HTTP answer), failed_kinds (what the failures
were), put_ok (acknowledged writes), first_fail/last_fail (seconds after --from), hit/miss/bypass.
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--from", dest="t0", type=float, default=0.0)
    ap.add_argument("--to", dest="t1", type=float, default=float("inf"))
    a = ap.parse_args()
    reqs = [r for r in json.load(open(a.file))["reqs"] if a.t0 <= r[3] < a.t1]
    # [kind, target, id, start, end, status, x-cache, content-type, connection, seen, error, ...]
    bad = [r for r in reqs if r[5] < 200 or r[5] > 299 or r[10] is not None]
    kinds = {}
    for r in bad:
        k = r[10] or str(r[5])
        kinds[k] = kinds.get(k, 0) + 1
    base = a.t0 if a.t0 else min((r[3] for r in reqs), default=0.0)
    out = {
        "total": len(reqs),
        "failed": len(bad),
        "5xx": sum(1 for r in reqs if 500 <= r[5] <= 599),
        "conn": sum(1 for r in reqs if r[10] is not None),
        "failed_kinds": ",".join(f"{k}:{v}" for k, v in sorted(kinds.items())) or "-",
        "put_ok": sum(1 for r in reqs if r[0] == "put" and 200 <= r[5] <= 299 and r[10] is None),
        "first_fail": f"{min(r[3] for r in bad) - base:.2f}" if bad else "-",
        "last_fail": f"{max(r[3] for r in bad) - base:.2f}" if bad else "-",
        "hit": sum(1 for r in reqs if r[6] == "HIT"),
        "miss": sum(1 for r in reqs if r[6] == "MISS"),
        "bypass": sum(1 for r in reqs if r[6] == "BYPASS"),
    }
    print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
