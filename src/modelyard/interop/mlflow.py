"""Importing models that MLflow logged (the optional extra ``modelyard[mlflow]``).

Supported, and how:

* MLflow's ``sklearn`` flavor (also a ``python_function`` model whose loader is
  ``mlflow.sklearn``). A ``skops`` file is read under Modelyard's own skops rules: types outside
  skops' trusted set need ``trusted_types`` or ``trusted``. The list in the MLmodel file is
  ignored: it comes from the very artifact it would vouch for. A pickle or cloudpickle file runs
  code when loaded, so it is loaded only with ``trusted=True``. Either way the estimator is
  registered from memory, so the new version holds a skops file (or ONNX with ``to_onnx``),
  never MLflow's pickle.
* ``python_function`` models made from a ``mlflow.pyfunc.PythonModel`` whose class, and
  everything else in its pickle, is importable by module path (cloudpickled by reference):
  ``trusted=True`` only. They become ``python`` flavor versions, :class:`MlflowPythonModel`
  plus the MLflow model folder, served through ``mlflow.pyfunc``; mlflow and the class must be
  importable where the version is served, as for any python-flavor model.

Refused, with the reason: other loaders (torch, transformers, chat models, custom loader
modules...); models from code, models logged with ``code_paths`` and classes or functions
cloudpickled by value, because their code would travel inside the artifact instead of living
in the project; inputs one Modelyard tensor cannot hold (text mixed with number columns,
dates, arrays, objects); pyfunc models without a signature.

Signature: a column-based MLflow schema becomes ONE matrix input ``input`` of shape
(-1, columns), in column order, of the columns' common dtype (float64 when numeric columns
differ), which is what Modelyard's sklearn flavor takes; a pyfunc model gets its DataFrame back
from that matrix. A tensor-based schema keeps its tensors (an unnamed one is ``input``).
Outputs are not copied: Modelyard's predictors name their own (``label`` + ``probabilities``
for classifiers), so registration infers them by running the model on MLflow's input example,
which becomes the version's sample. With ``to_onnx`` the ONNX graph's own inputs apply.

Lineage: the run (from a ``runs:/`` URI, else the MLmodel's ``run_id``) gives params, metrics,
the code revision (tag ``mlflow.source.git.commit``) and the tags ``mlflow.run_id``,
``mlflow.experiment_id``, ``mlflow.source``; every import records ``mlflow.model_uri``.
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import gzip
import lzma
import math
import os
import pickletools
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.domain.errors import (
    InvalidArtifact,
    InvalidInput,
    ModelyardError,
    NotFound,
    UntrustedArtifact,
    ValidationFailed,
)
from modelyard.domain.signature import DTYPES, Signature, TensorSpec, dtype_name

if TYPE_CHECKING:
    from modelyard.yard import RegisterOptions

__all__ = ["MlflowPythonModel", "MlflowUnavailable", "UnsupportedMlflowModel",
           "import_mlflow", "input_specs", "load_mlflow"]

MLFLOW_DIR = "mlflow_model"  # the MLflow model folder inside a python-flavor artifact
INPUT = "input"  # a single unnamed input, named as Modelyard names inferred ones
# MLflow column types -> Modelyard dtypes (binary values travel as bytes in ``string``).
COLUMN_DTYPES = {"boolean": "bool", "integer": "int32", "long": "int64", "float": "float32",
                 "double": "float64", "string": "string", "binary": "string"}
NUMERIC = {"bool", "int32", "int64", "float32", "float64"}
# cloudpickle helpers that rebuild a class or function from bytecode held in the pickle.
BY_VALUE = {"_make_function", "_make_skeleton_class", "_make_skeleton_enum"}
TRACKING_ENV = "MLFLOW_TRACKING_URI"


class MlflowUnavailable(ModelyardError):
    code, status, title = "mlflow_unavailable", 400, "MLflow is not installed"


class UnsupportedMlflowModel(InvalidArtifact):
    code, title = "unsupported_mlflow_model", "MLflow model not supported"


def mlflow_module() -> Any:
    """``mlflow``, or an error naming the extra to install."""
    try:
        import mlflow
    except ImportError as exc:
        raise MlflowUnavailable(
            f"importing MLflow models needs mlflow: pip install 'modelyard[mlflow]' ({exc})"
        ) from exc
    return mlflow


@contextlib.contextmanager
def _mlflow_errors(what: str, field: str = "model_uri") -> Iterator[None]:
    """MLflow's own failures as one Modelyard error that says what was being done."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NotFound(f"{what}: {exc.message}", field=field) from exc
        raise ValidationFailed(f"{what}: {exc.message}", field=field) from exc
    except OSError as exc:
        raise ValidationFailed(f"{what}: {exc}", field=field) from exc


