"""The registry service: turns a model (object, file, folder or uploaded archive) into an
immutable, content-addressed, signed version, and moves aliases.

Order of a registration: stage files in a private temp folder -> let the flavor inspect them
(refusing pickles and code without trust) -> settle the signature (explicit, declared by the
format, or inferred by running the model on a sample) -> store the canonical archive under
its sha256 (temp then move) -> one metadata transaction. A failure at any step leaves no
visible version; an archive stored before a failed commit is an unreferenced blob.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from modelyard import flavors
from modelyard.control.approvals import ApprovalService
from modelyard.domain import limits
from modelyard.domain.approvals import Approval
from modelyard.domain.cards import ModelCard
from modelyard.domain.errors import (
    AliasNotFound,
    CardIncomplete,
    InvalidInput,
    SignatureRequired,
    ValidationFailed,
    VersionArchived,
)
from modelyard.domain.names import ModelRef, check_alias, check_name
from modelyard.domain.projects import DEFAULT_PROJECT, ProjectPolicy
from modelyard.domain.registry import Alias, Lineage, Model, ModelVersion
from modelyard.domain.signature import Signature, as_input_dict
from modelyard.domain.tensors import to_jsonable
from modelyard.flavors.base import Flavor, Predictor
from modelyard.governance import audit, signing
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
from modelyard.store import projects as projects_repo
from modelyard.store import registry as repo
from modelyard.store.archive import pack_to_file, stage
from modelyard.store.artifacts import ArtifactStore
from modelyard.store.db import Database

EXAMPLE_ROWS = 5


@dataclass
class Registration:
    """What a caller says about a new version, apart from the model itself."""

    flavor: str | None = None
    signature: Signature | None = None
    sample: Mapping[str, np.ndarray] | None = None
    lineage: Lineage = field(default_factory=Lineage)
    description: str = ""
    trusted: bool = False
    trusted_types: Sequence[str] = ()
    to_onnx: bool = False
    project: str | None = None  # a new model's project (default: "default")


def check_text(spec: Registration) -> None:
    """What a registrant wrote is bounded (``domain/limits.py``): checked before any work."""
    limits.description(spec.description)
    lineage = spec.lineage
    limits.tags(lineage.tags)
    limits.params(lineage.params)
    limits.metric_names(lineage.metrics)
    limits.optional_text(lineage.data_fingerprint, "data_fingerprint", limits.REFERENCE_MAX)
    limits.optional_text(lineage.code_revision, "code_revision", limits.REFERENCE_MAX)
    limits.names(list(spec.trusted_types), "trusted_types", limits.REFERENCE_MAX)


class RegistryService:
    def __init__(self, db: Database, artifacts: ArtifactStore, scratch: Path,
                 home: Path | None = None,
                 card_policy: tuple[str, tuple[str, ...]] = ("production", ()),
                 approvals: ApprovalService | None = None) -> None:
        self.db = db
        # (alias, card fields it requires): e.g. production needs owners and limitations.
        self.card_policy = card_policy
        self.home = home  # the yard's folder: never staged into an artifact
        self.artifacts = artifacts
        self.scratch = scratch
        # Test seam: called after the artifact is stored and before the metadata commit.
        self.before_commit: Callable[[], None] = lambda: None
        self.approvals = approvals or ApprovalService(db)
        self.approvals.register("alias:production", self._apply_alias)

    def _guard(self, principal: Principal | None, action: str, name: str,
               target: str) -> tuple[Principal, str | None]:
        """Authorise ``action`` on model ``name`` in its project (``None``: no such model,
        decided for any project; the call then answers 404)."""
        with self.db.transaction() as session:
            project = repo.project_of(session, name)
        who = guard(self.db, principal, action, target, project, anywhere=project is None)
        return who, project

    def _guard_new(self, principal: Principal | None, name: str, spec: Registration
                   ) -> tuple[Principal, str]:
        """Registration: the project is the model's, or the one asked for when it is new."""
        check_text(spec)
        with self.db.transaction() as session:
            existing = repo.project_of(session, name)
        wanted = spec.project
        if wanted is not None:
            check_name(wanted, "project name", "project")
        project = existing or wanted or DEFAULT_PROJECT
        who = guard(self.db, principal, "models:write", f"model:{name}", project)
        if spec.trusted:  # a trusted pickle or python model runs its code in the server
            guard(self.db, who, "jobs:run_code", f"model:{name}", project)
        if existing is not None and wanted is not None and wanted != existing:
            raise ValidationFailed(f"model {name!r} belongs to project {existing!r}",
                                   field="project")
        with self.db.transaction() as session:
            projects_repo.row(session, project)  # 404 for an unknown project
        return who, project

    # -- registration -------------------------------------------------------------------
    def register_object(self, principal: Principal | None, name: str, model: Any,
                        spec: Registration) -> ModelVersion:
        """Register an in-memory model (an estimator, a module, an ONNX proto, a class)."""
        check_name(name, "model name", "name")
        principal, spec.project = self._guard_new(principal, name, spec)
        sample = prepare_sample(spec.sample, spec.signature)
        with self._workdir() as folder:
            flavor, trusted_types = save_object(model, folder, spec, sample)
            return self._finish(principal, name, folder, flavor, spec, sample, trusted_types)

    def register_path(self, principal: Principal | None, name: str, path: Path,
                      spec: Registration) -> ModelVersion:
        """Register a model file or folder from the local disk."""
        check_name(name, "model name", "name")
        principal, spec.project = self._guard_new(principal, name, spec)
        sample = prepare_sample(spec.sample, spec.signature)
        with self._workdir() as folder:
            stage(Path(path), folder, exclude=self.home)
            if spec.to_onnx:
                with self._workdir() as converted:
                    flavor = convert_folder_to_onnx(folder, converted, spec, sample)
                    return self._finish(principal, name, converted, flavor, spec, sample, [])
            flavor = flavors.get(spec.flavor) if spec.flavor else flavors.detect_for_files(folder)
            return self._finish(principal, name, folder, flavor, spec, sample,
                                list(spec.trusted_types))

    def register_stored(self, principal: Principal | None, name: str, digest: str,
                        spec: Registration) -> ModelVersion:
        """Register an artifact already in the store (uploaded earlier by digest)."""
        check_name(name, "model name", "name")
        principal, spec.project = self._guard_new(principal, name, spec)
        sample = prepare_sample(spec.sample, spec.signature)
        source = self.artifacts.materialize(digest)
        with self._workdir() as folder:
            stage(source, folder)
            flavor = flavors.get(spec.flavor) if spec.flavor else flavors.detect_for_files(folder)
            return self._finish(principal, name, folder, flavor, spec, sample,
                                list(spec.trusted_types))

    def _finish(self, principal: Principal, name: str, folder: Path, flavor: Flavor,
                spec: Registration, sample: dict[str, np.ndarray] | None,
                trusted_types: list[str]) -> ModelVersion:
        options = flavor.inspect(folder, trusted=spec.trusted, trusted_types=trusted_types)
        signature = _settle_signature(flavor, folder, options, spec, sample)
        options["input_names"] = [s.name for s in signature.inputs]
        example = None
        if sample is not None:
            example = {"tensors": to_jsonable({k: v[:EXAMPLE_ROWS] for k, v in sample.items()})}
        lineage = replace(spec.lineage, trusted=spec.trusted)
        archive, digest, size = pack_to_file(folder, self.scratch)
        try:
            self.artifacts.put_file(archive, digest)
        finally:
            archive.unlink(missing_ok=True)
        with self.db.transaction() as session:
            model = repo.ensure_model(session, name, principal.name,
                                      project=spec.project or DEFAULT_PROJECT)
            if model.project != (spec.project or DEFAULT_PROJECT):  # created meanwhile
                raise ValidationFailed(f"model {name!r} belongs to project {model.project!r}",
                                       field="project")
            row = repo.add_version(session, model, flavor=flavor.name, digest=digest, size=size,
                                   signature=signature, lineage=lineage, options=options,
                                   description=spec.description, actor=principal.name)
            row.input_example = example
            version = repo.describe_version(session, model, row)
            audit.append(session, principal.name, "model.register", version.ref,
                         after={k: v for k, v in version.to_dict().items()
                                if k != "input_example"})
            self.before_commit()
            return version

    def _workdir(self) -> Any:
        self.scratch.mkdir(parents=True, exist_ok=True)
        return _TempDir(self.scratch)

    # -- reads -------------------------------------------------------------------------
    def list_models(self, principal: Principal | None, tags: dict[str, str] | None = None
                    ) -> list[Model]:
        who = guard(self.db, principal, "models:read", "models", anywhere=True)
        with self.db.transaction() as session:
            return [m for m in repo.list_models(session, tags)
                    if who.may("models:read", m.project)]

    def get_model(self, principal: Principal | None, name: str) -> Model:
        self._guard(principal, "models:read", name, f"model:{name}")
        with self.db.transaction() as session:
            return repo.describe_model(session, repo.model_row(session, name))

    def list_versions(self, principal: Principal | None, name: str) -> list[ModelVersion]:
        self._guard(principal, "models:read", name, f"model:{name}")
        with self.db.transaction() as session:
            return repo.list_versions(session, name)

    def get_version(self, principal: Principal | None, ref: ModelRef | str) -> ModelVersion:
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        self._guard(principal, "models:read", ref.model, f"model:{ref.model}")
        with self.db.transaction() as session:
            model, row = repo.resolve(session, ref)
            return repo.describe_version(session, model, row)

    def search(self, principal: Principal | None, tags: dict[str, str]) -> list[ModelVersion]:
        who = guard(self.db, principal, "models:read", "models", anywhere=True)
        with self.db.transaction() as session:
            return [v for v in repo.search_versions(session, tags)
                    if who.may("models:read", v.project)]

    def alias_history(self, principal: Principal | None, name: str) -> list[dict[str, Any]]:
        self._guard(principal, "models:read", name, f"model:{name}")
        with self.db.transaction() as session:
            return repo.alias_history(session, name)

    # -- changes -----------------------------------------------------------------------
    def set_alias(self, principal: Principal | None, name: str, alias: str, version: int
                  ) -> Alias | Approval:
        """Point ``alias`` at ``version``. When the project's policy holds back moves of the
        ``production`` alias, the answer is a pending approval instead of the move."""
        who, project = self._guard(principal, "aliases:write", name, f"alias:{name}@{alias}")
        check_alias(alias)
        with self.db.transaction() as session:
            policy = projects_repo.get(session, project or DEFAULT_PROJECT).policy
            self._check_card(session, policy, name, alias, version)
            if alias == "production" and policy.needs_approval("alias:production"):
                if repo.version_row(session, repo.model_row(session, name), version).status \
                        != "active":
                    raise VersionArchived(f"{name}:{version} is archived", field="version")
                return self.approvals.request(
                    session, who, policy, project or DEFAULT_PROJECT, "alias:production",
                    f"{name}@{alias}", {"model": name, "alias": alias, "version": version})
            moved = self._apply_alias(session, who, {"model": name, "alias": alias,
                                                     "version": version})
            return Alias(**moved)

    def _apply_alias(self, session: Any, who: Principal, change: dict[str, Any]
                     ) -> dict[str, Any]:
        """Move or remove (``version`` None) an alias, audited; approvals call this too."""
        name, alias, version = change["model"], change["alias"], change["version"]
        before = repo.describe_model(session, repo.model_row(session, name)).aliases.get(alias)
        if version is None:
            repo.remove_alias(session, name, alias, who.name)
            audit.append(session, who.name, "alias.remove", f"{name}@{alias}",
                         before={"version": before})
            return {"model": name, "name": alias, "version": None}
        policy = projects_repo.get(session, repo.model_row(session, name).project).policy
        self._check_card(session, policy, name, alias, version)
        moved = repo.set_alias(session, name, alias, version, who.name)
        audit.append(session, who.name, "alias.set", f"{name}@{alias}",
                     before={"version": before}, after={"version": version})
        return {"model": moved.model, "name": moved.name, "version": moved.version,
                "updated_by": moved.updated_by, "updated_at": moved.updated_at}

    def _check_card(self, session: Any, policy: ProjectPolicy, name: str, alias: str,
                    version: int) -> None:
        required_alias, fields = self.card_policy
        if policy.card_required is not None:
            fields = policy.card_required
        if alias != required_alias or not fields:
            return
        row = repo.version_row(session, repo.model_row(session, name), version)
        missing = ModelCard.from_dict(row.card).missing(fields)
        if missing:
            raise CardIncomplete(
                f"{name}:{version} cannot take the {alias!r} alias: its model card lacks "
                f"{', '.join(missing)} (modelyard models card {name}:{version} --set ...)",
                field="card", missing=missing)

    def card(self, principal: Principal | None, ref: ModelRef | str) -> ModelCard:
        """The version's card, with training data and metrics filled from lineage."""
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        self._guard(principal, "models:read", ref.model, f"model:{ref.model}")
        with self.db.transaction() as session:
            _, row = repo.resolve(session, ref)
            return ModelCard.from_dict(row.card).with_lineage(Lineage.from_dict(row.lineage))

    def update_card(self, principal: Principal | None, name: str, version: int,
                    changes: dict[str, Any]) -> ModelCard:
        principal, _ = self._guard(principal, "models:write", name, f"card:{name}:{version}")
        with self.db.transaction() as session:
            row = repo.version_row(session, repo.model_row(session, name), version)
            before = ModelCard.from_dict(row.card)
            after = before.merged(changes)
            if "owners" in changes:
                limits.names(list(after.owners), "card.owners")
            if "evaluation" in changes:
                limits.metric_names(dict(after.evaluation), "card.evaluation")
            row.card = after.to_dict()
            audit.append(session, principal.name, "card.update", f"{name}:{version}",
                         before=before.to_dict(), after=after.to_dict())
            return after.with_lineage(Lineage.from_dict(row.lineage))

    def remove_alias(self, principal: Principal | None, name: str, alias: str
                     ) -> Approval | None:
        """Remove an alias; removing ``production`` may wait for approvals like a move."""
        who, project = self._guard(principal, "aliases:write", name, f"alias:{name}@{alias}")
        with self.db.transaction() as session:
            policy = projects_repo.get(session, project or DEFAULT_PROJECT).policy
            if alias == "production" and policy.needs_approval("alias:production"):
                if alias not in repo.describe_model(session, repo.model_row(session, name)
                                                    ).aliases:
                    raise AliasNotFound(f"{name} has no alias {alias!r}", field="alias")
                return self.approvals.request(
                    session, who, policy, project or DEFAULT_PROJECT, "alias:production",
                    f"{name}@{alias}", {"model": name, "alias": alias, "version": None})
            self._apply_alias(session, who, {"model": name, "alias": alias, "version": None})
            return None

    def archive(self, principal: Principal | None, name: str, version: int) -> ModelVersion:
        principal, _ = self._guard(principal, "models:write", name, f"version:{name}:{version}")
        with self.db.transaction() as session:
            row = repo.archive_version(session, name, version)
            audit.append(session, principal.name, "version.archive", f"{name}:{version}",
                         before={"status": "active"}, after={"status": "archived"})
            return repo.describe_version(session, repo.model_row(session, name), row)

    def delete_model(self, principal: Principal | None, name: str) -> None:
        principal, _ = self._guard(principal, "models:delete", name, f"model:{name}")
        with self.db.transaction() as session:
            before = repo.describe_model(session, repo.model_row(session, name)).to_dict()
            repo.delete_model(session, name)
            audit.append(session, principal.name, "model.delete", name, before=before)

    def artifact_scope(self, digest: str, principal: Principal | None) -> tuple[str | None]:
        """The project under which to decide a download: one of the projects whose versions
        use the archive that the principal may read there, else yard-wide."""
        with self.db.transaction() as session:
            projects = repo.projects_using(session, digest)
        readable = [p for p in projects
                    if principal is not None and principal.may("artifacts:read", p)]
        return (readable[0] if readable else None,)

    def unreferenced_artifacts(self) -> list[str]:
        """Stored archives no version points at (left by failed or deleted registrations)."""
        with self.db.transaction() as session:
            used = repo.referenced_digests(session)
        return [d for d in self.artifacts.digests() if d not in used]

    def collect_garbage(self, principal: Principal | None, *, min_age_s: float = 3600,
                        delete: bool = False) -> list[str]:
        """Unreferenced blobs older than ``min_age_s`` (younger ones may be an upload whose
        registration is on its way); removed, and the removal audited, when ``delete``."""
        principal = guard(self.db, principal, "artifacts:delete", "artifacts")
        candidates = [d for d in self.unreferenced_artifacts()
                      if (self.artifacts.age_s(d) or 0.0) >= min_age_s]
        if delete and candidates:
            with self.db.transaction() as session:
                still_unused = [d for d in candidates
                                if d not in repo.referenced_digests(session)]
                audit.append(session, principal.name, "artifacts.gc", "artifacts",
                             after={"deleted": still_unused})
            for digest in still_unused:
                self.artifacts.delete(digest)
            return still_unused
        return candidates

    # -- signatures ----------------------------------------------------------------------
    def add_signature(self, principal: Principal | None, name: str, version: int,
                      signature: dict[str, Any]) -> dict[str, Any]:
        """Attach an Ed25519 signature (``modelyard models sign``); it must verify against
        one of the project's trusted keys, so a stored signature always means something."""
        who, project = self._guard(principal, "models:write", name,
                                   f"signature:{name}:{version}")
        if not isinstance(signature, dict):
            raise ValidationFailed("signature must be an object", field="signature")
        with self.db.transaction() as session:
            row = repo.version_row(session, repo.model_row(session, name), version)
            policy = projects_repo.get(session, project or DEFAULT_PROJECT).policy
            if not policy.trusted_keys:
                raise ValidationFailed(
                    f"project {project!r} trusts no signing key yet: add one to its policy "
                    "(trusted_keys) first", field="signature")
            key_id = signing.verify(signature, [k.encode() for k in policy.trusted_keys],
                                    name, row.artifact_digest)
            if key_id is None:
                raise ValidationFailed(
                    f"the signature does not verify for {name}:{version} with any key the "
                    f"project {project!r} trusts", field="signature")
            stored = repo.add_signature(session, row, key_id, str(signature["signature"]),
                                        who.name)
            audit.append(session, who.name, "version.sign", f"{name}:{version}",
                         after=stored)
            return stored

    def signatures(self, principal: Principal | None, name: str, version: int
                   ) -> list[dict[str, Any]]:
        self._guard(principal, "models:read", name, f"model:{name}")
        with self.db.transaction() as session:
            row = repo.version_row(session, repo.model_row(session, name), version)
            return repo.signatures(session, row)

    def check_signed(self, version: ModelVersion) -> str | None:
        """Before a load: when the project requires signatures, the key id of a trusted key
        that signed this version, or SignatureRequired. ``None`` when none are required."""
        with self.db.transaction() as session:
            policy = projects_repo.get(session, version.project).policy
            if not policy.signatures_required:
                return None
            row = repo.version_row(session, repo.model_row(session, version.model),
                                   version.version)
            stored = repo.signatures(session, row)
        trusted = [k.encode() for k in policy.trusted_keys]
        key_id = signing.verify_any(stored, trusted, version.model, version.artifact_digest)
        if key_id is None:
            raise SignatureRequired(
                f"project {version.project!r} requires a signature by a trusted key, and "
                f"{version.ref} has none that verifies (modelyard models sign {version.ref})",
                field="model")
        return key_id

    def load_predictor(self, version: ModelVersion) -> Predictor:
        self.check_signed(version)
        folder = self.artifacts.materialize(version.artifact_digest)
        flavor = flavors.get(version.flavor)
        return flavor.load(folder, version.flavor_options, trusted=version.lineage.trusted)


