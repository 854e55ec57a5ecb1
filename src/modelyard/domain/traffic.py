"""Traffic policy of an endpoint: a weighted split across versions, sticky by a routing key,
and shadows that get a sampled copy of the traffic.

Sticky assignment hashes the routing key into 10,000 buckets and gives each target a range of
buckets in the order the split lists them. Listing the newer version first (as rollouts do)
makes raising its weight move only the keys whose buckets it newly covers: a user on the
canary stays on it while it grows. Requests without a key are assigned at random by weight.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelyard.domain.errors import ValidationFailed, reject_unknown
from modelyard.domain.names import ModelRef

BUCKETS = 10_000
MAX_TARGETS = 8


@dataclass(frozen=True)
class Target:
    model: str  # a model reference: name:VERSION (or name@alias)
    weight: float  # percent, 0-100

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "weight": self.weight}


@dataclass(frozen=True)
class Shadow:
    model: str
    sample: float = 1.0  # share of requests copied, 0-1

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "sample": self.sample}


@dataclass(frozen=True)
class TrafficPolicy:
    split: tuple[Target, ...]
    sticky_header: str | None = None  # e.g. x-user-id
    shadows: tuple[Shadow, ...] = ()
    _edges: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        edges, total = [], 0.0
        for target in self.split:
            total += target.weight
            edges.append(round(total * BUCKETS / 100))
        object.__setattr__(self, "_edges", tuple(edges))

    def refs(self) -> list[str]:
        """Every model reference the policy needs loaded (split first, then shadows)."""
        return list(dict.fromkeys([t.model for t in self.split] + [s.model
                                                                     for s in self.shadows]))

    def choose(self, key: bytes | None, rng: random.Random | None = None) -> int:
        """The index of the split target for a request (``key``: its routing key)."""
        if key:
            bucket = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") \
                % BUCKETS
        else:
            bucket = (rng or random).randrange(BUCKETS)
        for index, edge in enumerate(self._edges):
            if bucket < edge:
                return index
        return len(self.split) - 1

    def weight_of(self, model: str) -> float:
        return sum(t.weight for t in self.split if t.model == model)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": [t.to_dict() for t in self.split]}
        if self.sticky_header:
            out["sticky_header"] = self.sticky_header
        if self.shadows:
            out["shadows"] = [s.to_dict() for s in self.shadows]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrafficPolicy | None:
        if data is None:
            return None
        data = reject_unknown(data, {"split", "sticky_header", "shadows"}, "traffic field",
                              "traffic")
        raw_split = data.get("split")
        if not isinstance(raw_split, list) or not 1 <= len(raw_split) <= MAX_TARGETS:
            raise ValidationFailed(f"traffic.split lists 1-{MAX_TARGETS} targets "
                                   "[{model, weight}]", field="traffic.split")
        split = []
        for i, item in enumerate(raw_split):
            where = f"traffic.split[{i}]"
            item = reject_unknown(item, {"model", "weight"}, "split field", where)
            weight = item.get("weight")
            if not isinstance(weight, int | float) or isinstance(weight, bool) or \
                    not 0 <= weight <= 100:
                raise ValidationFailed("weight is a percentage, 0-100", field=f"{where}.weight")
            split.append(Target(_ref(item.get("model"), f"{where}.model"), float(weight)))
        if abs(sum(t.weight for t in split) - 100) > 1e-6:
            raise ValidationFailed("split weights must add up to 100", field="traffic.split")
        if len({t.model for t in split}) != len(split):
            raise ValidationFailed("a model appears twice in the split", field="traffic.split")
        header = data.get("sticky_header")
        if header is not None and (not isinstance(header, str) or not header or
                                   len(header) > 64 or not header.replace("-", "").isalnum()):
            raise ValidationFailed("sticky_header is a header name", field="traffic.sticky_header")
        shadows = []
        for i, item in enumerate(data.get("shadows") or []):
            where = f"traffic.shadows[{i}]"
            item = reject_unknown(item, {"model", "sample"}, "shadow field", where)
            sample = item.get("sample", 1.0)
            if not isinstance(sample, int | float) or isinstance(sample, bool) or \
                    not 0 < sample <= 1:
                raise ValidationFailed("sample is a share of requests, above 0 and at most 1",
                                       field=f"{where}.sample")
            shadows.append(Shadow(_ref(item.get("model"), f"{where}.model"), float(sample)))
        return cls(tuple(split), header.lower() if header else None, tuple(shadows))


def _ref(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise ValidationFailed("give a model reference (name:VERSION or name@alias)",
                               field=field)
    return str(ModelRef.parse(value, field))
