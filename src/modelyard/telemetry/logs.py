"""Log lines for people (``text``) or for log pipelines (``json``: one object per line).

A JSON line has ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``, ``message``,
``request_id`` while a request is being served (the id it was answered with), ``trace_id`` and
``span_id`` while a span is recording, and ``exc`` with the traceback. Every line, in either
format, passes the PII redaction filter first (governance/redaction.py), whichever logger
wrote it. ``logging_config`` is the ``logging.config.dictConfig`` that ``modelyard serve``
hands to uvicorn, so uvicorn's own lines take the same shape.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from opentelemetry import trace

from modelyard.domain.errors import ValidationFailed
from modelyard.governance.audit import request_id

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that say INFO for every call they make (remote models use httpx).
_CHATTY = ("httpx", "httpcore")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((record.created - seconds) * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            line["request_id"] = rid
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            line["trace_id"] = format(context.trace_id, "032x")
            line["span_id"] = format(context.span_id, "016x")
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def check_format(log_format: str) -> str:
    chosen = (log_format or "text").strip().lower()
    if chosen not in FORMATS:
        raise ValidationFailed(f"log_format must be one of {', '.join(FORMATS)} "
                               f"(got {log_format!r})", field="log_format")
    return chosen


def logging_config(log_format: str, level: str = "info") -> dict[str, Any]:
    """A ``dictConfig`` for the server process: every logger through one redacting handler on
    stderr, in the chosen format (uvicorn's loggers included)."""
    chosen = check_format(log_format)
    level_name = level.upper()
    formatter: dict[str, Any] = {"()": "modelyard.telemetry.logs.JsonFormatter"} \
        if chosen == "json" else {"format": TEXT_FORMAT}
    own = {"handlers": ["main"], "level": level_name, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "modelyard.governance.redaction.RedactingFilter"}},
        "formatters": {"main": formatter},
        "handlers": {"main": {"class": "logging.StreamHandler", "formatter": "main",
                              "filters": ["redact"], "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": own, "uvicorn.error": {"level": level_name},
                    "uvicorn.access": own,
                    **{name: {"level": "WARNING"} for name in _CHATTY}},
        "root": {"handlers": ["main"], "level": level_name},
    }
