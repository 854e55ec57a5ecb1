"""The data of a retraining cycle: labelled answers from the inference log and datasets read
from a URL, turned into one table (feature columns and a label), and the holdout split.

Datasets are CSV (with a header row) or JSON lines (one object per row). ``http(s)`` URLs go
through the guarded outbound client (the ``outbound_allow`` setting; docs/decisions/0006),
anything else through fsspec (local files, ``file://``, ``s3://`` with the s3 extra).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.domain.errors import ValidationFailed
from modelyard.domain.registry import fingerprint
from modelyard.domain.retraining import DataWindow, Holdout
from modelyard.domain.signature import Signature

MAX_DATASET_BYTES = 512 * 1024 * 1024


class DataUnavailable(ValidationFailed):
    """Not enough (or no readable) data: retrying the same window would fail the same way."""

    code = "retrain_data_unavailable"


@dataclass
class Table:
    """Rows of numeric features and a label, with where they came from."""

    features: tuple[str, ...]
    x: np.ndarray  # (rows, features), float64
    y: np.ndarray  # (rows,)
    sources: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def column(self, name: str) -> np.ndarray:
        return self.x[:, self.features.index(name)]

    def columns(self) -> dict[str, np.ndarray]:
        return {name: self.x[:, i] for i, name in enumerate(self.features)}

    def take(self, index: np.ndarray) -> Table:
        return Table(self.features, self.x[index], self.y[index], self.sources)

    @property
    def fingerprint(self) -> str:
        """sha256 over the feature names, the features and the labels."""
        digest = hashlib.sha256()
        for part in (repr(self.features), fingerprint(self.x), fingerprint(self.y)):
            digest.update(part.encode())
        return "sha256:" + digest.hexdigest()


def _label_array(labels: Sequence[Any]) -> np.ndarray:
    values = np.asarray(labels)
    if values.dtype.kind == "f" and values.size and np.all(values == np.round(values)):
        return values.astype(np.int64)  # 1.0/0.0 labels of a classifier stay classes
    return values


def _cell(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


# -- the inference log ------------------------------------------------------------------------
def from_log(records: Sequence[Mapping[str, Any]], names: Sequence[str] = ()
             ) -> tuple[Table, int]:
    """Labelled answers (``store.inference_log.labelled``) as a table, and how many records
    were skipped (truncated payloads, a label that does not match the rows). One 2-D input
    gives one column per feature (named by ``names``, else ``INPUT[j]``); several inputs of
    one value per row give a column each, named by the input."""
    rows: list[list[float]] = []
    labels: list[Any] = []
    features: tuple[str, ...] | None = None
    skipped = 0
    for record in records:
        inputs, label = record.get("inputs"), record.get("label")
        if not isinstance(inputs, Mapping) or not inputs or inputs.get("_truncated"):
            skipped += 1
            continue
        try:
            block, seen = _block(inputs)
        except (TypeError, ValueError):
            skipped += 1
            continue
        count = block.shape[0]
        wanted = label if isinstance(label, list) else [label]
        if len(wanted) != count or any(v is None or isinstance(v, list | dict)
                                       for v in wanted):
            skipped += 1
            continue
        if features is None:
            features = tuple(names) if names else seen
            if len(features) != block.shape[1]:
                raise DataUnavailable(f"data.features names {len(features)} features; the "
                                      f"logged inputs have {block.shape[1]}",
                                      field="data.features")
        if block.shape[1] != len(features):
            skipped += 1
            continue
        rows.extend(block.tolist())
        labels.extend(wanted)
    if features is None:
        return Table(tuple(names), np.zeros((0, len(names))), np.zeros(0)), skipped
    return Table(features, np.asarray(rows, dtype=np.float64).reshape(-1, len(features)),
                 _label_array(labels)), skipped


def _block(inputs: Mapping[str, Any]) -> tuple[np.ndarray, tuple[str, ...]]:
    if len(inputs) == 1:
        name, value = next(iter(inputs.items()))
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        if array.ndim != 2:
            raise ValueError("not a table")
        return array, tuple(f"{name}[{j}]" for j in range(array.shape[1]))
    parts = []
    for value in inputs.values():
        array = np.asarray(value, dtype=np.float64)
        if array.ndim == 2 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 1:
            raise ValueError("several inputs must hold one value per row each")
        parts.append(array)
    return np.column_stack(parts), tuple(str(k) for k in inputs)


# -- datasets -----------------------------------------------------------------------------------
def read_bytes(url: str, outbound_allow: Sequence[str] = ()) -> bytes:
    """The dataset's bytes: http(s) through the guarded client, the rest through fsspec."""
    scheme = url.partition("://")[0].lower() if "://" in url else "file"
    if scheme in ("http", "https"):
        from modelyard.governance.outbound import guarded_client

        with guarded_client(outbound_allow, timeout=60.0) as http, \
                http.stream("GET", url) as response:
            if response.status_code != 200:
                raise DataUnavailable(f"GET {url} answered {response.status_code}",
                                      field="data.dataset_url")
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_DATASET_BYTES:
                    raise DataUnavailable(f"{url} is over {MAX_DATASET_BYTES} bytes",
                                          field="data.dataset_url")
                chunks.append(chunk)
            return b"".join(chunks)
    import fsspec

    try:
        with fsspec.open(url, "rb") as fh:
            data = fh.read(MAX_DATASET_BYTES + 1)
    except (OSError, ValueError, ImportError) as exc:
        raise DataUnavailable(f"cannot read {url}: {exc}", field="data.dataset_url") from exc
    if len(data) > MAX_DATASET_BYTES:
        raise DataUnavailable(f"{url} is over {MAX_DATASET_BYTES} bytes",
                              field="data.dataset_url")
    return bytes(data)


