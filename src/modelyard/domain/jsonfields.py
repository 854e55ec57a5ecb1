"""Reading stored JSON back into domain values: each helper names the offending field.

Shared by the monitoring records (profiles, drift and quality reports, alert rules and
states): they are written by jobs, stored, and read back by other processes, so ``from_dict``
must refuse anything malformed with a ``ValidationFailed`` that says where.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelyard.domain.errors import ValidationFailed, reject_unknown


def obj(data: Any, known: set[str], what: str, where: str) -> dict[str, Any]:
    """``data`` as a dict with only ``known`` keys."""
    if not isinstance(data, Mapping):
        raise ValidationFailed(f"{what} must be an object", field=where)
    return reject_unknown(dict(data), known, f"{what} field", where)


def required(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ValidationFailed(f"{where}.{key} is required", field=f"{where}.{key}")
    return data[key]


def schema(data: Mapping[str, Any], version: int, where: str) -> None:
    got = required(data, "schema_version", where)
    if got != version or isinstance(got, bool):
        raise ValidationFailed(f"{where}.schema_version {got!r} is not supported (this code "
                               f"reads version {version})", field=f"{where}.schema_version")


def integer(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValidationFailed(f"{where} must be an integer >= {low}", field=where)
    return value


def number(value: Any, where: str, *, optional: bool = False) -> Any:
    """A finite float (or None when ``optional``)."""
    if value is None and optional:
        return None
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value)):
        raise ValidationFailed(f"{where} must be a finite number", field=where)
    return float(value)


def share(value: Any, where: str, *, optional: bool = False) -> Any:
    out = number(value, where, optional=optional)
    if out is not None and not 0 <= out <= 1:
        raise ValidationFailed(f"{where} must be from 0 to 1", field=where)
    return out


def numbers(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise ValidationFailed(f"{where} must be a list of numbers", field=where)
    return tuple(number(v, f"{where}[{i}]") for i, v in enumerate(value))


def string(value: Any, where: str, *, optional: bool = False,
           choices: tuple[str, ...] | None = None) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{where} must be a string", field=where)
    if choices is not None and value not in choices:
        raise ValidationFailed(f"{where} must be one of {', '.join(choices)}; got {value!r}",
                               field=where)
    return value


def boolean(value: Any, where: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ValidationFailed(f"{where} must be true or false", field=where)
    return value


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN/Infinity: such values are written as null."""
    return value if value is None or math.isfinite(value) else None
