"""What a shadow costs the primary: the same load with and without a full (100%) shadow.

Usage: python bench/shadow.py [OUT.json]. Serves a small ONNX classifier on a free 127.0.0.1
port, sends the same closed-loop load (8 connections, fixed count) three times in turn without
and with a shadow version, and prints the primary's p50/p99 for each and their ratio. The
shadow runs off the request path on its own batcher, at low priority; what it can still take
is CPU, which on a 2-core machine is the honest cost to report.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.serving.server import BackgroundServer

CONNECTIONS, REQUESTS, ROUNDS = 8, 1500, 3


def run_load(url: str) -> list[float]:
    body = {"inputs": np.random.default_rng(1).normal(size=(1, 8)).round(3).tolist()}

    def worker(count: int) -> list[float]:
        times = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for _ in range(count):
                t = time.perf_counter()
                r = http.post("/endpoints/clf/predict", json=body)
                assert r.status_code == 200, r.text
                times.append(time.perf_counter() - t)
        return times

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        parts = pool.map(worker, [REQUESTS // CONNECTIONS] * CONNECTIONS)
    return [t for part in parts for t in part]


def pct(values: list[float], q: float) -> float:
    return float(np.quantile(values, q)) * 1000


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    with tempfile.TemporaryDirectory() as home:
        yard, _ = Yard.init(Path(home) / "yard")
        for c in (1.0, 0.1):
            yard.register("clf", LogisticRegression(C=c).fit(x, y), to_onnx=True, sample=x[:4])
        yard.create_endpoint("clf", "clf:1", auth="public")
        results: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        with BackgroundServer(yard) as server:
            for _ in range(ROUNDS):
                for mode in ("without", "with"):
                    yard.set_traffic("clf", None if mode == "without" else {
                        "split": [{"model": "clf:1", "weight": 100}],
                        "shadows": [{"model": "clf:2", "sample": 1.0}]})
                    time.sleep(3)  # the reconciler loads the shadow before the load starts
                    run_load(server.url)  # warm
                    times = run_load(server.url)
                    results[mode].append({"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99),
                                          "rps": len(times) / sum(times) * CONNECTIONS})
        yard.close()
    summary = {mode: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
               for mode, runs in results.items()}
    summary["ratio"] = {k: summary["with"][k] / summary["without"][k]
                        for k in ("p50_ms", "p99_ms")}
    print(f"primary without shadow: p50 {summary['without']['p50_ms']:.2f} ms, "
          f"p99 {summary['without']['p99_ms']:.2f} ms")
    print(f"primary with a 100% shadow: p50 {summary['with']['p50_ms']:.2f} ms, "
          f"p99 {summary['with']['p99_ms']:.2f} ms "
          f"(x{summary['ratio']['p50_ms']:.2f} / x{summary['ratio']['p99_ms']:.2f})")
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps({"rounds": results, "summary": summary},
                                                indent=2))


if __name__ == "__main__":
    main()
