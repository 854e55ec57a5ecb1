"""Control-plane REST API (FastAPI, OpenAPI at ``/openapi.json``).

Routes decode, call a service, encode. Every service call names the acting principal; the
policy function inside the service decides. Mutations therefore need a bearer key.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelyard.backends.base import Backend
from modelyard.control.endpoints import EndpointService
from modelyard.control.json_route import StrictJSONRoute
from modelyard.control.registry import RegistryService
from modelyard.domain.approvals import Approval
from modelyard.domain.errors import (
    DigestMismatch,
    InvalidRequest,
    ModelyardError,
    Unauthenticated,
    ValidationFailed,
)
from modelyard.domain.names import ID_MAX, VERSION_MAX, check_name
from modelyard.domain.registry import Endpoint
from modelyard.domain.tensors import decode_many
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.auth import principal_from_request, record_auth_failure
from modelyard.governance.policy import Principal
from modelyard.serving.codecs import require_json
from modelyard.store.archive import CHUNK, extract, pack_to_file
from modelyard.store.artifacts import check_digest
from modelyard.yard import Yard, registration

API = "/api/v1"

# Every control-plane route and the action the policy decides it by (governance/policy.py
# says which roles hold each action). tests/governance/test_governance_routes.py checks that
# no route is missing here and walks every route for every role; docs/security/routes.md is
# generated from this table (``python -m modelyard.control.routes_doc``).
ROUTE_ACTIONS: dict[tuple[str, str], str] = {
    ("GET", f"{API}/models"): "models:read",
    ("GET", f"{API}/models/{{name}}"): "models:read",
    ("DELETE", f"{API}/models/{{name}}"): "models:delete",
    ("GET", f"{API}/models/{{name}}/versions"): "models:read",
    ("POST", f"{API}/models/{{name}}/versions"): "models:write",  # trusted: jobs:run_code
    ("GET", f"{API}/models/{{name}}/versions/{{version}}"): "models:read",
    ("POST", f"{API}/models/{{name}}/versions/{{version}}/archive"): "models:write",
    ("GET", f"{API}/models/{{name}}/versions/{{version}}/card"): "models:read",
    ("PATCH", f"{API}/models/{{name}}/versions/{{version}}/card"): "models:write",
    ("GET", f"{API}/models/{{name}}/aliases"): "models:read",
    ("GET", f"{API}/models/{{name}}/aliases/{{alias}}"): "models:read",
    ("PUT", f"{API}/models/{{name}}/aliases/{{alias}}"): "aliases:write",
    ("DELETE", f"{API}/models/{{name}}/aliases/{{alias}}"): "aliases:write",
    ("GET", f"{API}/versions"): "models:read",
    ("POST", f"{API}/artifacts"): "artifacts:write",
    ("GET", f"{API}/artifacts/{{digest}}"): "artifacts:read",
    ("GET", f"{API}/endpoints"): "endpoints:read",
    ("POST", f"{API}/endpoints"): "endpoints:write",  # a transform: jobs:run_code
    ("GET", f"{API}/endpoints/{{name}}"): "endpoints:read",
    ("PATCH", f"{API}/endpoints/{{name}}"): "endpoints:write",  # a transform: jobs:run_code
    ("DELETE", f"{API}/endpoints/{{name}}"): "endpoints:delete",
    ("PUT", f"{API}/endpoints/{{name}}/traffic"): "endpoints:write",
    ("DELETE", f"{API}/endpoints/{{name}}/traffic"): "endpoints:write",
    ("GET", f"{API}/endpoints/{{name}}/log"): "inference:read",
    ("GET", f"{API}/endpoints/{{name}}/log/summary"): "inference:read",
    ("GET", f"{API}/endpoints/{{name}}/monitor"): "monitors:read",
    ("PUT", f"{API}/endpoints/{{name}}/monitor"): "monitors:write",
    ("DELETE", f"{API}/endpoints/{{name}}/monitor"): "monitors:write",
    ("POST", f"{API}/endpoints/{{name}}/monitor/run"): "monitors:write",
    ("GET", f"{API}/endpoints/{{name}}/drift"): "monitors:read",
    ("GET", f"{API}/endpoints/{{name}}/quality"): "monitors:read",
    ("GET", f"{API}/alerts"): "monitors:read",
    ("GET", f"{API}/alerts/events"): "monitors:read",
    ("GET", f"{API}/models/{{name}}/versions/{{version}}/profile"): "models:read",
    ("PUT", f"{API}/models/{{name}}/versions/{{version}}/profile"): "models:write",
    ("POST", f"{API}/graphs/validate"): "models:read",
    ("GET", f"{API}/rollouts"): "rollouts:read",
    ("POST", f"{API}/rollouts"): "rollouts:write",
    ("GET", f"{API}/rollouts/{{rollout_id}}"): "rollouts:read",
    ("POST", f"{API}/rollouts/{{rollout_id}}/pause"): "rollouts:write",
    ("POST", f"{API}/rollouts/{{rollout_id}}/resume"): "rollouts:write",
    ("POST", f"{API}/rollouts/{{rollout_id}}/promote"): "rollouts:write",
    ("POST", f"{API}/rollouts/{{rollout_id}}/abort"): "rollouts:write",
    ("GET", f"{API}/keys"): "keys:read",
    ("POST", f"{API}/keys"): "keys:write",
    ("POST", f"{API}/keys/{{prefix}}/rotate"): "keys:write",
    ("DELETE", f"{API}/keys/{{prefix}}"): "keys:write",
    ("GET", f"{API}/models/{{name}}/versions/{{version}}/signatures"): "models:read",
    ("POST", f"{API}/models/{{name}}/versions/{{version}}/signatures"): "models:write",
    ("GET", f"{API}/projects"): "projects:read",
    ("POST", f"{API}/projects"): "projects:write",
    ("GET", f"{API}/projects/{{name}}"): "projects:read",
    ("PATCH", f"{API}/projects/{{name}}"): "projects:write",
    ("GET", f"{API}/approvals"): "approvals:read",
    ("GET", f"{API}/approvals/{{approval_id}}"): "approvals:read",
    ("POST", f"{API}/approvals/{{approval_id}}/approve"): "approvals:decide",
    ("POST", f"{API}/approvals/{{approval_id}}/reject"): "approvals:decide",
    ("POST", f"{API}/approvals/{{approval_id}}/cancel"): "approvals:read",
    ("GET", f"{API}/audit"): "audit:read",
    ("GET", f"{API}/audit/verify"): "audit:read",
    ("GET", f"{API}/jobs"): "jobs:read",
    ("POST", f"{API}/jobs"): "jobs:write",  # and the kind's own action (call: jobs:run_code)
    ("GET", f"{API}/jobs/{{job_id}}"): "jobs:read",
    ("GET", f"{API}/jobs/{{job_id}}/logs"): "jobs:read",
    ("POST", f"{API}/jobs/{{job_id}}/cancel"): "jobs:write",
    ("GET", f"{API}/schedules"): "jobs:read",
    ("PUT", f"{API}/schedules/{{name}}"): "jobs:write",
    ("DELETE", f"{API}/schedules/{{name}}"): "jobs:write",
    ("GET", f"{API}/retraining/policies"): "retraining:read",
    ("GET", f"{API}/retraining/policies/{{model}}"): "retraining:read",
    ("PUT", f"{API}/retraining/policies/{{model}}"): "retraining:write",  # and jobs:run_code
    ("DELETE", f"{API}/retraining/policies/{{model}}"): "retraining:write",
    ("POST", f"{API}/retraining/policies/{{model}}/run"): "retraining:write",
    ("GET", f"{API}/retraining/cycles"): "retraining:read",
    ("GET", f"{API}/retraining/cycles/{{cycle_id}}"): "retraining:read",
    ("GET", f"{API}/readiness"): "readiness:read",
    ("GET", f"{API}/readiness/{{endpoint}}"): "readiness:read",
    ("GET", f"{API}/endpoints/{{name}}/loadtests"): "endpoints:read",
    ("POST", f"{API}/endpoints/{{name}}/loadtests"): "endpoints:write",
    ("GET", "/metrics"): "metrics:read",  # unless the public_metrics setting opens it
}
# Routes open without a key: health, readiness, server metadata (name, version, extensions)
# and the OpenAPI document of this open-source API; inference and model metadata answer as
# each endpoint's auth mode says (key by default; public only when an admin chose it).
PUBLIC_ROUTES = ("/healthz", "/readyz", "/v2", "/v2/health/live",
                 "/v2/health/ready", "/v2/models/{name}", "/v2/models/{name}/ready",
                 "/v2/models/{name}/versions/{version}",
                 "/v2/models/{name}/versions/{version}/ready", "/openapi.json", "/docs",
                 "/docs/oauth2-redirect", "/redoc", "/endpoints/{name}/predict",
                 "/endpoints/{name}/feedback",
                 "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer",
                 # OpenAI-compatible (serving/openai_api.py): each endpoint's auth mode
                 # decides, like predict; the list shows a caller only what it may call.
                 "/v1/models", "/v1/models/{model}", "/v1/embeddings", "/v1/chat/completions",
                 # A redirect to the dashboard (mounted at /ui: its pages need a session
                 # and are decided by the same policy function, ui/__init__.py).
                 "/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TensorIn(_Strict):
    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


DESCRIPTION_HELP = "at most 10,000 characters"
TAGS_HELP = "at most 100; keys of 1-128 characters, values of at most 512"
PARAMS_HELP = ("at most 1,000; keys of 1-250 characters, each value at most 6,000 characters "
               "(as JSON when it is not text)")
REFERENCE_HELP = "at most 1,000 characters"


class RegisterRequest(_Strict):
    artifact: str = Field(description="sha256 of an archive uploaded to POST /api/v1/artifacts")
    flavor: str | None = None
    signature: dict[str, Any] | None = None
    sample: list[TensorIn] | None = Field(
        default=None, description="a few input rows as OIP v2 tensors; used to infer and "
        "check the signature and to warm the model up")
    params: dict[str, Any] = Field(default={}, description=PARAMS_HELP)
    metrics: dict[str, float] = Field(default={}, description="finite numbers; at most 1,000, "
                                      "names of 1-250 characters")
    tags: dict[str, str] = Field(default={}, description=TAGS_HELP)
    data_fingerprint: str | None = Field(default=None, description=REFERENCE_HELP)
    code_revision: str | None = Field(default=None, description=REFERENCE_HELP)
    parent: str | None = None
    description: str = Field(default="", description=DESCRIPTION_HELP)
    trusted: bool = False
    trusted_types: list[str] = []
    project: str | None = Field(default=None, description="a new model's project "
                                "(default: default); a model never changes project")


class AliasRequest(_Strict):
    version: int = Field(ge=1, le=VERSION_MAX)


POLICY_HELP = ("approvals_required (0-10), approval_actions (alias:production, endpoint:auth, "
               "rollout:promote), approval_expiry_h, signatures_required, trusted_keys "
               "(Ed25519 public keys, PEM), card_required (model-card fields)")
GRAPH_HELP = ("an inference graph served instead of one model: inputs, nodes (model, "
              "transform, ensemble, router, cascade, fallback) and outputs; validated against "
              "the models' signatures before anything is deployed")
REDACTION_HELP = ("payload field -> drop, hash or mask, applied (with the PII detectors) to "
                  "whatever is stored or logged from this endpoint's payloads")
DEPLOYMENT_HELP = ("batching and queueing: max_batch_size, max_queue_delay_ms, max_queue_size, "
                   "replicas, preferred_batch_sizes, pad, cache_max_entries, cache_ttl_s")


LOG_SAMPLE_HELP = ("share of requests written to the inference log, redacted (0: none, "
                   "1: all; default 1)")


class EndpointCreate(_Strict):
    name: str
    model: str | None = Field(default=None, description="name, name:VERSION or name@ALIAS "
                              "(or give graph)")
    graph: dict[str, Any] | None = Field(default=None, description=GRAPH_HELP)
    timeout_ms: int | None = Field(default=None, ge=1, le=600_000)
    description: str = Field(default="", description=DESCRIPTION_HELP)
    deployment: dict[str, Any] | None = Field(default=None, description=DEPLOYMENT_HELP)
    auth: str = Field(default="key", description="who may call the data plane: key (an "
                      "API key with the predictor role or better in the endpoint's project), "
                      "jwt, or public (no credentials; only an admin may choose it)")
    redaction: dict[str, str] | None = Field(default=None, description=REDACTION_HELP)
    log_sample: float | None = Field(default=None, ge=0, le=1, description=LOG_SAMPLE_HELP)


class KeyCreate(_Strict):
    owner: str = Field(description="who or what uses the key (a person, a service)")
    roles: list[str] = Field(description="viewer, predictor, developer, approver, operator, "
                             "admin; never more than the caller holds")
    rate_per_s: float | None = Field(default=None, description="data-plane calls per second")
    daily_quota: int | None = Field(default=None, description="data-plane calls per UTC day")


class ProjectCreate(_Strict):
    name: str
    description: str = Field(default="", description=DESCRIPTION_HELP)
    policy: dict[str, Any] | None = Field(default=None, description=POLICY_HELP)


class ProjectUpdate(_Strict):
    description: str | None = Field(default=None, description=DESCRIPTION_HELP)
    policy: dict[str, Any] | None = Field(default=None, description=POLICY_HELP +
                                          " (merged into the current policy)")


class RolloutStart(_Strict):
    endpoint: str
    spec: dict[str, Any] = Field(description="target (the new version), strategy (canary, "
                                 "blue_green, shadow), steps [{weight, duration_s}], bake_s, "
                                 "duration_s, interval_s, analysis thresholds, sticky_header")


class MonitorIn(_Strict):
    spec: dict[str, Any] = Field(default_factory=dict, description="window_s, "
                                 "evaluate_every_s, max_records, drift {alpha, psi_warn, "
                                 "psi_drift, min_samples...}, quality {task, output, "
                                 "scores_output, metric, min_samples, lookback_s}, slo, "
                                 "latency_window_s, alerts [rules], webhook")
    enabled: bool = True


class ProfileIn(_Strict):
    columns: dict[str, Any] | None = Field(default=None, description="training data: input "
                                           "name -> rows")
    predictions: list[Any] | None = None
    profile: dict[str, Any] | None = None


class Decision(_Strict):
    comment: str = Field(default="", max_length=2000)


class SignatureIn(_Strict):
    key_id: str = Field(max_length=64)
    algorithm: str = Field(max_length=16)
    signature: str = Field(max_length=256, description="base64 Ed25519 signature")


class EndpointUpdate(_Strict):
    model: str | None = None
    graph: dict[str, Any] | None = Field(default=None, description=GRAPH_HELP)
    timeout_ms: int | None = Field(default=None, ge=1, le=600_000)
    description: str | None = Field(default=None, description=DESCRIPTION_HELP)
    deployment: dict[str, Any] | None = Field(
        default=None, description=DEPLOYMENT_HELP + " (merged into the current settings)")
    auth: str | None = None
    redaction: dict[str, str] | None = Field(default=None, description=REDACTION_HELP +
                                             " (replaces the current rules)")
    log_sample: float | None = Field(default=None, ge=0, le=1, description=LOG_SAMPLE_HELP)


def current_principal(request: Request) -> Principal:
    """Every control-plane route needs a key; checked before the body is looked at."""
    db = request.app.state.yard.db
    principal = principal_from_request(request, db, request.app.state.tokens)
    if principal is None:
        failure = Unauthenticated("this request needs an API key: Authorization: Bearer <key>")
        record_auth_failure(db, request, failure)
        raise failure
    return principal


Who = Annotated[Principal, Depends(current_principal)]
RolloutId = Annotated[int, PathParam(ge=1, le=ID_MAX, description="the rollout's id")]
ApprovalId = Annotated[int, PathParam(ge=1, le=ID_MAX, description="the approval request's id")]
VersionNumber = Annotated[int, PathParam(ge=1, le=VERSION_MAX,
                                         description="the version's number")]


def _tags(tag: list[str] | None) -> dict[str, str]:
    out = {}
    for item in tag or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValidationFailed(f"tag filter {item!r} must look like key=value", field="tag")
        out[key] = value
    return out


def build_control_api(app: FastAPI, yard: Yard, backend: Backend) -> None:
    registry: RegistryService = yard.registry
    endpoints: EndpointService = yard.endpoints
    settings = yard.settings
    router = APIRouter(prefix=API, route_class=StrictJSONRoute)

    json_body = [Depends(require_json)]

    # -- models ---------------------------------------------------------------------------
    @router.get("/models", tags=["models"])
    def list_models(who: Who, tag: Annotated[list[str] | None, Query()] = None
                    ) -> list[dict[str, Any]]:
        return [m.to_dict() for m in registry.list_models(who, _tags(tag))]

    @router.get("/models/{name}", tags=["models"])
    def get_model(name: str, who: Who) -> dict[str, Any]:
        return registry.get_model(who, name).to_dict()

    @router.delete("/models/{name}", status_code=204, tags=["models"])
    def delete_model(name: str, who: Who) -> Response:
        registry.delete_model(who, name)
        return Response(status_code=204)

    @router.get("/models/{name}/versions", tags=["models"])
    def list_versions(name: str, who: Who) -> list[dict[str, Any]]:
        return [v.to_dict() for v in registry.list_versions(who, name)]

    @router.post("/models/{name}/versions", status_code=201, tags=["models"],
                 dependencies=json_body)
    def register(name: str, body: RegisterRequest, who: Who, response: Response
                 ) -> dict[str, Any]:
        check_name(name, "model name", "name")
        check_digest(body.artifact, field="artifact")
        sample = decode_many([t.model_dump() for t in body.sample], "sample") \
            if body.sample else None
        spec = registration(flavor=body.flavor, sample=sample, signature=body.signature,
                            params=body.params, metrics=body.metrics, tags=body.tags,
                            data_fingerprint=body.data_fingerprint,
                            code_revision=body.code_revision, parent=body.parent,
                            description=body.description, trusted=body.trusted,
                            trusted_types=body.trusted_types, project=body.project)
        version = registry.register_stored(who, name, body.artifact, spec)
        response.headers["Location"] = f"{API}/models/{name}/versions/{version.version}"
        return version.to_dict()

    @router.get("/models/{name}/versions/{version}", tags=["models"])
    def get_version(name: str, version: VersionNumber, who: Who) -> dict[str, Any]:
        return registry.get_version(who, f"{name}:{version}").to_dict()

    @router.post("/models/{name}/versions/{version}/archive", tags=["models"])
    def archive(name: str, version: VersionNumber, who: Who) -> dict[str, Any]:
        return registry.archive(who, name, version).to_dict()

    @router.get("/models/{name}/versions/{version}/card", tags=["models"])
    def get_card(name: str, version: VersionNumber, who: Who) -> dict[str, Any]:
        """The model card (lineage fills training data and metrics) and its Markdown."""
        card = registry.card(who, f"{name}:{version}")
        found = registry.get_version(who, f"{name}:{version}")
        return {"card": card.to_dict(), "markdown": card.markdown(found.ref, found.lineage)}

    @router.patch("/models/{name}/versions/{version}/card", tags=["models"],
                  dependencies=json_body)
    def update_card(name: str, version: VersionNumber, body: dict[str, Any], who: Who
                    ) -> dict[str, Any]:
        card = registry.update_card(who, name, version, body)
        found = registry.get_version(who, f"{name}:{version}")
        return {"card": card.to_dict(), "markdown": card.markdown(found.ref, found.lineage)}

    @router.get("/models/{name}/aliases", tags=["aliases"])
    def aliases(name: str, who: Who) -> dict[str, Any]:
        model = registry.get_model(who, name)
        return {"aliases": model.aliases,
                "history": registry.alias_history(who, name)}

    @router.get("/models/{name}/aliases/{alias}", tags=["aliases"])
    def resolve_alias(name: str, alias: str, who: Who) -> dict[str, Any]:
        return registry.get_version(who, f"{name}@{alias}").to_dict()

    @router.put("/models/{name}/aliases/{alias}", tags=["aliases"], dependencies=json_body)
    def set_alias(name: str, alias: str, body: AliasRequest, who: Who) -> Any:
        """Answers 202 with a pending approval when the project holds the move back."""
        result = registry.set_alias(who, name, alias, body.version)
        if isinstance(result, Approval):
            return pending(result)
        backend.trigger()
        return result.to_dict()

    @router.delete("/models/{name}/aliases/{alias}", status_code=204, tags=["aliases"])
    def remove_alias(name: str, alias: str, who: Who) -> Response:
        result = registry.remove_alias(who, name, alias)
        if result is not None:
            return pending(result)
        backend.trigger()
        return Response(status_code=204)

    @router.get("/versions", tags=["models"])
    def search(who: Who, tag: Annotated[list[str] | None, Query()] = None
               ) -> list[dict[str, Any]]:
        return [v.to_dict() for v in registry.search(who, _tags(tag))]

    # -- artifacts ------------------------------------------------------------------------
    @router.post("/artifacts", status_code=201, tags=["artifacts"])
    async def upload_artifact(request: Request, who: Who,
                              sha256: Annotated[str, Query(description="sha256 of the body")]
                              ) -> dict[str, Any]:
        # Uploads are content-addressed and belong to no project until registered (which
        # checks the project): holding the right in any project is enough.
        guard(yard.db, who, "artifacts:write", "artifacts", anywhere=True)
        check_digest(sha256)
        scratch = settings.home / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(suffix=".upload", dir=scratch)
        upload = Path(name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                async for chunk in request.stream():
                    hasher.update(chunk)
                    out.write(chunk)
            if hasher.hexdigest() != sha256:
                raise DigestMismatch(
                    f"the body's sha256 is {hasher.hexdigest()}, not {sha256}", field="sha256"
                )
            from starlette.concurrency import run_in_threadpool

            digest, size = await run_in_threadpool(_store_upload, yard, upload)
        finally:
            upload.unlink(missing_ok=True)
        return {"sha256": digest, "size": size, "uploaded_sha256": sha256}

    @router.get("/artifacts/{digest}", tags=["artifacts"], response_class=StreamingResponse)
    def download_artifact(digest: str, who: Who) -> StreamingResponse:
        check_digest(digest)
        guard(yard.db, who, "artifacts:read", f"artifact:{digest}",
              *registry.artifact_scope(digest, who))
        size = yard.artifacts.size(digest)
        return StreamingResponse(yard.artifacts.stream(digest), media_type="application/x-tar",
                                 headers={"Content-Length": str(size),
                                          "Content-Disposition":
                                          f'attachment; filename="{digest}.tar"'})

    # -- endpoints ------------------------------------------------------------------------
    def with_status(endpoint: Endpoint, who: Principal | None) -> dict[str, Any]:
        """The endpoint with what this server runs for it, and whether that is current:
        the reference resolved now, and the endpoint's latest settings."""
        state = backend.state(endpoint.name)
        status: dict[str, Any] = state.to_dict() if state else {
            "status": "pending", "ready": False, "serving": None, "error": None}
        composite = endpoint.graph is not None or endpoint.traffic is not None
        if composite:  # a graph or a split: its own build target, not one version
            status["target"] = state.target if state else None
        else:
            try:
                status["target"] = registry.get_version(who, endpoint.model_ref).ref
            except ModelyardError as exc:
                status["target"], status["error"] = None, exc.detail
        if state is not None and state.error and state.target is not None and \
                state.target != status["target"]:
            status["status"], status["error"] = "pending", None  # a stale failure
        status["current"] = bool(
            state is not None and state.deployment is not None
            and (state.status == "ready" if composite else status["serving"] == status["target"])
            and state.endpoint.generation == endpoint.generation)
        return {**endpoint.to_dict(), "status": status}

    @router.get("/endpoints", tags=["endpoints"])
    def list_endpoints(who: Who) -> list[dict[str, Any]]:
        return [with_status(e, who) for e in endpoints.list(who)]

    @router.post("/endpoints", status_code=201, tags=["endpoints"], dependencies=json_body)
    def create_endpoint(body: EndpointCreate, who: Who, response: Response) -> dict[str, Any]:
        endpoint = endpoints.create(who, body.name, body.model,
                                    timeout_ms=body.timeout_ms, description=body.description,
                                    deployment=body.deployment, auth=body.auth,
                                    redaction=body.redaction, graph_doc=body.graph,
                                    log_sample=body.log_sample)
        response.headers["Location"] = f"{API}/endpoints/{endpoint.name}"
        return with_status(endpoint, who)

    @router.get("/endpoints/{name}", tags=["endpoints"])
    def get_endpoint(name: str, who: Who) -> dict[str, Any]:
        return with_status(endpoints.get(who, name), who)

    @router.patch("/endpoints/{name}", tags=["endpoints"], dependencies=json_body)
    def update_endpoint(name: str, body: EndpointUpdate, who: Who) -> Any:
        """Answers 202 with a pending approval when the project holds an auth change back
        (the other changes apply at once)."""
        if not body.model_fields_set - {k for k, v in body.model_dump().items() if v is None}:
            raise InvalidRequest("nothing to change: give model, timeout_ms, description, "
                                 "deployment, auth, redaction or log_sample")
        updated = endpoints.update(who, name, model=body.model, timeout_ms=body.timeout_ms,
                                   description=body.description, deployment=body.deployment,
                                   auth=body.auth, redaction=body.redaction,
                                   graph_doc=body.graph, log_sample=body.log_sample)
        if isinstance(updated, Approval):
            return pending(updated)
        return with_status(updated, who)

    @router.delete("/endpoints/{name}", status_code=204, tags=["endpoints"])
    def delete_endpoint(name: str, who: Who) -> Response:
        endpoints.delete(who, name)
        backend.drop(name)  # this server stops answering at once
        return Response(status_code=204)

    @router.put("/endpoints/{name}/traffic", tags=["endpoints"], dependencies=json_body)
    def set_traffic(name: str, body: dict[str, Any], who: Who) -> dict[str, Any]:
        """Split traffic across versions: ``{"split": [{"model": "churn:1", "weight": 90},
        {"model": "churn:2", "weight": 10}], "sticky_header": "x-user-id", "shadows":
        [{"model": "churn:3", "sample": 0.2}]}``. Each version is loaded and warmed before
        it gets traffic."""
        return with_status(endpoints.set_traffic(who, name, body), who)

    @router.delete("/endpoints/{name}/traffic", tags=["endpoints"])
    def clear_traffic(name: str, who: Who) -> dict[str, Any]:
        """All traffic to the endpoint's model again."""
        return with_status(endpoints.set_traffic(who, name, None), who)

    # -- inference log ------------------------------------------------------------------------
    @router.get("/endpoints/{name}/log", tags=["monitoring"])
    def inference_log(name: str, who: Who, since: str | None = None,
                      until: str | None = None, version: str | None = None,
                      status: str | None = None,
                      before_id: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                      payloads: bool = True) -> dict[str, Any]:
        """Logged requests (sampled, redacted), newest first. ``since``/``until``: ISO 8601
        or a time ago (``15m``, ``2h``, ``7d``); ``version``: model:version; ``status``: ok
        or error; continue with ``before_id`` = the answer's ``next``."""
        return yard.monitoring.records(who, name, since=since, until=until, version=version,
                                       status=status, before_id=before_id, limit=limit,
                                       payloads=payloads)

    @router.get("/endpoints/{name}/log/summary", tags=["monitoring"])
    def inference_log_summary(name: str, who: Who, since: str | None = None,
                              until: str | None = None) -> dict[str, Any]:
        """Per version: records, errors, mean latency, first and last time."""
        return yard.monitoring.summary(who, name, since=since, until=until)

    # -- monitors -----------------------------------------------------------------------------
    monitoring = yard.monitoring

    @router.get("/endpoints/{name}/monitor", tags=["monitoring"])
    def get_monitor(name: str, who: Who) -> dict[str, Any]:
        return monitoring.monitor(who, name)

    @router.put("/endpoints/{name}/monitor", tags=["monitoring"], dependencies=json_body)
    def set_monitor(name: str, body: MonitorIn, who: Who) -> dict[str, Any]:
        """Watch an endpoint: ``{"spec": {"window_s": 3600, "quality": {"task":
        "classification"}, "slo": 0.999, "alerts": [...], "webhook": "https://..."}}``.
        Drift and quality are computed per closed window by ``monitor`` jobs."""
        return monitoring.set_monitor(who, name, body.spec, body.enabled)

    @router.delete("/endpoints/{name}/monitor", status_code=204, tags=["monitoring"])
    def delete_monitor(name: str, who: Who) -> Response:
        monitoring.delete_monitor(who, name)
        return Response(status_code=204)

    @router.post("/endpoints/{name}/monitor/run", tags=["monitoring"])
    def run_monitor(name: str, who: Who) -> dict[str, Any]:
        """Run the monitor now (closed windows, labels that arrived, alert rules)."""
        return monitoring.run_monitor(who, name)

    @router.get("/endpoints/{name}/drift", tags=["monitoring"])
    def drift_series(name: str, who: Who, since: str | None = None, until: str | None = None,
                     version: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                     reports: bool = True) -> dict[str, Any]:
        """Drift per window and version (status, score, per-feature tests), oldest first."""
        return monitoring.results(who, name, "drift", since=since, until=until,
                                  version=version, limit=limit, reports=reports)

    @router.get("/endpoints/{name}/quality", tags=["monitoring"])
    def quality_series(name: str, who: Who, since: str | None = None,
                       until: str | None = None, version: str | None = None,
                       limit: Annotated[int, Query(ge=1, le=5000)] = 500,
                       reports: bool = True) -> dict[str, Any]:
        """Live quality per window and version from delayed labels, oldest first."""
        return monitoring.results(who, name, "quality", since=since, until=until,
                                  version=version, limit=limit, reports=reports)

    @router.get("/alerts", tags=["monitoring"])
    def list_alerts(who: Who, endpoint: str | None = None,
                    status: str | None = None) -> list[dict[str, Any]]:
        return monitoring.alerts(who, endpoint=endpoint, status=status)

    @router.get("/alerts/events", tags=["monitoring"])
    def alert_events(who: Who, after_id: Annotated[int, Query(ge=0, le=2**62)] = 0,
                     endpoint: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100
                     ) -> list[dict[str, Any]]:
        """Alerts firing and resolving, oldest first after ``after_id`` (poll with the last
        id seen)."""
        return monitoring.alert_events(who, after_id=after_id, endpoint=endpoint, limit=limit)

    @router.get("/models/{name}/versions/{version}/profile", tags=["monitoring"])
    def get_profile(name: str, version: VersionNumber, who: Who) -> dict[str, Any]:
        return monitoring.profile(who, f"{name}:{version}")

    @router.put("/models/{name}/versions/{version}/profile", tags=["monitoring"],
                dependencies=json_body)
    def set_profile(name: str, version: VersionNumber, body: ProfileIn, who: Who) -> dict[str, Any]:
        """The reference profile drift is tested against: computed here from training data
        (``columns``: input name -> rows; the version's predictions on them too), or
        ``profile`` as computed elsewhere."""
        return monitoring.set_profile(who, f"{name}:{version}", columns=body.columns,
                                      predictions=body.predictions, profile=body.profile)

    # -- rollouts -----------------------------------------------------------------------------
    @router.get("/rollouts", tags=["rollouts"])
    def list_rollouts(who: Who, endpoint: str | None = None) -> list[dict[str, Any]]:
        return yard.rollouts.list_rollouts(who, endpoint)

    @router.post("/rollouts", status_code=201, tags=["rollouts"], dependencies=json_body)
    def start_rollout(body: RolloutStart, who: Who, response: Response) -> dict[str, Any]:
        """Start a canary, blue_green or shadow rollout of ``spec.target`` on an endpoint;
        the server analyses it every ``interval_s`` and advances, promotes or rolls back."""
        started = yard.rollouts.start(who, body.endpoint, body.spec)
        response.headers["Location"] = f"{API}/rollouts/{started['id']}"
        return started

    @router.get("/rollouts/{rollout_id}", tags=["rollouts"])
    def get_rollout(rollout_id: RolloutId, who: Who) -> dict[str, Any]:
        """The rollout with every verdict (checks, values, limits) it was decided on."""
        return yard.rollouts.get(who, rollout_id)

    @router.post("/rollouts/{rollout_id}/pause", tags=["rollouts"])
    def pause_rollout(rollout_id: RolloutId, who: Who) -> dict[str, Any]:
        return yard.rollouts.pause(who, rollout_id)

    @router.post("/rollouts/{rollout_id}/resume", tags=["rollouts"])
    def resume_rollout(rollout_id: RolloutId, who: Who) -> dict[str, Any]:
        return yard.rollouts.resume(who, rollout_id)

    @router.post("/rollouts/{rollout_id}/promote", tags=["rollouts"])
    def promote_rollout(rollout_id: RolloutId, who: Who) -> dict[str, Any]:
        return yard.rollouts.promote(who, rollout_id)

    @router.post("/rollouts/{rollout_id}/abort", tags=["rollouts"])
    def abort_rollout(rollout_id: RolloutId, who: Who) -> dict[str, Any]:
        return yard.rollouts.abort(who, rollout_id)

    @router.post("/graphs/validate", tags=["endpoints"], dependencies=json_body)
    def validate_graph(body: dict[str, Any], who: Who) -> dict[str, Any]:
        """Check a graph without deploying it: every problem with its node path, or the
        graph's signature when it is valid."""
        return endpoints.validate_graph(who, body)

    # -- API keys -------------------------------------------------------------------------
    @router.get("/keys", tags=["keys"])
    def list_keys(who: Who) -> list[dict[str, Any]]:
        return [k.to_dict() for k in yard.access.list(who)]

    @router.post("/keys", status_code=201, tags=["keys"], dependencies=json_body)
    def create_key(body: KeyCreate, who: Who) -> dict[str, Any]:
        """The answer holds the secret (``key``): it is shown this once and never stored."""
        return yard.access.create(who, body.owner, body.roles, rate_per_s=body.rate_per_s,
                                  daily_quota=body.daily_quota)

    @router.post("/keys/{prefix}/rotate", status_code=201, tags=["keys"])
    def rotate_key(prefix: str, who: Who) -> dict[str, Any]:
        return yard.access.rotate(who, prefix)

    @router.delete("/keys/{prefix}", tags=["keys"])
    def revoke_key(prefix: str, who: Who) -> dict[str, Any]:
        return yard.access.revoke(who, prefix).to_dict()

    # -- signatures -----------------------------------------------------------------------
    @router.get("/models/{name}/versions/{version}/signatures", tags=["models"])
    def list_signatures(name: str, version: VersionNumber, who: Who) -> list[dict[str, Any]]:
        return registry.signatures(who, name, version)

    @router.post("/models/{name}/versions/{version}/signatures", status_code=201,
                 tags=["models"], dependencies=json_body)
    def add_signature(name: str, version: VersionNumber, body: SignatureIn, who: Who
                      ) -> dict[str, Any]:
        """Attach an Ed25519 signature over the version's artifact digest and model name
        (``modelyard models sign``); it must verify with a key the project trusts."""
        return registry.add_signature(who, name, version, body.model_dump())

    # -- projects -------------------------------------------------------------------------
    @router.get("/projects", tags=["projects"])
    def list_projects(who: Who) -> list[dict[str, Any]]:
        return [p.to_dict() for p in yard.projects.list(who)]

    @router.post("/projects", status_code=201, tags=["projects"], dependencies=json_body)
    def create_project(body: ProjectCreate, who: Who, response: Response) -> dict[str, Any]:
        project = yard.projects.create(who, body.name, body.description, body.policy)
        response.headers["Location"] = f"{API}/projects/{project.name}"
        return project.to_dict()

    @router.get("/projects/{name}", tags=["projects"])
    def get_project(name: str, who: Who) -> dict[str, Any]:
        return yard.projects.get(who, name).to_dict()

    @router.patch("/projects/{name}", tags=["projects"], dependencies=json_body)
    def update_project(name: str, body: ProjectUpdate, who: Who) -> dict[str, Any]:
        if body.description is None and body.policy is None:
            raise InvalidRequest("nothing to change: give description or policy")
        return yard.projects.update(who, name, description=body.description,
                                    policy=body.policy).to_dict()

    # -- approvals ------------------------------------------------------------------------
    @router.get("/approvals", tags=["approvals"])
    def list_approvals(who: Who, status: str | None = None, project: str | None = None
                       ) -> list[dict[str, Any]]:
        return [a.to_dict() for a in yard.approvals.list(who, status, project)]

    @router.get("/approvals/{approval_id}", tags=["approvals"])
    def get_approval(approval_id: ApprovalId, who: Who) -> dict[str, Any]:
        return yard.approvals.get(who, approval_id).to_dict()

    @router.post("/approvals/{approval_id}/approve", tags=["approvals"])
    def approve(approval_id: ApprovalId, who: Who, body: Decision | None = None) -> dict[str, Any]:
        """The approval that reaches the required number executes the change, once."""
        decided = yard.approvals.approve(who, approval_id, body.comment if body else "")
        if decided.status == "executed":
            backend.trigger()
        return decided.to_dict()

    @router.post("/approvals/{approval_id}/reject", tags=["approvals"])
    def reject(approval_id: ApprovalId, who: Who, body: Decision | None = None) -> dict[str, Any]:
        return yard.approvals.reject(who, approval_id, body.comment if body else "").to_dict()

    @router.post("/approvals/{approval_id}/cancel", tags=["approvals"])
    def cancel(approval_id: ApprovalId, who: Who) -> dict[str, Any]:
        return yard.approvals.cancel(who, approval_id).to_dict()

    # -- audit ----------------------------------------------------------------------------
    @router.get("/audit", tags=["audit"])
    def audit_records(who: Who, since: datetime | None = None,
                      limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
                      ) -> list[dict[str, Any]]:
        guard(yard.db, who, "audit:read", "audit")
        with yard.db.transaction() as session:
            return list(audit.records(session, since, limit))

    @router.get("/audit/verify", tags=["audit"])
    def audit_verify(who: Who) -> dict[str, Any]:
        guard(yard.db, who, "audit:read", "audit")
        with yard.db.transaction() as session:
            return audit.verify(session).to_dict()

    from modelyard.control.job_routes import add_job_routes  # imports this module

    add_job_routes(router, yard)
    from modelyard.control.retrain_routes import add_retrain_routes  # imports this module

    add_retrain_routes(router, yard)
    from modelyard.control.readiness_routes import add_readiness_routes  # imports this module

    add_readiness_routes(router, yard)
    app.include_router(router)


def pending(approval: Approval) -> JSONResponse:
    """202 Accepted: the change waits for approvals at the Location given."""
    return JSONResponse(approval.to_dict(), status_code=202,
                        headers={"Location": f"{API}/approvals/{approval.id}"})


def _store_upload(yard: Yard, upload: Path) -> tuple[str, int]:
    """Extract safely (refusing anything unsafe), re-pack canonically, store by digest."""
    scratch = yard.settings.home / "tmp"
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=scratch))
    try:
        extract(upload, folder, max_bytes=yard.settings.max_artifact_bytes)
        if not any(folder.iterdir()):
            raise InvalidRequest("the archive is empty", field="body")
        archive, digest, size = pack_to_file(folder, scratch)
        try:
            yard.artifacts.put_file(archive, digest)
        finally:
            archive.unlink(missing_ok=True)
        return digest, size
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["API", "CHUNK", "build_control_api"]
