"""The OpenAPI document says what the API answers on error: RFC 9457 problems.

FastAPI describes a failed validation as 422 ``application/json`` with its own
``HTTPValidationError`` schema; this server answers it (and every other error) as
``application/problem+json`` with a stable ``code`` (``serving/problems.py``). A client
generated from the document, or a checker such as schemathesis, read the wrong shape. Here
each operation's 422 is the problem, and ``default`` (any other error) is one too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

PROBLEM_MEDIA = "application/problem+json"
_REF = {"$ref": "#/components/schemas/Problem"}
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "An RFC 9457 problem: `code` is stable and machine-readable; `field` is "
                   "the path of the field at fault, when one is.",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "title": "Type"},
        "title": {"type": "string", "title": "Title"},
        "status": {"type": "integer", "title": "Status"},
        "detail": {"type": "string", "title": "Detail"},
        "code": {"type": "string", "title": "Code"},
        "field": {"type": "string", "title": "Field"},
        "instance": {"type": "string", "title": "Instance"},
        "errors": {"type": "array", "title": "Errors", "items": {
            "type": "object", "properties": {"field": {"type": "string"},
                                             "message": {"type": "string"}}}},
    },
}
_VALIDATION = {"description": "Validation failed: `validation_failed`, the field's path in "
                              "`field` (a body that is not JSON: 400 `invalid_json`)",
               "content": {PROBLEM_MEDIA: {"schema": _REF}}}
_OTHER = {"description": "Any other error, as a problem (`code` says which)",
          "content": {PROBLEM_MEDIA: {"schema": _REF}}}
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")


def describe_problems(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe errors as the server sends them."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def rewrite(document: dict[str, Any]) -> dict[str, Any]:
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = _VALIDATION
            responses.setdefault("default", _OTHER)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in _FASTAPI_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = PROBLEM_SCHEMA
    return document
