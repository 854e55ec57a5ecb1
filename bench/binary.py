"""OIP v2 binary tensor extension vs JSON: one 1 MiB float32 tensor through the real server.

Usage: python bench/binary.py [OUT.json]. Serves an echo model on a free 127.0.0.1 port,
posts the same tensor as JSON and as binary N times each, and prints the median round trips
and their ratio (the issue's target: binary at least 5x faster).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from modelyard import Yard
from modelyard.serving.server import BackgroundServer

ROUNDS = 15


def main() -> None:
    x = np.random.default_rng(0).random((1, 262_144), dtype=np.float32)  # 1 MiB
    with tempfile.TemporaryDirectory() as home:
        yard, _ = Yard.init(Path(home) / "yard")
        yard.register("echo", "modelyard.testing.models:Echo", flavor="python", trusted=True,
                      sample=x)
        yard.create_endpoint("echo", "echo", auth="public", deployment={"max_batch_size": 1})
        with BackgroundServer(yard) as server, httpx.Client(base_url=server.url,
                                                            timeout=60) as http:
            as_json = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                   "data": x.reshape(-1).tolist()}]}
            head = json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                           "shape": list(x.shape),
                                           "parameters": {"binary_data_size": x.nbytes}}],
                               "parameters": {"binary_data_output": True}}).encode()

            def json_round() -> float:
                t = time.perf_counter()
                r = http.post("/v2/models/echo/infer", json=as_json)
                out = np.asarray(r.json()["outputs"][0]["data"], dtype=np.float32)
                assert r.status_code == 200 and out.size == x.size
                return time.perf_counter() - t

            def binary_round() -> float:
                t = time.perf_counter()
                r = http.post("/v2/models/echo/infer", content=head + x.tobytes(), headers={
                    "Inference-Header-Content-Length": str(len(head)),
                    "Content-Type": "application/octet-stream"})
                n = int(r.headers["inference-header-content-length"])
                out = np.frombuffer(r.content[n:], dtype=np.float32)
                assert r.status_code == 200 and np.array_equal(out, x.reshape(-1))
                return time.perf_counter() - t

            json_s = statistics.median(json_round() for _ in range(ROUNDS))
            binary_s = statistics.median(binary_round() for _ in range(ROUNDS))
        yard.close()
    result = {"tensor_bytes": int(x.nbytes), "json_ms": round(json_s * 1000, 2),
              "binary_ms": round(binary_s * 1000, 2), "speedup": round(json_s / binary_s, 1),
              "target": ">= 5x", "met": json_s / binary_s >= 5}
    print(json.dumps(result))
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
