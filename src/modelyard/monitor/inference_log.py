"""The inference log writer: sampled, redacted, asynchronous and bounded.

The hot path pays one random draw and one append (references to the arrays it already has;
nothing is copied or encoded there). A background thread takes what is buffered every flush
interval, turns arrays into JSON values, applies the endpoint's redaction (field rules and the
PII patterns) and writes the batch with one executemany. A full buffer drops the sample and
counts it: logging never slows or fails a request. See docs/decisions/0014.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from modelyard.domain.registry import Endpoint
from modelyard.governance.redaction import redact
from modelyard.store import inference_log as repo
from modelyard.store.db import Database, EncodedJSON

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

log = logging.getLogger("modelyard.server")

# (unix time, endpoint name, redaction rules, version ref, request id, status, seconds,
#  rows, inputs, outputs, prediction)
Sample = tuple[float, str, Mapping[str, str], str, str | None, int, float, int,
               Mapping[str, Any] | None, Mapping[str, Any] | None, float | None]


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            cleaned = value.astype(object)
            cleaned[~np.isfinite(value)] = None  # JSON has no NaN
            return cleaned.tolist()
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


_NUMBERS = frozenset("biuf")


def _clean(value: Mapping[str, Any], rules: Mapping[str, str]) -> dict[str, Any]:
    """Redacted: field rules by name, PII patterns in text. Arrays of numbers hold no text
    to scan, so they go to the encoder as they are (it encodes them in C, NaN as null)."""
    out: dict[str, Any] = {}
    for name, item in value.items():
        rule = rules.get(str(name))
        if rule is None and isinstance(item, np.ndarray) and item.dtype.kind in _NUMBERS:
            out[str(name)] = item if item.flags.c_contiguous else np.ascontiguousarray(item)
        else:
            out.update(redact({str(name): _plain(item)}, rules))
    return out


def payload(value: Mapping[str, Any] | None, rules: Mapping[str, str],
            max_bytes: int) -> EncodedJSON | None:
    """What is stored of one side of a request: its redacted JSON, encoded once, or a marker
    saying how big it was when over ``max_bytes`` (a 50 MB image batch is not a log record)."""
    if value is None:
        return None
    # A field over the limit on its own would make the record a marker anyway: its text is not
    # scanned for PII first (megabytes of it hold the GIL, and so stall the server, for seconds).
    for name, item in value.items():
        if rules.get(str(name)) is None and not (
                isinstance(item, np.ndarray) and item.dtype.kind in _NUMBERS):
            size = len(orjson.dumps(_plain(item), default=str))
            if size > max_bytes:
                return _marker(size)
    cleaned = _clean(value, rules)
    try:
        encoded = orjson.dumps(cleaned, option=_JSON_OPTIONS)
    except TypeError:  # an array orjson cannot take (e.g. float16): as plain lists
        encoded = orjson.dumps(_plain(cleaned), option=_JSON_OPTIONS)
    if len(encoded) > max_bytes:
        return _marker(len(encoded))
    return EncodedJSON(encoded.decode())


def _marker(size: int) -> EncodedJSON:
    return EncodedJSON(orjson.dumps({"_truncated": True, "bytes": size}).decode())


class InferenceLog:
    def __init__(self, db: Database, *, capacity: int = 10_000, flush_interval_s: float = 0.5,
                 batch_size: int = 1_000, max_payload_bytes: int = 64 * 1024,
                 max_per_s: float = 0.0, registry: CollectorRegistry | None = None,
                 draw: Callable[[], float] = random.random,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        # At most this many records a second per endpoint (0: no cap): above it the share
        # sampled shrinks so that the log costs the same at 100 or 10,000 requests a second.
        self.max_per_s = max_per_s
        self._clock = clock
        # endpoint -> [second, requests, factor, logged]
        self._rates: dict[str, list[float]] = {}
        self.capacity = capacity
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.max_payload_bytes = max_payload_bytes
        self._draw = draw
        self._buffer: deque[Sample] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flush_lock = threading.Lock()
        self.written = self.dropped = self.failed = 0
        self._records = Counter("modelyard_inference_log_records", "Inference log samples, "
                                "by what became of them.", ("result",), registry=registry) \
            if registry is not None else None
        if registry is not None:
            Gauge("modelyard_inference_log_buffered", "Samples waiting to be written.",
                  registry=registry).set_function(lambda: len(self._buffer))

    # -- the hot path -------------------------------------------------------------------
    def offer(self, endpoint: Endpoint, version: str, request_id: str | None, status: int,
              seconds: float, rows: int, inputs: Mapping[str, Any] | None,
              outputs: Mapping[str, Any] | None, prediction: float | None) -> bool:
        """Keep this request for the log if it is sampled and there is room; never blocks."""
        share = endpoint.log_sample
        if share <= 0.0:
            return False
        state = None
        if self.max_per_s > 0:
            state = self._rate(endpoint.name)
            if state[3] >= self.max_per_s:  # the cap holds within a second too (a burst)
                return False
            share *= state[2]
        if share < 1.0 and self._draw() >= share:
            return False
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            if self._records is not None:
                self._records.labels("dropped").inc()
            return False
        if state is not None:
            state[3] += 1
        self._buffer.append((time.time(), endpoint.name, endpoint.redaction, version,
                             request_id, status, seconds, rows, inputs, outputs, prediction))
        if len(self._buffer) >= self.batch_size:
            self._wake.set()
        return True

    def _rate(self, endpoint: str) -> list[float]:
        """[second, requests, factor, logged] of an endpoint. The factor is min(1, cap / the
        previous second's requests): a uniform sample within each second (not its first N),
        following the traffic a second behind; ``logged`` enforces the cap within a second."""
        second = int(self._clock())
        state = self._rates.get(endpoint)
        if state is None:
            state = self._rates[endpoint] = [second, 0.0, 1.0, 0.0]
        elif state[0] != second:
            seen = state[1] if state[0] == second - 1 else 0.0
            state[:] = [second, 0.0, 1.0 if seen <= self.max_per_s else self.max_per_s / seen,
                        0.0]
        state[1] += 1
        return state

    # -- the writer thread --------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="modelyard-inference-log",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Write what is buffered (within ``timeout_s``), then end the thread."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> int:
        """Write everything buffered now; the number of records written."""
        written = 0
        with self._flush_lock:
            while self._buffer:
                taken = [self._buffer.popleft()
                         for _ in range(min(self.batch_size, len(self._buffer)))]
                written += self._write(taken)
        return written

    def _write(self, samples: list[Sample]) -> int:
        try:
            records = [self._record(s) for s in samples]
            with self.db.transaction() as session:
                repo.insert_many(session, records)
        except Exception:  # the log must not take the server down; the loss is counted
            self.failed += len(samples)
            if self._records is not None:
                self._records.labels("failed").inc(len(samples))
            log.warning("could not write %d inference log records", len(samples),
                        exc_info=True)
            return 0
        self.written += len(records)
        if self._records is not None:
            self._records.labels("written").inc(len(records))
        return len(records)

    def _record(self, sample: Sample) -> dict[str, Any]:
        (at, endpoint, rules, version, request_id, status, seconds, rows, inputs, outputs,
         prediction) = sample
        return {"at": datetime.fromtimestamp(at, UTC), "endpoint": endpoint,
                "version": version, "request_id": request_id, "status": status,
                "latency_ms": round(seconds * 1000, 3), "rows": rows,
                "inputs": payload(inputs, rules, self.max_payload_bytes),
                "outputs": payload(outputs, rules, self.max_payload_bytes),
                "prediction": prediction}

    # -- retention ----------------------------------------------------------------------
    def expire(self, retention_days: float, now: datetime | None = None) -> int:
        """Delete records older than the retention, in chunks; the number deleted."""
        if retention_days <= 0:
            return 0
        cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
        total = 0
        while True:
            with self.db.transaction() as session:
                gone = repo.delete_before(session, cutoff)
            total += gone
            if gone == 0:
                return total
