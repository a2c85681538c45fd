#!/usr/bin/env python3
"""Load generator + checker for scripts/drill.sh (standard library only).

  load.py run   --target URL [--target URL2] --duration S --out FILE [options]
  load.py check --drill NAME --data FILE --events FILE

`run` creates --records records (value {"seq": 0}), reads each once (so the cache is warm), then runs
reader and writer threads for --duration seconds against the targets (each request picks one at
random) and saves every request: kind, target, start/end time, status, X-Cache, Content-Type, the
`seq` it wrote or saw. Writers own disjoint records and PUT {"seq": n+1} only after n was
acknowledged, so per record the acknowledged seqs increase in commit order.

`check` reads the requests and the drill's event times (lines "NAME EPOCH_SECONDS" written by
drill.sh) and prints one "PASS …"/"FAIL …" line per check. Every drill also checks read-your-writes:
a read that started after a write's 2xx response must see that write's seq or a later one.
"""
import argparse
import bisect
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse

KIND_ID, KIND_KEY, KIND_LIST, KIND_MISSKEY, KIND_PUT = "id", "key", "list", "misskey", "put"


class Conn:
    """One keep-alive HTTP/1.1 connection per (thread, target); reconnects after errors."""

    def __init__(self, url, timeout):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.c = None

    def request(self, method, path, body=None, headers=None):
        if self.c is None:
            self.c = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.c.request(method, path, body=body, headers=headers or {})
            r = self.c.getresponse()
            data = r.read()
            return r.status, r.getheader("X-Cache"), r.getheader("Content-Type"), \
                r.getheader("Connection"), data, None
        except Exception as e:  # socket error / timeout / reset: a failed request
            try:
                self.c.close()
            except Exception:
                pass
            self.c = None
            return 0, None, None, None, b"", type(e).__name__


def cmd_run(a):
    token = {"Authorization": f"Bearer {a.token}"} if a.token else {}
    jh = {"Content-Type": "application/json", **token}
    targets = a.target
    run_id = f"{int(time.time())}{random.randint(0, 9999)}"
    setup = Conn(targets[0], 10)
    records = []  # (id, key)
    for i in range(a.records):
        key = f"drill:{run_id}:{i}"
        st, _, _, _, body, err = setup.request("POST", "/data", json.dumps({"key": key, "value": {"seq": 0}}), jh)
        if st != 201:
            sys.exit(f"setup: POST /data answered {st} {err or ''} {body[:200]!r}")
        records.append((json.loads(body)["id"], key))
    for t in targets:  # warm every replica's view of the cache
        c = Conn(t, 10)
        for rid, _ in records:
            c.request("GET", f"/data/{rid}")
    kinds = a.read_kinds.split(",")
    deadline = time.time() + a.duration
    out_reqs, out_probes, lock = [], [], threading.Lock()
    stop = threading.Event()

    def running():
        return not stop.is_set() and time.time() < deadline

    def stop_watcher():
        while running():
            if a.stop_file and os.path.exists(a.stop_file):
                stop.set()
            time.sleep(0.05)

    def reader():
        conns = [Conn(t, a.timeout) for t in targets]
        mine = []
        ids = [r[0] for r in records]
        while running():
            ti = random.randrange(len(targets))
            kind = random.choice(kinds)
            rid, key = random.choice(records)
            if kind == KIND_ID:
                path = f"/data/{rid}"
            elif kind == KIND_KEY:
                path = "/data?key=" + urllib.parse.quote(key)
            elif kind == KIND_MISSKEY:
                path = "/data?key=" + urllib.parse.quote(f"drill-miss:{random.getrandbits(64)}")
            else:
                path = "/data?limit=500&after=0"
            t0 = time.time()
            st, xc, ct, cc, body, err = conns[ti].request("GET", path)
            t1 = time.time()
            seen = None
            if st == 200 and kind != KIND_MISSKEY:
                try:
                    doc = json.loads(body)
                    if kind == KIND_ID:
                        seen = {rid: doc["value"]["seq"]}
                    elif kind == KIND_KEY:
                        seen = {rid: doc["items"][0]["value"]["seq"]} if doc["items"] else {rid: -1}
                    else:
                        got = {it["id"]: it["value"]["seq"] for it in doc["items"]}
                        seen = {i: got.get(i, -1) for i in ids}
                except Exception as e:
                    err = f"bad body: {type(e).__name__}"
            mine.append([kind, ti, rid, t0, t1, st, xc, ct, cc, seen, err])
        with lock:
            out_reqs.extend(mine)

    def writer(owned, pausable):
        conns = [Conn(t, a.timeout) for t in targets]
        seq = {rid: 0 for rid in owned}
        mine = []
        while running():
            if pausable and os.path.exists(a.pause_file):
                time.sleep(0.01)
                continue
            rid = random.choice(owned)
            ti = random.randrange(len(targets))
            n = seq[rid] + 1
            rq = f"drill-{run_id}-{rid}-{n}"  # joins the write to the replica's log lines
            t0 = time.time()
            st, _, ct, cc, _, err = conns[ti].request(
                "PUT", f"/data/{rid}", json.dumps({"value": {"seq": n}}), {**jh, "X-Request-ID": rq})
            t1 = time.time()
            seq[rid] = n  # even when it failed: a later seq is always larger
            mine.append([KIND_PUT, ti, rid, t0, t1, st, None, ct, cc, {rid: n}, err, rq])
            if a.write_interval:
                time.sleep(a.write_interval)
        with lock:
            out_reqs.extend(mine)

    def prober(url):
        u = urllib.parse.urlparse(url)
        mine = []
        while running():
            t0 = time.time()
            try:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
                c.request("GET", u.path or "/ready")
                st = c.getresponse().status
                c.close()
            except Exception:
                st = 0
            mine.append([url, t0, st])
            time.sleep(0.1)
        with lock:
            out_probes.extend(mine)

    threads = [threading.Thread(target=reader) for _ in range(a.readers)]
    ids = [r[0] for r in records]
    for w in range(a.writers):
        owned = ids[w::a.writers]
        if owned:
            pausable = bool(a.pause_file) and w < a.pausable_writers
            threads.append(threading.Thread(target=writer, args=(owned, pausable)))
    threads += [threading.Thread(target=prober, args=(u,)) for u in a.probe]
    threads.append(threading.Thread(target=stop_watcher))
    for t in threads:
        t.start()
    if a.started_file:
        open(a.started_file, "w").write(str(time.time()))
    for t in threads:
        t.join()
    json.dump({"targets": targets, "records": records, "reqs": out_reqs, "probes": out_probes},
              open(a.out, "w"))
    print(f"load: {len(out_reqs)} requests", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- check
class Checks:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, ok, name, detail):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else 0.0


