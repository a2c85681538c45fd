#!/usr/bin/env python3
"""Traffic and Prometheus HTTP API checks for scripts/validate/realscrape.sh (a real aside, a real Prometheus).

  realscrape.py traffic APP_URL TOKEN [--bypass]       bounded CRUD traffic (HIT/MISS/BYPASS, 201/404/409...)
  realscrape.py ports APP_URL METRICS_URL                /metrics: 404 problem+json on the API port, served on the metrics port
  realscrape.py check PROM_URL [SCRAPE_URL]             target up (at SCRAPE_URL), every dashboard query + alert metric has data
  realscrape.py fire PROM_URL APP_URL TOKEN ALERT       5xx traffic (Postgres stopped) until ALERT fires in /api/v1/alerts

Only loopback addresses are used; every loop is bounded in count and time.
"""
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from checks import CONTRACT_METRICS, ROOT, promql_metrics  # noqa: E402

import yaml  # noqa: E402


def http(method, url, body=None, token=None, timeout=5):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        return 0, {}, str(e).encode()


def traffic(app, token, bypass=False):
    codes, cache = {}, {}
    run = f"{os.getpid()}-{int(time.time() * 1000)}"
    ids = []
    for i in range(15):
        st, _, body = http("POST", f"{app}/data", {"key": f"validate-{run}-{i}", "value": {"i": i, "bypass": bypass}}, token)
        codes[st] = codes.get(st, 0) + 1
        if st == 201:
            ids.append(json.loads(body)["id"])
    if ids:
        st, _, _ = http("POST", f"{app}/data", {"key": f"validate-{run}-0", "value": 1}, token)  # 409
        codes[st] = codes.get(st, 0) + 1
    for rid in ids:
        for _ in range(3):
            st, h, _ = http("GET", f"{app}/data/{rid}")
            codes[st] = codes.get(st, 0) + 1
            x = {k.lower(): v for k, v in h.items()}.get("x-cache", "none")
            cache[x] = cache.get(x, 0) + 1
    for _ in range(3):
        st, _, _ = http("GET", f"{app}/data?limit=5")
        codes[st] = codes.get(st, 0) + 1
    for rid in ids[:5]:
        st, _, _ = http("PUT", f"{app}/data/{rid}", {"value": {"updated": True}}, token)
        codes[st] = codes.get(st, 0) + 1
    for rid in ids[5:8]:
        st, _, _ = http("DELETE", f"{app}/data/{rid}", token=token)
        codes[st] = codes.get(st, 0) + 1
    for path in ("/data/999999999", "/no-such-route", "/health", "/ready"):
        st, _, _ = http("GET", f"{app}{path}")
        codes[st] = codes.get(st, 0) + 1
    print(f"traffic{' (Redis stopped)' if bypass else ''}: status codes {dict(sorted(codes.items()))}, X-Cache {cache}")
    if not ids:
        print("FINDING realscrape: no record could be created")
        return 1
    if bypass and "BYPASS" not in cache:
        print("FINDING realscrape: Redis stopped but no GET answered X-Cache: BYPASS")
        return 1
    return 0


def ports(app, metrics):
    """METRICS_BIND_ADDR as the manifests set it: /metrics only on its own listener (what the NetworkPolicy guards)."""
    findings = []
    st, h, body = http("GET", f"{app}/metrics")
    ctype = {k.lower(): v for k, v in h.items()}.get("content-type", "")
    if st != 404 or not ctype.startswith("application/problem+json"):
        findings.append(f"API port {app}/metrics answered {st} {ctype!r}, want 404 problem+json (metrics must not be on it)")
    st, h, body = http("GET", f"{metrics}/metrics")
    if st != 200 or b"aside_cache_lookups_total" not in body:
        findings.append(f"metrics port {metrics}/metrics answered {st} without aside_cache_lookups_total")
    st, _, _ = http("GET", f"{metrics}/data")
    if st == 200:
        findings.append(f"metrics port {metrics}/data answered 200: the API is served on the metrics port")
    for f in findings:
        print(f"FINDING realscrape: {f}")
    print(f"ports: /metrics 404 on the API port, 200 on the metrics port: {len(findings)} findings")
    return 1 if findings else 0