# -- loading ------------------------------------------------------------------------------
def load_mlflow(model_uri: str, *, trusted: bool, tracking_uri: str | None = None,
                trusted_types: Sequence[str] = (), to_onnx: bool = False,
                workdir: Path | None = None) -> tuple[Any, RegisterOptions]:
    """Load the MLflow model at ``model_uri`` (``runs:/RUN/PATH``, ``models:/...`` or a
    local folder) for ``register``: returns ``(model, options)``.

    ``model`` is a scikit-learn estimator (register it as an object) or, for a pyfunc model,
    the ``Path`` of a prepared python-flavor folder (register it with ``path=`` and remove it
    afterwards; it is made in ``workdir`` when given). ``options`` holds flavor, signature,
    sample, trust, description and the run's lineage. Nothing MLflow pickled is unpickled
    unless ``trusted``: the refusal names the pickle.
    """
    mlflow_module()
    # A pyfunc model's folder outlives this call: in workdir, or a temporary folder of its own.
    owned: Path | None = None
    if workdir is None:
        owned = dest = Path(tempfile.mkdtemp(prefix="modelyard-pyfunc-"))
    else:
        dest = workdir / "pyfunc"
    try:
        model, options = _load(model_uri, trusted=trusted, tracking_uri=tracking_uri,
                               trusted_types=trusted_types, to_onnx=to_onnx, pyfunc_dest=dest)
    except BaseException:
        if owned is not None:
            shutil.rmtree(owned, ignore_errors=True)
        raise
    if owned is not None and not isinstance(model, Path):
        shutil.rmtree(owned, ignore_errors=True)
    return model, options


def _load(model_uri: str, *, trusted: bool, tracking_uri: str | None,
          trusted_types: Sequence[str], to_onnx: bool, pyfunc_dest: Path
          ) -> tuple[Any, RegisterOptions]:
    from mlflow.models import Model

    with _tracking(tracking_uri), tempfile.TemporaryDirectory(prefix="modelyard-mlflow-") as tmp:
        folder = _download(model_uri, tracking_uri, Path(tmp) / "download")
        with _mlflow_errors(f"cannot read the MLmodel file of {model_uri}"):
            meta = Model.load(str(folder))
            example = meta.load_input_example(str(folder))
        flavors: dict[str, Any] = dict(meta.flavors or {})
        pyfunc = flavors.get("python_function") or {}
        schema = meta.get_input_schema()
        model: Any
        if "sklearn" in flavors or pyfunc.get("loader_module") == "mlflow.sklearn":
            if schema is None and example is not None:
                from mlflow.models import infer_signature

                schema = infer_signature(example).inputs  # from the data only: nothing runs
            if schema is None:
                raise UnsupportedMlflowModel(
                    f"{model_uri} was logged with neither a signature nor an input example, so "
                    "its inputs are unknown; log it again with input_example=",
                    field="model_uri")
            inputs = input_specs(schema)
            if len(inputs) != 1:
                raise UnsupportedMlflowModel(
                    f"a scikit-learn model takes one input tensor; the signature of "
                    f"{model_uri} has {len(inputs)}", field="model_uri")
            model = _load_sklearn(folder, flavors, trusted=trusted,
                                  trusted_types=trusted_types)
            flavor = "sklearn"
        elif pyfunc.get("loader_module") == "mlflow.pyfunc.model":
            if to_onnx:
                raise ValidationFailed(f"--to-onnx converts scikit-learn models only; "
                                       f"{model_uri} is a pyfunc PythonModel", field="to_onnx")
            if schema is None:
                raise UnsupportedMlflowModel(
                    f"{model_uri} is a pyfunc model without a signature; Modelyard needs one "
                    "to turn its tensors into what the model takes (log it with signature= or "
                    "input_example=)", field="model_uri")
            inputs = input_specs(schema)
            model = _stage_pyfunc(folder, pyfunc, trusted=trusted, dest=pyfunc_dest)
            flavor = "python"
        else:
            raise UnsupportedMlflowModel(_unsupported(model_uri, flavors), field="model_uri")
        lineage = _lineage(model_uri, meta, tracking_uri)

    sample = _sample(example, schema, inputs)
    if to_onnx and sample is None:
        raise ValidationFailed(f"--to-onnx needs a sample, and {model_uri} was logged without "
                               "an input example", field="to_onnx")
    options: RegisterOptions = {
        "flavor": flavor,
        # With to_onnx the ONNX graph's own inputs apply (skl2onnx makes them float32).
        "signature": None if to_onnx else Signature(inputs),
        "sample": sample,
        "trusted": trusted,
        "trusted_types": list(trusted_types),
        "to_onnx": to_onnx,
        "description": f"imported from MLflow {model_uri}",
        "params": lineage["params"],
        "metrics": lineage["metrics"],
        "tags": lineage["tags"],
        "code_revision": lineage["code_revision"],
    }
    return model, options


