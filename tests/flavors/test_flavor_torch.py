"""The torch flavor: TorchScript modules (.pt) and torch.export programs (.pt2).

No ``from __future__ import annotations`` here: TorchScript reads the forward() annotations.
"""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard import Yard
from modelyard.domain.errors import FlavorUnavailable, InvalidArtifact, ValidationFailed
from modelyard.domain.registry import ModelVersion
from modelyard.domain.signature import TensorSpec
from modelyard.flavors import get

torch = pytest.importorskip("torch", reason="torch extra not installed")

Tabular = tuple[np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """Flavors do not depend on the database: SQLite only, to stay fast."""
    return f"sqlite:///{tmp_path / 'yard.db'}"


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * 2.0


class TwoHeads(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"sum": a + b, "prod": a * b}


class Split(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[:, :1], x.sum(dim=1)


def net() -> Net:
    torch.manual_seed(0)
    return Net().eval()


def reference(module: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def predict(yard: Yard, version: ModelVersion, inputs: dict[str, Any]) -> dict[str, np.ndarray]:
    return yard.registry.load_predictor(version).predict(version.signature.validate(inputs))


def test_torchscript_module(yard: Yard, tabular: Tabular, tmp_path: Path) -> None:
    x, _, _ = tabular
    model = net()
    scripted = torch.jit.script(model)
    v = yard.register("ts", scripted, sample=x[:3])
    assert v.flavor == "torch"
    assert v.flavor_options["format"] == "torchscript"
    assert v.signature.inputs == (TensorSpec("input", "float32", (-1, 4)),)
    assert v.signature.outputs == (TensorSpec("output", "float32", (-1, 3)),)
    out = predict(yard, v, {"input": x})
    np.testing.assert_allclose(out["output"], reference(model, x), rtol=1e-5, atol=1e-6)

    # The same module saved to a .pt file registers by path and is detected as torch.
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    from_file = yard.register("ts-file", path=path, sample=x[:3])
    assert from_file.flavor == "torch" and from_file.flavor_options["file"] == "model.pt"
    np.testing.assert_allclose(predict(yard, from_file, {"input": x})["output"],
                               reference(model, x), rtol=1e-5, atol=1e-6)


def test_nn_module_exported_with_a_sample(yard: Yard, tabular: Tabular) -> None:
    x, _, _ = tabular
    model = net()
    with pytest.raises(ValidationFailed) as info:
        yard.register("exp", model, flavor="torch")
    assert info.value.field == "sample"
    v = yard.register("exp", model, flavor="torch", sample=x[:3])
    assert v.flavor_options["format"] == "export"
    assert v.flavor_options["file"] == "model.pt2"
    # The batch dimension stays free: 200 rows, and 1 row, work after exporting with 3.
    out = predict(yard, v, {"input": x})
    assert out["output"].shape == (200, 3)
    np.testing.assert_allclose(out["output"], reference(model, x), rtol=1e-5, atol=1e-6)
    one = predict(yard, v, {"input": x[:1]})
    np.testing.assert_allclose(one["output"], reference(model, x[:1]), rtol=1e-5, atol=1e-6)


def test_exported_program_with_named_outputs(yard: Yard, tabular: Tabular) -> None:
    x, _, _ = tabular
    a, b = x[:, :2].copy(), x[:, 2:].copy()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(
        TwoHeads(), (torch.from_numpy(a[:3]), torch.from_numpy(b[:3])),
        dynamic_shapes=({0: batch}, {0: batch}),
    )
    v = yard.register("heads", program, sample={"a": a[:3], "b": b[:3]})
    assert v.flavor == "torch" and v.flavor_options["format"] == "export"
    assert [s.name for s in v.signature.inputs] == ["a", "b"]
    assert sorted(s.name for s in v.signature.outputs) == ["prod", "sum"]
    out = predict(yard, v, {"b": b, "a": a})  # inputs go by name, not by mapping order
    np.testing.assert_allclose(out["sum"], a + b, rtol=1e-6)
    np.testing.assert_allclose(out["prod"], a * b, rtol=1e-6)


def test_tuple_outputs_are_numbered(yard: Yard, tabular: Tabular) -> None:
    x, _, _ = tabular
    v = yard.register("split", torch.jit.script(Split()), sample=x[:3])
    assert [s.name for s in v.signature.outputs] == ["output_0", "output_1"]
    out = predict(yard, v, {"input": x})
    np.testing.assert_allclose(out["output_0"], x[:, :1], rtol=1e-6)
    np.testing.assert_allclose(out["output_1"], x.sum(axis=1), rtol=1e-5)


def test_damaged_torch_file_is_refused(yard: Yard, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"not torchscript")
    with pytest.raises(InvalidArtifact):
        yard.register("bad", path=folder, sample=np.zeros((1, 4), np.float32))
    with pytest.raises(InvalidArtifact):
        get("torch").load(folder, {"file": "model.pt", "format": "torchscript"}, trusted=False)


def test_non_torch_objects_are_refused_by_the_torch_flavor(yard: Yard) -> None:
    with pytest.raises(ValidationFailed) as info:
        yard.register("m", object(), flavor="torch", sample=np.zeros((1, 4), np.float32))
    assert info.value.field == "flavor"


def test_plain_nn_module_is_detected_as_torch(yard: Yard, tabular: Tabular) -> None:
    x, _, _ = tabular
    try:
        v = yard.register("auto", net(), sample=x[:3])
    except FlavorUnavailable as exc:
        pytest.fail(str(exc))
    assert v.flavor == "torch"
