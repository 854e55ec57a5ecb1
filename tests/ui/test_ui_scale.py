"""Pages stay fast at scale: 10,000 versions of one model and 1,000,000 inference records
of one endpoint (seeded once, straight into the store with executemany). Every listing is
paged in SQL and the log is summarised by the database; the times are printed for the test
report, not asserted (a loaded CI machine must not fail the build)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sqlalchemy import insert, select

from db_support import migrate
from modelyard import Yard
from modelyard.serving.server import BackgroundServer
from modelyard.settings import Settings
from modelyard.store import inference_log
from modelyard.store.tables import ModelRow, VersionRow, utcnow

VERSIONS = 10_000
RECORDS = 1_000_000
CHUNK = 50_000


def seed_versions(yard: Yard) -> None:
    """Versions 2..VERSIONS as copies of version 1 (same artifact: content-addressed)."""
    with yard.db.transaction() as session:
        model = session.scalars(select(ModelRow).where(ModelRow.name == "big")).one()
        first = session.scalars(select(VersionRow).where(VersionRow.model_id == model.id)
                                ).one()
        template = {c.name: getattr(first, c.name) for c in VersionRow.__table__.columns
                    if c.name != "id"}
        rows = []
        for number in range(2, VERSIONS + 1):
            parent = {**template["lineage"], "parent": f"big:{number - 1}",
                      "metrics": {"accuracy": 0.8 + (number % 100) / 1000}}
            rows.append({**template, "version": number, "lineage": parent})
        session.execute(insert(VersionRow), rows)


def seed_log(yard: Yard) -> None:
    now = utcnow()
    rng = np.random.default_rng(3)
    latencies = rng.gamma(2.0, 2.0, size=CHUNK)
    for start in range(0, RECORDS, CHUNK):
        batch = [{"at": now - timedelta(seconds=int((RECORDS - start - i) * 0.08)),
                  "endpoint": "big", "version": f"big:{1 + (start + i) % 3}",
                  "request_id": None, "status": 500 if (start + i) % 997 == 0 else 200,
                  "latency_ms": float(latencies[i]), "rows": 1, "inputs": None,
                  "outputs": None, "prediction": None} for i in range(CHUNK)]
        with yard.db.transaction() as session:
            inference_log.insert_many(session, batch)


@pytest.fixture(scope="module")
def big(shared_settings: Settings) -> Iterator[tuple[str, str]]:
    """On SQLite and on PostgreSQL (the root conftest's ``shared_settings``)."""
    migrate(shared_settings.database_url)  # the session's migration, copied
    yard, admin = Yard.init(settings=shared_settings)
    assert admin is not None
    rng = np.random.default_rng(5)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    yard.register("big", LogisticRegression().fit(x, x[:, 0] > 0), to_onnx=True,
                  sample=x[:4])
    yard.create_endpoint("big", "big:1")
    started = time.perf_counter()
    seed_versions(yard)
    seed_log(yard)
    print(f"\nseeded {VERSIONS} versions and {RECORDS} records in "
          f"{time.perf_counter() - started:.1f} s")
    try:
        with BackgroundServer(yard) as server:
            yield server.url, admin
    finally:
        yard.close()


def timed(http: httpx.Client, path: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    answer = http.get(path)
    return answer, time.perf_counter() - started


@pytest.fixture(scope="module")
def http(big: tuple[str, str]) -> Iterator[httpx.Client]:
    url, admin = big
    with httpx.Client(base_url=url, timeout=120) as client:
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text)
        assert token
        client.post("/ui/login", data={"key": admin, "csrf": token.group(1)})
        yield client


def rows_in(html: str, table_caption: str) -> int:
    table = html.split(table_caption, 1)[1].split("</table>", 1)[0]
    return table.count("<tr>") - 1  # less the header row


def test_pages_answer_at_scale(http: httpx.Client, capsys: Any) -> None:
    times = {}
    for path in ("/ui/", "/ui/models", "/ui/models/big", "/ui/models/big?page=400&size=25",
                 "/ui/models/big/versions/9000", "/ui/endpoints/big", "/ui/rollouts",
                 "/ui/audit"):
        answer, seconds = timed(http, path)
        assert answer.status_code == 200, (path, answer.text[:300])
        times[path] = seconds
    model_page = http.get("/ui/models/big?size=100").text
    assert rows_in(model_page, "<caption class=\"sr-only\">Versions</caption>") == 100
    assert "Page 1 of 100" in model_page and "10,000 in all" in model_page
    last = http.get("/ui/models/big?page=400&size=25").text
    assert rows_in(last, "<caption class=\"sr-only\">Versions</caption>") == 25
    assert ">1</a></th>" in last  # the oldest version is on the last page
    # The log summary: one aggregate per version over the million records of the last day.
    endpoint = http.get("/ui/endpoints/big").text
    summary = endpoint.split("Inference log per version", 1)[1].split("</table>", 1)[0]
    counts = [int(n.replace(",", "")) for n in re.findall(
        r'<td class="num">([\d,]+)</td><td class="num">[\d,]+</td>', summary)]
    assert len(counts) == 3 and sum(counts) == RECORDS, counts
    with capsys.disabled():
        print("\npage times with 10,000 versions and 1,000,000 records:")
        for path, seconds in times.items():
            print(f"  {path:40s} {seconds * 1000:8.1f} ms")