def save_object(model: Any, folder: Path, spec: Registration,
                sample: dict[str, np.ndarray] | None) -> tuple[Flavor, list[str]]:
    """Write an in-memory model into ``folder``; return its flavor and the types the caller
    implicitly trusts by handing over the object (skops types it serialised)."""
    if spec.to_onnx:
        if sample is None:
            raise ValidationFailed("to_onnx needs a sample input", field="sample")
        from modelyard.flavors.onnx import sklearn_to_onnx

        model, flavor = sklearn_to_onnx(model, sample), flavors.get("onnx")
    else:
        flavor = flavors.get(spec.flavor) if spec.flavor else flavors.detect_for_object(model)
    saved = flavor.save(model, folder, sample=sample)
    return flavor, list(spec.trusted_types) + list(saved.get("trusted_types", []))


def convert_folder_to_onnx(folder: Path, dest: Path, spec: Registration,
                           sample: dict[str, np.ndarray] | None) -> Flavor:
    """Load a staged scikit-learn model and write its ONNX conversion into ``dest``."""
    if sample is None:
        raise ValidationFailed("to_onnx needs a sample input", field="sample")
    flavor = flavors.get(spec.flavor) if spec.flavor else flavors.detect_for_files(folder)
    if flavor.name != "sklearn":
        raise ValidationFailed("to_onnx converts scikit-learn models only", field="to_onnx")
    options = flavor.inspect(folder, trusted=spec.trusted, trusted_types=spec.trusted_types)
    estimator = getattr(flavor.load(folder, options, trusted=spec.trusted), "estimator", None)
    from modelyard.flavors.onnx import sklearn_to_onnx

    onnx_flavor = flavors.get("onnx")
    onnx_flavor.save(sklearn_to_onnx(estimator, sample), dest, sample=sample)
    return onnx_flavor


