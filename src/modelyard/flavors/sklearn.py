"""scikit-learn estimators, saved in skops' safe format.

A raw pickle or joblib file executes code when loaded, so it is accepted only when the caller
marks it ``trusted`` (recorded in lineage). skops files load without executing code; types
outside skops' default trusted set must be named by the caller (``trusted_types``). Saving an
in-memory estimator names the types it serialised, since the caller handed us the object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.domain.errors import InvalidArtifact, UntrustedArtifact, ValidationFailed
from modelyard.domain.signature import Signature
from modelyard.flavors.base import Arrays, Predictor, only_file

SKOPS_FILE = "model.skops"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")


class SklearnPredictor:
    """One input tensor (rows x features) in; ``label`` + ``probabilities`` for classifiers
    with ``predict_proba``, ``prediction`` otherwise."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.proba = hasattr(estimator, "predict_proba") and hasattr(estimator, "classes_")

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        (x,) = inputs.values()
        if self.proba:
            proba = self.estimator.predict_proba(x)
            labels = np.asarray(self.estimator.classes_)[np.argmax(proba, axis=1)]
            return {"label": labels, "probabilities": proba.astype(np.float32)}
        return {"prediction": np.asarray(self.estimator.predict(x))}


class SklearnFlavor:
    name = "sklearn"

    def matches_object(self, model: Any) -> bool:
        return type(model).__module__.startswith("sklearn.") and hasattr(model, "predict")

    def matches_files(self, folder: Path) -> bool:
        return only_file(folder, (".skops", *PICKLE_SUFFIXES)) is not None

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        if not self.matches_object(model):
            raise ValidationFailed(
                f"the sklearn flavor saves scikit-learn estimators, not {type(model).__name__}",
                field="flavor",
            )
        import skops.io as sio

        path = folder / SKOPS_FILE
        sio.dump(model, path)
        return {"file": SKOPS_FILE, "format": "skops",
                "trusted_types": sio.get_untrusted_types(file=path)}

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        found = only_file(folder, (".skops", *PICKLE_SUFFIXES))
        if found is None:
            raise InvalidArtifact(
                "a sklearn artifact must hold exactly one .skops (or, trusted, .pkl/.joblib) file"
            )
        rel = found.relative_to(folder).as_posix()
        if found.name.lower().endswith(PICKLE_SUFFIXES):
            if not trusted:
                raise UntrustedArtifact(
                    f"{found.name} is a pickle, which runs code when loaded; save the model "
                    "with skops instead, or pass trusted=True (--trusted) if you made it",
                    field="trusted",
                )
            return {"file": rel, "format": "pickle"}
        import skops.io as sio

        try:
            untrusted = sio.get_untrusted_types(file=found)
        except Exception as exc:  # a broken zip or schema
            raise InvalidArtifact(f"{found.name} is not a readable skops file: {exc}") from exc
        missing = sorted(set(untrusted) - set(trusted_types)) if not trusted else []
        if missing:
            raise UntrustedArtifact(
                f"{found.name} holds types outside skops' trusted set: {missing}; review them "
                "and pass them as trusted_types, or trusted=True (--trusted)",
                field="trusted_types",
                untrusted_types=missing,
            )
        return {"file": rel, "format": "skops", "trusted_types": sorted(untrusted)}

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        path = folder / options.get("file", SKOPS_FILE)
        if options.get("format") == "pickle":
            if not trusted:
                raise UntrustedArtifact("refusing to unpickle a version not marked trusted")
            import joblib

            return SklearnPredictor(joblib.load(path))
        import skops.io as sio

        # Only the types recorded (and checked) at registration are trusted here.
        return SklearnPredictor(sio.load(path, trusted=list(options.get("trusted_types", []))))

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        return None
