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

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        out["pad"] = dict(self.pad)
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
            for name in ("max_queue_delay_ms", "cache_ttl_s"):
                if name in data:
                    data[name] = float(data[name])
            if "pad" in data and not isinstance(data["pad"], Mapping):
                raise ValueError("pad must map input names to pad values")
        except (TypeError, ValueError) as exc:
            raise ValidationFailed(f"invalid deployment settings: {exc}",
                                   field="deployment") from exc
        return cls(**data)

    def merged(self, changes: Mapping[str, Any]) -> DeploymentSpec:
        return DeploymentSpec.from_dict({**self.to_dict(), **changes})
