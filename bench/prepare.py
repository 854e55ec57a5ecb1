"""Prepare one Modelyard yard per benchmark model and mode, outside the timed runs.

Usage: python bench/prepare.py MODELS_DIR YARDS_DIR
For each MODELS_DIR/<model>.joblib (the anchors' models: scikit-learn, saved with joblib) it
creates YARDS_DIR/<model>-<mode> with the model registered (trusted: we trained it) and an
endpoint ``bench``:
  onnx-batch    converted to ONNX (modelyard's recommended fast path), dynamic batching on
  onnx-nobatch  converted to ONNX, max_batch_size 1 (batching off)
  sklearn-batch the scikit-learn model as is, dynamic batching on
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import joblib
import numpy as np

from modelyard import Yard

MODES = {
    "onnx-batch": (True, {"max_batch_size": 32}),
    "onnx-nobatch": (True, {"max_batch_size": 1}),
    "sklearn-batch": (False, {"max_batch_size": 32}),
}


def prepare(model_file: Path, yards: Path) -> None:
    sample = np.random.default_rng(0).normal(size=(4, 20))
    for mode, (to_onnx, deployment) in MODES.items():
        home = yards / f"{model_file.stem}-{mode}"
        if (home / "ready").exists():
            continue
        shutil.rmtree(home, ignore_errors=True)
        yard, _ = Yard.init(home)
        if to_onnx:
            estimator = joblib.load(model_file)
            yard.register("bench", estimator, sample=sample, to_onnx=True)
        else:
            yard.register("bench", path=model_file, sample=sample, trusted=True)
        yard.create_endpoint("bench", "bench", auth="public", deployment=deployment)
        yard.close()
        (home / "ready").write_text("ok\n")
        print(f"prepared {home}")


def main() -> None:
    models, yards = Path(sys.argv[1]), Path(sys.argv[2])
    yards.mkdir(parents=True, exist_ok=True)
    for model_file in sorted(models.glob("*.joblib")):
        prepare(model_file, yards)


if __name__ == "__main__":
    main()
