"""Job functions for tests and examples: importable wherever modelyard is installed (a
``modelyard worker`` process, a Ray worker), unlike a test module's own functions."""

from __future__ import annotations

import os
from typing import Any


def where() -> dict[str, Any]:
    """The process this runs in, and the Ray resources it was given (empty outside Ray)."""
    resources: dict[str, float] = {}
    try:
        import ray

        if ray.is_initialized():
            resources = dict(ray.get_runtime_context().get_assigned_resources())
    except ImportError:
        pass
    return {"pid": os.getpid(), "resources": resources}


def offloaded(ctx: Any) -> dict[str, Any]:
    """A ``call`` job: report the worker's process and where its offloaded step ran."""
    return {"worker": os.getpid(), "offloaded": ctx.offload("where", where)}
