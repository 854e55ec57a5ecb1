"""A payload field too big to be logged is not scanned for PII first: the record is a marker
anyway, and scanning megabytes of text holds the GIL, stalling the whole server."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from modelyard.monitor import inference_log


def test_an_oversize_text_field_becomes_the_marker_without_a_scan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[Any] = []
    real = inference_log.redact
    monkeypatch.setattr(inference_log, "redact", lambda v, r: scanned.append(v) or real(v, r))
    text = np.array(["x" * 200_000], dtype=object)
    stored = orjson.loads(str(inference_log.payload({"text": text}, {}, 64 * 1024)))
    assert stored == {"_truncated": True, "bytes": 200_004}
    assert scanned == []
    # A small one is scanned and kept; a big field the endpoint drops does not count.
    small = {"text": np.array(["mail john@example.com"], dtype=object), "image": text}
    stored = orjson.loads(str(inference_log.payload(small, {"image": "drop"}, 64 * 1024)))
    assert stored == {"text": ["mail [EMAIL]"]}