def import_mlflow(target: Any, name: str, model_uri: str, *, trusted: bool = False,
                  trusted_types: Sequence[str] = (), tracking_uri: str | None = None,
                  to_onnx: bool = False, project: str | None = None,
                  description: str = "") -> Any:
    """Load with :func:`load_mlflow` and register as ``name`` through ``target.register``: a
    ``Yard``, or a ``Client``, which saves and uploads from this machine."""
    with tempfile.TemporaryDirectory(prefix="modelyard-mlflow-") as tmp:
        model, options = load_mlflow(model_uri, trusted=trusted, tracking_uri=tracking_uri,
                                     trusted_types=trusted_types, to_onnx=to_onnx,
                                     workdir=Path(tmp))
        if project is not None:
            options["project"] = project
        if description:
            options["description"] = description
        if isinstance(model, Path):
            return target.register(name, path=model, **options)
        return target.register(name, model, **options)


def _download(model_uri: str, tracking_uri: str | None, dest: Path) -> Path:
    import mlflow.artifacts

    with _mlflow_errors(f"cannot download {model_uri}"):
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest),
                                                    tracking_uri=tracking_uri)
    folder = Path(local)
    if not (folder / "MLmodel").is_file():
        raise UnsupportedMlflowModel(f"{model_uri} is not an MLflow model (no MLmodel file)",
                                     field="model_uri")
    return folder


@contextlib.contextmanager
def _tracking(tracking_uri: str | None) -> Iterator[None]:
    """Use ``tracking_uri`` as MLflow's global tracking URI for a while: MLflow 3 resolves
    ``models:/`` URIs (also behind ``runs:/`` ones) with the global URI, whatever
    ``download_artifacts`` is given. Restores the previous state, environment included (not
    thread-safe, like MLflow's own setting)."""
    if tracking_uri is None:
        yield
        return
    from mlflow.tracking._tracking_service import utils

    mlflow = mlflow_module()  # untyped on purpose: MLflow types the URI as str, None unsets it
    saved, saved_env = getattr(utils, "_tracking_uri", None), os.environ.get(TRACKING_ENV)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)
        if saved_env is None:
            os.environ.pop(TRACKING_ENV, None)
        else:
            os.environ[TRACKING_ENV] = saved_env


def _inside(folder: Path, rel: Any) -> Path:
    """A file the MLmodel names, which must lie inside the model folder."""
    path = (folder / str(rel or "")).resolve()
    if not rel or folder.resolve() not in path.parents or not path.is_file():
        raise InvalidArtifact(f"the MLmodel file names {rel!r}, which is not a file in the "
                              "model folder")
    return path