def failed(r):
    return r[5] < 200 or r[5] > 299 or r[10] is not None


def deferred_writes(logs):
    """Request ids of writes whose replica logged that the cache did not take their invalidation."""
    ids = set()
    for path in logs:
        for ln in open(path, errors="replace"):
            if "invalidation deferred" in ln:
                try:
                    ids.add(json.loads(ln)["request_id"])
                except (ValueError, KeyError):
                    pass
    return ids


def consistency(c, data, deferred=frozenset()):
    """Read-your-writes: every read sees at least the newest seq acknowledged before it started.

    The contract's one exception: a write whose replica could not reach Redis (its invalidation is
    pending, logged as deferred) binds reads on that replica only; other replicas may serve the older
    entry until it is delivered. Such reads are counted and shown, not failed."""
    strict, own = {}, {}  # rid -> sorted [(t_end, seq)]; own: (rid, target) -> deferred writes
    for r in data["reqs"]:
        if r[0] == KIND_PUT and 200 <= r[5] <= 299 and r[10] is None:
            w = (r[4], next(iter(r[9].values())))
            if len(r) > 11 and r[11] in deferred:
                own.setdefault((r[2], r[1]), []).append(w)
            else:
                strict.setdefault(r[2], []).append(w)

    def prefix_max(ws):
        ws.sort()
        mx, out = 0, []
        for t, s in ws:  # seqs per record rise in commit order; a running max to be safe
            mx = max(mx, s)
            out.append((t, mx))
        return [t for t, _ in out], [m for _, m in out]

    strict = {k: prefix_max(v) for k, v in strict.items()}
    own = {k: prefix_max(v) for k, v in own.items()}

    def newest(table, key, t):
        if key not in table:
            return 0, 0
        ends, mx = table[key]
        k = bisect.bisect_left(ends, t)  # writes acknowledged strictly before the read
        return (mx[k - 1] if k else 0), k

    reads = pairs = stale = excused = 0
    example = None
    for r in data["reqs"]:
        if r[0] == KIND_PUT or r[9] is None:
            continue
        for rid_s, seen in r[9].items():
            rid = int(rid_s)
            need, k = newest(strict, rid, r[3])
            others = [newest(own, (rid, t), r[3]) for t in range(len(data["targets"]))]
            if k + sum(n for _, n in others) == 0:
                continue  # no write acknowledged before this read
            need = max(need, others[r[1]][0])  # deferred writes bind their own replica
            reads += 1
            pairs += k + sum(n for _, n in others)
            if seen < need:
                stale += 1
                if example is None:
                    example = (f"{r[0]} read of record {rid} via target {r[1]} started after seq {need} "
                               f"was acknowledged, saw seq {seen} (X-Cache {r[6]})")
            elif any(seen < m for m, _ in others):
                excused += 1
    c.check(stale == 0, "read-your-writes",
            f"{stale} stale of {reads} record reads with an earlier acknowledged write "
            f"({pairs} read/write pairs checked)" + (f"; first: {example}" if example else ""))
    n_def = sum(1 for r in data["reqs"] if r[0] == KIND_PUT and len(r) > 11 and r[11] in deferred)
    if n_def:
        print(f"INFO the contract's exception: {n_def} writes answered while their replica could not "
              f"reach Redis (invalidation pending); {excused} reads on other replicas saw the value "
              f"before one of them")
    return reads, pairs


