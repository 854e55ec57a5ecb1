"""Registry entities: models, immutable versions with lineage, aliases, endpoints."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from modelyard.domain.deployment import DeploymentSpec
from modelyard.domain.errors import ValidationFailed
from modelyard.domain.signature import Signature

AUTH_MODES = ("public", "key", "jwt")


@dataclass(frozen=True)
class Lineage:
    """Where a version came from. Everything optional; recorded as given."""

    data_fingerprint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    code_revision: str | None = None
    parent: str | None = None  # "model:version" of the version this one derives from
    tags: dict[str, str] = field(default_factory=dict)
    trusted: bool = False  # the registrant explicitly trusted code or pickles in the artifact

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_fingerprint": self.data_fingerprint,
            "params": dict(self.params),
            "metrics": dict(self.metrics),
            "code_revision": self.code_revision,
            "parent": self.parent,
            "tags": dict(self.tags),
            "trusted": self.trusted,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Lineage:
        data = data or {}
        return cls(
            data_fingerprint=data.get("data_fingerprint"),
            params=dict(data.get("params") or {}),
            # A metric stored as null (NaN, written before registration refused it) is left
            # out rather than making the version unreadable.
            metrics={k: float(v) for k, v in (data.get("metrics") or {}).items()
                     if v is not None},
            code_revision=data.get("code_revision"),
            parent=data.get("parent"),
            tags={str(k): str(v) for k, v in (data.get("tags") or {}).items()},
            trusted=bool(data.get("trusted", False)),
        )


def metric_values(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Lineage metrics as finite floats: NaN or infinity cannot be stored as JSON (it would
    come back as null), so they are refused, naming the metric."""
    out: dict[str, float] = {}
    for name, value in (metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise ValidationFailed(f"metric {name!r} must be a finite number, not {value!r}",
                                   field=f"metrics.{name}")
        out[str(name)] = number
    return out


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    flavor: str
    artifact_digest: str
    artifact_size: int
    signature: Signature
    lineage: Lineage
    flavor_options: dict[str, Any]
    description: str
    status: str  # "active" or "archived"
    created_at: datetime
    created_by: str
    aliases: tuple[str, ...] = ()
    input_example: list[dict[str, Any]] | None = None  # a few sample rows as OIP tensors
    project: str = "default"

    @property
    def ref(self) -> str:
        return f"{self.model}:{self.version}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "project": self.project,
            "version": self.version,
            "flavor": self.flavor,
            "artifact": {"sha256": self.artifact_digest, "size": self.artifact_size},
            "signature": self.signature.to_dict(),
            "lineage": self.lineage.to_dict(),
            "flavor_options": self.flavor_options,
            "description": self.description,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "aliases": list(self.aliases),
            "input_example": self.input_example,
        }


@dataclass(frozen=True)
class Alias:
    model: str
    name: str
    version: int
    updated_by: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.name,
            "version": self.version,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    created_at: datetime
    latest_version: int | None
    aliases: dict[str, int]
    project: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "latest_version": self.latest_version,
            "aliases": dict(self.aliases),
        }


@dataclass(frozen=True)
class Endpoint:
    name: str
    model_ref: str  # as parsed by ModelRef: "name", "name:3" or "name@alias"
    timeout_ms: int
    description: str
    created_at: datetime
    updated_at: datetime
    generation: int  # bumped on every change; lets the data plane see what is new
    deployment: DeploymentSpec = field(default_factory=DeploymentSpec)
    auth: str = "key"  # who may call the data plane: public, key or jwt
    project: str = "default"  # always its model's project
    redaction: Mapping[str, str] = field(default_factory=dict)  # payload field -> rule
    graph: Mapping[str, Any] | None = None  # a graph document, served instead of model_ref
    traffic: Mapping[str, Any] | None = None  # a traffic policy across versions
    log_sample: float = 1.0  # share of requests written to the inference log

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "project": self.project,
            "redaction": dict(self.redaction),
            "graph": dict(self.graph) if self.graph is not None else None,
            "traffic": dict(self.traffic) if self.traffic is not None else None,
            "log_sample": self.log_sample,
            "model": self.model_ref,
            "auth": self.auth,
            "timeout_ms": self.timeout_ms,
            "deployment": self.deployment.to_dict(),
            "description": self.description,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "generation": self.generation,
        }


def fingerprint(data: Any) -> str:
    """A sha256 of training data: numpy arrays, pandas frames, lists, bytes or text."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    if hasattr(data, "to_numpy") and hasattr(data, "columns"):  # a DataFrame
        digest.update(repr(list(data.columns)).encode())
        data = data.to_numpy()
    if isinstance(data, bytes | bytearray):
        digest.update(bytes(data))
    elif isinstance(data, str):
        digest.update(data.encode())
    else:
        array = np.ascontiguousarray(np.asarray(data))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        if array.dtype.kind == "O":
            digest.update(repr(array.tolist()).encode())
        else:
            digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()