def parse_dataset(data: bytes, url: str) -> list[dict[str, Any]]:
    """CSV with a header row, or JSON lines (``.jsonl``/``.ndjson``), as dicts per row."""
    text = data.decode("utf-8-sig")
    path = url.split("?")[0].lower()
    if path.endswith((".jsonl", ".ndjson")):
        out = []
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise DataUnavailable(f"{url} line {i + 1} is not an object",
                                          field="data.dataset_url")
                out.append(row)
        return out
    if not path.endswith((".csv", ".txt")):
        raise DataUnavailable(f"{url}: datasets are .csv (with a header row) or .jsonl",
                              field="data.dataset_url")
    return [{k: _cell(v) for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def from_rows(rows: Sequence[Mapping[str, Any]], window: DataWindow, source: str,
              where: str = "data.dataset_url") -> Table:
    if not rows:
        raise DataUnavailable(f"{source} holds no rows", field=where)
    columns = list(rows[0])
    if window.label not in columns:
        raise DataUnavailable(f"{source} has no label column {window.label!r} (columns: "
                              f"{', '.join(columns)})", field="data.label")
    features = window.features or tuple(c for c in columns if c != window.label)
    missing = [f for f in features if f not in columns]
    if missing:
        raise DataUnavailable(f"{source} has no column {missing[0]!r}", field="data.features")
    try:
        x = np.asarray([[float(row[f]) for f in features] for row in rows], dtype=np.float64)
    except (TypeError, ValueError, KeyError) as exc:
        raise DataUnavailable(f"{source}: features must be numbers in every row ({exc})",
                              field=where) from exc
    y = _label_array([row.get(window.label) for row in rows])
    return Table(tuple(features), x, y, [{"source": source, "rows": len(rows)}])


def dataset(url: str, window: DataWindow, outbound_allow: Sequence[str] = (),
            where: str = "data.dataset_url") -> Table:
    return from_rows(parse_dataset(read_bytes(url, outbound_allow), url), window, url, where)


def combine(first: Table, second: Table) -> Table:
    if first.x.shape[1] != second.x.shape[1]:
        raise DataUnavailable(f"the dataset has {first.x.shape[1]} features, the inference "
                              f"log {second.x.shape[1]}: name them in data.features",
                              field="data.features")
    y = np.concatenate([first.y.astype(object), second.y.astype(object)])
    return Table(first.features, np.vstack([first.x, second.x]), _label_array(y.tolist()),
                 first.sources + second.sources)


def split(table: Table, holdout: Holdout) -> tuple[Table, Table]:
    """(train, holdout): a permutation by the holdout's seed, so every attempt of a cycle
    splits the same rows the same way."""
    n = len(table)
    order = np.random.default_rng(holdout.seed).permutation(n)
    cut = max(1, round(n * holdout.share))
    if n - cut < 2:
        raise DataUnavailable(f"{n} rows are too few to hold {holdout.share:.0%} out",
                              field="holdout.share")
    return table.take(np.sort(order[cut:])), table.take(np.sort(order[:cut]))


# -- predicting on a table ------------------------------------------------------------------------
def model_inputs(signature: Signature, table: Table) -> dict[str, np.ndarray]:
    """The table as the model's inputs: all features as its one input, or each input from
    the feature of its name."""
    specs = signature.inputs
    if len(specs) == 1:
        spec = specs[0]
        return {spec.name: table.x.astype(spec.numpy_dtype)}
    out = {}
    for spec in specs:
        if spec.name not in table.features:
            raise ValidationFailed(f"the model's input {spec.name!r} is not a feature of the "
                                   f"data ({', '.join(table.features)})", field="data.features")
        column = table.column(spec.name).astype(spec.numpy_dtype)
        out[spec.name] = column.reshape(-1, 1) if len(spec.shape) == 2 else column
    return out


def predictions(outputs: Mapping[str, np.ndarray], task: str
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(predicted labels or values, class scores or None) from a model's outputs: ``label``
    and ``probabilities`` (classifiers), ``prediction``, or the one output there is."""
    if "label" in outputs:
        return np.asarray(outputs["label"]).ravel(), (
            np.asarray(outputs["probabilities"]) if "probabilities" in outputs else None)
    key = "prediction" if "prediction" in outputs else next(iter(outputs))
    value = np.asarray(outputs[key])
    if task == "classification" and value.ndim == 2 and value.shape[1] > 1:
        return value.argmax(axis=1), value  # scores per class
    return value.ravel(), None
