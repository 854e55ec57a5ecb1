"""Capacity model: how many replicas for a target load and p99, and what saturates first at
10x and 100x. Explained in docs/scaling.md.

Usage:
  python bench/capacity.py [--rate 2000] [--p99-ms 50] [--log-sample 1.0] [--service NAME]
      model only, from the newest measured figures in bench/results/ (a few seconds)
  python bench/capacity.py --measure [--postgres URL]
      first the short measurements this model needs and the anchors do not give (~4 minutes,
      127.0.0.1 only, everything stops by itself), then the model

Measured (``--measure``, written to capacity-measured.json): with Modelyard's committed code
(a ``git archive HEAD`` snapshot, so edits in progress in the working tree do not leak in) on
PostgreSQL: a tiny ONNX model's server CPU per request with the inference log off, at 10% and
at 100% (wrk, 32 connections); store transactions and rows per second the server causes, idle
and under load; bytes per inference-log row in PostgreSQL; the cost of one extra HTTP proxy
hop (a minimal uvicorn + httpx relay); job claim+complete and audit append rates on PostgreSQL
and SQLite; PostgreSQL's max_connections.

Modelled: an M/M/c queue per endpoint (Erlang C) with the measured per-core service rate, plus
a fixed latency floor (the measured 1-connection p50): replicas for a target rate and p99.
Store, proxy and connection limits are linear: demand (rate x per-request cost) over the
measured capacity. Results in bench/results/<run id>/capacity.json and capacity.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
BODY = '{"instances": [[' + ",".join(["0.1"] * 20) + "]]}"


# ============================================================================ queueing model
def erlang_c(c: int, a: float) -> float:
    """Probability that an arrival waits in M/M/c with offered load ``a = lambda/mu`` Erlangs
    (Erlang C), through the numerically stable Erlang B recursion."""
    if a >= c:
        return 1.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b / (1.0 - (a / c) * (1.0 - b))


def sojourn_tail(t: float, c: int, lam: float, mu: float) -> float:
    """P(W + S > t) in M/M/c (FCFS): no wait with probability 1 - C, else W ~ Exp(c mu - lam);
    S ~ Exp(mu) independent of W."""
    p_wait = erlang_c(c, lam / mu)
    theta = c * mu - lam
    tail_s = math.exp(-mu * t)
    if abs(theta - mu) < 1e-9 * mu:
        both = (1 + mu * t) * math.exp(-mu * t)
    else:  # hypoexponential: P(Exp(theta) + Exp(mu) > t)
        both = (mu * math.exp(-theta * t) - theta * math.exp(-mu * t)) / (mu - theta)
    return (1 - p_wait) * tail_s + p_wait * both


def sojourn_quantile(q: float, c: int, lam: float, mu: float) -> float:
    """The q-quantile of time in system (seconds), by bisection on the tail."""
    if lam >= c * mu:
        return math.inf
    lo, hi = 0.0, 1.0 / mu
    while sojourn_tail(hi, c, lam, mu) > 1 - q:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if sojourn_tail(mid, c, lam, mu) > 1 - q else (lo, mid)
    return hi


def size(lam: float, mu: float, floor_s: float, p99_s: float, max_util: float) -> dict[str, Any]:
    """The fewest servers c with utilisation <= max_util and floor + p99(W + S) <= p99_s."""
    c = max(1, math.ceil(lam / (mu * max_util)))
    while True:
        p99 = floor_s + sojourn_quantile(0.99, c, lam, mu)
        if p99 <= p99_s or c > 100_000:
            break
        c += 1
    a = lam / mu
    return {"replicas": c, "utilisation": round(a / c, 3),
            "p_wait": round(erlang_c(c, a), 4),
            "mean_wait_ms": round(1000 * erlang_c(c, a) / (c * mu - lam), 4),
            "p99_ms": round(1000 * (floor_s + sojourn_quantile(0.99, c, lam, mu)), 3),
            # Little's law: requests in the system = arrival rate x mean time in it
            "in_system_littles_law": round(lam * (floor_s + 1 / mu + erlang_c(c, a) /
                                                  (c * mu - lam)), 2)}


# ============================================================================ measured inputs
def newest(pattern: str) -> Path | None:
    found = sorted(RESULTS.glob(pattern))
    return found[-1] if found else None


def services_from_anchors() -> tuple[dict[str, dict[str, Any]], str | None]:
    """Per-replica service figures from the newest `make bench` run (one server process, one
    replica, wrk at 32 connections on the same 2 cores)."""
    runs = sorted(p for p in RESULTS.glob("*/results.jsonl")
                  if "modelyard" in p.read_text())
    if not runs:
        return {}, None
    out = {}
    for line in runs[-1].read_text().splitlines():
        row = json.loads(line)
        if not row["system"].startswith("modelyard-"):
            continue
        c32, c1 = row["c32"], row["c1"]
        name = f"{row['model']}-{row['system'].removeprefix('modelyard-')}"
        cpu_ms = c32["server_cpu_ms_per_ok_req"]
        out[name] = {"ok_rps_c32": c32["ok_rps"], "server_cores_c32": c32["server_cores"],
                     "cpu_ms_per_req": cpu_ms, "mu_per_core": round(1000 / cpu_ms, 1),
                     "p50_ms_c1": c1["p50_ms"], "p99_ms_c32": c32["p99_ms"]}
    return out, str(runs[-1].relative_to(ROOT))


# ============================================================================ measurements
def _wrk(url: str, conns: int, seconds: int, lua: Path) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                          "--latency", "-s", str(lua), url], capture_output=True, text=True,
                         timeout=seconds + 30).stdout
    unit = {"us": 1e-3, "ms": 1.0, "s": 1000.0}

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        return round(float(m.group(1)) * unit[m.group(2)], 3) if m else math.nan

    m = re.search(r"RESULT requests=(\d+) non2xx=(\d+)", out)
    total, bad = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return {"requests": total, "non2xx": bad, "rps": round(total / seconds, 1),
            "p50_ms": pct("50"), "p99_ms": pct("99")}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pg_counters(conn: Any, db: str) -> tuple[int, int]:
    row = conn.execute("SELECT xact_commit + xact_rollback, tup_inserted FROM "
                       "pg_stat_database WHERE datname = %s", (db,)).fetchone()
    return int(row[0]), int(row[1])


def _metric(base: str, name: str, label: str) -> float:
    import httpx

    text = httpx.get(f"{base}/metrics", timeout=5).text
    m = re.search(rf'^{name}\{{{label}\}} ([\d.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def _wait_ready(base: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{base} not ready after {seconds} s")


RELAY = """
import sys, httpx, uvicorn
upstream = sys.argv[2]
client = httpx.AsyncClient(base_url=upstream, limits=httpx.Limits(max_connections=64,
                           max_keepalive_connections=64), timeout=10)
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"]
               if k.lower() not in (b"host", b"content-length", b"connection")]
    r = await client.request(scope["method"], scope["path"], content=body, headers=headers)
    await send({"type": "http.response.start", "status": r.status_code,
                "headers": [(k.encode(), v.encode()) for k, v in r.headers.items()
                            if k.lower() not in ("content-length", "connection",
                                                 "transfer-encoding")]
                           + [(b"content-length", str(len(r.content)).encode())]})
    await send({"type": "http.response.body", "body": r.content})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, loop="uvloop", http="httptools")
