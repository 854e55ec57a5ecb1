"""How one model version runs behind an endpoint: batching, queueing, replicas, caching."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from modelyard.domain.errors import ValidationFailed, reject_unknown


@dataclass(frozen=True)
class DeploymentSpec:
    # Defaults measured with bench/ (see docs/decisions/0004-batching-defaults.md).
    max_batch_size: int = 32
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 512
    replicas: int = 1
    preferred_batch_sizes: tuple[int, ...] = ()
    pad: Mapping[str, float | int | str] = field(default_factory=dict)
    cache_max_entries: int = 0  # 0: no response cache (only for deterministic models)
    cache_ttl_s: float = 300.0
    # eager: loaded when the endpoint is deployed; lazy: on its first request, and unloaded
    # when idle and the model memory budget needs room (docs/decisions/0021).
    load: str = "eager"
    # predict may run twice for one request: a batch that failed on one replica is retried
    # on another (false for models with side effects).
    idempotent: bool = True
    # Where replicas run on the ray backend (ignored by the local one): logical CPUs and GPUs
    # per replica, and autoscaling on ongoing requests ({min_replicas, max_replicas,
    # target_ongoing_requests, upscale_delay_s, downscale_delay_s, look_back_period_s}, as
    # Ray Serve names them; empty: a fixed ``replicas``).
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    autoscaling: Mapping[str, float | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, rule: str) -> None:
            if not ok:
                raise ValidationFailed(f"deployment.{name} must be {rule}",
                                       field=f"deployment.{name}")

        check(1 <= self.max_batch_size <= 4096, "max_batch_size", "from 1 to 4096")
        check(0 <= self.max_queue_delay_ms <= 10_000, "max_queue_delay_ms", "from 0 to 10000")
        check(1 <= self.max_queue_size <= 1_000_000, "max_queue_size", "from 1 to 1000000")
        check(1 <= self.replicas <= 64, "replicas", "from 1 to 64")
        check(all(1 <= b <= self.max_batch_size for b in self.preferred_batch_sizes),
              "preferred_batch_sizes", "sizes from 1 to max_batch_size")
        check(0 <= self.cache_max_entries <= 10_000_000, "cache_max_entries",
              "from 0 to 10000000")
        check(0 < self.cache_ttl_s <= 86_400 * 30, "cache_ttl_s", "above 0 and at most 30 days")
        check(self.load in ("eager", "lazy"), "load", "eager or lazy")
        check(isinstance(self.idempotent, bool), "idempotent", "true or false")
        check(0 <= self.num_cpus <= 1024, "num_cpus", "from 0 to 1024")
        check(0 <= self.num_gpus <= 64, "num_gpus", "from 0 to 64")
        _check_autoscaling(self.autoscaling)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        out["pad"] = dict(self.pad)
        out["autoscaling"] = dict(self.autoscaling)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DeploymentSpec:
        data = reject_unknown(data, {f.name for f in fields(cls)}, "deployment setting",
                              "deployment")
        try:
            if "preferred_batch_sizes" in data:
                data["preferred_batch_sizes"] = tuple(int(b) for b in data["preferred_batch_sizes"])
            for name in ("max_batch_size", "max_queue_size", "replicas", "cache_max_entries"):
                if name in data:
                    value = data[name]
                    if isinstance(value, bool) or int(value) != value:
                        raise ValueError(f"{name} must be an integer")
                    data[name] = int(value)
            for name in ("max_queue_delay_ms", "cache_ttl_s", "num_cpus", "num_gpus"):
                if name in data:
                    data[name] = float(data[name])
            if "pad" in data and not isinstance(data["pad"], Mapping):
                raise ValueError("pad must map input names to pad values")
            if "autoscaling" in data and not isinstance(data["autoscaling"], Mapping):
                raise ValueError("autoscaling must map min_replicas, max_replicas and "
                                 "target_ongoing_requests to numbers")
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"invalid deployment settings: {exc}",
                                   field="deployment") from exc
        return cls(**data)

    def merged(self, changes: Mapping[str, Any]) -> DeploymentSpec:
        return DeploymentSpec.from_dict({**self.to_dict(), **changes})


AUTOSCALING_KEYS = ("min_replicas", "max_replicas", "target_ongoing_requests",
                    "upscale_delay_s", "downscale_delay_s", "look_back_period_s")
# Ray Serve's own names and meanings; seconds, each at most an hour.
_AUTOSCALING_DELAYS = ("upscale_delay_s", "downscale_delay_s", "look_back_period_s")


def _check_autoscaling(config: Mapping[str, float | int]) -> None:
    """Autoscaling on ongoing requests per replica (the ray backend's replicas)."""
    if not config:
        return
    for key, value in config.items():
        where = f"deployment.autoscaling.{key}"
        if key not in AUTOSCALING_KEYS:
            raise ValidationFailed(f"unknown autoscaling setting {key!r}; use "
                                   f"{', '.join(AUTOSCALING_KEYS)}", field=where)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValidationFailed(f"{where} must be a number", field=where)
    low, high = config.get("min_replicas", 1), config.get("max_replicas")
    if high is None:
        raise ValidationFailed("deployment.autoscaling.max_replicas is required",
                               field="deployment.autoscaling.max_replicas")
    if int(low) != low or not 0 <= low <= 64:
        raise ValidationFailed("deployment.autoscaling.min_replicas must be an integer from "
                               "0 to 64", field="deployment.autoscaling.min_replicas")
    if int(high) != high or not max(1, low) <= high <= 64:
        raise ValidationFailed("deployment.autoscaling.max_replicas must be an integer from "
                               "max(1, min_replicas) to 64",
                               field="deployment.autoscaling.max_replicas")
    target = config.get("target_ongoing_requests", 2)
    if not 0 < target <= 100_000:
        raise ValidationFailed("deployment.autoscaling.target_ongoing_requests must be "
                               "above 0", field="deployment.autoscaling.target_ongoing_requests")
    for key in _AUTOSCALING_DELAYS:
        where = f"deployment.autoscaling.{key}"
        seconds = config.get(key)
        low = 0 if key != "look_back_period_s" else 0.1  # Ray's: a positive window
        if seconds is not None and not (low <= seconds <= 3600 and seconds == seconds):
            raise ValidationFailed(f"{where} must be {low:g} to 3600 seconds", field=where)
