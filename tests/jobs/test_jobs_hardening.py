"""A cron expression of valid syntax for a date that never comes (31 February) is refused
when the schedule is set; it was a 500 (croniter's error escaped)."""

from __future__ import annotations

import httpx
import pytest

from modelyard.domain.errors import ValidationFailed
from modelyard.jobs.schedules import check_cron
from modelyard.serving.server import BackgroundServer
from support import API, assert_problem


@pytest.mark.parametrize("cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6 *"])
def test_a_date_that_never_comes_is_refused(cron: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_cron(cron)
    assert caught.value.field == "cron" and "never fires" in caught.value.detail
    assert check_cron("0 0 29 2 *") == "0 0 29 2 *"  # leap years come


def test_the_api_answers_422(server: BackgroundServer, admin_key: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30,
                      headers={"authorization": f"Bearer {admin_key}"}) as http:
        body = {"cron": "0 0 31 2 *", "kind": "monitor", "payload": {"endpoint": "churn"}}
        assert_problem(http.put(f"{API}/schedules/s1", json=body), 422, "validation_failed",
                       field="cron")
        assert http.get(f"{API}/schedules").json() == []
