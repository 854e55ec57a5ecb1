"""Control-plane JSON bodies, read as strictly as the data plane reads them.

FastAPI parses bodies with Python's ``json``, which takes ``NaN``, ``Infinity``, numbers out
of float range and lone surrogates (``"\\ud800"``). None of them survives the store: the
database encoder (orjson) writes NaN as ``null``, so a stored metric reads back as ``None``
and the audit record's hash no longer matches its row; a lone surrogate cannot be encoded at
all. Text with NUL characters cannot be stored in PostgreSQL. Each was a 500 (or a broken
audit chain) for a client's mistake. Here the body is parsed with orjson first, and those are
refused as the client's: 400 ``invalid_json``, or 422 naming the field that holds a NUL (in
the body, the path or the query: PostgreSQL cannot even compare text with one).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from modelyard.domain.errors import InvalidJSON, ValidationFailed

_NUL_ESCAPE = b"\\u0000"  # the only way a JSON text can carry a NUL character


class StrictJSONRequest(Request):
    """A request whose ``json()`` is orjson's: FastAPI (and any route) reads the body
    through it."""

    async def json(self) -> Any:
        if not hasattr(self, "_strict_json"):
            body = await self.body()
            value = orjson.loads(body)  # orjson's error is a json.JSONDecodeError
            if _NUL_ESCAPE in body:
                where = nul_text(value)
                if where is not None:
                    raise ValidationFailed(f"{where or 'the body'} holds a NUL character "
                                           "(\\u0000), which cannot be stored", field=where)
            self._strict_json = value
        return self._strict_json


class StrictJSONRoute(APIRoute):
    """Every route of the control plane: a JSON body is checked before FastAPI reads it, so
    the refusal is a problem with our code and detail, not a generic 400."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def strict(request: Request) -> Response:
            request = StrictJSONRequest(request.scope, request.receive)
            refuse_nul_in_url(request)
            if takes_body and _is_json(request.headers.get("content-type")) and \
                    await request.body():
                try:
                    await request.json()
                except orjson.JSONDecodeError as exc:
                    raise InvalidJSON(f"the body is not valid JSON: {exc}",
                                      field="body") from None
            return await handler(request)

        return strict


def refuse_nul_in_url(request: Request) -> None:
    """Path and query values are compared with stored text: one with a NUL character is
    refused here, naming it (``path.name``, ``query.tag``)."""
    for part, values in (("path", request.path_params.items()),
                         ("query", request.query_params.multi_items())):
        for name, value in values:
            if isinstance(value, str) and "\x00" in value:
                raise ValidationFailed(f"{part} parameter {name!r} holds a NUL character",
                                       field=f"{part}.{name}")


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def nul_text(value: Any) -> str | None:
    """The path (``policy.owners[2]``) of the first key or string holding a NUL character,
    ``""`` for the document itself, or ``None``. Iterative: a body may nest 1,000 deep."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                path = f"{where}.{key}" if where else str(key)
                if "\x00" in key:
                    return path
                stack.append((child, path))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in reversed(list(enumerate(item))))
    return None


__all__ = ["StrictJSONRequest", "StrictJSONRoute", "nul_text"]
