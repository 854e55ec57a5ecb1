"""sentence-transformers text embedders, served by PyTorch or by onnxruntime.

A registered embedder is the folder ``SentenceTransformer.save`` writes, plus a small settings
file (``modelyard-embedder.json``) saying how to serve it. With the ``onnx`` runtime the
folder also holds ``model.onnx``: the transformer *and* the pooling (and any Dense layers)
exported as one graph that outputs the pooled, not yet normalised, sentence embedding. That
predictor tokenizes with ``tokenizers`` (tokenizer.json) and runs onnxruntime: it never imports
torch. L2 normalisation is done in numpy on both runtimes, so they share that step exactly.

Choosing the runtime: a bare ``SentenceTransformer`` is saved with :data:`DEFAULT_RUNTIME`;
wrap it in :class:`TextEmbedder` to choose another, or to change normalisation or the maximum
sequence length::

    yard.register("minilm", TextEmbedder(model, runtime="torch"),
                  sample={"text": np.array(["hi"], dtype=object)})

A plain sentence-transformers folder registered by path is served by PyTorch (nothing was
exported); a folder this flavor wrote keeps the runtime it was saved with.

Trust: a folder's ``modules.json`` names Python classes that sentence-transformers imports.
Without ``trusted``, only sentence-transformers' own module classes are accepted, configs
asking for custom modelling code (``auto_map``) are refused, and so are pickled weights.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from modelyard.domain.errors import (
    InvalidArtifact,
    InvalidInput,
    UntrustedArtifact,
    ValidationFailed,
)
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.flavors.base import Arrays, Embeddings, Predictor

DEFAULT_RUNTIME = "onnx"
"""The runtime a bare SentenceTransformer is saved with: the faster one in bench/text.py.
all-MiniLM-L6-v2, 256 short texts, 2-core AMD EPYC, one thread each (the server's ONNX default):
onnxruntime 286 / 407 / 398 texts/s at batch 1 / 8 / 32 against PyTorch's 128 / 198 / 194
(2.2x / 2.1x / 2.1x), p99 4.9 / 36 / 98 ms against 12 / 58 / 189 ms; with two threads each
1.8x-3.5x (bench/results/20261124T114247Z/text.md; docs/decisions/0008)."""

RUNTIMES = ("onnx", "torch")
SETTINGS_FILE = "modelyard-embedder.json"
ONNX_FILE = "model.onnx"
INPUT, OUTPUT = "text", "embedding"
POOLED = "sentence_embedding"  # the exported graph's output, before normalisation
LONG_TEXT = 10_000  # characters: longer texts are tokenized without holding the GIL

# sentence-transformers' own module classes (any version's dotted path ending in one of these
# names). Router and Asym are left out: they name further module classes in their configs.
OWN_MODULES = frozenset({
    "Transformer", "Pooling", "Normalize", "Dense", "Dropout", "LayerNorm", "WordEmbeddings",
    "WordWeights", "CNN", "LSTM", "BoW", "StaticEmbedding", "WeightedLayerPooling",
    "CLIPModel",
})
_OWN_TYPE = re.compile(r"sentence_transformers(\.[A-Za-z_]\w*)+")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
# Exported graph input -> the tokenizers.Encoding attribute that feeds it.
_ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask",
                    "token_type_ids": "type_ids"}
# Texts of several lengths and cases: traced with padding, and used to check the export.
PROBE = ("Hello world.", "",
         "A LONGER sentence, with Upper-Case words, punctuation and numbers (42) in it!",
         "ok")
MIN_COSINE = 0.9999


@dataclass(frozen=True)
class TextEmbedder:
    """A SentenceTransformer and how Modelyard serves it; register this instead of the bare
    model to choose. ``runtime``: "onnx" or "torch" (None: :data:`DEFAULT_RUNTIME`);
    ``normalize``: L2-normalise the embeddings (None: as the model does, i.e. whether it ends
    with a Normalize module); ``max_seq_length``: truncate longer texts (None: the model's)."""

    model: Any
    runtime: str | None = None
    normalize: bool | None = None
    max_seq_length: int | None = None


# -- predictors -----------------------------------------------------------------------------

class _TextPredictor(ABC):
    """``predict`` in tensor form ({"text": strings} -> {"embedding": float32 [n, d]}) on top
    of ``embed``, which each runtime implements."""

    dimension: int

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> Embeddings: ...

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        return {OUTPUT: self.embed(_texts(inputs)).vectors}

    def _empty(self) -> Embeddings:
        return Embeddings(np.zeros((0, self.dimension), dtype=np.float32), 0)


class OnnxEmbedder(_TextPredictor):
    """tokenizers + onnxruntime: no torch in the process."""

    def __init__(self, folder: Path, options: Mapping[str, Any]) -> None:
        from tokenizers import Tokenizer

        from modelyard.flavors.onnx import OnnxPredictor

        tok = dict(options["tokenizer"])
        self.tokenizer = Tokenizer.from_file(str(folder / tok["file"]))
        # Set explicitly: a saved tokenizer.json carries whatever padding/truncation its last
        # user left (MiniLM's pads every text to 128), not what the model was run with.
        self.tokenizer.enable_truncation(max_length=int(options["max_seq_length"]),
                                         direction=tok.get("truncation_side", "right"))
        self.tokenizer.no_padding()  # padded here, see embed()
        self.pad = {"ids": int(tok["pad_id"]), "type_ids": int(tok.get("pad_type_id", 0)),
                    "attention_mask": 0}
        self.pad_left = tok.get("padding_side", "right") == "left"
        self.lowercase = bool(tok.get("lowercase", False))
        self.normalize = bool(options["normalize"])
        self.dimension = int(options["dimension"])
        self.onnx = OnnxPredictor(folder / options["onnx_file"], options.get("threads"))
        self.inputs = [i.name for i in self.onnx.session.get_inputs()]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return self._empty()
        batch = [t.lower() for t in texts] if self.lowercase else list(texts)
        # One text at a time, padded in numpy: encode_batch would start tokenizers' thread
        # pool, whose spinning threads slow the model's own threads on a small machine, for
        # no gain (tokenizing a short text takes ~25 us, running MiniLM on it ~4 ms). A long
        # text does go through encode_batch: encode holds the GIL for all of it (a 5 MB text:
        # 4 s in which the whole server, health checks included, stood still); encode_batch
        # releases it, and the encoding is the same.
        encodings = [self.tokenizer.encode(text) if len(text) <= LONG_TEXT
                     else self.tokenizer.encode_batch([text])[0] for text in batch]
        width = max(len(e.ids) for e in encodings)
        feeds = {}
        for name in self.inputs:
            field = _ENCODING_FIELDS[name]
            array = np.full((len(encodings), width), self.pad[field], dtype=np.int64)
            for row, encoding in enumerate(encodings):
                values = getattr(encoding, field)
                if self.pad_left:
                    array[row, width - len(values):] = values
                else:
                    array[row, :len(values)] = values
            feeds[name] = array
        pooled = self.onnx.predict(feeds)[POOLED]
        tokens = sum(len(e.ids) for e in encodings)
        return Embeddings(_finish(pooled, self.normalize), int(tokens))


class TorchEmbedder(_TextPredictor):
    """The SentenceTransformer itself, its modules run up to (not including) Normalize."""

    def __init__(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> None:
        # The HF tokenizer encodes a batch on tokenizers' thread pool, whose threads fight
        # torch's for the cores: on the 2-core bench machine, MiniLM with 2 torch threads and 8
        # texts a call fell from ~200 to ~30 texts/s. Unless the operator set it, tokenize on
        # the calling thread.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), device="cpu", local_files_only=True,
                                         trust_remote_code=trusted)
        self.model.eval()
        if options.get("max_seq_length"):
            self.model.max_seq_length = int(options["max_seq_length"])
        self.normalize = bool(options["normalize"])
        self.dimension = int(options.get("dimension") or _dimension(self.model))
        # A HF fast tokenizer sets its padding/truncation on every call; concurrent calls
        # fail ("Already borrowed"), so tokenizing is serialised.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return self._empty()
        pooled, tokens = _torch_pooled(self.model, list(texts), self._lock)
        return Embeddings(_finish(pooled, self.normalize), tokens)


def _texts(inputs: Arrays) -> list[str]:
    if INPUT in inputs:
        array = inputs[INPUT]
    elif len(inputs) == 1:
        (array,) = inputs.values()
    else:
        raise InvalidInput(f"a text embedder takes one input, {INPUT!r}", field="inputs")
    texts = []
    for i, value in enumerate(np.asarray(array, dtype=object).reshape(-1)):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"text {i} is not UTF-8: {exc}",
                                   field=f"inputs.{INPUT}") from exc
        if not isinstance(value, str):
            raise InvalidInput(f"text {i} is a {type(value).__name__}, not a string",
                               field=f"inputs.{INPUT}")
        texts.append(value)
    return texts


def _finish(pooled: np.ndarray, normalize: bool) -> np.ndarray:
    vectors = np.asarray(pooled, dtype=np.float32)
    if normalize:  # as torch.nn.functional.normalize: divide by max(norm, eps)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.maximum(norms, 1e-12)
    return np.ascontiguousarray(vectors, dtype=np.float32)


# -- torch side (saving, the torch runtime) ---------------------------------------------------

def _features(model: Any, texts: list[str]) -> dict[str, Any]:
    preprocess = getattr(model, "preprocess", None) or model.tokenize  # before v5: tokenize
    return dict(preprocess(texts))


def _pooling_modules(model: Any) -> list[Any]:
    """Every module but Normalize: normalisation is applied afterwards, as an option."""
    return [m for m in model if type(m).__name__ != "Normalize"]


def _torch_pooled(model: Any, texts: list[str], lock: threading.Lock | None = None
                  ) -> tuple[np.ndarray, int]:
    import torch

    if lock is None:
        features = _features(model, texts)
    else:
        with lock:
            features = _features(model, texts)
    mask = features.get("attention_mask")
    tokens = int(mask.sum()) if mask is not None else int(features["input_ids"].numel())
    with torch.inference_mode():
        for module in _pooling_modules(model):
            features = module(features)
    return features[POOLED].float().cpu().numpy(), tokens


def _export_onnx(model: Any, path: Path) -> None:
    """Trace the modules before Normalize into one graph with dynamic batch and sequence."""
    import torch

    features = _features(model, list(PROBE))
    names = [n for n in _ENCODING_FIELDS if n in features]
    extra = sorted(k for k, v in features.items()
                   if isinstance(v, torch.Tensor) and k not in _ENCODING_FIELDS)
    if "input_ids" not in names or extra:
        raise ValidationFailed(
            f"cannot export this model to ONNX (its tokenizer gives {sorted(features)}); "
            "use TextEmbedder(model, runtime='torch')", field="runtime")

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = torch.nn.ModuleList(_pooling_modules(model))

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            state: dict[str, Any] = dict(zip(names, tensors, strict=True))
            for stage in self.stages:
                state = stage(state)
            return state[POOLED]

    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[POOLED] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The tracer warns about shape checks it freezes; the export is verified below.
            warnings.simplefilter("ignore")
            # dynamo=False: the TorchScript exporter needs no onnxscript, and traces the
            # sentence-transformers modules (dicts in, dicts out) as they run.
            torch.onnx.export(Pooled().eval(), tuple(features[n] for n in names), str(path),
                              input_names=names, output_names=[POOLED], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
    except Exception as exc:  # the exporter raises many types for unsupported operators
        raise ValidationFailed(f"cannot export this model to ONNX: {exc}; use "
                               "TextEmbedder(model, runtime='torch')", field="runtime") from exc


def _tokenizer_settings(model: Any, folder: Path) -> dict[str, Any]:
    hf = model.tokenizer
    found = folder / _transformer_path(folder) / "tokenizer.json"
    if not found.is_file() or getattr(hf, "pad_token_id", None) is None:
        raise ValidationFailed(
            "the onnx runtime needs a fast tokenizer (tokenizer.json) with a padding token; "
            "use TextEmbedder(model, runtime='torch')", field="runtime")
    return {"file": found.relative_to(folder).as_posix(), "pad_id": int(hf.pad_token_id),
            "pad_token": str(hf.pad_token),
            "pad_type_id": int(getattr(hf, "pad_token_type_id", 0) or 0),
            "padding_side": str(getattr(hf, "padding_side", "right")),
            "truncation_side": str(getattr(hf, "truncation_side", "right")),
            "lowercase": bool(getattr(model[0], "do_lower_case", False))}


def _dimension(model: Any) -> int:
    """The embedding size (renamed get_embedding_dimension in sentence-transformers 6)."""
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        method = getattr(model, name, None)
        if callable(method) and isinstance(method(), int):
            return int(method())
    return int(_torch_pooled(model, ["probe"])[0].shape[1])


def _max_positions(model: Any) -> int | None:
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


# -- the flavor -------------------------------------------------------------------------------

class SentenceTransformersFlavor:
    name = "sentence_transformers"

    def matches_object(self, model: Any) -> bool:
        if isinstance(model, TextEmbedder):
            return True
        # Not imported to answer: an object of the class can only exist once it was.
        module = sys.modules.get("sentence_transformers")
        return module is not None and isinstance(model, module.SentenceTransformer)

    def matches_files(self, folder: Path) -> bool:
        return (folder / "modules.json").is_file() and \
            (folder / "config_sentence_transformers.json").is_file()

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        wrapper = model if isinstance(model, TextEmbedder) else TextEmbedder(model)
        if not self.matches_object(wrapper.model) or isinstance(wrapper.model, TextEmbedder):
            raise ValidationFailed(
                f"the sentence_transformers flavor saves a SentenceTransformer (or a "
                f"TextEmbedder around one), not a {type(wrapper.model).__name__}",
                field="flavor")
        runtime = wrapper.runtime or DEFAULT_RUNTIME
        if runtime not in RUNTIMES:
            raise ValidationFailed(f"runtime must be one of {', '.join(RUNTIMES)}, not "
                                   f"{runtime!r}", field="runtime")
        st = wrapper.model
        limit = _max_positions(st)
        length = wrapper.max_seq_length or st.max_seq_length or limit
        if not isinstance(length, int) or isinstance(length, bool) or length < 1 or (
                limit is not None and length > limit):
            raise ValidationFailed(f"max_seq_length must be a positive integer of at most "
                                   f"{limit}, not {length!r}", field="max_seq_length")
        has_normalize = any(type(m).__name__ == "Normalize" for m in st)
        normalize = has_normalize if wrapper.normalize is None else bool(wrapper.normalize)
        st.save(str(folder), safe_serialization=True)

        texts = list(PROBE) + _texts(sample)[:8] if sample is not None else list(PROBE)
        # Run the reference below as it will be served; the caller's model is restored.
        previous, training = st.max_seq_length, st.training
        st.max_seq_length = length
        st.eval()
        try:
            pooled, tokens = _torch_pooled(st, texts)
            settings: dict[str, Any] = {"runtime": runtime, "normalize": normalize,
                                        "max_seq_length": length,
                                        "dimension": int(pooled.shape[1])}
            if runtime == "onnx":
                _export_onnx(st, folder / ONNX_FILE)
                settings["onnx_file"] = ONNX_FILE
                settings["tokenizer"] = _tokenizer_settings(st, folder)
                _check_export(folder, settings, texts, _finish(pooled, normalize), tokens)
        finally:
            st.max_seq_length = previous
            st.train(training)
        (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=1) + "\n")
        return settings

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        modules = _read_json(folder / "modules.json", list)
        if not modules:
            raise InvalidArtifact("a sentence-transformers folder needs a modules.json list")
        foreign = []
        for entry in modules:
            kind, where = (entry.get("type"), entry.get("path", "")) \
                if isinstance(entry, dict) else (None, None)
            if not isinstance(kind, str) or not isinstance(where, str):
                raise InvalidArtifact(f"modules.json: malformed entry {entry!r}")
            rel = PurePosixPath(where)
            if rel.is_absolute() or ".." in rel.parts:  # would load files outside the folder
                raise InvalidArtifact(f"modules.json: module path {where!r} leaves the folder")
            if not (_OWN_TYPE.fullmatch(kind) and kind.rsplit(".", 1)[1] in OWN_MODULES):
                foreign.append(kind)
        if not trusted:
            _refuse_code(folder, foreign)
        settings = _read_json(folder / SETTINGS_FILE, dict) \
            if (folder / SETTINGS_FILE).is_file() else {}
        return _options(folder, settings, modules)

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        if options.get("runtime") == "onnx":
            return OnnxEmbedder(folder, options)
        return TorchEmbedder(folder, options, trusted=trusted)

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        dimension = options.get("dimension")
        # Unknown for a plain folder: left to inference from the sample.
        outputs = (TensorSpec(OUTPUT, "float32", (-1, int(dimension))),) if dimension else ()
        return Signature(inputs=(TensorSpec(INPUT, "string", (-1,)),), outputs=outputs)


def _check_export(folder: Path, settings: Mapping[str, Any], texts: list[str],
                  reference: np.ndarray, tokens: int) -> None:
    """Run the exported graph the way it will be served and compare with PyTorch, so a trace
    that froze a shape or a tokenizer that differs is caught at registration."""
    got = OnnxEmbedder(folder, settings).embed(texts)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    cosine = float(np.min(np.sum(unit(got.vectors) * unit(reference), axis=1)))
    if cosine < MIN_COSINE or got.tokens != tokens:
        raise ValidationFailed(
            f"the ONNX export does not match PyTorch (lowest cosine {cosine:.6f}, tokens "
            f"{got.tokens} vs {tokens}); use TextEmbedder(model, runtime='torch')",
            field="runtime")


def _transformer_path(folder: Path) -> str:
    """The folder of the first module (the Transformer, with the tokenizer files)."""
    modules = _read_json(folder / "modules.json", list)
    first = min(modules, key=lambda m: m.get("idx", 0)) if modules else {}
    return str(first.get("path", "")) if isinstance(first, dict) else ""


def _refuse_code(folder: Path, foreign: list[str]) -> None:
    """Raise UntrustedArtifact when loading the folder could run code it brings."""
    if foreign:
        raise UntrustedArtifact(
            f"modules.json names module classes outside sentence-transformers ({foreign[0]}),"
            " which load custom code; pass trusted=True (--trusted) if you made the model",
            field="trusted")
    for path in sorted(folder.rglob("*.json")):
        if path.name in ("config.json", "tokenizer_config.json"):
            config = _read_json(path, dict)
            if "auto_map" in config:
                raise UntrustedArtifact(
                    f"{path.relative_to(folder)} asks for custom modelling code (auto_map); "
                    "pass trusted=True (--trusted) if you made the model", field="trusted")
    pickles = [p for p in folder.rglob("*") if p.is_file()
               and p.name.lower().endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise UntrustedArtifact(
            f"{pickles[0].relative_to(folder)} is a pickle, which runs code when loaded; save"
            " with safetensors (SentenceTransformer.save does by default), or pass "
            "trusted=True (--trusted) if you made the model", field="trusted")


def _options(folder: Path, settings: Mapping[str, Any], modules: list[Any]
             ) -> dict[str, Any]:
    """Validate the settings file (absent for a plain folder: served by PyTorch as saved)."""
    runtime = settings.get("runtime", "torch")
    if runtime not in RUNTIMES:
        raise InvalidArtifact(f"{SETTINGS_FILE}: runtime must be one of {', '.join(RUNTIMES)}")
    normalize = settings.get("normalize", any(
        isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules))
    options: dict[str, Any] = {"runtime": runtime, "normalize": normalize}
    for key in ("max_seq_length", "dimension"):
        value = settings.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or value < 1):
            raise InvalidArtifact(f"{SETTINGS_FILE}: {key} must be a positive integer")
        options[key] = value
    if not isinstance(normalize, bool):
        raise InvalidArtifact(f"{SETTINGS_FILE}: normalize must be true or false")
    if runtime == "onnx":
        tok = settings.get("tokenizer")
        onnx_file = settings.get("onnx_file")
        if not (isinstance(tok, dict) and isinstance(tok.get("file"), str)
                and isinstance(onnx_file, str) and options["max_seq_length"]
                and options["dimension"]):
            raise InvalidArtifact(f"{SETTINGS_FILE}: the onnx runtime needs onnx_file, "
                                  "tokenizer, max_seq_length and dimension")
        for rel in (onnx_file, tok["file"]):
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts or not (folder / rel).is_file():
                raise InvalidArtifact(f"{SETTINGS_FILE}: {rel!r} is not a file in the folder")
        import onnx

        try:
            onnx.checker.check_model(str(folder / onnx_file))
        except Exception as exc:  # onnx raises several unrelated types
            raise InvalidArtifact(f"{onnx_file} is not a valid ONNX model: {exc}") from exc
        options.update(onnx_file=onnx_file, tokenizer=dict(tok))
    return options


def _read_json(path: Path, kind: type) -> Any:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InvalidArtifact(f"{path.name} is missing") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArtifact(f"{path.name} is not valid JSON: {exc}") from exc
    if not isinstance(value, kind):
        raise InvalidArtifact(f"{path.name} must hold a JSON {kind.__name__}")
    return value
