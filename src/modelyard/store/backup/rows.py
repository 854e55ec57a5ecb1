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
from collections.abc import Sequence
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


def encode_value(kind: str, value: Any) -> Any:
    """A value read from the source (JSON columns read as text) as it goes on the line."""
    if value is None:
        return None
    if kind == "datetime":
        stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return stamp.isoformat()
    if kind == "date":
        return value.isoformat()
    if kind == "float":
        value = float(value)
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if kind == "decimal":
        return str(value)
    if kind == "bytes":
        return base64.b64encode(bytes(value)).decode("ascii")
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    return str(value)  # str, json (its text)


def decode_value(kind: str, value: Any) -> Any:
    """A value from a line as it is bound on insert; raises ValueError for one that does not
    fit its kind."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, str) and value in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[value]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    if kind == "datetime":
        stamp = datetime.fromisoformat(value)
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    if kind == "bytes":
        return base64.b64decode(value, validate=True)
    if kind == "json":
        orjson.loads(value)  # PostgreSQL checks JSON text, SQLite would keep garbage
        return EncodedJSON(value)  # stored as is: the text the source held
    return value


def encode_row(kinds: Sequence[str], row: Sequence[Any]) -> list[Any]:
    return [encode_value(k, v) for k, v in zip(kinds, row, strict=True)]
