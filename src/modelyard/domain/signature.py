"""Model signatures: named, typed, shaped inputs and outputs, and the rules that check them.

A dimension of ``-1`` is free (any size); the first dimension is the batch dimension by
convention. Validation is strict on purpose: a string is never parsed into a number, a float
is never silently truncated to an integer, and NaN/Inf are refused unless a tensor allows them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.domain.errors import InvalidInput, ValidationFailed

# Canonical dtype names, the numpy dtype each maps to, and the OIP v2 datatype.
DTYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "bool": (np.dtype(np.bool_), "BOOL"),
    "uint8": (np.dtype(np.uint8), "UINT8"),
    "uint16": (np.dtype(np.uint16), "UINT16"),
    "uint32": (np.dtype(np.uint32), "UINT32"),
    "uint64": (np.dtype(np.uint64), "UINT64"),
    "int8": (np.dtype(np.int8), "INT8"),
    "int16": (np.dtype(np.int16), "INT16"),
    "int32": (np.dtype(np.int32), "INT32"),
    "int64": (np.dtype(np.int64), "INT64"),
    "float16": (np.dtype(np.float16), "FP16"),
    "float32": (np.dtype(np.float32), "FP32"),
    "float64": (np.dtype(np.float64), "FP64"),
    "string": (np.dtype(np.object_), "BYTES"),
}
OIP_TO_DTYPE = {oip: name for name, (_, oip) in DTYPES.items()}


def dtype_name(dtype: Any) -> str:
    """The canonical name of a numpy dtype (strings and objects are ``string``)."""
    dt = np.dtype(dtype)
    if dt.kind in ("U", "S", "O"):
        return "string"
    name = dt.name
    if name not in DTYPES:
        raise ValidationFailed(f"unsupported dtype {dt!s}")
    return name


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    allow_nan: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValidationFailed("tensor name must not be empty")
        if self.dtype not in DTYPES:
            raise ValidationFailed(
                f"unknown dtype {self.dtype!r} for tensor {self.name!r}; "
                f"use one of {', '.join(DTYPES)}",
                field=self.name,
            )
        if any((not isinstance(d, int)) or d < -1 for d in self.shape):
            raise ValidationFailed(
                f"shape of {self.name!r} must be integers >= -1, got {list(self.shape)}",
                field=self.name,
            )

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return DTYPES[self.dtype][0]

    @property
    def oip_datatype(self) -> str:
        return DTYPES[self.dtype][1]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.allow_nan:
            out["allow_nan"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TensorSpec:
        if not isinstance(data, Mapping):
            raise ValidationFailed(f"a tensor spec must be an object, got {data!r}",
                                   field="signature")
        name, dtype, shape = data.get("name"), data.get("dtype"), data.get("shape", [-1])
        if not isinstance(name, str) or not isinstance(dtype, str):
            raise ValidationFailed(f"a tensor spec needs a string 'name' and 'dtype': {data!r}",
                                   field="signature")
        if not isinstance(shape, list | tuple) or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise ValidationFailed(f"shape of {name!r} must be a list of integers, got "
                                   f"{shape!r}", field=f"signature.{name}")
        return cls(name=name, dtype=dtype, shape=tuple(shape),
                   allow_nan=data.get("allow_nan", False) is True)

    @classmethod
    def from_array(cls, name: str, array: np.ndarray) -> TensorSpec:
        shape = (-1, *array.shape[1:]) if array.ndim else ()
        return cls(name=name, dtype=dtype_name(array.dtype), shape=tuple(shape))


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = field(default=())

    def __post_init__(self) -> None:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs]
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValidationFailed(f"duplicate {kind} names: {sorted(dupes)}")

    def input(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        if not isinstance(data, Mapping) or not isinstance(data.get("inputs"), list):
            raise ValidationFailed("signature must be an object with an 'inputs' list")
        return cls(
            inputs=tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_dict(s) for s in data.get("outputs") or []),
        )

    @classmethod
    def infer(
        cls, sample: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray] | None = None
    ) -> Signature:
        """A signature from a sample input (and the outputs a model gave for it)."""
        return cls(
            inputs=tuple(TensorSpec.from_array(n, np.asarray(a)) for n, a in sample.items()),
            outputs=tuple(
                TensorSpec.from_array(n, np.asarray(a)) for n, a in (outputs or {}).items()
            ),
        )

    def example(self, rows: int = 1) -> dict[str, np.ndarray]:
        """A zero-filled input that satisfies the signature (used to warm a model up)."""
        out: dict[str, np.ndarray] = {}
        for spec in self.inputs:
            shape = tuple(rows if (i == 0 and d == -1) else (1 if d == -1 else d)
                          for i, d in enumerate(spec.shape))
            if spec.dtype == "string":
                out[spec.name] = np.full(shape, "", dtype=object)
            else:
                out[spec.name] = np.zeros(shape, dtype=spec.numpy_dtype)
        return out

    def validate(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Check and convert decoded inputs; raise :class:`InvalidInput` naming the field."""
        expected = {s.name for s in self.inputs}
        unknown = [n for n in inputs if n not in expected]
        if unknown:
            raise InvalidInput(
                f"unknown input {unknown[0]!r}; the model takes {sorted(expected)}",
                field=f"inputs.{unknown[0]}",
            )
        arrays: dict[str, np.ndarray] = {}
        batch: int | None = None
        for spec in self.inputs:
            if spec.name not in inputs:
                raise InvalidInput(f"missing input {spec.name!r}", field=f"inputs.{spec.name}")
            array = coerce(spec, inputs[spec.name])
            if array.ndim and spec.shape and spec.shape[0] == -1:
                if batch is not None and array.shape[0] != batch:
                    raise InvalidInput(
                        f"input {spec.name!r} has {array.shape[0]} rows but another input has "
                        f"{batch}",
                        field=f"inputs.{spec.name}",
                    )
                batch = array.shape[0]
            arrays[spec.name] = array
        return arrays


