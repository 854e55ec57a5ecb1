"""PyTorch models as TorchScript (``.pt``) or ``torch.export`` programs (``.pt2``).

Both formats load without unpickling arbitrary Python objects. Needs the ``torch`` extra;
nothing imports torch until a torch model is saved or loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.domain.errors import FlavorUnavailable, InvalidArtifact, ValidationFailed
from modelyard.domain.signature import Signature
from modelyard.flavors.base import Arrays, Predictor, only_file


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise FlavorUnavailable(
            "the torch flavor needs PyTorch: pip install 'modelyard[torch]'"
        ) from exc
    return torch


class TorchPredictor:
    """Inputs are passed positionally in signature order; outputs are named ``output`` (one
    tensor), ``output_0``.. (a tuple) or by key (a dict)."""

    def __init__(self, module: Any, input_names: Sequence[str]) -> None:
        self.module = module
        self.input_names = list(input_names)

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray]:
        torch = _torch()
        names = self.input_names or list(inputs)
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in names]
        with torch.inference_mode():
            result = self.module(*args)
        if isinstance(result, Mapping):
            return {str(k): v.detach().numpy() for k, v in result.items()}
        if isinstance(result, tuple | list):
            return {f"output_{i}": v.detach().numpy() for i, v in enumerate(result)}
        return {"output": result.detach().numpy()}


class TorchFlavor:
    name = "torch"

    def matches_object(self, model: Any) -> bool:
        try:
            import torch
        except ImportError:
            return False
        return isinstance(model, torch.nn.Module | torch.export.ExportedProgram)

    def matches_files(self, folder: Path) -> bool:
        return only_file(folder, (".pt", ".pt2")) is not None

    def save(self, model: Any, folder: Path, *, sample: Arrays | None) -> dict[str, Any]:
        torch = _torch()
        if isinstance(model, torch.jit.ScriptModule):
            model.save(str(folder / "model.pt"))
            return {"file": "model.pt", "format": "torchscript"}
        if isinstance(model, torch.export.ExportedProgram):
            torch.export.save(model, str(folder / "model.pt2"))
            return {"file": "model.pt2", "format": "export"}
        if isinstance(model, torch.nn.Module):
            if sample is None:
                raise ValidationFailed(
                    "saving a torch.nn.Module needs a sample input to export it; or pass a "
                    "torch.jit.ScriptModule or torch.export.ExportedProgram",
                    field="sample",
                )
            args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in sample.values())
            batch = torch.export.Dim("batch", min=1)
            shapes = tuple({0: batch} if a.ndim else None for a in args)
            program = torch.export.export(model.eval(), args, dynamic_shapes=shapes)
            torch.export.save(program, str(folder / "model.pt2"))
            return {"file": "model.pt2", "format": "export"}
        raise ValidationFailed(
            f"the torch flavor saves torch modules, not {type(model).__name__}", field="flavor"
        )

    def inspect(
        self, folder: Path, *, trusted: bool, trusted_types: Sequence[str] = ()
    ) -> dict[str, Any]:
        found = only_file(folder, (".pt", ".pt2"))
        if found is None:
            raise InvalidArtifact("a torch artifact must hold exactly one .pt or .pt2 file")
        fmt = "export" if found.suffix == ".pt2" else "torchscript"
        return {"file": found.relative_to(folder).as_posix(), "format": fmt}

    def load(self, folder: Path, options: Mapping[str, Any], *, trusted: bool) -> Predictor:
        torch = _torch()
        path = folder / options["file"]
        try:
            if options.get("format") == "export":
                module = torch.export.load(str(path)).module()
            else:
                module = torch.jit.load(str(path), map_location="cpu")
                module.eval()
        except Exception as exc:  # torch raises RuntimeError and friends for bad files
            raise InvalidArtifact(f"cannot load {path.name}: {exc}") from exc
        return TorchPredictor(module, options.get("input_names", []))

    def native_signature(self, folder: Path, options: Mapping[str, Any]) -> Signature | None:
        return None
