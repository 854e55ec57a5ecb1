"""The one small interface every backend implements (``local`` now, ``ray`` later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from modelyard.domain.registry import Endpoint
from modelyard.graph.executor import GraphDeployment
from modelyard.rollout.routing import TrafficDeployment
from modelyard.serving.deployment import Deployment


@dataclass(frozen=True)
class EndpointState:
    """What the data plane knows about one endpoint right now."""

    endpoint: Endpoint
    status: str  # "loading" | "ready" | "failed"
    deployment: Deployment | GraphDeployment | TrafficDeployment | None = None
    error: str | None = None
    target: str | None = None  # "model:version" the reference resolved to at last reconcile
    # A failure that can heal without any change to the endpoint (a signature added later)
    # is retried on every reconcile; others wait for a change.
    retry: bool = False

    def to_dict(self) -> dict[str, Any]:
        serving = self.deployment.version.ref if self.deployment else None
        return {
            "endpoint": self.endpoint.name,
            "status": self.status,
            "ready": self.deployment is not None,
            "serving": serving,
            "loading": self.target if self.status == "loading" else None,
            "error": self.error,
            "warmup_ms": round(self.deployment.warmup_ms, 3) if self.deployment else None,
            # Ray replicas that answer this endpoint's HTTP themselves (backends/ray.py).
            "direct": direct() if (direct := getattr(self.deployment, "direct_urls", None))
            else [],
            # A lazy deployment on Ray: its model pool, and the replicas holding it now.
            "pool": pool() if (pool := getattr(self.deployment, "pool_status", None))
            else None,
        }


class Backend(Protocol):
    def state(self, name: str) -> EndpointState | None: ...

    def drop(self, name: str) -> None: ...

    def states(self) -> list[EndpointState]: ...

    def ready(self) -> bool: ...

    def reconcile(self) -> None: ...

    def trigger(self) -> None: ...