def _no_shipped_code(conf: Mapping[str, Any], what: str) -> None:
    if conf.get("code"):
        raise UnsupportedMlflowModel(
            f"{what} was logged with code_paths: its code travels inside the artifact, and "
            "Modelyard runs only code that lives in the project (importable where the model "
            "is served); make that code importable and log the model again without "
            "code_paths", field="model_uri")


def _load_sklearn(folder: Path, flavors: Mapping[str, Any], *, trusted: bool,
                  trusted_types: Sequence[str]) -> Any:
    conf = flavors.get("sklearn") or {}
    pyfunc = flavors.get("python_function") or {}
    _no_shipped_code(conf, "this scikit-learn model")
    _no_shipped_code(pyfunc, "this scikit-learn model")
    rel = conf.get("pickled_model") or pyfunc.get("model_path")
    path = _inside(folder, rel)
    fmt = conf.get("serialization_format") or ("skops" if path.suffix == ".skops" else "pickle")
    if fmt == "skops":
        estimator = _load_skops(path, trusted=trusted, trusted_types=trusted_types)
    else:
        if not trusted:
            raise UntrustedArtifact(
                f"{rel} is a {fmt} file, which runs code when it is loaded; Modelyard loads it "
                "only if you trust the MLflow run that logged it: pass --trusted "
                "(trusted=True), or log the model with serialization_format='skops'. Nothing "
                "was registered.", field="trusted")
        import mlflow.sklearn

        with _mlflow_errors("cannot load the scikit-learn model"):
            estimator = mlflow.sklearn.load_model(str(folder))
    if not type(estimator).__module__.startswith("sklearn."):
        raise UnsupportedMlflowModel(
            f"Modelyard's sklearn flavor stores scikit-learn estimators, and this MLflow "
            f"sklearn model is a {type(estimator).__module__}.{type(estimator).__name__}; "
            "convert it to ONNX and register the .onnx file", field="model_uri")
    return estimator


def _load_skops(path: Path, *, trusted: bool, trusted_types: Sequence[str]) -> Any:
    import skops.io as sio

    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # a broken zip or schema
        raise InvalidArtifact(f"{path.name} is not a readable skops file: {exc}") from exc
    missing = [] if trusted else sorted(set(untrusted) - set(trusted_types))
    if missing:
        raise UntrustedArtifact(
            f"{path.name} holds types outside skops' trusted set: {missing}; review them and "
            "pass them as --trusted-type (trusted_types), or --trusted", field="trusted_types",
            untrusted_types=missing)
    return sio.load(path, trusted=list(untrusted))


def _stage_pyfunc(folder: Path, pyfunc: Mapping[str, Any], *, trusted: bool,
                  dest: Path) -> Path:
    from modelyard.flavors import get
    from modelyard.flavors.python import resolve

    if pyfunc.get("model_code_path"):
        raise UnsupportedMlflowModel(
            "this pyfunc model was logged as 'models from code': its code is a file inside "
            "the artifact, and Modelyard runs only code that lives in the project; put the "
            "PythonModel class in an importable module and log an instance of it",
            field="model_uri")
    _no_shipped_code(pyfunc, "this pyfunc model")
    rel = pyfunc.get("python_model")
    pickled = _inside(folder, rel)
    if not trusted:
        raise UntrustedArtifact(
            f"{rel} is a cloudpickle of the model's PythonModel, which runs code when it is "
            "loaded; Modelyard loads it only if you trust the MLflow run that logged it: pass "
            "--trusted (trusted=True). Nothing was registered.", field="trusted")
    if _code_by_value(pickled, pyfunc.get("python_model_compression")):
        raise UnsupportedMlflowModel(
            f"{rel} carries code by value (a class or function defined in __main__, in a "
            "function or as a lambda), which would run from the artifact instead of the "
            "project; define the PythonModel, and what it holds, in an importable module and "
            "log it again", field="model_uri")
    shutil.copytree(folder, dest / MLFLOW_DIR)
    get("python").save(MlflowPythonModel, dest, sample=None)
    # Loaded here, trusted, so that a class the project cannot import fails now, not later
    # where the model is served.
    adapter = MlflowPythonModel()
    adapter.load(str(dest))
    cls = type(adapter.python_model)
    try:
        importable = resolve(f"{cls.__module__}:{cls.__qualname__}") is cls
    except ModelyardError:
        importable = False
    if not importable:
        raise UnsupportedMlflowModel(
            f"the PythonModel class {cls.__module__}.{cls.__qualname__} cannot be imported by "
            "its module path here; Modelyard serves python models from project code",
            field="model_uri")
    return dest


