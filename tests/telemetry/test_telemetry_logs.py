"""Structured logs: ``modelyard serve`` with ``log_format = json`` writes one JSON object per
line (uvicorn's lines too), each line written while serving a request carries its id and
trace, and PII in a line is redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from sklearn.linear_model import LogisticRegression

from modelyard import Graph, Yard
from modelyard.governance.audit import request_id
from modelyard.serving.server import free_port
from modelyard.telemetry.logs import JsonFormatter

HERE = Path(__file__).parent
CLI = Path(sys.executable).parent / "modelyard"
SIGNATURE = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}],
             "outputs": [{"name": "label", "dtype": "int64", "shape": [-1]},
                         {"name": "probabilities", "dtype": "float32", "shape": [-1, 2]}]}


class Leaky:
    """Fails on real traffic with a message that quotes personal data."""

    def load(self, path: str) -> None:
        pass

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if np.any(inputs["input"] != 0):
            raise RuntimeError("no profile for jane.doe@example.com")
        rows = len(inputs["input"])
        return {"label": np.zeros(rows, dtype=np.int64),
                "probabilities": np.full((rows, 2), 0.5, dtype=np.float32)}


def test_json_lines_from_a_real_serve_carry_request_and_trace_ids(tmp_path: Path,
                                                                  tabular: Any) -> None:
    x, label, _ = tabular
    home = tmp_path / "yard"
    yard, _ = Yard.init(home)
    yard.register("clf", LogisticRegression().fit(x, label), to_onnx=True, sample=x[:4])
    yard.register("leaky", "test_telemetry_logs:Leaky", flavor="python", trusted=True,
                  signature=SIGNATURE)
    yard.create_endpoint("safe", auth="public", graph=(
        Graph("safe").input("features", "float32", (-1, 4))
        .model("lookup", "leaky:1", inputs={"input": "inputs.features"})
        .model("backup", "clf:1", inputs={"input": "inputs.features"})
        .fallback("answer", ["lookup", "backup"])
        .output("label", "answer.label")))
    yard.close()
    port = free_port()
    env = {**os.environ, "MODELYARD_LOG_FORMAT": "json", "MODELYARD_TRACE_EXPORTER": "console",
           "MODELYARD_TRACE_SAMPLE_RATIO": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    stdout, stderr = tmp_path / "stdout", tmp_path / "stderr"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        server = subprocess.Popen([str(CLI), "--yard", str(home), "serve", "--port", str(port),
                                   "--log-level", "info"], env=env, stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, stderr.read_text()
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.2)
            answer = httpx.post(f"http://127.0.0.1:{port}/endpoints/safe/predict",
                                json={"inputs": {"features": x[:2].tolist()}},
                                headers={"x-request-id": "req-telemetry-1"}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-request-id"] == "req-telemetry-1"
        finally:
            server.send_signal(signal.SIGINT)  # a clean stop exports the buffered spans
            server.wait(30)
    lines = [json.loads(line) for line in stderr.read_text().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("uvicorn") for line in lines)  # uvicorn's own, too
    assert any(line["logger"] == "modelyard.backend" and "safe" in line["message"]
               for line in lines)
    fell = next(line for line in lines if line["logger"] == "modelyard.graph")
    assert fell["request_id"] == "req-telemetry-1" and fell["level"] == "info"
    assert "[EMAIL]" in fell["message"] and "jane.doe" not in stderr.read_text()
    # the line names the trace it was written in: the console exporter printed that trace
    spans = stdout.read_text()
    assert len(fell["trace_id"]) == 32 and f"0x{fell['trace_id']}" in spans
    assert '"name": "predict safe"' in spans and '"name": "node lookup"' in spans


def test_json_formatter_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("modelyard.test-json")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id.set("abc123")
    try:
        logger.warning("scored %d rows", 3)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        request_id.reset(token)
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines()[:2])
    assert first["message"] == "scored 3 rows" and first["level"] == "warning"
    assert first["request_id"] == "abc123" and first["logger"] == "modelyard.test-json"
    assert first["ts"].endswith("Z") and "trace_id" not in first
    assert "ValueError: boom" in second["exc"]
