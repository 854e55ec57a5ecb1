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
from modelyard.domain.cards import ModelCard
from modelyard.domain.errors import CardIncomplete, InvalidInput, ValidationFailed
from modelyard.domain.names import ModelRef, check_alias, check_name
from modelyard.domain.registry import Alias, Lineage, Model, ModelVersion
from modelyard.domain.signature import Signature, as_input_dict
from modelyard.domain.tensors import to_jsonable
from modelyard.flavors.base import Flavor, Predictor
from modelyard.governance import audit
from modelyard.governance.audit import guard
from modelyard.governance.policy import Principal
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


class RegistryService:
    def __init__(self, db: Database, artifacts: ArtifactStore, scratch: Path,
                 home: Path | None = None,
                 card_policy: tuple[str, tuple[str, ...]] = ("production", ())) -> None:
        self.db = db
        # (alias, card fields it requires): e.g. production needs owners and limitations.
        self.card_policy = card_policy
        self.home = home  # the yard's folder: never staged into an artifact
        self.artifacts = artifacts
        self.scratch = scratch
        # Test seam: called after the artifact is stored and before the metadata commit.
        self.before_commit: Callable[[], None] = lambda: None

    # -- registration -------------------------------------------------------------------
    def register_object(self, principal: Principal | None, name: str, model: Any,
                        spec: Registration) -> ModelVersion:
        """Register an in-memory model (an estimator, a module, an ONNX proto, a class)."""
        principal = guard(self.db, principal, "models:write", f"model:{name}")
        check_name(name, "model name", "name")
        sample = prepare_sample(spec.sample, spec.signature)
        with self._workdir() as folder:
            flavor, trusted_types = save_object(model, folder, spec, sample)
            return self._finish(principal, name, folder, flavor, spec, sample, trusted_types)

    def register_path(self, principal: Principal | None, name: str, path: Path,
                      spec: Registration) -> ModelVersion:
        """Register a model file or folder from the local disk."""
        principal = guard(self.db, principal, "models:write", f"model:{name}")
        check_name(name, "model name", "name")
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
        principal = guard(self.db, principal, "models:write", f"model:{name}")
        check_name(name, "model name", "name")
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
            model = repo.ensure_model(session, name, principal.name)
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
        principal = guard(self.db, principal, "models:read", "models")
        with self.db.transaction() as session:
            return repo.list_models(session, tags)

    def get_model(self, principal: Principal | None, name: str) -> Model:
        principal = guard(self.db, principal, "models:read", "models")
        with self.db.transaction() as session:
            return repo.describe_model(session, repo.model_row(session, name))

    def list_versions(self, principal: Principal | None, name: str) -> list[ModelVersion]:
        principal = guard(self.db, principal, "models:read", "models")
        with self.db.transaction() as session:
            return repo.list_versions(session, name)

    def get_version(self, principal: Principal | None, ref: ModelRef | str) -> ModelVersion:
        principal = guard(self.db, principal, "models:read", "models")
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self.db.transaction() as session:
            model, row = repo.resolve(session, ref)
            return repo.describe_version(session, model, row)

    def search(self, principal: Principal | None, tags: dict[str, str]) -> list[ModelVersion]:
        principal = guard(self.db, principal, "models:read", "models")
        with self.db.transaction() as session:
            return repo.search_versions(session, tags)

    def alias_history(self, principal: Principal | None, name: str) -> list[dict[str, Any]]:
        principal = guard(self.db, principal, "models:read", "models")
        with self.db.transaction() as session:
            return repo.alias_history(session, name)

    # -- changes -----------------------------------------------------------------------
    def set_alias(self, principal: Principal | None, name: str, alias: str, version: int) -> Alias:
        principal = guard(self.db, principal, "aliases:write", f"alias:{name}@{alias}")
        check_alias(alias)
        with self.db.transaction() as session:
            self._check_card(session, name, alias, version)
            before = repo.describe_model(session, repo.model_row(session, name)).aliases.get(alias)
            moved = repo.set_alias(session, name, alias, version, principal.name)
            audit.append(session, principal.name, "alias.set", f"{name}@{alias}",
                         before={"version": before}, after={"version": version})
            return moved

    def _check_card(self, session: Any, name: str, alias: str, version: int) -> None:
        required_alias, fields = self.card_policy
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
        guard(self.db, principal, "models:read", "models")
        ref = ModelRef.parse(ref) if isinstance(ref, str) else ref
        with self.db.transaction() as session:
            _, row = repo.resolve(session, ref)
            return ModelCard.from_dict(row.card).with_lineage(Lineage.from_dict(row.lineage))

    def update_card(self, principal: Principal | None, name: str, version: int,
                    changes: dict[str, Any]) -> ModelCard:
        principal = guard(self.db, principal, "models:write", f"card:{name}:{version}")
        with self.db.transaction() as session:
            row = repo.version_row(session, repo.model_row(session, name), version)
            before = ModelCard.from_dict(row.card)
            after = before.merged(changes)
            row.card = after.to_dict()
            audit.append(session, principal.name, "card.update", f"{name}:{version}",
                         before=before.to_dict(), after=after.to_dict())
            return after.with_lineage(Lineage.from_dict(row.lineage))

    def remove_alias(self, principal: Principal | None, name: str, alias: str) -> None:
        principal = guard(self.db, principal, "aliases:write", f"alias:{name}@{alias}")
        with self.db.transaction() as session:
            before = repo.describe_model(session, repo.model_row(session, name)).aliases.get(alias)
            repo.remove_alias(session, name, alias, principal.name)
            audit.append(session, principal.name, "alias.remove", f"{name}@{alias}",
                         before={"version": before})

    def archive(self, principal: Principal | None, name: str, version: int) -> ModelVersion:
        principal = guard(self.db, principal, "models:write", f"version:{name}:{version}")
        with self.db.transaction() as session:
            row = repo.archive_version(session, name, version)
            audit.append(session, principal.name, "version.archive", f"{name}:{version}",
                         before={"status": "active"}, after={"status": "archived"})
            return repo.describe_version(session, repo.model_row(session, name), row)

    def delete_model(self, principal: Principal | None, name: str) -> None:
        principal = guard(self.db, principal, "models:delete", f"model:{name}")
        with self.db.transaction() as session:
            before = repo.describe_model(session, repo.model_row(session, name)).to_dict()
            repo.delete_model(session, name)
            audit.append(session, principal.name, "model.delete", name, before=before)

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

    def load_predictor(self, version: ModelVersion) -> Predictor:
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