def _code_by_value(path: Path, compression: Any) -> bool:
    """Whether a cloudpickle rebuilds a class or function from bytecode it carries, rather
    than importing it. Read from the opcodes: nothing is unpickled."""
    if compression == "lzma":
        data = lzma.decompress(path.read_bytes())
    elif compression == "bzip2":
        data = bz2.decompress(path.read_bytes())
    elif compression == "gzip":
        data = gzip.decompress(path.read_bytes())
    else:
        data = path.read_bytes()
    names: set[str] = set()
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                # GLOBAL carries "module name"; STACK_GLOBAL takes two pushed strings.
                names.update(arg.split(" ", 1) if op.name in ("GLOBAL", "INST") else (arg,))
    except ValueError as exc:
        raise InvalidArtifact(f"{path.name} is not a readable pickle: {exc}") from exc
    return bool(names & BY_VALUE) or {"_builtin_type", "CodeType"} <= names


def _unsupported(model_uri: str, flavors: Mapping[str, Any]) -> str:
    loader = (flavors.get("python_function") or {}).get("loader_module")
    found = ", ".join(sorted(flavors)) or "none"
    return (f"{model_uri} has the MLflow flavors {found} (pyfunc loader: {loader}); Modelyard "
            "imports scikit-learn models and pyfunc PythonModel models only. Convert the model "
            "to ONNX and register the .onnx file, or wrap it in a python-flavor class of your "
            "project")


def _lineage(model_uri: str, meta: Any, tracking_uri: str | None) -> dict[str, Any]:
    tags = {"mlflow.model_uri": model_uri}
    if getattr(meta, "model_id", None):
        tags["mlflow.model_id"] = str(meta.model_id)
    run_id = _run_id(model_uri) or meta.run_id
    if not run_id:
        return {"params": {}, "metrics": {}, "tags": tags, "code_revision": None}
    from mlflow.tracking import MlflowClient

    with _mlflow_errors(f"cannot read MLflow run {run_id} for the model's lineage (is "
                        "--tracking-uri its tracking server?)"):
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    tags["mlflow.run_id"] = str(run_id)
    tags["mlflow.experiment_id"] = str(run.info.experiment_id)
    source = run.data.tags.get("mlflow.source.name")
    if source:
        tags["mlflow.source"] = source
    return {"params": dict(run.data.params),
            # MLflow keeps NaN metrics; lineage (JSON) cannot, so they stay in MLflow only.
            "metrics": {k: float(v) for k, v in run.data.metrics.items()
                        if math.isfinite(float(v))},
            "tags": tags,
            "code_revision": run.data.tags.get("mlflow.source.git.commit")}


def _run_id(model_uri: str) -> str | None:
    if not model_uri.startswith("runs:/"):
        return None
    return model_uri[len("runs:/"):].lstrip("/").split("/", 1)[0] or None


# -- signatures ---------------------------------------------------------------------------
def _columns(schema: Any) -> list[tuple[str | None, str]]:
    """(name, Modelyard dtype) of each column of a column-based MLflow schema."""
    out: list[tuple[str | None, str]] = []
    for col in schema.inputs:
        kind = col.type.name if isinstance(col.type, enum.Enum) else None
        if kind not in COLUMN_DTYPES:
            raise UnsupportedMlflowModel(
                f"input column {col.name!r} is {col.type}, which a Modelyard tensor cannot "
                "hold", field="signature")
        out.append((col.name, COLUMN_DTYPES[kind]))
    return out


