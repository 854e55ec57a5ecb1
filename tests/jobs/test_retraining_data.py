"""Retraining data windows: a dataset file (fsspec) combined with the inference log and a
separate holdout file; an http(s) dataset through the outbound guard, refused on a private
address until the ``outbound_allow`` setting names it."""

from __future__ import annotations

import csv
import http.server
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from retrain_support import champion, generated, log_labelled, policy, write_entrypoint

from modelyard import Yard
from modelyard.jobs.worker import Worker


@pytest.fixture
def entrypoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    ref = write_entrypoint(tmp_path / "code", "data_test_training")
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    return ref


def write_csv(path: Path, n: int, seed: int) -> Path:
    x, y = generated(n, seed)
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["f0", "f1", "f2", "segment", "label"])
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            out.writerow([*row, label])
    return path


def run_jobs(yard: Yard) -> None:
    worker = Worker(yard, schedules=False)
    while worker.run_once():
        pass


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[str]:
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True,
                              kwargs={"poll_interval": 0.05})  # shutdown() in 0.05 s
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_dataset_file_with_the_inference_log_and_a_holdout_file(
        yard: Yard, entrypoint: str, tmp_path: Path) -> None:
    champion(yard)
    log_labelled(yard, "churn", 120, seed=13)
    data = write_csv(tmp_path / "train.csv", 200, seed=14)
    holdout = write_csv(tmp_path / "holdout.csv", 120, seed=15)
    doc = policy(entrypoint, data={"dataset_url": f"file://{data}",
                                   "inference_log": {"since": "1d", "min_labels": 100},
                                   "features": ["f0", "f1", "f2", "segment"]},
                 holdout={"url": str(holdout)},
                 gate={"metric": "accuracy", "min_gain": 0.05,
                       "slices": [{"feature": "segment", "max_drop": 0.1}]})
    yard.set_retrain_policy("churn", doc)
    cycle = yard.retrain("churn")
    run_jobs(yard)
    done = yard.retrain_cycle(cycle["id"])
    assert done["state"] == "rolling_out", done
    assert done["data"]["train_rows"] == 320 and done["data"]["holdout_rows"] == 120
    assert [s.get("dataset_url") or s.get("inference_log") for s in
            done["data"]["sources"]] == [f"file://{data}", "churn"]
    assert done["data"]["features"] == ["f0", "f1", "f2", "segment"]
    assert {s["feature"] for s in done["gate"]["result"]["slices"]} == {"segment"}


def test_http_datasets_go_through_the_outbound_guard(
        yard: Yard, entrypoint: str, http_files: str, tmp_path: Path) -> None:
    champion(yard)
    write_csv(tmp_path / "served" / "train.csv", 300, seed=16)
    doc = policy(entrypoint, data={"dataset_url": f"{http_files}/train.csv"},
                 gate={"metric": "accuracy", "min_gain": 0.05,
                       "slices": [{"feature": "segment", "max_drop": 0.1}]})
    yard.set_retrain_policy("churn", doc)
    cycle = yard.retrain("churn")
    run_jobs(yard)
    refused = yard.retrain_cycle(cycle["id"])
    assert refused["state"] == "failed" and "OutboundRefused" in refused["error"], refused

    allowed = Yard(settings=replace(yard.settings, outbound_allow="127.0.0.1"))
    try:
        again = allowed.retrain("churn", "allowed now")
        run_jobs(allowed)
        done = allowed.retrain_cycle(again["id"])
        assert done["state"] == "rolling_out", done
        assert done["data"]["rows"] == 300
    finally:
        allowed.close()