def prom_query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    st, _, body = http("GET", url, timeout=10)
    if st != 200:
        return None, f"HTTP {st}: {body[:200]!r}"
    res = json.loads(body)
    return res["data"]["result"], None


def dashboard_queries():
    dash = json.load(open(os.path.join(ROOT, "ops", "grafana", "dashboards", "aside.json")))
    for p in dash["panels"]:
        for t in p["targets"]:
            yield f"{p['title']} [{t['refId']}]", t["expr"].replace("$__rate_interval", "1m").replace("$__range", "1h")


def alert_exprs():
    rules = yaml.safe_load(open(os.path.join(ROOT, "ops", "prometheus", "alerts.yml")))
    for g in rules["groups"]:
        for r in g["rules"]:
            yield r["alert"], r["expr"]


def check(prom, scrape_url=None):
    findings = []
    deadline = time.time() + 60
    while True:  # wait (bounded) for enough scrapes that rate() has two samples
        pending = []
        st, _, body = http("GET", f"{prom}/api/v1/targets")
        targets = [t for t in json.loads(body)["data"]["activeTargets"] if t["labels"].get("job") == "aside"] if st == 200 else []
        if not targets or any(t["health"] != "up" for t in targets):
            pending.append(f"target job=aside not up: {[(t['scrapeUrl'], t['health'], t.get('lastError')) for t in targets]}")
        if scrape_url and [t["scrapeUrl"] for t in targets] != [scrape_url]:
            pending.append(f"job aside scrapes {[t['scrapeUrl'] for t in targets]}, want only the metrics port {scrape_url}")
        for name, expr in dashboard_queries():
            res, err = prom_query(prom, expr)
            if err or not res:
                pending.append(f"dashboard panel {name}: no data for {expr}" + (f" ({err})" if err else ""))
        metrics = set(CONTRACT_METRICS)
        for _, expr in list(alert_exprs()) + list(dashboard_queries()):
            metrics |= promql_metrics(expr)
        for m in sorted(metrics):
            res, err = prom_query(prom, f'count({{__name__="{m}", job="aside"}})')
            if err or not res:
                pending.append(f"metric {m} (used by an alert/dashboard or promised by the contract) is not in the scrape")
        if not pending or time.time() > deadline:
            findings = pending
            break
        time.sleep(2)
    routes, _ = prom_query(prom, 'count by (http_route) (http_server_request_duration_seconds_count{job="aside"})')
    route_names = sorted(r["metric"].get("http_route", "") for r in routes or [])
    for r in route_names:
        if re.search(r"/\d+(/|$)", r):
            findings.append(f"http_route {r!r} is a raw path, not a template (contract)")
    for f in findings:
        print(f"FINDING realscrape: {f}")
    n_dash = len(list(dashboard_queries()))
    print(f"check: target {scrape_url or ''} up, {n_dash} dashboard queries with data, {len(metrics)} metric names present, "
          f"routes {route_names}: {len(findings)} findings")
    return 1 if findings else 0


def fire(prom, app, token, alert):
    start, i, codes = time.time(), 0, {}
    while time.time() - start < 180:
        for _ in range(10):
            i += 1
            st, _, _ = http("GET", f"{app}/data?key=validate-missing-{os.getpid()}-{i}", timeout=5)
            codes[st] = codes.get(st, 0) + 1
        st, _, body = http("GET", f"{prom}/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"] if st == 200 else []
        states = {a["labels"]["alertname"]: a["state"] for a in alerts}
        if states.get(alert) == "firing":
            print(f"fire: {alert} firing after {time.time() - start:.0f}s of Postgres-down traffic "
                  f"(status codes {dict(sorted(codes.items()))}); all alerts now: {states}")
            return 0
        time.sleep(1)
    print(f"FINDING realscrape: {alert} did not fire within 180 s (alerts: {states}, status codes {codes})")
    return 1


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    cmd = argv[1]
    if cmd == "traffic":
        return traffic(argv[2], argv[3], bypass="--bypass" in argv)
    if cmd == "ports":
        return ports(argv[2], argv[3])
    if cmd == "check":
        return check(argv[2], argv[3] if len(argv) > 3 else None)
    if cmd == "fire":
        return fire(argv[2], argv[3], argv[4], argv[5])
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
