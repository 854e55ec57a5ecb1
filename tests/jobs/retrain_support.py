"""Shared by the retraining tests: generated data, a champion that guesses poorly, labelled
answers in the inference log, and a training entrypoint written as project code."""

from __future__ import annotations

import textwrap
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from modelyard import Yard
from modelyard.store import inference_log

# kind "good": a logistic regression on the features; "bad": always the commonest class;
# "slow": waits for a release file on the first attempt (the kill test stops it there).
ENTRYPOINT = '''
import time
from pathlib import Path

from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression


def train(ctx):
    kind = ctx.params.get("kind", "good")
    release = ctx.params.get("release")
    if release and ctx.attempt == 1:
        ctx.log("training slowly")
        while not Path(release).exists():
            ctx.check_cancelled()
            time.sleep(0.05)
    if kind == "bad":
        model = DummyClassifier(strategy="most_frequent").fit(ctx.x, ctx.y)
    else:
        model = LogisticRegression().fit(ctx.x, ctx.y)
    ctx.log(f"trained {kind} on {len(ctx.y)} rows")
    return {"model": model, "params": {"kind": kind},
            "metrics": {"train_accuracy": float(model.score(ctx.x, ctx.y))}}
'''


def write_entrypoint(folder: Path, module: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(textwrap.dedent(ENTRYPOINT))
    return f"{module}:train"


def generated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four features; the class follows the first two; the fourth is a segment (0, 1, 2)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    x[:, 3] = rng.integers(0, 3, size=n)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64)
    return x.astype(np.float32), y


def champion(yard: Yard, model: str = "churn", endpoint: str = "churn") -> None:
    """Version 1, the champion: trained on labels unrelated to the features (it guesses),
    served by ``endpoint`` through the champion alias."""
    x, _ = generated(120, seed=1)
    noise = np.random.default_rng(2).integers(0, 2, size=len(x))
    yard.register(model, LogisticRegression().fit(x, noise), sample=x[:4])
    yard.set_alias(model, "champion", 1)
    yard.create_endpoint(endpoint, f"{model}@champion", auth="key")


def log_labelled(yard: Yard, endpoint: str, n: int, seed: int, version: str = "churn:1",
                 per_request: int = 1) -> None:
    """``n`` rows of answers in the inference log, with their ground truth, an hour ago."""
    x, y = generated(n, seed)
    at = datetime.now(UTC) - timedelta(hours=1)
    records, labels = [], []
    for start in range(0, n, per_request):
        rid = uuid.uuid4().hex
        block = x[start:start + per_request]
        records.append({"at": at, "endpoint": endpoint, "version": version,
                        "request_id": rid, "status": 200, "latency_ms": 1.0,
                        "rows": len(block), "inputs": {"input": block.tolist()},
                        "outputs": None, "prediction": None})
        truth: Any = y[start:start + per_request].tolist()
        labels.append((rid, truth[0] if per_request == 1 else truth))
    with yard.db.transaction() as session:
        inference_log.insert_many(session, records)
        inference_log.put_labels(session, endpoint, labels)


def policy(entrypoint: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "endpoint": "churn", "entrypoint": entrypoint, "trusted": True,
        "data": {"inference_log": {"since": "1d", "min_labels": 100}},
        "holdout": {"share": 0.25, "seed": 3},
        "gate": {"metric": "accuracy", "min_gain": 0.05,
                 "slices": [{"feature": "input[3]", "max_drop": 0.1, "min_rows": 10}]},
        "rollout": {"strategy": "canary", "steps": [{"weight": 10, "duration_s": 60}],
                    "interval_s": 5},
        "max_attempts": 2,
    }
    doc.update(changes)
    return doc