def cmd_check(a):
    data = json.load(open(a.data))
    ev = {}
    for ln in open(a.events):
        if ln.strip():
            n, t = ln.split()
            ev[n] = float(t)
    reqs = data["reqs"]
    c = Checks()
    n = len(reqs)
    bad = [r for r in reqs if failed(r)]
    gets = [r for r in reqs if r[0] != KIND_PUT]

    def window(t0, t1):
        return [r for r in reqs if t0 <= r[3] < t1]

    def lat_ms(rs):
        return [(r[4] - r[3]) * 1000 for r in rs]

    def first_hit_after(t):
        hs = [r[3] for r in gets if r[3] >= t and r[6] == "HIT"]
        return (min(hs) - t) if hs else None

    if a.drill in ("rolling-restart", "race", "redis-outage", "reshard", "sentinel-failover"):
        kinds = {}
        for r in bad:
            k = f"{r[5]}" if r[10] is None else r[10]
            kinds[k] = kinds.get(k, 0) + 1
        c.check(not bad, "no failed requests", f"{len(bad)} of {n} failed {kinds if kinds else ''}".rstrip())

    if a.drill == "redis-outage":
        out = window(ev["redis_stop"], ev["redis_start"])
        l = lat_ms(out)
        c.check(out and pct(l, 99) <= 50, "p99 during the outage <= 50 ms",
                f"p99 {pct(l, 99):.1f} ms, max {max(l or [0]):.1f} ms over {len(out)} requests")
        byp = sum(1 for r in out if r[6] == "BYPASS")
        c.check(byp > 0, "outage was real (X-Cache: BYPASS seen)", f"{byp} BYPASS answers while Redis was down")
        h = first_hit_after(ev["redis_start"])
        c.check(h is not None and h <= 5, "X-Cache: HIT again within 5 s of Redis returning",
                f"first HIT {h:.2f} s after start" if h is not None else "no HIT after Redis returned")
        fr = window(ev["redis_pause"], ev["redis_resume"])
        l = lat_ms(fr)
        c.check(fr and max(l) < 1000, "frozen Redis: every request < 1 s",
                f"max {max(l or [0]):.1f} ms, p99 {pct(l, 99):.1f} ms over {len(fr)} requests")
        h = first_hit_after(ev["redis_resume"])
        c.check(h is not None and h <= 5, "X-Cache: HIT again within 5 s of Redis thawing",
                f"first HIT {h:.2f} s after resume" if h is not None else "no HIT after Redis thawed")

    if a.drill == "postgres-outage":
        pr = sorted(data["probes"], key=lambda p: p[1])
        puts = sum(1 for r in reqs if r[0] == KIND_PUT)
        print(f"INFO mix: {n} requests, {100 * puts / max(n, 1):.1f} % PUT")

        def only_2xx_or_503(out, what):
            wrong = [r for r in out if not (200 <= r[5] <= 299 or
                     (r[5] == 503 and (r[7] or "").startswith("application/problem+json")))]
            desc = {}
            for r in wrong:
                k = f"{r[5]} {r[7]}" if r[10] is None else r[10]
                desc[k] = desc.get(k, 0) + 1
            c.check(out and not wrong, f"{what}: only 2xx or 503 problem+json",
                    f"{len(wrong)} of {len(out)} otherwise {desc if desc else ''}".rstrip())
            n503 = sum(1 for r in out if r[5] == 503)
            c.check(n503 > 0, f"{what} was real (503 seen)", f"{n503} answers 503")

        def healed(t_back, t_next, what):
            """0 failed requests from the first /ready 200 after t_back until t_next (issue 19)."""
            r200 = [p[1] for p in pr if p[1] >= t_back and p[2] == 200]
            if not r200:
                c.check(False, f"after {what}: /ready 200 again", "never 200 again")
                return
            ready = r200[0]
            after = [r for r in reqs if ready <= r[3] and r[4] < t_next]  # untouched by the next fault
            bad_after = [r for r in after if failed(r)]
            kinds = {}
            for r in bad_after:
                k = f"{r[0]} {r[5]}" if r[10] is None else f"{r[0]} {r[10]}"
                kinds[k] = kinds.get(k, 0) + 1
            last_bad = max([r[3] for r in reqs if t_back <= r[3] < t_next and failed(r)], default=None)
            c.check(after and not bad_after, f"after {what}: 0 failed requests once /ready answers 200",
                    f"{len(bad_after)} of {len(after)} failed {kinds if kinds else ''}; /ready 200 "
                    f"{ready - t_back:.2f} s after it ended, last failure "
                    + (f"{last_bad - t_back:.2f} s after it ended" if last_bad else "none after it ended"))

        stop, start = ev["pg_stop"], ev["pg_start"]
        out = window(stop, start)
        only_2xx_or_503(out, "Postgres stopped")
        hits = sum(1 for r in out if 200 <= r[5] <= 299 and r[6] == "HIT")
        c.check(hits > 0, "cache hits still served while Postgres is down", f"{hits} HIT answers")
        l = lat_ms(reqs)
        c.check(max(l) <= 2000, "no request slower than 2 s", f"max {max(l):.0f} ms, p99 {pct(l, 99):.1f} ms")
        r503 = [p[1] for p in pr if stop <= p[1] < start and p[2] == 503]
        c.check(bool(r503) and r503[0] - stop <= 2, "/ready 503 within 2 s of Postgres stopping",
                f"first 503 {r503[0] - stop:.2f} s after stop" if r503 else "never 503")
        r200 = [p[1] for p in pr if p[1] >= start and p[2] == 200]
        c.check(bool(r200) and r200[0] - start <= 15, "/ready 200 within 15 s of Postgres returning",
                f"first 200 {r200[0] - start:.2f} s after start" if r200 else "never 200 again")
        healed(start, ev["cut_start"], "the restart")
        cut_start, cut_end = ev["cut_start"], ev["cut_end"]
        only_2xx_or_503(window(cut_start, cut_end), "the cut (connections terminated and refused)")
        healed(cut_end, ev["kill"], "the cut")
        # Reported only: a connection that died < 500 ms after its last use is found by the next statement
        # on it; a read then retries, a write is a 503 (its outcome unknown to sqlx).
        kill = ev["kill"]
        late = [r for r in reqs if r[3] >= kill]
        bad = [r for r in late if failed(r)]
        kinds = {}
        for r in bad:
            k = f"{r[0]} {r[5]}" if r[10] is None else f"{r[0]} {r[10]}"
            kinds[k] = kinds.get(k, 0) + 1
        nready = [p for p in pr if p[1] >= kill and p[2] != 200]
        print(f"INFO every backend terminated, Postgres up: {len(bad)} of {len(late)} later requests failed"
              f" {kinds if kinds else ''}; /ready not 200 {len(nready)} times after it")

    if a.drill == "rolling-restart":
        # Not a contract promise, so reported rather than checked: BYPASS while Redis is up means a
        # replica served (and deferred invalidations) before its cache connection was up.
        byp = [r for r in gets if r[6] == "BYPASS"]
        print(f"INFO X-Cache: BYPASS answers while Redis was up: {len(byp)}"
              + (f" (first {min(r[3] for r in byp) - min(ev.values()):.2f} s after the first event)" if byp else ""))

    if a.drill == "reshard":
        mid = [r for r in gets if ev["reshard_start"] <= r[3] < ev["reshard_end"]]
        hits = sum(1 for r in mid if r[6] == "HIT")
        byp = sum(1 for r in mid if r[6] == "BYPASS")
        c.check(hits > 0, "the cache served hits while slots moved",
                f"{hits} HIT, {byp} BYPASS of {len(mid)} reads during the "
                f"{ev['reshard_end'] - ev['reshard_start']:.1f} s reshard")
        h = first_hit_after(ev["reshard_end"])
        c.check(h is not None and h <= 5, "X-Cache: HIT within 5 s of the reshard's end",
                f"first HIT {h:.2f} s after" if h is not None else "no HIT after the reshard")

    if a.drill == "sentinel-failover":
        cut, lost_end, kill, promoted = ev["cut"], ev["lost_end"], ev["master_kill"], ev["promoted"]
        lost = [r for r in reqs if r[0] == KIND_PUT and not failed(r) and cut <= r[3] and r[4] < kill]
        c.check(len(lost) > 0, "writes acknowledged while no replica received them",
                f"{len(lost)} PUTs acknowledged between the cut ({lost_end - cut:.2f} s) and the master's death")
        # The hazard itself: reads after the promotion of a record whose newest acknowledged write is one
        # of those lost ones (the promoted replica still holds the entry and token from before it).
        last_lost = {}
        for r in lost:
            rid = r[2]
            last_lost[rid] = max(last_lost.get(rid, 0), next(iter(r[9].values())))
        later = {}
        for r in reqs:
            if r[0] == KIND_PUT and not failed(r) and r[4] >= kill and r[2] in last_lost:
                later[r[2]] = min(later.get(r[2], float("inf")), r[3])
        exposed = [r for r in gets if r[3] >= promoted and r[9] and r[2] in last_lost
                   and r[3] < later.get(r[2], float("inf")) and r[0] == KIND_ID]
        stale = sum(1 for r in exposed if r[9][str(r[2])] < last_lost[r[2]])  # JSON made the keys strings
        c.check(len(exposed) >= 100 and stale == 0, "no stale read of a write whose invalidation was lost",
                f"{stale} stale of {len(exposed)} reads after the promotion of {len(last_lost)} such records")
        h = first_hit_after(promoted)
        c.check(h is not None and h <= 5, "X-Cache: HIT again within 5 s of the promotion",
                f"first HIT {h:.2f} s after (the promotion came {promoted - kill:.2f} s after the kill)"
                if h is not None else "no HIT after the promotion")

    reads, pairs = consistency(c, data, deferred_writes(a.log))
    if a.drill == "race":
        c.check(pairs >= a.min_pairs, f"race exercised (>= {a.min_pairs} read/write pairs)",
                f"{reads} reads after acknowledged writes, {pairs} pairs, {n} requests")
        for ti, t in enumerate(data["targets"]):
            hits = sum(1 for r in gets if r[1] == ti and r[6] == "HIT")
            tot = sum(1 for r in gets if r[1] == ti)
            c.check(hits > 0, f"replica {ti} served cache hits", f"{hits} HIT of {tot} reads")
    print(f"{a.drill}: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--target", action="append", required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--records", type=int, default=20)
    r.add_argument("--readers", type=int, default=6)
    r.add_argument("--writers", type=int, default=1)
    r.add_argument("--write-interval", type=float, default=0.05)
    r.add_argument("--read-kinds", default="id,key,list")
    r.add_argument("--timeout", type=float, default=10)
    r.add_argument("--token")
    r.add_argument("--probe", action="append", default=[])
    r.add_argument("--started-file")
    r.add_argument("--stop-file", help="stop early once this file exists (--duration is the bound)")
    r.add_argument("--pause-file", help="the first --pausable-writers writers idle while this file exists")
    r.add_argument("--pausable-writers", type=int, default=0)
    k = sub.add_parser("check")
    k.add_argument("--drill", required=True)
    k.add_argument("--data", required=True)
    k.add_argument("--events", required=True)
    k.add_argument("--min-pairs", type=int, default=1000)
    k.add_argument("--log", action="append", default=[], help="a replica's JSON log (deferred writes)")
    a = ap.parse_args()
    if a.cmd == "run":
        cmd_run(a)
        return 0
    return cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
