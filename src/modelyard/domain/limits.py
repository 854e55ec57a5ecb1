"""How much free text a person may attach to things: descriptions, tags, parameters, card
fields, owners. Checked where the text enters (the services), refused as 422
``validation_failed`` naming the field, so that nothing unbounded reaches the store, the
audit chain (which copies it) or the dashboard. Decision record 0028 gives the reasons.

Stored rows are never re-checked: text saved before a limit existed stays readable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from modelyard.domain.errors import ValidationFailed

DESCRIPTION_MAX = 10_000  # a model version's, an endpoint's, a project's, a graph's
CARD_TEXT_MAX = 20_000  # each model-card text field (intended use, limitations...)
# Tags are search keys: the store indexes (key, value) in columns of 128 and 512
# characters; MLflow allows 250 and 5,000 (its tags double as notes: ours are descriptions).
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 512
TAGS_MAX = 100
# Parameters and metric names, as MLflow bounds them (keys 250; a parameter's value 6,000,
# counted here as its JSON text when it is not a string).
KEY_MAX = 250
PARAM_VALUE_MAX = 6_000
PARAMS_MAX = 1_000  # and as many metrics
REFERENCE_MAX = 1_000  # a data fingerprint, a code revision: a digest, a URI, a commit
NAME_LIST_MAX = 100  # card owners, trusted types
PERSON_MAX = 256  # a key's owner, a card owner (the keys table holds 256)


def text(value: Any, field: str, limit: int, what: str | None = None) -> str:
    """``value`` if it is text of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise ValidationFailed(f"{what or field} must be text", field=field)
    if len(value) > limit:
        raise ValidationFailed(f"{what or field} is {len(value)} characters long; at most "
                               f"{limit} are allowed", field=field)
    return value


def optional_text(value: Any, field: str, limit: int) -> str | None:
    return None if value is None else text(value, field, limit)


def description(value: Any, field: str = "description") -> str:
    return text(value, field, DESCRIPTION_MAX, "description")


def _key(key: Any, field: str, limit: int, what: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValidationFailed(f"{what} keys must be non-empty text", field=field)
    if len(key) > limit:
        raise ValidationFailed(f"a {what} key is {len(key)} characters long; at most "
                               f"{limit} are allowed", field=field)
    return key


def _count(items: Any, field: str, limit: int, what: str) -> Mapping[str, Any]:
    if not isinstance(items, Mapping):
        raise ValidationFailed(f"{what} must map names to values", field=field)
    if len(items) > limit:
        raise ValidationFailed(f"{len(items)} {what}; at most {limit} are allowed",
                               field=field)
    return items


def tags(items: Any, field: str = "tags") -> dict[str, str]:
    """Tags: at most 100, keys of 1-128 characters, values of at most 512."""
    out = {}
    for key, value in _count(items, field, TAGS_MAX, "tags").items():
        _key(key, field, TAG_KEY_MAX, "tag")
        out[key] = text(value, f"{field}.{key}", TAG_VALUE_MAX, f"tag {key!r}")
    return out


def params(items: Any, field: str = "params") -> dict[str, Any]:
    """Parameters: at most 1,000, keys of 1-250 characters, each value at most 6,000
    characters (as JSON when it is not text)."""
    for key, value in _count(items, field, PARAMS_MAX, "params").items():
        _key(key, field, KEY_MAX, "param")
        size = len(value) if isinstance(value, str) else len(
            json.dumps(value, default=str, ensure_ascii=False))
        if size > PARAM_VALUE_MAX:
            raise ValidationFailed(f"param {key!r} is {size} characters long; at most "
                                   f"{PARAM_VALUE_MAX} are allowed", field=f"{field}.{key}")
    return dict(items)


def metric_names(items: Any, field: str = "metrics") -> None:
    for key in _count(items, field, PARAMS_MAX, "metrics"):
        _key(key, field, KEY_MAX, "metric")


def names(items: Any, field: str, limit: int = PERSON_MAX) -> tuple[str, ...]:
    """A short list (at most 100) of names, each at most ``limit`` characters."""
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValidationFailed("must be a list of names", field=field)
    if len(items) > NAME_LIST_MAX:
        raise ValidationFailed(f"{len(items)} names; at most {NAME_LIST_MAX} are allowed",
                               field=field)
    for index, item in enumerate(items):
        text(item, f"{field}[{index}]", limit, "a name")
    return tuple(items)
