"""Names and references: value objects parsed once at the edge."""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelyard.domain.errors import ValidationFailed

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # used with fullmatch
_VERSION = re.compile(r"[0-9]{1,9}")  # ASCII digits only: str.isdigit() accepts '²'
VERSION_MAX = 999_999_999  # a version (or generation) number: what a reference can name
# Ids the store numbers in 32-bit columns (approvals, rollouts), and in 64-bit ones (jobs,
# retraining cycles, log records): a number past them is refused at the edge, not sent to
# PostgreSQL, which fails the whole statement on it ("integer out of range").
ID_MAX = 2**31 - 1
BIG_ID_MAX = 2**62



def check_name(value: str, what: str = "name", field: str | None = None) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationFailed(
            f"invalid {what} {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field=field or what,
        )
    return value


def check_alias(value: str, field: str = "alias") -> str:
    check_name(value, "alias", field)
    if value.isascii() and value.isdigit():
        raise ValidationFailed(f"alias {value!r} must not be a number", field=field)
    return value


@dataclass(frozen=True)
class ModelRef:
    """``name`` (the latest active version), ``name:3`` (a version) or ``name@alias``."""

    model: str
    version: int | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str, field: str = "model") -> ModelRef:
        if not isinstance(text, str):
            raise ValidationFailed("model reference must be a string", field=field)
        if "@" in text:
            model, alias = text.split("@", 1)
            return cls(check_name(model, "model name", field), alias=check_alias(alias, field))
        if ":" in text:
            model, version = text.split(":", 1)
            if not _VERSION.fullmatch(version) or int(version) < 1:
                raise ValidationFailed(
                    f"invalid version {version!r} in {text!r}: versions are numbers from 1",
                    field=field,
                )
            return cls(check_name(model, "model name", field), version=int(version))
        return cls(check_name(text, "model name", field))

    def __str__(self) -> str:
        if self.alias:
            return f"{self.model}@{self.alias}"
        if self.version:
            return f"{self.model}:{self.version}"
        return self.model
