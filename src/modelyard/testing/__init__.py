"""Helpers for tests and benchmarks that users may reuse: small real models, no fakes."""
