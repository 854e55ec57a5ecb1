"""Tensors as JSON-able values, in the Open Inference Protocol v2 shape:
``{"name", "datatype", "shape", "data"}`` with ``data`` flat (row-major) or nested."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelyard.domain.errors import InvalidInput
from modelyard.domain.signature import DTYPES, OIP_TO_DTYPE, dtype_name, exact_integers

MAX_DIMS = 32  # dimensions of one tensor: no model takes more, and numpy 1.x holds no more


def encode(name: str, array: np.ndarray) -> dict[str, Any]:
    array = np.asarray(array)
    kind = dtype_name(array.dtype)
    data = array.reshape(-1)
    if kind == "string":
        data = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in data.tolist()],
                        dtype=object)
    return {"name": name, "datatype": DTYPES[kind][1], "shape": list(array.shape), "data": data}


def decode(tensor: Any, where: str) -> tuple[str, np.ndarray]:
    """One OIP tensor to ``(name, array)``; raises InvalidInput naming ``where``."""
    if not isinstance(tensor, Mapping):
        raise InvalidInput("each tensor must be an object with name, shape, datatype, data",
                           field=where)
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("tensor needs a string 'name'", field=f"{where}.name")
    where = f"inputs.{name}"
    datatype = tensor.get("datatype")
    if datatype not in OIP_TO_DTYPE:
        raise InvalidInput(
            f"tensor {name!r} has unknown datatype {datatype!r}; use one of "
            f"{', '.join(OIP_TO_DTYPE)}",
            field=f"{where}.datatype",
        )
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise InvalidInput(f"tensor {name!r} needs 'shape', a list of sizes >= 0",
                           field=f"{where}.shape")
    check_rank(shape, name, where)
    if "data" not in tensor:
        raise InvalidInput(f"tensor {name!r} has no 'data'", field=f"{where}.data")
    kind = OIP_TO_DTYPE[datatype]
    try:
        raw = np.asarray(tensor["data"], dtype=object if kind == "string" else None)
        if raw.dtype.kind == "f" and DTYPES[kind][0].kind in "iu":
            raw = exact_integers(tensor["data"], raw)
    except ValueError as exc:
        raise InvalidInput(f"tensor {name!r} data is not rectangular", field=f"{where}.data"
                           ) from exc
    flat = raw.reshape(-1)
    count = math.prod(shape)
    if flat.size != count:
        raise InvalidInput(
            f"tensor {name!r} has {flat.size} values but shape {shape} needs {count}",
            field=f"{where}.data",
        )
    return name, _typed(flat, kind, name, where).reshape(shape)


def check_rank(shape: list[int], name: str, where: str) -> None:
    """A declared shape numpy can hold (it stops at 64 dimensions; 1.x at 32)."""
    if len(shape) > MAX_DIMS:
        raise InvalidInput(f"tensor {name!r} has {len(shape)} dimensions; at most {MAX_DIMS} "
                           "are allowed", field=f"{where}.shape")


def _typed(flat: np.ndarray, kind: str, name: str, where: str) -> np.ndarray:
    target = DTYPES[kind][0]
    if kind == "string":
        if not all(isinstance(v, str | bytes) for v in flat):
            raise InvalidInput(f"tensor {name!r} is BYTES but holds non-strings",
                               field=f"{where}.data")
        return flat
    got = flat.dtype.kind
    if got == "O" and target.kind in "iu":  # big integers kept exact (see exact_integers)
        got = "i"
    ok = (
        (target.kind == "b" and got == "b")
        or (target.kind == "f" and got in "fiu")
        or (target.kind in "iu" and got in "iu")
    )
    if not ok:
        raise InvalidInput(
            f"tensor {name!r} data does not match its datatype {DTYPES[kind][1]}",
            field=f"{where}.data",
        )
    if target.kind in "iu" and flat.size:
        info = np.iinfo(target)
        if int(flat.min()) < info.min or int(flat.max()) > info.max:
            raise InvalidInput(f"tensor {name!r} has values outside {kind}",
                               field=f"{where}.data")
    return flat.astype(target, copy=False)


def decode_many(tensors: Any, where: str = "inputs") -> dict[str, np.ndarray]:
    if not isinstance(tensors, list):
        raise InvalidInput(f"'{where}' must be a list of tensors", field=where)
    out: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(tensors):
        name, array = decode(tensor, f"{where}[{i}]")
        if name in out:
            raise InvalidInput(f"tensor {name!r} appears twice", field=f"{where}[{i}].name")
        out[name] = array
    return out


def encode_many(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    return [encode(name, array) for name, array in arrays.items()]


def to_jsonable(arrays: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Like ``encode_many`` but with plain lists (for storage as JSON)."""
    return [{**t, "data": t["data"].tolist()} for t in encode_many(arrays)]
