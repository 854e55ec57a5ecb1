"""Is the SQL store good enough for the inference log? One million records, then the queries
monitors and people make, timed.

Usage: python bench/inference_log_store.py [OUT.json] [--records N] [--postgres URL]

Writes N records (default 1,000,000; 3 endpoints, 2 versions each, 30 days, payloads of a
small tabular request) through the same ``insert_many`` the writer uses, then times: a page of
the newest records of one endpoint, a one-hour window of one version (what a drift job reads),
the per-version summary of a day and of the whole month, a labelled join over a day, and one
retention pass deleting a day. SQLite always; PostgreSQL when --postgres is given (the
database is emptied first). Results in seconds, printed and written to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

from modelyard.store import inference_log as repo
from modelyard.store.db import Database

ENDPOINTS = ("churn", "fraud", "triage")
START = datetime(2026, 10, 25, tzinfo=UTC)
DAYS = 30
BATCH = 10_000


def records(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    span = DAYS * 86400
    seconds = np.sort(rng.uniform(0, span, n))
    features = rng.normal(size=(n, 4)).round(3)
    out = []
    for i in range(n):
        endpoint = ENDPOINTS[i % 3]
        out.append({"at": START + timedelta(seconds=float(seconds[i])), "endpoint": endpoint,
                    "version": f"{endpoint}:{1 + (i // 3) % 2}", "request_id": f"r{i}",
                    "status": 200 if i % 97 else 500, "latency_ms": float(1 + i % 13),
                    "rows": 1, "inputs": {"x": [features[i].tolist()]},
                    "outputs": {"label": [int(features[i, 0] > 0)]},
                    "prediction": float(features[i, 0] > 0)})
    return out


def timed(name: str, fn: Callable[[], Any], results: dict[str, Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    results[name] = round(time.perf_counter() - started, 4)
    return value


def run(url: str, n: int) -> dict[str, Any]:
    db = Database(url)
    db.upgrade()
    with db.transaction() as session:  # start empty (a PostgreSQL database is reused)
        while repo.delete_before(session, datetime(2100, 1, 1, tzinfo=UTC), 100_000):
            pass
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"records": n}
    started = time.perf_counter()
    with Progress() as progress:
        task = progress.add_task(f"writing {n:,} records", total=n)
        for offset in range(0, n, BATCH):
            chunk = records(min(BATCH, n - offset), rng)
            for j, record in enumerate(chunk):
                record["request_id"] = f"r{offset + j}"
            with db.transaction() as session:
                repo.insert_many(session, chunk)
            progress.advance(task, len(chunk))
    results["write_s"] = round(time.perf_counter() - started, 2)
    results["write_per_s"] = round(n / results["write_s"])
    with db.transaction() as session:
        repo.put_labels(session, "churn", [(f"r{i}", 1) for i in range(0, n, 3 * 5)][:50_000])
    day = START + timedelta(days=15)
    with db.transaction() as session:
        timed("page_newest_100", lambda: repo.page(session, "churn", limit=100), results)
        timed("page_day_version_1000", lambda: repo.page(
            session, "fraud", since=day, until=day + timedelta(days=1), version="fraud:2",
            limit=1000), results)
        got = timed("window_hour_version", lambda: repo.window(
            session, "churn", day, day + timedelta(hours=1), version="churn:1"), results)
        results["window_hour_version_records"] = len(got)
        timed("summary_day", lambda: repo.summary(session, "triage", day,
                                                 day + timedelta(days=1)), results)
        timed("summary_month", lambda: repo.summary(session, "triage"), results)
        got = timed("labelled_day", lambda: repo.labelled(session, "churn", day,
                                                          day + timedelta(days=1)), results)
        results["labelled_day_records"] = len(got)

    def expire_first_day() -> int:
        total = 0
        while True:
            with db.transaction() as session:
                gone = repo.delete_before(session, START + timedelta(days=1))
            total += gone
            if not gone:
                return total

    results["expired_records"] = timed("expire_one_day", expire_first_day, results)
    path = db.sqlite_path()
    if path is not None:
        results["sqlite_bytes"] = Path(path).stat().st_size
    db.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    report: dict[str, Any] = {"machine": platform.platform(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        report["sqlite"] = run(f"sqlite:///{tmp}/yard.db", args.records)
    if args.postgres:
        report["postgresql"] = run(args.postgres, args.records)
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
