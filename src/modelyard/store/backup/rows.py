"""Table rows as portable JSON lines, so a SQLite backup loads into PostgreSQL and back.

Each line is one row: a JSON array of its values in the manifest's column order. Each column
has a *kind* (from its SQL type) that says how its values are written: numbers, booleans and
strings as themselves; datetimes as ISO 8601 in UTC; bytes as base64; non-finite floats as
``"NaN"``/``"Infinity"``/``"-Infinity"``; JSON columns as their stored JSON *text*, so SQL
NULL (``null``) and a JSON null (``"null"``) stay apart and nothing is re-encoded.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import types as sqltypes

from modelyard.store.db import EncodedJSON

KINDS = frozenset({"int", "float", "decimal", "bool", "str", "datetime", "date", "json",
                   "bytes"})
_SPECIAL_FLOATS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class UnsupportedColumn(ValueError):
    pass


def column_kind(type_: sqltypes.TypeEngine[Any]) -> str:
    """The kind of a reflected column type (checked most specific first: a Boolean is no
    Integer, but a Float is a Numeric and an Enum a String)."""
    for cls, kind in ((sqltypes.JSON, "json"), (sqltypes.Boolean, "bool"),
                      (sqltypes.DateTime, "datetime"), (sqltypes.Date, "date"),
                      (sqltypes.Integer, "int"), (sqltypes.Float, "float"),
                      (sqltypes.Numeric, "decimal"), (sqltypes.String, "str"),
                      (sqltypes.LargeBinary, "bytes")):
        if isinstance(type_, cls):
            return kind
    raise UnsupportedColumn(f"no portable encoding for the SQL type {type_!r}")


def _utc(stamp: datetime) -> datetime:
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _float_out(value: Any) -> Any:
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _int_in(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _float_in(value: Any) -> float:
    if isinstance(value, str) and value in _SPECIAL_FLOATS:
        return _SPECIAL_FLOATS[value]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _bool_in(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def _text_in(parse: Callable[[str], Any]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {value!r}")
        return parse(value)
    return decode


def _json_in(text: str) -> EncodedJSON:
    orjson.loads(text)  # PostgreSQL checks JSON text, SQLite would keep garbage
    return EncodedJSON(text)  # stored as is: the text the source held


# One function per kind and direction, looked up once per column: a restore decodes
# millions of values (the inference log), so no per-value dispatch on the kind.
_ENCODE: dict[str, Callable[[Any], Any]] = {
    "int": int, "float": _float_out, "decimal": str, "bool": bool, "str": str,
    "datetime": lambda v: _utc(v).isoformat(), "date": lambda v: v.isoformat(),
    "json": str, "bytes": lambda v: base64.b64encode(bytes(v)).decode("ascii"),
}
_DECODE: dict[str, Callable[[Any], Any]] = {
    "int": _int_in, "float": _float_in, "bool": _bool_in, "str": _text_in(lambda v: v),
    "datetime": _text_in(lambda v: _utc(datetime.fromisoformat(v))),
    "date": _text_in(date.fromisoformat), "decimal": _text_in(Decimal),
    "bytes": _text_in(lambda v: base64.b64decode(v, validate=True)),
    "json": _text_in(_json_in),
}


def encode_value(kind: str, value: Any) -> Any:
    """A value read from the source (JSON columns read as text) as it goes on the line."""
    return None if value is None else _ENCODE[kind](value)


def decode_value(kind: str, value: Any) -> Any:
    """A value from a line as it is bound on insert; raises ValueError for one that does not
    fit its kind."""
    return None if value is None else _DECODE[kind](value)


class RowCodec:
    """Encodes and decodes whole rows of one table (its columns' kinds, in order)."""

    def __init__(self, kinds: Sequence[str]) -> None:
        self.encoders = [_ENCODE[k] for k in kinds]
        self.decoders = [_DECODE[k] for k in kinds]

    def encode(self, row: Sequence[Any]) -> list[Any]:
        return [None if v is None else f(v) for f, v in zip(self.encoders, row, strict=True)]

    def decode(self, values: Sequence[Any]) -> list[Any]:
        if len(values) != len(self.decoders):
            raise ValueError(f"expected a list of {len(self.decoders)} values")
        return [None if v is None else f(v) for f, v in zip(self.decoders, values, strict=True)]
