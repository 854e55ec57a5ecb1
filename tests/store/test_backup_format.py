"""The backup format's pure parts: portable row values and the manifest's checks."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import NullType

from modelyard.store.backup import BackupInvalid, Manifest
from modelyard.store.backup.rows import (
    UnsupportedColumn,
    column_kind,
    decode_value,
    encode_value,
)
from modelyard.store.db import EncodedJSON


@pytest.mark.parametrize(("type_", "kind"), [
    (Integer(), "int"), (BigInteger(), "int"), (Boolean(), "bool"), (Float(), "float"),
    (postgresql.DOUBLE_PRECISION(), "float"), (Numeric(10, 2), "decimal"),
    (String(12), "str"), (Text(), "str"), (DateTime(timezone=True), "datetime"),
    (sqlite.DATETIME(), "datetime"), (Date(), "date"), (JSON(), "json"),
    (postgresql.JSON(), "json"), (sqlite.JSON(), "json"), (LargeBinary(), "bytes"),
])
def test_reflected_types_have_a_kind(type_: Any, kind: str) -> None:
    assert column_kind(type_) == kind


def test_a_type_without_a_portable_encoding_is_refused() -> None:
    with pytest.raises(UnsupportedColumn, match="no portable encoding"):
        column_kind(NullType())


@pytest.mark.parametrize(("kind", "value"), [
    ("int", 2**62), ("float", 0.1), ("float", -1e300), ("bool", False), ("str", "naïve ✓"),
    ("datetime", datetime(2026, 12, 5, 10, 0, 0, 123456, tzinfo=UTC)),
    ("date", date(2026, 12, 5)), ("decimal", Decimal("12.34")), ("bytes", b"\x00\xffkey"),
])
def test_values_survive_the_line(kind: str, value: Any) -> None:
    line = orjson.dumps([encode_value(kind, value)])
    assert decode_value(kind, orjson.loads(line)[0]) == value


def test_every_kind_has_both_codecs_and_rows_check_their_width() -> None:
    from modelyard.store.backup.rows import _DECODE, _ENCODE, KINDS, RowCodec

    assert set(_ENCODE) == set(_DECODE) == KINDS
    codec = RowCodec(["int", "json", "datetime"])
    stamp = datetime(2026, 12, 5, tzinfo=UTC)
    line = orjson.loads(orjson.dumps(codec.encode([1, '{"a":1}', stamp])))
    assert codec.decode(line) == [1, '{"a":1}', stamp]
    assert codec.decode([None, None, None]) == [None, None, None]
    with pytest.raises(ValueError, match="expected a list of 3 values"):
        codec.decode([1, None])


def test_non_finite_floats_are_written_as_names() -> None:
    for value, name in ((math.inf, "Infinity"), (-math.inf, "-Infinity")):
        assert encode_value("float", value) == name
        assert decode_value("float", name) == value
    assert encode_value("float", math.nan) == "NaN"
    assert math.isnan(decode_value("float", "NaN"))


def test_datetimes_are_written_in_utc() -> None:
    # SQLite gives naive datetimes (Modelyard stores UTC); PostgreSQL gives them in the
    # session's zone: both come out as the same UTC instant.
    naive = datetime(2026, 12, 5, 10, 0)
    zoned = datetime(2026, 12, 5, 11, 0, tzinfo=timezone(timedelta(hours=1)))
    assert encode_value("datetime", naive) == "2026-12-05T10:00:00+00:00"
    assert encode_value("datetime", zoned) == "2026-12-05T10:00:00+00:00"
    assert decode_value("datetime", "2026-12-05T10:00:00").tzinfo == UTC


def test_json_columns_keep_their_text_and_sql_null_apart_from_json_null() -> None:
    text = '{"b":1,"a":[1.5,null]}'
    decoded = decode_value("json", encode_value("json", text))
    assert isinstance(decoded, EncodedJSON) and decoded == text  # stored as is
    assert decode_value("json", "null") == "null"  # a JSON null
    assert decode_value("json", None) is None  # SQL NULL
    with pytest.raises(ValueError):
        decode_value("json", "{not json")


@pytest.mark.parametrize(("kind", "value"), [
    ("int", "1"), ("int", True), ("int", 1.5), ("float", "1.5"), ("bool", 1),
    ("str", 3), ("datetime", "yesterday"), ("bytes", "not base64!"),
])
def test_values_that_do_not_fit_their_kind_are_refused(kind: str, value: Any) -> None:
    with pytest.raises(ValueError):
        decode_value(kind, value)


def _manifest(**changes: Any) -> dict[str, Any]:
    digest = "a" * 64
    doc: dict[str, Any] = {
        "format": "modelyard-backup", "format_version": 1,
        "created_at": "2026-12-05T10:00:00+00:00", "modelyard_version": "0.1.0",
        "revision": "0012", "dialect": "sqlite", "source_database": "sqlite:///y.db",
        "source_artifacts": "/y/artifacts", "audit": {"ok": True, "records": 3},
        "tables": [{"name": "models", "rows": 1,
                    "columns": [{"name": "id", "kind": "int"}]}],
        "artifacts": [{"sha256": digest, "size": 10}],
        "members": {"tables/models.jsonl.gz": {"sha256": "b" * 64, "size": 20},
                    f"artifacts/{digest}.tar": {"sha256": digest, "size": 10}},
    }
    doc.update(changes)
    return doc


def test_a_valid_manifest_parses() -> None:
    manifest = Manifest.parse(orjson.dumps(_manifest()))
    assert manifest.tables[0].member == "tables/models.jsonl.gz"
    assert Manifest.parse(manifest.to_json()) == manifest


@pytest.mark.parametrize(("changes", "field"), [
    ({"format": "tarball"}, "format"),
    ({"revision": 12}, "revision"),
    ({"tables": [{"name": "../etc", "rows": 1, "columns": []}]}, "tables.0.name"),
    ({"tables": [{"name": "models", "rows": -1, "columns": []}]}, "tables.0.rows"),
    ({"tables": [{"name": "models", "rows": 1,
                  "columns": [{"name": "id", "kind": "uuid"}]}]}, "tables.0.columns.0.kind"),
    ({"artifacts": [{"sha256": "xyz", "size": 1}]}, "artifacts.0.sha256"),
    ({"surprise": 1}, "surprise"),
])
def test_a_bad_manifest_names_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(BackupInvalid) as caught:
        Manifest.parse(orjson.dumps(_manifest(**changes)))
    assert caught.value.field == field
    assert caught.value.code == "backup_invalid"


def test_a_newer_format_is_refused_by_name() -> None:
    with pytest.raises(BackupInvalid, match="format 2 is not supported"):
        Manifest.parse(orjson.dumps(_manifest(format_version=2)))


def test_members_must_match_tables_and_artifacts() -> None:
    doc = _manifest()
    del doc["members"]["tables/models.jsonl.gz"]
    with pytest.raises(BackupInvalid, match="members do not match") as caught:
        Manifest.parse(orjson.dumps(doc))
    assert caught.value.field == "members"
    doc = _manifest()
    doc["members"][f"artifacts/{'a' * 64}.tar"]["sha256"] = "c" * 64
    with pytest.raises(BackupInvalid, match="not filed under its own digest"):
        Manifest.parse(orjson.dumps(doc))


def test_not_json_at_all_is_a_clear_error() -> None:
    with pytest.raises(BackupInvalid, match="not a Modelyard backup manifest"):
        Manifest.parse(b"\x1f\x8b garbage")


def test_the_source_url_is_stored_without_its_password() -> None:
    from modelyard.store.backup.snapshot import safe_url

    shown = safe_url("postgresql://modelyard:s3cret@db.internal:5432/yard")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg://modelyard:***@")
