"""Request ids on the data plane follow the control plane's rule: the caller's id only if it
is 1-128 printable ASCII characters without spaces, else a new one. (The fast path used to
echo and log any bytes: empty ids, spaces, tabs, Latin-1; labels are joined on these ids.)"""

from __future__ import annotations

import re

import httpx
import pytest

from modelyard.serving.request_id import caller_id

ROW = {"instances": [[0.1, 0.2, 0.3, 0.4]]}


@pytest.mark.parametrize("given", [b"", b"a b", b"a\tb", b"caf\xe9", b"\xff" * 10])
def test_an_unusable_request_id_is_replaced(http: httpx.Client, churn: str,
                                            given: bytes) -> None:
    seen = set()
    for path in (f"/endpoints/{churn}/predict", "/api/v1/endpoints"):
        answer = http.post(path, json=ROW, headers={"x-request-id": given}) \
            if "predict" in path else http.get(path, headers={"x-request-id": given})
        rid = answer.headers["x-request-id"]
        assert rid != given.decode("latin-1")
        assert re.fullmatch(r"[0-9a-f]{24,32}", rid), rid
        seen.add(rid)
    assert len(seen) == 2


def test_a_usable_request_id_is_echoed_and_bounded(http: httpx.Client, churn: str) -> None:
    answer = http.post(f"/endpoints/{churn}/predict", json=ROW,
                       headers={"x-request-id": "order-42/<b>"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "order-42/<b>"
    long = "r" * 300
    answer = http.post(f"/endpoints/{churn}/predict", json=ROW, headers={"x-request-id": long})
    assert answer.headers["x-request-id"] == "r" * 128


def test_caller_id() -> None:
    assert caller_id(b"abc-1") == b"abc-1"
    assert caller_id(b"x" * 200) == b"x" * 128
    assert caller_id(b"") is None
    assert caller_id(b"a\x7fb") is None
    assert caller_id(b"a b") is None


@pytest.mark.parametrize("rid", ["a\u0000b", "a b", "caf\u00e9", "x" * 129, ""])
def test_feedback_names_only_ids_an_answer_can_carry(http: httpx.Client, churn: str,
                                                    rid: str) -> None:
    answer = http.post(f"/endpoints/{churn}/feedback", json=[{"request_id": rid, "label": 1}])
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "body[0].request_id"
    ok = http.post(f"/endpoints/{churn}/feedback",
                   json=[{"request_id": "order-42/<b>", "label": 1}])
    assert ok.status_code == 202, ok.text