def input_specs(schema: Any) -> tuple[TensorSpec, ...]:
    """Modelyard's inputs for an MLflow input schema: tensors keep their names, dtypes and
    shapes; columns become one (-1, columns) matrix ``input`` of their common dtype."""
    if schema.is_tensor_spec():
        return tuple(TensorSpec(spec.name or INPUT, dtype_name(spec.type),
                                tuple(int(d) for d in spec.shape))
                     for spec in schema.inputs)
    columns = _columns(schema)
    dtypes = {dtype for _, dtype in columns}
    if len(dtypes) == 1:
        (common,) = dtypes
    elif dtypes <= NUMERIC:
        common = "float64"  # exact for every int32 and for int64 up to 2**53
    else:
        described = ", ".join(f"{name or i} ({dtype})" for i, (name, dtype) in enumerate(columns))
        raise UnsupportedMlflowModel(
            f"the input columns mix text and numbers ({described}); Modelyard passes them as "
            "one tensor, which holds one type", field="signature")
    return (TensorSpec(INPUT, common, (-1, len(columns))),)


def _sample(example: Any, schema: Any, inputs: tuple[TensorSpec, ...]
            ) -> dict[str, np.ndarray] | None:
    """MLflow's input example as Modelyard input arrays, in the inputs' dtypes."""
    if example is None:
        return None
    if hasattr(example, "toarray"):  # a scipy sparse matrix
        example = example.toarray()
    try:
        if not schema.is_tensor_spec():
            (spec,) = inputs
            if isinstance(example, Mapping):  # a JSON object of columns
                import pandas as pd

                example = pd.DataFrame(example)
            names = [col.name for col in schema.inputs]
            if hasattr(example, "columns") and all(names):
                example = example[names]
            return {spec.name: np.asarray(example, dtype=spec.numpy_dtype)}
        if isinstance(example, Mapping):
            return {s.name: np.asarray(example[s.name], dtype=s.numpy_dtype) for s in inputs}
        (spec,) = inputs
        return {spec.name: np.asarray(example, dtype=spec.numpy_dtype)}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationFailed(f"MLflow's input example does not fit the model's inputs: {exc}",
                               field="sample") from exc


def mlflow_input(inputs: Mapping[str, np.ndarray], schema: Any) -> Any:
    """Modelyard's validated inputs as what the pyfunc model was logged to take."""
    if schema is None or schema.is_tensor_spec():
        if schema is not None and schema.has_input_names():
            return dict(inputs)
        (array,) = inputs.values()
        return array
    import pandas as pd

    (matrix,) = inputs.values()
    frame: dict[Any, np.ndarray] = {}
    for i, (name, dtype) in enumerate(_columns(schema)):
        values, target = matrix[:, i], DTYPES[dtype][0]
        if target.kind in "biu" and values.dtype.kind == "f":
            cast = values.astype(target)
            if not np.array_equal(cast.astype(values.dtype), values):
                raise InvalidInput(f"column {name or i!r} takes {dtype} values, got "
                                   "fractions", field=f"inputs.{INPUT}")
            values = cast
        frame[name if name is not None else i] = values.astype(target)
    return pd.DataFrame(frame)


def model_outputs(result: Any) -> dict[str, np.ndarray]:
    """A pyfunc prediction as named arrays: a DataFrame's columns, a mapping's entries, or
    anything else as ``output``."""
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return {str(c): result[c].to_numpy() for c in result.columns}
    if isinstance(result, Mapping):
        return {str(k): np.asarray(v) for k, v in result.items()}
    if isinstance(result, pd.Series):
        return {"output": result.to_numpy()}
    return {"output": np.asarray(result)}


class MlflowPythonModel:
    """The ``python`` flavor's class for imported pyfunc models: loads the MLflow model kept
    in the artifact's ``mlflow_model`` folder (the version is trusted, or the python flavor
    would not call this), and turns Modelyard's tensors into what the model takes."""

    model: Any
    schema: Any

    def load(self, path: str) -> None:
        mlflow_module()
        import mlflow.pyfunc

        with _mlflow_errors("cannot load the MLflow pyfunc model", field="model"):
            self.model = mlflow.pyfunc.load_model(str(Path(path) / MLFLOW_DIR))
        self.schema = self.model.metadata.get_input_schema()

    @property
    def python_model(self) -> Any:
        return self.model.unwrap_python_model()

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return model_outputs(self.model.predict(mlflow_input(inputs, self.schema)))
