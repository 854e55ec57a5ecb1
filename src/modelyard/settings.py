"""One typed settings object, read once at start-up.

Precedence: environment (``MODELYARD_*``) over the yard's ``modelyard.toml`` over defaults.
The yard is found from an explicit path, else ``MODELYARD_HOME``, else ``./.yard``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from modelyard.domain.errors import ValidationFailed

MiB = 1 << 20


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    artifacts_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 32 * MiB
    max_artifact_bytes: int = 4096 * MiB
    default_timeout_ms: int = 10_000
    reconcile_interval_s: float = 2.0
    rollout_tick_s: float = 1.0  # how often rollouts are looked at (each at its interval_s)
    log_level: str = "info"
    # Model cards: an alias that needs a complete card, and what complete means.
    card_required_alias: str = "production"
    card_required_fields: str = "intended_use,owners,risk_level,limitations"
    # OIDC / JWT bearer tokens (off unless a JWKS is given).
    jwt_jwks: str = ""  # JWKS file path or URL
    jwt_issuer: str = ""
    jwt_audience: str = ""
    jwt_roles_claim: str = "roles"
    jwt_role_map: str = ""  # JSON object: claim value -> Modelyard role
    # Browser origins (comma-separated, e.g. https://ops.example.com) allowed to make changes.
    allowed_origins: str = ""
    # /metrics answers without a key (for a Prometheus that cannot send a bearer token).
    public_metrics: bool = False
    # The interactive API docs (Swagger UI at /docs, ReDoc at /redoc). Off by default: their
    # pages load scripts from cdn.jsdelivr.net, unpinned, on the dashboard's origin (and need
    # the internet). The OpenAPI document is always at /openapi.json.
    api_docs: bool = False
    # Telemetry (docs/decisions/0016-telemetry.md). metrics: Prometheus counters on the data
    # plane. trace_exporter: off, console or otlp; empty means otlp when otlp_endpoint is set
    # (e.g. http://collector:4318), else off. trace_sample_ratio: share of requests traced.
    # log_format: text or json (one object per line, with request and trace ids).
    metrics: bool = True
    trace_exporter: str = ""
    otlp_endpoint: str = ""
    trace_sample_ratio: float = 0.05
    log_format: str = "text"
    # Non-public hosts, IPs or CIDRs (comma-separated) that remote models may call; public
    # addresses need no entry. Remote models read it as MODELYARD_OUTBOUND_ALLOW at load time.
    outbound_allow: str = ""
    # Secrets (environment variable names, absolute file paths; comma-separated) that remote
    # models may send to their upstream. Read by the remote flavor as MODELYARD_REMOTE_SECRETS.
    remote_secrets: str = ""
    # Serve OIP v2 over gRPC (KServe's inference.GRPCInferenceService) on this port too, on the
    # HTTP host; 0: off. Needs the grpc extra: pip install 'modelyard[grpc]'.
    grpc_port: int = 0
    # Inference log: samples waiting to be written (a full buffer drops and counts), how often
    # they are written, the largest payload kept per side, and how long records are kept
    # (days; 0 keeps them forever). Each endpoint sets its own sampling rate (log_sample).
    inference_log_buffer: int = 10_000
    # Records written per second and endpoint at most (0: no cap); above it each endpoint's
    # log_sample shrinks in proportion, so the log's cost stays flat under any load.
    inference_log_max_per_s: float = 100.0
    inference_log_flush_s: float = 0.5
    inference_log_max_payload_bytes: int = 64 * 1024
    inference_log_retention_days: float = 30.0
    # Jobs: a worker thread runs in the server process (off: only 'modelyard worker'
    # processes run jobs); a job's lease (extended by heartbeats every third of it; a worker
    # that stops heartbeating loses the job to another after this long); idle polling.
    jobs_in_process: bool = True
    # How often the server looks for monitors due (each runs at its own evaluate_every_s).
    monitor_tick_s: float = 10.0
    job_lease_s: float = 30.0
    # Memory (MiB) the models of endpoints deployed with load: lazy may take together in this
    # process (on the ray backend: in each replica of its model pool); the least recently
    # used idle ones are unloaded for room (0: no limit). A model's size is measured at load
    # (RSS growth); before its first load it is estimated as its artifact's size times
    # model_memory_factor (docs/decisions/0021).
    model_memory_budget_mb: float = 0.0
    model_memory_factor: float = 2.0
    job_poll_s: float = 1.0
    # Control-plane leadership (docs/decisions/0020): servers sharing a store elect one
    # leader for rollouts, schedules, monitors and retention; a dead leader is replaced within
    # about this long (PostgreSQL: within a third of it once its session ends).
    leader_lease_s: float = 15.0
    # fsspec options of the artifact store, a JSON object, e.g. for S3-compatible stores
    # {"endpoint_url": "http://minio:9000"}; credentials best come from the usual AWS chain.
    artifacts_options: str = ""
    # Where deployments run: local (in this process) or ray (Ray Serve; needs the ray extra).
    # ray_address: empty starts a local Ray instance; auto joins the one on this machine;
    # ray://host:port goes through Ray Client.
    backend: str = "local"
    ray_address: str = ""
    # ray backend: each single-model endpoint's replicas also answer HTTP themselves, on a
    # port of RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT bound to ray_direct_host on their
    # node (the server still serves everything; docs/decisions/0019-ray-backend.md).
    ray_direct_ingress: bool = True
    ray_direct_host: str = "127.0.0.1"
    # ray backend: deployments with load: lazy share a pool of replicas that each hold many
    # models under model_memory_budget_mb (per replica there); ray_pool_max_replicas above
    # ray_pool_replicas autoscales each pool between the two (docs/decisions/0027).
    ray_pool_replicas: int = 1
    ray_pool_max_replicas: int = 0
    # Dashboard (/ui): how long a login lasts (seconds). OIDC login (authorization code with
    # PKCE against jwt_issuer's discovery document) is offered when oidc_client_id is set;
    # oidc_client_secret only for confidential clients (PKCE alone suffices otherwise).
    ui_session_ttl_s: float = 43_200.0
    oidc_client_id: str = ""
    oidc_client_secret: str = ""

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def admin_key_file(self) -> Path:
        return self.home / "admin.key"

    @classmethod
    def load(cls, yard: str | Path | None = None,
             env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if env is None else env
        home = Path(yard or env.get("MODELYARD_HOME") or ".yard").expanduser().absolute()
        values: dict[str, Any] = {
            "home": home,
            "database_url": f"sqlite:///{home / 'yard.db'}",
            "artifacts_url": str(home / "artifacts"),
        }
        project = home / "modelyard.toml"
        if project.is_file():
            try:
                values.update(tomllib.loads(project.read_text()).get("modelyard", {}))
            except tomllib.TOMLDecodeError as exc:
                raise ValidationFailed(f"{project} is not valid TOML: {exc}") from exc
        types = {f.name: f.type for f in fields(cls)}
        for name in types:
            key = f"MODELYARD_{name.upper()}"
            if key in env and name != "home":
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(types)
        if unknown:
            raise ValidationFailed(f"unknown settings {sorted(unknown)}")
        return cls(**{k: _convert(k, types[k], v) for k, v in values.items()})

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def _convert(name: str, kind: Any, value: Any) -> Any:
    try:
        if kind in ("int", int):
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("Path", Path):
            return Path(value)
        if kind in ("bool", bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
                raise ValueError(value)
            return text in ("true", "1", "yes", "on")
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"setting {name} must be {kind}, got {value!r}") from exc
