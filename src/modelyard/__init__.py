"""Modelyard: run multi-model AI systems in production."""

from __future__ import annotations

__version__ = "0.1.0"

from modelyard.client import Client
from modelyard.domain.errors import ModelyardError
from modelyard.domain.signature import Signature, TensorSpec
from modelyard.graphs import Graph
from modelyard.yard import Yard

__all__ = ["Client", "Graph", "ModelyardError", "Signature", "TensorSpec", "Yard",
           "__version__"]
