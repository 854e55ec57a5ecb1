"""Modelyard: run multi-model AI systems in production."""

from __future__ import annotations

__version__ = "0.1.0"

from modelyard.client import Client  # noqa: E402
from modelyard.domain.errors import ModelyardError  # noqa: E402
from modelyard.domain.signature import Signature, TensorSpec  # noqa: E402
from modelyard.yard import Yard  # noqa: E402

__all__ = ["Client", "ModelyardError", "Signature", "TensorSpec", "Yard", "__version__"]