"""


def _store_ops(url: str, n: int = 300) -> dict[str, Any]:
    """Job claim+complete and audit appends per second on one store, 1 and 4 threads."""
    from concurrent.futures import ThreadPoolExecutor

    from modelyard.governance import audit
    from modelyard.jobs.queue import JobQueue
    from modelyard.store.db import Database

    db = Database(url)
    db.upgrade()
    queue = JobQueue(db)
    out: dict[str, Any] = {}
    for threads in (1, 4):
        with db.transaction() as session:
            for i in range(n):
                queue.enqueue(session, "bench", {"i": i}, principal={"name": "bench"},
                              created_by="bench")

        def drain(owner: str) -> int:
            done = 0
            while (claimed := queue.claim(owner, 30.0, kinds=("bench",))) is not None:
                job, _ = claimed
                queue.complete(job.id, owner, job.attempt, {"ok": True})
                done += 1
            return done

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            done = sum(pool.map(drain, [f"w{t}" for t in range(threads)]))
        out[f"job_claim_complete_per_s_{threads}t"] = round(done / (time.perf_counter() -
                                                                    started), 1)

        def append(count: int) -> None:
            for _ in range(count):
                with db.transaction() as session:
                    audit.append(session, "bench", "bench.write", "bench:1", after={"x": 1})

        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(append, [n // threads] * threads))
        out[f"audit_appends_per_s_{threads}t"] = round(
            (n // threads) * threads / (time.perf_counter() - started), 1)
    db.dispose()
    return out


def measure(pg_url: str) -> dict[str, Any]:
    import numpy as np
    import psycopg
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    from modelyard import Yard
    from modelyard.serving.server import free_port
    from modelyard.settings import Settings

    result: dict[str, Any] = {"commit": os.environ.get("CAPACITY_COMMIT", "")}
    dbname = f"modelyard_capacity_{os.getpid()}"
    admin = psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True)
    admin.execute(f'CREATE DATABASE "{dbname}"')
    db_url = pg_url.rsplit("/", 1)[0] + f"/{dbname}"
    result["pg_max_connections"] = int(admin.execute("SHOW max_connections").fetchone()[0])
    lua = Path(tempfile.mkdtemp()) / "post.lua"
    lua.write_text("wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
                   f"wrk.body = '{BODY}'\nfunction done(summary, latency, requests)\n"
                   "  io.write(string.format('RESULT requests=%d non2xx=%d\\n', "
                   "summary.requests, summary.errors.status))\nend\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "MODELYARD_DATABASE_URL": db_url,
                   "MODELYARD_PUBLIC_METRICS": "true", "MODELYARD_ORT_THREADS": "1"}
            settings = Settings.load(Path(tmp) / "yard", env=env)
            yard, _ = Yard.init(settings=settings)
            x, y = make_classification(n_samples=5000, n_features=20, random_state=0)
            yard.register("bench", LogisticRegression().fit(x, y), to_onnx=True,
                          sample=x[:4].astype(np.float32))
            yard.create_endpoint("bench", "bench", auth="public", log_sample=0.0,
                                 deployment={"max_batch_size": 32})
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = subprocess.Popen(
                [sys.executable, "-c", "from modelyard.cli.main import main; main()",
                 "--yard", str(settings.home), "serve", "--port", str(port),
                 "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            procs.append(server)
            _wait_ready(base, server)
            stats = psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True)
            # Idle: what one server process asks of the store with nothing to serve.
            time.sleep(3)
            x0, _ = _pg_counters(stats, dbname)
            time.sleep(20)
            x1, _ = _pg_counters(stats, dbname)
            result["idle_store_txn_per_s"] = round((x1 - x0 - 1) / 20, 2)
            print("idle", result["idle_store_txn_per_s"], "store transactions/s", flush=True)
            # Under load, with the inference log off, at 10% and at 100%.
            runs: dict[str, list[dict[str, Any]]] = {}
            for _round in range(2):
                for share in (0.0, 0.1, 1.0):
                    yard.update_endpoint("bench", log_sample=share)
                    time.sleep(settings.reconcile_interval_s * 2 + 1)
                    _wrk(f"{base}/endpoints/bench/predict", 32, 2, lua)  # warm
                    time.sleep(1.5)  # the previous run's log records are flushed
                    written0 = _metric(base, "modelyard_inference_log_records_total",
                                       'result="written"')
                    dropped0 = _metric(base, "modelyard_inference_log_records_total",
                                       'result="dropped"')
                    cpu0, (x0, t0) = _cpu_s(server.pid), _pg_counters(stats, dbname)
                    figures = _wrk(f"{base}/endpoints/bench/predict", 32, 8, lua)
                    cpu1 = _cpu_s(server.pid)
                    time.sleep(1.5)  # let the writer flush what the run produced
                    x1, t1 = _pg_counters(stats, dbname)
                    written = _metric(base, "modelyard_inference_log_records_total",
                                      'result="written"') - written0
                    figures.update({
                        "log_sample": share,
                        "server_cpu_us_per_req": round(1e6 * (cpu1 - cpu0) /
                                                       max(figures["requests"], 1), 1),
                        "store_txn_per_s": round((x1 - x0) / 8, 1),
                        "store_rows_per_s": round((t1 - t0) / 8, 1),
                        "log_written": int(written),
                        "log_dropped": int(_metric(base, "modelyard_inference_log_records_"
                                                   "total", 'result="dropped"') - dropped0)})
                    runs.setdefault(str(share), []).append(figures)
                    print("load", json.dumps(figures), flush=True)
            result["load"] = runs
            with psycopg.connect(db_url.replace("+psycopg", "")) as own:
                size_row = own.execute(
                    "SELECT pg_total_relation_size('inference_log'), count(*) FROM "
                    "inference_log").fetchone()
            result["pg_inference_log_bytes_per_row"] = round(size_row[0] / max(size_row[1], 1))
            result["pg_inference_log_rows"] = int(size_row[1])
            # One extra proxy hop: the same load through a minimal uvicorn + httpx relay.
            relay_port = free_port()
            relay = subprocess.Popen([sys.executable, "-c", RELAY, str(relay_port), base],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(relay)
            yard.update_endpoint("bench", log_sample=0.0)
            time.sleep(settings.reconcile_interval_s * 2 + 1)
            relay_base = f"http://127.0.0.1:{relay_port}"
            _wait_ready(relay_base, relay)
            hop: dict[str, list[dict[str, Any]]] = {}
            for _round in range(2):
                for via, url in (("direct", base), ("relay", relay_base)):
                    for conns, seconds in ((1, 5), (32, 8)):
                        cpu_s0, cpu_r0 = _cpu_s(server.pid), _cpu_s(relay.pid)
                        figures = _wrk(f"{url}/endpoints/bench/predict", conns, seconds, lua)
                        n = max(figures["requests"], 1)
                        figures.update({
                            "server_cpu_us_per_req": round(1e6 * (_cpu_s(server.pid) -
                                                                  cpu_s0) / n, 1),
                            "relay_cpu_us_per_req": round(1e6 * (_cpu_s(relay.pid) - cpu_r0)
                                                          / n, 1) if via == "relay" else 0.0})
                        hop.setdefault(f"{via}_c{conns}", []).append(figures)
                        print("hop", via, conns, json.dumps(figures), flush=True)
            result["proxy_hop"] = hop
            for proc in procs:
                proc.terminate()
                proc.wait(15)
            yard.close()
            stats.close()
            result["store_ops"] = {"postgresql": _store_ops(db_url),
                                   "sqlite": _store_ops(f"sqlite:///{tmp}/ops.db")}
            print("store ops", json.dumps(result["store_ops"]), flush=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        admin.close()
    return result


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


# ============================================================================ the model
def model(args: argparse.Namespace, measured: dict[str, Any], measured_file: str | None,
          services: dict[str, dict[str, Any]], anchors_file: str | None) -> dict[str, Any]:
    def med(rows: list[dict[str, Any]], key: str) -> float:
        return _median([r[key] for r in rows])

    load = measured.get("load", {})
    cpu_off = med(load["0.0"], "server_cpu_us_per_req") if load else None
    cpu_log = {share: med(rows, "server_cpu_us_per_req") for share, rows in load.items()}
    # Per-request CPU of logging, per logged request: (cpu at 100% - cpu at 0%).
    log_cpu_us = (cpu_log["1.0"] - cpu_off) if load else 0.0
    service = dict(services[args.service])
    mu = service["mu_per_core"]
    if args.service.startswith("tiny-onnx-batch") and cpu_off:
        service["mu_per_core_this_run"] = round(1e6 / cpu_off, 1)
        mu = min(mu, 1e6 / cpu_off)  # the more conservative of the two measurements
    mu_logged = 1.0 / (1.0 / mu + args.log_sample * log_cpu_us / 1e6)
    floor_s = service["p50_ms_c1"] / 1000 - 1 / mu  # outside the server's CPU time
    floor_s = max(floor_s, 0.0)
    hop = measured.get("proxy_hop", {})
    # The relay's CPU per request at 1 connection (uncontended; at 32 connections, on 2 cores
    # shared with the server and wrk, it was 2-2.5x that: reported beside it).
    hop_cpu_us = med(hop["relay_c1"], "relay_cpu_us_per_req") if hop else None
    hop_cpu_us_c32 = med(hop["relay_c32"], "relay_cpu_us_per_req") if hop else None
    hop_p50_add = (med(hop["relay_c1"], "p50_ms") - med(hop["direct_c1"], "p50_ms")) \
        if hop else None
    pg_rows = args.pg_rows_per_s
    ops = measured.get("store_ops", {}).get("postgresql", {})
    bytes_row = measured.get("pg_inference_log_bytes_per_row")
    max_conn = measured.get("pg_max_connections", 100)
    idle_txn = measured.get("idle_store_txn_per_s")
    txn_capacity = 2 * ops.get("job_claim_complete_per_s_4t", 0) or math.inf
    levels = {}
    for factor in (1, 10, 100):
        lam = args.rate * factor
        sized = size(lam, mu_logged, floor_s, args.p99_ms / 1000, args.max_util)
        c = sized["replicas"]
        rows = lam * args.log_sample
        resources = {
            "server_cores": {"demand": c, "unit": "server processes (~1 core each)",
                             "note": "stateless: grows linearly, never the first limit"},
            "inference_log_rows": {"demand": round(rows), "capacity": pg_rows,
                                   "unit": "rows/s into PostgreSQL",
                                   "utilisation": round(rows / pg_rows, 3)},
            "inference_log_gb_per_day": {
                "demand": round(rows * 86400 * (bytes_row or 0) / 1e9, 1),
                "unit": f"GB/day at {bytes_row} B/row; x{args.retention_days:g} days kept"},
            "pg_connections": {"demand": c * 16, "capacity": max_conn,
                               "unit": "connections at full pools (5+10 per process, +1 "
                                       "leader session)",
                               "utilisation": round(c * 16 / max_conn, 3)},
            "store_background_txn": {
                "demand": round(c * (idle_txn or 0), 1), "capacity": txn_capacity,
                "unit": "txn/s of idle servers (reconciler, job polling, leadership); capacity:"
                        " job claim+complete at 4 threads x 2 txn",
                "utilisation": round(c * (idle_txn or 0) / txn_capacity, 3)},
        }
        if hop_cpu_us is not None:
            resources["proxy_hop_cores"] = {
                "demand": round(lam * hop_cpu_us / 1e6, 1),
                "unit": f"cores per extra hop at {hop_cpu_us:g} us/request (Python relay, "
                        "1 connection; x2-2.5 at 32)"}
        first = max((k for k, v in resources.items() if "utilisation" in v),
                    key=lambda k: resources[k]["utilisation"])
        levels[f"{factor}x"] = {"rate": lam, "sizing": sized, "resources": resources,
                                "first_to_saturate": first}
    return {
        "inputs": {"rate": args.rate, "p99_ms": args.p99_ms, "log_sample": args.log_sample,
                   "max_util": args.max_util, "service": args.service,
                   "service_figures": service, "mu_per_core_used": round(mu, 1),
                   "mu_with_logging": round(mu_logged, 1),
                   "latency_floor_ms": round(floor_s * 1000, 3),
                   "log_cpu_us_per_logged_req": round(log_cpu_us, 1),
                   "pg_rows_per_s": pg_rows, "anchors": anchors_file,
                   "measured": measured_file},
        "levels": levels,
        "proxy_hop": {"cpu_us_per_req_c1": hop_cpu_us, "cpu_us_per_req_c32": hop_cpu_us_c32,
                      "p50_added_ms_c1": hop_p50_add},
        "all_services": {name: size(args.rate, s["mu_per_core"],
                                    max(s["p50_ms_c1"] / 1000 - 1000 / s["mu_per_core"] / 1000,
                                        0.0), args.p99_ms / 1000, args.max_util)
                         for name, s in services.items()},
    }


def render(report: dict[str, Any]) -> str:
    i = report["inputs"]
    lines = [f"# Capacity model ({report['run']})", "",
             f"Target {i['rate']:,} req/s at p99 <= {i['p99_ms']} ms, service "
             f"`{i['service']}`, log_sample {i['log_sample']}, utilisation cap {i['max_util']}.",
             f"Service rate per core: {i['mu_per_core_used']:,} req/s measured "
             f"({i['mu_with_logging']:,} with the inference log at this sample); latency "
             f"floor {i['latency_floor_ms']} ms. Inputs: {i['anchors']}, {i['measured']}.", "",
             "| load | req/s | replicas | utilisation | P(wait) | p99 ms (model) | "
             "first to saturate |", "|---|---|---|---|---|---|---|"]
    for name, level in report["levels"].items():
        s = level["sizing"]
        lines.append(f"| {name} | {level['rate']:,} | {s['replicas']} | {s['utilisation']} | "
                     f"{s['p_wait']} | {s['p99_ms']} | {level['first_to_saturate']} |")
    lines += ["", "| load | resource | demand | capacity | utilisation | unit |",
              "|---|---|---|---|---|---|"]
    for name, level in report["levels"].items():
        for res, v in level["resources"].items():
            lines.append(f"| {name} | {res} | {v['demand']:,} | {v.get('capacity', '-')} | "
                         f"{v.get('utilisation', '-')} | {v['unit']} |")
    lines += ["", f"Replicas for {i['rate']:,} req/s by service (no inference log):", "",
              "| service | replicas | utilisation | p99 ms |", "|---|---|---|---|"]
    for name, s in report["all_services"].items():
        lines.append(f"| {name} | {s['replicas']} | {s['utilisation']} | {s['p99_ms']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", action="store_true", help="run the measurements first")
    parser.add_argument("--postgres", default=os.environ.get("MODELYARD_TEST_PG_URL",
                                                             PG_DEFAULT))
    parser.add_argument("--rate", type=float, default=2000, help="target requests/s (1x)")
    parser.add_argument("--p99-ms", type=float, default=50)
    parser.add_argument("--log-sample", type=float, default=1.0,
                        help="inference-log sampling share (the product's default is 1)")
    parser.add_argument("--service", default="tiny-onnx-batch")
    parser.add_argument("--max-util", type=float, default=0.7,
                        help="utilisation cap per replica (headroom for bursts and a lost "
                        "replica)")
    parser.add_argument("--pg-rows-per-s", type=float, default=None,
                        help="PostgreSQL inference-log insert capacity (default: the newest "
                        "bench/inference_log_store.py result)")
    parser.add_argument("--retention-days", type=float, default=30)
    parser.add_argument("--run-id", default=datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"))
    args = parser.parse_args()
    if args.measure and not os.environ.get("CAPACITY_SNAPSHOT"):
        # Measure the committed code, not the working tree others are editing.
        snap = Path(tempfile.mkdtemp(prefix="capacity-src-"))
        subprocess.run(f"git -C {ROOT} archive HEAD src | tar -x -C {snap}", shell=True,
                       check=True)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        env = {**os.environ, "CAPACITY_SNAPSHOT": "1", "CAPACITY_COMMIT": commit,
               "PYTHONPATH": str(snap / "src")}
        os.execve(sys.executable, [sys.executable, *sys.argv, "--run-id", args.run_id], env)
    out = RESULTS / args.run_id
    measured_path = out / "capacity-measured.json"
    if args.measure:
        out.mkdir(parents=True, exist_ok=True)
        measured = measure(args.postgres)
        measured.update({"machine": platform.platform(), "cpus": os.cpu_count(),
                         "loadavg": os.getloadavg()})
        measured_path.write_text(json.dumps(measured, indent=1) + "\n")
    else:
        measured_path = newest("*/capacity-measured.json") or measured_path
        measured = json.loads(measured_path.read_text()) if measured_path.is_file() else {}
    if args.pg_rows_per_s is None:
        store = newest("inference-log-store/*.json")
        args.pg_rows_per_s = json.loads(store.read_text())["postgresql"]["write_per_s"] \
            if store else 8437
    services, anchors_file = services_from_anchors()
    report = model(args, measured, str(measured_path.relative_to(ROOT))
                   if measured else None, services, anchors_file)
    report["run"] = args.run_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "capacity.json").write_text(json.dumps(report, indent=1) + "\n")
    text = render(report)
    (out / "capacity.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
