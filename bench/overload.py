"""Overload: does the server keep serving when offered far more than it can do?

Usage: python bench/overload.py [OUT.json]
Builds its own yard with a model of known cost (``Sleepy``: 10 ms per batch, batches of up
to 8 rows, so about 800 rows/s), a 64-request queue and a 100 ms deadline, starts
``modelyard serve`` on a free 127.0.0.1 port, and measures with wrk (closed loop):
  capacity  at 16 connections (a full batch running, one queued: the model saturated),
  2x        at 32 connections, 10x at 160 connections (closed loop: a refused client retries
            at once, so the server must keep refusing cheaply), the 10x run for 60 s while
            the server's RSS is sampled every second,
while probe clients send one request at a time and record the latency of admitted (200)
and refused (503) answers separately, and of readiness (/readyz). Everything stops by
itself; nothing else is contacted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from modelyard import Yard
from modelyard.serving.server import free_port

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "bench" / "post20.lua"
DEADLINE_MS = 100
# Closed loop: 16 connections keep one full batch running and one queued (the capacity).
LEVELS = {"capacity": (16, 10), "2x": (32, 15), "10x": (160, 60)}  # connections, seconds


def wrk(url: str, conns: int, seconds: int) -> dict[str, float]:
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s",
                          "--latency", "-s", str(LUA), url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"RESULT requests=(\d+) non2xx=(\d+)", out)
    total, bad = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    return {"rps": rps, "ok_rps": rps * (total - bad) / total if total else 0.0,
            "requests": total, "non2xx": bad}


def probe(url: str, stop: threading.Event, samples: dict[int, list[float]]) -> None:
    body = {"instances": [[0.1] * 20]}
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                r = http.post(url, json=body)
            except httpx.HTTPError:
                continue
            samples.setdefault(r.status_code, []).append((time.perf_counter() - t) * 1000)
            time.sleep(0.005)


def probe_health(base: str, stop: threading.Event, samples: list[float]) -> None:
    """Readiness must stay responsive while the model is overloaded."""
    with httpx.Client(timeout=5) as http:
        while not stop.is_set():
            t = time.perf_counter()
            try:
                if http.get(f"{base}/readyz").status_code == 200:
                    samples.append((time.perf_counter() - t) * 1000)
            except httpx.HTTPError:
                pass
            time.sleep(0.05)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 2) if values else None


def main() -> None:
    out_file = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    LUA.write_text(
        "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
        "wrk.body = '{\"instances\": [" + ",".join(["[" + ",".join(["0.1"] * 20) + "]"]) +
        "]}'\nfunction done(summary, latency, requests)\n"
        "  io.write(string.format('RESULT requests=%d non2xx=%d\\n', summary.requests,"
        " summary.errors.status))\nend\n")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "yard"
        yard, _ = Yard.init(home)
        yard.register("slow", "modelyard.testing.models:Sleepy", flavor="python", trusted=True,
                      sample=np.zeros((2, 20), dtype=np.float32))
        yard.create_endpoint("slow", "slow", auth="public", timeout_ms=DEADLINE_MS, deployment={
            "max_batch_size": 8, "max_queue_size": 64, "max_queue_delay_ms": 1})
        yard.close()
        port = free_port()
        server = subprocess.Popen(
            [str(ROOT / ".venv/bin/modelyard"), "--yard", str(home), "serve", "--port",
             str(port), "--log-level", "warning"], stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, "MODELYARD_ORT_THREADS": "1"})
        url = f"http://127.0.0.1:{port}/endpoints/slow/predict"
        result: dict[str, Any] = {"deadline_ms": DEADLINE_MS}
        try:
            for _ in range(100):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            for level, (conns, seconds) in LEVELS.items():
                samples: dict[int, list[float]] = {}
                stop = threading.Event()
                prober = threading.Thread(target=probe, args=(url, stop, samples))
                health: list[float] = []
                health_prober = threading.Thread(
                    target=probe_health, args=(f"http://127.0.0.1:{port}", stop, health))
                health_prober.start()
                rss: list[float] = []
                sampler_stop = threading.Event()

                def sample_rss(stop_event: threading.Event = sampler_stop,
                               into: list[float] = rss) -> None:
                    while not stop_event.wait(1.0):
                        into.append(rss_mb(server.pid))

                sampler = threading.Thread(target=sample_rss)
                prober.start()
                sampler.start()
                figures = wrk(url, conns, seconds)
                stop.set()
                sampler_stop.set()
                prober.join()
                sampler.join()
                health_prober.join()
                figures.update({
                    "connections": conns, "seconds": seconds,
                    "admitted_p99_ms": p99(samples.get(200, [])),
                    "rejected_p99_ms": p99(samples.get(503, [])),
                    "probe_counts": {str(k): len(v) for k, v in samples.items()},
                    "readyz_p99_ms": p99(health),
                    "rss_first_mb": round(rss[0], 1) if rss else None,
                    "rss_last_mb": round(rss[-1], 1) if rss else None,
                })
                result[level] = figures
                print(level, json.dumps(figures), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
    capacity = result["capacity"]["ok_rps"]
    checks = {}
    for level in ("2x", "10x"):
        fig = result[level]
        checks[level] = {
            "serves_90pct_of_capacity": fig["ok_rps"] >= 0.9 * capacity,
            "admitted_p99_within_2x_deadline": (fig["admitted_p99_ms"] or 0) <= 2 * DEADLINE_MS,
            "rejected_p99_under_5ms": fig["rejected_p99_ms"] is None or fig["rejected_p99_ms"] < 5,
            "readiness_p99_under_50ms": (fig["readyz_p99_ms"] or 1e9) < 50,
        }
    ten = result["10x"]
    checks["rss_flat_over_60s"] = bool(ten["rss_first_mb"] and ten["rss_last_mb"] and
                                       ten["rss_last_mb"] <= ten["rss_first_mb"] * 1.1)
    result["checks"] = checks
    print(json.dumps(checks))
    if out_file:
        out_file.write_text(json.dumps(result, indent=1))
    LUA.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
