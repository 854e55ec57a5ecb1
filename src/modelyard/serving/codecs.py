"""Fast JSON in and out of the data plane (orjson; numpy arrays serialised natively)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.errors import InvalidJSON, UnsupportedMediaType

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def require_json(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(
            f"send JSON with 'Content-Type: application/json' (got {media or 'none'!r})",
            field="content-type",
        )


def loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None


def dumps(payload: Any) -> bytes:
    try:
        return orjson.dumps(payload, option=_DUMP_OPTIONS)
    except TypeError:
        # Arrays orjson cannot take natively (e.g. float16, object strings) go through lists.
        return orjson.dumps(payload, option=_DUMP_OPTIONS, default=_fallback)


def _fallback(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(dumps(payload), status_code=status, media_type="application/json",
                    headers=headers)
