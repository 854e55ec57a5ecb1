"""Telemetry of a running server: OpenTelemetry traces (``tracing``), structured logs
(``logs``) and the request context both carry (``asgi``). Prometheus metrics live with the
data plane (``serving.metrics``). See docs/decisions/0016-telemetry.md."""
