"""``Client``: the Python SDK over the REST API, with the same verbs as ``Yard``.

Models are saved and packed on the caller's side (so the server never receives a pickle it
was not told to trust), uploaded by sha256, then registered.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import httpx
import numpy as np

from modelyard.domain import errors
from modelyard.domain.monitors import sample_rows, training_columns
from modelyard.domain.signature import as_input_dict
from modelyard.domain.tensors import decode_many, to_jsonable
from modelyard.graphs import Graph, graph_document

if TYPE_CHECKING:
    from modelyard.yard import RegisterOptions

API = "/api/v1"
PROFILE_UPLOAD_ROWS = 5000  # training rows sent for a reference profile (a seeded sample)
log = logging.getLogger("modelyard.client")


class ApiError(errors.ModelyardError):
    """An error answered by the server, carrying its problem+json document."""

    def __init__(self, problem: dict[str, Any]) -> None:
        super().__init__(str(problem.get("detail") or problem.get("title")),
                         field=problem.get("field"))
        self.code = str(problem.get("code", "error"))
        self.status = int(problem.get("status", 500))
        self.title = str(problem.get("title", ""))
        self.problem = problem


_TYPED: dict[str, type[ApiError]] = {}


def _typed_error(code: str) -> type[ApiError]:
    """An ApiError subclass that is also the library's own class for ``code`` (so callers can
    catch ``VersionNotFound`` from the server just like from a Yard), built once per code."""
    if not _TYPED:
        pending: list[type[errors.ModelyardError]] = [errors.ModelyardError]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            if issubclass(cls, ApiError) or cls is errors.ModelyardError:
                continue
            _TYPED.setdefault(cls.code, type(cls.__name__, (ApiError, cls), {}))
    return _TYPED.get(code, ApiError)


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        problem = response.json()
        if not isinstance(problem, dict):
            raise ValueError
    except ValueError:
        problem = {"status": response.status_code, "code": "http_error",
                   "detail": response.text[:500] or response.reason_phrase}
    problem.setdefault("status", response.status_code)
    raise _typed_error(str(problem.get("code")))(problem)


class Client:
    def __init__(self, url: str | None = None, key: str | None = None, *,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("MODELYARD_URL") or "http://127.0.0.1:8000").rstrip("/")
        key = key or os.environ.get("MODELYARD_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        raise_for_problem(response)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # -- registry ----------------------------------------------------------------------
    def register(self, name: str, model: Any = None, *, path: str | Path | None = None,
                 **options: Unpack[RegisterOptions]) -> dict[str, Any]:
        """Save and pack the model here, upload it by sha256, register it (options: see
        ``modelyard.yard.RegisterOptions``)."""
        from modelyard.control.registry import (
            check_text,
            convert_folder_to_onnx,
            prepare_sample,
            save_object,
        )
        from modelyard.store.archive import pack_to_file, stage
        from modelyard.yard import registration

        if (model is None) == (path is None):
            raise errors.ValidationFailed("pass either a model object or path=", field="model")
        spec = registration(**options)
        check_text(spec)  # before uploading anything the server would refuse to register
        arrays = prepare_sample(spec.sample, spec.signature)
        work = Path(tempfile.mkdtemp(prefix="modelyard-"))
        try:
            folder = work / "model"
            folder.mkdir()
            types = list(spec.trusted_types)
            flavor_name = spec.flavor
            if model is not None:
                chosen, types = save_object(model, folder, spec, arrays)
                flavor_name = chosen.name
            else:
                stage(Path(path), folder)  # type: ignore[arg-type]
                if spec.to_onnx:
                    converted = work / "onnx"
                    converted.mkdir()
                    flavor_name = convert_folder_to_onnx(folder, converted, spec, arrays).name
                    folder = converted
            archive, digest, _ = pack_to_file(folder, work)
            with open(archive, "rb") as fh:
                uploaded = self._call("POST", f"{API}/artifacts", params={"sha256": digest},
                                      content=fh,
                                      headers={"Content-Type": "application/x-tar"})
        finally:
            shutil.rmtree(work, ignore_errors=True)
        lineage = spec.lineage
        body = {
            "artifact": uploaded["sha256"],
            "flavor": flavor_name,
            "signature": spec.signature.to_dict() if spec.signature else None,
            "sample": to_jsonable(arrays) if arrays is not None else None,
            "params": lineage.params, "metrics": lineage.metrics, "tags": lineage.tags,
            "data_fingerprint": lineage.data_fingerprint,
            "code_revision": lineage.code_revision, "parent": lineage.parent,
            "description": spec.description, "trusted": spec.trusted,
            "trusted_types": types, "project": spec.project,
        }
        version = dict(self._call("POST", f"{API}/models/{name}/versions", json=body))
        data, wanted = options.get("data"), options.get("profile")
        if data is not None and wanted is not False:
            names = [t["name"] for t in version["signature"]["inputs"]]
            try:
                self.set_profile(f"{name}:{version['version']}",
                                 training_columns(data, names))
            except errors.ValidationFailed as exc:
                if wanted:  # asked for: say why not (the version itself is registered)
                    raise errors.ValidationFailed(
                        f"{name}:{version['version']} is registered, but without a "
                        f"reference profile: {exc.detail}", field=exc.field or "data"
                    ) from None
                log.warning("%s:%s: no reference profile from data (%s)", name,
                            version["version"], exc.detail)
        return version

    def models(self, tags: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        params = [("tag", f"{k}={v}") for k, v in (tags or {}).items()]
        return list(self._call("GET", f"{API}/models", params=params))

    def model(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/models/{name}"))

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/models/{name}/versions"))

    def version(self, ref: str) -> dict[str, Any]:
        from modelyard.domain.names import ModelRef

        parsed = ModelRef.parse(ref)
        if parsed.alias:
            return dict(self._call("GET", f"{API}/models/{parsed.model}/aliases/{parsed.alias}"))
        if parsed.version:
            return dict(self._call("GET",
                                   f"{API}/models/{parsed.model}/versions/{parsed.version}"))
        versions = [v for v in self.versions(parsed.model) if v["status"] == "active"]
        if not versions:
            raise errors.VersionNotFound(f"model {ref!r} has no active version")
        return versions[-1]

    def search(self, tags: Mapping[str, str]) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/versions",
                               params=[("tag", f"{k}={v}") for k, v in tags.items()]))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """The alias, or (answer 202) a pending approval with ``status: pending`` when the
        project holds moves of ``production`` back for four-eyes approval."""
        return dict(self._call("PUT", f"{API}/models/{name}/aliases/{alias}",
                               json={"version": version}))

    def remove_alias(self, name: str, alias: str) -> dict[str, Any] | None:
        """``None``, or a pending approval (see ``set_alias``)."""
        return self._call("DELETE", f"{API}/models/{name}/aliases/{alias}")

    def sign(self, name: str, version: int, private_key: bytes | str | Path
             ) -> dict[str, Any]:
        """Sign here with an Ed25519 private key (PEM bytes or a file; it never leaves this
        machine) and attach the signature to the version."""
        from modelyard.governance import signing

        pem = private_key if isinstance(private_key, bytes) else Path(private_key).read_bytes()
        digest = self.version(f"{name}:{version}")["artifact"]["sha256"]
        return dict(self._call("POST", f"{API}/models/{name}/versions/{version}/signatures",
                               json=signing.sign(pem, name, digest)))

    def signatures(self, name: str, version: int) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/models/{name}/versions/{version}/signatures"))

    def card(self, ref: str) -> dict[str, Any]:
        version = self.version(ref)
        return dict(self._call("GET", f"{API}/models/{version['model']}/versions/"
                                      f"{version['version']}/card"))

    def update_card(self, name: str, version: int, **fields: Any) -> dict[str, Any]:
        return dict(self._call("PATCH", f"{API}/models/{name}/versions/{version}/card",
                               json=fields))

    def archive(self, name: str, version: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/models/{name}/versions/{version}/archive"))

    def delete_model(self, name: str) -> None:
        self._call("DELETE", f"{API}/models/{name}")

    def download(self, digest: str, dest: str | Path) -> Path:
        """Download an artifact archive (verified against its sha256)."""
        import hashlib

        dest = Path(dest)
        hasher = hashlib.sha256()
        with self._http.stream("GET", f"{API}/artifacts/{digest}") as response:
            if not response.is_success:
                response.read()
                raise_for_problem(response)
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes():
                    hasher.update(chunk)
                    out.write(chunk)
        if hasher.hexdigest() != digest:
            dest.unlink(missing_ok=True)
            raise errors.DigestMismatch(f"downloaded artifact does not match {digest}")
        return dest

    # -- endpoints ---------------------------------------------------------------------
    def create_endpoint(self, name: str, model: str | None = None, *,
                        graph: Graph | Mapping[str, Any] | str | Path | None = None,
                        timeout_ms: int | None = None,
                        description: str = "",
                        deployment: Mapping[str, Any] | None = None,
                        auth: str = "key",
                        redaction: Mapping[str, str] | None = None,
                        log_sample: float | None = None) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/endpoints", json={
            "log_sample": log_sample,
            "name": name, "model": model, "timeout_ms": timeout_ms, "description": description,
            "deployment": dict(deployment) if deployment is not None else None,
            "auth": auth, "redaction": dict(redaction) if redaction is not None else None,
            "graph": graph_document(graph) if graph is not None else None}))

    def update_endpoint(self, name: str, *, model: str | None = None,
                        timeout_ms: int | None = None, description: str | None = None,
                        deployment: Mapping[str, Any] | None = None,
                        auth: str | None = None,
                        redaction: Mapping[str, str] | None = None,
                        graph: Graph | Mapping[str, Any] | str | Path | None = None,
                        log_sample: float | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"model": model, "timeout_ms": timeout_ms,
                                  "log_sample": log_sample,
                                  "graph": graph_document(graph) if graph is not None
                                  else None,
                                  "description": description,
                                  "deployment": dict(deployment) if deployment else None,
                                  "auth": auth,
                                  "redaction": dict(redaction) if redaction is not None
                                  else None}.items() if v is not None}
        return dict(self._call("PATCH", f"{API}/endpoints/{name}", json=body))

    def set_traffic(self, name: str, traffic: Mapping[str, Any] | None) -> dict[str, Any]:
        if traffic is None:
            return dict(self._call("DELETE", f"{API}/endpoints/{name}/traffic"))
        return dict(self._call("PUT", f"{API}/endpoints/{name}/traffic", json=dict(traffic)))

    # -- rollouts -------------------------------------------------------------------------
    def start_rollout(self, endpoint: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/rollouts",
                               json={"endpoint": endpoint, "spec": dict(spec)}))

    def rollouts_of(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/rollouts",
                               params={"endpoint": endpoint} if endpoint else None))

    def rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/rollouts/{rollout_id}"))

    def pause_rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/rollouts/{rollout_id}/pause"))

    def resume_rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/rollouts/{rollout_id}/resume"))

    def promote_rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/rollouts/{rollout_id}/promote"))

    def abort_rollout(self, rollout_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/rollouts/{rollout_id}/abort"))

    def validate_graph(self, graph: Graph | Mapping[str, Any] | str | Path
                       ) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/graphs/validate", json=graph_document(graph)))

    def endpoint(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/endpoints/{name}"))

    def list_endpoints(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/endpoints"))

    def delete_endpoint(self, name: str) -> None:
        self._call("DELETE", f"{API}/endpoints/{name}")

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until an endpoint serves what it points at now (its alias resolved now, its
        latest settings); raise NotReady if that fails to load or time runs out."""
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            state = self.endpoint(name)
            status = state["status"]
            if status.get("current"):
                return state
            if status.get("status") == "failed" and status.get("error"):
                raise errors.NotReady(f"endpoint {name!r} failed: {status.get('error')}")
            if time.monotonic() > deadline:
                raise errors.NotReady(f"endpoint {name!r} not ready after {timeout_s}s")
            time.sleep(0.1)

    # -- API keys ----------------------------------------------------------------------
    def create_key(self, owner: str, roles: Sequence[str], *, rate_per_s: float | None = None,
                   daily_quota: int | None = None) -> dict[str, Any]:
        """A new API key; its secret (``key``) is in the answer this once."""
        return dict(self._call("POST", f"{API}/keys", json={
            "owner": owner, "roles": list(roles), "rate_per_s": rate_per_s,
            "daily_quota": daily_quota}))

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/keys"))

    def rotate_key(self, prefix: str) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/keys/{prefix}/rotate"))

    def revoke_key(self, prefix: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"{API}/keys/{prefix}"))

    # -- audit -------------------------------------------------------------------------
    # -- projects and approvals --------------------------------------------------------
    def create_project(self, name: str, description: str = "",
                       policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/projects", json={
            "name": name, "description": description,
            "policy": dict(policy) if policy is not None else None}))

    def list_projects(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/projects"))

    def project(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/projects/{name}"))

    def update_project(self, name: str, *, description: str | None = None,
                       policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return dict(self._call("PATCH", f"{API}/projects/{name}", json={
            "description": description,
            "policy": dict(policy) if policy is not None else None}))

    def list_approvals(self, status: str | None = None, project: str | None = None
                       ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("status", status), ("project", project)) if v}
        return list(self._call("GET", f"{API}/approvals", params=params))

    def approval(self, approval_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/approvals/{approval_id}"))

    def approve(self, approval_id: int, comment: str = "") -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/approvals/{approval_id}/approve",
                               json={"comment": comment}))

    def reject(self, approval_id: int, comment: str = "") -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/approvals/{approval_id}/reject",
                               json={"comment": comment}))

    def cancel_approval(self, approval_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/approvals/{approval_id}/cancel"))

    def audit_verify(self) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/audit/verify"))

    def audit_records(self, since: datetime | None = None, limit: int | None = None
                      ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit or 100_000}
        if since is not None:
            params["since"] = since.isoformat()
        return list(self._call("GET", f"{API}/audit", params=params))

    # -- jobs ----------------------------------------------------------------------------
    def enqueue_job(self, kind: str, payload: Mapping[str, Any] | None = None, *,
                    project: str | None = None, max_attempts: int | None = None,
                    delay_s: float | None = None, backoff_s: float | None = None,
                    dedupe_key: str | None = None) -> dict[str, Any]:
        body = {"kind": kind, "payload": dict(payload or {}), "project": project,
                "max_attempts": max_attempts, "delay_s": delay_s, "backoff_s": backoff_s,
                "dedupe_key": dedupe_key}
        return dict(self._call("POST", f"{API}/jobs",
                               json={k: v for k, v in body.items() if v is not None}))

    def list_jobs(self, *, state: str | None = None, kind: str | None = None,
                  project: str | None = None, before: int | None = None, limit: int = 100
                  ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("state", state), ("kind", kind), ("project", project),
                                    ("before", before), ("limit", limit)) if v is not None}
        return list(self._call("GET", f"{API}/jobs", params=params))

    def job(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/jobs/{job_id}"))

    def job_logs(self, job_id: int, after: int = 0, limit: int = 1000
                 ) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/jobs/{job_id}/logs",
                               params={"after": after, "limit": limit}))

    def cancel_job(self, job_id: int) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/jobs/{job_id}/cancel"))

    def wait_job(self, job_id: int, timeout_s: float = 60.0) -> dict[str, Any]:
        """Wait until the job succeeded, failed or was cancelled (``NotReady`` on time-out)."""
        import time

        deadline = time.monotonic() + timeout_s
        while (job := self.job(job_id))["state"] not in ("succeeded", "failed", "cancelled"):
            if time.monotonic() > deadline:
                raise errors.NotReady(f"job {job_id} is still {job['state']} after "
                                      f"{timeout_s} s")
            time.sleep(0.1)
        return job

    def set_schedule(self, name: str, cron: str, kind: str,
                     payload: Mapping[str, Any] | None = None, *, project: str | None = None,
                     enabled: bool = True, max_attempts: int = 3) -> dict[str, Any]:
        return dict(self._call("PUT", f"{API}/schedules/{name}", json={
            "cron": cron, "kind": kind, "payload": dict(payload or {}), "project": project,
            "enabled": enabled, "max_attempts": max_attempts}))

    def list_schedules(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/schedules"))

    def delete_schedule(self, name: str) -> None:
        self._call("DELETE", f"{API}/schedules/{name}")

    # -- retraining ----------------------------------------------------------------------
    def set_retrain_policy(self, model: str, policy: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self._call("PUT", f"{API}/retraining/policies/{model}",
                               json=dict(policy)))

    def retrain_policy(self, model: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/retraining/policies/{model}"))

    def list_retrain_policies(self) -> list[dict[str, Any]]:
        return list(self._call("GET", f"{API}/retraining/policies"))

    def delete_retrain_policy(self, model: str) -> None:
        self._call("DELETE", f"{API}/retraining/policies/{model}")

    def retrain(self, model: str, reason: str = "") -> dict[str, Any]:
        """Start a retraining cycle now (the server's worker runs it)."""
        return dict(self._call("POST", f"{API}/retraining/policies/{model}/run",
                               json={"reason": reason}))

    def retrain_cycles(self, model: str | None = None, *, limit: int = 50,
                       before: int | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("model", model), ("limit", limit), ("before", before))
                  if v is not None}
        return list(self._call("GET", f"{API}/retraining/cycles", params=params))

    def retrain_cycle(self, cycle_id: int) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/retraining/cycles/{cycle_id}"))

    # -- monitoring --------------------------------------------------------------------
    def set_monitor(self, endpoint: str, spec: Mapping[str, Any] | None = None, *,
                    enabled: bool = True) -> dict[str, Any]:
        return dict(self._call("PUT", f"{API}/endpoints/{endpoint}/monitor",
                               json={"spec": dict(spec or {}), "enabled": enabled}))

    def monitor(self, endpoint: str) -> dict[str, Any]:
        return dict(self._call("GET", f"{API}/endpoints/{endpoint}/monitor"))

    def delete_monitor(self, endpoint: str) -> None:
        self._call("DELETE", f"{API}/endpoints/{endpoint}/monitor")

    def run_monitor(self, endpoint: str) -> dict[str, Any]:
        return dict(self._call("POST", f"{API}/endpoints/{endpoint}/monitor/run"))

    def _series(self, endpoint: str, kind: str, since: str | None, until: str | None,
                version: str | None, limit: int) -> dict[str, Any]:
        params = {k: v for k, v in {"since": since, "until": until, "version": version,
                                    "limit": limit}.items() if v is not None}
        return dict(self._call("GET", f"{API}/endpoints/{endpoint}/{kind}", params=params))

    def drift(self, endpoint: str, *, since: str | None = None, until: str | None = None,
              version: str | None = None, limit: int = 500) -> dict[str, Any]:
        return self._series(endpoint, "drift", since, until, version, limit)

    def quality(self, endpoint: str, *, since: str | None = None, until: str | None = None,
                version: str | None = None, limit: int = 500) -> dict[str, Any]:
        return self._series(endpoint, "quality", since, until, version, limit)

    def alerts(self, *, endpoint: str | None = None, status: str | None = None
               ) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"endpoint": endpoint, "status": status}.items()
                  if v is not None}
        return list(self._call("GET", f"{API}/alerts", params=params))

    def alert_events(self, *, after_id: int = 0, endpoint: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"after_id": after_id, "limit": limit}
        if endpoint is not None:
            params["endpoint"] = endpoint
        return list(self._call("GET", f"{API}/alerts/events", params=params))

    def set_profile(self, ref: str, data: Any = None, *, predictions: Any = None,
                    profile: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Attach the reference profile of ``model:version``: from training ``data``
        (at most ``PROFILE_UPLOAD_ROWS`` rows are sent, a seeded sample; the server adds the
        version's predictions), or a profile computed elsewhere."""
        from modelyard.domain.names import ModelRef

        parsed = ModelRef.parse(ref)
        body: dict[str, Any] = {}
        if data is not None:
            version = self.version(ref)
            columns = training_columns(data, [t["name"] for t in
                                              version["signature"]["inputs"]])
            body["columns"] = {k: v.tolist() for k, v in
                               sample_rows(columns, PROFILE_UPLOAD_ROWS).items()}
            parsed = ModelRef(parsed.model, int(version["version"]), None)
        if predictions is not None:
            body["predictions"] = np.asarray(predictions).tolist()
        if profile is not None:
            body["profile"] = dict(profile)
        return dict(self._call("PUT", f"{API}/models/{parsed.model}/versions/"
                                      f"{parsed.version}/profile", json=body))

    def profile(self, ref: str) -> dict[str, Any]:
        from modelyard.domain.names import ModelRef

        parsed = ModelRef.parse(ref)
        number = parsed.version or self.version(ref)["version"]
        return dict(self._call("GET", f"{API}/models/{parsed.model}/versions/{number}/profile"))

    def inference_log(self, endpoint: str, *, since: str | None = None,
                      until: str | None = None, version: str | None = None,
                      status: str | None = None, limit: int = 100,
                      before_id: int | None = None, payloads: bool = True) -> dict[str, Any]:
        params = {k: v for k, v in {"since": since, "until": until, "version": version,
                                    "status": status, "limit": limit, "before_id": before_id,
                                    "payloads": str(payloads).lower()}.items()
                  if v is not None}
        return dict(self._call("GET", f"{API}/endpoints/{endpoint}/log", params=params))

    def inference_log_summary(self, endpoint: str, *, since: str | None = None,
                              until: str | None = None) -> dict[str, Any]:
        params = {k: v for k, v in {"since": since, "until": until}.items() if v is not None}
        return dict(self._call("GET", f"{API}/endpoints/{endpoint}/log/summary",
                               params=params))

    # -- readiness -----------------------------------------------------------------------
    def readiness(self, endpoint: str | None = None) -> dict[str, Any]:
        """The readiness scorecard of ``endpoint`` (or of every endpoint, and the yard), as
        JSON (``modelyard.readiness.Scorecard.from_dict`` reads it back)."""
        path = f"{API}/readiness" + (f"/{endpoint}" if endpoint is not None else "")
        return dict(self._call("GET", path))

    def record_loadtest(self, endpoint: str, result: Mapping[str, Any]) -> dict[str, Any]:
        """Record a load test's result (``modelyard loadtest`` fields) for ``endpoint``."""
        return dict(self._call("POST", f"{API}/endpoints/{endpoint}/loadtests",
                               json=dict(result)))

    def loadtests(self, endpoint: str, limit: int = 20) -> list[dict[str, Any]]:
        """Recorded load tests of ``endpoint``, newest first."""
        return list(self._call("GET", f"{API}/endpoints/{endpoint}/loadtests",
                               params={"limit": limit}))

    # -- inference ---------------------------------------------------------------------
    def send_feedback(self, endpoint: str, outcomes: Sequence[Mapping[str, Any]]
                      ) -> dict[str, Any]:
        """Report what became of answers: outcomes (``{"version" or "request_id",
        "value"}``: A/B tests decide on them) and ground truth (``{"request_id", "label"}``:
        live quality per version)."""
        return dict(self._call("POST", f"/endpoints/{endpoint}/feedback",
                               json=[dict(o) for o in outcomes]))

    def predict(self, endpoint: str, inputs: Any) -> dict[str, np.ndarray]:
        """Predict through the Open Inference Protocol (dtypes survive the round trip)."""
        if not isinstance(inputs, Mapping):
            meta = self._call("GET", f"/v2/models/{endpoint}")
            inputs = as_input_dict(inputs, [i["name"] for i in meta["inputs"]])
        tensors = to_jsonable({k: np.asarray(v) for k, v in inputs.items()})
        result = self._call("POST", f"/v2/models/{endpoint}/infer", json={"inputs": tensors})
        return decode_many(result["outputs"], "outputs")
