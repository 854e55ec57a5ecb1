"""OpenTelemetry tracing, set up from the settings; off unless configured.

- ``trace_exporter``: ``off``, ``console`` (spans as JSON on stdout, for a look on a laptop) or
  ``otlp`` (OTLP/HTTP protobuf to ``otlp_endpoint``, or to the OTEL_EXPORTER_OTLP_* variables
  without one). Left empty (the default) it means ``otlp`` when ``otlp_endpoint`` is set and
  ``off`` otherwise.
- ``trace_sample_ratio``: the share of requests traced (default 0.05). The choice is made once
  per request, before any span exists, so an untraced request costs nothing more than a random
  number, and its nodes and batches make no spans either; a request whose caller sent a
  ``traceparent`` follows the caller's choice (its sampled flag) instead.

Each server has its own ``TracerProvider`` (not the process-global one), like its own
Prometheus registry, so tests and embedding applications can run several. When tracing is
off, nothing on the request path creates a span: callers hold ``tracer = None`` and check it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import Tracer

from modelyard import __version__
from modelyard.domain.errors import ValidationFailed

EXPORTERS = ("off", "console", "otlp")


class Tracing:
    """A tracer provider with one exporter. ``batch=False`` exports each span as it ends (for
    tests that read an in-memory exporter); otherwise spans leave in batches from a
    background thread, off the request path. ``sample_ratio`` is applied per request by the
    request layer (telemetry/asgi.py), before a span exists; the provider keeps what it is
    given and follows a remote parent's sampled flag."""

    def __init__(self, exporter: SpanExporter, sample_ratio: float = 1.0,
                 batch: bool = True) -> None:
        self.exporter = exporter
        self.sample_ratio = sample_ratio
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "modelyard",
                                      "service.version": __version__}),
            sampler=ParentBased(ALWAYS_ON))
        processor: SpanProcessor = BatchSpanProcessor(exporter) if batch \
            else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer: Tracer = self.provider.get_tracer("modelyard", __version__)

    def __repr__(self) -> str:
        return f"Tracing(exporter={type(self.exporter).__name__})"

    def flush(self, timeout_ms: int = 5000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        """Export what is buffered, then stop (at server shutdown)."""
        self.provider.shutdown()


def exporter_name(settings: Any) -> str:
    chosen = (settings.trace_exporter or "").strip().lower()
    if not chosen:
        return "otlp" if settings.otlp_endpoint else "off"
    if chosen not in EXPORTERS:
        raise ValidationFailed(f"trace_exporter must be one of {', '.join(EXPORTERS)} "
                               f"(got {settings.trace_exporter!r})", field="trace_exporter")
    return chosen


def otlp_traces_url(endpoint: str) -> str:
    """The collector's traces URL: a bare ``http://host:4318`` gets ``/v1/traces``."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValidationFailed(f"otlp_endpoint must be an http(s) URL, got {endpoint!r}",
                               field="otlp_endpoint")
    return endpoint if parts.path.strip("/") else endpoint.rstrip("/") + "/v1/traces"


def from_settings(settings: Any) -> Tracing | None:
    """The server's tracing, or None when it is off (the default)."""
    ratio = float(settings.trace_sample_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValidationFailed("trace_sample_ratio must be from 0 to 1",
                               field="trace_sample_ratio")
    name = exporter_name(settings)
    if name == "off":
        return None
    if name == "console":
        return Tracing(ConsoleSpanExporter(), ratio)
    # Imported only when used: it brings in protobuf and requests.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = otlp_traces_url(settings.otlp_endpoint) if settings.otlp_endpoint else None
    return Tracing(OTLPSpanExporter(endpoint=endpoint), ratio)