class _TempDir:
    def __init__(self, parent: Path) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="stage-", dir=parent))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def prepare_sample(sample: Any, signature: Signature | None) -> dict[str, np.ndarray] | None:
    if sample is None:
        return None
    names = [s.name for s in signature.inputs] if signature else ["input"]
    arrays = {k: np.asarray(v) for k, v in as_input_dict(sample, names).items()}
    for key, array in arrays.items():
        if array.ndim == 0 or array.shape[0] == 0:
            raise ValidationFailed(f"sample {key!r} needs at least one row", field="sample")
    return arrays


def _settle_signature(flavor: Flavor, folder: Path, options: dict[str, Any],
                      spec: Registration, sample: dict[str, np.ndarray] | None) -> Signature:
    signature = spec.signature or flavor.native_signature(folder, options)
    if sample is None:
        if signature is None:
            raise ValidationFailed(
                f"cannot infer a signature for a {flavor.name} model without a sample input; "
                "pass sample= (--sample) or signature= (--signature)",
                field="sample",
            )
        return signature
    if signature is not None:
        try:
            sample = signature.validate(sample)
        except InvalidInput as exc:
            raise ValidationFailed(f"the sample does not fit the signature: {exc.detail}",
                                   field="sample") from exc
    predictor = flavor.load(folder, {**options, "input_names": list(sample)},
                            trusted=spec.trusted)
    try:
        outputs = predictor.predict(sample)
    except Exception as exc:  # the model's own failure, reported with its message
        raise ValidationFailed(f"the model failed on the sample input: {exc}",
                               field="sample") from exc
    inferred = Signature.infer(sample, outputs)
    if signature is None:
        return inferred
    if not signature.outputs:
        return Signature(signature.inputs, inferred.outputs)
    return signature