def coerce(spec: TensorSpec, value: Any) -> np.ndarray:
    """Turn one decoded value into an array of the spec's dtype and shape, or refuse it."""
    where = f"inputs.{spec.name}"
    if isinstance(value, np.ndarray):
        array = value
    else:
        try:
            # Strings are read as objects so that numbers mixed in are not made into text.
            array = np.asarray(value, dtype=object if spec.dtype == "string" else None)
            if array.dtype.kind == "f" and spec.numpy_dtype.kind in "iu":
                array = exact_integers(value, array)
        except ValueError as exc:  # ragged nested lists
            raise InvalidInput(
                f"input {spec.name!r} is not a rectangular array: {exc}", field=where
            ) from exc
    array = _convert_dtype(spec, array, where)
    _check_shape(spec, array, where)
    if spec.dtype.startswith("float") and not spec.allow_nan and not np.isfinite(array).all():
        raise InvalidInput(
            f"input {spec.name!r} contains NaN or Inf, which this model does not accept",
            field=where,
        )
    return array


def exact_integers(value: Any, array: np.ndarray) -> np.ndarray:
    """numpy reads [0, 2**63] as float64; keep such lists exact when every item is an int."""
    objects = np.asarray(value, dtype=object)
    if objects.size and all(isinstance(v, int) and not isinstance(v, bool)
                            for v in objects.flat):
        return objects
    return array


def _convert_dtype(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
    target = spec.numpy_dtype
    kind = array.dtype.kind
    if array.size == 0 and spec.dtype != "string":
        return array.astype(target)  # an empty batch has no values to check
    if spec.dtype == "string":
        if kind in ("U", "S"):
            return array.astype(object)
        if kind == "O" and all(isinstance(v, str | bytes) for v in array.flat):
            return array
        raise InvalidInput(f"input {spec.name!r} must contain strings", field=where)
    if kind == "O":
        if target.kind in "iu" and all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in array.flat):
            return _checked_ints(spec, array, where)
        raise InvalidInput(
            f"input {spec.name!r} contains null, nested or mixed-type values", field=where
        )
    if kind in ("U", "S"):
        raise InvalidInput(
            f"input {spec.name!r} must be {spec.dtype}, got strings", field=where
        )
    if target.kind == "b":
        if kind != "b":
            raise InvalidInput(f"input {spec.name!r} must be bool, got {array.dtype}", field=where)
        return array
    if kind == "b":
        raise InvalidInput(f"input {spec.name!r} must be {spec.dtype}, got bool", field=where)
    if target.kind == "f":
        return array if array.dtype == target else array.astype(target)
    # integer target
    if kind == "f":
        raise InvalidInput(
            f"input {spec.name!r} must be {spec.dtype}, got floating-point numbers",
            field=where,
        )
    return _checked_ints(spec, array, where)


def _checked_ints(spec: TensorSpec, array: np.ndarray, where: str) -> np.ndarray:
    target = spec.numpy_dtype
    if array.dtype != target and array.size:
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise InvalidInput(
                f"input {spec.name!r} has values outside the range of {spec.dtype}", field=where
            )
    return array if array.dtype == target else array.astype(target)


def _check_shape(spec: TensorSpec, array: np.ndarray, where: str) -> None:
    if array.ndim != len(spec.shape):
        raise InvalidInput(
            f"input {spec.name!r} must have {len(spec.shape)} dimensions "
            f"(shape {list(spec.shape)}), got shape {list(array.shape)}",
            field=where,
        )
    for axis, (want, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
        if want != -1 and want != got:
            raise InvalidInput(
                f"input {spec.name!r} must have size {want} on axis {axis}, got {got} "
                f"(shape {list(array.shape)})",
                field=where,
            )


def as_input_dict(value: Any, names: Iterable[str]) -> dict[str, Any]:
    """Accept a bare array for a single-input model, else a mapping of name to array."""
    names = list(names)
    if isinstance(value, Mapping):
        return dict(value)
    if len(names) == 1:
        return {names[0]: value}
    raise InvalidInput(f"the model takes several inputs {names}; pass a mapping of name to array")
